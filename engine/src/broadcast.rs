//! The settings of `streamalot broadcast`: its flags, its own TOML file, and
//! DSS broadcaster description files, merged by [`resolve`] into a checked
//! [`Plan`] that [`crate::server::broadcast::run`] carries out.
//!
//! A flag wins over the file. Relative paths in a file are relative to the
//! file's directory; on the command line, to the current one.
//!
//! The TOML file takes the flags' names in snake_case:
//!
//! ```toml
//! playlist = "tv.ply"
//! to = "rtsp://user:secret@server:8554/live/tv"   # or "udp://HOST:PORT"
//! transport = "tcp"              # or "udp" (for rtsp:// destinations)
//! sdp = "tv.sdp"
//! mode = "sequential_looped"     # or "sequential", "weighted_random"
//! reference = "movies/first.mp4"
//! recent_movies_list_size = 3
//! max_upcoming_list_size = 7
//! current_file = "tv.current"
//! upcoming_file = "tv.upcoming"
//! log_file = "tv.log"
//! name = "TV"
//! seed = 1
//! movies = 100
//! ```
//!
//! A DSS description file (any `--config` not named `.toml`) is read with
//! [`BroadcastConfig`]: `play_list_file`/`playlist_file`, `play_mode`,
//! `recent_movies_list_size`, `sdp_reference_movie`, `destination_ip_address`,
//! `destination_base_port`, `sdp_file` (or `broadcast_SDP_file`),
//! `max_upcoming_list_size`, `logging` and `log_file`, `show_current` and
//! `show_upcoming`, the start and end times; with `destination_sdp_file` set
//! the broadcast is announced to the RTSP server at
//! `destination_ip_address:rtsp_port` under that name, with
//! `broadcaster_name`/`broadcaster_password`, as DSS's broadcaster did;
//! otherwise it is sent as plain RTP to `destination_ip_address`, from
//! `destination_base_port` up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proto::rtsp::header::Lower;
use proto::rtsp::url::RtspUrl;
use serde::Deserialize;

use crate::channel::config::{BroadcastConfig, BroadcastConfigError};
use crate::channel::picker::PlayMode;
use crate::channel::status::DEFAULT_UPCOMING;

/// How the stream reaches an RTSP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportArg {
    /// RTP interleaved on the RTSP connection.
    Tcp,
    /// RTP over UDP to the ports the server gives.
    Udp,
}

