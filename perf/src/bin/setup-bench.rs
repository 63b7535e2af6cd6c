//! RTSP session setups per second: DESCRIBE, SETUP of every track, PLAY and
//! TEARDOWN, one session per connection, as fast as a set of clients can go,
//! against `streamalot serve` and against GStreamer's RTSP server
//! (`tools/gst-rtsp-peer`) in one run.
//!
//! What it measures is the control side: a streamalot session is described
//! and admitted by the control core, made on its shard by the SETUPs the
//! control core forwards, played and torn down there; GStreamer builds a
//! pipeline per client. Each client is a blocking thread that keeps one
//! session in flight; media sent between PLAY and TEARDOWN goes to a UDP
//! pair of the client's that nobody reads. It prints setups per second of
//! wall time, the server's CPU time per setup (from /proc, all its threads,
//! which holds when the clients and the server share cores), and latency
//! percentiles per request and for the whole session, with the machine's
//! load average. With `--rounds N` the servers take turns N times.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use proto::rtsp::message::{self, Limits, Message, Method, Request, Response};
use streamalot_perf::servers::{self, Peer};
use streamalot_perf::{movie_maker, os, process};

#[derive(Parser, Debug)]
#[command(
    name = "setup-bench",
    about = "RTSP setups per second (DESCRIBE, SETUP, PLAY, TEARDOWN) against streamalot and GStreamer's RTSP server"
)]
struct Args {
    /// Seconds each server is driven.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Sessions in flight at once (one client thread each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Cores the clients run on.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    client_cores: Vec<usize>,
    /// CPUs GStreamer's server may use (a taskset list); streamalot runs its control core on core 0
    /// and its shard on core 1.
    #[arg(long, default_value = "0-1")]
    peer_cpus: String,
    /// Times the servers take turns.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Leave out TEARDOWN (the session then ends by the server's timeout, or when its connection closes).
    #[arg(long)]
    no_teardown: bool,
    /// Skip GStreamer's server.
    #[arg(long)]
    no_peer: bool,
    /// Hinted H.264 + AAC movie to serve (default: the ~300 kbit/s movie made with ffmpeg).
    #[arg(long)]
    movie: Option<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    data_dir: PathBuf,
    /// Where the servers' logs go.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/setup"))]
    out: PathBuf,
    /// Use the streamalot binary in DIR instead of building a release one.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Drive this RTSP URL (a server started by hand, under a profiler say) instead of starting the
    /// servers; its CPU time is then not measured.
    #[arg(long)]
    url: Option<String>,
}

/// Microseconds of each phase of one session.
#[derive(Debug, Default, Clone)]
struct Latencies {
    describe: Vec<u64>,
    setup: Vec<u64>,
    play: Vec<u64>,
    teardown: Vec<u64>,
    session: Vec<u64>,
}

impl Latencies {
    fn append(&mut self, o: &mut Latencies) {
        self.describe.append(&mut o.describe);
        self.setup.append(&mut o.setup);
        self.play.append(&mut o.play);
        self.teardown.append(&mut o.teardown);
        self.session.append(&mut o.session);
    }
}

