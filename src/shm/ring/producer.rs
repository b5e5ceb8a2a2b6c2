//! The writing end of a ring.

use super::spin::{Spin, Spinner};
use super::{Full, Ring, RingMemory, Sleep, StreamError, WaitMode};
use crate::shm::atomics::{dekker_fence, fence, Ordering, DEKKER};
use crate::shm::layout::{off, record, sleepers, Policy, EVENT_SLEEPER};
use std::time::{Duration, Instant};

/// Where a message to be written goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSlot {
    /// Its position.
    pub pos: u64,
    /// Offset of the payload in the memory.
    pub data: usize,
    /// Bytes available.
    pub capacity: usize,
}

/// The writing end of a ring. There is one per stream: qcopd hands the stream to one
/// publisher.
pub struct Producer<M> {
    ring: Ring<M>,
    /// Next position to write (the producer's own copy; the shared head follows it).
    head: u64,
    /// Lossless: every active consumer had released every position before this one at the
    /// last scan. May be stale (too low), never too high.
    tail: u64,
}

impl<M: RingMemory> Producer<M> {
    /// Takes the writing end of `ring`, continuing at its head.
    pub fn new(ring: Ring<M>) -> Producer<M> {
        let head = ring.head();
        let count = u64::from(ring.geo.slot_count());
        Producer {
            ring,
            head,
            // Unknown consumers: force a scan before the first lap completes.
            tail: head.wrapping_sub(count).wrapping_add(1),
        }
    }

    /// The ring.
    #[inline]
    pub fn ring(&self) -> &Ring<M> {
        &self.ring
    }

    /// Position of the next message.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Starts writing the next message: returns where its payload goes, or [`Full`] if the
    /// policy is lossless and the slowest consumer is a whole ring behind. Writing nothing
    /// and never committing is allowed (the next `try_begin` reuses the slot).
    #[inline]
    pub fn try_begin(&mut self) -> Result<WriteSlot, Full> {
        if self.ring.geo.policy() == Policy::Lossless && !self.has_space() {
            return Err(Full);
        }
        let p = self.head;
        let slot = self.ring.geo.slot_offset(p);
        // Mark the slot "being written" before touching its payload. Relaxed store, then a
        // Release fence: pairs with the Acquire fence a reader executes before re-checking
        // the stamp, so a reader that saw any byte written below sees this stamp (or a
        // later one) on its re-check and drops its copy.
        self.ring
            .stamp(p)
            .store(p.wrapping_sub(1), Ordering::Relaxed);
        fence(Ordering::Release);
        Ok(WriteSlot {
            pos: p,
            data: slot + off::slot::DATA,
            capacity: self.ring.geo.slot_size() as usize,
        })
    }

    /// Publishes the message of `slot` with `len` payload bytes (clamped to the capacity)
    /// and wakes sleeping consumers if there are any.
    #[inline]
    pub fn commit(&mut self, slot: WriteSlot, len: usize) {
        debug_assert_eq!(slot.pos, self.head);
        let p = self.head;
        let len = len.min(slot.capacity) as u32;
        let base = self.ring.geo.slot_offset(p);
        self.ring
            .w32(base + off::slot::LEN)
            .store(len, Ordering::Relaxed);
        // SeqCst (at least Release): pairs with the reader's Acquire load of the stamp, so
        // length and payload are visible to a reader that sees the stamp `p`; and it is the
        // first half of the Dekker pair with a consumer going to sleep (see `notify`).
        self.ring.stamp(p).store(p, DEKKER);
        self.head = p.wrapping_add(1);
        // Release: pairs with the Acquire in `Ring::head` (joining and overrun consumers).
        self.ring.w64(off::HEAD).store(self.head, Ordering::Release);
        self.notify();
    }

    /// Copies `data` into the next slot and commits it; [`Full`] as for `try_begin`.
    /// `data` longer than the slot is cut: callers check the size first.
    pub fn try_send(&mut self, data: &[u8]) -> Result<(), Full> {
        let slot = self.try_begin()?;
        let n = data.len().min(slot.capacity);
        self.ring.mem.write_bytes(slot.data, &data[..n]);
        self.commit(slot, n);
        Ok(())
    }

    #[inline]
    fn notify(&self) {
        // Dekker pair with `Consumer::prepare_sleep` (and qcopd's `prepare_event_sleep`),
        // which registers as a sleeper and then loads the stamp: either its re-check sees
        // the stamp stored by `commit`, or this load sees it counted and it is woken.
        dekker_fence();
        let s = self.ring.w32(off::SLEEPERS).load(DEKKER);
        if s != 0 {
            self.wake(s);
        }
    }

