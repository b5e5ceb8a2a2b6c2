//! Application channels (Qt Extended's `QPE/Application/<app>`): a message to a channel that
//! belongs to a configured service, while nobody is subscribed to that channel exactly,
//! starts the service's program and waits for it.
//!
//! ```toml
//! [[service]]
//! name = "camera"
//! channel = "QPE/Application/camera"
//! command = ["/usr/bin/camera", "--qcop"]
//! user = "camera"
//! ```
//!
//! The message is queued (bounded in count and bytes per service) and the queue is
//! delivered, in order, when a client subscribes exactly to the channel of a queued message;
//! from then on messages are routed as usual. If the program cannot be started, exits
//! before subscribing, or does not subscribe within the timeout, the queue is dropped
//! (counted and logged) and callers waiting for a reply get an `ActivationFailed` error.
//! A service marked `persistent` also writes its queued sends to a spool directory
//! ([`super::spool`]), so they survive a daemon restart; the daemon starts such a service
//! when it finds spooled messages at start-up.
//!
//! This module holds the state machine and the processes; the event loop feeds it messages,
//! subscriptions, child exits and the time, and routes what it hands back.

use super::config::{Config, ConfigError};
use super::names::Names;
use super::router::Slot;
use super::spawn::{self, Program};
use super::spool::{self, Record, Spool};
use crate::pattern::{check_name, is_pattern, Pattern};
use crate::wire::{Credentials, ErrorCode, ServiceInfo, ServiceState};
use serde::Deserialize;
use std::collections::VecDeque;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most services a configuration may declare.
pub const MAX_SERVICES: usize = 256;
/// `PATH` given to started programs unless their environment sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `activation_*` settings shared by every service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActivationConfig {
    timeout_ms: u32,
    max_queued_messages: u32,
    max_queued_bytes: u32,
    restart_delay_ms: u32,
    spool_dir: Option<PathBuf>,
}

impl ActivationConfig {
    fn of(cfg: &Config) -> ActivationConfig {
        ActivationConfig {
            timeout_ms: cfg.activation_timeout_ms,
            max_queued_messages: cfg.activation_max_queued_messages,
            max_queued_bytes: cfg.activation_max_queued_bytes,
            restart_delay_ms: cfg.activation_restart_delay_ms,
            spool_dir: cfg.spool_dir.clone(),
        }
    }
}

/// One `[[service]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name shown by `qcop services`, used in logs and as the spool subdirectory.
    pub name: String,
    /// Channel (or pattern) whose messages start the program.
    pub channel: String,
    /// Program and arguments; the program must be an absolute path.
    pub command: Vec<String>,
    /// User to run as (default: the daemon's user).
    #[serde(default)]
    pub user: Option<String>,
    /// Group to run as (default: the user's primary group, or the daemon's group).
    #[serde(default)]
    pub group: Option<String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub working_directory: Option<PathBuf>,
    /// Environment variables as `KEY=value`, on top of (or replacing) `PATH`,
    /// `QCOP_SOCKET` and `QCOP_SERVICE`.
    #[serde(default)]
    pub environment: Vec<String>,
    /// Keep queued sends in the spool directory across daemon restarts.
    #[serde(default)]
    pub persistent: bool,
    /// Overrides `activation_timeout_ms` for this service (0: no override).
    #[serde(default)]
    pub timeout_ms: u32,
}

enum ChannelMatch {
    Exact(String),
    Glob(Pattern),
}

impl ChannelMatch {
    fn matches(&self, channel: &str) -> bool {
        match self {
            ChannelMatch::Exact(c) => c == channel,
            ChannelMatch::Glob(p) => p.matches(channel),
        }
    }
}

/// A service's configuration, checked and with names resolved.
struct Spec {
    name: String,
    channel_text: String,
    channel: ChannelMatch,
    /// The program, ready for `execve` except for `QCOP_SOCKET` (added at spawn time).
    program: Program,
    persistent: bool,
    timeout: Duration,
}

/// Checks the `activation_*` settings and every `[[service]]` of `cfg`, resolving names with `names`.
pub fn validate(cfg: &Config, names: &dyn Names) -> Result<(), ConfigError> {
    compile(cfg, Path::new("/"), names).map(|_| ())
}

