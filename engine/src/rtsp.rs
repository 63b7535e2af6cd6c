//! The server's RTSP policy: which methods it implements and how it answers
//! requests outside a session. The codec itself is [`proto::rtsp`].

use proto::rtsp::message::{Method, Request, Response};

/// The methods the server implements, for `Public` and `Allow`.
pub const PUBLIC_METHODS: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// The answer to a request that names no session and needs no movie:
/// everything but DESCRIBE and SETUP, which the caller handles.
pub fn answer_without_session(req: &Request, cseq: &str) -> Response {
    match &req.method {
        Method::Options => Response::new(200, Some(cseq)).header("Public", PUBLIC_METHODS),
        // PLAY, PAUSE and TEARDOWN only mean something within a session.
        Method::Play | Method::Pause | Method::Teardown => Response::new(454, Some(cseq)),
        // Keep-alives before a session exists, or pings.
        Method::GetParameter | Method::SetParameter => Response::new(200, Some(cseq)),
        Method::Announce | Method::Record | Method::Redirect => {
            Response::new(405, Some(cseq)).header("Allow", PUBLIC_METHODS)
        }
        Method::Describe | Method::Setup | Method::Other(_) => Response::new(501, Some(cseq)),
    }
}
