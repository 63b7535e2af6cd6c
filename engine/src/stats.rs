//! What a shard counts: packets and bytes sent, drops, sessions, and how late
//! each send was against its deadline, kept as an HdrHistogram.
//!
//! Each shard owns one [`ShardStats`] and updates it with no locking. For a
//! report the shard sends a clone to the control core, which merges them;
//! a clone is about 140 KiB (the histogram's counts), cheap at the rate
//! reports are asked for.
//!
//! Lateness is how far after its due time a packet was handed to the kernel.
//! It is what a viewer feels as jitter, and its tail (p99, max) is what shows
//! a shard falling behind long before packets are lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use proto::rtsp::message::Method;

/// Lateness is recorded in microseconds, from 1 µs to a minute (later sends
/// are counted as a minute), to 3 significant digits.
const LATENESS_MAX_US: u64 = 60_000_000;
/// PLAY-to-first-packet and reported jitter are recorded in microseconds
/// too, up to a minute, to 2 significant digits: their tails matter, their
/// third digit does not, and at 2 digits each histogram is a few KiB.
const SHORT_MAX_US: u64 = 60_000_000;

/// The label of an RTSP method in the request counts: the standard
/// methods by name, anything else (which a client chooses, so unbounded)
/// as one `OTHER`; `None` (a request that did not parse) as `INVALID`.
pub fn method_label(method: Option<&Method>) -> &'static str {
    match method {
        None => "INVALID",
        Some(Method::Options) => "OPTIONS",
        Some(Method::Describe) => "DESCRIBE",
        Some(Method::Announce) => "ANNOUNCE",
        Some(Method::Setup) => "SETUP",
        Some(Method::Play) => "PLAY",
        Some(Method::Pause) => "PAUSE",
        Some(Method::Teardown) => "TEARDOWN",
        Some(Method::GetParameter) => "GET_PARAMETER",
        Some(Method::SetParameter) => "SET_PARAMETER",
        Some(Method::Record) => "RECORD",
        Some(Method::Redirect) => "REDIRECT",
        Some(Method::Other(_)) => "OTHER",
    }
}

/// RTSP responses written, by the request's method and the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts(BTreeMap<(&'static str, u16), u64>);

