//! The server's own channels: each one a [`Broadcaster`] driven by a task
//! on the control core, put on the air as an internal publisher.
//!
//! A channel's packets take the way a publisher's take: each goes through
//! the live registry's [`Ingest`](crate::live::ingest::Ingest) (checked,
//! copied once into the `Bytes` every shard and viewer shares) and is fanned
//! out to every shard's replica, so a viewer joins on a key frame with its
//! own SSRC, sequence numbers and timestamp offset, and gets sender reports
//! mapped from the channel's. The DESCRIBE answer is the channel's SDP (the
//! reference movie's media, as live).
//!
//! The task never blocks the control core's thread: playlists are read and
//! movies opened on the executor's blocking thread, before the broadcaster
//! asks for them ([`Movies::ensure`]), so its `open` is a map lookup. It
//! sleeps until the next packet is due or a command comes (from the admin
//! API: skip, insert, stop, start; or a first viewer of a channel that runs
//! only while watched), rereads the playlist when its file changes, and
//! writes the `.current` and `.upcoming` files as DSS did.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use loader::Movie;
use tracing::{info, warn};

use super::{collect_stats, now, Control};
use crate::channel::broadcast::{Broadcaster, Note, Settings, Started, Step};
use crate::channel::compat::Layout;
use crate::channel::config::{Channel, When};
use crate::channel::playlist::{Disk, Playlist};
use crate::library::{Library, LibraryError, Lookup};
use crate::live;
use crate::pacer::SessionKey;

/// The longest the task sleeps between looks at its commands and files.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How often the playlist file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a channel that could not start waits before trying again.
const RETRY: Duration = Duration::from_secs(5);
/// Packets sent before the task lets the control core's other tasks run.
const BURST: usize = 256;
/// Room for one packet: a hinted movie's packets fit an Ethernet MTU.
const PACKET_CAPACITY: usize = 1500;
/// The log lines each channel keeps for the admin API.
const NOTES_KEPT: usize = 20;
/// How often a channel that runs only while watched counts its viewers.
const VIEWER_CHECK: Duration = Duration::from_secs(2);
/// A new viewer's session takes a moment to reach its shard: a channel is
/// not taken for unwatched this soon after one came.
const VIEWER_GRACE: Duration = Duration::from_secs(3);

/// What the admin API (or a first viewer) asks of a channel.
#[derive(Debug)]
pub enum Command {
    /// The next movie now.
    Skip,
    /// This movie (a file, opened already once to check it) after the
    /// current one.
    Insert(PathBuf),
    /// Off the air: viewers get a BYE.
    Stop,
    /// On the air again, from the playlist's start.
    Start,
    /// A viewer came (for a channel that runs only while watched).
    Watched,
}

/// Where a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Starting,
    OnAir,
    /// Runs only while watched, and nobody watches.
    Paused,
    /// Stopped by the operator.
    Stopped,
    /// A `sequential` playlist played out, or the end time passed.
    Ended,
    /// Could not start (see the error); tried again shortly.
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::OnAir => "on_air",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Ended => "ended",
            State::Failed => "failed",
        }
    }
}

/// What the admin API shows of a channel: kept up to date by its task.
#[derive(Debug, Default)]
pub struct Status {
    pub state: State,
    /// Its publisher session while on the air.
    pub key: Option<SessionKey>,
    pub current: Option<Started>,
    pub upcoming: Vec<PathBuf>,
    /// The tracks and codecs every movie must fit.
    pub reference: Option<Layout>,
    pub movies_started: u64,
    /// The latest log lines (skipped movies, playlist problems), newest last.
    pub notes: VecDeque<String>,
    pub error: Option<String>,
    /// When the last viewer came (watched channels).
    watched_at: Option<Instant>,
}

/// One configured channel, shared by its task and the admin API.
pub struct Handle {
    pub channel: Channel,
    /// `/` and the channel's path: the request path viewers use.
    pub path: String,
    pub status: RefCell<Status>,
    commands: LocalSender<Command>,
}

