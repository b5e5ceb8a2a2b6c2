//! Running a chain of commands on one connection.

use crate::args::{self, Command, Format, Global, Msg, Step, Timeout};
use crate::output::{self, Align, Out, View};
use crate::Failure;
use qcop::client::ServiceState;
use qcop::datastream::{self, Signature};
use qcop::pattern::{self, Pattern};
use qcop::shm::{Policy, Publisher, StreamError, StreamOptions, Subscriber};
use qcop::shm::{SharedMemory, ShmError};
use qcop::wire::ErrorCode;
use qcop::{ConnectOptions, Connection, Error, Message};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Reply timeout of `call` when neither `--timeout` nor a modifier gives one.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5000);
/// Messages kept for later waits of a chain; beyond this the oldest is discarded.
const MAX_HELD: usize = 1024;
/// Longest a receive waits before checking for subscriptions the daemon revoked.
const REVOCATION_CHECK: Duration = Duration::from_millis(500);
/// How long `query` collects answers without a `timeout` modifier, as the original.
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_millis(1000);
/// The introspection request of Qt Extended adaptors: (prefix, reply channel).
const QUERY_MESSAGE: &str = "__query_qcop_messages(QString,QString)";
/// Each answer to [`QUERY_MESSAGE`]: one supported message.
const QUERY_RESPONSE: &str = "queryResponse(QString)";

/// Connects and runs `steps` in order, stopping at the first failure.
pub fn run(global: &Global, steps: &[Step], out: &mut Out) -> Result<(), Failure> {
    if steps.is_empty() {
        // Only modifiers, `enum`s or empty commands: nothing to do, as in the original.
        return Ok(());
    }
    let mut opts = ConnectOptions::new();
    if let Some(path) = &global.socket {
        opts = opts.socket(path);
    }
    if let Some(t) = global.connect_timeout {
        opts = opts.timeout(t);
    }
    let mut conn = Connection::connect(&opts)?;
    let steps = resolve_services(&mut conn, steps)?;
    let steps = &steps[..];
    let mut session = Session::start(conn, steps, out, &global.enums)?;
    for (index, step) in steps.iter().enumerate() {
        session.run_step(index, step)?;
    }
    Ok(())
}

/// Selects messages by channel (exact or pattern) and optionally by signature.
struct Matcher {
    channel: ChannelMatch,
    /// Normalized signature; `None` matches any message.
    message: Option<String>,
}

enum ChannelMatch {
    Exact(String),
    Pattern(Pattern),
}

/// With the `service` modifier, channel names are service names: each becomes the channel
/// of that service (as `qcop services` lists them).
fn resolve_services(conn: &mut Connection, steps: &[Step]) -> Result<Vec<Step>, Failure> {
    let mut steps = steps.to_vec();
    if !steps.iter().any(|s| s.service) {
        return Ok(steps);
    }
    let services = conn.services()?;
    let channel_of = |name: &str| {
        services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.channel.clone())
            .ok_or_else(|| {
                Failure::Error(format!(
                    "no service named {name:?} (see qcop services or qcop list)"
                ))
            })
    };
    for step in steps.iter_mut().filter(|s| s.service) {
        match &mut step.command {
            Command::Send { channel, .. }
            | Command::Wait { channel, .. }
            | Command::Query { channel, .. } => *channel = channel_of(channel)?,
            Command::Watch { channels, .. } => {
                for c in channels.iter_mut() {
                    *c = channel_of(c)?;
                }
            }
            _ => {}
        }
    }
    Ok(steps)
}

impl Matcher {
    fn new(channel: &str, message: Option<&str>) -> Matcher {
        let channel = match pattern::is_pattern(channel).then(|| Pattern::new(channel)) {
            Some(Ok(p)) => ChannelMatch::Pattern(p),
            // The parser has refused patterns that do not compile.
            Some(Err(_)) | None => ChannelMatch::Exact(channel.to_owned()),
        };
        Matcher {
            channel,
            message: message.map(str::to_owned),
        }
    }

    fn matches(&self, msg: &Message) -> bool {
        let channel = match &self.channel {
            ChannelMatch::Exact(c) => *c == msg.channel,
            ChannelMatch::Pattern(p) => p.matches(&msg.channel),
        };
        channel
            && self.message.as_ref().map_or(true, |wanted| {
                // Senders should normalize, but compare what they meant.
                match datastream::parse_signature_lenient(&msg.message) {
                    Ok((normalized, _)) => normalized == *wanted,
                    Err(_) => msg.message == *wanted,
                }
            })
    }
}