impl RequestCounts {
    /// Counts one response with `status` to a request with `method`.
    pub fn count(&mut self, method: Option<&Method>, status: u16) {
        *self.0.entry((method_label(method), status)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &RequestCounts) {
        for (k, v) in &other.0 {
            *self.0.entry(*k).or_default() += v;
        }
    }

    /// (method, status, count), by method then status.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u16, u64)> + '_ {
        self.0.iter().map(|(&(m, s), &n)| (m, s, n))
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Counters and the lateness histogram of one shard, or of several merged.
#[derive(Debug, Clone)]
pub struct ShardStats {
    /// RTP packets sent (UDP and interleaved).
    pub packets: u64,
    /// Their bytes, RTP headers included.
    pub bytes: u64,
    /// Interleaved packets dropped because the connection's queue was full
    /// (a client reading too slowly).
    pub dropped_tcp: u64,
    /// UDP packets not sent: the socket buffer was full (`EWOULDBLOCK`: the
    /// shard is sending faster than the host can), or the kernel refused
    /// that one packet (an ICMP error from a client that went away).
    pub dropped_udp: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    /// RTCP packets that did not parse.
    pub bad_rtcp: u64,
    /// Hint packets skipped because the loader could not decode them (a
    /// damaged sample in a movie): the operator's cue to check the file.
    pub skipped: u64,
    /// Instant-On and thinning: packets sent ahead of real time, and
    /// video frames (and their packets) thinning left out.
    pub ahead_packets: u64,
    pub thinned_frames: u64,
    pub thinned_packets: u64,
    /// Live packets the shard's replicas took from the control core.
    pub live_received: u64,
    /// Live packets not sent to a viewer: it fell behind the replica, or
    /// the rest of a frame its full queue had refused part of.
    pub live_dropped: u64,
    /// Live packets a shard's channel had no room for (counted by the
    /// control core, which sends them).
    pub live_channel_full: u64,
    /// Per live broadcast, by path.
    pub live: BTreeMap<String, LiveStats>,
    /// Icecast listeners that joined, and that left (for any reason).
    pub listeners_started: u64,
    pub listeners_ended: u64,
    /// Listeners dropped because they read too slowly (their queue passed
    /// `--listener-queue-bytes`) or stopped reading.
    pub listeners_dropped: u64,
    /// Bytes written to listeners: heads, audio and metadata.
    pub listener_bytes: u64,
    /// Icecast mount frames this shard received from their feeds.
    pub mount_frames: u64,
    /// Listeners of each live Icecast mount (by its number) now.
    pub mount_listeners: BTreeMap<u64, u64>,
    /// Send lateness in microseconds.
    pub lateness: Histogram<u64>,
    /// From each PLAY to its first packet, in microseconds.
    pub first_packet: Histogram<u64>,
    /// The interarrival jitter of every report block clients sent about
    /// our streams (RFC 3550 A.8, as they compute it), in microseconds.
    pub rtcp_jitter: Histogram<u64>,
    /// Packets clients reported lost: the growth of each stream's
    /// cumulative loss from one receiver report to the next.
    pub rtcp_lost: u64,
    /// RTSP responses written on the shard's connections.
    pub requests: RequestCounts,
    /// NACK/RTX retransmission.
    pub repair: RepairStats,
    /// QuickTime's `QTSS` client reports.
    pub client_reports: ClientReportCounts,
}

/// What QuickTime clients' `QTSS` reports (RTCP APP) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientReportCounts {
    /// Reports taken, and the overbuffer windows (`ob`) among them that
    /// bounded a session sent ahead.
    pub reports: u64,
    pub windows: u64,
    /// Reports naming no stream of the shard, and reports that did not
    /// parse. (Those from an address the stream is not sent to are
    /// `repair.forged`.)
    pub unwanted: u64,
    pub malformed: u64,
}

impl ClientReportCounts {
    pub fn merge(&mut self, o: &ClientReportCounts) {
        self.reports += o.reports;
        self.windows += o.windows;
        self.unwanted += o.unwanted;
        self.malformed += o.malformed;
    }
}

/// What retransmission did: NACKs taken and answered, and the feedback
/// that was not honoured, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Generic NACKs answered.
    pub nacks: u64,
    /// Sequence numbers they asked for, and those sent again.
    pub requested: u64,
    pub resent: u64,
    /// RTX packets the kernel took, and their bytes.
    pub rtx_sent: u64,
    pub rtx_bytes: u64,
    /// Asked for again within a round trip of the last resend.
    pub duplicate: u64,
    /// Over the stream's or the session's resend rate.
    pub rate_limited: u64,
    /// No longer kept, or never sent.
    pub too_old: u64,
    pub never_sent: u64,
    /// NACKs not read to the end (too many numbers, or too many of them).
    pub truncated: u64,
    /// NACKs for a stream that did not negotiate retransmission (a plain
    /// RTP/AVP session) or that the shard does not have.
    pub unwanted: u64,
    /// Feedback about a stream from an address the stream is not sent to.
    pub forged: u64,
    /// Reliable UDP (DSS's `qtak` acknowledgements).
    pub reliable: ReliableCounts,
}

/// What reliable UDP did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReliableCounts {
    /// `qtak` (or `ack `) packets taken, and the packets they acknowledged.
    pub acks: u64,
    pub acked: u64,
    /// Packets sent again on their retransmission timeout or, of those,
    /// early (`early_resends`: unacked behind acked ones), and those the
    /// kernel took (with their bytes).
    pub resends: u64,
    pub early_resends: u64,
    pub resent_sent: u64,
    pub resent_bytes: u64,
    /// Let go unacknowledged: too late to be of use.
    pub expired: u64,
    /// Acknowledged numbers not in flight (acked already, expired, never
    /// sent), and numbers past what one ack may name, not looked at.
    pub acks_for_missing: u64,
    pub acks_ignored: u64,
    /// Acks for a stream that is not on reliable UDP, or no stream of the
    /// shard; acks over a session's rate; acks that did not parse.
    pub unwanted: u64,
    pub rate_limited: u64,
    pub malformed: u64,
    /// Rounds a session held new packets back with its window full.
    pub flow_controlled: u64,
}