impl Handle {
    /// Hands `command` to the channel's task.
    pub fn send(&self, command: Command) -> bool {
        self.commands.try_send(command).is_ok()
    }

    /// A viewer's SETUP of the channel: a channel that runs only while
    /// watched is woken.
    pub fn watched(&self) {
        if self.channel.when == When::Watched {
            self.status.borrow_mut().watched_at = Some(Instant::now());
            self.send(Command::Watched);
        }
    }
}

/// The handles for `channels`, and the receiving end of each one's
/// commands, for [`spawn`].
pub fn handles(channels: &[Channel]) -> (Vec<Rc<Handle>>, Vec<LocalReceiver<Command>>) {
    channels
        .iter()
        .map(|c| {
            let (tx, rx) = local_channel::new_unbounded();
            let handle = Rc::new(Handle {
                path: format!("/{}", c.path),
                channel: c.clone(),
                status: RefCell::default(),
                commands: tx,
            });
            (handle, rx)
        })
        .unzip()
}

/// Starts every channel's task.
pub fn spawn(ctl: &Rc<Control>, receivers: Vec<LocalReceiver<Command>>) {
    for (h, rx) in ctl.channels.iter().zip(receivers) {
        info!(
            channel = %h.path,
            playlist = %h.channel.playlist.display(),
            mode = %h.channel.mode,
            run = if h.channel.when == When::Always { "always" } else { "on-demand" },
            "channel configured"
        );
        glommio::spawn_local(drive(ctl.clone(), h.clone(), rx)).detach();
    }
}

/// The wall clock, as the shards' sender reports see it: the process's
/// monotonic clock from the wall time it started at, so a step of the
/// system clock never makes a channel jump.
fn wall_now() -> SystemTime {
    UNIX_EPOCH + super::super::wall_epoch() + Duration::from_nanos(now())
}

/// The movies a channel may play, opened through the media library on the
/// blocking thread before the broadcaster asks for them: the library's
/// cache (one mapping for a channel and the VoD sessions of the same file)
/// and its checks of files changed under their mapping apply to channels
/// too.
struct Movies {
    library: Arc<Library>,
    open: HashMap<PathBuf, Result<Arc<Movie>, String>>,
}

impl Movies {
    fn new(library: Arc<Library>) -> Movies {
        Movies {
            library,
            open: HashMap::new(),
        }
    }

    async fn ensure(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for p in paths {
            if self.open.contains_key(&p) {
                continue;
            }
            let opened = match self.library.lookup_file(&p) {
                Ok(Lookup::Ready(m)) => Ok(m),
                Ok(Lookup::Parse(parse)) => glommio::executor().spawn_blocking(move || parse.run()).await,
                Err(e) => Err(e),
            };
            self.open.insert(p, opened.map_err(|e| why_not(&e)));
        }
    }

    /// The movie at `p`. One damaged under its mapping (its file truncated
    /// or rewritten in place) is handed out as it is, and the broadcaster
    /// skips it, until [`reopen_damaged`](Self::reopen_damaged) has the
    /// file as it is now.
    fn get(&self, p: &Path) -> Result<Arc<Movie>, String> {
        self.open
            .get(p)
            .cloned()
            .unwrap_or_else(|| Err(format!("{} was not opened", p.display())))
    }

    /// After the playlist changed: what did not open is tried again.
    fn forget_failures(&mut self) {
        self.open.retain(|_, r| r.is_ok());
    }

    /// The movies damaged under their mapping are opened again, as the
    /// files are now.
    async fn reopen_damaged(&mut self) {
        let damaged: Vec<PathBuf> = self
            .open
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|m| m.is_damaged()))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &damaged {
            self.open.remove(p);
        }
        self.ensure(damaged).await;
    }
}