/// What one server did.
#[derive(Debug, Default)]
struct Outcome {
    sessions: u64,
    failed: u64,
    first_error: Option<String>,
    wall: Duration,
    server_cpu: Duration,
    load: f64,
    latencies: Latencies,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("setup-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if let Some(url) = &args.url {
        println!("setup-bench: RTSP session setups per second against {url}");
        println!(
            "machine: {}; load average {} (1, 5, 15 min)",
            os::machine(),
            os::load_average()
        );
        let mut o = drive(args, url, None)?;
        print_outcome(url, &mut o);
        return Ok(());
    }
    let bins = servers::binaries(args.bin_dir.as_deref())?;
    let movie = match &args.movie {
        Some(p) => p.clone(),
        None => movie_maker::ensure(&args.data_dir, 10)?,
    };
    let (library, name) = servers::library(&args.out, &movie)?;
    println!("setup-bench: RTSP session setups per second");
    println!(
        "machine: {}; load average {} (1, 5, 15 min)",
        os::machine(),
        os::load_average()
    );
    println!(
        "each session: one connection, DESCRIBE, SETUP per track (UDP), PLAY{}; {} in flight, clients on core(s) \
         {:?}; {:.0} s per server, {} round(s); streamalot: control core 0, shard core 1; GStreamer on CPUs {}",
        if args.no_teardown { "" } else { ", TEARDOWN" },
        args.concurrency,
        args.client_cores,
        args.seconds,
        args.rounds,
        args.peer_cpus
    );
    let peers: &[Peer] = if args.no_peer {
        &[Peer::Streamalot]
    } else {
        &[Peer::Streamalot, Peer::Gstreamer]
    };
    let mut totals: Vec<Outcome> = peers.iter().map(|_| Outcome::default()).collect();
    for round in 1..=args.rounds {
        for (i, &peer) in peers.iter().enumerate() {
            let dir = args.out.join(format!("{}-{round}", peer.name().to_lowercase()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let serve_args: Vec<String> = [
                "--shards",
                "1",
                "--max-connections",
                "0",
                "--max-sessions",
                "0",
                "--rtp-ports",
                "40000-40099",
            ]
            .map(String::from)
            .to_vec();
            let server = servers::start(
                Ipv4Addr::LOCALHOST,
                &bins,
                peer,
                &library,
                name,
                &dir,
                &serve_args,
                &args.peer_cpus,
            )?;
            thread::sleep(Duration::from_millis(300));
            let mut o = drive(args, &server.url, Some(server.child.id()))?;
            drop(server);
            print_outcome(&format!("{} (round {round})", peer.name()), &mut o);
            let t = &mut totals[i];
            t.sessions += o.sessions;
            t.failed += o.failed;
            t.first_error = t.first_error.take().or(o.first_error.take());
            t.wall += o.wall;
            t.server_cpu += o.server_cpu;
            t.load = t.load.max(o.load);
            t.latencies.append(&mut o.latencies);
        }
    }
    if args.rounds > 1 {
        println!();
        println!("all {} rounds together:", args.rounds);
        for (peer, o) in peers.iter().zip(&mut totals) {
            print_outcome(peer.name(), o);
        }
    }
    if let [ours, theirs] = &totals[..] {
        println!();
        println!(
            "streamalot against GStreamer: {:.1}x the setups per second, {:.1}x less server CPU per setup",
            rate(ours) / rate(theirs),
            cpu_per_setup(theirs) / cpu_per_setup(ours)
        );
    }
    Ok(())
}

fn rate(o: &Outcome) -> f64 {
    o.sessions as f64 / o.wall.as_secs_f64().max(1e-9)
}

fn cpu_per_setup(o: &Outcome) -> f64 {
    o.server_cpu.as_secs_f64() * 1e6 / o.sessions.max(1) as f64
}

/// `--concurrency` clients, each doing sessions back to back for
/// `--seconds`, and the CPU time of the server `pid` over that.
fn drive(args: &Args, url: &str, pid: Option<u32>) -> Result<Outcome, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = pid.map(process::cpu_time).transpose()?;
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (stop, url) = (stop.clone(), url.to_owned());
        let core = args.client_cores[w % args.client_cores.len().max(1)];
        let teardown = !args.no_teardown;
        workers.push(thread::spawn(move || client(&url, core, teardown, &stop)));
    }
    thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut o = Outcome::default();
    for w in workers {
        let (sessions, failed, error, mut lat) = w.join().map_err(|_| "a client thread panicked".to_string())??;
        o.sessions += sessions;
        o.failed += failed;
        o.first_error = o.first_error.take().or(error);
        o.latencies.append(&mut lat);
    }
    o.wall = start.elapsed();
    if let (Some(pid), Some(cpu0)) = (pid, cpu0) {
        o.server_cpu = process::cpu_time(pid)?.saturating_sub(cpu0);
    }
    o.load = os::load1();
    Ok(o)
}

type ClientResult = Result<(u64, u64, Option<String>, Latencies), String>;

