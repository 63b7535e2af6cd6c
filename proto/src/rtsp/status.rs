//! RTSP status codes (RFC 2326 section 7.1.1) and their reason phrases.

use std::fmt;

/// A status code. Responses read by [`parse`](super::message::parse) carry
/// three-digit codes only; a code made from a number is taken as given,
/// since the numbers a server answers with are its own literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u16);

impl Status {
    pub const CONTINUE: Status = Status(100);
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const LOW_ON_STORAGE_SPACE: Status = Status(250);
    pub const MULTIPLE_CHOICES: Status = Status(300);
    pub const MOVED_PERMANENTLY: Status = Status(301);
    pub const MOVED_TEMPORARILY: Status = Status(302);
    pub const SEE_OTHER: Status = Status(303);
    pub const NOT_MODIFIED: Status = Status(304);
    pub const USE_PROXY: Status = Status(305);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const PAYMENT_REQUIRED: Status = Status(402);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const NOT_ACCEPTABLE: Status = Status(406);
    pub const PROXY_AUTHENTICATION_REQUIRED: Status = Status(407);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const GONE: Status = Status(410);
    pub const LENGTH_REQUIRED: Status = Status(411);
    pub const PRECONDITION_FAILED: Status = Status(412);
    pub const REQUEST_ENTITY_TOO_LARGE: Status = Status(413);
    pub const REQUEST_URI_TOO_LARGE: Status = Status(414);
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status(415);
    pub const PARAMETER_NOT_UNDERSTOOD: Status = Status(451);
    pub const CONFERENCE_NOT_FOUND: Status = Status(452);
    pub const NOT_ENOUGH_BANDWIDTH: Status = Status(453);
    pub const SESSION_NOT_FOUND: Status = Status(454);
    pub const METHOD_NOT_VALID_IN_THIS_STATE: Status = Status(455);
    pub const HEADER_FIELD_NOT_VALID: Status = Status(456);
    pub const INVALID_RANGE: Status = Status(457);
    pub const PARAMETER_IS_READ_ONLY: Status = Status(458);
    pub const AGGREGATE_OPERATION_NOT_ALLOWED: Status = Status(459);
    pub const ONLY_AGGREGATE_OPERATION_ALLOWED: Status = Status(460);
    pub const UNSUPPORTED_TRANSPORT: Status = Status(461);
    pub const DESTINATION_UNREACHABLE: Status = Status(462);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const BAD_GATEWAY: Status = Status(502);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const GATEWAY_TIMEOUT: Status = Status(504);
    pub const RTSP_VERSION_NOT_SUPPORTED: Status = Status(505);
    pub const OPTION_NOT_SUPPORTED: Status = Status(551);

    pub const fn new(code: u16) -> Status {
        Status(code)
    }

    /// A code read off the wire: three digits (RFC 2326 section 7.1.1).
    pub fn from_wire(code: u16) -> Option<Status> {
        (100..=999).contains(&code).then_some(Status(code))
    }

    pub const fn code(self) -> u16 {
        self.0
    }

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// The reason phrase RFC 2326 gives the code, "Unknown" for others.
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            250 => "Low on Storage Space",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            303 => "See Other",
            304 => "Not Modified",
            305 => "Use Proxy",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            411 => "Length Required",
            412 => "Precondition Failed",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Large",
            415 => "Unsupported Media Type",
            451 => "Parameter Not Understood",
            452 => "Conference Not Found",
            453 => "Not Enough Bandwidth",
            454 => "Session Not Found",
            455 => "Method Not Valid in This State",
            456 => "Header Field Not Valid for Resource",
            457 => "Invalid Range",
            458 => "Parameter Is Read-Only",
            459 => "Aggregate Operation Not Allowed",
            460 => "Only Aggregate Operation Allowed",
            461 => "Unsupported Transport",
            462 => "Destination Unreachable",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            505 => "RTSP Version Not Supported",
            551 => "Option Not Supported",
            _ => "Unknown",
        }
    }
}

impl From<u16> for Status {
    fn from(code: u16) -> Status {
        Status(code)
    }
}

impl From<Status> for u16 {
    fn from(s: Status) -> u16 {
        s.0
    }
}

impl PartialEq<u16> for Status {
    fn eq(&self, code: &u16) -> bool {
        self.0 == *code
    }
}

/// As on a status line: `404 Not Found`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_phrases() {
        assert_eq!(Status::SESSION_NOT_FOUND.to_string(), "454 Session Not Found");
        assert_eq!(Status::from(200), Status::OK);
        assert_eq!(Status::OK, 200);
        assert_eq!(u16::from(Status::NOT_IMPLEMENTED), 501);
        assert_eq!(Status::new(299).reason(), "Unknown");
        assert!(Status::OK.is_success() && Status::new(250).is_success());
        assert!(!Status::MOVED_PERMANENTLY.is_success());
        assert_eq!(Status::from_wire(99), None);
        assert_eq!(Status::from_wire(1000), None);
        assert_eq!(Status::from_wire(999).map(Status::code), Some(999));
    }
}
