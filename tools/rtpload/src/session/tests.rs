//! The session against scripted servers, on a fake clock.

use super::*;
use crate::metrics::Metric;

const MS: Nanos = 1_000_000;
const PEER: &str = "127.0.0.1:8554";

/// An RTP packet with the given header fields and `payload` zero bytes.
fn packet(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, payload: usize) -> Vec<u8> {
    let header = rtp::Header {
        marker: false,
        payload_type,
        sequence,
        timestamp,
        ssrc,
    };
    let mut p = header.to_bytes().to_vec();
    p.resize(p.len() + payload, 0);
    p
}

fn settings(lower: Lower, duration_s: u64) -> Arc<Settings> {
    Arc::new(Settings {
        lower,
        tunnel: false,
        duration: duration_s * SEC,
        rtsp_timeout: 5 * SEC,
        media_timeout: 4 * SEC,
        buffered: Some(2 * SEC),
        dynamic_rate: false,
        speed: None,
        overbuffer_window: None,
        user_agent: "rtpload-test".into(),
        limits: Limits::default(),
        repair: None,
    })
}

/// A session and what it has done, with a clock that only moves when told.
struct Script {
    s: Session,
    rec: Histograms,
    now: Nanos,
}

/// What the session wrote: requests, and interleaved frames.
#[derive(Default)]
struct Written {
    requests: Vec<Request>,
    frames: Vec<(u8, Vec<u8>)>,
    responses: Vec<Response>,
}

impl Script {
    fn new(lower: Lower, duration_s: u64, url: &str) -> Script {
        let ports = (lower == Lower::Udp).then_some((30_000, 30_001));
        let url = Arc::new(RtspUrl::parse(url).unwrap());
        Script {
            s: Session::new(7, url, settings(lower, duration_s), ports, 42, 1_000 * MS),
            rec: Histograms::default(),
            now: 1_000 * MS,
        }
    }

    fn connect(&mut self) {
        self.s.on_connected(PEER.parse().unwrap(), self.now);
    }

    fn written(&mut self) -> Written {
        let out = std::mem::take(self.s.output());
        let mut w = Written::default();
        let mut at = 0;
        while at < out.len() {
            if out[at] == b'$' {
                let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
                w.frames.push((out[at + 1], out[at + 4..at + 4 + len].to_vec()));
                at += 4 + len;
                continue;
            }
            let (msg, used) = message::parse(&out[at..], &Limits::default()).unwrap().unwrap();
            match msg {
                Message::Request(r) => w.requests.push(r),
                Message::Response(r) => w.responses.push(r),
                Message::Interleaved { .. } => unreachable!(),
            }
            at += used;
        }
        w
    }

    /// The one request the session should have written by now.
    fn request(&mut self) -> Request {
        let mut w = self.written();
        assert_eq!(w.requests.len(), 1, "expected one request, got {:?}", w.requests);
        w.requests.remove(0)
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.s.on_rtsp_data(bytes, self.now, &mut self.rec);
    }

    /// Answers `req` with `status`, the headers, and an optional body.
    fn reply(&mut self, req: &Request, status: u16, headers: &[(&str, &str)], body: &str) {
        let mut r = Response::new(status, req.cseq());
        for (n, v) in headers {
            r = r.header(n, *v);
        }
        if !body.is_empty() {
            r = r.body("application/sdp", body.as_bytes().to_vec());
        }
        let mut bytes = Vec::new();
        r.write_to(&mut bytes);
        self.feed(&bytes);
    }

