//! The state of each link and of the link layer as a whole.

use super::auth::{self, Jitter, Key, Role};
use super::config::{self, LinkConfig};
use super::dedupe::Dedupe;
use super::net;
use super::proto;
use super::queue::LinkQueue;
use super::seal::{Exhausted, Opener, Protection, Sealer};
use super::topo::{DaemonId, Subs, Topology};
use crate::wire::{FrameReader, LinkInfo};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use super::net::{configure, connect_result, dial, send};

/// Index of a link in [`Links::slots`].
pub type LinkId = usize;

/// Epoll token of the link listener; link `i` uses `FIRST_LINK_TOKEN + i`. Far above any
/// client token.
pub const LISTENER_TOKEN: u64 = 1 << 48;
/// Epoll token of the first link.
pub const FIRST_LINK_TOKEN: u64 = LISTENER_TOKEN + 1;
/// Received messages acknowledged at once when this many are unacknowledged.
pub const ACK_EVERY: u64 = 64;
/// Otherwise acknowledgements wait at most this long (several go out as one).
pub const ACK_DELAY: Duration = Duration::from_millis(20);
/// Sealed bytes kept ready for the socket, per connection (one record more at most).
pub const WIRE_TARGET: usize = 64 * 1024;
/// Bytes of frames packed into one sealed record, at most (unless a single frame is larger).
pub const RECORD_TARGET: usize = 16 * 1024;
/// Refused connections are logged at most once per this interval (the others are counted
/// and summed up in the next line).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection (waiting to redial, or for the peer to come back).
    Down,
    /// TCP connect in progress.
    Connecting,
    /// Hello sent, waiting for the peer's.
    Hello,
    /// Proof sent, waiting for the peer's.
    Auth,
    /// Authenticated, waiting for the peer's `Ready`.
    Sync,
    /// Carrying traffic.
    Up,
}

impl State {
    /// As shown by `qcop stats`.
    pub fn name(self) -> &'static str {
        match self {
            State::Down => "down",
            State::Connecting => "connecting",
            State::Hello | State::Auth | State::Sync => "handshake",
            State::Up => "up",
        }
    }

    /// Before authentication completed.
    pub fn unauthenticated(self) -> bool {
        matches!(self, State::Connecting | State::Hello | State::Auth)
    }
}

/// Per-link counters, shown by `qcop stats`.
#[derive(Debug, Default, Clone)]
pub struct LinkCounters {
    /// Messages written to the peer.
    pub messages_out: u64,
    /// Bytes written to the peer (all frames).
    pub bytes_out: u64,
    /// `sendmsg` calls that wrote them (several frames go out in one).
    pub writes: u64,
    /// Messages received from the peer.
    pub messages_in: u64,
    /// Bytes received from the peer (all frames).
    pub bytes_in: u64,
    /// Calls forwarded to the peer.
    pub calls_out: u64,
    /// Calls received from the peer.
    pub calls_in: u64,
    /// Messages dropped because the link's buffer was full (down, or a slow peer).
    pub dropped_buffer_full: u64,
    /// Messages written before the peer restarted and not confirmed: not resent, so that
    /// none can arrive twice.
    pub dropped_unconfirmed: u64,
    /// Buffered messages nobody behind the link wanted any more when it came back.
    pub dropped_unwanted: u64,
    /// Messages from the peer on channels this link does not import.
    pub dropped_not_imported: u64,
    /// Messages from the peer that break this daemon's name or size limits.
    pub dropped_invalid: u64,
    /// Messages too large for the peer's limits.
    pub dropped_too_large: u64,
    /// Calls from the peer refused by the calls-in-flight limit.
    pub dropped_limit: u64,
    /// Messages and calls received a second time (by another path) and dropped.
    pub duplicates: u64,
    /// Times the link came up again after having been up.
    pub reconnects: u64,
    /// Frames after the handshake refused because they failed authentication (forged,
    /// altered, replayed, reordered, or following a lost one) or came unprotected; each
    /// closed the connection.
    pub frames_rejected: u64,
    /// Connections that ended in the middle of a frame after the handshake.
    pub truncated: u64,
}

