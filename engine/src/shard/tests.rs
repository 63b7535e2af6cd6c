//! The shard core on a simulated clock: no sockets, no threads. A [`Sim`]
//! drives one [`ShardCore`] by the documented rule, delivers its datagrams
//! into lists and drains (or, for a slow reader, does not drain) its
//! connections.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use proto::rtsp::header::Transport;
use proto::rtsp::message::{parse, Limits, Message};

use super::*;
use crate::door::{parse_session_id, session_id};

const S: Nanos = 1_000_000_000;
const CLIENT: &str = "127.0.0.1";
const VIDEO: u32 = 3;
const AUDIO: u32 = 4;
/// The sample's hint packets per track (`streamalot inspect media/sample.mp4`).
const VIDEO_PACKETS: usize = 343;
const AUDIO_PACKETS: usize = 66;

fn movie() -> Arc<Movie> {
    static MOVIE: OnceLock<Arc<Movie>> = OnceLock::new();
    MOVIE
        .get_or_init(|| Arc::new(Movie::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp4")).unwrap()))
        .clone()
}

fn request(text: &str) -> Request {
    match parse(text.as_bytes(), &Limits::default()).unwrap().unwrap().0 {
        Message::Request(r) => r,
        other => panic!("{other:?}"),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT.parse().unwrap(), port)
}

fn config(timeout_secs: u64) -> Config {
    Config {
        index: 0,
        server_ports: (6970, 6971),
        session_timeout_secs: timeout_secs,
        tcp_queue_bytes: 256 * 1024,
        cname: "shard-0@test".into(),
        wall_at_zero: Duration::from_secs(1_700_000_000),
        instant_on: None,
        thinning: None,
        max_speed: DEFAULT_MAX_SPEED,
    }
}

/// A datagram the core sent: the time of the call that sent it, where to,
/// and its bytes.
#[derive(Debug, Clone)]
struct Datagram {
    at: Nanos,
    to: SocketAddr,
    data: Vec<u8>,
}

/// An RTP packet's header fields.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rtp {
    seq: u16,
    ts: u32,
    ssrc: u32,
}

fn rtp(data: &[u8]) -> Rtp {
    assert!(data.len() >= 12 && data[0] >> 6 == 2, "not RTP: {data:?}");
    Rtp {
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes(data[4..8].try_into().unwrap()),
        ssrc: u32::from_be_bytes(data[8..12].try_into().unwrap()),
    }
}

/// The sender reports in an RTCP datagram, and the SSRCs it says BYE for.
fn rtcp_of(data: &[u8]) -> (Vec<(u32, rtcp::SenderInfo)>, Vec<u32>) {
    let mut reports = Vec::new();
    let mut byes = Vec::new();
    for p in rtcp::parse_compound(data).expect("our RTCP parses") {
        match p {
            rtcp::RtcpPacket::SenderReport { ssrc, info, .. } => reports.push((ssrc, info)),
            rtcp::RtcpPacket::Bye { ssrcs, .. } => byes.extend(ssrcs),
            _ => {}
        }
    }
    (reports, byes)
}

/// One ShardCore and what it did.
struct Sim {
    core: ShardCore,
    now: Nanos,
    rtp: Vec<Datagram>,
    rtcp: Vec<Datagram>,
    /// Events with the time they came.
    events: Vec<(Nanos, Event)>,
    /// Bytes written to each connection.
    written: HashMap<ConnId, Vec<u8>>,
    /// Connections whose client does not read: their writer takes nothing.
    stalled: HashSet<ConnId>,
    /// Which RTP datagrams "the kernel" takes; all by default.
    take_rtp: Box<dyn FnMut(&Datagram) -> bool>,
    next_reply: ReplyId,
    /// Rounds run, and when.
    rounds: Vec<Nanos>,
}

impl Sim {
    fn new(config: Config) -> Sim {
        Sim::seeded(config, 7)
    }

    fn seeded(config: Config, seed: u64) -> Sim {
        Sim {
            core: ShardCore::new(config, Rng::from_seed(seed)),
            now: 0,
            rtp: Vec::new(),
            rtcp: Vec::new(),
            events: Vec::new(),
            written: HashMap::new(),
            stalled: HashSet::new(),
            take_rtp: Box::new(|_| true),
            next_reply: 0,
            rounds: Vec::new(),
        }
    }

    /// Step 3 of the rule: transmit, then drain the outputs.
    fn after(&mut self) {
        let now = self.now;
        let Sim {
            core,
            rtp,
            rtcp,
            take_rtp,
            ..
        } = self;
        core.transmit().flush_with(
            |to, data| {
                let d = Datagram {
                    at: now,
                    to,
                    data: data.to_vec(),
                };
                let taken = take_rtp(&d);
                if taken {
                    rtp.push(d);
                }
                taken
            },
            |to, data| {
                rtcp.push(Datagram {
                    at: now,
                    to,
                    data: data.to_vec(),
                });
                true
            },
        );
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Event(e) => self.events.push((now, e)),
                Output::ConnReady(c) | Output::ConnClose(c) => self.write(c),
            }
        }
    }

    /// A connection's writer: takes and "writes" until there is nothing.
    fn write(&mut self, conn: ConnId) {
        if self.stalled.contains(&conn) {
            return;
        }
        let mut buf = Vec::new();
        while self.core.take_conn_bytes(conn, &mut buf) == Taken::Bytes {
            self.written.entry(conn).or_default().extend_from_slice(&buf);
            self.core.handle_input(self.now, Input::ConnWritten { conn });
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.core.handle_input(self.now, input);
        self.after();
    }

    /// Runs the rounds the core asks for, up to `until`.
    fn run_until(&mut self, until: Nanos) {
        loop {
            let next = self.core.poll_timeout().expect("a shard always has a deadline");
            if next > until {
                break;
            }
            self.now = next.max(self.now);
            self.rounds.push(self.now);
            self.core.handle_timeout(self.now);
            self.after();
        }
        self.now = until;
    }

    /// Sends a command that is answered with a reply, and returns it.
    fn ask(&mut self, make: impl FnOnce(ReplyId) -> Command) -> Response {
        self.next_reply += 1;
        let id = self.next_reply;
        self.input(Input::Command(make(id)));
        let at = self
            .events
            .iter()
            .position(|(_, e)| matches!(e, Event::Reply { reply, .. } if *reply == id))
            .expect("a reply");
        match self.events.remove(at).1 {
            Event::Reply { response, .. } => response,
            _ => unreachable!(),
        }
    }

    /// A UDP session of both tracks (RTP to `port`, `port + 2`), set up as
    /// the control core would: its key, and the SSRC of each track.
    fn udp_session(&mut self, key: SessionKey, port: u16) -> [u32; 2] {
        self.udp_session_with(key, port, "RTP/AVP")
    }

    /// As [`udp_session`](Self::udp_session), with transport `profile`
    /// (`RTP/AVPF` for one that takes NACKs).
    fn udp_session_with(&mut self, key: SessionKey, port: u16, profile: &str) -> [u32; 2] {
        self.udp_session_headers(key, port, profile, "").0
    }

    /// As [`udp_session_with`](Self::udp_session_with), with `extra`
    /// header lines in each SETUP; the SSRCs and the two answers.
    fn udp_session_headers(
        &mut self,
        key: SessionKey,
        port: u16,
        profile: &str,
        extra: &str,
    ) -> ([u32; 2], [Response; 2]) {
        let setup = |track: u32, port: u16, session: Option<SessionKey>| {
            let session = session.map_or(String::new(), |k| format!("Session: {}\r\n", session_id(k)));
            request(&format!(
                "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 1\r\n{session}\
                 Transport: {profile};unicast;client_port={port}-{}\r\n{extra}User-Agent: sim\r\n\r\n",
                port + 1
            ))
        };
        let video = self.ask(|reply| Command::NewSession {
            key,
            path: "/sample.mp4".into(),
            movie: movie(),
            request: setup(VIDEO, port, None),
            client: addr(40_000),
            conn: None,
            reply,
        });
        assert_eq!(video.status, 200, "{video:?}");
        let audio = self.control(key, &setup(AUDIO, port + 2, Some(key)));
        assert_eq!(audio.status, 200, "{audio:?}");
        ([ssrc(&video), ssrc(&audio)], [video, audio])
    }

    /// A request for session `key` through the control core.
    fn control(&mut self, key: SessionKey, req: &Request) -> Response {
        self.ask(|reply| Command::Request {
            key,
            request: req.clone(),
            client: addr(40_000),
            reply,
        })
    }

    fn method(&mut self, key: SessionKey, method: &str, extra: &str) -> Response {
        let text = format!(
            "{method} rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 9\r\nSession: {}\r\n{extra}\r\n",
            session_id(key)
        );
        self.control(key, &request(&text))
    }

    /// An interleaved session of both tracks on connection `conn`, set up
    /// as a handed-over connection would be.
    fn tcp_session(&mut self, key: SessionKey, conn: ConnId) -> [u32; 2] {
        self.input(Input::ConnOpened {
            conn,
            client: addr(50_000 + conn as u16),
            tunnelled: false,
        });
        let setup = |track: u32, channels: &str, session: &str| {
            request(&format!(
                "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: {track}\r\n{session}\
                 Transport: RTP/AVP/TCP;unicast;interleaved={channels}\r\n\r\n"
            ))
        };
        self.input(Input::Command(Command::NewSession {
            key,
            path: "/sample.mp4".into(),
            movie: movie(),
            request: setup(VIDEO, "0-1", ""),
            client: addr(50_000 + conn as u16),
            conn: Some(conn),
            reply: 0,
        }));
        let session = format!("Session: {}\r\n", session_id(key));
        self.input(Input::ConnRequest {
            conn,
            key,
            request: setup(AUDIO, "2-3", &session),
        });
        let replies = self.responses(conn);
        assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
        [ssrc(&replies[0]), ssrc(&replies[1])]
    }

    /// A request on connection `conn` for session `key`; its answer.
    fn on_conn(&mut self, conn: ConnId, key: SessionKey, method: &str) -> Response {
        let text = format!(
            "{method} rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 20\r\nSession: {}\r\n\r\n",
            session_id(key)
        );
        let before = self.responses(conn).len();
        self.input(Input::ConnRequest {
            conn,
            key,
            request: request(&text),
        });
        self.responses(conn).into_iter().nth(before).expect("an answer")
    }

    /// Everything written to `conn`, as messages.
    fn messages(&self, conn: ConnId) -> Vec<Message> {
        let mut bytes = self.written.get(&conn).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::new();
        while let Some((m, used)) = parse(bytes, &Limits::default()).expect("whole messages and frames") {
            out.push(m);
            bytes = &bytes[used..];
        }
        assert!(bytes.is_empty(), "a partial message or frame was written");
        out
    }

    fn responses(&self, conn: ConnId) -> Vec<Response> {
        self.messages(conn)
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The `$` frames written to `conn` on `channel`.
    fn frames(&self, conn: ConnId, channel: u8) -> Vec<Vec<u8>> {
        self.messages(conn)
            .into_iter()
            .filter_map(|m| match m {
                Message::Interleaved { channel: c, data } if c == channel => Some(data),
                _ => None,
            })
            .collect()
    }

    fn rtp_of(&self, ssrc: u32) -> Vec<(Nanos, Rtp)> {
        self.rtp
            .iter()
            .map(|d| (d.at, rtp(&d.data)))
            .filter(|(_, r)| r.ssrc == ssrc)
            .collect()
    }

    /// (time, report) of every SR for `ssrc` sent over UDP.
    fn reports_of(&self, ssrc: u32) -> Vec<(Nanos, rtcp::SenderInfo)> {
        self.rtcp
            .iter()
            .flat_map(|d| rtcp_of(&d.data).0.into_iter().map(move |r| (d.at, r)))
            .filter(|(_, (s, _))| *s == ssrc)
            .map(|(at, (_, info))| (at, info))
            .collect()
    }

    /// When a BYE for `ssrc` went over UDP.
    fn byes_of(&self, ssrc: u32) -> Vec<Nanos> {
        self.rtcp
            .iter()
            .filter(|d| rtcp_of(&d.data).1.contains(&ssrc))
            .map(|d| d.at)
            .collect()
    }

    /// (time, key, record) of every SessionEnded.
    fn ended(&self) -> Vec<(Nanos, Option<SessionKey>, &AccessRecord)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::SessionEnded { key, record } => Some((*at, *key, record)),
                _ => None,
            })
            .collect()
    }
}

