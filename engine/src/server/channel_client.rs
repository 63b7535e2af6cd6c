//! `streamalot channel`: steers a running server's channels as a client of
//! its admin API (`/api/v1/channels`), over one plain HTTP/1.1 request.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};

/// How long the server may take to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: u64 = 16 << 20;

#[derive(clap::Args, Debug)]
pub struct ChannelArgs {
    #[command(subcommand)]
    pub action: Action,
    /// The server's admin API: http://HOST:PORT (an RTSP port or an --http-port)
    #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:8554")]
    pub admin: String,
    /// The server's --admin-token
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON answer as it is
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Every channel (or one): its state, what plays now and what comes next
    Status { path: Option<String> },
    /// The next movie now
    Skip { path: String },
    /// Play MOVIE (a path under the server's media folder) after the current movie
    Insert { path: String, movie: String },
    /// Take the channel off the air (its viewers get a BYE)
    Stop { path: String },
    /// Put a stopped channel on the air again
    Start { path: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelClientError {
    #[error("--admin {0:?}: expected http://HOST:PORT")]
    Url(String),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("the admin API at {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("the admin API's answer is not HTTP with JSON: {0}")]
    Answer(String),
    #[error("{status}: {why}")]
    Refused { status: u16, why: String },
}

/// `http://HOST:PORT[/]` as the host and port.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    if rest.contains('/') {
        return None;
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)),
        Some(_) => None,
        None if !rest.is_empty() => Some((rest.to_owned(), 80)),
        None => None,
    }
}

/// The request the action makes: method, API path and body.
pub fn request_of(action: &Action) -> (&'static str, String, Option<Value>) {
    let p = |path: &str| path.trim_matches('/').to_owned();
    match action {
        Action::Status { path: None } => ("GET", "/api/v1/channels".into(), None),
        Action::Status { path: Some(path) } => ("GET", format!("/api/v1/channels/{}", p(path)), None),
        Action::Skip { path } => ("POST", format!("/api/v1/channels/{}/skip", p(path)), None),
        Action::Stop { path } => ("POST", format!("/api/v1/channels/{}/stop", p(path)), None),
        Action::Start { path } => ("POST", format!("/api/v1/channels/{}/start", p(path)), None),
        Action::Insert { path, movie } => (
            "POST",
            format!("/api/v1/channels/{}/insert", p(path)),
            Some(json!({ "movie": movie })),
        ),
    }
}

/// Sends one request and reads the whole answer: its status and JSON body.
fn call(
    args: &ChannelArgs,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ChannelClientError> {
    let (host, port) = host_port(&args.admin).ok_or_else(|| ChannelClientError::Url(args.admin.clone()))?;
    let addr = format!("{host}:{port}");
    let connect = |source| ChannelClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let io_err = |source| ChannelClientError::Io {
        addr: addr.clone(),
        source,
    };
    let to = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    let mut stream = TcpStream::connect_timeout(&to, TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(t) = &args.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    stream.write_all(body.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io_err)?;
    parse_answer(&raw)
}

/// An HTTP/1.1 answer (sent with `Connection: close`): its status and the
/// JSON of its body.
fn parse_answer(raw: &[u8]) -> Result<(u16, Value), ChannelClientError> {
    let bad = |why: &str| ChannelClientError::Answer(why.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("a head that is not text"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = &raw[end + 4..];
    if let Some(len) = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    }) {
        body = &body[..len.min(body.len())];
    }
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ChannelClientError::Answer(e.to_string()))?
    };
    Ok((status, value))
}

/// One line for a channel's status.
pub fn status_line(c: &Value) -> String {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let mut line = format!("{}: {}", s("path"), s("state"));
    if let Some(n) = c.get("now").filter(|n| !n.is_null()) {
        line.push_str(&format!(
            ", movie {} {} at {:.1} of {:.1} s",
            n.get("number").and_then(Value::as_u64).unwrap_or(0),
            n.get("movie").and_then(Value::as_str).unwrap_or("-"),
            n.get("position_secs").and_then(Value::as_f64).unwrap_or(0.0),
            n.get("length_secs").and_then(Value::as_f64).unwrap_or(0.0),
        ));
    }
    match c.get("next").and_then(Value::as_str) {
        Some(n) => line.push_str(&format!("; next: {n}")),
        None => line.push_str("; nothing next"),
    }
    line.push_str(&format!(
        "; {} viewers",
        c.get("viewers").and_then(Value::as_u64).unwrap_or(0)
    ));
    if let Some(e) = c.get("error").and_then(Value::as_str) {
        line.push_str(&format!("; error: {e}"));
    }
    line
}

/// Runs `streamalot channel ...`: prints what the server answered.
pub fn run(args: &ChannelArgs) -> Result<(), ChannelClientError> {
    let (method, target, body) = request_of(&args.action);
    let (status, value) = call(args, method, &target, body.as_ref())?;
    if status >= 400 {
        let why = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        return Err(ChannelClientError::Refused { status, why });
    }
    if args.json {
        println!("{value}");
        return Ok(());
    }
    match &args.action {
        Action::Status { path: None } => {
            let list = value
                .get("channels")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                println!("no channels");
            }
            for c in &list {
                println!("{}", status_line(c));
            }
        }
        Action::Status { path: Some(_) } => println!("{}", status_line(&value)),
        _ => println!(
            "{}: {}",
            value.get("channel").and_then(Value::as_str).unwrap_or("-"),
            value.get("done").and_then(Value::as_str).unwrap_or("done")
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        assert_eq!(host_port("http://127.0.0.1:8554"), Some(("127.0.0.1".into(), 8554)));
        assert_eq!(host_port("http://[::1]:80/"), Some(("::1".into(), 80)));
        assert_eq!(host_port("http://h"), Some(("h".into(), 80)));
        assert_eq!(host_port("https://h:1"), None);
        assert_eq!(host_port("http://h:1/api"), None);
        let (s, v) =
            parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\n{\"error\":\"none\"}\nxx").unwrap();
        assert_eq!((s, v["error"].as_str()), (404, Some("none")));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        let (m, t, b) = request_of(&Action::Insert {
            path: "/tv/news/".into(),
            movie: "a b.mp4".into(),
        });
        assert_eq!((m, t.as_str()), ("POST", "/api/v1/channels/tv/news/insert"));
        assert_eq!(b.unwrap()["movie"], "a b.mp4");
    }
}