impl ReliableCounts {
    pub fn merge(&mut self, o: &ReliableCounts) {
        self.acks += o.acks;
        self.acked += o.acked;
        self.resends += o.resends;
        self.early_resends += o.early_resends;
        self.resent_sent += o.resent_sent;
        self.resent_bytes += o.resent_bytes;
        self.expired += o.expired;
        self.acks_for_missing += o.acks_for_missing;
        self.acks_ignored += o.acks_ignored;
        self.unwanted += o.unwanted;
        self.rate_limited += o.rate_limited;
        self.malformed += o.malformed;
        self.flow_controlled += o.flow_controlled;
    }
}

impl RepairStats {
    pub fn merge(&mut self, o: &RepairStats) {
        self.nacks += o.nacks;
        self.requested += o.requested;
        self.resent += o.resent;
        self.rtx_sent += o.rtx_sent;
        self.rtx_bytes += o.rtx_bytes;
        self.duplicate += o.duplicate;
        self.rate_limited += o.rate_limited;
        self.too_old += o.too_old;
        self.never_sent += o.never_sent;
        self.truncated += o.truncated;
        self.unwanted += o.unwanted;
        self.forged += o.forged;
        self.reliable.merge(&o.reliable);
    }

    fn is_empty(&self) -> bool {
        *self == RepairStats::default()
    }
}

fn short_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, SHORT_MAX_US, 2).expect("constant histogram bounds are valid")
}

/// Adds `from` into `into`, value by value (clamped to `max`) where their
/// bounds differ.
fn add_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>, max: u64) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            let value = v.value_iterated_to().min(max);
            let _ = into.record_n(value, v.count_at_value());
        }
    }
}

/// One live broadcast's figures: viewers from the shards, what came in
/// from the control core.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStats {
    pub viewers: u64,
    /// RTP packets and bytes taken from the publisher.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// The publisher's packets refused (malformed, another SSRC or payload
    /// type, past its byte budget).
    pub refused_in: u64,
    /// Packets not sent to a viewer that fell behind (summed over the
    /// viewers), and packet copies lost between cores to a shard's full
    /// live channel (summed over the shards).
    pub dropped_slow: u64,
    pub channel_full: u64,
    /// Seconds on the air, for the bitrate in.
    pub secs: f64,
}

impl LiveStats {
    fn merge(&mut self, o: &LiveStats) {
        self.viewers += o.viewers;
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.refused_in += o.refused_in;
        self.dropped_slow += o.dropped_slow;
        self.channel_full += o.channel_full;
        self.secs = self.secs.max(o.secs);
    }

    /// The average bitrate in, bits a second.
    pub fn bitrate_in(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes_in as f64 * 8.0 / self.secs
        } else {
            0.0
        }
    }
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            packets: 0,
            bytes: 0,
            dropped_tcp: 0,
            dropped_udp: 0,
            sessions_started: 0,
            sessions_ended: 0,
            bad_rtcp: 0,
            skipped: 0,
            ahead_packets: 0,
            thinned_frames: 0,
            thinned_packets: 0,
            live_received: 0,
            live_dropped: 0,
            live_channel_full: 0,
            live: BTreeMap::new(),
            listeners_started: 0,
            listeners_ended: 0,
            listeners_dropped: 0,
            listener_bytes: 0,
            mount_frames: 0,
            mount_listeners: BTreeMap::new(),
            lateness: Histogram::new_with_bounds(1, LATENESS_MAX_US, 3).expect("constant histogram bounds are valid"),
            first_packet: short_histogram(),
            rtcp_jitter: short_histogram(),
            rtcp_lost: 0,
            requests: RequestCounts::default(),
            repair: RepairStats::default(),
            client_reports: ClientReportCounts::default(),
        }
    }
}

/// The distribution chart's rows: upper bounds in microseconds, decades
/// from 10 µs, so the chart has the same shape in every report.
const ROWS: [(u64, &str); 7] = [
    (10, "< 10 us"),
    (100, "< 100 us"),
    (1_000, "< 1 ms"),
    (10_000, "< 10 ms"),
    (100_000, "< 100 ms"),
    (1_000_000, "< 1 s"),
    (u64::MAX, ">= 1 s"),
];
const BAR_WIDTH: usize = 40;

impl ShardStats {
    /// Counts one packet handed to the kernel `late_ns` nanoseconds after it
    /// was due (0 if on time or early).
    pub fn record_send(&mut self, late_ns: u64, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
        self.lateness.saturating_record((late_ns / 1_000).min(LATENESS_MAX_US));
    }

