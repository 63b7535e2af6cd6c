//! Thousands of damaged copies of `media/sample.mp4`, each of which must open
//! to a stream of packet recipes or to a typed error: never a panic, a hang or
//! an outsized allocation.
//!
//! The damage is aimed where parsers go wrong: truncations at every box
//! boundary and all through `moov`, bit flips concentrated in `moov`, every
//! box's size field set to the values that trip walkers (0, 1, 7, off by a
//! few, all ones, the 64-bit forms), every sample table's entry count, the
//! packet entries and constructors inside the hint samples, chunk offsets in
//! their 64-bit form, and a few hand-made files where a few bytes claim
//! billions of samples, spans or chunk walks (regression cases for bugs found
//! this way). Each variant runs under a watchdog (a hang bound, not a timing
//! assertion) and a counting allocator that caps any single allocation at
//! 16 times the input plus 1 MiB; every payload span must lie in the input.
//!
//! The variants are generated deterministically (a seeded PRNG), so a failure
//! is reported by number and description and can be rerun alone:
//!
//! ```text
//! CORRUPTION_ONLY=1234 cargo test -p streamalot-loader --test corruption -- --nocapture
//! ```
//!
//! runs variant 1234 on the test thread, without catching its panic, so the
//! backtrace points at the bug. `CORRUPTION_SEED` changes the random variants.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loader::{Movie, Packet};

/// A single variant running longer than this is taken to be stuck. This is a
/// bound on hangs, not a performance assertion: variants take milliseconds.
/// `CORRUPTION_HANG_SECS` overrides it.
fn hang_bound() -> Duration {
    let secs = std::env::var("CORRUPTION_HANG_SECS").ok().and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(20))
}

/// Worker threads running variants (the suite runs on two-core machines).
const WORKERS: usize = 2;

/// Random variants of each kind. The systematic ones (every box, every
/// table) come on top; together they make several thousand.
const RANDOM_FLIPS: usize = 5000;
const RANDOM_HINT_EDITS: usize = 4000;
const RANDOM_TRUNCATIONS: usize = 400;

// ---------------------------------------------------------------------------
// Allocation accounting.

/// The system allocator, noting per thread the largest single request made
/// while a variant runs.
struct Counting;

