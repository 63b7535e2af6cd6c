//! The access log: one line per finished session, in the W3C Extended Log
//! File Format (<https://www.w3.org/TR/WD-logfile.html>) as Darwin Streaming
//! Server wrote it, so log analyzers built for streaming servers can read it.
//!
//! A file starts with directives that name the fields; they are written when
//! the file is created or found empty, and every time to standard output:
//!
//! ```text
//! #Software: Streamalot 0.1.0
//! #Version: 1.0
//! #Date: 2025-01-31 12:00:00
//! #Fields: c-ip date time cs-uri-stem c-starttime x-duration c-status cs(User-Agent) sc-bytes s-pkts-sent c-pkts-lost transport x-frames-thinned
//! 192.0.2.7 2025-01-31 12:00:41 /sample.mp4 0.000 40.512 200 Lavf/61.7.100 1843221 1510 0 udp 0
//! ```
//!
//! Fields are separated by one space and `-` stands for "unknown". The field
//! names are DSS's, except `transport`: `udp`, `tcp` (interleaved), `http`
//! (tunnelled), or for a live broadcast's publisher `publish-udp` or
//! `publish-tcp`, whose `sc-bytes` and `s-pkts-sent` count what it sent in;
//! and `x-frames-thinned`, the video frames thinning left out (`-` for a
//! session that was never thinned or could not be).
//! Dates and times are UTC, of the session's end.
//!
//! Values a client chose (the User-Agent above all) must not be able to
//! break a line or forge fields, so they are written in the style Windows
//! Media and DSS logs used for `cs(User-Agent)`: a space becomes `+`, and
//! `+`, `%`, `"`, control characters and every non-ASCII byte are
//! percent-encoded. Every field is therefore printable ASCII without spaces;
//! URL-decoding a field gives back what the client sent. The URI stem is
//! already a URL path, so only its bytes outside printable ASCII are encoded.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::rtsp::message::Request;
use proto::rtsp::url::split_uri;

/// The `#Fields:` directive: the order [`AccessLog::write`] writes in.
pub const FIELDS: &str = "c-ip date time cs-uri-stem c-starttime x-duration c-status cs(User-Agent) \
                          sc-bytes s-pkts-sent c-pkts-lost transport x-frames-thinned";

/// One finished session, as the access log records it. `Default` gives an
/// all-unknown record to fill in with `..AccessRecord::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord {
    /// c-ip
    pub client: IpAddr,
    /// date, time: when the session ended (wall clock); `None` means when
    /// the line is written, which for a record sent straight to the log
    /// writer is the same second.
    pub ended: Option<SystemTime>,
    /// cs-uri-stem: the movie's request path, as the client sent it (still
    /// percent-encoded), without query.
    pub uri: String,
    /// c-starttime: where in the movie playback (first) started, in
    /// seconds; `None` if it never played or is not known.
    pub start_secs: Option<f64>,
    /// x-duration: how long the session lasted, from SETUP to its end.
    pub duration: Duration,
    /// c-status: the RTSP status of the session's last PLAY, or of the
    /// request that ended or refused it.
    pub status: u16,
    /// cs(User-Agent)
    pub user_agent: Option<String>,
    /// sc-bytes: RTP bytes sent, headers included.
    pub bytes: u64,
    /// s-pkts-sent: RTP packets sent.
    pub packets: u64,
    /// c-pkts-lost: the cumulative loss the client reported in its last RTCP
    /// receiver reports, summed over tracks (RTCP allows it to go negative
    /// when duplicates arrive); `None` if it sent none.
    pub packets_lost: Option<i64>,
    /// transport: `"udp"`, `"tcp"` (interleaved), `"http"` (tunnelled), or
    /// `"publish-udp"` / `"publish-tcp"` for a publisher.
    pub transport: &'static str,
    /// x-frames-thinned: video frames thinning left out; `None` when the
    /// session was not one that thinning watched.
    pub frames_thinned: Option<u64>,
}

impl Default for AccessRecord {
    fn default() -> Self {
        AccessRecord {
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ended: None,
            uri: String::new(),
            start_secs: None,
            duration: Duration::ZERO,
            status: 0,
            user_agent: None,
            bytes: 0,
            packets: 0,
            packets_lost: None,
            transport: "udp",
            frames_thinned: None,
        }
    }
}