    /// Moves the clock, firing every deadline on the way.
    fn advance(&mut self, by: Nanos) {
        let until = self.now + by;
        while let Some(t) = self.s.poll_timeout().filter(|&t| t <= until) {
            self.now = self.now.max(t);
            self.s.on_timeout(self.now);
        }
        self.now = until;
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    fn rtcp(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some((to, bytes)) = self.s.poll_rtcp() {
            v.push((to, bytes.to_vec()));
        }
        v
    }

    fn rtp(&mut self, stream: u32, pt: u8, seq: u16, ts: u32, ssrc: u32) -> bool {
        let p = packet(pt, seq, ts, ssrc, 188);
        let h = rtp::Header::parse(&rtp::Packet::new_unchecked(&p)).unwrap();
        self.s.on_rtp(stream, &h, &p, self.now, &mut self.rec)
    }

    /// An RTP packet with `payload`, for stream `stream`.
    fn rtp_with(&mut self, stream: u32, pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> bool {
        let mut p = packet(pt, seq, 0, ssrc, 0);
        p.extend_from_slice(payload);
        let h = rtp::Header::parse(&rtp::Packet::new_unchecked(&p)).unwrap();
        self.s.on_rtp(stream, &h, &p, self.now, &mut self.rec)
    }

    fn failure(&self) -> SessionError {
        match self.s.outcome() {
            Some(Outcome::Failed(e)) => e.clone(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\na=range:npt=0-10.000\r\n\
    m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=3\r\n\
    m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=control:trackID=4\r\n";

const BASE: &str = "rtsp://127.0.0.1:8554/movie.mp4/";

/// Describe and set up both tracks as `streamalot serve` answers (UDP).
fn set_up_udp(sc: &mut Script, ssrcs: [Option<&str>; 2]) {
    sc.connect();
    let d = sc.request();
    assert_eq!(
        (d.method.clone(), d.uri.as_str()),
        (Method::Describe, "rtsp://127.0.0.1:8554/movie.mp4")
    );
    assert_eq!(d.headers.get("Accept"), Some("application/sdp"));
    assert_eq!(d.headers.get("User-Agent"), Some("rtpload-test"));
    sc.reply(&d, 200, &[("Content-Base", BASE)], SDP);
    for (i, track) in [3, 4].into_iter().enumerate() {
        let r = sc.request();
        assert_eq!(r.method, Method::Setup);
        assert_eq!(r.uri, format!("{BASE}trackID={track}"));
        assert_eq!(
            r.headers.get("Transport"),
            Some("RTP/AVP;unicast;client_port=30000-30001")
        );
        assert_eq!(r.headers.get("Session"), (i > 0).then_some("ABCD"));
        let transport = match ssrcs[i] {
            Some(ssrc) => format!("RTP/AVP;unicast;client_port=30000-30001;server_port=6970-6971;ssrc={ssrc}"),
            None => "RTP/AVP;unicast;client_port=30000-30001;server_port=6970-6971".to_owned(),
        };
        sc.reply(
            &r,
            200,
            &[("Session", "ABCD;timeout=60"), ("Transport", &transport)],
            "",
        );
    }
    assert_eq!(sc.events(), [Event::Ready]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Payloads of libx264 as ffmpeg packetizes them: a STAP-A of SPS and PPS,
/// a P slice, and the FU-A start of an IDR slice (cut short).
fn h264_payloads() -> [Vec<u8>; 3] {
    [
        hex("18001867f4000a91964189b011000003000100000300140f122648000668ebc3c44844"),
        hex("419a3b115f26eb82922312f2b4c1a964"),
        hex("7c85888411ffe4122b50fffe11b01a0d"),
    ]
}

#[test]
fn the_first_key_frame_is_timed_from_the_play_answer() {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("AAAA"), Some("BBBB")]);
    let [params, p_slice, idr] = h264_payloads();
    sc.s.play(sc.now);
    let play = sc.request();
    // A live stream joined mid-GOP: a P slice before the answer, then
    // parameter sets, audio (all key frames, but not pictures), the IDR.
    sc.now += 2 * MS;
    assert!(sc.rtp_with(0, 96, 10, 0xaaaa, &p_slice));
    sc.now += 3 * MS;
    sc.reply(&play, 200, &[("Session", "ABCD")], "");
    sc.now += 5 * MS;
    sc.rtp_with(0, 96, 11, 0xaaaa, &params);
    sc.rtp_with(1, 97, 1, 0xbbbb, &[0, 16, 1, 2]);
    assert!(sc.rec.get(Metric::FirstKeyFrame).is_empty());
    sc.now += 20 * MS;
    sc.rtp_with(0, 96, 12, 0xaaaa, &idr);
    let key = sc.rec.get(Metric::FirstKeyFrame);
    assert_eq!(key.len(), 1);
    assert!(key.equivalent(key.max(), 25_000), "25 ms from the answer to the IDR");
    assert_eq!(sc.s.first_key_frame(), Some(25 * MS));
    // Later key frames are not first ones.
    sc.now += 100 * MS;
    sc.rtp_with(0, 96, 13, 0xaaaa, &idr);
    assert_eq!(sc.rec.get(Metric::FirstKeyFrame).len(), 1);
}

#[test]
fn a_key_frame_before_the_play_answer_counts_as_none_waited_for() {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("AAAA"), Some("BBBB")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.now += 2 * MS;
    sc.rtp_with(0, 96, 10, 0xaaaa, &h264_payloads()[2]);
    assert!(sc.rec.get(Metric::FirstKeyFrame).is_empty(), "not until the answer");
    sc.now += 3 * MS;
    sc.reply(&play, 200, &[("Session", "ABCD")], "");
    let key = sc.rec.get(Metric::FirstKeyFrame);
    assert_eq!((key.len(), key.max()), (1, 0));
    assert_eq!(sc.s.first_key_frame(), Some(0));
}

#[test]
fn audio_alone_has_no_key_frame_to_wait_for() {
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=control:trackID=1\r\n";
    let mut sc = Script::new(Lower::Tcp, 10, "rtsp://127.0.0.1:8554/a.mp4");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[("Content-Base", "rtsp://127.0.0.1:8554/a.mp4/")], sdp);
    let setup = sc.request();
    sc.reply(
        &setup,
        200,
        &[("Session", "S1"), ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        "",
    );
    assert_eq!(sc.events(), [Event::Ready]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "S1")], "");
    let mut frame = Vec::new();
    let p = packet(97, 1, 0, 0x1234, 20);
    interleaved::emit(&mut frame, 0, &[&p]).unwrap();
    sc.feed(&frame);
    assert_eq!(sc.rec.get(Metric::FirstPacket).len(), 1);
    assert!(sc.rec.get(Metric::FirstKeyFrame).is_empty());
    assert_eq!(sc.s.first_key_frame(), None);
}

#[test]
fn udp_session_from_describe_to_teardown() {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://127.0.0.1:8554/movie.mp4");
    assert_eq!(sc.s.poll_timeout(), Some(1_000 * MS + 5 * SEC), "the connect timeout");
    set_up_udp(&mut sc, [Some("0000AAAA"), Some("BBBB")]);
    let routes: Vec<UdpStream> = sc.s.udp_streams().collect();
    assert_eq!(
        routes,
        [
            UdpStream {
                stream: 0,
                ssrc: Some(0xaaaa),
                source: "127.0.0.1".parse().unwrap(),
                rtp_port: Some(6970),
                payload_type: 96,
                rtx_payload_type: None,
            },
            UdpStream {
                stream: 1,
                ssrc: Some(0xbbbb),
                source: "127.0.0.1".parse().unwrap(),
                rtp_port: Some(6970),
                payload_type: 97,
                rtx_payload_type: None,
            }
        ]
    );

    sc.now += 3 * MS;
    sc.s.play(sc.now);
    let play = sc.request();
    assert_eq!((play.method.clone(), play.uri.as_str()), (Method::Play, BASE));
    assert_eq!(play.headers.get("Range"), Some("npt=0.000-"));
    assert_eq!(play.headers.get("Session"), Some("ABCD"));
    // Media can beat the PLAY answer: it counts, and times the first packet.
    sc.now += 7 * MS;
    assert!(sc.rtp(0, 96, 1001, 0, 0xaaaa));
    sc.reply(
        &play,
        200,
        &[
            ("Session", "ABCD"),
            ("Range", "npt=0.000-10.000"),
            (
                "RTP-Info",
                &format!("url={BASE}trackID=3;seq=1000;rtptime=0,url={BASE}trackID=4;seq=500;rtptime=0"),
            ),
        ],
        "",
    );
    let first = sc.rec.get(Metric::FirstPacket);
    assert_eq!(first.len(), 1);
    assert!(
        first.equivalent(first.max(), 7_000),
        "7 ms from PLAY to the first packet"
    );
    assert_eq!(sc.s.first_packet(), Some(7 * MS));
    // 40 ms of video and audio.
    for i in 1..40u16 {
        sc.now += MS;
        sc.rtp(0, 96, 1001 + i, u32::from(i) * 90, 0xaaaa);
        sc.rtp(1, 97, 500 + i, u32::from(i) * 44, 0xbbbb);
    }
    let t = sc.s.totals();
    assert_eq!(t.packets, 40 + 39);
    // RTP-Info said video starts at 1000 (which never came) and audio at
    // 500 (which did not come either).
    assert_eq!((t.expected, t.lost), (41 + 40, 2));

    // The first receiver report comes within 1.25-3.75 s.
    sc.advance(3_750 * MS);
    let rtcp = sc.rtcp();
    assert_eq!(rtcp.len(), 1, "one compound for the one server RTCP port");
    assert_eq!(rtcp[0].0, "127.0.0.1:6971".parse().unwrap());
    let packets: Vec<RtcpPacket> = rtcp::parse_compound(&rtcp[0].1).unwrap().collect();
    let RtcpPacket::ReceiverReport { ssrc, reports } = &packets[0] else {
        panic!("{packets:?}")
    };
    assert_eq!(*ssrc, sc.s.ssrc());
    let blocks: Vec<ReportBlock> = reports.clone().collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        (blocks[0].ssrc, blocks[0].highest_seq, blocks[0].cumulative_lost),
        (0xaaaa, 1040, 1)
    );
    assert_eq!(
        (blocks[1].ssrc, blocks[1].highest_seq, blocks[1].cumulative_lost),
        (0xbbbb, 539, 1)
    );
    assert!(matches!(&packets[1], RtcpPacket::SourceDescription(_)));

    // Media keeps coming until the session's ten seconds are up.
    while sc.now < 11_000 * MS {
        sc.now += 100 * MS;
        sc.rtp(0, 96, 1100, 0, 0xaaaa);
        sc.advance(0);
        if sc.now < 11_000 * MS {
            assert!(sc.written().requests.is_empty());
            sc.rtcp();
        }
    }
    let teardown = sc.request();
    assert_eq!(
        (teardown.method.clone(), teardown.uri.as_str()),
        (Method::Teardown, BASE)
    );
    // RR, SDES and BYE go with it.
    let last = sc.rtcp();
    assert_eq!(last.len(), 1);
    assert!(rtcp::parse_compound(&last[0].1)
        .unwrap()
        .any(|p| matches!(p, RtcpPacket::Bye { .. })));
    sc.reply(&teardown, 200, &[("Session", "ABCD")], "");
    assert_eq!(sc.events(), [Event::Close]);
    assert_eq!(sc.s.outcome(), Some(&Outcome::Completed));
    assert!(!sc.s.is_finished(), "its streams linger");
    assert!(sc.rtp(0, 96, 1101, 0, 0xaaaa), "a straggler still counts");
    sc.advance(LINGER);
    assert_eq!(sc.events(), [Event::Retired { upto: 2 }]);
    assert!(sc.s.is_finished());
    assert!(!sc.rtp(0, 96, 1102, 0, 0xaaaa), "retired streams take nothing");
    assert_eq!(sc.s.plays(), 1);
    for (metric, n) in [
        (Metric::Describe, 1),
        (Metric::Setup, 2),
        (Metric::Play, 1),
        (Metric::Teardown, 1),
        (Metric::RtspResponse, 5),
    ] {
        assert_eq!(sc.rec.get(metric).len(), n, "{}", metric.name());
    }
}

#[test]
fn the_movie_ending_first_starts_it_again() {
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("AAAA"), Some("BBBB")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "ABCD"), ("Range", "npt=0.000-10.000")], "");
    sc.rtp(0, 96, 1, 0, 0xaaaa);
    sc.rtp(1, 97, 1, 0, 0xbbbb);
    // BYE for one stream is not the end; for both it is.
    let mut bye = Vec::new();
    rtcp::bye(&mut bye, &[0xaaaa], None);
    sc.s.on_rtcp(&bye, Some("127.0.0.1:6971".parse().unwrap()), sc.now)
        .unwrap();
    assert!(sc.written().requests.is_empty());
    bye.clear();
    rtcp::sender_report(&mut bye, 0xbbbb, 1 << 32, 0, 1, 100, &[]);
    rtcp::bye(&mut bye, &[0xbbbb], None);
    sc.s.on_rtcp(&bye, Some("127.0.0.1:6971".parse().unwrap()), sc.now)
        .unwrap();
    let teardown = sc.request();
    assert_eq!(teardown.method, Method::Teardown);
    assert_eq!(sc.rtcp().len(), 1, "RR, SDES, BYE");
    sc.reply(&teardown, 200, &[], "");
    // And again from the top, on the same connection.
    let d = sc.request();
    assert_eq!(d.method, Method::Describe);
    assert_eq!(sc.s.outcome(), None);
    sc.reply(&d, 200, &[("Content-Base", BASE)], SDP);
    let s1 = sc.request();
    assert_eq!(s1.headers.get("Session"), None, "a new server session");
    sc.reply(
        &s1,
        200,
        &[
            ("Session", "EF01"),
            ("Transport", "RTP/AVP;unicast;server_port=7000-7001;ssrc=CCCC"),
        ],
        "",
    );
    let s2 = sc.request();
    assert_eq!(s2.headers.get("Session"), Some("EF01"));
    sc.reply(
        &s2,
        200,
        &[
            ("Session", "EF01"),
            ("Transport", "RTP/AVP;unicast;server_port=7002-7003;ssrc=DDDD"),
        ],
        "",
    );
    assert_eq!(sc.events(), [Event::Ready]);
    let streams: Vec<u32> = sc.s.udp_streams().map(|u| u.stream).collect();
    assert_eq!(streams, [2, 3], "new streams, new global indices");
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "EF01")], "");
    assert_eq!(sc.s.plays(), 2);
    sc.rtp(2, 96, 9, 0, 0xcccc);
    assert_eq!(sc.rec.get(Metric::FirstPacket).len(), 2, "one per play");
    // The first play's streams retire after their linger.
    sc.advance(LINGER);
    assert_eq!(sc.events(), [Event::Retired { upto: 2 }]);
    assert_eq!(sc.s.totals().packets, 3);
    // Two server RTCP ports this time: one report each.
    sc.rtp(3, 97, 1, 0, 0xdddd);
    sc.advance(3_800 * MS);
    let mut to: Vec<SocketAddr> = sc.rtcp().into_iter().map(|r| r.0).collect();
    to.sort();
    assert_eq!(
        to,
        ["127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7003".parse().unwrap()]
    );
}

