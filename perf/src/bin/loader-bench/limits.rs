//! The raw limits: loops that touch the bytes the loader must touch, with as
//! little logic as the format allows. Each is timed on the same mapping, in
//! the same run, as the loader it is compared with.

use std::hint::black_box;

/// How many hint samples ahead the prefetching walk asks for. Hint samples
/// lie between media chunks all over the file, so each one is a cache (and
/// often TLB) miss; 8 samples of lead covers the miss at this walk's speed.
pub const PREFETCH_AHEAD: usize = 8;

/// Sums `bytes` as native-endian 64-bit words: memory bandwidth, with no
/// dependency between loads that would keep the CPU from running ahead.
pub fn sum_words(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
    words.fold(tail, |a, w| {
        a.wrapping_add(u64::from_ne_bytes(w.try_into().expect("8-byte chunk")))
    })
}

/// Every byte of every hint sample (`(offset, len)` in `data`), summed.
#[inline(never)] // one symbol per loop in profiles
pub fn scan_samples(data: &[u8], samples: &[(usize, usize)]) -> u64 {
    samples
        .iter()
        .fold(0u64, |acc, &(o, l)| acc.wrapping_add(sum_words(&data[o..o + l])))
}

/// The decode-only walk: every packet entry of every hint sample, reading
/// the fields a recipe is made from (relative time, header bits, sequence,
/// flags, and each constructor's type, length, sample number and offset),
/// knowing only where things are. No validation of constructors, no
/// sample-table lookups, no spans built, no recipe returned. With `AHEAD > 0`
/// it prefetches the sample that far ahead. Returns (packets, a fold).
#[inline(never)] // one symbol per loop in profiles
pub fn walk_entries<const AHEAD: usize>(data: &[u8], samples: &[(usize, usize)]) -> (u64, u64) {
    let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let be32 = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (mut packets, mut acc) = (0u64, 0u64);
    for (i, &(o, l)) in samples.iter().enumerate() {
        if AHEAD > 0 {
            if let Some(&(next, len)) = samples.get(i + AHEAD) {
                prefetch(data, next, len);
            }
        }
        let s = &data[o..o + l];
        if s.len() < 4 {
            continue;
        }
        let mut pos = 4;
        for _ in 0..be16(s, 0) {
            let Some(h) = s.get(pos..pos + 12) else { break };
            acc = acc.wrapping_add(u64::from(be32(h, 0)) ^ u64::from(be16(h, 4)) ^ u64::from(be16(h, 6)) << 16);
            let flags = be16(h, 8);
            let constructors = usize::from(be16(h, 10));
            pos += 12;
            if flags & 0x4 != 0 {
                // Extra-information TLVs: skipped by their total length.
                let Some(tlv) = s.get(pos..pos + 4) else { break };
                pos += be32(tlv, 0) as usize;
            }
            let Some(table) = s.get(pos..pos + constructors * 16) else {
                break;
            };
            for c in table.chunks_exact(16) {
                acc = acc.wrapping_add(
                    u64::from(c[0]) ^ u64::from(be16(c, 2)) ^ u64::from(be32(c, 4)) ^ u64::from(be32(c, 8)),
                );
            }
            pos += constructors * 16;
            packets += 1;
        }
    }
    black_box(acc);
    (packets, acc)
}

/// Asks the CPU to bring `data[offset..offset + len]` into the cache.
#[inline(always)]
fn prefetch(data: &[u8], offset: usize, len: usize) {
    let end = offset.saturating_add(len).min(data.len());
    let mut at = offset & !63;
    while at < end {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `at` is inside `data`, and a prefetch is only a hint: it
        // never faults and makes no memory visible to the program.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast());
        }
        at += 64;
    }
}
