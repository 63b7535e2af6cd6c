//! Shard send-path benchmark: packets per second one shard core sends for
//! many sessions of a real hinted movie, beside a raw `sendmmsg` loop that
//! sends the very same datagrams with no server logic, in the same run.
//!
//! The shard's path is the engine's own [`ShardCore`](streamalot::shard::ShardCore):
//! its sessions are made by the SETUP and PLAY requests the control core
//! would send it, each round is its `handle_timeout` (the schedule, each
//! session's source writing RTP headers over spans of the mapped movie,
//! sender reports, housekeeping), and the round's datagrams leave through
//! the same batched `sendmmsg` calls of the `net` crate as the server's, with
//! every packet's lateness recorded in the shard's statistics. The rounds
//! while the sessions are starting (`--stagger`) are run first and not
//! measured. Only the clock differs: the round's "now" advances by a fixed tick of simulated
//! time per round, so the shard always has work and the figure is its
//! throughput, not the movie's bit rate. Sender reports go to a socket
//! nobody reads; they are printed beside the packets, not counted in them.
//!
//! The raw limit replays the datagrams the shard path sends (the same sizes,
//! to the same destinations, in the same rounds), prebuilt, one iovec each,
//! from one buffer: what is left is the system calls.
//!
//! Every (session, stream) has its own destination: 127.0.0.1 to
//! 127.0.0.250 on a few ports, all drained by a receiver on the other core.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use loader::Movie;
use net::{bind_pair, SendPath};
use streamalot::source::Nanos;
use streamalot_perf::movie_maker;
use streamalot_perf::os;
use streamalot_perf::receiver::{self, Receiver};
use streamalot_perf::run::{measure, Run};
use streamalot_perf::shard::{Sim, BATCH};

#[derive(Parser, Debug)]
#[command(
    name = "shard-bench",
    about = "Packets per second one shard core sends for many sessions of a hinted movie, \
             beside a raw sendmmsg loop of the same datagrams"
)]
struct Args {
    /// Hinted movie to play (default: a ~300 kbit/s movie made with ffmpeg in --data-dir).
    #[arg(long)]
    movie: Option<PathBuf>,
    /// Where the generated movie is kept.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    data_dir: PathBuf,
    /// Length of the generated movie, in minutes.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Sessions the shard serves, all playing the movie, started evenly over
    /// the first --stagger seconds.
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Seconds of simulated time over which the sessions start.
    #[arg(long, default_value_t = 2.0)]
    stagger: f64,
    /// Simulated time per round, in microseconds: the shard sends what is due
    /// in each tick in one round.
    #[arg(long, default_value_t = 1000)]
    tick_us: u64,
    /// Seconds of wall time each measured loop runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// UDP ports the destinations use (times 250 addresses, times streams).
    #[arg(long, default_value_t = 8)]
    ports: u16,
    /// Times the set of loops is repeated, to show the spread.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Core the shard (and the raw loop) runs on.
    #[arg(long, default_value_t = 1)]
    shard_core: usize,
    /// Core the receiver runs on.
    #[arg(long, default_value_t = 0)]
    receiver_core: usize,
    /// Let the receiver sleep in poll(2) when its sockets are empty, as a real client does,
    /// so the sender pays for waking it (by default it polls and never sleeps).
    #[arg(long)]
    receiver_sleeps: bool,
    /// Let the receiver sleep this many milliseconds at a time and then read what is ready, as
    /// `rtpload --read-interval-ms` does: no arrival has a sleeping reader to wake, so the
    /// sender pays for none (in a virtual machine each wake-up is an interprocessor interrupt);
    /// 0 reads on arrival, as --receiver-sleeps
    #[arg(long, value_name = "MS", conflicts_with = "receiver_sleeps")]
    receiver_reads_every_ms: Option<u64>,
    /// Shards running at once, each its own core of --sessions sessions sending as shipped (loop
    /// c), pinned in turn to the shard core, the receiver core, and any others: how a box's packet
    /// rate grows with shards, and whether a shard's cost per packet holds when others run
    /// beside it. Replaces the loops (a) to (f).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Every N-th session sets up with RTP/AVPF and keeps a NACK/RTX history of what it
    /// sends (nobody NACKs): what the history costs per packet. 0: none, all plain RTP/AVP.
    #[arg(long, value_name = "N", default_value_t = 0)]
    nack_every: usize,
    /// Run only these loops (a to f), e.g. `--only b` under a profiler.
    #[arg(long, value_delimiter = ',')]
    only: Vec<char>,
}

