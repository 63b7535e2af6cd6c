//! The settings of `streamalot serve`: command-line flags, an optional TOML
//! file, and [`resolve`], which merges them into a checked [`Config`].
//!
//! Every flag has a key of the same name in the file (`--max-sessions` is
//! `max_sessions`). A flag given on the command line wins over the file, and
//! the file wins over the built-in default. Keys the server does not know are
//! an error rather than ignored: a misspelt `max_sesions = 10` that silently
//! did nothing would leave a server unprotected.
//!
//! Relative paths in the file (`media`, `access_log`, `stats_json`) are taken relative to
//! the file's own directory, so a file and the media beside it can move
//! together; relative paths on the command line are relative to the current
//! directory, as a shell user expects.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use net::SendPath;
use serde::Deserialize;

use crate::access::addr::Cidr;
use crate::channel::config::{Channel, ChannelError, ChannelSettings};
use crate::live::publish::Rule;

/// The default RTSP port: 554 needs privileges, so like most servers run
/// by hand we use the customary alternative.
pub const DEFAULT_RTSP_PORT: u16 = 8554;
/// The default UDP range for the shards' RTP/RTCP pairs (DSS used 6970 up).
pub const DEFAULT_RTP_PORTS: RangeInclusive<u16> = 6970..=6999;
pub const DEFAULT_SESSION_TIMEOUT_SECS: u64 = 60;
/// Icecast's source-timeout: a source silent this long is gone.
pub const DEFAULT_SOURCE_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_TCP_QUEUE_BYTES: usize = 256 * 1024;
/// Smaller than this, a TCP queue could not hold even a few packets and
/// every interleaved session would drop media at once.
pub const MIN_TCP_QUEUE_BYTES: usize = 4096;
/// Icecast listeners at once, unless configured.
pub const DEFAULT_MAX_LISTENERS: usize = 10_000;
/// What a slow listener may have waiting beyond its burst: Icecast's
/// `queue-size` default.
pub const DEFAULT_LISTENER_QUEUE_BYTES: usize = 512 * 1024;
/// A few seconds of the slowest MP3 stream.
pub const MIN_LISTENER_QUEUE_BYTES: usize = 16 * 1024;
/// How the shards hand their UDP rounds to the kernel, unless told: see
/// perf/RESULTS.md for the measurement that chose it.
pub const DEFAULT_SEND_PATH: SendPath = SendPath::Sendmmsg;

