//! Loader benchmark: how long opening a two-hour hinted movie takes, and how
//! many packet recipes per second one core gets out of its hint tracks, each
//! printed beside the raw limit for the same work on the same bytes, measured
//! in the same run.
//!
//! The limits (see `limits.rs`) are loops with no loader logic: summing the
//! bytes the loader must read (the `moov` box for an open; every hint sample
//! for iteration) as 64-bit words, and walking the hint samples' packet
//! entries with the bare minimum of format knowledge. The distance from the
//! loader to the walk is what validation, sample-table lookups and recipe
//! building cost.

mod limits;

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use loader::atom::Atoms;
use loader::fourcc::kind;
use loader::{Movie, Packet, PacketFlags};

use limits::PREFETCH_AHEAD;
use streamalot_perf::{movie_maker, os};

/// Goals from the loader's performance issue.
const OPEN_GOAL_MS: f64 = 50.0;
const ITERATE_GOAL_MPS: f64 = 20.0;

#[derive(Parser, Debug)]
#[command(
    name = "loader-bench",
    about = "Times opening a two-hour hinted movie and iterating its packet recipes, beside the raw limits",
    long_about = "Times Movie::open (page cache cold and warm) and packet-recipe iteration with HintCursor \
                  and MovieCursor on one pinned core, and prints each figure beside the raw limit for the \
                  same work on the same bytes, measured in the same run.\n\n\
                  Without --movie it makes (once, with ffmpeg) a two-hour ~300 kbit/s H.264 + AAC movie \
                  hinted by `-movflags +rtphint`, by encoding a 60 s clip and looping it without \
                  re-encoding, and reuses it on later runs."
)]
struct Args {
    /// A hinted movie to measure instead of the generated one.
    #[arg(long, value_name = "PATH")]
    movie: Option<PathBuf>,
    /// Where the generated movie and its clip are kept.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data"))]
    data_dir: PathBuf,
    /// Length of the generated movie, in minutes.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    minutes: u64,
    /// Opens timed with the file in the page cache.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    opens: u32,
    /// Opens timed after dropping the file from the page cache (0 to skip).
    #[arg(long, default_value_t = 3)]
    cold_opens: u32,
    /// Timed passes over all packets, for each loop measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    passes: u32,
    /// Core to pin the benchmark thread to (default: the last one).
    #[arg(long, conflicts_with = "no_pin")]
    core: Option<usize>,
    /// Do not pin the benchmark thread.
    #[arg(long)]
    no_pin: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("loader-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let path = match &args.movie {
        Some(p) => p.clone(),
        None => movie_maker::ensure(&args.data_dir, args.minutes)?,
    };
    // Read before pinning: a pinned thread sees one core.
    let machine = os::machine();
    let pinned = if args.no_pin {
        "not pinned".to_owned()
    } else {
        match os::pin(args.core) {
            Ok(core) => format!("pinned to core {core}"),
            Err(e) => format!("not pinned ({e})"),
        }
    };
    let file_len = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();

    eprintln!("measuring {} ...", path.display());
    let open = measure_open(&path, args)?;

    // Iteration is measured on one movie kept open, with the whole file in
    // the page cache, so the figures are about the loader and not the disk.
    warm_page_cache(&path)?;
    let movie = Movie::open(&path).map_err(|e| e.to_string())?;
    let tracks = hint_tracks(&movie);
    let iterate = measure_iteration(&movie, &tracks, args.passes)?;

    let sources: Vec<String> = tracks.iter().map(|t| format!("{} <- {}", t.id, t.source)).collect();
    println!();
    println!("Loader: open and iterate a hinted movie");
    println!(
        "  movie    {} ({:.1} MB, {}; hint tracks {})",
        path.display(),
        file_len as f64 / 1e6,
        hms(movie.duration_secs()),
        sources.join(", ")
    );
    println!("  machine  {machine}; benchmark thread {pinned}");
    println!();
    open.print();
    println!();
    iterate.print(&movie, &tracks);
    println!();
    let all_samples: u64 = movie.tracks().iter().map(|t| u64::from(t.samples.len())).sum();
    summary(&open, &iterate, all_samples);
    Ok(())
}

// ---------------------------------------------------------------- open

