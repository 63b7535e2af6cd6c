//! The status page at `/`: one HTML file with its style and script inline
//! (the box may have no internet, so nothing is fetched from elsewhere),
//! which shows the server's health, the shards' load, the sessions, the
//! channels (what plays now and next), the live streams and a chart of the throughput over the last minutes, and
//! refreshes them from the admin API every two seconds.
//!
//! The server never puts the token in the page: the page takes it from
//! `#token=...` in its URL (a fragment is not sent to the server, nor kept
//! in its access log) or from a field, keeps it in the tab's
//! `sessionStorage`, and sends it as `Authorization: Bearer` with each
//! API request.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use proto::http::{Request, Response};

use super::AdminAccess;
use crate::http::{Context, Handler, Reply};

/// The page, as shipped.
pub const HTML: &str = include_str!("status.html");

/// Serves [`HTML`] to clients that may reach the admin API.
pub struct StatusPage {
    pub access: Rc<AdminAccess>,
}

impl Handler for StatusPage {
    fn serve<'a>(&'a self, _req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            let response = match self.access.reaches(cx.client.ip()) {
                Ok(()) => Response::new(200)
                    .header("Cache-Control", "no-store")
                    // Nothing but the page itself and its API.
                    .header(
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                    )
                    .header("X-Content-Type-Options", "nosniff")
                    .body("text/html; charset=utf-8", HTML),
                Err(r) => r.response(),
            };
            Reply::Respond(response)
        })
    }
}
