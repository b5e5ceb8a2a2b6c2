//! Partial input frames under the memory budget: a client's read buffer is charged to its
//! user ([`Quota`](crate::daemon::quota::Quota)) after every read, and a client whose
//! partial frame would take its user past its share, or the daemon past
//! `max_total_queue_bytes`, is dropped with an error saying which. A client that holds a
//! partial frame without completing a frame for `partial_frame_timeout_ms` is dropped too.

use super::{Server, Slot, Timer};
use crate::wire::{ErrorCode, FrameReader};
use std::time::{Duration, Instant};

impl Server {
    /// Charges the read buffer `slot` holds now (0 once idle and released) to its user, or
    /// drops the client when that is refused. A buffer that starts holding a partial frame
    /// starts the partial-frame timeout (`now` is the event loop's clock).
    pub(super) fn charge_input(&mut self, slot: Slot, now: Instant) {
        let limits = self.cfg.input_limits();
        let queued = self.queued_total;
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let new = c.reader.held() as u64;
        let old = c.input_charged;
        if new == old {
            return;
        }
        let refusal = match self.quota.charge_input(c.uid, old, new, queued, limits) {
            Ok(()) => {
                c.input_charged = new;
                if new > 0 && !c.partial_timer {
                    self.arm_partial_timer(slot, now);
                }
                return;
            }
            Err(refusal) => refusal,
        };
        // The buffer goes at once: its memory is what the budget protects.
        c.reader = FrameReader::new(0);
        c.input_charged = 0;
        let (id, pid, uid) = (c.id, c.pid, c.uid);
        self.quota.release_input(uid, old);
        self.counters.clients_dropped_input_budget += 1;
        log::warn!("client {id} (pid {pid}, uid {uid}) dropped: {refusal}");
        self.fatal(slot, ErrorCode::TooLarge, &refusal.to_string());
    }

    /// The partial-frame timeout of client `id` in `slot` armed when it had sent `frames`
    /// frames (counted whichever read buffer they arrived in: an idle client reads into the
    /// shared buffer): the client is dropped if it still holds a partial frame and has
    /// completed none since; if it completed one, the timeout starts again.
    pub(super) fn partial_frame_due(&mut self, slot: Slot, id: u32, frames: u64, now: Instant) {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.id != id {
            return;
        }
        c.partial_timer = false;
        if c.closing || c.input_charged == 0 {
            return;
        }
        if c.frames_in != frames {
            // Frames keep arriving: the timeout applies to the one in progress now.
            self.arm_partial_timer(slot, now);
            return;
        }
        let (pid, uid, held) = (c.pid, c.uid, c.input_charged);
        c.reader = FrameReader::new(0);
        c.input_charged = 0;
        self.quota.release_input(uid, held);
        self.counters.clients_dropped_partial_timeout += 1;
        let ms = self.cfg.partial_frame_timeout_ms;
        log::warn!("client {id} (pid {pid}, uid {uid}) dropped: a frame not completed in {ms} ms");
        let text = format!("frame not completed within partial_frame_timeout_ms = {ms}");
        self.fatal(slot, ErrorCode::Timeout, &text);
    }

    /// Starts the partial-frame timeout of the client in `slot`.
    fn arm_partial_timer(&mut self, slot: Slot, now: Instant) {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.partial_timer = true;
        let timer = Timer::PartialFrame {
            slot,
            id: c.id,
            frames: c.frames_in,
        };
        let timeout = Duration::from_millis(self.cfg.partial_frame_timeout_ms as u64);
        self.timers.add(now + timeout, timer);
    }
}