struct OpenFigures {
    /// (time, fraction of the file in the page cache just before).
    cold: Vec<(Duration, f64)>,
    /// Reading the `moov` box with one `pread` after dropping the cache.
    cold_limit: Option<Duration>,
    warm: Vec<Duration>,
    warm_cached: f64,
    /// Mapping the file afresh and summing the `moov` box, page cache warm.
    warm_limit: Vec<Duration>,
    moov_len: u64,
    index_bytes: Option<u64>,
}

fn measure_open(path: &Path, args: &Args) -> Result<OpenFigures, String> {
    let open = || -> Result<(Duration, Movie), String> {
        let t = Instant::now();
        let m = Movie::open(path).map_err(|e| e.to_string())?;
        Ok((t.elapsed(), black_box(m)))
    };
    // The first open of the process measures the index's heap: later ones
    // reuse memory the allocator kept from earlier ones.
    let heap_growth = |open: &dyn Fn() -> Result<(Duration, Movie), String>| {
        let before = os::anon_resident();
        let (t, movie) = open()?;
        let growth = before.zip(os::anon_resident()).map(|(b, a)| a.saturating_sub(b));
        drop(movie);
        Ok::<_, String>((t, growth))
    };

    let mut cold = Vec::new();
    let mut index_bytes = None;
    for _ in 0..args.cold_opens {
        os::evict(path)?;
        let cached = os::cached_fraction(path)?;
        let (t, growth) = heap_growth(&open)?;
        index_bytes = index_bytes.or(growth);
        cold.push((t, cached));
    }

    let (moov_offset, moov_len) = find_moov(path)?;
    let moov = moov_offset as usize..(moov_offset + moov_len) as usize;
    let cold_limit = if args.cold_opens > 0 {
        os::evict(path)?;
        let file = File::open(path).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; moov_len as usize];
        let t = Instant::now();
        file.read_exact_at(&mut buf, moov_offset).map_err(|e| e.to_string())?;
        let t = t.elapsed();
        black_box(&buf);
        Some(t)
    } else {
        None
    };

    // Warm: what the open needs is in the page cache (the first open put it
    // there); each open still maps the file afresh and faults its pages in.
    let (_, growth) = heap_growth(&open)?;
    index_bytes = index_bytes.or(growth);
    let warm_cached = os::cached_fraction(path)?;
    let mut warm = Vec::new();
    let mut warm_limit = Vec::new();
    for _ in 0..args.opens {
        let (t, movie) = open()?;
        drop(movie);
        warm.push(t);

        let t = Instant::now();
        let file = File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: a read-only mapping, read only here; like the loader, the
        // benchmark assumes nobody truncates the movie while it runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        black_box(limits::sum_words(black_box(&map[moov.clone()])));
        drop(map);
        warm_limit.push(t.elapsed());
    }
    Ok(OpenFigures {
        cold,
        cold_limit,
        warm,
        warm_cached,
        warm_limit,
        moov_len,
        index_bytes,
    })
}

/// Offset and length of the `moov` box, found with the loader's box walker.
fn find_moov(path: &Path) -> Result<(u64, u64), String> {
    let movie = Movie::open(path).map_err(|e| e.to_string())?;
    let data = movie.data();
    Atoms::new(data, 0, data.len() as u64, "file")
        .map_while(Result::ok)
        .find(|a| a.kind == kind::MOOV)
        .map(|a| (a.offset, a.size))
        .ok_or_else(|| "no moov box".to_owned())
}

impl OpenFigures {
    fn cold_times(&self) -> Vec<Duration> {
        self.cold.iter().map(|c| c.0).collect()
    }

    fn print(&self) {
        println!(
            "Open: Movie::open (map the file, index every track, build the SDP); moov box {:.2} MB",
            self.moov_len as f64 / 1e6
        );
        if let Some((first, cached)) = self.cold.first() {
            let times = self.cold_times();
            println!(
                "  cold  page cache dropped first ({:>3.0}% of the file cached)   first {}  min {}  median {}  ({} runs)",
                cached * 100.0,
                ms(*first),
                ms(min(&times)),
                ms(median(&times)),
                times.len()
            );
        }
        println!(
            "  warm  moov in the page cache   ({:>3.0}% of the file cached)   min {}  median {}  ({} runs)",
            self.warm_cached * 100.0,
            ms(min(&self.warm)),
            ms(median(&self.warm)),
            self.warm.len()
        );
        if let Some(t) = self.cold_limit {
            println!(
                "  limit, cold: one pread of the moov box after dropping the cache     {}",
                ms(t)
            );
        }
        println!(
            "  limit, warm: map the file afresh, sum the moov box as u64 words    min {}  median {}",
            ms(min(&self.warm_limit)),
            ms(median(&self.warm_limit))
        );
        if let Some(b) = self.index_bytes {
            println!(
                "  index memory: {:.1} MiB of heap at the first open (anonymous RSS growth; the mapping excluded)",
                b as f64 / (1 << 20) as f64
            );
        }
    }
}

