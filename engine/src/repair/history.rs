//! A stream's history of what it sent, kept so packets can go again
//! without a copy.
//!
//! What is kept of a packet is what its first send used: the 12 header
//! bytes (the sequence number is the key, the SSRC is the stream's, the
//! rest is kept), the payload as spans of a reference-counted owner (the
//! movie's mapping for VoD, a live packet's buffer for live), and when it
//! went. No payload byte is copied and nothing is allocated per packet once
//! the rings have their size: entries, spans and owners live in rings made
//! when the stream negotiated repair, bounded by count (the entry ring),
//! by span count (a packet with many spans takes more of the span ring) and
//! by age (`max_age`, the `rtx-time` the SDP announces).
//!
//! Age counts from when a packet is *due* on the session's play clock, or
//! from when it was sent if that is later. A packet sent ahead of real time
//! (Instant-On) reaches the client seconds before it is due, and the
//! client's jitter buffer keeps asking for a missing one on its own
//! timeline: GStreamer's `rtpjitterbuffer` NACKs a gap soon after the next
//! packet arrives (50 to 150 ms after the send, measured through 3 % loss),
//! and while no copy comes (the RTX packet can be lost too) asks again every
//! `rtx-retry-timeout` (a round trip plus twice its jitter, which a burst
//! inflates to hundreds of milliseconds) until `rtx-retry-period` (its
//! latency, 2 s) past the packet's expected time on its RTP-timestamp
//! clock, which is the due time. Counted from the send time, such a retry
//! for a packet sent 2 s ahead came after `rtx-time` (one was seen 1014 ms
//! after the send, 129 ms after the due time) and found the packet gone.
//! Counted from its due time, a packet stays answerable for as long as the
//! client may still play it. [`HistoryConfig::for_rate`] sizes the rings for
//! that: the lead's packets come on top.
//!
//! A movie's packets all have the same owner, so the owner ring holds one
//! clone of its `Bytes` for the whole history; a live stream's packets each
//! bring their own buffer, which the history keeps alive until the entry
//! leaves (the reflector's ring holds the same buffers anyway).
//!
//! Sequence numbers are consecutive in what a session sends (skipped and
//! thinned packets take none), so an entry's place in the ring follows
//! from its number. (A packet the kernel refused keeps its number and is
//! kept here too: sending it again is just what the client will ask for.)
//! A gap in the numbers pushed is held as vacant entries, answered as never
//! sent; a jump backwards or further than the ring holds starts the history
//! again.
//!
//! A lookup tells three answers apart, and counts each: the packet
//! ([`Lookup::Found`]), a packet that was sent but is no longer kept
//! ([`Lookup::TooOld`]), and a number this stream has not sent
//! ([`Lookup::NeverSent`]: ahead of the newest, in a gap, or before the
//! first packet). Clients NACK all three: GStreamer's jitter buffer keeps
//! asking for a packet until its own deadline passes, after a short history
//! may have let it go, and asks for the packet it expects next before it
//! was sent; a confused or hostile client asks for anything.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use loader::Span;
use proto::rtp::HEADER_LEN;

use crate::source::Nanos;
use crate::source::Payload;

/// How much a history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Packets at most.
    pub max_packets: usize,
    /// Payload spans at most, over all packets kept.
    pub max_spans: usize,
    /// How long a packet is kept after it was due (or sent, if later).
    pub max_age: Duration,
}

/// Packets a history keeps at most, whatever its rate and lead: 8192
/// entries and their spans are 512 KiB.
pub const MAX_PACKETS: usize = 8192;

/// Room above the average packet rate, for the bursts of a key frame.
const RATE_ROOM: f64 = 1.25;

