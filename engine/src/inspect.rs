//! `streamalot inspect FILE`: what the loader sees in a movie.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use loader::{Movie, Packet, PacketFlags, Track};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// The movie to inspect (.mov, .mp4, .3gp).
    file: PathBuf,
    /// Also list the first N packet recipes of the movie, all hint tracks
    /// merged in transmit order.
    #[arg(long, value_name = "N")]
    packets: Option<usize>,
    /// Print one JSON object instead of text: `tracks`, `sdp`, and with
    /// `--packets`, `packets`.
    #[arg(long)]
    json: bool,
}

/// What walking a hint track end to end found.
struct HintStats {
    packets: u64,
    /// Payload plus the 12-byte RTP header of every packet.
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    duration_secs: f64,
}

impl HintStats {
    fn of(movie: &Movie, track: &Track) -> HintStats {
        let mut s = HintStats {
            packets: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            duration_secs: 0.0,
        };
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for p in movie.packets(track.id).expect("hint track listed by the movie") {
            match p {
                Ok(p) => {
                    s.packets += 1;
                    s.bytes += 12 + p.payload_len() as u64;
                    first = first.min(p.transmit_ns);
                    last = last.max(p.transmit_ns);
                }
                Err(e) => {
                    s.errors += 1;
                    s.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        // Over the track's own span when it has one, else the packets' span.
        s.duration_secs = if track.duration > 0 {
            track.duration_secs()
        } else if s.packets > 1 {
            (last - first) as f64 / 1e9
        } else {
            0.0
        };
        s
    }

    fn bitrate_kbit(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.bytes as f64 * 8.0 / self.duration_secs / 1000.0
        } else {
            0.0
        }
    }
}

pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let movie = Movie::open(&args.file)?;
    let stats: Vec<Option<HintStats>> = movie
        .tracks()
        .iter()
        .map(|t| t.is_rtp_hint().then(|| HintStats::of(&movie, t)))
        .collect();
    let packets: Vec<Result<Packet, loader::Error>> = movie.all_packets().take(args.packets.unwrap_or(0)).collect();
    let out = if args.json {
        let mut v = to_json(&movie, &stats, &packets);
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "packets" || args.packets.is_some());
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        to_text(args, &movie, &stats, &packets)
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    match stdout.write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn flags(p: &Packet) -> String {
    let mut s = String::new();
    for (f, c) in [
        (PacketFlags::KEY, 'K'),
        (PacketFlags::B_FRAME, 'B'),
        (PacketFlags::REPEAT, 'R'),
    ] {
        s.push(if p.flags.contains(f) { c } else { '-' });
    }
    s
}

fn to_text(
    args: &Args,
    movie: &Movie,
    stats: &[Option<HintStats>],
    packets: &[Result<Packet, loader::Error>],
) -> String {
    let mut o = String::new();
    let hints = stats.iter().flatten().count();
    let _ = writeln!(
        o,
        "{}: {:.3} s, {} tracks ({} RTP hint), {} bytes",
        args.file.display(),
        movie.duration_secs(),
        movie.tracks().len(),
        hints,
        movie.data().len()
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>5}  {:<7} {:<6} {:>9} {:>10} {:>8}  {:<9} {:>8} {:>12}",
        "ID", "handler", "codec", "timescale", "duration", "samples", "hints", "packets", "bitrate"
    );
    for (t, s) in movie.tracks().iter().zip(stats) {
        let codec = t.codec.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        let _ = write!(
            o,
            "{:>5}  {:<7} {:<6} {:>9} {:>8.3} s {:>8}",
            t.id,
            t.handler.to_string(),
            codec,
            t.timescale,
            t.duration_secs(),
            t.samples.len()
        );
        if let Some(s) = s {
            let refs: Vec<String> = t.references.iter().map(u32::to_string).collect();
            let _ = write!(
                o,
                "  {:<9} {:>8} {:>7.1} kbit/s",
                format!("from {}", if refs.is_empty() { "-".into() } else { refs.join(",") }),
                s.packets,
                s.bitrate_kbit()
            );
            if let Some(e) = &s.first_error {
                let _ = write!(o, "  ({} bad packets; first: {e})", s.errors);
            }
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o);
    for t in movie.hint_tracks() {
        let rtp = t.rtp.expect("hint tracks have RTP info");
        let _ = writeln!(
            o,
            "hint track {}: RTP clock {} Hz, max packet {} bytes, timestamp offset {}, sequence offset {}",
            t.id, rtp.rtp_timescale, rtp.max_packet_size, rtp.timestamp_offset, rtp.sequence_offset
        );
    }
    let _ = writeln!(o, "\nSDP:");
    for line in movie.sdp().lines() {
        let _ = writeln!(o, "  {line}");
    }
    if args.packets.is_some() {
        let _ = writeln!(o, "\nPackets (all hint tracks, transmit order):");
        let _ = writeln!(
            o,
            "{:>12} {:>5} {:>6} {:>11} {:>1} {:>3} {:>5} {:<3}  ranges (offset+length)",
            "time s", "track", "seq", "timestamp", "M", "PT", "size", "KBR"
        );
        for p in packets {
            match p {
                Ok(p) => {
                    let ranges: Vec<String> = p.payload.iter().map(|s| format!("{}+{}", s.offset, s.len)).collect();
                    let _ = writeln!(
                        o,
                        "{:>12.6} {:>5} {:>6} {:>11} {:>1} {:>3} {:>5} {:<3}  {}",
                        p.transmit_ns as f64 / 1e9,
                        p.track_id,
                        p.sequence,
                        p.timestamp,
                        u8::from(p.marker),
                        p.payload_type,
                        p.payload_len(),
                        flags(p),
                        ranges.join(" ")
                    );
                }
                Err(e) => {
                    let _ = writeln!(o, "  error: {e}");
                }
            }
        }
    }
    o
}

fn to_json(movie: &Movie, stats: &[Option<HintStats>], packets: &[Result<Packet, loader::Error>]) -> Value {
    let tracks: Vec<Value> = movie
        .tracks()
        .iter()
        .zip(stats)
        .map(|(t, s)| {
            let mut v = json!({
                "id": t.id,
                "handler": t.handler.to_string(),
                "codec": t.codec.map(|c| c.to_string()),
                "timescale": t.timescale,
                "duration": t.duration_secs(),
                "samples": t.samples.len(),
            });
            if let (Some(s), Some(rtp)) = (s, t.rtp) {
                let o = v.as_object_mut().unwrap();
                o.insert("references".into(), json!(t.references));
                o.insert("packets".into(), json!(s.packets));
                o.insert("bytes".into(), json!(s.bytes));
                o.insert("bitrate_kbit".into(), json!(s.bitrate_kbit()));
                o.insert("bad_packets".into(), json!(s.errors));
                o.insert("rtp_timescale".into(), json!(rtp.rtp_timescale));
                o.insert("max_packet_size".into(), json!(rtp.max_packet_size));
                o.insert("timestamp_offset".into(), json!(rtp.timestamp_offset));
                o.insert("sequence_offset".into(), json!(rtp.sequence_offset));
            }
            v
        })
        .collect();
    let packets: Vec<Value> = packets
        .iter()
        .map(|p| match p {
            Ok(p) => json!({
                "track": p.track_id,
                "time": p.transmit_ns as f64 / 1e9,
                "seq": p.sequence,
                "timestamp": p.timestamp,
                "marker": p.marker,
                "pt": p.payload_type,
                "size": p.payload_len(),
                "key": p.flags.contains(PacketFlags::KEY),
                "b_frame": p.flags.contains(PacketFlags::B_FRAME),
                "repeat": p.flags.contains(PacketFlags::REPEAT),
                "ranges": p.payload.iter().map(|s| json!([s.offset, s.len])).collect::<Vec<_>>(),
            }),
            Err(e) => json!({ "error": e.to_string() }),
        })
        .collect();
    json!({
        "duration": movie.duration_secs(),
        "timescale": movie.timescale,
        "tracks": tracks,
        "sdp": movie.sdp(),
        "packets": packets,
    })
}
