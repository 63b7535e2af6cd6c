//! MP3 files for Icecast listeners: the HTTP handler for `GET /path/x.mp3`
//! (and HEAD), registered for the `.mp3` suffix on the control core. It
//! opens the file through the library, answers what cannot be served, and
//! for a listener builds the response head and the [`ListenerStart`] that
//! goes, with the connection, to the shard that paces it
//! ([`Takeover::Listen`]). No IO here: the file is opened and the listener
//! admitted through [`ServerView`](crate::http::ServerView).
//!
//! # What is answered
//!
//! - `200` with `Content-Type: audio/mpeg`, `icy-name` (the title),
//!   `icy-br` (kbit/s: the bit rate of a CBR file, the average of a VBR
//!   one), `ice-audio-info`, `icy-pub: 0`, no `Content-Length`, and the
//!   connection closing at the end of the file. With `Icy-MetaData: 1`,
//!   also `icy-metaint: 16000` and a metadata block every 16,000 audio
//!   bytes ([`icy`](super::icy)).
//! - **`ICY 200 OK` or `HTTP/1.x 200 OK`.** SHOUTcast answered `ICY 200 OK`,
//!   Icecast 2 answers `HTTP/1.0 200 OK`. ffmpeg (and mpv), VLC, GStreamer's
//!   `souphttpsrc` (libsoup), Winamp and the internet-radio receivers all
//!   send `Icy-MetaData: 1` and accept either status line; browsers'
//!   `<audio>` and generic HTTP tools want an HTTP one. So the HTTP line is
//!   the rule and `ICY 200 OK` goes only to what looks like a SHOUTcast-era
//!   player: an HTTP/1.0 request with `Icy-MetaData: 1` from a user agent
//!   in [`ICY_PLAYERS`] (Winamp's `WinampMPEG/5.x`, XMMS, XMPlay, Windows
//!   Media Player's `NSPlayer`), which were written against SHOUTcast.
//!   VLC 3 asks in HTTP/1.1 first and, seeing `icy-` headers, asks again
//!   through its Icecast access (HTTP/1.0, `Icy-MetaData: 1`); that access
//!   takes the end of a stream for a dropped connection and asks once more,
//!   so VLC plays a file over and over, as it does from Icecast itself.
//! - **Ranges** are ignored: a request with `Range` gets `200` and the
//!   stream from the start, with `Accept-Ranges: none` (RFC 9110 lets a
//!   server ignore `Range`). Not `416`: browsers send `Range: bytes=0-` on
//!   every media request and would refuse to play. Real time is the point;
//!   a download is not what this serves.
//! - A file that is not MPEG audio (no run of frames: garbage, or only
//!   tags) is `415` with the reason in a text body; a missing one `404`;
//!   past `--max-listeners`, `503`.

use std::future::Future;
use std::pin::Pin;

use loader::mp3::{ChannelMode, Mp3};
use proto::http::{Head, Request, Response, Version};
use tracing::debug;

use super::icy::{Metadata, DEFAULT_METAINT};
use super::listener::{Feed, ListenerStart};
use super::mount::Mount;
use crate::http::{Context, Handler, Reply, Takeover};
use crate::library::LibraryError;

/// User agents that get `ICY 200 OK` (matched at the start,
/// case-insensitively), with HTTP/1.0 and `Icy-MetaData: 1`.
pub const ICY_PLAYERS: [&str; 5] = ["WinampMPEG", "Winamp", "NSPlayer", "xmms", "XMPlay"];

/// The handler for MP3 files. See the module documentation.
pub struct Files {
    /// What a slow listener may have waiting beyond its burst.
    pub queue_bytes: usize,
}

impl Handler for Files {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            let head = &req.head;
            let path = head.path();
            if let Some(mount) = cx.server.mount(path) {
                return self.mount_listener(head, &mount, cx);
            }
            let is_mp3 = path.len() >= 4
                && path.is_char_boundary(path.len() - 4)
                && path[path.len() - 4..].eq_ignore_ascii_case(".mp3");
            if !is_mp3 {
                return Reply::Respond(Response::new(404));
            }
            let mp3 = match cx.server.open_mp3(path).await {
                Ok(m) => m,
                Err(e) => {
                    debug!(client = %cx.client, error = %e, "MP3 request refused");
                    return Reply::Respond(refusal(&e));
                }
            };
            let metaint = wants_metadata(head).then_some(DEFAULT_METAINT);
            let title = stream_title(&mp3, path);
            let response = response(&mp3, &title, metaint.map(|m| m.get()));
            if head.method == "HEAD" {
                return Reply::Respond(response);
            }
            if !cx.server.admit_listener(cx.client) {
                debug!(client = %cx.client, "too many listeners");
                return Reply::Respond(Response::new(503).body("text/plain", "too many listeners\n"));
            }
            Reply::Take {
                head: None,
                to: Takeover::Listen(Box::new(ListenerStart {
                    head: head_bytes(head, &response),
                    metadata: Metadata::title(&title),
                    feed: Feed::File(mp3),
                    path: path.to_owned(),
                    metaint,
                    user_agent: head.headers.get("User-Agent").map(str::to_owned),
                    queue_bytes: self.queue_bytes,
                })),
            }
        })
    }
}