// ---------------------------------------------------------------- iteration

/// What the benchmark knows about one hint track, gathered before timing.
struct HintTrack {
    id: u32,
    /// Handler and codec of the track it draws from (`vide avc1`).
    source: String,
    /// (offset, length) in the file of every hint sample.
    samples: Vec<(usize, usize)>,
    bytes: u64,
}

fn hint_tracks(movie: &Movie) -> Vec<HintTrack> {
    movie
        .hint_tracks()
        .map(|t| {
            let source = t.references.first().and_then(|&id| movie.track(id)).map_or_else(
                || "?".to_owned(),
                |s| {
                    format!(
                        "{} {}",
                        s.handler,
                        s.codec.map_or_else(|| "?".into(), |c| c.to_string())
                    )
                },
            );
            let samples: Vec<(usize, usize)> = (0..t.samples.len())
                .filter_map(|n| t.samples.locate(n))
                .map(|(o, l)| (o as usize, l as usize))
                .filter(|&(o, l)| o.checked_add(l).is_some_and(|end| end <= movie.data().len()))
                .collect();
            let bytes = samples.iter().map(|s| s.1 as u64).sum();
            HintTrack {
                id: t.id,
                source,
                samples,
                bytes,
            }
        })
        .collect()
}

/// Timings of one loop over the whole movie, one entry per pass.
#[derive(Default)]
struct Series {
    times: Vec<Duration>,
    packets: u64,
}

impl Series {
    fn push(&mut self, t: Duration, packets: u64) {
        self.times.push(t);
        self.packets = packets;
    }

    /// Million packets (recipes) per second, from the best pass.
    fn best_mps(&self) -> f64 {
        self.packets as f64 / min(&self.times).as_secs_f64() / 1e6
    }

    fn median_mps(&self) -> f64 {
        self.packets as f64 / median(&self.times).as_secs_f64() / 1e6
    }

    fn ns_per_packet(&self) -> f64 {
        min(&self.times).as_nanos() as f64 / self.packets.max(1) as f64
    }
}

struct IterateFigures {
    /// Per hint track, HintCursor.
    tracks: Vec<Series>,
    /// Every hint track, one after the other (the sum of the above per pass).
    all_tracks: Series,
    /// The first pass over a fresh mapping: page faults included.
    first_pass: Series,
    merged: Series,
    scan: Series,
    walk_prefetch: Series,
    walk: Series,
    walk_packed: Series,
    hint_bytes: u64,
    hint_samples: u64,
    errors: u64,
}

