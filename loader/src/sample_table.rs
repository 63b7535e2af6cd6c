//! Sample tables (`stbl`): where each sample lives, how long it is, when it
//! is decoded and presented, and which samples are sync samples.
//!
//! The run-length tables are decoded once at open into small vectors that
//! allow random access by sample number and by time. For tracks whose samples
//! have individual sizes (`stsz` with a table), each sample's file offset is
//! precomputed too: the table's size in the file bounds that allocation. Tracks
//! with one constant sample size (QuickTime PCM audio, where a "sample" can be
//! a single byte) are located arithmetically from the chunk table instead.

use crate::atom::{be_u32, be_u64, Atom, Atoms, Reader};
use crate::error::{Error, Result};
use crate::fourcc::{kind, FourCc};

/// One chunk: a run of consecutive samples stored together.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// 0-based number of the first sample in this chunk.
    first_sample: u32,
    samples: u32,
    offset: u64,
    /// 1-based sample description index.
    description: u32,
}

/// `stts`: a run of samples with the same decode duration.
#[derive(Debug, Clone, Copy)]
struct TimeRun {
    first_sample: u32,
    first_time: u64,
    count: u32,
    delta: u32,
}

/// `ctts`: a run of samples with the same composition offset.
#[derive(Debug, Clone, Copy)]
struct CompositionRun {
    first_sample: u32,
    count: u32,
    offset: i32,
}

#[derive(Debug, Clone)]
enum Sizes {
    Constant(u32),
    /// Individual sizes, with each sample's precomputed file offset.
    Table {
        sizes: Vec<u32>,
        offsets: Vec<u64>,
    },
}

/// One entry of `stsd`: its format and where the entry's bytes are.
#[derive(Debug, Clone, Copy)]
pub struct SampleDescription {
    pub format: FourCc,
    /// Absolute offset of the entry (its size field) and its length.
    pub offset: u64,
    pub len: u64,
}

/// A decoded `stbl`.
#[derive(Debug, Clone)]
pub struct SampleTable {
    count: u32,
    sizes: Sizes,
    /// Every chunk, for tracks with one constant sample size (located
    /// arithmetically, and what compressed-sound constructors address).
    chunks: Vec<Chunk>,
    /// For tracks with a size table: (first sample, 1-based description
    /// index) wherever the description changes.
    description_runs: Vec<(u32, u32)>,
    times: Vec<TimeRun>,
    compositions: Vec<CompositionRun>,
    /// 0-based numbers of the sync samples, ascending; `None` when the track
    /// has no `stss`, which means every sample is a sync sample.
    sync: Option<Vec<u32>>,
    pub descriptions: Vec<SampleDescription>,
    /// Sum of all decode durations, in the track's timescale.
    pub total_duration: u64,
}

