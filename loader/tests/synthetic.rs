//! A movie built by hand, byte by byte, to exercise the parts of the hint
//! format that ffmpeg's hinter never writes: 64-bit box sizes and a size-0
//! `mdat`, `co64`, `tsro`/`snro`, negative relative transmit times, `rtpo`
//! TLVs, repeat and B-frame flags, hint samples without packets, constructors
//! that read the hint track itself and sample descriptions, QuickTime
//! compressed-sound constructors that cross a chunk boundary, an empty edit,
//! and the movie-level SDP.
//!
//! Every expected value below is worked out from the construction, by hand.

use loader::{Movie, Packet, PacketFlags};

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0; 4];
    b.extend_from_slice(body);
    boxed(kind, &b)
}

fn be32(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

// The media data.
const VIDEO_SIZES: [u32; 4] = [100, 50, 60, 70];
const SOUND_SAMPLES: u32 = 1000; // QuickTime sound: sample size 1, 2 bytes per block
const SOUND_CHUNK_BYTES: usize = 1000; // 500 samples of 2 bytes
const GAP: usize = 16; // between the two sound chunks, so they are not adjacent

fn video_bytes() -> Vec<u8> {
    (0..VIDEO_SIZES.iter().sum::<u32>()).map(|i| (i % 251) as u8).collect()
}

fn sound_chunk(which: u8) -> Vec<u8> {
    (0..SOUND_CHUNK_BYTES)
        .map(|i| (i as u8).wrapping_mul(3) ^ which)
        .collect()
}

fn ctor_sample(track_ref: i8, len: u16, sample: u32, offset: u32, bpb: u16, spb: u16) -> Vec<u8> {
    let mut c = vec![2, track_ref as u8];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&sample.to_be_bytes());
    c.extend_from_slice(&offset.to_be_bytes());
    c.extend_from_slice(&bpb.to_be_bytes());
    c.extend_from_slice(&spb.to_be_bytes());
    c
}

fn ctor_immediate(bytes: &[u8]) -> Vec<u8> {
    let mut c = vec![1, bytes.len() as u8];
    c.extend_from_slice(bytes);
    c.resize(16, 0);
    c
}

fn ctor_description(track_ref: i8, len: u16, index: u32, offset: u32) -> Vec<u8> {
    let mut c = vec![3, track_ref as u8];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&index.to_be_bytes());
    c.extend_from_slice(&offset.to_be_bytes());
    c.extend_from_slice(&[0; 4]);
    c
}

struct Entry {
    relative: i32,
    marker: bool,
    pt: u8,
    seq: u16,
    flags: u16,
    rtpo: Option<i32>,
    ctors: Vec<Vec<u8>>,
}

fn hint_sample(packets: &[Entry], extra: &[u8]) -> Vec<u8> {
    let mut s = (packets.len() as u16).to_be_bytes().to_vec();
    s.extend_from_slice(&[0, 0]);
    for p in packets {
        s.extend_from_slice(&p.relative.to_be_bytes());
        s.extend_from_slice(&[0x80, (u8::from(p.marker) << 7) | p.pt]);
        s.extend_from_slice(&p.seq.to_be_bytes());
        let flags = p.flags | if p.rtpo.is_some() { 4 } else { 0 };
        s.extend_from_slice(&flags.to_be_bytes());
        s.extend_from_slice(&(p.ctors.len() as u16).to_be_bytes());
        if let Some(o) = p.rtpo {
            s.extend_from_slice(&be32(&[16, 12]));
            s.extend_from_slice(b"rtpo");
            s.extend_from_slice(&o.to_be_bytes());
        }
        for c in &p.ctors {
            s.extend_from_slice(c);
        }
    }
    s.extend_from_slice(extra);
    s
}

/// Offset of the extra data in video hint sample 3: header (4), one packet
/// entry (12) with two constructors (32).
const SELF_REF_OFFSET: u32 = 4 + 12 + 32;