fn ssrc(r: &Response) -> u32 {
    Transport::parse(r.headers.get("Transport").expect("a Transport"))
        .expect("our Transport parses")
        .ssrc
        .expect("an ssrc")
}

/// (seq, rtptime) per track from a PLAY's RTP-Info.
fn rtp_info(r: &Response) -> Vec<(u16, u32)> {
    r.headers
        .get("RTP-Info")
        .expect("RTP-Info")
        .split(',')
        .map(|entry| {
            let field = |name: &str| {
                entry
                    .split(';')
                    .find_map(|f| f.trim().strip_prefix(name))
                    .expect("a field")
                    .to_owned()
            };
            (field("seq=").parse().unwrap(), field("rtptime=").parse().unwrap())
        })
        .collect()
}

/// A receiver report from `ssrc`'s receiver about stream `ssrc`.
fn receiver_report(ssrc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let block = rtcp::ReportBlock {
        ssrc,
        cumulative_lost: 2,
        ..Default::default()
    };
    rtcp::receiver_report(&mut out, 0x1111, &[block]);
    out
}

/// `qtak` packets from client SSRC 0x3333 acknowledging `seqs` of
/// `media_ssrc`, as many as it takes (one mask holds 257 numbers).
fn acks(media_ssrc: u32, seqs: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut mask: Option<proto::qtss::AckMask> = None;
    for &seq in seqs {
        if let Some(m) = &mut mask {
            if m.insert(seq) {
                continue;
            }
            m.emit(&mut out, 0x3333, media_ssrc);
        }
        mask = Some(proto::qtss::AckMask::new(seq));
    }
    if let Some(m) = mask {
        m.emit(&mut out, 0x3333, media_ssrc);
    }
    out
}

fn ntp_of(config: &Config, now: Nanos) -> u64 {
    rtcp::ntp_from_unix(config.wall_at_zero + Duration::from_nanos(now))
}

/// NTP difference in nanoseconds.
fn ntp_ns(later: u64, earlier: u64) -> i64 {
    ((later.wrapping_sub(earlier) as i64 as i128 * 1_000_000_000) >> 32) as i64
}

#[test]
fn a_silent_session_times_out_with_a_bye_and_its_record() {
    let mut sim = Sim::new(config(3));
    let [video, audio] = sim.udp_session(0xA1, 5000);
    assert_eq!(sim.method(0xA1, "PLAY", "").status, 200);
    sim.run_until(3 * S - 1);
    assert!(sim.ended().is_empty(), "ended before its timeout");
    assert!(sim.core.has_session(0xA1));
    sim.run_until(4 * S);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1);
    let (at, key, record) = ended[0];
    assert_eq!(key, Some(0xA1));
    assert!((3 * S..3 * S + HOUSEKEEPING + LOOKAHEAD).contains(&at), "ended at {at}");
    for ssrc in [video, audio] {
        assert_eq!(sim.byes_of(ssrc), [at], "one BYE for {ssrc:08X}, as it ended");
        assert!(sim.rtp_of(ssrc).iter().all(|(t, _)| *t <= at), "media after the end");
    }
    assert_eq!(record.packets as usize, sim.rtp.len(), "the record counts what went");
    assert!(sim.rtp.iter().all(|d| [addr(5000), addr(5002)].contains(&d.to)));
    assert!(sim.rtcp.iter().all(|d| [addr(5001), addr(5003)].contains(&d.to)));
    assert_eq!(
        (record.uri.as_str(), record.transport, record.status),
        ("/sample.mp4", "udp", 200)
    );
    assert_eq!(record.user_agent.as_deref(), Some("sim"));
    assert!(!sim.core.has_session(0xA1));
    assert_eq!(
        (sim.core.stats().sessions_started, sim.core.stats().sessions_ended),
        (1, 1)
    );
}

#[test]
fn rtsp_keep_alives_keep_a_session() {
    let mut sim = Sim::new(config(3));
    sim.udp_session(0xA2, 5000);
    // Paused: no media ends it, only silence can.
    assert_eq!(sim.method(0xA2, "PLAY", "").status, 200);
    sim.run_until(S / 2);
    assert_eq!(sim.method(0xA2, "PAUSE", "").status, 200);
    for t in [2, 4, 6, 8] {
        sim.run_until(t * S);
        assert_eq!(sim.method(0xA2, "GET_PARAMETER", "").status, 200, "at {t} s");
    }
    sim.run_until(11 * S - HOUSEKEEPING);
    assert!(sim.ended().is_empty(), "kept alive until 8 s, so alive at 10.75 s");
    sim.run_until(12 * S);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1);
    assert!(ended[0].0 > 11 * S, "ended at {}", ended[0].0);
}

#[test]
fn rtcp_keeps_a_session_only_from_the_address_it_is_sent_to() {
    let mut sim = Sim::new(config(3));
    let [video, _] = sim.udp_session(0xA3, 5000);
    assert_eq!(sim.method(0xA3, "PLAY", "").status, 200);
    sim.run_until(S / 2);
    assert_eq!(sim.method(0xA3, "PAUSE", "").status, 200);
    let report = receiver_report(video);
    // From the session's own RTCP address: alive.
    for t in [2, 4] {
        sim.run_until(t * S);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &report,
        });
    }
    // Another session's, at another address the shard knows.
    sim.run_until(4 * S + S / 2);
    sim.udp_session(0xA9, 7000);
    // Then reports on this session's stream only from elsewhere: from the
    // other session's address (which keeps that one alive, not this one),
    // and from addresses no session has, which are not RTCP the shard
    // takes at all.
    let bad_before = sim.core.stats().bad_rtcp;
    for t in [5, 6, 7] {
        sim.run_until(t * S);
        for from in [addr(7001), addr(6001), "192.0.2.7:5001".parse().unwrap()] {
            sim.input(Input::Rtcp { from, data: &report });
        }
    }
    sim.run_until(7 * S + S / 2);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1, "only the first session timed out");
    let (at, key, record) = ended[0];
    assert_eq!(key, Some(0xA3));
    assert!((7 * S..7 * S + HOUSEKEEPING + LOOKAHEAD).contains(&at), "ended at {at}");
    assert!(sim.core.has_session(0xA9));
    assert_eq!(sim.core.stats().bad_rtcp - bad_before, 6);
    assert_eq!(record.packets_lost, Some(2), "the report's loss is recorded");
}

#[test]
fn rtcp_on_an_interleaved_channel_keeps_a_tcp_session() {
    let mut sim = Sim::new(config(3));
    let [video, _] = sim.tcp_session(0xA4, 1);
    assert_eq!(sim.on_conn(1, 0xA4, "PLAY").status, 200);
    sim.run_until(S / 2);
    assert_eq!(sim.on_conn(1, 0xA4, "PAUSE").status, 200);
    let report = receiver_report(video);
    for t in [2, 4, 6] {
        sim.run_until(t * S);
        // Channel 1 is the video's RTCP; 7 is nobody's and changes nothing.
        for channel in [1, 7] {
            sim.input(Input::Interleaved {
                conn: 1,
                channel,
                data: &report,
            });
        }
    }
    sim.run_until(8 * S);
    assert!(sim.ended().is_empty());
    sim.run_until(10 * S);
    assert_eq!(sim.ended().len(), 1);
    assert_eq!(sim.ended()[0].2.transport, "tcp");
}

#[test]
fn sender_reports_every_five_seconds_agree_with_rtp_info() {
    let cfg = config(60);
    let mut sim = Sim::new(cfg.clone());
    let ssrcs = sim.udp_session(0xB1, 5000);
    sim.run_until(S / 10);
    let played_at = sim.now;
    let play = sim.method(0xB1, "PLAY", "");
    let info = rtp_info(&play);
    sim.run_until(9 * S);
    for (i, &ssrc) in ssrcs.iter().enumerate() {
        let clock = [90_000i64, 48_000][i];
        let reports = sim.reports_of(ssrc);
        assert_eq!(reports.len(), 2, "at the start and 5 s later: {reports:?}");
        let gap = reports[1].0 - reports[0].0;
        // Due when the session next has a packet due: within a frame time.
        assert!((SR_INTERVAL..SR_INTERVAL + 100 * MS).contains(&gap), "{gap} ns apart");
        let sent = sim.rtp_of(ssrc);
        for (at, r) in &reports {
            assert_eq!(r.ntp, ntp_of(&cfg, *at), "NTP time is the round's wall time");
            // The NTP/RTP pair is on RTP-Info's mapping: rtptime at the
            // PLAY, plus the media time since.
            let since = ntp_ns(r.ntp, ntp_of(&cfg, played_at));
            let want = info[i].1 as i64 + since * clock / 1_000_000_000;
            let got = info[i].1 as i64 + r.rtp_ts.wrapping_sub(info[i].1) as i32 as i64;
            assert!((got - want).abs() <= 1, "stream {i}: rtptime {got}, want {want}");
            // It counts the packets sent in earlier rounds (this round's go
            // out just before it, uncounted yet).
            let before: Vec<_> = sent.iter().filter(|(t, _)| t < at).collect();
            assert_eq!(r.packets as usize, before.len(), "stream {i} at {at}");
        }
    }
}

#[test]
fn bye_follows_the_last_packet_and_the_session_waits_for_teardown() {
    let mut sim = Sim::new(config(60));
    let ssrcs = sim.udp_session(0xB2, 5000);
    sim.method(0xB2, "PLAY", "");
    sim.run_until(11 * S);
    for (&ssrc, want) in ssrcs.iter().zip([VIDEO_PACKETS, AUDIO_PACKETS]) {
        let sent = sim.rtp_of(ssrc);
        assert_eq!(sent.len(), want, "every hinted packet once");
        assert!(sent.windows(2).all(|w| w[1].1.seq == w[0].1.seq.wrapping_add(1)));
        let byes = sim.byes_of(ssrc);
        assert_eq!(byes.len(), 1);
        let last_media = sim.rtp.iter().map(|d| d.at).max().unwrap();
        // Not right behind the media (GStreamer loses the last packets
        // then), but by the next housekeeping after BYE_DELAY.
        assert!(
            byes[0] >= last_media + BYE_DELAY && byes[0] <= last_media + BYE_DELAY + HOUSEKEEPING + 2 * LOOKAHEAD,
            "BYE at {} after the last packet at {last_media}",
            byes[0]
        );
        // The report beside the BYE counts everything.
        let last = sim.reports_of(ssrc).last().copied().unwrap();
        assert_eq!(last.0, byes[0]);
        assert_eq!(last.1.packets as usize, want);
    }
    assert!(sim.ended().is_empty(), "waits for its TEARDOWN");
    let last_media = sim.rtp.iter().map(|d| d.at).max().unwrap();
    sim.run_until(last_media + ENDED_GRACE + 2 * HOUSEKEEPING + LOOKAHEAD);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1, "ended after the grace");
    assert!(ended[0].0 > last_media + ENDED_GRACE);
    assert_eq!(sim.byes_of(ssrcs[0]).len(), 1, "no second BYE");
    assert_eq!(ended[0].2.packets as usize, VIDEO_PACKETS + AUDIO_PACKETS);
}

