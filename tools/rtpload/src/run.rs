//! A whole run: the plan, the workers, progress, the files, and the verdict.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::rtsp::header::Lower;
use proto::rtsp::message::Limits;
use proto::rtsp::url::{RtspUrl, UrlError};
use serde_json::json;
use tracing::{info, warn};

use crate::cli::{Args, PublishTransport, TransportArg};
use crate::metrics::{Counters, Histograms, Metric};
use crate::output::{self, IntervalLog, Quantiles};
use crate::plot;
use crate::progress::Progress;
use crate::publish::{self, PublishError, PublishPlan, PublishReport, Publishing};
use crate::reception::Nanos;
use crate::repair::Scheme;
use crate::session::{Outcome, Settings};
use crate::worker::{self, Plan, Report, SessionSummary, Target, UdpPlan};

const SEC: f64 = 1e9;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the URL list {path}: {source}")]
    UrlFile { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("{0} carries credentials; authentication is not supported")]
    Credentials(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot start worker thread {0}: {1}")]
    Thread(usize, io::Error),
    #[error("worker {worker} could not start: {error}")]
    Worker { worker: usize, error: String },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Whether the run passed its gate, and why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// The URLs given on the command line and in `--urls`, and with
/// `--publish` the first as written (credentials and all) to publish to.
/// Viewers play them without credentials.
fn collect_urls(args: &Args) -> Result<(Vec<RtspUrl>, Option<RtspUrl>), RunError> {
    let mut texts = args.urls.clone();
    if let Some(path) = &args.urls_file {
        let list = std::fs::read_to_string(path).map_err(|source| RunError::UrlFile {
            path: path.clone(),
            source,
        })?;
        texts.extend(
            list.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if texts.is_empty() {
        return Err(RunError::Usage(
            "no URL to play: give one or more, or --urls FILE".into(),
        ));
    }
    let publish_to = match args.publish {
        Some(_) => Some(RtspUrl::parse(&texts[0])?),
        None => None,
    };
    let urls = texts
        .iter()
        .map(|t| {
            let url = RtspUrl::parse(t)?;
            match (url.user(), &publish_to) {
                (Some(_), None) => Err(RunError::Credentials(url.to_string())),
                // `as_str` leaves the credentials out.
                (Some(_), Some(_)) => Ok(RtspUrl::parse(url.as_str())?),
                (None, _) => Ok(url),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((urls, publish_to))
}

/// The longest time any option may give, in seconds (about 115 days): far
/// beyond any run, and small enough that deadlines never overflow.
const MAX_SECONDS: f64 = 1e7;

fn check_args(args: &Args) -> Result<(), RunError> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v <= MAX_SECONDS {
            Ok(())
        } else {
            Err(RunError::Usage(format!(
                "--{name} must be a positive number up to {MAX_SECONDS}, not {v}"
            )))
        }
    };
    positive("ramp", args.ramp)?;
    if args.ramp < 0.001 {
        return Err(RunError::Usage(
            "--ramp must be at least 0.001 sessions per second".into(),
        ));
    }
    positive("duration", args.duration)?;
    positive("rtsp-timeout", args.rtsp_timeout)?;
    positive("media-timeout", args.media_timeout)?;
    if let Some(b) = args.buffered {
        positive("buffered", b)?;
    }
    positive("interval", args.interval)?;
    if args.sessions == 0 && args.publish.is_none() {
        return Err(RunError::Usage(
            "--sessions must be at least 1 (or 0 with --publish)".into(),
        ));
    }
    if (args.nack || args.reliable_udp) && args.transport != TransportArg::Udp {
        return Err(RunError::Usage(
            "--nack and --reliable-udp repair UDP; over TCP nothing is lost".into(),
        ));
    }
    if args.looped && args.publish.is_none() {
        return Err(RunError::Usage("--loop is for the --publish movie".into()));
    }
    if args.sessions_per_port == 0 || args.threads == Some(0) {
        return Err(RunError::Usage(
            "--sessions-per-port and --threads must be at least 1".into(),
        ));
    }
    if let Some(f) = args.max_loss {
        if !(0.0..=1.0).contains(&f) {
            return Err(RunError::Usage(format!(
                "--max-loss is a fraction from 0 to 1, not {f}"
            )));
        }
    }
    if args.max_p99_ms.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
        return Err(RunError::Usage("--max-p99-ms must be a non-negative number".into()));
    }
    Ok(())
}

/// Resolves each distinct host once.
fn resolve(urls: &[RtspUrl]) -> Result<Vec<Arc<Target>>, RunError> {
    let mut cache: BTreeMap<(String, u16), SocketAddr> = BTreeMap::new();
    let mut targets = Vec::new();
    for url in urls {
        let key = (url.host().to_owned(), url.port());
        let addr = match cache.get(&key) {
            Some(a) => *a,
            None => {
                let addr = (url.host(), url.port())
                    .to_socket_addrs()
                    .map_err(|e| RunError::Resolve {
                        host: url.host().to_owned(),
                        reason: e.to_string(),
                    })?
                    .next()
                    .ok_or_else(|| RunError::Resolve {
                        host: url.host().to_owned(),
                        reason: "no addresses".into(),
                    })?;
                cache.insert(key, addr);
                addr
            }
        };
        targets.push(Arc::new(Target {
            url: Arc::new(url.clone()),
            addr,
        }));
    }
    Ok(targets)
}

/// Collects the workers' reports into whole intervals.
struct Collector {
    done: Vec<bool>,
    latest: Vec<Counters>,
    /// Interval index -> which workers reported it, and their sum.
    pending: BTreeMap<u64, (Vec<bool>, Histograms)>,
    total: Histograms,
    sessions: Vec<SessionSummary>,
}

impl Collector {
    fn new(workers: usize) -> Collector {
        Collector {
            done: vec![false; workers],
            latest: vec![Counters::default(); workers],
            pending: BTreeMap::new(),
            total: Histograms::default(),
            sessions: Vec::new(),
        }
    }

    fn add(&mut self, worker: usize, index: u64, counters: Counters, h: &Histograms) {
        self.latest[worker] = counters;
        let n = self.done.len();
        let entry = self
            .pending
            .entry(index)
            .or_insert_with(|| (vec![false; n], Histograms::default()));
        entry.0[worker] = true;
        entry.1.add(h);
    }

    /// The intervals every worker has reported (or will never report), in order.
    fn ready(&mut self) -> Vec<(u64, Histograms)> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let complete = entry.get().0.iter().zip(&self.done).all(|(r, d)| *r || *d);
            if !complete {
                break;
            }
            let (index, (_, h)) = entry.remove_entry();
            self.total.add(&h);
            out.push((index, h));
        }
        out
    }

    fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for w in &self.latest {
            c.add(w);
        }
        c
    }
}