#[test]
fn a_range_that_runs_out_ends_the_movie_once_quiet() {
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("AAAA"), Some("BBBB")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "ABCD"), ("Range", "npt=0-2.5")], "");
    // Packets until 2.9 s: past the range, so the end waits for quiet.
    for i in 0..29u16 {
        sc.rtp(0, 96, i, 0, 0xaaaa);
        sc.advance(100 * MS);
    }
    assert!(sc.written().requests.is_empty());
    sc.advance(QUIET);
    let r = sc.request();
    assert_eq!(r.method, Method::Teardown);
}

#[test]
fn without_range_or_bye_the_sdp_range_ends_the_movie() {
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], "v=0\r\na=range:npt=0-1.5\r\nm=audio 0 RTP/AVP 0\r\n");
    let s = sc.request();
    sc.reply(&s, 200, &[("Session", "Q"), ("Transport", "RTP/AVP;ssrc=9")], "");
    sc.events();
    sc.s.play(sc.now);
    let play = sc.request();
    // No Range in the answer, and the server will send no BYE.
    sc.reply(&play, 200, &[("Session", "Q")], "");
    for i in 0..15u16 {
        sc.rtp(0, 0, i, u32::from(i) * 800, 9);
        sc.advance(100 * MS);
    }
    assert!(sc.written().requests.is_empty());
    sc.advance(QUIET);
    assert_eq!(sc.request().method, Method::Teardown, "over, not failed for silence");
    assert_eq!(sc.s.outcome(), None);
}