#[test]
fn shutdown_says_bye_to_every_client_and_closes_its_connections() {
    let mut sim = Sim::new(config(60));
    let udp = sim.udp_session(0xC1, 5000);
    let tcp = sim.tcp_session(0xC2, 1);
    sim.method(0xC1, "PLAY", "");
    assert_eq!(sim.on_conn(1, 0xC2, "PLAY").status, 200);
    sim.run_until(2 * S);
    sim.input(Input::Command(Command::Shutdown));
    for ssrc in udp {
        assert_eq!(sim.byes_of(ssrc), [2 * S]);
    }
    let byes: Vec<u32> = [1, 3]
        .into_iter()
        .flat_map(|ch| sim.frames(1, ch))
        .flat_map(|f| rtcp_of(&f).1)
        .collect();
    assert_eq!(byes.len(), 2);
    assert!(tcp.iter().all(|s| byes.contains(s)), "BYE on both interleaved streams");
    let ended: Vec<Option<SessionKey>> = sim.ended().iter().map(|e| e.1).collect();
    assert_eq!(ended.len(), 2);
    assert!(ended.contains(&Some(0xC1)) && ended.contains(&Some(0xC2)));
    assert!(sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Stopped { stats } if stats.sessions_ended == 2)));
    assert!(
        sim.events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConnectionClosed { client } if client.port() == 50_001)),
        "the connection was written out and closed"
    );
    assert_eq!(sim.core.take_conn_bytes(1, &mut Vec::new()), Taken::Closed);
}

#[test]
fn pause_and_play_leave_no_gap_and_keep_the_timestamp_offset() {
    let mut sim = Sim::new(config(60));
    let ssrcs = sim.udp_session(0xD1, 5000);
    let first = rtp_info(&sim.method(0xD1, "PLAY", ""));
    sim.run_until(3 * S);
    assert_eq!(sim.method(0xD1, "PAUSE", "").status, 200);
    let paused_with = sim.rtp.len();
    sim.run_until(5 * S);
    assert_eq!(sim.rtp.len(), paused_with, "nothing sent while paused");
    let resumed = rtp_info(&sim.method(0xD1, "PLAY", ""));
    sim.run_until(12 * S);
    let m = movie();
    for (i, (&ssrc, track)) in ssrcs.iter().zip([VIDEO, AUDIO]).enumerate() {
        let sent = sim.rtp_of(ssrc);
        let hinted: Vec<u32> = m.packets(track).unwrap().map(|p| p.unwrap().timestamp).collect();
        assert_eq!(sent.len(), hinted.len(), "track {track}: all of it, once");
        assert!(
            sent.windows(2).all(|w| w[1].1.seq == w[0].1.seq.wrapping_add(1)),
            "no gap"
        );
        assert_eq!(sent[0].1.seq, first[i].0);
        let before = sent.iter().filter(|(t, _)| *t < 4 * S).count();
        assert_eq!(resumed[i].0, sent[before].1.seq, "RTP-Info names the next packet");
        assert_eq!(sent[before].1.seq, sent[before - 1].1.seq.wrapping_add(1));
        // One offset between the hinted and the sent timestamps, before and
        // after the pause: timestamps follow the media, not the wall clock.
        let offset = sent[0].1.ts.wrapping_sub(hinted[0]);
        assert!(sent.iter().zip(&hinted).all(|(s, h)| s.1.ts.wrapping_sub(*h) == offset));
        // RTP-Info's rtptime moved on by the 3 s of media played.
        let clock = [90_000, 48_000][i];
        let advanced = resumed[i].1.wrapping_sub(first[i].1) as i64;
        assert!((advanced - 3 * clock).abs() <= 1, "stream {i}: {advanced}");
    }
}

#[test]
fn a_slow_tcp_reader_loses_whole_frames_and_the_others_play_on() {
    let mut cfg = config(60);
    cfg.tcp_queue_bytes = 16 * 1024;
    let mut sim = Sim::new(cfg);
    let slow = sim.tcp_session(0xE1, 1);
    let fast = sim.tcp_session(0xE2, 2);
    let udp = sim.udp_session(0xE3, 5000);
    assert_eq!(sim.on_conn(1, 0xE1, "PLAY").status, 200);
    // From now on its client reads nothing.
    sim.stalled.insert(1);
    assert_eq!(sim.on_conn(2, 0xE2, "PLAY").status, 200);
    sim.method(0xE3, "PLAY", "");
    sim.run_until(11 * S);
    let dropped = sim.core.stats().dropped_tcp;
    assert!(dropped > 0, "the stalled reader's queue filled");
    let queued = sim.core.conns.get(&1).unwrap().queued();
    assert!(queued <= 16 * 1024, "{queued} bytes queued past the bound");
    // The others got everything.
    let fast_video = sim.frames(2, 0);
    assert_eq!(fast_video.len(), VIDEO_PACKETS);
    assert!(fast_video
        .windows(2)
        .all(|w| rtp(&w[1]).seq == rtp(&w[0]).seq.wrapping_add(1)));
    assert_eq!(sim.frames(2, 2).len(), AUDIO_PACKETS);
    assert_eq!(rtp(&fast_video[0]).ssrc, fast[0]);
    assert_eq!(sim.rtp_of(udp[0]).len(), VIDEO_PACKETS);
    // The slow reader reads again: whole frames, fewer of them, and its
    // report counts only those.
    sim.stalled.remove(&1);
    sim.write(1);
    let frames: usize = [0, 2].iter().map(|&ch| sim.frames(1, ch).len()).sum();
    assert_eq!(frames as u64 + dropped, (VIDEO_PACKETS + AUDIO_PACKETS) as u64);
    // Its sender reports never count more video than it was given.
    let slow_video = sim.frames(1, 0).len();
    for report in sim.frames(1, 1) {
        for (ssrc, info) in rtcp_of(&report).0 {
            assert_eq!(ssrc, slow[0]);
            assert!(info.packets as usize <= slow_video, "{} > {slow_video}", info.packets);
        }
    }
    assert_eq!(sim.on_conn(1, 0xE1, "TEARDOWN").status, 200);
    let record = sim.ended().into_iter().find(|e| e.1 == Some(0xE1)).unwrap().2;
    assert_eq!(
        record.packets as usize, frames,
        "dropped frames are not counted as sent"
    );
}

#[test]
fn packets_the_kernel_did_not_take_are_not_reported_as_sent() {
    let mut sim = Sim::new(config(60));
    let mut n = 0;
    sim.take_rtp = Box::new(move |_| {
        n += 1;
        n % 3 != 0
    });
    let ssrcs = sim.udp_session(0xF1, 5000);
    sim.method(0xF1, "PLAY", "");
    sim.run_until(11 * S);
    let total = VIDEO_PACKETS + AUDIO_PACKETS;
    let went = sim.rtp.len();
    assert_eq!(went, total - total / 3);
    let stats = sim.core.stats();
    assert_eq!((stats.packets as usize, stats.dropped_udp as usize), (went, total / 3));
    for ssrc in ssrcs {
        let last = sim.reports_of(ssrc).last().copied().unwrap();
        assert_eq!(
            last.1.packets as usize,
            sim.rtp_of(ssrc).len(),
            "the final SR counts what went"
        );
        let octets: usize = sim
            .rtp
            .iter()
            .filter(|d| rtp(&d.data).ssrc == ssrc)
            .map(|d| d.data.len() - 12)
            .sum();
        assert_eq!(last.1.octets as usize, octets);
    }
    assert_eq!(sim.method(0xF1, "TEARDOWN", "").status, 200);
    assert_eq!(sim.ended()[0].2.packets as usize, went);
}

#[test]
fn seeds_are_drawn_only_for_new_streams() {
    // Two shards with the same generator: one hears keep-alives and a
    // repeated SETUP between its two new streams, the other does not. If
    // anything but a new stream drew seeds, their second SSRCs would differ.
    let mut busy = Sim::seeded(config(60), 99);
    let mut quiet = Sim::seeded(config(60), 99);
    let setup = |track: u32, port: u16| {
        request(&format!(
            "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 1\r\nSession: {}\r\n\
             Transport: RTP/AVP;unicast;client_port={port}-{}\r\n\r\n",
            session_id(0x51),
            port + 1
        ))
    };
    let mut first = Vec::new();
    for sim in [&mut busy, &mut quiet] {
        let r = sim.ask(|reply| Command::NewSession {
            key: 0x51,
            path: "/sample.mp4".into(),
            movie: movie(),
            request: setup(VIDEO, 5000),
            client: addr(40_000),
            conn: None,
            reply,
        });
        first.push(ssrc(&r));
    }
    for method in ["GET_PARAMETER", "SET_PARAMETER", "OPTIONS", "GET_PARAMETER"] {
        assert_eq!(busy.method(0x51, method, "").status, 200);
    }
    assert_eq!(busy.control(0x51, &setup(VIDEO, 6000)).status, 200, "track 3 again");
    let second: Vec<u32> = [&mut busy, &mut quiet]
        .into_iter()
        .map(|sim| ssrc(&sim.control(0x51, &setup(AUDIO, 5002))))
        .collect();
    assert_eq!(first[0], first[1]);
    assert_eq!(second[0], second[1], "the busy shard drew seeds for something else");
    assert_ne!(first[0], second[0]);
}

#[test]
fn a_refused_setup_is_answered_and_logged() {
    let mut sim = Sim::new(config(60));
    sim.input(Input::ConnOpened {
        conn: 4,
        client: addr(50_004),
        tunnelled: false,
    });
    let setup = request("SETUP rtsp://h/sample.mp4/trackID=3 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP/TCP\r\n\r\n");
    sim.input(Input::ConnRefused {
        conn: 4,
        key: None,
        request: setup.clone(),
        status: 453,
    });
    let answers = sim.responses(4);
    assert_eq!(
        (answers[0].status.code(), answers[0].headers.get("CSeq")),
        (453, Some("5"))
    );
    let ended = sim.ended();
    assert_eq!((ended[0].1, ended[0].2.status), (None, 453));
    // Admitted, but the session's own checks refuse it: the control core is
    // told the key, to count it no more.
    let bad = request("SETUP rtsp://h/sample.mp4/trackID=9 RTSP/1.0\r\nCSeq: 6\r\nTransport: RTP/AVP/TCP\r\n\r\n");
    sim.input(Input::ConnOpen {
        conn: 4,
        key: 0x99,
        path: "/sample.mp4".into(),
        movie: movie(),
        request: bad,
    });
    assert_eq!(sim.responses(4)[1].status, 404);
    assert_eq!(sim.ended()[1].1, Some(0x99));
    assert!(!sim.core.has_session(0x99));
    assert_eq!(parse_session_id(&session_id(0x99)), Some(0x99));
}

#[test]
fn rounds_come_before_packets_are_due_and_at_most_once_a_millisecond() {
    // Rounds run exactly when the core asks: then no packet is ever late,
    // and the core asks for no more than a round per lookahead except when a
    // request starts media.
    let mut sim = Sim::new(config(60));
    sim.udp_session(0x71, 5000);
    sim.tcp_session(0x72, 1);
    sim.method(0x71, "PLAY", "");
    sim.run_until(S + S / 3);
    assert_eq!(sim.on_conn(1, 0x72, "PLAY").status, 200);
    sim.run_until(3 * S);
    sim.method(0x71, "PAUSE", "");
    sim.run_until(4 * S);
    sim.method(0x71, "PLAY", "");
    sim.run_until(16 * S);
    let stats = sim.core.stats();
    assert_eq!(stats.packets as usize, 2 * (VIDEO_PACKETS + AUDIO_PACKETS));
    assert_eq!(stats.lateness.max(), 0, "a packet went late on a punctual clock");
    let close: Vec<_> = sim.rounds.windows(2).filter(|w| w[1] - w[0] < LOOKAHEAD).collect();
    // The rounds a PLAY asked for (three PLAYs) may come sooner.
    assert!(close.len() <= 3, "rounds closer than a lookahead: {close:?}");
    // And it sleeps when there is nothing to do: after the media and the
    // grace, a round per housekeeping interval at most.
    let idle = sim.rounds.iter().filter(|&&t| t > 15 * S).count();
    assert!(
        idle <= (S / HOUSEKEEPING) as usize + 1,
        "{idle} rounds in the last idle second"
    );
}