impl Files {
    /// A listener of a live mount: its head from what the source said and
    /// its frames' header, then [`Takeover::Listen`] of the mount.
    fn mount_listener(&self, head: &Head, mount: &Mount, cx: Context<'_>) -> Reply {
        let metaint = wants_metadata(head).then_some(DEFAULT_METAINT);
        let response = mount_response(mount, metaint.map(|m| m.get()));
        if head.method == "HEAD" {
            return Reply::Respond(response);
        }
        if !cx.server.admit_listener(cx.client) {
            debug!(client = %cx.client, "too many listeners");
            return Reply::Respond(Response::new(503).body("text/plain", "too many listeners\n"));
        }
        Reply::Take {
            head: None,
            to: Takeover::Listen(Box::new(ListenerStart {
                head: head_bytes(head, &response),
                metadata: mount.metadata.clone(),
                feed: Feed::Mount(mount.id),
                path: mount.path.clone(),
                metaint,
                user_agent: head.headers.get("User-Agent").map(str::to_owned),
                queue_bytes: self.queue_bytes,
            })),
        }
    }
}

/// The streaming response a live mount's listener gets: as a file's, with
/// what the source said about itself (`icy-name`, `icy-description`,
/// `icy-genre`, `icy-url`, `icy-pub`) and the bit rate and format of its
/// frames once they have come (else the bit rate the source said).
pub fn mount_response(mount: &Mount, metaint: Option<usize>) -> Response {
    let clean = |v: &str| -> String { v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect() };
    let info = &mount.info;
    let name = info.name.clone().unwrap_or_else(|| mount.path.clone());
    let kbps = mount.header.map(|h| h.bit_rate / 1000).or(info.bitrate);
    let mut r = Response::new(200)
        .header("Content-Type", "audio/mpeg")
        .header("icy-name", clean(&name));
    for (k, v) in [
        ("icy-description", &info.description),
        ("icy-genre", &info.genre),
        ("icy-url", &info.url),
    ] {
        if let Some(v) = v {
            r = r.header(k, clean(v));
        }
    }
    if let Some(kbps) = kbps {
        r = r.header("icy-br", kbps.to_string());
    }
    if let Some(h) = mount.header {
        r = r.header(
            "ice-audio-info",
            format!(
                "ice-samplerate={};ice-bitrate={};ice-channels={}",
                h.sample_rate,
                h.bit_rate / 1000,
                h.channel_mode.channels()
            ),
        );
    }
    r = r
        .header("icy-pub", if info.public { "1" } else { "0" })
        .header("Accept-Ranges", "none")
        .header("Cache-Control", "no-cache, no-store");
    if let Some(m) = metaint {
        r = r.header("icy-metaint", m.to_string());
    }
    r.streaming()
}

/// The answer to a path that is not an MP3 file this server can stream.
fn refusal(e: &LibraryError) -> Response {
    match e {
        LibraryError::NotMp3 { source, .. } => {
            Response::new(415).body("text/plain", format!("not MPEG audio: {source}\n"))
        }
        e => Response::new(e.status()),
    }
}

/// Whether the request asks for ICY metadata (`Icy-MetaData: 1`).
pub fn wants_metadata(head: &Head) -> bool {
    head.headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("Icy-MetaData") && v.trim() == "1")
}

/// Whether to answer with `ICY 200 OK` (see the module documentation).
pub fn speaks_icy(head: &Head) -> bool {
    let player = head.headers.get("User-Agent").is_some_and(|ua| {
        ICY_PLAYERS
            .iter()
            .any(|p| ua.len() >= p.len() && ua.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    });
    head.version == Version::Http10 && wants_metadata(head) && player
}

/// The title listeners see: "Artist - Title" from the tags, the title alone,
/// else the file's name without `.mp3`.
pub fn stream_title(mp3: &Mp3, path: &str) -> String {
    match (mp3.artist(), mp3.title()) {
        (Some(a), Some(t)) if !a.is_empty() => format!("{a} - {t}"),
        (_, Some(t)) => t.to_owned(),
        _ => {
            let name = path.rsplit('/').next().unwrap_or(path);
            let stem = name
                .len()
                .checked_sub(4)
                .filter(|&i| name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".mp3"));
            stem.map_or(name, |i| &name[..i]).to_owned()
        }
    }
}

