//! The relays' IO on the control core: one task per running relay, which
//! connects to the origin, drives its [`Player`], registers the broadcast
//! with the live registry as a publisher would, and feeds what the origin
//! sends (interleaved frames here, datagrams through the publishers' UDP
//! readers) into the same ingest. When the origin goes, the broadcast ends
//! (or waits out the publish grace) and the task connects again after a
//! backoff; an on-demand relay stops a few seconds after its last viewer.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use proto::rtsp::url::resolve;
use tracing::{info, warn};

use super::{now, udp_ingest, Control};
use crate::live::registry::Path as LivePath;
use crate::live::relay::{
    backoff, is_bye, origin_authority, Carriage, Event, Mode, Negotiated, Player, Relay, RelayError, RelayTransport,
    IDLE_STOP, START_WAIT,
};
use crate::live::{self, describe};
use crate::pacer::SessionKey;
use crate::source::Nanos;

/// How long connecting to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the task sleeps between looks at its viewers and its
/// publisher.
const TICK: Duration = Duration::from_millis(500);

/// Where a relay is, for the admin API and the waiting viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running (on demand, with nobody asking).
    Idle,
    Connecting,
    Playing,
    /// Waiting before it connects again.
    Backoff,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Playing => "playing",
            State::Backoff => "backoff",
        }
    }
}

/// One relay's state on the control core.
#[derive(Debug)]
pub struct Run {
    pub relay: Relay,
    pub state: State,
    /// Attempts that failed (or ended) so far, over the relay's life.
    pub failures: u64,
    /// Connections that reached PLAY, over the relay's life.
    pub plays: u64,
    /// What the last attempt ended with, and the status a viewer waiting
    /// for it is given.
    pub last_error: Option<(u16, String)>,
}

/// The relays by path.
pub type Runs = HashMap<String, Run>;

/// The relays of `config`, none running yet.
pub fn runs(relays: &[Relay]) -> Runs {
    relays
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                Run {
                    relay: r.clone(),
                    state: State::Idle,
                    failures: 0,
                    plays: 0,
                    last_error: None,
                },
            )
        })
        .collect()
}