fn compile(cfg: &Config, socket: &Path, names: &dyn Names) -> Result<Vec<Spec>, ConfigError> {
    let a = &ActivationConfig::of(cfg);
    let bad = |m: String| ConfigError::Invalid(m);
    if a.timeout_ms == 0 || a.max_queued_messages == 0 || a.max_queued_bytes == 0 {
        return Err(bad(
            "activation_timeout_ms, activation_max_queued_messages and activation_max_queued_bytes must be at least 1"
                .into(),
        ));
    }
    if let Some(d) = &a.spool_dir {
        if !d.is_absolute() {
            return Err(bad(format!(
                "spool_dir {} must be an absolute path",
                d.display()
            )));
        }
    }
    if cfg.service.len() > MAX_SERVICES {
        return Err(bad(format!(
            "{} services, at most {MAX_SERVICES} are supported",
            cfg.service.len()
        )));
    }
    let mut specs: Vec<Spec> = Vec::with_capacity(cfg.service.len());
    for s in &cfg.service {
        let spec = compile_one(s, cfg, socket, names)
            .map_err(|e| bad(format!("service {:?}: {e}", s.name)))?;
        if specs.iter().any(|o| o.name == spec.name) {
            return Err(bad(format!("service {:?} is declared twice", s.name)));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn compile_one(
    s: &ServiceConfig,
    cfg: &Config,
    socket: &Path,
    names: &dyn Names,
) -> Result<Spec, String> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && !s.name.starts_with('.')
        && s.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(
            "name must be 1-64 letters, digits, '.', '_' or '-', not starting with '.'".into(),
        );
    }
    check_name(&s.channel, cfg.max_channel_len as usize).map_err(|e| format!("channel: {e}"))?;
    let channel = if is_pattern(&s.channel) {
        ChannelMatch::Glob(Pattern::new(&s.channel).map_err(|e| format!("channel: {e}"))?)
    } else {
        ChannelMatch::Exact(s.channel.clone())
    };
    match s.command.first() {
        None => return Err("command is empty".into()),
        Some(p) if !Path::new(p).is_absolute() => {
            return Err(format!("command {p:?} must be an absolute path"))
        }
        Some(_) => {}
    }
    let argv = s
        .command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "command contains a NUL byte")?;
    let (uid, user_gid) = match &s.user {
        None => (None, None),
        Some(u) => {
            let (uid, gid) = names.user(u).ok_or_else(|| format!("unknown user {u:?}"))?;
            (Some(uid), Some(gid))
        }
    };
    let gid = match &s.group {
        None => user_gid,
        Some(g) => Some(
            names
                .group(g)
                .ok_or_else(|| format!("unknown group {g:?}"))?
                .0,
        ),
    };
    // A login's supplementary groups: the group it runs as and every group listing the user.
    let groups = match (&s.user, gid) {
        (Some(u), Some(g)) => names.groups_of(u, g),
        _ => Vec::new(),
    };
    let cwd = s.working_directory.as_deref().unwrap_or(Path::new("/"));
    if !cwd.is_absolute() {
        return Err(format!(
            "working_directory {} must be an absolute path",
            cwd.display()
        ));
    }
    let cwd = CString::new(cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| "working_directory contains a NUL byte")?;
    // Defaults first; the configured entries replace them by name.
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("QCOP_SOCKET={}", socket.display()),
        format!("QCOP_SERVICE={}", s.name),
    ];
    for e in &s.environment {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {
                env.retain(|d| d.split_once('=').map_or(true, |(dk, _)| dk != k));
                env.push(e.clone());
            }
            _ => return Err(format!("environment entry {e:?} is not KEY=value")),
        }
    }
    let envp = env
        .into_iter()
        .map(CString::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "environment contains a NUL byte")?;
    if s.persistent && cfg.spool_dir.is_none() {
        return Err("persistent needs spool_dir".into());
    }
    let timeout = match s.timeout_ms {
        0 => cfg.activation_timeout_ms,
        t => t,
    };
    if timeout == 0 {
        return Err("timeout_ms must be at least 1".into());
    }
    Ok(Spec {
        name: s.name.clone(),
        channel_text: s.channel.clone(),
        channel,
        program: Program {
            argv,
            envp,
            cwd,
            uid,
            gid,
            groups,
        },
        persistent: s.persistent,
        timeout: Duration::from_millis(timeout.into()),
    })
}

/// A call waiting in a queue: who asked, and until when the answer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedCall {
    /// The caller's slot.
    pub caller: Slot,
    /// The caller's client id (the slot may be reused after it leaves).
    pub caller_id: u32,
    /// The caller's request number.
    pub seq: u32,
    /// When the caller stops waiting.
    pub deadline: Instant,
}

/// A message waiting for its service to subscribe.
#[derive(Debug)]
pub struct Queued {
    /// Channel it was sent to.
    pub channel: String,
    /// Message signature.
    pub message: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub sender: Credentials,
    /// Set for a call.
    pub call: Option<QueuedCall>,
    /// Its spool file, for a persistent service.
    spool: Option<PathBuf>,
}