impl AccessRecord {
    /// The record of a SETUP that was refused with `status`: a session that
    /// never was, logged so that refusals show up next to the sessions.
    pub fn refused(client: SocketAddr, req: &Request, status: u16) -> AccessRecord {
        let uri = split_uri(&req.uri).map_or(req.uri.as_str(), |(path, _)| path);
        AccessRecord {
            client: client.ip(),
            uri: uri.to_owned(),
            status,
            user_agent: req.headers.get("User-Agent").map(str::to_owned),
            ..AccessRecord::default()
        }
    }
}

/// The access log writer. Lines are buffered; they reach the file within a
/// second, as long as the owner calls [`AccessLog::flush_if_due`] now and
/// then (it costs nothing when there is nothing to do), and at
/// [`AccessLog::flush`], which the owner calls at shutdown.
pub struct AccessLog {
    out: BufWriter<Box<dyn Write + Send>>,
    /// `None` for standard output.
    path: Option<PathBuf>,
    last_flush: Instant,
    line: String,
}

/// Buffered lines are flushed at least this often while lines keep coming.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl AccessLog {
    /// Appends to the file at `path`, creating it; `None` or `-` is standard
    /// output. Writes the header directives if the file is new or empty.
    pub fn open(path: Option<&Path>) -> io::Result<AccessLog> {
        let path = file_path(path);
        let (out, fresh) = match &path {
            Some(p) => open_file(p)?,
            None => (Box::new(io::stdout()) as Box<dyn Write + Send>, true),
        };
        let mut log = AccessLog {
            out: BufWriter::with_capacity(64 * 1024, out),
            path,
            last_flush: Instant::now(),
            line: String::with_capacity(256),
        };
        if fresh {
            log.write_header(SystemTime::now())?;
        }
        Ok(log)
    }

    /// Writes one session's line.
    pub fn write(&mut self, rec: &AccessRecord) -> io::Result<()> {
        self.line.clear();
        format_record(&mut self.line, rec, SystemTime::now());
        self.out.write_all(self.line.as_bytes())?;
        // Standard output is usually someone watching; a file, a disk.
        if self.path.is_none() || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes lines that have waited for a second or more.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        if !self.out.buffer().is_empty() && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Pushes buffered lines to the file or standard output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.out.flush()
    }

    /// Flushes, then reopens the file by name, so a rotated-away log is
    /// followed by a fresh one with its own header (the `SIGHUP` idiom).
    /// Standard output stays as it is.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush()?;
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let (out, fresh) = open_file(&path)?;
        self.out = BufWriter::with_capacity(64 * 1024, out);
        if fresh {
            self.write_header(SystemTime::now())?;
        }
        Ok(())
    }

    fn write_header(&mut self, now: SystemTime) -> io::Result<()> {
        let (date, time) = utc_date_time(now);
        write!(
            self.out,
            "#Software: Streamalot {}\n#Version: 1.0\n#Date: {date} {time}\n#Fields: {FIELDS}\n",
            env!("CARGO_PKG_VERSION")
        )?;
        self.flush()
    }
}

/// The file to write to; `None` for standard output.
fn file_path(path: Option<&Path>) -> Option<PathBuf> {
    path.filter(|p| p.as_os_str() != "-").map(Path::to_path_buf)
}

fn open_file(path: &Path) -> io::Result<(Box<dyn Write + Send>, bool)> {
    let file: File = OpenOptions::new().append(true).create(true).open(path)?;
    let fresh = file.metadata()?.len() == 0;
    Ok((Box::new(file), fresh))
}

/// One record as a line, newline included.
fn format_record(line: &mut String, rec: &AccessRecord, now: SystemTime) {
    let (date, time) = utc_date_time(rec.ended.unwrap_or(now));
    let _ = write!(line, "{} {date} {time} ", rec.client);
    push_uri(line, &rec.uri);
    match rec.start_secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let _ = write!(line, " {s:.3}");
        }
        _ => line.push_str(" -"),
    }
    let _ = write!(line, " {:.3} {} ", rec.duration.as_secs_f64(), rec.status);
    push_text(line, rec.user_agent.as_deref());
    let _ = write!(line, " {} {} ", rec.bytes, rec.packets);
    match rec.packets_lost {
        Some(n) => {
            let _ = write!(line, "{n}");
        }
        None => line.push('-'),
    }
    line.push(' ');
    push_text(line, Some(rec.transport));
    match rec.frames_thinned {
        Some(n) => {
            let _ = write!(line, " {n}");
        }
        None => line.push_str(" -"),
    }
    line.push('\n');
}