impl SampleTable {
    /// Decodes the `stbl` box `stbl` of `data`.
    pub fn parse(data: &[u8], stbl: &Atom, path: &str) -> Result<SampleTable> {
        let mut found: [Option<Atom>; 8] = [None; 8];
        const KINDS: [FourCc; 8] = [
            kind::STSD,
            kind::STTS,
            kind::CTTS,
            kind::STSS,
            kind::STSC,
            kind::STSZ,
            kind::STCO,
            kind::CO64,
        ];
        for atom in Atoms::children(data, stbl, path) {
            let atom = atom?;
            if let Some(i) = KINDS.iter().position(|k| *k == atom.kind) {
                found[i].get_or_insert(atom);
            }
        }
        let [stsd, stts, ctts, stss, stsc, stsz, stco, co64] = found;
        let need = |a: Option<Atom>, k: FourCc| {
            a.ok_or_else(|| Error::Missing {
                path: path.to_owned(),
                kind: k,
            })
        };
        let sub = |k: FourCc| format!("{path}/{k}");

        let descriptions = parse_stsd(data, &need(stsd, kind::STSD)?, &sub(kind::STSD))?;
        let (times, total_duration) = parse_stts(data, &need(stts, kind::STTS)?, &sub(kind::STTS))?;
        let compositions = match ctts {
            Some(a) => parse_ctts(data, &a, &sub(kind::CTTS))?,
            None => Vec::new(),
        };
        let sync = match stss {
            Some(a) => Some(parse_stss(data, &a, &sub(kind::STSS))?),
            None => None,
        };
        let (constant, count, size_table) = parse_stsz(data, &need(stsz, kind::STSZ)?, &sub(kind::STSZ))?;
        let chunk_offsets = match (stco, co64) {
            (Some(a), _) => ChunkOffsets::parse(data, &a, &sub(kind::STCO), 4)?,
            (None, Some(a)) => ChunkOffsets::parse(data, &a, &sub(kind::CO64), 8)?,
            (None, None) => {
                return Err(Error::Missing {
                    path: path.to_owned(),
                    kind: kind::STCO,
                })
            }
        };
        let stsc = need(stsc, kind::STSC)?;
        let stsc_path = sub(kind::STSC);
        let mut chunks = Vec::new();
        let mut description_runs: Vec<(u32, u32)> = Vec::new();
        let sizes = match size_table {
            None => {
                parse_stsc(data, &stsc, &stsc_path, &chunk_offsets, count, |c| chunks.push(c))?;
                Sizes::Constant(constant)
            }
            // Each sample's offset is computed here, so the chunks themselves
            // need not be kept (ffmpeg writes one chunk per sample: that would
            // be 24 bytes a sample); only where the description changes.
            Some(table) => {
                let sizes: Vec<u32> = table.chunks_exact(4).map(|b| be_u32(b, 0)).collect();
                let mut offsets = Vec::with_capacity(sizes.len());
                parse_stsc(data, &stsc, &stsc_path, &chunk_offsets, count, |c| {
                    if description_runs.last().map(|r| r.1) != Some(c.description) {
                        description_runs.push((c.first_sample, c.description));
                    }
                    let mut at = c.offset;
                    for s in c.first_sample..c.first_sample + c.samples {
                        let Some(&size) = sizes.get(s as usize) else { return };
                        offsets.push(at);
                        at = at.saturating_add(u64::from(size));
                    }
                })?;
                Sizes::Table { sizes, offsets }
            }
        };
        Ok(SampleTable {
            count,
            sizes,
            chunks,
            description_runs,
            times,
            compositions,
            sync,
            descriptions,
            total_duration,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// File offset and size of 0-based sample `n`, if the tables place it.
    #[inline]
    pub fn locate(&self, n: u32) -> Option<(u64, u32)> {
        match &self.sizes {
            Sizes::Table { sizes, offsets } => {
                let i = n as usize;
                Some((*offsets.get(i)?, *sizes.get(i)?))
            }
            Sizes::Constant(size) => {
                if n >= self.count {
                    return None;
                }
                let chunk = self.chunk_of(n)?;
                // A damaged `co64` can put a chunk at the top of the 64-bit
                // range, past which its later samples cannot be placed.
                let offset = chunk
                    .offset
                    .checked_add(u64::from(n - chunk.first_sample) * u64::from(*size))?;
                Some((offset, *size))
            }
        }
    }

    fn chunk_index(&self, n: u32) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.first_sample <= n).checked_sub(1)?;
        let c = &self.chunks[i];
        (n - c.first_sample < c.samples).then_some(i)
    }

    fn chunk_of(&self, n: u32) -> Option<&Chunk> {
        self.chunk_index(n).map(|i| &self.chunks[i])
    }

    /// For compressed QuickTime sound (tracks with one constant sample size:
    /// the only ones that keep their chunks), where hint constructors address
    /// bytes through bytes-per-block and samples-per-block: the byte offset of
    /// sample `n` and the bytes from there to the end of its chunk, together
    /// with the index of that chunk (so a read may continue in the next one).
    pub(crate) fn compressed_position(
        &self,
        n: u32,
        bytes_per_block: u32,
        samples_per_block: u32,
    ) -> Option<(u64, u64, usize)> {
        let i = self.chunk_index(n)?;
        let c = &self.chunks[i];
        let spb = u64::from(samples_per_block.max(1));
        let bpb = u64::from(bytes_per_block.max(1));
        let into = u64::from(n - c.first_sample) * bpb / spb;
        let chunk_bytes = u64::from(c.samples) * bpb / spb;
        // Saturating: a damaged `co64` offset near 2^64 must fail the caller's
        // check against the file length, not overflow.
        Some((c.offset.saturating_add(into), chunk_bytes - into.min(chunk_bytes), i))
    }

    /// Start and byte length of chunk `i` for compressed sound, as above.
    pub(crate) fn compressed_chunk(
        &self,
        i: usize,
        bytes_per_block: u32,
        samples_per_block: u32,
    ) -> Option<(u64, u64)> {
        let c = self.chunks.get(i)?;
        let len = u64::from(c.samples) * u64::from(bytes_per_block.max(1)) / u64::from(samples_per_block.max(1));
        Some((c.offset, len))
    }

    /// 1-based sample description index of 0-based sample `n`.
    pub fn description_index(&self, n: u32) -> Option<u32> {
        match &self.sizes {
            Sizes::Constant(_) => self.chunk_of(n).map(|c| c.description),
            Sizes::Table { offsets, .. } => {
                if n as usize >= offsets.len() {
                    return None;
                }
                let i = self.description_runs.partition_point(|r| r.0 <= n).checked_sub(1)?;
                Some(self.description_runs[i].1)
            }
        }
    }

    /// Decode time of 0-based sample `n`, in the track's timescale.
    #[inline]
    pub fn decode_time(&self, n: u32) -> Option<u64> {
        let i = self.times.partition_point(|r| r.first_sample <= n).checked_sub(1)?;
        let r = &self.times[i];
        let k = n - r.first_sample;
        (k < r.count).then(|| r.first_time + u64::from(k) * u64::from(r.delta))
    }

    /// As [`decode_time`](Self::decode_time), for callers walking samples in
    /// order: `run` remembers the `stts` run of the last call, so the next
    /// sample's time costs a comparison instead of a binary search.
    #[inline]
    pub(crate) fn decode_time_near(&self, n: u32, run: &mut u32) -> Option<u64> {
        for i in [*run as usize, *run as usize + 1] {
            if let Some(r) = self.times.get(i) {
                if let Some(k) = n.checked_sub(r.first_sample).filter(|&k| k < r.count) {
                    *run = i as u32;
                    return Some(r.first_time + u64::from(k) * u64::from(r.delta));
                }
            }
        }
        let i = self.times.partition_point(|r| r.first_sample <= n).checked_sub(1)?;
        *run = i as u32;
        let r = &self.times[i];
        let k = n - r.first_sample;
        (k < r.count).then(|| r.first_time + u64::from(k) * u64::from(r.delta))
    }

    /// As [`is_sync`](Self::is_sync), for callers walking samples in order:
    /// `at` remembers where the last answer was found in the sync table.
    #[inline]
    pub(crate) fn is_sync_near(&self, n: u32, at: &mut u32) -> bool {
        let Some(s) = &self.sync else { return true };
        let mut i = *at as usize;
        let fits = |i: usize| s.get(i).is_some_and(|&x| x <= n) && s.get(i + 1).is_none_or(|&x| x > n);
        if !fits(i) {
            i = if fits(i + 1) {
                i + 1
            } else {
                s.partition_point(|&x| x <= n).saturating_sub(1)
            };
        }
        *at = i as u32;
        s.get(i) == Some(&n)
    }

    /// Decode duration of 0-based sample `n`.
    pub fn duration(&self, n: u32) -> Option<u32> {
        let i = self.times.partition_point(|r| r.first_sample <= n).checked_sub(1)?;
        let r = &self.times[i];
        (n - r.first_sample < r.count).then_some(r.delta)
    }

    /// Composition offset (presentation minus decode time) of sample `n`.
    pub fn composition_offset(&self, n: u32) -> i32 {
        let Some(i) = self
            .compositions
            .partition_point(|r| r.first_sample <= n)
            .checked_sub(1)
        else {
            return 0;
        };
        let r = &self.compositions[i];
        if n - r.first_sample < r.count {
            r.offset
        } else {
            0
        }
    }

    /// The 0-based number of the first sample whose decode time is at or
    /// after `t`, or `len()` if there is none.
    pub fn first_sample_at_or_after(&self, t: u64) -> u32 {
        let i = self
            .times
            .partition_point(|r| r.first_time + u64::from(r.count) * u64::from(r.delta) <= t);
        let Some(r) = self.times.get(i) else {
            return self.count;
        };
        if t <= r.first_time || r.delta == 0 {
            return r.first_sample.min(self.count);
        }
        let k = (t - r.first_time).div_ceil(u64::from(r.delta));
        (r.first_sample + k.min(u64::from(r.count)) as u32).min(self.count)
    }

    /// The 0-based number of the last sample whose decode time is at or
    /// before `t` (0 when `t` precedes every sample).
    pub fn last_sample_at_or_before(&self, t: u64) -> u32 {
        let after = self.first_sample_at_or_after(t);
        if after < self.count && self.decode_time(after) == Some(t) {
            after
        } else {
            after.saturating_sub(1)
        }
    }

    /// Whether 0-based sample `n` is a sync (key) sample.
    #[inline]
    pub fn is_sync(&self, n: u32) -> bool {
        match &self.sync {
            None => true,
            Some(s) => s.binary_search(&n).is_ok(),
        }
    }

    /// Whether the track lists its sync samples (rather than all being sync).
    pub fn has_sync_table(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether every sample is a sync sample: no `stss`, or one that lists
    /// them all (some muxers write one for audio too).
    pub fn all_sync(&self) -> bool {
        self.sync.as_ref().is_none_or(|s| s.len() >= self.len() as usize)
    }

    /// The last sync sample at or before 0-based sample `n`.
    pub fn sync_at_or_before(&self, n: u32) -> u32 {
        match &self.sync {
            None => n,
            Some(s) => {
                let i = s.partition_point(|&x| x <= n);
                if i == 0 {
                    0
                } else {
                    s[i - 1]
                }
            }
        }
    }
}

fn parse_stsd(data: &[u8], atom: &Atom, path: &str) -> Result<Vec<SampleDescription>> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let count = r.u32()?;
    // Entries are boxes; each is at least 8 bytes, which bounds the count.
    if count as usize > r.remaining() / 8 {
        return Err(r.error(format!("{count} sample descriptions cannot fit")));
    }
    let mut out = Vec::with_capacity(count as usize);
    for entry in Atoms::new(data, r.offset(), atom.end(), path).take(count as usize) {
        let entry = entry?;
        out.push(SampleDescription {
            format: entry.kind,
            offset: entry.offset,
            len: entry.size,
        });
    }
    Ok(out)
}

fn parse_stts(data: &[u8], atom: &Atom, path: &str) -> Result<(Vec<TimeRun>, u64)> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let n = r.u32()?;
    let table = r.table(n, 8)?;
    let mut runs = Vec::with_capacity(n as usize);
    let (mut sample, mut time) = (0u32, 0u64);
    for e in table.chunks_exact(8) {
        let count = be_u32(e, 0);
        let delta = be_u32(e, 4);
        if count == 0 {
            continue;
        }
        let Some(next) = sample.checked_add(count) else {
            return Err(Error::malformed(path, atom.offset, "sample count overflows 32 bits"));
        };
        runs.push(TimeRun {
            first_sample: sample,
            first_time: time,
            count,
            delta,
        });
        sample = next;
        time += u64::from(count) * u64::from(delta);
    }
    Ok((runs, time))
}

