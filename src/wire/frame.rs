//! Frame kinds, their fields, and their encoding.

use super::buf::{put_bytes, put_str, DecodeError, Reader};
use super::segments::{self, SegFrame};
use std::fmt;

/// Header length: body length (u32), kind (u8), flags (u8), reserved (u16), sequence (u32).
pub const HEADER_LEN: usize = 12;
/// The first four bytes of a `Hello` body.
pub const MAGIC: [u8; 4] = *b"QCOP";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

const FLAG_ACK: u8 = 0x01;
const FLAG_CALL: u8 = 0x01;
const FLAG_ERROR: u8 = 0x01;
const FLAG_FATAL: u8 = 0x01;
const FLAG_CLIENTS: u8 = 0x01;
/// Header flag: one file descriptor travels with this frame (`SCM_RIGHTS` on the frame's
/// bytes). Set exactly on the kinds for which [`Kind::carries_fd`] is true.
pub const FLAG_FD: u8 = 0x80;
/// On `Subscribe`: deliver messages on this subscription with the sender's credentials.
/// On `Message`: the body ends with the sender's credentials.
const FLAG_SUB_CREDENTIALS: u8 = 0x01;
const FLAG_CREDENTIALS: u8 = 0x02;

/// Frame kinds. Requests from clients are below 0x80, frames from the daemon at or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client handshake.
    Hello = 0x01,
    /// Subscribe to a channel or pattern.
    Subscribe = 0x02,
    /// Drop a subscription.
    Unsubscribe = 0x03,
    /// Broadcast a message.
    Send = 0x04,
    /// Does a channel have subscribers?
    IsRegistered = 0x05,
    /// Request expecting one reply.
    Call = 0x06,
    /// A responder's answer to a call.
    Respond = 0x07,
    /// List channels.
    ListChannels = 0x08,
    /// Daemon counters.
    Stats = 0x09,
    /// Round trip confirming all earlier frames were processed.
    Sync = 0x0a,
    /// Create (or create-or-attach) a shared-memory segment.
    SegCreate = 0x18,
    /// Attach to a shared-memory segment.
    SegAttach = 0x19,
    /// Ask for a segment's control block (its lock).
    SegControl = 0x1a,
    /// Create (or create-or-open) a system semaphore.
    SemCreate = 0x1b,
    /// Open a system semaphore.
    SemOpen = 0x1c,
    /// Detach a segment or close a semaphore.
    SegClose = 0x1d,
    /// Remove a segment's or semaphore's name.
    SegRemove = 0x1e,
    /// List segments and semaphores.
    SegList = 0x1f,
    /// Take or release a segment lock through the daemon.
    SegLock = 0x20,
    /// Become a monitor of all traffic (or of some patterns).
    Monitor = 0x0b,
    /// List the activatable services.
    ListServices = 0x0c,
    /// Daemon handshake answer.
    Welcome = 0x81,
    /// Success of a request.
    Ok = 0x82,
    /// Failure of a request, or of the connection.
    Error = 0x83,
    /// A delivered message.
    Message = 0x84,
    /// The answer to a call.
    Reply = 0x85,
    /// Answer to `IsRegistered`.
    Registered = 0x86,
    /// Answer to `ListChannels`.
    Channels = 0x87,
    /// Answer to `Stats`.
    StatsReport = 0x88,
    /// Messages dropped for this client.
    Lost = 0x89,
    /// A segment's data memfd (answer to `SegCreate` / `SegAttach`).
    SegAttached = 0x98,
    /// A segment's control memfd (answer to `SegControl`).
    SegControlBlock = 0x99,
    /// A semaphore's control memfd (answer to `SemCreate` / `SemOpen`).
    SemOpened = 0x9a,
    /// Answer to `SegList`.
    SegListing = 0x9b,
    /// Answer to `SegLock`.
    SegLockState = 0xa0,
    /// A copy of routed traffic for a monitor.
    Monitored = 0x8a,
    /// Answer to `ListServices`.
    Services = 0x8b,
    /// A subscription the daemon dropped (access policy changed on reload).
    Revoked = 0x8c,
    /// Open a shared-memory stream on a channel (publisher).
    ShmOpen = 0x10,
    /// Ask for the event fd of one's own stream (publisher).
    ShmEventFd = 0x11,
    /// Map a channel's shared-memory stream (subscriber).
    ShmMap = 0x12,
    /// Answer to `ShmOpen`: the ring's memfd.
    ShmStream = 0x90,
    /// Answer to `ShmEventFd`: the event fd that wakes qcopd.
    ShmEvent = 0x91,
    /// Answer to `ShmMap`: the ring's memfd and the subscriber's record.
    ShmMapped = 0x92,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            0x01 => Hello,
            0x02 => Subscribe,
            0x03 => Unsubscribe,
            0x04 => Send,
            0x05 => IsRegistered,
            0x06 => Call,
            0x07 => Respond,
            0x08 => ListChannels,
            0x09 => Stats,
            0x0a => Sync,
            0x18 => SegCreate,
            0x19 => SegAttach,
            0x1a => SegControl,
            0x1b => SemCreate,
            0x1c => SemOpen,
            0x1d => SegClose,
            0x1e => SegRemove,
            0x1f => SegList,
            0x20 => SegLock,
            0x0b => Monitor,
            0x0c => ListServices,
            0x81 => Welcome,
            0x82 => Ok,
            0x83 => Error,
            0x84 => Message,
            0x85 => Reply,
            0x86 => Registered,
            0x87 => Channels,
            0x88 => StatsReport,
            0x89 => Lost,
            0x98 => SegAttached,
            0x99 => SegControlBlock,
            0x9a => SemOpened,
            0x9b => SegListing,
            0xa0 => SegLockState,
            0x8a => Monitored,
            0x8b => Services,
            0x8c => Revoked,
            0x10 => ShmOpen,
            0x11 => ShmEventFd,
            0x12 => ShmMap,
            0x90 => ShmStream,
            0x91 => ShmEvent,
            0x92 => ShmMapped,
            _ => return None,
        })
    }

    /// Whether frames of this kind always carry one file descriptor (daemon to client only;
    /// the daemon never accepts descriptors). Such frames have [`FLAG_FD`] set in the header.
    pub fn carries_fd(self) -> bool {
        segments::carries_fd(self as u8)
            || matches!(self, Kind::ShmStream | Kind::ShmEvent | Kind::ShmMapped)
    }

    /// Flag bits defined for this kind; any other bit is a protocol error.
    fn allowed_flags(self) -> u8 {
        if self.carries_fd() {
            return FLAG_FD | self.kind_flags();
        }
        self.kind_flags()
    }

    /// Flag bits with a meaning particular to this kind.
    fn kind_flags(self) -> u8 {
        match self {
            Kind::Send => FLAG_ACK,
            Kind::Subscribe => FLAG_SUB_CREDENTIALS,
            Kind::Message => FLAG_CALL | FLAG_CREDENTIALS,
            Kind::Respond | Kind::Reply => FLAG_ERROR,
            Kind::Error => FLAG_FATAL,
            Kind::Stats => FLAG_CLIENTS,
            k => segments::KINDS
                .iter()
                .find(|(b, _)| *b == k as u8)
                .map_or(0, |(_, f)| *f),
        }
    }
}