struct Session<'o> {
    conn: Connection,
    out: &'o mut Out,
    /// The waits of the chain, by step index, for keeping messages that arrive early.
    waits: Vec<(usize, Matcher)>,
    /// Messages received by earlier commands that a later wait asks for.
    held: VecDeque<Message>,
    /// `conn.lost()` already reported.
    lost_reported: u64,
    /// Type names declared with `enum`.
    enums: &'o [String],
}

impl<'o> Session<'o> {
    /// Prepares to run `steps`, subscribing the channel of every wait before anything is
    /// sent, so that a reply to an earlier send cannot arrive before anyone listens for it.
    fn start(
        conn: Connection,
        steps: &[Step],
        out: &'o mut Out,
        enums: &'o [String],
    ) -> Result<Session<'o>, Failure> {
        let mut waits = Vec::new();
        let mut channels = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            if let Command::Wait { channel, message } = &step.command {
                waits.push((i, Matcher::new(channel, Some(&message.text))));
                channels.insert(channel.as_str());
            }
        }
        let mut session = Session {
            lost_reported: conn.lost(),
            conn,
            out,
            waits,
            held: VecDeque::new(),
            enums,
        };
        for channel in channels {
            session.conn.subscribe(channel)?;
        }
        Ok(session)
    }

    fn view(&self, step: &Step) -> View<'o> {
        View {
            format: step.format,
            hex: step.hex,
            enums: self.enums,
        }
    }

    fn run_step(&mut self, index: usize, step: &Step) -> Result<(), Failure> {
        let view = self.view(step);
        match &step.command {
            Command::Query { channel, prefix } => self.query(index, channel, prefix, step.timeout),
            Command::List => self.list(),
            Command::Send {
                channel,
                message,
                payload,
            } => {
                self.conn.send(channel, &message.text, payload)?;
                // Surfaces the daemon's refusal, if any, before reporting success.
                self.conn.flush()?;
                Ok(())
            }
            Command::Watch {
                channels,
                idle,
                count,
                credentials,
                shm: false,
            } => self.watch(
                index,
                channels,
                *count,
                *credentials,
                (time_limit(step.timeout), *idle),
                view,
            ),
            Command::Watch {
                channels,
                idle,
                count,
                shm: true,
                ..
            } => self.watch_shm(
                &channels[0],
                *count,
                idle.or(time_limit(step.timeout)),
                view,
            ),
            Command::ShmSend {
                channel,
                message,
                args,
                count,
                interval,
                slot_size,
                slots,
                lossy,
                subscribers,
            } => {
                let stream = StreamOptions::new().slots(*slots).policy(if *lossy {
                    Policy::Lossy
                } else {
                    Policy::Lossless
                });
                let send = ShmSend {
                    channel,
                    message,
                    args,
                    count: *count,
                    interval: *interval,
                    slot_size: *slot_size,
                    subscribers: *subscribers,
                };
                self.shm_send(&send, stream, time_limit(step.timeout))
            }
            Command::Monitor { patterns, count } => {
                self.monitor(patterns, *count, time_limit(step.timeout), view)
            }
            Command::Services => self.services(),
            Command::Wait { channel, message } => {
                self.wait(index, channel, message, time_limit(step.timeout), view)
            }
            Command::Registered { channel } => self.registered(channel),
            Command::Channels => self.channels(),
            Command::Stats { clients } => self.stats(*clients),
            Command::Call {
                channel,
                message,
                payload,
            } => self.call(channel, message, payload, step.timeout, view),
            Command::Serve {
                channel,
                message,
                reply,
                payload,
                count,
            } => self.serve(index, channel, message, reply, payload, *count, view),
            Command::ShmList => self.shm_list(),
            Command::ShmWrite {
                name,
                offset,
                data,
                create,
                persistent,
                mode,
            } => {
                let b = SharedMemory::builder(name).connect_options(self.conn.options().clone());
                let mut shm = match create {
                    Some(size) => b
                        .size(*size)
                        .persistent(*persistent)
                        .mode(*mode)
                        .create_or_attach(),
                    None => b.attach(),
                }
                .map_err(|e| shm_failure(name, e))?;
                let mut guard = shm.lock().map_err(|e| shm_failure(name, e))?;
                warn_owner_died(name, guard.previous_owner_died());
                guard
                    .write(*offset, data)
                    .map_err(|e| shm_failure(name, e))?;
                drop(guard);
                shm.detach().map_err(|e| shm_failure(name, e))
            }
            Command::ShmRead { name, offset, len } => {
                let mut shm = SharedMemory::builder(name)
                    .connect_options(self.conn.options().clone())
                    .read_only()
                    .attach()
                    .map_err(|e| shm_failure(name, e))?;
                if offset
                    .checked_add(*len)
                    .map_or(true, |end| end > shm.size())
                {
                    return Err(Failure::Error(format!(
                        "segment {name:?}: {len} bytes at offset {offset} run past its {} bytes",
                        shm.size()
                    )));
                }
                let mut buf = vec![0u8; *len];
                let guard = shm.lock().map_err(|e| shm_failure(name, e))?;
                warn_owner_died(name, guard.previous_owner_died());
                guard
                    .read(*offset, &mut buf)
                    .map_err(|e| shm_failure(name, e))?;
                drop(guard);
                self.out.line(&format!("0x{}", datastream::hex(&buf)))?;
                shm.detach().map_err(|e| shm_failure(name, e))
            }
            Command::ShmLock { name, hold } => {
                let mut shm = SharedMemory::builder(name)
                    .connect_options(self.conn.options().clone())
                    .read_only()
                    .attach()
                    .map_err(|e| shm_failure(name, e))?;
                let guard = shm.lock().map_err(|e| shm_failure(name, e))?;
                warn_owner_died(name, guard.previous_owner_died());
                self.out.line(&format!("locked {name}"))?;
                match hold {
                    Some(d) => std::thread::sleep(*d),
                    // Until interrupted; the daemon then hands the lock on as owner-died.
                    None => loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    },
                }
                drop(guard);
                shm.detach().map_err(|e| shm_failure(name, e))
            }
            Command::ShmRemove { name, semaphore } => {
                self.conn.shm_remove(name, *semaphore).map_err(|e| {
                    let what = if *semaphore { "semaphore" } else { "segment" };
                    Failure::Error(format!(
                        "cannot remove {what} {name:?}: {}",
                        ShmError::from(e)
                    ))
                })
            }
        }
    }

    /// The next message, waiting until `deadline` (`None`: forever); reports messages the
    /// daemon dropped for us on stderr. Fails when the daemon revoked every subscription
    /// (its access policy changed), since nothing more can arrive.
    fn receive(&mut self, deadline: Option<Instant>) -> Result<Option<Message>, Failure> {
        loop {
            let slice = match deadline {
                None => REVOCATION_CHECK,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(REVOCATION_CHECK),
            };
            let msg = self.conn.recv_timeout(slice)?;
            let lost = self.conn.lost();
            if lost > self.lost_reported {
                output::warn(&format!("# lost {} messages", lost - self.lost_reported));
                self.lost_reported = lost;
            }
            let revoked = self.conn.take_revoked();
            for r in &revoked {
                output::warn(&format!("# {}", r.reason));
            }
            if !revoked.is_empty() && self.conn.subscriptions().next().is_none() {
                return Err(Failure::Error(
                    "the daemon revoked every subscription (access policy changed)".into(),
                ));
            }
            if msg.is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(msg);
            }
        }
    }

    /// Keeps a message that the current command does not want if a later wait does.
    fn hold(&mut self, current: usize, msg: Message) {
        let wanted = self
            .waits
            .iter()
            .any(|(i, m)| *i > current && m.matches(&msg));
        if !wanted {
            return;
        }
        if self.held.len() == MAX_HELD {
            self.held.pop_front();
            output::warn(&format!(
                "# discarded a message held for a later wait (at most {MAX_HELD} are kept)"
            ));
        }
        self.held.push_back(msg);
    }

    fn watch(
        &mut self,
        index: usize,
        channels: &[String],
        count: Option<u64>,
        credentials: bool,
        (limit, idle): (Option<Duration>, Option<Duration>),
        view: View<'_>,
    ) -> Result<(), Failure> {
        let matchers: Vec<Matcher> = channels.iter().map(|c| Matcher::new(c, None)).collect();
        for channel in channels {
            if credentials {
                self.conn.subscribe_with_credentials(channel)?;
            } else {
                self.conn.subscribe(channel)?;
            }
        }
        let mut printed = 0u64;
        // The `timeout` modifier counts from the start, however busy the channels are;
        // --timeout counts from the last message.
        let end = limit.and_then(deadline_after);
        let mut quiet = idle.and_then(deadline_after);
        while count.map_or(true, |n| printed < n) {
            let deadline = match (end, quiet) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(msg) = self.receive(deadline)? else {
                return Ok(()); // a time limit is over: done
            };
            if !matchers.iter().any(|m| m.matches(&msg)) {
                // Subscribed for a later wait of the chain.
                self.hold(index, msg);
                continue;
            }
            self.out.line(&output::message_line(&msg, view))?;
            printed += 1;
            quiet = idle.and_then(deadline_after);
        }
        Ok(())
    }

    fn wait(
        &mut self,
        index: usize,
        channel: &str,
        message: &Msg,
        limit: Option<Duration>,
        view: View<'_>,
    ) -> Result<(), Failure> {
        let target = Matcher::new(channel, Some(&message.text));
        let early = self.held.iter().position(|m| target.matches(m));
        let msg = match early.and_then(|pos| self.held.remove(pos)) {
            Some(msg) => msg,
            None => {
                let deadline = limit.and_then(deadline_after);
                loop {
                    match self.receive(deadline)? {
                        Some(msg) if target.matches(&msg) => break msg,
                        Some(msg) => self.hold(index, msg),
                        None => {
                            return Err(Failure::Error(format!(
                                "timed out waiting for {channel} {message}"
                            )))
                        }
                    }
                }
            }
        };
        self.out
            .text(&output::wait_text(&msg.message, &msg.data, view))
    }

    /// `query`: asks the channel's adaptor for its messages on a private reply channel and
    /// prints each answer once, until the time limit (1 s unless a modifier says otherwise).
    fn query(
        &mut self,
        index: usize,
        channel: &str,
        prefix: &str,
        timeout: Timeout,
    ) -> Result<(), Failure> {
        let reply = format!("QPE/Query/{}", datastream::uuid_text(&random_uuid()));
        self.conn.subscribe(&reply)?;
        let mut payload = Vec::new();
        datastream::Value::QString(Some(prefix.to_owned())).encode(&mut payload);
        datastream::Value::QString(Some(reply.clone())).encode(&mut payload);
        self.conn.send(channel, QUERY_MESSAGE, &payload)?;
        self.conn.flush()?;
        let deadline = match timeout {
            Timeout::Default => deadline_after(DEFAULT_QUERY_TIMEOUT),
            Timeout::Never => None,
            Timeout::After(d) => deadline_after(d),
        };
        let mut seen = BTreeSet::new();
        while let Some(msg) = self.receive(deadline)? {
            if msg.channel != reply || msg.message != QUERY_RESPONSE {
                self.hold(index, msg);
                continue;
            }
            let text = match datastream::decode_message(&[datastream::ArgType::QString], &msg.data)
                .values
                .first()
            {
                Some(datastream::Value::QString(Some(s))) => s.clone(),
                _ => continue,
            };
            if seen.insert(text.clone()) {
                self.out.line(&text)?;
            }
        }
        self.conn.unsubscribe(&reply)?;
        Ok(())
    }

    /// `list`: every service and its channel, tab-separated, as the original listed them.
    fn list(&mut self) -> Result<(), Failure> {
        let mut text = String::new();
        for s in self.conn.services()? {
            let channel = if s.channel.is_empty() {
                "no mapping"
            } else {
                &s.channel
            };
            text.push_str(&format!("{}\t{channel}\n", s.name));
        }
        self.out.text(&text)
    }

    fn registered(&mut self, channel: &str) -> Result<(), Failure> {
        let (local, remote) = self.conn.registered_counts(channel)?;
        if local == 0 && remote == 0 {
            self.out.line(&format!("{channel} is not registered"))?;
            return Err(Failure::Negative);
        }
        self.out.line(&format!(
            "{channel} is registered ({})",
            output::where_subscribed(local, remote)
        ))
    }

    fn channels(&mut self) -> Result<(), Failure> {
        let list = self.conn.channels()?;
        let header = ["NAME", "LOCAL", "REMOTE", "KIND"];
        let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
        for c in list {
            let kind = if c.pattern { "pattern" } else { "channel" };
            rows.push(vec![
                c.name,
                c.subscribers.to_string(),
                c.remote.to_string(),
                kind.into(),
            ]);
        }
        self.print_rows(
            &rows,
            &[Align::Left, Align::Right, Align::Right, Align::Left],
        )
    }

    fn stats(&mut self, clients: bool) -> Result<(), Failure> {
        let report = self.conn.stats(clients)?;
        let rows: Vec<Vec<String>> = report
            .counters
            .into_iter()
            .map(|(name, value)| vec![name, value.to_string()])
            .collect();
        self.print_rows(&rows, &[Align::Left, Align::Right])?;
        if clients {
            self.clients_table(report.clients)?;
        }
        if !report.links.is_empty() {
            self.out.line("")?;
            let (rows, align) = output::links_table(&report.links);
            self.print_rows(&rows, &align)?;
        }
        Ok(())
    }

    fn clients_table(&mut self, clients: Vec<qcop::wire::ClientInfo>) -> Result<(), Failure> {
        let header = [
            "ID",
            "PID",
            "UID",
            "GID",
            "SUBSCRIPTIONS",
            "QUEUED_BYTES",
            "DELIVERED",
            "DROPPED",
            "NAME",
        ];
        let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
        for c in clients {
            rows.push(vec![
                c.id.to_string(),
                c.pid.to_string(),
                c.uid.to_string(),
                c.gid.to_string(),
                c.subscriptions.to_string(),
                c.queued_bytes.to_string(),
                c.delivered.to_string(),
                c.dropped.to_string(),
                c.name,
            ]);
        }
        let mut align = [Align::Right; 9];
        align[8] = Align::Left;
        self.out.line("")?;
        self.print_rows(&rows, &align)
    }

    fn shm_list(&mut self) -> Result<(), Failure> {
        let list = self
            .conn
            .shm_list()
            .map_err(|e| Failure::Error(ShmError::from(e).to_string()))?;
        let header = [
            "KIND", "NAME", "SIZE", "MODE", "UID", "GID", "STATE", "ATTACHED",
        ];
        let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
        let mut attached = vec![[
            "NAME",
            "KIND",
            "CLIENT",
            "PID",
            "UID",
            "ACCESS",
            "CLIENT_NAME",
        ]
        .iter()
        .map(|h| (*h).to_owned())
        .collect::<Vec<_>>()];
        for e in &list {
            let kind = if e.semaphore { "semaphore" } else { "segment" };
            let mut state = Vec::new();
            if e.persistent {
                state.push("persistent".to_owned());
            }
            if e.removed {
                state.push("removed".to_owned());
            }
            let size = if e.semaphore {
                if e.undo {
                    state.push("undo".to_owned());
                }
                format!("{}/{}", e.value, e.max)
            } else {
                if e.value != 0 {
                    state.push(format!("locked by pid {}", e.value));
                }
                if e.max != 0 {
                    state.push(format!("owner died {} times", e.max));
                }
                e.size.to_string()
            };
            rows.push(vec![
                kind.to_owned(),
                e.name.clone(),
                size,
                format!("{:04o}", e.mode),
                e.uid.to_string(),
                e.gid.to_string(),
                if state.is_empty() {
                    "-".to_owned()
                } else {
                    state.join(", ")
                },
                e.attachers.len().to_string(),
            ]);
            for a in &e.attachers {
                attached.push(vec![
                    e.name.clone(),
                    kind.to_owned(),
                    a.client_id.to_string(),
                    a.pid.to_string(),
                    a.uid.to_string(),
                    if a.read_only { "ro" } else { "rw" }.to_owned(),
                    a.name.clone(),
                ]);
            }
        }
        use Align::{Left as L, Right as R};
        self.print_rows(&rows, &[L, L, R, R, R, R, L, R])?;
        if attached.len() > 1 {
            self.out.line("")?;
            self.print_rows(&attached, &[L, L, R, R, R, L, L])?;
        }
        Ok(())
    }

    fn monitor(
        &mut self,
        patterns: &[String],
        count: Option<u64>,
        idle: Option<Duration>,
        view: View<'_>,
    ) -> Result<(), Failure> {
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        self.conn.monitor(&patterns)?;
        let mut printed = 0u64;
        let mut deadline = idle.and_then(deadline_after);
        while count.map_or(true, |n| printed < n) {
            let wait = match deadline {
                None => Duration::from_secs(3600),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let Some(m) = self.conn.recv_monitored(wait)? else {
                if deadline.is_some() {
                    return Ok(()); // idle for --timeout: done
                }
                continue;
            };
            let lost = self.conn.lost();
            if lost > self.lost_reported {
                output::warn(&format!("# lost {} events", lost - self.lost_reported));
                self.lost_reported = lost;
            }
            self.out.line(&output::monitor_line(&m, view))?;
            printed += 1;
            deadline = idle.and_then(deadline_after);
        }
        Ok(())
    }

    fn services(&mut self) -> Result<(), Failure> {
        let list = self.conn.services()?;
        let header = [
            "NAME", "CHANNEL", "STATE", "QUEUED", "BYTES", "STARTS", "FAILURES",
        ];
        let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
        for s in list {
            let state = match s.state {
                ServiceState::Starting | ServiceState::Running => {
                    format!("{} (pid {})", s.state, s.pid)
                }
                ServiceState::Failed if s.pid != 0 => {
                    format!("failed ({}; pid {} still runs)", s.detail, s.pid)
                }
                ServiceState::Failed => format!("failed ({})", s.detail),
                ServiceState::Idle => "idle".to_owned(),
            };
            rows.push(vec![
                s.name,
                s.channel,
                state,
                s.queued.to_string(),
                s.queued_bytes.to_string(),
                s.starts.to_string(),
                s.failures.to_string(),
            ]);
        }
        let align = [
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ];
        self.print_rows(&rows, &align)
    }

    fn print_rows(&mut self, rows: &[Vec<String>], align: &[Align]) -> Result<(), Failure> {
        let mut text = String::new();
        for line in output::columns(rows, align) {
            text.push_str(&line);
            text.push('\n');
        }
        self.out.text(&text)
    }

    fn call(
        &mut self,
        channel: &str,
        message: &Signature,
        payload: &[u8],
        timeout: Timeout,
        view: View<'_>,
    ) -> Result<(), Failure> {
        let limit = match timeout {
            Timeout::Default => DEFAULT_CALL_TIMEOUT,
            // The daemon caps it at its own maximum call timeout.
            Timeout::Never => Duration::from_millis(u32::MAX.into()),
            Timeout::After(d) => d,
        };
        let message = message.normalized();
        let reply = self
            .conn
            .call(channel, &message, payload, limit)
            .map_err(|e| {
                let why = match e {
                    // The library's text speaks of the daemon; here the responder was slow.
                    Error::Timeout if timeout == Timeout::Never => {
                        "no reply within the daemon's maximum call time".to_owned()
                    }
                    Error::Timeout => format!("no reply within {} ms", limit.as_millis()),
                    e => e.to_string(),
                };
                Failure::Error(format!("call {channel} {message}: {why}"))
            })?;
        if view.format == Format::Classic {
            return self
                .out
                .text(&output::wait_text(&reply.message, &reply.data, view));
        }
        let args = output::arguments(&reply.message, &reply.data, view);
        self.out.line(&output::joined(&[&reply.message], &args))
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        index: usize,
        channel: &str,
        message: &Signature,
        reply: &Signature,
        payload: &[u8],
        count: Option<u64>,
        view: View<'_>,
    ) -> Result<(), Failure> {
        let target = Matcher::new(channel, Some(&message.normalized()));
        let reply = reply.normalized();
        self.conn.subscribe(channel)?;
        let mut answered = 0u64;
        while count.map_or(true, |n| answered < n) {
            let Some(msg) = self.receive(None)? else {
                continue;
            };
            if !(msg.is_call() && target.matches(&msg)) {
                self.hold(index, msg);
                continue;
            }
            self.conn.reply(&msg, &reply, payload)?;
            answered += 1;
            self.out.line(&output::message_line(&msg, view))?;
        }
        // Returns once the daemon has taken the last reply, so exiting cannot lose it.
        self.conn.flush()?;
        Ok(())
    }
}

