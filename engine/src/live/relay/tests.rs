//! The play client against a scripted origin: every request it writes is
//! parsed back and checked, and the answers are what real servers send.

use super::*;
use proto::rtsp::message::{self, Limits, Message, Request};

/// What this server's DESCRIBE of a live path gives.
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\na=control:*\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=control:trackID=2\r\n";

fn one(p: &mut Player) -> Request {
    let bytes = p.take_output();
    let (msg, used) = message::parse(&bytes, &Limits::default()).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "one request");
    match msg {
        Message::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn answer(p: &mut Player, req: &Request, status: u16, headers: &[(&str, &str)], body: &str) {
    let mut resp = Response::new(status, req.cseq());
    for (n, v) in headers {
        resp = resp.header(n, *v);
    }
    if !body.is_empty() {
        resp = resp.body("application/sdp", body.as_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    resp.write_to(&mut bytes);
    p.handle_input(0, &bytes);
}

fn events(p: &mut Player) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

#[test]
fn plays_a_live_path_with_digest_over_tcp() {
    let url = parse_url("rtsp://u:pw@h:8554/live/cam").unwrap();
    let mut p = Player::new(url, 7, 0);
    let opt = one(&mut p);
    assert_eq!(opt.method, Method::Options);
    answer(
        &mut p,
        &opt,
        401,
        &[("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\", qop=\"auth\"")],
        "",
    );
    let opt = one(&mut p);
    assert!(
        opt.headers
            .get("Authorization")
            .is_some_and(|a| a.starts_with("Digest ")),
        "the same request, signed: {opt:?}"
    );
    answer(&mut p, &opt, 200, &[], "");
    let describe = one(&mut p);
    assert_eq!(describe.method, Method::Describe);
    assert_eq!(describe.headers.get("Accept"), Some("application/sdp"));
    assert!(describe.headers.get("Authorization").is_some(), "signed too");
    answer(
        &mut p,
        &describe,
        200,
        &[("Content-Base", "rtsp://h:8554/live/cam/")],
        SDP,
    );
    let Event::Described { sdp, base, .. } = events(&mut p).remove(0) else {
        panic!("described")
    };
    assert_eq!(
        (sdp.as_slice(), base.as_str()),
        (SDP.as_bytes(), "rtsp://h:8554/live/cam/")
    );
    assert!(p.take_output().is_empty(), "nothing before the driver says how");
    p.set_up(
        vec![
            (resolve(&base, "trackID=1"), Carriage::Tcp),
            (resolve(&base, "trackID=2"), Carriage::Tcp),
        ],
        0,
    );
    let s0 = one(&mut p);
    assert_eq!(s0.uri, "rtsp://h:8554/live/cam/trackID=1");
    assert_eq!(s0.headers.get("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=0-1"));
    answer(
        &mut p,
        &s0,
        200,
        &[
            ("Session", "ABC;timeout=60"),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"),
        ],
        "",
    );
    let s1 = one(&mut p);
    assert_eq!(s1.headers.get("Session"), Some("ABC"));
    // GStreamer's server leaves the channels out: the ones asked for hold.
    answer(
        &mut p,
        &s1,
        200,
        &[("Session", "ABC"), ("Transport", "RTP/AVP/TCP;unicast")],
        "",
    );
    let play = one(&mut p);
    assert_eq!(play.method, Method::Play);
    assert_eq!(
        play.uri, "rtsp://h:8554/live/cam/",
        "the aggregate control `*` is the base"
    );
    assert_eq!(play.headers.get("Range"), Some("npt=0.000-"));
    answer(&mut p, &play, 200, &[("Session", "ABC")], "");
    assert_eq!(
        events(&mut p),
        [Event::Playing {
            tracks: vec![
                Negotiated::Tcp { channels: (0, 1) },
                Negotiated::Tcp { channels: (2, 3) }
            ]
        }]
    );
    // Media and RTCP interleaved, never taken for a response.
    p.handle_input(0, b"$\x00\x00\x03abc$\x03\x00\x01z");
    assert_eq!(
        events(&mut p),
        [
            Event::Interleaved {
                channel: 0,
                data: b"abc".to_vec()
            },
            Event::Interleaved {
                channel: 3,
                data: b"z".to_vec()
            },
        ]
    );
    // Kept alive at half the timeout, with GET_PARAMETER, then OPTIONS if
    // that is unknown there.
    assert_eq!(p.poll_timeout(), Some(30 * NS_PER_SEC));
    p.handle_timeout(30 * NS_PER_SEC);
    let ka = one(&mut p);
    assert_eq!(
        (ka.method.clone(), ka.headers.get("Session")),
        (Method::GetParameter, Some("ABC"))
    );
    answer(&mut p, &ka, 501, &[], "");
    assert!(events(&mut p).is_empty(), "a refused keep-alive ends nothing");
    p.handle_timeout(61 * NS_PER_SEC);
    assert_eq!(one(&mut p).method, Method::Options);
    p.teardown(62 * NS_PER_SEC);
    let td = one(&mut p);
    assert_eq!(
        (td.method.clone(), td.uri.as_str()),
        (Method::Teardown, "rtsp://h:8554/live/cam/")
    );
    answer(&mut p, &td, 200, &[], "");
    assert_eq!(events(&mut p), [Event::Closed]);
}

#[test]
fn udp_streams_and_refusals() {
    let mut p = Player::new(parse_url("rtsp://h/movie.mp4").unwrap(), 1, 0);
    let opt = one(&mut p);
    answer(&mut p, &opt, 501, &[], "");
    let describe = one(&mut p);
    answer(&mut p, &describe, 200, &[], SDP);
    let Event::Described { base, .. } = events(&mut p).remove(0) else {
        panic!("described")
    };
    assert_eq!(base, "rtsp://h/movie.mp4", "no Content-Base: the URL");
    p.set_up(
        vec![(
            resolve(&base, "trackID=1"),
            Carriage::Udp {
                client_port: (6000, 6001),
            },
        )],
        0,
    );
    let s0 = one(&mut p);
    assert_eq!(
        s0.headers.get("Transport"),
        Some("RTP/AVP;unicast;client_port=6000-6001")
    );
    answer(
        &mut p,
        &s0,
        200,
        &[("Session", "1"), ("Transport", "RTP/AVP/TCP;interleaved=0-1")],
        "",
    );
    assert!(
        matches!(&events(&mut p)[..], [Event::Failed(RelayError::BadTransport { .. })]),
        "TCP where UDP was asked for"
    );

    let mut p = Player::new(parse_url("rtsp://h/nothing").unwrap(), 1, 0);
    let opt = one(&mut p);
    answer(&mut p, &opt, 200, &[], "");
    let describe = one(&mut p);
    answer(&mut p, &describe, 404, &[], "");
    let e = events(&mut p);
    let [Event::Failed(e)] = &e[..] else { panic!("{e:?}") };
    assert_eq!(e.status(), 404, "a viewer waiting is told the origin's 404");
    assert_eq!(p.poll_timeout(), None);

    let mut p = Player::new(parse_url("rtsp://h/slow").unwrap(), 1, 0);
    let _ = one(&mut p);
    p.handle_timeout(REPLY_TIMEOUT);
    let e = events(&mut p);
    let [Event::Failed(e)] = &e[..] else { panic!("{e:?}") };
    assert_eq!(e.status(), 504);
}

#[test]
fn relay_flags_and_backoff() {
    let r: Relay = "/r/cam=rtsp://u:p@10.0.0.1:8554/live/cam udp always".parse().unwrap();
    assert_eq!(r.path, "/r/cam");
    assert_eq!((r.transport, r.mode), (RelayTransport::Udp, Mode::Always));
    assert_eq!(r.url.user(), Some("u"));
    let d: Relay = "/movie=rtsp://h/a.mp4".parse().unwrap();
    assert_eq!((d.transport, d.mode), (RelayTransport::Tcp, Mode::OnDemand));
    assert!("cam=rtsp://h/x".parse::<Relay>().is_err(), "a path starts with /");
    assert!("/cam=http://h/x".parse::<Relay>().is_err(), "rtsp:// only");
    assert!("/cam=rtsp://h/x sometimes".parse::<Relay>().is_err());
    assert_eq!(backoff(0), BACKOFF_MIN);
    assert_eq!(backoff(1), 2 * BACKOFF_MIN);
    assert_eq!(backoff(40), BACKOFF_MAX);
}