#[test]
fn sessions_are_logged_with_the_transport_their_connection_is() {
    let mut sim = Sim::new(config(60));
    sim.tcp_session(0x81, 1);
    sim.input(Input::ConnOpened {
        conn: 2,
        client: addr(50_002),
        tunnelled: true,
    });
    sim.input(Input::Command(Command::NewSession {
        key: 0x82,
        path: "/sample.mp4".into(),
        movie: movie(),
        request: request(&format!(
            "SETUP rtsp://h/sample.mp4/trackID={VIDEO} RTSP/1.0\r\nCSeq: 1\r\n\
             Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        )),
        client: addr(50_002),
        conn: Some(2),
        reply: 0,
    }));
    assert_eq!(sim.responses(2)[0].status, 200);
    sim.udp_session(0x83, 5000);
    for conn in [1, 2] {
        sim.input(Input::ConnClosed { conn });
    }
    sim.method(0x83, "TEARDOWN", "");
    let mut logged: Vec<(SessionKey, &str)> = sim
        .ended()
        .iter()
        .map(|(_, key, r)| (key.expect("a session"), r.transport))
        .collect();
    logged.sort_unstable();
    assert_eq!(logged, [(0x81, "tcp"), (0x82, "http"), (0x83, "udp")]);
}

/// The reflector on a simulated clock: a broadcast's packets made by the
/// ingest from RTP bytes, fed to the shard core as the control core feeds
/// them, and viewers that play it over UDP and TCP.
mod live {
    use super::*;
    use crate::live::ingest::Ingest;
    use crate::live::{describe, ToShard as News};

    const MS: Nanos = 1_000_000;
    /// What ffmpeg announces for an H.264 + AAC file it publishes.
    const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        a=tool:libavformat\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1\r\na=control:streamid=0\r\n\
        m=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
        a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3\r\n\
        a=control:streamid=1\r\n";
    const PUBLISHER_SSRC: [u32; 2] = [0x1111, 0x2222];

    fn desc() -> Arc<Description> {
        Arc::new(describe::parse(42, "/live/cam", Some("application/sdp"), SDP.as_bytes()).unwrap())
    }

    fn datagram(track: usize, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut d = rtp::Header {
            marker,
            payload_type: 96 + track as u8,
            sequence: seq,
            timestamp: ts,
            ssrc: PUBLISHER_SSRC[track],
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(payload);
        d
    }

    use proto::rtp;

    /// A publisher: 25 frames a second of two FU-A packets each (an IDR
    /// every `gop` frames), one AAC packet per frame, each packet's
    /// payload naming its frame and part so a viewer's can be checked.
    struct Publisher {
        ingest: Ingest,
        frame: u32,
        seq: [u16; 2],
        gop: u32,
    }

    impl Publisher {
        fn new(gop: u32) -> Publisher {
            Publisher {
                ingest: Ingest::new(desc(), crate::live::ingest::DEFAULT_MAX_BITRATE, 0),
                frame: 0,
                seq: [100, 5000],
                gop,
            }
        }

        /// The next frame's packets, as the shard receives them at `now`.
        fn frame(&mut self, sim: &mut Sim) {
            let f = self.frame;
            self.frame += 1;
            let ts = f * 3600;
            let key = f.is_multiple_of(self.gop);
            let nal = if key { 5 } else { 1 };
            let mut payloads = [vec![0x7c, 0x80 | nal], vec![0x7c, 0x40 | nal]];
            for (part, p) in payloads.iter_mut().enumerate() {
                p.extend_from_slice(&f.to_be_bytes());
                p.push(part as u8);
                p.extend_from_slice(&[0xab; 600]);
            }
            for (part, p) in payloads.iter().enumerate() {
                let d = datagram(0, self.seq[0], ts, part == 1, p);
                self.seq[0] = self.seq[0].wrapping_add(1);
                let packet = self.ingest.rtp(0, &d, sim.now).unwrap();
                sim.input(Input::Live(News::Packet { id: 42, packet }));
            }
            let mut audio = vec![0, 16, 0, 0];
            audio.extend_from_slice(&f.to_be_bytes());
            let d = datagram(1, self.seq[1], f * 1764, true, &audio);
            self.seq[1] = self.seq[1].wrapping_add(1);
            let packet = self.ingest.rtp(1, &d, sim.now).unwrap();
            sim.input(Input::Live(News::Packet { id: 42, packet }));
        }

        /// Frames at 25 a second from now until `until`, with rounds between.
        fn run(&mut self, sim: &mut Sim, until: Nanos) {
            while sim.now + 40 * MS <= until {
                let next = sim.now + 40 * MS;
                sim.run_until(next);
                self.frame(sim);
            }
            sim.run_until(until);
        }
    }

    /// The frame number a packet's payload names, if it is video.
    fn video_frame(data: &[u8]) -> Option<(u32, u8)> {
        (data.len() > 12 + 7 && data[12] == 0x7c)
            .then(|| (u32::from_be_bytes(data[14..18].try_into().unwrap()), data[18]))
    }

    fn viewer_udp(sim: &mut Sim, key: SessionKey, port: u16) -> [u32; 2] {
        let setup = |track: u32, port: u16, session: Option<SessionKey>| {
            let session = session.map_or(String::new(), |k| format!("Session: {}\r\n", session_id(k)));
            request(&format!(
                "SETUP rtsp://h/live/cam/trackID={track} RTSP/1.0\r\nCSeq: 1\r\n{session}\
                 Transport: RTP/AVP;unicast;client_port={port}-{}\r\n\r\n",
                port + 1
            ))
        };
        let video = sim.ask(|reply| Command::NewViewer {
            key,
            path: "/live/cam".into(),
            broadcast: desc(),
            request: setup(1, port, None),
            client: addr(40_000),
            conn: None,
            reply,
        });
        assert_eq!(video.status, 200, "{video:?}");
        let audio = sim.control(key, &setup(2, port + 2, Some(key)));
        assert_eq!(audio.status, 200, "{audio:?}");
        [ssrc(&video), ssrc(&audio)]
    }

    fn play(sim: &mut Sim, key: SessionKey) -> Response {
        let text = format!(
            "PLAY rtsp://h/live/cam RTSP/1.0\r\nCSeq: 3\r\nSession: {}\r\nRange: npt=30-\r\n\r\n",
            session_id(key)
        );
        let r = sim.control(key, &request(&text));
        assert_eq!(r.status, 200, "{r:?}");
        r
    }

    fn to_port(sim: &Sim, port: u16) -> Vec<Datagram> {
        sim.rtp.iter().filter(|d| d.to.port() == port).cloned().collect()
    }

    #[test]
    fn a_viewer_starts_at_the_latest_key_frame_then_follows_live() {
        let mut sim = Sim::new(config(60));
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(10);
        // 1.5 s of broadcast: key frames at frames 0, 10, 20, 30.
        publisher.run(&mut sim, 1_500 * MS);
        let ssrcs = viewer_udp(&mut sim, 1, 5000);
        let r = play(&mut sim, 1);
        assert_eq!(
            r.headers.get("Range"),
            Some("npt=0.000-"),
            "no seeking in a live broadcast"
        );
        let info = rtp_info(&r);
        sim.run_until(sim.now + 2 * MS);
        let video = to_port(&sim, 5000);
        let first = video_frame(&video[0].data).unwrap();
        let newest_key = (publisher.frame - 1) / 10 * 10;
        assert_eq!(
            first,
            (newest_key, 0),
            "starts at the first packet of the newest key frame"
        );
        // The whole GOP up to the live edge went at once, in order.
        let frames: Vec<(u32, u8)> = video.iter().map(|d| video_frame(&d.data).unwrap()).collect();
        let want: Vec<(u32, u8)> = (newest_key..publisher.frame).flat_map(|f| [(f, 0), (f, 1)]).collect();
        assert_eq!(frames, want);
        assert!(
            video.iter().all(|d| d.at == video[0].at),
            "the catch-up is sent as fast as it can go"
        );
        // Live from here: each new frame goes within a round of arriving.
        let before = video.len();
        let start = sim.now;
        publisher.run(&mut sim, start + 1_000 * MS);
        let video = to_port(&sim, 5000);
        assert_eq!(video.len() - before, 2 * 25, "every packet of the last second");
        let audio = to_port(&sim, 5002);
        assert!(!audio.is_empty());
        for (i, (stream, ssrc)) in [(video, ssrcs[0]), (audio, ssrcs[1])].into_iter().enumerate() {
            let headers: Vec<Rtp> = stream.iter().map(|d| rtp(&d.data)).collect();
            assert!(headers.iter().all(|h| h.ssrc == ssrc), "the viewer's own SSRC");
            assert!(
                headers.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1)),
                "continuous sequence numbers of the viewer's own"
            );
            assert_eq!(headers[0].seq, info[i].0, "RTP-Info names the first packet");
            assert_eq!(headers[0].ts, info[i].1, "RTP-Info names the first timestamp");
        }
        // The publisher's timestamps, moved by one offset per stream.
        let v = to_port(&sim, 5000);
        let offset = rtp(&v[0].data)
            .ts
            .wrapping_sub(video_frame(&v[0].data).unwrap().0 * 3600);
        assert!(v
            .iter()
            .all(|d| rtp(&d.data).ts.wrapping_sub(video_frame(&d.data).unwrap().0 * 3600) == offset));
        let lateness = sim.core.stats().lateness_ms(1.0);
        assert!(lateness <= 1.0, "live packets wait at most a round: {lateness} ms");
    }

    #[test]
    fn a_stalled_viewer_loses_only_its_own_packets_whole_frames_first() {
        let mut sim = Sim::new(Config {
            tcp_queue_bytes: 16 * 1024,
            ..config(60)
        });
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(25);
        publisher.run(&mut sim, 200 * MS);
        let setup = |track: u32, channels: &str, session: &str| {
            request(&format!(
                "SETUP rtsp://h/live/cam/trackID={track} RTSP/1.0\r\nCSeq: {track}\r\n{session}\
                 Transport: RTP/AVP/TCP;unicast;interleaved={channels}\r\n\r\n"
            ))
        };
        for (key, conn) in [(1, 1), (2, 2)] {
            sim.input(Input::ConnOpened {
                conn,
                client: addr(50_000 + conn as u16),
                tunnelled: false,
            });
            sim.input(Input::Command(Command::NewViewer {
                key,
                path: "/live/cam".into(),
                broadcast: desc(),
                request: setup(1, "0-1", ""),
                client: addr(50_000 + conn as u16),
                conn: Some(conn),
                reply: 0,
            }));
            let session = format!("Session: {}\r\n", session_id(key));
            sim.input(Input::ConnRequest {
                conn,
                key,
                request: setup(2, "2-3", &session),
            });
            let play = format!(
                "PLAY rtsp://h/live/cam RTSP/1.0\r\nCSeq: 20\r\nSession: {}\r\n\r\n",
                session_id(key)
            );
            sim.input(Input::ConnRequest {
                conn,
                key,
                request: request(&play),
            });
            assert!(sim.responses(conn).iter().all(|r| r.status == 200));
        }
        sim.stalled.insert(2);
        let start = sim.now;
        // Past the replica's buffer: the stalled one falls out of it.
        publisher.run(&mut sim, start + 10_000 * MS);
        sim.run_until(sim.now + 5 * MS);
        // The reader got every frame from its start, whole.
        let frames: Vec<(u32, u8)> = sim.frames(1, 0).iter().filter_map(|d| video_frame(d)).collect();
        let first = frames[0].0;
        let want: Vec<(u32, u8)> = (first..publisher.frame).flat_map(|f| [(f, 0), (f, 1)]).collect();
        assert_eq!(frames, want, "the reading viewer lost nothing");
        // The stalled one was held to what its queue takes, fell behind the
        // replica and lost the rest; the core counted it.
        assert!(sim.core.stats().live_dropped > 0, "{:?}", sim.core.stats());
        // When it reads again it resumes on a frame boundary, whole frames on.
        sim.stalled.remove(&2);
        sim.write(2);
        let later = sim.now;
        publisher.run(&mut sim, later + 500 * MS);
        let frames: Vec<(u32, u8)> = sim.frames(2, 0).iter().filter_map(|d| video_frame(d)).collect();
        let tail: Vec<&(u32, u8)> = frames.iter().rev().take(20).collect();
        assert!(
            tail.windows(2).all(|w| (w[0].1 == 1 && w[1].1 == 0 && w[0].0 == w[1].0)
                || (w[0].1 == 0 && w[1].1 == 1 && w[0].0 == w[1].0 + 1)),
            "whole frames in order once it reads: {tail:?}"
        );
    }

    #[test]
    fn viewers_waiting_at_the_live_edge_keep_no_schedule_room_or_write_buffer() {
        // Every packet wakes every viewer at the live edge. They are served
        // from a list of their own; in the schedule each bucket the packets
        // fell in grew to room for every viewer, and an interleaved
        // viewer's queue kept what its join burst grew it to.
        let mut sim = Sim::new(config(60));
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(25);
        publisher.run(&mut sim, 1_500 * MS);
        const VIEWERS: u64 = 100;
        for key in 1..=VIEWERS {
            viewer_udp(&mut sim, key, 6000 + 4 * key as u16);
            play(&mut sim, key);
        }
        let (key, conn) = (VIEWERS + 1, 1);
        sim.input(Input::ConnOpened {
            conn,
            client: addr(50_001),
            tunnelled: false,
        });
        let setup = |track: u32, channels: &str, session: &str| {
            request(&format!(
                "SETUP rtsp://h/live/cam/trackID={track} RTSP/1.0\r\nCSeq: {track}\r\n{session}\
                 Transport: RTP/AVP/TCP;unicast;interleaved={channels}\r\n\r\n"
            ))
        };
        sim.input(Input::Command(Command::NewViewer {
            key,
            path: "/live/cam".into(),
            broadcast: desc(),
            request: setup(1, "0-1", ""),
            client: addr(50_001),
            conn: Some(conn),
            reply: 0,
        }));
        let session = format!("Session: {}\r\n", session_id(key));
        sim.input(Input::ConnRequest {
            conn,
            key,
            request: setup(2, "2-3", &session),
        });
        let play = format!("PLAY rtsp://h/live/cam RTSP/1.0\r\nCSeq: 9\r\n{session}\r\n");
        sim.input(Input::ConnRequest {
            conn,
            key,
            request: request(&play),
        });
        // Two seconds live: 150 packets, each waking every viewer.
        let start = sim.now;
        publisher.run(&mut sim, start + 2_000 * MS);
        sim.run_until(sim.now + 5 * MS);
        let per_viewer: Vec<usize> = (1..=VIEWERS)
            .map(|k| to_port(&sim, 6000 + 4 * k as u16).len())
            .collect();
        assert!(per_viewer.iter().all(|&n| n == per_viewer[0]), "{per_viewer:?}");
        let tcp = sim.frames(conn, 0).len();
        assert_eq!(tcp, per_viewer[0], "the interleaved viewer got as much video");
        assert!(tcp >= 2 * 50, "every packet of the last two seconds: {tcp}");
        let room = sim.core.schedule.capacity();
        assert!(
            room < VIEWERS as usize * 2,
            "the schedule has room for {room} entries for {VIEWERS} viewers"
        );
        let kept = sim.core.conns.get(&conn).map(|c| c.out.capacity());
        assert_eq!(kept, Some(0), "a written-out connection keeps no queue room");
    }

    #[test]
    fn a_viewer_that_plays_before_any_key_frame_waits_for_one() {
        let mut sim = Sim::new(config(60));
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(10);
        publisher.frame = 3;
        viewer_udp(&mut sim, 1, 5000);
        play(&mut sim, 1);
        publisher.run(&mut sim, 1_000 * MS);
        sim.run_until(sim.now + 5 * MS);
        let video = to_port(&sim, 5000);
        assert!(!video.is_empty(), "the viewer got the broadcast");
        assert_eq!(
            video_frame(&video[0].data),
            Some((10, 0)),
            "from the first key frame on"
        );
    }

    #[test]
    fn the_end_of_a_broadcast_sends_what_is_left_then_bye() {
        let mut sim = Sim::new(config(60));
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(10);
        publisher.run(&mut sim, 500 * MS);
        let ssrcs = viewer_udp(&mut sim, 1, 5000);
        play(&mut sim, 1);
        publisher.run(&mut sim, 1_000 * MS);
        publisher.frame(&mut sim);
        sim.input(Input::Live(News::End { id: 42 }));
        let last = publisher.frame - 1;
        sim.run_until(sim.now + 2_000 * MS);
        let video = to_port(&sim, 5000);
        assert_eq!(
            video_frame(&video.last().unwrap().data),
            Some((last, 1)),
            "the last packet went"
        );
        let byes: Vec<u32> = sim.rtcp.iter().flat_map(|d| rtcp_of(&d.data).1).collect();
        assert!(
            ssrcs.iter().all(|s| byes.contains(s)),
            "a BYE for each stream: {byes:?}"
        );
        sim.run_until(sim.now + 10_000 * MS);
        assert_eq!(sim.core.sessions(), 0, "the viewer's session ended");
        // A viewer of a broadcast that never started again sees nothing.
        assert!(sim
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::SessionEnded { key: Some(1), .. })));
    }

    #[test]
    fn sender_reports_map_the_publishers_clock() {
        let mut sim = Sim::new(config(60));
        sim.input(Input::Live(News::Start(desc())));
        let mut publisher = Publisher::new(10);
        publisher.run(&mut sim, 500 * MS);
        // The publisher says its video clock read 900 000 at NTP 1000.0 s,
        // received at 0.5 s.
        sim.input(Input::Live(News::Report {
            id: 42,
            track: 0,
            ntp: 1000 << 32,
            rtp_ts: 900_000,
            at: 500 * MS,
        }));
        let ssrcs = viewer_udp(&mut sim, 1, 5000);
        play(&mut sim, 1);
        let offset = {
            publisher.run(&mut sim, 600 * MS);
            let v = to_port(&sim, 5000);
            rtp(&v[0].data)
                .ts
                .wrapping_sub(video_frame(&v[0].data).unwrap().0 * 3600)
        };
        publisher.run(&mut sim, 6_000 * MS);
        let (reports, _) = sim
            .rtcp
            .iter()
            .map(|d| rtcp_of(&d.data))
            .find(|(r, _)| r.iter().any(|(s, _)| *s == ssrcs[0]))
            .expect("a sender report for the video");
        let (_, info) = reports.iter().find(|(s, _)| *s == ssrcs[0]).unwrap();
        // Our NTP time of the report is `now` on our wall clock; the RTP
        // time is the publisher's clock at that moment plus the offset.
        let ours = rtcp::ntp_from_unix(config(60).wall_at_zero);
        let at_ns =
            ((info.ntp - ours) >> 32) * 1_000_000_000 + ((((info.ntp - ours) & 0xffff_ffff) * 1_000_000_000) >> 32);
        let expected = 900_000u32
            .wrapping_add(((at_ns - 500 * MS) * 9 / 100_000) as u32)
            .wrapping_add(offset);
        assert!(
            (info.rtp_ts.wrapping_sub(expected) as i32).abs() <= 1,
            "{} vs {expected}",
            info.rtp_ts
        );
    }
}