/// Push a playlist of hinted movies as one live stream, in real time: to an
/// RTSP server by ANNOUNCE/RECORD, or as plain RTP to a UDP address with an
/// SDP file to play it from.
///
/// Sequence numbers and timestamps run on across movies (one SSRC per track
/// for the whole run); a movie whose tracks or codecs differ from the
/// reference movie's is skipped with a message, and so is a missing one, by
/// its playlist line. The playlist is reread when it changes (or on
/// SIGHUP). SIGUSR1 skips to the next movie; SIGINT or SIGTERM ends the
/// broadcast cleanly (RTCP BYE, TEARDOWN). Lines on standard input are
/// commands: `skip`, `next PATH` (play PATH after the current movie), `stop`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BroadcastArgs {
    /// The playlist: a DSS `*PLAY-LIST*` file, an M3U list, or a directory of movies
    #[arg(value_name = "PLAYLIST")]
    pub playlist: Option<PathBuf>,

    /// Where to send: rtsp://HOST:PORT/PATH, with USER:PASSWORD@ before HOST when the server asks
    /// (ANNOUNCE/RECORD), or udp://HOST:PORT (plain RTP, the first track on PORT, the next on
    /// PORT+2, ...)
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,

    /// For rtsp:// destinations: media interleaved on the RTSP connection, or over UDP
    /// [default: tcp]
    #[arg(long, value_enum)]
    pub transport: Option<TransportArg>,

    /// Write the stream's SDP here (players open it for udp:// destinations)
    /// [default for udp://: the playlist's name with .sdp]
    #[arg(long, value_name = "FILE")]
    pub sdp: Option<PathBuf>,

    /// Settings file: our TOML (named .toml) or a DSS broadcaster description file
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// sequential, sequential_looped or weighted_random [default: sequential_looped]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<PlayMode>,

    /// The movie every movie must match in tracks and codecs [default: the playlist's first]
    #[arg(long, value_name = "MOVIE")]
    pub reference: Option<PathBuf>,

    /// weighted_random: how many other movies play before one repeats [default: 0]
    #[arg(long = "recent-movies-list-size", value_name = "N")]
    pub recent_movies_list_size: Option<usize>,

    /// How many movies the .upcoming file lists [default: 7]
    #[arg(long = "max-upcoming-list-size", value_name = "N")]
    pub max_upcoming_list_size: Option<usize>,

    /// Where to write what plays now, as DSS's .current [default: the playlist's name with .current]
    #[arg(long = "current-file", value_name = "FILE")]
    pub current_file: Option<PathBuf>,

    /// Where to write what plays next, as DSS's .upcoming [default: the playlist's name with .upcoming]
    #[arg(long = "upcoming-file", value_name = "FILE")]
    pub upcoming_file: Option<PathBuf>,

    /// Append a line per movie played or skipped to this file
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// The stream's name in its SDP (s=) [default: the playlist's file name]
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,

    /// Stop after this many movies [default: never, for looped and random play]
    #[arg(long, value_name = "N")]
    pub movies: Option<u64>,

    /// Seed for random play and the stream's SSRCs and first numbers [default: random]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Seconds between progress lines on the terminal; 0 for none [default: 10]
    #[arg(long, value_name = "SECS")]
    pub progress: Option<u64>,

    /// Check the playlist against the reference movie, write the SDP, and exit without sending
    #[arg(long)]
    pub check: bool,
}

/// Our TOML file: the flags by their snake_case names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    playlist: Option<PathBuf>,
    to: Option<String>,
    transport: Option<TransportArg>,
    sdp: Option<PathBuf>,
    mode: Option<PlayMode>,
    reference: Option<PathBuf>,
    recent_movies_list_size: Option<usize>,
    max_upcoming_list_size: Option<usize>,
    current_file: Option<PathBuf>,
    upcoming_file: Option<PathBuf>,
    log_file: Option<PathBuf>,
    name: Option<String>,
    movies: Option<u64>,
    seed: Option<u64>,
    progress: Option<u64>,
}

/// Where the stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Announced to an RTSP server.
    Rtsp { url: RtspUrl, lower: Lower },
    /// Plain RTP to `host`, the first track's RTP on `port`.
    Udp { host: String, port: u16 },
}

/// A checked broadcast.
#[derive(Debug, Clone)]
pub struct Plan {
    pub playlist: PathBuf,
    pub destination: Destination,
    pub sdp_file: Option<PathBuf>,
    pub name: String,
    pub mode: PlayMode,
    pub reference: Option<PathBuf>,
    pub window: usize,
    pub max_upcoming: usize,
    pub current_file: Option<PathBuf>,
    pub upcoming_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub movies: Option<u64>,
    pub seed: Option<u64>,
    pub progress: Option<Duration>,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub check: bool,
    /// What was doubtful in the settings file, to log.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Dss(#[from] BroadcastConfigError),
    #[error("no playlist: give PLAYLIST, or `playlist` in the settings file")]
    NoPlaylist,
    #[error("no destination: give --to rtsp://HOST:PORT/PATH or --to udp://HOST:PORT")]
    NoDestination,
    #[error("--to {0:?}: {1}")]
    BadDestination(String, String),
    #[error("the DSS description file sets no destination_ip_address")]
    NoDestinationAddress,
}

