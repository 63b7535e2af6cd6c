//! Thousands of damaged copies of `media/sample.mp3`, and hand-made hostile
//! files, each of which must index to frames or give a typed error: never a
//! panic, a hang or an outsized allocation.
//!
//! The damage is aimed where MP3 readers go wrong: truncations all through
//! the ID3v2 tag, the Info header and the first frames, and at random
//! places after; bit flips, half of them in the tag and header frame; frame
//! headers overwritten with random bytes; the ID3v2 tag's version, flags and
//! size (and the sizes of the frames in it) set to the values that trip
//! parsers; the Info header's flags and counts; trailing ID3v1, APEv2,
//! Lyrics3 and appended ID3v2 tags whose sizes lie; and whole files of
//! garbage, of sync bytes, of nothing but tags, and of frame runs broken up
//! by garbage. For every index that comes out, each frame must lie inside
//! the file and the audio region, follow the last without overlap, start
//! after it in time, and begin with a header whose length is the frame's.
//!
//! Variants are deterministic (a seeded PRNG); `MP3_CORRUPTION_ONLY=N` reruns
//! variant N alone on the test thread, without catching its panic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use loader::mp3::{Error, FrameHeader, Mp3};

/// The system allocator, noting per thread the largest single request.
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes to `System` unchanged; the bookkeeping touches only
// a const-initialized thread-local that needs no allocation.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// xorshift64*: deterministic and good enough to spread damage around.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn sample() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp3"))
        .expect("media/sample.mp3 is committed (tools/make-sample-media makes it)")
}

/// Where the pristine sample's parts are, found independently of the loader.
struct Layout_ {
    /// The ID3v2 tag's length (the audio starts here).
    tag_len: usize,
    /// Offsets of the first frames (the first is the Info frame).
    frames: Vec<usize>,
}

fn layout(d: &[u8]) -> Layout_ {
    assert_eq!(&d[..3], b"ID3");
    let size = d[6..10].iter().fold(0usize, |n, &b| (n << 7) | usize::from(b));
    let tag_len = 10 + size;
    // 128 kbit/s at 44.1 kHz: 417 bytes, 418 with padding (bit 1 of byte 2).
    let mut frames = vec![tag_len];
    while frames.len() < 60 {
        let at = *frames.last().unwrap();
        assert_eq!(
            &d[at..at + 2],
            [0xff, 0xfb],
            "the sample is what make-sample-media makes"
        );
        frames.push(at + 417 + usize::from(d[at + 2] >> 1 & 1));
    }
    Layout_ { tag_len, frames }
}

fn put(d: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    if at + bytes.len() <= d.len() {
        d[at..at + bytes.len()].copy_from_slice(bytes);
    }
    d
}

fn append(d: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    d.extend_from_slice(tail);
    d
}

fn syncsafe(n: u32) -> [u8; 4] {
    [
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]
}

