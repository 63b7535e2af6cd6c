//! Progress on stderr: a bar while sessions ramp up, then a line per
//! interval with active and failed sessions, throughput and loss. On a
//! terminal each redraws the line in place; otherwise each is a line of
//! its own, for logs.

use std::io::{IsTerminal, Write};

use crate::metrics::Counters;

const BAR: usize = 30;

pub struct Progress {
    enabled: bool,
    tty: bool,
    requested: u64,
    /// Counters and time (s) at the previous interval, for rates.
    last: Option<(Counters, f64)>,
    drawn: bool,
}

/// Throughput over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub mbit_s: f64,
    pub packets_s: f64,
}

impl Progress {
    pub fn new(enabled: bool, requested: u64) -> Progress {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            requested,
            last: Some((Counters::default(), 0.0)),
            drawn: false,
        }
    }

    /// Redraws the ramp-up bar between intervals (terminals only).
    pub fn ramp(&mut self, started: u64, c: &Counters) {
        if self.enabled && self.tty && started < self.requested {
            let line = ramp_line(started, self.requested, c, None);
            self.draw(&line);
        }
    }

    /// One interval is over at `t` seconds into the run.
    pub fn interval(&mut self, started: u64, c: &Counters, t: f64) -> Option<Rates> {
        let rates = self.last.map(|(prev, at)| rates(&prev, c, t - at));
        self.last = Some((*c, t));
        if self.enabled {
            let line = if started < self.requested {
                ramp_line(started, self.requested, c, rates)
            } else {
                live_line(t, c, rates)
            };
            self.draw(&line);
        }
        rates
    }

    fn draw(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the redrawn line, so that what follows starts on its own.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

fn rates(prev: &Counters, now: &Counters, secs: f64) -> Rates {
    let secs = secs.max(1e-3);
    Rates {
        mbit_s: now.bytes.saturating_sub(prev.bytes) as f64 * 8.0 / secs / 1e6,
        packets_s: now.packets.saturating_sub(prev.packets) as f64 / secs,
    }
}

fn ramp_line(started: u64, requested: u64, c: &Counters, r: Option<Rates>) -> String {
    let filled = (started as usize * BAR)
        .checked_div(requested as usize)
        .unwrap_or(BAR)
        .min(BAR);
    let mut line = format!(
        "ramp [{}{}] {started}/{requested} started, {} active, {} failed",
        "#".repeat(filled),
        "-".repeat(BAR - filled),
        c.active(),
        c.failed
    );
    if let Some(r) = r {
        line.push_str(&format!(", {:.2} Mbit/s", r.mbit_s));
    }
    line
}

fn live_line(t: f64, c: &Counters, r: Option<Rates>) -> String {
    let (mbit, pps) = r.map_or((0.0, 0.0), |r| (r.mbit_s, r.packets_s));
    format!(
        "{t:6.0} s  active {:>6}  failed {:>4}  {mbit:9.2} Mbit/s  {pps:9.0} pkt/s  loss {:.4}% ({} packets)",
        c.active(),
        c.failed,
        c.loss_fraction() * 100.0,
        c.lost
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_they_should() {
        let c = Counters {
            started: 50,
            completed: 5,
            failed: 2,
            packets: 10_000,
            bytes: 12_500_000,
            lost: 10,
            ..Counters::default()
        };
        let l = ramp_line(50, 200, &c, None);
        assert!(l.starts_with("ramp [#######-----"), "{l}");
        assert!(l.contains("50/200 started, 43 active, 2 failed"), "{l}");
        let prev = Counters::default();
        let r = rates(&prev, &c, 2.0);
        assert_eq!(
            r,
            Rates {
                mbit_s: 50.0,
                packets_s: 5_000.0
            }
        );
        let l = live_line(12.0, &c, Some(r));
        assert!(l.contains("active     43"), "{l}");
        assert!(l.contains("50.00 Mbit/s") && l.contains("5000 pkt/s"), "{l}");
        assert!(l.contains("loss 0.0999% (10 packets)"), "{l}");
        let mut p = Progress::new(false, 200);
        assert_eq!(
            p.interval(200, &c, 2.0),
            Some(r),
            "the first interval counts from the start"
        );
        let r2 = rates(&c, &c, 1.0);
        assert_eq!(p.interval(200, &c, 3.0), Some(r2));
    }
}