/// Stream the hinted movies of a directory over RTSP/RTP.
///
/// Every option can also be set in the `--config` file under the same name
/// in snake_case (`--max-sessions` is `max_sessions`); options given here
/// override the file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Directory of hinted .mov/.mp4/.3gp files to serve; rtsp://HOST:PORT/a/b.mp4 is DIR/a/b.mp4
    /// [default: media]
    #[arg(long, value_name = "DIR")]
    pub media: Option<PathBuf>,

    /// TCP port to accept RTSP on; repeat to listen on several [default: 8554]
    #[arg(long = "rtsp-port", value_name = "PORT")]
    pub rtsp_port: Vec<u16>,

    /// TCP port to accept HTTP only on (RTSP-over-HTTP tunnels; the RTSP ports take HTTP too);
    /// repeat to listen on several [default: none]
    #[arg(long = "http-port", value_name = "PORT")]
    pub http_port: Vec<u16>,

    /// Address to listen on, for RTSP and the shards' UDP ports [default: 0.0.0.0]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,

    /// Share the RTSP ports with other servers that ask to share them too (SO_REUSEPORT), as a
    /// restart without downtime needs; without it a port already in use is an error
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Number of shard threads that send media, one core each [default: every core but one, at least 1]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// TOML file with any of these options (same names, snake_case); options given on the command line win
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// UDP port range for the shards' RTP/RTCP pairs: each shard binds one even/odd pair in it
    /// [default: 6970-6999, widened when there are more than 15 shards]
    #[arg(long = "rtp-ports", value_name = "LOW-HIGH", value_parser = parse_port_range)]
    pub rtp_ports: Option<RangeInclusive<u16>>,

    /// Seconds without a request or RTCP report after which a session is ended [default: 60]
    #[arg(long = "session-timeout", value_name = "SECS")]
    pub session_timeout: Option<u64>,

    /// Most RTSP connections open at once; further ones get 503 (0 = no limit) [default: 10000]
    #[arg(long = "max-connections", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most RTSP connections open at once from one client address (0 = no limit) [default: no limit]
    #[arg(long = "max-connections-per-client", value_name = "N")]
    pub max_connections_per_client: Option<usize>,

    /// Most sessions at once; further SETUPs get 453 Not Enough Bandwidth (0 = no limit) [default: 10000]
    #[arg(long = "max-sessions", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Most sessions at once from one client address (0 = no limit) [default: no limit]
    #[arg(long = "max-sessions-per-client", value_name = "N")]
    pub max_sessions_per_client: Option<usize>,

    /// Largest request line plus headers accepted, in bytes (K and M suffixes allowed) [default: 16K]
    #[arg(long = "max-header-bytes", value_name = "N", value_parser = parse_size)]
    pub max_header_bytes: Option<usize>,

    /// Largest request body accepted, in bytes (K and M suffixes allowed) [default: 64K]
    #[arg(long = "max-body-bytes", value_name = "N", value_parser = parse_size)]
    pub max_body_bytes: Option<usize>,

    /// Media bytes queued per interleaved (RTP over TCP) connection before packets are dropped
    /// rather than let a slow reader hold memory; the connection's kernel send buffer is capped
    /// at the same size [default: 256K]
    #[arg(long = "tcp-queue-bytes", value_name = "N", value_parser = parse_size)]
    pub tcp_queue_bytes: Option<usize>,

    /// Most Icecast (MP3 over HTTP) listeners at once; further ones get 503. Each also holds a
    /// connection, counted against the connection limits (0 = no limit) [default: 10000]
    #[arg(long = "max-listeners", value_name = "N")]
    pub max_listeners: Option<usize>,

    /// Bytes that may wait for an Icecast listener beyond its initial burst; a listener that
    /// falls further behind (reads slower than the bit rate, or not at all) is dropped, as
    /// Icecast's queue-size does (K and M suffixes allowed) [default: 512K]
    #[arg(long = "listener-queue-bytes", value_name = "N", value_parser = parse_size)]
    pub listener_queue_bytes: Option<usize>,

    /// Seconds an Icecast source (SOURCE or PUT) may send nothing before it is dropped and its
    /// mount ends, as Icecast's source-timeout [default: 10]
    #[arg(long = "source-timeout", value_name = "SECS")]
    pub source_timeout: Option<u64>,

    /// File to append the access log to (W3C extended format, one line per session), or - for
    /// standard output [default: standard output]
    #[arg(long = "access-log", value_name = "PATH")]
    pub access_log: Option<PathBuf>,

    /// Print the shards' statistics (counters and send lateness) every SECS seconds, as
    /// SIGUSR1 does [default: off]
    #[arg(long = "stats-interval", value_name = "SECS")]
    pub stats_interval: Option<u64>,

    /// Also write the statistics as JSON to FILE (replaced whole) whenever they are printed:
    /// on SIGUSR1, every --stats-interval and at shutdown, for scripts and monitoring
    /// [default: none]
    #[arg(long = "stats-json", value_name = "FILE")]
    pub stats_json: Option<PathBuf>,

    /// How the shards send each round's UDP packets: sendmmsg (one call per round), or io-uring
    /// (SENDMSG entries on a small io_uring per shard, one submission per round); the same
    /// messages and GSO either way [default: sendmmsg]
    #[arg(long = "send-path", value_name = "PATH")]
    pub send_path: Option<SendPath>,

    /// Let publishers push live broadcasts (RTSP ANNOUNCE/RECORD, as `ffmpeg -f rtsp` does) to
    /// paths under PREFIX, authenticating as USER with PASSWORD (Digest or Basic); repeat for more
    /// prefixes. In the file: [[publish]] tables with prefix, user and password. Viewers play
    /// rtsp://HOST:PORT/PREFIX/NAME [default: publishing off]
    #[arg(long = "publish", value_name = "PREFIX=USER:PASSWORD", value_parser = parse_publish)]
    pub publish: Vec<Rule>,

    /// An Icecast radio channel: the MP3 playlist (DSS *PLAY-LIST* or M3U) played in a loop on
    /// the wall clock as a live mount every listener of PATH shares, its title changing at each
    /// song (repeatable; in the file: [[radio]] tables with path and playlist)
    #[arg(long = "radio", value_name = "PATH=PLAYLIST", value_parser = parse_radio)]
    pub radio: Vec<Radio>,

    /// Relay another Icecast or SHOUTcast server's mount as the live mount PATH: pulled by this
    /// server, reconnecting with backoff when it drops (repeatable; in the file: [[icecast_relay]]
    /// tables with path and url)
    #[arg(long = "icecast-relay", value_name = "PATH=http://HOST:PORT/MOUNT", value_parser = parse_mount_relay)]
    pub icecast_relay: Vec<MountRelay>,

    /// A publisher announcing a path that already has one takes it over (the first one's viewers
    /// get a BYE); without it the second is refused with 455
    #[arg(long = "publish-replace")]
    pub publish_replace: bool,

    /// Offer NACK/RTX retransmission (RTP/AVPF, RFC 4585 and 4588) in DESCRIBE: clients that set
    /// up with RTP/AVPF (GStreamer) get lost packets sent again. Clients built on live555 (VLC)
    /// do not play RTP/AVPF streams, hence off by default
    #[arg(long = "nack")]
    pub nack: bool,

    /// Send every session at real time: no Instant-On burst at PLAY and after a seek (by default
    /// sessions that can take it, on TCP, HTTP tunnels, UDP with NACK/RTX, or UDP with
    /// x-Dynamic-Rate: 1, are sent ahead up to --burst-lead at up to --burst-rate)
    #[arg(long = "no-instant-on")]
    pub no_instant_on: bool,

    /// Most seconds of media sent per second of real time while a session is ahead
    /// (Instant-On), from above 1 to 10 [default: 2]
    #[arg(long = "burst-rate", value_name = "RATE")]
    pub burst_rate: Option<f64>,

    /// How far ahead of real time a session may be sent (Instant-On), in seconds, at most 25 as
    /// DSS allowed [default: 4]
    #[arg(long = "burst-lead", value_name = "SECS")]
    pub burst_lead: Option<f64>,

    /// The fastest a client's `Speed` (RFC 2326) is granted, in times real time, from 1 to 10:
    /// a PLAY with `Speed: 2` over interleaved TCP, an HTTP tunnel or reliable UDP
    /// (x-Retransmit) is sent at twice real time, RTP timestamps unchanged; plain UDP is always
    /// answered `Speed: 1` [default: 4, what DSS allowed]
    #[arg(long = "max-speed", value_name = "SPEED")]
    pub max_speed: Option<f64>,

    /// Never thin: send every frame of a video stream even when its client falls behind (by
    /// default a slow TCP reader's, or a lossy UDP client's, video drops B-frames, then
    /// P-frames, down to key frames only, and comes back when it catches up)
    #[arg(long = "no-thinning")]
    pub no_thinning: bool,

    /// Most a publisher may send, in kilobits a second; what comes faster is dropped (and
    /// counted), so a flooding publisher cannot take the server's time [default: 100000]
    #[arg(long = "publish-max-kbps", value_name = "KBPS")]
    pub publish_max_kbps: Option<u64>,

    /// Run a 24x7 channel at rtsp://HOST:PORT/PATH playing PLAYLIST_FILE (DSS `*PLAY-LIST*` or
    /// M3U), looped, on the wall clock whether watched or not; repeat for more channels. In the
    /// file: [[channel]] tables with path, playlist, mode, reference, run ("always" or
    /// "on-demand"), start, end, current_file and upcoming_file [default: no channels]
    #[arg(long = "channel", value_name = "PATH=PLAYLIST_FILE", value_parser = parse_channel)]
    pub channel: Vec<ChannelSettings>,

    /// The interface (its IPv4 address) on which to join the multicast groups that `.sdp` files
    /// in the media folder name [default: the kernel's choice]
    #[arg(long = "multicast-interface", value_name = "ADDR")]
    pub multicast_interface: Option<std::net::Ipv4Addr>,

    /// Relay another RTSP server's stream (a live path or a movie; credentials in the URL are
    /// answered with Digest or Basic) as a live broadcast at PATH, played over tcp (interleaved,
    /// the default) or udp, on-demand (from the first viewer until a few seconds after the last,
    /// the default) or always; repeat for more. In the file: [[relay]] tables with path, url,
    /// transport and mode [default: none]
    #[arg(long = "relay", value_name = "PATH=URL [tcp|udp] [on-demand|always]", value_parser = parse_relay)]
    pub relay: Vec<crate::live::relay::Relay>,

    /// Publish the live broadcast at PATH (published here or relayed) to another RTSP server
    /// (ANNOUNCE/RECORD, interleaved) while it is on the air, again after a backoff when that
    /// fails; repeat for more. In the file: [[push]] tables with path and url [default: none]
    #[arg(long = "push", value_name = "PATH=rtsp://[USER:PASS@]HOST:PORT/PATH2", value_parser = parse_push)]
    pub push: Vec<crate::live::relay::Push>,

    /// Seconds a live broadcast's viewers wait for a publisher that left or went silent: one
    /// that comes back to the same path with a compatible SDP within them continues the
    /// broadcast (viewers keep their SSRC, sequence numbers and timestamps); 0 ends it at once
    /// [default: 0]
    #[arg(long = "publish-grace", value_name = "SECS")]
    pub publish_grace: Option<u64>,
    /// Users file (`realm NAME`, then `user:argon2id:md5-ha1:sha256-ha1` lines, as `streamalot
    /// passwd` writes them) for paths whose qtaccess names no AuthUserFile [default: none]
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,

    /// Groups file (`group: user user ...`, DSS's qtgroups) for `require group` [default: none]
    #[arg(long, value_name = "FILE")]
    pub groups: Option<PathBuf>,

    /// How to ask for credentials where no AuthScheme says: digest (MD5 and SHA-256), basic or
    /// none [default: digest]
    #[arg(long = "auth-scheme", value_name = "SCHEME")]
    pub auth_scheme: Option<String>,

    /// Address block (CIDR) allowed to connect; repeat for several; once any is given, other
    /// addresses are refused before a byte is read [default: every address]
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Address block (CIDR) refused before a byte is read; repeat for several; of the --allow and
    /// --deny blocks an address is in, the most specific decides, --deny on a tie [default: none]
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<String>,

    /// File holding the secret (32 bytes or more) that signs URL tokens (`?token=...`); tokens
    /// are off without it [default: none]
    #[arg(long = "token-secret-file", value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// TCP port for RTSP over TLS (rtsps://), which takes HTTP and tunnels over TLS too; needs
    /// --tls-cert and --tls-key; repeat for several [default: 322 when a certificate is given]
    #[arg(long = "rtsps-port", value_name = "PORT")]
    pub rtsps_port: Vec<u16>,

    /// PEM certificate chain for RTSPS (re-read on SIGHUP) [default: none, no TLS]
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (re-read on SIGHUP) [default: none]
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Turn on the admin API (/api/v1/ on the RTSP and HTTP ports) and the status page (/):
    /// requests must carry `Authorization: Bearer TOKEN`. Prefer the config file's
    /// `admin_token` on shared machines, where other users can read command lines
    /// [default: off]
    #[arg(long = "admin-token", value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// Address or CIDR block (192.0.2.0/24, 2001:db8::/32) whose clients may reach the admin
    /// API and the status page; repeat for several [default: loopback only]
    #[arg(long = "admin-allow", value_name = "CIDR")]
    pub admin_allow: Vec<Cidr>,

    /// User of the --users file who may use the admin API and the status page with HTTP Basic
    /// (`curl -u USER`) or Digest, beside the token; repeat for several (`[access]
    /// admin_users`; members of `admin_group` may too). Turns the admin API on [default: none]
    #[arg(long = "admin-user", value_name = "USER")]
    pub admin_user: Vec<String>,

    /// Address or CIDR block whose clients may read the Prometheus metrics (/metrics, no token
    /// needed); repeat for several [default: loopback only]
    #[arg(long = "metrics-allow", value_name = "CIDR")]
    pub metrics_allow: Vec<Cidr>,
}

