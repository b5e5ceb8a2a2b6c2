//! Shared-memory streams in the daemon: qcopd creates each stream's ring (a sealed memfd),
//! hands it to the publisher and to subscribers that map it, polices who holds which
//! consumer record, ends the stream when the publisher's connection closes, frees the
//! record of a subscriber whose connection closes, and reads the ring as one more consumer
//! to forward its messages to the channel's ordinary subscribers (and over links).
//!
//! qcopd's consumer uses record 0 and sleeps on an event fd in the epoll loop (the publisher
//! writes it only when that consumer said it sleeps). It is active only while the channel
//! has ordinary subscribers (or the board has links, which may carry the channel to other
//! boards), so streams nobody watches through the daemon cost qcopd nothing per message. It forwards at most [`FORWARD_BUDGET`] messages per turn of the
//! loop, so a fast stream cannot starve other clients.
//!
//! A child module of `server`, so that these handlers reach the server's state directly;
//! the stream table itself is [`ShmStreams`].

use super::{Server, Slot};
use crate::daemon::policy::Action;
use crate::pattern::{check_name, is_pattern};
use crate::shm::layout::{state, Geometry, Policy};
use crate::shm::map::{create_memfd, page_size};
use crate::shm::mapped::MappedMemory;
use crate::shm::ring::{Consumer, Polled, Ring};
use crate::wire::{Credentials, ErrorCode, Frame, MonitorEvent};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

/// Epoll tokens of stream event fds: this bit plus the stream's index.
pub(super) const TOKEN_BASE: u64 = 1 << 62;
/// Messages forwarded from one stream per turn of the event loop.
const FORWARD_BUDGET: usize = 256;
/// Corrupt slots after which qcopd stops reading a stream (its publisher scribbles over
/// the ring; mapped subscribers validate for themselves and are not affected).
const CORRUPT_LIMIT: u64 = 64;

/// Counters shown by `qcop stats`.
#[derive(Debug, Default, Clone)]
struct Counters {
    opened: u64,
    abandoned: u64,
    forwarded: u64,
    overruns: u64,
    corrupt: u64,
    subscribers_freed: u64,
}

/// One stream.
struct Stream {
    id: u32,
    channel: Rc<str>,
    message: Rc<str>,
    /// The publisher's connection (client id), while the stream is open.
    owner: Option<u32>,
    /// The publisher's credentials: the sender of every forwarded message.
    sender: Credentials,
    memfd: OwnedFd,
    event: OwnedFd,
    /// qcopd's consumer, on record 0.
    consumer: Consumer<MappedMemory>,
    /// Record 0 is active: the channel has ordinary subscribers.
    forwarding: bool,
    /// Client id holding each record (index 0, qcopd's own, stays `None`).
    holders: Vec<Option<u32>>,
    /// Bytes charged against the limits (the memfd's size).
    bytes: u64,
    /// More messages may be waiting than the last turn forwarded.
    backlog: bool,
    /// Lossless: forwarding waits until every ordinary subscriber's queue has room for
    /// another message (the slots stay in the ring, so the publisher waits too).
    blocked: bool,
    /// The largest `Message` frame one of the stream's messages makes.
    frame_bound: usize,
    /// Corrupt slots qcopd's consumer met.
    corrupt: u64,
}

impl Stream {
    fn ring(&self) -> &Ring<MappedMemory> {
        self.consumer.ring()
    }

    fn is_open(&self) -> bool {
        self.owner.is_some() && self.ring().is_open()
    }

    fn subscribers(&self) -> usize {
        self.holders.iter().flatten().count()
    }
}

/// The daemon's streams.
#[derive(Default)]
pub(super) struct ShmStreams {
    streams: Vec<Option<Stream>>,
    ring_bytes: u64,
    next_id: u32,
    buf: Vec<u8>,
    /// The channel's ordinary subscribers, while a lossless stream is forwarded.
    recipients: Vec<Slot>,
    counters: Counters,
}

/// The size of the largest `Message` frame (with credentials) carrying a payload of up to
/// `payload` bytes on `channel`.
fn message_frame_bound(channel: &str, message: &str, payload: u32) -> usize {
    let mut enc = Vec::new();
    Frame::Message {
        token: 0,
        call: false,
        channel,
        message,
        payload: &[],
        sender: Some(Credentials::default()),
    }
    .encode(&mut enc);
    enc.len() + payload as usize
}

