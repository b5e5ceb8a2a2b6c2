//! The event loop's side of the access policy, sender credentials and monitors.
//!
//! - Policy: every send, call, subscription and monitor request is checked against the
//!   compiled [`Policy`]; a refusal is a non-fatal `Denied` error naming the rule, counted
//!   and logged (at most [`LOG_BURST`] lines per [`LOG_WINDOW`]). Deliveries to clients the
//!   policy filters are checked one by one (a pattern may match channels the client may not
//!   receive). A reload recompiles the rules and drops the subscriptions they now deny,
//!   telling each client with a `Revoked` frame; a monitor no longer allowed is closed.
//! - Credentials: a subscription made with the credentials flag gets matching messages
//!   with the sender's pid, uid and gid as the daemon saw them (`SO_PEERCRED`). Each message
//!   is encoded at most twice per delivery, once per flavour, and shared by the recipients.
//! - Monitors: a connection that asked to monitor receives a `Monitored` copy of every send,
//!   call and reply (filtered by its patterns and the policy). It is no subscriber: it is
//!   not counted by `IsRegistered` or `ListChannels`, never receives calls, and cannot send,
//!   so it cannot start services. Its queue always drops its oldest frames when full
//!   (counted as `monitor_dropped`), and its bytes are kept out of the daemon-wide budget,
//!   so a slow monitor never causes a drop for anyone else.

use super::{Client, Server, Slot};
use crate::daemon::config::{Config, ConfigError};
use crate::daemon::names::SystemNames;
use crate::daemon::policy::{Action, ClientView, Denial, LogLimiter, Policy, PolicyCounters};
use crate::pattern::{check_name, is_pattern, Pattern};
use crate::wire::{Credentials, ErrorCode, Frame, MonitorEvent};
use std::time::{Duration, Instant};

/// Denials logged per window before the rest are only counted.
const LOG_BURST: u32 = 20;
/// The logging window.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Daemon-wide policy and monitor state.
pub(in crate::daemon) struct Access {
    pub(super) policy: Policy,
    counters: PolicyCounters,
    log: LogLimiter,
    /// Slots of the monitor connections.
    pub(super) monitors: Vec<Slot>,
    /// Bytes queued for monitors (kept out of the daemon-wide budget).
    pub(super) monitor_queued: u64,
    monitor_events: u64,
    monitor_dropped: u64,
    /// The daemon's own credentials, for the notices it publishes.
    pub(super) daemon: Credentials,
}

