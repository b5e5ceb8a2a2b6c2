//! The client library: connect to `qcopd`, subscribe, send, receive, call and answer.
//!
//! ```no_run
//! use qcop::{Connection, ConnectOptions};
//! use std::time::Duration;
//!
//! let mut conn = Connection::connect(&ConnectOptions::new().name("volume-ui"))?;
//! conn.subscribe("QPE/Audio")?;
//! conn.send("QPE/Audio", "setVolume(int)", &42i32.to_be_bytes())?;
//! conn.flush()?;
//! if let Some(msg) = conn.recv_timeout(Duration::from_secs(1))? {
//!     println!("{} {} {:?}", msg.channel, msg.message, msg.data);
//! }
//! # Ok::<(), qcop::Error>(())
//! ```
//!
//! Requests that need an answer (`subscribe`, `is_registered`, `call`, `flush`) block for at
//! most the connection's timeout. By default each send is written as soon as the socket
//! takes it; [`Connection::flush`] waits until the daemon has routed every earlier send and
//! reports any that it refused.
//!
//! A sender of many small messages can buffer them ([`ConnectOptions::send_buffer`]): they
//! are then written together, with one system call, when the buffer fills, at the next
//! request or receive on the connection, on [`Connection::write_buffered`] or
//! [`Connection::flush`], and when the connection is dropped, but at no other time, so
//! a buffering program calls one of these before it waits for anything else.
//!
//! A receiver of many messages can take them without copying: [`Connection::recv_borrowed`]
//! and its variants return a [`MessageRef`] that borrows the connection's read buffer and
//! allocate nothing per message.
//!
//! To drive a connection from a poll loop (a Qt `QSocketNotifier`, glib, mio), watch
//! [`Connection::as_raw_fd`] for readability and call [`Connection::try_recv`] until it
//! returns `None`: messages may already be buffered when the descriptor is not readable.
//! After an automatic reconnect the descriptor changes; [`Connection::reconnects`] counts
//! them so a loop can re-register.
//!
//! System-bus features: [`Connection::subscribe_with_credentials`] delivers messages with
//! the sender's pid, uid and gid ([`Message::sender`]), filled in by the daemon so they
//! cannot be forged; [`Connection::monitor`] turns a connection into a monitor of all
//! traffic (if the daemon's policy allows it); [`Connection::services`] lists the services
//! the daemon starts on demand. A request the daemon's access policy refuses fails with
//! [`Error::Refused`] and code [`ErrorCode::Denied`], whose text names the rule.

mod error;
pub(crate) mod segments;

pub use error::Error;

use crate::pattern::{check_name, is_pattern};
use crate::wire::{
    ChannelInfo, DecodeError, Frame, FrameReader, Kind, StatsReport, HEADER_LEN, PROTOCOL_VERSION,
};
pub use crate::wire::{Credentials, ErrorCode, MonitorEvent, ServiceInfo, ServiceState};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sends carry sequence numbers with the top bit set so errors about them can be told
/// apart from answers a request is waiting for.
const SEND_SEQ_BIT: u32 = 0x8000_0000;
/// Buffered outgoing bytes beyond which `send` blocks until the socket drains.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Errors about unacknowledged sends kept for `flush` to report.
const MAX_SEND_ERRORS: usize = 64;
/// Descriptors from the daemon held before a frame claims them (more is a protocol error).
const MAX_PENDING_FDS: usize = 16;
/// Extra time a caller waits past the call timeout for the daemon's own timeout answer.
const CALL_GRACE: Duration = Duration::from_secs(1);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// How long a receive may wait for a message.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Now,
    For(Duration),
    Forever,
}

impl Wait {
    /// The deadline for this wait, computed (reading the clock) on first use.
    fn deadline(self, cached: &mut Option<Instant>) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::Now => Some(*cached.get_or_insert_with(Instant::now)),
            Wait::For(t) => Some(*cached.get_or_insert_with(|| deadline_after(t))),
        }
    }
}

/// `now + d`, saturating at a year for durations that would overflow the clock.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// A poll timeout reaching `until` (rounded up to whole milliseconds, so a wait does not
/// spin through its last millisecond); `None` waits forever.
fn poll_timeout(until: Option<Instant>) -> PollTimeout {
    let Some(d) = until else {
        return PollTimeout::NONE;
    };
    let left = d.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Whether `bytes` start with a complete `Message` frame of at most `max_body` bytes.
fn front_is_message(bytes: &[u8], max_body: u32) -> bool {
    if bytes.len() < HEADER_LEN || bytes[4] != Kind::Message as u8 {
        return false;
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    len <= max_body && bytes.len() - HEADER_LEN >= len as usize
}

/// How to reach the daemon.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    socket: PathBuf,
    timeout: Duration,
    name: String,
    reconnect: bool,
    send_buffer: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new()
    }
}

impl ConnectOptions {
    /// Defaults: the socket from `$QCOP_SOCKET` or the built-in path, a 5 s timeout, the
    /// program name as client name, no automatic reconnect.
    pub fn new() -> Self {
        let name = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        ConnectOptions {
            socket: crate::paths::default_socket_path(),
            timeout: Duration::from_secs(5),
            name,
            reconnect: false,
            send_buffer: 0,
        }
    }

    /// Socket path of the daemon.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = path.into();
        self
    }

    /// Time allowed for connecting and for each request's answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Name shown for this client in `qcop stats --clients`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Reconnect automatically when the daemon goes away (restart, upgrade), re-registering
    /// every subscription. Waits up to the timeout per attempt inside blocking calls.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Buffer sends: keep up to `bytes` of encoded sends in the connection and write them
    /// with one system call, instead of one per [`Connection::send`]. 0 (the default)
    /// writes every send at once. Values above 256 KiB count as 256 KiB.
    ///
    /// A buffered send goes out when the buffer reaches `bytes`, at the next call that
    /// talks to the daemon or receives (every request, [`Connection::flush`],
    /// [`Connection::write_buffered`], every `recv` variant), or when the connection is
    /// dropped; nothing else writes it. A program that sends and then waits for something
    /// other than this connection (a sleep, another descriptor in its own poll loop) must
    /// call [`Connection::write_buffered`] or [`Connection::flush`] first, as Qt's
    /// `QCopChannel::flush` was needed. See "When buffered sends go out" in the README.
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.min(WRITE_HIGH_WATER);
        self
    }

    /// The socket path in use.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket
    }
}