#[test]
fn after_a_stall_the_backlog_goes_in_bounded_rounds() {
    // The core starved for longer than the movie: every session's whole
    // movie is overdue at once. Rounds take at most ROUND_PACKETS (plus the
    // one session that crosses it), and the rest follows a round later.
    let mut sim = Sim::new(config(60));
    let sessions = 2 * pacer::ROUND_PACKETS / (VIDEO_PACKETS + AUDIO_PACKETS) + 2;
    for i in 0..sessions {
        let key = 0x300 + i as SessionKey;
        sim.udp_session(key, 5000 + 4 * i as u16);
        assert_eq!(sim.method(key, "PLAY", "").status, 200);
    }
    sim.now = 12 * S;
    sim.core.handle_timeout(sim.now);
    sim.after();
    sim.run_until(20 * S);
    let mut per_round: HashMap<Nanos, usize> = HashMap::new();
    for d in &sim.rtp {
        *per_round.entry(d.at).or_default() += 1;
    }
    let total = sessions * (VIDEO_PACKETS + AUDIO_PACKETS);
    assert_eq!(sim.rtp.len(), total, "every packet went");
    assert_eq!(sim.core.stats().packets as usize, total);
    let largest = per_round.values().copied().max().unwrap();
    assert!(
        largest <= pacer::ROUND_PACKETS + VIDEO_PACKETS + AUDIO_PACKETS,
        "a round of {largest} packets"
    );
    assert!(per_round.len() >= 2, "one round took all {total} packets");
}

// ---------------------------------------------------------------------------
// Icecast listeners.

fn mp3_start(queue_bytes: usize) -> Box<ListenerStart> {
    let mp3 = loader::mp3::Mp3::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp3")).unwrap();
    Box::new(ListenerStart {
        feed: crate::icecast::listener::Feed::File(Arc::new(mp3)),
        path: "/sample.mp3".into(),
        head: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        metaint: None,
        metadata: crate::icecast::icy::Metadata::title("t"),
        user_agent: Some("test".into()),
        queue_bytes,
    })
}

/// Drives `core` from `from` to `to` in 10 ms steps, taking listener
/// `conn`'s bytes whenever `reading`, and returns them, whether the
/// listener is closed, and the events.
fn run_listener(
    core: &mut ShardCore,
    conn: ConnId,
    from: Nanos,
    to: Nanos,
    reading: bool,
    got: &mut Vec<u8>,
) -> (bool, Vec<Event>) {
    let mut events = Vec::new();
    let mut closed = false;
    let mut t = from;
    let mut buf = VecDeque::new();
    while t <= to && !closed {
        if core.poll_timeout().is_some_and(|d| d <= t) {
            core.handle_timeout(t);
        }
        while let Some(o) = core.poll_output() {
            if let Output::Event(e) = o {
                events.push(e);
            }
        }
        if reading {
            loop {
                match core.take_listener_bytes(conn, &mut buf) {
                    Taken::Bytes => {
                        for b in buf.drain(..) {
                            got.extend_from_slice(&b);
                        }
                        core.handle_input(t, Input::ConnWritten { conn });
                    }
                    Taken::Idle => break,
                    Taken::Closed => {
                        closed = true;
                        break;
                    }
                }
            }
            while let Some(o) = core.poll_output() {
                if let Output::Event(e) = o {
                    events.push(e);
                }
            }
        }
        t += 10 * MS;
    }
    (closed, events)
}

