//! Channel settings: DSS broadcaster description files, and the
//! `[[channel]]` table of our TOML file.
//!
//! # DSS broadcaster description files
//!
//! PlaylistBroadcaster's description file (`PLBroadcastDef.cpp`, read by
//! `ConfParser.cpp`) is one `key value` setting a line, `#` comments, values
//! in double quotes when they hold spaces:
//!
//! ```text
//! playlist_file /server/local/media/lists/playlist1
//! play_mode weighted_random
//! recent_movies_list_size 10
//! sdp_reference_movie /music/jazz/take5.mov
//! destination_ip_address 12.123.123.123
//! destination_base_port 5004
//! sdp_file /server/movies/playlist1.sdp
//! logging enabled
//! log_file /server/local/playlist1.log
//! ```
//!
//! Every key DSS read is read here, with DSS's defaults (see
//! [`BroadcastConfig`]); the names DSS used before its build 12,
//! `play_list_file` and `repeats_queue_size`, are accepted for
//! `playlist_file` and `recent_movies_list_size`. Relative paths are
//! relative to the description file's directory (DSS changed into it). DSS
//! stopped at the first line it could not use and refused the file, unknown
//! keys included; here a bad value is an error that names its line, all of
//! them are reported at once, and an unknown key is a warning (the rest of
//! the file still counts), so a file written for a later DSS still loads.
//! DSS also read `NAME.def` (the description file's name plus `.def`) first,
//! for site defaults: [`BroadcastConfig::apply`] the two in that order.
//!
//! # `[[channel]]`
//!
//! ```toml
//! [[channel]]
//! path = "tv/news"                 # rtsp://HOST:PORT/tv/news
//! playlist = "lists/news.ply"      # DSS or M3U; relative to this file
//! mode = "sequential_looped"       # or "sequential", "weighted_random"
//! when = "always"                  # or "watched": runs only while watched (also `run = "on-demand"`)
//! start = 2024-05-01T18:00:00Z     # optional: on air from, off air at
//! end = 2024-05-02T06:00:00+02:00
//! reference = "movies/news1.mp4"   # the layout movies must fit; default: the first that plays
//! recent_movies_list_size = 3      # weighted_random's no-repeat window
//! max_upcoming_list_size = 7
//! seed = 42                        # weighted_random's picks; default: random
//! current_file = "status/news.current"
//! upcoming_file = "status/news.upcoming"
//! ```
//!
//! [`ChannelSettings`] is the table as written (serde, unknown keys refused
//! like the rest of the file); [`ChannelSettings::resolve`] checks it into a
//! [`Channel`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::calendar::days_from_civil;
use super::picker::PlayMode;
use super::playlist::{lines, text, trim, trim_start, word};
use super::status::DEFAULT_UPCOMING;

/// Seconds from 1900 (NTP's epoch, which DSS's times count from) to 1970.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A DSS `broadcast_start_time` or `broadcast_end_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BroadcastTime {
    /// `0`: no bound.
    #[default]
    Unbounded,
    /// NTP seconds (since 1900), as DSS wrote them in the SDP's `t=` line.
    At(SystemTime),
    /// `*N`: N seconds after the broadcast is started (N may be negative).
    FromNow(i64),
}

impl BroadcastTime {
    /// The time this stands for, for a broadcast started at `now`.
    pub fn resolve(self, now: SystemTime) -> Option<SystemTime> {
        match self {
            BroadcastTime::Unbounded => None,
            BroadcastTime::At(t) => Some(t),
            BroadcastTime::FromNow(s) if s >= 0 => Some(now + Duration::from_secs(s as u64)),
            BroadcastTime::FromNow(s) => Some(
                now.checked_sub(Duration::from_secs(s.unsigned_abs()))
                    .unwrap_or(UNIX_EPOCH),
            ),
        }
    }
}

