//! Skip protection and Instant-On: sending packets again, sending ahead of
//! real time, and sending less when a client cannot keep up. Logic only,
//! driven by packets, feedback and `now`; the shard that owns a stream
//! calls into it.
//!
//! - [`history`]: what a stream sent, kept without copying payload, to
//!   send again.
//! - [`nack`]: answering RTCP generic NACKs (RFC 4585) from the history,
//!   with duplicate and rate limits, for RTX retransmission (RFC 4588).
//! - [`offer`]: the SDP offer of NACK/RTX (`RTP/AVPF`, `a=rtcp-fb`, the
//!   RTX payload types) and what each track's SETUP then gets.
//! - [`sender`]: a session's retransmission as the shard core drives it:
//!   each stream's history, responder and RTX stream.
//! - [`reliable`]: Darwin Streaming Server's reliable UDP: acks in RTCP APP
//!   `qtak` packets, resends on a retransmission timeout, a congestion
//!   window with slow start.
//! - [`burst`]: how far ahead of real time a session may be sent.
//! - [`thinning`]: which frames to leave out when a client falls behind.

pub mod burst;
pub mod history;
pub mod nack;
pub mod offer;
pub mod reliable;
pub mod sender;
pub mod thinning;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use loader::Span;
    use proto::rtp::Header;
    use proto::{rtcp, rtx};

    use super::history::{History, HistoryConfig};
    use super::nack::{NackConfig, NackResponder, SessionBudget};
    use super::*;
    use crate::source::Nanos;

    const MS: Nanos = 1_000_000;

    /// A stream's packets, sent, then a client's NACK answered: the RTX
    /// packets carry exactly the bytes of the packets lost, and the client
    /// gets each original back from its RTX packet.
    #[test]
    fn a_nacked_packet_comes_back_as_rtx_byte_for_byte() {
        // A "movie": payload bytes the packets are spans of.
        let movie = Bytes::from((0..=255u8).cycle().take(64 * 1024).collect::<Vec<_>>());
        let mut history = History::new(HistoryConfig::for_rate(50.0, Duration::from_secs(1), Duration::ZERO));
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for i in 0..40u16 {
            let header = Header {
                marker: i % 4 == 3,
                payload_type: 96,
                sequence: 65_520u16.wrapping_add(i),
                timestamp: 90_000 + u32::from(i / 4) * 3000,
                ssrc: 0x0bad_cafe,
            }
            .to_bytes();
            // Two spans: a 2-byte "immediate" and a slice of the sample.
            let spans = [
                Span {
                    offset: u64::from(i) * 7,
                    len: 2,
                },
                Span {
                    offset: 1000 + u64::from(i) * 500,
                    len: 300 + u32::from(i),
                },
            ];
            history.push(&header, &movie, &spans, u64::from(i) * 20 * MS);
            let mut wire = header.to_vec();
            for s in &spans {
                wire.extend_from_slice(s.bytes(&movie));
            }
            sent.push(wire);
        }

        // The client lost three, across the sequence number wrap.
        let lost = [65_530u16, 65_535, 3];
        let mut feedback = Vec::new();
        rtcp::generic_nack(&mut feedback, 0x1234, 0x0bad_cafe, &lost);
        let nacks = match rtcp::parse_compound(&feedback).unwrap().next().unwrap() {
            rtcp::RtcpPacket::GenericNack { nacks, media_ssrc, .. } => {
                assert_eq!(media_ssrc, 0x0bad_cafe);
                nacks
            }
            other => panic!("{other:?}"),
        };
        let cfg = NackConfig::default();
        let mut responder = NackResponder::new(cfg, 1_000_000, 50.0);
        let mut budget = SessionBudget::new(1_000_000, &cfg);
        let mut resend = Vec::new();
        let now = 900 * MS;
        responder.respond(nacks.lost(), &mut history, &mut budget, now, &mut resend);
        assert_eq!(resend, lost);

        for (rtx_seq, seq) in (100u16..).zip(resend) {
            let r = history.resend(seq, now).unwrap();
            // What the send path hands the kernel: 14 bytes, then the spans.
            let prefix = rtx::header(&r.header, 97, rtx_seq, 0x5eed_0001);
            let mut wire = prefix.to_vec();
            for s in r.spans {
                wire.extend_from_slice(s.bytes(r.owner));
            }
            // The client's side.
            let p = rtx::RtxPacket::parse(&wire).unwrap();
            assert_eq!((p.header.ssrc, p.header.payload_type), (0x5eed_0001, 97));
            let mut original = p.original(96, 0x0bad_cafe).to_bytes().to_vec();
            original.extend_from_slice(p.payload);
            let i = usize::from(seq.wrapping_sub(65_520));
            assert_eq!(original, sent[i], "packet {seq}");
        }
    }

    /// What repair costs a session, printed for the record (run with
    /// `--nocapture`), and bounded so it cannot grow unnoticed.
    #[test]
    fn what_repair_costs_a_session() {
        use std::mem::size_of;
        let movie = Bytes::from(vec![0u8; 1 << 20]);
        // A 1 Mbit/s video of ~90 packets a second and a 128 kbit/s AAC
        // track of ~43, kept for 1 s (gst-rtsp-server's default rtx-time is
        // 500 ms; rtspsrc asks for up to about 1 s).
        let mut total = 0;
        for (name, rate) in [("video", 90.0), ("audio", 43.0)] {
            let mut h = History::new(HistoryConfig::for_rate(rate, Duration::from_secs(1), Duration::ZERO));
            // Warm up, then check the rings do not grow: nothing is
            // allocated per packet after that.
            let push = |h: &mut History, n: u32| {
                for i in 0..n {
                    let header = Header {
                        sequence: i as u16,
                        ssrc: 1,
                        ..Header::default()
                    }
                    .to_bytes();
                    let spans = [Span { offset: 0, len: 2 }, Span { offset: 100, len: 1000 }];
                    h.push(&header, &movie, &spans, u64::from(i) * 11 * MS);
                }
            };
            push(&mut h, 1000);
            let warm = h.heap_bytes();
            push(&mut h, 100_000);
            assert_eq!(h.heap_bytes(), warm, "{name}: rings grew after warm-up");
            println!(
                "{name}: {} packets kept, {} bytes ({:.1} per packet)",
                h.config().max_packets,
                warm,
                warm as f64 / h.config().max_packets as f64
            );
            total += warm + size_of::<History>() + size_of::<NackResponder>();
        }
        total += size_of::<SessionBudget>();
        println!(
            "a session with NACK/RTX on both: {total} bytes; plain: {} bytes (one empty slot per stream)",
            2 * size_of::<Option<Box<History>>>()
        );
        println!(
            "sizes: History {} NackResponder {} SessionBudget {} Resender {} Congestion {} Burst {} Thinning {}",
            size_of::<History>(),
            size_of::<NackResponder>(),
            size_of::<SessionBudget>(),
            size_of::<reliable::Resender>(),
            size_of::<reliable::Congestion>(),
            size_of::<burst::Burst>(),
            size_of::<thinning::Thinning>(),
        );
        assert!(total < 16 * 1024, "{total}");

        // Sent ahead (Instant-On, 4 s by default), a stream keeps the lead's
        // packets on top: at the shard's estimate for a 1 Mbit/s movie
        // (600-byte packets, some 208 a second), five times as many.
        let ahead = History::new(HistoryConfig::for_rate(
            1_000_000.0 / 8.0 / 600.0,
            Duration::from_secs(1),
            Duration::from_secs(4),
        ));
        println!(
            "a stream sent 4 s ahead: {} packets kept, {} bytes",
            ahead.config().max_packets,
            ahead.heap_bytes()
        );
        assert!(ahead.heap_bytes() < 96 * 1024, "{}", ahead.heap_bytes());
    }
}
