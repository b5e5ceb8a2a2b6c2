//! The single-threaded event loop: accept, read frames, route, write, time out.
//!
//! The system-bus parts live in child modules that extend [`Server`]: `access` (policy
//! checks, sender credentials, monitors) and `services` (activation of applications).

mod access;
mod input;
mod services;

use super::activate::Activation;
use super::config::{Config, SlowConsumerPolicy};
use super::listen::{fit_fd_limit, sd_notify, AcceptPause, Listening};
use super::outq::OutQueue;
use super::policy::Action;
use super::quota::Quota;
use super::router::{Router, Slot, Subscribed, Unsubscribed};
use super::shm_segments::{Peer, SegAnswer, Segments};
use super::signals::Signals;
use super::stats::{Counters, Gauges};
use super::timers::Timers;
use crate::datastream::Value;
use crate::pattern::{check_message_name, check_name, is_pattern};
use crate::wire::{
    ClientInfo, Credentials, DecodeError, ErrorCode, Frame, FrameReader, MonitorEvent, StatsReport,
    PROTOCOL_VERSION,
};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[cfg(feature = "links")]
mod link_traffic;
#[cfg(feature = "links")]
mod links;
#[cfg(not(feature = "links"))]
mod no_links;
use links::{Links, RemoteCaller, LISTENER_TOKEN};
#[cfg(not(feature = "links"))]
use no_links as links;
mod shm_streams;

/// Channel on which the daemon announces channel lifecycle events.
pub const SYSTEM_CHANNEL: &str = "qcop/daemon";

const TOKEN_LISTENER: u64 = 0;
const TOKEN_SIGNAL: u64 = 1;
const FIRST_CLIENT_TOKEN: u64 = 2;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes read from one client before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// A read buffer larger than this is released when idle.
const READ_KEEP: usize = 64 * 1024;

struct Client {
    id: u32,
    stream: UnixStream,
    reader: FrameReader,
    pid: u32,
    uid: u32,
    gid: u32,
    name: String,
    greeted: bool,
    /// Set once a fatal error was queued: nothing more is read, the queue is flushed once
    /// and the connection closed.
    closing: bool,
    /// Disconnected as a slow consumer: the rest of a partly written frame and the fatal
    /// error are still being written (for at most [`SLOW_CONSUMER_GRACE`]).
    lingering: bool,
    subscriptions: Vec<Box<str>>,
    out: OutQueue,
    /// EPOLLOUT is registered (the queue could not be written completely).
    want_write: bool,
    /// Listed in `Server::dirty`.
    dirty: bool,
    delivered: u64,
    dropped: u64,
    calls_in_flight: u32,
    max_payload: u32,
    /// Bytes of `reader` charged to the user's quota.
    input_charged: u64,
    /// A `Timer::PartialFrame` is pending for this client.
    partial_timer: bool,
    /// Frames this client has sent, whichever read buffer they arrived in (the
    /// partial-frame timeout asks whether it completed one).
    frames_in: u64,
    /// Policy view, subscriptions with credentials, monitor state.
    access: access::ClientAccess,
}

struct PendingCall {
    caller: Slot,
    caller_id: u32,
    seq: u32,
    /// Client ids that received the call and have not left.
    recipients: Vec<u32>,
    /// The call's channel, kept only while monitors are connected (their reply lines
    /// name it).
    channel: Option<Box<str>>,
    /// Links the call went out on that have neither answered nor given up.
    links: Vec<usize>,
    /// Some recipient, here or behind a link, received the call.
    delivered: bool,
    /// For a call that came over a link: where the answer goes (no local caller then).
    remote: Option<RemoteCaller>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Call(u32),
    Handshake {
        slot: Slot,
        id: u32,
    },
    /// End of a slow consumer's [`SLOW_CONSUMER_GRACE`].
    Linger {
        slot: Slot,
        id: u32,
    },
    /// The client's read buffer held a partial frame when its reader had returned `frames`.
    PartialFrame {
        slot: Slot,
        id: u32,
        frames: u64,
    },
}

/// Why subscriptions end (see `Server::remove_subscriptions`).
#[derive(Clone, Copy)]
enum Removal<'a> {
    /// The client asked (request `seq`): answered `Ok`.
    Unsubscribed { seq: u32 },
    /// A reload's policy denies it: the client gets `Revoked` with the policy's `text`.
    Revoked { text: &'a str },
    /// The connection closed.
    Closed,
}

/// How long a client disconnected as a slow consumer is given to read the rest of a partly
/// written frame and the fatal error before its connection is closed regardless.
const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);

/// Why a client is being closed; drives logging and counters.
enum CloseReason {
    Eof,
    IoError(io::Error),
    Protocol,
    SlowConsumer,
    HandshakeTimeout,
}

/// The daemon's state.
pub struct Server {
    cfg: Config,
    config_path: Option<PathBuf>,
    epoll: Epoll,
    listener: UnixListener,
    owned_path: Option<PathBuf>,
    signals: Signals,
    clients: Vec<Option<Client>>,
    free_slots: Vec<Slot>,
    client_count: usize,
    /// Per-user accounting of connections.
    quota: Quota,
    router: Router,
    counters: Counters,
    calls: HashMap<u32, PendingCall>,
    timers: Timers<Timer>,
    next_token: u32,
    next_client_id: u32,
    dirty: Vec<Slot>,
    to_close: Vec<(Slot, CloseReason)>,
    scratch: Vec<Slot>,
    /// Encoding buffer: a frame is encoded here, then copied into each receiver's queue.
    enc: Vec<u8>,
    /// The second flavour of a delivered message (with the sender's credentials).
    enc_signed: Vec<u8>,
    /// The channel and message names `check_message` last found valid (empty: none; the
    /// limits they were checked against change only with a reload, which empties them).
    valid_names: (String, String),
    /// Read buffer shared by every client whose own reader holds no partial frame.
    shared_reader: FrameReader,
    queued_total: u64,
    started: Instant,
    /// Shared-memory segments and system semaphores.
    segments: Segments,
    /// Access policy and monitors.
    access: access::Access,
    /// Services started on demand.
    activation: Activation,
    /// Links to daemons on other boards.
    #[cfg_attr(not(feature = "links"), allow(dead_code))]
    links: Links,
    /// Shared-memory streams (`shm_streams`).
    shm: shm_streams::ShmStreams,
    /// Set while `accept` fails for want of descriptors: the listener is not watched.
    accept_pause: AcceptPause,
}

/// Error starting the event loop.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