#[test]
fn a_listener_gets_the_head_the_burst_then_real_time_then_the_end() {
    let mut core = ShardCore::new(config(60), Rng::from_seed(1));
    let start = mp3_start(512 * 1024);
    let crate::icecast::listener::Feed::File(mp3) = start.feed.clone() else {
        unreachable!()
    };
    let frames: Vec<u8> = mp3.spans(0..mp3.frames().len()).flat_map(|s| mp3.slice(s)).collect();
    let t0 = 3 * S;
    core.handle_input(
        t0,
        Input::ListenerOpened {
            conn: 9,
            client: addr(5000),
            start,
        },
    );
    assert_eq!(core.listeners(), 1);
    let mut got = Vec::new();
    // One second in: the head, and 3 s of audio (the burst's 2 and 1 more).
    let (closed, _) = run_listener(&mut core, 9, t0, t0 + S, true, &mut got);
    assert!(!closed);
    let head = b"HTTP/1.1 200 OK\r\n\r\n".len();
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n\r\n"));
    let audio = got.len() - head;
    let due = mp3.offset_due(3 * S) - mp3.frames()[0].offset;
    assert!(
        audio as u64 <= due && audio as u64 + 4 * 418 >= due,
        "{audio} bytes a second in, {due} due"
    );
    // To the end: every frame once, in order, then the record.
    let (closed, events) = run_listener(&mut core, 9, t0 + S + 10 * MS, t0 + 20 * S, true, &mut got);
    assert!(closed, "the end of the file ends the stream");
    assert_eq!(&got[head..], &frames[..]);
    let record = events
        .iter()
        .find_map(|e| match e {
            Event::ListenerEnded { record } => Some(record),
            _ => None,
        })
        .expect("an access-log record");
    assert_eq!(record.bytes, got.len() as u64);
    assert_eq!(record.uri, "/sample.mp3");
    assert!(events.iter().any(|e| matches!(e, Event::ConnectionClosed { .. })));
    assert_eq!(core.listeners(), 0);
    assert_eq!(core.stats().listeners_started, 1);
    assert_eq!(core.stats().listeners_ended, 1);
    assert_eq!(core.stats().listeners_dropped, 0);
    assert_eq!(core.stats().listener_bytes, got.len() as u64);
}

#[test]
fn a_listener_that_stops_reading_is_dropped_and_others_play_on() {
    let mut core = ShardCore::new(config(60), Rng::from_seed(2));
    let t0 = S;
    core.handle_input(
        t0,
        Input::ListenerOpened {
            conn: 1,
            client: addr(5000),
            start: mp3_start(16 * 1024),
        },
    );
    core.handle_input(
        t0,
        Input::ListenerOpened {
            conn: 2,
            client: addr(5002),
            start: mp3_start(16 * 1024),
        },
    );
    let mut buf = VecDeque::new();
    // The slow one takes its first batch (the head and burst) and never
    // says it was written; the other reads all along.
    assert_eq!(core.take_listener_bytes(1, &mut buf), Taken::Bytes);
    let mut good = Vec::new();
    let mut t = t0;
    let mut dropped_at = None;
    while t < t0 + 12 * S {
        let (_, _) = run_listener(&mut core, 2, t, t, true, &mut good);
        if dropped_at.is_none() && core.stats().listeners_dropped == 1 {
            dropped_at = Some(t);
        }
        t += 10 * MS;
    }
    // 16 KiB behind at 128 kbit/s: about a second after the burst ran out.
    let dropped_at = dropped_at.expect("the slow listener is dropped");
    assert!(
        dropped_at > t0 + S / 2 && dropped_at < t0 + 4 * S,
        "dropped at {dropped_at}"
    );
    assert_eq!(core.take_listener_bytes(1, &mut buf), Taken::Closed);
    let crate::icecast::listener::Feed::File(mp3) = mp3_start(0).feed else {
        unreachable!()
    };
    let frames: usize = mp3.frames().iter().map(|f| f.len as usize).sum();
    assert_eq!(
        good.len(),
        b"HTTP/1.1 200 OK\r\n\r\n".len() + frames,
        "the other got it all"
    );
}

/// Asks for a snapshot (with sessions) and returns it.
fn snapshot_of(sim: &mut Sim) -> Snapshot {
    sim.next_reply += 1;
    let id = sim.next_reply;
    sim.input(Input::Command(Command::Snapshot {
        reply: id,
        sessions: true,
    }));
    let at = sim
        .events
        .iter()
        .position(|(_, e)| matches!(e, Event::Snapshot { reply, .. } if *reply == id))
        .expect("a snapshot");
    match sim.events.remove(at).1 {
        Event::Snapshot { snapshot, .. } => *snapshot,
        _ => unreachable!(),
    }
}

/// Ends a session by the operator's command; whether it was there.
fn end_by_operator(sim: &mut Sim, key: SessionKey) -> bool {
    sim.next_reply += 1;
    let id = sim.next_reply;
    sim.input(Input::Command(Command::End { key, reply: id }));
    let at = sim
        .events
        .iter()
        .position(|(_, e)| matches!(e, Event::Ended { reply, .. } if *reply == id))
        .expect("an answer");
    match sim.events.remove(at).1 {
        Event::Ended { found, .. } => found,
        _ => unreachable!(),
    }
}

#[test]
fn a_snapshot_copies_each_session_as_it_is() {
    let mut sim = Sim::new(config(60));
    let [video, _] = sim.udp_session(0xD1, 5000);
    sim.tcp_session(0xD2, 1);
    sim.run_until(S);
    assert_eq!(sim.method(0xD1, "PLAY", "").status, 200);
    sim.run_until(3 * S);
    // The client reports 5 lost and a jitter of 900 ticks at 90 kHz (10 ms),
    // then 7 lost: 7 in all, not 12.
    for (lost, at) in [(5, 3 * S), (7, 4 * S)] {
        sim.run_until(at);
        let mut report = Vec::new();
        let block = rtcp::ReportBlock {
            ssrc: video,
            cumulative_lost: lost,
            jitter: 900,
            ..Default::default()
        };
        rtcp::receiver_report(&mut report, 0x2222, &[block]);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &report,
        });
    }
    let snap = snapshot_of(&mut sim);
    assert_eq!(snap.by_transport, [1, 1, 0]);
    assert_eq!(snap.connections, 1);
    assert_eq!(snap.sessions.len(), 2);
    let udp = snap.sessions.iter().find(|s| s.key == 0xD1).unwrap();
    let tcp = snap.sessions.iter().find(|s| s.key == 0xD2).unwrap();
    assert_eq!((udp.transport, udp.state, udp.kind), ("udp", "playing", "vod"));
    assert_eq!((tcp.transport, tcp.state), ("tcp", "ready"));
    assert_eq!(udp.id, session_id(0xD1));
    assert_eq!(udp.path, "/sample.mp4");
    assert_eq!(udp.user_agent.as_deref(), Some("sim"));
    assert_eq!(udp.age_ns, 4 * S);
    assert_eq!(udp.lost, Some(7));
    assert_eq!(udp.jitter_us, Some(10_000));
    assert_eq!(tcp.lost, None);
    let sent: u64 = sim.rtp.iter().map(|d| d.data.len() as u64).sum();
    assert_eq!((udp.packets, udp.bytes), (sim.rtp.len() as u64, sent));
    assert_eq!(snap.stats.rtcp_lost, 7);
    assert_eq!(snap.stats.rtcp_jitter.len(), 2);
    // One PLAY, one first packet, in the PLAY's own round.
    assert_eq!(snap.stats.first_packet.len(), 1);
    assert!(
        snap.stats.first_packet.max() <= LOOKAHEAD / 1_000,
        "{}",
        snap.stats.first_packet.max()
    );
    // Without sessions, the counts alone.
    sim.next_reply += 1;
    let id = sim.next_reply;
    sim.input(Input::Command(Command::Snapshot {
        reply: id,
        sessions: false,
    }));
    assert!(sim.events.iter().any(|(_, e)| matches!(e, Event::Snapshot { snapshot, .. } if snapshot.sessions.is_empty() && snapshot.by_transport == [1, 1, 0])));
}

#[test]
fn an_operator_ends_a_session_and_its_connection() {
    let mut sim = Sim::new(config(60));
    let [video, audio] = sim.udp_session(0xE1, 5000);
    let [tv, _] = sim.tcp_session(0xE2, 1);
    assert_eq!(sim.method(0xE1, "PLAY", "").status, 200);
    assert_eq!(sim.on_conn(1, 0xE2, "PLAY").status, 200);
    sim.run_until(2 * S);
    assert!(end_by_operator(&mut sim, 0xE1));
    assert!(!sim.core.has_session(0xE1));
    assert_eq!(sim.byes_of(video).len(), 1);
    assert_eq!(sim.byes_of(audio).len(), 1);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, Some(0xE1));
    assert!(ended[0].2.packets > 0);
    // Gone: a second order finds nothing, and a request is 454.
    assert!(!end_by_operator(&mut sim, 0xE1));
    assert_eq!(sim.method(0xE1, "GET_PARAMETER", "").status, 454);
    // Over TCP the connection closes behind the BYE, and nothing follows it.
    assert!(end_by_operator(&mut sim, 0xE2));
    let last = sim.frames(1, 1).last().cloned().expect("RTCP on the video's channel");
    assert_eq!(rtcp_of(&last).1, vec![tv]);
    let mut buf = Vec::new();
    assert_eq!(sim.core.take_conn_bytes(1, &mut buf), Taken::Closed);
    assert!(sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::ConnectionClosed { .. })));
    let written = sim.written[&1].len();
    sim.run_until(4 * S);
    assert_eq!(sim.written[&1].len(), written);
    assert_eq!(snapshot_of(&mut sim).sessions.len(), 0);
}

#[test]
fn responses_on_owned_connections_are_counted_by_method_and_status() {
    let mut sim = Sim::new(config(60));
    sim.tcp_session(0xF1, 1);
    assert_eq!(sim.on_conn(1, 0xF1, "PLAY").status, 200);
    sim.input(Input::ConnAnswer {
        conn: 1,
        method: None,
        response: Response::new(400, None),
    });
    // Requests through the control core are its to count.
    sim.udp_session(0xF2, 6000);
    let counts: Vec<_> = sim.core.stats().requests.iter().collect();
    assert_eq!(counts, vec![("INVALID", 400, 1), ("PLAY", 200, 1), ("SETUP", 200, 2)]);
}

mod repair {
    //! NACK/RTX: what an RTP/AVPF session gets, what a plain one does not,
    //! and feedback that is not to be honoured.

    use super::*;
    use crate::repair::offer;

    fn nack(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        rtcp::generic_nack(&mut out, 0x2222, media_ssrc, lost);
        out
    }

    /// The RTX packets sent to `to` since `from` datagrams.
    fn rtx_to(sim: &Sim, to: SocketAddr, rtx_pt: u8, from: usize) -> Vec<Vec<u8>> {
        sim.rtp[from..]
            .iter()
            .filter(|d| d.to == to && d.data[1] & 0x7f == rtx_pt)
            .map(|d| d.data.clone())
            .collect()
    }

    fn rtx_pt() -> u8 {
        offer::for_track(movie().sdp(), VIDEO)
            .expect("the sample's video gets RTX")
            .rtx_pt
    }

    /// Plays an RTP/AVPF session (0xB1, port 5000) and a plain one (0xB2,
    /// port 7000) for a second.
    fn two_sessions() -> (Sim, [u32; 2], [u32; 2]) {
        let mut sim = Sim::new(config(60));
        let avpf = sim.udp_session_with(0xB1, 5000, "RTP/AVPF");
        let plain = sim.udp_session(0xB2, 7000);
        assert_eq!(sim.method(0xB1, "PLAY", "").status, 200);
        assert_eq!(sim.method(0xB2, "PLAY", "").status, 200);
        sim.run_until(S);
        (sim, avpf, plain)
    }

