//! The capacity benchmark: how many concurrent ~300 kbit/s sessions one
//! shard core holds, measured with the bundled load client, beside the raw
//! `sendmmsg` limit and GStreamer's RTSP server, in one run.
//!
//! For each step of concurrency (500, 1000, 2000, ... by default) it starts
//! `streamalot serve` with one shard, drives it with `rtpload` on stated
//! cores, and measures, while every session of the step plays: the server's
//! packets per second (its own counters), its CPU time and nanoseconds per
//! packet (from /proc), its memory per session, its send lateness (its
//! histogram), and from the client loss, arrival lateness and time to the
//! first packet. The steps go on until one does not hold (a session failed,
//! a packet was lost, or the server's send lateness p99 passed 2 ms). The
//! same steps then run against GStreamer's RTSP server (through
//! `tools/gst-rtsp-peer`, pinned to the same core) for as long as it holds.
//! The raw limit is the shard-bench's: the datagrams of this movie's
//! sessions, prebuilt, in bare `sendmmsg` calls on the shard's core.
//!
//! With `--live` each step runs twice, as video on demand and as viewers of
//! one live broadcast of the same movie (published by `rtpload --publish
//! --loop` in the client's process, reflected by the server to every
//! viewer): the fan-out figure beside the VoD one at the same bitrate.
//!
//! It writes a Markdown report and an SVG plot, and puts the report into
//! `perf/RESULTS.md` between markers, replacing the previous one (the
//! `--live` report has a section of its own).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use loader::Movie;
use net::{bind_pair, SendPath};
use serde_json::Value;
use streamalot_perf::netns::ClientNet;
use streamalot_perf::plot::{self, Chart, Series, PALETTE};
use streamalot_perf::receiver::{self, Receiver};
use streamalot_perf::run::measure;
use streamalot_perf::servers::{self, signal, terminate, Peer, Server};
use streamalot_perf::shard::Sim;
use streamalot_perf::{movie_maker, os, process};

#[derive(Parser, Debug)]
#[command(
    name = "capacity-bench",
    about = "Concurrent ~300 kbit/s sessions one shard core holds, with rtpload, beside the raw sendmmsg \
             limit and GStreamer's RTSP server"
)]
struct Args {
    /// Concurrency steps, in order; stepping stops at the first that does not hold.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,4000,6000,8000,10000,12000,16000"
    )]
    steps: Vec<u32>,
    /// Steps for GStreamer's server (it holds far fewer sessions).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800")]
    peer_steps: Vec<u32>,
    /// Seconds every session of a step plays together (after the last has started).
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// New sessions per second while a step ramps up.
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    /// A step holds while the server's send lateness p99 stays under this (ms).
    #[arg(long, default_value_t = 2.0)]
    max_send_p99_ms: f64,
    /// Hinted movie to serve (default: a ~300 kbit/s H.264 + AAC movie made with ffmpeg).
    #[arg(long)]
    movie: Option<PathBuf>,
    /// Where the generated movie is kept.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    data_dir: PathBuf,
    /// Where each step's rtpload output, the server logs, the report and the plot go.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/capacity"))]
    out: PathBuf,
    /// The results file whose capacity section is replaced ("-" for none).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    results: String,
    /// Use the streamalot and rtpload binaries in DIR instead of building release ones.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Core the server's shard (and GStreamer, and the raw loop) runs on; the control core is
    /// the one below it.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// Cores rtpload's workers run on.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    client_cores: Vec<usize>,
    /// rtpload reads its RTP sockets every this many milliseconds (`--read-interval-ms`), and
    /// the raw loop's receiver the same; 0: each when a datagram arrives. On loopback the
    /// kernel wakes a sleeping reader inside the sender's system call, and in a virtual machine
    /// that wake-up is an interprocessor interrupt: read on arrival, a fifth to a third of the
    /// raw loop's cost a packet was the client's wake-ups on a 2-core guest, which a client on
    /// another machine never puts on a server.
    #[arg(long, value_name = "MS", default_value_t = 1)]
    client_read_interval_ms: u64,
    /// Seconds the raw sendmmsg loop runs.
    #[arg(long, default_value_t = 3.0)]
    raw_seconds: f64,
    /// Skip GStreamer's server.
    #[arg(long)]
    no_peer: bool,
    /// How streamalot's shard sends (its --send-path): sendmmsg or io-uring.
    #[arg(long, default_value_t = streamalot::config::DEFAULT_SEND_PATH)]
    send_path: SendPath,
    /// A few sessions for a few seconds, to check that the benchmark works (the test suite
    /// runs it): steps 4, peer steps 2, hold 2 s, ramp 20/s, a short raw loop.
    #[arg(long)]
    smoke: bool,
    /// Run each step twice: as VoD sessions, and as viewers of one live broadcast of the
    /// movie (rtpload --publish --loop feeding it), stepping each until it does not hold
    #[arg(long)]
    live: bool,
    /// A flag for every streamalot server the run starts, after the benchmark's own
    /// (repeat it: `--server-arg=--nack --server-arg=--burst-lead --server-arg=2000`).
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// A configuration of streamalot to compare, NAME=FLAGS (FLAGS split at spaces, added
    /// after --server-arg's): each step runs once per variant, in the order given, each
    /// variant stepping on until it does not hold (`--variant 'on=' --variant
    /// 'off=--no-instant-on --no-thinning'`).
    #[arg(long, value_name = "NAME=FLAGS")]
    variant: Vec<String>,
    /// Run each step this many times, the variants (and VoD and live) alternated within each
    /// round, so that the spread between runs of one configuration stands beside the
    /// difference between configurations.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Before each step's runs, measure the raw sendmmsg loop again with as many sessions as
    /// the step has, to the client sockets rtpload gives them (200 sessions to a port pair;
    /// the default raw loop sends 2,000 sessions' datagrams to 250 addresses and 16 sockets).
    #[arg(long)]
    raw_at_steps: bool,
    /// Put rtpload (and the raw loop's receiver) in a network namespace of
    /// the benchmark's own, over a veth pair whose receive path runs on the
    /// client's core, as a network card and another machine would take it;
    /// on loopback the server's core runs its client's receive path inside
    /// every send. Needs root, iproute2, ethtool and taskset; sets
    /// net.core.skb_defer_max to 0 while it runs (see perf/src/netns.rs).
    #[arg(long)]
    client_netns: bool,
    /// rtpload's RTP sockets (`rtpload --gro`) and the raw loop's receiving
    /// sockets take coalesced runs of datagrams (UDP GRO), so that the
    /// client's receive path costs once a run. Meant for `--client-netns`,
    /// whose client end merges runs as a network card with GRO does; on
    /// loopback a GSO message would then reach the client unsplit, sparing
    /// the server work it does in the field.
    #[arg(long)]
    client_gro: bool,
}