fn video_hints() -> Vec<Vec<u8>> {
    let e = |relative, marker, seq, flags, rtpo, ctors| Entry {
        relative,
        marker,
        pt: 96,
        seq,
        flags,
        rtpo,
        ctors,
    };
    vec![
        // Sample 1 (t = 0): two packets of video sample 1 (a sync sample).
        hint_sample(
            &[
                e(
                    -300,
                    false,
                    1,
                    0,
                    None,
                    vec![ctor_immediate(&[0xaa, 0xbb]), ctor_sample(0, 60, 1, 0, 1, 1)],
                ),
                e(
                    0,
                    true,
                    2,
                    0x1,
                    Some(1500),
                    vec![ctor_sample(0, 40, 1, 60, 1, 1), ctor_description(0, 4, 1, 8)],
                ),
            ],
            &[],
        ),
        // Sample 2 (t = 3000): no packets at all.
        hint_sample(&[], &[]),
        // Sample 3 (t = 6000): video sample 2 (not sync), B-frame, plus five
        // bytes carried in the hint sample itself.
        hint_sample(
            &[e(
                0,
                true,
                3,
                0x2,
                None,
                vec![
                    ctor_sample(0, 50, 2, 0, 1, 1),
                    ctor_sample(-1, 5, 3, SELF_REF_OFFSET, 1, 1),
                ],
            )],
            b"HELLO",
        ),
        // Sample 4 (t = 9000): video sample 3 (sync).
        hint_sample(&[e(0, true, 4, 0, None, vec![ctor_sample(0, 60, 3, 0, 1, 1)])], &[]),
    ]
}

fn sound_hints() -> Vec<Vec<u8>> {
    let e = |seq, ctors| Entry {
        relative: 0,
        marker: true,
        pt: 97,
        seq,
        flags: 0,
        rtpo: None,
        ctors,
    };
    vec![
        // Sample 1 (t = 0): six bytes from sound sample 499, which starts 4
        // bytes before the end of chunk 1, so 2 come from chunk 2; then 4
        // bytes at offset 10 of sample 1, i.e. 5 blocks on: sample 6.
        hint_sample(
            &[e(
                100,
                vec![ctor_sample(0, 6, 499, 0, 2, 1), ctor_sample(0, 4, 1, 10, 2, 1)],
            )],
            &[],
        ),
        // Sample 2 (t = 4000, 0.5 s): the first 4 bytes of chunk 1.
        hint_sample(&[e(101, vec![ctor_sample(0, 4, 1, 0, 2, 1)])], &[]),
    ]
}

const VIDEO_STSD_ENTRY: &[u8] = b"\0\0\0\x18avc1\0\0\0\0\0\0\0\x01WXYZ0123";

fn stbl(
    stsd_entry: &[u8],
    stts: &[u32],
    stss: Option<&[u32]>,
    stsz: &[u32],
    stsc: &[u32],
    co64: Option<&[u64]>,
    stco: &[u32],
) -> Vec<u8> {
    let mut b = full(b"stsd", &[be32(&[1]), stsd_entry.to_vec()].concat());
    b.extend(full(b"stts", &be32(&[&[(stts.len() / 2) as u32], stts].concat())));
    if let Some(s) = stss {
        b.extend(full(b"stss", &be32(&[&[s.len() as u32], s].concat())));
    }
    b.extend(full(b"stsz", &be32(stsz)));
    b.extend(full(b"stsc", &be32(&[&[(stsc.len() / 3) as u32], stsc].concat())));
    match co64 {
        Some(c) => {
            let mut body = (c.len() as u32).to_be_bytes().to_vec();
            c.iter().for_each(|o| body.extend_from_slice(&o.to_be_bytes()));
            b.extend(full(b"co64", &body));
        }
        None => b.extend(full(b"stco", &be32(&[&[stco.len() as u32], stco].concat()))),
    }
    boxed(b"stbl", &b)
}

#[allow(clippy::too_many_arguments)]
fn trak(
    id: u32,
    handler: &[u8; 4],
    timescale: u32,
    duration: u32,
    stbl: Vec<u8>,
    edits: &[(u32, i32)],
    hint_ref: Option<u32>,
    sdp: Option<&str>,
) -> Vec<u8> {
    let mut tkhd = be32(&[0, 0, id, 0, duration]);
    tkhd.resize(80, 0);
    let mut b = full(b"tkhd", &tkhd);
    if !edits.is_empty() {
        let mut elst = be32(&[edits.len() as u32]);
        for &(d, m) in edits {
            elst.extend(be32(&[d, m as u32, 0x0001_0000]));
        }
        b.extend(boxed(b"edts", &full(b"elst", &elst)));
    }
    if let Some(r) = hint_ref {
        b.extend(boxed(b"tref", &boxed(b"hint", &be32(&[r]))));
    }
    let mdhd = full(b"mdhd", &be32(&[0, 0, timescale, duration, 0]));
    let hdlr = full(b"hdlr", &[be32(&[0]), handler.to_vec(), vec![0; 13]].concat());
    let minf = boxed(b"minf", &stbl);
    b.extend(boxed(b"mdia", &[mdhd, hdlr, minf].concat()));
    if let Some(text) = sdp {
        b.extend(boxed(b"udta", &boxed(b"hnti", &boxed(b"sdp ", text.as_bytes()))));
    }
    boxed(b"trak", &b)
}

