//! The command line.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// rtpload: drive an RTSP server with many RTP sessions and measure what
/// viewers would see.
///
/// Each session connects, DESCRIBEs its URL, SETs UP every RTP track of the
/// SDP, PLAYs, receives until its time is up and TEARs DOWN; when the movie
/// ends first it plays it again. Sessions start at --ramp per second, take
/// the URLs in turn, and are spread over one worker thread per core. It works
/// against any RTSP 1.0 server.
///
/// While it runs, stderr shows a progress bar during the ramp-up and then a
/// line a second: active and failed sessions, Mbit/s, packets/s and loss. At
/// the end it prints a percentile table of each histogram (first_packet:
/// PLAY to the first RTP packet; first_key_frame: PLAY's answer to the
/// first packet of a video key frame, H.264 IDR, H.265 IRAP or MPEG-4
/// I-VOP, what a viewer joining a live stream waits for; buffered, with --buffered: PLAY to
/// holding that much media ahead of the wall clock; jitter: RFC 3550 interarrival jitter;
/// lateness: how far behind its own RTP-timestamp schedule each packet
/// arrived, after aligning on the first packet; rtsp_response: request
/// written to response parsed, also per method). With --out it writes
/// rtpload.hlog (HdrHistogram interval log, microseconds), one .hgrm
/// percentile distribution per histogram (milliseconds), latency.svg,
/// summary.json and sessions.csv.
///
/// With --publish FILE, rtpload first publishes FILE (a hinted movie) to the
/// first URL as a live stream (ANNOUNCE, SETUP mode=record, RECORD, packets
/// paced in real time from its hint tracks, TEARDOWN at the end), with
/// Digest or Basic credentials from the URL (rtsp://USER:PASS@HOST/PATH);
/// the sessions then watch the URLs (without the credentials) as viewers.
///
/// Exit status: 0 when every session completed and the limits held; 1 when a
/// session failed or --max-loss or --max-p99-ms was exceeded (the reasons are
/// printed); 2 when the run could not be started.
#[derive(Parser, Debug, Clone)]
#[command(name = "rtpload", version, verbatim_doc_comment)]
pub struct Args {
    /// RTSP URLs to play (rtsp://host[:port]/path); sessions take them in turn
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,

    /// Also play the URLs in FILE, one per line (blank lines and # comments are skipped)
    #[arg(long = "urls", value_name = "FILE")]
    pub urls_file: Option<PathBuf>,