/// The loops measured, in the order they run each round: each `sendmmsg`
/// loop beside its io_uring twin.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loop {
    Raw,
    RawUring,
    Shard,
    ShardUring,
    ShardGso,
    ShardGsoUring,
}

impl Loop {
    const ALL: [Loop; 6] = [
        Loop::Raw,
        Loop::RawUring,
        Loop::Shard,
        Loop::ShardUring,
        Loop::ShardGso,
        Loop::ShardGsoUring,
    ];

    fn letter(self) -> char {
        match self {
            Loop::Raw => 'a',
            Loop::Shard => 'b',
            Loop::ShardGso => 'c',
            Loop::RawUring => 'd',
            Loop::ShardUring => 'e',
            Loop::ShardGsoUring => 'f',
        }
    }

    fn path(self) -> SendPath {
        match self {
            Loop::Raw | Loop::Shard | Loop::ShardGso => SendPath::Sendmmsg,
            Loop::RawUring | Loop::ShardUring | Loop::ShardGsoUring => SendPath::IoUring,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Loop::Raw => "(a) raw sendmmsg: the shard's datagrams replayed, prebuilt, 1 iovec each",
            Loop::Shard => {
                "(b) the shard core's rounds, GSO off: schedule, sources, RTP headers, reports, spans of the movie"
            }
            Loop::ShardGso => "(c) shard round as shipped: as (b), with UDP GSO for runs to one client",
            Loop::RawUring => "(d) raw io_uring: as (a), each round one submission of SENDMSG entries",
            Loop::ShardUring => "(e) as (b), GSO off, the round sent through io_uring (--send-path io-uring)",
            Loop::ShardGsoUring => "(f) as (c), with GSO, the round sent through io_uring",
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("shard-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let path = match &args.movie {
        Some(p) => p.clone(),
        None => movie_maker::ensure(&args.data_dir, args.minutes)?,
    };
    let movie = Arc::new(Movie::open(&path).map_err(|e| format!("{}: {e}", path.display()))?);
    let streams = movie.hint_tracks().count();
    let addresses = args.sessions.div_ceil(usize::from(args.ports)).min(250);
    if addresses * usize::from(args.ports) < args.sessions {
        return Err(format!(
            "{} sessions need more than 250 addresses x {} ports: raise --ports",
            args.sessions, args.ports
        ));
    }

    println!("shard-bench: one shard core's send path, beside raw sendmmsg of the same datagrams");
    println!(
        "machine: {}; load average {} (1, 5, 15 min)",
        os::machine(),
        os::load_average()
    );
    println!(
        "movie: {} ({:.0} s, {streams} hint tracks, {:.0} packets/s of movie)",
        path.display(),
        movie.duration_secs(),
        packets_per_second(&movie)
    );
    println!(
        "sessions: {} playing from npt 0, started over {:.1} s; {} us of simulated time per round; \
         at most {BATCH} datagrams per sendmmsg; {:.1} s per loop, {} round(s)",
        args.sessions, args.stagger, args.tick_us, args.seconds, args.rounds
    );

    // Destinations: 127.0.0.{1..} on base ports, one port pair apart per stream.
    let mut sockets = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..args.ports {
        let rtp = receiver::socket(0, false)?;
        let base = rtp.local_addr().map_err(|e| e.to_string())?.port();
        bases.push(base);
        sockets.push(rtp);
        for s in 1..streams {
            let port = base
                .checked_add(2 * s as u16)
                .ok_or("ran out of UDP ports for the destinations")?;
            sockets.push(receiver::socket(port, false).map_err(|e| format!("{e} (try again)"))?);
        }
    }
    let dests: Vec<Vec<SocketAddr>> = (0..args.sessions)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, 1 + (i % 250) as u8);
            let base = bases[i / 250 % bases.len()];
            (0..streams)
                .map(|s| SocketAddr::from((ip, base + 2 * s as u16)))
                .collect()
        })
        .collect();
    println!(
        "destinations: {} (session, stream) pairs on {} addresses x {} receiving sockets; receiver on core {}, \
         shard on core {}",
        args.sessions * streams,
        addresses,
        sockets.len(),
        args.receiver_core,
        args.shard_core
    );
    let receiver = if let Some(ms) = args.receiver_reads_every_ms {
        Receiver::start_like_rtpload(sockets, args.receiver_core, 2048, ms)
    } else if args.receiver_sleeps {
        Receiver::start_sleeping(sockets, args.receiver_core, 2048)
    } else {
        Receiver::start(sockets, args.receiver_core, 2048)
    };
    let tx = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000..=60000)
        .map_err(|e| format!("sender socket: {e}"))?
        .rtp;

    // Sender reports go to a socket nobody reads (the receiver counts RTP).
    let rtcp_sink = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("RTCP sink: {e}"))?;
    let sim = Sim {
        movie: movie.clone(),
        dests: Arc::new(dests),
        rtcp_port: rtcp_sink.local_addr().map_err(|e| e.to_string())?.port(),
        stagger_ns: (args.stagger * 1e9) as Nanos,
        tick_ns: args.tick_us * 1_000,
        nack_every: args.nack_every,
    };
    if let Some(bytes) = sim.memory_per_session() {
        println!(
            "shard core memory: {bytes:.0} bytes per session (anonymous resident memory grown by making and \
             playing {} sessions)",
            args.sessions
        );
    }
    // The raw loop's datagrams: what the shard sends in its first rounds,
    // recorded once, replayed as often as the loop needs.
    let wants_raw = args.shards <= 1 && (args.only.is_empty() || args.only.contains(&'a') || args.only.contains(&'d'));
    let replay = Arc::new(sim.record(if wants_raw { 5_000_000 } else { 0 }));
    println!(
        "raw replay: {} datagrams in {} rounds ({:.0} per round), {:.1} MiB of payload",
        replay.lens.len(),
        replay.rounds.len(),
        replay.lens.len() as f64 / replay.rounds.len() as f64,
        replay.lens.iter().map(|&l| l as u64).sum::<u64>() as f64 / (1 << 20) as f64
    );

    let duration = Duration::from_secs_f64(args.seconds);
    if args.shards > 1 {
        return shards_at_once(args, &sim, &tx, &receiver, duration);
    }
    let mut totals = [Run::default(); Loop::ALL.len()];
    for round in 1..=args.rounds {
        let mut runs = [Run::default(); Loop::ALL.len()];
        for (i, which) in Loop::ALL.into_iter().enumerate() {
            if !args.only.is_empty() && !args.only.contains(&which.letter()) {
                continue;
            }
            let tx = tx.try_clone().map_err(|e| e.to_string())?;
            let (sim, replay, core) = (sim.clone(), replay.clone(), args.shard_core);
            let run = measure(&receiver, move || {
                os::pin(Some(core))?;
                let path = which.path();
                match which {
                    Loop::Raw | Loop::RawUring => replay.send(&tx, path, duration),
                    Loop::Shard | Loop::ShardUring => sim.serve(&tx, false, path, duration),
                    Loop::ShardGso | Loop::ShardGsoUring => sim.serve(&tx, true, path, duration),
                }
            })?;
            runs[i] = run;
            totals[i].add(&run);
        }
        if args.rounds > 1 {
            println!();
            println!("round {round}:");
            print_runs(&runs);
        }
    }
    println!();
    if args.rounds > 1 {
        println!("all {} rounds together:", args.rounds);
    }
    print_runs(&totals);
    Ok(())
}