fn rtp_entry(tims: u32, tsro: i32, snro: i32) -> Vec<u8> {
    let mut body = vec![0; 6];
    body.extend_from_slice(&[0, 1, 0, 1, 0, 1]);
    body.extend(be32(&[1450]));
    body.extend(boxed(b"tims", &be32(&[tims])));
    body.extend(boxed(b"tsro", &tsro.to_be_bytes()));
    body.extend(boxed(b"snro", &snro.to_be_bytes()));
    boxed(b"rtp ", &body)
}

/// Where each run of media lies, relative to the start of the media data.
struct Layout {
    video: usize,
    sound1: usize,
    sound2: usize,
    video_hints: Vec<usize>,
    sound_hints: Vec<usize>,
    len: usize,
}

fn layout() -> (Vec<u8>, Layout) {
    let mut data = video_bytes();
    let sound1 = data.len();
    data.extend(sound_chunk(1));
    data.extend(vec![0xee; GAP]);
    let sound2 = data.len();
    data.extend(sound_chunk(2));
    let mut place = |samples: Vec<Vec<u8>>| {
        samples
            .into_iter()
            .map(|s| {
                data.extend(s);
                data.len()
            })
            .collect::<Vec<_>>()
    };
    let video_hint_ends = place(video_hints());
    let sound_hint_ends = place(sound_hints());
    let starts = |ends: &[usize], sizes: Vec<Vec<u8>>| -> Vec<usize> {
        ends.iter().zip(sizes).map(|(e, s)| e - s.len()).collect()
    };
    let len = data.len();
    let l = Layout {
        video: 0,
        sound1,
        sound2,
        video_hints: starts(&video_hint_ends, video_hints()),
        sound_hints: starts(&sound_hint_ends, sound_hints()),
        len,
    };
    (data, l)
}

fn moov(l: &Layout, base: u64) -> Vec<u8> {
    let at = |o: usize| base + o as u64;
    let vh = video_hints();
    let sh = sound_hints();
    let video = trak(
        1,
        b"vide",
        600,
        80,
        stbl(
            VIDEO_STSD_ENTRY,
            &[4, 20],
            Some(&[1, 3]),
            &[&[0, 4][..], &VIDEO_SIZES].concat(),
            &[1, 4, 1],
            Some(&[at(l.video)]),
            &[],
        ),
        &[],
        None,
        None,
    );
    let sound = trak(
        2,
        b"soun",
        8000,
        SOUND_SAMPLES,
        stbl(
            b"\0\0\0\x08twos",
            &[SOUND_SAMPLES, 1],
            None,
            &[1, SOUND_SAMPLES],
            &[1, 500, 1],
            None,
            &[at(l.sound1) as u32, at(l.sound2) as u32],
        ),
        &[],
        None,
        None,
    );
    // Video hints: timescale 90000, an empty edit of 0.5 s, then the media.
    let sizes: Vec<u32> = vh.iter().map(|s| s.len() as u32).collect();
    let video_hint = trak(
        3,
        b"hint",
        90000,
        12000,
        stbl(
            &rtp_entry(90000, 1000, 5),
            &[4, 3000],
            None,
            &[&[0, 4][..], &sizes].concat(),
            &[1, 4, 1],
            Some(&[at(l.video_hints[0])]),
            &[],
        ),
        &[(500, -1), (1000, 0)],
        Some(1),
        Some("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=99\r\n"),
    );
    let sizes: Vec<u32> = sh.iter().map(|s| s.len() as u32).collect();
    let sound_hint = trak(
        4,
        b"hint",
        8000,
        8000,
        stbl(
            &rtp_entry(8000, 0, 0),
            &[2, 4000],
            None,
            &[&[0, 2][..], &sizes].concat(),
            &[1, 2, 1],
            None,
            &[at(l.sound_hints[0]) as u32],
        ),
        &[],
        Some(2),
        None,
    );
    let mut mvhd = be32(&[0, 0, 1000, 1500]);
    mvhd.resize(96, 0);
    let udta = boxed(
        b"udta",
        &boxed(
            b"hnti",
            &boxed(b"rtp ", b"sdp v=0\r\ns=Synthetic\r\na=tool:by hand\r\n"),
        ),
    );
    boxed(
        b"moov",
        &[full(b"mvhd", &mvhd), video, sound, video_hint, sound_hint, udta].concat(),
    )
}