/// `udp://HOST:PORT` (IPv6 in brackets).
fn parse_udp(s: &str) -> Result<(String, u16), String> {
    let rest = s
        .strip_prefix("udp://")
        .or_else(|| s.strip_prefix("UDP://"))
        .ok_or("not udp://")?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or("expected udp://[ADDRESS]:PORT")?;
        (h, p)
    } else {
        rest.rsplit_once(':').ok_or("expected udp://HOST:PORT")?
    };
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    if host.is_empty() || port == 0 {
        return Err("expected udp://HOST:PORT with a port above 0".into());
    }
    if port % 2 == 1 {
        return Err(format!(
            "port {port} is odd; RTP takes the even port of a pair (RTCP the odd one above)"
        ));
    }
    Ok((host.to_owned(), port))
}

fn destination(to: &str, lower: Lower) -> Result<Destination, PlanError> {
    let bad = |why: String| PlanError::BadDestination(redacted(to), why);
    if to.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("udp://")) {
        let (host, port) = parse_udp(to).map_err(bad)?;
        return Ok(Destination::Udp { host, port });
    }
    let url = RtspUrl::parse(to).map_err(|e| bad(e.to_string()))?;
    if url.path().trim_matches('/').is_empty() {
        return Err(bad("names no path to publish at".into()));
    }
    Ok(Destination::Rtsp { url, lower })
}