/// A DSS broadcaster description file's settings, each with DSS's default.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastConfig {
    /// `playlist_file` (default NAME.ply).
    pub playlist_file: PathBuf,
    /// `play_mode` (default sequential_looped).
    pub play_mode: PlayMode,
    /// `recent_movies_list_size` (default 0): weighted_random's no-repeat window.
    pub recent_movies_list_size: usize,
    /// `sdp_reference_movie` (default none: the playlist's first movie).
    pub sdp_reference_movie: Option<PathBuf>,
    /// `destination_ip_address` (default none: DSS took the host's first address):
    /// where plain RTP goes, or the server to announce to. A name or an
    /// address; resolving it is the caller's.
    pub destination_ip_address: Option<String>,
    /// `destination_base_port` (default 5004): the first track's RTP port, the next
    /// track's two above; 0 lets the server choose (announcing).
    pub destination_base_port: u16,
    /// `destination_sdp_file` (default none): the name to announce the broadcast as
    /// on the server (DSS's default was the placeholder `no_name`).
    pub destination_sdp_file: Option<String>,
    /// `sdp_file` (default NAME.sdp): where the broadcast's SDP is written.
    pub sdp_file: PathBuf,
    /// `broadcast_SDP_is_dynamic` (default disabled): what DSS's SDP
    /// generator wrote as `a=x-broadcastcontrol:` — `RTSP` when enabled (the
    /// server's RTSP sessions control the broadcast), `TIME` when disabled
    /// (the `t=` times do).
    pub broadcast_sdp_is_dynamic: bool,
    /// `max_upcoming_list_size` (default 7).
    pub max_upcoming_list_size: usize,
    /// `logging` (default enabled) and `log_file` (default NAME.log).
    pub logging: bool,
    pub log_file: PathBuf,
    /// `show_current` (default enabled), `show_upcoming` (default enabled): whether to write
    /// NAME.current and NAME.upcoming.
    pub show_current: bool,
    pub show_upcoming: bool,
    /// DSS's control and status files (not settable; named after the
    /// description file): NAME.current, .upcoming, .replacelist,
    /// .stoplist, .insertlist.
    pub current_file: PathBuf,
    pub upcoming_file: PathBuf,
    pub replacelist_file: PathBuf,
    pub stoplist_file: PathBuf,
    pub insertlist_file: PathBuf,
    /// `broadcast_start_time`, `broadcast_end_time` (default 0: unbounded).
    pub broadcast_start_time: BroadcastTime,
    pub broadcast_end_time: BroadcastTime,
    /// `broadcaster_name`, `broadcaster_password` (default none): credentials for
    /// announcing.
    pub broadcaster_name: Option<String>,
    pub broadcaster_password: Option<String>,
    /// `multicast_ttl` (default 1).
    pub multicast_ttl: u8,
    /// `rtsp_port` (default 554): the server's, for announcing.
    pub rtsp_port: u16,
    /// `pid_file` (default none).
    pub pid_file: Option<PathBuf>,
    /// `client_buffer_delay` (default 0: the player's default), seconds: written as
    /// `a=x-bufferdelay` in the SDP.
    pub client_buffer_delay: f32,
    /// `max_err_file_k_size` (default none: unlimited): cap on the error log, KiB.
    pub max_err_file_k_size: Option<u64>,
}

/// A line of a description file that was wrong or not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind}", file.display())]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub kind: DiagnosticKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagnosticKind {
    #[error("`{key}` has no value")]
    NoValue { key: String },
    #[error("`{key} {value}`: {why}")]
    BadValue { key: String, value: String, why: String },
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// A warning.
    #[error("unknown setting `{0}`, ignored")]
    UnknownKey(String),
    /// A warning.
    #[error("`{key}` is an old name; it is read as `{now}`")]
    OldName { key: String, now: &'static str },
    /// A warning.
    #[error("`{0}` is no longer used (DSS dropped it), ignored")]
    Dropped(String),
    /// A warning.
    #[error("`{key}` takes one value; `{extra}` ignored")]
    ExtraValues { key: String, extra: String },
    /// A warning.
    #[error("{0}")]
    Doubtful(String),
}

impl Diagnostic {
    /// Whether the setting could not be taken (else it is a warning).
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind,
            DiagnosticKind::NoValue { .. } | DiagnosticKind::BadValue { .. } | DiagnosticKind::UnterminatedQuote
        )
    }
}

/// A description file with errors: every diagnostic, errors and warnings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct BroadcastConfigError(pub Vec<Diagnostic>);

/// The settings DSS read, by name.
const KEYS: &[&str] = &[
    "playlist_file",
    "play_mode",
    "recent_movies_list_size",
    "sdp_reference_movie",
    "destination_ip_address",
    "destination_base_port",
    "destination_sdp_file",
    "sdp_file",
    "broadcast_SDP_is_dynamic",
    "max_upcoming_list_size",
    "logging",
    "log_file",
    "show_current",
    "show_upcoming",
    "broadcast_start_time",
    "broadcast_end_time",
    "broadcaster_name",
    "broadcaster_password",
    "multicast_ttl",
    "rtsp_port",
    "pid_file",
    "client_buffer_delay",
    "max_err_file_k_size",
];

