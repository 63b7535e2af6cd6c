//! The RTSP headers QuickTime clients and Darwin Streaming Server used for
//! reliable UDP, overbuffering and faster-than-real-time play, and the
//! standard `Speed` header (RFC 2326 section 12.35) as DSS answered it.
//!
//! - `x-Retransmit: our-retransmit[;window=N]` in SETUP asks for reliable
//!   UDP (acks in RTCP APP `qtak` packets, see `qtss`). DSS took it only
//!   over UDP (a TCP transport wins), and echoed the client's header back
//!   in the reply when it agreed. [`Retransmit`].
//! - `x-Accept-Retransmit: our-retransmit` and `x-Accept-Dynamic-Rate: 1`
//!   in a DESCRIBE reply say the server offers both.
//! - `x-Dynamic-Rate: 1|0` in SETUP turns overbuffering (sending ahead of
//!   real time) on or off; DSS answered with the state it chose, and only
//!   when the client had asked. [`dynamic_rate`].
//! - `x-Prebuffer: maxtime=SECONDS` in PLAY says how far before the start
//!   the client lets the server back up to a key frame and burst from;
//!   DSS replied `x-Prebuffer: time=SECONDS` with how far it did.
//!   [`prebuffer_max_time`], [`prebuffer_reply`].
//! - `x-Transport-Options: late-tolerance=SECONDS` moves the lateness
//!   thresholds of thinning. [`late_tolerance`].
//!
//! Values here are parsed as DSS parsed them: leniently, a value that does
//! not parse counting as absent. None of them can make a request fail.

/// The retransmission protocol name of DSS's reliable UDP.
pub const OUR_RETRANSMIT: &str = "our-retransmit";

pub const X_RETRANSMIT: &str = "x-Retransmit";
pub const X_ACCEPT_RETRANSMIT: &str = "x-Accept-Retransmit";
pub const X_DYNAMIC_RATE: &str = "x-Dynamic-Rate";
pub const X_ACCEPT_DYNAMIC_RATE: &str = "x-Accept-Dynamic-Rate";
pub const X_PREBUFFER: &str = "x-Prebuffer";
pub const X_TRANSPORT_OPTIONS: &str = "x-Transport-Options";
pub const SPEED: &str = "Speed";

/// What `x-Retransmit` asks for when it names `our-retransmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// `window=`: the client's receive window. DSS recorded it and sized
    /// its own window from the movie's bit rate instead.
    pub window: Option<u32>,
}

impl Retransmit {
    /// The header's `our-retransmit` alternative, if it has one: the
    /// header lists protocols by comma, each with `;name=value`
    /// parameters. Protocol names compare case-insensitively.
    pub fn parse(header: &str) -> Option<Retransmit> {
        header.split(',').find_map(|alt| {
            let mut parts = alt.split(';').map(str::trim);
            let name = parts.next()?;
            if !name.eq_ignore_ascii_case(OUR_RETRANSMIT) {
                return None;
            }
            let window = parts
                .filter_map(|p| p.split_once('='))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("window"))
                .and_then(|(_, v)| v.trim().parse().ok());
            Some(Retransmit { window })
        })
    }
}

/// `x-Dynamic-Rate`: whether the client wants overbuffering. DSS read an
/// integer: above zero means yes, anything else (garbage included) no.
pub fn dynamic_rate(header: &str) -> bool {
    let v = header.trim();
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    !v.starts_with('-') && digits[..end].bytes().any(|b| b != b'0')
}

/// Parameters of a `;`-separated header, as (name, value) with both
/// trimmed.
fn params(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// A finite, non-negative number of seconds.
fn seconds(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)
}

/// `x-Prebuffer: maxtime=SECONDS`: how far before the requested start the
/// client lets the server begin. `None` when absent or not a number: an
/// old client, which DSS served without a burst.
pub fn prebuffer_max_time(header: &str) -> Option<f64> {
    params(header)
        .find(|(n, _)| n.eq_ignore_ascii_case("maxtime"))
        .and_then(|(_, v)| seconds(v))
}

/// The `x-Prebuffer` reply: `time=SECONDS`, how far before the requested
/// start the stream began, to five decimals as DSS printed it. DSS sent the
/// header only when that was more than zero.
pub fn prebuffer_reply(backup_secs: f64) -> String {
    format!("time={backup_secs:.5}")
}

/// `x-Transport-Options: late-tolerance=SECONDS`.
pub fn late_tolerance(header: &str) -> Option<f64> {
    params(header)
        .find(|(n, _)| n.eq_ignore_ascii_case("late-tolerance"))
        .and_then(|(_, v)| seconds(v))
}

/// `Speed`: the play rate a client asks for. `None` when it is not a
/// finite number; what to grant is the server's choice.
pub fn speed(header: &str) -> Option<f64> {
    header.trim().parse::<f64>().ok().filter(|s| s.is_finite())
}

/// The `Speed` reply value, to five decimals as DSS wrote it.
pub fn speed_reply(speed: f64) -> String {
    format!("{speed:.5}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit() {
        assert_eq!(Retransmit::parse("our-retransmit"), Some(Retransmit { window: None }));
        assert_eq!(
            Retransmit::parse("Our-Retransmit;window=128"),
            Some(Retransmit { window: Some(128) })
        );
        assert_eq!(
            Retransmit::parse("other-scheme;window=1, our-retransmit ; window = 64"),
            Some(Retransmit { window: Some(64) })
        );
        assert_eq!(
            Retransmit::parse("our-retransmit;window=lots"),
            Some(Retransmit { window: None })
        );
        assert_eq!(Retransmit::parse("other-scheme"), None);
        assert_eq!(Retransmit::parse(""), None);
    }

    #[test]
    fn dynamic_rate_reads_an_integer_as_dss_did() {
        for (v, want) in [
            ("1", true),
            (" 1 ", true),
            ("2", true),
            ("+1", true),
            ("0", false),
            ("00", false),
            ("-1", false),
            ("yes", false),
            ("", false),
            ("1junk", true),
        ] {
            assert_eq!(dynamic_rate(v), want, "{v:?}");
        }
    }

    #[test]
    fn prebuffer() {
        assert_eq!(prebuffer_max_time("maxtime=3.0"), Some(3.0));
        assert_eq!(prebuffer_max_time("foo=1; MaxTime = 2.5"), Some(2.5));
        assert_eq!(prebuffer_max_time("maxtime=-1"), None);
        assert_eq!(prebuffer_max_time("maxtime=inf"), None);
        assert_eq!(prebuffer_max_time("time=2"), None);
        assert_eq!(prebuffer_reply(1.25), "time=1.25000");
    }

    #[test]
    fn speed_and_late_tolerance() {
        assert_eq!(speed(" 2.0"), Some(2.0));
        assert_eq!(speed("-1"), Some(-1.0));
        assert_eq!(speed("NaN"), None);
        assert_eq!(speed("fast"), None);
        assert_eq!(speed_reply(2.0), "2.00000");
        assert_eq!(late_tolerance("late-tolerance=1.5"), Some(1.5));
        assert_eq!(late_tolerance("other=1"), None);
    }
}