/// One configuration of the server a step runs: streamalot as VoD or live,
/// with its variant's flags.
#[derive(Debug, Clone)]
struct Kind {
    /// How the report names it.
    label: String,
    live: bool,
    /// Flags after the benchmark's own and `--server-arg`'s.
    flags: Vec<String>,
}

impl Kind {
    /// The configurations to run for `args`: each variant (or plain
    /// streamalot), as VoD and, with `--live`, as live.
    fn all(args: &Args) -> Result<Vec<Kind>, String> {
        let mut variants = Vec::new();
        for v in &args.variant {
            let (name, flags) = v
                .split_once('=')
                .ok_or_else(|| format!("--variant {v:?}: expected NAME=FLAGS"))?;
            if name.trim().is_empty() {
                return Err(format!("--variant {v:?}: the name is empty"));
            }
            let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
            variants.push((format!("streamalot {}", name.trim()), flags));
        }
        if variants.is_empty() {
            variants.push(("streamalot".to_owned(), Vec::new()));
        }
        let mut kinds = Vec::new();
        for (label, flags) in variants {
            kinds.push(Kind {
                label: label.clone(),
                live: false,
                flags: flags.clone(),
            });
            if args.live {
                kinds.push(Kind {
                    label: format!("{label} live"),
                    live: true,
                    flags,
                });
            }
        }
        Ok(kinds)
    }
}

/// The credential the live steps publish with.
const LIVE_PUBLISH: &str = "/live=bench:bench";
const LIVE_PATH: &str = "/live/movie";

/// What one step measured.
#[derive(Debug, Clone, Default)]
struct Step {
    server: String,
    sessions: u32,
    /// Which of `--repeat`'s runs of the step this is (from 1).
    run: u32,
    /// The raw loop's nanoseconds a packet to this step's number of
    /// destinations, measured just before (`--raw-at-steps`).
    raw_ns_at_step: Option<f64>,
    started: u64,
    completed: u64,
    failed: u64,
    received: u64,
    lost: u64,
    /// Server packets per second while every session played.
    pps: f64,
    /// Whether `pps` comes from the server's own counters (else: what the
    /// client received over the run).
    pps_measured: bool,
    /// Share of one core the server used while every session played.
    cpu: f64,
    ns_per_packet: f64,
    kib_per_session: f64,
    /// The same, of anonymous memory only (the movie's file pages left out).
    anon_kib_per_session: f64,
    send_p99_ms: Option<f64>,
    arrival_p99_ms: f64,
    first_packet_p99_ms: f64,
    first_key_frame_p99_ms: f64,
    rtsp_p99_ms: f64,
    client_cpu: f64,
    /// The 1-minute load average when the step's window closed.
    load: f64,
    held: bool,
    why_not: Vec<String>,
}

fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.steps = vec![4];
        args.peer_steps = vec![2];
        args.hold = 2.0;
        args.ramp = 20.0;
        args.raw_seconds = 0.3;
    }
    if let Err(e) = run(&args) {
        eprintln!("capacity-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bins = servers::binaries(args.bin_dir.as_deref())?;
    let movie_path = match &args.movie {
        Some(p) => p.clone(),
        None => movie_maker::ensure(&args.data_dir, 10)?,
    };
    let movie = Arc::new(Movie::open(&movie_path).map_err(|e| format!("{}: {e}", movie_path.display()))?);
    let movie_pps = packets_per_second(&movie);
    let kbps = bitrate_kbps(&movie);
    let (library, name) = servers::library(&args.out, &movie_path)?;
    let fd_limit = process::open_file_limit().unwrap_or(1024);

    println!("capacity-bench: sessions of one movie on one shard core");
    println!(
        "machine: {}; load average {} (1, 5, 15 min)",
        os::machine(),
        os::load_average()
    );
    println!(
        "movie: {} ({:.0} s, {kbps:.0} kbit/s, {movie_pps:.1} packets/s per session)",
        movie_path.display(),
        movie.duration_secs()
    );
    println!(
        "server: control core {}, shard core {}; rtpload on core(s) {:?}; ramp {}/s, hold {} s",
        args.server_core.saturating_sub(1),
        args.server_core,
        args.client_cores,
        args.ramp,
        args.hold
    );

    let net = if args.client_netns {
        let core = args.client_cores.first().copied().unwrap_or(0);
        let net = ClientNet::create(core)?;
        println!(
            "network: the client in namespace {} at {}, the server at {}, over veth with threaded NAPI \
             on core {core}",
            net.name(),
            net.client_ip,
            net.server_ip
        );
        Some(net)
    } else {
        println!("network: loopback (the client's receive path runs on the server's core)");
        None
    };
    if args.client_gro {
        println!("client: UDP GRO on its RTP sockets, runs of datagrams received as one");
    }

    // The raw limit first, while nothing else runs.
    let raw = raw_limit(&movie, args, net.as_ref(), RawDests::Shared)?;
    println!(
        "raw sendmmsg limit: {:.0} packets per CPU-second ({:.0} ns/packet) = {:.0} sessions of this movie on one core",
        raw.pps,
        1e9 / raw.pps,
        raw.pps / movie_pps
    );

    let mut steps = Vec::new();
    let kinds = Kind::all(args)?;
    // Each kind steps on while every run of it holds.
    let mut going = vec![true; kinds.len()];
    for &n in &args.steps {
        if u64::from(n) + 256 > fd_limit {
            println!("streamalot, {n} sessions: skipped, past the open-file limit of {fd_limit}");
            break;
        }
        for run in 1..=args.repeat.max(1) {
            let raw_ns_at_step = if args.raw_at_steps && going.iter().any(|g| *g) {
                let at = raw_limit(&movie, args, net.as_ref(), RawDests::Sockets(n as usize))?;
                println!(
                    "raw sendmmsg loop to {n} sessions' sockets: {:.0} packets per CPU-second ({:.0} ns/packet)",
                    at.pps,
                    1e9 / at.pps
                );
                Some(1e9 / at.pps)
            } else {
                None
            };
            for (k, kind) in kinds.iter().enumerate() {
                if !going[k] {
                    continue;
                }
                let mut step = run_step(
                    args,
                    net.as_ref(),
                    &bins,
                    Peer::Streamalot,
                    kind,
                    run,
                    &library,
                    name,
                    n,
                    movie_pps,
                )?;
                step.raw_ns_at_step = raw_ns_at_step;
                print_step(&step);
                going[k] &= step.held;
                steps.push(step);
            }
        }
        if !going.iter().any(|g| *g) {
            break;
        }
    }
    if !args.no_peer {
        for &n in &args.peer_steps {
            let gstreamer = Kind {
                label: Peer::Gstreamer.name().to_owned(),
                live: false,
                flags: Vec::new(),
            };
            let step = run_step(
                args,
                net.as_ref(),
                &bins,
                Peer::Gstreamer,
                &gstreamer,
                1,
                &library,
                name,
                n,
                movie_pps,
            )?;
            print_step(&step);
            let held = step.held;
            steps.push(step);
            if !held {
                break;
            }
        }
    }

    let report = report(args, &kinds, &movie_path, kbps, movie_pps, &raw, &steps);
    let report_path = args.out.join("report.md");
    std::fs::write(&report_path, &report).map_err(|e| format!("{}: {e}", report_path.display()))?;
    let svg_name = Section::of(args).svg();
    let svg_path = args.out.join(svg_name);
    std::fs::write(&svg_path, plot(&steps, raw.pps, movie_pps, args.max_send_p99_ms))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!();
    print!("{report}");
    if args.results != "-" {
        let results = PathBuf::from(&args.results);
        update_results(&results, &report, Section::of(args))?;
        // The plot goes beside the results file, where the report links it.
        let beside = results.with_file_name(svg_name);
        std::fs::copy(&svg_path, &beside).map_err(|e| format!("{}: {e}", beside.display()))?;
        println!("wrote {} and {}", results.display(), beside.display());
    }
    Ok(())
}

/// Packets per second of movie, over its first 200,000 packets.
fn packets_per_second(movie: &Movie) -> f64 {
    let mut n = 0u64;
    let mut last = 0i64;
    for p in movie.all_packets().take(200_000).flatten() {
        n += 1;
        last = p.transmit_ns;
    }
    n as f64 / (last as f64 / 1e9).max(1e-3)
}

fn bitrate_kbps(movie: &Movie) -> f64 {
    let mut bytes = 0u64;
    let mut last = 0i64;
    for p in movie.all_packets().take(200_000).flatten() {
        bytes += 12 + p.payload_len() as u64;
        last = p.transmit_ns;
    }
    bytes as f64 * 8.0 / 1e3 / (last as f64 / 1e9).max(1e-3)
}

/// The raw limit on the server's core.
struct Raw {
    /// Packets per CPU-second.
    pps: f64,
    /// Sessions whose datagrams it replayed.
    sessions: usize,
}

/// UDP sessions that share one client port pair in rtpload: the benchmark
/// passes it as `--sessions-per-port`, and the raw loop at a step lays its
/// sessions out the same way.
const RTPLOAD_SESSIONS_PER_PORT: usize = 200;

/// Where the raw loop's datagrams go.
#[derive(Debug, Clone, Copy)]
enum RawDests {
    /// 2,000 sessions' datagrams to 250 loopback addresses and 8 ports of
    /// each stream: 2,000 destinations, but 16 receiving sockets.
    Shared,
    /// This many sessions' datagrams laid out as rtpload lays out its UDP
    /// sessions: every `RTPLOAD_SESSIONS_PER_PORT` of them share one client
    /// port pair, each stream of a session to the pair's RTP socket (rtpload
    /// tells them apart by SSRC), so the raw loop meets the destinations and
    /// sockets the server's step meets.
    Sockets(usize),
}

/// The raw loop's receiving sockets and each session's destinations: on
/// loopback, or all to `client_ip` (a client namespace's one address).
fn receivers(
    to: RawDests,
    streams: usize,
    smoke: bool,
    client_ip: Option<Ipv4Addr>,
) -> Result<(Vec<std::net::UdpSocket>, Vec<Vec<SocketAddr>>), String> {
    let mut sockets = Vec::new();
    let dests: Vec<Vec<SocketAddr>> = match to {
        RawDests::Shared => {
            let sessions = if smoke { 50 } else { 2000 };
            let mut bases = Vec::new();
            for _ in 0..8 {
                let rtp = receiver::socket(0, false)?;
                let base = rtp.local_addr().map_err(|e| e.to_string())?.port();
                bases.push(base);
                sockets.push(rtp);
                for s in 1..streams {
                    sockets.push(receiver::socket(base + 2 * s as u16, false)?);
                }
            }
            (0..sessions)
                .map(|i| {
                    let ip = client_ip.unwrap_or(Ipv4Addr::new(127, 0, 0, 1 + (i % 250) as u8));
                    (0..streams)
                        .map(|s| SocketAddr::from((ip, bases[i / 250 % bases.len()] + 2 * s as u16)))
                        .collect()
                })
                .collect()
        }
        RawDests::Sockets(sessions) => {
            net::raise_fd_limit().map_err(|e| format!("raising the open-file limit: {e}"))?;
            let ip = client_ip.unwrap_or(Ipv4Addr::LOCALHOST);
            let mut dests = Vec::with_capacity(sessions);
            for i in 0..sessions {
                if i % RTPLOAD_SESSIONS_PER_PORT == 0 {
                    // As large a buffer as rtpload asks for its pairs.
                    let rx = receiver::socket_sized(0, false, 8 << 20)
                        .map_err(|e| format!("{e} (the raw loop to {sessions} sessions' sockets)"))?;
                    sockets.push(rx);
                }
                let rx = sockets.last().expect("pushed above");
                let to = SocketAddr::from((ip, rx.local_addr().map_err(|e| e.to_string())?.port()));
                dests.push(vec![to; streams]);
            }
            dests
        }
    };
    Ok((sockets, dests))
}

/// The raw sendmmsg loop on the server's core, to the client's namespace
/// with `net`.
fn raw_limit(movie: &Arc<Movie>, args: &Args, net: Option<&ClientNet>, to: RawDests) -> Result<Raw, String> {
    let streams = movie.hint_tracks().count().max(1);
    let (smoke, client_ip) = (args.smoke, net.map(|n| n.client_ip));
    // The receiving sockets are made where the client lives.
    let gro = args.client_gro;
    let lay_out = move || {
        let (sockets, dests) = receivers(to, streams, smoke, client_ip)?;
        if gro {
            for s in &sockets {
                net::enable_gro(s).map_err(|e| format!("UDP GRO on a receiving socket: {e}"))?;
            }
        }
        Ok::<_, String>((sockets, dests))
    };
    let (sockets, dests) = match net {
        Some(net) => net.within(lay_out)?,
        None => lay_out()?,
    };
    let sessions = dests.len();
    let client_core = args.client_cores.first().copied().unwrap_or(0);
    // Waiting for datagrams as rtpload does, so the raw loop pays for waking
    // its receiver exactly as the server does.
    let size = if gro { net::GRO_BUFFER_BYTES } else { 2048 };
    let receiver = Receiver::start_like_rtpload(sockets, client_core, size, args.client_read_interval_ms);
    // Sender reports go to a socket nobody reads (the receiver counts RTP).
    let sink = || std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("RTCP sink: {e}"));
    let rtcp_sink = match net {
        Some(net) => net.within(sink)?,
        None => sink()?,
    };
    let sim = Sim {
        movie: movie.clone(),
        dests: Arc::new(dests),
        rtcp_port: rtcp_sink.local_addr().map_err(|e| e.to_string())?.port(),
        stagger_ns: 2_000_000_000,
        tick_ns: 1_000_000,
        nack_every: 0,
    };
    // Every session's datagrams, a few seconds of them past the stagger.
    let limit = if args.smoke {
        50_000
    } else {
        2_000_000.max(sessions * 200)
    };
    let replay = Arc::new(sim.record(limit));
    let drops_before = net.map(ClientNet::drops).transpose()?;
    let from = net.map_or(Ipv4Addr::LOCALHOST, |n| n.server_ip);
    let tx = bind_pair(IpAddr::V4(from), 20000..=60000)
        .map_err(|e| format!("sender socket: {e}"))?
        .rtp;
    let (core, seconds) = (args.server_core, args.raw_seconds);
    let run = measure(&receiver, move || {
        os::pin(Some(core))?;
        replay.send(&tx, SendPath::Sendmmsg, Duration::from_secs_f64(seconds))
    })?;
    if run.received < run.flushed.sent as u64 {
        let drops = match (net, drops_before) {
            (Some(net), Some(before)) => format!(" ({})", net.drops()?.since(before)),
            _ => String::new(),
        };
        eprintln!(
            "capacity-bench: the raw loop's receiver got {} of {} datagrams{drops}",
            run.received, run.flushed.sent
        );
    }
    Ok(Raw {
        pps: 1e9 / run.cpu_ns_per_packet(),
        sessions,
    })
}