impl Access {
    pub(super) fn new(cfg: &Config) -> Result<Access, ConfigError> {
        let daemon = Credentials {
            pid: std::process::id(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        let policy = Policy::compile(
            cfg.policy.as_deref(),
            &cfg.policy_default,
            &SystemNames,
            daemon.uid,
        )?;
        if policy.is_configured() {
            log::info!("access policy: {policy:?}");
        }
        Ok(Access {
            policy,
            counters: PolicyCounters::default(),
            log: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            monitors: Vec::new(),
            monitor_queued: 0,
            monitor_events: 0,
            monitor_dropped: 0,
            daemon,
        })
    }

    /// The state of a new client with these credentials.
    pub(super) fn client(&self, uid: u32, gid: u32) -> ClientAccess {
        ClientAccess {
            view: self.policy.view(uid, gid),
            cred_subs: Vec::new(),
            monitor: None,
        }
    }
}

/// A channel or pattern, as a subscription name matched against channels.
enum Name {
    Exact(Box<str>),
    Glob(Box<str>, Pattern),
}

impl Name {
    fn new(name: &str) -> Option<Name> {
        if is_pattern(name) {
            Pattern::new(name).ok().map(|p| Name::Glob(name.into(), p))
        } else {
            Some(Name::Exact(name.into()))
        }
    }

    fn text(&self) -> &str {
        match self {
            Name::Exact(t) | Name::Glob(t, _) => t,
        }
    }

    fn matches(&self, channel: &str) -> bool {
        match self {
            Name::Exact(t) => **t == *channel,
            Name::Glob(_, p) => p.matches(channel),
        }
    }
}

/// Per-client policy view, credential subscriptions and monitor state.
pub(in crate::daemon) struct ClientAccess {
    view: ClientView,
    /// Subscriptions made with the credentials flag.
    cred_subs: Vec<Name>,
    /// `Some` once the connection is a monitor: its patterns (empty: everything).
    monitor: Option<Vec<Name>>,
}

impl ClientAccess {
    pub(super) fn is_monitor(&self) -> bool {
        self.monitor.is_some()
    }

    /// Messages on `name` are to carry the sender's credentials.
    pub(super) fn want_credentials(&mut self, name: &str) {
        if !self.cred_subs.iter().any(|n| n.text() == name) {
            if let Some(n) = Name::new(name) {
                self.cred_subs.push(n);
            }
        }
    }

    /// The subscription `name` is gone.
    pub(super) fn forget_credentials(&mut self, name: &str) {
        self.cred_subs.retain(|n| n.text() != name);
    }

    fn wants_credentials(&self, channel: &str) -> bool {
        self.cred_subs.iter().any(|n| n.matches(channel))
    }
}

/// A message being delivered.
pub(super) struct Delivery<'a> {
    /// Call token, 0 for a plain message.
    pub token: u32,
    pub sender: Credentials,
    pub channel: &'a str,
    pub message: &'a str,
    pub payload: &'a [u8],
    /// `channel`, `message` and `payload` as the sender encoded them (a `Send` body), when
    /// the message came from a client: the `Message` frame reuses them.
    pub fields: Option<&'a [u8]>,
}

impl<'a> Delivery<'a> {
    /// Appends the `Message` frame, with or without the sender's credentials.
    fn encode(&self, out: &mut Vec<u8>, with_credentials: bool) {
        let sender = with_credentials.then_some(self.sender);
        match self.fields {
            Some(fields) => {
                Frame::encode_message_fields(out, self.token, self.token != 0, fields, sender)
            }
            None => Frame::Message {
                token: self.token,
                call: self.token != 0,
                channel: self.channel,
                message: self.message,
                payload: self.payload,
                sender,
            }
            .encode(out),
        }
    }
}

impl Server {
    /// The credentials of the client in `slot`.
    pub(super) fn credentials(&self, slot: Slot) -> Credentials {
        self.clients
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(Credentials::default(), |c| Credentials {
                pid: c.pid,
                uid: c.uid,
                gid: c.gid,
            })
    }

    /// May the client send (or be delivered) `message` on `channel`?
    pub(super) fn may(
        &self,
        slot: Slot,
        action: Action,
        channel: &str,
        message: &str,
    ) -> Result<(), Denial> {
        match self.clients.get(slot).and_then(Option::as_ref) {
            Some(c) => self
                .access
                .policy
                .check(&c.access.view, action, channel, message),
            None => Ok(()),
        }
    }

    /// May the client subscribe to (or monitor) `name`?
    pub(super) fn may_subscribe(
        &self,
        slot: Slot,
        action: Action,
        name: &str,
    ) -> Result<(), Denial> {
        match self.clients.get(slot).and_then(Option::as_ref) {
            Some(c) => self
                .access
                .policy
                .check_subscription(&c.access.view, action, name),
            None => Ok(()),
        }
    }

    /// Refuses a request with `Denied`: `what` (`send to "x"`) followed by the policy's text.
    pub(super) fn deny(&mut self, slot: Slot, seq: u32, action: Action, what: &str, text: &str) {
        let c = &mut self.access.counters;
        match action {
            Action::Send => c.denied_send += 1,
            Action::Receive => c.denied_receive += 1,
            Action::Monitor => c.denied_monitor += 1,
        }
        let full = format!("{what} {text}");
        self.log_denial(slot, &full);
        self.reject(slot, seq, ErrorCode::Denied, &full);
    }

    fn log_denial(&mut self, slot: Slot, text: &str) {
        let summary = |n: u64| log::warn!("{n} more policy denials were not logged");
        if self.access.log.allow(Instant::now(), summary) {
            let who = self.credentials(slot);
            log::warn!(
                "client {} (pid {}, uid {}, gid {}): {text}",
                self.client_id(slot),
                who.pid,
                who.uid,
                who.gid
            );
        }
    }

    /// Whether the policy lets client `c` be delivered `message` on `channel`.
    pub(super) fn receives(&self, c: &Client, channel: &str, message: &str) -> bool {
        let policy = &self.access.policy;
        !policy.filters_deliveries(&c.access.view)
            || policy
                .check(&c.access.view, Action::Receive, channel, message)
                .is_ok()
    }