impl Queued {
    /// A queued message or call.
    pub fn new(
        channel: &str,
        message: &str,
        payload: &[u8],
        sender: Credentials,
        call: Option<QueuedCall>,
    ) -> Queued {
        Queued {
            channel: channel.to_owned(),
            message: message.to_owned(),
            payload: payload.to_vec(),
            sender,
            call,
            spool: None,
        }
    }

    fn cost(&self) -> usize {
        self.channel.len() + self.message.len() + self.payload.len()
    }

    /// Forgets its spool file (delivered or dropped).
    fn discard_file(&mut self) {
        if let Some(p) = self.spool.take() {
            spool::remove(&p);
        }
    }
}

/// A queued message that will not be delivered, with what its caller (if any) is told.
#[derive(Debug)]
pub struct Dropped {
    /// The message.
    pub item: Queued,
    /// Error for a waiting caller.
    pub code: ErrorCode,
    /// Its text.
    pub text: String,
}

/// Why a message was not accepted for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error for the sender.
    pub code: ErrorCode,
    /// Its text.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing queued.
    Idle,
    /// Started (or re-awaited); messages are queued until it subscribes or `deadline`.
    Waiting { deadline: Instant },
    /// Subscribed; messages route normally.
    Ready,
}

struct Service {
    spec: Spec,
    /// The running program's pid (it is ours to reap).
    child: Option<u32>,
    phase: Phase,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    starts: u64,
    failures: u64,
    /// Why the last start failed; cleared when it subscribes.
    failure: Option<String>,
    /// No new start before this instant (after a failure).
    retry_at: Option<Instant>,
    spool: Option<Spool>,
}

impl Service {
    fn new(spec: Spec) -> Service {
        Service {
            spec,
            child: None,
            phase: Phase::Idle,
            queue: VecDeque::new(),
            queued_bytes: 0,
            starts: 0,
            failures: 0,
            failure: None,
            retry_at: None,
            spool: None,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child
    }

    fn state(&self) -> ServiceState {
        match (self.phase, &self.failure, &self.child) {
            (Phase::Waiting { .. }, ..) => ServiceState::Starting,
            (_, Some(_), _) => ServiceState::Failed,
            (_, None, Some(_)) => ServiceState::Running,
            (_, None, None) => ServiceState::Idle,
        }
    }

    fn spawn(&mut self) -> Result<u32, String> {
        let argv0 = self.spec.program.argv[0].to_string_lossy();
        let pid =
            spawn::spawn(&self.spec.program).map_err(|e| format!("cannot start {argv0}: {e}"))?;
        self.child = Some(pid);
        Ok(pid)
    }

    /// Takes the whole queue out, forgetting spool files.
    fn drain(&mut self) -> Vec<Queued> {
        self.queued_bytes = 0;
        let mut items: Vec<Queued> = self.queue.drain(..).collect();
        for item in &mut items {
            item.discard_file();
        }
        items
    }
}

/// Counters of activation, appended to `qcop stats`.
#[derive(Debug, Default, Clone)]
pub struct ActivationCounters {
    /// Programs started.
    pub starts: u64,
    /// Starts that failed: could not run, or exited before subscribing.
    pub failures: u64,
    /// Starts that did not subscribe in time.
    pub timeouts: u64,
    /// Messages queued for a starting service.
    pub queued: u64,
    /// Queued messages delivered when their service subscribed.
    pub delivered: u64,
    /// Queued messages dropped (failure, timeout, caller timeout, removed service,
    /// shutdown) or refused because the queue was full or the service failing.
    pub dropped: u64,
    /// Messages refused because the service's queue was full.
    pub queue_full: u64,
    /// Messages written to the spool.
    pub spool_written: u64,
    /// Spooled messages read back at start-up.
    pub spool_restored: u64,
    /// Spool files that failed their checks (moved aside).
    pub spool_corrupt: u64,
    /// Interrupted spool writes found at start-up (removed, never delivered).
    pub spool_incomplete: u64,
    /// Spool writes that failed (the message stayed queued in memory only).
    pub spool_errors: u64,
}

impl ActivationCounters {
    /// The counters as `(name, value)` rows.
    pub fn report(&self) -> [(&'static str, u64); 12] {
        [
            ("activation_starts", self.starts),
            ("activation_failures", self.failures),
            ("activation_timeouts", self.timeouts),
            ("activation_queued", self.queued),
            ("activation_delivered", self.delivered),
            ("activation_dropped", self.dropped),
            ("activation_queue_full", self.queue_full),
            ("spool_written", self.spool_written),
            ("spool_restored", self.spool_restored),
            ("spool_corrupt", self.spool_corrupt),
            ("spool_incomplete", self.spool_incomplete),
            ("spool_errors", self.spool_errors),
        ]
    }
}

/// Every configured service and its state.
pub struct Activation {
    cfg: ActivationConfig,
    socket: PathBuf,
    services: Vec<Service>,
    /// Programs of services removed by a reload, reaped when they exit.
    detached: Vec<(String, u32)>,
    /// Largest spool file worth reading.
    max_file: u64,
    /// Counters for `qcop stats`.
    pub counters: ActivationCounters,
}

impl Activation {
    /// The services of `cfg`; started programs are told to connect to `socket`.
    pub fn new(
        cfg: &Config,
        socket: PathBuf,
        names: &dyn Names,
    ) -> Result<Activation, ConfigError> {
        let services = compile(cfg, &socket, names)?
            .into_iter()
            .map(Service::new)
            .collect();
        Ok(Activation {
            cfg: ActivationConfig::of(cfg),
            socket,
            services,
            detached: Vec::new(),
            max_file: max_file(cfg),
            counters: ActivationCounters::default(),
        })
    }

