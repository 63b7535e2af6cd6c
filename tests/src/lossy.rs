//! A lossy network for clients: a network namespace of the test's own,
//! joined to this one by a veth pair, where nftables drops a share of the
//! server's RTP at random (`numgen random`; this kernel has no netem).
//!
//! The server listens on the pair's outer address; a client runs inside
//! the namespace (`ip netns exec`). Only datagrams from the server's even
//! ports (RTP, and RTX riding on it) are dropped, as they arrive: RTCP and
//! the RTSP connection go through whole. The rule counts what it drops, so
//! a test can say how many packets were lost on the wire (one by one: the
//! outer end cuts GSO buffers into their datagrams).
//!
//! [`LossyNet::limit`] also limits the bandwidth into the namespace
//! (`tc`'s `tbf`), for a client on a link slower than the movie.
//!
//! Each namespace has a unique name and a /30 of its own, so tests run in
//! parallel; dropping the [`LossyNet`] deletes the namespace (with its end
//! of the pair and its nftables table) and the outer end of the pair,
//! whether the test passed or panicked.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with loss on the way in. See the module documentation.
pub struct LossyNet {
    pub name: String,
    /// The outer end's address: where the server listens.
    pub server_ip: Ipv4Addr,
    /// The namespace's address: where the clients are.
    pub client_ip: Ipv4Addr,
    outer: String,
    /// What the drop counter said at the last [`reset`](LossyNet::reset).
    dropped_before: std::cell::Cell<u64>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}; iproute2 is installed by tools/test"))
}

fn ok(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}); the loss tests need root (network namespaces, nftables):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl LossyNet {
    /// A namespace whose clients lose `percent` of the server's RTP coming
    /// from ports `ports` (the server's `--rtp-ports`).
    pub fn new(percent: u8, ports: (u16, u16)) -> LossyNet {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // At most 15 characters for an interface name.
        let tag = format!("{:05}{}", pid % 100_000, n % 10);
        let name = format!("snl{tag}");
        let outer = format!("snlo{tag}");
        let inner = format!("snli{tag}");
        // A /30 of 10.200.0.0-10.249.255.255 from the process and the
        // count: one subnet each, so that two tests of one process (which
        // run side by side) never share a route.
        let offset = ((pid % 50_000) * 16 + n % 16) * 4;
        let base = Ipv4Addr::new(10, 200 + (offset >> 16) as u8, (offset >> 8) as u8, offset as u8);
        let [a, b, c, d] = base.octets();
        let server_ip = Ipv4Addr::new(a, b, c, d + 1);
        let client_ip = Ipv4Addr::new(a, b, c, d + 2);
        let net = LossyNet {
            name,
            server_ip,
            client_ip,
            outer,
            dropped_before: std::cell::Cell::new(0),
        };
        // From here on, Drop cleans up whatever was made.
        ok("ip netns add", ip(&["netns", "add", &net.name]));
        ok(
            "ip link add veth",
            ip(&["link", "add", &net.outer, "type", "veth", "peer", "name", &inner]),
        );
        ok("ip link set netns", ip(&["link", "set", &inner, "netns", &net.name]));
        // The server sends runs of equal-size datagrams to one client as
        // one GSO buffer, which a veth passes on whole: the rule would drop
        // a run at a time and count it as one. A real network loses
        // datagrams one by one, so the buffers are cut before they cross.
        ok(
            "ip link set gso_max_segs",
            ip(&["link", "set", &net.outer, "gso_max_segs", "1"]),
        );
        ok(
            "ip addr add",
            ip(&["addr", "add", &format!("{server_ip}/30"), "dev", &net.outer]),
        );
        ok("ip link set up", ip(&["link", "set", &net.outer, "up"]));
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ok(
            "ip addr add (namespace)",
            in_ns(&["addr", "add", &format!("{client_ip}/30"), "dev", &inner]),
        );
        ok("ip link set up (namespace)", in_ns(&["link", "set", &inner, "up"]));
        ok("ip link set lo up (namespace)", in_ns(&["link", "set", "lo", "up"]));
        let rules = format!(
            "table inet lossy {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             ip saddr {server_ip} udp sport {}-{} udp sport & 1 == 0 numgen random mod 100 < {percent} counter drop\n  }}\n}}\n",
            ports.0, ports.1
        );
        let mut nft = net.command("nft");
        nft.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = nft
            .spawn()
            .expect("cannot run nft; nftables is installed by tools/test");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(rules.as_bytes())
                .expect("nft's stdin");
        }
        ok("nft -f", child.wait_with_output().expect("nft"));
        net
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Packets dropped since the namespace was made or last [`reset`](Self::reset).
    pub fn dropped(&self) -> u64 {
        self.counter() - self.dropped_before.get()
    }

    /// The drop rule's counter.
    fn counter(&self) -> u64 {
        let out = self
            .command("nft")
            .args(["list", "table", "inet", "lossy"])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no drop counter in:\n{text}"))
    }

    /// Limits what reaches the namespace to `kbit` kilobits a second with a
    /// token bucket (`tc qdisc ... tbf`) on the outer end of the pair, the
    /// way into the namespace; a queue of a quarter of a second, past which
    /// the link drops as a slow link would.
    pub fn limit(&self, kbit: u32) {
        let rate = format!("{kbit}kbit");
        let out = Command::new("tc")
            .args(["qdisc", "replace", "dev", &self.outer, "root", "tbf", "rate", &rate])
            .args(["burst", "4kb", "latency", "250ms"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tc: {e}; iproute2 is installed by tools/test"));
        ok("tc qdisc replace tbf", out);
    }

    /// What `tc -s qdisc show` says of the way into the namespace.
    pub fn qdisc(&self) -> String {
        let out = Command::new("tc")
            .args(["-s", "qdisc", "show", "dev", &self.outer])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tc: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes the limit of [`limit`](Self::limit) away.
    pub fn unlimit(&self) {
        let out = Command::new("tc")
            .args(["qdisc", "del", "dev", &self.outer, "root"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tc: {e}"));
        ok("tc qdisc del", out);
    }

    /// Counts drops from zero again, between two clients. (The count is
    /// taken as a baseline: `nft reset counters` resets named counters
    /// only, not the rule's own, in nftables 1.0.)
    pub fn reset(&self) {
        self.dropped_before.set(self.counter());
    }
}

impl Drop for LossyNet {
    fn drop(&mut self) {
        // The namespace takes its end of the pair, which takes the other,
        // and its nftables table; the outer end is deleted too in case the
        // pair never made it into the namespace.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.outer]);
    }
}