/// `to` with any password taken out, for messages.
fn redacted(to: &str) -> String {
    match RtspUrl::parse(to) {
        Ok(u) => u.as_str().to_owned(),
        Err(_) => to.to_owned(),
    }
}

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    // `tv.ply` -> `tv.current`; a directory `movies/` -> `movies.current`.
    if p.extension().is_some() && !p.is_dir() {
        return p.with_extension(ext);
    }
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Merges the flags with the settings file, if any.
pub fn resolve(args: &BroadcastArgs) -> Result<Plan, PlanError> {
    let mut file = FileSettings::default();
    let mut warnings = Vec::new();
    let mut dss: Option<BroadcastConfig> = None;
    if let Some(path) = &args.config {
        let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
            path: path.clone(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("")).to_owned();
        let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            let text = String::from_utf8_lossy(&bytes);
            file = toml::from_str(&text).map_err(|source| PlanError::Toml {
                path: path.clone(),
                source,
            })?;
            let rel = |p: &mut Option<PathBuf>| {
                if let Some(x) = p {
                    *x = dir.join(&*x);
                }
            };
            for p in [
                &mut file.playlist,
                &mut file.sdp,
                &mut file.reference,
                &mut file.current_file,
                &mut file.upcoming_file,
                &mut file.log_file,
            ] {
                rel(p);
            }
        } else {
            let (config, diagnostics) = BroadcastConfig::read(path, &bytes)?;
            warnings.extend(diagnostics.iter().map(ToString::to_string));
            dss = Some(config);
        }
    }
    let now = SystemTime::now();
    let playlist = args
        .playlist
        .clone()
        .or(file.playlist.clone())
        .or(dss.as_ref().map(|d| d.playlist_file.clone()))
        .ok_or(PlanError::NoPlaylist)?;
    let lower = match args.transport.or(file.transport).unwrap_or(TransportArg::Tcp) {
        TransportArg::Tcp => Lower::Tcp,
        TransportArg::Udp => Lower::Udp,
    };
    let destination = match args.to.clone().or(file.to.clone()) {
        Some(to) => destination(&to, lower)?,
        None => match &dss {
            None => return Err(PlanError::NoDestination),
            Some(d) => {
                let host = d
                    .destination_ip_address
                    .clone()
                    .ok_or(PlanError::NoDestinationAddress)?;
                match &d.destination_sdp_file {
                    Some(name) => {
                        let auth = match (&d.broadcaster_name, &d.broadcaster_password) {
                            (Some(u), Some(p)) => format!("{}:{}@", escape(u), escape(p)),
                            (Some(u), None) => format!("{}@", escape(u)),
                            _ => String::new(),
                        };
                        let host_part = if host.contains(':') { format!("[{host}]") } else { host };
                        let to = format!(
                            "rtsp://{auth}{host_part}:{}/{}",
                            d.rtsp_port,
                            name.trim_start_matches('/')
                        );
                        destination(&to, lower)?
                    }
                    None => Destination::Udp {
                        host,
                        port: d.destination_base_port,
                    },
                }
            }
        },
    };
    let is_udp = matches!(destination, Destination::Udp { .. });
    let sdp_file = args
        .sdp
        .clone()
        .or(file.sdp.clone())
        .or(dss.as_ref().map(|d| d.sdp_file.clone()))
        .or_else(|| is_udp.then(|| with_ext(&playlist, "sdp")));
    let (current_default, upcoming_default) = match &dss {
        Some(d) => (
            d.show_current.then(|| d.current_file.clone()),
            d.show_upcoming.then(|| d.upcoming_file.clone()),
        ),
        None => (
            Some(with_ext(&playlist, "current")),
            Some(with_ext(&playlist, "upcoming")),
        ),
    };
    let name = args.name.clone().or(file.name.clone()).unwrap_or_else(|| {
        playlist
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Streamalot broadcast".into())
    });
    let progress = args.progress.or(file.progress).unwrap_or(10);
    Ok(Plan {
        destination,
        sdp_file,
        name,
        mode: args
            .mode
            .or(file.mode)
            .or(dss.as_ref().map(|d| d.play_mode))
            .unwrap_or_default(),
        reference: args
            .reference
            .clone()
            .or(file.reference.clone())
            .or(dss.as_ref().and_then(|d| d.sdp_reference_movie.clone())),
        window: args
            .recent_movies_list_size
            .or(file.recent_movies_list_size)
            .or(dss.as_ref().map(|d| d.recent_movies_list_size))
            .unwrap_or(0),
        max_upcoming: args
            .max_upcoming_list_size
            .or(file.max_upcoming_list_size)
            .or(dss.as_ref().map(|d| d.max_upcoming_list_size))
            .unwrap_or(DEFAULT_UPCOMING),
        current_file: args
            .current_file
            .clone()
            .or(file.current_file.clone())
            .or(current_default),
        upcoming_file: args
            .upcoming_file
            .clone()
            .or(file.upcoming_file.clone())
            .or(upcoming_default),
        log_file: args
            .log_file
            .clone()
            .or(file.log_file.clone())
            .or(dss.as_ref().filter(|d| d.logging).map(|d| d.log_file.clone())),
        movies: args.movies.or(file.movies),
        seed: args.seed.or(file.seed),
        progress: (progress > 0).then(|| Duration::from_secs(progress)),
        start: dss.as_ref().and_then(|d| d.broadcast_start_time.resolve(now)),
        end: dss.as_ref().and_then(|d| d.broadcast_end_time.resolve(now)),
        check: args.check,
        warnings,
        playlist,
    })
}