/// The files under `--out`.
struct OutDir {
    dir: PathBuf,
}

impl OutDir {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn create(&self, name: &str) -> Result<BufWriter<File>, RunError> {
        let path = self.path(name);
        File::create(&path)
            .map(BufWriter::new)
            .map_err(|source| RunError::Output { path, source })
    }

    fn write(&self, name: &str, f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<(), RunError> {
        let mut w = self.create(name)?;
        f(&mut w).and_then(|_| w.flush()).map_err(|source| RunError::Output {
            path: self.path(name),
            source,
        })
    }
}

/// Runs the load test `args` describes to its end (or to Ctrl-C).
pub fn run(args: &Args) -> Result<Verdict, RunError> {
    check_args(args)?;
    let (urls, publish_to) = collect_urls(args)?;
    let targets = resolve(&urls)?;
    let lower = match args.transport {
        TransportArg::Udp => Lower::Udp,
        TransportArg::Tcp | TransportArg::Http => Lower::Tcp,
    };
    let settings = Arc::new(Settings {
        lower,
        tunnel: args.transport == TransportArg::Http,
        duration: (args.duration * SEC) as Nanos,
        rtsp_timeout: (args.rtsp_timeout * SEC) as Nanos,
        media_timeout: (args.media_timeout * SEC) as Nanos,
        buffered: args.buffered.map(|s| (s * SEC) as Nanos),
        dynamic_rate: args.dynamic_rate,
        speed: args.speed,
        overbuffer_window: args.overbuffer_window,
        user_agent: args.user_agent.clone(),
        limits: Limits::default(),
        repair: if args.nack {
            Some(Scheme::Nack)
        } else if args.reliable_udp {
            Some(Scheme::Reliable)
        } else {
            None
        },
    });
    let mut cores = core_affinity::get_core_ids().unwrap_or_default();
    if !args.cores.is_empty() {
        let all = cores;
        cores = args
            .cores
            .iter()
            .map(|&id| {
                all.iter()
                    .copied()
                    .find(|c| c.id == id)
                    .ok_or_else(|| RunError::Usage(format!("--cores: no core {id} on this machine")))
            })
            .collect::<Result<_, _>>()?;
    }
    let threads = args
        .threads
        .unwrap_or(cores.len().max(1))
        .clamp(1, (args.sessions as usize).max(1));
    let interval = (args.interval * SEC) as Nanos;

    let out = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| RunError::Output {
                path: dir.clone(),
                source,
            })?;
            Some(OutDir { dir: dir.clone() })
        }
        None => None,
    };
    let started_wall = SystemTime::now();
    let about = format!(
        "rtpload {}: {} {} sessions of {} s at {}/s against {}",
        env!("CARGO_PKG_VERSION"),
        args.sessions,
        args.transport.name(),
        args.duration,
        args.ramp,
        urls.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(" ")
    );
    let mut hlog = match &out {
        Some(o) => Some(
            IntervalLog::start(o.create("rtpload.hlog")?, started_wall, &about).map_err(|source| RunError::Output {
                path: o.path("rtpload.hlog"),
                source,
            })?,
        ),
        None => None,
    };

    // Each session holds a connection (and UDP workers a few sockets).
    match net::raise_fd_limit() {
        Ok(limit) if limit < u64::from(args.sessions) + 64 => warn!(
            limit,
            sessions = args.sessions,
            "the open-file limit is below the number of sessions; some will fail to connect"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = crate::sys::stop_on_signals(stop.clone()) {
        warn!(error = %e, "cannot handle SIGINT and SIGTERM; they end the run without a report");
    }
    let seed =
        started_wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64 ^ u64::from(std::process::id());
    // The broadcast is on the air before the first viewer starts.
    let publishing = match (&args.publish, publish_to) {
        (Some(movie), Some(url)) => {
            let plan = PublishPlan {
                movie: movie.clone(),
                url,
                lower: match args.publish_transport {
                    PublishTransport::Tcp => Lower::Tcp,
                    PublishTransport::Udp => Lower::Udp,
                },
                looped: args.looped,
                seed,
            };
            let p = publish::start(&plan)?;
            if !args.quiet {
                eprintln!(
                    "rtpload: publishing {} to {} over {}",
                    movie.display(),
                    plan.url,
                    args.publish_transport.name()
                );
            }
            if args.sessions == 0 {
                publish_alone(&p, args.duration, &stop);
            }
            Some(p)
        }
        _ => None,
    };
    let started = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let epoch = Instant::now();
    let ip = if targets.iter().any(|t| t.addr.is_ipv6()) {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let mut plans: Vec<Plan> = (0..threads)
        .map(|w| Plan {
            index: w,
            core: (!cores.is_empty()).then(|| cores[w % cores.len()]),
            sessions: Vec::new(),
            settings: settings.clone(),
            udp: None,
            epoch,
            interval,
            seed,
            stop: stop.clone(),
            started: started.clone(),
            reports: tx.clone(),
        })
        .collect();
    drop(tx);
    for i in 0..args.sessions {
        let at = (f64::from(i) / args.ramp * SEC) as Nanos;
        let target = targets[i as usize % targets.len()].clone();
        plans[i as usize % threads].sessions.push((at, i + 1, target));
    }
    if lower == Lower::Udp {
        for p in &mut plans {
            p.udp = Some(UdpPlan {
                ip,
                ports: args.udp_ports.clone(),
                pairs: p.sessions.len().div_ceil(args.sessions_per_port).max(1),
                read_every: (args.read_interval_ms > 0).then_some(args.read_interval_ms * 1_000_000),
                gro: args.gro,
            });
        }
    }
    info!(
        threads,
        sessions = args.sessions,
        transport = args.transport.name(),
        "starting"
    );
    let mut handles = Vec::new();
    for plan in plans {
        let index = plan.index;
        let h = std::thread::Builder::new()
            .name(format!("rtpload-{index}"))
            .spawn(move || worker::run(plan))
            .map_err(|e| RunError::Thread(index, e))?;
        handles.push(h);
    }

    let mut progress = Progress::new(!args.quiet, u64::from(args.sessions));
    let mut collector = Collector::new(threads);
    let mut worker_error = None;
    let mut finished = 0;
    let mut peak_mbit: f64 = 0.0;
    let interval_secs = args.interval;
    while finished < threads {
        let report = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match report {
            Some(Report::Interval {
                worker,
                index,
                counters,
                histograms,
            }) => collector.add(worker, index, counters, &histograms),
            Some(Report::Done {
                worker,
                index,
                counters,
                histograms,
                sessions,
            }) => {
                collector.add(worker, index, counters, &histograms);
                collector.done[worker] = true;
                collector.sessions.extend(sessions);
                finished += 1;
            }
            Some(Report::Failed { worker, error }) => {
                collector.done[worker] = true;
                stop.store(true, Ordering::Relaxed);
                worker_error.get_or_insert(RunError::Worker { worker, error });
                finished += 1;
            }
            None => {}
        }
        let ready = collector.ready();
        let counters = collector.counters();
        let elapsed = epoch.elapsed().as_secs_f64();
        for (index, h) in &ready {
            let start = Duration::from_secs_f64(*index as f64 * interval_secs);
            let length = Duration::from_secs_f64(interval_secs.min((elapsed - start.as_secs_f64()).max(0.0)));
            if let (Some(log), Some(o)) = (hlog.as_mut(), &out) {
                log.interval(h, start, length).map_err(|source| RunError::Output {
                    path: o.path("rtpload.hlog"),
                    source,
                })?;
            }
        }
        if let Some((index, _)) = ready.last() {
            let t = (*index + 1) as f64 * interval_secs;
            if finished < threads {
                if let Some(r) = progress.interval(started.load(Ordering::Relaxed), &counters, t) {
                    peak_mbit = peak_mbit.max(r.mbit_s);
                }
            }
        } else {
            progress.ramp(started.load(Ordering::Relaxed), &counters);
        }
    }
    progress.finish();
    for h in handles {
        let _ = h.join();
    }
    let published = publishing.map(Publishing::finish);
    if let Some(e) = worker_error {
        return Err(e);
    }
    if let (Some(log), Some(o)) = (hlog.as_mut(), &out) {
        log.flush().map_err(|source| RunError::Output {
            path: o.path("rtpload.hlog"),
            source,
        })?;
    }
    let elapsed = epoch.elapsed().as_secs_f64();
    let (user, system) = crate::sys::cpu_time();
    let interrupted = stop.load(Ordering::Relaxed);
    collector.sessions.sort_by_key(|s| s.id);
    let counters = collector.counters();
    let mut verdict = verdict(args, &counters, &collector, interrupted);
    if let Some(why) = published.as_ref().and_then(|p| p.error.as_ref()) {
        verdict.passed = false;
        verdict.reasons.push(format!("the publisher failed: {why}"));
    }

    // The report: a summary, then the table.
    let mbit_avg = counters.bytes as f64 * 8.0 / elapsed.max(1e-3) / 1e6;
    let cpu = (user + system).as_secs_f64();
    let mut text = String::new();
    text.push_str(&format!(
        "rtpload: {} {} sessions of {} s against {} ({} worker{})\n",
        args.sessions,
        args.transport.name().to_uppercase(),
        args.duration,
        urls.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(" "),
        threads,
        if threads == 1 { "" } else { "s" }
    ));
    text.push_str(&format!(
        "  sessions  {} started, {} completed, {} failed; {} plays\n",
        counters.started, counters.completed, counters.failed, counters.plays
    ));
    text.push_str(&format!(
        "  packets   {} received, {} lost ({:.4}%), {} duplicates, {} reordered, {} unmatched\n",
        counters.packets,
        counters.lost,
        counters.loss_fraction() * 100.0,
        counters.duplicates,
        counters.reordered,
        counters.unmatched
    ));
    if args.nack || args.reliable_udp {
        text.push_str(&format!(
            "  repair    {} {} lost on the wire, {} repaired, {} still awaited at the end; {} lost in the end ({:.4}%); {} NACKs for {} packets, {} RTX received, {} acks sent\n",
            if args.nack { "NACK/RTX:" } else { "reliable UDP:" },
            counters.lost_on_wire,
            counters.repaired,
            counters.repair_open,
            counters.lost,
            counters.loss_fraction() * 100.0,
            counters.nacks,
            counters.nacked,
            counters.rtx,
            counters.acks,
        ));
    }
    text.push_str(&format!(
        "  data      {:.1} MB, {mbit_avg:.2} Mbit/s on average over {elapsed:.1} s (peak interval {peak_mbit:.2})\n",
        counters.bytes as f64 / 1e6
    ));
    if let Some(p) = &published {
        text.push_str(&format!(
            "  publisher {} packets ({:.1} MB of payload) over {} to {}; {} movie start{}{}\n",
            p.packets,
            p.payload_bytes as f64 / 1e6,
            p.transport.to_uppercase(),
            p.url,
            p.movies,
            if p.movies == 1 { "" } else { "s" },
            match (&p.error, p.played_out) {
                (Some(e), _) => format!("; failed: {e}"),
                (None, true) => "; the movie played out".to_owned(),
                (None, false) => String::new(),
            }
        ));
    }
    text.push_str(&format!(
        "  client    {cpu:.2} s CPU ({:.2} s user, {:.2} s system): {:.1}% of one core\n\n",
        user.as_secs_f64(),
        system.as_secs_f64(),
        cpu / elapsed.max(1e-3) * 100.0
    ));
    text.push_str(&output::table(&collector.total));
    print!("{text}");

    if let Some(o) = &out {
        for m in Metric::ALL {
            o.write(&format!("{}.hgrm", m.name()), |w| {
                output::write_hgrm(collector.total.get(m), w)
            })?;
        }
        let series: Vec<plot::Series> = Metric::MAIN
            .iter()
            .map(|&m| plot::Series {
                name: m.name(),
                histogram: collector.total.get(m),
            })
            .collect();
        let subtitle = format!(
            "{} {} sessions x {} s, {} packets, {} lost, {}",
            args.sessions,
            args.transport.name().to_uppercase(),
            args.duration,
            counters.packets,
            counters.lost,
            urls.first().map_or("", |u| u.as_str())
        );
        let doc = plot::svg(&series, "rtpload: latency distributions", &subtitle);
        o.write("latency.svg", |w| w.write_all(doc.as_bytes()))?;
        o.write("sessions.csv", |w| output::write_sessions_csv(&collector.sessions, w))?;
        let summary = summary_json(
            args,
            &urls,
            threads,
            &counters,
            &collector,
            SummaryTimes {
                started: started_wall,
                elapsed,
                user,
                system,
                interrupted,
            },
            &verdict,
            published.as_ref(),
        );
        o.write("summary.json", |w| {
            serde_json::to_writer_pretty(&mut *w, &summary).map_err(io::Error::other)?;
            writeln!(w)
        })?;
        eprintln!("rtpload: wrote {}", describe_files(&o.dir));
    }
    Ok(verdict)
}

/// With `--publish` and no viewers: the broadcast runs for `secs`, or
/// until Ctrl-C or its own end.
fn publish_alone(p: &Publishing, secs: f64, stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until && !stop.load(Ordering::Relaxed) && !p.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe_files(dir: &Path) -> String {
    format!(
        "{0}/rtpload.hlog, {0}/*.hgrm, {0}/latency.svg, {0}/summary.json, {0}/sessions.csv",
        dir.display()
    )
}

/// The distinct session errors, most frequent first.
fn errors(sessions: &[SessionSummary]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in sessions {
        if let Some(Outcome::Failed(e)) = &s.outcome {
            *counts.entry(e.to_string()).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn verdict(args: &Args, c: &Counters, collector: &Collector, interrupted: bool) -> Verdict {
    let mut reasons = Vec::new();
    if interrupted {
        reasons.push("interrupted before the sessions had run their time".to_owned());
    }
    if c.failed > 0 {
        let mut why = format!("{} of {} sessions failed", c.failed, c.started);
        for (e, n) in errors(&collector.sessions).iter().take(3) {
            why.push_str(&format!("; {n} x {e}"));
        }
        reasons.push(why);
    }
    let unfinished = c.started.saturating_sub(c.completed + c.failed);
    if unfinished > 0 {
        reasons.push(format!("{unfinished} sessions did not finish"));
    }
    if let Some(max) = args.max_loss {
        let loss = c.loss_fraction();
        if loss > max {
            reasons.push(format!(
                "loss {loss:.6} ({} of {} packets) exceeds --max-loss {max}",
                c.lost,
                c.packets.saturating_sub(c.duplicates) + c.lost
            ));
        }
    }
    if let Some(max) = args.max_p99_ms {
        let h = collector.total.get(Metric::Lateness);
        if h.is_empty() {
            reasons.push("no packets, so no lateness p99 to hold to --max-p99-ms".to_owned());
        } else {
            let p99 = h.value_at_quantile(0.99) as f64 / 1_000.0;
            if p99 > max {
                reasons.push(format!("lateness p99 {p99:.3} ms exceeds --max-p99-ms {max}"));
            }
        }
    }
    Verdict {
        passed: reasons.is_empty(),
        reasons,
    }
}

struct SummaryTimes {
    started: SystemTime,
    elapsed: f64,
    user: Duration,
    system: Duration,
    interrupted: bool,
}

fn summary_json(
    args: &Args,
    urls: &[RtspUrl],
    threads: usize,
    c: &Counters,
    collector: &Collector,
    t: SummaryTimes,
    verdict: &Verdict,
    published: Option<&PublishReport>,
) -> serde_json::Value {
    let histograms: serde_json::Map<String, serde_json::Value> = Metric::MAIN
        .iter()
        .map(|&m| (m.name().to_owned(), json!(Quantiles::of(collector.total.get(m)))))
        .collect();
    let methods: serde_json::Map<String, serde_json::Value> = Metric::ALL
        .iter()
        .filter_map(|&m| Some((m.method()?.to_owned(), json!(Quantiles::of(collector.total.get(m))))))
        .collect();
    let cpu = (t.user + t.system).as_secs_f64();
    json!({
        "rtpload": env!("CARGO_PKG_VERSION"),
        "urls": urls.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "transport": args.transport.name(),
        "threads": threads,
        "duration_s": args.duration,
        "ramp_per_s": args.ramp,
        "started_at": t.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
        "elapsed_s": t.elapsed,
        "interrupted": t.interrupted,
        "sessions": {
            "requested": args.sessions,
            "started": c.started,
            "completed": c.completed,
            "failed": c.failed,
            "plays": c.plays,
        },
        "packets": {
            "received": c.packets,
            "lost": c.lost,
            "duplicates": c.duplicates,
            "reordered": c.reordered,
            "unmatched": c.unmatched,
            "loss_fraction": c.loss_fraction(),
        },
        "repair": {
            "scheme": if args.nack { "nack" } else if args.reliable_udp { "reliable-udp" } else { "none" },
            "lost_on_wire": c.lost_on_wire,
            "repaired": c.repaired,
            "given_up": c.repair_given_up,
            "open_at_end": c.repair_open,
            "residual_lost": c.lost,
            "nacks": c.nacks,
            "nacked": c.nacked,
            "rtx": c.rtx,
            "acks": c.acks,
        },
        "bytes": {
            "received": c.bytes,
            "mbit_per_s_average": c.bytes as f64 * 8.0 / t.elapsed.max(1e-3) / 1e6,
        },
        "rtcp": { "bad": c.bad_rtcp },
        "delivery": {
            "speed_asked": args.speed,
            "speed_granted_max": c.speed_milli_max as f64 / 1000.0,
            "media_s": c.media_ms as f64 / 1000.0,
            "arrival_s": c.arrival_ms as f64 / 1000.0,
            "media_per_arrival_s": c.media_ms as f64 / (c.arrival_ms.max(1)) as f64,
            "overbuffer_window": args.overbuffer_window,
            "max_ahead_bytes": c.max_ahead_bytes,
        },
        "publisher": published,
        "cpu": {
            "user_s": t.user.as_secs_f64(),
            "system_s": t.system.as_secs_f64(),
            "cores_used": cpu / t.elapsed.max(1e-3),
        },
        "histograms": histograms,
        "rtsp_methods": methods,
        "errors": errors(&collector.sessions)
            .into_iter()
            .map(|(error, sessions)| json!({ "error": error, "sessions": sessions }))
            .collect::<Vec<_>>(),
        "verdict": {
            "passed": verdict.passed,
            "max_loss": args.max_loss,
            "max_p99_ms": args.max_p99_ms,
            "reasons": verdict.reasons,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn collector_waits_for_every_live_worker() {
        let mut c = Collector::new(2);
        let mut h = Histograms::default();
        h.first_packet(1_000_000);
        c.add(0, 0, Counters::default(), &h);
        assert!(c.ready().is_empty(), "worker 1 has not reported interval 0");
        c.add(1, 0, Counters::default(), &h);
        c.add(1, 1, Counters::default(), &h);
        let ready = c.ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].1.get(Metric::FirstPacket).len(), 2);
        // Worker 0 finishes in interval 1 (its partial last one): both done.
        c.add(
            0,
            1,
            Counters {
                started: 3,
                ..Counters::default()
            },
            &h,
        );
        c.done[0] = true;
        let ready = c.ready();
        assert_eq!((ready.len(), ready[0].0), (1, 1));
        // Interval 2 needs only worker 1 now.
        c.add(1, 2, Counters::default(), &h);
        assert_eq!(c.ready().len(), 1);
        assert_eq!(c.total.get(Metric::FirstPacket).len(), 5);
        assert_eq!(c.counters().started, 3);
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["rtpload", "rtsp://127.0.0.1/x"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn arguments_are_checked() {
        assert!(check_args(&args(&[])).is_ok());
        for bad in [
            &["--ramp", "0"][..],
            &["--duration=-1"],
            &["--duration", "1e300"],
            &["--rtsp-timeout", "inf"],
            &["--ramp", "0.00001"],
            &["--sessions", "0"],
            &["--max-loss", "2"],
            &["--max-p99-ms=-3"],
            &["--threads", "0"],
        ] {
            assert!(matches!(check_args(&args(bad)), Err(RunError::Usage(_))), "{bad:?}");
        }
        let none = Args::try_parse_from(["rtpload"]).unwrap();
        assert!(matches!(collect_urls(&none), Err(RunError::Usage(_))));
        let dir = std::env::temp_dir().join(format!("rtpload-urls-{}", std::process::id()));
        std::fs::write(&dir, "# a list\n\nrtsp://h/a\n  rtsp://h/b  \n").unwrap();
        let with_file = Args::try_parse_from(["rtpload", "rtsp://h/z", "--urls", dir.to_str().unwrap()]).unwrap();
        let urls: Vec<String> = collect_urls(&with_file)
            .unwrap()
            .0
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(urls, ["rtsp://h/z", "rtsp://h/a", "rtsp://h/b"]);
        std::fs::remove_file(&dir).unwrap();
        let bad = Args::try_parse_from(["rtpload", "http://h/"]).unwrap();
        assert!(matches!(collect_urls(&bad), Err(RunError::Url(_))));
        let bad = Args::try_parse_from(["rtpload", "rtsp://user:pw@h/x"]).unwrap();
        let e = collect_urls(&bad).unwrap_err();
        assert!(matches!(&e, RunError::Credentials(u) if u == "rtsp://h/x"), "{e}");
        // Publishing: the first URL keeps its credentials for the
        // publisher; viewers get none.
        let publish = Args::try_parse_from(["rtpload", "--publish", "m.mp4", "rtsp://u:p%40ss@h/live/x"]).unwrap();
        let (viewers, to) = collect_urls(&publish).unwrap();
        assert_eq!(viewers[0].as_str(), "rtsp://h/live/x");
        assert_eq!(viewers[0].user(), None);
        let to = to.unwrap();
        assert_eq!((to.user(), to.password()), (Some("u"), Some("p@ss")));
        assert!(check_args(&Args::try_parse_from(["rtpload", "--publish", "m.mp4", "-n", "0"]).unwrap()).is_ok());
        assert!(matches!(check_args(&args(&["--loop"])), Err(RunError::Usage(_))));
    }

    #[test]
    fn verdicts() {
        let c = Collector::new(1);
        let ok = Counters {
            started: 10,
            completed: 10,
            packets: 10_000,
            lost: 5,
            ..Counters::default()
        };
        assert!(verdict(&args(&[]), &ok, &c, false).passed);
        let v = verdict(&args(&["--max-loss", "0.0001"]), &ok, &c, false);
        assert!(!v.passed);
        assert!(v.reasons[0].contains("exceeds --max-loss"), "{v:?}");
        assert!(verdict(&args(&["--max-loss", "0.001"]), &ok, &c, false).passed);
        let v = verdict(&args(&["--max-p99-ms", "5"]), &ok, &c, false);
        assert!(v.reasons[0].contains("no packets"), "{v:?}");
        let failed = Counters {
            completed: 9,
            failed: 1,
            ..ok
        };
        let v = verdict(&args(&[]), &failed, &c, true);
        assert_eq!(v.reasons.len(), 2);
        assert!(v.reasons[1].starts_with("1 of 10 sessions failed"));
        let mut late = Collector::new(1);
        let mut h = Histograms::default();
        for i in 0..100 {
            h.packet(&crate::reception::Measured {
                jitter_us: 0,
                lateness_ns: i * 1_000_000,
            });
        }
        late.total.add(&h);
        let v = verdict(&args(&["--max-p99-ms", "50"]), &ok, &late, false);
        assert!(v.reasons[0].starts_with("lateness p99 98."), "{v:?}");
        assert!(verdict(&args(&["--max-p99-ms", "150"]), &ok, &late, false).passed);
    }
}