/// One TCP connection of a link.
pub struct Conn {
    /// The socket (non-blocking).
    pub stream: TcpStream,
    /// Frames being received.
    pub reader: FrameReader,
    /// Which end this daemon is.
    pub role: Role,
    /// The far address.
    pub remote: SocketAddr,
    /// Our `Hello`, as sent (part of the authenticated transcript).
    pub my_hello: Vec<u8>,
    /// The peer's `Hello`, as received.
    pub peer_hello: Vec<u8>,
    /// End of the handshake allowance (until `Up`).
    pub deadline: Instant,
    /// When the last complete frame arrived.
    pub last_rx: Instant,
    /// When the next keepalive ping is due.
    pub next_ping: Instant,
    /// When received messages must be acknowledged at the latest.
    pub ack_due: Option<Instant>,
    /// EPOLLOUT is registered.
    pub want_write: bool,
    /// The id the peer claimed in its `Hello` (trusted once it authenticated).
    pub hello_id: DaemonId,
    /// The name the peer gave in its `Hello`.
    pub hello_name: String,
    /// Our `Auth`, as sent (part of the session keys' input).
    pub my_auth: Vec<u8>,
    /// Seals what we send once the peer's proof checked out.
    pub tx: Option<Sealer>,
    /// Opens what the peer sends after its proof.
    pub rx: Option<Opener>,
    /// Bytes ready for the socket: handshake frames in the clear, then sealed records.
    pub wire: Vec<u8>,
    /// The first `wire_sent` bytes of `wire` are written.
    pub wire_sent: usize,
    /// Where received records are decrypted.
    pub scratch: Vec<u8>,
}

impl Conn {
    /// A connection starting its handshake.
    pub fn new(stream: TcpStream, role: Role, remote: SocketAddr, deadline: Instant) -> Conn {
        let now = Instant::now();
        Conn {
            stream,
            reader: FrameReader::new(proto::PREAUTH_MAX_BODY),
            role,
            remote,
            my_hello: Vec::new(),
            peer_hello: Vec::new(),
            deadline,
            last_rx: now,
            next_ping: now,
            ack_due: None,
            want_write: false,
            hello_id: 0,
            hello_name: String::new(),
            my_auth: Vec::new(),
            tx: None,
            rx: None,
            wire: Vec::new(),
            wire_sent: 0,
            scratch: Vec::new(),
        }
    }

    /// Bytes waiting in [`Conn::wire`].
    pub fn wire_pending(&self) -> usize {
        self.wire.len() - self.wire_sent
    }

    /// Starts the session: what `queue` holds so far (the handshake) goes out in the clear,
    /// everything after it sealed with `tx`; what arrives from now on is opened with `rx`.
    pub fn start_session(&mut self, queue: &mut LinkQueue, tx: Sealer, rx: Opener) {
        self.fill_wire(queue, usize::MAX, usize::MAX)
            .expect("nothing is sealed before the session");
        self.tx = Some(tx);
        self.rx = Some(rx);
    }

    /// Moves frames from `queue` to [`Conn::wire`], sealed once the session started, until
    /// the wire holds [`WIRE_TARGET`] bytes. A message moved counts as written (it joins the
    /// unacknowledged ones, which `limit` bounds). Returns the messages moved.
    pub fn fill_wire(
        &mut self,
        queue: &mut LinkQueue,
        limit: usize,
        target: usize,
    ) -> Result<u64, Exhausted> {
        if self.wire_sent == self.wire.len() {
            self.wire.clear();
            self.wire_sent = 0;
        } else if self.wire_sent >= WIRE_TARGET {
            self.wire.drain(..self.wire_sent);
            self.wire_sent = 0;
        }
        let mut msgs = 0;
        while self.wire_pending() < target {
            let Some(tx) = self.tx.as_mut() else {
                let Some((frame, msg)) = queue.take_out(limit) else {
                    break;
                };
                self.wire.extend_from_slice(&frame);
                msgs += u64::from(msg);
                continue;
            };
            if queue.out_is_empty() {
                break;
            }
            // One record carries the frames ready, up to RECORD_TARGET bytes of them (a
            // larger frame alone): the sealing's fixed cost is paid once for them all.
            let start = Sealer::begin(&mut self.wire);
            let mut inside = 0;
            while let Some(len) = queue.front_len() {
                if inside > 0 && inside + len > RECORD_TARGET {
                    break;
                }
                let Some((frame, msg)) = queue.take_out(limit) else {
                    break;
                };
                self.wire.extend_from_slice(&frame);
                inside += len;
                msgs += u64::from(msg);
            }
            tx.finish(&mut self.wire, start)?;
        }
        if self.wire.is_empty() && self.wire.capacity() > 2 * WIRE_TARGET {
            self.wire = Vec::new();
        }
        Ok(msgs)
    }

