//! Flow state shared between balancers behind a floating address (keepalived VIP), so that the
//! host the VIP moves to already knows every established flow. Each agent sends its peers the
//! flows its data path opens and ends (reported by the XDP program), in batches, authenticated
//! with a shared key; a peer installs them in its own connection table through the table's
//! owner (the sweep thread). A peer that was away (a new session) gets a full dump at once, and
//! every flow is sent again each `refresh` so that quiet flows do not expire on the peers.
//! NAT ports never collide: each node allocates from its own share (`Global::own_nat_ports`).

pub mod wire;

use std::{
    collections::{HashMap, VecDeque},
    net::{SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::mpsc};
use wire::{Dropped, Header, Key, Kind, FLOWS_PER_DATAGRAM, MAX_DATAGRAM};

use crate::{
    config::SyncCfg,
    dataplane::{flows::FlowPair, sweeper::FlowsHandle},
    model::Topology,
};

/// What the data path reports of a flow (through its ring buffer).
#[derive(Debug, Clone, Copy)]
pub enum FlowEvent {
    Opened(FlowPair),
    Closed(FlowPair),
}

impl From<&lb_common::FlowEvent> for FlowEvent {
    /// A flow established is sent to the peers; one ended (by a packet, or expired by the sweep)
    /// is removed from theirs.
    fn from(e: &lb_common::FlowEvent) -> FlowEvent {
        let pair = FlowPair { client_key: e.client_key, client: e.client, server_key: e.server_key, server: e.server };
        if e.kind == lb_common::FLOW_EVENT_ESTABLISHED {
            FlowEvent::Opened(pair)
        } else {
            FlowEvent::Closed(pair)
        }
    }
}

/// Flows waiting to be sent, at most (beyond, they wait for the next refresh; counted).
const QUEUE_LIMIT: usize = 1 << 20;
const HELLO_EVERY: Duration = Duration::from_secs(1);
/// A peer not heard of for this long is shown as away.
const PEER_AWAY: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(10);

/// One peer as this agent knows it.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    pub addr: Option<SocketAddrV4>,
    pub node: u32,
    pub session: u64,
    pub last_heard: Option<Instant>,
    /// Its configuration's ids differ from ours: its flows are not installed.
    pub mismatch: bool,
    pub dumps_sent: u64,
}

impl PeerView {
    pub fn up(&self) -> bool {
        self.last_heard.is_some_and(|t| t.elapsed() < PEER_AWAY)
    }
}

/// Counters of the sync (status page, `/metrics`, tests).
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    pub messages_sent: u64,
    pub flows_sent: u64,
    pub messages_received: u64,
    pub flows_installed: u64,
    pub flows_refreshed: u64,
    pub flows_removed: u64,
    pub install_failed: u64,
    /// Flows not queued because the queue was full (the next refresh sends them).
    pub queue_full: u64,
    /// Datagrams dropped, by reason (`Dropped::name`), and from addresses that are no peer.
    pub dropped: HashMap<&'static str, u64>,
    pub peers: Vec<PeerView>,
}

impl SyncStats {
    /// Counters by name, for the status snapshot and `/metrics`.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = [
            ("messages_sent", self.messages_sent),
            ("flows_sent", self.flows_sent),
            ("messages_received", self.messages_received),
            ("flows_installed", self.flows_installed),
            ("flows_refreshed", self.flows_refreshed),
            ("flows_removed", self.flows_removed),
            ("install_failed", self.install_failed),
            ("queue_full", self.queue_full),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let reasons = Dropped::ALL.iter().map(|d| d.name()).chain(["unknown_peer"]);
        out.extend(reasons.map(|r| (format!("dropped_{r}"), self.dropped.get(r).copied().unwrap_or(0))));
        out
    }

    pub fn peers_up(&self) -> u64 {
        self.peers.iter().filter(|p| p.up()).count() as u64
    }
}

pub type SharedStats = Arc<Mutex<SyncStats>>;

/// A hash of the ids flows carry (frontends, pools, servers by name): peers install each
/// other's flows only when theirs match.
pub fn fingerprint(t: &Topology) -> u64 {
    use std::fmt::Write;
    let mut text = String::new();
    for f in &t.frontends {
        let _ = writeln!(text, "f {} {} {}", f.name, f.id, f.pool_id);
    }
    for (p, s) in t.servers() {
        let _ = writeln!(text, "s {} {} {} {} {}", p.name, p.id, s.name, s.id, s.addr);
    }
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().take(8).fold(0u64, |acc, b| acc << 8 | u64::from(*b))
}