    /// The RTX packets for the same NACK sent twice, `gap` apart, for the
    /// newest video packet: one when the repeat is within the dedupe
    /// window (a round trip), two when past it.
    fn rtx_for_a_repeat(sim: &mut Sim, video: u32, gap: Nanos) -> usize {
        let seq = sim.rtp_of(video).last().expect("video went").1.seq;
        let before = sim.rtp.len();
        for at in [sim.now, sim.now + gap] {
            sim.run_until(at);
            sim.input(Input::Rtcp {
                from: addr(5001),
                data: &nack(video, &[seq]),
            });
        }
        rtx_to(sim, addr(5000), rtx_pt(), before).len()
    }

    #[test]
    fn a_receiver_reports_round_trip_is_how_soon_a_repeated_nack_is_answered() {
        let (mut sim, [video, _], _) = two_sessions();
        // No report yet: a round trip of 100 ms is assumed.
        assert_eq!(rtx_for_a_repeat(&mut sim, video, 40 * MS), 1);
        // A receiver report whose LSR and DLSR put the round trip at 30 ms
        // (RFC 3550 section 6.4.1): it echoes our last SR and says it
        // waited all but 30 ms of the time since.
        let (sr_at, sr) = *sim.reports_of(video).last().expect("an SR went");
        let t = sim.now + 200 * MS;
        sim.run_until(t);
        let held = (sim.now - sr_at - 30 * MS) * 65_536 / S;
        let mut rr = Vec::new();
        let block = rtcp::ReportBlock {
            ssrc: video,
            lsr: rtcp::ntp_middle32(sr.ntp),
            dlsr: held as u32,
            ..Default::default()
        };
        rtcp::receiver_report(&mut rr, 0x2222, &[block]);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &rr,
        });
        // Now a repeat 40 ms on is past the round trip: answered again.
        assert_eq!(rtx_for_a_repeat(&mut sim, video, 40 * MS), 2);
        // Within it, still one.
        let t = sim.now + 200 * MS;
        sim.run_until(t);
        assert_eq!(rtx_for_a_repeat(&mut sim, video, 20 * MS), 1);
    }

    #[test]
    fn an_avpf_session_gets_what_it_nacks_as_rtx_and_a_plain_one_nothing() {
        let (mut sim, [video, _], [plain_video, _]) = two_sessions();
        let sent: Vec<_> = sim.rtp_of(video).into_iter().map(|(_, r)| r.seq).collect();
        let originals: HashMap<u16, Vec<u8>> = sim
            .rtp
            .iter()
            .filter(|d| rtp(&d.data).ssrc == video)
            .map(|d| (rtp(&d.data).seq, d.data.clone()))
            .collect();
        assert!(sent.len() > 20, "{}", sent.len());
        let lost = [sent[3], sent[10], sent[11], sent[sent.len() - 2]];
        let before = sim.rtp.len();
        let media_packets = sim.core.stats().packets;
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &nack(video, &lost),
        });
        // Answered in the same call, each once, byte for byte the original
        // behind its RTX header and original sequence number.
        let rtx = rtx_to(&sim, addr(5000), rtx_pt(), before);
        assert_eq!(rtx.len(), lost.len());
        let mut rtx_seqs = Vec::new();
        for (p, seq) in rtx.iter().zip(lost) {
            let r = proto::rtx::RtxPacket::parse(p).unwrap();
            assert_eq!(r.osn, seq);
            assert_ne!(r.header.ssrc, video, "RTX has an SSRC of its own");
            let original = &originals[&seq];
            assert_eq!(r.original(original[1] & 0x7f, video).to_bytes(), original[..12]);
            assert_eq!(r.payload, &original[12..]);
            rtx_seqs.push(r.header.sequence);
        }
        assert!(
            rtx_seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{rtx_seqs:?}"
        );
        let stats = sim.core.stats().repair;
        assert_eq!((stats.nacks, stats.resent, stats.rtx_sent), (1, 4, 4), "{stats:?}");
        // Resends are not media: the stream's own counts (its sender
        // reports) do not grow.
        assert_eq!(sim.core.stats().packets, media_packets);

        // The plain session's client NACKs too (ffmpeg does, when the SDP
        // offers feedback): nothing is kept for it, nothing goes.
        let plain_sent: Vec<_> = sim.rtp_of(plain_video).into_iter().map(|(_, r)| r.seq).collect();
        let before = sim.rtp.len();
        sim.input(Input::Rtcp {
            from: addr(7001),
            data: &nack(plain_video, &plain_sent[2..6]),
        });
        assert_eq!(sim.rtp.len(), before);
        assert_eq!(sim.core.stats().repair.unwanted, 1);
    }

    #[test]
    fn hostile_feedback_is_bounded_counted_and_disturbs_no_one() {
        let (mut sim, [video, audio], [plain_video, _]) = two_sessions();
        let sent: Vec<_> = sim.rtp_of(video).into_iter().map(|(_, r)| r.seq).collect();
        let last = *sent.last().unwrap();
        let pt = rtx_pt();
        let count = |sim: &Sim, from: usize| rtx_to(sim, addr(5000), pt, from).len();

        // Numbers never sent: ahead of the stream, and far off.
        let before = sim.rtp.len();
        let ahead: Vec<u16> = (1..=40)
            .map(|i| last.wrapping_add(i))
            .chain([last.wrapping_add(30_000)])
            .collect();
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &nack(video, &ahead),
        });
        assert_eq!(count(&sim, before), 0);
        assert_eq!(sim.core.stats().repair.never_sent, 41);

        // A huge bitmask: every number of the sequence space, in one NACK.
        let everything: Vec<u16> = (0..=u16::MAX).collect();
        let huge = nack(video, &everything);
        let before = sim.rtp.len();
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &huge,
        });
        let r = sim.core.stats().repair;
        assert!(r.truncated >= 1, "{r:?}");
        assert!(r.requested < 2_000, "the rest of the NACK is not even read: {r:?}");
        // What was sent is a share of the stream's rate, not the history.
        let resent = count(&sim, before);
        assert!(resent <= sent.len(), "{resent}");

        // A flood of the same NACK: a packet goes again once a round trip.
        let before = sim.rtp.len();
        let one = nack(video, &[sent[5]]);
        for _ in 0..1000 {
            sim.input(Input::Rtcp {
                from: addr(5001),
                data: &one,
            });
        }
        assert!(count(&sim, before) <= 1);
        assert!(sim.core.stats().repair.duplicate + sim.core.stats().repair.truncated > 0);

        // Feedback about this session's streams from the plain session's
        // address (a client the shard knows), and from nobody it knows.
        let before = sim.rtp.len();
        let forged_before = sim.core.stats().repair.forged;
        let bad_before = sim.core.stats().bad_rtcp;
        for from in [addr(7001), addr(5003), "192.0.2.9:5001".parse().unwrap()] {
            sim.input(Input::Rtcp {
                from,
                data: &nack(video, &sent[15..25]),
            });
        }
        assert_eq!(count(&sim, before), 0);
        // 5003 is the audio stream's RTCP address, not the video's.
        assert_eq!(sim.core.stats().repair.forged - forged_before, 2);
        assert_eq!(sim.core.stats().bad_rtcp - bad_before, 1);

        // NACKs for SSRCs the shard does not have, and qtak acks for one:
        // nothing, and nothing breaks.
        let before = sim.rtp.len();
        let mut junk = nack(0xdead_beef, &[1, 2, 3]);
        proto::qtss::ack(&mut junk, proto::qtss::ACK, 0x2222, 0xdead_beef, 7, &[0xff; 4]);
        proto::qtss::ack(&mut junk, proto::qtss::ACK, 0x2222, audio, 7, &[0xff; 4]);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &junk,
        });
        assert_eq!(count(&sim, before), 0);

        // Through all of it both sessions kept to their schedule: a second
        // more of media for each, in order.
        let video_before = sim.rtp_of(video).len();
        let plain_before = sim.rtp_of(plain_video).len();
        sim.run_until(2 * S);
        assert!(sim.rtp_of(video).len() > video_before + 10);
        assert!(sim.rtp_of(plain_video).len() > plain_before + 10);
        let seqs: Vec<u16> = sim.rtp_of(video).into_iter().map(|(_, r)| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }
}

mod reliable_udp {
    //! DSS's reliable UDP: what a session that asked with `x-Retransmit`
    //! gets when its acks say what came, how its window holds it back, and
    //! acknowledgements that are not to be honoured.

    use super::*;
    use crate::repair::sender;
    use proto::qtss;

    /// A reliable-UDP session (0xC1, port 5000) and a plain one (0xC2,
    /// port 7000), both playing.
    fn two_sessions() -> (Sim, [u32; 2], [u32; 2]) {
        let mut sim = Sim::new(config(60));
        let (reliable, answers) =
            sim.udp_session_headers(0xC1, 5000, "RTP/AVP", "x-Retransmit: our-retransmit;window=128\r\n");
        for a in &answers {
            // DSS echoed the client's x-Retransmit when it agreed.
            assert_eq!(
                a.headers.get("x-Retransmit"),
                Some("our-retransmit;window=128"),
                "{a:?}"
            );
        }
        let plain = sim.udp_session(0xC2, 7000);
        assert_eq!(sim.method(0xC1, "PLAY", "").status, 200);
        assert_eq!(sim.method(0xC2, "PLAY", "").status, 200);
        (sim, reliable, plain)
    }

    /// Acks everything sent of `ssrc` from `from` on, but `except`.
    pub(super) fn ack_all(sim: &mut Sim, ssrc: u32, rtcp_port: u16, except: &[u16]) {
        let seqs: Vec<u16> = sim
            .rtp_of(ssrc)
            .into_iter()
            .map(|(_, r)| r.seq)
            .filter(|s| !except.contains(s))
            .collect();
        sim.input(Input::Rtcp {
            from: addr(rtcp_port),
            data: &acks(ssrc, &seqs),
        });
    }

    #[test]
    fn unacked_video_is_let_go_after_1_75_s_and_audio_after_2_5_s() {
        let (mut sim, [video, audio], _) = two_sessions();
        sim.run_until(S / 2);
        // The newest packet of each, never to be acked.
        let (v_at, v) = *sim.rtp_of(video).last().unwrap();
        let (a_at, a) = *sim.rtp_of(audio).last().unwrap();
        let ack_until = |sim: &mut Sim, until: Nanos| {
            while sim.now < until {
                let next = sim.now + 20 * MS;
                sim.run_until(next);
                ack_all(sim, video, 5001, &[v.seq]);
                ack_all(sim, audio, 5003, &[a.seq]);
            }
        };
        let resent = |sim: &Sim, ssrc: u32, seq: u16, after: Nanos| {
            sim.rtp_of(ssrc)
                .into_iter()
                .filter(|(at, r)| r.seq == seq && *at > after)
                .map(|(at, _)| at)
                .collect::<Vec<_>>()
        };
        // DSS's drop_all_video_delay and drop_all_packets_delay, from when
        // each went (at its due time, at real time).
        ack_until(&mut sim, v_at + 1800 * MS);
        assert_eq!(sim.core.stats().repair.reliable.expired, 1, "the video packet only");
        ack_until(&mut sim, a_at + 2600 * MS);
        assert_eq!(sim.core.stats().repair.reliable.expired, 2);
        let v_resent = resent(&sim, video, v.seq, v_at);
        let a_resent = resent(&sim, audio, a.seq, a_at);
        assert!(
            !v_resent.is_empty() && !a_resent.is_empty(),
            "{v_resent:?} {a_resent:?}"
        );
        assert!(v_resent.iter().all(|&t| t <= v_at + 1750 * MS), "{v_resent:?}");
        assert!(a_resent.iter().all(|&t| t <= a_at + 2500 * MS), "{a_resent:?}");
        assert!(
            a_resent.iter().any(|&t| t > a_at + 1750 * MS),
            "audio kept past video's 1.75 s: {a_resent:?}"
        );
    }

