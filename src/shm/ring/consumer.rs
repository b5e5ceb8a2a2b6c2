//! A reading end of a ring.

use super::spin::{Spin, Spinner};
use super::{Corrupt, Ring, RingMemory, Sleep, StreamError, WaitMode};
use crate::shm::atomics::{dekker_fence, fence, Ordering, DEKKER};
use crate::shm::layout::{off, sleepers, Policy, EVENT_SLEEPER};
use std::time::{Duration, Instant};

/// Overrun skips and rereads one call may do before it reports nothing available.
const MAX_ATTEMPTS: u32 = 64;

/// The deadline of a receive loop: read from the clock only when the loop first has to
/// wait, and checked on every later pass, so that a ring that always looks readable but
/// never yields a message (a scribbled one) cannot keep the loop past its timeout.
pub struct Deadline {
    timeout: Duration,
    at: Option<Option<Instant>>,
}

impl Deadline {
    /// A deadline `timeout` after the first wait.
    pub fn new(timeout: Duration) -> Deadline {
        Deadline { timeout, at: None }
    }

    /// The deadline for the next wait (`None`: no limit), or `Timeout` if it passed.
    pub fn for_wait(&mut self) -> Result<Option<Instant>, StreamError> {
        match self.at {
            None => Ok(*self.at.insert(Instant::now().checked_add(self.timeout))),
            Some(Some(d)) if Instant::now() >= d => Err(StreamError::Timeout),
            Some(d) => Ok(d),
        }
    }
}

/// A message ready to be read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSlot {
    /// Its position.
    pub pos: u64,
    /// Offset of the payload in the memory.
    pub data: usize,
    /// Payload bytes (checked against the slot size).
    pub len: usize,
    /// Messages lost (overrun) just before this one.
    pub lost_before: u64,
}

/// What `Consumer::try_recv_into` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Payload bytes now in the buffer.
    pub len: usize,
    /// Messages lost (overrun) just before this one.
    pub lost_before: u64,
}

/// What `Consumer::poll_into` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// A message, now in the buffer.
    Message(Received),
    /// The next slot is not written yet.
    Empty,
    /// Many overrun skips or rereads and no message: a lossy producer lapping this consumer
    /// again and again, or a ring that announces messages nobody writes.
    Stalled,
}

/// What `Consumer::look` found.
enum Look {
    Ready(ReadSlot),
    Empty,
    Stalled,
}

/// How a slot's stamp relates to the position a consumer wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// It holds the wanted message.
    Ready,
    /// It holds an older lap, or the wanted message is being written.
    NotYet,
    /// It holds, or is being written with, a later lap: the consumer was overrun.
    Overrun,
    /// Neither: not a value this slot can hold.
    Garbage,
}

#[inline]
fn classify(stamp: u64, want: u64, mask: u64) -> Stamp {
    let d = stamp.wrapping_sub(want);
    if d == 0 {
        return Stamp::Ready;
    }
    if d & mask == 0 {
        return if (d as i64) < 0 {
            Stamp::NotYet
        } else {
            Stamp::Overrun
        };
    }
    // "Being written" stamps are one less than the position being written.
    let busy = d.wrapping_add(1);
    if busy & mask == 0 {
        return if (busy as i64) <= 0 {
            Stamp::NotYet
        } else {
            Stamp::Overrun
        };
    }
    Stamp::Garbage
}

/// A reading end of a ring.
pub struct Consumer<M> {
    ring: Ring<M>,
    /// Lossless: the record whose cursor the producer waits for.
    record: Option<u32>,
    /// Next position to read.
    cursor: u64,
    /// Lossless: the cursor last stored in the record (the producer's view).
    published: u64,
    /// Lossless: positions released before the cursor is stored again.
    batch: u64,
    /// The cursor is stored in the record (lossless, with a record).
    publishes: bool,
    /// Lost messages not yet reported with a message.
    pending_lost: u64,
    lost: u64,
}

impl<M: RingMemory> Consumer<M> {
    /// A consumer reading from `cursor` on. `record` is the record qcopd assigned to it
    /// (`None` for a consumer that no producer waits for).
    pub fn new(ring: Ring<M>, record: Option<u32>, cursor: u64) -> Consumer<M> {
        let record = record.filter(|&r| r < ring.geo.records());
        // Lossless only: a lossy producer never looks at cursors.
        let publishes = record.is_some() && ring.geo.policy() == Policy::Lossless;
        let batch = (u64::from(ring.geo.slot_count()) / 8).clamp(1, 32);
        Consumer {
            ring,
            record,
            cursor,
            published: cursor,
            batch,
            publishes,
            pending_lost: 0,
            lost: 0,
        }
    }