impl HistoryConfig {
    /// A history for a stream that sends `packets_per_sec` on average and
    /// may be sent up to `lead` ahead of real time, keeping each packet
    /// `max_age` past its due time: what is sent over `lead + max_age`, with
    /// a quarter more room for bursts, between 32 and [`MAX_PACKETS`]
    /// packets, and two and a half spans per packet (hint tracks mostly make
    /// packets of one or two spans: an immediate header and a slice of the
    /// sample).
    ///
    /// A stream `lead` ahead holds, at any time, the packets due over the
    /// next `lead` (sent, not yet due) and those due over the last
    /// `max_age` (due, still answerable): `rate * (lead + max_age)`. At the
    /// default 4 s lead and 1 s `rtx-time`, [`MAX_PACKETS`] covers some 1300
    /// packets a second; past that, [`covered_lead`](Self::covered_lead)
    /// says how far ahead the stream may go and stay answerable.
    pub fn for_rate(packets_per_sec: f64, max_age: Duration, lead: Duration) -> HistoryConfig {
        let secs = (max_age + lead).as_secs_f64();
        let want = (packets_per_sec.max(0.0) * secs * RATE_ROOM).ceil();
        let max_packets = (want as usize).clamp(32, MAX_PACKETS);
        HistoryConfig {
            max_packets,
            max_spans: max_packets * 5 / 2,
            max_age,
        }
    }

    /// How far ahead of real time a stream of `packets_per_sec` may be sent
    /// while this history still keeps every packet until `max_age` past
    /// its due time (the inverse of [`for_rate`](Self::for_rate)).
    pub fn covered_lead(&self, packets_per_sec: f64) -> Duration {
        if packets_per_sec <= 0.0 {
            return Duration::MAX;
        }
        let secs = self.max_packets as f64 / RATE_ROOM / packets_per_sec;
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .saturating_sub(self.max_age)
    }
}

/// The answer to a lookup, without borrowing the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Kept: its wire size (header and payload) and when it was last sent
    /// again, if it was.
    Found { len: usize, resent_at: Option<Nanos> },
    /// Sent, but no longer kept: older than the age bound or pushed out by
    /// newer packets.
    TooOld,
    /// This stream has not sent that number, as far as the history knows.
    NeverSent,
}

/// What a packet is sent again from.
#[derive(Debug, Clone, Copy)]
pub struct Resend<'a> {
    /// The header as first sent.
    pub header: [u8; HEADER_LEN],
    pub owner: &'a Bytes,
    pub spans: &'a [Span],
}

impl<'a> Resend<'a> {
    pub fn payload_len(&self) -> usize {
        self.spans.iter().map(|s| s.len as usize).sum()
    }

    /// The payload as the send round takes it.
    pub fn payload(&self) -> Payload<'a> {
        Payload {
            owner: self.owner,
            spans: self.spans,
        }
    }
}

/// Counts of what the history was asked and what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryStats {
    pub pushed: u64,
    pub found: u64,
    pub too_old: u64,
    pub never_sent: u64,
    /// Times the sequence numbers jumped and the history started again.
    pub restarts: u64,
    /// Packets with more spans than the whole span ring: not kept.
    pub unkept: u64,
}

const VACANT: u8 = 1;
const NEVER: u32 = u32::MAX;

/// One packet. Kept to 24 bytes: the SSRC is the stream's and the
/// sequence number the entry's place, so only the header bytes that vary
/// are stored.
#[derive(Debug, Clone, Copy)]
struct Entry {
    span_start: u32,
    /// Id of the owner run (see [`History::runs`]).
    run: u32,
    timestamp: u32,
    /// Milliseconds since the history's epoch from which its age counts:
    /// when it was due, or when it was sent if that is later.
    kept_ms: u32,
    /// Milliseconds since the epoch of the last resend, [`NEVER`] if none.
    resent_ms: u32,
    span_count: u8,
    /// Header byte 0 (version, padding, extension, CSRC count).
    flags_byte: u8,
    /// Header byte 1 (marker, payload type).
    marker_pt: u8,
    state: u8,
}

const VACANT_ENTRY: Entry = Entry {
    span_start: 0,
    run: NEVER,
    timestamp: 0,
    kept_ms: 0,
    resent_ms: NEVER,
    span_count: 0,
    flags_byte: 0,
    marker_pt: 0,
    state: VACANT,
};

/// Consecutive entries that share one owner.
#[derive(Debug)]
struct Run {
    owner: Bytes,
    live: u32,
}

/// A stream's send history. See the module documentation.
#[derive(Debug)]
pub struct History {
    cfg: HistoryConfig,
    ssrc: u32,
    /// Ring of entries: `len` of them from `head`, numbered from `first_seq`.
    entries: Box<[Entry]>,
    head: usize,
    len: usize,
    first_seq: u16,
    /// Ring of spans, written contiguously per entry (a packet whose spans
    /// do not fit before the end starts again at 0, leaving the tail
    /// unused until the ring comes round).
    spans: Box<[Span]>,
    /// Where the next entry's spans go.
    span_w: usize,
    /// Owners, oldest first; the front run has id `first_run`.
    runs: VecDeque<Run>,
    first_run: u32,
    /// `now` of the first push: times are kept as milliseconds after it.
    epoch: Option<Nanos>,
    /// Packets this history has accounted for since it (re)started,
    /// vacancies included: what lies behind the ring was sent.
    numbered: u64,
    stats: HistoryStats,
}