/// ftyp, then `mdat` with a 64-bit size, then `moov`.
fn movie_mdat_first() -> Vec<u8> {
    let (data, l) = layout();
    let ftyp = boxed(b"ftyp", b"qt  \0\0\0\0qt  ");
    let mut f = ftyp.clone();
    f.extend(be32(&[1]));
    f.extend_from_slice(b"mdat");
    f.extend(((data.len() + 16) as u64).to_be_bytes());
    let base = f.len() as u64;
    f.extend(data);
    f.extend(moov(&l, base));
    f
}

/// ftyp, then `moov`, then an `mdat` whose size is 0: "to the end of the file".
fn movie_moov_first() -> Vec<u8> {
    let (data, l) = layout();
    let ftyp = boxed(b"ftyp", b"qt  \0\0\0\0qt  ");
    let moov_len = moov(&l, 0).len();
    let base = (ftyp.len() + moov_len + 8) as u64;
    let mut f = ftyp;
    f.extend(moov(&l, base));
    f.extend(be32(&[0]));
    f.extend_from_slice(b"mdat");
    f.extend(data);
    assert_eq!(f.len() as u64, base + l.len as u64);
    f
}

fn packets(movie: &Movie, id: u32) -> Vec<Packet> {
    movie.packets(id).unwrap().map(|p| p.unwrap()).collect()
}

#[test]
fn every_hint_feature_decodes_as_constructed() {
    for file in [movie_mdat_first(), movie_moov_first()] {
        let movie = Movie::from_bytes(file).unwrap();
        let d = movie.data();
        let (media, l) = layout();
        // Absolute offset of the media data: find the video bytes.
        let base = d.windows(64).position(|w| w == &media[..64]).unwrap();
        let video = &media[l.video..];
        let chunk1 = sound_chunk(1);
        let chunk2 = sound_chunk(2);

        let v = packets(&movie, 3);
        assert_eq!(v.len(), 4, "hint sample 2 holds no packet");
        let ns = |s: f64| (s * 1e9).round() as i64;

        // 0.5 s empty edit; -300 ticks at 90 kHz.
        assert!(
            (v[0].transmit_ns - (ns(0.5) - 3_333_333)).abs() <= 1,
            "{}",
            v[0].transmit_ns
        );
        assert_eq!(v[0].sequence, 1 + 5, "snro");
        assert_eq!(v[0].timestamp, 45_000 + 1000, "edit shift and tsro");
        assert!(!v[0].marker);
        assert_eq!(v[0].payload_type, 96);
        assert_eq!(v[0].flags, PacketFlags::KEY);
        assert_eq!(v[0].payload_bytes(d), [&[0xaa, 0xbb][..], &video[..60]].concat());

        assert_eq!(v[1].transmit_ns, ns(0.5));
        assert_eq!(v[1].sequence, 7);
        assert_eq!(v[1].timestamp, 46_000 + 1500, "rtpo");
        assert!(v[1].marker);
        assert!(v[1].flags.contains(PacketFlags::REPEAT) && v[1].flags.contains(PacketFlags::KEY));
        assert_eq!(
            v[1].payload_bytes(d),
            [&video[60..100], &VIDEO_STSD_ENTRY[8..12]].concat()
        );

        // Hint sample 3 at 6000 ticks: movie time 51000 ticks.
        assert!((v[2].transmit_ns - ns(51_000.0 / 90_000.0)).abs() <= 1);
        assert_eq!(v[2].sequence, 8);
        assert_eq!(v[2].timestamp, 51_000 + 1000);
        assert!(v[2].flags.contains(PacketFlags::B_FRAME));
        assert!(
            !v[2].flags.contains(PacketFlags::KEY),
            "video sample 2 is not a sync sample"
        );
        assert_eq!(v[2].payload_bytes(d), [&video[100..150], b"HELLO"].concat());
        assert_eq!(
            v[2].payload.last().unwrap().offset as usize,
            base + l.video_hints[2] + SELF_REF_OFFSET as usize,
            "the self-reference points into the hint sample"
        );

        assert_eq!(v[3].transmit_ns, ns(0.6));
        assert_eq!(v[3].timestamp, 54_000 + 1000);
        assert!(v[3].flags.contains(PacketFlags::KEY));
        assert_eq!(v[3].payload_bytes(d), video[150..210]);

        // Compressed sound: 2 bytes per block, one sample per block.
        let s = packets(&movie, 4);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].transmit_ns, 0);
        assert_eq!(s[0].sequence, 100);
        assert_eq!(
            s[0].payload_bytes(d),
            [&chunk1[996..1000], &chunk2[..2], &chunk1[10..14]].concat()
        );
        assert_eq!(s[0].payload.len(), 3, "three separate runs of the file");
        assert_eq!(s[1].transmit_ns, ns(0.5));
        assert_eq!(s[1].timestamp, 4000);
        assert_eq!(s[1].payload_bytes(d), chunk1[..4]);
    }
}

