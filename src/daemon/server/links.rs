//! The event loop's side of the links: connections (accept, dial, handshake, keepalive,
//! reads and writes, close). What crosses them (adverts, messages, calls) is in
//! `link_traffic.rs`.
//!
//! The link layer's state and rules are in `daemon::link`; these files wire them to the
//! loop, the router and the call table.

use super::Server;
use crate::daemon::link::auth::{random_bytes, Role};
use crate::daemon::link::proto::{
    LinkFrame, ADVERT_MAX_BODY, LINK_VERSION, MSG_OVERHEAD, NONCE_LEN, PREAUTH_MAX_BODY,
};
use crate::daemon::link::seal::{split_frame, OpenError, Opener, Sealer, SEAL_OVERHEAD};
use crate::daemon::link::topo::{DaemonId, Subs, MAX_DAEMONS};
use crate::daemon::link::{
    configure, connect_result, dial, printable, send, Conn, LinkId, State, ACK_DELAY, ACK_EVERY,
    FIRST_LINK_TOKEN, WIRE_TARGET,
};
pub(super) use crate::daemon::link::{Links, LISTENER_TOKEN};
use crate::pattern::check_name;
use crate::wire::{ErrorCode, FrameReader};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::io::{self, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read from one link before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Import patterns a peer may announce.
const MAX_IMPORT_PATTERNS: usize = 1024;

/// Where the answer to a call that arrived over a link goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteCaller {
    pub(super) link: LinkId,
    pub(super) origin: DaemonId,
    pub(super) call_id: u32,
}

/// Why a link connection is closed.
enum LinkClose {
    Eof,
    Io(io::Error),
    ConnectFailed(io::Error),
    Protocol(String),
    Auth,
    HandshakeTimeout,
    Dead(u32),
    PeerClosed(u16, String),
    Refused(&'static str),
    Replaced,
    SlowPeer,
    Shutdown,
    Rejected(OpenError),
    Truncated,
    Exhausted,
}

impl std::fmt::Display for LinkClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkClose::Eof => f.write_str("the peer closed the connection"),
            LinkClose::Io(e) => write!(f, "I/O error: {e}"),
            LinkClose::ConnectFailed(e) => write!(f, "cannot connect: {e}"),
            LinkClose::Protocol(m) => write!(f, "protocol error: {m}"),
            LinkClose::Auth => f.write_str("authentication failed: the peer does not hold our key"),
            LinkClose::HandshakeTimeout => f.write_str("handshake not completed in time"),
            LinkClose::Dead(ms) => write!(f, "nothing heard from the peer for {ms} ms"),
            LinkClose::PeerClosed(_, m) => write!(f, "closed by the peer: {m}"),
            LinkClose::Refused(m) => write!(f, "refused: {m}"),
            LinkClose::Replaced => f.write_str("replaced by a new connection from the same peer"),
            LinkClose::SlowPeer => f.write_str("the peer does not read its frames"),
            LinkClose::Shutdown => f.write_str("shutting down"),
            LinkClose::Rejected(e) => write!(f, "frame rejected: {e}"),
            LinkClose::Truncated => f.write_str("the connection ended inside a frame"),
            LinkClose::Exhausted => {
                f.write_str("the record counter is exhausted; connecting anew for fresh keys")
            }
        }
    }
}

fn token(id: LinkId) -> u64 {
    FIRST_LINK_TOKEN + id as u64
}

impl Server {
    // ----- setup and the loop's hooks ----------------------------------------------------