/// The streaming response a listener gets.
pub fn response(mp3: &Mp3, title: &str, metaint: Option<usize>) -> Response {
    let h = mp3.header();
    let bps = mp3.constant_bit_rate().unwrap_or_else(|| mp3.average_bit_rate());
    let kbps = (bps + 500) / 1000;
    let channels = if h.channel_mode == ChannelMode::Mono { 1 } else { 2 };
    // Header values are one line: a title from the tags could hold anything.
    let name: String = title.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut r = Response::new(200)
        .header("Content-Type", "audio/mpeg")
        .header("icy-name", name)
        .header("icy-br", kbps.to_string())
        .header(
            "ice-audio-info",
            format!(
                "ice-samplerate={};ice-bitrate={kbps};ice-channels={channels}",
                h.sample_rate
            ),
        )
        .header("icy-pub", "0")
        .header("Accept-Ranges", "none")
        .header("Cache-Control", "no-cache, no-store");
    if let Some(m) = metaint {
        r = r.header("icy-metaint", m.to_string());
    }
    r.streaming()
}

/// The head as written to a listener: in the request's HTTP version, or
/// with `ICY 200 OK` for a SHOUTcast-era player.
pub fn head_bytes(head: &Head, response: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    crate::http::write(&mut out, response, head.version, false, false);
    if speaks_icy(head) {
        if let Some(end) = out.windows(2).position(|w| w == b"\r\n") {
            out.splice(..end, b"ICY 200 OK".iter().copied());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::http::{parse_head, Limits};

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &Limits::default()).unwrap().unwrap().0
    }

    fn mp3() -> Mp3 {
        Mp3::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp3")).unwrap()
    }

    #[test]
    fn icy_status_line_only_for_old_players() {
        let winamp = head("GET /a.mp3 HTTP/1.0\r\nIcy-MetaData: 1\r\nUser-Agent: WinampMPEG/5.66\r\n\r\n");
        assert!(speaks_icy(&winamp));
        for text in [
            "GET /a.mp3 HTTP/1.1\r\nIcy-MetaData: 1\r\nUser-Agent: WinampMPEG/5.66\r\n\r\n",
            "GET /a.mp3 HTTP/1.0\r\nUser-Agent: WinampMPEG/5.66\r\n\r\n",
            "GET /a.mp3 HTTP/1.0\r\nIcy-MetaData: 1\r\nUser-Agent: Lavf/59.27.100\r\n\r\n",
            "GET /a.mp3 HTTP/1.1\r\nIcy-MetaData: 1\r\nUser-Agent: VLC/3.0.18 LibVLC/3.0.18\r\n\r\n",
            "GET /a.mp3 HTTP/1.0\r\nIcy-MetaData: 1\r\n\r\n",
        ] {
            assert!(!speaks_icy(&head(text)), "{text}");
        }
        let m = mp3();
        let r = response(&m, "Tone", Some(16000));
        let icy = String::from_utf8(head_bytes(&winamp, &r)).unwrap();
        assert!(icy.starts_with("ICY 200 OK\r\n"), "{icy}");
        assert!(icy.contains("\r\nicy-metaint: 16000\r\n"), "{icy}");
        let plain = head("GET /a.mp3 HTTP/1.1\r\nIcy-MetaData: 1\r\n\r\n");
        let http = String::from_utf8(head_bytes(&plain, &r)).unwrap();
        assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
        assert!(http.contains("\r\nContent-Type: audio/mpeg\r\n"), "{http}");
        assert!(http.contains("\r\nicy-br: 128\r\n"), "{http}");
        assert!(http.contains("\r\nConnection: close\r\n"), "{http}");
        assert!(!http.contains("Content-Length"), "{http}");
        assert!(http.ends_with("\r\n\r\n"));
    }

    #[test]
    fn metadata_is_asked_with_a_one() {
        assert!(wants_metadata(&head("GET / HTTP/1.1\r\nicy-metadata: 1\r\n\r\n")));
        assert!(!wants_metadata(&head("GET / HTTP/1.1\r\nIcy-MetaData: 0\r\n\r\n")));
        assert!(!wants_metadata(&head("GET / HTTP/1.1\r\n\r\n")));
    }

    #[test]
    fn titles_from_tags_else_the_name() {
        let m = mp3();
        assert_eq!(m.artist(), Some("Streamalot"));
        assert_eq!(stream_title(&m, "/sample.mp3"), "Streamalot - Streamalot sample tone");
        let frames: Vec<u8> = m.spans(0..m.frames().len()).flat_map(|s| m.slice(s)).collect();
        let untagged = Mp3::from_bytes(frames).unwrap();
        assert_eq!(untagged.title(), None);
        assert_eq!(stream_title(&untagged, "/dir/My%20Song.MP3"), "My%20Song");
        assert_eq!(stream_title(&untagged, "/x"), "x");
    }
}