    /// No service is configured.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The first service whose channel matches `channel`.
    pub fn find(&self, channel: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.spec.channel.matches(channel))
    }

    /// Queues `item` for service `idx`, starting its program if none runs. The caller has
    /// checked that nobody is subscribed exactly to the item's channel.
    pub fn offer(&mut self, idx: usize, mut item: Queued, now: Instant) -> Result<(), Refusal> {
        let Some(s) = self.services.get_mut(idx) else {
            return Err(Refusal {
                code: ErrorCode::ActivationFailed,
                text: "no such service".into(),
            });
        };
        let name = s.spec.name.clone();
        // After a failure nothing is queued until the restart delay has passed, also while a
        // program that timed out still runs (it may subscribe late, but is not waited for).
        if let Some(at) = s.retry_at.filter(|at| *at > now) {
            self.counters.dropped += 1;
            let why = s.failure.as_deref().unwrap_or("it failed");
            return Err(Refusal {
                code: ErrorCode::ActivationFailed,
                text: format!(
                    "service {name} failed ({why}); next start attempt in {} ms",
                    at.duration_since(now).as_millis() as u64
                ),
            });
        }
        let limit_n = self.cfg.max_queued_messages as usize;
        let limit_b = self.cfg.max_queued_bytes as usize;
        if s.queue.len() >= limit_n || s.queued_bytes + item.cost() > limit_b {
            self.counters.queue_full += 1;
            self.counters.dropped += 1;
            return Err(Refusal {
                code: ErrorCode::ActivationQueueFull,
                text: format!(
                    "{} messages ({} bytes) already wait for service {name} to start \
                     (limits: {limit_n} messages, {limit_b} bytes)",
                    s.queue.len(),
                    s.queued_bytes
                ),
            });
        }
        if s.child.is_none() {
            match s.spawn() {
                Ok(pid) => {
                    s.starts += 1;
                    self.counters.starts += 1;
                    log::info!(
                        "starting service {name} (pid {pid}) for a message on {:?}",
                        item.channel
                    );
                }
                Err(why) => {
                    log::error!("service {name}: {why}");
                    s.failures += 1;
                    self.counters.failures += 1;
                    self.counters.dropped += 1;
                    s.failure = Some(why.clone());
                    s.retry_at =
                        Some(now + Duration::from_millis(self.cfg.restart_delay_ms.into()));
                    return Err(Refusal {
                        code: ErrorCode::ActivationFailed,
                        text: format!("service {name}: {why}"),
                    });
                }
            }
        }
        if !matches!(s.phase, Phase::Waiting { .. }) {
            s.phase = Phase::Waiting {
                deadline: now + s.spec.timeout,
            };
        }
        if s.spec.persistent && item.call.is_none() {
            item.spool = persist(s, &self.cfg, &item, &mut self.counters);
        }
        s.queued_bytes += item.cost();
        s.queue.push_back(item);
        self.counters.queued += 1;
        Ok(())
    }

    /// A client subscribed to `name`: services waiting for a subscription to the channel of
    /// one of their queued messages are ready; their queues are returned, in order, to be
    /// routed. Patterns do not count (an application subscribes to its own channel).
    pub fn on_subscribe(&mut self, name: &str) -> Vec<Queued> {
        if is_pattern(name) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in &mut self.services {
            if matches!(s.phase, Phase::Waiting { .. }) && s.queue.iter().any(|q| q.channel == name)
            {
                s.phase = Phase::Ready;
                s.failure = None;
                s.retry_at = None;
                let items = s.drain();
                log::info!(
                    "service {} subscribed to {name:?}; delivering {} queued messages",
                    s.spec.name,
                    items.len()
                );
                self.counters.delivered += items.len() as u64;
                out.extend(items);
            }
        }
        out
    }