/// Error codes carried by `Error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    Malformed,
    /// No common protocol version.
    UnsupportedVersion,
    /// The payload or frame exceeds the limit.
    TooLarge,
    /// A channel or message name is empty, too long or has control characters.
    BadName,
    /// A send or call named a pattern instead of a channel.
    WildcardSend,
    /// The per-client subscription limit is reached.
    TooManySubscriptions,
    /// Unsubscribe for a channel the client is not subscribed to.
    NotSubscribed,
    /// The daemon's client limit is reached.
    TooManyClients,
    /// A call found no subscriber to answer it.
    NoResponder,
    /// A call was not answered in time.
    Timeout,
    /// Every recipient of a call went away without answering.
    ResponderGone,
    /// The per-client limit on calls in flight is reached.
    TooManyCalls,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The client did not read its messages and exceeded the slow-consumer limit.
    SlowConsumer,
    /// A request arrived before the handshake.
    HandshakeRequired,
    /// Access policy refused the request.
    Denied,
    /// The responder answered the call with an error.
    Remote,
    /// No shared-memory segment or semaphore of that name (or handle).
    SegNotFound,
    /// A segment or semaphore of that name exists already.
    SegExists,
    /// A segment size of 0 or over the daemon's limit.
    SegInvalidSize,
    /// A limit on segments, semaphores, bytes or attachments is reached.
    SegLimit,
    /// An invalid mode, group, value, pid or handle.
    SegInvalid,
    /// The daemon could not create or share the memory (memfd, mmap or /proc failed).
    SegUnavailable,
    /// An application started for an activatable channel failed, or did not subscribe in
    /// time; messages queued for it were dropped.
    ActivationFailed,
    /// The queue of messages waiting for an application to start is full.
    ActivationQueueFull,
    /// The request is not possible on a monitor connection (or a connection with
    /// subscriptions cannot become a monitor).
    MonitorConnection,
    /// The daemon's limit on monitors (`max_monitors`) is reached.
    TooManyMonitors,
    /// A daemon link failed authentication (wrong key, or a peer that is not a qcopd).
    LinkAuth,
    /// A daemon refused a link: too many links or unauthenticated connections.
    LinkBusy,
    /// A daemon refused a link because the two daemons are already linked.
    LinkDuplicate,
    /// No open shared-memory stream on that channel (or no such stream of this client).
    NoStream,
    /// The channel already has an open shared-memory stream.
    StreamExists,
    /// The daemon's limit on shared-memory streams is reached.
    TooManyStreams,
    /// The ring geometry is invalid or exceeds the per-stream or total memory limit.
    RingSize,
    /// Every consumer record of the stream is taken.
    TooManyConsumers,
    /// The daemon could not create the shared memory (memfd, mmap or eventfd failed).
    ShmFailed,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        use ErrorCode::*;
        match self {
            Malformed => 1,
            UnsupportedVersion => 2,
            TooLarge => 3,
            BadName => 4,
            WildcardSend => 5,
            TooManySubscriptions => 6,
            NotSubscribed => 7,
            TooManyClients => 8,
            NoResponder => 9,
            Timeout => 10,
            ResponderGone => 11,
            TooManyCalls => 12,
            ShuttingDown => 13,
            SlowConsumer => 14,
            HandshakeRequired => 15,
            Denied => 16,
            Remote => 17,
            SegNotFound => 30,
            SegExists => 31,
            SegInvalidSize => 32,
            SegLimit => 33,
            SegInvalid => 34,
            SegUnavailable => 35,
            ActivationFailed => 18,
            ActivationQueueFull => 19,
            MonitorConnection => 20,
            TooManyMonitors => 21,
            LinkAuth => 36,
            LinkBusy => 37,
            LinkDuplicate => 38,
            NoStream => 24,
            StreamExists => 25,
            TooManyStreams => 26,
            RingSize => 27,
            TooManyConsumers => 28,
            ShmFailed => 29,
            Unknown(v) => v,
        }
    }

    /// The code for a wire number.
    pub fn from_u16(v: u16) -> ErrorCode {
        use ErrorCode::*;
        match v {
            1 => Malformed,
            2 => UnsupportedVersion,
            3 => TooLarge,
            4 => BadName,
            5 => WildcardSend,
            6 => TooManySubscriptions,
            7 => NotSubscribed,
            8 => TooManyClients,
            9 => NoResponder,
            10 => Timeout,
            11 => ResponderGone,
            12 => TooManyCalls,
            13 => ShuttingDown,
            14 => SlowConsumer,
            15 => HandshakeRequired,
            16 => Denied,
            17 => Remote,
            30 => SegNotFound,
            31 => SegExists,
            32 => SegInvalidSize,
            33 => SegLimit,
            34 => SegInvalid,
            35 => SegUnavailable,
            18 => ActivationFailed,
            19 => ActivationQueueFull,
            20 => MonitorConnection,
            21 => TooManyMonitors,
            36 => LinkAuth,
            37 => LinkBusy,
            38 => LinkDuplicate,
            24 => NoStream,
            25 => StreamExists,
            26 => TooManyStreams,
            27 => RingSize,
            28 => TooManyConsumers,
            29 => ShmFailed,
            other => Unknown(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorCode::*;
        let s = match self {
            Malformed => "malformed frame",
            UnsupportedVersion => "unsupported protocol version",
            TooLarge => "message too large",
            BadName => "bad name",
            WildcardSend => "cannot send to a wildcard pattern",
            TooManySubscriptions => "too many subscriptions",
            NotSubscribed => "not subscribed",
            TooManyClients => "too many clients",
            NoResponder => "no responder",
            Timeout => "timed out",
            ResponderGone => "responder went away",
            TooManyCalls => "too many calls in flight",
            ShuttingDown => "daemon shutting down",
            SlowConsumer => "disconnected as a slow consumer",
            HandshakeRequired => "handshake required",
            Denied => "access denied",
            Remote => "responder returned an error",
            SegNotFound => "no such shared-memory segment or semaphore",
            SegExists => "shared-memory segment or semaphore exists already",
            SegInvalidSize => "invalid shared-memory size",
            SegLimit => "shared-memory limit reached",
            SegInvalid => "invalid shared-memory request",
            SegUnavailable => "shared memory unavailable in the daemon",
            ActivationFailed => "application activation failed",
            ActivationQueueFull => "activation queue full",
            MonitorConnection => "not possible on a monitor connection",
            TooManyMonitors => "too many monitors",
            LinkAuth => "link authentication failed",
            LinkBusy => "link refused: too many connections",
            LinkDuplicate => "link refused: the daemons are already linked",
            NoStream => "no shared-memory stream",
            StreamExists => "the channel already has a shared-memory stream",
            TooManyStreams => "too many shared-memory streams",
            RingSize => "invalid or too large shared-memory ring",
            TooManyConsumers => "too many consumers on the shared-memory stream",
            ShmFailed => "shared memory could not be created",
            Unknown(v) => return write!(f, "error code {v}"),
        };
        f.write_str(s)
    }
}

/// One entry of a `Channels` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel name or pattern.
    pub name: String,
    /// Local connections subscribed to it.
    pub subscribers: u32,
    /// Whether `name` is a wildcard pattern.
    pub pattern: bool,
    /// Subscribers on other daemons reached over links (0 from a daemon without links).
    pub remote: u32,
}