fn parse_ctts(data: &[u8], atom: &Atom, path: &str) -> Result<Vec<CompositionRun>> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let n = r.u32()?;
    let table = r.table(n, 8)?;
    let mut runs = Vec::with_capacity(n as usize);
    let mut sample = 0u32;
    for e in table.chunks_exact(8) {
        let count = be_u32(e, 0);
        // Version 0 says unsigned, but writers put negative offsets there too;
        // read both as signed, as other demuxers do.
        let offset = be_u32(e, 4) as i32;
        if count == 0 {
            continue;
        }
        runs.push(CompositionRun {
            first_sample: sample,
            count,
            offset,
        });
        sample = sample.saturating_add(count);
    }
    Ok(runs)
}

fn parse_stss(data: &[u8], atom: &Atom, path: &str) -> Result<Vec<u32>> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let n = r.u32()?;
    let table = r.table(n, 4)?;
    let mut sync: Vec<u32> = table
        .chunks_exact(4)
        .filter_map(|e| be_u32(e, 0).checked_sub(1))
        .collect();
    if !sync.is_sorted() {
        sync.sort_unstable();
    }
    sync.dedup();
    Ok(sync)
}

/// Returns the constant size (0 if there is a table), the sample count, and
/// the raw size table.
fn parse_stsz<'a>(data: &'a [u8], atom: &Atom, path: &str) -> Result<(u32, u32, Option<&'a [u8]>)> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let size = r.u32()?;
    let count = r.u32()?;
    if size != 0 {
        return Ok((size, count, None));
    }
    let table = r.table(count, 4)?;
    Ok((0, count, Some(table)))
}