thread_local! {
    /// Largest request since the last reset, on this thread.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Requests above this are reported at once (0: no limit). A request far
    /// beyond memory would abort the process before the test could say which
    /// variant made it, so say it first.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// The variant running on this thread, for that report.
    static VARIANT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn note(size: usize) {
    // `try_with`: these are const-initialized and have no destructor, so
    // reading them allocates nothing; during thread teardown they may be gone.
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
    let limit = LIMIT.try_with(Cell::get).unwrap_or(0);
    if limit != 0 && size > limit {
        let variant = VARIANT.try_with(Cell::get).unwrap_or(usize::MAX);
        // Formatted into a stack buffer: allocating here would recurse.
        let mut buf = [0u8; 128];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        let _ = writeln!(
            w,
            "corruption: variant #{variant} requests {size} bytes in one allocation"
        );
        let n = w.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..n]);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only reads and
// writes thread-locals that need no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most one variant may ask for in a single allocation.
fn allocation_limit(input_len: usize) -> usize {
    16 * input_len + (1 << 20)
}

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// SplitMix64: small, fast, and good enough to spread mutations around.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// An independent box walker, to know where to aim.

/// Containers whose children are boxes right after the header.
const CONTAINERS: [&[u8; 4]; 11] = [
    b"moov", b"trak", b"edts", b"mdia", b"minf", b"dinf", b"stbl", b"udta", b"hnti", b"hinf", b"tref",
];

#[derive(Debug, Clone)]
struct BoxInfo {
    kind: [u8; 4],
    path: String,
    offset: usize,
    size: usize,
    /// Offsets of the enclosing boxes, outermost first.
    ancestors: Vec<usize>,
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(d[at..at + 2].try_into().unwrap())
}

/// Every box of the well-formed sample: the containers above, `stsd` (whose
/// entries follow an 8-byte full-box header) and the `rtp ` entries (whose
/// `tims`/`tsro`/`snro` follow 16 bytes of fields).
fn walk(d: &[u8], start: usize, end: usize, parent: &str, ancestors: &[usize], out: &mut Vec<BoxInfo>) {
    let mut at = start;
    while at + 8 <= end {
        let size = be32(d, at) as usize;
        let kind: [u8; 4] = d[at + 4..at + 8].try_into().unwrap();
        assert!(size >= 8 && at + size <= end, "the pristine sample walks cleanly");
        let name = String::from_utf8_lossy(&kind).into_owned();
        let path = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        out.push(BoxInfo {
            kind,
            path: path.clone(),
            offset: at,
            size,
            ancestors: ancestors.to_vec(),
        });
        let mut inner = ancestors.to_vec();
        inner.push(at);
        let skip = if CONTAINERS.contains(&&kind) {
            Some(8)
        } else if &kind == b"stsd" {
            Some(16)
        } else if &kind == b"rtp " {
            Some(24)
        } else {
            None
        };
        if let Some(skip) = skip {
            walk(d, at + skip, at + size, &path, &inner, out);
        }
        at += size;
    }
}

/// Where a hint sample's fields are, from an independent parse of it.
#[derive(Debug)]
struct HintSample {
    track_id: u32,
    number: u32,
    offset: usize,
    len: usize,
    packets: Vec<HintPacket>,
}

#[derive(Debug)]
struct HintPacket {
    at: usize,
    flags: u16,
    /// Offset of the extra-information length, when the packet has TLVs.
    tlv: Option<usize>,
    constructors: Vec<usize>,
}

fn parse_hint_sample(d: &[u8], offset: usize, len: usize) -> Vec<HintPacket> {
    let end = offset + len;
    let count = be16(d, offset);
    let mut pos = offset + 4;
    let mut packets = Vec::new();
    for _ in 0..count {
        assert!(pos + 12 <= end);
        let flags = be16(d, pos + 8);
        let entries = be16(d, pos + 10) as usize;
        let at = pos;
        pos += 12;
        let tlv = (flags & 4 != 0).then(|| {
            let at = pos;
            pos += be32(d, pos) as usize;
            at
        });
        let constructors = (0..entries).map(|i| pos + 16 * i).collect();
        pos += 16 * entries;
        assert!(pos <= end);
        packets.push(HintPacket {
            at,
            flags,
            tlv,
            constructors,
        });
    }
    packets
}

fn hint_samples(d: &[u8]) -> Vec<HintSample> {
    let movie = Movie::from_bytes(d.to_vec()).expect("the pristine sample opens");
    let mut out = Vec::new();
    for t in movie.hint_tracks() {
        for n in 0..t.samples.len() {
            let (offset, len) = t.samples.locate(n).expect("the pristine sample places every sample");
            let (offset, len) = (offset as usize, len as usize);
            out.push(HintSample {
                track_id: t.id,
                number: n + 1,
                offset,
                len,
                packets: parse_hint_sample(d, offset, len),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Variants.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Truncate,
    BitFlip,
    BoxSize,
    EntryCount,
    HintSample,
    Co64,
    Crafted,
}

#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    /// (byte offset, bit) pairs.
    Flip(Vec<(usize, u8)>),
    /// Overwrite bytes at an offset.
    Put(usize, Vec<u8>),
    /// Replace `remove` bytes at `at` with `insert`, growing or shrinking
    /// the 32-bit sizes of the boxes at `ancestors` to match.
    Splice {
        at: usize,
        remove: usize,
        insert: Vec<u8>,
        ancestors: Vec<usize>,
    },
    /// A whole file built by hand.
    Whole(Arc<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Variant {
    kind: Kind,
    what: String,
    edit: Edit,
}

impl Variant {
    fn apply(&self, original: &[u8]) -> Vec<u8> {
        match &self.edit {
            Edit::Truncate(n) => original[..*n].to_vec(),
            Edit::Flip(bits) => {
                let mut d = original.to_vec();
                for &(at, bit) in bits {
                    d[at] ^= 1 << bit;
                }
                d
            }
            Edit::Put(at, bytes) => {
                let mut d = original.to_vec();
                d[*at..*at + bytes.len()].copy_from_slice(bytes);
                d
            }
            Edit::Splice {
                at,
                remove,
                insert,
                ancestors,
            } => {
                let mut d = original.to_vec();
                splice(&mut d, *at, *remove, insert, ancestors);
                d
            }
            Edit::Whole(d) => d.to_vec(),
        }
    }
}

/// Replaces `remove` bytes at `at` with `insert` and fixes the sizes of the
/// enclosing boxes.
fn splice(d: &mut Vec<u8>, at: usize, remove: usize, insert: &[u8], ancestors: &[usize]) {
    let delta = insert.len() as i64 - remove as i64;
    for &a in ancestors {
        let size = (i64::from(be32(d, a)) + delta) as u32;
        d[a..a + 4].copy_from_slice(&size.to_be_bytes());
    }
    d.splice(at..at + remove, insert.iter().copied());
}

/// `stco` box `b` rewritten as `co64`, with entry `i` set to `v` when given.
fn co64_of(d: &[u8], b: &BoxInfo, replace: Option<(usize, u64)>) -> Vec<u8> {
    let n = be32(d, b.offset + 12) as usize;
    let mut out = Vec::with_capacity(16 + 8 * n);
    out.extend_from_slice(&((16 + 8 * n) as u32).to_be_bytes());
    out.extend_from_slice(b"co64");
    out.extend_from_slice(&d[b.offset + 8..b.offset + 16]); // version, flags, count
    for i in 0..n {
        let v = match replace {
            Some((j, v)) if j == i => v,
            _ => u64::from(be32(d, b.offset + 16 + 4 * i)),
        };
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// The box at `rest` (a path below `moov/trak`) of the `track`th `trak`.
fn track_box(d: &[u8], track: usize, rest: &str) -> BoxInfo {
    let mut boxes = Vec::new();
    walk(d, 0, d.len(), "", &[], &mut boxes);
    let trak = boxes
        .iter()
        .filter(|b| b.path == "moov/trak")
        .nth(track)
        .unwrap()
        .offset;
    let path = format!("moov/trak/{rest}");
    boxes
        .into_iter()
        .find(|b| b.ancestors.contains(&trak) && b.path == path)
        .unwrap_or_else(|| panic!("trak {track} has {path}"))
}

fn full_box(kind: &[u8; 4], words: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut v = vec![0; 8];
    v[4..8].copy_from_slice(kind);
    v.extend_from_slice(&[0; 4]);
    for w in words {
        v.extend_from_slice(&w.to_be_bytes());
    }
    let len = v.len() as u32;
    v[..4].copy_from_slice(&len.to_be_bytes());
    v
}

fn replace_box(d: &mut Vec<u8>, b: &BoxInfo, new_box: &[u8]) {
    splice(d, b.offset, b.size, new_box, &b.ancestors);
}

fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A sample constructor.
fn sample_constructor(track_ref: i8, len: u16, sample: u32, offset: u32, bpb: u16, spb: u16) -> [u8; 16] {
    let mut c = [0; 16];
    c[0] = 2;
    c[1] = track_ref as u8;
    c[2..4].copy_from_slice(&len.to_be_bytes());
    c[4..8].copy_from_slice(&sample.to_be_bytes());
    c[8..12].copy_from_slice(&offset.to_be_bytes());
    c[12..14].copy_from_slice(&bpb.to_be_bytes());
    c[14..16].copy_from_slice(&spb.to_be_bytes());
    c
}

/// A hint sample of `packets` packets, each with the same data table.
fn hint_sample(packets: u16, table: &[[u8; 16]]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&packets.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    for p in 0..packets {
        s.extend_from_slice(&0u32.to_be_bytes()); // relative time
        s.extend_from_slice(&[0x80, 0x60]);
        s.extend_from_slice(&p.to_be_bytes());
        s.extend_from_slice(&0u16.to_be_bytes()); // flags
        s.extend_from_slice(&(table.len() as u16).to_be_bytes());
        for c in table {
            s.extend_from_slice(c);
        }
    }
    s
}

/// Appends `sample` to the file and points every sample of the video hint
/// track (the third `trak`, one sample per chunk) at it.
fn point_video_hints_at(d: &mut Vec<u8>, sample: &[u8]) {
    let at = d.len() as u32;
    let stsc = track_box(d, 2, "mdia/minf/stbl/stsc");
    assert_eq!(
        &d[stsc.offset + 12..stsc.offset + 28],
        &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    );
    let stsz = track_box(d, 2, "mdia/minf/stbl/stsz");
    let stco = track_box(d, 2, "mdia/minf/stbl/stco");
    let n = be32(d, stsz.offset + 16) as usize;
    for i in 0..n {
        put32(d, stsz.offset + 20 + 4 * i, sample.len() as u32);
        put32(d, stco.offset + 16 + 4 * i, at);
    }
    d.extend_from_slice(sample);
}

/// Hand-made files aimed at amplification: a few bytes that claim billions
/// of samples, spans or chunk walks.
fn crafted(original: &[u8]) -> Vec<Variant> {
    let mut out = Vec::new();
    let mut add = |what: &str, d: Vec<u8>| {
        out.push(Variant {
            kind: Kind::Crafted,
            what: what.to_owned(),
            edit: Edit::Whole(Arc::new(d)),
        })
    };

    // One run of the video hint track's time table claiming 2^25 samples
    // more than `stsz` has: the cursor must stop at the last real sample, not
    // report each phantom one as an error.
    let mut d = original.to_vec();
    let stts = track_box(&d, 2, "mdia/minf/stbl/stts");
    put32(&mut d, stts.offset + 16, 1 << 25);
    add("video hint track: the first stts run claims 2^25 samples", d);

    // The audio hint track has one constant sample size: with its sample
    // count, its chunks' sample count and its time table all damaged, twelve
    // bytes claim four billion hint samples.
    let mut d = original.to_vec();
    let stsz = track_box(&d, 3, "mdia/minf/stbl/stsz");
    assert_ne!(be32(&d, stsz.offset + 12), 0, "audio hints have a constant size");
    put32(&mut d, stsz.offset + 16, u32::MAX);
    let stsc = track_box(&d, 3, "mdia/minf/stbl/stsc");
    put32(&mut d, stsc.offset + 20, u32::MAX);
    let stts = track_box(&d, 3, "mdia/minf/stbl/stts");
    put32(&mut d, stts.offset + 16, 0xffff_0000);
    add(
        "audio hint track: stsz count, stsc samples per chunk and stts count all near 2^32",
        d,
    );

    // A hint packet of 4000 compressed-sound constructors, each reading one
    // byte from each of the video track's 250 one-sample chunks: a million
    // spans for one packet.
    let mut d = original.to_vec();
    let table = vec![sample_constructor(0, 250, 1, 0, 2, 2); 4000];
    point_video_hints_at(&mut d, &hint_sample(1, &table));
    add(
        "video hints: one packet of 4000 constructors each spanning 250 chunks",
        d,
    );

    // The video track turned into 200,000 one-byte samples in as many chunks,
    // all but the last empty when read as compressed sound (one byte per two
    // samples): every constructor walks all of them.
    let mut d = original.to_vec();
    let chunks = 200_000u32;
    let stco = track_box(&d, 0, "mdia/minf/stbl/stco");
    replace_box(
        &mut d,
        &stco,
        &full_box(b"stco", std::iter::once(chunks).chain((0..chunks).map(|_| 40))),
    );
    let stsz = track_box(&d, 0, "mdia/minf/stbl/stsz");
    replace_box(&mut d, &stsz, &full_box(b"stsz", [1, chunks + 1]));
    let stsc = track_box(&d, 0, "mdia/minf/stbl/stsc");
    replace_box(&mut d, &stsc, &full_box(b"stsc", [2, 1, 1, 1, chunks, 2, 1]));
    let table = vec![sample_constructor(0, 1, 1, 0, 1, 2); 1000];
    point_video_hints_at(&mut d, &hint_sample(16, &table));
    add(
        "video track of 200,000 empty compressed chunks, walked by 16,000 constructors per hint sample",
        d,
    );

    // Chunk offsets near the top of the 64-bit range, where adding a sample's
    // place in its chunk overflows: the audio hint track (constant sample
    // size) with two samples per chunk...
    let mut d = original.to_vec();
    let stsc = track_box(&d, 3, "mdia/minf/stbl/stsc");
    put32(&mut d, stsc.offset + 20, 2);
    let stco = track_box(&d, 3, "mdia/minf/stbl/stco");
    let co64 = co64_of(&d, &stco, Some((0, u64::MAX - 100)));
    replace_box(&mut d, &stco, &co64);
    add(
        "audio hint track: two samples per chunk, the first chunk at 2^64 - 101 (co64)",
        d,
    );

    // ...and a compressed-sound constructor whose offset, counted in blocks,
    // moves it into the video track's second chunk, placed at 2^64 - 1.
    let mut d = original.to_vec();
    let stco = track_box(&d, 0, "mdia/minf/stbl/stco");
    let co64 = co64_of(&d, &stco, Some((1, u64::MAX)));
    replace_box(&mut d, &stco, &co64);
    point_video_hints_at(&mut d, &hint_sample(1, &[sample_constructor(0, 1, 1, 3, 2, 1)]));
    add(
        "video hints: a compressed constructor reading at 2^64 - 1 + 1 (co64)",
        d,
    );

    out
}

fn describe_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn put(kind: Kind, what: String, at: usize, bytes: &[u8]) -> Variant {
    Variant {
        kind,
        what: format!("{what}: write {} at {at}", describe_bytes(bytes)),
        edit: Edit::Put(at, bytes.to_vec()),
    }
}

fn variants(d: &[u8], seed: u64) -> Vec<Variant> {
    let mut boxes = Vec::new();
    walk(d, 0, d.len(), "", &[], &mut boxes);
    let moov = boxes
        .iter()
        .find(|b| &b.kind == b"moov")
        .expect("sample has moov")
        .clone();
    let moov_range = moov.offset..moov.offset + moov.size;
    let hints = hint_samples(d);
    let mut rng = Rng(seed);
    let mut out = Vec::new();

    // Truncations: at and around every box boundary, every 16 bytes through
    // moov, and at random points of the whole file.
    let mut cuts = std::collections::BTreeSet::new();
    for b in &boxes {
        for c in [
            b.offset,
            b.offset + 4,
            b.offset + 8,
            b.offset + 9,
            b.offset + b.size - 1,
        ] {
            cuts.insert(c);
        }
    }
    cuts.extend(moov_range.clone().step_by(16));
    for _ in 0..RANDOM_TRUNCATIONS {
        cuts.insert(rng.below(d.len()));
    }
    cuts.insert(0);
    cuts.insert(1);
    for c in cuts.into_iter().filter(|&c| c < d.len()) {
        out.push(Variant {
            kind: Kind::Truncate,
            what: format!("truncate to {c} bytes"),
            edit: Edit::Truncate(c),
        });
    }

    // Bit flips, nine in ten inside moov; one to eight per variant.
    for i in 0..RANDOM_FLIPS {
        let flips = if i % 2 == 0 { 1 } else { 2 + rng.below(7) };
        let bits: Vec<(usize, u8)> = (0..flips)
            .map(|_| {
                let at = if rng.below(10) == 0 {
                    rng.below(d.len())
                } else {
                    moov_range.start + rng.below(moov.size)
                };
                (at, rng.below(8) as u8)
            })
            .collect();
        let list: Vec<String> = bits.iter().map(|(a, b)| format!("{a}.{b}")).collect();
        out.push(Variant {
            kind: Kind::BitFlip,
            what: format!("flip bits (byte.bit) {}", list.join(" ")),
            edit: Edit::Flip(bits),
        });
    }

    // Size fields of every box.
    for b in &boxes {
        let size = b.size as u32;
        let mut sizes = vec![0, 1, 7, 8, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
        for k in 1..=8u32 {
            sizes.push(size.wrapping_add(k));
            sizes.push(size.wrapping_sub(k));
        }
        for s in sizes {
            out.push(put(
                Kind::BoxSize,
                format!("size of {} at {} ({}) to {s:#x}", b.path, b.offset, b.size),
                b.offset,
                &s.to_be_bytes(),
            ));
        }
        // The 64-bit forms: rewritten properly (a valid file), and with the
        // 64-bit size wrong in the ways 32-bit ones go wrong.
        let real = b.size as u64 + 8;
        for largesize in [
            real,
            0,
            1,
            15,
            16,
            real - 1,
            real + 1,
            real + 8,
            u64::MAX,
            1 << 63,
            1 << 32,
        ] {
            out.push(Variant {
                kind: Kind::BoxSize,
                what: format!(
                    "rewrite {} at {} ({}) with a 64-bit size of {largesize:#x}",
                    b.path, b.offset, b.size
                ),
                edit: Edit::Splice {
                    at: b.offset,
                    remove: 8,
                    insert: [&1u32.to_be_bytes()[..], &b.kind, &largesize.to_be_bytes()].concat(),
                    ancestors: b.ancestors.clone(),
                },
            });
        }
    }

    // Chunk offsets in their 64-bit form: each `stco` rewritten as `co64`
    // (a valid file), then with an entry pointing past the end or at the
    // top of the 64-bit range, where additions overflow.
    for b in boxes.iter().filter(|b| &b.kind == b"stco") {
        let n = be32(d, b.offset + 12) as usize;
        let mut replacements = vec![None];
        for i in [0, n - 1] {
            for v in [
                u64::MAX,
                u64::MAX - 0xffff,
                1 << 63,
                i64::MAX as u64,
                (1 << 32) + 40,
                d.len() as u64,
                d.len() as u64 - 1,
            ] {
                replacements.push(Some((i, v)));
            }
        }
        for r in replacements {
            let what = match r {
                None => format!("rewrite {} at {} as co64", b.path, b.offset),
                Some((i, v)) => format!("rewrite {} at {} as co64 with entry {i} = {v:#x}", b.path, b.offset),
            };
            out.push(Variant {
                kind: Kind::Co64,
                what,
                edit: Edit::Splice {
                    at: b.offset,
                    remove: b.size,
                    insert: co64_of(d, b, r),
                    ancestors: b.ancestors.clone(),
                },
            });
        }
    }

    out.extend(crafted(d));

    // Entry counts of every sample table (and elst, stsd).
    for b in &boxes {
        let count_at = match &b.kind {
            b"stts" | b"ctts" | b"stss" | b"stsc" | b"stco" | b"co64" | b"elst" | b"stsd" => b.offset + 12,
            b"stsz" => b.offset + 16,
            _ => continue,
        };
        let count = be32(d, count_at);
        for c in [
            0,
            1,
            2,
            count.wrapping_sub(1),
            count.wrapping_add(1),
            count.wrapping_mul(2),
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ] {
            out.push(put(
                Kind::EntryCount,
                format!("entry count of {} at {} ({count}) to {c:#x}", b.path, b.offset),
                count_at,
                &c.to_be_bytes(),
            ));
        }
        if &b.kind == b"stsz" {
            // The constant sample size: a table turned constant and back.
            let size_at = b.offset + 12;
            for s in [0u32, 1, 3, 4, 0xffff, 0xffff_ffff] {
                out.push(put(
                    Kind::EntryCount,
                    format!("sample size of {} at {} to {s:#x}", b.path, b.offset),
                    size_at,
                    &s.to_be_bytes(),
                ));
            }
        }
        if &b.kind == b"elst" {
            // The edit itself: duration, media time, rate.
            let e = b.offset + 16;
            for (field, off, vals) in [
                ("duration", 0, &[0u32, 1, 0xffff_ffff][..]),
                ("media time", 4, &[0xffff_ffff, 0x7fff_ffff, 0x8000_0000][..]),
                ("rate", 8, &[0, 0xffff_ffff][..]),
            ] {
                for &v in vals {
                    out.push(put(
                        Kind::EntryCount,
                        format!("edit {field} of {} to {v:#x}", b.path),
                        e + off,
                        &v.to_be_bytes(),
                    ));
                }
            }
        }
    }

    // Hint samples: every field of a packet entry and of a constructor, in
    // samples picked at random (the first sample of each track always).
    let firsts: Vec<usize> = (0..hints.len())
        .filter(|&i| i == 0 || hints[i].track_id != hints[i - 1].track_id)
        .collect();
    let mut edits = 0;
    let mut pick_sample = 0usize;
    while edits < RANDOM_HINT_EDITS {
        let s = if pick_sample < firsts.len() {
            &hints[firsts[pick_sample]]
        } else {
            &hints[rng.below(hints.len())]
        };
        pick_sample += 1;
        let name = format!(
            "hint track {} sample {} (at {}, {} bytes)",
            s.track_id, s.number, s.offset, s.len
        );
        let mut here = hint_edits(&name, s, d, &mut rng);
        if pick_sample > firsts.len() {
            // A random sample contributes a few of its possible edits.
            let keep = 1 + rng.below(4);
            for _ in 0..keep.min(here.len()) {
                let v = here.swap_remove(rng.below(here.len()));
                out.push(v);
                edits += 1;
            }
        } else {
            edits += here.len();
            out.append(&mut here);
        }
    }
    out
}

/// Every edit of interest to one hint sample.
fn hint_edits(name: &str, s: &HintSample, d: &[u8], rng: &mut Rng) -> Vec<Variant> {
    let mut out = Vec::new();
    let k = Kind::HintSample;
    let count = be16(d, s.offset);
    for c in [0u16, 1, count.wrapping_sub(1), count.wrapping_add(1), 0xffff] {
        out.push(put(
            k,
            format!("{name}: packet count to {c}"),
            s.offset,
            &c.to_be_bytes(),
        ));
    }
    for (pi, p) in s.packets.iter().enumerate() {
        let pn = format!("{name} packet {}", pi + 1);
        for t in [0x7fff_ffffu32, 0x8000_0000, 0xffff_ffff] {
            out.push(put(k, format!("{pn}: relative time to {t:#x}"), p.at, &t.to_be_bytes()));
        }
        for f in [p.flags ^ 4, p.flags | 4, 0xffff, 0] {
            out.push(put(k, format!("{pn}: flags to {f:#x}"), p.at + 8, &f.to_be_bytes()));
        }
        let entries = p.constructors.len() as u16;
        for e in [0u16, 1, entries.wrapping_sub(1), entries + 1, entries + 2, 0xffff] {
            out.push(put(k, format!("{pn}: entry count to {e}"), p.at + 10, &e.to_be_bytes()));
        }
        if let Some(tlv) = p.tlv {
            let len = be32(d, tlv);
            for l in [0u32, 3, 4, 5, 8, len - 4, len + 4, len + 16, 0x7fff_ffff, 0xffff_ffff] {
                out.push(put(
                    k,
                    format!("{pn}: extra-information length to {l:#x}"),
                    tlv,
                    &l.to_be_bytes(),
                ));
            }
            if len >= 12 {
                let first = be32(d, tlv + 4);
                for l in [0u32, 4, 7, 8, 11, first + 4, len, 0xffff_ffff] {
                    out.push(put(
                        k,
                        format!("{pn}: first TLV length to {l:#x}"),
                        tlv + 4,
                        &l.to_be_bytes(),
                    ));
                }
                out.push(put(k, format!("{pn}: first TLV type to `rtpo`"), tlv + 8, b"rtpo"));
            }
        }
        for (ci, &c) in p.constructors.iter().enumerate() {
            let cn = format!("{pn} constructor {}", ci + 1);
            for t in [0u8, 1, 2, 3, 4, 0xff] {
                out.push(put(k, format!("{cn}: type to {t}"), c, &[t]));
            }
            for r in [0u8, 1, 2, 14, 15, 0x7f, 0x80, 0xfe, 0xff] {
                out.push(put(
                    k,
                    format!("{cn}: track ref / immediate length to {r:#x}"),
                    c + 1,
                    &[r],
                ));
            }
            let len = be16(d, c + 2);
            for l in [0u16, len.wrapping_add(1), 0x7fff, 0xffff] {
                out.push(put(k, format!("{cn}: length to {l:#x}"), c + 2, &l.to_be_bytes()));
            }
            let n = be32(d, c + 4);
            for v in [
                0u32,
                1,
                n.wrapping_sub(1),
                n.wrapping_add(1),
                0x7fff_ffff,
                0x8000_0000,
                0xffff_ffff,
            ] {
                out.push(put(
                    k,
                    format!("{cn}: sample number to {v:#x}"),
                    c + 4,
                    &v.to_be_bytes(),
                ));
            }
            let off = be32(d, c + 8);
            for v in [
                off.wrapping_add(u32::from(len)),
                off.wrapping_add(1),
                0x7fff_ffff,
                0xffff_fff0,
                0xffff_ffff,
            ] {
                out.push(put(k, format!("{cn}: offset to {v:#x}"), c + 8, &v.to_be_bytes()));
            }
            for (field, at) in [("bytes per block", c + 12), ("samples per block", c + 14)] {
                for v in [0u16, 1, 2, 3, 0x100, 0xffff] {
                    out.push(put(k, format!("{cn}: {field} to {v:#x}"), at, &v.to_be_bytes()));
                }
            }
            // And a whole random constructor now and then.
            if rng.below(4) == 0 {
                let bytes: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
                out.push(put(k, format!("{cn}: random bytes"), c, &bytes));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Running a variant.

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// The movie did not open: a typed error.
    open_error: bool,
    packets: u64,
    packet_errors: u64,
}

/// Everything a caller can do with untrusted bytes, checking that every
/// packet's payload lies inside the data.
fn exercise_checked(data: &[u8]) -> Result<Outcome, String> {
    loader::exercise(data);
    let movie = match Movie::from_bytes(data.to_vec()) {
        Ok(m) => m,
        Err(e) => {
            // Errors must at least print.
            let _ = e.to_string();
            return Ok(Outcome {
                open_error: true,
                ..Outcome::default()
            });
        }
    };
    let _ = movie.sdp().len();
    let mut out = Outcome::default();
    let check = |p: &Packet, out: &mut Outcome| -> Result<(), String> {
        for s in &p.payload {
            if s.end() > data.len() as u64 {
                return Err(format!(
                    "packet seq {} of track {} has span {}+{} past the end of the {}-byte data",
                    p.sequence,
                    p.track_id,
                    s.offset,
                    s.len,
                    data.len()
                ));
            }
            let _ = movie.slice(*s);
        }
        out.packets += 1;
        Ok(())
    };
    let ids: Vec<u32> = movie.hint_tracks().map(|t| t.id).collect();
    for &id in &ids {
        for p in movie
            .packets(id)
            .map_err(|e| format!("listed hint track {id} has no cursor: {e}"))?
        {
            match p {
                Ok(p) => check(&p, &mut out)?,
                Err(e) => {
                    let _ = e.to_string();
                    out.packet_errors += 1;
                }
            }
        }
    }
    // Merged, after seeking into the middle.
    let mut all = movie.all_packets();
    all.seek((movie.duration_secs().clamp(0.0, 1e6) * 0.3e9) as i64);
    for p in all.flatten() {
        let mut scratch = Outcome::default();
        check(&p, &mut scratch)?;
    }
    Ok(out)
}

/// Runs one variant on this thread: the outcome, or why it failed.
fn run_variant(index: usize, v: &Variant, original: &[u8]) -> Result<Outcome, String> {
    let data = v.apply(original);
    let limit = allocation_limit(data.len());
    VARIANT.with(|c| c.set(index));
    LARGEST.with(|c| c.set(0));
    LIMIT.with(|c| c.set(limit));
    let result = panic::catch_unwind(AssertUnwindSafe(|| exercise_checked(&data)));
    LIMIT.with(|c| c.set(0));
    let largest = LARGEST.with(Cell::get);
    let outcome = match result {
        Ok(r) => r?,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            let at = PANIC_AT.with(|p| p.take()).unwrap_or_default();
            return Err(format!("panicked at {at}: {msg}"));
        }
    };
    if largest > limit {
        return Err(format!(
            "allocated {largest} bytes at once from a {}-byte input (limit {limit})",
            data.len()
        ));
    }
    Ok(outcome)
}

thread_local! {
    /// Where the last panic on this thread happened, from the panic hook.
    static PANIC_AT: Cell<Option<String>> = const { Cell::new(None) };
}

const WORKER_NAME: &str = "corruption-worker";

/// Keeps expected-to-be-caught panics of the workers quiet, but remembers
/// where they happened; other threads report as usual.
fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(WORKER_NAME) {
            let at = info.location().map(|l| l.to_string());
            PANIC_AT.with(|p| p.set(at));
        } else {
            default(info);
        }
    }));
}

fn sample() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp4");
    std::fs::read(path).expect("media/sample.mp4 is committed")
}

fn seed() -> u64 {
    std::env::var("CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2024)
}

/// What the workers share with the watchdog.
struct Board {
    variants: Vec<Variant>,
    original: Vec<u8>,
    epoch: Instant,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Per worker slot: the variant running and when it started (ms since
    /// `epoch` plus one; 0 when idle).
    running: Vec<(AtomicUsize, AtomicU64)>,
    results: Mutex<Vec<(usize, Result<Outcome, String>)>>,
}

/// Hung variants tolerated before giving up: each leaves a thread spinning.
const MAX_HANGS: usize = 3;

/// Runs variants in worker slot `slot` until none are left.
fn spawn_worker(board: &Arc<Board>, slot: usize) {
    let board = board.clone();
    // Detached, not scoped: a stuck worker must not keep the watchdog from
    // reporting it.
    std::thread::Builder::new()
        .name(WORKER_NAME.into())
        .spawn(move || loop {
            let i = board.next.fetch_add(1, Ordering::Relaxed);
            if i >= board.variants.len() {
                break;
            }
            let (index, started) = &board.running[slot];
            index.store(i, Ordering::Relaxed);
            started.store(board.epoch.elapsed().as_millis() as u64 + 1, Ordering::Release);
            let r = run_variant(i, &board.variants[i], &board.original);
            started.store(0, Ordering::Release);
            board.results.lock().unwrap().push((i, r));
            board.done.fetch_add(1, Ordering::Release);
        })
        .unwrap();
}

#[test]
fn damaged_sample_yields_packets_or_errors() {
    let original = sample();
    let variants = variants(&original, seed());

    if let Some(only) = std::env::var("CORRUPTION_ONLY")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        let v = &variants[only];
        println!("variant #{only} ({:?}): {}", v.kind, v.what);
        let data = v.apply(&original);
        LARGEST.with(|c| c.set(0));
        let r = exercise_checked(&data);
        println!("{r:?}; largest allocation {} bytes", LARGEST.with(Cell::get));
        return;
    }

    install_panic_hook();
    let board = Arc::new(Board {
        running: (0..MAX_HANGS + WORKERS)
            .map(|_| (AtomicUsize::new(0), AtomicU64::new(0)))
            .collect(),
        results: Mutex::new(Vec::with_capacity(variants.len())),
        variants,
        original,
        epoch: Instant::now(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let variants = &board.variants;
    let epoch = board.epoch;
    let mut slots: Vec<usize> = (0..WORKERS).collect();
    for &slot in &slots {
        spawn_worker(&board, slot);
    }

    // The watchdog: a variant that runs too long is recorded as a hang and
    // its slot is replaced, so that one run reports several.
    let hang = hang_bound();
    let mut hung = Vec::new();
    while board.done.load(Ordering::Acquire) + hung.len() < variants.len() {
        std::thread::sleep(Duration::from_millis(50));
        let now = epoch.elapsed().as_millis() as u64;
        for slot in slots.iter_mut() {
            let (index, started) = &board.running[*slot];
            let started = started.load(Ordering::Acquire);
            if started == 0 || now.saturating_sub(started) <= hang.as_millis() as u64 {
                continue;
            }
            hung.push(index.load(Ordering::Relaxed));
            if hung.len() >= MAX_HANGS {
                break;
            }
            let fresh = WORKERS + hung.len() - 1;
            *slot = fresh;
            spawn_worker(&board, fresh);
        }
        if hung.len() >= MAX_HANGS {
            break;
        }
    }
    let elapsed = epoch.elapsed();

    let results = std::mem::take(&mut *board.results.lock().unwrap());
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for v in variants.iter() {
        *by_kind.entry(v.kind).or_default() += 1;
    }
    let (mut open_errors, mut streams, mut with_packet_errors, mut packets) = (0, 0, 0, 0u64);
    let mut failures = Vec::new();
    for (i, r) in results {
        match r {
            Ok(o) if o.open_error => open_errors += 1,
            Ok(o) => {
                streams += 1;
                with_packet_errors += usize::from(o.packet_errors > 0);
                packets += o.packets;
            }
            Err(why) => failures.push((i, why)),
        }
    }
    for i in hung {
        failures.push((i, format!("ran for over {hang:?}: a hang")));
    }
    failures.sort();
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
    println!(
        "corruption: {} variants ({}) in {:.1} s: {open_errors} open errors, {streams} streams \
         ({with_packet_errors} with bad packets, {packets} packets), {} failures",
        variants.len(),
        kinds.join(", "),
        elapsed.as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        let mut report = String::new();
        for (i, why) in failures.iter().take(10) {
            let v = &variants[*i];
            report.push_str(&format!("\n  #{i} {:?}: {}\n      {why}", v.kind, v.what));
        }
        panic!(
            "{} of {} damaged variants failed (rerun one with CORRUPTION_ONLY=N):{report}",
            failures.len(),
            variants.len()
        );
    }
}

/// The pristine sample must stream; otherwise the variants prove nothing.
#[test]
fn pristine_sample_streams() {
    let d = sample();
    let o = exercise_checked(&d).unwrap();
    assert!(!o.open_error && o.packets > 100 && o.packet_errors == 0, "{o:?}");
    assert!(loader::exercise(&d) > 100);
}