    /// Applies deadlines: services that did not subscribe in time lose their queues, and
    /// queued calls whose caller stopped waiting are dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<Dropped> {
        let mut out = Vec::new();
        for s in &mut self.services {
            let Phase::Waiting { deadline } = s.phase else {
                continue;
            };
            if now >= deadline {
                let why = format!(
                    "did not subscribe within {} ms",
                    s.spec.timeout.as_millis() as u64
                );
                self.counters.timeouts += 1;
                fail(s, &why, now, &self.cfg, &mut self.counters, &mut out);
                continue;
            }
            // Calls whose caller gave up: their Timeout is sent now, not when delivered.
            let before = s.queue.len();
            let mut kept = VecDeque::with_capacity(before);
            for mut item in s.queue.drain(..) {
                match item.call {
                    Some(c) if c.deadline <= now => {
                        s.queued_bytes -= item.cost();
                        item.discard_file();
                        self.counters.dropped += 1;
                        out.push(Dropped {
                            text: format!(
                                "no reply before the timeout (service {} is still starting)",
                                s.spec.name
                            ),
                            code: ErrorCode::Timeout,
                            item,
                        });
                    }
                    _ => kept.push_back(item),
                }
            }
            s.queue = kept;
        }
        out
    }

    /// Reaps programs that exited (after SIGCHLD). A program that exits before subscribing
    /// failed: its queue is dropped.
    pub fn reap(&mut self, now: Instant) -> Vec<Dropped> {
        let mut out = Vec::new();
        for s in &mut self.services {
            let Some(pid) = s.child else {
                continue;
            };
            let status = match spawn::try_reap(pid) {
                Ok(None) => continue,
                Ok(Some(status)) => status,
                Err(e) => format!("cannot be waited for ({e})"),
            };
            s.child = None;
            if matches!(s.phase, Phase::Waiting { .. }) {
                self.counters.failures += 1;
                let why = format!("exited before subscribing ({status})");
                fail(s, &why, now, &self.cfg, &mut self.counters, &mut out);
            } else {
                s.phase = Phase::Idle;
                if status.contains("exit status: 0") {
                    log::info!("service {} (pid {pid}) exited", s.spec.name);
                    s.failure = None;
                } else {
                    log::warn!("service {} (pid {pid}) {status}", s.spec.name);
                    s.failure = Some(format!("pid {pid} {status}"));
                }
            }
        }
        self.detached
            .retain(|(name, pid)| match spawn::try_reap(*pid) {
                Ok(None) => true,
                Ok(Some(status)) => {
                    log::info!("program of removed service {name} (pid {pid}) exited: {status}");
                    false
                }
                Err(_) => false,
            });
        out
    }

