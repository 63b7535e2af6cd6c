//! RTSP URLs: the ones a client is given, the control URLs a DESCRIBE
//! answer makes it derive from its base, and the movie path and track a
//! server reads from a request URI.
//!
//! RFC 2326 C.1.1 says a relative `a=control` resolves against the base as
//! RFC 1808 relative URLs do, which would make `trackID=1` under
//! `rtsp://h/movie.mp4` into `rtsp://h/trackID=1`. No server expects that:
//! servers that send no `Content-Base` (or one without the trailing slash)
//! mean `rtsp://h/movie.mp4/trackID=1`, and every widely used client (live555,
//! libavformat, VLC, GStreamer) appends the control to the base with a `/`.
//! So does [`resolve`].

use std::fmt;

/// The port RTSP uses when a URL names none (RFC 2326 section 3.2).
pub const DEFAULT_PORT: u16 = 554;

/// Why a string is not a usable RTSP URL. The URL in the message has any
/// password taken out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not an rtsp:// URL")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} has a bad port")]
    Port(String),
    #[error("{0:?} has a user name or password with a bad %-escape")]
    Userinfo(String),
}

/// An `rtsp://[user[:password]@]host[:port][/path][?query]` URL.
///
/// The credentials are taken out of the text: [`as_str`](RtspUrl::as_str) is
/// the URL as written without them, which is what requests carry (RFC 7826
/// section 4.2 forbids userinfo in a request URL, and servers such as
/// live555 refuse it) and what logs may show. The user name and password are
/// kept apart, %-decoded, for authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl {
    text: String,
    host: String,
    port: u16,
    /// Where the path (or query, or the end) starts in `text`.
    path_at: usize,
    user: Option<String>,
    password: Option<String>,
}

impl RtspUrl {
    pub fn parse(s: &str) -> Result<RtspUrl, UrlError> {
        let s = s.trim();
        let redacted = || redact(s);
        let rest = strip_scheme(s).ok_or_else(|| UrlError::Scheme(redacted()))?;
        let scheme_len = s.len() - rest.len();
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_len);
        // The last `@`: people type passwords with an unescaped `@` in them,
        // and a host never has one.
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port).ok_or_else(|| UrlError::Port(redacted()))?;
        if host.is_empty() {
            return Err(UrlError::NoHost(redacted()));
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, password) = match u.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (u, None),
                };
                let decode = |t: &str| percent_decode(t).ok_or_else(|| UrlError::Userinfo(redacted()));
                (Some(decode(user)?), password.map(decode).transpose()?)
            }
        };
        Ok(RtspUrl {
            text: format!("{}{host_port}{after}", &s[..scheme_len]),
            host: host.to_owned(),
            port: port.unwrap_or(DEFAULT_PORT),
            path_at: scheme_len + host_port.len(),
            user,
            password,
        })
    }

    /// The URL without credentials, as requests carry it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host to connect to: a name or an address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path, `/` and all (empty when the URL names none), without the
    /// query.
    pub fn path(&self) -> &str {
        let rest = &self.text[self.path_at..];
        &rest[..rest.find(['?', '#']).unwrap_or(rest.len())]
    }

    /// What follows `?`, up to any `#`.
    pub fn query(&self) -> Option<&str> {
        let rest = &self.text[self.path_at..];
        let rest = &rest[..rest.find('#').unwrap_or(rest.len())];
        rest.split_once('?').map(|(_, q)| q)
    }

    /// The user name, %-decoded, when the URL has credentials.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password, %-decoded, when the URL has one after the user name.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Without the password, so that it never reaches a log.
impl fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtspUrl")
            .field("text", &self.text)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .finish()
    }
}

/// `s` with the userinfo of an `scheme://userinfo@host` URL replaced by
/// `...`, for error messages.
fn redact(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://...@{host}{}", &rest[authority.len()..]),
        None => s.to_owned(),
    }
}