#[test]
fn tcp_session_reads_interleaved_frames() {
    let mut sc = Script::new(Lower::Tcp, 5, "rtsp://127.0.0.1:8554/movie.mp4");
    sc.connect();
    let d = sc.request();
    // No Content-Base: the request URL is the base.
    sc.reply(&d, 200, &[], SDP);
    let s1 = sc.request();
    assert_eq!(s1.uri, "rtsp://127.0.0.1:8554/movie.mp4/trackID=3");
    assert_eq!(s1.headers.get("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=0-1"));
    sc.reply(
        &s1,
        200,
        &[
            ("Session", "S"),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1"),
        ],
        "",
    );
    let s2 = sc.request();
    assert_eq!(s2.headers.get("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=2-3"));
    // The server picks other channels: they are the ones used.
    sc.reply(
        &s2,
        200,
        &[
            ("Session", "S"),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=6-7;ssrc=2"),
        ],
        "",
    );
    assert_eq!(sc.events(), [Event::Ready]);
    assert_eq!(
        sc.s.udp_streams().count(),
        2,
        "routes exist, the worker ignores them for TCP"
    );
    sc.s.play(sc.now);
    let play = sc.request();
    assert_eq!(play.uri, "rtsp://127.0.0.1:8554/movie.mp4");

    // The PLAY answer, then frames, cut at awkward places.
    let mut bytes = Vec::new();
    Response::new(200, play.cseq())
        .header("Session", "S")
        .write_to(&mut bytes);
    let frame = |channel: u8, data: &[u8]| {
        let mut f = vec![b'$', channel];
        f.extend_from_slice(&(data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    };
    for i in 0..10u16 {
        bytes.extend(frame(0, &packet(96, 100 + i, u32::from(i) * 3600, 1, 500)));
        bytes.extend(frame(6, &packet(97, 7 + i, u32::from(i) * 1024, 2, 200)));
    }
    let mut sr = Vec::new();
    rtcp::sender_report(&mut sr, 1, 5 << 32, 0, 10, 5000, &[]);
    rtcp::sdes_cname(&mut sr, 1, "server");
    bytes.extend(frame(1, &sr));
    bytes.extend(frame(9, b"a channel nobody set up"));
    for chunk in bytes.chunks(37) {
        sc.now += 100_000;
        sc.feed(chunk);
    }
    assert_eq!(sc.s.outcome(), None);
    let t = sc.s.totals();
    assert_eq!((t.packets, t.lost), (20, 0));
    assert_eq!(t.bytes, 10 * (12 + 500) + 10 * (12 + 200));
    assert_eq!(sc.rec.get(Metric::Lateness).len(), 20);

    // Receiver reports go on each track's RTCP channel, in the output.
    sc.advance(3_800 * MS);
    let w = sc.written();
    let channels: Vec<u8> = w.frames.iter().map(|f| f.0).collect();
    assert_eq!(channels, [1, 7]);
    let rr: Vec<RtcpPacket> = rtcp::parse_compound(&w.frames[0].1).unwrap().collect();
    let RtcpPacket::ReceiverReport { reports, .. } = &rr[0] else {
        panic!("{rr:?}")
    };
    let block = reports.clone().next().unwrap();
    assert_eq!((block.ssrc, block.highest_seq), (1, 109));
    assert_ne!(block.lsr, 0, "the SR on channel 1 was seen");
    assert!(sc.rtcp().is_empty(), "nothing over UDP");

    // A broken RTP packet on a media channel fails the session.
    sc.feed(&frame(6, &[0x80, 97, 0]));
    assert_eq!(
        sc.failure(),
        SessionError::Rtp {
            channel: 6,
            error: RtpError::Short(3)
        }
    );
    let w = sc.written();
    assert_eq!(w.requests.len(), 1, "a parting TEARDOWN");
    assert_eq!(w.requests[0].method, Method::Teardown);
    assert_eq!(sc.events(), [Event::Close]);
}

#[test]
fn bad_rtcp_on_an_interleaved_channel_fails_the_session() {
    let mut sc = Script::new(Lower::Tcp, 5, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], "v=0\r\nm=audio 0 RTP/AVP 0\r\n");
    let s = sc.request();
    assert_eq!(
        s.uri, "rtsp://h/m",
        "a lone medium without control uses the aggregate URL"
    );
    sc.reply(
        &s,
        200,
        &[("Session", "S"), ("Transport", "RTP/AVP/TCP;interleaved=0-1")],
        "",
    );
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "S")], "");
    sc.feed(b"$\x01\x00\x04\x40\xc8\x00\x00");
    assert!(
        matches!(sc.failure(), SessionError::Rtcp { channel: 1, .. }),
        "{:?}",
        sc.failure()
    );
}