    /// As [`record_send`](Self::record_send) for `packets` packets of
    /// `bytes` in all, each `late_ns` late: one histogram update for a run
    /// of packets that were equally late (in a round most are on time).
    pub fn record_sends(&mut self, late_ns: u64, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
        self.lateness
            .saturating_record_n((late_ns / 1_000).min(LATENESS_MAX_US), packets);
    }

    /// Adds another shard's figures to these.
    pub fn merge(&mut self, other: &ShardStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.dropped_tcp += other.dropped_tcp;
        self.dropped_udp += other.dropped_udp;
        self.sessions_started += other.sessions_started;
        self.sessions_ended += other.sessions_ended;
        self.bad_rtcp += other.bad_rtcp;
        self.skipped += other.skipped;
        self.ahead_packets += other.ahead_packets;
        self.thinned_frames += other.thinned_frames;
        self.thinned_packets += other.thinned_packets;
        self.live_received += other.live_received;
        self.live_dropped += other.live_dropped;
        self.live_channel_full += other.live_channel_full;
        for (path, l) in &other.live {
            self.live.entry(path.clone()).or_default().merge(l);
        }
        self.listeners_started += other.listeners_started;
        self.listeners_ended += other.listeners_ended;
        self.listeners_dropped += other.listeners_dropped;
        self.listener_bytes += other.listener_bytes;
        self.mount_frames += other.mount_frames;
        for (id, n) in &other.mount_listeners {
            *self.mount_listeners.entry(*id).or_default() += n;
        }
        // Same bounds on both sides, so adding cannot fail; a histogram
        // made otherwise is merged value by value, clamped.
        add_histogram(&mut self.lateness, &other.lateness, LATENESS_MAX_US);
        add_histogram(&mut self.first_packet, &other.first_packet, SHORT_MAX_US);
        add_histogram(&mut self.rtcp_jitter, &other.rtcp_jitter, SHORT_MAX_US);
        self.rtcp_lost += other.rtcp_lost;
        self.requests.merge(&other.requests);
        self.repair.merge(&other.repair);
        self.client_reports.merge(&other.client_reports);
    }

    /// Counts the time from a PLAY to its first packet.
    pub fn record_first_packet(&mut self, ns: u64) {
        self.first_packet.saturating_record((ns / 1_000).min(SHORT_MAX_US));
    }

    /// Counts what one receiver-report block said: its jitter (already in
    /// microseconds) and `lost` packets more than the stream's last report.
    pub fn record_report(&mut self, jitter_us: u64, lost: u64) {
        self.rtcp_jitter.saturating_record(jitter_us.min(SHORT_MAX_US));
        self.rtcp_lost += lost;
    }

    /// The figures as one JSON object, for scripts: the counters, and the
    /// send lateness as a count and percentiles in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.lateness;
        serde_json::json!({
            "packets": self.packets,
            "bytes": self.bytes,
            "dropped_tcp": self.dropped_tcp,
            "dropped_udp": self.dropped_udp,
            "bad_rtcp": self.bad_rtcp,
            "skipped": self.skipped,
            "ahead_packets": self.ahead_packets,
            "thinned": { "frames": self.thinned_frames, "packets": self.thinned_packets },
            "sessions": {
                "started": self.sessions_started,
                "ended": self.sessions_ended,
                "live": self.live_sessions(),
            },
            "live": {
                "received": self.live_received,
                "dropped": self.live_dropped,
                "channel_full": self.live_channel_full,
                "streams": self.live.iter().map(|(path, l)| (path.clone(), serde_json::json!({
                    "viewers": l.viewers,
                    "packets_in": l.packets_in,
                    "bytes_in": l.bytes_in,
                    "refused_in": l.refused_in,
                    "bitrate_in": l.bitrate_in().round(),
                    "dropped_slow_viewers": l.dropped_slow,
                    "dropped_channel_full": l.channel_full,
                }))).collect::<serde_json::Map<String, serde_json::Value>>(),
            },
            "listeners": {
                "started": self.listeners_started,
                "ended": self.listeners_ended,
                "live": self.listeners_started.saturating_sub(self.listeners_ended),
                "dropped": self.listeners_dropped,
                "bytes": self.listener_bytes,
                "mount_frames": self.mount_frames,
            },
            "repair": {
                "nacks": self.repair.nacks,
                "requested": self.repair.requested,
                "resent": self.repair.resent,
                "rtx_sent": self.repair.rtx_sent,
                "rtx_bytes": self.repair.rtx_bytes,
                "duplicate": self.repair.duplicate,
                "rate_limited": self.repair.rate_limited,
                "too_old": self.repair.too_old,
                "never_sent": self.repair.never_sent,
                "truncated": self.repair.truncated,
                "unwanted": self.repair.unwanted,
                "forged": self.repair.forged,
                "reliable": {
                    "acks": self.repair.reliable.acks,
                    "acked": self.repair.reliable.acked,
                    "resends": self.repair.reliable.resends,
                    "early_resends": self.repair.reliable.early_resends,
                    "resent_sent": self.repair.reliable.resent_sent,
                    "resent_bytes": self.repair.reliable.resent_bytes,
                    "expired": self.repair.reliable.expired,
                    "acks_for_missing": self.repair.reliable.acks_for_missing,
                    "acks_ignored": self.repair.reliable.acks_ignored,
                    "unwanted": self.repair.reliable.unwanted,
                    "rate_limited": self.repair.reliable.rate_limited,
                    "malformed": self.repair.reliable.malformed,
                    "flow_controlled": self.repair.reliable.flow_controlled,
                },
            },
            "client_reports": {
                "reports": self.client_reports.reports,
                "windows": self.client_reports.windows,
                "unwanted": self.client_reports.unwanted,
                "malformed": self.client_reports.malformed,
            },
            "lateness_us": {
                "count": h.len(),
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
        })
    }