struct ChunkOffsets<'a> {
    table: &'a [u8],
    width: usize,
}

impl<'a> ChunkOffsets<'a> {
    fn parse(data: &'a [u8], atom: &Atom, path: &str, width: usize) -> Result<Self> {
        let mut r = Reader::body(data, atom, path);
        r.version_flags()?;
        let n = r.u32()?;
        Ok(ChunkOffsets {
            table: r.table(n, width)?,
            width,
        })
    }

    fn len(&self) -> usize {
        self.table.len() / self.width
    }

    fn get(&self, i: usize) -> u64 {
        if self.width == 4 {
            u64::from(be_u32(self.table, i * 4))
        } else {
            be_u64(self.table, i * 8)
        }
    }
}

fn parse_stsc(
    data: &[u8],
    atom: &Atom,
    path: &str,
    offsets: &ChunkOffsets<'_>,
    sample_count: u32,
    mut visit: impl FnMut(Chunk),
) -> Result<()> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    let n = r.u32()?;
    let table = r.table(n, 12)?;
    let entries: Vec<(u32, u32, u32)> = table
        .chunks_exact(12)
        .map(|e| (be_u32(e, 0), be_u32(e, 4), be_u32(e, 8)))
        .collect();
    let chunk_count = offsets.len();
    let mut sample = 0u32;
    let mut previous_first = 0;
    for (i, &(first, per_chunk, description)) in entries.iter().enumerate() {
        if first <= previous_first {
            return Err(Error::malformed(
                path,
                atom.body_start() + 8 + 12 * i as u64,
                format!("first chunk {first} of entry {} does not increase", i + 1),
            ));
        }
        previous_first = first;
        let next_first = entries
            .get(i + 1)
            .map_or(chunk_count, |e| (e.0 as usize).saturating_sub(1));
        let mut c = first as usize - 1;
        while c < next_first.min(chunk_count) && sample < sample_count {
            let samples = per_chunk.min(sample_count - sample);
            visit(Chunk {
                first_sample: sample,
                samples,
                offset: offsets.get(c),
                description,
            });
            sample += samples;
            c += 1;
        }
        if sample >= sample_count {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((body.len() + 12) as u32).to_be_bytes());
        v.extend_from_slice(kind);
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(body);
        v
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    fn stbl(children: &[Vec<u8>]) -> (Vec<u8>, Atom) {
        let body: Vec<u8> = children.concat();
        let mut v = Vec::new();
        v.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        v.extend_from_slice(b"stbl");
        v.extend_from_slice(&body);
        let atom = Atom {
            kind: kind::STBL,
            offset: 0,
            header_len: 8,
            size: v.len() as u64,
        };
        (v, atom)
    }

    fn table(sizes: Option<&[u32]>, constant: u32, count: u32, stsc: &[u32], stco: &[u32]) -> SampleTable {
        let stsz = match sizes {
            Some(s) => {
                let mut w = vec![0, s.len() as u32];
                w.extend_from_slice(s);
                words(&w)
            }
            None => words(&[constant, count]),
        };
        let mut stsc_w = vec![(stsc.len() / 3) as u32];
        stsc_w.extend_from_slice(stsc);
        let mut stco_w = vec![stco.len() as u32];
        stco_w.extend_from_slice(stco);
        let (data, atom) = stbl(&[
            full_box(b"stsd", &words(&[0])),
            full_box(b"stts", &words(&[2, 3, 10, 2, 20])),
            full_box(b"stss", &words(&[2, 1, 4])),
            full_box(b"stsz", &stsz),
            full_box(b"stsc", &words(&stsc_w)),
            full_box(b"stco", &words(&stco_w)),
        ]);
        SampleTable::parse(&data, &atom, "stbl").unwrap()
    }

    #[test]
    fn locates_samples_through_chunks() {
        // Chunks 1-2 hold 2 samples each, chunk 3 holds 1.
        let t = table(
            Some(&[10, 20, 30, 40, 50]),
            0,
            5,
            &[1, 2, 1, 3, 1, 1],
            &[1000, 2000, 3000],
        );
        assert_eq!(t.len(), 5);
        assert_eq!(t.locate(0), Some((1000, 10)));
        assert_eq!(t.locate(1), Some((1010, 20)));
        assert_eq!(t.locate(2), Some((2000, 30)));
        assert_eq!(t.locate(3), Some((2030, 40)));
        assert_eq!(t.locate(4), Some((3000, 50)));
        assert_eq!(t.locate(5), None);
        assert_eq!(t.description_index(0), Some(1));
        assert_eq!(t.description_index(4), Some(1));
        assert_eq!(t.description_index(5), None);
    }

    #[test]
    fn constant_size_samples() {
        let t = table(None, 2, 5, &[1, 3, 1], &[100, 200]);
        assert_eq!(t.locate(2), Some((104, 2)));
        assert_eq!(t.locate(3), Some((200, 2)));
        // Only 2 chunks of 3 cover 5 samples; the table is clamped.
        assert_eq!(t.locate(4), Some((202, 2)));
    }

    #[test]
    fn times_and_sync() {
        let t = table(Some(&[1; 5]), 0, 5, &[1, 5, 1], &[0]);
        let times: Vec<_> = (0..5).map(|n| t.decode_time(n).unwrap()).collect();
        assert_eq!(times, [0, 10, 20, 30, 50]);
        assert_eq!(t.total_duration, 70);
        assert_eq!(t.first_sample_at_or_after(0), 0);
        assert_eq!(t.first_sample_at_or_after(11), 2);
        assert_eq!(t.first_sample_at_or_after(31), 4);
        assert_eq!(t.first_sample_at_or_after(51), 5);
        assert_eq!(t.last_sample_at_or_before(30), 3);
        assert_eq!(t.last_sample_at_or_before(29), 2);
        assert!(t.is_sync(0) && t.is_sync(3) && !t.is_sync(1));
        assert_eq!(t.sync_at_or_before(2), 0);
        assert_eq!(t.sync_at_or_before(4), 3);
    }

    #[test]
    fn non_increasing_stsc_is_an_error() {
        let stsz = words(&[1, 2]);
        let (data, atom) = stbl(&[
            full_box(b"stsd", &words(&[0])),
            full_box(b"stts", &words(&[1, 2, 1])),
            full_box(b"stsz", &stsz),
            full_box(b"stsc", &words(&[2, 2, 1, 1, 2, 1, 1])),
            full_box(b"stco", &words(&[2, 0, 0])),
        ]);
        let err = SampleTable::parse(&data, &atom, "stbl").unwrap_err().to_string();
        assert!(err.contains("stsc"), "{err}");
    }
}