fn measure_iteration(movie: &Movie, tracks: &[HintTrack], passes: u32) -> Result<IterateFigures, String> {
    let ids: Vec<u32> = tracks.iter().map(|t| t.id).collect();
    let samples: Vec<(usize, usize)> = tracks.iter().flat_map(|t| t.samples.iter().copied()).collect();
    let mut f = IterateFigures {
        tracks: tracks.iter().map(|_| Series::default()).collect(),
        all_tracks: Series::default(),
        first_pass: Series::default(),
        merged: Series::default(),
        scan: Series::default(),
        walk_prefetch: Series::default(),
        walk: Series::default(),
        walk_packed: Series::default(),
        hint_bytes: tracks.iter().map(|t| t.bytes).sum(),
        hint_samples: samples.len() as u64,
        errors: 0,
    };
    // The hint samples copied end to end: the walk over them shows what the
    // parsing costs when memory is not in the way.
    let mut packed = Vec::with_capacity(f.hint_bytes as usize);
    let mut packed_samples = Vec::with_capacity(samples.len());
    for &(o, l) in &samples {
        packed_samples.push((packed.len(), l));
        packed.extend_from_slice(&movie.data()[o..o + l]);
    }

    let t = Instant::now();
    let mut n = 0;
    for &id in &ids {
        let (packets, errors) = iterate_track(movie, id)?;
        n += packets;
        f.errors += errors;
    }
    f.first_pass.push(t.elapsed(), n);

    // Interleave the loops in every pass so that any drift in the machine's
    // speed (the other core's load, frequency) touches them all alike.
    for _ in 0..passes {
        let mut total = Duration::ZERO;
        let mut total_packets = 0;
        for (series, &id) in f.tracks.iter_mut().zip(&ids) {
            let t = Instant::now();
            let (packets, _) = iterate_track(movie, id)?;
            let t = t.elapsed();
            series.push(t, packets);
            total += t;
            total_packets += packets;
        }
        f.all_tracks.push(total, total_packets);

        let t = Instant::now();
        let packets = iterate_merged(movie, &ids)?;
        f.merged.push(t.elapsed(), packets);

        let t = Instant::now();
        black_box(limits::scan_samples(movie.data(), black_box(&samples)));
        // Stated per packet so it compares with the recipe rates.
        f.scan.push(t.elapsed(), total_packets);

        let t = Instant::now();
        let (packets, _) = limits::walk_entries::<PREFETCH_AHEAD>(movie.data(), black_box(&samples));
        f.walk_prefetch.push(t.elapsed(), packets);

        let t = Instant::now();
        let (packets, _) = limits::walk_entries::<0>(movie.data(), black_box(&samples));
        f.walk.push(t.elapsed(), packets);

        let t = Instant::now();
        let (packets, _) = limits::walk_entries::<0>(&packed, black_box(&packed_samples));
        f.walk_packed.push(t.elapsed(), packets);
    }
    Ok(f)
}

/// What a sender reads of every recipe: header fields and spans. Folding them
/// into a value keeps the compiler from skipping any of the decoding.
#[inline(always)]
fn consume(p: &Packet) -> u64 {
    let mut h = (p.transmit_ns as u64)
        ^ u64::from(p.timestamp) << 7
        ^ u64::from(p.sequence)
        ^ u64::from(p.marker) << 3
        ^ u64::from(p.payload_type) << 11
        ^ u64::from(p.flags.contains(PacketFlags::KEY));
    for s in &p.payload {
        h = h.wrapping_add(s.offset ^ u64::from(s.len));
    }
    h
}

/// All packets of hint track `id` with a HintCursor: (packets, errors).
#[inline(never)] // one symbol per loop in profiles
fn iterate_track(movie: &Movie, id: u32) -> Result<(u64, u64), String> {
    let mut cursor = movie.cursor(id).map_err(|e| e.to_string())?;
    let (mut packets, mut errors, mut acc) = (0u64, 0u64, 0u64);
    while let Some(p) = cursor.next_packet(movie) {
        match p {
            Ok(p) => {
                acc = acc.wrapping_add(consume(&p));
                packets += 1;
            }
            Err(_) => errors += 1,
        }
    }
    black_box(acc);
    Ok((packets, errors))
}

/// All packets of the hint tracks `ids`, merged by transmit time.
#[inline(never)] // one symbol per loop in profiles
fn iterate_merged(movie: &Movie, ids: &[u32]) -> Result<u64, String> {
    let mut cursor = movie.movie_cursor(ids).map_err(|e| e.to_string())?;
    let (mut packets, mut acc) = (0u64, 0u64);
    while let Some(p) = cursor.next_packet(movie) {
        if let Ok(p) = p {
            acc = acc.wrapping_add(consume(&p));
            packets += 1;
        }
    }
    black_box(acc);
    Ok(packets)
}