/// `--shards` shard cores at once, as shipped, for `--rounds` rounds.
fn shards_at_once(
    args: &Args,
    sim: &Sim,
    tx: &std::net::UdpSocket,
    receiver: &Receiver,
    duration: Duration,
) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let order: Vec<usize> = std::iter::once(args.shard_core)
        .chain(std::iter::once(args.receiver_core))
        .chain((0..cores).filter(|&c| c != args.shard_core && c != args.receiver_core))
        .collect();
    let placement: Vec<usize> = (0..args.shards).map(|i| order[i % order.len()]).collect();
    println!(
        "{} shards at once, each {} sessions sending as shipped (loop c), on cores {placement:?}",
        args.shards, args.sessions
    );
    for round in 1..=args.rounds {
        let (sim, placement) = (sim.clone(), placement.clone());
        let txs: Vec<std::net::UdpSocket> = placement
            .iter()
            .map(|_| tx.try_clone().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let shards = args.shards as u32;
        let total = measure(receiver, move || {
            let threads: Vec<_> = placement
                .into_iter()
                .zip(txs)
                .map(|(core, tx)| {
                    let sim = sim.clone();
                    std::thread::spawn(move || {
                        os::pin(Some(core))?;
                        sim.serve(&tx, true, SendPath::Sendmmsg, duration)
                    })
                })
                .collect();
            let mut total = Run::default();
            for t in threads {
                let run = t.join().map_err(|_| "a shard thread panicked".to_string())??;
                total.add(&run);
            }
            // Side by side, not one after the other: the wall time is one loop's.
            total.wall /= shards;
            Ok(total)
        })?;
        println!();
        println!("round {round}:");
        total.print(&format!(
            "{} shards together (CPU and packets summed over the shards)",
            args.shards
        ));
    }
    Ok(())
}

