//! What a run leaves behind, in the formats HdrHistogram's own tools read:
//! the percentile table, the interval log (`.hlog`), percentile
//! distributions (`.hgrm`), and the per-session lines (`sessions.csv`).
//!
//! Histograms hold microseconds. The interval log keeps them so (its
//! readers take the unit as given; HistogramLogProcessor's
//! `-outputValueUnitRatio 1000` prints milliseconds); the `.hgrm` files and
//! the table are in milliseconds, as the HdrHistogram plotter expects.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::{Histograms, Metric};
use crate::session::Outcome;
use crate::worker::SessionSummary;

/// The figures of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles {
                count: 0,
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
                mean_us: 0.0,
            };
        }
        Quantiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The percentile table printed at the end, in milliseconds.
pub fn table(h: &Histograms) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "histogram (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let ms = |us: u64| us as f64 / 1_000.0;
    for m in Metric::ALL {
        let q = Quantiles::of(h.get(m));
        let name = match m.method() {
            Some(method) => format!("  {method}"),
            None => m.name().to_owned(),
        };
        if q.count == 0 {
            let _ = writeln!(s, "{name:<22} {:>10} {:>10}", 0, "-");
            continue;
        }
        let _ = writeln!(
            s,
            "{name:<22} {:>10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            q.count,
            ms(q.p50_us),
            ms(q.p90_us),
            ms(q.p99_us),
            ms(q.p999_us),
            ms(q.max_us)
        );
    }
    s
}

/// Writes `h` (microseconds) as HdrHistogram's percentile distribution in
/// milliseconds, line for line as `outputPercentileDistribution` of the
/// Java library writes it, with 5 percentile ticks per half distance.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    const RATIO: f64 = 1_000.0;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / RATIO;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q))?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / RATIO, h.stdev() / RATIO, h.max() as f64 / RATIO)
    };
    writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]")?;
    writeln!(out, "#[Max     = {max:12.3}, Total count    = {:12}]", h.len())?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    Ok(())
}

/// An HdrHistogram interval log being written: one tagged, compressed
/// histogram per metric per interval, with timestamps relative to the run's
/// start (its `BaseTime`).
pub struct IntervalLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
}

impl<W: Write> IntervalLog<W> {
    /// Writes the header: what this is, when the run started, the legend.
    pub fn start(mut out: W, started: SystemTime, about: &str) -> io::Result<IntervalLog<W>> {
        let t = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        for line in about.lines() {
            writeln!(out, "#{line}")?;
        }
        let tags: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        writeln!(
            out,
            "#Values are microseconds (HistogramLogProcessor -outputValueUnitRatio 1000 reports milliseconds)."
        )?;
        writeln!(out, "#Tags: {}", tags.join(" "))?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(out, "#[StartTime: {t:.3} (seconds since epoch)]")?;
        writeln!(out, "#[BaseTime: {t:.3} (seconds since epoch)]")?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(IntervalLog {
            out,
            serializer: V2DeflateSerializer::new(),
        })
    }