    /// Registers the link listener with epoll.
    pub(super) fn links_register(&mut self) -> Result<(), String> {
        if let Some(l) = &self.links.listener {
            self.epoll
                .add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN))
                .map_err(|e| format!("epoll: {e}"))?;
        }
        Ok(())
    }

    /// An epoll event for the listener or a link.
    pub(super) fn link_event(&mut self, token: u64, flags: EpollFlags) {
        if token == LISTENER_TOKEN {
            return self.link_accept_all();
        }
        let id = (token - FIRST_LINK_TOKEN) as LinkId;
        let Some(state) = self.links.get(id).map(|l| l.state) else {
            return;
        };
        if state == State::Connecting {
            return self.link_connected(id);
        }
        if flags.intersects(EpollFlags::EPOLLOUT) {
            self.links.mark_dirty(id);
        }
        if flags.intersects(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLHUP
                | EpollFlags::EPOLLERR
                | EpollFlags::EPOLLRDHUP,
        ) {
            self.link_read(id);
        }
    }

    /// The earliest link timer.
    pub(super) fn links_next_deadline(&self) -> Option<Instant> {
        self.links
            .slots
            .iter()
            .flatten()
            .filter_map(|l| l.next_deadline(&self.links.cfg))
            .chain(self.links.accept_pause.deadline())
            .min()
    }

    /// Once per loop turn: timers, the effects of changes, then writes.
    pub(super) fn links_turn(&mut self) {
        if self.links.accept_pause.take_due(Instant::now()) {
            self.link_watch_listener(true);
            self.link_accept_all();
        }
        if self.links.slots.is_empty() {
            return;
        }
        self.links_tick();
        if self.links.changed {
            self.links_refresh();
        }
        self.links_flush();
    }

    /// Local subscriptions changed: the advert must say so.
    pub(super) fn links_subscriptions_changed(&mut self) {
        self.links.own_dirty = true;
        self.links.changed = true;
    }

    /// Tells every peer we are going.
    pub(super) fn links_shutdown(&mut self) {
        let bye = LinkFrame::Close {
            code: ErrorCode::ShuttingDown.to_u16(),
            text: "qcopd is shutting down",
        };
        for id in self.links.ids() {
            // Sealed like any frame once the session started; as far as the socket takes.
            self.link_send(id, &bye);
            self.link_write(id);
            self.close_link(id, LinkClose::Shutdown);
        }
    }

    // ----- connections -------------------------------------------------------------------

    /// Watches the link listener for connections, or stops watching it.
    fn link_watch_listener(&mut self, watch: bool) {
        let Some(listener) = &self.links.listener else {
            return;
        };
        let flags = if watch {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        let mut event = EpollEvent::new(flags, LISTENER_TOKEN);
        if let Err(e) = self.epoll.modify(listener, &mut event) {
            log::error!("links: epoll_ctl(MOD) of the listener failed: {e}");
        }
    }

    fn link_accept_all(&mut self) {
        loop {
            let Some(listener) = &self.links.listener else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // As for clients (`AcceptPause`): not watched for a while, or the
                    // pending connection would wake the loop at once, forever.
                    let n = self.links.slots.iter().flatten().count();
                    self.links.accept_pause.failed("links", &e, n);
                    self.link_watch_listener(false);
                    return;
                }
            };
            self.links.accept_pause.succeeded();
            self.links.counters.accepted += 1;
            if let Err((why, own_limit)) = self.links.admit(addr.ip()) {
                self.links.counters.refused += 1;
                self.links.counters.refused_per_address += u64::from(own_limit);
                self.links.refusal_log.refused(addr, why);
                let _ = stream.set_nonblocking(true);
                let close = LinkFrame::Close {
                    code: ErrorCode::LinkBusy.to_u16(),
                    text: why,
                }
                .to_vec();
                let _ = send(&stream, &[io::IoSlice::new(&close)]);
                continue;
            }
            let cfg = &self.links.cfg;
            if let Err(e) = configure(&stream, cfg.nodelay) {
                log::warn!("links: cannot configure a connection from {addr}: {e}");
                continue;
            }
            let deadline = Instant::now() + Duration::from_millis(cfg.handshake_timeout_ms as u64);
            let id = self.links.add_accepted(addr.to_string());
            let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token(id));
            if let Err(e) = self.epoll.add(&stream, ev) {
                log::error!("links: epoll_ctl(ADD) failed: {e}");
                self.links.slots[id] = None;
                continue;
            }
            self.links.unauthenticated += 1;
            let link = self.links.slots[id].as_mut().expect("just added");
            link.conn = Some(Conn::new(stream, Role::Acceptor, addr, deadline));
            link.state = State::Hello;
            log::debug!("links: connection from {addr}");
            self.link_send_hello(id);
        }
    }

    fn link_dial(&mut self, id: LinkId) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.reconnect_at = None;
        let Some(addr) = link.dial else {
            return;
        };
        let (stream, done) = match dial(addr) {
            Ok(s) => s,
            Err(e) => return self.link_failed(id, LinkClose::ConnectFailed(e)),
        };
        let _ = stream.set_nodelay(self.links.cfg.nodelay);
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP,
            token(id),
        );
        if let Err(e) = self.epoll.add(&stream, ev) {
            return self.link_failed(id, LinkClose::Io(e.into()));
        }
        let deadline =
            Instant::now() + Duration::from_millis(self.links.cfg.handshake_timeout_ms as u64);
        let link = self.links.slots[id].as_mut().expect("checked above");
        let mut conn = Conn::new(stream, Role::Dialer, addr, deadline);
        conn.want_write = true;
        link.conn = Some(conn);
        link.state = State::Connecting;
        if done {
            self.link_connected(id);
        }
    }

    /// A dial that reported writable: connected, or failed.
    fn link_connected(&mut self, id: LinkId) {
        let Some(conn) = self.links.get_mut(id).and_then(|l| l.conn.as_mut()) else {
            return;
        };
        if let Err(e) = connect_result(&conn.stream) {
            return self.close_link(id, LinkClose::ConnectFailed(e));
        }
        conn.want_write = false;
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token(id));
        if let Err(e) = self.epoll.modify(&conn.stream, &mut ev) {
            log::error!("links: epoll_ctl(MOD) failed: {e}");
        }
        if let Some(l) = self.links.get_mut(id) {
            l.state = State::Hello;
        }
        self.link_send_hello(id);
    }

    fn link_send_hello(&mut self, id: LinkId) {
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(e) = random_bytes(&mut nonce) {
            return self.close_link(id, LinkClose::Io(e));
        }
        let hello = LinkFrame::Hello {
            version_min: LINK_VERSION,
            version_max: LINK_VERSION,
            daemon_id: self.links.me,
            nonce,
            name: &self.links.name,
        }
        .to_vec();
        if let Some(link) = self.links.get_mut(id) {
            if let Some(c) = link.conn.as_mut() {
                c.my_hello.clone_from(&hello);
            }
            link.queue.push_control(hello.into());
        }
        self.links.mark_dirty(id);
    }

    /// Queues a control frame on a link.
    pub(super) fn link_send(&mut self, id: LinkId, frame: &LinkFrame<'_>) {
        let bytes: Rc<[u8]> = frame.to_vec().into();
        if let Some(l) = self.links.get_mut(id) {
            if l.conn.is_some() {
                l.queue.push_control(bytes);
                self.links.mark_dirty(id);
            }
        }
    }

    fn link_read(&mut self, id: LinkId) {
        let Some(conn) = self.links.get_mut(id).and_then(|l| l.conn.as_mut()) else {
            return;
        };
        let mut reader = std::mem::replace(&mut conn.reader, FrameReader::new(0));
        let mut plain = std::mem::take(&mut conn.scratch);
        let mut budget = READ_BUDGET;
        let mut outcome = None;
        'read: while budget > 0 {
            let Some(conn) = self.links.get_mut(id).and_then(|l| l.conn.as_mut()) else {
                return; // closed while handling a frame
            };
            let n = match (&conn.stream).read(reader.buffer_mut(READ_CHUNK)) {
                // After the handshake, an end inside a frame is counted: a truncated stream.
                Ok(0) if conn.rx.is_some() && reader.pending() > 0 => {
                    outcome = Some(LinkClose::Truncated);
                    break;
                }
                Ok(0) => {
                    outcome = Some(LinkClose::Eof);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if conn.rx.is_some() && reader.pending() > 0 {
                        self.links.counters.truncated += 1;
                        if let Some(l) = self.links.get_mut(id) {
                            l.counters.truncated += 1;
                        }
                    }
                    outcome = Some(LinkClose::Io(e));
                    break;
                }
            };
            reader.filled(n);
            budget = budget.saturating_sub(n);
            if let Some(l) = self.links.get_mut(id) {
                l.counters.bytes_in += n as u64;
            }
            loop {
                let sealed = self
                    .links
                    .get(id)
                    .and_then(|l| l.conn.as_ref())
                    .is_some_and(|c| c.rx.is_some());
                let raw = match reader.next_raw() {
                    Ok(Some(raw)) => raw,
                    Ok(None) => break,
                    // A record header that cannot be right (an altered length) is rejected
                    // like a record that does not open.
                    Err(_) if sealed => {
                        outcome = Some(LinkClose::Rejected(OpenError::Malformed));
                        break 'read;
                    }
                    Err(e) => {
                        outcome = Some(LinkClose::Protocol(e.to_string()));
                        break 'read;
                    }
                };
                // After the peer's proof every frame comes sealed, and is used only if its
                // record opens with the counter expected next.
                let rx = self
                    .links
                    .get_mut(id)
                    .and_then(|l| l.conn.as_mut())
                    .and_then(|c| c.rx.as_mut());
                let mut frames = match rx {
                    None => raw,
                    Some(rx) => match rx.open(raw, &mut plain) {
                        Ok(frames) => frames,
                        Err(e) => {
                            outcome = Some(LinkClose::Rejected(e));
                            break 'read;
                        }
                    },
                };
                // A record carries one or more whole frames (checked when it was opened).
                while let Some((frame, rest)) = split_frame(frames) {
                    frames = rest;
                    self.link_frame(id, frame);
                    if self.links.get(id).map_or(true, |l| l.conn.is_none()) {
                        return;
                    }
                }
                match self.links.get(id) {
                    Some(l) if l.conn.is_some() => {
                        let max = if l.state.unauthenticated() {
                            PREAUTH_MAX_BODY
                        } else {
                            self.link_max_body().saturating_add(SEAL_OVERHEAD as u32)
                        };
                        reader.set_max_body(max);
                    }
                    _ => return,
                }
            }
            if n < READ_CHUNK {
                break;
            }
        }
        if let Some(reason) = outcome {
            if matches!(reason, LinkClose::Rejected(_) | LinkClose::Truncated) {
                let rejected = u64::from(matches!(reason, LinkClose::Rejected(_)));
                let truncated = 1 - rejected;
                self.links.counters.frames_rejected += rejected;
                self.links.counters.truncated += truncated;
                if let Some(l) = self.links.get_mut(id) {
                    l.counters.frames_rejected += rejected;
                    l.counters.truncated += truncated;
                }
            }
            if matches!(reason, LinkClose::Rejected(_)) {
                // Sealed: the real peer learns why, an attacker learns nothing.
                self.link_send(
                    id,
                    &LinkFrame::Close {
                        code: ErrorCode::LinkAuth.to_u16(),
                        text: "a frame from you was rejected (forged or altered on the way?)",
                    },
                );
                self.link_write(id);
            }
            if matches!(reason, LinkClose::Protocol(_)) {
                self.links.counters.protocol_errors += 1;
                let text = reason.to_string();
                self.link_send(
                    id,
                    &LinkFrame::Close {
                        code: ErrorCode::Malformed.to_u16(),
                        text: &text,
                    },
                );
                self.link_write(id);
            }
            return self.close_link(id, reason);
        }
        reader.shrink_idle(READ_CHUNK);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        // Acknowledgements go out once the link is up (during a new connection's handshake
        // the count travels in `Ready`; an `Ack` before it would break the handshake).
        let unacked = if link.state == State::Up {
            link.rx_count - link.acked
        } else {
            0
        };
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        conn.reader = reader;
        plain.clear();
        if plain.capacity() > READ_CHUNK {
            plain = Vec::new();
        }
        conn.scratch = plain;
        if unacked >= ACK_EVERY {
            self.link_ack(id);
        } else if unacked > 0 && conn.ack_due.is_none() {
            conn.ack_due = Some(Instant::now() + ACK_DELAY);
        }
    }

    /// Largest frame body accepted from an authenticated peer.
    /// (At least [`ADVERT_MAX_BODY`], whatever the message limits: adverts list names.)
    fn link_max_body(&self) -> u32 {
        self.cfg
            .max_frame_body()
            .saturating_add(MSG_OVERHEAD as u32)
            .max(ADVERT_MAX_BODY)
    }

    fn link_ack(&mut self, id: LinkId) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.acked = link.rx_count;
        let count = link.rx_count;
        if let Some(c) = link.conn.as_mut() {
            c.ack_due = None;
        }
        self.link_send(id, &LinkFrame::Ack { count });
    }

    fn link_frame(&mut self, id: LinkId, raw: &[u8]) {
        let frame = match LinkFrame::decode(raw) {
            Ok(f) => f,
            Err(e) => return self.link_protocol_error(id, &e.to_string()),
        };
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let state = link.state;
        if let Some(c) = link.conn.as_mut() {
            c.last_rx = Instant::now();
        }
        match (state, frame) {
            (_, LinkFrame::Close { code, text }) => {
                let text = format!("{} (code {code})", printable(text));
                self.close_link(id, LinkClose::PeerClosed(code, text));
            }
            (
                State::Hello,
                LinkFrame::Hello {
                    version_min,
                    version_max,
                    daemon_id,
                    name,
                    ..
                },
            ) => self.link_hello(id, raw, version_min..=version_max, daemon_id, name),
            (State::Auth, LinkFrame::Auth { mac }) => self.link_auth(id, &mac),
            (
                State::Sync,
                LinkFrame::Ready {
                    max_payload,
                    max_channel,
                    max_message,
                    rx_from,
                    rx_count,
                    import,
                },
            ) => self.link_ready(
                id,
                (max_payload, max_channel, max_message),
                rx_from,
                rx_count,
                &import,
            ),
            (State::Sync | State::Up, LinkFrame::Ping { stamp }) => {
                self.link_send(id, &LinkFrame::Pong { stamp });
            }
            (State::Up, LinkFrame::Pong { stamp }) => {
                let rtt = self.links.stamp().saturating_sub(stamp);
                if let Some(l) = self.links.get_mut(id) {
                    l.rtt_us = rtt;
                }
            }
            (State::Up, LinkFrame::Ack { count }) => {
                if let Some(l) = self.links.get_mut(id) {
                    l.queue.ack(count);
                }
            }
            (
                State::Up,
                LinkFrame::Advert {
                    origin,
                    version,
                    neighbors,
                    subs,
                },
            ) => self.link_advert(id, raw, origin, version, neighbors, &subs),
            (
                State::Up,
                LinkFrame::Msg {
                    origin,
                    oseq,
                    channel,
                    message,
                    payload,
                },
            ) => self.link_msg(id, raw, origin, oseq, channel, message, payload),
            (
                State::Up,
                LinkFrame::Call {
                    origin,
                    oseq,
                    call_id,
                    timeout_ms,
                    channel,
                    message,
                    payload,
                },
            ) => self.link_call_in(
                id,
                raw,
                (origin, oseq, call_id, timeout_ms),
                channel,
                message,
                payload,
            ),
            (
                State::Up,
                LinkFrame::Reply {
                    origin, call_id, ..
                },
            ) => self.link_reply_in(id, raw, origin, call_id),
            (
                State::Up,
                LinkFrame::CallGone {
                    origin,
                    call_id,
                    delivered,
                },
            ) => self.link_call_gone_in(id, origin, call_id, delivered),
            (state, frame) => {
                let text = format!("unexpected {:?} frame in state {state:?}", frame.kind());
                self.link_protocol_error(id, &text);
            }
        }
    }

    fn link_protocol_error(&mut self, id: LinkId, text: &str) {
        self.links.counters.protocol_errors += 1;
        self.link_send(
            id,
            &LinkFrame::Close {
                code: ErrorCode::Malformed.to_u16(),
                text,
            },
        );
        self.link_write(id);
        self.close_link(id, LinkClose::Protocol(text.to_owned()));
    }

    fn link_hello(
        &mut self,
        id: LinkId,
        raw: &[u8],
        versions: std::ops::RangeInclusive<u16>,
        peer: DaemonId,
        name: &str,
    ) {
        if !versions.contains(&LINK_VERSION) {
            self.links.counters.protocol_errors += 1;
            let text = format!(
                "peer speaks link protocol versions {}..={}, this daemon {LINK_VERSION} only \
                 (version 2 seals every frame; update the older qcopd)",
                versions.start(),
                versions.end()
            );
            self.link_send(
                id,
                &LinkFrame::Close {
                    code: ErrorCode::UnsupportedVersion.to_u16(),
                    text: &text,
                },
            );
            self.link_write(id);
            return self.close_link(id, LinkClose::Protocol(text));
        }
        if peer == self.links.me {
            return self.link_protocol_error(id, "connected to itself");
        }
        let Some(conn) = self
            .links
            .slots
            .get_mut(id)
            .and_then(Option::as_mut)
            .and_then(|l| l.conn.as_mut())
        else {
            return;
        };
        conn.peer_hello = raw.to_vec();
        conn.hello_id = peer;
        conn.hello_name = printable(name);
        let (d, a) = conn.transcript();
        let mac = self.links.key.proof(conn.role, d, a);
        conn.my_auth = LinkFrame::Auth { mac }.to_vec();
        self.links.slots[id].as_mut().expect("checked").state = State::Auth;
        self.link_send(id, &LinkFrame::Auth { mac });
    }

    fn link_auth(&mut self, id: LinkId, mac: &[u8]) {
        let Some(conn) = self.links.get(id).and_then(|l| l.conn.as_ref()) else {
            return;
        };
        let peer_role = match conn.role {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        };
        let (d, a) = conn.transcript();
        if !self.links.key.verify(peer_role, d, a, mac) {
            self.links.counters.auth_failures += 1;
            self.link_send(
                id,
                &LinkFrame::Close {
                    code: ErrorCode::LinkAuth.to_u16(),
                    text: "authentication failed",
                },
            );
            self.link_write(id);
            return self.close_link(id, LinkClose::Auth);
        }
        self.link_start_session(id, mac);
        self.link_authenticated(id);
    }

    /// Both proofs are known: derive the session's keys from the whole handshake. What was
    /// queued so far (our hello and proof) goes out in the clear, everything after sealed.
    fn link_start_session(&mut self, id: LinkId, peer_mac: &[u8]) {
        let protection = self.links.protection;
        let Some(link) = self.links.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        let mut mac = [0u8; crate::daemon::link::proto::MAC_LEN];
        mac.copy_from_slice(peer_mac);
        let peer_auth = LinkFrame::Auth { mac }.to_vec();
        let (d, a) = conn.transcript();
        let (my_auth, peer_auth) = (conn.my_auth.as_slice(), peer_auth.as_slice());
        let (da, aa) = match conn.role {
            Role::Dialer => (my_auth, peer_auth),
            Role::Acceptor => (peer_auth, my_auth),
        };
        let keys = self.links.key.session_keys(conn.role, [d, a, da, aa]);
        conn.start_session(
            &mut link.queue,
            Sealer::new(&keys.send, protection),
            Opener::new(&keys.receive),
        );
    }

    /// The peer proved the key: adopt it as a known peer and send our state.
    fn link_authenticated(&mut self, id: LinkId) {
        let Some(link) = self.links.get(id) else {
            return;
        };
        let Some(conn) = link.conn.as_ref() else {
            return;
        };
        let (peer, name) = (conn.hello_id, conn.hello_name.clone());
        let temp = link.temp;
        // An accepted peer that connected to us before (by name) continues where it left
        // off: its backlog and numbering carry over, and a connection it left behind (it
        // noticed the break first, or it restarted) is replaced. But a live link to another
        // daemon of the same name is left alone: two boards share a name.
        let keepalive = Duration::from_millis(self.links.cfg.keepalive_ms as u64);
        let earlier = if temp {
            self.links.slots.iter().enumerate().position(|(j, l)| {
                j != id
                    && l.as_ref()
                        .is_some_and(|l| l.accepted && !l.temp && l.peer_name == name)
            })
        } else {
            None
        };
        let live_namesake = earlier.is_some_and(|j| {
            self.links.get(j).is_some_and(|l| {
                l.peer_id != peer
                    && l.state == State::Up
                    && l.conn
                        .as_ref()
                        .is_some_and(|c| c.last_rx.elapsed() < 2 * keepalive)
            })
        });
        let replaced = earlier.filter(|_| !live_namesake);
        let duplicate = self.links.slots.iter().enumerate().any(|(j, l)| {
            j != id
                && Some(j) != replaced
                && l.as_ref().is_some_and(|l| {
                    l.peer_id == peer && matches!(l.state, State::Sync | State::Up)
                })
        });
        let refusal = if duplicate {
            Some((ErrorCode::LinkDuplicate, "already linked to this daemon"))
        } else if temp
            && replaced.is_none()
            && self.links.accepted_peers() >= self.links.cfg.max_links as usize
            && !self.link_evict_accepted()
        {
            Some((ErrorCode::LinkBusy, "too many links"))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            self.link_send(
                id,
                &LinkFrame::Close {
                    code: code.to_u16(),
                    text,
                },
            );
            self.link_write(id);
            return self.close_link(id, LinkClose::Refused(text));
        }
        if live_namesake {
            log::warn!(
                "links: two daemons are called {name:?}; give each board its own links.name"
            );
        }
        if let Some(j) = replaced {
            if self.links.get(j).is_some_and(|l| l.conn.is_some()) {
                self.close_link(j, LinkClose::Replaced);
            }
            self.link_adopt(id, j);
        }
        if temp {
            self.links.unauthenticated = self.links.unauthenticated.saturating_sub(1);
        }
        let me = self.links.me;
        let link = self.links.slots[id].as_mut().expect("checked above");
        link.temp = false;
        link.peer_id = peer;
        link.peer_name = name;
        link.state = State::Sync;
        let ready = LinkFrame::Ready {
            max_payload: self.cfg.max_payload,
            max_channel: self.cfg.max_channel_len,
            max_message: self.cfg.max_message_len,
            rx_from: link.rx_from,
            rx_count: link.rx_count,
            import: link.import_list.iter().map(String::as_str).collect(),
        }
        .to_vec();
        if link.rx_from != peer {
            link.rx_from = peer;
            link.rx_count = 0;
            link.acked = 0;
        }
        link.queue.push_control(ready.into());
        log::info!(
            "links: {} authenticated as {:?} ({peer:016x}); this daemon is {me:016x}",
            link.label,
            link.peer_name
        );
        // Everything we know, our own state first.
        self.links_rebuild_own();
        let mut adverts = vec![Rc::clone(&self.links.own_raw)];
        adverts.extend(self.links.topo.raw_adverts().cloned());
        let link = self.links.slots[id].as_mut().expect("checked above");
        for a in adverts {
            if !a.is_empty() {
                link.queue.push_control(a);
            }
        }
        self.links.mark_dirty(id);
    }

    /// Moves what an earlier accepted link from the same peer kept (its backlog, numbering
    /// and counters) to the new link `id`, and forgets the earlier one.
    fn link_adopt(&mut self, id: LinkId, earlier: LinkId) {
        let Some(old) = self.links.slots.get_mut(earlier).and_then(Option::take) else {
            return;
        };
        let link = self.links.slots[id].as_mut().expect("caller checked");
        link.queue.inherit(old.queue);
        // The handshake's own traffic is added to the earlier totals.
        let handshake = std::mem::replace(&mut link.counters, old.counters);
        link.counters.bytes_in += handshake.bytes_in;
        link.counters.bytes_out += handshake.bytes_out;
        link.counters.writes += handshake.writes;
        link.tx_peer = old.tx_peer;
        link.rx_from = old.rx_from;
        link.rx_count = old.rx_count;
        link.acked = old.acked;
        link.frozen = old.frozen;
        link.ever_up = old.ever_up;
        link.peer_import = old.peer_import;
        link.peer_max_payload = old.peer_max_payload;
        link.peer_max_channel = old.peer_max_channel;
        link.peer_max_message = old.peer_max_message;
        // Calls relayed through the old link now answer through this one.
        for call in self.calls.values_mut() {
            for l in &mut call.links {
                if *l == earlier {
                    *l = id;
                }
            }
            if let Some(r) = call.remote.as_mut().filter(|r| r.link == earlier) {
                r.link = id;
            }
        }
    }

    /// Forgets the accepted peer that is down and holds the least; false if all are up.
    fn link_evict_accepted(&mut self) -> bool {
        let victim = self
            .links
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .filter(|(_, l)| l.accepted && !l.temp && l.conn.is_none())
            .min_by_key(|(_, l)| l.queue.bytes())
            .map(|(i, _)| i);
        let Some(i) = victim else {
            return false;
        };
        if let Some(mut l) = self.links.slots[i].take() {
            let lost = l.queue.clear();
            log::info!(
                "links: forgetting peer {:?} (down) to make room; {lost} buffered messages dropped",
                l.peer_name
            );
        }
        true
    }

    fn link_ready(
        &mut self,
        id: LinkId,
        limits: (u32, u16, u16),
        rx_from: DaemonId,
        rx_count: u64,
        import: &[&str],
    ) {
        let bad = import.len() > MAX_IMPORT_PATTERNS
            || import
                .iter()
                .any(|p| check_name(p, u16::MAX as usize).is_err());
        if bad {
            return self.link_protocol_error(id, "bad import patterns");
        }
        let me = self.links.me;
        let keepalive = Duration::from_millis(self.links.cfg.keepalive_ms as u64);
        let hold = Duration::from_millis(self.links.cfg.hold_ms as u64);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        (
            link.peer_max_payload,
            link.peer_max_channel,
            link.peer_max_message,
        ) = limits;
        link.peer_import = Subs::new(import.iter().map(|p| (*p, 1)));
        let lost = if rx_from == me && link.tx_peer == link.peer_id {
            link.queue.resume(rx_count)
        } else {
            link.tx_peer = link.peer_id;
            link.queue.restart_numbering()
        };
        if lost > 0 {
            log::warn!(
                "links: {}: {lost} messages sent before the connection broke were not \
                 confirmed by the peer and are not resent",
                link.label
            );
        }
        link.counters.dropped_unconfirmed += lost;
        let now = Instant::now();
        link.state = State::Up;
        link.hold_until = Some(now + hold);
        // The peer's advert follows its `Ready`; until it is in, the interest last known
        // for this link decides (`frozen`, and the adverts held from before).
        link.adverts_pending = true;
        if let Some(c) = link.conn.as_mut() {
            c.next_ping = now + keepalive;
        }
        if link.ever_up {
            link.counters.reconnects += 1;
        }
        link.ever_up = true;
        link.backoff_ms = 0;
        link.last_failure.clear();
        log::info!("links: link to {} ({:?}) is up", link.label, link.peer_name);
        self.links.own_dirty = true;
        self.links.changed = true;
        self.links.mark_dirty(id);
        // At once, not at the end of the loop turn: the next message must find the link.
        self.links_recompute();
    }

    /// Writes the link's queue as far as the socket takes it.
    fn link_write(&mut self, id: LinkId) {
        let limit = self.links.cfg.buffer_bytes as usize;
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        if link.state == State::Connecting {
            return;
        }
        let mut failure = None;
        loop {
            // Frames are sealed as they move to the wire buffer, a bounded batch ahead of
            // the socket; one `send` writes many of them.
            match conn.fill_wire(&mut link.queue, limit, WIRE_TARGET) {
                Ok(msgs) => link.counters.messages_out += msgs,
                Err(_) => {
                    failure = Some(LinkClose::Exhausted);
                    break;
                }
            }
            if conn.wire_pending() == 0 {
                break;
            }
            let pending = &conn.wire[conn.wire_sent..];
            match send(&conn.stream, &[io::IoSlice::new(pending)]) {
                Ok(bytes) => {
                    conn.wire_sent += bytes;
                    link.counters.bytes_out += bytes as u64;
                    link.counters.writes += 1;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    failure = Some(LinkClose::Io(e.into()));
                    break;
                }
            }
        }
        // Messages are bounded by the buffer; control frames pile up only if the peer
        // stops reading altogether.
        if link.queue.out_bytes() + conn.wire_pending() > 2 * limit + (1 << 20) {
            failure = Some(LinkClose::SlowPeer);
        }
        let want = (!link.queue.out_is_empty() || conn.wire_pending() > 0) && failure.is_none();
        if want != conn.want_write {
            conn.want_write = want;
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut ev = EpollEvent::new(flags, token(id));
            if let Err(e) = self.epoll.modify(&conn.stream, &mut ev) {
                log::error!("links: epoll_ctl(MOD) failed: {e}");
            }
        }
        if let Some(reason) = failure {
            self.close_link(id, reason);
        }
    }

    fn links_flush(&mut self) {
        while !self.links.dirty.is_empty() {
            for id in std::mem::take(&mut self.links.dirty) {
                if let Some(l) = self.links.get_mut(id) {
                    l.dirty = false;
                }
                self.link_write(id);
            }
        }
    }

    /// A connection attempt failed before there was a connection.
    fn link_failed(&mut self, id: LinkId, reason: LinkClose) {
        self.log_link_down(id, &reason, State::Down);
        self.schedule_redial(id);
    }

    fn schedule_redial(&mut self, id: LinkId) {
        if self.links.get(id).is_some_and(|l| l.dial.is_some()) {
            let delay = self.links.next_backoff(id);
            if let Some(l) = self.links.get_mut(id) {
                l.reconnect_at = Some(Instant::now() + delay);
            }
        }
    }

    fn log_link_down(&mut self, id: LinkId, reason: &LinkClose, was: State) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let text = reason.to_string();
        let who = if link.peer_name.is_empty() {
            link.label.clone()
        } else {
            format!("{} ({:?})", link.label, link.peer_name)
        };
        let peer_stopped = ErrorCode::ShuttingDown.to_u16();
        match reason {
            LinkClose::Shutdown => log::debug!("links: closing {who}"),
            LinkClose::PeerClosed(code, _) if *code == peer_stopped => {
                log::info!("links: link to {who} is down: {text}")
            }
            _ if was == State::Up => log::warn!("links: link to {who} is down: {text}"),
            LinkClose::Auth | LinkClose::Protocol(_) | LinkClose::Refused(_) => {
                log::warn!("links: {who}: {text}")
            }
            // A peer that stays unreachable is reported once, not at every redial.
            _ if link.last_failure == text => log::debug!("links: {who}: {text}"),
            _ => log::info!("links: {who}: {text}"),
        }
        link.last_failure = text;
    }

    /// Closes a link's connection and decides what comes next: a redial for a configured
    /// peer, waiting for an accepted peer to come back, or forgetting an unauthenticated one.
    fn close_link(&mut self, id: LinkId, reason: LinkClose) {
        self.links.accept_pause.descriptor_freed();
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let Some(conn) = link.conn.take() else {
            return;
        };
        let was = link.state;
        let _ = self.epoll.delete(&conn.stream);
        drop(conn);
        if matches!(reason, LinkClose::Dead(_)) {
            self.links.counters.dead_peers += 1;
        }
        if matches!(reason, LinkClose::HandshakeTimeout) {
            self.links.counters.handshake_timeouts += 1;
        }
        self.log_link_down(id, &reason, was);
        let link = self.links.slots[id].as_mut().expect("checked above");
        if was == State::Up {
            // What only this link led to is buffered for it while it is down. (Still
            // waiting for the peer's advert, it keeps what it knew before as well.)
            let mut frozen: Vec<(DaemonId, Rc<Subs>)> = self
                .links
                .topo
                .via(id)
                .iter()
                .filter_map(|o| self.links.topo.subs(*o).map(|s| (*o, Rc::clone(s))))
                .collect();
            if link.adverts_pending {
                for (o, s) in std::mem::take(&mut link.frozen) {
                    if !frozen.iter().any(|(f, _)| *f == o) {
                        frozen.push((o, s));
                    }
                }
                frozen.truncate(MAX_DAEMONS);
            }
            link.frozen = frozen;
            self.links.own_dirty = true;
            self.links.changed = true;
        }
        link.queue.disconnected();
        link.state = State::Down;
        link.hold_until = None;
        link.adverts_pending = false;
        if was == State::Up {
            // Not at the end of the loop turn: a message sent meanwhile must already find
            // the link down and be buffered, not skipped for a reachability that is gone.
            self.links_recompute();
        }
        let link = self.links.slots[id].as_mut().expect("checked above");
        if link.temp {
            self.links.unauthenticated = self.links.unauthenticated.saturating_sub(1);
            self.links.slots[id] = None;
        } else {
            self.schedule_redial(id);
        }
        self.link_calls_lost(id);
    }

    fn links_tick(&mut self) {
        let now = Instant::now();
        let dead_after = self.links.cfg.dead_after_ms;
        let keepalive = Duration::from_millis(self.links.cfg.keepalive_ms as u64);
        for id in self.links.ids() {
            let Some(link) = self.links.get_mut(id) else {
                continue;
            };
            let Some(conn) = link.conn.as_mut() else {
                if link.reconnect_at.is_some_and(|t| t <= now) {
                    self.link_dial(id);
                }
                continue;
            };
            if link.state != State::Up {
                if conn.deadline <= now {
                    self.close_link(id, LinkClose::HandshakeTimeout);
                }
                continue;
            }
            if now.saturating_duration_since(conn.last_rx)
                >= Duration::from_millis(dead_after as u64)
            {
                self.close_link(id, LinkClose::Dead(dead_after));
                continue;
            }
            let ping = conn.next_ping <= now;
            if ping {
                conn.next_ping = now + keepalive;
            }
            let ack = conn.ack_due.is_some_and(|t| t <= now);
            let hold_over =
                link.queue.backlog_len() > 0 && link.hold_until.is_some_and(|t| t <= now);
            if ping {
                let stamp = self.links.stamp();
                self.link_send(id, &LinkFrame::Ping { stamp });
            }
            if ack {
                self.link_ack(id);
            }
            if hold_over {
                self.link_pump(id);
            }
        }
        self.links.topo.forget_unreachable(now);
    }
}