fn packets_per_second(movie: &Movie) -> f64 {
    let packets = movie.all_packets().take(200_000).count();
    let secs = movie.duration_secs().min(200_000.0);
    let sampled = movie
        .all_packets()
        .take(200_000)
        .last()
        .and_then(Result::ok)
        .map_or(secs, |p| p.transmit_ns as f64 / 1e9);
    packets as f64 / sampled.max(1e-9)
}

fn print_runs(runs: &[Run; Loop::ALL.len()]) {
    for (which, run) in Loop::ALL.into_iter().zip(runs) {
        if run.rounds > 0 {
            run.print(which.label());
        }
    }
    let [raw, raw_u, shard, shard_u, gso, gso_u] = runs;
    // Packets per CPU-second compare the loops even when something else on
    // the machine took the core from one of them for a while.
    let ratio = |name: &str, run: &Run, base: &Run, what: &str| {
        if run.flushed.sent > 0 && base.flushed.sent > 0 {
            println!(
                "{name}: {:.3}x {what}'s packets per CPU-second ({:.3}x its packets/s of wall time)",
                base.cpu_ns_per_packet() / run.cpu_ns_per_packet(),
                run.pps() / base.pps()
            );
        }
    };
    ratio("(b)/(a)", shard, raw, "the raw sendmmsg loop");
    ratio("(c)/(a)", gso, raw, "the raw sendmmsg loop");
    ratio("(e)/(a)", shard_u, raw, "the raw sendmmsg loop");
    ratio("(f)/(a)", gso_u, raw, "the raw sendmmsg loop");
    ratio("(d)/(a)", raw_u, raw, "raw sendmmsg (raw io_uring against it)");
    ratio(
        "(e)/(b)",
        shard_u,
        shard,
        "the shard on sendmmsg (io_uring against it, GSO off)",
    );
    ratio(
        "(f)/(c)",
        gso_u,
        gso,
        "the shard on sendmmsg (io_uring against it, GSO on)",
    );
}