/// Why a channel's movie did not open, for its skip note (which names the
/// file already).
fn why_not(e: &LibraryError) -> String {
    match e {
        LibraryError::NotFound { why, .. } => format!("cannot open: {why}"),
        LibraryError::Forbidden { .. } => "cannot open: permission denied".into(),
        LibraryError::Io { source, .. } => format!("cannot open: {source}"),
        LibraryError::Unsupported { source, .. } => format!("cannot stream it: {source}"),
        other => other.to_string(),
    }
}

async fn load_list(path: &Path) -> Result<Playlist, String> {
    let p = path.to_owned();
    glommio::executor()
        .spawn_blocking(move || Playlist::load(&p, &mut Disk).map_err(|e| e.to_string()))
        .await
}

/// Every movie `list` names, and the reference.
fn wanted(list: &Playlist, reference: Option<&PathBuf>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = list.entries.iter().map(|e| e.path.clone()).collect();
    v.extend(reference.cloned());
    v
}

/// The playlist's identity on disk, to notice a change.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Writes `text` to `path` through a temporary file on the blocking thread.
async fn write_file(path: PathBuf, text: String) {
    let shown = path.display().to_string();
    let written = glommio::executor()
        .spawn_blocking(move || {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path))
        })
        .await;
    if let Err(e) = written {
        warn!(file = %shown, error = %e, "cannot write a channel's status file");
    }
}

/// Why one run of a channel ended.
enum Outcome {
    Stopped,
    Ended,
    Failed(String),
    /// The command senders are gone: the server is stopping.
    Gone,
}