impl BroadcastConfig {
    /// DSS's defaults for a description file at `file`: the files it names
    /// by default are `file` with its extension replaced.
    pub fn defaults(file: &Path) -> BroadcastConfig {
        let base = file.with_extension("");
        let with = |ext: &str| {
            let mut s = base.clone().into_os_string();
            s.push(".");
            s.push(ext);
            PathBuf::from(s)
        };
        BroadcastConfig {
            playlist_file: with("ply"),
            play_mode: PlayMode::SequentialLooped,
            recent_movies_list_size: 0,
            sdp_reference_movie: None,
            destination_ip_address: None,
            destination_base_port: 5004,
            destination_sdp_file: None,
            sdp_file: with("sdp"),
            broadcast_sdp_is_dynamic: false,
            max_upcoming_list_size: DEFAULT_UPCOMING,
            logging: true,
            log_file: with("log"),
            show_current: true,
            show_upcoming: true,
            current_file: with("current"),
            upcoming_file: with("upcoming"),
            replacelist_file: with("replacelist"),
            stoplist_file: with("stoplist"),
            insertlist_file: with("insertlist"),
            broadcast_start_time: BroadcastTime::Unbounded,
            broadcast_end_time: BroadcastTime::Unbounded,
            broadcaster_name: None,
            broadcaster_password: None,
            multicast_ttl: 1,
            rtsp_port: 554,
            pid_file: None,
            client_buffer_delay: 0.0,
            max_err_file_k_size: None,
        }
    }

    /// Reads the description file `text`, from `file`, over the defaults.
    /// Returns the settings and the warnings, or every diagnostic when any
    /// is an error.
    pub fn read(file: &Path, text: &[u8]) -> Result<(BroadcastConfig, Vec<Diagnostic>), BroadcastConfigError> {
        let mut config = BroadcastConfig::defaults(file);
        let diagnostics = config.apply(file, text);
        if diagnostics.iter().any(Diagnostic::is_error) {
            return Err(BroadcastConfigError(diagnostics));
        }
        Ok((config, diagnostics))
    }