    /// A consumer starting at the cursor of its record (as qcopd set it when it joined).
    pub fn attach(ring: Ring<M>, record: u32) -> Consumer<M> {
        let cursor = if record < ring.geo.records() {
            ring.record_cursor(record)
        } else {
            ring.head()
        };
        Consumer::new(ring, Some(record), cursor)
    }

    /// The ring.
    #[inline]
    pub fn ring(&self) -> &Ring<M> {
        &self.ring
    }

    /// Next position to read.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Messages this consumer lost (overrun, or skipped as corrupt) since it started.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    fn skip(&mut self, to: u64) {
        let n = to.wrapping_sub(self.cursor);
        self.cursor = to;
        self.lost = self.lost.wrapping_add(n);
        self.pending_lost = self.pending_lost.wrapping_add(n);
        self.flush_cursor();
    }

    /// Lossless: stores the cursor in the record if it moved since the last time, and
    /// wakes the producer if it waits for space.
    ///
    /// Released slots go back to the producer in batches (every `batch` positions), so that
    /// the cursor's line does not cross between CPUs on every message; and at once when
    /// this consumer finds nothing to read (before it would wait) or sees the producer
    /// waiting. A producer waiting for space is therefore woken either by the batch that
    /// frees it or, at the latest, when this consumer has read everything.
    #[inline]
    fn flush_cursor(&mut self) {
        if let (Some(r), true) = (self.record, self.publishes) {
            if self.published != self.cursor {
                self.published = self.cursor;
                self.ring.publish_cursor(r, self.cursor);
            }
        }
    }

    /// The next message if one is ready, `Ok(None)` if not (yet). Overruns are skipped and
    /// counted; a corrupt slot is skipped, counted, and reported.
    #[inline]
    pub fn peek(&mut self) -> Result<Option<ReadSlot>, Corrupt> {
        match self.look()? {
            Look::Ready(m) => Ok(Some(m)),
            Look::Empty | Look::Stalled => Ok(None),
        }
    }

    /// `peek`, telling "nothing written yet" from "gave up after `MAX_ATTEMPTS` skips".
    #[inline]
    fn look(&mut self) -> Result<Look, Corrupt> {
        let mask = self.ring.geo.mask();
        for _ in 0..MAX_ATTEMPTS {
            let c = self.cursor;
            // Acquire: pairs with the Release store of the stamp in `Producer::commit`.
            let s1 = self.ring.stamp(c).load(Ordering::Acquire);
            match classify(s1, c, mask) {
                Stamp::NotYet => {
                    self.flush_cursor();
                    return Ok(Look::Empty);
                }
                Stamp::Ready => {
                    let base = self.ring.geo.slot_offset(c);
                    let len = self.ring.w32(base + off::slot::LEN).load(Ordering::Relaxed);
                    if len > self.ring.geo.slot_size() {
                        if !self.still_valid(c) {
                            continue; // overwritten meanwhile: look again
                        }
                        self.skip(c.wrapping_add(1));
                        return Err(Corrupt::Length(len));
                    }
                    return Ok(Look::Ready(ReadSlot {
                        pos: c,
                        data: base + off::slot::DATA,
                        len: len as usize,
                        lost_before: self.pending_lost,
                    }));
                }
                Stamp::Overrun if self.publishes => {
                    // A lossless producer never writes over a slot an active record has not
                    // released: the stamp is a lie (or somebody rewrote this record's cursor).
                    self.skip(c.wrapping_add(1));
                    return Err(Corrupt::Stamp(s1));
                }
                Stamp::Overrun => {
                    let head = self.ring.head();
                    if (head.wrapping_sub(c) as i64) < 0 {
                        // The head is behind this consumer's cursor, which only ever follows
                        // positions the head passed: the stamp cannot be a later lap.
                        self.skip(c.wrapping_add(1));
                        return Err(Corrupt::Stamp(s1));
                    }
                    // Resume at the oldest message in the ring. If the producer is rewriting
                    // it right now, the copy fails validation and the next look skips on.
                    let count = u64::from(self.ring.geo.slot_count());
                    let oldest = head.wrapping_sub(count);
                    let ahead = oldest.wrapping_sub(c);
                    let to = if ahead == 0 || (ahead as i64) < 0 {
                        c.wrapping_add(1) // a head that disagrees: still make progress
                    } else {
                        oldest
                    };
                    self.skip(to);
                }
                Stamp::Garbage => {
                    self.skip(c.wrapping_add(1));
                    return Err(Corrupt::Stamp(s1));
                }
            }
        }
        Ok(Look::Stalled)
    }

    /// After reading a slot's payload: true if the producer did not start rewriting it, so
    /// what was read is the message committed at `pos`, whole.
    #[inline]
    pub fn still_valid(&self, pos: u64) -> bool {
        // Acquire fence: pairs with the Release fence in `Producer::try_begin`; if any byte
        // read was written by a later message, the stamp below shows it.
        fence(Ordering::Acquire);
        self.ring.stamp(pos).load(Ordering::Relaxed) == pos
    }

    /// Done with the message at `pos` (returned by `peek`): moves on, and in a lossless
    /// ring hands the slot back to the producer.
    #[inline]
    pub fn release(&mut self, pos: u64) {
        if pos != self.cursor {
            return;
        }
        self.pending_lost = 0;
        self.cursor = pos.wrapping_add(1);
        if self.publishes
            && (self.cursor.wrapping_sub(self.published) >= self.batch
                // Relaxed: a stale "not waiting" only delays the wake-up until the batch
                // fills or the ring is empty, where `flush_cursor` makes the full check.
                || self.ring.w32(off::PRODUCER_WAITING).load(Ordering::Relaxed) != 0)
        {
            self.flush_cursor();
        }
    }

    /// Done with a message read in place: like [`Consumer::release`], and true if the
    /// message stayed intact while it was held. A message overwritten meanwhile (lossy
    /// policy) counts as lost.
    #[inline]
    pub fn release_checked(&mut self, pos: u64) -> bool {
        let intact = self.still_valid(pos);
        if !intact {
            self.lost = self.lost.wrapping_add(1);
        }
        self.release(pos);
        intact
    }

    /// Starts over at `cursor` (qcopd re-joining its record), forgetting unreported losses.
    pub fn restart_at(&mut self, cursor: u64) {
        self.cursor = cursor;
        self.published = cursor;
        self.pending_lost = 0;
    }

    /// Copies the next message into `buf` (resized to it) if one is ready.
    #[inline]
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<Received>, Corrupt> {
        match self.poll_into(buf)? {
            Polled::Message(r) => Ok(Some(r)),
            Polled::Empty | Polled::Stalled => Ok(None),
        }
    }

    /// Like [`Consumer::try_recv_into`], but says why no message came: the next slot is not
    /// written yet ([`Polled::Empty`], decided by the same stamp load that found it so, so
    /// a message committed an instant later is never mistaken for anything else), or the
    /// consumer gave up after many overrun skips and rereads ([`Polled::Stalled`]).
    #[inline]
    pub fn poll_into(&mut self, buf: &mut Vec<u8>) -> Result<Polled, Corrupt> {
        for _ in 0..MAX_ATTEMPTS {
            let m = match self.look()? {
                Look::Ready(m) => m,
                Look::Empty => return Ok(Polled::Empty),
                Look::Stalled => return Ok(Polled::Stalled),
            };
            if buf.len() != m.len {
                buf.resize(m.len, 0);
            }
            self.ring.mem.read_bytes(m.data, buf);
            if self.still_valid(m.pos) {
                self.release(m.pos);
                return Ok(Polled::Message(Received {
                    len: m.len,
                    lost_before: m.lost_before,
                }));
            }
            if self.publishes {
                // A lossless producer never rewrites a slot this record holds.
                self.skip(m.pos.wrapping_add(1));
                return Err(Corrupt::Stamp(
                    self.ring.stamp(m.pos).load(Ordering::Relaxed),
                ));
            }
            // Overwritten while copying: the next look sees the overrun and counts it.
        }
        Ok(Polled::Stalled)
    }

    /// qcopd's forwarding read: [`Consumer::poll_into`], where a consumer holding a record
    /// of a lossless ring reports a stall as corrupt. Its producer waits for the record and
    /// never overruns it, so skips and rereads without end mean the ring announces
    /// messages nobody wrote. `Empty` is decided by the stamp load that found the slot
    /// unwritten: nothing committed after it is counted against the producer.
    pub fn forward_into(&mut self, buf: &mut Vec<u8>) -> Result<Polled, Corrupt> {
        match self.poll_into(buf)? {
            Polled::Stalled if self.publishes => Err(Corrupt::NoProgress),
            other => Ok(other),
        }
    }

    /// Stores the cursor in the record now (lossless), handing every slot read so far back
    /// to the producer: for a consumer that stops reading for a while with messages left.
    pub fn publish_position(&mut self) {
        self.flush_cursor();
    }

    /// Whether the next `peek` has something to say (a message, an overrun, garbage).
    #[inline]
    pub fn readable(&self) -> bool {
        let c = self.cursor;
        // Acquire: pairs with the Release store of the stamp in `Producer::commit`.
        let s = self.ring.stamp(c).load(Ordering::Acquire);
        classify(s, c, self.ring.geo.mask()) != Stamp::NotYet
    }

    /// Registers as a sleeper unless something is readable or the stream ended.
    pub fn prepare_sleep(&self) -> Sleep {
        // Acquire: pairs with the bumps of the wake word (after a SeqCst fence in
        // `Ring::end`): a consumer that sees the end's bump sees the end's state below.
        let w = self.ring.w32(off::WAKE).load(Ordering::Acquire);
        // Dekker pair with `Producer::notify` (which stores the stamp, then loads the
        // sleepers): either the re-check below sees the new stamp, or the producer sees this
        // sleeper, on the wake value it read, and bumps the wake word, so the futex wait
        // returns at once. The stream's end needs no pair: `Ring::end` always bumps the wake
        // word.
        // `fetch_update` is `try_update` on newer nightlies; the old name builds on 1.75 and loom.
        #[allow(deprecated)]
        let _ = self
            .ring
            .w32(off::SLEEPERS)
            .fetch_update(DEKKER, Ordering::Relaxed, |s| {
                Some(sleepers::register(s, w))
            });
        if let Some(r) = self.record {
            self.ring
                .rec32(r, off::rec::SLEEPING)
                .store(1, Ordering::Relaxed);
        }
        dekker_fence();
        if self.readable_dekker() || !self.ring.is_open() {
            self.finish_sleep();
            return Sleep::Ready;
        }
        Sleep::Wait(w)
    }

    /// `readable` with the stamp loaded as the second half of a Dekker pair.
    fn readable_dekker(&self) -> bool {
        let c = self.cursor;
        let s = self.ring.stamp(c).load(DEKKER);
        classify(s, c, self.ring.geo.mask()) != Stamp::NotYet
    }

    /// Sleeps until woken or `timeout`, after `prepare_sleep` said `Wait`.
    pub fn sleep(&self, token: u32, timeout: Duration) {
        self.ring.mem.wait(off::WAKE, token, timeout);
    }

    /// Deregisters after a sleep (and after `prepare_sleep` said `Wait`).
    pub fn finish_sleep(&self) {
        // Flag first, count second (the reverse of `prepare_sleep`): qcopd, cleaning up
        // after a consumer that died in between, never takes a sleeper off the count that
        // was not on it.
        if let Some(r) = self.record {
            self.ring
                .rec32(r, off::rec::SLEEPING)
                .store(0, Ordering::Relaxed);
        }
        self.ring.drop_sleeper();
    }

    /// qcopd's side: marks the event-fd consumer asleep unless something is readable or
    /// the stream ended; returns whether it may sleep (wait for the event fd).
    pub fn prepare_event_sleep(&self) -> bool {
        // Dekker pair with `Producer::notify`, as in `prepare_sleep`.
        self.ring.w32(off::SLEEPERS).fetch_or(EVENT_SLEEPER, DEKKER);
        dekker_fence();
        !self.readable_dekker() && self.ring.is_open()
    }

    /// Waits until `peek` has something to say, sleeping as `mode` says, until `deadline`.
    /// Fails with `Ended` once the stream ended and everything committed was read, with
    /// `DaemonGone` if `alive` (asked between sleeps) says qcopd is gone.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        mode: WaitMode,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<(), StreamError> {
        let mut spin = Spinner::new(mode, deadline);
        loop {
            if self.readable() {
                return Ok(());
            }
            if !self.ring.is_open() {
                // Committed before the end (Release/Acquire on the state): one last look.
                return if self.readable() {
                    Ok(())
                } else {
                    Err(StreamError::Ended)
                };
            }
            match spin.next() {
                Spin::Again => continue,
                Spin::Check => {}
                Spin::TimedOut => return Err(StreamError::Timeout),
                Spin::Sleep(slice) => {
                    if let Sleep::Wait(token) = self.prepare_sleep() {
                        self.sleep(token, slice);
                        self.finish_sleep();
                    }
                }
            }
            if !self.readable() && !alive() {
                return Err(StreamError::DaemonGone);
            }
        }
    }

    /// Waits (as [`Consumer::wait`]) up to `timeout` for the next message and copies it
    /// into `buf`. A message that is ready is returned without reading the clock.
    pub fn recv_into(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
        mode: WaitMode,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<Received, StreamError> {
        let mut deadline = Deadline::new(timeout);
        loop {
            if let Some(r) = self.try_recv_into(buf)? {
                return Ok(r);
            }
            let d = deadline.for_wait()?;
            self.wait(d, mode, alive)?;
        }
    }
}