#[test]
fn keepalives_and_servers_that_refuse_them() {
    let mut sc = Script::new(Lower::Udp, 100, "rtsp://127.0.0.1:8554/movie.mp4");
    sc.connect();
    let d = sc.request();
    sc.reply(
        &d,
        200,
        &[("Content-Base", BASE)],
        "v=0\r\nm=audio 0 RTP/AVP 0\r\na=control:a\r\n",
    );
    let s = sc.request();
    sc.reply(
        &s,
        200,
        &[
            ("Session", "K; timeout=20"),
            ("Transport", "RTP/AVP;unicast;server_port=9000-9001"),
        ],
        "",
    );
    assert_eq!(sc.events(), [Event::Ready]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "K")], "");
    let mut seq = 0u16;
    let mut keepalive = None;
    for _ in 0..110 {
        seq += 1;
        sc.rtp(0, 0, seq, u32::from(seq) * 800, 0x77);
        sc.advance(100 * MS);
        let w = sc.written();
        if let Some(r) = w.requests.into_iter().next() {
            keepalive = Some((sc.now, r));
            break;
        }
    }
    let (at, k) = keepalive.expect("a keep-alive within half the 20 s timeout");
    assert_eq!((k.method.clone(), k.uri.as_str()), (Method::GetParameter, BASE));
    assert_eq!(k.headers.get("Session"), Some("K"));
    assert!((1_000 * MS + 10 * SEC..=1_000 * MS + 10_200 * MS).contains(&at));
    sc.reply(&k, 501, &[], "");
    assert_eq!(sc.s.outcome(), None, "refusing keep-alives is allowed");
    for _ in 0..150 {
        seq += 1;
        sc.rtp(0, 0, seq, u32::from(seq) * 800, 0x77);
        sc.advance(100 * MS);
        assert!(sc.written().requests.is_empty(), "no more keep-alives");
    }
    // With no ssrc= in the reply, the first packet's SSRC is reported on.
    sc.advance(0);
    let reports = sc.rtcp();
    let block = reports
        .iter()
        .flat_map(|r| rtcp::parse_compound(&r.1).unwrap().collect::<Vec<_>>())
        .find_map(|p| match p {
            RtcpPacket::ReceiverReport { mut reports, .. } => reports.next(),
            _ => None,
        });
    assert!(reports.iter().all(|r| r.0 == "127.0.0.1:9001".parse().unwrap()));
    assert_eq!(block.expect("receiver reports in 26 s").ssrc, 0x77);
    assert!(sc.rec.get(Metric::GetParameter).len() == 1);
}

#[test]
fn teardown_waits_for_an_outstanding_keepalive() {
    let mut sc = Script::new(Lower::Udp, 100, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], "v=0\r\nm=audio 0 RTP/AVP 0\r\n");
    let s = sc.request();
    sc.reply(
        &s,
        200,
        &[("Session", "K;timeout=2"), ("Transport", "RTP/AVP;ssrc=5")],
        "",
    );
    sc.events();
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "K")], "");
    sc.rtp(0, 0, 1, 0, 5);
    sc.advance(SEC);
    let k = sc.request();
    assert_eq!(k.method, Method::GetParameter);
    // The movie ends while the keep-alive is out: TEARDOWN follows its answer.
    let mut bye = Vec::new();
    rtcp::bye(&mut bye, &[5], None);
    sc.s.on_rtcp(&bye, None, sc.now).unwrap();
    assert!(sc.written().requests.is_empty());
    assert_eq!(
        sc.s.poll_timeout(),
        Some(k_deadline(&sc)),
        "no busy deadline while waiting"
    );
    sc.reply(&k, 200, &[], "");
    assert_eq!(sc.request().method, Method::Teardown);
}

/// The response deadline of the outstanding request, for the test above.
fn k_deadline(sc: &Script) -> Nanos {
    sc.s.pending.as_ref().unwrap().sent_at + 5 * SEC
}