fn ms_since(epoch: Nanos, now: Nanos) -> u32 {
    // Wraps after 49 days, which wrapping arithmetic on ages survives.
    (now.saturating_sub(epoch) / 1_000_000) as u32
}

/// Whether an entry whose age counts from `kept_ms` is older than `max_ms`
/// at `now_ms`. Signed: an entry due later than `now` has a negative age.
fn too_old(now_ms: u32, kept_ms: u32, max_ms: u32) -> bool {
    (now_ms.wrapping_sub(kept_ms) as i32) > max_ms as i32
}

fn same_owner(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

impl History {
    pub fn new(cfg: HistoryConfig) -> History {
        let max_packets = cfg.max_packets.max(1);
        let max_spans = cfg.max_spans.max(1);
        History {
            cfg: HistoryConfig {
                max_packets,
                max_spans,
                ..cfg
            },
            ssrc: 0,
            entries: vec![VACANT_ENTRY; max_packets].into_boxed_slice(),
            head: 0,
            len: 0,
            first_seq: 0,
            spans: vec![Span { offset: 0, len: 0 }; max_spans].into_boxed_slice(),
            span_w: 0,
            runs: VecDeque::with_capacity(4),
            first_run: 0,
            epoch: None,
            numbered: 0,
            stats: HistoryStats::default(),
        }
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.cfg
    }

    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    /// Packets (and vacancies) kept now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes this history holds on the heap, its rings at their size
    /// (the owners' own buffers not counted: they are the movie's or the
    /// reflector's).
    pub fn heap_bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
            + self.spans.len() * std::mem::size_of::<Span>()
            + self.runs.capacity() * std::mem::size_of::<Run>()
    }

    /// Forgets everything (a new stream, or an SSRC change).
    pub fn clear(&mut self) {
        while self.len > 0 {
            self.pop_oldest();
        }
        self.head = 0;
        self.span_w = 0;
        self.numbered = 0;
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % self.entries.len()
    }

    fn pop_oldest(&mut self) {
        debug_assert!(self.len > 0);
        let e = self.entries[self.head];
        if e.state & VACANT == 0 {
            let front = self.runs.front_mut().expect("a kept entry has a run");
            front.live -= 1;
            if front.live == 0 {
                self.runs.pop_front();
                self.first_run = self.first_run.wrapping_add(1);
            }
        }
        self.entries[self.head] = VACANT_ENTRY;
        self.head = (self.head + 1) % self.entries.len();
        self.len -= 1;
        self.first_seq = self.first_seq.wrapping_add(1);
    }

    /// Where the oldest kept spans start, if any entry holds spans.
    fn span_read(&self) -> Option<usize> {
        (0..self.len)
            .map(|i| self.entries[self.slot(i)])
            .find(|e| e.span_count > 0)
            .map(|e| e.span_start as usize)
    }

    /// Room for `k` contiguous spans, pushing out the oldest entries until
    /// there is. Returns where they go.
    fn alloc_spans(&mut self, k: usize) -> usize {
        let cap = self.spans.len();
        debug_assert!(k <= cap);
        loop {
            let Some(r) = self.span_read() else {
                // Nothing kept holds spans: start from the top.
                if self.span_w + k > cap {
                    self.span_w = 0;
                }
                return self.span_w;
            };
            let w = self.span_w;
            if r < w || (r == w && k == 0) {
                // Kept spans are [r, w): free are [w, cap) and [0, r).
                if cap - w >= k {
                    return w;
                }
                if r >= k {
                    self.span_w = 0;
                    return 0;
                }
            } else if r - w >= k {
                // Kept spans wrap: free is [w, r).
                return w;
            }
            self.pop_oldest();
        }
    }

    /// Records a packet as sent at `now`, due then: its header as written,
    /// its payload as `spans` of `owner`.
    pub fn push(&mut self, header: &[u8; HEADER_LEN], owner: &Bytes, spans: &[Span], now: Nanos) {
        self.push_due(header, owner, spans, now, now);
    }

    /// Records a packet as sent at `now` and due at `due` (later than `now`
    /// for a packet sent ahead of real time): it is kept until `max_age`
    /// after the later of the two.
    pub fn push_due(&mut self, header: &[u8; HEADER_LEN], owner: &Bytes, spans: &[Span], now: Nanos, due: Nanos) {
        let seq = u16::from_be_bytes([header[2], header[3]]);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let epoch = *self.epoch.get_or_insert(now);
        // No further ahead than half the wrap, so ages stay comparable.
        let kept_ms = ms_since(epoch, due.max(now)).min(ms_since(epoch, now).saturating_add(u32::MAX / 4));
        self.stats.pushed += 1;

        if self.len == 0 && self.numbered == 0 {
            self.first_seq = seq;
            self.ssrc = ssrc;
        }
        let next = self.first_seq.wrapping_add(self.len as u16);
        let gap = usize::from(seq.wrapping_sub(next));
        if ssrc != self.ssrc || gap >= self.entries.len() || gap >= 1 << 15 {
            if self.numbered > 0 {
                self.stats.restarts += 1;
            }
            self.clear();
            self.first_seq = seq;
            self.ssrc = ssrc;
        } else {
            for _ in 0..gap {
                self.append(VACANT_ENTRY);
            }
        }
        self.expire(now);

        if spans.len() > self.spans.len() || spans.len() > usize::from(u8::MAX) {
            self.stats.unkept += 1;
            self.append(VACANT_ENTRY);
            return;
        }
        if self.len == self.entries.len() {
            self.pop_oldest();
        }
        let start = self.alloc_spans(spans.len());
        self.spans[start..start + spans.len()].copy_from_slice(spans);
        self.span_w = start + spans.len();

        let run = match self.runs.back_mut() {
            Some(back) if same_owner(&back.owner, owner) => {
                back.live += 1;
                self.first_run.wrapping_add(self.runs.len() as u32 - 1)
            }
            _ => {
                self.runs.push_back(Run {
                    owner: owner.clone(),
                    live: 1,
                });
                self.first_run.wrapping_add(self.runs.len() as u32 - 1)
            }
        };
        self.append(Entry {
            span_start: start as u32,
            run,
            timestamp: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            kept_ms,
            resent_ms: NEVER,
            span_count: spans.len() as u8,
            flags_byte: header[0],
            marker_pt: header[1],
            state: 0,
        });
    }

    /// Records an [`Outgoing`](crate::source::Outgoing)'s header and
    /// payload as sent at `now`, due at `due`.
    pub fn push_payload(&mut self, header: &[u8; HEADER_LEN], payload: Payload<'_>, now: Nanos, due: Nanos) {
        self.push_due(header, payload.owner, payload.spans, now, due);
    }

    fn append(&mut self, e: Entry) {
        if self.len == self.entries.len() {
            self.pop_oldest();
        }
        let at = self.slot(self.len);
        self.entries[at] = e;
        self.len += 1;
        self.numbered += 1;
    }

    fn max_ms(&self) -> u32 {
        self.cfg.max_age.as_millis().min(u128::from(u32::MAX / 4)) as u32
    }

    /// Lets go of packets older than the age bound, from the oldest up to
    /// the first that is not. (Due times rise with the sequence numbers but
    /// for a new PLAY's first packets, which may be due before the last
    /// burst's: those wait behind it, answered as too old by
    /// [`lookup`](Self::lookup) all the same, until it goes.)
    pub fn expire(&mut self, now: Nanos) {
        let Some(epoch) = self.epoch else { return };
        let now_ms = ms_since(epoch, now);
        let max_ms = self.max_ms();
        while self.len > 0 {
            let e = self.entries[self.head];
            if e.state & VACANT == 0 && !too_old(now_ms, e.kept_ms, max_ms) {
                break;
            }
            self.pop_oldest();
        }
    }

    /// The ring index of `seq` if it is kept, or the answer why not.
    fn find(&self, seq: u16, now: Nanos) -> Result<usize, Lookup> {
        let d = usize::from(seq.wrapping_sub(self.first_seq));
        if d < self.len {
            let i = self.slot(d);
            let e = &self.entries[i];
            if e.state & VACANT != 0 {
                return Err(Lookup::NeverSent);
            }
            let epoch = self.epoch.unwrap_or(now);
            if too_old(ms_since(epoch, now), e.kept_ms, self.max_ms()) {
                return Err(Lookup::TooOld);
            }
            return Ok(i);
        }
        // Behind the oldest kept, by how much; anything else is ahead.
        let behind = u64::from(self.first_seq.wrapping_sub(seq));
        let sent_before = self.numbered - self.len as u64;
        if behind > 0 && behind < 1 << 15 && behind <= sent_before {
            Err(Lookup::TooOld)
        } else {
            Err(Lookup::NeverSent)
        }
    }

    /// Whether `seq` can be sent again, counted in the stats.
    pub fn lookup(&mut self, seq: u16, now: Nanos) -> Lookup {
        let epoch = self.epoch.unwrap_or(now);
        match self.find(seq, now) {
            Ok(i) => {
                self.stats.found += 1;
                let e = &self.entries[i];
                let payload: usize = self.spans[e.span_start as usize..][..usize::from(e.span_count)]
                    .iter()
                    .map(|s| s.len as usize)
                    .sum();
                let resent_at = (e.resent_ms != NEVER).then(|| epoch + u64::from(e.resent_ms) * 1_000_000);
                Lookup::Found {
                    len: HEADER_LEN + payload,
                    resent_at,
                }
            }
            Err(answer) => {
                match answer {
                    Lookup::TooOld => self.stats.too_old += 1,
                    _ => self.stats.never_sent += 1,
                }
                answer
            }
        }
    }

    /// Notes that `seq` went again at `now`.
    pub fn mark_resent(&mut self, seq: u16, now: Nanos) {
        if let Ok(i) = self.find(seq, now) {
            let epoch = self.epoch.unwrap_or(now);
            // NEVER is the one value a resend time cannot take.
            self.entries[i].resent_ms = ms_since(epoch, now).min(NEVER - 1);
        }
    }

    /// What to send `seq` again from, if it is kept and young enough. Not
    /// counted: [`lookup`](Self::lookup) is where answers are counted.
    pub fn resend(&self, seq: u16, now: Nanos) -> Option<Resend<'_>> {
        let i = self.find(seq, now).ok()?;
        let e = &self.entries[i];
        let run = e.run.wrapping_sub(self.first_run) as usize;
        let owner = &self.runs.get(run)?.owner;
        let mut header = [0u8; HEADER_LEN];
        header[0] = e.flags_byte;
        header[1] = e.marker_pt;
        header[2..4].copy_from_slice(&seq.to_be_bytes());
        header[4..8].copy_from_slice(&e.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Some(Resend {
            header,
            owner,
            spans: &self.spans[e.span_start as usize..][..usize::from(e.span_count)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::rtp::Header;

    const MS: Nanos = 1_000_000;
    const S_NS: Nanos = 1_000_000_000;

    fn header(seq: u16, ts: u32) -> [u8; HEADER_LEN] {
        Header {
            marker: seq.is_multiple_of(3),
            payload_type: 96,
            sequence: seq,
            timestamp: ts,
            ssrc: 0x5eed,
        }
        .to_bytes()
    }

    fn cfg(packets: usize, spans: usize, age_ms: u64) -> HistoryConfig {
        HistoryConfig {
            max_packets: packets,
            max_spans: spans,
            max_age: Duration::from_millis(age_ms),
        }
    }

    /// Payload of packet `seq`: `n` spans at offsets derived from `seq`.
    fn spans(seq: u16, n: usize) -> Vec<Span> {
        (0..n)
            .map(|j| Span {
                offset: u64::from(seq) * 100 + j as u64 * 10,
                len: 3 + j as u32,
            })
            .collect()
    }

    fn owner() -> Bytes {
        Bytes::from(vec![7u8; 1 << 23])
    }

    #[test]
    fn an_entry_is_24_bytes_and_a_plain_stream_pays_a_pointer() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        assert_eq!(std::mem::size_of::<Option<Box<History>>>(), 8);
        let h = History::new(HistoryConfig::for_rate(100.0, Duration::from_secs(1), Duration::ZERO));
        assert_eq!(h.config().max_packets, 125);
        assert_eq!(h.config().max_spans, 312);
        // 125 entries, 312 spans, and room for a few owners.
        let per_packet = h.heap_bytes() as f64 / 125.0;
        assert!(per_packet < 72.0, "{per_packet} bytes per packet");
    }

    #[test]
    fn found_too_old_and_never_sent() {
        let o = owner();
        let mut h = History::new(cfg(8, 32, 1000));
        for (i, seq) in (65_530u16..=65_535).chain(0..6).enumerate() {
            let s = spans(seq, 2);
            let payload = Payload { owner: &o, spans: &s };
            h.push_payload(&header(seq, seq.into()), payload, i as u64 * MS, i as u64 * MS);
        }
        let now = 12 * MS;
        // The newest 8 are kept, across the wrap.
        for seq in (65_534u16..=65_535).chain(0..6) {
            assert!(
                matches!(
                    h.lookup(seq, now),
                    Lookup::Found {
                        len: 19,
                        resent_at: None
                    }
                ),
                "{seq}"
            );
            let r = h.resend(seq, now).unwrap();
            assert_eq!(r.header, header(seq, seq.into()));
            assert_eq!(r.spans, &spans(seq, 2)[..]);
            assert_eq!((r.payload_len(), r.payload().len()), (7, 7));
            assert!(same_owner(r.owner, &o));
        }
        // The four before were sent and pushed out.
        for seq in 65_530..=65_533 {
            assert_eq!(h.lookup(seq, now), Lookup::TooOld, "{seq}");
            assert!(h.resend(seq, now).is_none());
        }
        // Before the first ever sent, and ahead of the newest: never sent.
        for seq in [65_529, 65_000, 6, 7, 1000, 30_000] {
            assert_eq!(h.lookup(seq, now), Lookup::NeverSent, "{seq}");
        }
        let s = h.stats();
        assert_eq!((s.found, s.too_old, s.never_sent, s.pushed), (8, 4, 6, 12));
    }

    #[test]
    fn packets_age_out() {
        let o = owner();
        let mut h = History::new(cfg(100, 300, 500));
        for seq in 0..10u16 {
            h.push(&header(seq, 0), &o, &spans(seq, 1), u64::from(seq) * 100 * MS);
        }
        // At 1 s, packets sent at or after 500 ms are young enough.
        let now = 1000 * MS;
        assert_eq!(h.lookup(4, now), Lookup::TooOld);
        assert!(matches!(h.lookup(5, now), Lookup::Found { .. }));
        h.expire(now);
        assert_eq!(h.len(), 5);
        assert_eq!(h.lookup(0, now), Lookup::TooOld);
        // Pushing later lets go of the old ones by itself.
        h.push(&header(10, 0), &o, &spans(10, 1), 5000 * MS);
        assert_eq!(h.len(), 1);
        assert_eq!(h.lookup(9, 5000 * MS), Lookup::TooOld);
    }

    #[test]
    fn a_packet_sent_ahead_ages_from_its_due_time() {
        let o = owner();
        let mut h = History::new(cfg(100, 300, 1000));
        // Sent at 0, 100 ms apart, each due 3 s after it went: a burst
        // 3 s ahead of real time.
        for seq in 0..10u16 {
            let sent = u64::from(seq) * 100 * MS;
            h.push_due(&header(seq, 0), &o, &spans(seq, 1), sent, sent + 3000 * MS);
        }
        // 2 s after the first went, well past the send-time bound, all are
        // kept: none is due yet.
        h.expire(2000 * MS);
        assert_eq!(h.len(), 10);
        assert!(matches!(h.lookup(0, 2000 * MS), Lookup::Found { .. }));
        // Packet 0 was due at 3 s: it goes 1 s (max_age) after that, not
        // before; packet 5, due at 3.5 s, stays until 4.5 s.
        assert!(matches!(h.lookup(0, 4000 * MS), Lookup::Found { .. }));
        assert_eq!(h.lookup(0, 4001 * MS), Lookup::TooOld);
        assert!(matches!(h.lookup(5, 4500 * MS), Lookup::Found { .. }));
        assert_eq!(h.lookup(5, 4501 * MS), Lookup::TooOld);
        h.expire(4501 * MS);
        assert_eq!(h.len(), 4);
        // A packet sent late ages from its send time, as before.
        h.push_due(&header(10, 0), &o, &spans(10, 1), 5000 * MS, 4000 * MS);
        assert!(matches!(h.lookup(10, 6000 * MS), Lookup::Found { .. }));
        assert_eq!(h.lookup(10, 6001 * MS), Lookup::TooOld);
    }

    #[test]
    fn the_rings_cover_the_lead_and_say_how_far_they_do() {
        let rtx = Duration::from_secs(1);
        let lead = Duration::from_secs(4);
        // 200 packets a second, 4 s ahead and 1 s after: 1000 packets,
        // a quarter more for bursts.
        let c = HistoryConfig::for_rate(200.0, rtx, lead);
        assert_eq!(c.max_packets, 1250);
        assert_eq!(c.covered_lead(200.0), lead);
        // At a rate the largest history cannot cover, it says how far it
        // reaches, and the burst is held to that.
        let c = HistoryConfig::for_rate(4000.0, rtx, lead);
        assert_eq!(c.max_packets, MAX_PACKETS);
        let covered = c.covered_lead(4000.0);
        assert!(covered < lead && covered > Duration::from_millis(600), "{covered:?}");
        // Filled at that rate, that far ahead: the packet due (almost)
        // max_age ago is still kept.
        let o = owner();
        let mut h = History::new(c);
        let step = S_NS / 4000;
        let ahead = covered.as_nanos() as u64;
        let mut now = 0;
        for seq in 0..20_000u32 {
            now = u64::from(seq) * step;
            h.push_due(&header(seq as u16, 0), &o, &spans(seq as u16, 2), now, now + ahead);
        }
        let due_a_second_ago = 20_000 - 1 - (ahead + 990 * MS) / step;
        assert!(
            matches!(h.lookup(due_a_second_ago as u16, now), Lookup::Found { .. }),
            "{due_a_second_ago}"
        );
    }

    #[test]
    fn many_spans_push_out_more_packets() {
        let o = owner();
        let mut h = History::new(cfg(100, 10, 10_000));
        // Four spans each: the span ring holds two packets at a time.
        for seq in 0..6u16 {
            h.push(&header(seq, 0), &o, &spans(seq, 4), 0);
        }
        for seq in 0..6u16 {
            let kept = h.resend(seq, 0).map(|r| r.spans.to_vec());
            match seq {
                4 | 5 => assert_eq!(kept, Some(spans(seq, 4)), "{seq}"),
                _ => assert_eq!(kept, None, "{seq}"),
            }
        }
        // More spans than the ring: counted, answered as never sent, and the
        // history goes on.
        h.push(&header(6, 0), &o, &spans(6, 11), 0);
        assert_eq!(h.stats().unkept, 1);
        assert_eq!(h.lookup(6, 0), Lookup::NeverSent);
        h.push(&header(7, 0), &o, &spans(7, 1), 0);
        assert!(h.resend(7, 0).is_some());
        // Empty payloads take no spans.
        h.push(&header(8, 0), &o, &[], 0);
        assert_eq!(h.resend(8, 0).unwrap().spans.len(), 0);
    }

    #[test]
    fn gaps_are_vacant_and_jumps_restart() {
        let o = owner();
        let mut h = History::new(cfg(16, 64, 10_000));
        h.push(&header(100, 0), &o, &spans(100, 1), 0);
        h.push(&header(103, 0), &o, &spans(103, 1), 0);
        assert!(h.resend(100, 0).is_some() && h.resend(103, 0).is_some());
        assert_eq!(h.lookup(101, 0), Lookup::NeverSent);
        assert_eq!(h.lookup(102, 0), Lookup::NeverSent);
        // A jump further than the ring: the history starts again there.
        h.push(&header(200, 0), &o, &spans(200, 1), 0);
        assert_eq!(h.stats().restarts, 1);
        assert_eq!(h.len(), 1);
        assert!(h.resend(200, 0).is_some());
        // What came before the restart is not known any more.
        assert_eq!(h.lookup(103, 0), Lookup::NeverSent);
        // Backwards: also a restart.
        h.push(&header(150, 0), &o, &spans(150, 1), 0);
        assert_eq!(h.stats().restarts, 2);
        assert!(h.resend(150, 0).is_some() && h.resend(200, 0).is_none());
        // A new SSRC is a new stream.
        let mut other = header(151, 0);
        other[8..12].copy_from_slice(&9u32.to_be_bytes());
        h.push(&other, &o, &spans(151, 1), 0);
        assert_eq!(h.stats().restarts, 3);
        assert_eq!(h.resend(151, 0).unwrap().header, other);
    }

    #[test]
    fn live_packets_keep_their_own_owners_and_let_them_go() {
        let mut h = History::new(cfg(4, 16, 10_000));
        let bufs: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 100])).collect();
        for (seq, b) in bufs.iter().enumerate() {
            let s = [Span { offset: 12, len: 88 }];
            h.push(&header(seq as u16, 0), b, &s, 0);
        }
        // The history holds the last four buffers, and only those.
        for (seq, b) in bufs.iter().enumerate() {
            let held = h.resend(seq as u16, 0).map(|r| same_owner(r.owner, b));
            assert_eq!(held, (seq >= 6).then_some(true), "{seq}");
        }
        assert_eq!(h.runs.len(), 4);
        drop(h);
        // Dropped with the history: every buffer is back to one reference.
        for b in bufs {
            assert!(b.is_unique());
        }
    }

    #[test]
    fn resend_marks() {
        let o = owner();
        let mut h = History::new(cfg(8, 16, 10_000));
        h.push(&header(1, 0), &o, &spans(1, 1), 10 * MS);
        h.mark_resent(1, 25 * MS);
        assert_eq!(
            h.lookup(1, 30 * MS),
            Lookup::Found {
                len: 15,
                resent_at: Some(25 * MS)
            }
        );
        // Marking what is not kept does nothing.
        h.mark_resent(2, 30 * MS);
        assert_eq!(h.lookup(2, 30 * MS), Lookup::NeverSent);
    }

    /// Random pushes (gaps, span counts, times) against a plain model: what
    /// the history returns is always what was pushed under that number, and
    /// what it drops is always allowed to be dropped.
    #[test]
    fn agrees_with_a_model_under_random_use() {
        let o = owner();
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let packets = 4 + (next() % 60) as usize;
            let spans_cap = packets + (next() % (packets as u64 * 3)) as usize;
            let age = 50 + next() % 500;
            let mut h = History::new(cfg(packets, spans_cap, age));
            let mut model: std::collections::HashMap<u16, (Vec<Span>, Nanos)> = Default::default();
            // Span counts in push order, by sequence number.
            let mut order: Vec<(u16, usize)> = Vec::new();
            let mut seq = (next() % 65_536) as u16;
            let mut now = 0;
            for _ in 0..3000 {
                now += (next() % 20) * MS;
                let n = (next() % 5) as usize;
                let s = spans(seq, n);
                h.push(&header(seq, u32::from(seq) * 3), &o, &s, now);
                model.insert(seq, (s, now));
                order.push((seq, n));
                let newest = seq;
                // Mostly consecutive, sometimes a small gap.
                seq = seq.wrapping_add(if next() % 10 == 0 { 2 } else { 1 });
                for _ in 0..3 {
                    let ask = newest.wrapping_sub((next() % (packets as u64 * 2)) as u16);
                    match (h.resend(ask, now), model.get(&ask)) {
                        (Some(r), Some((want, at))) => {
                            assert_eq!(r.spans, &want[..], "round {round}");
                            assert_eq!(r.header, header(ask, u32::from(ask) * 3));
                            assert!(now - at <= age * MS);
                        }
                        (Some(_), None) => panic!("round {round}: {ask} never pushed"),
                        (None, Some((_, at))) => {
                            // Dropped: only when too old, or when what came
                            // after it fills the entry ring or the span ring
                            // (less the tail a wrap may leave unused).
                            let slots = usize::from(newest.wrapping_sub(ask)) + 1;
                            let later: usize = order
                                .iter()
                                .rev()
                                .take_while(|(q, _)| newest.wrapping_sub(*q) <= newest.wrapping_sub(ask))
                                .map(|(_, n)| n)
                                .sum();
                            assert!(
                                now - at > age * MS || slots > packets || later + 4 > spans_cap,
                                "round {round}: {ask} dropped early ({slots} slots, {later} spans)"
                            );
                        }
                        (None, None) => {}
                    }
                }
                if order.len() > 4 * packets {
                    order.drain(..order.len() - 2 * packets);
                }
            }
            // The newest packet is always kept.
            let newest = seq.wrapping_sub(1);
            if model.contains_key(&newest) {
                assert!(h.resend(newest, now).is_some(), "round {round}");
            }
        }
    }
}