    /// The earliest deadline the loop must wake up for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Waiting { deadline } => {
                    let calls = s.queue.iter().filter_map(|q| q.call.map(|c| c.deadline));
                    calls.chain(std::iter::once(deadline)).min()
                }
                _ => None,
            })
            .min()
    }

    /// Reads the spools of persistent services (at start-up) and starts the services that
    /// have messages waiting. Returns the messages that could not be kept.
    pub fn restore(&mut self, now: Instant) -> Vec<Dropped> {
        let mut out = Vec::new();
        let Some(root) = self.cfg.spool_dir.clone() else {
            return out;
        };
        for idx in 0..self.services.len() {
            let s = &mut self.services[idx];
            if !s.spec.persistent {
                continue;
            }
            let mut sp = match Spool::open(root.join(&s.spec.name)) {
                Ok(sp) => sp,
                Err(e) => {
                    log::error!("service {}: cannot open its spool: {e}", s.spec.name);
                    self.counters.spool_errors += 1;
                    continue;
                }
            };
            let loaded = match sp.load(self.max_file) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("service {}: cannot read its spool: {e}", s.spec.name);
                    self.counters.spool_errors += 1;
                    continue;
                }
            };
            self.counters.spool_corrupt += loaded.corrupt;
            self.counters.spool_incomplete += loaded.incomplete;
            s.spool = Some(sp);
            let limit = self.cfg.max_queued_messages as usize;
            let total = loaded.records.len();
            for (i, (path, r)) in loaded.records.into_iter().enumerate() {
                let item = Queued {
                    channel: r.channel,
                    // Written normalised; a spool from an older qcopd may not be.
                    message: crate::datastream::normalize_signature(&r.message).into_owned(),
                    payload: r.payload,
                    sender: r.sender,
                    call: None,
                    spool: Some(path),
                };
                if i >= limit {
                    let mut item = item;
                    item.discard_file();
                    self.counters.dropped += 1;
                    continue;
                }
                self.counters.spool_restored += 1;
                self.counters.queued += 1;
                s.queued_bytes += item.cost();
                s.queue.push_back(item);
            }
            if total > limit {
                log::error!(
                    "service {}: {} spooled messages exceed activation_max_queued_messages ({limit}); \
                     the newest {} were dropped",
                    s.spec.name,
                    total,
                    total - limit
                );
            }
            if s.queue.is_empty() {
                continue;
            }
            log::info!(
                "service {}: {} spooled messages from an earlier run",
                s.spec.name,
                s.queue.len()
            );
            match s.spawn() {
                Ok(pid) => {
                    s.starts += 1;
                    self.counters.starts += 1;
                    s.phase = Phase::Waiting {
                        deadline: now + s.spec.timeout,
                    };
                    log::info!("starting service {} (pid {pid}) for its spool", s.spec.name);
                }
                Err(why) => {
                    self.counters.failures += 1;
                    fail(s, &why, now, &self.cfg, &mut self.counters, &mut out);
                }
            }
        }
        out
    }

    /// Takes a reloaded configuration: services keep their programs and queues by name;
    /// removed services lose their queues (returned) and their programs are left running.
    pub fn reconfigure(
        &mut self,
        cfg: &Config,
        names: &dyn Names,
    ) -> Result<Vec<Dropped>, ConfigError> {
        let specs = compile(cfg, &self.socket, names)?;
        let mut old: Vec<Service> = std::mem::take(&mut self.services);
        let mut services = Vec::with_capacity(specs.len());
        for spec in specs {
            match old.iter().position(|s| s.spec.name == spec.name) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    if s.spec.persistent != spec.persistent {
                        s.spool = None;
                    }
                    s.spec = spec;
                    services.push(s);
                }
                None => services.push(Service::new(spec)),
            }
        }
        let mut out = Vec::new();
        for mut s in old {
            let items = s.drain();
            if !items.is_empty() {
                log::warn!(
                    "service {} was removed from the configuration; {} queued messages dropped",
                    s.spec.name,
                    items.len()
                );
            }
            self.counters.dropped += items.len() as u64;
            out.extend(items.into_iter().map(|item| Dropped {
                item,
                code: ErrorCode::ActivationFailed,
                text: format!("service {} was removed from the configuration", s.spec.name),
            }));
            if let Some(child) = s.child.take() {
                self.detached.push((s.spec.name.clone(), child));
            }
        }
        self.services = services;
        self.cfg = ActivationConfig::of(cfg);
        self.max_file = max_file(cfg);
        Ok(out)
    }

    /// Every service for `qcop services`.
    pub fn list(&self) -> Vec<ServiceInfo> {
        self.services
            .iter()
            .map(|s| ServiceInfo {
                name: s.spec.name.clone(),
                channel: s.spec.channel_text.clone(),
                state: s.state(),
                pid: s.pid().unwrap_or(0),
                queued: s.queue.len() as u32,
                queued_bytes: s.queued_bytes as u64,
                starts: s.starts,
                failures: s.failures,
                detail: if s.state() == ServiceState::Failed {
                    s.failure.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            })
            .collect()
    }

    /// At shutdown: logs what is lost (spooled messages stay on disk for the next start).
    /// Started programs keep running.
    pub fn shutdown(&mut self) {
        for s in &mut self.services {
            let volatile = s.queue.iter().filter(|q| q.spool.is_none()).count();
            if volatile > 0 {
                log::warn!(
                    "service {}: {volatile} queued messages discarded at shutdown",
                    s.spec.name
                );
                self.counters.dropped += volatile as u64;
            }
        }
    }
}

/// Drops a service's queue after a failed start; remembers why.
fn fail(
    s: &mut Service,
    why: &str,
    now: Instant,
    cfg: &ActivationConfig,
    counters: &mut ActivationCounters,
    out: &mut Vec<Dropped>,
) {
    s.failures += 1;
    s.failure = Some(why.to_owned());
    s.phase = Phase::Idle;
    s.retry_at = Some(now + Duration::from_millis(cfg.restart_delay_ms.into()));
    let items = s.drain();
    log::error!(
        "service {} {why}; {} queued messages dropped",
        s.spec.name,
        items.len()
    );
    counters.dropped += items.len() as u64;
    let text = format!("service {} {why}", s.spec.name);
    out.extend(items.into_iter().map(|item| Dropped {
        item,
        code: ErrorCode::ActivationFailed,
        text: text.clone(),
    }));
}