/// A URL without its credentials, for logs and the admin API.
pub fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl Control {
    /// Starts the relays that run always.
    pub(super) fn start_relays(&self) {
        let always: Vec<String> = self
            .relays
            .borrow()
            .values()
            .filter(|r| r.relay.mode == Mode::Always)
            .map(|r| r.relay.path.clone())
            .collect();
        for path in always {
            self.start_relay(&path);
        }
    }

    /// Starts the relay at `path` if it is not running. `false` if no relay
    /// is configured there.
    fn start_relay(&self, path: &str) -> bool {
        let start = {
            let mut runs = self.relays.borrow_mut();
            let Some(run) = runs.get_mut(path) else { return false };
            let start = run.state == State::Idle;
            if start {
                run.state = State::Connecting;
                info!(path, origin = %shown(run.relay.url.as_str()), "relay starting");
            }
            start
        };
        if start {
            glommio::spawn_local(relay_task(self.me.clone(), path.to_owned())).detach();
        }
        true
    }

    /// For a DESCRIBE or SETUP of `path`: if a relay is configured there,
    /// it is started (when it is not running) and waited for until it is
    /// on the air ([`START_WAIT`] at most). `None` where no relay is;
    /// `Some(Err(status))` when the origin failed (404 for its 404) or did
    /// not come in time (504).
    pub(super) async fn relay_on_air(&self, path: &str) -> Option<Result<Arc<live::Description>, u16>> {
        let failures_before = self.relays.borrow().get(path)?.failures;
        if let Some(d) = self.live.borrow().on_air(path) {
            return Some(Ok(d.clone()));
        }
        self.start_relay(path);
        let deadline = now() + START_WAIT;
        loop {
            if let Some(d) = self.live.borrow().on_air(path) {
                return Some(Ok(d.clone()));
            }
            {
                let runs = self.relays.borrow();
                let run = runs.get(path)?;
                if run.failures > failures_before {
                    return Some(Err(run.last_error.as_ref().map_or(502, |e| e.0)));
                }
            }
            if now() >= deadline {
                return Some(Err(504));
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether `path` is a relay's.
    pub(super) fn is_relay_path(&self, path: &str) -> bool {
        self.relays.borrow().contains_key(path)
    }

    /// Viewers of `path` now (counted for relay paths only).
    fn relay_viewers(&self, path: &str) -> usize {
        self.relay_viewers
            .borrow()
            .values()
            .filter(|p| p.as_str() == path)
            .count()
    }
}

use std::sync::Arc;

/// How one connection to the origin ended.
enum End {
    /// The relay stops: no viewers (on demand), or the server stops.
    Stopped,
    /// The origin's stream ended or the connection went; connect again.
    Gone(String),
    Failed(RelayError),
}

/// A relay's life: connections to the origin, one after the other, with a
/// backoff between, until it stops.
async fn relay_task(ctl: Weak<Control>, path: String) {
    let mut failures: u32 = 0;
    loop {
        let Some(c) = ctl.upgrade() else { return };
        let Some(relay) = c.relays.borrow().get(&path).map(|r| r.relay.clone()) else {
            return;
        };
        set_state(&c, &path, State::Connecting);
        let mut key = None;
        let mut played = false;
        let end = play(&c, &relay, &mut key, &mut played).await;
        if let Some(key) = key {
            let why = match &end {
                End::Stopped => "relay stopped".to_owned(),
                End::Gone(why) => why.clone(),
                End::Failed(e) => e.to_string(),
            };
            c.end_publisher(key, &why, 200);
        }
        if played {
            failures = 0;
        }
        {
            let mut runs = c.relays.borrow_mut();
            if let Some(run) = runs.get_mut(&path) {
                match &end {
                    End::Stopped => {}
                    End::Gone(why) => {
                        run.failures += 1;
                        run.last_error = Some((502, why.clone()));
                    }
                    End::Failed(e) => {
                        run.failures += 1;
                        run.last_error = Some((e.status(), e.to_string()));
                    }
                }
            }
        }
        let origin = shown(relay.url.as_str());
        match &end {
            End::Stopped => {
                info!(path, %origin, "relay stopped");
                set_state(&c, &path, State::Idle);
                return;
            }
            End::Gone(why) => info!(path, %origin, why, "relay's origin stream ended"),
            End::Failed(e) => warn!(path, %origin, error = %e, "relay failed"),
        }
        if relay.mode == Mode::OnDemand && c.relay_viewers(&path) == 0 {
            info!(path, %origin, "relay stopped: no viewers");
            set_state(&c, &path, State::Idle);
            return;
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        set_state(&c, &path, State::Backoff);
        info!(path, %origin, wait_ms = wait / 1_000_000, "relay reconnecting");
        drop(c);
        glommio::timer::sleep(Duration::from_nanos(wait)).await;
    }
}

fn set_state(c: &Control, path: &str, state: State) {
    if let Some(run) = c.relays.borrow_mut().get_mut(path) {
        run.state = state;
    }
}

/// One connection to the origin: from connecting to the end of what it
/// plays. `key` is the broadcast's publisher once registered; `played`
/// says PLAY was answered.
async fn play(c: &Rc<Control>, relay: &Relay, key: &mut Option<SessionKey>, played: &mut bool) -> End {
    let (host, port) = origin_authority(&relay.url);
    // A literal address needs no lookup; a name is looked up here, once
    // per connection.
    let addr: Option<SocketAddr> = (host.as_str(), port).to_socket_addrs().ok().and_then(|mut a| a.next());
    let Some(addr) = addr else {
        return End::Failed(RelayError::BadDescription(format!("cannot resolve {host}")));
    };
    let mut stream = match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return End::Gone(format!("cannot connect to {addr}: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let mut player = Player::new(relay.url.clone(), crate::random::u64(), now());
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_since: Option<Nanos> = None;
    let mut tearing_down = false;
    loop {
        let out = player.take_output();
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                return End::Gone(format!("the connection to the origin failed: {e}"));
            }
        }
        while let Some(event) = player.poll_event() {
            match event {
                Event::Described {
                    content_type,
                    sdp,
                    base,
                } => match register(c, relay, addr, content_type.as_deref(), &sdp, &base) {
                    Ok((k, streams)) => {
                        *key = Some(k);
                        player.set_up(streams, now());
                    }
                    Err(e) => return End::Failed(e),
                },
                Event::Playing { tracks } => {
                    let Some(k) = *key else { continue };
                    set_channels(c, k, &tracks);
                    let desc = c.live.borrow_mut().record(k, now());
                    if let Some(desc) = desc {
                        for tx in &c.live_shards {
                            let _ = tx.send(live::ToShard::Start(desc.clone())).await;
                        }
                        c.start_pushes(&desc);
                        *played = true;
                        if let Some(run) = c.relays.borrow_mut().get_mut(&relay.path) {
                            run.plays += 1;
                            run.state = State::Playing;
                        }
                        info!(
                            path = %relay.path,
                            origin = %shown(relay.url.as_str()),
                            streams = desc.tracks.len(),
                            transport = if relay.transport == RelayTransport::Udp { "udp" } else { "tcp" },
                            "relay on the air"
                        );
                    }
                }
                Event::Interleaved { channel, data } => {
                    let Some(k) = *key else { continue };
                    let track = c.live.borrow().get(k).and_then(|p| p.channel(channel));
                    if let Some((track, rtcp)) = track {
                        c.ingest(k, track, rtcp, &data);
                    }
                }
                Event::Closed => return End::Stopped,
                Event::Failed(e) => return End::Failed(e),
            }
        }
        let t = now();
        if let Some(k) = *key {
            let (gone, bye) = match c.live.borrow().get(k) {
                None => (true, false),
                Some(p) => (false, p.all_said_bye()),
            };
            if gone {
                // Stopped by the admin API, or silent past the timeout.
                player.teardown(t);
                let _ = stream.write_all(&player.take_output()).await;
                *key = None;
                return End::Gone("the broadcast ended".into());
            }
            if bye && !tearing_down {
                player.teardown(t);
                let _ = stream.write_all(&player.take_output()).await;
                return End::Gone("the origin said BYE".into());
            }
        }
        if relay.mode == Mode::OnDemand && !tearing_down {
            if c.relay_viewers(&relay.path) > 0 {
                idle_since = None;
            } else if t.saturating_sub(*idle_since.get_or_insert(t)) >= IDLE_STOP {
                tearing_down = true;
                player.teardown(t);
                continue;
            }
        }
        if c.stopping.get() && !tearing_down {
            tearing_down = true;
            player.teardown(t);
            continue;
        }
        let wait = player
            .poll_timeout()
            .map_or(TICK, |at| Duration::from_nanos(at.saturating_sub(t)).min(TICK))
            .max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(wait));
        match stream.read(&mut buf).await {
            Ok(0) => return End::Gone("the origin closed the connection".into()),
            Ok(n) => player.handle_input(now(), &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return End::Gone(format!("the connection to the origin failed: {e}")),
        }
        let t = now();
        if player.poll_timeout().is_some_and(|at| at <= t) {
            player.handle_timeout(t);
        }
    }
}

/// The origin's description as this server's broadcast: its publisher
/// registered (not yet on the air), its UDP pairs bound and read. Returns
/// the publisher's key and, per stream, what to SET UP and how.
fn register(
    c: &Rc<Control>,
    relay: &Relay,
    origin: SocketAddr,
    content_type: Option<&str>,
    sdp: &[u8],
    base: &str,
) -> Result<(SessionKey, Vec<(String, Carriage)>), RelayError> {
    let id = c.live.borrow_mut().take_id();
    let desc =
        describe::parse(id, &relay.path, content_type, sdp).map_err(|e| RelayError::BadDescription(e.to_string()))?;
    let mut streams = Vec::new();
    let mut paths = Vec::new();
    let mut sockets = Vec::new();
    for (i, t) in desc.tracks.iter().enumerate() {
        let control = match &t.control {
            Some(ctl) => resolve(base, ctl),
            None => base.to_owned(),
        };
        match relay.transport {
            RelayTransport::Tcp => {
                let (a, b) = crate::live::relay::tcp_channels(i);
                streams.push((control, Carriage::Tcp));
                paths.push(LivePath::Tcp {
                    rtp_channel: a,
                    rtcp_channel: b,
                });
            }
            RelayTransport::Udp => {
                let pair = net::bind_pair(c.config.bind, c.config.rtp_ports.clone());
                let (pair, ports) = pair
                    .and_then(|p| p.ports().map(|ports| (p, ports)))
                    .map_err(|e| RelayError::BadDescription(format!("no UDP port pair for the relay: {e}")))?;
                streams.push((control, Carriage::Udp { client_port: ports }));
                paths.push(LivePath::Udp {
                    client: ports,
                    server: (0, 0),
                });
                sockets.push((i, pair));
            }
        }
    }
    let key = c.new_key();
    let registered = c
        .live
        .borrow_mut()
        .open_relay(key, desc, origin, shown(relay.url.as_str()), paths, now());
    if registered.is_none() {
        return Err(RelayError::BadDescription(format!(
            "{} has a publisher already",
            relay.path
        )));
    }
    for (track, pair) in sockets {
        let net::UdpPair { rtp, rtcp } = pair;
        for (socket, is_rtcp) in [(rtp, false), (rtcp, true)] {
            glommio::spawn_local(udp_ingest(c.me.clone(), key, track, socket, is_rtcp, Some(origin.ip()))).detach();
        }
    }
    Ok((key, streams))
}

/// The interleaved channels the origin chose, into the publisher's paths.
fn set_channels(c: &Control, key: SessionKey, tracks: &[Negotiated]) {
    let mut live = c.live.borrow_mut();
    let Some(p) = live.get_mut(key) else { return };
    for (slot, t) in p.paths.iter_mut().zip(tracks) {
        match (slot.as_mut(), t) {
            (
                Some(LivePath::Tcp {
                    rtp_channel,
                    rtcp_channel,
                }),
                Negotiated::Tcp { channels },
            ) => {
                *rtp_channel = channels.0;
                *rtcp_channel = channels.1;
            }
            (Some(LivePath::Udp { server, .. }), Negotiated::Udp { server_port }) => *server = *server_port,
            _ => {}
        }
    }
}

/// Marks a relay's stream whose RTCP said BYE.
pub(super) fn note_bye(p: &mut crate::live::registry::Publisher, track: usize, data: &[u8]) {
    if p.origin.is_some() && track < 32 && is_bye(data) {
        p.byes |= 1 << track;
    }
}