/// One connected client, as reported by `Stats` with the clients flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Daemon-assigned connection id.
    pub id: u32,
    /// Peer process id from `SO_PEERCRED`.
    pub pid: u32,
    /// Peer user id.
    pub uid: u32,
    /// Peer group id.
    pub gid: u32,
    /// Subscriptions held.
    pub subscriptions: u32,
    /// Bytes queued for this client and not yet written.
    pub queued_bytes: u64,
    /// Messages delivered to this client.
    pub delivered: u64,
    /// Messages dropped for this client.
    pub dropped: u64,
    /// Name the client gave in its handshake.
    pub name: String,
}

/// One link to another daemon, as reported by `Stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// The configured peer address, or the address an accepted link came from.
    pub peer: String,
    /// The name the peer daemon gave in its handshake (empty until it authenticated).
    pub name: String,
    /// `down`, `connecting`, `handshake` or `up`.
    pub state: String,
    /// `(name, value)` pairs: round-trip time, messages and bytes each way, drops by
    /// reason, reconnects (see `docs/PROTOCOL.md`).
    pub counters: Vec<(String, u64)>,
}

impl LinkInfo {
    /// The value of a named link counter.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// The `Stats` answer: named counters, then optionally one record per client, then one
/// record per link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsReport {
    /// `(name, value)` pairs, in a stable order.
    pub counters: Vec<(String, u64)>,
    /// Per-client records, present when asked for.
    pub clients: Vec<ClientInfo>,
    /// Links to other daemons (empty without links).
    pub links: Vec<LinkInfo>,
}

impl StatsReport {
    /// The value of a named counter.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// Who sent a message, as the daemon saw it (`SO_PEERCRED` of the sender's connection).
///
/// Filled in by the daemon, never taken from the sender, so a client cannot forge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Credentials {
    /// Process id of the sender (as seen in the daemon's pid namespace).
    pub pid: u32,
    /// User id of the sender.
    pub uid: u32,
    /// Group id of the sender (its primary group when it connected).
    pub gid: u32,
}

impl Credentials {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.pid, self.uid, self.gid] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Credentials, DecodeError> {
        Ok(Credentials {
            pid: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
        })
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid={} uid={} gid={}", self.pid, self.uid, self.gid)
    }
}

/// What a `Monitored` frame reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorEvent {
    /// A message sent to a channel.
    Send,
    /// A call (request waiting for a reply); the frame's token identifies it.
    Call,
    /// A responder's reply to the call with the frame's token.
    Reply,
    /// A responder's error answer to the call with the frame's token.
    ErrorReply,
}

impl MonitorEvent {
    fn to_u8(self) -> u8 {
        match self {
            MonitorEvent::Send => 0,
            MonitorEvent::Call => 1,
            MonitorEvent::Reply => 2,
            MonitorEvent::ErrorReply => 3,
        }
    }

    fn from_u8(v: u8) -> Result<MonitorEvent, DecodeError> {
        Ok(match v {
            0 => MonitorEvent::Send,
            1 => MonitorEvent::Call,
            2 => MonitorEvent::Reply,
            3 => MonitorEvent::ErrorReply,
            _ => return Err(DecodeError::Reserved),
        })
    }
}

