//! `streamalot`: the streaming server's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod inspect;

/// Streamalot: a streaming media server for hinted QuickTime, MP4 and 3GP
/// movies over RTSP/RTP.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the movies in a directory over RTSP/RTP: video on demand over
    /// UDP and TCP, one control core and a shard per remaining core.
    Serve(Box<streamalot::config::ServeArgs>),
    /// Show a hinted movie's tracks, hint-track packet counts and bitrates,
    /// its SDP, and optionally its first packet recipes.
    Inspect(inspect::Args),
    /// Push a playlist of hinted movies as one continuous live stream: to an
    /// RTSP server by ANNOUNCE/RECORD, or as plain RTP to a UDP address, as
    /// DSS's PlaylistBroadcaster did.
    ///
    /// Sequence numbers and timestamps run on across movies (one SSRC per
    /// track for the whole run); a movie whose tracks or codecs differ from
    /// the reference movie's is skipped with a message, and so is a missing
    /// one, by its playlist line. The playlist is reread when it changes (or
    /// on SIGHUP). SIGUSR1 skips to the next movie; SIGINT or SIGTERM ends the
    /// broadcast cleanly (RTCP BYE, TEARDOWN). Lines on standard input are
    /// commands: `skip`, `next PATH` (play PATH after the current movie),
    /// `stop`.
    Broadcast(Box<streamalot::broadcast::BroadcastArgs>),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Broadcast(args) => streamalot::broadcast::resolve(&args)
            .map_err(Into::into)
            .and_then(|plan| streamalot::server::broadcast::run(plan).map_err(Into::into)),
        Command::Serve(args) => streamalot::config::resolve(&args)
            .map_err(Into::into)
            .and_then(|config| streamalot::server::run(config).map_err(Into::into)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamalot: {e}");
            ExitCode::FAILURE
        }
    }
}