    /// `(dialer's hello, acceptor's hello)`: the transcript both proofs cover.
    pub fn transcript(&self) -> (&[u8], &[u8]) {
        match self.role {
            Role::Dialer => (&self.my_hello, &self.peer_hello),
            Role::Acceptor => (&self.peer_hello, &self.my_hello),
        }
    }
}

/// A link: a configured peer (dialed), or a peer that connected to the listener.
pub struct Link {
    /// Address to dial; `None` for accepted links.
    pub dial: Option<SocketAddr>,
    /// Shown as the peer: the configured address, or where an accepted link came from.
    pub label: String,
    /// Channels sent over this link.
    pub export: Subs,
    /// Channels taken from it.
    pub import: Subs,
    /// The import patterns, as told to the peer.
    pub import_list: Vec<String>,
    /// Where the link is.
    pub state: State,
    /// The current connection.
    pub conn: Option<Conn>,
    /// Outgoing messages and frames.
    pub queue: LinkQueue,
    /// Listed in [`Links::dirty`].
    pub dirty: bool,
    /// The peer's id for its current run (0: never authenticated).
    pub peer_id: DaemonId,
    /// The peer's name.
    pub peer_name: String,
    /// What the peer imports from us.
    pub peer_import: Subs,
    /// The peer's payload limit.
    pub peer_max_payload: u32,
    /// The peer's channel name limit.
    pub peer_max_channel: u16,
    /// The peer's message name limit.
    pub peer_max_message: u16,
    /// The peer run our message numbering refers to.
    pub tx_peer: DaemonId,
    /// The peer run whose messages `rx_count` counts.
    pub rx_from: DaemonId,
    /// Messages received from `rx_from`.
    pub rx_count: u64,
    /// The count last acknowledged.
    pub acked: u64,
    /// After coming up, buffered messages may wait for interest until then.
    pub hold_until: Option<Instant>,
    /// Up, but the peer's own advert has not arrived on this connection yet: what the peer
    /// wants now is not known, so messages are routed by the interest last known for the
    /// link and wait in the backlog until the advert (or `hold_until`) comes.
    pub adverts_pending: bool,
    /// The daemons the link led to and their subscriptions, as last known: kept while it is
    /// down and, after it came back, until [`Link::adverts_pending`] is over. Decides what
    /// is buffered for it.
    pub frozen: Vec<(DaemonId, Rc<Subs>)>,
    /// Next redial delay.
    pub backoff_ms: u32,
    /// When to redial.
    pub reconnect_at: Option<Instant>,
    /// The link was up at least once.
    pub ever_up: bool,
    /// Last measured round-trip time.
    pub rtt_us: u64,
    /// Calls from the peer waiting for an answer here.
    pub calls_in_flight: u32,
    /// Accepted on the listener (not dialed).
    pub accepted: bool,
    /// Accepted and not authenticated yet: not a known peer.
    pub temp: bool,
    /// Counters.
    pub counters: LinkCounters,
    /// The last reason the link went down, to log a repeated failure only once.
    pub last_failure: String,
}

