//! HTTP Basic authentication (RFC 7617) as RTSP uses it (RFC 2326 section
//! 16.2 borrows HTTP's): `Authorization: Basic base64(user ":" password)`.
//!
//! What real clients send:
//! - ffmpeg and GStreamer percent-decode the `user:pass@` of the URL, then
//!   encode the bytes as given: UTF-8 in practice, padded standard base64.
//! - Some clients drop the `=` padding; a few old ones send bare `user:pass`
//!   with no base64 at all, which is refused (it would put a password in
//!   logs of anything that prints "bad base64").
//! - The password may contain `:`; the user-id may not (RFC 7617 section 2),
//!   so the first `:` splits them.
//!
//! Basic sends the password in the clear on every request: offer it only
//! where the transport is encrypted or the operator asked for it.

use base64::Engine as _;

use super::header::{self, HeaderError};

/// Longest token68 accepted: a 255-byte user and a 512-byte password.
pub const MAX_TOKEN_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("not Basic credentials")]
    NotBasic,
    #[error("Basic credentials are empty")]
    Empty,
    #[error("Basic credentials of {0} bytes are longer than {MAX_TOKEN_BYTES}")]
    TooLong(usize),
    #[error("Basic credentials are not valid base64")]
    BadBase64,
    #[error("Basic credentials are not UTF-8")]
    NotUtf8,
    #[error("Basic credentials have no ':' between user and password")]
    NoColon,
    #[error("Basic user name is empty")]
    EmptyUser,
    #[error("control character in the Basic user name or password")]
    ControlChar,
}

/// A user name and password from a Basic `Authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // The password never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Parses a whole `Authorization` value whose scheme is Basic.
pub fn parse(value: &str) -> Result<Credentials, BasicError> {
    let (scheme, rest) = header::split_scheme(value)?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(BasicError::NotBasic);
    }
    parse_token(rest)
}

/// Parses the token68 after `Basic `.
pub fn parse_token(token: &str) -> Result<Credentials, BasicError> {
    let token = token.trim_matches([' ', '\t']);
    if token.is_empty() {
        return Err(BasicError::Empty);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(BasicError::TooLong(token.len()));
    }
    let decoded = decode_lenient(token).ok_or(BasicError::BadBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| BasicError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(BasicError::NoColon)?;
    if user.is_empty() {
        return Err(BasicError::EmptyUser);
    }
    if text.chars().any(char::is_control) {
        return Err(BasicError::ControlChar);
    }
    Ok(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Standard base64, with or without its `=` padding.
fn decode_lenient(token: &str) -> Option<Vec<u8>> {
    let unpadded = token.trim_end_matches('=');
    if token.len() - unpadded.len() > 2 {
        return None;
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded).ok()
}

/// The `WWW-Authenticate` value that asks for Basic credentials in `realm`.
/// `charset="UTF-8"` (RFC 7617 section 2.1) tells clients how to encode
/// non-ASCII names; clients that do not know the parameter ignore it.
pub fn challenge(realm: &str) -> String {
    format!("Basic {}, charset=\"UTF-8\"", header::quoted_param("realm", realm))
}

/// The `Authorization` value a client sends, for tests and tools.
pub fn authorization(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn rfc7617_examples() {
        // RFC 7617 section 2: "Aladdin" / "open sesame".
        assert_eq!(
            parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap(),
            creds("Aladdin", "open sesame")
        );
        // Section 2.1: "test" / "123£" in UTF-8.
        assert_eq!(parse("Basic dGVzdDoxMjPCow==").unwrap(), creds("test", "123£"));
        assert_eq!(
            authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn what_clients_vary() {
        // Scheme in any case, extra whitespace, padding dropped.
        assert_eq!(parse("basic   QWxhZGRpbjpvcGVuIHNlc2FtZQ").unwrap().user, "Aladdin");
        assert_eq!(parse("BASIC\tQWxhZGRpbjpvcGVuIHNlc2FtZQ==  ").unwrap().user, "Aladdin");
        // A colon in the password stays in the password; an empty one is allowed.
        assert_eq!(parse(&authorization("u", "a:b")).unwrap(), creds("u", "a:b"));
        assert_eq!(parse(&authorization("u", "")).unwrap(), creds("u", ""));
    }

    #[test]
    fn hostile_values_are_typed_errors() {
        assert_eq!(parse("Digest QWxh"), Err(BasicError::NotBasic));
        assert_eq!(parse("Basic"), Err(BasicError::Empty));
        assert_eq!(parse("Basic !!!!"), Err(BasicError::BadBase64));
        assert_eq!(parse("Basic QWxh==="), Err(BasicError::BadBase64));
        assert_eq!(parse("Basic Aladdin:open"), Err(BasicError::BadBase64));
        // base64 of bytes that are not UTF-8.
        assert_eq!(parse("Basic //79"), Err(BasicError::NotUtf8));
        assert_eq!(parse(&authorization("", "x")), Err(BasicError::EmptyUser));
        assert_eq!(parse("Basic dXNlcg=="), Err(BasicError::NoColon)); // "user"
        assert_eq!(parse(&authorization("a\u{1}", "x")), Err(BasicError::ControlChar));
        let huge = format!("Basic {}", "QUFB".repeat(400));
        assert_eq!(parse(&huge), Err(BasicError::TooLong(1600)));
        assert!(matches!(parse("Basic QWxh\nZGRp"), Err(BasicError::Header(_))));
    }

    #[test]
    fn challenge_and_debug() {
        assert_eq!(challenge("Streamalot"), r#"Basic realm="Streamalot", charset="UTF-8""#);
        let shown = format!("{:?}", creds("u", "secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