    /// The `qtsi` server information of the RTCP sent to `to`: (when, what).
    fn server_infos(sim: &Sim, to: SocketAddr) -> Vec<(Nanos, qtss::ServerInfo)> {
        sim.rtcp
            .iter()
            .filter(|d| d.to == to)
            .flat_map(|d| {
                rtcp::parse_compound(&d.data)
                    .unwrap()
                    .filter_map(|p| p.app().and_then(Result::ok))
                    .filter_map(|app| qtss::ServerInfo::parse(&app).ok())
                    .map(|info| (d.at, info))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn sender_reports_of_reliable_streams_carry_the_ack_timeout_in_qtsi() {
        let (mut sim, [video, audio], [plain_video, _]) = two_sessions();
        let mut t = 0;
        while t < 12 * S {
            t += 20 * MS;
            sim.run_until(t);
            ack_all(&mut sim, video, 5001, &[]);
            ack_all(&mut sim, audio, 5003, &[]);
        }
        for (ssrc, port) in [(video, 5001), (audio, 5003)] {
            let infos = server_infos(&sim, addr(port));
            let reports = sim.reports_of(ssrc);
            // One with each sender report of the stream, in the same datagram.
            assert_eq!(infos.len(), reports.len(), "{ssrc:08X}");
            assert!(infos.len() >= 2, "{infos:?}");
            for ((at, info), (sr_at, _)) in infos.iter().zip(&reports) {
                assert_eq!(at, sr_at);
                assert_eq!(info.ssrc, ssrc);
                let timeout = info.ack_timeout_ms.expect("an at item");
                assert!((20..=100).contains(&timeout), "{timeout}");
            }
            // The client's SSRC, once its acks gave it.
            assert_eq!(infos.last().unwrap().1.client_ssrc, 0x3333);
        }
        // Plain sessions get sender reports and no qtsi.
        assert!(!sim.reports_of(plain_video).is_empty());
        assert!(server_infos(&sim, addr(7001)).is_empty());
    }

    #[test]
    fn what_is_not_acked_goes_again_after_the_rto_as_it_first_went() {
        let (mut sim, [video, audio], [plain_video, _]) = two_sessions();
        sim.run_until(S / 4);
        let sent: Vec<u16> = sim.rtp_of(video).into_iter().map(|(_, r)| r.seq).collect();
        let audio_sent = sim.rtp_of(audio).len();
        assert!(sent.len() > 6, "{}", sent.len());
        let lost = [sent[2], sent[5]];
        let originals: HashMap<u16, Vec<u8>> = sim
            .rtp
            .iter()
            .filter(|d| rtp(&d.data).ssrc == video && lost.contains(&rtp(&d.data).seq))
            .map(|d| (rtp(&d.data).seq, d.data.clone()))
            .collect();
        ack_all(&mut sim, video, 5001, &lost);
        ack_all(&mut sim, audio, 5003, &[]);
        let r = sim.core.stats().repair.reliable;
        assert_eq!(r.acked, (sent.len() - 2 + audio_sent) as u64, "{r:?}");
        assert_eq!((r.acks_for_missing, r.unwanted), (0, 0), "{r:?}");
        let media = sim.core.stats().packets;
        let before = sim.rtp.len();
        let is_lost = |d: &Datagram| rtp(&d.data).ssrc == video && lost.contains(&rtp(&d.data).seq);
        // Packets sent after them were acked: they go again at once, well
        // within the 600 ms RTO (the early rule).
        sim.run_until(S / 2);
        let early: Vec<(u16, Nanos)> = sim.rtp[before..]
            .iter()
            .filter(|d| is_lost(d))
            .map(|d| (rtp(&d.data).seq, d.at))
            .collect();
        assert_eq!(early.len(), 2, "{early:?}");
        assert!(early.iter().all(|&(_, at)| at < S / 4 + 50 * MS), "{early:?}");
        // What is new is acked as it comes, so that only the two stay out:
        // lost again, they now wait for the RTO.
        let mut t = S / 2;
        while t < 2 * S {
            t += 50 * MS;
            sim.run_until(t);
            ack_all(&mut sim, video, 5001, &lost);
            ack_all(&mut sim, audio, 5003, &[]);
        }
        // Unacked, they go again and again, each an RTO apart.
        let again: Vec<&Datagram> = sim.rtp[before..].iter().filter(|d| is_lost(d)).collect();
        for seq in lost {
            let times: Vec<Nanos> = again.iter().filter(|d| rtp(&d.data).seq == seq).map(|d| d.at).collect();
            assert!(times.len() >= 3, "{seq}: {times:?}");
            assert!(times.windows(2).all(|w| w[1] - w[0] >= 600 * MS), "{seq}: {times:?}");
        }
        for d in &again {
            assert_eq!(d.to, addr(5000));
            assert_eq!(d.data, originals[&rtp(&d.data).seq], "byte for byte as first sent");
        }
        let r = sim.core.stats().repair.reliable;
        let n = again.len() as u64;
        assert_eq!((r.resends, r.resent_sent), (n, n), "{r:?}");
        // Resends are not media: the streams' counts do not take them.
        let datagrams = (sim.rtp.len() - before) as u64;
        assert_eq!(sim.core.stats().packets - media, datagrams - n);
        // The plain session's packets never go twice.
        let plain: Vec<u16> = sim.rtp_of(plain_video).into_iter().map(|(_, r)| r.seq).collect();
        assert!(plain.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        // Acked again, the two are no longer in flight: nothing more.
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &acks(video, &lost),
        });
        let before = sim.rtp.len();
        sim.run_until(4 * S);
        assert!(!sim.rtp[before..].iter().any(is_lost));
    }

    #[test]
    fn a_full_window_holds_new_packets_back_until_acks_open_it() {
        let (mut sim, [video, audio], [plain_video, _]) = two_sessions();
        // No acks at all: the window (half of DSS's 24 KiB for the sample's
        // bit rate, to start) fills, and then only resends go.
        sim.run_until(3 * S);
        let r = sim.core.stats().repair.reliable;
        assert!(r.flow_controlled > 0, "{r:?}");
        let media = |sim: &Sim, ssrc: u32| {
            let mut seqs: Vec<u16> = sim.rtp_of(ssrc).into_iter().map(|(_, r)| r.seq).collect();
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len()
        };
        let held = media(&sim, video);
        let plain = media(&sim, plain_video);
        assert!(
            held < plain,
            "held back: {held} video packets against the plain session's {plain}"
        );
        // Acks open it: the session catches up.
        for _ in 0..20 {
            ack_all(&mut sim, video, 5001, &[]);
            ack_all(&mut sim, audio, 5003, &[]);
            let t = sim.now + 50 * MS;
            sim.run_until(t);
        }
        assert!(media(&sim, video) > held + 10);
        // The plain session never waited.
        let seqs: Vec<u16> = sim.rtp_of(plain_video).into_iter().map(|(_, r)| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }

    #[test]
    fn hostile_acks_are_bounded_counted_and_disturb_no_one() {
        let (mut sim, [video, audio], [plain_video, plain_audio]) = two_sessions();
        sim.run_until(S / 2);
        let unwanted = |sim: &Sim| sim.core.stats().repair.reliable.unwanted;
        // For an SSRC the shard does not have, and for the plain session's
        // stream (from its own address): unwanted.
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &acks(0xdead_beef, &[1, 2, 3]),
        });
        sim.input(Input::Rtcp {
            from: addr(7001),
            data: &acks(plain_video, &[1, 2, 3]),
        });
        assert_eq!(unwanted(&sim), 2);
        // About this session's video from the audio's address, the plain
        // session's and an unknown one: forged, or not even read.
        let forged = sim.core.stats().repair.forged;
        let bad = sim.core.stats().bad_rtcp;
        for from in [addr(5003), addr(7001), "192.0.2.9:5001".parse().unwrap()] {
            sim.input(Input::Rtcp {
                from,
                data: &acks(video, &[1, 2, 3]),
            });
        }
        assert_eq!(sim.core.stats().repair.forged - forged, 2);
        assert_eq!(sim.core.stats().bad_rtcp - bad, 1);
        assert_eq!(sim.core.stats().repair.reliable.acks, 0);
        // An absurd mask: 32 KiB of ones. Read only as far as what is in
        // flight reaches (and never past the 32,768 bits a number can be
        // ahead); the rest is counted, not looked at.
        let first = sim.rtp_of(video)[0].1.seq;
        let mut huge = Vec::new();
        qtss::ack(&mut huge, qtss::ACK, 0x3333, video, first, &vec![0xff; 32 * 1024]);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &huge,
        });
        let r = sim.core.stats().repair.reliable;
        assert!(r.acks_ignored > 30_000, "{r:?}");
        assert!(r.acked + r.acks_for_missing < 10_000, "{r:?}");
        // A malformed one: too short for its fields.
        let mut short = Vec::new();
        rtcp::app(&mut short, 0, 0x3333, qtss::ACK, &[0, 0, 0, 1]);
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &short,
        });
        assert_eq!(sim.core.stats().repair.reliable.malformed, 1);
        // A flood: past the session's rate it is not read.
        let one = acks(audio, &[sim.rtp_of(audio)[0].1.seq]);
        for _ in 0..5_000 {
            sim.input(Input::Rtcp {
                from: addr(5003),
                data: &one,
            });
        }
        let r = sim.core.stats().repair.reliable;
        assert!(r.rate_limited > 4_000, "{r:?}");
        assert!(r.acks <= 2 * sender::ACKS_PER_SEC, "{r:?}");
        // Through all of it the plain session kept to its schedule.
        let before = sim.rtp_of(plain_video).len() + sim.rtp_of(plain_audio).len();
        sim.run_until(2 * S);
        assert!(sim.rtp_of(plain_video).len() + sim.rtp_of(plain_audio).len() > before + 20);
        let seqs: Vec<u16> = sim.rtp_of(plain_video).into_iter().map(|(_, r)| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }
}

/// A playing session's state stays for as long as it plays, thousands a
/// shard: its destinations packed (40 bytes for two streams, not 136), its
/// tracks' too, and its receptions inline. A field that brings a 64-byte
/// address back, or a vector of its own, fails this.
#[test]
fn a_playing_sessions_state_stays_compact() {
    use std::mem::size_of;
    assert!(size_of::<Dests>() <= 40, "Dests is {} bytes", size_of::<Dests>());
    assert!(
        size_of::<Receptions>() <= 32,
        "Receptions is {} bytes",
        size_of::<Receptions>()
    );
    let track = size_of::<crate::session::TrackSetup>();
    assert!(track <= 56, "TrackSetup is {track} bytes");
    // Two lanes of 112 bytes (a lane's peeked time without an `Option`).
    let cursor = size_of::<loader::MovieCursor>();
    assert!(cursor <= 240, "MovieCursor is {cursor} bytes");
    assert!(size_of::<Entry>() <= 696, "Entry is {} bytes", size_of::<Entry>());
}

#[test]
fn sessions_of_one_path_share_one_copy_until_none_holds_it() {
    let mut paths = Paths::default();
    let a = paths.intern("/movie.mp4");
    let b = paths.intern("/movie.mp4");
    assert!(Rc::ptr_eq(&a, &b));
    let other = paths.intern("/other.mp4");
    assert!(!Rc::ptr_eq(&a, &other));
    drop(other);
    paths.sweep();
    assert_eq!(paths.0.len(), 1, "the path no session holds is let go");
    drop((a, b));
    paths.sweep();
    assert!(paths.0.is_empty());
}

mod adapt;
mod rtx_burst;
mod speed;