    /// Queues `m` for each recipient the policy lets receive it, with credentials for
    /// those that asked; returns how many got it and adds their ids to `reached`.
    pub(super) fn deliver(
        &mut self,
        recipients: &[Slot],
        m: &Delivery<'_>,
        mut reached: Option<&mut Vec<u32>>,
    ) -> u32 {
        // Each flavour is encoded once, on first use, and copied into each receiver's queue.
        let mut plain = std::mem::take(&mut self.enc);
        let mut signed = std::mem::take(&mut self.enc_signed);
        plain.clear();
        signed.clear();
        // Without a policy nobody's deliveries are filtered: no test per recipient.
        let filtering = self.access.policy.is_configured();
        let mut n = 0;
        for &r in recipients {
            let Some(c) = self.clients.get(r).and_then(Option::as_ref) else {
                continue;
            };
            if filtering && !self.receives(c, m.channel, m.message) {
                self.access.counters.filtered += 1;
                continue;
            }
            let with_credentials = c.access.wants_credentials(m.channel);
            let id = c.id;
            let frame = if with_credentials {
                &mut signed
            } else {
                &mut plain
            };
            if frame.is_empty() {
                m.encode(frame, with_credentials);
            }
            if self.enqueue(r, frame) {
                n += 1;
                if let Some(ids) = reached.as_deref_mut() {
                    ids.push(id);
                }
            }
        }
        self.enc = plain;
        self.enc_signed = signed;
        n
    }

    // ----- monitors ----------------------------------------------------------------------

    pub(super) fn is_monitor(&self, slot: Slot) -> bool {
        self.clients
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.access.is_monitor())
    }

    /// Handles `Monitor`: checks the policy for each pattern and turns the connection into
    /// a monitor.
    pub(super) fn start_monitor(&mut self, slot: Slot, seq: u32, patterns: &[&str]) {
        let Some(c) = self.clients.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if !c.subscriptions.is_empty() {
            let text = "a connection with subscriptions cannot become a monitor; \
                        monitor on a connection of its own";
            return self.reject(slot, seq, ErrorCode::MonitorConnection, text);
        }
        let already = c.access.is_monitor();
        let max = self.cfg.max_monitors as usize;
        if !already && self.access.monitors.len() >= max {
            let text = format!("at most {max} monitors may be connected (max_monitors)");
            return self.reject(slot, seq, ErrorCode::TooManyMonitors, &text);
        }
        let max_patterns = self.cfg.max_subscriptions_per_client as usize;
        if patterns.len() > max_patterns {
            let text = format!("a monitor may watch at most {max_patterns} patterns");
            return self.reject(slot, seq, ErrorCode::TooManySubscriptions, &text);
        }
        let mut watches = Vec::with_capacity(patterns.len());
        for p in patterns {
            let valid = check_name(p, self.cfg.max_channel_len as usize)
                .map_err(|e| e.to_string())
                .and_then(|()| Name::new(p).ok_or_else(|| "invalid pattern".to_owned()));
            match valid {
                Ok(w) => watches.push(w),
                Err(e) => {
                    return self.reject(slot, seq, ErrorCode::BadName, &format!("{p:?}: {e}"))
                }
            }
        }
        let all = ["*"];
        let names: &[&str] = if patterns.is_empty() { &all } else { patterns };
        for p in names {
            if let Err(d) = self.may_subscribe(slot, Action::Monitor, p) {
                let what = format!("monitor of {p:?}");
                return self.deny(slot, seq, Action::Monitor, &what, &d.text);
            }
        }
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.access.monitor = Some(watches);
        let (id, pid, uid) = (c.id, c.pid, c.uid);
        if !already {
            // Bytes queued so far move to the monitors' account.
            let bytes = c.out.bytes() as i64;
            self.adjust_queued(false, -bytes);
            self.adjust_queued(true, bytes);
            self.access.monitors.push(slot);
        }
        log::info!(
            "client {id} (pid {pid}, uid {uid}) monitors {}",
            if patterns.is_empty() {
                "all traffic".to_owned()
            } else {
                patterns.join(" ")
            }
        );
        self.reply(slot, &Frame::Ok { seq, value: 0 });
    }