    #[cold]
    fn wake(&self, s: u32) {
        // Sleepers on an older wake value were woken already (they deregister when they
        // run again): only a sleeper on the current value needs a system call. The
        // producer bumps the wake word itself, so its load sees the current value (or a
        // later bump by `Ring::end`, which woke everybody).
        let wake = self.ring.w32(off::WAKE);
        if sleepers::sleeps_on(s, wake.load(Ordering::Relaxed)) {
            wake.fetch_add(1, Ordering::Relaxed);
            self.ring.mem.wake_all(off::WAKE);
        }
        // Only the producer that clears the bit writes the event fd: one write per sleep.
        if s & EVENT_SLEEPER != 0
            && self
                .ring
                .w32(off::SLEEPERS)
                .fetch_and(!EVENT_SLEEPER, Ordering::Relaxed)
                & EVENT_SLEEPER
                != 0
        {
            self.ring.mem.signal_event();
        }
    }

    #[inline]
    fn has_space(&mut self) -> bool {
        let count = u64::from(self.ring.geo.slot_count());
        if self.head.wrapping_sub(self.tail) < count {
            return true;
        }
        self.rescan();
        self.head.wrapping_sub(self.tail) < count
    }

    /// Recomputes the slowest active consumer's cursor.
    fn rescan(&mut self) {
        let count = u64::from(self.ring.geo.slot_count());
        // SeqCst: pairs with the fences in `Ring::join` and `Ring::leave`, and with the
        // SeqCst cursor store and waiting-flag load of `Ring::publish_cursor`.
        fence(Ordering::SeqCst);
        let mut lag = 0u64;
        for r in 0..self.ring.geo.records() {
            // Acquire: pairs with the Release store of the state in `Ring::join`.
            if self.ring.rec32(r, off::rec::STATE).load(Ordering::Acquire) != record::ACTIVE {
                continue;
            }
            // Acquire: pairs with the Release store in `Ring::publish_cursor`.
            let c = self.ring.cursor_word(r).load(Ordering::Acquire);
            // A cursor ahead of the head is nonsense (ignored); one more than a ring behind
            // only happens while a consumer joins, and counts as a full ring.
            let behind = self.head.wrapping_sub(c);
            if (behind as i64) > 0 {
                lag = lag.max(behind.min(count));
            }
        }
        self.tail = self.head.wrapping_sub(lag);
    }

    /// Waits until a slot is free (lossless) and starts writing it, sleeping as `mode`
    /// says, for at most `timeout`. `alive` is asked between sleeps whether qcopd is still
    /// there. The fast path (room in the ring) reads no clock.
    pub fn begin(
        &mut self,
        timeout: Duration,
        mode: WaitMode,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<WriteSlot, StreamError> {
        if !self.ring.is_open() {
            return Err(StreamError::Ended);
        }
        if let Ok(s) = self.try_begin() {
            return Ok(s);
        }
        self.wait_for_space(Instant::now().checked_add(timeout), mode, alive)?;
        self.try_begin().map_err(|Full| StreamError::Timeout)
    }

    /// Announces that the producer waits for space, unless a rescan finds some (or the
    /// stream ended). `Wait(token)`: sleep on the space word while it holds `token`.
    pub fn prepare_space_sleep(&mut self) -> Sleep {
        let w = self.ring.w32(off::SPACE).load(Ordering::Relaxed);
        self.ring
            .w32(off::PRODUCER_WAITING)
            .store(1, Ordering::Relaxed);
        // The rescan starts with a SeqCst fence, which pairs with the SeqCst cursor store
        // and flag load in `Ring::publish_cursor`: either the rescan sees the consumer's
        // new cursor, or that consumer sees the flag stored above and bumps the space word.
        self.rescan();
        let count = u64::from(self.ring.geo.slot_count());
        if self.head.wrapping_sub(self.tail) < count || !self.ring.is_open() {
            return Sleep::Ready;
        }
        Sleep::Wait(w)
    }

    /// Clears the waiting flag after `prepare_space_sleep`.
    pub fn finish_space_sleep(&self) {
        self.ring
            .w32(off::PRODUCER_WAITING)
            .store(0, Ordering::Relaxed);
    }

    fn wait_for_space(
        &mut self,
        deadline: Option<Instant>,
        mode: WaitMode,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<(), StreamError> {
        let mut spin = Spinner::new(mode, deadline);
        loop {
            if !self.ring.is_open() {
                return Err(StreamError::Ended);
            }
            if self.has_space() {
                return Ok(());
            }
            match spin.next() {
                Spin::Again => continue,
                Spin::Check => {}
                Spin::TimedOut => return Err(StreamError::Timeout),
                Spin::Sleep(slice) => {
                    if let Sleep::Wait(token) = self.prepare_space_sleep() {
                        self.ring.mem.wait(off::SPACE, token, slice);
                    }
                    self.finish_space_sleep();
                }
            }
            if !alive() {
                return Err(StreamError::DaemonGone);
            }
        }
    }
}