impl Link {
    fn new(dial: Option<SocketAddr>, label: String, export: &[String], import: &[String]) -> Link {
        Link {
            dial,
            label,
            export: Subs::filter(export),
            import: Subs::filter(import),
            import_list: import.to_vec(),
            state: State::Down,
            conn: None,
            queue: LinkQueue::default(),
            dirty: false,
            peer_id: 0,
            peer_name: String::new(),
            peer_import: Subs::default(),
            peer_max_payload: 0,
            peer_max_channel: 0,
            peer_max_message: 0,
            tx_peer: 0,
            rx_from: 0,
            rx_count: 0,
            acked: 0,
            hold_until: None,
            adverts_pending: false,
            frozen: Vec::new(),
            backoff_ms: 0,
            reconnect_at: None,
            ever_up: false,
            rtt_us: 0,
            calls_in_flight: 0,
            accepted: dial.is_none(),
            temp: false,
            counters: LinkCounters::default(),
            last_failure: String::new(),
        }
    }

    /// Whether a message on `channel` may cross this link (our export and the peer's import).
    pub fn carries(&self, channel: &str) -> bool {
        self.export.wants(channel) && self.peer_import.wants(channel)
    }

    /// Whether a message of this size fits the peer's limits.
    pub fn fits(&self, channel: &str, message: &str, payload: usize) -> bool {
        channel.len() <= self.peer_max_channel as usize
            && message.len() <= self.peer_max_message as usize
            && payload <= self.peer_max_payload as usize
    }

    /// Whether a message on `channel` is for a daemon that this link led to when last
    /// known and that no link leads to now (one reachable another way gets it that way).
    pub fn buffers_for(&self, topo: &Topology, channel: &str, except: DaemonId) -> bool {
        self.frozen
            .iter()
            .any(|(o, s)| *o != except && !topo.is_reachable(*o) && s.wants(channel))
    }

    /// The earliest moment something must happen on this link.
    pub fn next_deadline(&self, cfg: &LinkConfig) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        match (&self.conn, self.state) {
            (None, _) => add(self.reconnect_at),
            (Some(c), State::Up) => {
                add(Some(c.next_ping));
                add(Some(
                    c.last_rx + Duration::from_millis(cfg.dead_after_ms as u64),
                ));
                add(c.ack_due);
                if self.queue.backlog_len() > 0 {
                    add(self.hold_until);
                }
            }
            (Some(c), _) => add(Some(c.deadline)),
        }
        at
    }

    /// The `qcop stats` record.
    pub fn info(&self) -> LinkInfo {
        let c = &self.counters;
        let rows: [(&str, u64); 24] = [
            ("peer_id", self.peer_id),
            ("rtt_us", self.rtt_us),
            ("messages_out", c.messages_out),
            ("bytes_out", c.bytes_out),
            ("writes", c.writes),
            ("messages_in", c.messages_in),
            ("bytes_in", c.bytes_in),
            ("calls_out", c.calls_out),
            ("calls_in", c.calls_in),
            ("buffered_messages", self.queue.waiting() as u64),
            ("buffered_bytes", self.queue.bytes() as u64),
            ("unacked", self.queue.unacked() as u64),
            ("dropped_buffer_full", c.dropped_buffer_full),
            ("dropped_unconfirmed", c.dropped_unconfirmed),
            ("dropped_unwanted", c.dropped_unwanted),
            ("dropped_not_imported", c.dropped_not_imported),
            ("dropped_invalid", c.dropped_invalid),
            ("dropped_too_large", c.dropped_too_large),
            ("dropped_limit", c.dropped_limit),
            ("duplicates", c.duplicates),
            ("reconnects", c.reconnects),
            ("frames_rejected", c.frames_rejected),
            ("truncated", c.truncated),
            ("accepted", u64::from(self.accepted)),
        ];
        LinkInfo {
            peer: self.label.clone(),
            name: self.peer_name.clone(),
            state: self.state.name().to_owned(),
            counters: rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }
}

/// Link-layer counters that belong to no single link.
#[derive(Debug, Default, Clone)]
pub struct GlobalCounters {
    /// TCP connections accepted on the listener.
    pub accepted: u64,
    /// Connections refused at once (too many unauthenticated or links).
    pub refused: u64,
    /// Handshakes that failed authentication (wrong key).
    pub auth_failures: u64,
    /// Handshakes that did not finish in time.
    pub handshake_timeouts: u64,
    /// Connections closed for malformed or unexpected frames, or a version mismatch.
    pub protocol_errors: u64,
    /// Links declared dead by the keepalive.
    pub dead_peers: u64,
    /// Frames refused after the handshake (as the per-link `frames_rejected`, on every
    /// connection, accepted strangers' included).
    pub frames_rejected: u64,
    /// Connections that ended inside a frame after the handshake.
    pub truncated: u64,
    /// Of `refused`: those from an address that had its handshakes' share already.
    pub refused_per_address: u64,
}