/// The time limit of `wait` and the idle limit of `watch`: none unless one was given.
fn time_limit(timeout: Timeout) -> Option<Duration> {
    match timeout {
        Timeout::After(d) => Some(d),
        Timeout::Default | Timeout::Never => None,
    }
}

/// What `shm-send` publishes.
struct ShmSend<'a> {
    channel: &'a str,
    message: &'a Signature,
    args: &'a [String],
    count: u64,
    interval: Duration,
    slot_size: Option<u32>,
    subscribers: u32,
}

/// Time `shm-send` waits for subscribers and for room in a lossless ring without a limit
/// given: a day, far beyond any stall worth waiting out.
const SHM_NO_LIMIT: Duration = Duration::from_secs(86_400);

impl Session<'_> {
    /// `watch --shm`: maps the channel's stream (waiting for it to be opened) and prints its
    /// messages until --count, the idle --timeout, or the end of the stream.
    fn watch_shm(
        &mut self,
        channel: &str,
        count: Option<u64>,
        idle: Option<Duration>,
        view: View<'_>,
    ) -> Result<(), Failure> {
        let opts = self.conn.options().clone();
        let mut sub = match Subscriber::open_wait(&opts, channel, idle.unwrap_or(SHM_NO_LIMIT)) {
            Ok(s) => s,
            Err(Error::Refused {
                code: ErrorCode::NoStream,
                ..
            }) => return Ok(()), // idle for --timeout: done
            Err(e) => return Err(e.into()),
        };
        let mut msg = Message {
            channel: channel.to_owned(),
            message: sub.message().to_owned(),
            data: Vec::new(),
            call_token: None,
            sender: None,
        };
        let mut printed = 0u64;
        let mut lost_reported = 0;
        while count.map_or(true, |n| printed < n) {
            match sub.recv(&mut msg.data, idle.unwrap_or(SHM_NO_LIMIT)) {
                Ok(_) => {}
                Err(StreamError::Timeout | StreamError::Ended) => return Ok(()),
                Err(StreamError::Corrupt(e)) => {
                    output::warn(&format!("# {e}"));
                    continue;
                }
                Err(e) => return Err(Failure::Error(format!("stream on {channel}: {e}"))),
            }
            if sub.lost() > lost_reported {
                output::warn(&format!("# lost {} messages", sub.lost() - lost_reported));
                lost_reported = sub.lost();
            }
            self.out.line(&output::message_line(&msg, view))?;
            printed += 1;
        }
        Ok(())
    }

    /// `shm-send`: opens a stream, waits for subscribers if asked, publishes, and ends the
    /// stream by exiting.
    fn shm_send(
        &mut self,
        send: &ShmSend<'_>,
        stream: StreamOptions,
        limit: Option<Duration>,
    ) -> Result<(), Failure> {
        let limit = limit.unwrap_or(SHM_NO_LIMIT);
        let first = args::encode_values(send.message, &args::substitute(send.args, 0))
            .map_err(Failure::Error)?;
        let slot_size = send
            .slot_size
            .unwrap_or_else(|| (first.len() as u32).max(256));
        let opts = self.conn.options().clone();
        let name = send.message.normalized();
        let mut p = Publisher::open(&opts, send.channel, &name, &stream.slot_size(slot_size))?;
        let deadline = deadline_after(limit);
        while p.subscribers() < send.subscribers as usize {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Failure::Error(format!(
                    "timed out waiting for {} subscribers to map {}",
                    send.subscribers, send.channel
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let fail = |e: StreamError| Failure::Error(format!("stream on {}: {e}", send.channel));
        for n in 0..send.count {
            let payload = if n == 0 {
                first.clone()
            } else {
                args::encode_values(send.message, &args::substitute(send.args, n))
                    .map_err(Failure::Error)?
            };
            p.send(&payload, limit).map_err(fail)?;
            if !send.interval.is_zero() && n + 1 < send.count {
                std::thread::sleep(send.interval);
            }
        }
        Ok(())
    }
}

/// A random (version 4) UUID for a private reply channel.
fn random_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Unique enough for a reply channel: the process and the time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..4].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[4..].copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// `now + d`, or `None` (no limit) if that is beyond what an `Instant` can hold.
fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

fn shm_failure(name: &str, e: ShmError) -> Failure {
    Failure::Error(format!("segment {name:?}: {e}"))
}

fn warn_owner_died(name: &str, died: bool) {
    if died {
        output::warn(&format!(
            "qcop: warning: the previous lock holder of {name:?} died; the data may be inconsistent"
        ));
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Error(e.to_string())
    }
}