/// The state of an activatable service, as listed by `ListServices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Not started (or exited normally).
    Idle,
    /// Started; the daemon waits for it to subscribe before delivering its queue.
    Starting,
    /// Started and subscribed.
    Running,
    /// The last start failed (see the detail text).
    Failed,
}

impl ServiceState {
    fn to_u8(self) -> u8 {
        match self {
            ServiceState::Idle => 0,
            ServiceState::Starting => 1,
            ServiceState::Running => 2,
            ServiceState::Failed => 3,
        }
    }

    fn from_u8(v: u8) -> Result<ServiceState, DecodeError> {
        Ok(match v {
            0 => ServiceState::Idle,
            1 => ServiceState::Starting,
            2 => ServiceState::Running,
            3 => ServiceState::Failed,
            _ => return Err(DecodeError::Reserved),
        })
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Idle => "idle",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Failed => "failed",
        })
    }
}

/// One activatable service in a `Services` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service's name in the configuration.
    pub name: String,
    /// The channel or pattern whose messages start it.
    pub channel: String,
    /// Where it is in its life.
    pub state: ServiceState,
    /// Process id while started (0 otherwise).
    pub pid: u32,
    /// Messages waiting for it to subscribe.
    pub queued: u32,
    /// Bytes of those messages.
    pub queued_bytes: u64,
    /// Times it was started.
    pub starts: u64,
    /// Times a start failed (could not run, exited or timed out before subscribing).
    pub failures: u64,
    /// Why the last start failed (empty unless `state` is `Failed`).
    pub detail: String,
}

