//! RTSP 1.0 (RFC 2326) without IO: messages on a byte stream and the header
//! fields with structure.

pub mod header;
pub mod message;

/// The methods the server implements, for `Public` and `Allow`.
pub const PUBLIC_METHODS: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

use message::{Method, Request, Response};

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