/// Asks streamalot for its statistics (SIGUSR1) and reads the JSON it
/// writes.
fn server_stats(pid: u32, path: &Path) -> Result<Value, String> {
    let before = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    signal(pid, "USR1");
    // A saturated shard answers the control core's request for statistics
    // only between rounds, which on a loaded machine can take seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if now.is_some() && now != before {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            return serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("no statistics in {} after SIGUSR1", path.display()));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One step: a fresh server, `n` sessions of rtpload, measurements while
/// they all play, as `run` of `--repeat`'s. With `kind.live` the sessions
/// are viewers of one live broadcast of the movie, which rtpload publishes
/// (looped) before they start.
#[allow(clippy::too_many_arguments)]
fn run_step(
    args: &Args,
    net: Option<&ClientNet>,
    bins: &servers::Binaries,
    peer: Peer,
    kind: &Kind,
    run: u32,
    library: &Path,
    name: &str,
    n: u32,
    movie_pps: f64,
) -> Result<Step, String> {
    let live = kind.live;
    let label = kind.label.as_str();
    let slug = label.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let dir = match run {
        1 => args.out.join(format!("{slug}-{n}")),
        _ => args.out.join(format!("{slug}-{n}-run{run}")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    eprintln!("{label}: {n} sessions ...");
    let mut serve_args: Vec<String> = [
        "--shards",
        "1",
        "--send-path",
        args.send_path.name(),
        "--rtp-ports",
        "40000-40099",
        "--max-connections",
        "0",
        "--max-sessions",
        "0",
        "--session-timeout",
        "120",
    ]
    .map(String::from)
    .to_vec();
    if live {
        serve_args.extend(["--publish".to_owned(), LIVE_PUBLISH.to_owned()]);
    }
    if matches!(peer, Peer::Streamalot) {
        serve_args.extend(args.server_arg.iter().cloned());
        serve_args.extend(kind.flags.iter().cloned());
    }
    let peer_cpus = args.server_core.to_string();
    let host = net.map_or(Ipv4Addr::LOCALHOST, |n| n.server_ip);
    let mut server = servers::start(host, bins, peer, library, name, &dir, &serve_args, &peer_cpus)?;
    let pid = server.child.id();
    if !live && matches!(peer, Peer::Streamalot) {
        // The baseline is a server with the movie open: its index is the
        // movie's, paid once whether one session plays it or ten thousand,
        // and read at the first DESCRIBE; counted in the growth, it would
        // read as a per-session cost that shrinks with every step.
        describe(&server.url)?;
    }
    thread::sleep(Duration::from_millis(500));
    let rss_before = process::rss_kib(pid)?;
    let anon_before = process::anon_kib(pid)?;
    let ramp_secs = f64::from(n) / args.ramp;
    let duration = ramp_secs + args.hold;
    let cores: Vec<String> = args.client_cores.iter().map(usize::to_string).collect();
    let drops_before = net.map(ClientNet::drops).transpose()?;
    let mut client = match net {
        Some(net) => net.command(&bins.rtpload),
        None => Command::new(&bins.rtpload),
    };
    if live {
        // rtpload publishes the movie (looped, so it outlasts any step) and
        // its sessions watch the live path.
        let base = server.url.rsplit_once('/').map_or(server.url.as_str(), |(b, _)| b);
        let (user, password) = LIVE_PUBLISH
            .split_once('=')
            .and_then(|(_, c)| c.split_once(':'))
            .expect("a PREFIX=USER:PASSWORD constant");
        let url = base.replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1) + LIVE_PATH;
        client.arg("--publish").arg(library.join(name)).arg("--loop").arg(url);
    } else {
        client.arg(&server.url);
    }
    let mut client = client
        .args(["--sessions", &n.to_string()])
        .args(["--ramp", &args.ramp.to_string()])
        .args(["--duration", &format!("{duration:.1}")])
        .args(["--transport", "udp", "--quiet", "--cores", &cores.join(",")])
        .args(["--read-interval-ms", &args.client_read_interval_ms.to_string()])
        .args(["--sessions-per-port", &RTPLOAD_SESSIONS_PER_PORT.to_string()])
        .args(args.client_gro.then_some("--gro"))
        .arg("--out")
        .arg(dir.join("rtpload"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("rtpload.out")).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(dir.join("rtpload.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bins.rtpload.display()))?;
    let t0 = Instant::now();
    // The window: from a second after the last session started to a second
    // before the first one ends.
    let window = (ramp_secs + 1.0, duration - 1.0);
    let at = |s: f64| t0 + Duration::from_secs_f64(s.max(0.0));
    sleep_until(at(window.0));
    let (cpu0, stats0) = (process::cpu_time(pid)?, stats(&server, pid)?);
    let w0 = Instant::now();
    sleep_until(at((window.0 + window.1) / 2.0));
    let rss = process::rss_kib(pid)?;
    let anon = process::anon_kib(pid)?;
    sleep_until(at(window.1));
    let (cpu1, stats1) = (process::cpu_time(pid)?, stats(&server, pid)?);
    let load = os::load1();
    let window_secs = w0.elapsed().as_secs_f64();
    let deadline = t0 + Duration::from_secs_f64(duration + 60.0);
    let status = loop {
        if let Ok(Some(status)) = client.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            return Err(format!("rtpload did not finish; see {}", dir.display()));
        }
        thread::sleep(Duration::from_millis(100));
    };
    let dropped = match (net, drops_before) {
        (Some(net), Some(before)) => Some(net.drops()?.since(before)),
        _ => None,
    };
    // Shutdown writes the totals, with the whole run's send lateness.
    terminate(&mut server.child);
    let totals = match &server.stats_json {
        Some(p) => Some(read_json(p)?),
        None => None,
    };
    let summary = read_json(&dir.join("rtpload/summary.json"))?;
    let num = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[k]).as_f64().unwrap_or(0.0);
    let cpu = (cpu1 - cpu0).as_secs_f64() / window_secs;
    let (pps, measured) = match (stats0, stats1) {
        (Some(a), Some(b)) => ((num(&b, &["packets"]) - num(&a, &["packets"])) / window_secs, true),
        _ => (f64::from(n) * movie_pps, false),
    };
    let mut step = Step {
        server: kind.label.clone(),
        run,
        sessions: n,
        started: num(&summary, &["sessions", "started"]) as u64,
        completed: num(&summary, &["sessions", "completed"]) as u64,
        failed: num(&summary, &["sessions", "failed"]) as u64,
        received: num(&summary, &["packets", "received"]) as u64,
        lost: num(&summary, &["packets", "lost"]) as u64,
        pps,
        pps_measured: measured,
        cpu,
        // Too short a window for /proc's clock ticks reads as no CPU at all.
        ns_per_packet: if cpu > 0.0 { cpu * 1e9 / pps.max(1.0) } else { f64::NAN },
        kib_per_session: rss.saturating_sub(rss_before) as f64 / f64::from(n),
        anon_kib_per_session: anon.saturating_sub(anon_before) as f64 / f64::from(n),
        send_p99_ms: totals.map(|t| num(&t, &["lateness_us", "p99"]) / 1e3),
        arrival_p99_ms: num(&summary, &["histograms", "lateness", "p99_us"]) / 1e3,
        first_packet_p99_ms: num(&summary, &["histograms", "first_packet", "p99_us"]) / 1e3,
        first_key_frame_p99_ms: num(&summary, &["histograms", "first_key_frame", "p99_us"]) / 1e3,
        rtsp_p99_ms: num(&summary, &["histograms", "rtsp_response", "p99_us"]) / 1e3,
        client_cpu: num(&summary, &["cpu", "cores_used"]),
        load,
        ..Step::default()
    };
    if !status.success() && step.failed == 0 && step.lost == 0 {
        step.why_not.push(format!("rtpload exited with {status}"));
    }
    if step.failed > 0 {
        step.why_not.push(format!("{} sessions failed", step.failed));
    } else if step.completed < u64::from(n) {
        step.why_not.push(format!(
            "{} of {n} sessions started, {} completed",
            step.started, step.completed
        ));
    }
    if step.lost > 0 {
        let place = dropped.map(|d| format!(" ({d})")).unwrap_or_default();
        step.why_not.push(format!("{} packets lost{place}", step.lost));
    }
    if let Some(p99) = step.send_p99_ms.filter(|&p| p > args.max_send_p99_ms) {
        step.why_not.push(format!("send lateness p99 {p99:.2} ms"));
    }
    step.held = step.why_not.is_empty();
    Ok(step)
}

fn stats(server: &Server, pid: u32) -> Result<Option<Value>, String> {
    server.stats_json.as_ref().map(|p| server_stats(pid, p)).transpose()
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        thread::sleep(d);
    }
}

/// One DESCRIBE of `url` (`rtsp://HOST:PORT/PATH`) on a connection of its
/// own, its answer read whole, and the connection closed.
fn describe(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let authority = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("not an rtsp:// URL: {url}"))?;
    let mut c = std::net::TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).map_err(|e| format!("DESCRIBE {url}: {e}"))?;
        if n == 0 {
            return Err(format!("DESCRIBE {url}: the server closed the connection"));
        }
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if !head.starts_with("RTSP/1.0 200") {
                return Err(format!("DESCRIBE {url}: {}", head.lines().next().unwrap_or("")));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                })
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(());
            }
        }
    }
}