impl Server {
    /// Prepares the loop around a bound listener and the installed signal handlers.
    pub fn new(
        cfg: Config,
        config_path: Option<PathBuf>,
        listening: Listening,
        signals: Signals,
    ) -> Result<Server, SetupError> {
        let err = |what: &str, e: &dyn std::fmt::Display| SetupError(format!("{what}: {e}"));
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| err("epoll", &e))?;
        let ev = |t| EpollEvent::new(EpollFlags::EPOLLIN, t);
        epoll
            .add(&listening.listener, ev(TOKEN_LISTENER))
            .map_err(|e| err("epoll", &e))?;
        epoll
            .add(&signals.rx, ev(TOKEN_SIGNAL))
            .map_err(|e| err("epoll", &e))?;
        let access = access::Access::new(&cfg).map_err(|e| err("policy", &e))?;
        // Started applications are pointed at the socket this daemon listens on.
        let socket = listening
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(PathBuf::from))
            .unwrap_or_else(crate::paths::default_socket_path);
        let activation = Activation::new(&cfg, socket, &super::names::SystemNames)
            .map_err(|e| err("services", &e))?;
        let links = Links::new(&cfg.links).map_err(SetupError)?;
        let mut server = Server {
            cfg,
            config_path,
            epoll,
            listener: listening.listener,
            owned_path: listening.owned_path,
            signals,
            clients: Vec::new(),
            free_slots: Vec::new(),
            client_count: 0,
            quota: Quota::new(nix::unistd::geteuid().as_raw()),
            router: Router::default(),
            counters: Counters::default(),
            calls: HashMap::new(),
            timers: Timers::default(),
            next_token: 1,
            next_client_id: 1,
            dirty: Vec::new(),
            to_close: Vec::new(),
            scratch: Vec::new(),
            enc: Vec::with_capacity(1024),
            enc_signed: Vec::new(),
            valid_names: (String::new(), String::new()),
            shared_reader: FrameReader::new(0),
            queued_total: 0,
            started: Instant::now(),
            segments: Segments::default(),
            access,
            activation,
            links,
            shm: shm_streams::ShmStreams::default(),
            accept_pause: AcceptPause::default(),
        };
        server.links_register().map_err(SetupError)?;
        Ok(server)
    }

    /// Runs until SIGTERM or SIGINT; then says goodbye to clients and removes the socket.
    pub fn run(&mut self) -> Result<(), SetupError> {
        sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        log::info!("ready, accepting connections");
        self.restore_services();
        let mut events = vec![EpollEvent::empty(); 256];
        while !self.signals.terminate_requested() {
            let timeout = self.next_timeout();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(SetupError(format!("epoll_wait: {e}"))),
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_LISTENER => self.accept_all(),
                    TOKEN_SIGNAL => self.signals.drain(),
                    token if token >= shm_streams::TOKEN_BASE => self.shm_event(token),
                    token if token >= LISTENER_TOKEN => self.link_event(token, ev.events()),
                    token => {
                        let slot = (token - FIRST_CLIENT_TOKEN) as Slot;
                        let flags = ev.events();
                        if flags.intersects(EpollFlags::EPOLLOUT) {
                            self.mark_dirty(slot);
                        }
                        if flags.intersects(
                            EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
                        ) {
                            self.read_client(slot);
                        }
                    }
                }
                self.close_pending();
            }
            if self.accept_pause.take_due(Instant::now()) {
                self.watch_listener(true);
                self.accept_all();
            }
            if self.signals.take_reload() {
                self.reload_config();
            }
            if self.signals.take_child_exited() {
                self.reap_services();
            }
            self.expire_timers(Instant::now());
            self.expire_services();
            self.compact_timers();
            self.links_turn();
            self.shm_poll();
            self.flush_dirty();
            self.close_pending();
        }
        self.shutdown();
        Ok(())
    }

    fn next_timeout(&mut self) -> EpollTimeout {
        if self.shm_has_work() {
            return EpollTimeout::ZERO;
        }
        let next = self.timers.next_deadline();
        let services = self.activation.next_deadline();
        let links = self.links_next_deadline();
        let accept = self.accept_pause.deadline();
        match next
            .into_iter()
            .chain(services)
            .chain(links)
            .chain(accept)
            .min()
        {
            None => EpollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                EpollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(EpollTimeout::NONE)
            }
        }
    }

    fn reload_config(&mut self) {
        sd_notify("RELOADING=1");
        match &self.config_path {
            None => log::info!("SIGHUP: no configuration file in use, nothing to reload"),
            Some(path) => match Config::load(path) {
                Ok(mut new) => {
                    fit_fd_limit(&mut new);
                    if new.socket != self.cfg.socket
                        || new.socket_mode != self.cfg.socket_mode
                        || new.socket_group != self.cfg.socket_group
                    {
                        log::warn!("socket settings changed; they take effect after a restart");
                    }
                    if new.links != self.cfg.links {
                        log::warn!("link settings changed; they take effect after a restart");
                    }
                    log::info!("configuration reloaded from {}", path.display());
                    let links = std::mem::take(&mut self.cfg.links);
                    self.cfg = new;
                    self.cfg.links = links;
                    self.counters.reloads += 1;
                    self.valid_names.0.clear();
                    self.valid_names.1.clear();
                    self.reload_access();
                    self.reload_services();
                }
                Err(e) => {
                    log::error!("reload failed, keeping the previous configuration: {e}");
                    self.counters.reload_failures += 1;
                }
            },
        }
        sd_notify("READY=1");
    }

    // ----- connections -------------------------------------------------------------------

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up before it was accepted.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays pending, so a watched
                    // listener would wake the loop at once, forever. Pause watching it.
                    self.counters.accept_failures += 1;
                    self.accept_pause.failed("clients", &e, self.client_count);
                    self.watch_listener(false);
                    return;
                }
            };
            self.accept_pause.succeeded();
            self.admit(stream);
        }
    }

    /// Watches the listener for connections, or stops watching it (`AcceptPause`).
    fn watch_listener(&mut self, watch: bool) {
        let flags = if watch {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        let mut event = EpollEvent::new(flags, TOKEN_LISTENER);
        if let Err(e) = self.epoll.modify(&self.listener, &mut event) {
            log::error!("epoll_ctl(MOD) of the listener failed: {e}");
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        let (pid, uid, gid) = peer_credentials(&stream);
        if let Err(refusal) = self.quota.connect(uid, self.cfg.connection_limits()) {
            self.counters.clients_refused += 1;
            if refusal.is_per_user() {
                self.counters.clients_refused_per_user += 1;
            }
            log::warn!("refusing a client of uid {uid} (pid {pid}): {refusal}");
            let text = refusal.to_string();
            let frame = Frame::Error {
                seq: 0,
                fatal: true,
                code: ErrorCode::TooManyClients,
                text: &text,
            };
            let _ = stream.set_nonblocking(true);
            let _ = send_nosignal(&stream, &[IoSlice::new(&frame.to_vec())], None);
            return;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            log::error!("cannot configure a new connection: {e}");
            self.quota.disconnect(uid);
            return;
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.clients.push(None);
            self.clients.len() - 1
        });
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            slot as u64 + FIRST_CLIENT_TOKEN,
        );
        if let Err(e) = self.epoll.add(&stream, event) {
            log::error!("epoll_ctl(ADD) failed: {e}");
            self.free_slots.push(slot);
            self.quota.disconnect(uid);
            return;
        }
        let id = self.next_client_id;
        self.next_client_id = self.next_client_id.wrapping_add(1).max(1);
        self.clients[slot] = Some(Client {
            id,
            stream,
            reader: FrameReader::new(self.cfg.max_frame_body()),
            pid,
            uid,
            gid,
            name: String::new(),
            greeted: false,
            closing: false,
            lingering: false,
            subscriptions: Vec::new(),
            out: OutQueue::default(),
            want_write: false,
            dirty: false,
            delivered: 0,
            dropped: 0,
            calls_in_flight: 0,
            max_payload: self.cfg.max_payload,
            input_charged: 0,
            partial_timer: false,
            frames_in: 0,
            access: self.access.client(uid, gid),
        });
        self.client_count += 1;
        self.counters.clients_accepted += 1;
        let deadline = Instant::now() + Duration::from_millis(self.cfg.handshake_timeout_ms as u64);
        self.timers.add(deadline, Timer::Handshake { slot, id });
        log::debug!("client {id} connected (pid {pid}, uid {uid}, gid {gid})");
    }

    fn read_client(&mut self, slot: Slot) {
        let Some(client) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if client.closing {
            // A lingering client is polled for EPOLLOUT only: this is a hang-up or an error,
            // so nothing more can reach it.
            if std::mem::take(&mut client.lingering) {
                self.to_close.push((slot, CloseReason::SlowConsumer));
            }
            return;
        }
        // A client with no partial frame buffered reads into the shared buffer, so idle
        // clients hold no read buffer of their own.
        let shared = client.reader.pending() == 0;
        let mut reader = if shared {
            let mut r = std::mem::replace(&mut self.shared_reader, FrameReader::new(0));
            r.set_max_body(client.reader.max_body());
            r
        } else {
            std::mem::replace(&mut client.reader, FrameReader::new(0))
        };
        let mut budget = READ_BUDGET;
        let mut outcome = None;
        let mut gone = false;
        while budget > 0 && outcome.is_none() {
            let Some(client) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
                gone = true;
                break;
            };
            match (&client.stream).read(reader.buffer_mut(READ_CHUNK)) {
                Ok(0) => outcome = Some(CloseReason::Eof),
                Ok(n) => {
                    reader.filled(n);
                    budget = budget.saturating_sub(n);
                    if let Err(e) = self.process_frames(slot, &mut reader) {
                        self.fatal(slot, ErrorCode::Malformed, &e.to_string());
                        log::warn!("client {}: {e}; closing", self.client_id(slot));
                        self.counters.protocol_errors += 1;
                        gone = true;
                        break;
                    }
                    if self
                        .clients
                        .get(slot)
                        .and_then(Option::as_ref)
                        .map_or(true, |c| c.closing)
                    {
                        gone = true;
                        break;
                    }
                    // A short read drained the socket: skip the read that would only say
                    // EAGAIN (level-triggered epoll reports anything arriving later).
                    if n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => outcome = Some(CloseReason::IoError(e)),
            }
        }
        if let Some(reason) = outcome {
            self.to_close.push((slot, reason));
        }
        let client = if gone {
            None
        } else {
            self.clients.get_mut(slot).and_then(Option::as_mut)
        };
        if shared {
            if let Some(client) = client {
                if reader.pending() > 0 {
                    client.reader.push_bytes(reader.pending_bytes());
                }
            }
            reader.clear();
            reader.shrink_idle(READ_KEEP);
            self.shared_reader = reader;
        } else if let Some(client) = client {
            reader.shrink_idle(0);
            client.reader = reader;
        }
        if !gone {
            self.charge_input(slot, Instant::now());
        }
    }

    fn client_id(&self, slot: Slot) -> u32 {
        self.clients
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.id)
    }

    fn process_frames(&mut self, slot: Slot, reader: &mut FrameReader) -> Result<(), DecodeError> {
        while let Some((frame, body)) = reader.next_frame_and_body()? {
            if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                c.frames_in += 1;
            }
            self.handle(slot, frame, body);
            self.close_pending();
            match self.clients.get(slot).and_then(Option::as_ref) {
                Some(c) if !c.closing => {}
                _ => break,
            }
        }
        Ok(())
    }

    // ----- requests ----------------------------------------------------------------------

    /// Handles one request; `body` is its encoded body (a `Send`'s fields are forwarded as
    /// they are).
    fn handle(&mut self, slot: Slot, frame: Frame<'_>, body: &[u8]) {
        let Some(client) = self.clients[slot].as_mut() else {
            return;
        };
        if !client.greeted {
            let Frame::Hello {
                version_min,
                version_max,
                name,
            } = frame
            else {
                self.counters.protocol_errors += 1;
                return self.fatal(slot, ErrorCode::HandshakeRequired, "send Hello first");
            };
            if !(version_min..=version_max).contains(&PROTOCOL_VERSION) {
                self.counters.protocol_errors += 1;
                let text = format!(
                    "client speaks versions {version_min}..={version_max}, daemon speaks {PROTOCOL_VERSION}"
                );
                return self.fatal(slot, ErrorCode::UnsupportedVersion, &text);
            }
            client.greeted = true;
            // Shown by `qcop stats --clients`: keep it short and printable.
            client.name = name
                .chars()
                .take(64)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            let welcome = Frame::Welcome {
                version: PROTOCOL_VERSION,
                client_id: client.id,
                max_payload: client.max_payload,
                max_channel: self.cfg.max_channel_len,
                max_message: self.cfg.max_message_len,
                max_subscriptions: self.cfg.max_subscriptions_per_client,
            };
            return self.reply(slot, &welcome);
        }
        if self.is_monitor(slot) {
            if let Some(seq) = monitor_refuses(&frame) {
                let text = "this connection is a monitor: it cannot subscribe, send or call";
                return self.reject(slot, seq, ErrorCode::MonitorConnection, text);
            }
        }
        match frame {
            Frame::Subscribe {
                seq,
                credentials,
                channel,
            } => self.subscribe(slot, seq, channel, credentials),
            Frame::Unsubscribe { seq, channel } => self.unsubscribe(slot, seq, channel),
            Frame::Send {
                seq,
                ack,
                channel,
                message,
                payload,
            } => {
                let message = match self.check_message(slot, channel, message, payload) {
                    Ok(normalized) => normalized,
                    Err((code, text)) => return self.reject(slot, seq, code, &text),
                };
                // The body is forwarded as it is only if the name needed no normalising.
                let fields = matches!(message, Cow::Borrowed(_)).then_some(body);
                let message = &*message;
                if let Err(denial) = self.may(slot, Action::Send, channel, message) {
                    let what = format!("send to {channel:?}");
                    return self.deny(slot, seq, Action::Send, &what, &denial.text);
                }
                self.counters.messages_received += 1;
                let sender = self.credentials(slot);
                self.monitor(MonitorEvent::Send, 0, sender, channel, message, payload);
                if let Some(service) = self.service_for(channel) {
                    return self
                        .queue_send(slot, seq, ack, service, sender, channel, message, payload);
                }
                let n = self
                    .publish_fields(sender, channel, message, payload, fields)
                    .unwrap_or_else(|| {
                        self.counters.dropped_no_subscriber += 1;
                        0
                    });
                if ack {
                    self.reply(slot, &Frame::Ok { seq, value: n });
                }
            }
            Frame::Call {
                seq,
                timeout_ms,
                channel,
                message,
                payload,
            } => {
                // The fields after the timeout are those of the `Message` the call becomes.
                let fields = body.get(4..);
                self.call(slot, seq, timeout_ms, channel, message, payload, fields)
            }
            Frame::Respond {
                token,
                error,
                message,
                payload,
            } => self.respond(slot, token, error, message, payload),
            Frame::IsRegistered { seq, channel } => {
                if let Err(e) = check_name(channel, self.cfg.max_channel_len as usize) {
                    return self.reject(slot, seq, ErrorCode::BadName, &e.to_string());
                }
                let count = self.router.registered_count(channel) as u32;
                let remote = self.links_registered(channel);
                self.reply(slot, &Frame::Registered { seq, count, remote });
            }
            Frame::ListChannels { seq } => {
                let list = self.links_channels(self.router.list());
                self.reply(slot, &Frame::Channels { seq, list });
            }
            Frame::Stats { seq, clients } => {
                let report = self.stats_report(clients);
                self.reply(slot, &Frame::StatsReport { seq, report });
            }
            Frame::Sync { seq } => self.reply(slot, &Frame::Ok { seq, value: 0 }),
            Frame::Seg(request) => self.segment_request(slot, request),
            Frame::Monitor { seq, patterns } => self.start_monitor(slot, seq, &patterns),
            Frame::ListServices { seq } => {
                let list = self.activation.list();
                self.reply(slot, &Frame::Services { seq, list });
            }
            Frame::ShmOpen { .. } | Frame::ShmEventFd { .. } | Frame::ShmMap { .. } => {
                self.shm_request(slot, frame)
            }
            other => {
                self.counters.protocol_errors += 1;
                let text = format!("unexpected {:?} frame from a client", other.kind());
                self.fatal(slot, ErrorCode::Malformed, &text);
            }
        }
    }

    /// Shared-memory segments and semaphores: the logic is in `shm_segments`.
    fn segment_request(&mut self, slot: Slot, request: crate::wire::segments::SegFrame<'_>) {
        let Some(c) = self.clients[slot].as_ref() else {
            return;
        };
        let peer = Peer {
            client_id: c.id,
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
            name: &c.name,
        };
        match self.segments.handle(&self.cfg, &peer, request) {
            SegAnswer::Reply(frame) => self.reply(slot, &Frame::Seg(frame)),
            SegAnswer::ReplyFd(frame, fd) => self.push_reply_fd(slot, &Frame::Seg(frame), fd),
            SegAnswer::Ok(seq) => self.reply(slot, &Frame::Ok { seq, value: 0 }),
            SegAnswer::Error(seq, code, text) => self.reject(slot, seq, code, &text),
            SegAnswer::Fatal(text) => {
                self.counters.protocol_errors += 1;
                self.fatal(slot, ErrorCode::Malformed, &text);
            }
        }
    }

    /// Checks a message from a client; returns its name normalised (`check_message_name`).
    fn check_message<'m>(
        &mut self,
        slot: Slot,
        channel: &str,
        message: &'m str,
        payload: &[u8],
    ) -> Result<Cow<'m, str>, (ErrorCode, String)> {
        // Messages come in runs on one channel: names valid (and already normalised) a
        // moment ago need no new look.
        let (valid_channel, valid_message) = &self.valid_names;
        let known =
            !valid_channel.is_empty() && valid_channel == channel && valid_message == message;
        let message = if known {
            Cow::Borrowed(message)
        } else {
            check_name(channel, self.cfg.max_channel_len as usize)
                .map_err(|e| (ErrorCode::BadName, format!("channel: {e}")))?;
            if is_pattern(channel) {
                return Err((
                    ErrorCode::WildcardSend,
                    format!("{channel:?} is a pattern; messages go to plain channel names"),
                ));
            }
            let normalized = check_message_name(message, self.cfg.max_message_len as usize)
                .map_err(|e| (ErrorCode::BadName, format!("message: {e}")))?;
            if let Cow::Borrowed(_) = normalized {
                let (valid_channel, valid_message) = &mut self.valid_names;
                valid_channel.clear();
                valid_channel.push_str(channel);
                valid_message.clear();
                valid_message.push_str(message);
            }
            normalized
        };
        let max = self.clients[slot].as_ref().map_or(0, |c| c.max_payload);
        if payload.len() > max as usize {
            return Err((
                ErrorCode::TooLarge,
                format!(
                    "payload of {} bytes exceeds the limit of {max}",
                    payload.len()
                ),
            ));
        }
        Ok(message)
    }

    fn subscribe(&mut self, slot: Slot, seq: u32, channel: &str, credentials: bool) {
        if let Err(e) = check_name(channel, self.cfg.max_channel_len as usize) {
            return self.reject(slot, seq, ErrorCode::BadName, &e.to_string());
        }
        if let Err(denial) = self.may_subscribe(slot, Action::Receive, channel) {
            let what = format!("subscription to {channel:?}");
            return self.deny(slot, seq, Action::Receive, &what, &denial.text);
        }
        let Some(client) = self.clients[slot].as_mut() else {
            return;
        };
        if client.subscriptions.iter().any(|s| &**s == channel) {
            if credentials {
                client.access.want_credentials(channel);
            }
            return self.reply(slot, &Frame::Ok { seq, value: 0 });
        }
        if client.subscriptions.len() >= self.cfg.max_subscriptions_per_client as usize {
            let text = format!(
                "a client may hold at most {} subscriptions",
                self.cfg.max_subscriptions_per_client
            );
            return self.reject(slot, seq, ErrorCode::TooManySubscriptions, &text);
        }
        let (uid, pattern) = (client.uid, is_pattern(channel));
        let limits = self.cfg.subscription_limits();
        if let Err(refusal) = self.quota.subscribe(uid, pattern, limits) {
            self.counters.subscriptions_refused_per_user += 1;
            let text = refusal.to_string();
            return self.reject(slot, seq, ErrorCode::TooManySubscriptions, &text);
        }
        let Some(client) = self.clients[slot].as_mut() else {
            return;
        };
        match self.router.subscribe(slot, channel) {
            Err(e) => {
                self.quota.unsubscribe(uid, pattern);
                self.reject(slot, seq, ErrorCode::BadName, &e.to_string())
            }
            Ok(outcome) => {
                client.subscriptions.push(channel.into());
                if credentials {
                    client.access.want_credentials(channel);
                }
                self.reply(slot, &Frame::Ok { seq, value: 0 });
                self.links_subscriptions_changed();
                if outcome == (Subscribed::Added { new_channel: true }) {
                    self.announce("newChannel(QString)", channel);
                }
                self.deliver_queued(channel);
                self.shm_refresh_forwarding();
            }
        }
    }

    fn unsubscribe(&mut self, slot: Slot, seq: u32, channel: &str) {
        let subscribed = self.clients[slot]
            .as_ref()
            .is_some_and(|c| c.subscriptions.iter().any(|s| &**s == channel));
        if !subscribed {
            let text = format!("not subscribed to {channel:?}");
            return self.reject(slot, seq, ErrorCode::NotSubscribed, &text);
        }
        self.remove_subscriptions(slot, &[channel.into()], Removal::Unsubscribed { seq });
    }

    /// Ends subscriptions of the client in `slot`: the one path every removal takes
    /// (unsubscribe, policy revocation, close), so the router, the client's own list and
    /// credential flags, the links' advert, the `removedChannel` notices and the
    /// shared-memory streams' forwarding all follow. A client being closed is already out
    /// of the table; its names are passed in.
    fn remove_subscriptions(&mut self, slot: Slot, names: &[Box<str>], why: Removal<'_>) {
        let mut emptied = Vec::new();
        let mut removed = false;
        for name in names {
            let Unsubscribed::Removed { removed_channel } = self.router.unsubscribe(slot, name)
            else {
                continue;
            };
            removed = true;
            if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                c.subscriptions.retain(|s| s != name);
                c.access.forget_credentials(name);
                self.quota.unsubscribe(c.uid, is_pattern(name));
            }
            match why {
                Removal::Unsubscribed { seq } => self.reply(slot, &Frame::Ok { seq, value: 0 }),
                Removal::Revoked { text } => self.tell_revoked(slot, name, text),
                Removal::Closed => {}
            }
            if removed_channel {
                emptied.push(name);
            }
        }
        if !removed {
            return;
        }
        self.links_subscriptions_changed();
        for name in emptied {
            self.announce("removedChannel(QString)", name);
        }
        self.shm_refresh_forwarding();
    }

    /// Publishes a lifecycle event on the system channel.
    fn announce(&mut self, message: &str, channel: &str) {
        if channel == SYSTEM_CHANNEL {
            return;
        }
        let mut payload = Vec::with_capacity(4 + 2 * channel.len());
        Value::QString(Some(channel.to_owned())).encode(&mut payload);
        // Nobody listening is normal here, and not a message a sender lost: not counted.
        let _ = self.publish(self.access.daemon, SYSTEM_CHANNEL, message, &payload);
    }

    /// Queues a message for every subscriber of `channel` the policy lets receive it, here
    /// and behind links; returns how many local subscribers got it, or `None` when the
    /// channel has no subscriber at all.
    fn publish(
        &mut self,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) -> Option<u32> {
        self.publish_fields(sender, channel, message, payload, None)
    }

    /// [`Server::publish`], with the message's fields as a client encoded them, if it came
    /// from one.
    fn publish_fields(
        &mut self,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
        fields: Option<&[u8]>,
    ) -> Option<u32> {
        let local = self.deliver_local(sender, channel, message, payload, fields);
        let links = self.links_publish(channel, message, payload);
        match local {
            None if links > 0 => Some(0),
            other => other,
        }
    }

    /// Queues a message for every local subscriber of `channel` the policy lets receive it;
    /// returns how many got it, or `None` when it has no local subscriber. `fields`: the
    /// message as its sender encoded it, if it came from a client (see `Delivery::fields`).
    fn deliver_local(
        &mut self,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
        fields: Option<&[u8]>,
    ) -> Option<u32> {
        let mut recipients = std::mem::take(&mut self.scratch);
        self.router.recipients(channel, &mut recipients);
        let mut delivered = None;
        if !recipients.is_empty() {
            let m = access::Delivery {
                token: 0,
                sender,
                channel,
                message,
                payload,
                fields,
            };
            delivered = Some(self.deliver(&recipients, &m, None));
        }
        self.scratch = recipients;
        delivered
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        slot: Slot,
        seq: u32,
        timeout_ms: u32,
        channel: &str,
        message: &str,
        payload: &[u8],
        fields: Option<&[u8]>,
    ) {
        let message = match self.check_message(slot, channel, message, payload) {
            Ok(normalized) => normalized,
            Err((code, text)) => return self.reject(slot, seq, code, &text),
        };
        // The body is forwarded as it is only if the name needed no normalising.
        let fields = fields.filter(|_| matches!(message, Cow::Borrowed(_)));
        let message = &*message;
        if let Err(denial) = self.may(slot, Action::Send, channel, message) {
            let what = format!("call to {channel:?}");
            return self.deny(slot, seq, Action::Send, &what, &denial.text);
        }
        let Some(caller) = self.clients[slot].as_ref() else {
            return;
        };
        let caller_id = caller.id;
        if caller.calls_in_flight >= self.cfg.max_calls_per_client {
            let text = format!(
                "at most {} calls may be in flight per client",
                self.cfg.max_calls_per_client
            );
            return self.reject(slot, seq, ErrorCode::TooManyCalls, &text);
        }
        self.counters.messages_received += 1;
        self.counters.calls += 1;
        let timeout = match timeout_ms {
            0 => self.cfg.call_timeout_ms,
            t => t.min(self.cfg.max_call_timeout_ms),
        };
        let deadline = Instant::now() + Duration::from_millis(timeout as u64);
        // Counted from here; every outcome below goes through `finish_call`.
        if let Some(c) = self.clients[slot].as_mut() {
            c.calls_in_flight += 1;
        }
        let call = PendingCall {
            caller: slot,
            caller_id,
            seq,
            recipients: Vec::new(),
            channel: None,
            links: Vec::new(),
            delivered: false,
            remote: None,
        };
        let sender = self.credentials(slot);
        if let Some(service) = self.service_for(channel) {
            return self.queue_call(call, deadline, service, sender, channel, message, payload);
        }
        self.route_call(call, deadline, sender, channel, message, payload, fields);
    }

    /// Delivers a call to the subscribers of `channel` and waits for the first answer until
    /// `deadline`. The caller's `calls_in_flight` already counts it.
    #[allow(clippy::too_many_arguments)]
    fn route_call(
        &mut self,
        mut call: PendingCall,
        deadline: Instant,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
        fields: Option<&[u8]>,
    ) {
        let token = self.allocate_token();
        if !self.access.monitors.is_empty() {
            self.monitor(MonitorEvent::Call, token, sender, channel, message, payload);
            call.channel = Some(channel.into());
        }
        let mut recipients = std::mem::take(&mut self.scratch);
        self.router.recipients(channel, &mut recipients);
        if recipients.is_empty() && !self.links_have_responder(channel) {
            self.scratch = recipients;
            self.counters.calls_no_responder += 1;
            let text = format!("no subscriber on {channel:?}");
            return self.call_error(&call, ErrorCode::NoResponder, &text);
        }
        let m = access::Delivery {
            token,
            sender,
            channel,
            message,
            payload,
            fields,
        };
        let mut reached = Vec::with_capacity(recipients.len());
        self.deliver(&recipients, &m, Some(&mut reached));
        self.scratch = recipients;
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        let timeout = u32::try_from(timeout).unwrap_or(u32::MAX).max(1);
        let links = self.links_call(token, timeout, channel, message, payload);
        if reached.is_empty() && links.is_empty() {
            self.counters.calls_responder_gone += 1;
            self.counters.requests_rejected += 1;
            let text = "the call could not be queued for any responder";
            return self.call_error(&call, ErrorCode::ResponderGone, text);
        }
        call.delivered = !reached.is_empty();
        call.recipients = reached;
        call.links = links;
        self.calls.insert(token, call);
        self.timers.add(deadline, Timer::Call(token));
    }

    fn allocate_token(&mut self) -> u32 {
        loop {
            let t = self.next_token;
            self.next_token = self.next_token.wrapping_add(1).max(1);
            if !self.calls.contains_key(&t) {
                return t;
            }
        }
    }

    fn respond(&mut self, slot: Slot, token: u32, error: bool, message: &str, payload: &[u8]) {
        let responder = self.client_id(slot);
        let addressed = self
            .calls
            .get(&token)
            .is_some_and(|c| c.recipients.contains(&responder));
        if !addressed {
            self.counters.replies_unmatched += 1;
            return;
        }
        let max_payload = self.clients[slot].as_ref().map_or(0, |c| c.max_payload);
        if message.len() > self.cfg.max_message_len as usize || payload.len() > max_payload as usize
        {
            let text = "reply exceeds the message name or payload limit";
            return self.reject(slot, token, ErrorCode::TooLarge, text);
        }
        let Some(call) = self.take_call(token) else {
            return;
        };
        if !self.access.monitors.is_empty() {
            let event = if error {
                MonitorEvent::ErrorReply
            } else {
                MonitorEvent::Reply
            };
            let sender = self.credentials(slot);
            let channel = call.channel.clone().unwrap_or_default();
            self.monitor(event, token, sender, &channel, message, payload);
        }
        if call.remote.is_some() {
            // A call from another board: the answer goes back over its link.
            return self.link_reply_out(&call, error, message, payload);
        }
        self.answer_call(&call, error, message, payload);
    }

    /// Delivers a responder's answer (local or from another board) to a local caller.
    fn answer_call(&mut self, call: &PendingCall, error: bool, message: &str, payload: &[u8]) {
        self.counters.calls_answered += 1;
        let reply = Frame::Reply {
            seq: call.seq,
            error,
            message,
            payload,
        };
        self.finish_call(call, &reply);
    }

    /// Sends a call's outcome to its caller (replies are never dropped by the slow-consumer
    /// policy: the caller is waiting for exactly this frame).
    fn finish_call(&mut self, call: &PendingCall, frame: &Frame<'_>) {
        let Some(c) = self.clients.get_mut(call.caller).and_then(Option::as_mut) else {
            return;
        };
        if c.id != call.caller_id {
            return;
        }
        c.calls_in_flight = c.calls_in_flight.saturating_sub(1);
        self.reply(call.caller, frame);
    }

    /// Removes a call from the table.
    fn take_call(&mut self, token: u32) -> Option<PendingCall> {
        let call = self.calls.remove(&token)?;
        if let Some(r) = call.remote {
            self.link_call_released(r);
        }
        Some(call)
    }

    /// Nobody is left to answer a call: tell its caller (a local client, or the link it
    /// came from).
    fn call_abandoned(&mut self, token: u32) {
        let Some(call) = self.take_call(token) else {
            return;
        };
        match call.remote {
            Some(r) => self.link_call_gone(r, call.delivered),
            None if call.delivered => {
                self.counters.calls_responder_gone += 1;
                self.call_error(
                    &call,
                    ErrorCode::ResponderGone,
                    "every responder disconnected without answering",
                );
            }
            None => {
                self.counters.calls_no_responder += 1;
                self.call_error(
                    &call,
                    ErrorCode::NoResponder,
                    "no responder behind the links",
                );
            }
        }
    }

    fn call_error(&mut self, call: &PendingCall, code: ErrorCode, text: &str) {
        let frame = Frame::Error {
            seq: call.seq,
            fatal: false,
            code,
            text,
        };
        self.finish_call(call, &frame);
    }

    fn stats_report(&self, with_clients: bool) -> StatsReport {
        let gauges = Gauges {
            clients: self.client_count as u64,
            channels: self.router.channel_count() as u64,
            patterns: self.router.pattern_count() as u64,
            subscriptions: self.router.subscription_count() as u64,
            calls_pending: self.calls.len() as u64,
            bytes_queued: self.queued_total,
            bytes_partial_input: self.quota.input_bytes(),
            uptime_s: self.started.elapsed().as_secs(),
        };
        let clients = if with_clients {
            self.clients
                .iter()
                .flatten()
                .map(|c| ClientInfo {
                    id: c.id,
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                    subscriptions: c.subscriptions.len() as u32,
                    queued_bytes: c.out.bytes() as u64,
                    delivered: c.delivered,
                    dropped: c.dropped,
                    name: c.name.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let (link_counters, links) = self.links_report();
        let mut counters = self.counters.report(&gauges);
        counters.extend(self.segments.report());
        self.append_access_stats(&mut counters);
        self.append_service_stats(&mut counters);
        counters.extend(link_counters);
        counters.extend(self.shm.report());
        counters.push(("pattern_visits".to_owned(), self.router.pattern_visits()));
        StatsReport {
            counters,
            clients,
            links,
        }
    }

    // ----- output ------------------------------------------------------------------------

    /// Writes the queue of `slot` to its socket now if `extra` more bytes would bring it near
    /// `max_queue_bytes`. A receiver is slow only if its socket cannot take the backlog
    /// either: queues are written once per loop turn, so a burst read in one turn would
    /// otherwise overflow the queue of a receiver whose socket is empty. `want_write`: the
    /// socket was full at the last attempt and EPOLLOUT will say when it drains. (64 covers a
    /// Lost notice.)
    fn flush_if_near_full(&mut self, slot: Slot, extra: usize) {
        let limit = self.cfg.max_queue_bytes as usize;
        let near_full = self
            .clients
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| {
                !c.want_write && !c.out.is_empty() && c.out.bytes() + extra + 64 > limit
            });
        if near_full {
            self.flush(slot);
        }
    }

    /// Queues a delivered message under the slow-consumer policy; true if it was queued.
    fn enqueue(&mut self, slot: Slot, frame: &[u8]) -> bool {
        let limit = self.cfg.max_queue_bytes as usize;
        self.flush_if_near_full(slot, frame.len());
        let held = self.queued_total + self.quota.input_bytes();
        let budget_full = held + frame.len() as u64 > self.cfg.max_total_queue_bytes;
        let policy = self.cfg.slow_consumer;
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        if c.closing || !c.greeted {
            // A slow consumer still writing its goodbye gets nothing more.
            self.counters.dropped_disconnected += u64::from(c.lingering);
            return false;
        }
        let (queued, delta) = if budget_full {
            c.dropped += 1;
            self.counters.dropped_memory_budget += 1;
            (false, c.out.note_lost())
        } else {
            match policy {
                SlowConsumerPolicy::DropOldest => {
                    let p = c.out.push_drop_oldest(frame, limit);
                    // Messages evicted to make room were counted as delivered when queued.
                    let evicted = p.dropped - u64::from(!p.queued);
                    c.delivered = c.delivered.saturating_sub(evicted);
                    self.counters.messages_delivered =
                        self.counters.messages_delivered.saturating_sub(evicted);
                    c.dropped += p.dropped;
                    self.counters.dropped_slow_consumer += p.dropped;
                    (p.queued, p.delta)
                }
                SlowConsumerPolicy::Disconnect => {
                    if c.out.try_push(frame, limit) {
                        (true, frame.len() as i64)
                    } else {
                        self.disconnect_slow(slot);
                        return false;
                    }
                }
            }
        };
        if queued {
            c.delivered += 1;
            self.counters.messages_delivered += 1;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(slot);
        }
        self.adjust_queued(false, delta);
        queued
    }

    /// Queues a frame the client asked for (answers, errors). These bypass the drop policy
    /// (the client waits for exactly them) but not the bound: a client that keeps asking
    /// without reading its answers past twice its queue limit is disconnected.
    fn push_reply(&mut self, slot: Slot, frame: &[u8]) {
        let limit = 2 * self.cfg.max_queue_bytes as usize + frame.len();
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let len = frame.len() as i64;
        if c.out.push_answer(frame, limit) {
            let monitor = c.access.is_monitor();
            self.adjust_queued(monitor, len);
            self.mark_dirty(slot);
        } else {
            self.disconnect_slow(slot);
        }
    }

    /// Queues an answer together with a file descriptor (shared memory handed to a client).
    /// Like [`Server::push_reply`], never dropped by the slow-consumer policy but bounded.
    #[allow(dead_code)] // used by the shared-memory services
    pub(crate) fn push_reply_fd(&mut self, slot: Slot, frame: &Frame<'_>, fd: OwnedFd) {
        debug_assert!(frame.kind().carries_fd());
        let mut enc = std::mem::take(&mut self.enc);
        enc.clear();
        frame.encode(&mut enc);
        self.push_reply_fd_bytes(slot, &enc, fd);
        self.enc = enc;
    }

    fn push_reply_fd_bytes(&mut self, slot: Slot, frame: &[u8], fd: OwnedFd) {
        let limit = 2 * self.cfg.max_queue_bytes as usize + frame.len();
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let len = frame.len() as i64;
        if c.out.push_answer_fd(frame, fd, limit).is_ok() {
            let monitor = c.access.is_monitor();
            self.adjust_queued(monitor, len);
            self.mark_dirty(slot);
        } else {
            self.disconnect_slow(slot);
        }
    }

    fn reply(&mut self, slot: Slot, frame: &Frame<'_>) {
        let mut enc = std::mem::take(&mut self.enc);
        enc.clear();
        frame.encode(&mut enc);
        self.push_reply(slot, &enc);
        self.enc = enc;
    }

    fn reject(&mut self, slot: Slot, seq: u32, code: ErrorCode, text: &str) {
        self.counters.requests_rejected += 1;
        log::debug!(
            "client {}: request {seq} refused: {code}: {text}",
            self.client_id(slot)
        );
        let frame = Frame::Error {
            seq,
            fatal: false,
            code,
            text,
        };
        self.reply(slot, &frame);
    }

    /// Disconnects a slow consumer: its subscriptions end, its unsent messages are dropped,
    /// except a frame already partly written, and the fatal `SlowConsumer` error is queued
    /// after it. The connection
    /// is polled for writing only, and closed once both are written, or when the client hangs
    /// up or [`SLOW_CONSUMER_GRACE`] has passed.
    fn disconnect_slow(&mut self, slot: Slot) {
        let bye = Frame::Error {
            seq: 0,
            fatal: true,
            code: ErrorCode::SlowConsumer,
            text: "outgoing queue limit exceeded",
        }
        .to_vec();
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        c.lingering = true;
        c.want_write = true;
        // Its subscriptions end now, not when the goodbye is written: senders, isRegistered
        // and the links stop counting a receiver that gets nothing more.
        let names = c.subscriptions.clone();
        let (delta, dropped) = c.out.abandon(&bye);
        let monitor = c.access.is_monitor();
        let id = c.id;
        let mut ev = EpollEvent::new(EpollFlags::EPOLLOUT, slot as u64 + FIRST_CLIENT_TOKEN);
        if let Err(e) = self.epoll.modify(&c.stream, &mut ev) {
            log::error!("epoll_ctl(MOD) failed: {e}");
        }
        self.counters.slow_consumer_disconnects += 1;
        self.counters.dropped_disconnected += dropped;
        self.adjust_queued(monitor, delta);
        let deadline = Instant::now() + SLOW_CONSUMER_GRACE;
        self.timers.add(deadline, Timer::Linger { slot, id });
        self.mark_dirty(slot);
        self.remove_subscriptions(slot, &names, Removal::Closed);
    }

    /// Queues a fatal error, writes what can be written now, and schedules the close.
    fn fatal(&mut self, slot: Slot, code: ErrorCode, text: &str) {
        let frame = Frame::Error {
            seq: 0,
            fatal: true,
            code,
            text,
        };
        self.reply(slot, &frame);
        if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
            c.closing = true;
        }
        self.flush(slot);
        self.to_close.push((slot, CloseReason::Protocol));
    }

    /// Accounts queued bytes: against the daemon-wide budget for ordinary clients, apart
    /// for monitors (so that a monitor never makes the budget drop messages for others).
    fn adjust_queued(&mut self, monitor: bool, delta: i64) {
        if monitor {
            self.access.monitor_queued = self.access.monitor_queued.saturating_add_signed(delta);
            return;
        }
        self.queued_total = self.queued_total.saturating_add_signed(delta);
        self.counters.bytes_queued_peak = self.counters.bytes_queued_peak.max(self.queued_total);
    }

    fn mark_dirty(&mut self, slot: Slot) {
        if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                c.dirty = false;
            }
            self.flush(slot);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes as much of a client's queue as the socket takes, and (un)registers EPOLLOUT.
    fn flush(&mut self, slot: Slot) {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut released = 0usize;
        let mut failure = None;
        while !c.out.is_empty() {
            let stream = &c.stream;
            match c
                .out
                .write_with(|slices, fd| send_nosignal(stream, slices, fd))
            {
                Ok(n) => released += n,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    failure = Some(io::Error::from(e));
                    break;
                }
            }
        }
        let want_write = !c.out.is_empty() && failure.is_none();
        let monitor = c.access.is_monitor();
        if c.lingering && c.out.is_empty() && failure.is_none() {
            c.lingering = false;
            self.to_close.push((slot, CloseReason::SlowConsumer));
        }
        if want_write != c.want_write {
            c.want_write = want_write;
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want_write {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut ev = EpollEvent::new(flags, slot as u64 + FIRST_CLIENT_TOKEN);
            if let Err(e) = self.epoll.modify(&c.stream, &mut ev) {
                log::error!("epoll_ctl(MOD) failed: {e}");
            }
        }
        self.adjust_queued(monitor, -(released as i64));
        if let Some(e) = failure {
            self.to_close.push((slot, CloseReason::IoError(e)));
        }
    }

    // ----- timers and teardown -----------------------------------------------------------

    /// Acts on every deadline at or before `now`.
    fn expire_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Call(token) => {
                    // A call relayed for another daemon just expires: its caller's own
                    // daemon times it out.
                    if let Some(call) = self.take_call(token).filter(|c| c.remote.is_none()) {
                        self.counters.calls_timed_out += 1;
                        self.call_error(&call, ErrorCode::Timeout, "no reply before the timeout");
                    }
                }
                Timer::Linger { slot, id } => {
                    if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                        if c.id == id && std::mem::take(&mut c.lingering) {
                            self.to_close.push((slot, CloseReason::SlowConsumer));
                        }
                    }
                }
                Timer::Handshake { slot, id } => {
                    let stale = self
                        .clients
                        .get(slot)
                        .and_then(Option::as_ref)
                        .is_some_and(|c| c.id == id && !c.greeted);
                    if stale {
                        self.counters.handshake_timeouts += 1;
                        self.fatal(slot, ErrorCode::HandshakeRequired, "handshake timed out");
                        if let Some(last) = self.to_close.last_mut() {
                            last.1 = CloseReason::HandshakeTimeout;
                        }
                    }
                }
                Timer::PartialFrame { slot, id, frames } => {
                    self.partial_frame_due(slot, id, frames, now);
                }
            }
        }
    }

    /// Drops the timeouts of calls that were answered: without this every call leaves its
    /// entry in the heap until the deadline passes, so the heap grows with call rate ×
    /// timeout. Amortised O(1): runs only when stale entries outnumber live ones.
    fn compact_timers(&mut self) {
        let live = self.calls.len() + self.client_count;
        let (calls, clients) = (&self.calls, &self.clients);
        self.timers.compact(live, |t| match *t {
            Timer::Call(token) => calls.contains_key(&token),
            Timer::Handshake { slot, id } => clients
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id && !c.greeted),
            Timer::Linger { slot, id } => clients
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id && c.lingering),
            Timer::PartialFrame { slot, id, .. } => clients
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id),
        });
    }

    fn close_pending(&mut self) {
        while let Some((slot, reason)) = self.to_close.pop() {
            self.close(slot, reason);
            self.accept_pause.descriptor_freed();
        }
    }

    fn close(&mut self, slot: Slot, reason: CloseReason) {
        let Some(mut c) = self.clients.get_mut(slot).and_then(Option::take) else {
            return;
        };
        match &reason {
            CloseReason::Eof => log::debug!("client {} disconnected", c.id),
            CloseReason::IoError(e) => log::info!("client {} closed after I/O error: {e}", c.id),
            CloseReason::Protocol => log::info!("client {} closed after a protocol error", c.id),
            CloseReason::HandshakeTimeout => log::info!("client {} never said Hello", c.id),
            CloseReason::SlowConsumer => {
                // The fatal error was queued by `disconnect_slow`; what is still queued
                // here the client did not read within the grace time.
                log::warn!(
                    "client {} (pid {}) disconnected as a slow consumer",
                    c.id,
                    c.pid
                );
            }
        }
        let _ = self.epoll.delete(&c.stream);
        let (bytes, messages) = c.out.clear();
        let monitor = c.access.is_monitor();
        self.adjust_queued(monitor, -(bytes as i64));
        if monitor {
            self.access.monitors.retain(|&m| m != slot);
        }
        if matches!(reason, CloseReason::SlowConsumer) {
            self.counters.dropped_disconnected += messages;
        }
        self.client_count -= 1;
        self.quota.disconnect(c.uid);
        self.quota.release_input(c.uid, c.input_charged);
        self.free_slots.push(slot);
        // Calls this client made are abandoned; calls it was asked to answer lose a responder.
        let id = c.id;
        let mut gone = Vec::new();
        self.calls.retain(|token, call| {
            if call.remote.is_none() && call.caller == slot && call.caller_id == id {
                return false;
            }
            if let Some(i) = call.recipients.iter().position(|&r| r == id) {
                call.recipients.swap_remove(i);
                if call.recipients.is_empty() && call.links.is_empty() {
                    gone.push(*token);
                }
            }
            true
        });
        for token in gone {
            self.call_abandoned(token);
        }
        self.segments.client_closed(id);
        self.shm_client_closed(id);
        let names = std::mem::take(&mut c.subscriptions);
        // The client is out of the table already: its quota is released here.
        for name in &names {
            self.quota.unsubscribe(c.uid, is_pattern(name));
        }
        self.remove_subscriptions(slot, &names, Removal::Closed);
        // Streams this client published or mapped may have ended.
        self.shm_refresh_forwarding();
    }

    fn shutdown(&mut self) {
        log::info!("shutting down");
        self.activation.shutdown();
        sd_notify("STOPPING=1");
        self.shm_shutdown();
        let bye = Frame::Error {
            seq: 0,
            fatal: true,
            code: ErrorCode::ShuttingDown,
            text: "qcopd is shutting down",
        };
        let bytes = bye.to_vec();
        let slots: Vec<Slot> = (0..self.clients.len())
            .filter(|&s| self.clients[s].is_some())
            .collect();
        for slot in slots {
            self.push_reply(slot, &bytes);
            self.flush(slot);
        }
        self.links_shutdown();
        if let Some(path) = &self.owned_path {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// One non-blocking `sendmsg` that never raises SIGPIPE; `fd` travels as `SCM_RIGHTS`.
fn send_nosignal(
    stream: &UnixStream,
    slices: &[IoSlice<'_>],
    fd: Option<BorrowedFd<'_>>,
) -> nix::Result<usize> {
    let raw;
    let cmsg;
    let cmsgs: &[ControlMessage<'_>] = match fd {
        Some(fd) => {
            raw = [fd.as_raw_fd()];
            cmsg = [ControlMessage::ScmRights(&raw)];
            &cmsg
        }
        None => &[],
    };
    sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        slices,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
}

/// The request number of a frame a monitor connection may not send, if it is one.
fn monitor_refuses(frame: &Frame<'_>) -> Option<u32> {
    match *frame {
        Frame::Subscribe { seq, .. } | Frame::Send { seq, .. } | Frame::Call { seq, .. } => {
            Some(seq)
        }
        _ => None,
    }
}

fn peer_credentials(stream: &UnixStream) -> (u32, u32, u32) {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => (c.pid() as u32, c.uid(), c.gid()),
        Err(e) => {
            log::warn!("SO_PEERCRED failed: {e}");
            (0, u32::MAX, u32::MAX)
        }
    }
}