/// A decoded frame. Names and payloads borrow from the receive buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// Client handshake: protocol magic, supported version range and a name for `stats`.
    Hello {
        /// Oldest version the client speaks.
        version_min: u16,
        /// Newest version the client speaks.
        version_max: u16,
        /// Free-form client name (program name), shown in `qcop stats --clients`.
        name: &'a str,
    },
    /// Subscribe to a channel, or a pattern if the name contains `*`, `?` or `[`.
    Subscribe {
        /// Request number echoed in the answer.
        seq: u32,
        /// Deliver messages on this subscription with the sender's credentials.
        credentials: bool,
        /// Channel or pattern.
        channel: &'a str,
    },
    /// Drop a subscription.
    Unsubscribe {
        /// Request number echoed in the answer.
        seq: u32,
        /// Channel or pattern.
        channel: &'a str,
    },
    /// Broadcast a message to a channel.
    Send {
        /// Request number, echoed in an error and, with `ack`, in an `Ok`.
        seq: u32,
        /// Ask for an `Ok` carrying the number of receivers.
        ack: bool,
        /// Target channel (no wildcards).
        channel: &'a str,
        /// Message signature, e.g. `setVolume(int)`.
        message: &'a str,
        /// Opaque payload.
        payload: &'a [u8],
    },
    /// Ask whether a channel has exact subscribers.
    IsRegistered {
        /// Request number echoed in the answer.
        seq: u32,
        /// Channel.
        channel: &'a str,
    },
    /// A request that expects one reply.
    Call {
        /// Request number echoed in the `Reply` or `Error`.
        seq: u32,
        /// How long the daemon waits for a reply, in milliseconds (0: daemon default).
        timeout_ms: u32,
        /// Target channel.
        channel: &'a str,
        /// Message signature.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// A responder's answer to a delivered call.
    Respond {
        /// The call token from the delivered `Message`.
        token: u32,
        /// The answer is an error; `message` is its description.
        error: bool,
        /// Reply message signature, or error text.
        message: &'a str,
        /// Reply payload.
        payload: &'a [u8],
    },
    /// List channels and patterns with their subscriber counts.
    ListChannels {
        /// Request number echoed in the answer.
        seq: u32,
    },
    /// Ask for the daemon's counters.
    Stats {
        /// Request number echoed in the answer.
        seq: u32,
        /// Include one record per client.
        clients: bool,
    },
    /// Answered with `Ok` once every earlier frame of this connection is processed.
    Sync {
        /// Request number echoed in the answer.
        seq: u32,
    },
    /// The daemon's handshake answer, with the limits it enforces.
    Welcome {
        /// Chosen protocol version.
        version: u16,
        /// Connection id.
        client_id: u32,
        /// Largest payload accepted.
        max_payload: u32,
        /// Longest channel name, in bytes.
        max_channel: u16,
        /// Longest message name, in bytes.
        max_message: u16,
        /// Subscriptions allowed per connection.
        max_subscriptions: u32,
    },
    /// A request succeeded.
    Ok {
        /// Request number.
        seq: u32,
        /// Request-specific value (receivers of an acknowledged send).
        value: u32,
    },
    /// A request failed, or (fatal) the connection is about to be closed.
    Error {
        /// Request number, 0 when not tied to a request.
        seq: u32,
        /// The connection is closed after this frame.
        fatal: bool,
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        text: &'a str,
    },
    /// A message delivered to a subscriber.
    Message {
        /// Nonzero call token when `call` is set.
        token: u32,
        /// The sender waits for a reply (answer with `Respond`).
        call: bool,
        /// The channel the message was sent to (also for pattern subscribers).
        channel: &'a str,
        /// Message signature.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
        /// Who sent it, when the receiver asked for credentials.
        sender: Option<Credentials>,
    },
    /// The answer to a `Call`.
    Reply {
        /// The caller's request number.
        seq: u32,
        /// The responder answered with an error; `message` is its description.
        error: bool,
        /// Reply signature or error text.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// Answer to `IsRegistered`.
    Registered {
        /// Request number.
        seq: u32,
        /// Exact local subscribers of the channel.
        count: u32,
        /// Exact subscribers on other daemons that a message sent here would reach.
        remote: u32,
    },
    /// Answer to `ListChannels`.
    Channels {
        /// Request number.
        seq: u32,
        /// Channels and patterns.
        list: Vec<ChannelInfo>,
    },
    /// Answer to `Stats`.
    StatsReport {
        /// Request number.
        seq: u32,
        /// Counters and clients.
        report: StatsReport,
    },
    /// Messages the daemon dropped for this client since the last `Lost`.
    Lost {
        /// How many.
        count: u64,
    },
    /// Shared-memory segments and system semaphores (kinds 0x18-0x20, 0x98-0x9b, 0xa0).
    Seg(SegFrame<'a>),
    /// Turn this connection into a monitor of the traffic on `patterns` (all if empty).
    Monitor {
        /// Request number echoed in the answer.
        seq: u32,
        /// Channels or patterns to monitor; empty means everything.
        patterns: Vec<&'a str>,
    },
    /// List the activatable services.
    ListServices {
        /// Request number echoed in the answer.
        seq: u32,
    },
    /// A copy of routed traffic, for a monitor.
    Monitored {
        /// The call token for calls and replies, 0 for plain messages.
        token: u32,
        /// What happened.
        event: MonitorEvent,
        /// Who sent it.
        sender: Credentials,
        /// The channel (for replies: the channel of the call).
        channel: &'a str,
        /// Message signature (for an error reply: the error text).
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// Answer to `ListServices`.
    Services {
        /// Request number.
        seq: u32,
        /// Every configured service.
        list: Vec<ServiceInfo>,
    },
    /// The daemon dropped one of this connection's subscriptions.
    Revoked {
        /// The channel or pattern that is no longer subscribed.
        channel: &'a str,
        /// Why (names the policy rule).
        reason: &'a str,
    },
    /// Open a shared-memory stream on a channel; answered by `ShmStream`.
    ShmOpen {
        /// Request number echoed in the answer.
        seq: u32,
        /// Overflow policy: 0 lossless, 1 lossy.
        policy: u8,
        /// Payload bytes per slot.
        slot_size: u32,
        /// Number of slots (a power of two).
        slot_count: u32,
        /// Channel (no wildcards).
        channel: &'a str,
        /// Message signature every message of the stream carries.
        message: &'a str,
    },
    /// Ask for the event fd of one's own stream; answered by `ShmEvent`.
    ShmEventFd {
        /// Request number echoed in the answer.
        seq: u32,
        /// The stream, as `ShmStream` named it.
        stream: u32,
    },
    /// Map a channel's open stream; answered by `ShmMapped`.
    ShmMap {
        /// Request number echoed in the answer.
        seq: u32,
        /// Channel.
        channel: &'a str,
    },
    /// The stream was opened; its memfd travels with this frame.
    ShmStream {
        /// Request number.
        seq: u32,
        /// Stream id (for `ShmEventFd`).
        stream: u32,
    },
    /// The stream's event fd travels with this frame.
    ShmEvent {
        /// Request number.
        seq: u32,
    },
    /// The stream's memfd travels with this frame.
    ShmMapped {
        /// Request number.
        seq: u32,
        /// Stream id.
        stream: u32,
        /// The consumer record qcopd assigned to this subscriber.
        record: u32,
        /// Message signature of the stream's messages.
        message: &'a str,
    },
}

/// The fixed 12-byte header that precedes every frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub kind: Kind,
    pub flags: u8,
    pub seq: u32,
}

impl Header {
    /// Parses a header if `bytes` holds one; checks kind, flags, reserved bits and length.
    pub(crate) fn parse(bytes: &[u8], max_body: u32) -> Result<Option<Header>, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut r = Reader::new(&bytes[..HEADER_LEN]);
        let len = r.u32()?;
        let kind_byte = r.u8()?;
        let flags = r.u8()?;
        let reserved = r.u16()?;
        let seq = r.u32()?;
        let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        if reserved != 0 {
            return Err(DecodeError::Reserved);
        }
        if flags & !kind.allowed_flags() != 0 || kind.carries_fd() != (flags & FLAG_FD != 0) {
            return Err(DecodeError::UnknownFlags {
                kind: kind_byte,
                flags,
            });
        }
        if len > max_body {
            return Err(DecodeError::TooLarge { len, max: max_body });
        }
        Ok(Some(Header {
            len,
            kind,
            flags,
            seq,
        }))
    }
}

impl<'a> Frame<'a> {
    /// Decodes a whole frame (header and body) from `bytes`, which must hold exactly one frame.
    pub fn decode_exact(bytes: &'a [u8], max_body: u32) -> Result<Frame<'a>, DecodeError> {
        let header = Header::parse(bytes, max_body)?.ok_or(DecodeError::Truncated)?;
        if bytes.len() - HEADER_LEN != header.len as usize {
            return Err(if bytes.len() - HEADER_LEN < header.len as usize {
                DecodeError::Truncated
            } else {
                DecodeError::TrailingBytes
            });
        }
        Frame::decode(&header, &bytes[HEADER_LEN..])
    }

    /// Decodes a body whose header was already checked.
    pub(crate) fn decode(h: &Header, body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let mut r = Reader::new(body);
        let seq = h.seq;
        // Kinds without a sequence number must carry zero, so every frame has one encoding.
        if seq != 0
            && matches!(
                h.kind,
                Kind::Hello | Kind::Welcome | Kind::Lost | Kind::Revoked
            )
        {
            return Err(DecodeError::Reserved);
        }
        let flag = h.flags & 0x01 != 0;
        let frame = match h.kind {
            Kind::Hello => {
                if r.take(4)? != MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                Frame::Hello {
                    version_min: r.u16()?,
                    version_max: r.u16()?,
                    name: r.str()?,
                }
            }
            Kind::Subscribe => Frame::Subscribe {
                seq,
                credentials: flag,
                channel: r.str()?,
            },
            Kind::Unsubscribe => Frame::Unsubscribe {
                seq,
                channel: r.str()?,
            },
            Kind::Send => Frame::Send {
                seq,
                ack: flag,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
            },
            Kind::IsRegistered => Frame::IsRegistered {
                seq,
                channel: r.str()?,
            },
            Kind::Call => Frame::Call {
                seq,
                timeout_ms: r.u32()?,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
            },
            Kind::Respond => Frame::Respond {
                token: seq,
                error: flag,
                message: r.str()?,
                payload: r.bytes()?,
            },
            Kind::ListChannels => Frame::ListChannels { seq },
            Kind::Stats => Frame::Stats { seq, clients: flag },
            Kind::Sync => Frame::Sync { seq },
            Kind::Welcome => Frame::Welcome {
                version: r.u16()?,
                client_id: r.u32()?,
                max_payload: r.u32()?,
                max_channel: r.u16()?,
                max_message: r.u16()?,
                max_subscriptions: r.u32()?,
            },
            Kind::Ok => Frame::Ok {
                seq,
                value: r.u32()?,
            },
            Kind::Error => Frame::Error {
                seq,
                fatal: flag,
                code: ErrorCode::from_u16(r.u16()?),
                text: r.str()?,
            },
            Kind::Message => Frame::Message {
                token: seq,
                call: flag,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
                sender: if h.flags & FLAG_CREDENTIALS != 0 {
                    Some(Credentials::decode(&mut r)?)
                } else {
                    None
                },
            },
            Kind::Reply => Frame::Reply {
                seq,
                error: flag,
                message: r.str()?,
                payload: r.bytes()?,
            },
            Kind::Registered => Frame::Registered {
                seq,
                count: r.u32()?,
                // Present only when nonzero (daemons without links never send it), so that
                // every frame has exactly one encoding.
                remote: if r.remaining() > 0 {
                    match r.u32()? {
                        0 => return Err(DecodeError::Reserved),
                        n => n,
                    }
                } else {
                    0
                },
            },
            Kind::Channels => {
                // Each entry is at least a u16 length, a u32 count and a u8 flag.
                let n = r.count(7)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(ChannelInfo {
                        name: r.str()?.to_owned(),
                        subscribers: r.u32()?,
                        pattern: match r.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(DecodeError::Reserved),
                        },
                        remote: 0,
                    });
                }
                // Remote subscriber counts, one per entry; present only when one is nonzero
                // (daemons without links never send them): one encoding per frame.
                if r.remaining() > 0 {
                    if r.count(4)? != list.len() {
                        return Err(DecodeError::BadCount);
                    }
                    for c in &mut list {
                        c.remote = r.u32()?;
                    }
                    if list.iter().all(|c| c.remote == 0) {
                        return Err(DecodeError::Reserved);
                    }
                }
                Frame::Channels { seq, list }
            }
            Kind::StatsReport => Frame::StatsReport {
                seq,
                report: decode_stats(&mut r)?,
            },
            Kind::Lost => Frame::Lost { count: r.u64()? },
            Kind::Monitor => {
                let n = r.count(2)?;
                let mut patterns = Vec::with_capacity(n);
                for _ in 0..n {
                    patterns.push(r.str()?);
                }
                Frame::Monitor { seq, patterns }
            }
            Kind::ListServices => Frame::ListServices { seq },
            Kind::Monitored => Frame::Monitored {
                token: seq,
                event: MonitorEvent::from_u8(r.u8()?)?,
                sender: Credentials::decode(&mut r)?,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
            },
            Kind::Services => Frame::Services {
                seq,
                list: decode_services(&mut r)?,
            },
            Kind::Revoked => Frame::Revoked {
                channel: r.str()?,
                reason: r.str()?,
            },
            Kind::ShmOpen => Frame::ShmOpen {
                seq,
                policy: r.u8()?,
                slot_size: r.u32()?,
                slot_count: r.u32()?,
                channel: r.str()?,
                message: r.str()?,
            },
            Kind::ShmEventFd => Frame::ShmEventFd {
                seq,
                stream: r.u32()?,
            },
            Kind::ShmMap => Frame::ShmMap {
                seq,
                channel: r.str()?,
            },
            Kind::ShmStream => Frame::ShmStream {
                seq,
                stream: r.u32()?,
            },
            Kind::ShmEvent => Frame::ShmEvent { seq },
            Kind::ShmMapped => Frame::ShmMapped {
                seq,
                stream: r.u32()?,
                record: r.u32()?,
                message: r.str()?,
            },
            k => Frame::Seg(SegFrame::decode(k as u8, h.flags & !FLAG_FD, seq, &mut r)?),
        };
        r.finish()?;
        Ok(frame)
    }

    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello { .. } => Kind::Hello,
            Frame::Subscribe { .. } => Kind::Subscribe,
            Frame::Unsubscribe { .. } => Kind::Unsubscribe,
            Frame::Send { .. } => Kind::Send,
            Frame::IsRegistered { .. } => Kind::IsRegistered,
            Frame::Call { .. } => Kind::Call,
            Frame::Respond { .. } => Kind::Respond,
            Frame::ListChannels { .. } => Kind::ListChannels,
            Frame::Stats { .. } => Kind::Stats,
            Frame::Sync { .. } => Kind::Sync,
            Frame::Welcome { .. } => Kind::Welcome,
            Frame::Ok { .. } => Kind::Ok,
            Frame::Error { .. } => Kind::Error,
            Frame::Message { .. } => Kind::Message,
            Frame::Reply { .. } => Kind::Reply,
            Frame::Registered { .. } => Kind::Registered,
            Frame::Channels { .. } => Kind::Channels,
            Frame::StatsReport { .. } => Kind::StatsReport,
            Frame::Lost { .. } => Kind::Lost,
            Frame::Seg(f) => f.kind(),
            Frame::Monitor { .. } => Kind::Monitor,
            Frame::ListServices { .. } => Kind::ListServices,
            Frame::Monitored { .. } => Kind::Monitored,
            Frame::Services { .. } => Kind::Services,
            Frame::Revoked { .. } => Kind::Revoked,
            Frame::ShmOpen { .. } => Kind::ShmOpen,
            Frame::ShmEventFd { .. } => Kind::ShmEventFd,
            Frame::ShmMap { .. } => Kind::ShmMap,
            Frame::ShmStream { .. } => Kind::ShmStream,
            Frame::ShmEvent { .. } => Kind::ShmEvent,
            Frame::ShmMapped { .. } => Kind::ShmMapped,
        }
    }

    /// Appends the encoded frame (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let (mut flags, seq) = self.header_fields();
        if self.kind().carries_fd() {
            flags |= FLAG_FD;
        }
        out.extend_from_slice(&[0; 4]);
        out.push(self.kind() as u8);
        out.push(flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&seq.to_be_bytes());
        self.encode_body(out);
        let body_len = (out.len() - start - HEADER_LEN) as u32;
        out[start..start + 4].copy_from_slice(&body_len.to_be_bytes());
    }

    /// Appends a `Message` frame whose `channel`, `message` and `payload` fields are already
    /// encoded in `fields`: the body of a `Send`, or of a `Call` after its timeout. Gives the
    /// bytes [`Frame::encode`] gives for the same `Message`, with one copy of `fields`.
    pub fn encode_message_fields(
        out: &mut Vec<u8>,
        token: u32,
        call: bool,
        fields: &[u8],
        sender: Option<Credentials>,
    ) {
        let creds_len = if sender.is_some() { 12 } else { 0 };
        let mut flags = if call { FLAG_CALL } else { 0 };
        if sender.is_some() {
            flags |= FLAG_CREDENTIALS;
        }
        let len = (fields.len() + creds_len) as u32;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[Kind::Message as u8, flags, 0, 0]);
        out.extend_from_slice(&token.to_be_bytes());
        out.extend_from_slice(fields);
        if let Some(c) = sender {
            c.encode(out);
        }
    }

    /// The encoded frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// The header's sequence field: the request's sequence number, a call token, or 0.
    pub fn seq(&self) -> u32 {
        self.header_fields().1
    }

    fn header_fields(&self) -> (u8, u32) {
        let f = |b: bool| if b { 0x01 } else { 0 };
        match *self {
            Frame::Hello { .. }
            | Frame::Welcome { .. }
            | Frame::Lost { .. }
            | Frame::Revoked { .. } => (0, 0),
            Frame::Unsubscribe { seq, .. }
            | Frame::IsRegistered { seq, .. }
            | Frame::Call { seq, .. }
            | Frame::ListChannels { seq }
            | Frame::Sync { seq }
            | Frame::Ok { seq, .. }
            | Frame::Registered { seq, .. }
            | Frame::Channels { seq, .. }
            | Frame::StatsReport { seq, .. }
            | Frame::ShmOpen { seq, .. }
            | Frame::ShmEventFd { seq, .. }
            | Frame::ShmMap { seq, .. }
            | Frame::ShmStream { seq, .. }
            | Frame::ShmEvent { seq }
            | Frame::ShmMapped { seq, .. }
            | Frame::Monitor { seq, .. }
            | Frame::ListServices { seq }
            | Frame::Services { seq, .. } => (0, seq),
            Frame::Subscribe {
                seq, credentials, ..
            } => (f(credentials), seq),
            Frame::Monitored { token, .. } => (0, token),
            Frame::Send { seq, ack, .. } => (f(ack), seq),
            Frame::Respond { token, error, .. } => (f(error), token),
            Frame::Stats { seq, clients } => (f(clients), seq),
            Frame::Error { seq, fatal, .. } => (f(fatal), seq),
            Frame::Message {
                token,
                call,
                sender,
                ..
            } => {
                let creds = if sender.is_some() {
                    FLAG_CREDENTIALS
                } else {
                    0
                };
                (f(call) | creds, token)
            }
            Frame::Reply { seq, error, .. } => (f(error), seq),
            Frame::Seg(ref s) => s.header_fields(),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello {
                version_min,
                version_max,
                name,
            } => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version_min.to_be_bytes());
                out.extend_from_slice(&version_max.to_be_bytes());
                put_str(out, name);
            }
            Frame::Subscribe { channel, .. }
            | Frame::Unsubscribe { channel, .. }
            | Frame::IsRegistered { channel, .. } => put_str(out, channel),
            Frame::Send {
                channel,
                message,
                payload,
                ..
            } => {
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
            }
            Frame::Message {
                channel,
                message,
                payload,
                sender,
                ..
            } => {
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
                if let Some(c) = sender {
                    c.encode(out);
                }
            }
            Frame::Call {
                timeout_ms,
                channel,
                message,
                payload,
                ..
            } => {
                out.extend_from_slice(&timeout_ms.to_be_bytes());
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
            }
            Frame::Respond {
                message, payload, ..
            }
            | Frame::Reply {
                message, payload, ..
            } => {
                put_str(out, message);
                put_bytes(out, payload);
            }
            Frame::ListChannels { .. }
            | Frame::Stats { .. }
            | Frame::Sync { .. }
            | Frame::ListServices { .. } => {}
            Frame::Welcome {
                version,
                client_id,
                max_payload,
                max_channel,
                max_message,
                max_subscriptions,
            } => {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&client_id.to_be_bytes());
                out.extend_from_slice(&max_payload.to_be_bytes());
                out.extend_from_slice(&max_channel.to_be_bytes());
                out.extend_from_slice(&max_message.to_be_bytes());
                out.extend_from_slice(&max_subscriptions.to_be_bytes());
            }
            Frame::Ok { value, .. } => out.extend_from_slice(&value.to_be_bytes()),
            Frame::Error { code, text, .. } => {
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                put_str(out, text);
            }
            Frame::Registered { count, remote, .. } => {
                out.extend_from_slice(&count.to_be_bytes());
                if *remote != 0 {
                    out.extend_from_slice(&remote.to_be_bytes());
                }
            }
            Frame::Channels { list, .. } => {
                out.extend_from_slice(&(list.len() as u32).to_be_bytes());
                for c in list {
                    put_str(out, &c.name);
                    out.extend_from_slice(&c.subscribers.to_be_bytes());
                    out.push(u8::from(c.pattern));
                }
                if list.iter().any(|c| c.remote != 0) {
                    out.extend_from_slice(&(list.len() as u32).to_be_bytes());
                    for c in list {
                        out.extend_from_slice(&c.remote.to_be_bytes());
                    }
                }
            }
            Frame::StatsReport { report, .. } => encode_stats(report, out),
            Frame::Lost { count } => out.extend_from_slice(&count.to_be_bytes()),
            Frame::Seg(f) => f.encode_body(out),
            Frame::Monitor { patterns, .. } => {
                out.extend_from_slice(&(patterns.len() as u32).to_be_bytes());
                for p in patterns {
                    put_str(out, p);
                }
            }
            Frame::Monitored {
                event,
                sender,
                channel,
                message,
                payload,
                ..
            } => {
                out.push(event.to_u8());
                sender.encode(out);
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
            }
            Frame::Services { list, .. } => encode_services(list, out),
            Frame::Revoked { channel, reason } => {
                put_str(out, channel);
                put_str(out, reason);
            }
            Frame::ShmOpen {
                policy,
                slot_size,
                slot_count,
                channel,
                message,
                ..
            } => {
                out.push(*policy);
                out.extend_from_slice(&slot_size.to_be_bytes());
                out.extend_from_slice(&slot_count.to_be_bytes());
                put_str(out, channel);
                put_str(out, message);
            }
            Frame::ShmEventFd { stream, .. } | Frame::ShmStream { stream, .. } => {
                out.extend_from_slice(&stream.to_be_bytes())
            }
            Frame::ShmMap { channel, .. } => put_str(out, channel),
            Frame::ShmEvent { .. } => {}
            Frame::ShmMapped {
                stream,
                record,
                message,
                ..
            } => {
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&record.to_be_bytes());
                put_str(out, message);
            }
        }
    }
}