    /// Writes one interval: every metric's histogram, tagged with its name.
    pub fn interval(&mut self, h: &Histograms, start: Duration, length: Duration) -> io::Result<()> {
        // An empty builder writes no header lines of its own.
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut self.serializer)
            .map_err(io::Error::other)?;
        for m in Metric::ALL {
            w.write_histogram(h.get(m), start, length, Tag::new(m.name()))
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One line per session: what it did and how it ended.
pub fn write_sessions_csv(sessions: &[SessionSummary], out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "session,url,outcome,plays,packets,bytes,expected,lost,duplicates,reordered,max_jitter_us,first_packet_us,first_key_frame_us,error"
    )?;
    for s in sessions {
        let (outcome, error) = match &s.outcome {
            Some(Outcome::Completed) => ("completed", String::new()),
            Some(Outcome::Failed(e)) => ("failed", e.to_string()),
            None => ("unfinished", String::new()),
        };
        let t = &s.totals;
        writeln!(
            out,
            "{},{},{outcome},{},{},{},{},{},{},{},{},{},{},{}",
            s.id,
            csv_field(&s.url),
            s.plays,
            t.packets,
            t.bytes,
            t.expected,
            t.lost,
            t.duplicates,
            t.reordered,
            t.max_jitter_us,
            s.first_packet.map(|ns| (ns / 1_000).to_string()).unwrap_or_default(),
            s.first_key_frame.map(|ns| (ns / 1_000).to_string()).unwrap_or_default(),
            csv_field(&error)
        )?;
    }
    Ok(())
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reception::Measured;
    use crate::session::Totals;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use std::io::Cursor;

    fn sample() -> Histograms {
        let mut h = Histograms::default();
        for i in 1..=1000u64 {
            h.packet(&Measured {
                jitter_us: i,
                lateness_ns: (i * 1_000) as i64,
            });
        }
        h.first_packet(12_000_000);
        h
    }

    #[test]
    fn quantiles_and_table() {
        let h = sample();
        let q = Quantiles::of(h.get(Metric::Jitter));
        assert_eq!(q.count, 1000);
        assert!(h.get(Metric::Jitter).equivalent(q.p50_us, 500));
        assert!(h.get(Metric::Jitter).equivalent(q.p99_us, 990));
        assert!(h.get(Metric::Jitter).equivalent(q.max_us, 1000));
        assert_eq!(Quantiles::of(h.get(Metric::Play)).count, 0);
        let t = table(&h);
        let jitter = t.lines().find(|l| l.starts_with("jitter")).unwrap();
        let cols: Vec<&str> = jitter.split_whitespace().collect();
        assert_eq!(cols[1], "1000");
        assert_eq!(cols[4].parse::<f64>().unwrap(), q.p99_us as f64 / 1000.0);
        assert!(t.lines().any(|l| l.trim_start().starts_with("PLAY")));
    }

    #[test]
    fn hgrm_matches_the_java_layout() {
        let h = sample();
        let mut out = Vec::new();
        write_hgrm(h.get(Metric::Lateness), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<Vec<&str>> = lines
            .clone()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20);
        // Ascending values and percentiles; counts reach the total; the last
        // row (percentile 1) has no 1/(1-p).
        let mut prev = (0.0, 0.0);
        for r in &rows[..rows.len() - 1] {
            assert_eq!(r.len(), 4, "{r:?}");
            let (v, p): (f64, f64) = (r[0].parse().unwrap(), r[1].parse().unwrap());
            assert!(v >= prev.0 && p >= prev.1);
            prev = (v, p);
        }
        let last = rows.last().unwrap();
        assert_eq!((last.len(), last[1], last[2]), (3, "1.000000000000", "1000"));
        assert!((last[0].parse::<f64>().unwrap() - 1.0).abs() < 0.002, "1 ms max");
        let footer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[1].contains("Total count    =         1000"), "{}", footer[1]);
        // An empty histogram still gives a well-formed file.
        let mut out = Vec::new();
        write_hgrm(&crate::metrics::histogram(), &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Total count    =            0"));
    }

    #[test]
    fn interval_log_reads_back() {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let mut log = IntervalLog::start(Vec::new(), start, "rtpload test\nsecond line").unwrap();
        let h = sample();
        log.interval(&h, Duration::from_secs(0), Duration::from_secs(1))
            .unwrap();
        log.interval(&Histograms::default(), Duration::from_secs(1), Duration::from_secs(1))
            .unwrap();
        let bytes = log.out;
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("#rtpload test\n#second line\n"));
        let mut intervals = Vec::new();
        let mut base = None;
        for e in IntervalLogIterator::new(&bytes) {
            match e.unwrap() {
                LogEntry::BaseTime(t) => base = Some(t),
                LogEntry::StartTime(t) => assert_eq!(t, Duration::from_millis(1_700_000_000_250)),
                LogEntry::Interval(i) => intervals.push((
                    i.tag().map(|t| t.as_str().to_owned()),
                    i.start_timestamp(),
                    i.encoded_histogram().to_owned(),
                )),
            }
        }
        assert_eq!(base, Some(Duration::from_millis(1_700_000_000_250)));
        assert_eq!(intervals.len(), 2 * Metric::ALL.len());
        let (tag, at, encoded) = &intervals[Metric::ALL.iter().position(|m| *m == Metric::Jitter).unwrap()];
        assert_eq!((tag.as_deref(), *at), (Some("jitter"), Duration::ZERO));
        let decoded = base64_decode(encoded);
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut Cursor::new(decoded)).unwrap();
        assert_eq!(back, *h.get(Metric::Jitter));
        assert_eq!(intervals[Metric::ALL.len()].1, Duration::from_secs(1));
    }

    /// Standard base64 (the interval log's encoding), to check it by hand.
    fn base64_decode(s: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let mut out = Vec::new();
        for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= u32::from(value(c)) << (18 - 6 * i);
            }
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }

    #[test]
    fn sessions_csv() {
        let s = vec![
            SessionSummary {
                id: 1,
                url: "rtsp://h/a,b.mp4".into(),
                outcome: Some(Outcome::Completed),
                plays: 2,
                totals: Totals {
                    packets: 10,
                    bytes: 1000,
                    expected: 11,
                    lost: 1,
                    ..Totals::default()
                },
                first_packet: Some(2_500_000),
                first_key_frame: Some(40_000_000),
            },
            SessionSummary {
                id: 2,
                url: "rtsp://h/x".into(),
                outcome: Some(Outcome::Failed(crate::session::SessionError::NoMedia { secs: 10 })),
                plays: 1,
                totals: Totals::default(),
                first_packet: None,
                first_key_frame: None,
            },
        ];
        let mut out = Vec::new();
        write_sessions_csv(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "1,\"rtsp://h/a,b.mp4\",completed,2,10,1000,11,1,0,0,0,2500,40000,"
        );
        assert_eq!(
            lines[2],
            "2,rtsp://h/x,failed,1,0,0,0,0,0,0,0,,,no RTP for 10 s while playing"
        );
    }
}