/// Rate limit of the refusal log.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// When the last line was written.
    last: Option<Instant>,
    /// Refusals since then, not logged.
    quiet: u64,
}

impl RefusalLog {
    /// Logs a refusal, or counts it for the next line if one was logged recently.
    pub fn refused(&mut self, from: SocketAddr, why: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            self.quiet += 1;
            return;
        }
        if self.quiet > 0 {
            log::warn!(
                "links: refusing a connection from {from}: {why} ({} more refused since \
                 the last such line)",
                self.quiet
            );
        } else {
            log::warn!("links: refusing a connection from {from}: {why}");
        }
        self.last = Some(now);
        self.quiet = 0;
    }
}

/// The whole link layer of one daemon.
pub struct Links {
    /// Configuration.
    pub cfg: LinkConfig,
    /// The pre-shared key.
    pub key: Key,
    /// This daemon's random id for this run.
    pub me: DaemonId,
    /// This daemon's name on links.
    pub name: String,
    /// The listener, if configured.
    pub listener: Option<TcpListener>,
    /// The port it is bound to (useful with port 0).
    pub listen_port: u16,
    /// Links by id; `None` for free ids.
    pub slots: Vec<Option<Link>>,
    /// Adverts and reachability.
    pub topo: Topology,
    /// Duplicate detection.
    pub dedupe: Dedupe,
    /// Number for the next message or call that leaves this daemon.
    pub next_oseq: u64,
    /// Version of our own advert.
    pub own_version: u64,
    /// Our advert must be rebuilt (subscriptions or neighbours changed).
    pub own_dirty: bool,
    /// Our subscriptions as last advertised.
    pub own_subs: Vec<(String, u32)>,
    /// Our neighbours as last advertised.
    pub own_neighbors: Vec<DaemonId>,
    /// Our advert, encoded.
    pub own_raw: Rc<[u8]>,
    /// Something changed (a link came up or went down, an advert was learned, our
    /// subscriptions changed): recompute reachability and pump the backlogs.
    pub changed: bool,
    /// Routing scratch: the links a message goes to, and whether it is buffered there.
    pub scratch: Vec<(LinkId, bool)>,
    /// Reconnect jitter.
    pub jitter: Jitter,
    /// Accepted connections not authenticated yet.
    pub unauthenticated: usize,
    /// Time base of ping stamps.
    pub started: Instant,
    /// Counters.
    pub counters: GlobalCounters,
    /// Links with frames to write.
    pub dirty: Vec<LinkId>,
    /// Set while `accept` on the listener fails for want of descriptors.
    pub accept_pause: crate::daemon::listen::AcceptPause,
    /// How the frames we send are protected.
    pub protection: Protection,
    /// Source addresses served first.
    pub known: Vec<config::AddrPrefix>,
    /// Rate limit of the refusal log.
    pub refusal_log: RefusalLog,
}

