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
    /// Show a hinted movie's tracks, hint-track packet counts and bitrates,
    /// its SDP, and optionally its first packet recipes.
    Inspect(inspect::Args),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamalot: {e}");
            ExitCode::FAILURE
        }
    }
}
