//! What the sessions of a worker measure: the latency histograms, one set
//! per worker per interval, and the running counters.
//!
//! Sessions record into their worker's [`Histograms`] as they go; once an
//! interval the worker sends them to the main thread and starts a fresh set,
//! so each set is one interval of the interval log, and their sum is the
//! whole run.

use hdrhistogram::Histogram;
use proto::rtsp::message::Method;
use serde::Serialize;

use crate::reception::{Measured, Nanos};

/// Values are microseconds, from 1 µs to ten minutes (larger ones count as
/// ten minutes), to three significant digits.
pub const MAX_US: u64 = 600_000_000;
const SIGFIG: u8 = 3;

/// One histogram of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// From writing PLAY to the first RTP packet of the session.
    FirstPacket,
    /// From PLAY's answer to the first packet of a key frame of the
    /// session's video (H.264 IDR, H.265 IRAP, MPEG-4 I-VOP): how long a
    /// viewer joining a live stream waits for a picture.
    FirstKeyFrame,
    /// With `--buffered SECS`: from PLAY written to the play's media running
    /// SECS ahead of the wall clock since PLAY.
    Buffered,
    /// RFC 3550 interarrival jitter, sampled at each packet.
    Jitter,
    /// How far behind its RTP-timestamp schedule each packet arrived.
    Lateness,
    /// Every RTSP response, from writing the request to parsing the answer.
    RtspResponse,
    /// The same, per method.
    Describe,
    Setup,
    Play,
    GetParameter,
    Teardown,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::FirstPacket,
        Metric::FirstKeyFrame,
        Metric::Buffered,
        Metric::Jitter,
        Metric::Lateness,
        Metric::RtspResponse,
        Metric::Describe,
        Metric::Setup,
        Metric::Play,
        Metric::GetParameter,
        Metric::Teardown,
    ];

    /// The main five: the plot and `summary.json`'s `histograms`.
    pub const MAIN: [Metric; 6] = [
        Metric::FirstPacket,
        Metric::FirstKeyFrame,
        Metric::Buffered,
        Metric::Jitter,
        Metric::Lateness,
        Metric::RtspResponse,
    ];

    /// The name in files, tags and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Metric::FirstPacket => "first_packet",
            Metric::FirstKeyFrame => "first_key_frame",
            Metric::Buffered => "buffered",
            Metric::Jitter => "jitter",
            Metric::Lateness => "lateness",
            Metric::RtspResponse => "rtsp_response",
            Metric::Describe => "rtsp_describe",
            Metric::Setup => "rtsp_setup",
            Metric::Play => "rtsp_play",
            Metric::GetParameter => "rtsp_get_parameter",
            Metric::Teardown => "rtsp_teardown",
        }
    }

    /// The RTSP method a per-method histogram is for.
    pub fn method(self) -> Option<&'static str> {
        Some(match self {
            Metric::Describe => "DESCRIBE",
            Metric::Setup => "SETUP",
            Metric::Play => "PLAY",
            Metric::GetParameter => "GET_PARAMETER",
            Metric::Teardown => "TEARDOWN",
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A histogram for one metric, with the bounds every histogram of the run
/// shares (so they always add).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// One histogram per [`Metric`].
#[derive(Debug, Clone)]
pub struct Histograms([Histogram<u64>; 11]);

impl Default for Histograms {
    fn default() -> Self {
        Histograms(std::array::from_fn(|_| histogram()))
    }
}

impl Histograms {
    pub fn get(&self, metric: Metric) -> &Histogram<u64> {
        &self.0[metric.index()]
    }

    fn record_ns(&mut self, metric: Metric, ns: Nanos) {
        self.0[metric.index()].saturating_record((ns / 1_000).min(MAX_US));
    }

    /// An RTSP response to `method` came `ns` after its request was written.
    pub fn rtsp_response(&mut self, method: &Method, ns: Nanos) {
        self.record_ns(Metric::RtspResponse, ns);
        let per_method = match method {
            Method::Describe => Metric::Describe,
            Method::Setup => Metric::Setup,
            Method::Play => Metric::Play,
            Method::GetParameter => Metric::GetParameter,
            Method::Teardown => Metric::Teardown,
            _ => return,
        };
        self.record_ns(per_method, ns);
    }

    /// The first packet came `ns` after PLAY was written.
    pub fn first_packet(&mut self, ns: Nanos) {
        self.record_ns(Metric::FirstPacket, ns);
    }

    /// The first key frame came `ns` after PLAY was answered.
    pub fn first_key_frame(&mut self, ns: Nanos) {
        self.record_ns(Metric::FirstKeyFrame, ns);
    }

    /// The play held `--buffered` seconds of media ahead of the wall clock
    /// `ns` after PLAY was written.
    pub fn buffered(&mut self, ns: Nanos) {
        self.record_ns(Metric::Buffered, ns);
    }

    /// What one packet measured. Early packets count as on time.
    pub fn packet(&mut self, m: &Measured) {
        self.0[Metric::Jitter.index()].saturating_record(m.jitter_us.min(MAX_US));
        self.record_ns(Metric::Lateness, m.lateness_ns.max(0) as u64);
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Histograms) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(theirs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|h| h.is_empty())
    }
}

/// A worker's running totals. The main thread adds the workers' up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Sessions begun (connection attempted).
    pub started: u64,
    /// Sessions that ran their course and tore down cleanly.
    pub completed: u64,
    pub failed: u64,
    /// PLAYs answered: a session whose movie ends before its time is up
    /// plays it again.
    pub plays: u64,
    /// RTP packets received and their bytes (RTP header included),
    /// duplicates included.
    pub packets: u64,
    pub bytes: u64,
    /// Sequence numbers never received, of the sessions' streams so far.
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// UDP datagrams on the RTP sockets that no stream claimed (an unknown
    /// SSRC or source, or not RTP).
    pub unmatched: u64,
    /// RTCP datagrams from servers that did not parse.
    pub bad_rtcp: u64,
    /// Retransmission (`--nack`, `--reliable-udp`): packets missing past
    /// the reorder wait, and of those the ones that came after all; NACKs
    /// sent and the numbers they named; RTX packets; `qtak` acks sent.
    pub lost_on_wire: u64,
    pub repaired: u64,
    /// Lost on the wire and given up on (past the give-up time), and those
    /// still awaited when the sessions ended.
    pub repair_given_up: u64,
    pub repair_open: u64,
    pub nacks: u64,
    pub nacked: u64,
    pub rtx: u64,
    pub acks: u64,
    /// Media received and the wall time it came over, in ms, summed over
    /// streams (see `session::Totals`); the most any session held ahead of
    /// play, and the fastest speed any PLAY was granted, in thousandths.
    pub media_ms: u64,
    pub arrival_ms: u64,
    pub max_ahead_bytes: u64,
    pub speed_milli_max: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.started += o.started;
        self.completed += o.completed;
        self.failed += o.failed;
        self.plays += o.plays;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unmatched += o.unmatched;
        self.bad_rtcp += o.bad_rtcp;
        self.lost_on_wire += o.lost_on_wire;
        self.repaired += o.repaired;
        self.repair_given_up += o.repair_given_up;
        self.repair_open += o.repair_open;
        self.nacks += o.nacks;
        self.nacked += o.nacked;
        self.rtx += o.rtx;
        self.acks += o.acks;
        self.media_ms += o.media_ms;
        self.arrival_ms += o.arrival_ms;
        self.max_ahead_bytes = self.max_ahead_bytes.max(o.max_ahead_bytes);
        self.speed_milli_max = self.speed_milli_max.max(o.speed_milli_max);
    }

    /// Sessions begun and not yet over.
    pub fn active(&self) -> u64 {
        self.started.saturating_sub(self.completed + self.failed)
    }

    /// Lost as a fraction of expected (lost plus distinct received).
    pub fn loss_fraction(&self) -> f64 {
        let unique = self.packets.saturating_sub(self.duplicates);
        let expected = unique + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 / expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_microseconds_and_adds() {
        let mut a = Histograms::default();
        a.rtsp_response(&Method::Play, 2_500_000);
        a.rtsp_response(&Method::Other("FLY".into()), 1_000_000);
        a.first_packet(40_000_000);
        a.packet(&Measured {
            jitter_us: 120,
            lateness_ns: -5_000_000,
        });
        a.packet(&Measured {
            jitter_us: 130,
            lateness_ns: 7_000_000,
        });
        assert_eq!(a.get(Metric::RtspResponse).len(), 2);
        assert_eq!(a.get(Metric::Play).len(), 1);
        assert_eq!(a.get(Metric::Describe).len(), 0);
        assert!(a.get(Metric::Play).equivalent(a.get(Metric::Play).max(), 2_500));
        assert_eq!(a.get(Metric::Lateness).min(), 0, "early is on time");
        assert!(a.get(Metric::Lateness).equivalent(a.get(Metric::Lateness).max(), 7_000));
        let mut b = Histograms::default();
        assert!(b.is_empty());
        b.first_packet(u64::MAX);
        b.add(&a);
        assert_eq!(b.get(Metric::FirstPacket).len(), 2);
        assert!(b.get(Metric::FirstPacket).max() >= MAX_US / 2, "saturated, not dropped");
        assert_eq!(b.get(Metric::Jitter).len(), 2);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn counters() {
        let mut c = Counters {
            started: 5,
            completed: 2,
            failed: 1,
            packets: 1000,
            duplicates: 10,
            lost: 10,
            ..Counters::default()
        };
        assert_eq!(c.active(), 2);
        assert!((c.loss_fraction() - 0.01).abs() < 1e-12);
        c.add(&c.clone());
        assert_eq!((c.started, c.packets, c.active()), (10, 2000, 4));
        assert_eq!(Counters::default().loss_fraction(), 0.0);
    }
}