/// Sends flows to the peers at `max_messages_per_sec` datagrams a second at most.
struct Outbox {
    /// New and refreshed flows for every peer.
    flows: VecDeque<FlowPair>,
    closed: VecDeque<FlowPair>,
    /// A full dump for one peer that came back.
    dumps: HashMap<SocketAddrV4, VecDeque<FlowPair>>,
    tokens: f64,
    rate: f64,
}

impl Outbox {
    fn push(q: &mut VecDeque<FlowPair>, f: FlowPair, stats: &SharedStats) {
        if q.len() >= QUEUE_LIMIT {
            stats.lock().unwrap_or_else(PoisonError::into_inner).queue_full += 1;
        } else {
            q.push_back(f);
        }
    }
}

/// The running sync: a task of its own on the agent's runtime.
pub struct Sync {
    pub stats: SharedStats,
    fingerprint: Arc<Mutex<u64>>,
}

impl Sync {
    /// Binds `cfg.listen` and starts the task. `events` are the data path's flow reports.
    pub async fn start(
        cfg: &SyncCfg,
        secret: &[u8],
        topology: &Topology,
        flows: FlowsHandle,
        events: mpsc::Receiver<FlowEvent>,
    ) -> std::io::Result<Sync> {
        let socket = UdpSocket::bind(cfg.listen).await?;
        let stats: SharedStats = Arc::new(Mutex::new(SyncStats {
            peers: cfg.peers.iter().map(|a| PeerView { addr: Some(*a), ..PeerView::default() }).collect(),
            ..SyncStats::default()
        }));
        let fp = Arc::new(Mutex::new(fingerprint(topology)));
        let task = Task {
            cfg: cfg.clone(),
            key: Key::new(secret),
            socket,
            flows,
            stats: stats.clone(),
            fingerprint: fp.clone(),
            session: session_id(),
            seq: 0,
            said_mismatch: HashMap::new(),
        };
        tokio::spawn(task.run(events));
        Ok(Sync { stats, fingerprint: fp })
    }

    /// The configuration changed (a reload): flows carry ids, so peers compare them anew.
    pub fn set_topology(&self, t: &Topology) {
        *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner) = fingerprint(t);
    }

    pub fn snapshot(&self) -> SyncStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn session_id() -> u64 {
    use std::hash::BuildHasher;
    // Never 0 (0 means "not heard of yet").
    std::collections::hash_map::RandomState::new().hash_one(std::process::id()) | 1
}

struct Task {
    cfg: SyncCfg,
    key: Key,
    socket: UdpSocket,
    flows: FlowsHandle,
    stats: SharedStats,
    fingerprint: Arc<Mutex<u64>>,
    session: u64,
    seq: u64,
    said_mismatch: HashMap<SocketAddrV4, bool>,
}