impl Links {
    /// Reads the key, binds the listener and lists the peers to dial. With no link
    /// configured this does nothing and costs nothing.
    pub fn new(cfg: &LinkConfig) -> Result<Links, String> {
        let err = |m: String| m;
        let mut id = [0u8; 8];
        if cfg.enabled() {
            auth::random_bytes(&mut id)
                .map_err(|e| err(format!("links: cannot read /dev/urandom: {e}")))?;
        }
        let me = u64::from_be_bytes(id).max(1);
        let key = if cfg.enabled() {
            load_key(cfg)?
        } else {
            Key::none()
        };
        let name = cfg.name.clone().unwrap_or_else(host_name);
        let mut links = Links {
            cfg: cfg.clone(),
            key,
            me,
            name,
            listener: None,
            listen_port: 0,
            slots: Vec::new(),
            topo: Topology::new(me),
            dedupe: Dedupe::default(),
            next_oseq: 1,
            own_version: 0,
            own_dirty: true,
            own_subs: Vec::new(),
            own_neighbors: Vec::new(),
            own_raw: Rc::from(&[][..]),
            changed: false,
            scratch: Vec::new(),
            jitter: Jitter::new(),
            unauthenticated: 0,
            started: Instant::now(),
            counters: GlobalCounters::default(),
            dirty: Vec::new(),
            accept_pause: Default::default(),
            protection: if cfg.integrity_only {
                Protection::Integrity
            } else {
                Protection::Encrypt
            },
            known: cfg.known_prefixes(),
            refusal_log: RefusalLog::default(),
        };
        if let Some(addr) = cfg.listen_addr() {
            let l = net::listen(addr)
                .map_err(|e| err(format!("links: cannot listen on {addr}: {e}")))?;
            links.listen_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            if !cfg.has_key() && !addr.ip().is_loopback() {
                log::warn!(
                    "links: listening on {addr} WITHOUT a key (insecure = true): anyone who \
                     can reach this port can send and receive messages"
                );
            }
            log::info!("links: listening on {addr} as {:?}", links.name);
            links.listener = Some(l);
        }
        for p in &cfg.peer {
            let addr: SocketAddr = p
                .address
                .parse()
                .map_err(|_| err(format!("links: bad peer address {:?}", p.address)))?;
            if !cfg.has_key() && !addr.ip().is_loopback() {
                log::warn!("links: peer {addr} has no key (insecure = true)");
            }
            let mut link = Link::new(Some(addr), addr.to_string(), &p.export, &p.import);
            // Dial at once.
            link.reconnect_at = Some(Instant::now());
            links.slots.push(Some(link));
        }
        Ok(links)
    }

    /// The link `id`, if it exists.
    pub fn get(&self, id: LinkId) -> Option<&Link> {
        self.slots.get(id).and_then(Option::as_ref)
    }

