//! The event loop's side of the links: connections (accept, dial, handshake, keepalive,
//! close), and messages, calls and subscriptions crossing them.
//!
//! The link layer's state and rules are in `daemon::link`; this file wires them to the
//! loop, the router and the call table.

use super::{PendingCall, Server, Timer, SYSTEM_CHANNEL};
use crate::daemon::link::auth::{random_bytes, Role};
use crate::daemon::link::proto::{
    msg_channel, LinkFrame, ADVERT_MAX_BODY, ADVERT_MAX_NAMES, ADVERT_MAX_NAME_BYTES, LINK_VERSION,
    MSG_OVERHEAD, NONCE_LEN, PREAUTH_MAX_BODY,
};
use crate::daemon::link::topo::{DaemonId, Learned, Subs};
use crate::daemon::link::{
    configure, connect_result, dial, printable, send, Conn, LinkId, State, ACK_DELAY, ACK_EVERY,
    FIRST_LINK_TOKEN,
};
pub(super) use crate::daemon::link::{Links, LISTENER_TOKEN};
use crate::pattern::{check_name, is_pattern};
use crate::wire::{
    ChannelInfo, Credentials, ErrorCode, Frame, FrameReader, LinkInfo, MonitorEvent, HEADER_LEN,
};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::cmp::Reverse;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read from one link before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Import patterns a peer may announce.
const MAX_IMPORT_PATTERNS: usize = 1024;
/// Extra time a relayed call is remembered past its timeout, for late replies in transit.
const CALL_GRACE: Duration = Duration::from_secs(1);

/// The sender of a message that came from another board, for subscribers that asked for
/// credentials: no process of this board, no user (`u32::MAX`), so that it is never
/// mistaken for a local, privileged sender.
const REMOTE_SENDER: Credentials = Credentials {
    pid: 0,
    uid: u32::MAX,
    gid: u32::MAX,
};

/// Where the answer to a call that arrived over a link goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteCaller {
    link: LinkId,
    origin: DaemonId,
    call_id: u32,
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
        }
    }
}

fn token(id: LinkId) -> u64 {
    FIRST_LINK_TOKEN + id as u64
}