/// A message received on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it was sent to (also when received through a pattern).
    pub channel: String,
    /// The message signature, e.g. `setVolume(int)`.
    pub message: String,
    /// The payload (QDataStream-encoded arguments by convention).
    pub data: Vec<u8>,
    /// Set when the sender waits for a reply ([`Connection::reply`]).
    pub call_token: Option<u32>,
    /// Who sent it, on subscriptions made with [`Connection::subscribe_with_credentials`].
    pub sender: Option<Credentials>,
}

impl Message {
    /// Whether the sender waits for a reply.
    pub fn is_call(&self) -> bool {
        self.call_token.is_some()
    }

    /// The sender's pid, uid and gid as the daemon saw them, if this message came through a
    /// subscription made with [`Connection::subscribe_with_credentials`].
    pub fn sender(&self) -> Option<Credentials> {
        self.sender
    }
}

/// A message received on a subscribed channel, borrowing the connection's read buffer
/// ([`Connection::recv_borrowed`] and its variants): receiving it allocates nothing. It
/// lives until the next call on the connection; [`MessageRef::to_message`] keeps a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The channel it was sent to (also when received through a pattern).
    pub channel: &'a str,
    /// The message signature, e.g. `setVolume(int)`.
    pub message: &'a str,
    /// The payload (QDataStream-encoded arguments by convention).
    pub data: &'a [u8],
    /// Set when the sender waits for a reply: copy it, let the message go, then answer
    /// with [`Connection::reply`] on [`MessageRef::to_message`]'s copy.
    pub call_token: Option<u32>,
    /// Who sent it, on subscriptions made with [`Connection::subscribe_with_credentials`].
    pub sender: Option<Credentials>,
}

impl MessageRef<'_> {
    /// Whether the sender waits for a reply.
    pub fn is_call(&self) -> bool {
        self.call_token.is_some()
    }

    /// The sender's credentials, as [`Message::sender`].
    pub fn sender(&self) -> Option<Credentials> {
        self.sender
    }

    /// An owned copy (three allocations: channel, message and payload).
    pub fn to_message(&self) -> Message {
        Message {
            channel: self.channel.to_owned(),
            message: self.message.to_owned(),
            data: self.data.to_vec(),
            call_token: self.call_token,
            sender: self.sender,
        }
    }
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(m: &'a Message) -> Self {
        MessageRef {
            channel: &m.channel,
            message: &m.message,
            data: &m.data,
            call_token: m.call_token,
            sender: m.sender,
        }
    }
}

/// Traffic seen by a monitor ([`Connection::monitor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitored {
    /// A send, a call, or a reply to a call.
    pub event: MonitorEvent,
    /// The call token linking a call and its reply (0 for a send).
    pub token: u32,
    /// The channel (for a reply: the channel of the call).
    pub channel: String,
    /// The message signature (for an error reply: the error text).
    pub message: String,
    /// The payload.
    pub data: Vec<u8>,
    /// Who sent it.
    pub sender: Credentials,
}

/// A subscription the daemon dropped because its access policy changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The channel or pattern no longer subscribed.
    pub channel: String,
    /// The daemon's explanation, naming the rule.
    pub reason: String,
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Reply signature chosen by the responder.
    pub message: String,
    /// Reply payload.
    pub data: Vec<u8>,
}

/// Limits the daemon announced in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload.
    pub max_payload: u32,
    /// Longest channel name in bytes.
    pub max_channel: u16,
    /// Longest message name in bytes.
    pub max_message: u16,
    /// Subscriptions allowed per connection.
    pub max_subscriptions: u32,
}

/// What the daemon answered to one request.
pub(crate) enum Answer {
    Ok(u32),
    Error(ErrorCode, String),
    Registered(u32, u32),
    Channels(Vec<ChannelInfo>),
    Stats(StatsReport),
    Services(Vec<ServiceInfo>),
    Reply {
        error: bool,
        message: String,
        data: Vec<u8>,
    },
    /// A shared-memory segment or semaphore answer.
    Seg(crate::wire::segments::SegFrame<'static>),
    /// A shared-memory stream was opened (its memfd came with the answer).
    ShmStream {
        stream: u32,
    },
    /// The event fd of a stream came with the answer.
    ShmEvent,
    /// A stream was mapped (its memfd came with the answer).
    ShmMapped {
        record: u32,
        message: String,
    },
}

/// A connection to `qcopd`.
pub struct Connection {
    opts: ConnectOptions,
    stream: UnixStream,
    reader: FrameReader,
    /// Encoded frames not yet written (from `wpos`): sends wait here until the buffer
    /// holds `send_buffer` bytes or another call writes them.
    wbuf: Vec<u8>,
    /// Bytes at the start of `wbuf` already written.
    wpos: usize,
    /// Buffered bytes at which `send` writes (0: every send writes at once).
    send_buffer: usize,
    /// Messages decoded while waiting for an answer. They all precede any message still
    /// undecoded in `reader`, so receives take from here first.
    inbox: VecDeque<Message>,
    /// The inbox message a borrowing receive handed out last.
    current: Option<Message>,
    /// A message frame that a borrowing receive could not decode: the next receive
    /// reports it as a lost connection (and reconnects if enabled).
    poisoned: Option<DecodeError>,
    answers: HashMap<u32, Answer>,
    /// Descriptors received with the stream's bytes, not yet claimed by a frame.
    fds: VecDeque<OwnedFd>,
    /// Descriptors that came with answers, by request sequence number.
    answer_fds: HashMap<u32, OwnedFd>,
    send_errors: VecDeque<(ErrorCode, String)>,
    send_errors_overflow: u64,
    /// A fatal error frame from the daemon, reported when the stream ends.
    fatal: Option<(ErrorCode, String)>,
    subscriptions: BTreeMap<String, usize>,
    /// Subscriptions that deliver the sender's credentials.
    credential_subs: BTreeSet<String>,
    /// The patterns monitored, once [`Connection::monitor`] succeeded.
    monitoring: Option<Vec<String>>,
    monitored: VecDeque<Monitored>,
    revoked: VecDeque<Revocation>,
    seq: u32,
    limits: Limits,
    client_id: u32,
    lost: u64,
    reconnects: u64,
}

impl Connection {
    /// Connects and performs the handshake, within the options' timeout.
    pub fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
        let (stream, reader, client_id, limits) = handshake(opts)?;
        Ok(Connection {
            opts: opts.clone(),
            stream,
            reader,
            wbuf: Vec::new(),
            wpos: 0,
            send_buffer: opts.send_buffer,
            inbox: VecDeque::new(),
            current: None,
            poisoned: None,
            answers: HashMap::new(),
            fds: VecDeque::new(),
            answer_fds: HashMap::new(),
            send_errors: VecDeque::new(),
            send_errors_overflow: 0,
            fatal: None,
            subscriptions: BTreeMap::new(),
            credential_subs: BTreeSet::new(),
            monitoring: None,
            monitored: VecDeque::new(),
            revoked: VecDeque::new(),
            seq: 0,
            limits,
            client_id,
            lost: 0,
            reconnects: 0,
        })
    }