/// A credential from the configuration: printed as `***` by `Debug`, so
/// that a logged configuration does not give it away.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who may reach what loopback alone reaches by default.
pub fn loopback_blocks() -> Vec<Cidr> {
    vec![
        "127.0.0.0/8".parse().expect("a constant block"),
        "::1/128".parse().expect("a constant block"),
    ]
}

fn parse_publish(text: &str) -> Result<Rule, String> {
    text.parse()
}

fn parse_relay(text: &str) -> Result<crate::live::relay::Relay, String> {
    text.parse()
}

fn parse_push(text: &str) -> Result<crate::live::relay::Push, String> {
    text.parse()
}

fn parse_channel(text: &str) -> Result<ChannelSettings, String> {
    ChannelSettings::from_argument(text).map_err(|e| e.to_string())
}

/// A radio channel: its mount path and its playlist file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Radio {
    pub path: String,
    pub playlist: PathBuf,
}

/// A relayed mount: its path here and the upstream URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRelay {
    pub path: String,
    pub url: String,
}

/// `PATH=REST` with PATH made a mount path (a leading `/`).
fn mount_and(text: &str, what: &str) -> Result<(String, String), String> {
    let (path, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("expected PATH={what}, such as /radio.mp3={what}"))?;
    let path = check_mount_path(path)?;
    if rest.is_empty() {
        return Err(format!("expected PATH={what}: the {what} is empty"));
    }
    Ok((path, rest.to_owned()))
}

fn check_mount_path(path: &str) -> Result<String, String> {
    let path = format!("/{}", path.trim().trim_start_matches('/'));
    if path == "/" || path.contains(['?', '#', ' ']) || path.split('/').any(|p| p == "..") {
        return Err(format!("{path:?} is not a mount path"));
    }
    Ok(path)
}

fn parse_radio(text: &str) -> Result<Radio, String> {
    let (path, playlist) = mount_and(text, "PLAYLIST")?;
    Ok(Radio {
        path,
        playlist: playlist.into(),
    })
}

fn parse_mount_relay(text: &str) -> Result<MountRelay, String> {
    let (path, url) = mount_and(text, "URL")?;
    crate::icecast::relay::Upstream::parse(&url).map_err(|e| e.to_string())?;
    Ok(MountRelay { path, url })
}
/// The default RTSPS port (RFC 7826's `rtsps` registration).
pub const DEFAULT_RTSPS_PORT: u16 = 322;

/// The resolved settings the server runs with. Every value is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The media directory, canonical.
    pub media: PathBuf,
    /// RTSP ports, in the order given, without duplicates; never empty.
    /// They take HTTP too.
    pub rtsp_ports: Vec<u16>,
    /// Ports that take HTTP only, without duplicates, none an RTSP port.
    pub http_ports: Vec<u16>,
    pub bind: IpAddr,
    /// Whether the RTSP ports are bound with `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// At least 1.
    pub shards: usize,
    /// Holds at least one even/odd pair per shard.
    pub rtp_ports: RangeInclusive<u16>,
    /// Seconds; at least 1.
    pub session_timeout: u64,
    /// The limits below are `usize::MAX` when there is none, so callers can
    /// compare without a special case.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub tcp_queue_bytes: usize,
    pub max_listeners: usize,
    pub listener_queue_bytes: usize,
    /// Seconds an Icecast source may say nothing; at least 1.
    pub source_timeout: u64,
    /// `None` means standard output (`-` resolves to `None` too).
    pub access_log: Option<PathBuf>,
    /// Seconds between statistics reports; `None` for none.
    pub stats_interval: Option<u64>,
    /// Where reports are also written as JSON.
    pub stats_json: Option<PathBuf>,
    /// How the shards send their rounds.
    pub send_path: SendPath,
    /// Who may publish live broadcasts where; empty: nobody.
    pub publish: Vec<Rule>,
    /// Radio channels: mount paths and their playlists.
    pub radio: Vec<Radio>,
    /// Relayed mounts: paths here and their upstream URLs.
    pub icecast_relay: Vec<MountRelay>,
    /// Whether a second publisher to a busy path replaces the first.
    pub publish_replace: bool,
    /// Whether DESCRIBE offers NACK/RTX retransmission.
    pub nack: bool,
    /// Instant-On: the burst's rate in percent (above 100) and lead in
    /// milliseconds; `None` when it is off.
    pub instant_on: Option<(u32, u64)>,
    /// Whether video streams are thinned for clients that fall behind.
    pub thinning: bool,
    /// The most a PLAY's `Speed` is granted, in percent (as the burst's
    /// rate: an `f64` would not compare as `Eq`).
    pub max_speed_percent: u32,
    /// Most a publisher may send, in bits a second.
    pub publish_max_bitrate: u64,
    /// Where `.sdp` sources join their multicast groups.
    pub multicast_interface: Option<std::net::Ipv4Addr>,
    /// Other servers' streams relayed here, each at its own path.
    pub relays: Vec<crate::live::relay::Relay>,
    /// Local broadcasts published to other servers.
    pub pushes: Vec<crate::live::relay::Push>,
    /// Seconds viewers wait for a publisher to come back; 0: none.
    pub publish_grace: u64,
    /// The channels `serve` runs, paths checked and unique.
    pub channels: Vec<Channel>,
    /// The admin API's bearer token; `None`: the admin API is off.
    pub admin_token: Option<Secret>,
    /// Who may reach the admin API and the status page; never empty.
    pub admin_allow: Vec<Cidr>,
    /// Who may read `/metrics`; never empty.
    pub metrics_allow: Vec<Cidr>,
    /// Access control: the `[access]` table with the flags merged in, paths
    /// resolved.
    pub access: crate::access::Settings,
    /// RTSPS ports, none an RTSP or HTTP port; empty without a certificate.
    pub rtsps_ports: Vec<u16>,
    /// The certificate chain and key, both or neither.
    pub tls: Option<TlsFiles>,
}

/// Where RTSPS's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    File(PathBuf),
    Default,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bad TOML, a value of the wrong type, or an unknown key; the message
    /// names the key and line.
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Channel(ChannelError),
    #[error("invalid {}: {why}", setting(key, value, origin))]
    Invalid {
        key: &'static str,
        value: String,
        origin: Origin,
        why: String,
    },
    #[error("media directory {} ({}): {source}", path.display(), origin_text(origin))]
    Media {
        path: PathBuf,
        origin: Origin,
        #[source]
        source: io::Error,
    },
    #[error("media directory {} ({}) is not a directory", path.display(), origin_text(origin))]
    MediaNotDirectory { path: PathBuf, origin: Origin },
}

/// "`--shards 0` on the command line" or "`shards = 0` in FILE".
fn setting(key: &str, value: &str, origin: &Origin) -> String {
    match origin {
        Origin::CommandLine => format!("`--{} {value}` on the command line", key.replace('_', "-")),
        Origin::File(path) => format!("`{key} = {value}` in {}", path.display()),
        Origin::Default => format!("default {key} {value}"),
    }
}

fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::CommandLine => "from the command line".to_owned(),
        Origin::File(path) => format!("from {}", path.display()),
        Origin::Default => "the default".to_owned(),
    }
}

/// The config file's keys: the flags' names in snake_case.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    media: Option<PathBuf>,
    rtsp_port: Option<OneOrMany>,
    http_port: Option<OneOrMany>,
    bind: Option<IpAddr>,
    reuse_port: Option<bool>,
    shards: Option<usize>,
    rtp_ports: Option<String>,
    session_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    max_sessions: Option<usize>,
    max_sessions_per_client: Option<usize>,
    max_header_bytes: Option<Size>,
    max_body_bytes: Option<Size>,
    tcp_queue_bytes: Option<Size>,
    max_listeners: Option<usize>,
    listener_queue_bytes: Option<Size>,
    source_timeout: Option<u64>,
    access_log: Option<PathBuf>,
    stats_interval: Option<u64>,
    stats_json: Option<PathBuf>,
    send_path: Option<String>,
    /// The access settings, `[access]` (rules as `[[access.rule]]`).
    access: Option<crate::access::Settings>,
    rtsps_port: Option<OneOrMany>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_token: Option<String>,
    admin_allow: Option<Vec<String>>,
    metrics_allow: Option<Vec<String>>,
    publish: Option<Vec<PublishEntry>>,
    radio: Option<Vec<Radio>>,
    icecast_relay: Option<Vec<MountRelay>>,
    publish_replace: Option<bool>,
    nack: Option<bool>,
    instant_on: Option<bool>,
    burst_rate: Option<f64>,
    burst_lead: Option<f64>,
    max_speed: Option<f64>,
    thinning: Option<bool>,
    publish_max_kbps: Option<u64>,
    multicast_interface: Option<std::net::Ipv4Addr>,
    relay: Option<Vec<RelayEntry>>,
    push: Option<Vec<PushEntry>>,
    publish_grace: Option<u64>,
    channel: Option<Vec<ChannelSettings>>,
}

/// A `[[relay]]` table.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RelayEntry {
    path: String,
    url: String,
    transport: Option<String>,
    mode: Option<String>,
}

/// A `[[push]]` table.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PushEntry {
    path: String,
    url: String,
}

/// A `[[publish]]` table.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PublishEntry {
    prefix: String,
    user: String,
    password: String,
}

/// `rtsp_port = 554` or `rtsp_port = [554, 8554]`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum OneOrMany {
    One(u16),
    Many(Vec<u16>),
}

