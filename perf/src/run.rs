//! One timed send loop's figures, as every send benchmark reports them, and
//! the way they are taken: the loop on a thread of its own, the receiver's
//! count once it has gone quiet.

use std::thread;
use std::time::Duration;

use net::Flushed;

use crate::os::Cpu;
use crate::receiver::Receiver;

/// What one timed loop did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Run {
    pub flushed: Flushed,
    /// RTCP datagrams the loop sent besides (a shard's sender reports).
    pub rtcp: usize,
    pub rounds: u64,
    pub wall: Duration,
    pub cpu: Cpu,
    /// What the receiver counted of it, filled in by the caller.
    pub received: u64,
    /// The 1-minute load average when it ended (the largest, once added up).
    pub load: f64,
}

impl Run {
    pub fn pps(&self) -> f64 {
        self.flushed.sent as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_ns_per_packet(&self) -> f64 {
        self.cpu.total().as_nanos() as f64 / self.flushed.sent.max(1) as f64
    }

    pub fn add(&mut self, o: &Run) {
        self.flushed.sent += o.flushed.sent;
        self.flushed.would_block += o.flushed.would_block;
        self.flushed.failed += o.flushed.failed;
        self.rtcp += o.rtcp;
        self.rounds += o.rounds;
        self.wall += o.wall;
        self.cpu.add(o.cpu);
        self.received += o.received;
        self.load = self.load.max(o.load);
    }
}

impl Run {
    /// Prints the figures under `label`, indented: what was sent and
    /// received, and the sending thread's CPU time per packet.
    pub fn print(&self, label: &str) {
        let sent = self.flushed.sent as u64;
        let lost = sent.saturating_sub(self.received);
        let per = |d: Duration| d.as_nanos() as f64 / sent.max(1) as f64;
        println!("{label}");
        let rounds = if self.rounds > 0 {
            format!(" ({:.0} per round)", sent as f64 / self.rounds as f64)
        } else {
            String::new()
        };
        println!(
            "    sent        {sent:>11} packets in {:.2} s = {:>9.0} packets/s{rounds}",
            self.wall.as_secs_f64(),
            self.pps()
        );
        println!(
            "    not sent    {:>11} (EAGAIN/ENOBUFS), {} other errors",
            self.flushed.would_block, self.flushed.failed
        );
        if self.rtcp > 0 {
            println!(
                "    and         {:>11} RTCP datagrams (sender reports), not counted as packets",
                self.rtcp
            );
        }
        println!(
            "    received    {:>11} packets, lost {lost} ({:.3}%)",
            self.received,
            100.0 * lost as f64 / sent.max(1) as f64
        );
        println!(
            "    sender CPU  {:>11.3} s ({:.0}% of the time) = {:.0} ns/packet (user {:.0} + sys {:.0})",
            self.cpu.total().as_secs_f64(),
            100.0 * self.cpu.total().as_secs_f64() / self.wall.as_secs_f64(),
            self.cpu_ns_per_packet(),
            per(self.cpu.user),
            per(self.cpu.sys)
        );
        println!(
            "    per core    {:>11.0} packets per CPU-second (what one core sends when the thread has it all); \
             load average {:.2}",
            1e9 / self.cpu_ns_per_packet(),
            self.load
        );
    }
}

/// Runs one timed loop on its own thread and counts what `receiver` got of
/// it (waiting until the receiver has gone quiet before and after).
pub fn measure(
    receiver: &Receiver,
    body: impl FnOnce() -> Result<Run, String> + Send + 'static,
) -> Result<Run, String> {
    let before = receiver.settle();
    let mut run = thread::spawn(body)
        .join()
        .map_err(|_| "the sending thread panicked".to_string())??;
    run.received = receiver.settle() - before;
    run.load = crate::os::load1();
    Ok(run)
}