impl ShmStreams {
    /// Whether some stream has messages left over from the last turn.
    fn has_backlog(&self) -> bool {
        self.streams.iter().flatten().any(|s| s.backlog)
    }

    /// Rows appended to `qcop stats` (after the daemon's own; never reordered).
    pub(super) fn report(&self) -> Vec<(String, u64)> {
        let live = self.streams.iter().flatten();
        let rows = [
            (
                "shm_streams",
                live.clone().filter(|s| s.is_open()).count() as u64,
            ),
            ("shm_streams_opened", self.counters.opened),
            ("shm_streams_abandoned", self.counters.abandoned),
            (
                "shm_subscribers",
                live.map(|s| s.subscribers() as u64).sum(),
            ),
            ("shm_subscribers_freed", self.counters.subscribers_freed),
            ("shm_ring_bytes", self.ring_bytes),
            ("shm_forwarded", self.counters.forwarded),
            ("shm_overruns", self.counters.overruns),
            ("shm_corrupt", self.counters.corrupt),
            (
                "shm_streams_forwarded",
                self.streams
                    .iter()
                    .flatten()
                    .filter(|s| s.forwarding && s.is_open())
                    .count() as u64,
            ),
        ];
        rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
}

impl Server {
    /// Handles `ShmOpen`, `ShmEventFd` and `ShmMap`.
    pub(super) fn shm_request(&mut self, slot: Slot, frame: Frame<'_>) {
        match frame {
            Frame::ShmOpen {
                seq,
                policy,
                slot_size,
                slot_count,
                channel,
                message,
            } => self.shm_open(slot, seq, policy, slot_size, slot_count, channel, message),
            Frame::ShmEventFd { seq, stream } => self.shm_event_fd(slot, seq, stream),
            Frame::ShmMap { seq, channel } => self.shm_map(slot, seq, channel),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn shm_open(
        &mut self,
        slot: Slot,
        seq: u32,
        policy: u8,
        slot_size: u32,
        slot_count: u32,
        channel: &str,
        message: &str,
    ) {
        let message = match self.check_message(slot, channel, message, &[]) {
            Ok(normalized) => normalized,
            Err((code, text)) => return self.reject(slot, seq, code, &text),
        };
        let message = &*message;
        // Publishing on a stream is sending on its channel.
        if let Err(denial) = self.may(slot, Action::Send, channel, message) {
            let what = format!("shared-memory stream on {channel:?}");
            return self.deny(slot, seq, Action::Send, &what, &denial.text);
        }
        let Some(policy) = Policy::from_u32(u32::from(policy)) else {
            let text = format!("unknown overflow policy {policy}");
            return self.reject(slot, seq, ErrorCode::RingSize, &text);
        };
        let open = self.shm.streams.iter().flatten().count();
        if open >= self.cfg.shm_max_streams as usize {
            let text = format!(
                "qcopd allows {} shared-memory streams (shm_max_streams)",
                self.cfg.shm_max_streams
            );
            return self.reject(slot, seq, ErrorCode::TooManyStreams, &text);
        }
        if self.shm_find_open(channel).is_some() {
            let text = format!("{channel:?} already has a shared-memory stream");
            return self.reject(slot, seq, ErrorCode::StreamExists, &text);
        }
        if slot_size == 0 || slot_size > self.cfg.max_payload {
            let text = format!(
                "slot size {slot_size} must be between 1 and max_payload ({})",
                self.cfg.max_payload
            );
            return self.reject(slot, seq, ErrorCode::RingSize, &text);
        }
        let records = self.cfg.shm_max_stream_subscribers + 1;
        let geo = match Geometry::new(
            Geometry::slot_size_for(slot_size),
            slot_count,
            records,
            policy,
        ) {
            Ok(g) => g,
            Err(e) => return self.reject(slot, seq, ErrorCode::RingSize, &e.to_string()),
        };
        let page = page_size() as u64;
        let bytes = (geo.total_len() as u64).div_ceil(page) * page;
        if bytes > self.cfg.shm_max_ring_bytes {
            let text = format!(
                "a ring of {bytes} bytes exceeds shm_max_ring_bytes ({})",
                self.cfg.shm_max_ring_bytes
            );
            return self.reject(slot, seq, ErrorCode::RingSize, &text);
        }
        if self.shm.ring_bytes + bytes > self.cfg.shm_max_total_ring_bytes {
            let text = format!(
                "{bytes} more bytes of rings would exceed shm_max_total_ring_bytes ({}; {} in use)",
                self.cfg.shm_max_total_ring_bytes, self.shm.ring_bytes
            );
            return self.reject(slot, seq, ErrorCode::RingSize, &text);
        }
        let index = self
            .shm
            .streams
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.shm.streams.len());
        let stream = match self.shm_create(index, channel, message, geo, bytes) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot create a shared-memory stream for {channel:?}: {e}");
                let text = format!("shared memory could not be created: {e}");
                return self.reject(slot, seq, ErrorCode::ShmFailed, &text);
            }
        };
        let memfd = match stream.memfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.epoll.delete(&stream.event);
                let text = format!("shared memory could not be handed over: {e}");
                return self.reject(slot, seq, ErrorCode::ShmFailed, &text);
            }
        };
        let id = stream.id;
        let owner = self.client_id(slot);
        log::info!(
            "client {owner}: shared-memory stream {id} on {channel:?}: {} slots of {} bytes, {policy}, {bytes} bytes",
            geo.slot_count(),
            geo.slot_size(),
        );
        if index == self.shm.streams.len() {
            self.shm.streams.push(None);
        }
        let sender = self.credentials(slot);
        self.shm.streams[index] = Some(Stream {
            owner: Some(owner),
            sender,
            ..stream
        });
        self.shm.ring_bytes += bytes;
        self.shm.counters.opened += 1;
        self.push_reply_fd(slot, &Frame::ShmStream { seq, stream: id }, memfd);
        self.shm_refresh_forwarding();
    }

    /// Creates the memfd, the ring in it and the event fd (registered in epoll).
    fn shm_create(
        &mut self,
        index: usize,
        channel: &str,
        message: &str,
        geo: Geometry,
        bytes: u64,
    ) -> std::io::Result<Stream> {
        let memfd = create_memfd(&format!("qcop-stream:{channel}"), bytes)?;
        let mem = MappedMemory::map(memfd.as_fd())?;
        // Positions start four laps before the 64-bit wrap, so that every stream crosses it
        // early in its life: wraparound bugs show up in minutes, not never.
        let start = 0u64.wrapping_sub(4 * u64::from(geo.slot_count()));
        let ring = Ring::create(mem, geo, start)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let event: OwnedFd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?
                .into();
        self.epoll.add(
            &event,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_BASE + index as u64),
        )?;
        self.shm.next_id = self.shm.next_id.wrapping_add(1).max(1);
        Ok(Stream {
            id: self.shm.next_id,
            channel: channel.into(),
            message: message.into(),
            owner: None,
            sender: Credentials::default(),
            memfd,
            event,
            consumer: Consumer::new(ring, Some(0), start),
            forwarding: false,
            holders: vec![None; geo.records() as usize],
            bytes,
            backlog: false,
            blocked: false,
            frame_bound: message_frame_bound(channel, message, geo.slot_size()),
            corrupt: 0,
        })
    }

    fn shm_find_open(&self, channel: &str) -> Option<usize> {
        self.shm.streams.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.is_open() && &*s.channel == channel)
        })
    }

    fn shm_event_fd(&mut self, slot: Slot, seq: u32, id: u32) {
        let client = self.client_id(slot);
        let fd = self
            .shm
            .streams
            .iter()
            .flatten()
            .find(|s| s.id == id && s.owner == Some(client))
            .map(|s| s.event.try_clone());
        match fd {
            Some(Ok(fd)) => self.push_reply_fd(slot, &Frame::ShmEvent { seq }, fd),
            Some(Err(e)) => {
                let text = format!("event fd could not be handed over: {e}");
                self.reject(slot, seq, ErrorCode::ShmFailed, &text);
            }
            None => {
                let text = format!("no open stream {id} of this connection");
                self.reject(slot, seq, ErrorCode::NoStream, &text);
            }
        }
    }

    fn shm_map(&mut self, slot: Slot, seq: u32, channel: &str) {
        if let Err(e) = check_name(channel, self.cfg.max_channel_len as usize) {
            return self.reject(slot, seq, ErrorCode::BadName, &e.to_string());
        }
        if is_pattern(channel) {
            let text = format!("{channel:?} is a pattern; a stream is mapped by its channel");
            return self.reject(slot, seq, ErrorCode::WildcardSend, &text);
        }
        let client = self.client_id(slot);
        let Some(index) = self.shm_find_open(channel) else {
            let text = format!("no shared-memory stream is open on {channel:?}");
            return self.reject(slot, seq, ErrorCode::NoStream, &text);
        };
        // Mapping a stream is receiving its channel's messages.
        let message = self.shm.streams[index]
            .as_ref()
            .map(|s| Rc::clone(&s.message))
            .unwrap_or_else(|| Rc::from(""));
        if let Err(denial) = self.may(slot, Action::Receive, channel, &message) {
            let what = format!("mapping the stream on {channel:?}");
            return self.deny(slot, seq, Action::Receive, &what, &denial.text);
        }
        let Some(stream) = self.shm.streams[index].as_mut() else {
            return;
        };
        let Some(record) = (1..stream.holders.len()).find(|&r| stream.holders[r].is_none()) else {
            let text = format!(
                "{} subscribers already map {channel:?} (shm_max_stream_subscribers)",
                stream.holders.len() - 1
            );
            return self.reject(slot, seq, ErrorCode::TooManyConsumers, &text);
        };
        let memfd = match stream.memfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                let text = format!("shared memory could not be handed over: {e}");
                return self.reject(slot, seq, ErrorCode::ShmFailed, &text);
            }
        };
        // The record becomes active before the answer leaves: the subscriber's slots are
        // held for it from the position it starts at.
        stream.ring().join(record as u32);
        stream.holders[record] = Some(client);
        let frame = Frame::ShmMapped {
            seq,
            stream: stream.id,
            record: record as u32,
            message: &Rc::clone(&stream.message),
        };
        log::debug!(
            "client {client} maps stream {} as record {record}",
            stream.id
        );
        self.push_reply_fd(slot, &frame, memfd);
    }

    /// The event fd of stream `token - TOKEN_BASE` is readable: the publisher woke qcopd's
    /// consumer.
    pub(super) fn shm_event(&mut self, token: u64) {
        let index = (token - TOKEN_BASE) as usize;
        if let Some(s) = self.shm.streams.get(index).and_then(Option::as_ref) {
            let mut counter = [0u8; 8];
            let _ = nix::unistd::read(&s.event, &mut counter);
        }
        self.shm_forward(index, FORWARD_BUDGET);
    }

    /// Forwards what streams left over from the last turn, and what lossless streams held
    /// back while an ordinary subscriber's queue was full.
    pub(super) fn shm_poll(&mut self) {
        for index in 0..self.shm.streams.len() {
            if self.shm.streams[index]
                .as_ref()
                .is_some_and(|s| s.backlog || s.blocked)
            {
                self.shm_forward(index, FORWARD_BUDGET);
            }
        }
    }

    /// Whether the next turn of the loop must not wait: a stream has messages left over,
    /// or a held-back lossless stream's subscribers now have room. (A subscriber whose
    /// queue is still full has a full socket too, and its EPOLLOUT ends the wait.)
    pub(super) fn shm_has_work(&mut self) -> bool {
        if self.shm.has_backlog() {
            return true;
        }
        let mut recipients = Vec::new();
        for index in 0..self.shm.streams.len() {
            let Some(s) = self.shm.streams[index].as_ref().filter(|s| s.blocked) else {
                continue;
            };
            self.router.recipients(&s.channel, &mut recipients);
            let s = self.shm.streams[index].as_ref().expect("checked above");
            if self.shm_queues_have_room(s, &recipients) {
                return true;
            }
        }
        false
    }

    /// Whether every ordinary subscriber that would receive a message of `s` has room for
    /// it in its queue, and the daemon's total queue budget too.
    fn shm_queues_have_room(&self, s: &Stream, recipients: &[Slot]) -> bool {
        let frame = s.frame_bound;
        if self.queued_total + frame as u64 > self.cfg.max_total_queue_bytes {
            return false;
        }
        let limit = self.cfg.max_queue_bytes as usize;
        recipients.iter().all(|&r| {
            self.clients
                .get(r)
                .and_then(Option::as_ref)
                .map_or(true, |c| {
                    c.closing
                        || !c.greeted
                        || c.out.bytes() + frame + 64 <= limit
                        || !self.receives(c, &s.channel, &s.message)
                })
        })
    }

    /// Lossless back-pressure: true if the next message of `s` can be queued for every
    /// ordinary subscriber without dropping anything (writing full queues to their sockets
    /// first, as queuing would).
    fn shm_room_for_next(&mut self, s: &Stream, recipients: &[Slot]) -> bool {
        if self.shm_queues_have_room(s, recipients) {
            return true;
        }
        let limit = self.cfg.max_queue_bytes as usize;
        for &r in recipients {
            let full = self
                .clients
                .get(r)
                .and_then(Option::as_ref)
                .is_some_and(|c| {
                    !c.want_write && !c.out.is_empty() && c.out.bytes() + s.frame_bound + 64 > limit
                });
            if full {
                self.flush(r);
            }
        }
        self.shm_queues_have_room(s, recipients)
    }

    /// Forwards up to `budget` messages of stream `index` to the channel's ordinary
    /// subscribers, then lets qcopd's consumer sleep if the ring is empty.
    fn shm_forward(&mut self, index: usize, budget: usize) {
        let Some(mut s) = self.shm.streams.get_mut(index).and_then(Option::take) else {
            return;
        };
        let mut buf = std::mem::take(&mut self.shm.buf);
        let mut recipients = std::mem::take(&mut self.shm.recipients);
        let lossless = s.ring().geometry().policy() == Policy::Lossless;
        s.backlog = false;
        s.blocked = false;
        if s.forwarding {
            recipients.clear();
            if lossless {
                self.router.recipients(&s.channel, &mut recipients);
            }
            let mut n = 0;
            loop {
                if n == budget {
                    s.backlog = true;
                    break;
                }
                if lossless && !self.shm_room_for_next(&s, &recipients) {
                    // Hold the rest in the ring: the publisher waits for its slots, as it
                    // would for a slow mapped subscriber. Hand back what was read so far.
                    s.blocked = true;
                    s.consumer.publish_position();
                    break;
                }
                let problem = match s.consumer.forward_into(&mut buf) {
                    Ok(Polled::Message(r)) => {
                        if r.lost_before > 0 {
                            self.shm.counters.overruns += r.lost_before;
                            self.shm_note_lost(&s.channel, r.lost_before);
                        }
                        self.shm.counters.forwarded += 1;
                        let (sender, c, m) = (s.sender, &s.channel, &s.message);
                        self.monitor(MonitorEvent::Send, 0, sender, c, m, &buf);
                        let _ = self.publish(sender, c, m, &buf);
                        n += 1;
                        continue;
                    }
                    Ok(Polled::Empty) => break,
                    // Lossy: the producer lapped qcopd again and again (counted as lost), or
                    // the ring is scribbled; either way, on with the budget.
                    Ok(Polled::Stalled) => {
                        n += 1;
                        continue;
                    }
                    Err(e) => e.to_string(),
                };
                // Counted against the budget: a publisher that scribbles over every slot
                // cannot keep qcopd in this loop, nor (past the limit) on this stream.
                n += 1;
                self.shm.counters.corrupt += 1;
                s.corrupt += 1;
                if s.corrupt == 1 {
                    log::warn!("stream {} on {:?}: {problem}", s.id, s.channel);
                }
                if s.corrupt >= CORRUPT_LIMIT {
                    log::error!(
                        "stream {} on {:?}: {} corrupt slots; qcopd stops reading it",
                        s.id,
                        s.channel,
                        s.corrupt
                    );
                    s.ring().leave(0);
                    s.forwarding = false;
                    s.backlog = false;
                    s.blocked = false;
                    break;
                }
            }
            if s.forwarding
                && !s.backlog
                && !s.blocked
                && !s.consumer.prepare_event_sleep()
                && s.ring().is_open()
            {
                s.backlog = true; // published meanwhile: look again next turn
            }
        }
        self.shm.recipients = recipients;
        if !s.ring().is_open() && s.owner.is_some() && !s.backlog && !s.blocked {
            // The publisher ended the stream and everything was forwarded.
            log::debug!("stream {} on {:?} ended", s.id, s.channel);
            s.owner = None;
        }
        self.shm.buf = buf;
        self.shm.streams[index] = Some(s);
        self.shm_remove_if_done(index);
    }

    /// Tells the channel's ordinary subscribers that `n` messages were lost (a lossy
    /// stream overwrote them before qcopd read them).
    fn shm_note_lost(&mut self, channel: &str, n: u64) {
        let mut recipients = std::mem::take(&mut self.scratch);
        self.router.recipients(channel, &mut recipients);
        for &r in &recipients {
            let Some(c) = self.clients.get_mut(r).and_then(Option::as_mut) else {
                continue;
            };
            if !c.greeted || c.closing {
                continue;
            }
            let delta = c.out.note_lost_many(n);
            c.dropped += n;
            let monitor = c.access.is_monitor();
            self.adjust_queued(monitor, delta);
            self.mark_dirty(r);
        }
        self.scratch = recipients;
    }

    /// Turns qcopd's consumer on for streams whose channel gained ordinary subscribers and
    /// off for those that lost them (called after subscriptions change).
    pub(super) fn shm_refresh_forwarding(&mut self) {
        if self.shm.streams.is_empty() {
            return;
        }
        // A board linked to others reads every stream: links may carry the channel to
        // subscribers elsewhere, and whether they do changes with the peers' adverts.
        let linked = self.cfg.links.listen.is_some() || !self.cfg.links.peer.is_empty();
        let mut recipients = std::mem::take(&mut self.scratch);
        for index in 0..self.shm.streams.len() {
            let Some(s) = self.shm.streams[index].as_mut() else {
                continue;
            };
            recipients.clear();
            self.router.recipients(&s.channel, &mut recipients);
            let want = (linked || !recipients.is_empty())
                && s.ring().is_open()
                && s.corrupt < CORRUPT_LIMIT;
            if want && !s.forwarding {
                let at = s.ring().join(0);
                s.consumer.restart_at(at);
                s.forwarding = true;
                s.backlog = true;
            } else if !want && s.forwarding && s.is_open() {
                s.ring().leave(0);
                s.forwarding = false;
                s.backlog = false;
                s.blocked = false;
            }
        }
        self.scratch = recipients;
    }

    /// A connection closed: its streams end (their subscribers read what was published,
    /// then see the end), its consumer records are freed (a lossless publisher no longer
    /// waits for them).
    pub(super) fn shm_client_closed(&mut self, client: u32) {
        for index in 0..self.shm.streams.len() {
            let Some(s) = self.shm.streams[index].as_mut() else {
                continue;
            };
            if s.owner == Some(client) {
                if s.ring().end(state::ABANDONED) {
                    self.shm.counters.abandoned += 1;
                    log::info!(
                        "stream {} on {:?}: publisher gone without ending it",
                        s.id,
                        s.channel
                    );
                }
                s.owner = None;
                // Forward what was committed before the end (one ring at most).
                let all = s.ring().geometry().slot_count() as usize + 1;
                self.shm_forward(index, all);
            }
            let Some(s) = self.shm.streams[index].as_mut() else {
                continue;
            };
            for r in 0..s.holders.len() {
                if s.holders[r] == Some(client) {
                    s.ring().leave(r as u32);
                    s.holders[r] = None;
                    self.shm.counters.subscribers_freed += 1;
                }
            }
            self.shm_remove_if_done(index);
        }
    }

    /// Drops a stream once its publisher is gone, qcopd forwarded everything, and no
    /// subscriber maps it any more (until then its memory counts against the limits).
    fn shm_remove_if_done(&mut self, index: usize) {
        let done = self.shm.streams[index]
            .as_ref()
            .is_some_and(|s| s.owner.is_none() && !s.backlog && !s.blocked && s.subscribers() == 0);
        if !done {
            return;
        }
        if let Some(s) = self.shm.streams[index].take() {
            let _ = self.epoll.delete(&s.event);
            self.shm.ring_bytes -= s.bytes;
            log::debug!("stream {} on {:?} released", s.id, s.channel);
        }
    }

    /// Shutting down: every stream ends, so its subscribers stop instead of waiting for a
    /// publisher nobody will police any more.
    pub(super) fn shm_shutdown(&mut self) {
        for s in self.shm.streams.iter().flatten() {
            s.ring().end(state::ABANDONED);
        }
    }
}
