//! The event loop's side of the traffic over links: adverts and the interest they carry,
//! messages, calls and their answers, and the remote counts of the queries. (Connections
//! are in `links.rs`.)

use super::links::RemoteCaller;
use super::{PendingCall, Server, Timer, SYSTEM_CHANNEL};
use crate::daemon::link::proto::{msg_channel, LinkFrame, ADVERT_MAX_NAMES, ADVERT_MAX_NAME_BYTES};
use crate::daemon::link::topo::{DaemonId, Learned, Subs};
use crate::daemon::link::{LinkId, State};
use crate::pattern::{check_message_name, check_name, is_pattern};
use crate::wire::{ChannelInfo, Credentials, LinkInfo, MonitorEvent, HEADER_LEN};
use std::borrow::Cow;
use std::rc::Rc;
use std::time::{Duration, Instant};

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

fn origin_of(frame: &[u8]) -> DaemonId {
    frame
        .get(HEADER_LEN..HEADER_LEN + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl Server {
    // ----- adverts and interest ------------------------------------------------------------

    /// Rebuilds our advert if our subscriptions or neighbours changed; true if it changed.
    pub(super) fn links_rebuild_own(&mut self) -> bool {
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
    pub(super) fn links_refresh(&mut self) {
        self.links.changed = false;
        if self.links_rebuild_own() {
            let raw = Rc::clone(&self.links.own_raw);
            self.links_relay(&raw, None);
        }
        let up = self.links_recompute();
        for (id, _) in up {
            self.link_pump(id);
        }
    }

    /// Recomputes what each link leads to, at once: a link that just came up or went down
    /// changes where the very next message goes. Returns the links that are up.
    pub(super) fn links_recompute(&mut self) -> Vec<(LinkId, DaemonId)> {
        let up = self.links.up_links();
        self.links.topo.recompute(&up, Instant::now());
        up
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

    pub(super) fn link_advert(
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
        let learned = self.links.topo.learn(
            origin,
            version,
            neighbors,
            subs,
            Rc::clone(&raw),
            Instant::now(),
        );
        match learned {
            Learned::New => {
                self.links_relay(&raw, Some(id));
                self.links.changed = true;
            }
            Learned::Old => {}
            Learned::Refused => {
                log::debug!("links: advert of {origin:016x} refused (too many daemons known)")
            }
        }
        // The peer's own advert follows its `Ready`: from now on its interest is current.
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        if link.adverts_pending && origin == link.peer_id {
            link.adverts_pending = false;
            link.frozen.clear();
            self.links_recompute();
            self.link_pump(id);
        }
    }

    /// Moves buffered messages to the connection once the peer wants them again; after the
    /// hold time, drops those nobody wants.
    pub(super) fn link_pump(&mut self, id: LinkId) {
        let now = Instant::now();
        let Some(link) = self.links.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if link.state != State::Up {
            return;
        }
        if link.adverts_pending {
            // Everything waits for the peer's advert, for `hold_ms` at most.
            if link.hold_until.is_some_and(|t| now < t) {
                return;
            }
            link.adverts_pending = false;
            link.frozen.clear();
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
    /// because the link is down, or came back and its peer's advert is not in yet); false
    /// if none.
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
            let buffered = if link.state == State::Up && !link.adverts_pending {
                if !link.peer_import.wants(channel) || !topo.link_wants(id, channel, origin) {
                    continue;
                }
                false
            } else if link.state == State::Up {
                // Back up, the peer's advert not in yet: by the interest last known.
                let wanted =
                    topo.link_wants(id, channel, origin) || link.buffers_for(topo, channel, origin);
                if !link.peer_import.wants(channel) || !wanted {
                    continue;
                }
                true
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
            if link.state == State::Up {
                self.link_pump(id);
                self.links.mark_dirty(id);
            }
        }
        let n = targets.len() as u32;
        self.links.scratch = targets;
        n
    }

    /// Checks a message from a link against this daemon's rules for clients; returns its
    /// name normalised as a client's is (`check_message_name`), `None` if it is refused.
    fn link_message_ok<'m>(
        &self,
        channel: &str,
        message: &'m str,
        payload: &[u8],
    ) -> Option<Cow<'m, str>> {
        let ok = check_name(channel, self.cfg.max_channel_len as usize).is_ok()
            && !is_pattern(channel)
            && channel != SYSTEM_CHANNEL
            && payload.len() <= self.cfg.max_payload as usize;
        ok.then(|| check_message_name(message, self.cfg.max_message_len as usize).ok())
            .flatten()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn link_msg(
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
        let normalized = self.link_message_ok(channel, message, payload);
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
        let Some(message) = normalized else {
            link.counters.dropped_invalid += 1;
            return;
        };
        let message = &*message;
        self.monitor(
            MonitorEvent::Send,
            0,
            REMOTE_SENDER,
            channel,
            message,
            payload,
        );
        self.deliver_local(REMOTE_SENDER, channel, message, payload, None);
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

    pub(super) fn link_call_in(
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
        let normalized = self.link_message_ok(channel, message, payload);
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
        } else if normalized.is_none() {
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
        let Some(message) = normalized.filter(|_| !refused) else {
            return self.link_call_gone_to(id, origin, call_id, false);
        };
        let message = &*message;
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
            fields: None,
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
        self.timers.add(deadline, Timer::Call(token));
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

    pub(super) fn link_reply_in(&mut self, id: LinkId, raw: &[u8], origin: DaemonId, call_id: u32) {
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
                self.answer_call(&call, error, message, payload);
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

    pub(super) fn link_call_gone_in(
        &mut self,
        id: LinkId,
        origin: DaemonId,
        call_id: u32,
        delivered: bool,
    ) {
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
    pub(super) fn link_calls_lost(&mut self, id: LinkId) {
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