    /// Applies the settings of `text` (read from `file`, whose directory
    /// relative paths are taken from) over these; returns what was wrong,
    /// errors and warnings, in line order. Settings on bad lines keep their
    /// earlier values.
    pub fn apply(&mut self, file: &Path, text_bytes: &[u8]) -> Vec<Diagnostic> {
        let dir = file.parent().unwrap_or(Path::new("")).to_owned();
        let mut out = Vec::new();
        for (n, line) in lines(text_bytes) {
            let l = trim_start(line);
            if l.is_empty() || l[0] == b'#' {
                continue;
            }
            let mut diag = |kind| {
                out.push(Diagnostic {
                    file: file.to_owned(),
                    line: n,
                    kind,
                })
            };
            let Ok((key, mut rest)) = word(l) else {
                diag(DiagnosticKind::UnterminatedQuote);
                continue;
            };
            let key = text(&key);
            let mut values = Vec::new();
            let mut broken = false;
            while !trim(rest).is_empty() {
                match word(rest) {
                    Ok((v, after)) => {
                        values.push(text(&v));
                        rest = after;
                    }
                    Err(()) => {
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                diag(DiagnosticKind::UnterminatedQuote);
                continue;
            }
            let (name, old) = match key.as_str() {
                "play_list_file" => ("playlist_file", true),
                "repeats_queue_size" => ("recent_movies_list_size", true),
                // What some of DSS's sample files and documentation call
                // `sdp_file`.
                k if k.eq_ignore_ascii_case("broadcast_SDP_file") => ("sdp_file", false),
                k => match KEYS.iter().find(|known| known.eq_ignore_ascii_case(k)) {
                    Some(known) => (*known, false),
                    None if k == "limit_play" => {
                        diag(DiagnosticKind::Dropped(key));
                        continue;
                    }
                    None => {
                        diag(DiagnosticKind::UnknownKey(key));
                        continue;
                    }
                },
            };
            if old {
                diag(DiagnosticKind::OldName {
                    key: key.clone(),
                    now: name,
                });
            }
            let Some(value) = values.first().cloned() else {
                diag(DiagnosticKind::NoValue { key });
                continue;
            };
            if values.len() > 1 {
                diag(DiagnosticKind::ExtraValues {
                    key: key.clone(),
                    extra: values[1..].join(" "),
                });
            }
            match self.set(name, &value, &dir) {
                Ok(None) => {}
                Ok(Some(warning)) => diag(DiagnosticKind::Doubtful(warning)),
                Err(why) => diag(DiagnosticKind::BadValue { key, value, why }),
            }
        }
        out
    }

    /// Sets `key` (a known name) to `value`; `Ok(Some(_))` is a warning.
    fn set(&mut self, key: &str, value: &str, dir: &Path) -> Result<Option<String>, String> {
        let path = |v: &str| dir.join(v);
        let number = |v: &str| v.parse::<u64>().map_err(|_| "not a whole number".to_owned());
        let switch = |v: &str| match v {
            "enabled" => Ok(true),
            "disabled" => Ok(false),
            _ => Err("must be `enabled` or `disabled`".to_owned()),
        };
        match key {
            "playlist_file" => self.playlist_file = path(value),
            "play_mode" => self.play_mode = value.parse()?,
            "recent_movies_list_size" => self.recent_movies_list_size = number(value)? as usize,
            "sdp_reference_movie" => self.sdp_reference_movie = Some(path(value)),
            "destination_ip_address" => self.destination_ip_address = Some(value.to_owned()),
            "destination_base_port" => {
                let port: u16 = value.parse().map_err(|_| "not a port number (0 to 65535)".to_owned())?;
                self.destination_base_port = port;
                if port % 2 == 1 {
                    return Ok(Some(format!(
                        "destination_base_port {port} is odd; RTP takes the even port of a pair"
                    )));
                }
            }
            "destination_sdp_file" => {
                self.destination_sdp_file = (value != "no_name").then(|| value.to_owned());
            }
            "sdp_file" => self.sdp_file = path(value),
            "broadcast_SDP_is_dynamic" => self.broadcast_sdp_is_dynamic = switch(value)?,
            "max_upcoming_list_size" => self.max_upcoming_list_size = number(value)? as usize,
            "logging" => self.logging = switch(value)?,
            "log_file" => self.log_file = path(value),
            "show_current" => self.show_current = switch(value)?,
            "show_upcoming" => self.show_upcoming = switch(value)?,
            "broadcast_start_time" | "broadcast_end_time" => {
                let (t, warning) = broadcast_time(value)?;
                if key == "broadcast_start_time" {
                    self.broadcast_start_time = t;
                } else {
                    self.broadcast_end_time = t;
                }
                return Ok(warning);
            }
            "broadcaster_name" => self.broadcaster_name = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "broadcaster_password" => self.broadcaster_password = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "multicast_ttl" => {
                self.multicast_ttl = value
                    .parse::<u8>()
                    .ok()
                    .filter(|&t| t >= 1)
                    .ok_or("must be from 1 to 255")?;
            }
            "rtsp_port" => {
                self.rtsp_port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or("not a port number (1 to 65535)")?;
            }
            "pid_file" => self.pid_file = Some(path(value)),
            "client_buffer_delay" => {
                self.client_buffer_delay = value
                    .parse::<f32>()
                    .ok()
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .ok_or("must be a number of seconds, 0 or more")?;
            }
            "max_err_file_k_size" => {
                // DSS: a negative size means no limit.
                let n: i64 = value.parse().map_err(|_| "not a whole number".to_owned())?;
                self.max_err_file_k_size = u64::try_from(n).ok();
            }
            _ => unreachable!("`{key}` is in KEYS but not set"),
        }
        Ok(None)
    }
}

/// DSS's time values: `0`, NTP seconds, or `*SECONDS` from the start.
fn broadcast_time(value: &str) -> Result<(BroadcastTime, Option<String>), String> {
    if let Some(rel) = value.strip_prefix('*') {
        let secs = rel
            .trim()
            .parse::<i64>()
            .map_err(|_| "`*` must be followed by a number of seconds".to_owned())?;
        return Ok((BroadcastTime::FromNow(secs), None));
    }
    let ntp: u64 = value
        .parse()
        .map_err(|_| "must be 0, NTP seconds (since 1900) or *SECONDS from now".to_owned())?;
    if ntp == 0 {
        return Ok((BroadcastTime::Unbounded, None));
    }
    if ntp <= NTP_UNIX_OFFSET {
        // DSS let such a start time through as "allow all" and refused
        // such an end time; either way it is no time after 1970.
        return Ok((
            BroadcastTime::Unbounded,
            Some(format!("{value} NTP seconds is before 1970; taken as no bound")),
        ));
    }
    let unix = Duration::from_secs(ntp - NTP_UNIX_OFFSET);
    Ok((BroadcastTime::At(UNIX_EPOCH + unix), None))
}

/// When a channel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// On the wall clock, watched or not.
    #[default]
    Always,
    /// Only while someone watches: paused when the last viewer leaves.
    #[serde(alias = "on-demand", alias = "on_demand")]
    Watched,
}

/// A date-time in the TOML file: a TOML offset date-time, or the same
/// written as a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DateTimeSetting {
    Native(toml::value::Datetime),
    Text(String),
}

