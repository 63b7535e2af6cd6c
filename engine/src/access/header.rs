//! The shared grammar of `Authorization` and `WWW-Authenticate` values (RFC
//! 7235 section 2.1): a scheme, then either a token68 (Basic) or a list of
//! `name=value` auth-params (Digest), values as tokens or quoted strings.
//!
//! Real clients bend the grammar, so the parser is lenient where that is
//! harmless and strict where leniency could be abused:
//! - ffmpeg quotes `qop="auth"`, which RFC 7616 says is a bare token; some
//!   cameras' clients quote `algorithm="MD5"` and `nc="00000001"`. Both forms
//!   are accepted for every parameter.
//! - Whitespace around `=` and `,`, empty list elements (`a=1,,b=2`) and a
//!   trailing comma appear in the wild and are skipped.
//! - Parameter names are case-insensitive (`Username=` is seen).
//! - A parameter given twice is an error, never "first wins" or "last wins":
//!   two `uri=` or two `response=` values are how a request smuggles one
//!   value past a check made on the other.
//! - Everything is bounded: the whole value, the number of parameters, and
//!   each value, so a hostile header cannot make the server hold or scan
//!   more than a few kilobytes.

use std::fmt::Write as _;

/// The longest `Authorization` value considered. Digest values from real
/// clients are a few hundred bytes plus the request URI; RTSP request lines
/// are already bounded by the request parser.
pub const MAX_VALUE_BYTES: usize = 8192;
/// More parameters than any client sends (Digest defines about a dozen).
pub const MAX_PARAMS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("authorization value of {0} bytes is longer than {MAX_VALUE_BYTES}")]
    TooLong(usize),
    #[error("authorization value has no scheme")]
    NoScheme,
    #[error("more than {MAX_PARAMS} auth parameters")]
    TooManyParams,
    #[error("auth parameter {0:?} appears more than once")]
    DuplicateParam(String),
    #[error("malformed auth parameter list at byte {0}")]
    Malformed(usize),
    #[error("quoted string not closed")]
    UnclosedQuote,
    #[error("control character in the authorization value")]
    ControlChar,
}

/// Splits `Scheme rest` and checks the bounds shared by every scheme.
/// The scheme is returned as written; compare it case-insensitively.
pub fn split_scheme(value: &str) -> Result<(&str, &str), HeaderError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(HeaderError::TooLong(value.len()));
    }
    // Tabs are legal whitespace; any other control byte (NUL, CR, LF smuggled
    // through a lax header parser) is refused outright.
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::ControlChar);
    }
    let value = value.trim_matches([' ', '\t']);
    let end = value.find([' ', '\t']).unwrap_or(value.len());
    let scheme = &value[..end];
    if scheme.is_empty() || !scheme.bytes().all(is_tchar) {
        return Err(HeaderError::NoScheme);
    }
    Ok((scheme, value[end..].trim_start_matches([' ', '\t'])))
}

/// One parameter: the name lowercased, the value unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: String,
    /// Whether the value was a quoted string.
    pub quoted: bool,
}

/// Parses a `name=value, name="value"` list.
pub fn parse_params(text: &str) -> Result<Vec<Param>, HeaderError> {
    let bytes = text.as_bytes();
    let mut params: Vec<Param> = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i == bytes.len() {
            return Ok(params);
        }
        let start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(HeaderError::Malformed(i));
        }
        let name = text[start..i].to_ascii_lowercase();
        i = skip_ws(bytes, i);
        if bytes.get(i) != Some(&b'=') {
            return Err(HeaderError::Malformed(i));
        }
        i = skip_ws(bytes, i + 1);
        let (value, quoted) = if bytes.get(i) == Some(&b'"') {
            let (v, next) = quoted_string(text, i)?;
            i = next;
            (v, true)
        } else {
            let vstart = i;
            // A bare value runs to the next comma or whitespace. Some clients
            // send unquoted values with characters outside tchar (`/` and `=`
            // in base64 nonces), so only the separators end it.
            while i < bytes.len() && !matches!(bytes[i], b',' | b' ' | b'\t' | b'"') {
                i += 1;
            }
            if i == vstart || bytes.get(i) == Some(&b'"') {
                return Err(HeaderError::Malformed(i));
            }
            (text[vstart..i].to_owned(), false)
        };
        i = skip_ws(bytes, i);
        if i < bytes.len() && bytes[i] != b',' {
            return Err(HeaderError::Malformed(i));
        }
        if params.iter().any(|p| p.name == name) {
            return Err(HeaderError::DuplicateParam(name));
        }
        if params.len() == MAX_PARAMS {
            return Err(HeaderError::TooManyParams);
        }
        params.push(Param { name, value, quoted });
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// The quoted string opening at `open`, unescaped, and the index after it.
fn quoted_string(text: &str, open: usize) -> Result<(String, usize), HeaderError> {
    let mut out = String::new();
    let mut chars = text[open + 1..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((out, open + 1 + at + 1)),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => return Err(HeaderError::UnclosedQuote),
            },
            c => out.push(c),
        }
    }
    Err(HeaderError::UnclosedQuote)
}