/// RFC 3986 %-decoding; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What follows `rtsp://`, if `s` is an RTSP URL (the scheme is
/// case-insensitive).
fn strip_scheme(s: &str) -> Option<&str> {
    let (scheme, rest) = s.split_once("://")?;
    scheme.eq_ignore_ascii_case("rtsp").then_some(rest)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. `None` for a bad port.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Some((host, Some(p.parse().ok().filter(|&p: &u16| p != 0)?))),
        None => Some((authority, None)),
    }
}

/// The URL a control attribute names, given the presentation's base URL
/// (from `Content-Base`, `Content-Location` or the DESCRIBE request).
///
/// - `*` (and an empty control) is the base itself;
/// - an absolute `rtsp://` URL stands as it is;
/// - `/path` replaces the base's path;
/// - anything else is appended to the base with one `/` between (see the
///   module documentation for why not RFC 1808 resolution).
pub fn resolve(base: &str, control: &str) -> String {
    let control = control.trim();
    if control.is_empty() || control == "*" {
        return base.to_owned();
    }
    if strip_scheme(control).is_some() {
        return control.to_owned();
    }
    if control.starts_with('/') {
        let origin_len = strip_scheme(base)
            .map(|rest| base.len() - rest.len() + rest.find('/').unwrap_or(rest.len()))
            .unwrap_or(0);
        return format!("{}{control}", &base[..origin_len]);
    }
    if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

/// Splits a request URI into the path of the movie and the track ID it
/// names, if any: `rtsp://h:554/dir/a.mp4/trackID=3` gives
/// (`/dir/a.mp4`, Some(3)). Query strings are dropped.
pub fn split_uri(uri: &str) -> Option<(&str, Option<u32>)> {
    let rest = if let Some(r) = ["rtsp://", "RTSP://", "rtsps://", "RTSPS://"]
        .iter()
        .find_map(|p| uri.strip_prefix(p))
    {
        &r[r.find('/')?..]
    } else if uri.starts_with('/') {
        uri
    } else {
        return None;
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if let Some((path, last)) = rest.rsplit_once('/') {
        if let Some(id) = last.strip_prefix("trackID=") {
            return Some((path, Some(id.parse().ok()?)));
        }
    }
    Some((rest, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_users_type() {
        let u = RtspUrl::parse("rtsp://127.0.0.1:8554/sample.mp4").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.as_str()),
            ("127.0.0.1", 8554, "rtsp://127.0.0.1:8554/sample.mp4")
        );
        let u = RtspUrl::parse("RTSP://media.example/a/b.mov?x=1").unwrap();
        assert_eq!((u.host(), u.port()), ("media.example", 554));
        let u = RtspUrl::parse("rtsp://[::1]:9000/x").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 9000));
        let u = RtspUrl::parse("rtsp://[fe80::1]/x").unwrap();
        assert_eq!((u.host(), u.port()), ("fe80::1", 554));
        assert_eq!(RtspUrl::parse(" rtsp://h/x\n").unwrap().as_str(), "rtsp://h/x");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(matches!(RtspUrl::parse("http://h/x"), Err(UrlError::Scheme(_))));
        assert!(matches!(RtspUrl::parse("sample.mp4"), Err(UrlError::Scheme(_))));
        assert!(matches!(RtspUrl::parse("rtsps://h/x"), Err(UrlError::Scheme(_))));
        assert!(matches!(RtspUrl::parse("rtsp:///x"), Err(UrlError::NoHost(_))));
        assert!(matches!(RtspUrl::parse("rtsp://h:99999/x"), Err(UrlError::Port(_))));
        assert!(matches!(RtspUrl::parse("rtsp://h:0/x"), Err(UrlError::Port(_))));
        assert!(matches!(RtspUrl::parse("rtsp://h:/x"), Err(UrlError::Port(_))));
        assert!(matches!(RtspUrl::parse("rtsp://[::1/x"), Err(UrlError::Port(_))));
    }

    #[test]
    fn credentials_are_kept_apart() {
        let u = RtspUrl::parse("rtsp://user:pa%40ss@cam.example:8554/live/1?res=hd#x").unwrap();
        assert_eq!((u.user(), u.password()), (Some("user"), Some("pa@ss")));
        assert_eq!((u.host(), u.port()), ("cam.example", 8554));
        assert_eq!(u.as_str(), "rtsp://cam.example:8554/live/1?res=hd#x");
        assert_eq!((u.path(), u.query()), ("/live/1", Some("res=hd")));
        assert!(!format!("{u:?}").contains("pa@ss"), "Debug hides the password");
        // An unescaped `@` in a password, a user without one, an empty one.
        let u = RtspUrl::parse("rtsp://admin:p@ss@[::1]/x").unwrap();
        assert_eq!((u.user(), u.password(), u.host()), (Some("admin"), Some("p@ss"), "::1"));
        let u = RtspUrl::parse("rtsp://admin@h").unwrap();
        assert_eq!(
            (u.user(), u.password(), u.path(), u.query()),
            (Some("admin"), None, "", None)
        );
        let u = RtspUrl::parse("rtsp://:@h/").unwrap();
        assert_eq!((u.user(), u.password(), u.as_str()), (Some(""), Some(""), "rtsp://h/"));
        // Errors never repeat the password.
        for bad in ["rtsp://u:secret@h:x/", "rtsp://u:secret@/", "rtsp://u:secret%zz@h/"] {
            let e = RtspUrl::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        assert!(matches!(RtspUrl::parse("rtsp://u:%e9@h/"), Err(UrlError::Userinfo(_))));
        assert!(matches!(RtspUrl::parse("rtsp://u:%4@h/"), Err(UrlError::Userinfo(_))));
    }

    #[test]
    fn paths_and_queries() {
        let u = RtspUrl::parse("rtsp://h/a/b.mp4").unwrap();
        assert_eq!((u.path(), u.query()), ("/a/b.mp4", None));
        let u = RtspUrl::parse("rtsp://h?x=1").unwrap();
        assert_eq!((u.path(), u.query()), ("", Some("x=1")));
    }

    #[test]
    fn controls_resolve_as_real_clients_do() {
        let base = "rtsp://h:8554/dir/movie.mp4/";
        assert_eq!(resolve(base, "trackID=3"), "rtsp://h:8554/dir/movie.mp4/trackID=3");
        assert_eq!(resolve(base, "*"), base);
        assert_eq!(resolve(base, ""), base);
        // No trailing slash on the base: still appended, not replaced.
        assert_eq!(
            resolve("rtsp://h/movie.mp4", "streamid=0"),
            "rtsp://h/movie.mp4/streamid=0"
        );
        assert_eq!(
            resolve(base, "rtsp://other:554/x/trackID=1"),
            "rtsp://other:554/x/trackID=1"
        );
        assert_eq!(resolve(base, "RTSP://o/y"), "RTSP://o/y");
        assert_eq!(resolve(base, "/elsewhere/track1"), "rtsp://h:8554/elsewhere/track1");
        assert_eq!(resolve("rtsp://h:8554", "/t"), "rtsp://h:8554/t");
        assert_eq!(resolve(base, " stream=1 "), "rtsp://h:8554/dir/movie.mp4/stream=1");
    }

    #[test]
    fn uris() {
        assert_eq!(split_uri("rtsp://h:554/a/b.mp4/trackID=3"), Some(("/a/b.mp4", Some(3))));
        assert_eq!(split_uri("rtsp://h/b.mp4/"), Some(("/b.mp4", None)));
        assert_eq!(split_uri("rtsp://h/b.mp4?x=1"), Some(("/b.mp4", None)));
        assert_eq!(split_uri("/b.mp4/trackID=x"), None);
        assert_eq!(split_uri("b.mp4"), None);
        assert_eq!(split_uri("rtsp://hostonly"), None);
    }
}