    /// Sessions started and not yet ended.
    pub fn live_sessions(&self) -> u64 {
        self.sessions_started.saturating_sub(self.sessions_ended)
    }

    /// Lateness at quantile `q` (0.0 to 1.0), in milliseconds.
    pub fn lateness_ms(&self, q: f64) -> f64 {
        self.lateness.value_at_quantile(q) as f64 / 1_000.0
    }

    /// A compact block for a terminal: counters, lateness percentiles, and
    /// the lateness distribution as a bar chart. Ends with a newline.
    pub fn report(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "  sent      {} packets, {}",
            group(self.packets),
            human_bytes(self.bytes)
        );
        let _ = writeln!(
            out,
            "  sessions  {} live, {} started, {} ended",
            group(self.live_sessions()),
            group(self.sessions_started),
            group(self.sessions_ended)
        );
        let _ = writeln!(
            out,
            "  dropped   {} tcp (queue full), {} udp (socket full or refused), {} bad rtcp, {} damaged hint packets skipped",
            group(self.dropped_tcp),
            group(self.dropped_udp),
            group(self.bad_rtcp),
            group(self.skipped)
        );
        if self.ahead_packets + self.thinned_packets > 0 {
            let _ = writeln!(
                out,
                "  adapted   {} packets sent ahead of real time, {} video frames ({} packets) thinned",
                group(self.ahead_packets),
                group(self.thinned_frames),
                group(self.thinned_packets)
            );
        }
        if !self.repair.is_empty() {
            let r = &self.repair;
            let _ = writeln!(
                out,
                "  repair    {} NACKs for {} packets: {} sent again ({} RTX packets, {}); refused {} repeats, {} over the rate, {} too old, {} never sent, {} cut short; ignored {} unwanted, {} forged",
                group(r.nacks),
                group(r.requested),
                group(r.resent),
                group(r.rtx_sent),
                human_bytes(r.rtx_bytes),
                group(r.duplicate),
                group(r.rate_limited),
                group(r.too_old),
                group(r.never_sent),
                group(r.truncated),
                group(r.unwanted),
                group(r.forged)
            );
            let q = &r.reliable;
            if q.acks + q.resends + q.unwanted + q.malformed > 0 {
                let _ = writeln!(
                    out,
                    "  reliable  {} qtak acks for {} packets; {} sent again ({} of them early; {}), {} let go unacked, {} rounds held back by the window; ignored {} acks for packets not in flight, {} past an ack's reach, {} unwanted, {} over the rate, {} malformed",
                    group(q.acks),
                    group(q.acked),
                    group(q.resends),
                    group(q.early_resends),
                    human_bytes(q.resent_bytes),
                    group(q.expired),
                    group(q.flow_controlled),
                    group(q.acks_for_missing),
                    group(q.acks_ignored),
                    group(q.unwanted),
                    group(q.rate_limited),
                    group(q.malformed)
                );
            }
        }
        let c = &self.client_reports;
        if c.reports + c.unwanted + c.malformed > 0 {
            let _ = writeln!(
                out,
                "  reports   {} QTSS client reports, {} overbuffer windows taken; ignored {} unwanted, {} malformed",
                group(c.reports),
                group(c.windows),
                group(c.unwanted),
                group(c.malformed)
            );
        }
        if self.live_received > 0 || !self.live.is_empty() {
            let _ = writeln!(
                out,
                "  live      {} packets fanned out to the shards, {} lost between cores (channel full), {} dropped for slow viewers",
                group(self.live_received),
                group(self.live_channel_full),
                group(self.live_dropped)
            );
            for (path, l) in &self.live {
                let _ = writeln!(
                    out,
                    "    {path}  {} viewers, {} packets in ({}, {:.0} kbit/s), {} refused, {} dropped for slow viewers, {} lost between cores",
                    group(l.viewers),
                    group(l.packets_in),
                    human_bytes(l.bytes_in),
                    l.bitrate_in() / 1000.0,
                    group(l.refused_in),
                    group(l.dropped_slow),
                    group(l.channel_full)
                );
            }
        }
        // Only for servers that have had listeners: the report of an RTSP
        // server stays as it was.
        if self.listeners_started > 0 {
            let _ = writeln!(
                out,
                "  listeners {} live, {} started, {} ended, {} dropped (too slow), {} sent",
                group(self.listeners_started.saturating_sub(self.listeners_ended)),
                group(self.listeners_started),
                group(self.listeners_ended),
                group(self.listeners_dropped),
                human_bytes(self.listener_bytes)
            );
        }
        let h = &self.lateness;
        if h.is_empty() {
            let _ = writeln!(out, "  lateness  no packets sent");
            return out;
        }
        let _ = writeln!(
            out,
            "  lateness  p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );

        let mut counts = [0u64; ROWS.len()];
        for v in h.iter_recorded() {
            // The lowest value of the bucket decides the row: a bucket never
            // straddles a decade boundary at 3 significant digits.
            let value = h.lowest_equivalent(v.value_iterated_to());
            let row = ROWS
                .iter()
                .position(|&(upper, _)| value < upper)
                .unwrap_or(ROWS.len() - 1);
            counts[row] += v.count_at_value();
        }
        let total = h.len().max(1);
        let biggest = counts.iter().copied().max().unwrap_or(1).max(1);
        for (&(_, label), &n) in ROWS.iter().zip(&counts) {
            // Scaled to the biggest row so the shape is visible; any count at
            // all gets one mark, since a rare late send is the news.
            let width = if n == 0 {
                0
            } else {
                ((n as u128 * BAR_WIDTH as u128).div_ceil(biggest as u128) as usize).max(1)
            };
            let _ = writeln!(
                out,
                "  {label:>9} |{:<BAR_WIDTH$}| {:>6.2}%  {}",
                "#".repeat(width),
                n as f64 * 100.0 / total as f64,
                group(n)
            );
        }
        out
    }
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1_000, us % 1_000)
}

