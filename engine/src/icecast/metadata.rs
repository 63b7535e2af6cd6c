//! Icecast's title updates: `GET /admin/metadata?mount=/live.mp3&mode=updinfo&song=...`,
//! which source clients (butt, Liquidsoap, Mixxx, libshout's
//! `shout_set_metadata`, a `curl -u source:PASSWORD`) send beside their
//! stream. Without IO: the handler checks the credential, the query, and
//! sets the mount's title through [`ServerView`](crate::http::ServerView),
//! which tells every shard; listeners that asked for ICY metadata read it
//! in their next block.
//!
//! The credential is the mount's source credential (its publish rule, by
//! Basic, as Icecast takes the source password) or an admin login (the
//! users file's admin users and groups). The answer is Icecast's: `200`
//! with an `<iceresponse>` saying `Metadata update successful`, `400` for
//! a query without `mount` or `mode=updinfo`, or for a mount no source is
//! on (Icecast: "Source does not exist"), `401` with a Basic challenge.
//! `title` is taken for `song` when `song` is absent, and `artist` goes in
//! front (`Artist - Title`), as Icecast does.

use std::future::Future;
use std::pin::Pin;

use proto::http::{Request, Response};
use tracing::{debug, info};

use super::source::{authorization, refused};
use crate::http::{Context, Handler, Reply};

/// The path Icecast takes title updates on.
pub const PATH: &str = "/admin/metadata";

/// The handler for [`PATH`]. See the module documentation.
pub struct MetadataUpdate;

/// Icecast's answer body.
fn ice_response(ok: bool, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{message}</message><return>{}</return></iceresponse>\n",
        u8::from(ok)
    )
}

impl Handler for MetadataUpdate {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            let head = &req.head;
            let query = head.target.split_once('?').map_or("", |(_, q)| q);
            let fields = parse_query(query);
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let bad = |m: &str| Reply::Respond(Response::new(400).body("text/xml", ice_response(false, m)));
            let Some(mount) = get("mount").filter(|m| m.starts_with('/')) else {
                return bad("No mount specified");
            };
            let auth = authorization(head);
            let by_source = cx.server.check_source(mount, &auth);
            if let Err(status) = by_source {
                let admin = cx.server.admin_login(cx.client.ip(), &head.method, &head.target, &auth);
                if !matches!(admin, Some(crate::door::Gate::Pass(Some(_)))) {
                    debug!(client = %cx.client, mount, status, "title update refused");
                    // Icecast answers a wrong source password with 401 even
                    // where no rule covers the mount: nothing to tell apart.
                    return Reply::Respond(refused(if status == 403 { 401 } else { status }));
                }
            }
            if get("mode") != Some("updinfo") {
                return bad("Missing parameter: mode=updinfo");
            }
            let song = get("song").or_else(|| get("title")).unwrap_or_default();
            let title = match get("artist").filter(|a| !a.is_empty()) {
                Some(a) if !song.is_empty() => format!("{a} - {song}"),
                Some(a) => a.to_owned(),
                None => song.to_owned(),
            };
            if !cx.server.set_mount_title(mount, &title) {
                return bad("Source does not exist");
            }
            info!(client = %cx.client, mount, title, "stream title updated");
            Reply::Respond(Response::new(200).body("text/xml", ice_response(true, "Metadata update successful")))
        })
    }
}

/// `a=b&c=d` as form fields: `+` is a space, `%XX` a byte, the result
/// taken as UTF-8 (bad sequences replaced).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_as_clients_send_them() {
        let f = parse_query("mount=%2Flive.mp3&mode=updinfo&song=Don%27t+Stop+%E2%98%83&bad=%zz&&x");
        assert_eq!(
            f,
            [
                ("mount".into(), "/live.mp3".into()),
                ("mode".into(), "updinfo".into()),
                ("song".into(), "Don't Stop \u{2603}".into()),
                ("bad".into(), "%zz".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("%ff"), "\u{fffd}");
    }
}