#[test]
fn servers_may_ask_things_too() {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 99\r\n\r\nANNOUNCE rtsp://h/m RTSP/1.0\r\nCSeq: 100\r\n\r\n");
    let w = sc.written();
    let answers: Vec<(u16, Option<&str>)> = w
        .responses
        .iter()
        .map(|r| (r.status.code(), r.headers.get("CSeq")))
        .collect();
    assert_eq!(answers, [(200, Some("99")), (501, Some("100"))]);
    // ... and the session goes on.
    sc.reply(&d, 200, &[], "v=0\r\nm=audio 0 RTP/AVP 0\r\n");
    assert_eq!(sc.request().method, Method::Setup);
}

/// Runs a session to its first SETUP and then feeds it `bytes`.
fn after_describe_feed(bytes: &[u8]) -> SessionError {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], "v=0\r\nm=audio 0 RTP/AVP 0\r\n");
    let _setup = sc.request();
    sc.feed(bytes);
    assert_eq!(sc.events(), [Event::Close]);
    sc.failure()
}

#[test]
fn bad_responses_fail_the_session_clearly() {
    assert!(matches!(
        after_describe_feed(b"RTSP/1.0 xyz\r\n\r\n"),
        SessionError::Parse(_)
    ));
    assert!(matches!(
        after_describe_feed(b"\x00\x01garbage\r\n\r\n"),
        SessionError::Parse(_)
    ));
    assert_eq!(
        after_describe_feed(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n"),
        SessionError::CSeq {
            method: "SETUP".into(),
            want: 2,
            got: Some("7".into())
        }
    );
    let e = after_describe_feed(b"RTSP/1.0 200 OK\r\n\r\n");
    assert!(matches!(e, SessionError::CSeq { got: None, .. }));
    assert_eq!(
        e.to_string(),
        "the response with no CSeq does not answer SETUP (CSeq 2)"
    );
    assert_eq!(
        after_describe_feed(b"HTTP/1.1 404 Not Found\r\n\r\n"),
        SessionError::NotRtsp
    );
    assert_eq!(
        after_describe_feed(b"RTSP/1.0 461 Unsupported transport\r\nCSeq: 2\r\n\r\n"),
        SessionError::Status {
            method: "SETUP".into(),
            url: "rtsp://h/m".into(),
            status: Status::UNSUPPORTED_TRANSPORT,
        }
    );
    assert!(matches!(
        after_describe_feed(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nTransport: RTP/AVP\r\n\r\n"),
        SessionError::NoSession { .. }
    ));
    assert!(matches!(
        after_describe_feed(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nSession: 1\r\n\r\n"),
        SessionError::Transport { .. }
    ));
    let e = after_describe_feed(
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nSession: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n",
    );
    assert!(e.to_string().contains("asked for unicast UDP"), "{e}");
    assert!(matches!(
        after_describe_feed(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nSession: 1\r\nTransport: FOO/BAR\r\n\r\n"),
        SessionError::Transport { .. }
    ));
    // A response too large for the limits.
    let mut huge = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 20_000));
    assert!(matches!(after_describe_feed(&huge), SessionError::Parse(_)));
}

#[test]
fn bad_describe_answers() {
    let describe_with = |status: u16, headers: &[(&str, &str)], body: &str| {
        let mut sc = Script::new(Lower::Udp, 10, "rtsp://h/m");
        sc.connect();
        let d = sc.request();
        sc.reply(&d, status, headers, body);
        sc.failure()
    };
    assert!(matches!(
        describe_with(404, &[], ""),
        SessionError::Status {
            status: Status::NOT_FOUND,
            ..
        }
    ));
    assert!(matches!(
        describe_with(200, &[], "<html>"),
        SessionError::Sdp {
            error: SdpError::Syntax(proto::sdp::SdpError::NoVersion),
            ..
        }
    ));
    assert!(matches!(
        describe_with(200, &[], "v=0\r\nm=video 0 RTP/AVP 96\r\n"),
        SessionError::Sdp {
            error: SdpError::NoClockRate { .. },
            ..
        }
    ));
    let many: String = (0..40)
        .map(|i| format!("m=audio 0 RTP/AVP 0\r\na=control:{i}\r\n"))
        .collect();
    assert!(matches!(
        describe_with(200, &[], &format!("v=0\r\n{many}")),
        SessionError::TooManyMedia(40, _)
    ));
}

#[test]
fn a_changed_session_id_fails() {
    let mut sc = Script::new(Lower::Udp, 10, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], SDP);
    let s1 = sc.request();
    sc.reply(&s1, 200, &[("Session", "ONE"), ("Transport", "RTP/AVP;ssrc=1")], "");
    let s2 = sc.request();
    sc.reply(&s2, 200, &[("Session", "TWO"), ("Transport", "RTP/AVP;ssrc=2")], "");
    assert_eq!(
        sc.failure(),
        SessionError::SessionChanged {
            was: "ONE".into(),
            now: "TWO".into()
        }
    );
}

#[test]
fn timeouts_silence_and_closed_connections() {
    // No answer.
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.connect();
    sc.request();
    sc.advance(5 * SEC);
    assert!(
        matches!(sc.failure(), SessionError::Timeout { secs: 5, .. }),
        "{:?}",
        sc.failure()
    );
    // No connection.
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.advance(5 * SEC);
    assert!(matches!(sc.failure(), SessionError::ConnectTimeout { .. }));
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.s.on_connect_failed("Connection refused", sc.now);
    assert_eq!(
        sc.failure().to_string(),
        "cannot connect to rtsp://h/m: Connection refused"
    );
    // Shorter than the connection takes.
    let mut sc = Script::new(Lower::Udp, 1, "rtsp://h/m");
    sc.advance(SEC);
    assert!(matches!(
        sc.failure(),
        SessionError::NeverPlayed { during: "connecting" }
    ));
    // Closed mid-conversation.
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.connect();
    sc.request();
    sc.s.on_closed(None, sc.now);
    assert_eq!(sc.failure(), SessionError::Closed { during: "describing" });
    assert!(
        sc.written().requests.is_empty(),
        "nothing more to write on a dead connection"
    );
    // Unsolicited.
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://h/m");
    sc.feed(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    assert_eq!(sc.failure(), SessionError::Unsolicited);
    // Playing, then silence.
    let mut sc = Script::new(Lower::Udp, 60, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("1"), Some("2")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "ABCD")], "");
    sc.rtp(0, 96, 1, 0, 1);
    sc.advance(3 * SEC);
    assert_eq!(sc.s.outcome(), None);
    sc.advance(SEC);
    assert_eq!(sc.failure(), SessionError::NoMedia { secs: 4 });
    assert_eq!(
        sc.written().requests.last().map(|r| r.method.clone()),
        Some(Method::Teardown)
    );
}