/// 1234567 as "1 234 567": long counters are read at a glance.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reports() {
        let mut s = ShardStats::default();
        for _ in 0..900 {
            s.record_send(5_000, 1_000); // 5 µs
        }
        for _ in 0..90 {
            s.record_send(2_000_000, 1_000); // 2 ms
        }
        for _ in 0..9 {
            s.record_send(50_000_000, 1_000); // 50 ms
        }
        s.record_send(0, 1_000); // on time
        s.sessions_started = 3;
        s.sessions_ended = 1;
        s.dropped_udp = 2;
        s.skipped = 5;
        assert_eq!(s.packets, 1_000);
        assert_eq!(s.bytes, 1_000_000);
        assert_eq!(s.live_sessions(), 2);
        assert!((s.lateness_ms(0.5) - 0.005).abs() < 0.001);
        assert!((s.lateness_ms(0.95) - 2.0).abs() < 0.01);
        assert!((s.lateness_ms(1.0) - 50.0).abs() < 0.1);

        let r = s.report("shard 0");
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "shard 0");
        assert!(lines[1].contains("1 000 packets, 976.6 KiB"), "{r}");
        assert!(lines[2].contains("2 live, 3 started, 1 ended"), "{r}");
        assert!(lines[3].contains("2 udp"), "{r}");
        assert!(lines[3].contains("5 damaged hint packets skipped"), "{r}");
        assert!(lines[4].contains("p50 0.005"), "{r}");
        assert!(lines[4].contains("max 50.0"), "{r}");
        assert_eq!(lines.len(), 5 + ROWS.len(), "{r}");
        let bar = |row: usize| lines[5 + row].matches('#').count();
        assert_eq!(bar(0), BAR_WIDTH, "the biggest row is full width:\n{r}");
        assert!(lines[5].contains("90.10%"), "{r}");
        assert_eq!(bar(1), 0);
        assert_eq!(bar(2), 0);
        assert_eq!(bar(3), 4, "90 of 901:\n{r}");
        assert_eq!(bar(4), 1, "a few rare late sends still show:\n{r}");
        assert_eq!(bar(5), 0);
        // Every bar row lines up.
        let width = lines[5].find('|').unwrap();
        assert!(lines[5..].iter().all(|l| l.find('|') == Some(width)), "{r}");
    }

    #[test]
    fn merges() {
        let mut a = ShardStats::default();
        let mut b = ShardStats::default();
        a.record_send(1_000_000, 100);
        b.record_send(3_000_000, 200);
        b.record_send(3_000_000, 200);
        b.dropped_tcp = 4;
        b.sessions_started = 2;
        b.bad_rtcp = 1;
        b.skipped = 3;
        a.merge(&b);
        assert_eq!(a.packets, 3);
        assert_eq!(a.bytes, 500);
        assert_eq!(a.dropped_tcp, 4);
        assert_eq!(a.sessions_started, 2);
        assert_eq!(a.bad_rtcp, 1);
        assert_eq!(a.skipped, 3);
        assert_eq!(a.lateness.len(), 3);
        assert!((a.lateness_ms(1.0) - 3.0).abs() < 0.01);

        // A histogram with other bounds still merges, clamped.
        let mut odd = ShardStats {
            lateness: Histogram::new_with_bounds(1, 1 << 40, 2).unwrap(),
            ..ShardStats::default()
        };
        odd.lateness.record(1 << 39).unwrap();
        a.merge(&odd);
        assert_eq!(a.lateness.len(), 4);
        assert_eq!(a.lateness.max(), a.lateness.highest_equivalent(LATENESS_MAX_US));
    }

    #[test]
    fn a_run_of_equally_late_sends_counts_as_the_sends_one_by_one() {
        let (mut one_by_one, mut runs) = (ShardStats::default(), ShardStats::default());
        for (late_ns, n) in [(0, 5), (1_999, 3), (2_500_000, 2), (u64::MAX, 1)] {
            for _ in 0..n {
                one_by_one.record_send(late_ns, 100);
            }
            runs.record_sends(late_ns, n, 100 * n);
        }
        assert_eq!((runs.packets, runs.bytes), (one_by_one.packets, one_by_one.bytes));
        assert_eq!(runs.lateness, one_by_one.lateness);
        assert_eq!(runs.lateness.len(), 11);
    }

    #[test]
    fn huge_lateness_is_clamped_and_empty_reports() {
        let mut s = ShardStats::default();
        s.record_send(u64::MAX, 0);
        assert_eq!(s.lateness.len(), 1);
        assert!(s.lateness_ms(1.0) >= 60_000.0);
        assert!(s.report("t").contains(">= 1 s |#"));

        let r = ShardStats::default().report("empty");
        assert!(r.contains("no packets sent"), "{r}");
        assert!(r.ends_with('\n'));
    }

    #[test]
    fn stats_travel_between_threads() {
        fn is_send<T: Send + 'static>() {}
        is_send::<ShardStats>();
        let mut s = ShardStats::default();
        s.record_send(10_000, 10);
        let copy = s.clone();
        let back = std::thread::spawn(move || copy).join().unwrap();
        assert_eq!(back.packets, 1);
        assert_eq!(back.lateness.len(), 1);
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1 000");
        assert_eq!(group(1_234_567), "1 234 567");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(ms(1), "0.001");
        assert_eq!(ms(12_345), "12.345");
    }
}
