//! The control core's book of RTSP-over-HTTP tunnels, without IO: which
//! cookie belongs to which tunnel, whose it is, and where it runs, so that
//! the two legs of a tunnel, arriving as two connections in either order and
//! a POST again whenever the client reopens it, find each other.
//!
//! A tunnel is born with its first leg. A GET waits for its POST, a POST
//! that came first (real clients send the GET first and wait for its answer,
//! but a proxy may reorder) waits for its GET, each at most the pairing
//! window; past it the waiting leg is given up ([`Registry::expire`]): a GET
//! closed, a POST answered 404, since its cookie matched nothing. Paired, a
//! tunnel runs on the control core until a SETUP asks for interleaved media,
//! then on that session's shard, with both legs ([`Registry::moved`]); a POST
//! that arrives later goes wherever it runs. It ends when its GET leg does
//! ([`Registry::close`]).
//!
//! Refusals:
//!
//! - **403 Forbidden**: a leg for a cookie that belongs to a tunnel of
//!   another client address. The cookie is all that ties the legs together,
//!   so without this anyone who learnt one could inject requests into
//!   someone else's RTSP session. (It costs clients behind a pool of proxies
//!   that send the two legs from different addresses; Apple's document asks
//!   proxies to keep them together.)
//! - **409 Conflict**: a second GET for a cookie that has its GET, or a
//!   second POST for a cookie still waiting for its GET.
//! - **404 Not Found**: a POST whose cookie no GET claimed within the window.

use std::collections::HashMap;
use std::net::IpAddr;

use proto::tunnel::Cookie;

use crate::pacer::KeyMap;
use crate::source::Nanos;

/// How long the first leg of a tunnel waits for the other.
pub const PAIRING_WINDOW: Nanos = 5_000_000_000;

/// A tunnel, by the number the control core gave it.
pub type TunnelId = u64;

/// Where a tunnel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Control,
    Shard(usize),
}

/// Where a POST leg goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTo {
    /// To its tunnel, which runs there.
    Tunnel(Place),
    /// Nobody has its cookie yet: it waits for its GET.
    Held,
}

/// A leg that cannot join a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the cookie belongs to another client's tunnel")]
    Foreign,
    #[error("the cookie's tunnel already has that leg")]
    Busy,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Foreign => 403,
            Refusal::Busy => 409,
        }
    }
}

/// A leg given up by [`Registry::expire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A GET whose POST never came: close it.
    Get(TunnelId),
    /// A POST whose GET never came: 404, and close it.
    Post(TunnelId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The GET is answered; its first POST has not come.
    AwaitingPost,
    /// A POST came first and waits for its GET.
    AwaitingGet,
    Running(Place),
}

#[derive(Debug)]
struct Entry {
    id: TunnelId,
    client: IpAddr,
    state: State,
    /// When a waiting leg is given up.
    deadline: Nanos,
}

/// The tunnels by cookie. See the module documentation.
#[derive(Debug)]
pub struct Registry {
    window: Nanos,
    by_cookie: HashMap<Cookie, Entry>,
    cookies: KeyMap<TunnelId, Cookie>,
    next_id: TunnelId,
}

impl Registry {
    /// A registry whose waiting legs wait `window` for each other.
    pub fn new(window: Nanos) -> Registry {
        Registry {
            window,
            by_cookie: HashMap::new(),
            cookies: KeyMap::default(),
            next_id: 1,
        }
    }

    fn insert(&mut self, cookie: &Cookie, client: IpAddr, state: State, now: Nanos) -> TunnelId {
        let id = self.next_id;
        self.next_id += 1;
        self.cookies.insert(id, cookie.clone());
        let deadline = now.saturating_add(self.window);
        self.by_cookie.insert(
            cookie.clone(),
            Entry {
                id,
                client,
                state,
                deadline,
            },
        );
        id
    }

    /// A GET from `client` with `cookie`: the tunnel it opens, and whether a
    /// POST is already waiting for it (the caller has it, and the tunnel now
    /// runs on the control core).
    pub fn get(&mut self, cookie: &Cookie, client: IpAddr, now: Nanos) -> Result<(TunnelId, bool), Refusal> {
        let Some(e) = self.by_cookie.get_mut(cookie) else {
            return Ok((self.insert(cookie, client, State::AwaitingPost, now), false));
        };
        if e.client != client {
            return Err(Refusal::Foreign);
        }
        match e.state {
            State::AwaitingGet => {
                e.state = State::Running(Place::Control);
                Ok((e.id, true))
            }
            State::AwaitingPost | State::Running(_) => Err(Refusal::Busy),
        }
    }