/// `max_body_bytes = 65536` or `max_body_bytes = "64K"`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// Merges the command line, the config file it names (if any) and the
/// defaults, and checks the result. Touches the file system only to read the
/// config file and canonicalize the media directory.
pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
    let (file, file_origin, file_dir) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file: FileSettings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (file, Origin::File(path.clone()), dir)
        }
        None => (FileSettings::default(), Origin::Default, PathBuf::new()),
    };
    let (media, media_origin) = match pick(
        args.media.clone(),
        file.media.clone().map(|p| file_dir.join(p)),
        &file_origin,
    ) {
        Some(v) => v,
        None => (PathBuf::from("media"), Origin::Default),
    };
    let media = canonical_media(media, media_origin)?;

    let cli_ports = (!args.rtsp_port.is_empty()).then(|| args.rtsp_port.clone());
    let file_ports = file.rtsp_port.map(|p| match p {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    });
    let (ports, ports_origin) =
        pick(cli_ports, file_ports, &file_origin).unwrap_or((vec![DEFAULT_RTSP_PORT], Origin::Default));
    let rtsp_ports = check_ports("rtsp_port", ports, ports_origin.clone())?;
    if rtsp_ports.is_empty() {
        return Err(invalid("rtsp_port", "[]", ports_origin, "at least one port is needed"));
    }
    let cli_http = (!args.http_port.is_empty()).then(|| args.http_port.clone());
    let file_http = file.http_port.map(|p| match p {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    });
    let http_ports = match pick(cli_http, file_http, &file_origin) {
        Some((ports, origin)) => {
            let ports = check_ports("http_port", ports, origin.clone())?;
            if let Some(p) = ports.iter().find(|p| rtsp_ports.contains(p)) {
                return Err(invalid(
                    "http_port",
                    p,
                    origin,
                    "is an RTSP port already (RTSP ports take HTTP too)",
                ));
            }
            ports
        }
        None => Vec::new(),
    };

    let bind = pick(args.bind, file.bind, &file_origin).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |v| v.0);
    let reuse_port = pick(args.reuse_port.then_some(true), file.reuse_port, &file_origin).is_some_and(|v| v.0);

    let shards = match pick(args.shards, file.shards, &file_origin) {
        Some((0, origin)) => return Err(invalid("shards", 0, origin, "there must be at least one shard")),
        Some((n, _)) => n,
        None => default_shards(),
    };

    let file_range = match file.rtp_ports {
        Some(text) => {
            Some(parse_port_range(&text).map_err(|why| invalid("rtp_ports", &text, file_origin.clone(), why))?)
        }
        None => None,
    };
    let rtp_ports = match pick(args.rtp_ports.clone(), file_range, &file_origin) {
        Some((range, origin)) => {
            let pairs = pair_count(&range);
            if pairs < shards {
                let value = format!("{}-{}", range.start(), range.end());
                let why = format!("it holds {pairs} even/odd port pair(s) but each of the {shards} shard(s) needs one");
                return Err(invalid("rtp_ports", value, origin, why));
            }
            range
        }
        None => default_rtp_ports(shards),
    };

    let session_timeout = match pick(args.session_timeout, file.session_timeout, &file_origin) {
        Some((0, origin)) => return Err(invalid("session_timeout", 0, origin, "must be at least 1 second")),
        Some((n, _)) => n,
        None => DEFAULT_SESSION_TIMEOUT_SECS,
    };

    let limit = |cli: Option<usize>, from_file: Option<usize>, default: usize| match pick(cli, from_file, &file_origin)
    {
        Some((0, _)) => usize::MAX,
        Some((n, _)) => n,
        None => default,
    };
    let max_connections = limit(args.max_connections, file.max_connections, DEFAULT_MAX_CONNECTIONS);
    let max_connections_per_client = limit(args.max_connections_per_client, file.max_connections_per_client, 0);
    let max_sessions = limit(args.max_sessions, file.max_sessions, DEFAULT_MAX_SESSIONS);
    let max_listeners = limit(args.max_listeners, file.max_listeners, DEFAULT_MAX_LISTENERS);
    let max_sessions_per_client = limit(args.max_sessions_per_client, file.max_sessions_per_client, 0);
    let max_connections_per_client = nonzero_or_max(max_connections_per_client);
    let max_sessions_per_client = nonzero_or_max(max_sessions_per_client);

    let size = |key: &'static str, cli: Option<usize>, from_file: Option<Size>, default: usize, min: usize| {
        let from_file = match from_file {
            Some(s) => Some(file_size(key, s, &file_origin)?),
            None => None,
        };
        match pick(cli, from_file, &file_origin) {
            Some((n, origin)) if n < min => Err(invalid(key, n, origin, format!("must be at least {min} bytes"))),
            Some((n, _)) => Ok(n),
            None => Ok(default),
        }
    };
    // A request line alone can take a few hundred bytes; below this nothing
    // real would parse.
    let max_header_bytes = size(
        "max_header_bytes",
        args.max_header_bytes,
        file.max_header_bytes,
        DEFAULT_MAX_HEADER_BYTES,
        256,
    )?;
    let max_body_bytes = size(
        "max_body_bytes",
        args.max_body_bytes,
        file.max_body_bytes,
        DEFAULT_MAX_BODY_BYTES,
        0,
    )?;
    let tcp_queue_bytes = size(
        "tcp_queue_bytes",
        args.tcp_queue_bytes,
        file.tcp_queue_bytes,
        DEFAULT_TCP_QUEUE_BYTES,
        MIN_TCP_QUEUE_BYTES,
    )?;
    let listener_queue_bytes = size(
        "listener_queue_bytes",
        args.listener_queue_bytes,
        file.listener_queue_bytes,
        DEFAULT_LISTENER_QUEUE_BYTES,
        MIN_LISTENER_QUEUE_BYTES,
    )?;

    let source_timeout = match pick(args.source_timeout, file.source_timeout, &file_origin) {
        Some((0, origin)) => return Err(invalid("source_timeout", 0, origin, "must be at least 1 second")),
        Some((n, _)) => n,
        None => DEFAULT_SOURCE_TIMEOUT_SECS,
    };

    let access_log = match (&args.access_log, &file.access_log) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) if is_stdout(p) => None,
        (None, Some(p)) => Some(file_dir.join(p)),
        (None, None) => None,
    }
    .filter(|p| !is_stdout(p));

    let stats_json = match (&args.stats_json, &file.stats_json) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) => Some(file_dir.join(p)),
        (None, None) => None,
    };

    let stats_interval = match pick(args.stats_interval, file.stats_interval, &file_origin) {
        Some((0, origin)) => {
            return Err(invalid(
                "stats_interval",
                0,
                origin,
                "must be at least 1 second (leave it out for none)",
            ))
        }
        Some((n, _)) => Some(n),
        None => None,
    };

    let file_path = match file.send_path {
        Some(text) => Some(
            text.parse::<SendPath>()
                .map_err(|why| invalid("send_path", &text, file_origin.clone(), why))?,
        ),
        None => None,
    };
    let send_path = pick(args.send_path, file_path, &file_origin).map_or(DEFAULT_SEND_PATH, |v| v.0);

    let publish = if !args.publish.is_empty() {
        args.publish.clone()
    } else {
        let mut rules = Vec::new();
        for e in file.publish.unwrap_or_default() {
            let rule = Rule::new(&e.prefix, &e.user, &e.password)
                .map_err(|why| invalid("publish", &e.prefix, file_origin.clone(), why))?;
            rules.push(rule);
        }
        rules
    };
    // The command line's channels replace the file's, as its other lists do.
    let channels = if !args.channel.is_empty() {
        ChannelSettings::resolve_all(&args.channel, Path::new(""))
    } else {
        ChannelSettings::resolve_all(file.channel.as_deref().unwrap_or_default(), &file_dir)
    }
    .map_err(ConfigError::Channel)?;
    let radio = if !args.radio.is_empty() {
        args.radio.clone()
    } else {
        let mut all = Vec::new();
        for r in file.radio.unwrap_or_default() {
            let path = check_mount_path(&r.path).map_err(|why| invalid("radio", &r.path, file_origin.clone(), why))?;
            all.push(Radio {
                path,
                playlist: file_dir.join(&r.playlist),
            });
        }
        all
    };
    let icecast_relay = if !args.icecast_relay.is_empty() {
        args.icecast_relay.clone()
    } else {
        let mut all = Vec::new();
        for r in file.icecast_relay.unwrap_or_default() {
            let path =
                check_mount_path(&r.path).map_err(|why| invalid("icecast_relay", &r.path, file_origin.clone(), why))?;
            crate::icecast::relay::Upstream::parse(&r.url)
                .map_err(|why| invalid("icecast_relay", &r.url, file_origin.clone(), why.to_string()))?;
            all.push(MountRelay { path, url: r.url });
        }
        all
    };
    let publish_replace =
        pick(args.publish_replace.then_some(true), file.publish_replace, &file_origin).is_some_and(|v| v.0);
    let nack = pick(args.nack.then_some(true), file.nack, &file_origin).is_some_and(|v| v.0);
    let instant_on_wanted =
        pick(args.no_instant_on.then_some(false), file.instant_on, &file_origin).is_none_or(|v| v.0);
    let burst_rate = match pick(args.burst_rate, file.burst_rate, &file_origin) {
        Some((r, origin)) if !(r > 1.0 && r <= 10.0) => {
            return Err(invalid("burst_rate", r, origin, "must be above 1 and at most 10"))
        }
        Some((r, _)) => (r * 100.0).round() as u32,
        None => 200,
    };
    let burst_lead = match pick(args.burst_lead, file.burst_lead, &file_origin) {
        Some((l, origin)) if !(l > 0.0 && l <= 25.0) => {
            return Err(invalid(
                "burst_lead",
                l,
                origin,
                "must be above 0 and at most 25 seconds",
            ))
        }
        Some((l, _)) => (l * 1000.0).round() as u64,
        None => 4000,
    };
    let instant_on = instant_on_wanted.then_some((burst_rate, burst_lead));
    let max_speed = match pick(args.max_speed, file.max_speed, &file_origin) {
        Some((s, origin)) if !(1.0..=10.0).contains(&s) => {
            return Err(invalid("max_speed", s, origin, "must be at least 1 and at most 10"))
        }
        Some((s, _)) => (s * 100.0).round() as u32,
        None => (crate::shard::DEFAULT_MAX_SPEED * 100.0) as u32,
    };
    let thinning = pick(args.no_thinning.then_some(false), file.thinning, &file_origin).is_none_or(|v| v.0);
    let publish_max_bitrate = match pick(args.publish_max_kbps, file.publish_max_kbps, &file_origin) {
        Some((0, origin)) => return Err(invalid("publish_max_kbps", 0, origin, "must be at least 1")),
        Some((n, _)) => n.saturating_mul(1000),
        None => crate::live::ingest::DEFAULT_MAX_BITRATE,
    };
    let relays = if !args.relay.is_empty() {
        args.relay.clone()
    } else {
        let mut relays = Vec::new();
        for e in file.relay.unwrap_or_default() {
            let bad = |why: String| invalid("relay", &e.path, file_origin.clone(), why);
            relays.push(crate::live::relay::Relay {
                path: crate::live::relay::check_path(&e.path).map_err(bad)?,
                url: crate::live::relay::parse_url(&e.url).map_err(bad)?,
                transport: e
                    .transport
                    .as_deref()
                    .map_or(Ok(Default::default()), str::parse)
                    .map_err(bad)?,
                mode: e
                    .mode
                    .as_deref()
                    .map_or(Ok(Default::default()), str::parse)
                    .map_err(bad)?,
            });
        }
        relays
    };
    let mut seen = std::collections::HashSet::new();
    for r in &relays {
        if !seen.insert(r.path.clone()) {
            return Err(invalid(
                "relay",
                &r.path,
                Origin::CommandLine,
                "two relays for one path",
            ));
        }
    }
    let pushes = if !args.push.is_empty() {
        args.push.clone()
    } else {
        let mut pushes = Vec::new();
        for e in file.push.unwrap_or_default() {
            let bad = |why: String| invalid("push", &e.path, file_origin.clone(), why);
            pushes.push(crate::live::relay::Push {
                path: crate::live::relay::check_path(&e.path).map_err(bad)?,
                url: crate::live::relay::parse_url(&e.url).map_err(bad)?,
            });
        }
        pushes
    };
    let publish_grace = pick(args.publish_grace, file.publish_grace, &file_origin).map_or(0, |v| v.0);
    let mut access = file.access.unwrap_or_default();
    crate::access::resolve_paths(&mut access, &file_dir);
    if let Some(u) = &args.users {
        access.users = Some(u.clone());
    }
    if let Some(g) = &args.groups {
        access.groups = Some(g.clone());
    }
    if let Some(t) = &args.token_secret_file {
        access.token_secret_file = Some(t.clone());
    }
    if let Some(text) = &args.auth_scheme {
        let scheme = crate::access::qtaccess::Scheme::parse(text).ok_or_else(|| {
            invalid(
                "auth_scheme",
                text,
                Origin::CommandLine,
                "must be digest, basic or none",
            )
        })?;
        access.auth_scheme = Some(scheme);
    }
    access.admin_users.extend(args.admin_user.iter().cloned());
    access.allow.extend(args.allow.iter().cloned());
    access.deny.extend(args.deny.iter().cloned());

    let tls = match (
        pick(
            args.tls_cert.clone(),
            file.tls_cert.map(|p| file_dir.join(p)),
            &file_origin,
        ),
        pick(
            args.tls_key.clone(),
            file.tls_key.map(|p| file_dir.join(p)),
            &file_origin,
        ),
    ) {
        (Some((cert, _)), Some((key, _))) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some((p, origin)), None) => {
            return Err(invalid(
                "tls_cert",
                p.display(),
                origin,
                "needs --tls-key (tls_key) too",
            ))
        }
        (None, Some((p, origin))) => {
            return Err(invalid(
                "tls_key",
                p.display(),
                origin,
                "needs --tls-cert (tls_cert) too",
            ))
        }
    };
    let cli_rtsps = (!args.rtsps_port.is_empty()).then(|| args.rtsps_port.clone());
    let file_rtsps = file.rtsps_port.map(|p| match p {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    });
    let rtsps_ports = match (pick(cli_rtsps, file_rtsps, &file_origin), &tls) {
        (Some((ports, origin)), None) => {
            let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            return Err(invalid("rtsps_port", list, origin, "needs --tls-cert and --tls-key"));
        }
        (Some((ports, origin)), Some(_)) => {
            let ports = check_ports("rtsps_port", ports, origin.clone())?;
            if let Some(p) = ports.iter().find(|p| rtsp_ports.contains(p) || http_ports.contains(p)) {
                return Err(invalid("rtsps_port", p, origin, "is an RTSP or HTTP port already"));
            }
            ports
        }
        (None, Some(_)) => vec![DEFAULT_RTSPS_PORT],
        (None, None) => Vec::new(),
    };
    let admin_token = match pick(args.admin_token.clone(), file.admin_token.clone(), &file_origin) {
        Some((token, origin)) => {
            // It travels in a header as a token68 (RFC 9110 11.2).
            let token68 = !token.is_empty()
                && token
                    .trim_end_matches('=')
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
            if !token68 {
                return Err(invalid(
                    "admin_token",
                    "***",
                    origin,
                    "must be letters, digits and - . _ ~ + / (optionally ending in =), as a bearer token is",
                ));
            }
            Some(Secret(token))
        }
        None => None,
    };
    let blocks = |key: &'static str, cli: &[Cidr], from_file: Option<Vec<String>>| -> Result<Vec<Cidr>, ConfigError> {
        if !cli.is_empty() {
            return Ok(cli.to_vec());
        }
        match from_file {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|t| {
                    t.parse::<Cidr>()
                        .map_err(|e| invalid(key, t, file_origin.clone(), e.to_string()))
                })
                .collect(),
            _ => Ok(loopback_blocks()),
        }
    };
    let admin_allow = blocks("admin_allow", &args.admin_allow, file.admin_allow)?;
    let metrics_allow = blocks("metrics_allow", &args.metrics_allow, file.metrics_allow)?;

    Ok(Config {
        media,
        rtsp_ports,
        http_ports,
        bind,
        reuse_port,
        shards,
        rtp_ports,
        session_timeout,
        max_connections,
        max_connections_per_client,
        max_sessions,
        max_sessions_per_client,
        max_header_bytes,
        max_body_bytes,
        tcp_queue_bytes,
        max_listeners,
        listener_queue_bytes,
        source_timeout,
        access_log,
        stats_interval,
        stats_json,
        send_path,
        publish,
        radio,
        icecast_relay,
        publish_replace,
        nack,
        instant_on,
        thinning,
        max_speed_percent: max_speed,
        publish_max_bitrate,
        multicast_interface: pick(args.multicast_interface, file.multicast_interface, &file_origin).map(|v| v.0),
        relays,
        pushes,
        publish_grace,
        channels,
        access,
        rtsps_ports,
        tls,
        admin_token,
        admin_allow,
        metrics_allow,
    })
}