    /// The link `id`, mutably.
    pub fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.slots.get_mut(id).and_then(Option::as_mut)
    }

    /// Ids of every link.
    pub fn ids(&self) -> Vec<LinkId> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect()
    }

    /// Links that are up, with their peers: the input of the reachability computation.
    pub fn up_links(&self) -> Vec<(LinkId, DaemonId)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.as_ref()
                    .filter(|l| l.state == State::Up)
                    .map(|l| (i, l.peer_id))
            })
            .collect()
    }

    /// A new link for an accepted connection (not a known peer until it authenticates).
    pub fn add_accepted(&mut self, label: String) -> LinkId {
        let mut link = Link::new(None, label, &self.cfg.export, &self.cfg.import);
        link.temp = true;
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(link);
                i
            }
            None => {
                self.slots.push(Some(link));
                self.slots.len() - 1
            }
        }
    }

    /// Whether connections from `ip` are served first (a known address).
    pub fn is_known(&self, ip: IpAddr) -> bool {
        self.known.iter().any(|p| p.contains(ip))
    }

    /// Whether a new connection from `ip` may start a handshake: each address has at most
    /// `handshakes_per_address` in progress; known addresses are served beyond that the
    /// strangers share `max_unauthenticated`. `Err` says why not, and whether it is the
    /// address's own limit.
    pub fn admit(&self, ip: IpAddr) -> Result<(), (&'static str, bool)> {
        let known = self.is_known(ip);
        let (mut same, mut strangers) = (0u32, 0u32);
        for l in self.slots.iter().flatten().filter(|l| l.temp) {
            let Some(c) = &l.conn else { continue };
            let from = c.remote.ip();
            same += u32::from(from == ip);
            if !known && !self.is_known(from) {
                strangers += 1;
            }
        }
        if same >= self.cfg.handshakes_per_address {
            return Err(("too many handshakes from this address", true));
        }
        if !known && strangers >= self.cfg.max_unauthenticated {
            return Err(("too many unauthenticated connections", false));
        }
        Ok(())
    }

    /// Accepted links that are known peers (authenticated at least once).
    pub fn accepted_peers(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|l| l.accepted && !l.temp)
            .count()
    }

    /// Schedules link `id` to be written at the end of the loop turn.
    pub fn mark_dirty(&mut self, id: LinkId) {
        if let Some(l) = self.slots.get_mut(id).and_then(Option::as_mut) {
            if !l.dirty {
                l.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Microseconds since start, for ping stamps.
    pub fn stamp(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The next redial delay for a link, with jitter: between half and all of the current
    /// backoff, which then doubles up to the maximum.
    pub fn next_backoff(&mut self, id: LinkId) -> Duration {
        let (min, max) = (self.cfg.reconnect_min_ms, self.cfg.reconnect_max_ms);
        let Some(l) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return Duration::from_millis(min as u64);
        };
        let base = l.backoff_ms.clamp(min, max);
        l.backoff_ms = base.saturating_mul(2).min(max);
        let half = (base / 2).max(1) as u64;
        Duration::from_millis(half + self.jitter.below(half + 1))
    }

    /// Gauges and counters for the daemon-wide part of `qcop stats`.
    pub fn report(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let rows: [(&str, u64); 13] = [
            (
                "links",
                self.slots.iter().flatten().filter(|l| !l.temp).count() as u64,
            ),
            ("links_up", self.up_links().len() as u64),
            ("link_listen_port", self.listen_port as u64),
            ("link_daemons_known", self.topo.known() as u64),
            ("links_accepted", c.accepted),
            ("links_refused", c.refused),
            ("link_auth_failures", c.auth_failures),
            ("link_handshake_timeouts", c.handshake_timeouts),
            ("link_protocol_errors", c.protocol_errors),
            ("link_dead_peers", c.dead_peers),
            ("link_frames_rejected", c.frames_rejected),
            ("link_frames_truncated", c.truncated),
            ("links_refused_per_address", c.refused_per_address),
        ];
        rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
}

/// The key from `key` or `key_file`, or the empty key when none is configured (loopback or
/// `insecure` only, as the configuration checks).
fn load_key(cfg: &LinkConfig) -> Result<Key, String> {
    if let Some(k) = &cfg.key {
        return Ok(Key::new(k.0.trim().as_bytes().to_vec()));
    }
    let Some(path) = &cfg.key_file else {
        return Ok(Key::none());
    };
    let bytes = std::fs::read(path)
        .map_err(|e| format!("links: cannot read key_file {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let key = text.trim();
    if key.len() < config::MIN_KEY_LEN {
        return Err(format!(
            "links: the key in {} is shorter than {} bytes",
            path.display(),
            config::MIN_KEY_LEN
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "links: key_file {} is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
    Ok(Key::new(key.as_bytes().to_vec()))
}

/// The host name, as the default link name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "qcopd".to_owned())
}

/// A peer-supplied name made safe for logs and `qcop stats`: printable, at most 64 chars.
pub fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redial_backoff_doubles_with_jitter_up_to_the_maximum() {
        let cfg = LinkConfig {
            reconnect_min_ms: 100,
            reconnect_max_ms: 1000,
            peer: vec![config::PeerConfig {
                address: "127.0.0.1:9".into(),
                export: vec![],
                import: vec![],
            }],
            ..LinkConfig::default()
        };
        let mut links = Links::new(&cfg).unwrap();
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(links.next_backoff(0).as_millis() as u32);
        }
        // Each delay lies between half and all of 100, 200, 400, 800, 1000, 1000, ...
        for (i, d) in seen.iter().enumerate() {
            let base = (100u32 << i.min(4)).min(1000);
            assert!((base / 2..=base).contains(d), "delay {i} = {d} ms");
        }
        // Jitter: not all the capped delays are equal.
        let mut runs = Vec::new();
        for _ in 0..20 {
            runs.push(links.next_backoff(0));
        }
        runs.dedup();
        assert!(runs.len() > 1, "no jitter");
        // Once the link was up, it starts again from the minimum.
        links.get_mut(0).unwrap().backoff_ms = 0;
        assert!(links.next_backoff(0) <= Duration::from_millis(100));
    }
}