    /// Sessions to run
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1)]
    pub sessions: u32,

    /// New sessions started per second, over all workers, at a steady pace (session i starts
    /// i/R seconds in): `--rate 200` is 200 viewers joining each second
    #[arg(short, long, visible_alias = "rate", value_name = "R", default_value_t = 50.0)]
    pub ramp: f64,

    /// How long each session lasts from its start, in seconds
    #[arg(short, long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,

    /// How the media travels: RTP over UDP, interleaved on the RTSP connection, or interleaved
    /// on an RTSP-over-HTTP tunnel (QuickTime's GET and POST legs, on the URL's port)
    #[arg(short, long, value_enum, default_value_t = TransportArg::Udp)]
    pub transport: TransportArg,

    /// Write the histograms, the plot and the summary into DIR (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Fail when more than this fraction of packets was lost (0.001 is 0.1%)
    #[arg(long, value_name = "F")]
    pub max_loss: Option<f64>,

    /// Fail when the 99th percentile of packet arrival lateness (the lateness
    /// histogram) exceeds this many milliseconds
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,

    /// Worker threads, each pinned to its own core [default: one per core, or per --cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Cores the workers are pinned to, in turn (e.g. `--cores 0` to leave the others to a
    /// server on the same machine) [default: every core]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Vec<usize>,

    /// Local ports for the shared UDP client pairs (even RTP port, RTCP above it)
    #[arg(long, value_name = "LOW-HIGH", default_value = "20000-29999", value_parser = parse_port_range)]
    pub udp_ports: RangeInclusive<u16>,

    /// UDP sessions that share one client port pair
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub sessions_per_port: usize,

    /// Read the shared RTP sockets every this many milliseconds rather than when a datagram
    /// arrives (0). Arrival times are the kernel's receive timestamps either way. Against a
    /// server on the same machine, being woken for each datagram costs the server: the kernel
    /// wakes the reader inside the sender's system call, which in a virtual machine is an
    /// interprocessor interrupt and a VM exit a packet, a cost a client on another machine
    /// never puts on a server
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub read_interval_ms: u64,

    /// Let the kernel coalesce runs of RTP datagrams to a shared socket (UDP GRO), so that
    /// receiving costs once a run rather than once a datagram. It takes effect where the
    /// receiving device merges runs (GRO on), and on loopback, where a server's GSO message
    /// then arrives whole and is never split: that spares the server the split a network card
    /// would do for it, so leave it off there to measure a server as it runs in the field
    #[arg(long)]
    pub gro: bool,

    /// Seconds a connection attempt or an RTSP request may take before its session fails
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub rtsp_timeout: f64,

    /// Seconds a playing session may go without RTP before it fails
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub media_timeout: f64,

    /// Also time, per play, PLAY to holding SECONDS of media: the first moment the video (or
    /// first) track's media received runs SECONDS ahead of the wall time since PLAY, what a
    /// client that starts playing at once has in its buffer (histogram "buffered"). A server
    /// that sends at real time never gets there; one that sends ahead (Instant-On) does
    #[arg(long, value_name = "SECONDS")]
    pub buffered: Option<f64>,

    /// Send `x-Dynamic-Rate: 1` in each SETUP, as QuickTime did: a server may send the session
    /// ahead of real time (over plain UDP, Darwin Streaming Server and streamalot do so only
    /// then; streamalot sends NACK/RTX and reliable-UDP sessions ahead without it)
    #[arg(long)]
    pub dynamic_rate: bool,

    /// Ask for this `Speed` (RFC 2326) in each PLAY: a server that grants it (streamalot and
    /// Darwin Streaming Server do so only over TCP, an HTTP tunnel or reliable UDP) sends the
    /// media that many times faster than real time, RTP timestamps unchanged. The answer's
    /// `Speed` is what the lateness histogram is judged against; "buffered" and the bytes held
    /// ahead are still counted as played at real time. summary.json's "delivery" says the
    /// speed granted and the media received per second of arrival
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,

    /// Send QuickTime's RTCP APP `QTSS` report with an overbuffer window of BYTES (`ob`: what
    /// the client can hold ahead of play) beside each receiver report, the first at PLAY: a
    /// server that sends ahead (x-Dynamic-Rate, Instant-On) keeps what it sent ahead and is not
    /// yet due within it. summary.json's "delivery" says the most bytes a session held ahead
    #[arg(long, value_name = "BYTES")]
    pub overbuffer_window: Option<u32>,

    /// Seconds per live line and per interval of the interval log
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// The User-Agent header of every request
    #[arg(long, value_name = "TEXT", default_value = concat!("rtpload/", env!("CARGO_PKG_VERSION")))]
    pub user_agent: String,

    /// Publish this hinted movie to the first URL as a live stream before the viewers start,
    /// and end the broadcast (BYE, TEARDOWN) when they are done; with --sessions 0 it
    /// publishes for --duration seconds
    #[arg(long, value_name = "FILE")]
    pub publish: Option<PathBuf>,

    /// How --publish sends its media: interleaved on its RTSP connection, or over UDP
    #[arg(long, value_enum, value_name = "TRANSPORT", default_value_t = PublishTransport::Tcp)]
    pub publish_transport: PublishTransport,

    /// Play the --publish movie again and again (sequence numbers and timestamps running
    /// on), rather than ending the broadcast with it
    #[arg(long = "loop")]
    pub looped: bool,

    /// Ask for NACK/RTX retransmission (UDP): set tracks up with RTP/AVPF, send generic NACKs
    /// (RFC 4585) for gaps that stay open past a short reorder wait, and take the RTX packets
    /// (RFC 4588) the server answers with; the summary says how many packets were lost on the
    /// wire and how many were repaired
    #[arg(long, conflicts_with = "reliable_udp")]
    pub nack: bool,

    /// Ask for Darwin Streaming Server's reliable UDP (`x-Retransmit: our-retransmit` in SETUP):
    /// acknowledge every packet in RTCP APP `qtak` packets and take the server's resends; the
    /// summary says how many packets were lost on the wire and how many were repaired
    #[arg(long)]
    pub reliable_udp: bool,

    /// No progress on stderr (the table and the verdict are still printed)
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishTransport {
    Tcp,
    Udp,
}

