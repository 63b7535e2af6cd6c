//! The text of DSS's status files, `NAME.current` and `NAME.upcoming`, which
//! DSS's PlaylistBroadcaster rewrote at every movie and which scripts and
//! DSS's web admin read to show what a channel plays.
//!
//! `.current`, as DSS wrote it (`PlaylistBroadcaster.cpp` writes the `u=`
//! line, `playlist_broadcaster.cpp` appends the rest):
//!
//! ```text
//! u=/movies/news.mov
//! a=x-qt-text-nam:Evening news
//! b=18:30:00:000000 1700073000 Wed Nov 15 18:30:00 2023
//! e=18:59:30:000000 1700074770 Wed Nov 15 18:59:30 2023
//! d=00:29:30:000000 1770
//! ```
//!
//! the movie's path, its QuickTime text annotations from the SDP
//! (`a=x-qt-text-*`), and its begin, end and duration as
//! `HH:MM:SS:MICROS`, Unix seconds and a `ctime` string. DSS wrote local
//! time; these are UTC, so the files do not depend on the server's time
//! zone (the Unix seconds are the same either way).
//!
//! `.upcoming` is a playlist of what follows, at most
//! `max_upcoming_list_size` movies (DSS's default 7). DSS wrote paths bare,
//! so a path with spaces made the file unreadable as a playlist, and it
//! wrote "#random play - upcoming list not supported" for `weighted_random`;
//! here paths with spaces are quoted and random play lists its real next
//! picks (the picker is deterministic).

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::calendar::{civil_from_days, weekday};

/// DSS's default `max_upcoming_list_size`.
pub const DEFAULT_UPCOMING: usize = 7;

/// `.current`: the movie at `path`, playing from `start` for `length`, with
/// the `a=x-qt-text-*` lines of its SDP `sdp`.
pub fn current(path: &Path, start: SystemTime, length: Duration, sdp: &str) -> String {
    let mut out = format!("u={}\n", path.display());
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=x-qt-text-") {
            out.push_str(line);
            out.push('\n');
        }
    }
    let end = start + length;
    let _ = writeln!(out, "b={}", stamp(start));
    let _ = writeln!(out, "e={}", stamp(end));
    let secs = length.as_secs();
    let _ = writeln!(
        out,
        "d={:02}:{:02}:{:02}:{:06} {secs}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        length.subsec_micros()
    );
    out
}

/// `HH:MM:SS:MICROS UNIX ctime` in UTC.
fn stamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (year, month, day) = civil_from_days(days);
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{h:02}:{m:02}:{s:02}:{:06} {secs} {} {} {day:2} {h:02}:{m:02}:{s:02} {year}",
        since.subsec_micros(),
        DAYS[weekday(days) as usize],
        MONTHS[month as usize - 1],
    )
}

/// `.upcoming`: a `*PLAY-LIST*` of `paths`, in order.
pub fn upcoming<'a>(paths: impl IntoIterator<Item = &'a Path>) -> String {
    let mut out = String::from("*PLAY-LIST*\n");
    for p in paths {
        out.push_str(&quoted(p));
        out.push('\n');
    }
    out
}

/// A path as a playlist line: bare, or in quotes (with `""` for a quote)
/// when it holds white space or starts with a character the parser takes
/// for something else.
fn quoted(p: &Path) -> String {
    let text = p.to_string_lossy();
    let bytes = p.as_os_str().as_bytes();
    let plain = !bytes.is_empty() && !bytes.iter().any(|&b| b <= 0x20 || b == b'"') && !matches!(bytes[0], b'#' | b'+');
    if plain {
        text.into_owned()
    } else {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::playlist::{Files, Playlist};
    use std::io;
    use std::path::PathBuf;

    #[test]
    fn current_is_written_as_dss_wrote_it() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_073_000);
        let sdp = "v=0\r\ns=x\r\na=x-qt-text-nam:Evening news\r\na=x-qt-text-cpy:Us\r\nm=video 0 RTP/AVP 96\r\n";
        let text = current(
            Path::new("/movies/news.mov"),
            start,
            Duration::from_millis(1_770_250),
            sdp,
        );
        assert_eq!(
            text,
            "u=/movies/news.mov\n\
             a=x-qt-text-nam:Evening news\n\
             a=x-qt-text-cpy:Us\n\
             b=18:30:00:000000 1700073000 Wed Nov 15 18:30:00 2023\n\
             e=18:59:30:250000 1700074770 Wed Nov 15 18:59:30 2023\n\
             d=00:29:30:250000 1770\n"
        );
        let early = current(
            Path::new("a.mov"),
            UNIX_EPOCH + Duration::from_secs(86_400 * 2 + 5),
            Duration::from_secs(3),
            "",
        );
        assert!(
            early.contains("b=00:00:05:000000 172805 Sat Jan  3 00:00:05 1970\n"),
            "{early}"
        );
    }

    /// Reads back as a playlist with the same paths, spaces, quotes and all.
    #[test]
    fn upcoming_is_a_playlist_of_what_follows() {
        let paths: Vec<PathBuf> = [
            "/m/a.mov",
            "/m/with space.mp4",
            "/m/say \"hi\".mov",
            "#odd.mov",
            "+odd.mov",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let text = upcoming(paths.iter().map(PathBuf::as_path));
        assert_eq!(
            text,
            "*PLAY-LIST*\n/m/a.mov\n\"/m/with space.mp4\"\n\"/m/say \"\"hi\"\".mov\"\n\"#odd.mov\"\n\"+odd.mov\"\n"
        );
        struct None_;
        impl Files for None_ {
            fn read(&mut self, _: &Path) -> io::Result<Vec<u8>> {
                Err(io::ErrorKind::NotFound.into())
            }
            fn list_dir(&mut self, _: &Path) -> Option<io::Result<Vec<PathBuf>>> {
                None
            }
        }
        let back = Playlist::parse("/status/x.upcoming", text.as_bytes(), &mut None_).unwrap();
        let got: Vec<PathBuf> = back.entries.into_iter().map(|e| e.path).collect();
        let want: Vec<PathBuf> = paths
            .iter()
            .map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    Path::new("/status").join(p)
                }
            })
            .collect();
        assert_eq!(got, want);
        assert!(back.problems.is_empty());
    }
}