#[test]
fn merged_order_and_seek() {
    let movie = Movie::from_bytes(movie_mdat_first()).unwrap();
    let order: Vec<(u32, u16)> = movie
        .all_packets()
        .map(|p| p.unwrap())
        .map(|p| (p.track_id, p.sequence))
        .collect();
    // Ties (both tracks have a packet at 0.5 s) go to the track listed first.
    assert_eq!(order, [(4, 100), (3, 6), (3, 7), (4, 101), (3, 8), (3, 9)]);

    // 0.58 s falls in video hint sample 3 (not a key sample) after sample 2
    // (no packets), so video lands on sample 1 at 0.5 s; the sound lands on
    // its sample at 0.5 s. Both start at 0.5 s.
    let mut all = movie.all_packets();
    assert_eq!(all.seek(580_000_000), 500_000_000);
    let after: Vec<(u32, u16)> = all.map(|p| p.unwrap()).map(|p| (p.track_id, p.sequence)).collect();
    assert_eq!(after, [(3, 6), (3, 7), (4, 101), (3, 8), (3, 9)]);

    // 0.61 s: video sample 4 (0.6 s) is a key sample, and the video's key
    // frames decide where playback starts: 0.6 s. Sound, all sync samples,
    // restarts at its last sample at or before that, 0.5 s.
    let mut all = movie.all_packets();
    assert_eq!(all.seek(610_000_000), 600_000_000);
    let after: Vec<(u32, u16)> = all.map(|p| p.unwrap()).map(|p| (p.track_id, p.sequence)).collect();
    assert_eq!(after, [(4, 101), (3, 9)]);

    let mut video = movie.movie_cursor(&[3]).unwrap();
    assert_eq!(video.seek(&movie, 610_000_000), 600_000_000);
    assert_eq!(video.next_packet(&movie).unwrap().unwrap().sequence, 9);
    assert!(video.next_packet(&movie).is_none());
}

#[test]
fn sdp_keeps_session_text_and_names_tracks() {
    let movie = Movie::from_bytes(movie_moov_first()).unwrap();
    let sdp = movie.sdp();
    let lines: Vec<&str> = sdp.lines().collect();
    assert_eq!(
        lines,
        [
            "v=0",
            "o=- 0 0 IN IP4 0.0.0.0",
            "s=Synthetic",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "a=tool:by hand",
            "a=control:*",
            "a=range:npt=0-1.50000",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
            "a=control:trackID=3",
            "m=audio 0 RTP/AVP 97",
            "a=control:trackID=4",
        ]
    );
    assert!(sdp.ends_with("\r\n") && !sdp.contains("\n\n"));
    let hint = movie.track(3).unwrap();
    assert_eq!(hint.references, [1]);
    let rtp = hint.rtp.unwrap();
    assert_eq!(
        (
            rtp.rtp_timescale,
            rtp.timestamp_offset,
            rtp.sequence_offset,
            rtp.max_packet_size
        ),
        (90000, 1000, 5, 1450)
    );
}

#[test]
fn a_movie_without_hint_tracks_is_its_own_error() {
    let (_, l) = layout();
    let moov = moov(&l, 0);
    // Keep only mvhd and the first trak (video).
    let mvhd_len = u32::from_be_bytes(moov[8..12].try_into().unwrap()) as usize;
    let trak_len = u32::from_be_bytes(moov[8 + mvhd_len..12 + mvhd_len].try_into().unwrap()) as usize;
    let file = boxed(b"moov", &moov[8..8 + mvhd_len + trak_len]);
    let err = Movie::from_bytes(file).unwrap_err();
    assert!(matches!(err, loader::Error::NoHintTracks), "{err}");
}