    /// Connects with default options (socket from `$QCOP_SOCKET` or the built-in path).
    pub fn connect_default() -> Result<Connection, Error> {
        Connection::connect(&ConnectOptions::new())
    }

    /// The daemon's limits for this connection.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The id the daemon gave this connection (as shown by `qcop stats --clients`).
    pub fn client_id(&self) -> u32 {
        self.client_id
    }

    /// Messages the daemon dropped for this connection because it read too slowly.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// How many times the connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The options this connection was made with.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    // ----- subscriptions -----------------------------------------------------------------

    /// Subscribes to a channel, or to a pattern (`QPE/*`, `sensor?`, `cam[0-3]`).
    ///
    /// Subscriptions are counted per connection, as Qt did per process: subscribing twice
    /// needs two `unsubscribe` calls, and only the first and last talk to the daemon.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), Error> {
        self.subscribe_flagged(channel, false)
    }

    /// Like [`Connection::subscribe`], and messages matching this subscription carry the
    /// sender's credentials ([`Message::sender`]). Subscribing again to a channel already
    /// subscribed without credentials turns them on for it.
    pub fn subscribe_with_credentials(&mut self, channel: &str) -> Result<(), Error> {
        self.subscribe_flagged(channel, true)
    }

    fn subscribe_flagged(&mut self, channel: &str, credentials: bool) -> Result<(), Error> {
        check_name(channel, self.limits.max_channel as usize).map_err(Error::BadName)?;
        let upgrade = credentials && !self.credential_subs.contains(channel);
        if let Some(n) = self.subscriptions.get(channel) {
            if !upgrade {
                let n = *n + 1;
                self.subscriptions.insert(channel.to_owned(), n);
                return Ok(());
            }
        }
        self.retrying(|c| {
            c.request_ok(|seq| Frame::Subscribe {
                seq,
                credentials,
                channel,
            })
        })?;
        *self.subscriptions.entry(channel.to_owned()).or_insert(0) += 1;
        if credentials {
            self.credential_subs.insert(channel.to_owned());
        }
        Ok(())
    }

    /// Drops one subscription; the daemon is told when the count reaches zero.
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), Error> {
        match self.subscriptions.get_mut(channel) {
            None => Err(Error::NotSubscribed(channel.to_owned())),
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(())
            }
            Some(_) => {
                self.subscriptions.remove(channel);
                self.credential_subs.remove(channel);
                // After a reconnect the new daemon never had it: nothing left to undo.
                match self.request_ok(|seq| Frame::Unsubscribe { seq, channel }) {
                    Err(e) if self.opts.reconnect && e.is_disconnect() => {
                        let deadline = self.deadline(self.opts.timeout);
                        self.recover(e, Some(deadline))
                    }
                    r => r.map(|_| ()),
                }
            }
        }
    }

    /// Channels and patterns this connection is subscribed to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.keys().map(String::as_str)
    }

    // ----- sending -----------------------------------------------------------------------

    fn check_send(&self, channel: &str, message: &str, data: &[u8]) -> Result<(), Error> {
        check_name(channel, self.limits.max_channel as usize).map_err(Error::BadName)?;
        if is_pattern(channel) {
            return Err(Error::WildcardSend(channel.to_owned()));
        }
        check_name(message, self.limits.max_message as usize).map_err(Error::BadName)?;
        if data.len() > self.limits.max_payload as usize {
            return Err(Error::TooLarge {
                size: data.len(),
                max: self.limits.max_payload,
            });
        }
        Ok(())
    }

    /// Broadcasts `message` with payload `data` to every subscriber of `channel` (including
    /// this connection if it is subscribed). A channel without subscribers drops it, as
    /// QCOP did; the daemon counts such drops.
    ///
    /// Returns once the frame is buffered: written at once without
    /// [`ConnectOptions::send_buffer`], else when the buffer fills or the next call writes
    /// it. An error writing it (also one of earlier buffered sends) comes back from the
    /// call that writes; errors the daemon reports for sends come back from
    /// [`Connection::flush`]. With [`ConnectOptions::reconnect`], sends not yet written
    /// when the connection is lost are written to the new connection.
    pub fn send(&mut self, channel: &str, message: &str, data: &[u8]) -> Result<(), Error> {
        self.check_send(channel, message, data)?;
        let seq = self.next_seq() | SEND_SEQ_BIT;
        Frame::Send {
            seq,
            ack: false,
            channel,
            message,
            payload: data,
        }
        .encode(&mut self.wbuf);
        let pending = self.wbuf.len() - self.wpos;
        if pending < self.send_buffer {
            return Ok(());
        }
        // Past the high-water mark the daemon is not keeping up: wait for it.
        let all = self.wbuf.len() > WRITE_HIGH_WATER;
        // A lost connection is recovered without encoding the send again: `recover`
        // writes every unwritten send to the new connection.
        match self.write_some(all) {
            Err(e) if self.opts.reconnect && e.is_disconnect() => {
                let deadline = self.deadline(self.opts.timeout);
                self.recover(e, Some(deadline))
            }
            r => r,
        }
    }

    /// Bytes of sends buffered but not yet written ([`ConnectOptions::send_buffer`]). A
    /// poll loop that sees a non-zero value calls [`Connection::write_buffered`] before it
    /// sleeps.
    pub fn buffered(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes every buffered send now, waiting (at most the timeout) while the socket is
    /// full, without waiting for the daemon to route them (that is [`Connection::flush`]).
    pub fn write_buffered(&mut self) -> Result<(), Error> {
        if self.wpos == self.wbuf.len() {
            return Ok(());
        }
        match self.write_some(true) {
            Err(e) if self.opts.reconnect && e.is_disconnect() => {
                let deadline = self.deadline(self.opts.timeout);
                self.recover(e, Some(deadline))?;
                self.write_some(true)
            }
            r => r,
        }
    }

    /// Changes the send buffer ([`ConnectOptions::send_buffer`]); 0 writes what is
    /// buffered and returns to writing every send at once.
    pub fn set_send_buffer(&mut self, bytes: usize) -> Result<(), Error> {
        self.send_buffer = bytes.min(WRITE_HIGH_WATER);
        if self.send_buffer == 0 {
            self.write_buffered()?;
        }
        Ok(())
    }

    /// Sends and waits for the daemon's acknowledgement; returns how many subscribers the
    /// message was queued for.
    pub fn send_acked(&mut self, channel: &str, message: &str, data: &[u8]) -> Result<u32, Error> {
        self.check_send(channel, message, data)?;
        self.retrying(|c| {
            c.request_ok(|seq| Frame::Send {
                seq,
                ack: true,
                channel,
                message,
                payload: data,
            })
        })
    }

    /// Writes all buffered sends and waits until the daemon has routed them. Returns the
    /// first error the daemon reported for a send since the last flush, if any.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.retrying(|c| c.request_ok(|seq| Frame::Sync { seq }))?;
        if let Some((code, text)) = self.send_errors.pop_front() {
            self.send_errors.clear();
            return Err(Error::Refused { code, text });
        }
        Ok(())
    }

    // ----- queries -----------------------------------------------------------------------

    /// Whether `channel` has at least one (exact) subscriber, on this daemon or on another
    /// one reached over a link. Waits at most the timeout.
    pub fn is_registered(&mut self, channel: &str) -> Result<bool, Error> {
        let (local, remote) = self.registered_counts(channel)?;
        Ok(local + remote > 0)
    }

    /// Number of connections subscribed exactly to `channel`, local and remote together.
    pub fn registered_count(&mut self, channel: &str) -> Result<u32, Error> {
        let (local, remote) = self.registered_counts(channel)?;
        Ok(local.saturating_add(remote))
    }

    /// Exact subscribers of `channel`: `(local, remote)`, where remote ones are connected to
    /// other daemons that a message sent here would reach over links.
    pub fn registered_counts(&mut self, channel: &str) -> Result<(u32, u32), Error> {
        check_name(channel, self.limits.max_channel as usize).map_err(Error::BadName)?;
        self.retrying(
            |c| match c.request(|seq| Frame::IsRegistered { seq, channel })? {
                Answer::Registered(local, remote) => Ok((local, remote)),
                other => Err(unexpected(other)),
            },
        )
    }

    /// Channels and patterns known to the daemon with their subscriber counts.
    pub fn channels(&mut self) -> Result<Vec<ChannelInfo>, Error> {
        self.retrying(|c| match c.request(|seq| Frame::ListChannels { seq })? {
            Answer::Channels(list) => Ok(list),
            other => Err(unexpected(other)),
        })
    }

    /// The services the daemon starts on demand, with their state.
    pub fn services(&mut self) -> Result<Vec<ServiceInfo>, Error> {
        self.retrying(|c| match c.request(|seq| Frame::ListServices { seq })? {
            Answer::Services(list) => Ok(list),
            other => Err(unexpected(other)),
        })
    }

    // ----- monitoring --------------------------------------------------------------------

    /// Turns this connection into a monitor of the traffic on `patterns` (every channel if
    /// empty): [`Connection::recv_monitored`] then returns a copy of every send, call and
    /// reply with the sender's credentials. The daemon's policy decides who may monitor
    /// (by default root and the daemon's user); a refusal is [`Error::Refused`] with
    /// [`ErrorCode::Denied`]. A monitor cannot subscribe, send or call; it changes nothing
    /// for the other clients.
    pub fn monitor(&mut self, patterns: &[&str]) -> Result<(), Error> {
        for p in patterns {
            check_name(p, self.limits.max_channel as usize).map_err(Error::BadName)?;
        }
        self.retrying(|c| {
            c.request_ok(|seq| Frame::Monitor {
                seq,
                patterns: patterns.to_vec(),
            })
        })?;
        self.monitoring = Some(patterns.iter().map(|p| (*p).to_owned()).collect());
        Ok(())
    }

    /// The next monitored event, or `None` after `timeout`.
    pub fn recv_monitored(&mut self, timeout: Duration) -> Result<Option<Monitored>, Error> {
        let deadline = self.deadline(timeout);
        loop {
            if let Some(m) = self.monitored.pop_front() {
                return Ok(Some(m));
            }
            match self.pump(Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Ok(self.monitored.pop_front()),
                Err(e) => self.recover(e, Some(deadline))?,
            }
        }
    }

    /// Subscriptions the daemon dropped since the last call, because a reloaded access
    /// policy no longer allows them (they are also removed from
    /// [`Connection::subscriptions`]).
    pub fn take_revoked(&mut self) -> Vec<Revocation> {
        self.revoked.drain(..).collect()
    }

    /// The daemon's counters, with one record per client if `clients` is set.
    pub fn stats(&mut self, clients: bool) -> Result<StatsReport, Error> {
        self.retrying(|c| match c.request(|seq| Frame::Stats { seq, clients })? {
            Answer::Stats(r) => Ok(r),
            other => Err(unexpected(other)),
        })
    }

    // ----- request / response ------------------------------------------------------------

    /// Sends a request to the subscribers of `channel` and waits for the first reply.
    ///
    /// Fails with [`Error::NoResponder`] if nobody is subscribed, [`Error::Timeout`] if no
    /// reply comes within `timeout`, [`Error::ResponderGone`] if every recipient left, and
    /// [`Error::Remote`] if the responder answered with an error.
    pub fn call(
        &mut self,
        channel: &str,
        message: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.check_send(channel, message, data)?;
        let timeout_ms = timeout.as_millis().clamp(1, u32::MAX as u128) as u32;
        let answer = self.retrying(|c| {
            let deadline = c.deadline(timeout + CALL_GRACE);
            let seq = c.start(|seq| Frame::Call {
                seq,
                timeout_ms,
                channel,
                message,
                payload: data,
            })?;
            c.wait_answer(seq, deadline)
        })?;
        match answer {
            Answer::Reply {
                error: false,
                message,
                data,
            } => Ok(Reply { message, data }),
            Answer::Reply {
                error: true,
                message,
                ..
            } => Err(Error::Remote(message)),
            other => Err(unexpected(other)),
        }
    }

    /// Answers a call received with [`Connection::recv`].
    pub fn reply(&mut self, call: &Message, message: &str, data: &[u8]) -> Result<(), Error> {
        self.respond(call, false, message, data)
    }

    /// Answers a call with an error; the caller's `call` returns [`Error::Remote`].
    pub fn reply_error(&mut self, call: &Message, text: &str) -> Result<(), Error> {
        self.respond(call, true, text, &[])
    }

    fn respond(
        &mut self,
        call: &Message,
        error: bool,
        message: &str,
        data: &[u8],
    ) -> Result<(), Error> {
        let token = call.call_token.ok_or(Error::NotACall)?;
        if data.len() > self.limits.max_payload as usize {
            return Err(Error::TooLarge {
                size: data.len(),
                max: self.limits.max_payload,
            });
        }
        let max = self.limits.max_message as usize;
        let mut end = message.len().min(max);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Frame::Respond {
            token,
            error,
            message: &message[..end],
            payload: data,
        }
        .encode(&mut self.wbuf);
        self.write_some(true)
    }

    // ----- receiving ---------------------------------------------------------------------

    /// The next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(m) = self.recv_owned(Wait::Forever)? {
                return Ok(m);
            }
        }
    }

    /// The next message, or `None` after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>, Error> {
        self.recv_owned(Wait::For(timeout))
    }

    /// A message if one is available now; never blocks (except to reconnect).
    pub fn try_recv(&mut self) -> Result<Option<Message>, Error> {
        self.recv_owned(Wait::Now)
    }

    /// Like [`Connection::recv`], but the message borrows the connection's read buffer
    /// instead of being copied: no allocation per message.
    pub fn recv_borrowed(&mut self) -> Result<MessageRef<'_>, Error> {
        loop {
            // Waiting forever returns only with a message (or an error).
            if self.next_message(Wait::Forever)?.is_some() {
                break;
            }
        }
        self.take_borrowed()
    }

    /// Like [`Connection::recv_timeout`], borrowing as [`Connection::recv_borrowed`].
    pub fn recv_timeout_borrowed(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<MessageRef<'_>>, Error> {
        match self.next_message(Wait::For(timeout))? {
            None => Ok(None),
            Some(()) => self.take_borrowed().map(Some),
        }
    }

    /// Like [`Connection::try_recv`], borrowing as [`Connection::recv_borrowed`].
    pub fn try_recv_borrowed(&mut self) -> Result<Option<MessageRef<'_>>, Error> {
        match self.next_message(Wait::Now)? {
            None => Ok(None),
            Some(()) => self.take_borrowed().map(Some),
        }
    }

    fn recv_owned(&mut self, wait: Wait) -> Result<Option<Message>, Error> {
        loop {
            if self.next_message(wait)?.is_none() {
                return Ok(None);
            }
            if let Some(m) = self.inbox.pop_front() {
                return Ok(Some(m));
            }
            match self.reader.next_frame() {
                Ok(Some(Frame::Message {
                    token,
                    call,
                    channel,
                    message,
                    payload,
                    sender,
                })) => {
                    return Ok(Some(Message {
                        channel: channel.to_owned(),
                        message: message.to_owned(),
                        data: payload.to_vec(),
                        call_token: call.then_some(token),
                        sender,
                    }))
                }
                // `next_message` saw a complete message frame at the front.
                Ok(_) => self.poisoned = Some(DecodeError::UnknownKind(Kind::Message as u8)),
                Err(e) => self.poisoned = Some(e),
            }
        }
    }

    /// The message `next_message` found: from the inbox, else at the front of the reader.
    fn take_borrowed(&mut self) -> Result<MessageRef<'_>, Error> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(MessageRef::from(&*self.current.insert(m)));
        }
        match self.reader.next_frame() {
            Ok(Some(Frame::Message {
                token,
                call,
                channel,
                message,
                payload,
                sender,
            })) => Ok(MessageRef {
                channel,
                message,
                data: payload,
                call_token: call.then_some(token),
                sender,
            }),
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => DecodeError::UnknownKind(Kind::Message as u8),
                };
                // The daemon sent garbage: the next call treats the connection as lost.
                self.poisoned = Some(e);
                Err(Error::Protocol(e))
            }
        }
    }

    /// Waits (as `wait` allows) until a message is in the inbox or complete at the front of
    /// the reader. Writes buffered sends first. Reads the clock only before blocking with a
    /// timeout, or to reconnect.
    fn next_message(&mut self, wait: Wait) -> Result<Option<()>, Error> {
        let mut deadline = None;
        if let Some(e) = self.poisoned.take() {
            self.recover(Error::Protocol(e), wait.deadline(&mut deadline))?;
        }
        if self.wpos < self.wbuf.len() {
            if let Err(e) = self.write_some(false) {
                self.recover(e, wait.deadline(&mut deadline))?;
            }
        }
        loop {
            if !self.inbox.is_empty() {
                return Ok(Some(()));
            }
            let step = match self.decode_frames(true) {
                Ok(true) => return Ok(Some(())),
                Ok(false) => self.fill(),
                Err(e) => Err(e),
            };
            match step {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.recover(e, wait.deadline(&mut deadline))?;
                    continue;
                }
            }
            // Nothing more to read now.
            let until = match wait {
                Wait::Now => return Ok(None),
                Wait::Forever => None,
                Wait::For(_) => wait.deadline(&mut deadline),
            };
            match self.block(until) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => self.recover(e, until)?,
            }
        }
    }

    /// One non-blocking read into the reader. Returns whether bytes arrived.
    fn fill(&mut self) -> Result<bool, Error> {
        loop {
            let got = crate::sys::recv_with_fds(
                &self.stream,
                self.reader.buffer_mut(READ_CHUNK),
                &mut self.fds,
                MAX_PENDING_FDS,
            );
            return match got {
                Ok(0) => Err(self.closed_error()),
                Ok(n) => {
                    self.reader.filled(n);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(Error::Io(e)),
            };
        }
    }

    /// Sleeps until the socket is readable (writing buffered bytes whenever it is
    /// writable) or `until` passes. Returns false on the deadline. Reads nothing.
    fn block(&mut self, until: Option<Instant>) -> Result<bool, Error> {
        loop {
            let mut flags = PollFlags::POLLIN;
            if self.wpos < self.wbuf.len() {
                flags |= PollFlags::POLLOUT;
            }
            let mut fds = [PollFd::new(self.stream.as_fd(), flags)];
            let ready = match nix::poll::poll(&mut fds, poll_timeout(until)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => return Ok(true),
                Err(e) => return Err(Error::Io(e.into())),
            };
            if ready == 0 {
                return Ok(false);
            }
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                return Ok(true);
            }
            if revents.contains(PollFlags::POLLOUT) {
                self.write_some(false)?;
            }
        }
    }

    /// The error for a stream the daemon closed: its last fatal error frame, if any.
    fn closed_error(&mut self) -> Error {
        match self.fatal.take() {
            Some((code, text)) => Error::from_daemon(code, text),
            None => Error::Disconnected,
        }
    }

    // ----- internals ---------------------------------------------------------------------

    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & !SEND_SEQ_BIT;
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn deadline(&self, d: Duration) -> Instant {
        deadline_after(d)
    }

    /// Encodes a request with a fresh sequence number and writes it.
    fn start<'f>(&mut self, build: impl FnOnce(u32) -> Frame<'f>) -> Result<u32, Error> {
        let seq = self.next_seq();
        build(seq).encode(&mut self.wbuf);
        self.write_some(true)?;
        Ok(seq)
    }

    /// Sends a request and waits (up to the timeout) for its answer.
    fn request<'f>(&mut self, build: impl FnOnce(u32) -> Frame<'f>) -> Result<Answer, Error> {
        let deadline = self.deadline(self.opts.timeout);
        let seq = self.start(build)?;
        self.wait_answer(seq, deadline)
    }

    /// Sends a request whose successful answer carries a file descriptor (shared memory
    /// handed over by the daemon) and waits for both.
    #[allow(dead_code)] // used by the shared-memory clients
    pub(crate) fn request_with_fd<'f>(
        &mut self,
        build: impl FnOnce(u32) -> Frame<'f>,
    ) -> Result<(Answer, OwnedFd), Error> {
        let deadline = self.deadline(self.opts.timeout);
        let seq = self.start(build)?;
        let answer = self.wait_answer(seq, deadline);
        let fd = self.answer_fds.remove(&seq);
        match (answer?, fd) {
            (a, Some(fd)) => Ok((a, fd)),
            (a, None) => Err(unexpected(a)),
        }
    }

    fn request_ok<'f>(&mut self, build: impl FnOnce(u32) -> Frame<'f>) -> Result<u32, Error> {
        match self.request(build)? {
            Answer::Ok(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `op`; if the connection was lost and reconnecting is enabled, reconnects
    /// (within the timeout) and runs it once more.
    fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match op(self) {
            Err(e) if self.opts.reconnect && e.is_disconnect() => {
                let deadline = self.deadline(self.opts.timeout);
                self.recover(e, Some(deadline))?;
                op(self)
            }
            r => r,
        }
    }

    fn wait_answer(&mut self, seq: u32, deadline: Instant) -> Result<Answer, Error> {
        loop {
            if let Some(a) = self.answers.remove(&seq) {
                return match a {
                    Answer::Error(code, text) => Err(Error::from_daemon(code, text)),
                    a => Ok(a),
                };
            }
            if !self.pump(Some(deadline))? && Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
        }
    }

    /// Writes buffered bytes; with `all`, blocks (reading meanwhile) until they are out.
    fn write_some(&mut self, all: bool) -> Result<(), Error> {
        // The clock is read only if the socket is full and the caller waits.
        let mut deadline = None;
        loop {
            while self.wpos < self.wbuf.len() {
                match send_nosignal(&self.stream, &self.wbuf[self.wpos..]) {
                    Ok(n) => self.wpos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // With reconnecting on, `recover` takes the unwritten sends from
                        // the buffer; else they have nowhere to go.
                        if !self.opts.reconnect {
                            self.wbuf.clear();
                            self.wpos = 0;
                        }
                        return Err(Error::Io(e));
                    }
                }
            }
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                return Ok(());
            }
            if !all {
                return Ok(());
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_after(self.opts.timeout));
            if !self.pump(Some(deadline))? && Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
        }
    }

    /// Waits until the socket is readable (or writable with pending output) or the deadline
    /// passes, then reads and decodes what arrived. Returns whether anything happened.
    fn pump(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        // Frames a borrowing receive left in the reader come first.
        let pending = self.reader.pending();
        if pending > 0 {
            self.decode_frames(false)?;
            if self.reader.pending() != pending {
                return Ok(true);
            }
        }
        let mut flags = PollFlags::POLLIN;
        if self.wpos < self.wbuf.len() {
            flags |= PollFlags::POLLOUT;
        }
        let timeout = poll_timeout(deadline);
        let mut fds = [PollFd::new(self.stream.as_fd(), flags)];
        let ready = match nix::poll::poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return Ok(true),
            Err(e) => return Err(Error::Io(e.into())),
        };
        if ready == 0 {
            return Ok(false);
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLOUT) {
            let pending = self.wbuf.len() - self.wpos;
            self.write_some(false)?;
            if self.wbuf.len() - self.wpos != pending {
                return Ok(true);
            }
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.read_available()?;
        }
        Ok(true)
    }

    /// Reads and decodes everything the socket holds (messages go to the inbox).
    fn read_available(&mut self) -> Result<(), Error> {
        loop {
            let before = self.reader.pending();
            if !self.fill()? {
                return Ok(());
            }
            let got = self.reader.pending() - before;
            self.decode_frames(false)?;
            // A short read drained the socket; another would only say EAGAIN.
            if got < READ_CHUNK {
                return Ok(());
            }
        }
    }

    /// Decodes the complete frames in the reader. With `until_message`, stops before the
    /// first message frame, leaves it there and returns true; else messages go to the inbox.
    fn decode_frames(&mut self, until_message: bool) -> Result<bool, Error> {
        loop {
            if until_message
                && front_is_message(self.reader.pending_bytes(), self.reader.max_body())
            {
                return Ok(true);
            }
            let Some(frame) = self.reader.next_frame().map_err(Error::Protocol)? else {
                return Ok(false);
            };
            if frame.kind().carries_fd() {
                // The descriptor arrived with the frame's first byte, so it is queued by now.
                let Some(fd) = self.fds.pop_front() else {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a frame announced a file descriptor that did not arrive",
                    )));
                };
                if self.answer_fds.len() >= MAX_PENDING_FDS {
                    // Only answers to requests that timed out stay unclaimed: close them.
                    log::warn!("closing {} unclaimed descriptors", self.answer_fds.len());
                    self.answer_fds.clear();
                }
                self.answer_fds.insert(frame.seq(), fd);
            }
            match frame {
                Frame::Message {
                    token,
                    call,
                    channel,
                    message,
                    payload,
                    sender,
                } => self.inbox.push_back(Message {
                    channel: channel.to_owned(),
                    message: message.to_owned(),
                    data: payload.to_vec(),
                    call_token: call.then_some(token),
                    sender,
                }),
                Frame::Monitored {
                    token,
                    event,
                    sender,
                    channel,
                    message,
                    payload,
                } => self.monitored.push_back(Monitored {
                    event,
                    token,
                    channel: channel.to_owned(),
                    message: message.to_owned(),
                    data: payload.to_vec(),
                    sender,
                }),
                Frame::Services { seq, list } => {
                    self.answers.insert(seq, Answer::Services(list));
                }
                Frame::Revoked { channel, reason } => {
                    log::warn!("qcopd revoked the subscription to {channel:?}: {reason}");
                    self.subscriptions.remove(channel);
                    self.credential_subs.remove(channel);
                    self.revoked.push_back(Revocation {
                        channel: channel.to_owned(),
                        reason: reason.to_owned(),
                    });
                }
                Frame::Lost { count } => {
                    self.lost += count;
                    log::warn!("qcopd dropped {count} messages for this slow reader");
                }
                Frame::Ok { seq, value } => {
                    self.answers.insert(seq, Answer::Ok(value));
                }
                Frame::Error {
                    seq,
                    fatal,
                    code,
                    text,
                } => {
                    if fatal {
                        self.fatal = Some((code, text.to_owned()));
                    } else if seq & SEND_SEQ_BIT != 0 {
                        if self.send_errors.len() >= MAX_SEND_ERRORS {
                            self.send_errors.pop_front();
                            self.send_errors_overflow += 1;
                        }
                        self.send_errors.push_back((code, text.to_owned()));
                    } else {
                        self.answers
                            .insert(seq, Answer::Error(code, text.to_owned()));
                    }
                }
                Frame::Registered { seq, count, remote } => {
                    self.answers.insert(seq, Answer::Registered(count, remote));
                }
                Frame::Channels { seq, list } => {
                    self.answers.insert(seq, Answer::Channels(list));
                }
                Frame::StatsReport { seq, report } => {
                    self.answers.insert(seq, Answer::Stats(report));
                }
                Frame::Reply {
                    seq,
                    error,
                    message,
                    payload,
                } => {
                    self.answers.insert(
                        seq,
                        Answer::Reply {
                            error,
                            message: message.to_owned(),
                            data: payload.to_vec(),
                        },
                    );
                }
                Frame::Seg(f) => match f.into_answer() {
                    Some((seq, a)) => {
                        self.answers.insert(seq, Answer::Seg(a));
                    }
                    None => log::debug!("ignoring an unexpected shared-memory frame"),
                },
                Frame::ShmStream { seq, stream } => {
                    self.answers.insert(seq, Answer::ShmStream { stream });
                }
                Frame::ShmEvent { seq } => {
                    self.answers.insert(seq, Answer::ShmEvent);
                }
                Frame::ShmMapped {
                    seq,
                    record,
                    message,
                    ..
                } => {
                    let message = message.to_owned();
                    self.answers
                        .insert(seq, Answer::ShmMapped { record, message });
                }
                other => log::debug!("ignoring unexpected {:?} frame", other.kind()),
            }
        }
    }

    /// After a receive error: reconnect if enabled and the error is a lost connection.
    fn recover(&mut self, err: Error, deadline: Option<Instant>) -> Result<(), Error> {
        if !self.opts.reconnect || !err.is_disconnect() {
            return Err(err);
        }
        log::info!("lost qcopd ({err}); reconnecting");
        let replay = self.take_unwritten_sends();
        let mut backoff = Duration::from_millis(50);
        let failed = loop {
            match self.reestablish() {
                Ok(()) => {
                    // The new daemon gets the sends the old one never had in full, after
                    // the subscriptions are back (as they were when they were sent).
                    self.wbuf.extend_from_slice(&replay);
                    return self.write_some(false);
                }
                Err(e) if !e.is_disconnect() => break e,
                Err(_) => {}
            }
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    break Error::Disconnected;
                }
                backoff = backoff.min(d - now);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        if !replay.is_empty() {
            log::warn!(
                "{} bytes of buffered sends not delivered: {failed}",
                replay.len()
            );
        }
        Err(failed)
    }

    /// Takes the buffered sends not completely written out of the write buffer (which
    /// is left empty). A frame the old connection got only part of was never routed, so it
    /// is kept whole; requests are dropped, since the operation that wrote them is retried.
    fn take_unwritten_sends(&mut self) -> Vec<u8> {
        let mut keep = Vec::new();
        let mut at = 0;
        while self.wbuf.len() - at >= HEADER_LEN {
            let h = &self.wbuf[at..at + HEADER_LEN];
            let total = HEADER_LEN + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let seq = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let end = (at + total).min(self.wbuf.len());
            if end > self.wpos && h[4] == Kind::Send as u8 && seq & SEND_SEQ_BIT != 0 {
                keep.extend_from_slice(&self.wbuf[at..end]);
            }
            at = end;
        }
        self.wbuf.clear();
        self.wpos = 0;
        keep
    }

    /// Connects anew and re-registers every subscription.
    fn reestablish(&mut self) -> Result<(), Error> {
        let (stream, reader, client_id, limits) = handshake(&self.opts)?;
        self.stream = stream;
        self.reader = reader;
        self.client_id = client_id;
        self.limits = limits;
        self.wbuf.clear();
        self.wpos = 0;
        self.answers.clear();
        self.fds.clear();
        self.answer_fds.clear();
        self.fatal = None;
        self.reconnects += 1;
        let names: Vec<String> = self.subscriptions.keys().cloned().collect();
        for channel in names {
            let credentials = self.credential_subs.contains(&channel);
            self.request_ok(|seq| Frame::Subscribe {
                seq,
                credentials,
                channel: &channel,
            })?;
        }
        if let Some(patterns) = self.monitoring.clone() {
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            self.request_ok(|seq| Frame::Monitor { seq, patterns })?;
        }
        log::info!(
            "reconnected to qcopd; {} subscriptions restored",
            self.subscriptions.len()
        );
        Ok(())
    }
}