/// Writes a queued send to the service's spool; on failure it stays in memory only.
fn persist(
    s: &mut Service,
    cfg: &ActivationConfig,
    item: &Queued,
    counters: &mut ActivationCounters,
) -> Option<PathBuf> {
    let root = cfg.spool_dir.as_ref()?;
    if s.spool.is_none() {
        match Spool::open(root.join(&s.spec.name)) {
            Ok(sp) => s.spool = Some(sp),
            Err(e) => {
                counters.spool_errors += 1;
                log::error!("service {}: cannot open its spool: {e}", s.spec.name);
                return None;
            }
        }
    }
    let sp = s.spool.as_mut()?;
    let record = Record {
        channel: item.channel.clone(),
        message: item.message.clone(),
        payload: item.payload.clone(),
        sender: item.sender,
    };
    match sp.write(&record) {
        Ok(path) => {
            counters.spool_written += 1;
            Some(path)
        }
        Err(e) => {
            counters.spool_errors += 1;
            log::error!(
                "service {}: cannot spool a message in {}: {e}; it is kept in memory only",
                s.spec.name,
                sp.dir().display()
            );
            None
        }
    }
}

fn max_file(cfg: &Config) -> u64 {
    cfg.max_payload as u64 + cfg.max_channel_len as u64 + cfg.max_message_len as u64 + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::names::StaticNames;

    fn names() -> StaticNames {
        StaticNames {
            users: vec![("camera".into(), 1500, 44)],
            groups: vec![("video".into(), 44, vec![])],
        }
    }

    fn config(services: &str) -> Config {
        let text =
            format!("activation_timeout_ms = 1000\nactivation_max_queued_messages = 3\n{services}");
        let cfg: Config = basic_toml::from_str(&text).unwrap();
        cfg
    }

    fn activation(services: &str) -> Activation {
        Activation::new(&config(services), "/tmp/x.sock".into(), &names()).unwrap()
    }

    fn msg(channel: &str, n: u8) -> Queued {
        Queued::new(channel, "m(int)", &[n], Credentials::default(), None)
    }

    fn error(services: &str) -> String {
        match Activation::new(&config(services), "/s".into(), &names()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected a configuration error"),
        }
    }

    const TRUE: &str = "[[service]]\nname = \"t\"\nchannel = \"QPE/Application/t\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 5\"]\n";

    #[test]
    fn configuration_is_checked() {
        assert!(
            error("[[service]]\nname = \"a b\"\nchannel = \"c\"\ncommand = [\"/bin/true\"]\n")
                .contains("name must be")
        );
        assert!(
            error("[[service]]\nname = \"a\"\nchannel = \"c\"\ncommand = [\"true\"]\n")
                .contains("absolute path")
        );
        assert!(
            error("[[service]]\nname = \"a\"\nchannel = \"c\"\ncommand = []\n")
                .contains("command is empty")
        );
        assert!(error("[[service]]\nname = \"a\"\nchannel = \"c\"\ncommand = [\"/x\"]\nuser = \"nobody-at-all\"\n")
            .contains("unknown user \"nobody-at-all\""));
        assert!(error(
            "[[service]]\nname = \"a\"\nchannel = \"c\"\ncommand = [\"/x\"]\npersistent = true\n"
        )
        .contains("spool_dir"));
        assert!(error(&format!("{TRUE}{TRUE}")).contains("declared twice"));
        assert!(
            error("[[service]]\nname = \"a\"\nchannel = \"c[*\"\ncommand = [\"/x\"]\n")
                .contains("channel")
        );
        let a = activation("[[service]]\nname = \"cam\"\nchannel = \"QPE/Application/cam*\"\ncommand = [\"/x\"]\nuser = \"camera\"\n");
        assert_eq!(a.find("QPE/Application/camera"), Some(0));
        assert_eq!(a.find("QPE/Other"), None);
        assert_eq!(a.services[0].spec.program.uid, Some(1500));
        assert_eq!(a.services[0].spec.program.gid, Some(44));
    }

    #[test]
    fn queue_is_bounded_and_delivered_in_order_on_subscription() {
        let mut a = activation(TRUE);
        let now = Instant::now();
        for n in 0..3 {
            a.offer(0, msg("QPE/Application/t", n), now).unwrap();
        }
        let e = a.offer(0, msg("QPE/Application/t", 9), now).unwrap_err();
        assert_eq!(e.code, ErrorCode::ActivationQueueFull);
        let info = &a.list()[0];
        assert_eq!(
            (info.state, info.queued, info.starts),
            (ServiceState::Starting, 3, 1)
        );
        assert!(info.pid > 0);
        assert!(
            a.on_subscribe("QPE/Application/*").is_empty(),
            "patterns do not count"
        );
        assert!(a.on_subscribe("QPE/Other").is_empty());
        let got: Vec<u8> = a
            .on_subscribe("QPE/Application/t")
            .iter()
            .map(|q| q.payload[0])
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(a.list()[0].state, ServiceState::Running);
        assert_eq!(
            (
                a.counters.queued,
                a.counters.delivered,
                a.counters.queue_full
            ),
            (3, 3, 1)
        );
        kill(&mut a);
    }

    #[test]
    fn timeout_drops_the_queue_and_tells_callers() {
        let mut a = activation(TRUE);
        let now = Instant::now();
        let call = QueuedCall {
            caller: 1,
            caller_id: 7,
            seq: 3,
            deadline: now + Duration::from_secs(60),
        };
        a.offer(0, msg("QPE/Application/t", 1), now).unwrap();
        a.offer(
            0,
            Queued::new(
                "QPE/Application/t",
                "c()",
                &[],
                Credentials::default(),
                Some(call),
            ),
            now,
        )
        .unwrap();
        assert_eq!(a.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(a.expire(now + Duration::from_millis(999)).is_empty());
        let dropped = a.expire(now + Duration::from_millis(1000));
        assert_eq!(dropped.len(), 2);
        assert!(dropped
            .iter()
            .all(|d| d.code == ErrorCode::ActivationFailed));
        assert_eq!(dropped[1].item.call, Some(call));
        assert!(
            dropped[0].text.contains("did not subscribe within 1000 ms"),
            "{}",
            dropped[0].text
        );
        let info = &a.list()[0];
        assert_eq!(
            (info.state, info.queued, info.failures),
            (ServiceState::Failed, 0, 1)
        );
        assert_eq!((a.counters.timeouts, a.counters.dropped), (1, 2));
        // Within the restart delay (1000 ms after the timeout) messages are refused, although
        // the program still runs.
        let refused = a
            .offer(
                0,
                msg("QPE/Application/t", 2),
                now + Duration::from_millis(1500),
            )
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ActivationFailed);
        assert!(
            refused.text.contains("next start attempt in 500 ms"),
            "{}",
            refused.text
        );
        assert_eq!(a.list()[0].queued, 0);
        // After it, the next message waits for the program again, without a new start.
        a.offer(0, msg("QPE/Application/t", 2), now + Duration::from_secs(2))
            .unwrap();
        assert_eq!(a.list()[0].starts, 1);
        kill(&mut a);
    }

    #[test]
    fn a_queued_call_times_out_on_its_own() {
        let mut a = activation(TRUE);
        let now = Instant::now();
        let call = QueuedCall {
            caller: 1,
            caller_id: 7,
            seq: 3,
            deadline: now + Duration::from_millis(100),
        };
        a.offer(
            0,
            Queued::new(
                "QPE/Application/t",
                "c()",
                &[],
                Credentials::default(),
                Some(call),
            ),
            now,
        )
        .unwrap();
        a.offer(0, msg("QPE/Application/t", 1), now).unwrap();
        assert_eq!(a.next_deadline(), Some(now + Duration::from_millis(100)));
        let dropped = a.expire(now + Duration::from_millis(100));
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].code, ErrorCode::Timeout);
        assert_eq!(a.list()[0].queued, 1);
        kill(&mut a);
    }

    #[test]
    fn a_program_that_cannot_start_fails_and_waits_before_retrying() {
        let mut a = activation(
            "[[service]]\nname = \"x\"\nchannel = \"x\"\ncommand = [\"/nonexistent/qcop-app\"]\n",
        );
        let now = Instant::now();
        let e = a.offer(0, msg("x", 1), now).unwrap_err();
        assert_eq!(e.code, ErrorCode::ActivationFailed);
        assert!(
            e.text.contains("cannot start /nonexistent/qcop-app"),
            "{}",
            e.text
        );
        let e = a
            .offer(0, msg("x", 2), now + Duration::from_millis(10))
            .unwrap_err();
        assert!(e.text.contains("next start attempt in"), "{}", e.text);
        assert_eq!(a.list()[0].state, ServiceState::Failed);
        assert_eq!(
            (a.counters.failures, a.counters.dropped, a.counters.starts),
            (1, 2, 0)
        );
    }

    #[test]
    fn an_exit_before_subscribing_is_a_failure() {
        let mut a = activation("[[service]]\nname = \"f\"\nchannel = \"f\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n");
        let now = Instant::now();
        a.offer(0, msg("f", 1), now).unwrap();
        let start = Instant::now();
        let dropped = loop {
            let d = a.reap(now);
            if !d.is_empty() {
                break d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the program did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(dropped.len(), 1);
        assert!(
            dropped[0]
                .text
                .contains("exited before subscribing (exit status: 3)"),
            "{}",
            dropped[0].text
        );
        assert_eq!(a.list()[0].state, ServiceState::Failed);
    }

    fn kill(a: &mut Activation) {
        for s in &mut a.services {
            if let Some(pid) = s.child.take() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
    }
}