impl fmt::Display for DateTimeSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateTimeSetting::Native(d) => write!(f, "{d}"),
            DateTimeSetting::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl DateTimeSetting {
    /// The instant, for a full date, time and UTC offset.
    pub fn instant(&self) -> Result<SystemTime, String> {
        let d = match self {
            DateTimeSetting::Native(d) => *d,
            DateTimeSetting::Text(s) => s
                .parse::<toml::value::Datetime>()
                .map_err(|e| format!("not a date-time ({e}); write it like 2024-05-01T18:00:00Z"))?,
        };
        let (Some(date), Some(time)) = (d.date, d.time) else {
            return Err("needs a date and a time, like 2024-05-01T18:00:00Z".into());
        };
        let offset_minutes = match d.offset {
            Some(toml::value::Offset::Z) => 0,
            Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes),
            None => return Err("needs a UTC offset (Z, or like +02:00): the server's time zone is not assumed".into()),
        };
        let days = days_from_civil(i64::from(date.year), u32::from(date.month), u32::from(date.day));
        let secs = days * 86_400
            + i64::from(time.hour) * 3600
            + i64::from(time.minute) * 60
            + i64::from(time.second.unwrap_or(0))
            - offset_minutes * 60;
        let secs = u64::try_from(secs).map_err(|_| "is before 1970".to_owned())?;
        Ok(UNIX_EPOCH + Duration::new(secs, time.nanosecond.unwrap_or(0)))
    }
}

/// A `[[channel]]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// The channel's path under the server: `rtsp://HOST:PORT/PATH`.
    pub path: String,
    /// The playlist file (DSS or M3U) or directory.
    pub playlist: PathBuf,
    #[serde(default)]
    pub mode: PlayMode,
    /// `when`, or `run` (`"always"`, `"on-demand"`).
    #[serde(default, alias = "run")]
    pub when: When,
    pub start: Option<DateTimeSetting>,
    pub end: Option<DateTimeSetting>,
    /// The movie whose tracks and codecs every movie must share.
    pub reference: Option<PathBuf>,
    #[serde(default)]
    pub recent_movies_list_size: usize,
    pub max_upcoming_list_size: Option<usize>,
    pub seed: Option<u64>,
    pub current_file: Option<PathBuf>,
    pub upcoming_file: Option<PathBuf>,
}

/// A checked channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Without its leading `/`, no empty, `.` or `..` segments: `tv/news`.
    pub path: String,
    pub playlist: PathBuf,
    pub mode: PlayMode,
    pub when: When,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub reference: Option<PathBuf>,
    pub recent_movies_list_size: usize,
    pub max_upcoming_list_size: usize,
    pub seed: Option<u64>,
    pub current_file: Option<PathBuf>,
    pub upcoming_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel path {0:?}: {1}")]
    Path(String, &'static str),
    #[error("channel {path}: `{key} = {value}` {why}")]
    Time {
        path: String,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("channel {0}: `start` must be before `end`")]
    EndBeforeStart(String),
    #[error("channel {0}: `playlist` is empty")]
    NoPlaylist(String),
    #[error("channel {0} is configured twice")]
    Duplicate(String),
    #[error("--channel {0:?}: expected PATH=PLAYLIST_FILE")]
    Argument(String),
}

impl ChannelSettings {
    /// `--channel PATH=PLAYLIST_FILE`: a channel with every other setting at
    /// its default (the shape a clap `value_parser` takes).
    pub fn from_argument(arg: &str) -> Result<ChannelSettings, ChannelError> {
        let (path, playlist) = arg
            .split_once('=')
            .filter(|(p, l)| !p.trim().is_empty() && !l.trim().is_empty())
            .ok_or_else(|| ChannelError::Argument(arg.to_owned()))?;
        Ok(ChannelSettings {
            path: path.trim().to_owned(),
            playlist: PathBuf::from(playlist.trim()),
            mode: PlayMode::default(),
            when: When::default(),
            start: None,
            end: None,
            reference: None,
            recent_movies_list_size: 0,
            max_upcoming_list_size: None,
            seed: None,
            current_file: None,
            upcoming_file: None,
        })
    }