fn origin_of(frame: &[u8]) -> DaemonId {
    frame
        .get(HEADER_LEN..HEADER_LEN + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
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
            .min()
    }

    /// Once per loop turn: timers, the effects of changes, then writes.
    pub(super) fn links_turn(&mut self) {
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
        }
        .to_vec();
        for id in self.links.ids() {
            if let Some(c) = self.links.get(id).and_then(|l| l.conn.as_ref()) {
                let _ = send(&c.stream, &[io::IoSlice::new(&bye)]);
            }
            self.close_link(id, LinkClose::Shutdown);
        }
    }

    // ----- connections -------------------------------------------------------------------

    fn link_accept_all(&mut self) {
        loop {
            let Some(listener) = &self.links.listener else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("links: accept failed: {e}");
                    return;
                }
            };
            self.links.counters.accepted += 1;
            let cfg = &self.links.cfg;
            let busy = if self.links.unauthenticated >= cfg.max_unauthenticated as usize {
                Some("too many unauthenticated connections")
            } else {
                None
            };
            if let Some(why) = busy {
                self.links.counters.refused += 1;
                log::warn!("links: refusing a connection from {addr}: {why}");
                let _ = stream.set_nonblocking(true);
                let close = LinkFrame::Close {
                    code: ErrorCode::LinkBusy.to_u16(),
                    text: why,
                }
                .to_vec();
                let _ = send(&stream, &[io::IoSlice::new(&close)]);
                continue;
            }
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
    fn link_send(&mut self, id: LinkId, frame: &LinkFrame<'_>) {
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
        let mut budget = READ_BUDGET;
        let mut outcome = None;
        'read: while budget > 0 {
            let Some(conn) = self.links.get_mut(id).and_then(|l| l.conn.as_mut()) else {
                return; // closed while handling a frame
            };
            let n = match (&conn.stream).read(reader.buffer_mut(READ_CHUNK)) {
                Ok(0) => {
                    outcome = Some(LinkClose::Eof);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
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
                let raw = match reader.next_raw() {
                    Ok(Some(raw)) => raw,
                    Ok(None) => break,
                    Err(e) => {
                        outcome = Some(LinkClose::Protocol(e.to_string()));
                        break 'read;
                    }
                };
                self.link_frame(id, raw);
                match self.links.get(id) {
                    Some(l) if l.conn.is_some() => {
                        let max = if l.state.unauthenticated() {
                            PREAUTH_MAX_BODY
                        } else {
                            self.link_max_body()
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
        let unacked = link.rx_count - link.acked;
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        conn.reader = reader;
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
                "peer speaks link versions {}..={}, this daemon {LINK_VERSION}",
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
        self.link_authenticated(id);
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
        if let Some(c) = link.conn.as_mut() {
            c.next_ping = now + keepalive;
        }
        if link.ever_up {
            link.counters.reconnects += 1;
        }
        link.ever_up = true;
        link.backoff_ms = 0;
        link.frozen.clear();
        link.last_failure.clear();
        log::info!("links: link to {} ({:?}) is up", link.label, link.peer_name);
        self.links.own_dirty = true;
        self.links.changed = true;
        self.links.mark_dirty(id);
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
        while !link.queue.out_is_empty() {
            let stream = &conn.stream;
            match link.queue.write_with(limit, |s| send(stream, s)) {
                Ok((bytes, msgs)) => {
                    link.counters.bytes_out += bytes as u64;
                    link.counters.messages_out += msgs;
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
        if link.queue.out_bytes() > 2 * limit + (1 << 20) {
            failure = Some(LinkClose::SlowPeer);
        }
        let want = !link.queue.out_is_empty() && failure.is_none();
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
            // What only this link led to is buffered for it while it is down.
            link.frozen = self
                .links
                .topo
                .via(id)
                .iter()
                .filter_map(|o| self.links.topo.subs(*o).map(|s| (*o, Rc::clone(s))))
                .collect();
            self.links.own_dirty = true;
            self.links.changed = true;
        }
        link.queue.disconnected();
        link.state = State::Down;
        link.hold_until = None;
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

    // ----- adverts and interest ------------------------------------------------------------

    /// Rebuilds our advert if our subscriptions or neighbours changed; true if it changed.
    fn links_rebuild_own(&mut self) -> bool {
        if !self.links.own_dirty {
            return false;
        }
        self.links.own_dirty = false;
        let mut neighbors: Vec<DaemonId> = Vec::new();
        for (_, peer) in self.links.up_links() {
            if let Err(i) = neighbors.binary_search(&peer) {
                neighbors.insert(i, peer);
            }
        }
        let mut subs: Vec<(String, u32)> = self
            .router
            .list()
            .into_iter()
            .filter(|(name, _, _)| name != SYSTEM_CHANNEL)
            .map(|(name, n, _)| (name, n))
            .collect();
        let total: u32 = subs.iter().map(|s| s.1).sum();
        if subs.len() > ADVERT_MAX_NAMES
            || subs.iter().map(|s| s.0.len() + 6).sum::<usize>() > ADVERT_MAX_NAME_BYTES
        {
            // Too many names to list: ask for everything instead.
            subs = vec![("*".to_owned(), total)];
        }
        if self.links.own_version > 0
            && neighbors == self.links.own_neighbors
            && subs == self.links.own_subs
        {
            return false;
        }
        self.links.own_version += 1;
        let raw = LinkFrame::Advert {
            origin: self.links.me,
            version: self.links.own_version,
            neighbors: neighbors.clone(),
            subs: subs.iter().map(|(n, c)| (n.as_str(), *c)).collect(),
        }
        .to_vec();
        self.links.own_raw = raw.into();
        self.links.own_neighbors = neighbors;
        self.links.own_subs = subs;
        true
    }

    /// After changes: a new advert of ours if needed, reachability, and the backlogs.
    fn links_refresh(&mut self) {
        self.links.changed = false;
        if self.links_rebuild_own() {
            let raw = Rc::clone(&self.links.own_raw);
            self.links_relay(&raw, None);
        }
        let up = self.links.up_links();
        self.links.topo.recompute(&up, Instant::now());
        for (id, _) in up {
            self.link_pump(id);
        }
    }

    /// Sends a control frame (an advert) to every authenticated link but `except`.
    fn links_relay(&mut self, raw: &Rc<[u8]>, except: Option<LinkId>) {
        for id in self.links.ids() {
            let Some(l) = self.links.get_mut(id) else {
                continue;
            };
            if Some(id) != except && matches!(l.state, State::Sync | State::Up) {
                l.queue.push_control(Rc::clone(raw));
                self.links.mark_dirty(id);
            }
        }
    }

    fn link_advert(
        &mut self,
        id: LinkId,
        raw: &[u8],
        origin: DaemonId,
        version: u64,
        neighbors: Vec<DaemonId>,
        subs: &[(&str, u32)],
    ) {
        let max = self.cfg.max_channel_len as usize;
        let subs = Subs::new(
            subs.iter()
                .filter(|(n, _)| check_name(n, max).is_ok())
                .copied(),
        );
        let raw: Rc<[u8]> = raw.into();
        match self.links.topo.learn(
            origin,
            version,
            neighbors,
            subs,
            Rc::clone(&raw),
            Instant::now(),
        ) {
            Learned::New => {
                self.links_relay(&raw, Some(id));
                self.links.changed = true;
            }
            Learned::Old => {}
            Learned::Refused => {
                log::debug!("links: advert of {origin:016x} refused (too many daemons known)")
            }
        }
    }

    /// Moves buffered messages to the connection once the peer wants them again; after the
    /// hold time, drops those nobody wants.
    fn link_pump(&mut self, id: LinkId) {
        let now = Instant::now();
        let Some(link) = self.links.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if link.state != State::Up {
            return;
        }
        let mut moved = false;
        while let Some(front) = link.queue.backlog_front() {
            let origin = origin_of(front);
            let wanted = msg_channel(front)
                .is_some_and(|ch| link.carries(ch) && self.links.topo.link_wants(id, ch, origin));
            if wanted {
                link.queue.backlog_to_out();
                moved = true;
            } else if link.hold_until.is_some_and(|t| now < t) {
                break;
            } else {
                link.queue.backlog_pop();
                link.counters.dropped_unwanted += 1;
            }
        }
        if moved {
            self.links.mark_dirty(id);
        }
    }

    // ----- messages ------------------------------------------------------------------------

    /// Sends a message published here to the links that lead to its subscribers; returns
    /// how many links took it.
    pub(super) fn links_publish(&mut self, channel: &str, message: &str, payload: &[u8]) -> u32 {
        if self.links.slots.is_empty() || channel == SYSTEM_CHANNEL {
            return 0;
        }
        let me = self.links.me;
        if !self.link_targets(channel, message, payload.len(), me, None) {
            return 0;
        }
        let oseq = self.links.next_oseq;
        self.links.next_oseq += 1;
        self.enc.clear();
        LinkFrame::Msg {
            origin: me,
            oseq,
            channel,
            message,
            payload,
        }
        .encode(&mut self.enc);
        let frame: Rc<[u8]> = Rc::from(&self.enc[..]);
        self.link_push_targets(&frame)
    }

    /// Fills `links.scratch` with the links a message goes to (`true`: to be buffered
    /// because the link is down); false if none.
    fn link_targets(
        &mut self,
        channel: &str,
        message: &str,
        payload: usize,
        origin: DaemonId,
        from: Option<LinkId>,
    ) -> bool {
        let mut targets = std::mem::take(&mut self.links.scratch);
        targets.clear();
        let topo = &self.links.topo;
        for (id, link) in self.links.slots.iter_mut().enumerate() {
            let Some(link) = link else {
                continue;
            };
            if Some(id) == from || link.temp || !link.export.wants(channel) {
                continue;
            }
            let buffered = if link.state == State::Up {
                if !link.peer_import.wants(channel) || !topo.link_wants(id, channel, origin) {
                    continue;
                }
                false
            } else if link.ever_up
                && link.peer_import.wants(channel)
                && link.buffers_for(topo, channel, origin)
            {
                true
            } else {
                continue;
            };
            if !link.fits(channel, message, payload) {
                link.counters.dropped_too_large += 1;
                continue;
            }
            targets.push((id, buffered));
        }
        let any = !targets.is_empty();
        self.links.scratch = targets;
        any
    }

    /// Queues `frame` on the links in `links.scratch`; returns how many took it.
    fn link_push_targets(&mut self, frame: &Rc<[u8]>) -> u32 {
        let limit = self.links.cfg.buffer_bytes as usize;
        let targets = std::mem::take(&mut self.links.scratch);
        for &(id, buffered) in &targets {
            let Some(link) = self.links.get_mut(id) else {
                continue;
            };
            let dropped = if buffered || link.queue.backlog_len() > 0 {
                link.queue.push_backlog(Rc::clone(frame), limit)
            } else {
                link.queue.push_msg(Rc::clone(frame), limit)
            };
            link.counters.dropped_buffer_full += dropped;
            if !buffered {
                self.link_pump(id);
                self.links.mark_dirty(id);
            }
        }
        let n = targets.len() as u32;
        self.links.scratch = targets;
        n
    }

    /// Checks a message from a link against this daemon's rules for clients.
    fn link_message_ok(&self, channel: &str, message: &str, payload: &[u8]) -> bool {
        check_name(channel, self.cfg.max_channel_len as usize).is_ok()
            && !is_pattern(channel)
            && channel != SYSTEM_CHANNEL
            && check_name(message, self.cfg.max_message_len as usize).is_ok()
            && payload.len() <= self.cfg.max_payload as usize
    }

    #[allow(clippy::too_many_arguments)]
    fn link_msg(
        &mut self,
        id: LinkId,
        raw: &[u8],
        origin: DaemonId,
        oseq: u64,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) {
        let me = self.links.me;
        let fresh = origin != me && self.links.dedupe.accept(origin, oseq);
        let ok = self.link_message_ok(channel, message, payload);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.rx_count += 1;
        link.counters.messages_in += 1;
        if !fresh {
            link.counters.duplicates += 1;
            return;
        }
        if !link.import.wants(channel) {
            link.counters.dropped_not_imported += 1;
            return;
        }
        if !ok {
            link.counters.dropped_invalid += 1;
            return;
        }
        self.monitor(
            MonitorEvent::Send,
            0,
            REMOTE_SENDER,
            channel,
            message,
            payload,
        );
        self.deliver_local(REMOTE_SENDER, channel, message, payload);
        if self.link_targets(channel, message, payload.len(), origin, Some(id)) {
            let frame: Rc<[u8]> = raw.into();
            self.link_push_targets(&frame);
        }
    }

    // ----- calls ---------------------------------------------------------------------------

    /// Forwards a call made here to the links that lead to subscribers of `channel`;
    /// returns those links.
    pub(super) fn links_call(
        &mut self,
        token: u32,
        timeout_ms: u32,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) -> Vec<LinkId> {
        if self.links.slots.is_empty() || channel == SYSTEM_CHANNEL {
            return Vec::new();
        }
        let me = self.links.me;
        let targets = self.link_call_targets(channel, message, payload.len(), me, None);
        if targets.is_empty() {
            return targets;
        }
        let oseq = self.links.next_oseq;
        self.links.next_oseq += 1;
        let frame: Rc<[u8]> = LinkFrame::Call {
            origin: me,
            oseq,
            call_id: token,
            timeout_ms,
            channel,
            message,
            payload,
        }
        .to_vec()
        .into();
        self.link_send_call(&targets, &frame);
        targets
    }

    /// Whether some link would take a call on `channel` (for `NoResponder`).
    pub(super) fn links_have_responder(&self, channel: &str) -> bool {
        let me = self.links.me;
        self.links.slots.iter().enumerate().any(|(id, l)| {
            l.as_ref().is_some_and(|l| {
                l.state == State::Up
                    && l.carries(channel)
                    && self.links.topo.link_wants(id, channel, me)
            })
        })
    }

    /// Calls go only over links that are up: a call is not worth buffering.
    fn link_call_targets(
        &mut self,
        channel: &str,
        message: &str,
        payload: usize,
        origin: DaemonId,
        from: Option<LinkId>,
    ) -> Vec<LinkId> {
        let topo = &self.links.topo;
        let mut out = Vec::new();
        for (id, link) in self.links.slots.iter_mut().enumerate() {
            let Some(link) = link else {
                continue;
            };
            if Some(id) == from
                || link.state != State::Up
                || !link.carries(channel)
                || !topo.link_wants(id, channel, origin)
            {
                continue;
            }
            if !link.fits(channel, message, payload) {
                link.counters.dropped_too_large += 1;
                continue;
            }
            out.push(id);
        }
        out
    }

    fn link_send_call(&mut self, targets: &[LinkId], frame: &Rc<[u8]>) {
        for &id in targets {
            if let Some(l) = self.links.get_mut(id) {
                l.queue.push_control(Rc::clone(frame));
                l.counters.calls_out += 1;
                self.links.mark_dirty(id);
            }
        }
    }

    fn link_call_gone_to(&mut self, id: LinkId, origin: DaemonId, call_id: u32, delivered: bool) {
        self.link_send(
            id,
            &LinkFrame::CallGone {
                origin,
                call_id,
                delivered,
            },
        );
    }

    fn link_call_in(
        &mut self,
        id: LinkId,
        raw: &[u8],
        (origin, oseq, call_id, timeout_ms): (DaemonId, u64, u32, u32),
        channel: &str,
        message: &str,
        payload: &[u8],
    ) {
        let me = self.links.me;
        let fresh = origin != me
            && self.links.dedupe.accept(origin, oseq)
            && self.remote_call(origin, call_id).is_none();
        let ok = self.link_message_ok(channel, message, payload);
        let max_calls = self.cfg.max_calls_per_client;
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.counters.calls_in += 1;
        let refused = if !fresh {
            link.counters.duplicates += 1;
            true
        } else if !link.import.wants(channel) {
            link.counters.dropped_not_imported += 1;
            true
        } else if !ok {
            link.counters.dropped_invalid += 1;
            true
        } else if link.calls_in_flight >= max_calls {
            link.counters.dropped_limit += 1;
            log::debug!(
                "links: {}: call refused, {max_calls} calls already in flight",
                link.label
            );
            true
        } else {
            false
        };
        if refused {
            return self.link_call_gone_to(id, origin, call_id, false);
        }
        let mut recipients = std::mem::take(&mut self.scratch);
        self.router.recipients(channel, &mut recipients);
        let targets = self.link_call_targets(channel, message, payload.len(), origin, Some(id));
        if recipients.is_empty() && targets.is_empty() {
            self.scratch = recipients;
            return self.link_call_gone_to(id, origin, call_id, false);
        }
        let token = self.allocate_token();
        let monitored = !self.access.monitors.is_empty();
        if monitored {
            self.monitor(
                MonitorEvent::Call,
                token,
                REMOTE_SENDER,
                channel,
                message,
                payload,
            );
        }
        let m = super::access::Delivery {
            token,
            sender: REMOTE_SENDER,
            channel,
            message,
            payload,
        };
        let mut reached = Vec::with_capacity(recipients.len());
        self.deliver(&recipients, &m, Some(&mut reached));
        self.scratch = recipients;
        if !targets.is_empty() {
            let frame: Rc<[u8]> = raw.into();
            self.link_send_call(&targets, &frame);
        }
        if reached.is_empty() && targets.is_empty() {
            return self.link_call_gone_to(id, origin, call_id, false);
        }
        let timeout = match timeout_ms {
            0 => self.cfg.call_timeout_ms,
            t => t.min(self.cfg.max_call_timeout_ms),
        };
        self.calls.insert(
            token,
            PendingCall {
                caller: usize::MAX,
                caller_id: 0,
                seq: 0,
                channel: monitored.then(|| channel.into()),
                delivered: !reached.is_empty(),
                recipients: reached,
                links: targets,
                remote: Some(RemoteCaller {
                    link: id,
                    origin,
                    call_id,
                }),
            },
        );
        if let Some(l) = self.links.get_mut(id) {
            l.calls_in_flight += 1;
        }
        let deadline = Instant::now() + Duration::from_millis(timeout as u64) + CALL_GRACE;
        self.timers.push(Reverse((deadline, Timer::Call(token))));
    }

    /// The local token of a call that came over a link, by its origin and id.
    fn remote_call(&self, origin: DaemonId, call_id: u32) -> Option<u32> {
        self.calls.iter().find_map(|(token, c)| {
            c.remote
                .filter(|r| r.origin == origin && r.call_id == call_id)
                .map(|_| *token)
        })
    }

    /// The local token of a call known by its origin and id, if it went out over `from`.
    fn link_call_token(&self, origin: DaemonId, call_id: u32, from: LinkId) -> Option<u32> {
        let token = if origin == self.links.me {
            call_id
        } else {
            self.remote_call(origin, call_id)?
        };
        self.calls
            .get(&token)
            .filter(|c| c.links.contains(&from))
            .map(|_| token)
    }

    fn link_reply_in(&mut self, id: LinkId, raw: &[u8], origin: DaemonId, call_id: u32) {
        let Some(token) = self.link_call_token(origin, call_id, id) else {
            self.counters.replies_unmatched += 1;
            return;
        };
        let Some(call) = self.take_call(token) else {
            return;
        };
        match call.remote {
            Some(r) => {
                let frame: Rc<[u8]> = raw.into();
                if let Some(l) = self.links.get_mut(r.link) {
                    if l.conn.is_some() {
                        l.queue.push_control(frame);
                        self.links.mark_dirty(r.link);
                    }
                }
            }
            None => {
                let Ok(LinkFrame::Reply {
                    error,
                    message,
                    payload,
                    ..
                }) = LinkFrame::decode(raw)
                else {
                    return;
                };
                self.counters.calls_answered += 1;
                let reply = super::encode_shared(
                    &mut self.enc,
                    &Frame::Reply {
                        seq: call.seq,
                        error,
                        message,
                        payload,
                    },
                );
                self.finish_call(&call, reply);
            }
        }
    }

    /// A local responder answered a call that came over a link: the answer goes back.
    pub(super) fn link_reply_out(
        &mut self,
        call: &PendingCall,
        error: bool,
        message: &str,
        payload: &[u8],
    ) {
        let Some(r) = call.remote else {
            return;
        };
        self.link_send(
            r.link,
            &LinkFrame::Reply {
                origin: r.origin,
                call_id: r.call_id,
                error,
                message,
                payload,
            },
        );
    }

    fn link_call_gone_in(&mut self, id: LinkId, origin: DaemonId, call_id: u32, delivered: bool) {
        let Some(token) = self.link_call_token(origin, call_id, id) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&token) {
            call.links.retain(|&l| l != id);
            call.delivered |= delivered;
            if call.recipients.is_empty() && call.links.is_empty() {
                self.call_abandoned(token);
            }
        }
    }

    /// A link went down: calls waiting on it lose that path; calls that came over it are
    /// forgotten (their caller's daemon sees the link go down too).
    fn link_calls_lost(&mut self, id: LinkId) {
        let mut abandoned = Vec::new();
        let mut forgotten = Vec::new();
        for (token, call) in &mut self.calls {
            if call.remote.is_some_and(|r| r.link == id) {
                forgotten.push(*token);
                continue;
            }
            if call.links.contains(&id) {
                call.links.retain(|&l| l != id);
                // Whether it reached anyone there is unknown: assume it did.
                call.delivered = true;
                if call.recipients.is_empty() && call.links.is_empty() {
                    abandoned.push(*token);
                }
            }
        }
        for token in forgotten {
            self.take_call(token);
        }
        for token in abandoned {
            self.call_abandoned(token);
        }
    }

    /// A call that came over a link is no longer waited for here.
    pub(super) fn link_call_released(&mut self, r: RemoteCaller) {
        if let Some(l) = self.links.get_mut(r.link) {
            l.calls_in_flight = l.calls_in_flight.saturating_sub(1);
        }
    }

    /// Nobody here will answer a call that came over a link: say so on that link.
    pub(super) fn link_call_gone(&mut self, r: RemoteCaller, delivered: bool) {
        self.link_call_gone_to(r.link, r.origin, r.call_id, delivered);
    }

    // ----- queries -------------------------------------------------------------------------

    /// Exact subscribers of `channel` on other daemons that a message sent here would reach.
    pub(super) fn links_registered(&self, channel: &str) -> u32 {
        let mut seen: Vec<DaemonId> = Vec::new();
        let mut n = 0u32;
        for (id, l) in self.links.slots.iter().enumerate() {
            let Some(l) = l else {
                continue;
            };
            if l.state != State::Up || !l.carries(channel) {
                continue;
            }
            for &o in self.links.topo.via(id) {
                if seen.contains(&o) {
                    continue;
                }
                seen.push(o);
                n = n.saturating_add(self.links.topo.subs(o).map_or(0, |s| s.exact(channel)));
            }
        }
        n
    }

    /// The local channel list merged with the subscriptions of every reachable daemon.
    pub(super) fn links_channels(&self, local: Vec<(String, u32, bool)>) -> Vec<ChannelInfo> {
        // Every remote name once, sorted, with the counts of all daemons added up.
        let mut remote: Vec<(&str, u32, bool)> = Vec::new();
        for o in self.links.topo.reachable() {
            for (name, count, pattern) in self.links.topo.subs(o).into_iter().flat_map(|s| s.iter())
            {
                match remote.binary_search_by(|r| r.0.cmp(name)) {
                    Ok(i) => remote[i].1 = remote[i].1.saturating_add(count),
                    Err(i) => remote.insert(i, (name, count, pattern)),
                }
            }
        }
        // Both lists are sorted by name: merge them.
        let mut out = Vec::with_capacity(local.len() + remote.len());
        let mut remote = remote.into_iter().peekable();
        let mut take_remote = |name: Option<&str>, out: &mut Vec<ChannelInfo>| -> u32 {
            let mut n = 0u32;
            while let Some(&(r, count, pattern)) = remote.peek() {
                match name {
                    Some(name) if r > name => break,
                    Some(name) if r == name => n = n.saturating_add(count),
                    _ => out.push(ChannelInfo {
                        name: r.to_owned(),
                        subscribers: 0,
                        pattern,
                        remote: count,
                    }),
                }
                remote.next();
            }
            n
        };
        for (name, subscribers, pattern) in local {
            let remote = take_remote(Some(&name), &mut out);
            out.push(ChannelInfo {
                name,
                subscribers,
                pattern,
                remote,
            });
        }
        take_remote(None, &mut out);
        out
    }

    /// The links section of `qcop stats`, and the daemon-wide link counters.
    pub(super) fn links_report(&self) -> (Vec<(String, u64)>, Vec<LinkInfo>) {
        if !self.links.cfg.enabled() {
            return (Vec::new(), Vec::new());
        }
        let links = self
            .links
            .slots
            .iter()
            .flatten()
            .filter(|l| !l.temp)
            .map(|l| l.info())
            .collect();
        (self.links.report(), links)
    }
}