impl IterateFigures {
    fn print(&self, movie: &Movie, tracks: &[HintTrack]) {
        println!(
            "Iterate: every packet recipe on one core (M/s = million recipes per second; best and median of {} passes)",
            self.all_tracks.times.len()
        );
        println!(
            "  {:<46} {:>8} {:>8} {:>8} {:>6} {:>9} {:>10} {:>10}",
            "loop", "samples", "packets", "hint MB", "B/pkt", "best M/s", "median M/s", "ns/recipe"
        );
        let row = |name: &str, s: &Series, samples: usize, bytes: u64| {
            println!(
                "  {:<46} {:>8} {:>8} {:>8.1} {:>6.1} {:>9.2} {:>10.2} {:>10.1}",
                name,
                samples,
                s.packets,
                bytes as f64 / 1e6,
                bytes as f64 / s.packets.max(1) as f64,
                s.best_mps(),
                s.median_mps(),
                s.ns_per_packet()
            );
        };
        let (n, b) = (self.hint_samples as usize, self.hint_bytes);
        for (s, t) in self.tracks.iter().zip(tracks) {
            row(
                &format!("HintCursor, track {} ({})", t.id, t.source),
                s,
                t.samples.len(),
                t.bytes,
            );
        }
        row("HintCursor, all tracks one after another", &self.all_tracks, n, b);
        row("MovieCursor, all tracks merged", &self.merged, n, b);
        row("limit: sum the hint bytes as u64 words", &self.scan, n, b);
        row(
            &format!("limit: walk packet entries, prefetch {PREFETCH_AHEAD} ahead"),
            &self.walk_prefetch,
            n,
            b,
        );
        row("walk packet entries, no prefetch", &self.walk, n, b);
        row("walk packet entries, hint bytes packed", &self.walk_packed, n, b);
        println!(
            "  first HintCursor pass over a fresh mapping (page faults included): {:.2} M/s",
            self.first_pass.best_mps()
        );
        println!(
            "  hint data: {:.1} MB in {} samples spread over the file; {} packets in {} ({:.0} per second of movie)",
            self.hint_bytes as f64 / 1e6,
            self.hint_samples,
            self.all_tracks.packets,
            hms(movie.duration_secs()),
            self.all_tracks.packets as f64 / movie.duration_secs()
        );
        if self.errors > 0 {
            println!("  WARNING: {} packets failed to decode", self.errors);
        }
        if self.walk.packets != self.all_tracks.packets {
            println!(
                "  note: the entry walk saw {} packets, the cursors {} (edit lists can leave samples out)",
                self.walk.packets, self.all_tracks.packets
            );
        }
    }
}

// ---------------------------------------------------------------- summary

fn summary(open: &OpenFigures, it: &IterateFigures, all_samples: u64) {
    println!("Summary (ratio = measured speed / raw-limit speed; 100% would be the limit)");
    println!(
        "  {:<40} {:>12} {:>11} {:>12}  {:>6}  limit is",
        "figure", "measured", "goal", "raw limit", "ratio"
    );
    let time_row = |name: &str, t: Duration, limit: Duration, what: &str| {
        println!(
            "  {:<40} {:>12} {:>11} {:>12}  {:>5.1}%  {what}",
            name,
            ms(t),
            format!("< {OPEN_GOAL_MS:.0} ms"),
            ms(limit),
            limit.as_secs_f64() / t.as_secs_f64() * 100.0
        );
    };
    if let (Some(limit), false) = (open.cold_limit, open.cold.is_empty()) {
        time_row(
            "open, page cache cold (median)",
            median(&open.cold_times()),
            limit,
            "pread moov",
        );
    }
    time_row(
        "open, page cache warm (median)",
        median(&open.warm),
        median(&open.warm_limit),
        "map + sum moov",
    );
    let rate_row = |name: &str, s: &Series, limit: &Series, what: &str| {
        println!(
            "  {:<40} {:>8.2} M/s {:>11} {:>8.2} M/s  {:>5.1}%  {what}",
            name,
            s.best_mps(),
            format!(">= {ITERATE_GOAL_MPS:.0} M/s"),
            limit.best_mps(),
            s.best_mps() / limit.best_mps() * 100.0
        );
    };
    let walk = format!("walk entries, prefetch {PREFETCH_AHEAD}");
    rate_row(
        "iterate, HintCursor per track (best)",
        &it.all_tracks,
        &it.walk_prefetch,
        &walk,
    );
    rate_row(
        "iterate, MovieCursor merged (best)",
        &it.merged,
        &it.walk_prefetch,
        &walk,
    );
    rate_row(
        "iterate, HintCursor per track (best)",
        &it.all_tracks,
        &it.scan,
        "sum hint bytes",
    );
    if let Some(b) = open.index_bytes {
        println!(
            "  {:<40} {:>8.1} MiB  ({:.1} bytes per sample, {} samples in all tracks)",
            "index memory (heap)",
            b as f64 / (1 << 20) as f64,
            b as f64 / all_samples.max(1) as f64,
            all_samples
        );
    }
}

// ---------------------------------------------------------------- helpers

/// Reads the whole file once so its pages are in the page cache.
fn warm_page_cache(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    loop {
        let n = file.read_at(&mut buf, at).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
    }
}

fn min(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(t: Duration) -> String {
    format!("{:.2} ms", t.as_secs_f64() * 1e3)
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