/// Every variant, as (description, bytes).
fn variants() -> Vec<(String, Vec<u8>)> {
    let d = sample();
    let l = layout(&d);
    let mut rng = Rng(0x6d70_335f_6475_7374);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();

    // Truncations: every byte through the tag and the first two frames, every
    // 7th through the first 60 frames, then random.
    let dense = l.frames[2];
    for n in (0..dense).chain((dense..l.frames[59]).step_by(7)) {
        v.push((format!("truncated to {n}"), d[..n].to_vec()));
    }
    for _ in 0..300 {
        let n = rng.below(d.len());
        v.push((format!("truncated to {n}"), d[..n].to_vec()));
    }

    // Bit flips, half in the tag and Info frame.
    for i in 0..3000 {
        let mut x = d.clone();
        let flips = 1 + rng.below(8);
        let range = if i % 2 == 0 { l.frames[1] } else { x.len() };
        let mut what = Vec::new();
        for _ in 0..flips {
            let (at, bit) = (rng.below(range), rng.below(8));
            x[at] ^= 1 << bit;
            what.push(format!("{at}:{bit}"));
        }
        v.push((format!("bits flipped at {}", what.join(" ")), x));
    }

    // Frame headers overwritten.
    for (k, &at) in l.frames.iter().enumerate() {
        for _ in 0..8 {
            let b = rng.bytes(3);
            v.push((format!("frame {k} header bytes 1-3 = {b:02x?}"), put(&d, at + 1, &b)));
        }
        v.push((format!("frame {k} header zeroed"), put(&d, at, &[0; 4])));
        v.push((format!("frame {k} free format"), put(&d, at + 2, &[0x00])));
    }

    // The ID3v2 header: version, flags, size.
    for version in [0u8, 1, 2, 3, 4, 5, 0xfe, 0xff] {
        v.push((format!("ID3v2 version {version}"), put(&d, 3, &[version])));
    }
    for flags in 0..=255u8 {
        v.push((format!("ID3v2 flags {flags:#04x}"), put(&d, 5, &[flags])));
    }
    let tag_size = (l.tag_len - 10) as u32;
    let sizes = [
        0,
        1,
        9,
        10,
        tag_size - 1,
        tag_size + 1,
        tag_size + 417,
        d.len() as u32,
        (1 << 28) - 1,
    ];
    for size in sizes {
        v.push((format!("ID3v2 size {size}"), put(&d, 6, &syncsafe(size))));
    }
    for raw in [[0xff; 4], [0x80, 0, 0, 0], [0, 0, 0, 0x80]] {
        v.push((format!("ID3v2 size bytes {raw:02x?}"), put(&d, 6, &raw)));
    }
    // The first frame in the tag (TIT2 in ID3v2.3): its size field.
    for size in [0u32, 1, 2, 100, 0x7fff_ffff, u32::MAX] {
        v.push((format!("TIT2 size {size}"), put(&d, 14, &size.to_be_bytes())));
        let mut as_v24 = put(&d, 14, &syncsafe(size.min((1 << 28) - 1)));
        as_v24[3] = 4;
        v.push((format!("ID3v2.4 TIT2 size {size}"), as_v24));
    }
    // Each frame-flag byte and text encoding.
    for (at, what) in [
        (18usize, "TIT2 status flags"),
        (19, "TIT2 format flags"),
        (20, "TIT2 encoding"),
    ] {
        for b in [0u8, 1, 2, 3, 4, 0x0f, 0x40, 0x80, 0xff] {
            v.push((format!("{what} {b:#04x}"), put(&d, at, &[b])));
        }
    }

    // The Info header: flags and counts.
    let info = l.frames[0] + 4 + 32;
    assert_eq!(&d[info..info + 4], b"Info");
    for flags in (0..16u32).chain([u32::MAX, 0x8000_0000]) {
        v.push((
            format!("Info flags {flags:#x}"),
            put(&d, info + 4, &flags.to_be_bytes()),
        ));
    }
    for n in [0u32, 1, u32::MAX] {
        v.push((format!("Info frames {n}"), put(&d, info + 8, &n.to_be_bytes())));
        v.push((format!("Info bytes {n}"), put(&d, info + 12, &n.to_be_bytes())));
    }
    v.push((
        "Info renamed VBRI".into(),
        put(
            &d,
            l.frames[0] + 36,
            b"VBRI\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ),
    ));

    // Trailing tags that lie.
    let mut v1 = vec![0u8; 128];
    v1[..3].copy_from_slice(b"TAG");
    v1[3..33].copy_from_slice(&[0xff; 30]);
    v.push(("ID3v1 of 0xFF text".into(), append(&d, &v1)));
    v.push(("a lone TAG".into(), append(&d, b"TAG")));
    for size in [0u32, 31, 32, 33, d.len() as u32, u32::MAX] {
        let mut ape = b"APETAGEX".to_vec();
        ape.extend(2000u32.to_le_bytes());
        ape.extend(size.to_le_bytes());
        ape.extend(1u32.to_le_bytes());
        ape.extend(0xa000_0000u32.to_le_bytes());
        ape.extend([0; 8]);
        v.push((format!("APEv2 size {size}"), append(&d, &ape)));
        v.push((
            format!("APEv2 size {size} before ID3v1"),
            append(&append(&d, &ape), &v1),
        ));
    }
    for digits in [&b"000000"[..], b"999999", b"00001x", b"-00001", b"000011"] {
        let mut lyrics = b"LYRICSBEGIN".to_vec();
        lyrics.extend(digits);
        lyrics.extend(b"LYRICS200");
        v.push((
            format!("Lyrics3v2 size {}", String::from_utf8_lossy(digits)),
            append(&d, &lyrics),
        ));
    }
    v.push(("a lone LYRICSEND".into(), append(&d, b"LYRICSEND")));
    for size in [0u32, 5, d.len() as u32, (1 << 28) - 1] {
        for (version, flags) in [(4u8, 0x10u8), (4, 0), (3, 0x10)] {
            let mut footer = b"3DI".to_vec();
            footer.extend([version, 0, flags]);
            footer.extend(syncsafe(size));
            // The same header in front, as a real appended tag has it.
            let mut header = footer.clone();
            header[..3].copy_from_slice(b"ID3");
            let tag = [&header[..], &vec![0; size.min(100) as usize], &footer].concat();
            v.push((
                format!("3DI footer v2.{version} flags {flags:#x} size {size}"),
                append(&d, &footer),
            ));
            v.push((
                format!("appended ID3v2.{version} flags {flags:#x} size {size}"),
                append(&d, &tag),
            ));
        }
    }

    // Whole files of hostile bytes.
    v.push(("empty".into(), Vec::new()));
    v.push(("all 0xFF".into(), vec![0xff; 100_000]));
    v.push(("all zero".into(), vec![0; 100_000]));
    for n in [1usize, 3, 4, 10, 4096, 200_000] {
        v.push((format!("{n} random bytes"), rng.bytes(n)));
    }
    v.push((
        "an MPEG header repeated".into(),
        [0xff, 0xfb, 0x90, 0xc0].repeat(50_000),
    ));
    v.push((
        "10,000 empty ID3v2 tags".into(),
        b"ID3\x03\x00\x00\x00\x00\x00\x00".repeat(10_000),
    ));
    v.push((
        "empty ID3v2 tags, then the sample".into(),
        append(&b"ID3\x03\x00\x00\x00\x00\x00\x00".repeat(1000), &d),
    ));
    let mut broken = Vec::new();
    for i in 0..2000 {
        broken.extend_from_slice(&d[l.frames[1]..l.frames[4]]);
        broken.extend(rng.bytes(i % 40));
    }
    v.push(("runs of three frames between garbage".into(), broken));
    let mut sprinkled = rng.bytes(300_000);
    for _ in 0..20_000 {
        let at = rng.below(sprinkled.len() - 4);
        sprinkled[at..at + 4].copy_from_slice(&[0xff, 0xfb, 0x90, 0xc0]);
    }
    v.push(("garbage sprinkled with headers".into(), sprinkled));
    v.push(("garbage, then the sample".into(), append(&rng.bytes(70_000), &d)));
    v.push(("the sample, then garbage".into(), append(&d, &rng.bytes(70_000))));
    v
}

#[derive(Debug)]
enum Outcome {
    Frames(usize),
    Refused,
}

/// Indexes `d` and checks every invariant of what comes out.
fn check(d: &[u8]) -> Result<Outcome, String> {
    let mp3 = match Mp3::from_bytes(d.to_vec()) {
        Ok(m) => m,
        Err(e @ (Error::NoFrames { .. } | Error::FreeFormat { .. })) => {
            return if e.to_string().is_empty() {
                Err("an empty error message".into())
            } else {
                Ok(Outcome::Refused)
            };
        }
        Err(e) => return Err(format!("unexpected error {e}")),
    };
    let audio = mp3.audio_range();
    if audio.end > d.len() as u64 || audio.start > audio.end {
        return Err(format!("audio range {audio:?} of {} bytes", d.len()));
    }
    let frames = mp3.frames();
    if frames.is_empty() {
        return Err("an index without frames".into());
    }
    let mut prev: Option<loader::mp3::Frame> = None;
    for (i, f) in frames.iter().enumerate() {
        if f.offset < audio.start || f.end() > audio.end {
            return Err(format!("frame {i} {f:?} outside the audio {audio:?}"));
        }
        let h = FrameHeader::parse(mp3.frame_bytes(i)).map_err(|e| format!("frame {i}: {e}"))?;
        if h.frame_len() != f.len {
            return Err(format!(
                "frame {i} is {} bytes, its header says {}",
                f.len,
                h.frame_len()
            ));
        }
        if let Some(p) = prev {
            if f.offset < p.end() || f.start_ns <= p.start_ns {
                return Err(format!("frame {i} {f:?} does not follow {p:?}"));
            }
        }
        prev = Some(*f);
    }
    if mp3.duration_ns() <= frames[frames.len() - 1].start_ns {
        return Err("a duration that ends before the last frame starts".into());
    }
    if let Some((span, _)) = mp3.vbr_header() {
        if span.end() > frames[0].offset {
            return Err(format!("header frame {span:?} after the first audio frame"));
        }
    }
    if mp3.problems().len() > 64 {
        return Err(format!("{} problems listed", mp3.problems().len()));
    }
    if loader::mp3::exercise(d) != frames.len() {
        return Err("exercise disagrees with the index".into());
    }
    Ok(Outcome::Frames(frames.len()))
}

/// The most a variant may ask for in one allocation: the copy of the input
/// (`from_bytes` takes it by value), plus proportional index tables.
fn allocation_limit(input: usize) -> usize {
    4 * input + (1 << 16)
}

fn run(d: &[u8]) -> Result<Outcome, String> {
    LARGEST.with(|m| m.set(0));
    let r = check(d);
    let largest = LARGEST.with(Cell::get);
    if largest > allocation_limit(d.len()) {
        return Err(format!(
            "allocated {largest} bytes at once for {} bytes of input",
            d.len()
        ));
    }
    r
}

/// A single variant running longer than this is taken to be stuck: a bound
/// on hangs, not a timing assertion (variants take microseconds).
const HANG_BOUND: Duration = Duration::from_secs(30);

#[test]
fn damaged_mp3s_index_or_fail_cleanly() {
    let variants = variants();
    if let Some(only) = std::env::var("MP3_CORRUPTION_ONLY")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        let (what, d) = &variants[only];
        println!("#{only} {what}: {:?}", run(d));
        return;
    }
    let total = variants.len();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // Quiet the default hook: a panic is reported below, with its variant.
        panic::set_hook(Box::new(|_| {}));
        for (i, (what, d)) in variants.into_iter().enumerate() {
            let r = panic::catch_unwind(AssertUnwindSafe(|| run(&d))).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panicked: {msg}"))
            });
            if tx.send((i, what, r)).is_err() {
                return;
            }
        }
    });
    let (mut indexed, mut refused, mut frames) = (0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..total {
        match rx.recv_timeout(HANG_BOUND) {
            Ok((_, _, Ok(Outcome::Frames(n)))) => {
                indexed += 1;
                frames += n;
            }
            Ok((_, _, Ok(Outcome::Refused))) => refused += 1,
            Ok((i, what, Err(why))) => failures.push(format!("#{i} {what}: {why}")),
            Err(_) => {
                failures.push(format!(
                    "a variant ran for over {HANG_BOUND:?}: a hang (the next after the last reported)"
                ));
                break;
            }
        }
    }
    drop(rx);
    let _ = panic::take_hook();
    if failures.is_empty() {
        worker.join().expect("the worker ends");
    }
    println!("mp3 corruption: {total} variants: {indexed} indexed ({frames} frames), {refused} refused");
    assert!(
        failures.is_empty(),
        "{} of {total} variants failed (rerun one with MP3_CORRUPTION_ONLY=N):\n  {}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
    );
    // The damage must not all have been refused: most variants keep most frames.
    assert!(indexed > total / 2, "{indexed} of {total} indexed");
}

/// The pristine sample must index cleanly; otherwise the variants prove nothing.
#[test]
fn pristine_sample_indexes() {
    let d = sample();
    let mp3 = Mp3::from_bytes(d.clone()).unwrap();
    assert!(mp3.problems().is_empty(), "{:?}", mp3.problems());
    assert!(mp3.vbr_header().is_some());
    assert_eq!(mp3.title(), Some("Streamalot sample tone"));
    assert!(matches!(check(&d), Ok(Outcome::Frames(n)) if n > 300));
}