impl Drop for Connection {
    /// Writes the sends still buffered (waiting at most the timeout for a full socket, and
    /// reconnecting first if enabled and needed). The daemon reads them after the close.
    fn drop(&mut self) {
        if self.wpos == self.wbuf.len() {
            return;
        }
        if let Err(e) = self.write_buffered() {
            log::warn!(
                "{} bytes of buffered sends not delivered: {e}",
                self.wbuf.len() - self.wpos
            );
        }
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

pub(crate) fn unexpected(a: Answer) -> Error {
    let what = match a {
        Answer::Ok(_) => "Ok",
        Answer::Error(..) => "Error",
        Answer::Registered(..) => "Registered",
        Answer::Channels(_) => "Channels",
        Answer::Stats(_) => "Stats",
        Answer::Services(_) => "Services",
        Answer::Reply { .. } => "Reply",
        Answer::Seg(_) => "shared-memory",
        Answer::ShmStream { .. } => "ShmStream",
        Answer::ShmEvent => "ShmEvent",
        Answer::ShmMapped { .. } => "ShmMapped",
    };
    Error::Handshake(format!("unexpected {what} answer"))
}

fn send_nosignal(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(
        stream.as_raw_fd(),
        bytes,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)
}

/// Connects, says Hello and reads Welcome within the options' timeout.
fn handshake(opts: &ConnectOptions) -> Result<(UnixStream, FrameReader, u32, Limits), Error> {
    let deadline = Instant::now() + opts.timeout;
    let stream =
        UnixStream::connect(&opts.socket).map_err(|e| Error::Connect(opts.socket.clone(), e))?;
    let hello = Frame::Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        name: &opts.name,
    }
    .to_vec();
    stream.set_write_timeout(Some(opts.timeout.max(Duration::from_millis(1))))?;
    let mut written = 0;
    while written < hello.len() {
        // MSG_NOSIGNAL: a closed socket must not raise SIGPIPE in the application.
        match nix::sys::socket::send(
            stream.as_raw_fd(),
            &hello[written..],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => {}
            // A daemon that refuses the connection (client limit) writes its reason and
            // closes, possibly before our Hello arrives: read the reason below.
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => break,
            Err(nix::errno::Errno::EAGAIN) => return Err(Error::Timeout),
            Err(e) => return Err(Error::Io(e.into())),
        }
    }
    stream.set_nonblocking(true)?;
    let mut reader = FrameReader::new(crate::wire::MAX_FRAME_BODY);
    loop {
        if let Some(frame) = reader.next_frame().map_err(Error::Protocol)? {
            return match frame {
                Frame::Welcome {
                    version: PROTOCOL_VERSION,
                    client_id,
                    max_payload,
                    max_channel,
                    max_message,
                    max_subscriptions,
                } => {
                    let limits = Limits {
                        max_payload,
                        max_channel,
                        max_message,
                        max_subscriptions,
                    };
                    Ok((stream, reader, client_id, limits))
                }
                Frame::Error { code, text, .. } => Err(Error::from_daemon(code, text.to_owned())),
                other => Err(Error::Handshake(format!(
                    "expected Welcome, got {:?}",
                    other.kind()
                ))),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => return Err(Error::Timeout),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Io(e.into())),
        }
        match (&stream).read(reader.buffer_mut(4096)) {
            Ok(0) => return Err(Error::Disconnected),
            Ok(n) => reader.filled(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
}