fn encode_services(list: &[ServiceInfo], out: &mut Vec<u8>) {
    out.extend_from_slice(&(list.len() as u32).to_be_bytes());
    for s in list {
        put_str(out, &s.name);
        put_str(out, &s.channel);
        out.push(s.state.to_u8());
        out.extend_from_slice(&s.pid.to_be_bytes());
        out.extend_from_slice(&s.queued.to_be_bytes());
        for v in [s.queued_bytes, s.starts, s.failures] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        put_str(out, &s.detail);
    }
}

fn decode_services(r: &mut Reader<'_>) -> Result<Vec<ServiceInfo>, DecodeError> {
    // Three string lengths, the state byte, two u32 and three u64.
    let n = r.count(3 * 2 + 1 + 2 * 4 + 3 * 8)?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(ServiceInfo {
            name: r.str()?.to_owned(),
            channel: r.str()?.to_owned(),
            state: ServiceState::from_u8(r.u8()?)?,
            pid: r.u32()?,
            queued: r.u32()?,
            queued_bytes: r.u64()?,
            starts: r.u64()?,
            failures: r.u64()?,
            detail: r.str()?.to_owned(),
        });
    }
    Ok(list)
}

fn encode_stats(report: &StatsReport, out: &mut Vec<u8>) {
    encode_counters(&report.counters, out);
    out.extend_from_slice(&(report.clients.len() as u32).to_be_bytes());
    for c in &report.clients {
        for v in [c.id, c.pid, c.uid, c.gid, c.subscriptions] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for v in [c.queued_bytes, c.delivered, c.dropped] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        put_str(out, &c.name);
    }
    // The links section only when there are links (one encoding per report).
    if report.links.is_empty() {
        return;
    }
    out.extend_from_slice(&(report.links.len() as u32).to_be_bytes());
    for l in &report.links {
        put_str(out, &l.peer);
        put_str(out, &l.name);
        put_str(out, &l.state);
        encode_counters(&l.counters, out);
    }
}