    /// Checks the settings; relative file paths are taken from `dir` (the
    /// TOML file's directory, or the current one for the command line).
    pub fn resolve(&self, dir: &Path) -> Result<Channel, ChannelError> {
        let path = channel_path(&self.path)?;
        if self.playlist.as_os_str().is_empty() {
            return Err(ChannelError::NoPlaylist(path));
        }
        let time = |key: &'static str, v: &Option<DateTimeSetting>| -> Result<Option<SystemTime>, ChannelError> {
            v.as_ref()
                .map(|d| {
                    d.instant().map_err(|why| ChannelError::Time {
                        path: path.clone(),
                        key,
                        value: d.to_string(),
                        why,
                    })
                })
                .transpose()
        };
        let start = time("start", &self.start)?;
        let end = time("end", &self.end)?;
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                return Err(ChannelError::EndBeforeStart(path));
            }
        }
        let file = |p: &Option<PathBuf>| p.as_ref().map(|p| dir.join(p));
        Ok(Channel {
            playlist: dir.join(&self.playlist),
            mode: self.mode,
            when: self.when,
            start,
            end,
            reference: file(&self.reference),
            recent_movies_list_size: self.recent_movies_list_size,
            max_upcoming_list_size: self.max_upcoming_list_size.unwrap_or(DEFAULT_UPCOMING),
            seed: self.seed,
            current_file: file(&self.current_file),
            upcoming_file: file(&self.upcoming_file),
            path,
        })
    }

    /// Checks every channel, and that no two share a path.
    pub fn resolve_all(all: &[ChannelSettings], dir: &Path) -> Result<Vec<Channel>, ChannelError> {
        let mut out: Vec<Channel> = Vec::with_capacity(all.len());
        for c in all {
            let c = c.resolve(dir)?;
            if out.iter().any(|o| o.path == c.path) {
                return Err(ChannelError::Duplicate(c.path));
            }
            out.push(c);
        }
        Ok(out)
    }
}

