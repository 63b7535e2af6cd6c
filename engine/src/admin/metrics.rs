//! `/metrics`: the server's figures in the Prometheus text exposition
//! format (or OpenMetrics, when the scraper's `Accept` asks for it),
//! encoded by the `prometheus-client` crate from the shards' snapshots.
//!
//! The shards keep their own counters and HdrHistograms (`stats.rs`), which
//! they copy when asked; so the metrics here are collected at each scrape
//! (a [`Collector`]) rather than instruments updated as things happen, and
//! a histogram's buckets are read off the shard's HdrHistogram. Every
//! series carries `shard` (`0`, `1`, ..., or `control` for the RTSP
//! requests answered on the control core), except the live broadcasts',
//! which carry their `path` (a broadcast is on every shard at once).

use std::collections::BTreeMap;

use std::future::Future;
use std::pin::Pin;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use proto::http::{Request, Response};

use crate::access::addr::Cidr;
use crate::http::{Context, Handler, Reply};
use crate::shard::{Snapshot, TRANSPORTS};
use crate::stats::{LiveStats, RequestCounts};

/// Bucket bounds, in seconds, of the send-lateness histogram: from a tenth
/// of a millisecond (a round's timer slack) to seconds (a shard far behind).
const LATENESS_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
/// PLAY to first packet: a round or two normally.
const FIRST_PACKET_BOUNDS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Reported jitter: B-frame reordering alone makes tens of milliseconds.
const JITTER_BOUNDS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The `/metrics` handler: for clients in `allow`, no credential.
pub struct Metrics {
    pub allow: Vec<Cidr>,
}

impl Handler for Metrics {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            if !self.allow.iter().any(|b| b.contains(cx.client.ip())) {
                return Reply::Respond(Response::new(403).body(
                    "text/plain; charset=utf-8",
                    "metrics are not served to this address (see --metrics-allow)\n",
                ));
            }
            let openmetrics = req
                .head
                .headers
                .get("Accept")
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            let scrape = Scrape {
                shards: cx.server.snapshots(false).await,
                live: cx.server.stats().await.live,
                control: cx.server.control_requests(),
                connections: cx.server.counts().connections,
                tunnels: cx.server.counts().tunnels,
                listeners: cx.server.counts().listeners,
                mounts: cx.server.mounts(),
                uptime_secs: cx.server.uptime_secs(),
            };
            Reply::Respond(match scrape.encode(openmetrics) {
                Ok((content_type, text)) => Response::new(200).body(content_type, text),
                Err(_) => Response::new(500),
            })
        })
    }
}

/// What one scrape reports.
#[derive(Debug)]
pub struct Scrape {
    pub shards: Vec<Snapshot>,
    /// Per live broadcast (by path), over every shard: viewers, what came
    /// in, and what was dropped.
    pub live: BTreeMap<String, LiveStats>,
    /// RTSP responses written by the control core.
    pub control: RequestCounts,
    pub connections: usize,
    pub tunnels: usize,
    /// Icecast listeners.
    pub listeners: usize,
    /// The live Icecast mounts.
    pub mounts: Vec<crate::icecast::mount::Mount>,
    pub uptime_secs: f64,
}

impl Scrape {
    /// The text and its content type.
    pub fn encode(self, openmetrics: bool) -> Result<(&'static str, String), std::fmt::Error> {
        let mut registry = Registry::with_prefix("streamalot");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
            Ok(("application/openmetrics-text; version=1.0.0; charset=utf-8", out))
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
            Ok(("text/plain; version=0.0.4; charset=utf-8", out))
        }
    }
}