/// %-escapes what may not stand in a URL's user information.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(to: &str) -> BroadcastArgs {
        BroadcastArgs {
            playlist: Some("lists/tv.ply".into()),
            to: Some(to.into()),
            ..BroadcastArgs::default()
        }
    }

    #[test]
    fn destinations() {
        let p = resolve(&args("udp://127.0.0.1:5004")).unwrap();
        assert_eq!(
            p.destination,
            Destination::Udp {
                host: "127.0.0.1".into(),
                port: 5004
            }
        );
        assert_eq!(p.sdp_file, Some("lists/tv.sdp".into()));
        assert_eq!(p.current_file, Some("lists/tv.current".into()));
        assert_eq!(p.upcoming_file, Some("lists/tv.upcoming".into()));
        assert_eq!(p.name, "tv");
        let p = resolve(&args("udp://[::1]:6000")).unwrap();
        assert_eq!(
            p.destination,
            Destination::Udp {
                host: "::1".into(),
                port: 6000
            }
        );
        let p = resolve(&args("rtsp://u:p%40ss@h:8554/live/tv")).unwrap();
        match &p.destination {
            Destination::Rtsp { url, lower } => {
                assert_eq!(
                    (url.as_str(), url.password(), *lower),
                    ("rtsp://h:8554/live/tv", Some("p@ss"), Lower::Tcp)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.sdp_file, None, "no SDP file unless asked, for RTSP");
        for (bad, why) in [
            ("udp://127.0.0.1:5005", "odd"),
            ("udp://127.0.0.1", "HOST:PORT"),
            ("http://h/x", "not an rtsp:// URL"),
            ("rtsp://u:secret@h:8554/", "no path"),
        ] {
            let e = resolve(&args(bad)).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let e = resolve(&BroadcastArgs::default()).unwrap_err();
        assert!(matches!(e, PlanError::NoPlaylist), "{e}");
    }

    #[test]
    fn dss_and_toml_files() {
        let dir = crate::channel::testing::scratch("broadcast-plan");
        std::fs::write(
            dir.join("tv.config"),
            "play_list_file tv.ply\nplay_mode weighted_random\nrecent_movies_list_size 2\n\
             destination_ip_address 127.0.0.1\ndestination_base_port 7000\nbroadcast_SDP_file out.sdp\n\
             sdp_reference_movie ref.mp4\nmax_upcoming_list_size 3\nlogging enabled\n",
        )
        .unwrap();
        let p = resolve(&BroadcastArgs {
            config: Some(dir.join("tv.config")),
            ..BroadcastArgs::default()
        })
        .unwrap();
        assert_eq!(p.playlist, dir.join("tv.ply"));
        assert_eq!(p.mode, PlayMode::WeightedRandom);
        assert_eq!(p.window, 2);
        assert_eq!(
            p.destination,
            Destination::Udp {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(p.sdp_file, Some(dir.join("out.sdp")));
        assert_eq!(p.reference, Some(dir.join("ref.mp4")));
        assert_eq!(p.max_upcoming, 3);
        assert_eq!(p.log_file, Some(dir.join("tv.log")));
        assert_eq!(p.current_file, Some(dir.join("tv.current")));

        // Announced, with the broadcaster's credentials.
        std::fs::write(
            dir.join("push.config"),
            "playlist_file tv.ply\ndestination_ip_address 10.0.0.1\ndestination_sdp_file live/tv.sdp\n\
             rtsp_port 8554\nbroadcaster_name bob\nbroadcaster_password \"a b\"\nlogging disabled\n",
        )
        .unwrap();
        let p = resolve(&BroadcastArgs {
            config: Some(dir.join("push.config")),
            transport: Some(TransportArg::Udp),
            ..BroadcastArgs::default()
        })
        .unwrap();
        match &p.destination {
            Destination::Rtsp { url, lower } => {
                assert_eq!(url.as_str(), "rtsp://10.0.0.1:8554/live/tv.sdp");
                assert_eq!((url.user(), url.password()), (Some("bob"), Some("a b")));
                assert_eq!(*lower, Lower::Udp);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.log_file, None);

        std::fs::write(
            dir.join("tv.toml"),
            "playlist = \"lists/a.m3u\"\nto = \"udp://127.0.0.1:9000\"\nmode = \"sequential\"\nmovies = 4\n",
        )
        .unwrap();
        let p = resolve(&BroadcastArgs {
            config: Some(dir.join("tv.toml")),
            mode: Some(PlayMode::SequentialLooped),
            ..BroadcastArgs::default()
        })
        .unwrap();
        assert_eq!(p.playlist, dir.join("lists/a.m3u"));
        assert_eq!(p.mode, PlayMode::SequentialLooped, "the flag wins");
        assert_eq!(p.movies, Some(4));
        std::fs::write(dir.join("bad.toml"), "playlist = \"a\"\nplaylsit = 1\n").unwrap();
        let e = resolve(&BroadcastArgs {
            config: Some(dir.join("bad.toml")),
            ..BroadcastArgs::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("playlsit"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