impl PublishTransport {
    pub fn name(self) -> &'static str {
        match self {
            PublishTransport::Tcp => "tcp",
            PublishTransport::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Udp,
    Tcp,
    Http,
}

impl TransportArg {
    pub fn name(self) -> &'static str {
        match self {
            TransportArg::Udp => "udp",
            TransportArg::Tcp => "tcp",
            TransportArg::Http => "http",
        }
    }
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or("expected LOW-HIGH, as 20000-29999")?;
    let a: u16 = a.trim().parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || b < a.saturating_add(1) {
        return Err(format!("{s} holds no even/odd port pair"));
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_as_documented() {
        let a = Args::try_parse_from([
            "rtpload",
            "rtsp://h/a.mp4",
            "rtsp://h/b.mp4",
            "--urls",
            "list.txt",
            "--sessions",
            "1000",
            "--ramp",
            "200",
            "--duration",
            "30",
            "--transport",
            "tcp",
            "--out",
            "/tmp/x",
            "--max-loss",
            "0.001",
            "--max-p99-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(a.urls, ["rtsp://h/a.mp4", "rtsp://h/b.mp4"]);
        assert_eq!(a.urls_file, Some(PathBuf::from("list.txt")));
        assert_eq!((a.sessions, a.ramp, a.duration), (1000, 200.0, 30.0));
        assert_eq!(a.transport, TransportArg::Tcp);
        assert_eq!((a.max_loss, a.max_p99_ms), (Some(0.001), Some(50.0)));
        assert_eq!(a.udp_ports, 20000..=29999);
        assert!(Args::try_parse_from(["rtpload", "--transport", "sctp"]).is_err());
        let p = Args::try_parse_from([
            "rtpload",
            "--publish",
            "m.mp4",
            "--publish-transport",
            "udp",
            "--loop",
            "rtsp://u:p@h/live/x",
        ])
        .unwrap();
        assert_eq!(p.publish, Some(PathBuf::from("m.mp4")));
        assert_eq!((p.publish_transport, p.looped), (PublishTransport::Udp, true));
        let p = Args::try_parse_from(["rtpload", "--publish", "m.mp4"]).unwrap();
        assert_eq!((p.publish_transport, p.looped), (PublishTransport::Tcp, false));
        let n = Args::try_parse_from(["rtpload", "--nack"]).unwrap();
        assert!(n.nack && !n.reliable_udp);
        let r = Args::try_parse_from(["rtpload", "--reliable-udp"]).unwrap();
        assert!(r.reliable_udp && !r.nack);
        assert!(Args::try_parse_from(["rtpload", "--nack", "--reliable-udp"]).is_err());
        let fast = Args::try_parse_from(["rtpload", "--speed", "2", "--overbuffer-window", "65536"]).unwrap();
        assert_eq!((fast.speed, fast.overbuffer_window), (Some(2.0), Some(65_536)));
        let rate = Args::try_parse_from(["rtpload", "--rate", "200"]).unwrap();
        assert_eq!(rate.ramp, 200.0, "--rate is --ramp");
        let http = Args::try_parse_from(["rtpload", "--transport", "http"]).unwrap();
        assert_eq!((http.transport, http.transport.name()), (TransportArg::Http, "http"));
        assert!(Args::try_parse_from(["rtpload", "--udp-ports", "5000"]).is_err());
        assert!(Args::try_parse_from(["rtpload", "--udp-ports", "5000-5000"]).is_err());
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("lateness"), "--max-p99-ms says which histogram");
    }
}