/// `tv/news`, `/tv/news/`: the path's segments joined by `/`.
fn channel_path(raw: &str) -> Result<String, ChannelError> {
    let bad = |why| Err(ChannelError::Path(raw.to_owned(), why));
    if raw.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return bad("must not hold spaces or control characters");
    }
    if raw.contains(['?', '#', '%', '\\']) {
        return bad("must not hold `?`, `#`, `%` or `\\`");
    }
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return bad("is empty");
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return bad("must not hold `.` or `..` segments");
    }
    Ok(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<(BroadcastConfig, Vec<Diagnostic>), BroadcastConfigError> {
        BroadcastConfig::read(Path::new("/bc/news.config"), text.as_bytes())
    }

    #[test]
    fn dss_defaults_are_named_after_the_file() {
        let (c, warnings) = read("").unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.playlist_file, Path::new("/bc/news.ply"));
        assert_eq!(c.sdp_file, Path::new("/bc/news.sdp"));
        assert_eq!(c.log_file, Path::new("/bc/news.log"));
        assert_eq!(c.current_file, Path::new("/bc/news.current"));
        assert_eq!(c.upcoming_file, Path::new("/bc/news.upcoming"));
        assert_eq!(c.insertlist_file, Path::new("/bc/news.insertlist"));
        assert_eq!(c.play_mode, PlayMode::SequentialLooped);
        assert_eq!(
            (
                c.destination_base_port,
                c.max_upcoming_list_size,
                c.rtsp_port,
                c.multicast_ttl
            ),
            (5004, 7, 554, 1)
        );
        assert!(c.logging && c.show_current && c.show_upcoming && !c.broadcast_sdp_is_dynamic);
        assert_eq!(c.destination_sdp_file, None);
    }

    /// The example of DSS's documentation.
    #[test]
    fn reads_the_dss_documentation_example() {
        let (c, warnings) = read(
            "playlist_file /server/local/media/lists/playlist1\n\
             play_mode weighted_random\n\
             sdp_reference_movie /music/jazz/take5.mov\n\
             destination_ip_address 12.123.123.123\n\
             destination_base_port 5004\n\
             recent_movies_list_size 10\n\
             sdp_file /server/movies/playlist1.sdp\n\
             logging enabled\n\
             log_file /server/local/playlist1.log\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.playlist_file, Path::new("/server/local/media/lists/playlist1"));
        assert_eq!(c.play_mode, PlayMode::WeightedRandom);
        assert_eq!(
            c.sdp_reference_movie.as_deref(),
            Some(Path::new("/music/jazz/take5.mov"))
        );
        assert_eq!(c.destination_ip_address.as_deref(), Some("12.123.123.123"));
        assert_eq!(c.recent_movies_list_size, 10);
        assert_eq!(c.sdp_file, Path::new("/server/movies/playlist1.sdp"));
        assert_eq!(c.log_file, Path::new("/server/local/playlist1.log"));
    }

    /// What DSS's web admin wrote (`playlist-lib.pl`), quotes and all.
    #[test]
    fn reads_what_dss_admin_wrote() {
        let (c, warnings) = read(
            "playlist_file \"/var/streaming/playlists/my list/my list.playlist\"\n\
             play_mode sequential\n\
             destination_ip_address 127.0.0.1\n\
             destination_base_port 0\n\
             sdp_reference_movie relative/sample.mov\n\
             logging disabled\n\
             sdp_file my_list.sdp\n\
             destination_sdp_file my_list.sdp\n\
             broadcast_SDP_is_dynamic enabled\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.playlist_file,
            Path::new("/var/streaming/playlists/my list/my list.playlist")
        );
        assert_eq!(c.play_mode, PlayMode::Sequential);
        assert_eq!(c.destination_base_port, 0);
        assert_eq!(
            c.sdp_reference_movie.as_deref(),
            Some(Path::new("/bc/relative/sample.mov"))
        );
        assert_eq!(c.sdp_file, Path::new("/bc/my_list.sdp"));
        assert_eq!(c.destination_sdp_file.as_deref(), Some("my_list.sdp"));
        assert!(!c.logging && c.broadcast_sdp_is_dynamic);
    }

    #[test]
    fn bad_values_are_errors_with_their_line_and_unknown_keys_warnings() {
        let err = read(
            "# a comment\n\
             play_mode shuffle\n\
             frobnicate yes\n\
             destination_base_port 70000\n\
             logging\n\
             multicast_ttl 0\n\
             show_current maybe\n\
             broadcast_end_time tomorrow\n\
             client_buffer_delay -1\n\
             sdp_file \"unterminated\n\
             recent_movies_list_size -2\n",
        )
        .unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "/bc/news.config:2: `play_mode shuffle`: `shuffle` is not a play mode (one of sequential, sequential_looped, weighted_random)",
                "/bc/news.config:3: unknown setting `frobnicate`, ignored",
                "/bc/news.config:4: `destination_base_port 70000`: not a port number (0 to 65535)",
                "/bc/news.config:5: `logging` has no value",
                "/bc/news.config:6: `multicast_ttl 0`: must be from 1 to 255",
                "/bc/news.config:7: `show_current maybe`: must be `enabled` or `disabled`",
                "/bc/news.config:8: `broadcast_end_time tomorrow`: must be 0, NTP seconds (since 1900) or *SECONDS from now",
                "/bc/news.config:9: `client_buffer_delay -1`: must be a number of seconds, 0 or more",
                "/bc/news.config:10: unterminated quote",
                "/bc/news.config:11: `recent_movies_list_size -2`: not a whole number",
            ]
        );
        assert_eq!(err.0.iter().filter(|d| !d.is_error()).count(), 1);
    }

    #[test]
    fn warnings_alone_leave_a_usable_config() {
        let (c, warnings) = read(
            "play_list_file old.ply\n\
             repeats_queue_size 3\n\
             limit_play enabled\n\
             destination_base_port 5005\n\
             play_mode weighted_random extra words\n\
             future_setting 1\n\
             broadcast_start_time 12\n",
        )
        .unwrap();
        assert_eq!(c.playlist_file, Path::new("/bc/old.ply"));
        assert_eq!(c.recent_movies_list_size, 3);
        assert_eq!(c.play_mode, PlayMode::WeightedRandom);
        assert_eq!(c.broadcast_start_time, BroadcastTime::Unbounded);
        let lines: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "/bc/news.config:1: `play_list_file` is an old name; it is read as `playlist_file`",
                "/bc/news.config:2: `repeats_queue_size` is an old name; it is read as `recent_movies_list_size`",
                "/bc/news.config:3: `limit_play` is no longer used (DSS dropped it), ignored",
                "/bc/news.config:4: destination_base_port 5005 is odd; RTP takes the even port of a pair",
                "/bc/news.config:5: `play_mode` takes one value; `extra words` ignored",
                "/bc/news.config:6: unknown setting `future_setting`, ignored",
                "/bc/news.config:7: 12 NTP seconds is before 1970; taken as no bound",
            ]
        );
    }

    #[test]
    fn broadcast_times() {
        let (c, _) = read("broadcast_start_time 3913056000\nbroadcast_end_time *3600\n").unwrap();
        // 3913056000 NTP seconds is 2024-01-01T00:00:00Z.
        let jan1 = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        assert_eq!(c.broadcast_start_time, BroadcastTime::At(jan1));
        assert_eq!(c.broadcast_end_time, BroadcastTime::FromNow(3600));
        assert_eq!(
            c.broadcast_end_time.resolve(jan1),
            Some(jan1 + Duration::from_secs(3600))
        );
        assert_eq!(
            BroadcastTime::FromNow(-60).resolve(jan1),
            Some(jan1 - Duration::from_secs(60))
        );
        assert_eq!(c.broadcast_start_time.resolve(UNIX_EPOCH), Some(jan1));
    }

    #[test]
    fn a_defaults_file_then_the_description_file() {
        let mut c = BroadcastConfig::defaults(Path::new("/bc/news.config"));
        let d = c.apply(
            Path::new("/site/news.config.def"),
            b"play_mode weighted_random\nrtsp_port 8554\n",
        );
        assert!(d.is_empty());
        let d = c.apply(Path::new("/bc/news.config"), b"play_mode sequential\r\n");
        assert!(d.is_empty());
        assert_eq!((c.play_mode, c.rtsp_port), (PlayMode::Sequential, 8554));
    }

    fn channels(toml_text: &str) -> Result<Vec<Channel>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            channel: Vec<ChannelSettings>,
        }
        let file: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        ChannelSettings::resolve_all(&file.channel, Path::new("/etc/streamalot")).map_err(|e| e.to_string())
    }

    #[test]
    fn channel_tables() {
        let got = channels(
            r#"
            [[channel]]
            path = "/tv/news/"
            playlist = "lists/news.ply"
            mode = "weighted_random"
            when = "watched"
            start = 2024-05-01T18:00:00Z
            end = "2024-05-02T06:00:00+02:00"
            reference = "/movies/ref.mp4"
            recent_movies_list_size = 3
            seed = 42
            current_file = "status/news.current"

            [[channel]]
            path = "radio"
            playlist = "/lists/radio.m3u"
            "#,
        )
        .unwrap();
        let news = &got[0];
        assert_eq!(news.path, "tv/news");
        assert_eq!(news.playlist, Path::new("/etc/streamalot/lists/news.ply"));
        assert_eq!((news.mode, news.when), (PlayMode::WeightedRandom, When::Watched));
        assert_eq!(news.start, Some(UNIX_EPOCH + Duration::from_secs(1_714_586_400)));
        assert_eq!(news.end, Some(UNIX_EPOCH + Duration::from_secs(1_714_622_400)));
        assert_eq!(news.reference.as_deref(), Some(Path::new("/movies/ref.mp4")));
        assert_eq!((news.recent_movies_list_size, news.max_upcoming_list_size), (3, 7));
        assert_eq!(news.seed, Some(42));
        assert_eq!(
            news.current_file.as_deref(),
            Some(Path::new("/etc/streamalot/status/news.current"))
        );
        let radio = &got[1];
        assert_eq!(
            (radio.path.as_str(), radio.mode, radio.when),
            ("radio", PlayMode::SequentialLooped, When::Always)
        );
        assert_eq!((radio.start, radio.end, radio.seed), (None, None, None));
    }

    #[test]
    fn bad_channel_tables() {
        let cases = [
            (
                "path = \"a\"\nplaylist = \"x\"\nmode = \"shuffle\"",
                "unknown variant `shuffle`",
            ),
            (
                "path = \"a\"\nplaylist = \"x\"\nwhen = \"sometimes\"",
                "unknown variant `sometimes`",
            ),
            (
                "path = \"a\"\nplaylist = \"x\"\nplaylsit = \"y\"",
                "unknown field `playlsit`",
            ),
            ("path = \"a\"", "missing field `playlist`"),
            ("path = \"a b\"\nplaylist = \"x\"", "must not hold spaces"),
            ("path = \"a/../b\"\nplaylist = \"x\"", "`..` segments"),
            ("path = \"//\"\nplaylist = \"x\"", "is empty"),
            ("path = \"a\"\nplaylist = \"\"", "`playlist` is empty"),
            (
                "path = \"a\"\nplaylist = \"x\"\nstart = 2024-05-01T18:00:00",
                "needs a UTC offset",
            ),
            (
                "path = \"a\"\nplaylist = \"x\"\nstart = 2024-05-01",
                "needs a date and a time",
            ),
            (
                "path = \"a\"\nplaylist = \"x\"\nstart = \"tomorrow\"",
                "not a date-time",
            ),
            (
                "path = \"a\"\nplaylist = \"x\"\nstart = 2024-05-02T00:00:00Z\nend = 2024-05-01T00:00:00Z",
                "`start` must be before `end`",
            ),
        ];
        for (table, wanted) in cases {
            let err = channels(&format!("[[channel]]\n{table}\n")).unwrap_err();
            assert!(err.contains(wanted), "{table}: {err}");
        }
        let err =
            channels("[[channel]]\npath = \"a\"\nplaylist = \"x\"\n[[channel]]\npath = \"/a/\"\nplaylist = \"y\"\n")
                .unwrap_err();
        assert_eq!(err, "channel a is configured twice");
    }

    #[test]
    fn channel_arguments() {
        let c = ChannelSettings::from_argument("tv/news=lists/news.ply").unwrap();
        let c = c.resolve(Path::new("")).unwrap();
        assert_eq!(
            (c.path.as_str(), c.playlist.as_path()),
            ("tv/news", Path::new("lists/news.ply"))
        );
        assert_eq!(c.mode, PlayMode::SequentialLooped);
        for bad in ["news", "=x.ply", "news=", ""] {
            assert_eq!(
                ChannelSettings::from_argument(bad).unwrap_err(),
                ChannelError::Argument(bad.into())
            );
        }
    }
}