#[test]
fn time_up_while_setting_up_tears_down_after_the_answer() {
    let mut sc = Script::new(Lower::Udp, 2, "rtsp://127.0.0.1:8554/movie.mp4");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[("Content-Base", BASE)], SDP);
    let s1 = sc.request();
    sc.advance(2 * SEC);
    assert!(sc.written().requests.is_empty(), "one request at a time");
    sc.reply(&s1, 200, &[("Session", "Z"), ("Transport", "RTP/AVP;ssrc=1")], "");
    let t = sc.request();
    assert_eq!(t.method, Method::Teardown, "the second track is not set up");
    sc.reply(&t, 200, &[], "");
    assert!(matches!(sc.failure(), SessionError::NeverPlayed { .. }));
}

#[test]
fn stop_ends_a_playing_session_now() {
    let mut sc = Script::new(Lower::Udp, 600, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("1"), Some("2")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "ABCD")], "");
    sc.s.stop(sc.now);
    let t = sc.request();
    assert_eq!(t.method, Method::Teardown);
    sc.reply(&t, 200, &[], "");
    assert_eq!(sc.s.outcome(), Some(&Outcome::Completed));
}

/// A single-medium TCP session that is playing, on channels 0-1.
fn tcp_playing() -> Script {
    let mut sc = Script::new(Lower::Tcp, 60, "rtsp://h/m");
    sc.connect();
    let d = sc.request();
    sc.reply(&d, 200, &[], "v=0\r\nm=audio 0 RTP/AVP 0\r\n");
    let s = sc.request();
    sc.reply(
        &s,
        200,
        &[("Session", "S"), ("Transport", "RTP/AVP/TCP;interleaved=0-1")],
        "",
    );
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "S")], "");
    sc
}

#[test]
fn frames_arrive_whole_however_reads_cut_them() {
    let mut stream = Vec::new();
    for i in 0..20u16 {
        let p = packet(0, i, u32::from(i) * 160, 3, 40 + usize::from(i) * 13);
        stream.extend_from_slice(&[b'$', 0]);
        stream.extend_from_slice(&(p.len() as u16).to_be_bytes());
        stream.extend_from_slice(&p);
        if i % 7 == 3 {
            stream.extend_from_slice(b"\r\n");
        }
    }
    let bytes: u64 = (0..20u64).map(|i| 12 + 40 + i * 13).sum();
    for chunk in [1, 2, 3, 4, 5, 17, 64, 1000, stream.len()] {
        let mut sc = tcp_playing();
        for piece in stream.chunks(chunk) {
            sc.feed(piece);
        }
        assert_eq!(sc.s.outcome(), None, "chunks of {chunk}");
        let t = sc.s.totals();
        assert_eq!((t.packets, t.bytes, t.lost), (20, bytes, 0), "chunks of {chunk}");
        assert!(sc.s.inbuf.is_empty(), "chunks of {chunk}: nothing left over");
    }
}

#[test]
fn frames_cut_by_reads_need_only_their_missing_bytes() {
    assert_eq!(missing(b""), Some(0));
    assert_eq!(missing(b"\r\n"), Some(0));
    assert_eq!(missing(b"$"), Some(3));
    assert_eq!(missing(b"$\x00\x00"), Some(1));
    assert_eq!(missing(b"$\x00\x00\x05ab"), Some(3));
    assert_eq!(missing(b"\r\n$\x00\x00\x02ab"), Some(0));
    assert_eq!(missing(b"RTSP/1.0 200"), None);
}

#[test]
fn header_values_and_base_urls() {
    assert_eq!(session_timeout("abc;timeout=30"), Some(30 * SEC));
    assert_eq!(session_timeout("abc; Timeout = 7 "), Some(7 * SEC));
    assert_eq!(session_timeout("abc"), None);
    assert_eq!(session_timeout("abc;timeout=x"), None);
    let info: Vec<(&str, Option<u16>)> = rtp_info("url=rtsp://h/a/t=1;seq=5;rtptime=9, url=t=2;seq=x").collect();
    assert_eq!(info, [("rtsp://h/a/t=1", Some(5)), ("t=2", None)]);
    assert!(same_resource("rtsp://h/a/t=2", "t=2"));
    assert!(same_resource("t=2", "rtsp://h/a/t=2"));
    assert!(!same_resource("rtsp://h/a/t=2", ""));
    let resp = |name: &str, v: &str| Response::new(200, None).header(name, v);
    assert_eq!(
        base_url(&resp("Content-Base", "rtsp://b/x/"), "rtsp://r/y"),
        "rtsp://b/x/"
    );
    assert_eq!(
        base_url(&resp("Content-Location", "sub/"), "rtsp://r/y"),
        "rtsp://r/y/sub/"
    );
    assert_eq!(base_url(&resp("Other", "z"), "rtsp://r/y"), "rtsp://r/y");
}