/// RFC 7230 token characters.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `value` as a quoted string, escaping `"` and `\`.
pub fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `name="value"` with the escaping of [`push_quoted`], for challenges.
pub fn quoted_param(name: &str, value: &str) -> String {
    let mut s = String::with_capacity(name.len() + value.len() + 3);
    let _ = write!(s, "{name}=");
    push_quoted(&mut s, value);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_values(text: &str) -> Vec<(String, String)> {
        parse_params(text)
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect()
    }

    #[test]
    fn scheme_and_rest() {
        assert_eq!(split_scheme("Digest a=1").unwrap(), ("Digest", "a=1"));
        assert_eq!(split_scheme("  basic \t QWxh ").unwrap(), ("basic", "QWxh"));
        assert_eq!(split_scheme("Basic").unwrap(), ("Basic", ""));
        assert_eq!(split_scheme(""), Err(HeaderError::NoScheme));
        assert_eq!(split_scheme("=x"), Err(HeaderError::NoScheme));
        assert_eq!(split_scheme("Digest a=1\r\nX: y"), Err(HeaderError::ControlChar));
        assert_eq!(split_scheme("Digest a=\u{0}"), Err(HeaderError::ControlChar));
        let long = format!("Digest uri=\"{}\"", "a".repeat(MAX_VALUE_BYTES));
        assert!(matches!(split_scheme(&long), Err(HeaderError::TooLong(_))));
    }

    #[test]
    fn quoting_as_real_clients_send_it() {
        // ffmpeg: no spaces after commas, qop quoted, algorithm bare.
        let v = names_values(
            r#"username="u",realm="r",nonce="n/+=",uri="rtsp://h/a?b=c,d",response="ab",algorithm=MD5,qop="auth",cnonce="c",nc=00000001"#,
        );
        assert_eq!(v[3], ("uri".into(), "rtsp://h/a?b=c,d".into()));
        assert_eq!(v[6], ("qop".into(), "auth".into()));
        assert_eq!(v[8], ("nc".into(), "00000001".into()));
        // Spaces around '=', empty elements, trailing comma, mixed case names.
        let v = names_values(r#" Username = "u" ,, NONCE=abc/=+ , "#);
        assert_eq!(
            v,
            vec![("username".into(), "u".into()), ("nonce".into(), "abc/=+".into())]
        );
        // Escapes inside quotes.
        let v = names_values(r#"realm="a \"b\" \\ c""#);
        assert_eq!(v[0].1, r#"a "b" \ c"#);
    }

    #[test]
    fn hostile_lists_are_errors() {
        assert_eq!(parse_params("a=1, a=2"), Err(HeaderError::DuplicateParam("a".into())));
        assert_eq!(
            parse_params("uri=x, URI=y"),
            Err(HeaderError::DuplicateParam("uri".into()))
        );
        assert_eq!(parse_params(r#"a="unterminated"#), Err(HeaderError::UnclosedQuote));
        assert_eq!(parse_params(r#"a="x\"#), Err(HeaderError::UnclosedQuote));
        assert!(matches!(parse_params("a"), Err(HeaderError::Malformed(_))));
        assert!(matches!(parse_params("a="), Err(HeaderError::Malformed(_))));
        assert!(matches!(parse_params("=b"), Err(HeaderError::Malformed(_))));
        assert!(matches!(parse_params(r#"a="x"y, b=1"#), Err(HeaderError::Malformed(_))));
        assert!(matches!(parse_params(r#"a=x"y""#), Err(HeaderError::Malformed(_))));
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert_eq!(parse_params(&many.join(",")), Err(HeaderError::TooManyParams));
    }

    #[test]
    fn quoted_output_round_trips() {
        let q = quoted_param("realm", r#"a"b\c"#);
        assert_eq!(q, r#"realm="a\"b\\c""#);
        assert_eq!(names_values(&q), vec![("realm".into(), r#"a"b\c"#.into())]);
    }
}