    /// Gives every monitor that may see it a copy of a send, call or reply.
    pub(super) fn monitor(
        &mut self,
        event: MonitorEvent,
        token: u32,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) {
        let mut frame = std::mem::take(&mut self.enc);
        frame.clear();
        for i in 0..self.access.monitors.len() {
            let slot = self.access.monitors[i];
            let Some(c) = self.clients.get(slot).and_then(Option::as_ref) else {
                continue;
            };
            let watches = c.access.monitor.as_deref().unwrap_or_default();
            if !watches.is_empty() && !watches.iter().any(|w| w.matches(channel)) {
                continue;
            }
            let policy = &self.access.policy;
            if policy.filters_deliveries(&c.access.view)
                && policy
                    .check(&c.access.view, Action::Monitor, channel, message)
                    .is_err()
            {
                continue;
            }
            if frame.is_empty() {
                Frame::Monitored {
                    token,
                    event,
                    sender,
                    channel,
                    message,
                    payload,
                }
                .encode(&mut frame);
            }
            self.enqueue_monitor(slot, &frame);
        }
        self.enc = frame;
    }

    /// A monitor's queue drops its own oldest frames when full, whatever `slow_consumer`
    /// says, and is not charged to the daemon-wide budget.
    fn enqueue_monitor(&mut self, slot: Slot, frame: &[u8]) {
        let limit = self.cfg.max_queue_bytes as usize;
        self.flush_if_near_full(slot, frame.len());
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.closing {
            return;
        }
        let p = c.out.push_drop_oldest(frame, limit);
        c.dropped += p.dropped;
        self.access.monitor_dropped += p.dropped;
        if p.queued {
            c.delivered += 1;
            self.access.monitor_events += 1;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(slot);
        }
        self.adjust_queued(true, p.delta);
    }

    // ----- reload and stats --------------------------------------------------------------

    /// After a configuration reload: new rules, new views, and subscriptions (and monitors)
    /// that the new rules deny are dropped.
    pub(super) fn reload_access(&mut self) {
        let policy = match Policy::compile(
            self.cfg.policy.as_deref(),
            &self.cfg.policy_default,
            &SystemNames,
            self.access.daemon.uid,
        ) {
            Ok(p) => p,
            Err(e) => {
                log::error!("access policy not reloaded, keeping the previous rules: {e}");
                return;
            }
        };
        log::info!("access policy: {policy:?}");
        self.access.policy = policy;
        for slot in 0..self.clients.len() {
            let Some(c) = self.clients[slot].as_mut() else {
                continue;
            };
            c.access.view = self.access.policy.view(c.uid, c.gid);
            let (view, policy) = (&c.access.view, &self.access.policy);
            if let Some(watches) = &c.access.monitor {
                let names: Vec<&str> = if watches.is_empty() {
                    vec!["*"]
                } else {
                    watches.iter().map(Name::text).collect()
                };
                let denied = names
                    .iter()
                    .find_map(|n| policy.check_subscription(view, Action::Monitor, n).err());
                if let Some(d) = denied {
                    self.access.counters.revoked += 1;
                    let text = format!("monitor permission withdrawn by a reload: {}", d.text);
                    self.log_denial(slot, &text);
                    self.fatal(slot, ErrorCode::Denied, &text);
                }
                continue;
            }
            let revoked: Vec<(Box<str>, String)> = c
                .subscriptions
                .iter()
                .filter_map(|name| {
                    policy
                        .check_subscription(view, Action::Receive, name)
                        .err()
                        .map(|d| (name.clone(), d.text))
                })
                .collect();
            for (name, text) in revoked {
                let why = super::Removal::Revoked { text: &text };
                self.remove_subscriptions(slot, &[name], why);
            }
        }
    }

    /// Tells a client that a subscription the policy no longer allows was dropped (by
    /// `Server::remove_subscriptions`).
    pub(super) fn tell_revoked(&mut self, slot: Slot, name: &str, text: &str) {
        self.access.counters.revoked += 1;
        let reason = format!("subscription to {name:?} revoked: {text}");
        self.log_denial(slot, &reason);
        self.reply(
            slot,
            &Frame::Revoked {
                channel: name,
                reason: &reason,
            },
        );
    }

    /// Appends the policy and monitor counters to a stats report.
    pub(super) fn append_access_stats(&self, rows: &mut Vec<(String, u64)>) {
        let a = &self.access;
        rows.extend(
            a.counters
                .report()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v)),
        );
        for (k, v) in [
            ("monitors", a.monitors.len() as u64),
            ("monitor_events", a.monitor_events),
            ("monitor_dropped", a.monitor_dropped),
            ("monitor_bytes_queued", a.monitor_queued),
        ] {
            rows.push((k.to_owned(), v));
        }
    }
}