fn encode_counters(counters: &[(String, u64)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(counters.len() as u32).to_be_bytes());
    for (name, value) in counters {
        put_str(out, name);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn decode_counters(r: &mut Reader<'_>) -> Result<Vec<(String, u64)>, DecodeError> {
    let n = r.count(10)?;
    let mut counters = Vec::with_capacity(n);
    for _ in 0..n {
        counters.push((r.str()?.to_owned(), r.u64()?));
    }
    Ok(counters)
}

fn decode_stats(r: &mut Reader<'_>) -> Result<StatsReport, DecodeError> {
    let counters = decode_counters(r)?;
    // Five u32, three u64 and a string length.
    let n = r.count(5 * 4 + 3 * 8 + 2)?;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(ClientInfo {
            id: r.u32()?,
            pid: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            subscriptions: r.u32()?,
            queued_bytes: r.u64()?,
            delivered: r.u64()?,
            dropped: r.u64()?,
            name: r.str()?.to_owned(),
        });
    }
    // The links section, absent from daemons without links. Each record holds at least
    // three string lengths and a counter count.
    let mut links = Vec::new();
    if r.remaining() > 0 {
        let n = r.count(2 + 2 + 2 + 4)?;
        // Present only with at least one link: one encoding per report.
        if n == 0 {
            return Err(DecodeError::Reserved);
        }
        links.reserve(n);
        for _ in 0..n {
            links.push(LinkInfo {
                peer: r.str()?.to_owned(),
                name: r.str()?.to_owned(),
                state: r.str()?.to_owned(),
                counters: decode_counters(r)?,
            });
        }
    }
    Ok(StatsReport {
        counters,
        clients,
        links,
    })
}
