//! The publisher against a scripted server: every request it writes is
//! parsed back and checked, and the answers are what real servers send.

use super::*;
use crate::access::basic;
use crate::access::digest::{self, Algorithm, Hash};
use proto::rtsp::message::{self, Limits, Message, Request};

const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=tv\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=control:trackID=2\r\n";

fn url(s: &str) -> RtspUrl {
    RtspUrl::parse(s).unwrap()
}

/// The requests in `bytes`, in order.
fn requests(bytes: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (msg, used) = message::parse(&bytes[at..], &Limits::default()).unwrap().unwrap();
        at += used;
        match msg {
            Message::Request(r) => out.push(r),
            other => panic!("not a request: {other:?}"),
        }
    }
    out
}

/// The one request the publisher wrote since last asked.
fn one(p: &mut Publisher) -> Request {
    let mut r = requests(&p.take_output());
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn answer(p: &mut Publisher, now: Nanos, req: &Request, status: u16, headers: &[(&str, &str)]) {
    let mut resp = Response::new(status, req.cseq());
    for (n, v) in headers {
        resp = resp.header(n, *v);
    }
    let mut bytes = Vec::new();
    resp.write_to(&mut bytes);
    p.handle_input(now, &bytes);
}

fn events(p: &mut Publisher) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

#[test]
fn publishes_over_tcp_as_ffmpeg_does() {
    let mut p = Publisher::new(url("rtsp://h:8554/live/tv"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let opt = one(&mut p);
    assert_eq!(
        (opt.method.clone(), opt.uri.as_str()),
        (Method::Options, "rtsp://h:8554/live/tv")
    );
    assert_eq!(opt.cseq(), Some("1"));
    answer(
        &mut p,
        1,
        &opt,
        200,
        &[("Public", "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN")],
    );
    let ann = one(&mut p);
    assert_eq!(ann.method, Method::Announce);
    assert_eq!(ann.headers.get("Content-Type"), Some("application/sdp"));
    assert_eq!(ann.body, SDP.as_bytes());
    answer(&mut p, 2, &ann, 200, &[]);
    let s1 = one(&mut p);
    assert_eq!(s1.method, Method::Setup);
    assert_eq!(s1.uri, "rtsp://h:8554/live/tv/trackID=1");
    assert_eq!(
        s1.headers.get("Transport"),
        Some("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
    );
    assert_eq!(s1.headers.get("Session"), None);
    // GStreamer's answer: the session with its timeout, no interleaved=.
    answer(
        &mut p,
        3,
        &s1,
        200,
        &[
            ("Session", "AbCd;timeout=20"),
            ("Transport", "RTP/AVP/TCP;unicast;mode=RECORD"),
        ],
    );
    let s2 = one(&mut p);
    assert_eq!(s2.uri, "rtsp://h:8554/live/tv/trackID=2");
    assert_eq!(s2.headers.get("Session"), Some("AbCd"));
    assert_eq!(
        s2.headers.get("Transport"),
        Some("RTP/AVP/TCP;unicast;interleaved=2-3;mode=record")
    );
    answer(
        &mut p,
        4,
        &s2,
        200,
        &[
            ("Session", "AbCd"),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=6-7;mode=record"),
        ],
    );
    let rec = one(&mut p);
    assert_eq!(rec.method, Method::Record);
    assert_eq!(rec.headers.get("Range"), Some("npt=0.000-"));
    assert!(!p.is_recording());
    answer(&mut p, 5, &rec, 200, &[("Session", "AbCd")]);
    assert!(p.is_recording());
    assert_eq!(
        events(&mut p),
        [Event::Recording {
            tracks: vec![
                Negotiated::Tcp { channels: (0, 1) },
                Negotiated::Tcp { channels: (6, 7) }
            ]
        }]
    );
    // CSeq counts up, one a request.
    let cseqs: Vec<_> = [&opt, &ann, &s1, &s2, &rec]
        .iter()
        .map(|r| r.cseq().unwrap().to_owned())
        .collect();
    assert_eq!(cseqs, ["1", "2", "3", "4", "5"]);

    // Keep-alive at half the 20 s timeout after the last request (RECORD,
    // sent at 4), though the last answer gave no timeout.
    assert_eq!(p.poll_timeout(), Some(4 + 10 * NS_PER_SEC));
    p.handle_timeout(4 + 10 * NS_PER_SEC - 1);
    assert!(p.take_output().is_empty());
    p.handle_timeout(4 + 10 * NS_PER_SEC);
    let ka = one(&mut p);
    assert_eq!(
        (ka.method.clone(), ka.headers.get("Session")),
        (Method::Options, Some("AbCd"))
    );
    // RTCP from the server arrives before the answer, in the same read.
    let mut bytes = Vec::new();
    proto::interleaved::emit(&mut bytes, 7, &[&[0x81, 201, 0, 1, 1, 2, 3, 4]]).unwrap();
    Response::new(200, ka.cseq()).write_to(&mut bytes);
    p.handle_input(6, &bytes[..5]);
    p.handle_input(6, &bytes[5..]);
    assert_eq!(
        events(&mut p),
        [Event::Interleaved {
            channel: 7,
            data: vec![0x81, 201, 0, 1, 1, 2, 3, 4]
        }]
    );
    assert!(p.is_recording());

    p.teardown(7);
    let td = one(&mut p);
    assert_eq!(
        (td.method.clone(), td.headers.get("Session")),
        (Method::Teardown, Some("AbCd"))
    );
    answer(&mut p, 8, &td, 200, &[]);
    assert_eq!(events(&mut p), [Event::Closed]);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn publishes_over_udp() {
    let carriage = vec![
        Carriage::Udp {
            client_port: (5000, 5001),
        },
        Carriage::Udp {
            client_port: (5002, 5003),
        },
    ];
    let mut p = Publisher::new(url("rtsp://h/a"), SDP, carriage, 1, 0).unwrap();
    let opt = one(&mut p);
    // A server without OPTIONS: go on.
    answer(&mut p, 0, &opt, 501, &[]);
    let ann = one(&mut p);
    answer(&mut p, 0, &ann, 200, &[]);
    let s1 = one(&mut p);
    assert_eq!(
        s1.headers.get("Transport"),
        Some("RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record")
    );
    answer(
        &mut p,
        0,
        &s1,
        200,
        &[
            ("Session", "42"),
            (
                "Transport",
                "RTP/AVP/UDP;unicast;client_port=5000-5001;server_port=6970-6971;mode=record",
            ),
        ],
    );
    let s2 = one(&mut p);
    answer(
        &mut p,
        0,
        &s2,
        200,
        &[
            ("Session", "42"),
            (
                "Transport",
                "RTP/AVP;unicast;client_port=5002-5003;server_port=6972-6973",
            ),
        ],
    );
    let rec = one(&mut p);
    answer(&mut p, 0, &rec, 200, &[]);
    assert_eq!(
        events(&mut p),
        [Event::Recording {
            tracks: vec![
                Negotiated::Udp {
                    server_port: (6970, 6971)
                },
                Negotiated::Udp {
                    server_port: (6972, 6973)
                }
            ]
        }]
    );
    // No Session timeout given: RFC 2326's 60 s, so a keep-alive at 30 s.
    assert_eq!(p.poll_timeout(), Some(30 * NS_PER_SEC));
}

#[test]
fn a_setup_answer_without_server_ports_fails_clearly() {
    let mut p = Publisher::new(
        url("rtsp://h/a"),
        SDP,
        vec![
            Carriage::Udp {
                client_port: (5000, 5001)
            };
            2
        ],
        1,
        0,
    )
    .unwrap();
    let opt = one(&mut p);
    answer(&mut p, 0, &opt, 200, &[]);
    let ann = one(&mut p);
    answer(&mut p, 0, &ann, 200, &[]);
    let s1 = one(&mut p);
    answer(
        &mut p,
        0,
        &s1,
        200,
        &[("Session", "1"), ("Transport", "RTP/AVP;unicast")],
    );
    let e = events(&mut p);
    assert!(
        matches!(&e[..], [Event::Failed(PublishError::BadTransport { uri, why })] if uri == "rtsp://h/a/trackID=1" && why.contains("server_port")),
        "{e:?}"
    );
}

#[test]
fn refusals_and_silence_end_the_publish() {
    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let opt = one(&mut p);
    answer(&mut p, 0, &opt, 200, &[]);
    let ann = one(&mut p);
    answer(&mut p, 0, &ann, 403, &[]);
    let e = events(&mut p);
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].clone(),
        Event::Failed(PublishError::Refused {
            method: "ANNOUNCE".into(),
            status: Status::from(403)
        })
    );
    assert_eq!(
        match &e[0] {
            Event::Failed(f) => f.to_string(),
            _ => unreachable!(),
        },
        "the server answered ANNOUNCE with 403 Forbidden"
    );

    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let _ = one(&mut p);
    assert_eq!(p.poll_timeout(), Some(REPLY_TIMEOUT));
    p.handle_timeout(REPLY_TIMEOUT);
    assert_eq!(
        events(&mut p),
        [Event::Failed(PublishError::NoReply {
            method: "OPTIONS".into(),
            secs: 10
        })]
    );
}

#[test]
fn garbage_from_the_server_fails_without_a_panic() {
    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let _ = one(&mut p);
    p.handle_input(0, b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n");
    let e = events(&mut p);
    assert!(matches!(&e[..], [Event::Failed(PublishError::Garbled(_))]), "{e:?}");
    p.handle_input(0, b"more");
    assert!(events(&mut p).is_empty());
}

#[test]
fn the_sdp_must_match_the_transports() {
    let e = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp], 1, 0).unwrap_err();
    assert!(e.to_string().contains("2 media sections and 1 transports"), "{e}");
    let e = Publisher::new(url("rtsp://h/a"), "x=1", vec![], 1, 0).unwrap_err();
    assert!(matches!(e, PublishError::BadSdp(_)), "{e}");
}

/// Runs OPTIONS against a server that challenges with `challenges`, and
/// returns the retried request.
fn challenged(user_url: &str, challenges: &[&str]) -> (Publisher, Request, Request) {
    let mut p = Publisher::new(url(user_url), SDP, vec![Carriage::Tcp; 2], 7, 0).unwrap();
    let opt = one(&mut p);
    assert_eq!(
        opt.headers.get("Authorization"),
        None,
        "no credentials before a challenge"
    );
    let headers: Vec<(&str, &str)> = challenges.iter().map(|c| ("WWW-Authenticate", *c)).collect();
    answer(&mut p, 0, &opt, 401, &headers);
    let retry = one(&mut p);
    (p, opt, retry)
}

#[test]
fn digest_with_qop_as_rfc_7616_says() {
    let (mut p, opt, retry) = challenged(
        "rtsp://Mufasa:Circle%20Of%20Life@h/a",
        &[
            "Basic realm=\"x\"",
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        ],
    );
    assert_eq!(retry.method, Method::Options);
    assert_ne!(retry.cseq(), opt.cseq(), "a new CSeq for the retry");
    let auth = retry.headers.get("Authorization").unwrap();
    let parsed = digest::parse(auth).unwrap();
    assert_eq!(parsed.username, "Mufasa");
    assert_eq!(parsed.uri, "rtsp://h/a");
    assert_eq!(parsed.algorithm, Algorithm::Md5);
    assert_eq!(parsed.opaque.as_deref(), Some("5ccc069c403ebaf9f0171e9517f40e41"));
    assert_eq!(parsed.qop.as_ref().unwrap().text, "00000001");
    let ha1 = digest::ha1(Hash::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
    assert!(parsed.proves("OPTIONS", &ha1), "{auth}");
    // RFC 2617 section 3.5's own example, for this client's arithmetic:
    // the same fields with the RFC's cnonce give the RFC's response.
    let mut rfc = parsed.clone();
    rfc.uri = "/dir/index.html".into();
    rfc.cnonce = Some("0a4f113b".into());
    assert_eq!(rfc.expected("GET", &ha1), "6629fae49393a05397450978507c4ef1");

    // The next request carries credentials unasked, nonce count 2, and a
    // fresh cnonce.
    answer(&mut p, 0, &retry, 200, &[]);
    let ann = one(&mut p);
    let next = digest::parse(ann.headers.get("Authorization").unwrap()).unwrap();
    assert_eq!(next.qop.as_ref().unwrap().value, 2);
    assert_ne!(next.cnonce, parsed.cnonce);
    assert!(next.proves("ANNOUNCE", &ha1));
}

#[test]
fn digest_without_qop_as_gstreamer_asks() {
    let (_, _, retry) = challenged(
        "rtsp://user:pass@h/a",
        &["Digest realm=\"GStreamer RTSP Server\", nonce=\"0123abcd\""],
    );
    let auth = retry.headers.get("Authorization").unwrap();
    assert!(!auth.contains("qop") && !auth.contains("cnonce"), "{auth}");
    let parsed = digest::parse(auth).unwrap();
    assert!(parsed.qop.is_none());
    let ha1 = digest::ha1(Hash::Md5, "user", "GStreamer RTSP Server", "pass");
    assert!(parsed.proves("OPTIONS", &ha1));
}

#[test]
fn digest_sha256_is_answered_and_unknown_algorithms_skipped() {
    let (_, _, retry) = challenged(
        "rtsp://u:p@h/a",
        &[
            "Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-512-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"",
        ],
    );
    let parsed = digest::parse(retry.headers.get("Authorization").unwrap()).unwrap();
    assert_eq!(parsed.algorithm, Algorithm::Sha256);
    assert!(parsed.proves("OPTIONS", &digest::ha1(Hash::Sha256, "u", "r", "p")));
}

#[test]
fn basic_when_that_is_all_the_server_offers() {
    let (_, _, retry) = challenged("rtsp://us%3Aer:p%40ss@h/a", &["Basic realm=\"cam\""]);
    assert_eq!(
        retry.headers.get("Authorization"),
        Some(basic::authorization("us:er", "p@ss").as_str())
    );
    // "us:er:p@ss" in base64, by hand.
    assert_eq!(retry.headers.get("Authorization"), Some("Basic dXM6ZXI6cEBzcw=="));
}

#[test]
fn wrong_credentials_and_none_are_told_apart() {
    let (mut p, _, retry) = challenged("rtsp://u:wrong@h/a", &["Digest realm=\"r\", nonce=\"n\""]);
    answer(
        &mut p,
        0,
        &retry,
        401,
        &[("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\"")],
    );
    assert_eq!(
        events(&mut p),
        [Event::Failed(PublishError::BadCredentials {
            method: "OPTIONS".into()
        })]
    );

    // A stale nonce is answered again, once more.
    let (mut p, _, retry) = challenged("rtsp://u:p@h/a", &["Digest realm=\"r\", nonce=\"n\""]);
    answer(
        &mut p,
        0,
        &retry,
        401,
        &[("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n2\", stale=true")],
    );
    let again = one(&mut p);
    assert!(
        digest::parse(again.headers.get("Authorization").unwrap())
            .unwrap()
            .nonce
            == "n2"
    );
    assert!(events(&mut p).is_empty());

    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let opt = one(&mut p);
    answer(&mut p, 0, &opt, 401, &[("WWW-Authenticate", "Basic realm=\"r\"")]);
    assert_eq!(events(&mut p), [Event::Failed(PublishError::NoCredentials)]);

    let (mut p, _, _) = (
        Publisher::new(url("rtsp://u:p@h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap(),
        (),
        (),
    );
    let opt = one(&mut p);
    answer(&mut p, 0, &opt, 401, &[("WWW-Authenticate", "Negotiate abc")]);
    let e = events(&mut p);
    assert!(
        matches!(&e[..], [Event::Failed(PublishError::UnknownChallenge(c))] if c == "Negotiate abc"),
        "{e:?}"
    );
}

#[test]
fn a_server_request_is_answered_501() {
    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let _ = one(&mut p);
    p.handle_input(0, b"GET_PARAMETER rtsp://h/a RTSP/1.0\r\nCSeq: 9\r\n\r\n");
    let out = p.take_output();
    let (msg, _) = message::parse(&out, &Limits::default()).unwrap().unwrap();
    match msg {
        Message::Response(r) => {
            assert_eq!(r.status, Status::NOT_IMPLEMENTED);
            assert_eq!(r.headers.get("CSeq"), Some("9"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn teardown_before_a_session_closes_at_once_and_a_silent_server_is_not_waited_for() {
    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let _ = one(&mut p);
    p.teardown(1);
    assert_eq!(events(&mut p), [Event::Closed]);
    assert!(p.take_output().is_empty());

    let mut p = Publisher::new(url("rtsp://h/a"), SDP, vec![Carriage::Tcp; 2], 1, 0).unwrap();
    let opt = one(&mut p);
    answer(&mut p, 0, &opt, 200, &[]);
    let ann = one(&mut p);
    answer(&mut p, 0, &ann, 200, &[("Session", "s")]);
    let _setup = one(&mut p);
    p.teardown(100);
    assert_eq!(one(&mut p).method, Method::Teardown);
    assert_eq!(p.poll_timeout(), Some(100 + TEARDOWN_TIMEOUT));
    p.handle_timeout(100 + TEARDOWN_TIMEOUT);
    assert_eq!(events(&mut p), [Event::Closed]);
}