impl Task {
    async fn run(mut self, mut events: mpsc::Receiver<FlowEvent>) {
        let rate = f64::from(self.cfg.max_messages_per_sec);
        let mut out = Outbox {
            flows: VecDeque::new(),
            closed: VecDeque::new(),
            dumps: HashMap::new(),
            tokens: rate / 10.0,
            rate,
        };
        let mut tick = tokio::time::interval(TICK);
        let mut hello = tokio::time::interval(HELLO_EVERY);
        let mut refresh = tokio::time::interval(self.cfg.refresh.0);
        refresh.reset();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut events_open = true;
        loop {
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let datagram = buf.get(..n).unwrap_or_default().to_vec();
                        self.receive(&datagram, from, &mut out).await;
                    }
                    Err(e) => log::warn!("sync: receiving on {}: {e}", self.cfg.listen),
                },
                ev = events.recv(), if events_open => match ev {
                    Some(FlowEvent::Opened(f)) => Outbox::push(&mut out.flows, f, &self.stats),
                    Some(FlowEvent::Closed(f)) => Outbox::push(&mut out.closed, f, &self.stats),
                    None => events_open = false,
                },
                _ = tick.tick() => self.send(&mut out, TICK).await,
                _ = hello.tick() => {
                    for peer in self.cfg.peers.clone() {
                        self.send_one(Kind::Hello, &[], peer).await;
                    }
                }
                _ = refresh.tick() => {
                    for f in self.flows.dump().await {
                        Outbox::push(&mut out.flows, f, &self.stats);
                    }
                }
            }
        }
    }

    fn header(&mut self, kind: Kind) -> Header {
        self.seq += 1;
        Header {
            kind,
            node: self.cfg.node,
            session: self.session,
            seq: self.seq,
            fingerprint: *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    async fn send_one(&mut self, kind: Kind, flows: &[FlowPair], to: SocketAddrV4) {
        let h = self.header(kind);
        let d = wire::encode(&self.key, &h, flows);
        match self.socket.send_to(&d, to).await {
            Ok(_) => {
                let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                s.messages_sent += 1;
                s.flows_sent += flows.len() as u64;
            }
            Err(e) => log::debug!("sync: sending to {to}: {e}"),
        }
    }

    /// Sends what the rate allows: closes first (they free the peers' tables), then dumps for
    /// peers that came back, then new flows.
    async fn send(&mut self, out: &mut Outbox, elapsed: Duration) {
        out.tokens = (out.tokens + out.rate * elapsed.as_secs_f64()).min(out.rate.max(1.0));
        let peers = self.cfg.peers.clone();
        while out.tokens >= 1.0 {
            let (kind, batch, to): (Kind, Vec<FlowPair>, Vec<SocketAddrV4>) = if !out.closed.is_empty() {
                (Kind::Closed, drain(&mut out.closed), peers.clone())
            } else if let Some((&peer, q)) = out.dumps.iter_mut().find(|(_, q)| !q.is_empty()) {
                (Kind::Flows, drain(q), vec![peer])
            } else if !out.flows.is_empty() {
                (Kind::Flows, drain(&mut out.flows), peers.clone())
            } else {
                break;
            };
            for peer in to {
                self.send_one(kind, &batch, peer).await;
                out.tokens -= 1.0;
            }
        }
        out.dumps.retain(|_, q| !q.is_empty());
    }

    async fn receive(&mut self, datagram: &[u8], from: SocketAddr, out: &mut Outbox) {
        // A peer is known by its address (its messages may come from another port).
        let known = match from {
            SocketAddr::V4(a) => self.cfg.peers.iter().find(|p| p.ip() == a.ip()).copied(),
            SocketAddr::V6(_) => None,
        };
        let Some(peer) = known else {
            self.drop_counted("unknown_peer");
            return;
        };
        let m = match wire::decode(&self.key, datagram) {
            Ok(m) => m,
            Err(why) => {
                self.dropped(why, peer);
                return;
            }
        };
        let ours = *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner);
        let mismatch = m.header.fingerprint != ours;
        let new_session = {
            let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.messages_received += 1;
            let Some(view) = s.peers.iter_mut().find(|p| p.addr == Some(peer)) else { return };
            let new_session = view.session != m.header.session;
            view.session = m.header.session;
            view.node = m.header.node;
            view.last_heard = Some(Instant::now());
            view.mismatch = mismatch;
            if new_session && !mismatch {
                view.dumps_sent += 1;
            }
            new_session
        };
        if mismatch {
            if !self.said_mismatch.insert(peer, true).unwrap_or(false) {
                log::error!(
                    "sync: peer {peer} (node {}) runs another configuration (frontends, backends or servers differ): its flows are not installed, and flows will not survive a failover between us; give both the same configuration",
                    m.header.node
                );
            }
            return;
        }
        if self.said_mismatch.remove(&peer).is_some() {
            log::info!("sync: peer {peer} now runs the same configuration; sharing flows");
        }
        if new_session {
            // A peer that (re)started knows nothing of our flows: all of them, at once.
            let all = self.flows.dump().await;
            log::info!("sync: peer {peer} (node {}) is here; sending it our {} flow(s)", m.header.node, all.len());
            out.dumps.insert(peer, all.into());
        }
        match m.header.kind {
            Kind::Hello => {}
            Kind::Flows => {
                let r = self.flows.install(m.flows).await;
                let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                s.flows_installed += r.new as u64;
                s.flows_refreshed += r.refreshed as u64;
                s.install_failed += r.failed as u64;
            }
            Kind::Closed => {
                let n = self.flows.remove(m.flows).await;
                self.stats.lock().unwrap_or_else(PoisonError::into_inner).flows_removed += n as u64;
            }
        }
    }

    fn drop_counted(&self, why: &'static str) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner).dropped.entry(why).or_default() += 1;
    }

    fn dropped(&self, why: Dropped, peer: SocketAddrV4) {
        log::debug!("sync: dropped a datagram from {peer}: {why}");
        self.drop_counted(why.name());
    }
}

fn drain(q: &mut VecDeque<FlowPair>) -> Vec<FlowPair> {
    let n = q.len().min(FLOWS_PER_DATAGRAM);
    q.drain(..n).collect()
}
