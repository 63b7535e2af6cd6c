//! `rtpload`: the RTSP/RTP load client's command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RTPLOAD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = rtpload::cli::Args::parse();
    match rtpload::run::run(&args) {
        Ok(v) if v.passed => {
            eprintln!("rtpload: PASS");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for reason in &v.reasons {
                eprintln!("rtpload: FAIL: {reason}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("rtpload: {e}");
            ExitCode::from(2)
        }
    }
}