/// The command line's value, else the file's, remembering which for error
/// messages; `None` when neither gives one.
fn pick<T>(cli: Option<T>, from_file: Option<T>, file_origin: &Origin) -> Option<(T, Origin)> {
    match (cli, from_file) {
        (Some(v), _) => Some((v, Origin::CommandLine)),
        (None, Some(v)) => Some((v, file_origin.clone())),
        (None, None) => None,
    }
}

fn invalid(key: &'static str, value: impl fmt::Display, origin: Origin, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        origin,
        why: why.into(),
    }
}

fn nonzero_or_max(n: usize) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        n
    }
}

fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn canonical_media(path: PathBuf, origin: Origin) -> Result<PathBuf, ConfigError> {
    let canonical = match std::fs::canonicalize(&path) {
        Ok(c) => c,
        Err(source) => return Err(ConfigError::Media { path, origin, source }),
    };
    if !canonical.is_dir() {
        return Err(ConfigError::MediaNotDirectory { path, origin });
    }
    Ok(canonical)
}

/// Ports in the order given, without duplicates.
fn check_ports(key: &'static str, ports: Vec<u16>, origin: Origin) -> Result<Vec<u16>, ConfigError> {
    let mut out = Vec::with_capacity(ports.len());
    for p in ports {
        // Port 0 would bind a port nobody is told about.
        if p == 0 {
            return Err(invalid(key, 0, origin, "must be a port number from 1 to 65535"));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Every core but one: the control core takes the remaining one.
fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// 6970-6999, or wider when the shards need more pairs; twice what they
/// need, so a few ports held by other programs do not stop the server.
fn default_rtp_ports(shards: usize) -> RangeInclusive<u16> {
    let start = *DEFAULT_RTP_PORTS.start();
    if pair_count(&DEFAULT_RTP_PORTS) >= shards * 2 {
        return DEFAULT_RTP_PORTS;
    }
    let end = (start as usize + shards * 4 - 1).min(u16::MAX as usize) as u16;
    start..=end
}

/// How many even RTP ports with the odd RTCP port above them fit in the
/// range (the shards bind pairs this way, as RFC 3550 recommends).
pub fn pair_count(range: &RangeInclusive<u16>) -> usize {
    let first = u32::from((*range.start()).max(2));
    let first = first + first % 2;
    let last = u32::from(*range.end());
    if first + 1 > last {
        return 0;
    }
    ((last - 1 - first) / 2 + 1) as usize
}

/// Parses `LOW-HIGH` (or a single port, a range of one).
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let text = text.trim();
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{}` is not a port number from 1 to 65535", s.trim())),
            Ok(p) => Ok(p),
        }
    };
    let (low, high) = (port(low)?, port(high)?);
    if low > high {
        return Err(format!("the range {low}-{high} is backwards"));
    }
    let range = low..=high;
    if pair_count(&range) == 0 {
        return Err(format!(
            "the range {low}-{high} holds no even/odd port pair for RTP and RTCP"
        ));
    }
    Ok(range)
}

/// Parses a byte count: `65536`, `64K`, `64KiB`, `1M`, `1MiB` (binary
/// multiples: these are buffer sizes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiple: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{t}` is not a size: use bytes, or a number with K, M or G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{t}` is not a size: use bytes, or a number with K, M or G"))?;
    n.checked_mul(multiple)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{t}` is too large"))
}

fn file_size(key: &'static str, size: Size, origin: &Origin) -> Result<usize, ConfigError> {
    match size {
        Size::Bytes(n) => usize::try_from(n).map_err(|_| invalid(key, n, origin.clone(), "too large")),
        Size::Text(t) => parse_size(&t).map_err(|why| invalid(key, format!("{t:?}"), origin.clone(), why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("arguments parse")
            .serve
    }

    /// A fresh directory with a `media/` inside, unique per test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streamalot-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("media")).unwrap();
        dir
    }

    fn with_config(dir: &Path, toml: &str) -> PathBuf {
        let path = dir.join("streamalot.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    #[test]
    fn instant_on_and_thinning_flags() {
        let dir = scratch("instant-on");
        let media = dir.join("media");
        let m = media.to_str().unwrap();
        let c = resolve(&parse(&["--media", m])).unwrap();
        assert_eq!((c.instant_on, c.thinning), (Some((200, 4000)), true), "on by default");
        let c = resolve(&parse(&["--media", m, "--burst-rate", "1.5", "--burst-lead", "25"])).unwrap();
        assert_eq!(c.instant_on, Some((150, 25_000)));
        let c = resolve(&parse(&["--media", m, "--no-instant-on", "--no-thinning"])).unwrap();
        assert_eq!((c.instant_on, c.thinning), (None, false));
        assert_eq!(c.max_speed_percent, 400, "DSS's max_allowed_speed by default");
        let c = resolve(&parse(&["--media", m, "--max-speed", "1"])).unwrap();
        assert_eq!(c.max_speed_percent, 100, "1: Speed is never granted");
        for bad in [
            ["--max-speed", "0.5"],
            ["--max-speed", "11"],
            ["--burst-rate", "1"],
            ["--burst-rate", "11"],
            ["--burst-lead", "0"],
            ["--burst-lead", "26"],
        ] {
            let args: Vec<&str> = ["--media", m].into_iter().chain(bad).collect();
            assert!(resolve(&parse(&args)).is_err(), "{bad:?}");
        }
        let file = with_config(&dir, "instant_on = false\nthinning = false\nburst_lead = 8\n");
        let c = resolve(&parse(&["--media", m, "--config", file.to_str().unwrap()])).unwrap();
        assert_eq!((c.instant_on, c.thinning), (None, false));
    }

    #[test]
    fn defaults() {
        let dir = scratch("defaults");
        let media = dir.join("media");
        let c = resolve(&parse(&["--media", media.to_str().unwrap()])).unwrap();
        assert_eq!(c.media, media.canonicalize().unwrap());
        assert_eq!(c.rtsp_ports, vec![8554]);
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.shards, default_shards());
        assert!(c.shards >= 1);
        assert!(pair_count(&c.rtp_ports) >= c.shards);
        assert_eq!(c.session_timeout, 60);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_connections_per_client, usize::MAX);
        assert_eq!(c.max_sessions, 10_000);
        assert_eq!(c.max_sessions_per_client, usize::MAX);
        assert_eq!(c.max_header_bytes, 16384);
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.tcp_queue_bytes, 256 * 1024);
        assert_eq!(c.max_listeners, 10_000);
        assert_eq!(c.listener_queue_bytes, 512 * 1024);
        assert_eq!(c.access_log, None);
        assert_eq!(c.stats_interval, None);
        assert_eq!(c.stats_json, None);
        assert_eq!(c.send_path, DEFAULT_SEND_PATH);
        assert!(!c.reuse_port, "a port in use is an error unless asked");
        assert!(c.http_ports.is_empty(), "no HTTP-only port unless asked");
    }

    #[test]
    fn http_ports_are_not_rtsp_ports() {
        let dir = scratch("http-ports");
        let media = dir.join("media");
        let m = media.to_str().unwrap();
        let e = resolve(&parse(&["--media", m, "--rtsp-port", "8554", "--http-port", "8554"])).unwrap_err();
        assert!(e.to_string().contains("`--http-port 8554`"), "{e}");
        let e = resolve(&parse(&["--media", m, "--http-port", "0"])).unwrap_err();
        assert!(e.to_string().contains("--http-port 0"), "{e}");
        let config = with_config(&dir, "media = \"media\"\nhttp_port = [80, 80, 8000]\n");
        let c = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap();
        assert_eq!(c.http_ports, vec![80, 8000]);
    }

    #[test]
    fn flags_are_read() {
        let dir = scratch("flags");
        let media = dir.join("media");
        let c = resolve(&parse(&[
            "--media",
            media.to_str().unwrap(),
            "--rtsp-port",
            "554",
            "--rtsp-port",
            "8554",
            "--rtsp-port",
            "554",
            "--bind",
            "127.0.0.1",
            "--shards",
            "3",
            "--rtp-ports",
            "20000-20009",
            "--session-timeout",
            "30",
            "--max-connections",
            "0",
            "--max-sessions-per-client",
            "4",
            "--max-header-bytes",
            "8K",
            "--max-body-bytes",
            "0",
            "--tcp-queue-bytes",
            "1MiB",
            "--access-log",
            "/var/log/streamalot/access.log",
            "--stats-interval",
            "10",
            "--stats-json",
            "/run/streamalot/stats.json",
            "--reuse-port",
            "--http-port",
            "80",
            "--http-port",
            "8000",
            "--send-path",
            "io-uring",
        ]))
        .unwrap();
        assert_eq!(c.send_path, SendPath::IoUring);
        assert!(c.reuse_port);
        assert_eq!(c.rtsp_ports, vec![554, 8554], "duplicates dropped, order kept");
        assert_eq!(c.http_ports, vec![80, 8000]);
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.shards, 3);
        assert_eq!(c.rtp_ports, 20000..=20009);
        assert_eq!(c.session_timeout, 30);
        assert_eq!(c.max_connections, usize::MAX);
        assert_eq!(c.max_sessions_per_client, 4);
        assert_eq!(c.max_header_bytes, 8192);
        assert_eq!(c.max_body_bytes, 0);
        assert_eq!(c.tcp_queue_bytes, 1 << 20);
        assert_eq!(c.access_log, Some(PathBuf::from("/var/log/streamalot/access.log")));
        assert_eq!(c.stats_interval, Some(10));
        assert_eq!(c.stats_json, Some(PathBuf::from("/run/streamalot/stats.json")));
    }

    #[test]
    fn file_then_flags_override() {
        let dir = scratch("precedence");
        std::fs::create_dir_all(dir.join("other")).unwrap();
        let config = with_config(
            &dir,
            r#"
                media = "media"
                rtsp_port = [554, 8555]
                bind = "::1"
                shards = 2
                rtp_ports = "30000-30003"
                session_timeout = 90
                max_connections = 50
                max_connections_per_client = 5
                max_sessions = 40
                max_sessions_per_client = 0
                max_header_bytes = "4K"
                max_body_bytes = 1000
                tcp_queue_bytes = 65536
                max_listeners = 3
                listener_queue_bytes = "64K"
                access_log = "logs/access.log"
                stats_interval = 5
                stats_json = "stats.json"
                reuse_port = true
                send_path = "io-uring"
            "#,
        );
        let c = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap();
        assert!(c.reuse_port);
        // Relative paths in the file are relative to the file.
        assert_eq!(c.media, dir.join("media").canonicalize().unwrap());
        assert_eq!(c.access_log, Some(dir.join("logs/access.log")));
        assert_eq!(c.rtsp_ports, vec![554, 8555]);
        assert_eq!(c.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(c.shards, 2);
        assert_eq!(c.rtp_ports, 30000..=30003);
        assert_eq!(c.session_timeout, 90);
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.max_connections_per_client, 5);
        assert_eq!(c.max_sessions, 40);
        assert_eq!(c.max_sessions_per_client, usize::MAX);
        assert_eq!(c.max_header_bytes, 4096);
        assert_eq!(c.max_body_bytes, 1000);
        assert_eq!(c.tcp_queue_bytes, 65536);
        assert_eq!(c.max_listeners, 3);
        assert_eq!(c.listener_queue_bytes, 65536);
        assert_eq!(c.stats_interval, Some(5));
        assert_eq!(c.stats_json, Some(dir.join("stats.json")));
        assert_eq!(c.send_path, SendPath::IoUring);

        let other = dir.join("other");
        let c = resolve(&parse(&[
            "--config",
            config.to_str().unwrap(),
            "--media",
            other.to_str().unwrap(),
            "--rtsp-port",
            "9000",
            "--shards",
            "1",
            "--max-connections",
            "7",
            "--access-log",
            "-",
        ]))
        .unwrap();
        assert_eq!(c.media, other.canonicalize().unwrap());
        assert_eq!(c.rtsp_ports, vec![9000], "the command line's ports replace the file's");
        assert_eq!(c.shards, 1);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.access_log, None, "`-` is standard output");
        // Untouched by flags: still from the file.
        assert_eq!(c.session_timeout, 90);
        assert_eq!(c.max_sessions, 40);
    }

    #[test]
    fn single_port_and_stdout_in_file() {
        let dir = scratch("single");
        let config = with_config(&dir, "rtsp_port = 7554\naccess_log = \"-\"\nmedia = \"media\"\n");
        let c = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap();
        assert_eq!(c.rtsp_ports, vec![7554]);
        assert_eq!(c.access_log, None);
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = scratch("unknown");
        let config = with_config(&dir, "media = \"media\"\nmax_sesions = 10\n");
        let err = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{text}");
        assert!(text.contains("max_sesions"), "{text}");
        assert!(text.contains("streamalot.toml"), "{text}");
    }

    #[test]
    fn bad_values_say_what_and_where() {
        let dir = scratch("bad");
        let media = dir.join("media");
        let media = media.to_str().unwrap();
        let check = |args: &[&str], wants: &[&str]| {
            let mut all = vec!["--media", media];
            all.extend_from_slice(args);
            let err = resolve(&parse(&all)).unwrap_err().to_string();
            for w in wants {
                assert!(err.contains(w), "{err:?} should mention {w:?}");
            }
        };
        check(&["--shards", "0"], &["--shards 0", "command line", "at least one"]);
        check(&["--session-timeout", "0"], &["--session-timeout 0"]);
        check(&["--rtsp-port", "0"], &["--rtsp-port 0"]);
        check(
            &["--shards", "4", "--rtp-ports", "7000-7003"],
            &["--rtp-ports 7000-7003", "2 even/odd", "4 shard"],
        );
        check(
            &["--tcp-queue-bytes", "100"],
            &["--tcp-queue-bytes 100", "at least 4096"],
        );
        check(
            &["--listener-queue-bytes", "1000"],
            &["--listener-queue-bytes 1000", "at least 16384"],
        );
        check(&["--max-header-bytes", "10"], &["--max-header-bytes 10"]);
        check(&["--stats-interval", "0"], &["--stats-interval 0"]);

        let missing = dir.join("nope");
        let err = resolve(&parse(&["--media", missing.to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, ConfigError::Media { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = resolve(&parse(&["--media", file.to_str().unwrap()])).unwrap_err();
        assert!(matches!(err, ConfigError::MediaNotDirectory { .. }), "{err}");

        // Bad values in the file name the key and the file.
        for (toml, wants) in [
            ("shards = 0", "`shards = 0` in"),
            ("rtp_ports = \"7000-6000\"", "backwards"),
            ("rtp_ports = \"7000\"", "no even/odd port pair"),
            ("max_body_bytes = \"lots\"", "not a size"),
            ("shards = \"four\"", "shards"),
            ("bind = \"localhost\"", "bind"),
            ("rtsp_port = 70000", "rtsp_port"),
            ("media = [", "streamalot.toml"),
            ("send_path = \"aio\"", "`send_path = aio` in"),
        ] {
            let config = with_config(&dir, &format!("media = \"media\"\n{toml}\n"));
            let config = config.to_str().unwrap();
            let err = resolve(&parse(&["--config", config])).unwrap_err().to_string();
            assert!(err.contains(wants), "{toml}: {err:?} should mention {wants:?}");
            assert!(err.contains("streamalot.toml"), "{toml}: {err:?}");
        }

        let err = resolve(&parse(&[
            "--media",
            media,
            "--config",
            dir.join("absent.toml").to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");

        // Flags that cannot even be parsed are refused by clap itself.
        for args in [
            &["--rtp-ports", "a-b"][..],
            &["--rtp-ports", "9-8"],
            &["--max-body-bytes", "12Q"],
            &["--bind", "nowhere"],
            &["--shards", "-1"],
            &["--send-path", "aio"],
        ] {
            let all: Vec<&str> = std::iter::once("serve").chain(args.iter().copied()).collect();
            assert!(Cli::try_parse_from(all).is_err(), "{args:?}");
        }
    }

    #[test]
    fn port_ranges_and_sizes() {
        assert_eq!(parse_port_range("6970-6999"), Ok(6970..=6999));
        assert_eq!(parse_port_range(" 6970 - 6971 "), Ok(6970..=6971));
        assert!(parse_port_range("6971-6972").is_err(), "no even/odd pair");
        assert!(parse_port_range("0-10").is_err());
        assert_eq!(pair_count(&(6970..=6999)), 15);
        assert_eq!(pair_count(&(6971..=6974)), 1);
        assert_eq!(pair_count(&(0..=3)), 1);
        assert_eq!(pair_count(&(65534..=65535)), 1);
        assert_eq!(pair_count(&(65535..=65535)), 0);
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("16 kib"), Ok(16384));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(pair_count(&default_rtp_ports(1)) >= 1);
        assert!(pair_count(&default_rtp_ports(100)) >= 100);
    }

    #[test]
    fn the_admin_api_is_off_unless_a_token_is_given() {
        let dir = scratch("admin");
        let media = dir.join("media");
        let m = media.to_str().unwrap();
        let c = resolve(&parse(&["--media", m])).unwrap();
        assert_eq!(c.admin_token, None);
        assert_eq!(c.admin_allow, loopback_blocks());
        assert_eq!(c.metrics_allow, loopback_blocks());
        let c = resolve(&parse(&[
            "--media",
            m,
            "--admin-token",
            "abc-DEF_1.2~3+4/5==",
            "--admin-allow",
            "192.0.2.0/24",
            "--admin-allow",
            "2001:db8::/32",
            "--metrics-allow",
            "10.1.2.3",
        ]))
        .unwrap();
        assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("abc-DEF_1.2~3+4/5=="));
        assert_eq!(
            format!("{:?}", c.admin_token),
            "Some(***)",
            "Debug does not give it away"
        );
        assert!(!format!("{c:?}").contains("abc-DEF"));
        let blocks: Vec<String> = c.admin_allow.iter().map(ToString::to_string).collect();
        assert_eq!(blocks, ["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(c.metrics_allow[0].to_string(), "10.1.2.3/32");
        for bad in ["", "has space", "quote\"", "a=b", "tab\t"] {
            let e = resolve(&parse(&["--media", m, "--admin-token", bad])).unwrap_err();
            assert!(e.to_string().contains("bearer token"), "{bad:?}: {e}");
            assert!(
                e.to_string().contains("`--admin-token ***`"),
                "the value is not echoed: {e}"
            );
        }
        let all = ["serve", "--media", m, "--admin-allow", "192.0.2.1/24"];
        assert!(Cli::try_parse_from(all).is_err(), "host bits past the prefix");
        let config = with_config(
            &dir,
            "media = \"media\"\nadmin_token = \"from-file\"\nadmin_allow = [\"127.0.0.1\"]\nmetrics_allow = [\"0.0.0.0/0\"]\n",
        );
        let c = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap();
        assert_eq!(c.admin_token, Some(Secret::new("from-file")));
        assert_eq!(c.admin_allow[0].to_string(), "127.0.0.1/32");
        assert_eq!(c.metrics_allow[0].to_string(), "0.0.0.0/0");
        let config = with_config(&dir, "media = \"media\"\nadmin_allow = [\"nowhere\"]\n");
        let e = resolve(&parse(&["--config", config.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("admin_allow = nowhere"), "{e}");
    }
}
