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
    /// Steer a running server's channels through its admin API: `status` (what each plays now
    /// and next), `skip`, `insert PATH MOVIE` (play MOVIE next), `stop`, `start`.
    Channel(streamalot::server::channel_client::ChannelArgs),
    /// Add a user to a users file, change a user's password, or delete a user (--delete). The
    /// file is replaced whole, so a running server sees the old file or the new one.
    Passwd(PasswdArgs),
}

#[derive(clap::Args)]
struct PasswdArgs {
    /// The users file; created (readable by its owner only) when missing
    #[arg(long, value_name = "FILE")]
    file: std::path::PathBuf,
    /// Remove USER instead of setting a password
    #[arg(long)]
    delete: bool,
    /// The realm of a new file (Digest secrets are bound to it) [default: Streamalot]
    #[arg(long, value_name = "REALM")]
    realm: Option<String>,
    /// The user name
    user: String,
    /// The new password (required unless --delete)
    password: Option<String>,
}

fn passwd(args: &PasswdArgs) -> Result<(), Box<dyn std::error::Error>> {
    use streamalot::access::users::{self, PasswdAction, PasswdOutcome};
    let action = match (args.delete, &args.password) {
        (true, None) => PasswdAction::Delete,
        (true, Some(_)) => return Err("--delete takes no password".into()),
        (false, Some(p)) => PasswdAction::Set(p.clone()),
        (false, None) => return Err("a PASSWORD is needed (or --delete)".into()),
    };
    let realm = args.realm.as_deref().unwrap_or(streamalot::access::DEFAULT_REALM);
    let outcome = users::passwd(&args.file, &args.user, &action, realm)?;
    let file = args.file.display();
    match outcome {
        PasswdOutcome::Added => eprintln!("streamalot: added {} to {file}", args.user),
        PasswdOutcome::Replaced => eprintln!("streamalot: changed the password of {} in {file}", args.user),
        PasswdOutcome::Deleted => eprintln!("streamalot: deleted {} from {file}", args.user),
        PasswdOutcome::NotFound => return Err(format!("{file} has no user {:?}", args.user).into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Passwd(args) => passwd(&args),
        Command::Broadcast(args) => streamalot::broadcast::resolve(&args)
            .map_err(Into::into)
            .and_then(|plan| streamalot::server::broadcast::run(plan).map_err(Into::into)),
        Command::Channel(args) => streamalot::server::channel_client::run(&args).map_err(Into::into),
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