    /// A POST from `client` with `cookie`: its tunnel and where the leg goes.
    pub fn post(&mut self, cookie: &Cookie, client: IpAddr, now: Nanos) -> Result<(TunnelId, PostTo), Refusal> {
        let Some(e) = self.by_cookie.get_mut(cookie) else {
            return Ok((self.insert(cookie, client, State::AwaitingGet, now), PostTo::Held));
        };
        if e.client != client {
            return Err(Refusal::Foreign);
        }
        match e.state {
            State::AwaitingPost => {
                e.state = State::Running(Place::Control);
                Ok((e.id, PostTo::Tunnel(Place::Control)))
            }
            State::Running(place) => Ok((e.id, PostTo::Tunnel(place))),
            State::AwaitingGet => Err(Refusal::Busy),
        }
    }

    /// Tunnel `id` now runs at `place`.
    pub fn moved(&mut self, id: TunnelId, place: Place) {
        if let Some(e) = self.cookies.get(&id).and_then(|c| self.by_cookie.get_mut(c)) {
            e.state = State::Running(place);
        }
    }

    /// Tunnel `id` has ended; its cookie may start another.
    pub fn close(&mut self, id: TunnelId) {
        if let Some(cookie) = self.cookies.remove(&id) {
            self.by_cookie.remove(&cookie);
        }
    }

    /// Gives up the legs that waited past the window, and says which.
    pub fn expire(&mut self, now: Nanos) -> Vec<Expired> {
        let mut gone = Vec::new();
        self.by_cookie.retain(|_, e| {
            let waiting = match e.state {
                State::AwaitingPost => Some(Expired::Get(e.id)),
                State::AwaitingGet => Some(Expired::Post(e.id)),
                State::Running(_) => None,
            };
            match waiting {
                Some(x) if now >= e.deadline => {
                    gone.push(x);
                    false
                }
                _ => true,
            }
        });
        for x in &gone {
            let (Expired::Get(id) | Expired::Post(id)) = x;
            self.cookies.remove(id);
        }
        gone
    }

    /// Where tunnel `id` runs, if it does.
    pub fn place(&self, id: TunnelId) -> Option<Place> {
        let e = self.by_cookie.get(self.cookies.get(&id)?)?;
        match e.state {
            State::Running(p) => Some(p),
            _ => None,
        }
    }

    /// Tunnels open or being paired.
    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const S: Nanos = 1_000_000_000;

    fn cookie(s: &str) -> Cookie {
        Cookie::parse(s).unwrap()
    }

    #[test]
    fn get_then_posts_follow_the_tunnel() {
        let mut r = Registry::new(5 * S);
        let c = cookie("884928239fc85e21");
        let (id, held) = r.get(&c, A, 0).unwrap();
        assert!(!held);
        assert_eq!(r.place(id), None, "not running before its POST");
        assert_eq!(r.post(&c, A, S), Ok((id, PostTo::Tunnel(Place::Control))));
        assert_eq!(r.get(&c, A, S), Err(Refusal::Busy), "a second GET");
        r.moved(id, Place::Shard(1));
        // A POST reopened later, past the window: the tunnel runs, so no expiry.
        assert!(r.expire(60 * S).is_empty());
        assert_eq!(r.post(&c, A, 60 * S), Ok((id, PostTo::Tunnel(Place::Shard(1)))));
        assert_eq!(r.post(&c, B, 60 * S), Err(Refusal::Foreign), "someone else's cookie");
        assert_eq!(r.get(&c, B, 60 * S).map_err(Refusal::status), Err(403));
        r.close(id);
        assert!(r.is_empty());
        // The cookie may start a new tunnel, with a new number.
        let (again, _) = r.get(&c, B, 61 * S).unwrap();
        assert_ne!(again, id);
    }

    #[test]
    fn a_post_may_come_first() {
        let mut r = Registry::new(5 * S);
        let c = cookie("osspxdxxypmwsvdebfqqaqq");
        let (id, to) = r.post(&c, A, 0).unwrap();
        assert_eq!(to, PostTo::Held);
        assert_eq!(r.post(&c, A, 0), Err(Refusal::Busy), "a second POST before the GET");
        assert_eq!(r.get(&c, B, S), Err(Refusal::Foreign));
        assert_eq!(r.get(&c, A, S), Ok((id, true)));
        assert_eq!(r.place(id), Some(Place::Control));
    }

    #[test]
    fn waiting_legs_are_given_up_after_the_window() {
        let mut r = Registry::new(5 * S);
        let (get, _) = r.get(&cookie("g"), A, 0).unwrap();
        let (post, _) = r.post(&cookie("p"), A, 2 * S).unwrap();
        let (paired, _) = r.get(&cookie("x"), A, 0).unwrap();
        r.post(&cookie("x"), A, S).unwrap();
        assert!(r.expire(5 * S - 1).is_empty());
        assert_eq!(r.expire(5 * S), [Expired::Get(get)]);
        assert_eq!(r.expire(7 * S), [Expired::Post(post)]);
        assert_eq!((r.len(), r.place(paired)), (1, Some(Place::Control)));
        // Given up, a POST's cookie is unknown again: it is held anew.
        assert_eq!(r.post(&cookie("p"), A, 8 * S).map(|x| x.1), Ok(PostTo::Held));
    }
}