/// A client-chosen text value: spaces as `+`; `+`, `%`, `"`, controls and
/// non-ASCII percent-encoded; `-` for absent or empty.
fn push_text(line: &mut String, value: Option<&str>) {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        line.push('-');
        return;
    }
    if value == "-" {
        // Not "unknown": a client really sent a dash.
        line.push_str("%2D");
        return;
    }
    for &b in value.as_bytes() {
        match b {
            b' ' => line.push('+'),
            b'+' | b'%' | b'"' => push_escape(line, b),
            0x21..=0x7e => line.push(b as char),
            _ => push_escape(line, b),
        }
    }
}

/// A URI path: already URL-encoded as sent, so `%` stays; anything outside
/// printable ASCII (a space, a control, raw UTF-8) is encoded.
fn push_uri(line: &mut String, uri: &str) {
    if uri.is_empty() {
        line.push('-');
        return;
    }
    for &b in uri.as_bytes() {
        match b {
            b'"' => push_escape(line, b),
            0x21..=0x7e => line.push(b as char),
            _ => push_escape(line, b),
        }
    }
}

fn push_escape(line: &mut String, b: u8) {
    let _ = write!(line, "%{b:02X}");
}

/// `("YYYY-MM-DD", "HH:MM:SS")` in UTC.
fn utc_date_time(t: SystemTime) -> (String, String) {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so the log needs no date crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            client: "192.0.2.7".parse().unwrap(),
            // 2025-01-31 12:00:41 UTC
            ended: Some(UNIX_EPOCH + Duration::from_secs(1_738_324_841)),
            uri: "/dir/clip%20one.mp4".to_owned(),
            start_secs: Some(12.5),
            duration: Duration::from_millis(40_512),
            status: 200,
            user_agent: Some("LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)".to_owned()),
            bytes: 1_843_221,
            packets: 1510,
            packets_lost: Some(3),
            transport: "udp",
            frames_thinned: Some(0),
        }
    }

    fn line(rec: &AccessRecord) -> String {
        let mut s = String::new();
        format_record(&mut s, rec, UNIX_EPOCH);
        s
    }

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("streamalot-access-{}-{name}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn formats_a_line() {
        assert_eq!(
            line(&record()),
            "192.0.2.7 2025-01-31 12:00:41 /dir/clip%20one.mp4 12.500 40.512 200 \
             LibVLC/3.0.20+(LIVE555+Streaming+Media+v2016.11.28) 1843221 1510 3 udp 0\n"
        );
        let unknown = AccessRecord {
            client: "2001:db8::1".parse().unwrap(),
            start_secs: None,
            user_agent: None,
            packets_lost: None,
            transport: "tcp",
            status: 454,
            ..record()
        };
        let l = line(&unknown);
        assert_eq!(l.split(' ').count(), FIELDS.split(' ').count());
        assert!(l.starts_with("2001:db8::1 "));
        assert!(l.ends_with(" 454 - 1843221 1510 - tcp 0\n"), "{l}");
        assert!(l.contains(" - 40.512 "), "{l}");
    }

    #[test]
    fn hostile_values_stay_in_their_field() {
        let rec = AccessRecord {
            uri: "/a b\"\r\n#Fields: x".to_owned(),
            user_agent: Some("evil\r\n192.0.2.1 2025-01-01 00:00:00 /forged 0 0 200 x 0 0 0 udp\t\"+%-é\0".to_owned()),
            ..record()
        };
        let l = line(&rec);
        assert_eq!(l.matches('\n').count(), 1, "{l:?}");
        assert!(l.ends_with('\n'));
        let fields: Vec<&str> = l.trim_end().split(' ').collect();
        assert_eq!(fields.len(), FIELDS.split(' ').count(), "{l:?}");
        assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n'), "{l:?}");
        assert_eq!(fields[3], "/a%20b%22%0D%0A#Fields:%20x");
        assert_eq!(
            fields[7],
            "evil%0D%0A192.0.2.1+2025-01-01+00:00:00+/forged+0+0+200+x+0+0+0+udp%09%22%2B%25-%C3%A9%00"
        );
        // A dash is a dash, not "unknown".
        let dash = AccessRecord {
            user_agent: Some("-".to_owned()),
            ..record()
        };
        assert!(line(&dash).contains(" %2D "));
        // Nonsense numbers do not print as NaN.
        let nan = AccessRecord {
            start_secs: Some(f64::NAN),
            ..record()
        };
        assert!(line(&nan).contains(" - 40.512 "));
    }

    #[test]
    fn defaults_and_refusals() {
        let mut s = String::new();
        format_record(&mut s, &AccessRecord::default(), UNIX_EPOCH);
        assert_eq!(s, "0.0.0.0 1970-01-01 00:00:00 - - 0.000 0 - 0 0 - udp -\n");

        let mut headers = proto::rtsp::message::Headers::default();
        headers.push("CSeq", "3");
        headers.push("User-Agent", "Lavf/61.7.100");
        let req = Request {
            method: proto::rtsp::message::Method::Setup,
            uri: "rtsp://example.com:8554/sample.mp4/trackID=1".to_owned(),
            headers,
            body: Vec::new(),
        };
        let rec = AccessRecord::refused("192.0.2.9:50000".parse().unwrap(), &req, 453);
        assert_eq!(rec.client, "192.0.2.9".parse::<IpAddr>().unwrap());
        assert_eq!(rec.uri, "/sample.mp4");
        assert_eq!(rec.status, 453);
        assert_eq!(rec.user_agent.as_deref(), Some("Lavf/61.7.100"));
        let l = line(&AccessRecord {
            ended: Some(UNIX_EPOCH),
            ..rec
        });
        assert_eq!(
            l,
            "192.0.2.9 1970-01-01 00:00:00 /sample.mp4 - 0.000 453 Lavf/61.7.100 0 0 - udp -\n"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(
            utc_date_time(UNIX_EPOCH + Duration::from_secs(951_868_799)),
            ("2000-02-29".to_owned(), "23:59:59".to_owned())
        );
        assert_eq!(
            utc_date_time(UNIX_EPOCH + Duration::from_secs(4_102_444_800)),
            ("2100-01-01".to_owned(), "00:00:00".to_owned())
        );
    }

    #[test]
    fn header_once_per_file() {
        let path = scratch("header");
        let mut log = AccessLog::open(Some(&path)).unwrap();
        log.write(&record()).unwrap();
        log.flush().unwrap();
        drop(log);
        let mut log = AccessLog::open(Some(&path)).unwrap();
        log.write(&record()).unwrap();
        drop(log); // flushes on drop
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].starts_with("#Software: Streamalot "));
        assert_eq!(lines[1], "#Version: 1.0");
        assert!(lines[2].starts_with("#Date: 20"));
        assert_eq!(lines[3], format!("#Fields: {FIELDS}"));
        assert_eq!(lines[4], lines[5]);
        assert!(lines[4].starts_with("192.0.2.7 2025-01-31 12:00:41 "));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reopen_follows_rotation() {
        let path = scratch("rotate");
        let rotated = path.with_extension("log.1");
        let mut log = AccessLog::open(Some(&path)).unwrap();
        log.write(&record()).unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        log.write(&record()).unwrap();
        log.flush().unwrap();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 5, "the buffered line went to the old file: {old}");
        assert_eq!(new.lines().count(), 5, "a fresh header, then the line: {new}");
        assert!(new.starts_with("#Software:"));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn stdout_and_dash() {
        // (Not opened here: the header would land in the test output.)
        assert_eq!(file_path(None), None);
        assert_eq!(file_path(Some(Path::new("-"))), None);
        assert_eq!(file_path(Some(Path::new("a.log"))), Some(PathBuf::from("a.log")));
        let err = AccessLog::open(Some(Path::new("/nonexistent-dir/streamalot/access.log")));
        assert!(err.is_err());
    }
}