type Labels = Vec<(&'static str, String)>;

fn shard_label(s: &Snapshot) -> Labels {
    vec![("shard", s.shard.to_string())]
}

fn counter(e: &mut MetricEncoder<'_>, labels: &Labels, v: u64) -> Result<(), std::fmt::Error> {
    e.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge(e: &mut MetricEncoder<'_>, labels: &Labels, v: i64) -> Result<(), std::fmt::Error> {
    e.encode_family(labels)?.encode_gauge(&v)
}

/// An HdrHistogram of microseconds as a Prometheus histogram in seconds:
/// the count at or below each bound (within the HdrHistogram's precision),
/// the total, and the sum.
fn histogram(
    e: &mut MetricEncoder<'_>,
    labels: &Labels,
    h: &hdrhistogram::Histogram<u64>,
    bounds: &[f64],
) -> Result<(), std::fmt::Error> {
    let mut buckets = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for &b in bounds {
        let upto = h.count_between(0, (b * 1e6) as u64);
        // The encoder adds them up: each bucket's own count.
        buckets.push((b, upto.saturating_sub(below)));
        below = below.max(upto);
    }
    buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
    let sum = h.mean() * h.len() as f64 / 1e6;
    e.encode_family(labels)?
        .encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)
}

/// Writes one metric family: its descriptor, then `each` for its series.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    each: impl FnOnce(&mut MetricEncoder<'_>) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, unit, kind)?;
    each(&mut e)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let per_shard = |enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: fn(&Snapshot) -> u64| {
            family(enc, name, help, None, MetricType::Counter, |e| {
                shards.iter().try_for_each(|s| counter(e, &shard_label(s), value(s)))
            })
        };
        family(
            &mut enc,
            "uptime",
            "Time since the server started",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            |e| e.encode_gauge(&self.uptime_secs),
        )?;
        family(
            &mut enc,
            "connections",
            "Client connections open (RTSP, HTTP and tunnel legs)",
            None,
            MetricType::Gauge,
            |e| e.encode_gauge(&(self.connections as i64)),
        )?;
        family(
            &mut enc,
            "tunnels",
            "RTSP-over-HTTP tunnels open or being paired",
            None,
            MetricType::Gauge,
            |e| e.encode_gauge(&(self.tunnels as i64)),
        )?;
        family(
            &mut enc,
            "sessions",
            "Sessions now, by transport and by what they play",
            None,
            MetricType::Gauge,
            |e| {
                for s in shards {
                    for (t, n) in TRANSPORTS.iter().zip(s.by_transport) {
                        let labels = vec![
                            ("shard", s.shard.to_string()),
                            ("transport", (*t).to_owned()),
                            ("kind", "vod".to_owned()),
                        ];
                        gauge(e, &labels, n as i64)?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut enc,
            "shard_connections",
            "Connections a shard carries media on",
            None,
            MetricType::Gauge,
            |e| {
                shards
                    .iter()
                    .try_for_each(|s| gauge(e, &shard_label(s), s.connections as i64))
            },
        )?;
        per_shard(&mut enc, "sessions_started", "Sessions started", |s| {
            s.stats.sessions_started
        })?;
        per_shard(&mut enc, "sessions_ended", "Sessions ended", |s| s.stats.sessions_ended)?;
        family(
            &mut enc,
            "listeners",
            "Icecast (MP3 over HTTP) listeners now",
            None,
            MetricType::Gauge,
            |e| e.encode_gauge(&(self.listeners as i64)),
        )?;
        per_shard(&mut enc, "listeners_started", "Icecast listeners that joined", |s| {
            s.stats.listeners_started
        })?;
        per_shard(&mut enc, "listeners_ended", "Icecast listeners that left", |s| {
            s.stats.listeners_ended
        })?;
        per_shard(
            &mut enc,
            "listeners_dropped",
            "Icecast listeners dropped for reading too slowly",
            |s| s.stats.listeners_dropped,
        )?;
        per_shard(
            &mut enc,
            "listener_bytes_sent",
            "Bytes written to Icecast listeners: heads, audio and metadata",
            |s| s.stats.listener_bytes,
        )?;
        let mount_label = |m: &crate::icecast::mount::Mount| -> Labels {
            vec![("mount", m.path.clone()), ("feed", m.feed.as_str().to_owned())]
        };
        family(
            &mut enc,
            "icecast_sources",
            "Icecast sources (SOURCE or PUT) feeding a mount now",
            None,
            MetricType::Gauge,
            |e| {
                let n = self
                    .mounts
                    .iter()
                    .filter(|m| m.feed == crate::icecast::mount::Feed::Source)
                    .count();
                e.encode_gauge(&(n as i64))
            },
        )?;
        family(
            &mut enc,
            "icecast_mount_listeners",
            "Listeners of each live Icecast mount now, on every shard",
            None,
            MetricType::Gauge,
            |e| {
                for m in &self.mounts {
                    let n: u64 = shards.iter().filter_map(|s| s.stats.mount_listeners.get(&m.id)).sum();
                    gauge(e, &mount_label(m), n as i64)?;
                }
                Ok(())
            },
        )?;
        family(
            &mut enc,
            "icecast_mount_bytes_received",
            "Bytes a live Icecast mount's feed sent (audio, after the body's framing)",
            None,
            MetricType::Counter,
            |e| {
                self.mounts
                    .iter()
                    .try_for_each(|m| counter(e, &mount_label(m), m.bytes_in))
            },
        )?;
        family(
            &mut enc,
            "icecast_mount_frames_received",
            "MPEG audio frames a live Icecast mount's feed sent",
            None,
            MetricType::Counter,
            |e| {
                self.mounts
                    .iter()
                    .try_for_each(|m| counter(e, &mount_label(m), m.frames_in))
            },
        )?;
        family(
            &mut enc,
            "icecast_mount_frames_lost",
            "Frames of a live mount a shard's full channel had no room for",
            None,
            MetricType::Counter,
            |e| {
                self.mounts
                    .iter()
                    .try_for_each(|m| counter(e, &mount_label(m), m.frames_lost))
            },
        )?;
        per_shard(
            &mut enc,
            "rtp_packets_sent",
            "RTP packets the kernel took (UDP) or queued on a connection (TCP, HTTP)",
            |s| s.stats.packets,
        )?;
        per_shard(
            &mut enc,
            "rtp_bytes_sent",
            "Bytes of those RTP packets, headers included",
            |s| s.stats.bytes,
        )?;
        family(
            &mut enc,
            "packets_dropped",
            "Packets not sent, by reason",
            None,
            MetricType::Counter,
            |e| {
                for s in shards {
                    for (reason, n) in [
                        ("tcp_queue_full", s.stats.dropped_tcp),
                        ("udp_not_sent", s.stats.dropped_udp),
                        ("damaged_hint", s.stats.skipped),
                    ] {
                        counter(
                            e,
                            &vec![("shard", s.shard.to_string()), ("reason", reason.to_owned())],
                            n,
                        )?;
                    }
                }
                Ok(())
            },
        )?;
        per_shard(
            &mut enc,
            "rtcp_bad",
            "RTCP datagrams that did not parse or came from no client we know",
            |s| s.stats.bad_rtcp,
        )?;
        per_shard(
            &mut enc,
            "rtcp_reported_lost_packets",
            "Packets clients reported lost in RTCP receiver reports",
            |s| s.stats.rtcp_lost,
        )?;
        family(
            &mut enc,
            "rtcp_jitter",
            "Interarrival jitter clients reported, per report block",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            |e| {
                shards
                    .iter()
                    .try_for_each(|s| histogram(e, &shard_label(s), &s.stats.rtcp_jitter, &JITTER_BOUNDS))
            },
        )?;
        family(
            &mut enc,
            "send_lateness",
            "How late each RTP packet went after it was due",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            |e| {
                shards
                    .iter()
                    .try_for_each(|s| histogram(e, &shard_label(s), &s.stats.lateness, &LATENESS_BOUNDS))
            },
        )?;
        family(
            &mut enc,
            "play_first_packet",
            "From a PLAY to the first packet it started",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            |e| {
                shards
                    .iter()
                    .try_for_each(|s| histogram(e, &shard_label(s), &s.stats.first_packet, &FIRST_PACKET_BOUNDS))
            },
        )?;
        family(
            &mut enc,
            "retransmitted_packets",
            "Packets sent again: RTX packets answering NACKs (scheme nack), resends on reliable UDP's timeout (scheme reliable)",
            None,
            MetricType::Counter,
            |e| {
                for s in shards {
                    let r = &s.stats.repair;
                    for (scheme, n) in [("nack", r.rtx_sent), ("reliable", r.reliable.resent_sent)] {
                        counter(e, &vec![("shard", s.shard.to_string()), ("scheme", scheme.to_owned())], n)?;
                    }
                }
                Ok(())
            },
        )?;
        per_shard(
            &mut enc,
            "nack_requested_packets",
            "Sequence numbers clients asked for in generic NACKs",
            |s| s.stats.repair.requested,
        )?;
        per_shard(
            &mut enc,
            "reliable_acked_packets",
            "Packets reliable-UDP clients acknowledged in qtak packets",
            |s| s.stats.repair.reliable.acked,
        )?;
        per_shard(
            &mut enc,
            "reliable_expired_packets",
            "Reliable-UDP packets let go unacknowledged, too late to be of use",
            |s| s.stats.repair.reliable.expired,
        )?;
        family(
            &mut enc,
            "feedback_ignored",
            "Client feedback not honoured, by reason: NACKed numbers asked again within a round trip, over the resend rate, no longer kept or never sent; NACKs cut short or for streams without retransmission; acks and QTSS reports naming no stream of ours, over the rate or malformed; any of them from an address the stream is not sent to (forged)",
            None,
            MetricType::Counter,
            |e| {
                for s in shards {
                    let r = &s.stats.repair;
                    let c = &s.stats.client_reports;
                    for (reason, n) in [
                        ("nack_duplicate", r.duplicate),
                        ("nack_rate_limited", r.rate_limited),
                        ("nack_too_old", r.too_old),
                        ("nack_never_sent", r.never_sent),
                        ("nack_truncated", r.truncated),
                        ("nack_unwanted", r.unwanted),
                        ("ack_unwanted", r.reliable.unwanted),
                        ("ack_rate_limited", r.reliable.rate_limited),
                        ("ack_malformed", r.reliable.malformed),
                        ("report_unwanted", c.unwanted),
                        ("report_malformed", c.malformed),
                        ("forged", r.forged),
                    ] {
                        counter(e, &vec![("shard", s.shard.to_string()), ("reason", reason.to_owned())], n)?;
                    }
                }
                Ok(())
            },
        )?;
        per_shard(&mut enc, "client_reports", "QuickTime QTSS client reports taken", |s| {
            s.stats.client_reports.reports
        })?;
        per_shard(
            &mut enc,
            "packets_sent_ahead",
            "RTP packets sent ahead of their due time (Instant-On)",
            |s| s.stats.ahead_packets,
        )?;
        per_shard(&mut enc, "frames_thinned", "Video frames left out by thinning", |s| {
            s.stats.thinned_frames
        })?;
        let per_path = |enc: &mut DescriptorEncoder<'_>,
                        name: &str,
                        help: &str,
                        kind: MetricType,
                        value: fn(&LiveStats) -> u64| {
            family(enc, name, help, None, kind, |e| {
                self.live.iter().try_for_each(|(path, l)| {
                    let labels = vec![("path", path.clone())];
                    match kind {
                        MetricType::Gauge => gauge(e, &labels, value(l) as i64),
                        _ => counter(e, &labels, value(l)),
                    }
                })
            })
        };
        per_path(
            &mut enc,
            "live_viewers",
            "Viewers of a live broadcast now",
            MetricType::Gauge,
            |l| l.viewers,
        )?;
        per_path(
            &mut enc,
            "live_packets_in",
            "RTP packets taken from a live broadcast's publisher",
            MetricType::Counter,
            |l| l.packets_in,
        )?;
        per_path(
            &mut enc,
            "live_bytes_in",
            "Bytes of those packets, headers included",
            MetricType::Counter,
            |l| l.bytes_in,
        )?;
        per_path(
            &mut enc,
            "live_packets_refused",
            "A publisher's packets refused: malformed, another SSRC or payload type, past the byte budget",
            MetricType::Counter,
            |l| l.refused_in,
        )?;
        family(
            &mut enc,
            "live_bitrate_in",
            "A live broadcast's average bitrate in, since it went on the air",
            Some(&Unit::Other("bits_per_second".into())),
            MetricType::Gauge,
            |e| {
                self.live.iter().try_for_each(|(path, l)| {
                    e.encode_family(&vec![("path", path.clone())])?
                        .encode_gauge(&l.bitrate_in())
                })
            },
        )?;
        family(
            &mut enc,
            "live_packets_dropped",
            "A live broadcast's packets not delivered, by reason: not sent to a viewer that fell behind (per viewer), or lost between cores to a shard's full channel (per shard)",
            None,
            MetricType::Counter,
            |e| {
                for (path, l) in &self.live {
                    for (reason, n) in [("slow_viewer", l.dropped_slow), ("channel_full", l.channel_full)] {
                        counter(e, &vec![("path", path.clone()), ("reason", reason.to_owned())], n)?;
                    }
                }
                Ok(())
            },
        )?;
        per_shard(
            &mut enc,
            "live_packets_fanned_out",
            "Live packets a shard's replicas took from the control core",
            |s| s.stats.live_received,
        )?;
        family(
            &mut enc,
            "rtsp_requests",
            "RTSP responses written, by the request's method and the status",
            None,
            MetricType::Counter,
            |e| {
                let cores = std::iter::once(("control".to_owned(), &self.control))
                    .chain(shards.iter().map(|s| (s.shard.to_string(), &s.stats.requests)));
                for (core, counts) in cores {
                    for (method, status, n) in counts.iter() {
                        let labels = vec![
                            ("shard", core.clone()),
                            ("method", method.to_owned()),
                            ("status", status.to_string()),
                        ];
                        counter(e, &labels, n)?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ShardStats;
    use proto::rtsp::message::Method;

    fn snapshot(shard: usize) -> Snapshot {
        let mut stats = ShardStats::default();
        for late_us in [50, 200, 2_000, 40_000] {
            stats.record_send(late_us * 1_000, 1_000);
        }
        stats.record_first_packet(700_000_000);
        stats.requests.count(Some(&Method::Play), 200);
        stats.requests.count(Some(&Method::Other("X".into())), 501);
        stats.dropped_tcp = 3;
        stats.listeners_dropped = shard as u64;
        stats.listener_bytes = 16_000;
        stats.mount_listeners.insert(7, 3 + shard as u64);
        stats.repair.rtx_sent = 5;
        stats.repair.reliable.resent_sent = 6;
        stats.repair.forged = 2;
        stats.client_reports.malformed = 1;
        stats.thinned_frames = 9;
        Snapshot {
            shard,
            stats,
            by_transport: [2, 1, 0],
            connections: 1,
            sessions: Vec::new(),
        }
    }

    fn scrape() -> Scrape {
        let mut control = RequestCounts::default();
        control.count(Some(&Method::Describe), 200);
        control.count(None, 400);
        let mut live = BTreeMap::new();
        live.insert(
            "/live/cam".to_owned(),
            LiveStats {
                viewers: 3,
                packets_in: 500,
                bytes_in: 400_000,
                refused_in: 1,
                dropped_slow: 7,
                channel_full: 2,
                secs: 10.0,
            },
        );
        Scrape {
            shards: vec![snapshot(0), snapshot(1)],
            live,
            control,
            connections: 4,
            tunnels: 0,
            listeners: 2,
            mounts: vec![mount()],
            uptime_secs: 12.5,
        }
    }

    fn mount() -> crate::icecast::mount::Mount {
        let mut mounts = crate::icecast::mount::Mounts::new();
        let id = mounts
            .open(
                "/live.mp3",
                crate::icecast::mount::Feed::Source,
                None,
                None,
                Default::default(),
                0,
            )
            .unwrap();
        let m = mounts.by_id(id).unwrap();
        m.id = 7;
        m.bytes_in = 12_345;
        m.frames_in = 30;
        m.clone()
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
    }

    #[test]
    fn prometheus_text_has_every_family_and_per_shard_series() {
        let (content_type, text) = scrape().encode(false).unwrap();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(
            line(&text, "streamalot_rtp_packets_sent_total{shard=\"1\"}").ends_with(" 4"),
            "{text}"
        );
        assert!(line(&text, "streamalot_rtp_bytes_sent_total{shard=\"0\"}").ends_with(" 4000"));
        assert!(line(&text, "streamalot_listeners ").ends_with(" 2"), "{text}");
        assert!(line(&text, "streamalot_icecast_sources ").ends_with(" 1"), "{text}");
        let labels = "{mount=\"/live.mp3\",feed=\"source\"}";
        // Each shard's listeners of the mount, added up.
        assert!(
            line(&text, &format!("streamalot_icecast_mount_listeners{labels}")).ends_with(" 7"),
            "{text}"
        );
        assert!(
            line(&text, &format!("streamalot_icecast_mount_bytes_received_total{labels}")).ends_with(" 12345"),
            "{text}"
        );
        assert!(
            line(
                &text,
                &format!("streamalot_icecast_mount_frames_received_total{labels}")
            )
            .ends_with(" 30"),
            "{text}"
        );
        assert!(
            line(&text, "streamalot_listeners_dropped_total{shard=\"1\"}").ends_with(" 1"),
            "{text}"
        );
        assert!(
            line(&text, "streamalot_listener_bytes_sent_total{shard=\"0\"}").ends_with(" 16000"),
            "{text}"
        );
        assert!(line(&text, "streamalot_sessions{shard=\"0\",transport=\"udp\",kind=\"vod\"}").ends_with(" 2"));
        // Retransmission, Instant-On and thinning, per shard.
        assert!(line(
            &text,
            "streamalot_retransmitted_packets_total{shard=\"1\",scheme=\"reliable\"}"
        )
        .ends_with(" 6"));
        assert!(line(
            &text,
            "streamalot_retransmitted_packets_total{shard=\"0\",scheme=\"nack\"}"
        )
        .ends_with(" 5"));
        assert!(line(
            &text,
            "streamalot_feedback_ignored_total{shard=\"0\",reason=\"forged\"}"
        )
        .ends_with(" 2"));
        assert!(line(
            &text,
            "streamalot_feedback_ignored_total{shard=\"1\",reason=\"report_malformed\"}"
        )
        .ends_with(" 1"));
        assert!(line(&text, "streamalot_frames_thinned_total{shard=\"1\"}").ends_with(" 9"));
        assert!(line(
            &text,
            "streamalot_packets_dropped_total{shard=\"1\",reason=\"tcp_queue_full\"}"
        )
        .ends_with(" 3"));
        assert!(line(
            &text,
            "streamalot_rtsp_requests_total{shard=\"control\",method=\"INVALID\",status=\"400\"}"
        )
        .ends_with(" 1"));
        assert!(line(
            &text,
            "streamalot_rtsp_requests_total{shard=\"0\",method=\"OTHER\",status=\"501\"}"
        )
        .ends_with(" 1"));
        // Cumulative buckets read off the HdrHistogram: 50 and 200 us are
        // at or below 0.25 ms, 2 ms below 2.5 ms, 40 ms below 50 ms.
        assert!(
            line(
                &text,
                "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"0.0001\"}"
            )
            .ends_with(" 1"),
            "{text}"
        );
        assert!(line(
            &text,
            "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"0.00025\"}"
        )
        .ends_with(" 2"));
        assert!(line(
            &text,
            "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"0.0025\"}"
        )
        .ends_with(" 3"));
        assert!(line(
            &text,
            "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"0.025\"}"
        )
        .ends_with(" 3"));
        assert!(line(
            &text,
            "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"0.05\"}"
        )
        .ends_with(" 4"));
        assert!(line(
            &text,
            "streamalot_send_lateness_seconds_bucket{shard=\"0\",le=\"+Inf\"}"
        )
        .ends_with(" 4"));
        assert!(line(&text, "streamalot_send_lateness_seconds_count{shard=\"0\"}").ends_with(" 4"));
        let sum: f64 = line(&text, "streamalot_send_lateness_seconds_sum{shard=\"0\"}")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.04225).abs() < 0.0005, "{sum}");
        assert!(
            line(
                &text,
                "streamalot_play_first_packet_seconds_bucket{shard=\"1\",le=\"1\"}"
            )
            .ends_with(" 1"),
            "{text}"
        );
        assert!(
            line(
                &text,
                "streamalot_play_first_packet_seconds_bucket{shard=\"1\",le=\"0.25\"}"
            )
            .ends_with(" 0"),
            "{text}"
        );
        // Live broadcasts by path.
        assert!(
            line(&text, "streamalot_live_viewers{path=\"/live/cam\"}").ends_with(" 3"),
            "{text}"
        );
        assert!(line(&text, "streamalot_live_packets_in_total{path=\"/live/cam\"}").ends_with(" 500"));
        assert!(line(&text, "streamalot_live_bytes_in_total{path=\"/live/cam\"}").ends_with(" 400000"));
        assert!(line(&text, "streamalot_live_packets_refused_total{path=\"/live/cam\"}").ends_with(" 1"));
        assert!(
            line(&text, "streamalot_live_bitrate_in_bits_per_second{path=\"/live/cam\"}").ends_with(" 320000.0"),
            "{text}"
        );
        assert!(line(
            &text,
            "streamalot_live_packets_dropped_total{path=\"/live/cam\",reason=\"slow_viewer\"}"
        )
        .ends_with(" 7"));
        assert!(line(
            &text,
            "streamalot_live_packets_dropped_total{path=\"/live/cam\",reason=\"channel_full\"}"
        )
        .ends_with(" 2"));
        // One HELP and one TYPE per family, however many shards.
        assert_eq!(
            text.matches("# TYPE streamalot_rtp_packets_sent_total counter").count()
                + text.matches("# TYPE streamalot_rtp_packets_sent counter").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn openmetrics_when_asked() {
        let (content_type, text) = scrape().encode(true).unwrap();
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("streamalot_rtp_packets_sent_total{shard=\"0\"} 4"),
            "{text}"
        );
    }
}