fn print_step(s: &Step) {
    println!(
        "{} {:>6} sessions: {} | {} received, {} lost | {:.0} packets/s | CPU {:.0}% = {:.0} ns/packet | {:.1} KiB/session ({:.2} anonymous) | \
         send p99 {} | arrival p99 {:.2} ms | first packet p99 {:.2} ms | first key frame p99 {:.2} ms | load {:.2}",
        s.server,
        s.sessions,
        if s.held { "held".to_owned() } else { format!("did not hold: {}", s.why_not.join(", ")) },
        s.received,
        s.lost,
        s.pps,
        s.cpu * 100.0,
        s.ns_per_packet,
        s.kib_per_session,
        s.anon_kib_per_session,
        s.send_p99_ms.map_or("-".into(), |p| format!("{p:.2} ms")),
        s.arrival_p99_ms,
        s.first_packet_p99_ms,
        s.first_key_frame_p99_ms,
        s.load
    );
}

/// The Markdown report: how it was made, the table, and what it says.
fn report(args: &Args, kinds: &[Kind], movie: &Path, kbps: f64, movie_pps: f64, raw: &Raw, steps: &[Step]) -> String {
    let mut r = String::new();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let date = utc_date(SystemTime::now());
    let load = os::load_average();
    let mut command = "cargo run --release -p streamalot-perf --bin capacity-bench".to_owned();
    let flags: Vec<&str> = [
        (args.smoke, "--smoke"),
        (args.live, "--live"),
        (args.no_peer, "--no-peer"),
        (args.client_netns, "--client-netns"),
        (args.client_gro, "--client-gro"),
    ]
    .iter()
    .filter(|f| f.0)
    .map(|f| f.1)
    .collect();
    let mut flags: Vec<String> = flags.into_iter().map(String::from).collect();
    if args.repeat > 1 {
        flags.push(format!("--repeat {}", args.repeat));
    }
    if args.raw_at_steps {
        flags.push("--raw-at-steps".into());
    }
    flags.extend(args.server_arg.iter().map(|a| format!("--server-arg={a}")));
    flags.extend(args.variant.iter().map(|v| format!("--variant '{v}'")));
    if !flags.is_empty() {
        command = format!("{command} -- {}", flags.join(" "));
    }
    let movie_name = movie
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(r, "## {}\n", Section::of(args).title());
    let _ = writeln!(r, "```sh\n{command}\n```\n");
    let _ = writeln!(
        r,
        "**Machine**: {}. Measured {date} on commit `{commit}`, load average {} at the start. Server: `streamalot \
         serve --shards 1 --send-path {}` (control core {}, shard core {}); GStreamer's server (`tools/gst-rtsp-peer`) pinned to core {}; rtpload on \
         core(s) {:?}, UDP, {}. Server and client share the machine, {}{}.\n",
        os::machine(),
        load,
        args.send_path,
        args.server_core.saturating_sub(1),
        args.server_core,
        args.server_core,
        args.client_cores,
        match args.client_read_interval_ms {
            0 => "reading its RTP sockets as datagrams arrive".to_string(),
            ms => format!("reading its RTP sockets every {ms} ms (`--read-interval-ms {ms}`)"),
        },
        if args.client_netns {
            "the client in a network namespace of its own behind a veth pair whose receive path runs on the \
             client's core (`--client-netns`)"
        } else {
            "over loopback"
        },
        if args.client_gro {
            ", the client's sockets taking runs of datagrams coalesced (`--client-gro`)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        r,
        "**Workload**: `{movie_name}`, {kbps:.0} kbit/s, {movie_pps:.1} packets/s per session; sessions start at \
         {}/s, and each step is measured for {} s while all of its sessions play. A step holds when no session \
         fails, no packet is lost and the server's send lateness p99 stays under {} ms; stepping stops at the \
         first that does not.\n",
        args.ramp, args.hold, args.max_send_p99_ms
    );
    if !args.server_arg.is_empty() || !args.variant.is_empty() {
        let _ = writeln!(
            r,
            "**Configurations**: every streamalot server ran with `--shards 1 --send-path {}`{}; then:\n",
            args.send_path,
            if args.server_arg.is_empty() {
                String::new()
            } else {
                format!(" `{}`", args.server_arg.join(" "))
            }
        );
        for k in kinds {
            let _ = writeln!(
                r,
                "- *{}*: {}",
                k.label,
                if k.flags.is_empty() {
                    "nothing more".to_owned()
                } else {
                    format!("`{}`", k.flags.join(" "))
                }
            );
        }
        r.push('\n');
    }
    if args.repeat > 1 {
        let _ = writeln!(r, "**Runs**: each step ran {} times, the configurations alternated within each round (*run* says which), each on a fresh server.\n", args.repeat);
    }
    if args.live {
        let _ = writeln!(
            r,
            "**Live**: the `streamalot live` rows are viewers of one live broadcast of the same movie: the server \
             runs with `--publish {LIVE_PUBLISH}`, and rtpload publishes the movie to `{LIVE_PATH}` (`--publish \
             --loop`, interleaved on its RTSP connection, from the client's process) before its sessions start \
             watching it. The publisher's packets come in on the control core and are fanned out to the shard, \
             which writes each viewer's 12-byte header over the one shared payload. Each step runs VoD first, \
             then live, each on a fresh server; each kind steps on until it does not hold.\n"
        );
    }
    let (run_head, run_rule) = if args.repeat > 1 {
        (" run |", " ---: |")
    } else {
        ("", "")
    };
    let (raw_head, raw_rule) = if args.raw_at_steps {
        (" raw ns/packet to as many sockets | share of it |", " ---: | ---: |")
    } else {
        ("", "")
    };
    let _ = writeln!(
        r,
        "| server | sessions |{run_head} held | lost | packets/s | server CPU | ns/packet |{raw_head} KiB/session | anonymous KiB/session | send p99 | \
         arrival p99 | first packet p99 | first key frame p99 | RTSP p99 | client CPU | load |"
    );
    let _ = writeln!(
        r,
        "| --- | ---: |{run_rule} --- | ---: | ---: | ---: | ---: |{raw_rule} ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in steps {
        let run = if args.repeat > 1 {
            format!(" {} |", s.run)
        } else {
            String::new()
        };
        let raw_at = match (args.raw_at_steps, s.raw_ns_at_step) {
            (false, _) => String::new(),
            (true, Some(ns)) if s.ns_per_packet.is_finite() => {
                format!(" {ns:.0} | {:.0}% |", 100.0 * ns / s.ns_per_packet)
            }
            (true, _) => " - | - |".to_owned(),
        };
        let _ = writeln!(
            r,
            "| {} | {} |{run} {} | {} | {}{:.0} | {:.0}% | {} |{raw_at} {:.1} | {:.2} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0}% | {:.2} |",
            s.server,
            s.sessions,
            if s.held {
                "yes".to_owned()
            } else {
                format!("no: {}", s.why_not.join(", "))
            },
            s.lost,
            if s.pps_measured { "" } else { "~" },
            s.pps,
            s.cpu * 100.0,
            if s.ns_per_packet.is_finite() {
                format!("{:.0}", s.ns_per_packet)
            } else {
                "-".into()
            },
            s.kib_per_session,
            s.anon_kib_per_session,
            s.send_p99_ms.map_or("-".into(), |p| format!("{p:.2} ms")),
            s.arrival_p99_ms,
            s.first_packet_p99_ms,
            s.first_key_frame_p99_ms,
            s.rtsp_p99_ms,
            s.client_cpu * 100.0,
            s.load
        );
    }
    let raw_ns = 1e9 / raw.pps;
    let _ = writeln!(
        r,
        "| raw `sendmmsg` limit | {:.0} |{run_gap} | | {:.0} per CPU-second | 100% | {raw_ns:.0} |{raw_gap} | | | | | | | | |\n",
        raw.pps / movie_pps,
        raw.pps,
        run_gap = if args.repeat > 1 { " |" } else { "" },
        raw_gap = if args.raw_at_steps { " | |" } else { "" },
    );
    let _ = writeln!(
        r,
        "Columns: *packets/s* is the server's own count while every session played (`~`: for GStreamer, which \
         does not count, sessions times the movie's packet rate); *server CPU* is its CPU time over that window \
         (from /proc, all threads) as a share of one core, and *ns/packet* that time per packet; *KiB/session* \
         is its resident memory's growth over an idle server that has answered one DESCRIBE (so its movie is open), per session, and *anonymous KiB/session* the same \
         of its anonymous memory only (`RssAnon`: without the movie's file pages, which are the page cache's, \
         shared, and grow with how far into the movie the sessions have read, not with their number); *send p99* is the server's send \
         lateness over the whole run (its histogram: how long after its due time a packet left); *arrival \
         p99* is rtpload's arrival lateness (behind the stream's RTP-timestamp schedule), *first packet* the \
         time from PLAY to the first packet, *first key frame* from PLAY's answer to the first packet of a video \
         key frame, and *RTSP* the response time, all at p99 over every session; *load* \
         is the machine's 1-minute load average as the step's window closed. The \
         raw limit is shard-bench's loop (a) with a receiver that waits for datagrams as rtpload does (on \
         arrival or on its read interval): this movie's datagrams for {} sessions replayed prebuilt on the shard's core; its \
         session count is how many sessions that packet rate would feed. {}\n",
        raw.sessions,
        if args.client_netns {
            "With `--client-netns` the datagrams cross a veth pair to the client's namespace, and the kernel \
             receives them on the client's core (threaded NAPI, interrupt moderation), so the server's and the \
             raw loop's CPU are their sending only, as with a network card."
        } else {
            "On loopback the kernel delivers each datagram, and wakes a sleeping receiver, inside the sender's \
             system call, so both the server's and the raw loop's CPU include receive work a network would leave \
             to the client's machine; a client that reads on an interval is never asleep on its sockets, and takes \
             the wake-ups off."
        }
    );
    for kind in kinds {
        let runs = |n: u32| steps.iter().filter(move |s| s.server == kind.label && s.sessions == n);
        // The most sessions at which every run held.
        let best = steps
            .iter()
            .filter(|s| s.server == kind.label)
            .map(|s| s.sessions)
            .filter(|&n| runs(n).all(|s| s.held && s.ns_per_packet.is_finite()))
            .max();
        let Some(n) = best else { continue };
        let at: Vec<&Step> = runs(n).collect();
        let range = |f: fn(&Step) -> f64, scale: f64, digits: usize| {
            let (lo, hi) = at
                .iter()
                .map(|s| f(s) * scale)
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            if at.len() == 1 || (hi - lo).abs() < 10f64.powi(-(digits as i32)) {
                format!("{lo:.digits$}")
            } else {
                format!("{lo:.digits$}-{hi:.digits$}")
            }
        };
        let what = if kind.live { "live viewers" } else { "VoD sessions" };
        let worst_send = at.iter().filter_map(|s| s.send_p99_ms).fold(f64::NAN, f64::max);
        let _ = writeln!(
            r,
            "Read against the goals ({}, {what}): the most held{} is {n} ({}% of the shard core, {} ns per packet, \
             {} % of the raw loop's packets per CPU-second); send lateness p99 there {}; first packet p99 \
             {} ms, first key frame p99 {} ms, while {}/s arrived; {} KiB of server memory per session ({} KiB of it anonymous).\n",
            kind.label,
            if at.len() > 1 { format!(" in all {} runs", at.len()) } else { String::new() },
            range(|s| s.cpu, 100.0, 0),
            range(|s| s.ns_per_packet, 1.0, 0),
            range(|s| s.ns_per_packet.recip(), 100.0 * raw_ns, 0),
            if worst_send.is_finite() { format!("at most {worst_send:.2} ms") } else { "-".into() },
            range(|s| s.first_packet_p99_ms, 1.0, 2),
            range(|s| s.first_key_frame_p99_ms, 1.0, 2),
            args.ramp,
            range(|s| s.kib_per_session, 1.0, 1),
            range(|s| s.anon_kib_per_session, 1.0, 2),
        );
    }
    if kinds.len() > 1 && (!args.variant.is_empty() || args.repeat > 1) {
        // Side by side: per step, each configuration's figures over its runs.
        let mut ns: Vec<u32> = steps.iter().map(|s| s.sessions).collect();
        ns.dedup();
        let _ = writeln!(
            r,
            "Side by side, server ns/packet per step (each configuration's runs, lowest to highest):\n"
        );
        for n in ns {
            let mut line = format!("- {n} sessions:");
            for kind in kinds {
                let mut v: Vec<f64> = steps
                    .iter()
                    .filter(|s| s.server == kind.label && s.sessions == n && s.ns_per_packet.is_finite())
                    .map(|s| s.ns_per_packet)
                    .collect();
                if v.is_empty() {
                    continue;
                }
                v.sort_by(f64::total_cmp);
                let of_step = || steps.iter().filter(|s| s.server == kind.label && s.sessions == n);
                let (held, ran) = (of_step().filter(|s| s.held).count(), of_step().count());
                let list: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
                let _ = write!(line, " *{}* {} ({held} of {ran} held);", kind.label, list.join(", "),);
            }
            let _ = writeln!(r, "{}", line.trim_end_matches(';'));
        }
        r.push('\n');
    }
    let _ = writeln!(r, "\n![capacity]({})", Section::of(args).svg());
    r
}

/// `2026-12-01` in UTC.
fn utc_date(t: SystemTime) -> String {
    let days = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Two charts: server CPU per step against the raw limit's, and the p99s.
fn plot(steps: &[Step], raw_pps: f64, movie_pps: f64, bound_ms: f64) -> String {
    let mut by_server: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
    for s in steps {
        by_server.entry(s.server.as_str()).or_default().push(s);
    }
    let xs: Vec<f64> = steps.iter().map(|s| f64::from(s.sessions)).collect();
    let (lo, hi) = (
        xs.iter().copied().fold(f64::MAX, f64::min),
        xs.iter().copied().fold(f64::MIN, f64::max),
    );
    let mut cpu = Vec::new();
    for (i, (server, s)) in by_server.iter().enumerate() {
        cpu.push(Series {
            name: format!("{server}: server CPU"),
            color: PALETTE[i % PALETTE.len()],
            points: s.iter().map(|s| (f64::from(s.sessions), s.cpu * 100.0)).collect(),
            dashed: false,
        });
    }
    cpu.push(Series {
        name: "raw sendmmsg loop at the same packet rate".into(),
        color: "#888888",
        points: [lo, hi].iter().map(|&n| (n, 100.0 * n * movie_pps / raw_pps)).collect(),
        dashed: true,
    });
    let mut late = Vec::new();
    let mut c = 0;
    for (server, s) in &by_server {
        for (what, f) in [
            (
                "send lateness",
                (|s: &Step| s.send_p99_ms.unwrap_or(0.0)) as fn(&Step) -> f64,
            ),
            ("arrival lateness", |s: &Step| s.arrival_p99_ms),
            ("first packet", |s: &Step| s.first_packet_p99_ms),
        ] {
            let points: Vec<(f64, f64)> = s
                .iter()
                .map(|s| (f64::from(s.sessions), f(s)))
                .filter(|p| p.1 > 0.0)
                .collect();
            if points.is_empty() {
                continue;
            }
            late.push(Series {
                name: format!("{server}: {what} p99"),
                color: PALETTE[c % PALETTE.len()],
                points,
                dashed: false,
            });
            c += 1;
        }
    }
    late.push(Series {
        name: format!("send-lateness bound, {bound_ms} ms"),
        color: "#888888",
        points: vec![(lo, bound_ms), (hi, bound_ms)],
        dashed: true,
    });
    plot::svg(&[
        Chart {
            title: "Server CPU by concurrent sessions".into(),
            x_label: "concurrent sessions".into(),
            y_label: "CPU, % of one core".into(),
            series: cpu,
        },
        Chart {
            title: "Latency at p99".into(),
            x_label: "concurrent sessions".into(),
            y_label: "milliseconds".into(),
            series: late,
        },
    ])
}

/// Which section of the results file a run writes, between its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// The default run: VoD against GStreamer.
    Capacity,
    /// `--live`: the fan-out beside VoD.
    Live,
    /// Configurations compared (`--variant`, `--server-arg`, `--repeat`):
    /// not the default server's figures, so kept apart from them.
    Compared,
}

impl Section {
    fn of(args: &Args) -> Section {
        if !args.variant.is_empty() || !args.server_arg.is_empty() || args.repeat > 1 {
            Section::Compared
        } else if args.live {
            Section::Live
        } else {
            Section::Capacity
        }
    }

    fn title(self) -> &'static str {
        match self {
            Section::Capacity => "Capacity: concurrent sessions on one shard core",
            Section::Live => "Fan-out: viewers of one live broadcast on one shard core, beside VoD",
            Section::Compared => "Capacity, configurations compared in one run",
        }
    }

    fn svg(self) -> &'static str {
        match self {
            Section::Capacity => "capacity.svg",
            Section::Live => "capacity-live.svg",
            Section::Compared => "capacity-compared.svg",
        }
    }

    /// The markers around it.
    fn markers(self) -> (&'static str, &'static str) {
        match self {
            Section::Capacity => (
                "<!-- capacity-bench: begin (written by capacity-bench; edits here are replaced) -->",
                "<!-- capacity-bench: end -->",
            ),
            Section::Live => (
                "<!-- capacity-bench --live: begin (written by capacity-bench --live; edits here are replaced) -->",
                "<!-- capacity-bench --live: end -->",
            ),
            Section::Compared => (
                "<!-- capacity-bench, compared: begin (written by capacity-bench with --variant, --server-arg or --repeat; edits here are replaced) -->",
                "<!-- capacity-bench, compared: end -->",
            ),
        }
    }
}

/// Replaces the run's section of the results file, or appends one.
fn update_results(path: &Path, report: &str, section: Section) -> Result<(), String> {
    let (begin, end) = section.markers();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{report}{end}\n");
    let updated = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{section}{}",
            &text[..a],
            text[b + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{section}", text.trim_end()),
    };
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}