/// One client: sessions back to back until `stop`.
fn client(url: &str, core: usize, teardown: bool, stop: &AtomicBool) -> ClientResult {
    os::pin(Some(core))?;
    // Where the media goes: a pair nobody reads (the kernel drops what does
    // not fit).
    let pair = net::bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 42000..=60000).map_err(|e| format!("UDP pair: {e}"))?;
    let rtp = pair.rtp.local_addr().map_err(|e| e.to_string())?.port();
    let (mut sessions, mut failed, mut first_error) = (0, 0, None);
    let mut lat = Latencies::default();
    while !stop.load(Ordering::Relaxed) {
        match session(url, rtp, teardown, &mut lat) {
            Ok(()) => sessions += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
                // A server that refuses is not to be hammered in a loop.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok((sessions, failed, first_error, lat))
}

fn session(url: &str, rtp_port: u16, teardown: bool, lat: &mut Latencies) -> Result<(), String> {
    let t0 = Instant::now();
    let authority = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .ok_or("a bad URL")?;
    let mut c = Conn {
        stream: TcpStream::connect(authority).map_err(|e| format!("connect: {e}"))?,
        buf: Vec::new(),
        cseq: 0,
    };
    c.stream.set_nodelay(true).map_err(|e| e.to_string())?;
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let (r, us) = c.ask(Request::new(Method::Describe, url).header("Accept", "application/sdp"))?;
    lat.describe.push(us);
    let base = r
        .headers
        .get("Content-Base")
        .map_or_else(|| format!("{}/", url.trim_end_matches('/')), str::to_owned);
    let sdp = rtpload::sdp::parse(&r.body).map_err(|e| format!("SDP: {e}"))?;
    let mut id: Option<String> = None;
    for i in 0..sdp.media.len() {
        let transport = format!("RTP/AVP;unicast;client_port={}-{}", rtp_port, rtp_port + 1);
        let mut req = Request::new(Method::Setup, sdp.media_url(i, &base)).header("Transport", transport);
        if let Some(id) = &id {
            req = req.header("Session", id.as_str());
        }
        let (r, us) = c.ask(req)?;
        lat.setup.push(us);
        let header = r.headers.get("Session").ok_or("SETUP answered without a Session")?;
        id = Some(proto::rtsp::header::session_id(header).to_owned());
    }
    let id = id.ok_or("no media to set up")?;
    let aggregate = sdp.aggregate_url(&base);
    let (_, us) = c.ask(
        Request::new(Method::Play, aggregate.as_str())
            .header("Session", id.as_str())
            .header("Range", "npt=0-"),
    )?;
    lat.play.push(us);
    if teardown {
        let (_, us) = c.ask(Request::new(Method::Teardown, aggregate.as_str()).header("Session", id.as_str()))?;
        lat.teardown.push(us);
    }
    lat.session.push(t0.elapsed().as_micros() as u64);
    Ok(())
}

/// A client's connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Conn {
    /// Sends `req` and reads its answer, which must be 200; returns it with
    /// the time it took, in microseconds.
    fn ask(&mut self, req: Request) -> Result<(Response, u64), String> {
        self.cseq += 1;
        let method = req.method.as_str().to_owned();
        let req = req
            .header("CSeq", self.cseq.to_string())
            .header("User-Agent", "setup-bench");
        let mut out = Vec::new();
        req.write_to(&mut out);
        let t = Instant::now();
        self.stream.write_all(&out).map_err(|e| format!("{method}: {e}"))?;
        loop {
            match message::parse(&self.buf, &Limits::default()) {
                Ok(Some((Message::Response(r), used))) => {
                    self.buf.drain(..used);
                    let us = t.elapsed().as_micros() as u64;
                    if r.status != 200 {
                        return Err(format!("{method}: {}", r.status));
                    }
                    return Ok((r, us));
                }
                Ok(Some((_, used))) => {
                    self.buf.drain(..used);
                }
                Ok(None) => {
                    let mut chunk = [0u8; 4096];
                    let n = self.stream.read(&mut chunk).map_err(|e| format!("{method}: {e}"))?;
                    if n == 0 {
                        return Err(format!("{method}: the server closed the connection"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(format!("{method}: unreadable answer: {e}")),
            }
        }
    }
}

fn print_outcome(name: &str, o: &mut Outcome) {
    println!();
    println!(
        "{name}: {} sessions in {:.1} s = {:.0} setups/s; {} failed{}; server CPU {:.2} s = {:.0} us per setup \
         ({:.0} setups per CPU-second); load average {:.2}",
        o.sessions,
        o.wall.as_secs_f64(),
        rate(o),
        o.failed,
        o.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        o.server_cpu.as_secs_f64(),
        cpu_per_setup(o),
        1e6 / cpu_per_setup(o).max(1e-9),
        o.load
    );
    println!(
        "    {:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let l = &mut o.latencies;
    for (what, v) in [
        ("DESCRIBE", &mut l.describe),
        ("SETUP", &mut l.setup),
        ("PLAY", &mut l.play),
        ("TEARDOWN", &mut l.teardown),
        ("session", &mut l.session),
    ] {
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1e3;
        println!(
            "    {what:<10} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            v.len(),
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            v[v.len() - 1] as f64 / 1e3
        );
    }
}