/// A tunnelled session: its settings, and the session connected.
fn tunnelled() -> Script {
    let url = Arc::new(RtspUrl::parse("rtsp://127.0.0.1:8554/a.mp4").unwrap());
    let mut settings = (*settings(Lower::Tcp, 30)).clone();
    settings.tunnel = true;
    let mut sc = Script {
        s: Session::new(7, url, Arc::new(settings), None, 42, 1_000 * MS),
        rec: Histograms::default(),
        now: 1_000 * MS,
    };
    sc.connect();
    sc
}

/// What the session wrote on its POST leg, after the head: decoded.
fn posted(sc: &mut Script) -> Vec<u8> {
    let out = std::mem::take(sc.s.post_output());
    let mut decoded = Vec::new();
    tunnel::Decoder::new().decode(&out, &mut decoded).unwrap();
    decoded
}

#[test]
fn a_tunnel_opens_its_get_then_posts_base64() {
    let mut sc = tunnelled();
    let get = std::mem::take(sc.s.output());
    let limits = proto::http::Limits::default();
    let (head, used) = proto::http::parse_head(&get, &limits).unwrap().unwrap();
    assert_eq!(
        (head.method.as_str(), head.target.as_str(), used),
        ("GET", "/a.mp4", get.len())
    );
    assert_eq!(head.headers.get("Host"), Some("127.0.0.1:8554"));
    let Some(Ok((tunnel::Leg::Get, cookie))) = tunnel::classify(&head.method, &head.headers) else {
        panic!("not a tunnel GET: {head:?}")
    };
    assert!(sc.events().is_empty(), "no POST before the GET's answer");
    // The answer, cut in two, with nothing after it.
    sc.feed(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n");
    assert!(sc.events().is_empty());
    sc.feed(b"Cache-Control: no-store\r\n\r\n");
    assert_eq!(
        sc.events(),
        [Event::OpenPost {
            to: PEER.parse().unwrap()
        }]
    );
    sc.s.on_post_connected(sc.now);
    let post = std::mem::take(sc.s.post_output());
    let (head, used) = proto::http::parse_head(&post, &limits).unwrap().unwrap();
    assert_eq!(
        tunnel::classify(&head.method, &head.headers),
        Some(Ok((tunnel::Leg::Post, cookie)))
    );
    let mut describe = Vec::new();
    tunnel::Decoder::new().decode(&post[used..], &mut describe).unwrap();
    let Message::Request(req) = message::parse(&describe, &Limits::default()).unwrap().unwrap().0 else {
        panic!("not a request")
    };
    assert_eq!(
        (&req.method, req.uri.as_str()),
        (&Method::Describe, "rtsp://127.0.0.1:8554/a.mp4")
    );
    assert!(sc.s.output().is_empty(), "requests go on the POST leg only");
    // Answers come on the GET leg as over TCP; the SETUP goes out base64.
    sc.reply(&req, 200, &[("Content-Base", "rtsp://127.0.0.1:8554/a.mp4/")], SDP);
    let setup = posted(&mut sc);
    let Message::Request(req) = message::parse(&setup, &Limits::default()).unwrap().unwrap().0 else {
        panic!("not a request")
    };
    assert_eq!(req.method, Method::Setup);
    assert!(req
        .headers
        .get("Transport")
        .unwrap()
        .starts_with("RTP/AVP/TCP;unicast;interleaved=0-1"));
}

#[test]
fn a_refused_tunnel_fails_the_session() {
    let mut sc = tunnelled();
    sc.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(sc.failure(), SessionError::Tunnel { leg: "GET", answer } if answer.contains("403")));
    let mut sc = tunnelled();
    sc.feed(b"HTTP/1.0 200 OK\r\n\r\n");
    sc.events();
    sc.s.on_post_connected(sc.now);
    sc.s.on_post_data(Some(b"HTTP/1.0 404 Not Found\r\n\r\n"), sc.now);
    let e = sc.failure();
    assert_eq!(
        e.to_string(),
        "the server answered the tunnel's POST with \"HTTP/1.0 404 Not Found\""
    );
    // A GET never answered times out.
    let mut sc = tunnelled();
    sc.advance(6 * SEC);
    assert!(matches!(sc.failure(), SessionError::Tunnel { leg: "GET", .. }));
}

#[test]
fn buffered_times_play_to_media_running_ahead_of_the_wall_clock() {
    // The settings ask for 2 s.
    let mut sc = Script::new(Lower::Udp, 30, "rtsp://127.0.0.1:8554/movie.mp4");
    set_up_udp(&mut sc, [Some("AAAA"), Some("BBBB")]);
    sc.s.play(sc.now);
    let play = sc.request();
    sc.reply(&play, 200, &[("Session", "ABCD")], "");
    // At real time: 1 s of 90 kHz video after 1 s is nothing ahead.
    let start = sc.now;
    for i in 0..=25u16 {
        sc.now = start + u64::from(i) * 40 * MS;
        sc.rtp(0, 96, i, u32::from(i) * 3600, 0xaaaa);
    }
    assert!(sc.rec.get(Metric::Buffered).is_empty());
    // Then a burst: 3 s of media more within 100 ms, 2 s ahead at 2.9 s
    // of media received 1.04 + 0.06 s after PLAY.
    for i in 26..=100u16 {
        sc.now = start + 1_000 * MS + u64::from(i - 25) * MS;
        sc.rtp(0, 96, i, u32::from(i) * 3600, 0xaaaa);
    }
    let b = sc.rec.get(Metric::Buffered);
    assert_eq!(b.len(), 1, "once a play");
    let ahead_at = b.max() as f64 / 1e6;
    assert!((1.0..1.1).contains(&ahead_at), "{ahead_at} s");
    // Audio says nothing of it: only the first (video) track counts.
    sc.rtp(1, 97, 1, 0, 0xbbbb);
    assert_eq!(sc.rec.get(Metric::Buffered).len(), 1);
}