/// Waits up to `d` for a command.
async fn command_within(rx: &LocalReceiver<Command>, d: Duration) -> Option<Option<Command>> {
    futures_lite::future::or(async { Some(rx.recv().await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

async fn drive(ctl: Rc<Control>, h: Rc<Handle>, rx: LocalReceiver<Command>) {
    let mut movies = Movies::new(ctl.library.clone());
    let mut run = true;
    // The configured start holds until an operator stops the channel: a
    // start in the past puts the first run where the schedule has got to
    // by now (as if it had been on the air since), and a retry after a
    // failure keeps to it too. A channel started again by hand plays its
    // playlist from the top, from then.
    let mut since = h.channel.start;
    loop {
        if !run {
            match rx.recv().await {
                Some(Command::Start) => run = true,
                Some(_) => continue,
                None => return,
            }
        }
        match on_air(&ctl, &h, &rx, &mut movies, since).await {
            Outcome::Stopped => {
                h.status.borrow_mut().state = State::Stopped;
                run = false;
                since = None;
            }
            Outcome::Ended => {
                since = None;
                h.status.borrow_mut().state = State::Ended;
                info!(channel = %h.path, "the channel's playlist has played out");
                run = false;
            }
            Outcome::Failed(why) => {
                warn!(channel = %h.path, error = %why, "the channel cannot go on the air; trying again in {} s", RETRY.as_secs());
                {
                    let mut s = h.status.borrow_mut();
                    s.state = State::Failed;
                    s.error = Some(why);
                }
                movies.forget_failures();
                match command_within(&rx, RETRY).await {
                    Some(None) => return,
                    Some(Some(Command::Stop)) => {
                        h.status.borrow_mut().state = State::Stopped;
                        run = false;
                    }
                    _ => {}
                }
            }
            Outcome::Gone => return,
        }
    }
}

/// Appends a log line to the channel's notes.
fn keep(h: &Handle, line: String) {
    let mut s = h.status.borrow_mut();
    if s.notes.len() == NOTES_KEPT {
        s.notes.pop_front();
    }
    s.notes.push_back(line);
}

/// One run of a channel: on the air until it is stopped or its playlist
/// ends.
/// `since` is the schedule's start: `None` for now, a time ahead to wait
/// for it, a time past to join the schedule where it has got to.
async fn on_air(
    ctl: &Rc<Control>,
    h: &Rc<Handle>,
    rx: &LocalReceiver<Command>,
    movies: &mut Movies,
    since: Option<SystemTime>,
) -> Outcome {
    let c = &h.channel;
    h.status.borrow_mut().state = State::Starting;
    let list = match load_list(&c.playlist).await {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e),
    };
    movies.ensure(wanted(&list, c.reference.as_ref())).await;
    let start = wall_now();
    let settings = Settings {
        reference: c.reference.clone(),
        mode: c.mode,
        window: c.recent_movies_list_size,
        seed: c.seed.unwrap_or_else(crate::random::u64),
        max_movies: None,
        max_upcoming: c.max_upcoming_list_size,
        start: since.unwrap_or(start),
        end: c.end,
    };
    let mut b = match Broadcaster::new(&list, &settings, &mut |p: &Path| movies.get(p)) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let sdp = b.sdp(&c.path, None);
    let id = ctl.live.borrow_mut().take_id();
    let desc = match live::describe::parse(id, &h.path, Some("application/sdp"), sdp.as_bytes()) {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(format!("the reference movie's SDP: {e}")),
    };
    let key = ctl.new_key();
    let (desc, replaced) = ctl.live.borrow_mut().open_channel(key, desc, now());
    if let Some(old) = replaced {
        ctl.ended(old, "the path is a channel's", 200, false);
    }
    for tx in &ctl.live_shards {
        let _ = tx.send(live::ToShard::Start(desc.clone())).await;
    }
    let tracks = b.layout().tracks.len();
    {
        let mut s = h.status.borrow_mut();
        s.state = State::OnAir;
        s.key = Some(key);
        s.error = None;
        s.reference = Some(b.layout().clone());
        s.current = None;
        s.upcoming.clear();
    }
    info!(
        channel = %h.path,
        movies = list.entries.len(),
        reference = %b.reference_path().display(),
        tracks = %b.layout().tracks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "channel on the air"
    );
    let current_file = c
        .current_file
        .clone()
        .unwrap_or_else(|| c.playlist.with_extension("current"));
    let upcoming_file = c
        .upcoming_file
        .clone()
        .unwrap_or_else(|| c.playlist.with_extension("upcoming"));
    let watched_only = c.when == When::Watched;
    if watched_only {
        b.pause(wall_now());
        h.status.borrow_mut().state = State::Paused;
    }
    let mut next_viewer_check = Instant::now() + VIEWER_CHECK;
    let mut playlist_stamp = stamp(&c.playlist);
    let mut next_reload_check = Instant::now() + RELOAD_CHECK;
    let mut buf = Vec::with_capacity(PACKET_CAPACITY);
    let cname = format!("streamalot{}", h.path);
    let outcome = loop {
        // Stopped through the publishers' API, or at shutdown.
        if !ctl.live.borrow().is_publisher(key) {
            break Outcome::Stopped;
        }
        if Instant::now() >= next_reload_check {
            next_reload_check = Instant::now() + RELOAD_CHECK;
            movies.reopen_damaged().await;
            let s = stamp(&c.playlist);
            if s != playlist_stamp {
                playlist_stamp = s;
                match load_list(&c.playlist).await {
                    Ok(list) => {
                        movies.forget_failures();
                        movies.ensure(wanted(&list, None)).await;
                        info!(channel = %h.path, movies = list.entries.len(), "the playlist changed; play goes on from the next movie");
                        b.reload(&list);
                        let upcoming = b.upcoming(&mut |p: &Path| movies.get(p));
                        write_file(
                            upcoming_file.clone(),
                            crate::channel::status::upcoming(upcoming.iter().map(PathBuf::as_path)),
                        )
                        .await;
                        h.status.borrow_mut().upcoming = upcoming;
                    }
                    Err(e) => {
                        warn!(channel = %h.path, error = %e, "the playlist changed but cannot be read; the list as it was plays on")
                    }
                }
            }
        }
        if watched_only && Instant::now() >= next_viewer_check {
            next_viewer_check = Instant::now() + VIEWER_CHECK;
            let viewers = collect_stats(ctl).await.live.get(&h.path).map_or(0, |l| l.viewers);
            let recent = h.status.borrow().watched_at.is_some_and(|t| t.elapsed() < VIEWER_GRACE);
            if viewers == 0 && !recent && !b.is_paused() {
                info!(channel = %h.path, "nobody watches the channel: paused");
                b.pause(wall_now());
                h.status.borrow_mut().state = State::Paused;
            }
        }
        // Everything due now, a bounded burst at a time.
        let mut ended = false;
        let mut wake = wall_now() + MAX_SLEEP;
        for _ in 0..BURST {
            let t = wall_now();
            match b.next(t, &mut |p: &Path| movies.get(p), &mut buf) {
                Step::Packet { track } => {
                    // The packet's buffer becomes its `Bytes` as it is: the
                    // one copy of its payload is the broadcaster's, out of
                    // the mapping.
                    let packet = std::mem::replace(&mut buf, Vec::with_capacity(PACKET_CAPACITY));
                    ctl.ingest_owned(key, track, bytes::Bytes::from(packet));
                }
                Step::Wait(at) => {
                    wake = wake.min(at);
                    break;
                }
                Step::Ended => {
                    ended = true;
                    break;
                }
            }
            wake = t;
        }
        while let Some(n) = b.poll_note() {
            note(h, &n);
            if let Note::Started(s) = n {
                write_file(current_file.clone(), s.current.clone()).await;
                write_file(upcoming_file.clone(), s.upcoming_text.clone()).await;
                let mut st = h.status.borrow_mut();
                st.movies_started += 1;
                st.upcoming = s.upcoming.clone();
                st.current = Some(s);
            }
        }
        if ended {
            break Outcome::Ended;
        }
        let t = wall_now();
        if !b.is_paused() && t >= b.next_report() {
            for (k, report) in b.reports(t, &cname) {
                ctl.ingest(key, k, true, &report);
            }
        }
        if !b.is_paused() {
            wake = wake.min(b.next_report().max(t));
        }
        let sleep = wake.duration_since(wall_now()).unwrap_or_default().min(MAX_SLEEP);
        let got = if sleep.is_zero() {
            futures_lite::future::yield_now().await;
            None
        } else {
            command_within(rx, sleep).await
        };
        match got {
            None => {}
            Some(None) => break Outcome::Gone,
            Some(Some(cmd)) => match cmd {
                Command::Skip => {
                    info!(channel = %h.path, "skipping to the next movie");
                    keep(h, "skipped to the next movie".into());
                    b.skip(wall_now());
                }
                Command::Insert(path) => {
                    movies.ensure([path.clone()]).await;
                    info!(channel = %h.path, movie = %path.display(), "plays next");
                    keep(h, format!("{} inserted to play next", path.display()));
                    b.insert_next(path);
                    let upcoming = b.upcoming(&mut |p: &Path| movies.get(p));
                    write_file(
                        upcoming_file.clone(),
                        crate::channel::status::upcoming(upcoming.iter().map(PathBuf::as_path)),
                    )
                    .await;
                    h.status.borrow_mut().upcoming = upcoming;
                }
                Command::Stop => break Outcome::Stopped,
                Command::Start => {}
                Command::Watched => {
                    if b.is_paused() {
                        info!(channel = %h.path, "a viewer came: the channel plays on");
                        b.resume(wall_now());
                        h.status.borrow_mut().state = State::OnAir;
                    }
                }
            },
        }
    };
    // Off the air: the broadcast ends for its viewers (after every packet
    // sent before), and its publisher's access-log line is written.
    ctl.end_publisher(key, "channel stopped", 200);
    let (packets, _) = (0..tracks).fold((0, 0), |(p, o), k| {
        let (pk, ok) = b.sent(k);
        (p + pk, o + ok)
    });
    info!(channel = %h.path, packets, "channel off the air");
    let mut s = h.status.borrow_mut();
    s.key = None;
    s.current = None;
    s.upcoming.clear();
    outcome
}

/// Logs a broadcaster's note for channel `h`, and keeps the ones an
/// operator should see.
fn note(h: &Handle, n: &Note) {
    let m = n.message();
    match n {
        Note::Started(_) | Note::Lead { .. } | Note::TracksIgnored { .. } => info!(channel = %h.path, "{m}"),
        Note::Skipped { .. } | Note::Damaged { .. } | Note::Idle { .. } => {
            warn!(channel = %h.path, "{m}");
            keep(h, m);
        }
    }
}

/// What the admin API shows of every channel.
pub fn views(ctl: &Control) -> Vec<crate::http::ChannelView> {
    let wall = wall_now();
    ctl.channels
        .iter()
        .map(|h| {
            let s = h.status.borrow();
            crate::http::ChannelView {
                path: h.channel.path.clone(),
                playlist: h.channel.playlist.display().to_string(),
                state: s.state.name(),
                mode: h.channel.mode.name(),
                run: if h.channel.when == When::Always {
                    "always"
                } else {
                    "on-demand"
                },
                publisher: s.key.map(crate::door::session_id),
                now: s.current.as_ref().map(|c| crate::http::NowPlaying {
                    number: c.number + 1,
                    movie: c.path.display().to_string(),
                    title: c.title.clone(),
                    inserted: c.inserted,
                    position_secs: wall
                        .duration_since(c.start)
                        .unwrap_or_default()
                        .min(c.length)
                        .as_secs_f64(),
                    length_secs: c.length.as_secs_f64(),
                }),
                upcoming: s.upcoming.iter().map(|p| p.display().to_string()).collect(),
                movies_started: s.movies_started,
                error: s.error.clone(),
                notes: s.notes.iter().cloned().collect(),
            }
        })
        .collect()
}

/// Carries out an operator's `action` on channel `path`.
pub async fn act(ctl: &Control, path: &str, action: crate::http::ChannelAction) -> crate::http::ChannelOutcome {
    use crate::http::ChannelAction as A;
    let h = ctl
        .channels
        .iter()
        .find(|h| h.channel.path == path.trim_matches('/'))
        .ok_or_else(|| (404, format!("no channel {path:?}")))?;
    let state = h.status.borrow().state;
    let playing = matches!(state, State::OnAir | State::Paused);
    let command = match action {
        A::Skip if !playing => return Err((409, format!("the channel is {}", state.name()))),
        A::Skip => Command::Skip,
        A::Stop if matches!(state, State::Stopped) => return Ok("already stopped".into()),
        A::Stop => Command::Stop,
        A::Start if !matches!(state, State::Stopped | State::Ended) => return Ok(format!("already {}", state.name())),
        A::Start => Command::Start,
        A::Insert(_) if !playing => return Err((409, format!("the channel is {}", state.name()))),
        A::Insert(movie) => {
            // A movie of the media folder, by the request-path rules (so
            // the API names no file outside it), that opens and fits.
            let file = ctl
                .library
                .file(&format!("/{}", movie.trim_start_matches('/')))
                .map_err(|e| (e.status(), e.to_string()))?;
            let opened = match ctl.library.lookup_file(&file) {
                Ok(Lookup::Ready(m)) => Ok(m),
                Ok(Lookup::Parse(parse)) => glommio::executor().spawn_blocking(move || parse.run()).await,
                Err(e) => Err(e),
            }
            .map_err(|e| (415, e.to_string()))?;
            if let Some(reference) = h.status.borrow().reference.as_ref() {
                reference
                    .check(&Layout::of(&opened))
                    .map_err(|why| (422, format!("{movie} does not fit the channel: {why}")))?;
            }
            Command::Insert(file)
        }
    };
    let done = match &command {
        Command::Skip => "skipped".to_owned(),
        Command::Insert(f) => format!("{} plays next", f.display()),
        Command::Stop => "stopped".to_owned(),
        Command::Start => "started".to_owned(),
        Command::Watched => String::new(),
    };
    if !h.send(command) {
        return Err((503, "the channel's task is gone".into()));
    }
    Ok(done)
}
