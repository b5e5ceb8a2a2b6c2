//! Counting semaphores in shared words, with optional undo slots (what SysV `SEM_UNDO`
//! did: units a dead process acquired are given back).
//!
//! ```text
//! value    u32  units available, 0..=max
//! waiters  u32  processes that may sleep on `value` (a hint: a dead waiter leaves it
//!               too high, which only costs releasers a futex wake syscall)
//! slot     u32 token + i32 adjustment, one per attachment of an undo semaphore
//! ```
//!
//! An undo slot's adjustment is what the attachment owes back: +n per unit acquired, −n per
//! unit released, as SysV's `semadj`. When the attachment goes away without releasing, the
//! daemon (or, while the daemon is unreachable, a waiter that finds the attacher's process
//! gone) reclaims the slot and adds the adjustment to the value, clamped to `0..=max`.
//!
//! Every opener may write these words, so none of them is trusted: the maximum is the
//! daemon's (from its answer, never from the block), and a value found above it counts as
//! the maximum. `try_acquire` and `release` move a value above the maximum back into range
//! in the same CAS, so a scribbled value can hand out at most `max` units, and the value
//! never reads above the maximum.
//!
//! The value and the slot are two words, so a process killed between updating one and the
//! other leaves them out of step. The updates are ordered so that this can only lose the
//! units of that one operation, never hand out a unit twice: `acquire` takes the unit
//! before recording it, `release` un-records it before giving it back.

use super::futex::{self, Wait};
use super::robust::SLICE;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The largest `max` a semaphore may have (adjustments are signed 32-bit).
pub const MAX_VALUE: u32 = i32::MAX as u32;

/// `release` would raise the value above the semaphore's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// The value found.
    pub value: u32,
    /// The maximum.
    pub max: u32,
}

/// One attachment's undo record.
#[derive(Debug, Clone, Copy)]
pub struct UndoSlot<'a> {
    /// The attachment's token, 0 when the slot is free or reclaimed.
    pub token: &'a AtomicU32,
    /// Units owed back, as an `i32` stored in a `u32`.
    pub adj: &'a AtomicU32,
}

/// A view of a semaphore's words. Holds no state of its own.
#[derive(Debug, Clone, Copy)]
pub struct Counting<'a> {
    value: &'a AtomicU32,
    waiters: &'a AtomicU32,
    max: u32,
}

impl<'a> Counting<'a> {
    /// The semaphore in `value` and `waiters`, bounded by `max` (at most [`MAX_VALUE`]).
    pub fn new(value: &'a AtomicU32, waiters: &'a AtomicU32, max: u32) -> Self {
        Counting {
            value,
            waiters,
            max: max.min(MAX_VALUE),
        }
    }

    /// Units available now (a value written above the maximum counts as the maximum).
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed).min(self.max)
    }

    /// Daemon: brings a value written above the maximum back to it; returns whether it
    /// had to.
    pub fn clamp(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > self.max {
            match self
                .value
                .compare_exchange_weak(v, self.max, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// The maximum value.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Takes one unit if one is available; never sleeps.
    pub fn try_acquire(&self, undo: Option<UndoSlot<'_>>) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            // Above the maximum: only `max` units are real.
            let have = v.min(self.max);
            if have == 0 {
                return false;
            }
            // Acquire: pairs with the release in `release`, so what the releaser wrote
            // before giving the unit back is visible to us.
            match self.value.compare_exchange_weak(
                v,
                have - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if let Some(u) = undo {
            u.adj.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Takes one unit, sleeping while none is available, for at most `timeout` (`None`:
    /// no limit). Returns false on timeout. `on_slice` runs after each [`SLICE`] of sleep
    /// without a wake-up (the caller reclaims dead attachers' units there).
    pub fn acquire(
        &self,
        undo: Option<UndoSlot<'_>>,
        timeout: Option<Duration>,
        on_slice: &mut dyn FnMut(),
    ) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.try_acquire(undo) {
                return true;
            }
            let slice = match deadline {
                None => SLICE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    left.min(SLICE)
                }
            };
            // SeqCst on `waiters` and `value` on both sides: either the releaser sees our
            // increment and wakes us, or we see its unit (and the kernel's compare in
            // FUTEX_WAIT refuses to sleep on a changed value).
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let r = if self.value.load(Ordering::SeqCst) == 0 {
                futex::wait(self.value, 0, Some(slice))
            } else {
                Wait::Changed
            };
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if r == Wait::TimedOut {
                on_slice();
            }
        }
    }

    /// Gives back `n` units, waking up to `n` waiters. Fails without changing anything if
    /// the value would exceed the maximum.
    pub fn release(&self, n: u32, undo: Option<UndoSlot<'_>>) -> Result<(), Overflow> {
        if n == 0 {
            return Ok(());
        }
        let n = n.min(MAX_VALUE);
        // Un-record first: dying right after this loses `n` units instead of giving them
        // back twice.
        if let Some(u) = undo {
            u.adj.fetch_sub(n, Ordering::Relaxed);
        }
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            let Some(new) = v.min(self.max).checked_add(n).filter(|&x| x <= self.max) else {
                if let Some(u) = undo {
                    u.adj.fetch_add(n, Ordering::Relaxed);
                }
                return Err(Overflow {
                    value: v.min(self.max),
                    max: self.max,
                });
            };
            // SeqCst: see `acquire`; it also releases what we wrote to the acquirer.
            match self
                .value
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(self.value, n);
        }
        Ok(())
    }

    /// Adds an attachment's adjustment back to the value, clamped to `0..=max`, and wakes
    /// waiters for the units that became available. Returns the change applied.
    pub fn apply_adjustment(&self, adj: i32) -> i64 {
        if adj == 0 {
            return 0;
        }
        let mut v = self.value.load(Ordering::Relaxed);
        let new = loop {
            let new =
                (i64::from(v.min(self.max)) + i64::from(adj)).clamp(0, i64::from(self.max)) as u32;
            match self
                .value
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break new,
                Err(now) => v = now,
            }
        };
        let v = v.min(self.max);
        if new > v && self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(self.value, new - v);
        }
        i64::from(new) - i64::from(v)
    }

    /// Reclaims `slot` if it still belongs to `token`: frees it and gives its adjustment
    /// back. Returns the adjustment, `None` if someone else reclaimed it first.
    pub fn reclaim(&self, slot: UndoSlot<'_>, token: u32) -> Option<i32> {
        if token == 0 {
            return None;
        }
        // Only one reclaimer wins the token; the dead attacher no longer writes `adj`.
        slot.token
            .compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let adj = slot.adj.swap(0, Ordering::AcqRel) as i32;
        self.apply_adjustment(adj);
        Some(adj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Words {
        value: AtomicU32,
        waiters: AtomicU32,
        token: AtomicU32,
        adj: AtomicU32,
    }

    impl Words {
        fn new(value: u32) -> Arc<Words> {
            Arc::new(Words {
                value: AtomicU32::new(value),
                waiters: AtomicU32::new(0),
                token: AtomicU32::new(0),
                adj: AtomicU32::new(0),
            })
        }
        fn sem(&self, max: u32) -> Counting<'_> {
            Counting::new(&self.value, &self.waiters, max)
        }
        fn slot(&self) -> UndoSlot<'_> {
            UndoSlot {
                token: &self.token,
                adj: &self.adj,
            }
        }
    }

    #[test]
    fn acquire_release_and_bounds() {
        let w = Words::new(2);
        let s = w.sem(3);
        assert!(s.try_acquire(None));
        assert!(s.try_acquire(None));
        assert!(!s.try_acquire(None));
        assert!(!s.acquire(None, Some(Duration::from_millis(20)), &mut || {}));
        s.release(3, None).unwrap();
        assert_eq!(s.value(), 3);
        assert_eq!(s.release(1, None), Err(Overflow { value: 3, max: 3 }));
        assert_eq!(s.value(), 3, "a refused release changes nothing");
        s.release(0, None).unwrap();
    }

    #[test]
    fn undo_slot_tracks_and_reclaim_returns_units() {
        let w = Words::new(5);
        let s = w.sem(5);
        w.token.store(42, Ordering::Relaxed);
        assert!(s.try_acquire(Some(w.slot())));
        assert!(s.try_acquire(Some(w.slot())));
        assert!(s.try_acquire(Some(w.slot())));
        s.release(1, Some(w.slot())).unwrap();
        assert_eq!(w.adj.load(Ordering::Relaxed) as i32, 2);
        assert_eq!(s.value(), 3);
        assert_eq!(s.reclaim(w.slot(), 41), None, "wrong token");
        assert_eq!(s.reclaim(w.slot(), 42), Some(2));
        assert_eq!(s.value(), 5);
        assert_eq!(s.reclaim(w.slot(), 42), None, "reclaimed once only");
        assert_eq!(w.token.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn adjustments_clamp_to_the_range() {
        let w = Words::new(1);
        let s = w.sem(4);
        assert_eq!(s.apply_adjustment(10), 3);
        assert_eq!(s.value(), 4);
        assert_eq!(s.apply_adjustment(-10), -4);
        assert_eq!(s.value(), 0);
        // A refused release restores the slot.
        w.adj.store(0, Ordering::Relaxed);
        let s = w.sem(0);
        assert!(s.release(1, Some(w.slot())).is_err());
        assert_eq!(w.adj.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_sleeping_acquirer_is_woken_by_release() {
        let w = Words::new(0);
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            w2.sem(1)
                .acquire(None, Some(Duration::from_secs(20)), &mut || {})
        });
        while w.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        w.sem(1).release(1, None).unwrap();
        assert!(t.join().unwrap());
        assert_eq!(w.value.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_value_written_above_the_maximum_yields_at_most_max_units() {
        let w = Words::new(0);
        let s = w.sem(2);
        w.value.store(1000, Ordering::Relaxed);
        assert_eq!(s.value(), 2);
        assert!(s.try_acquire(None));
        assert_eq!(w.value.load(Ordering::Relaxed), 1, "back in range");
        assert!(s.try_acquire(None));
        assert!(!s.try_acquire(None));
        w.value.store(u32::MAX, Ordering::Relaxed);
        assert_eq!(s.release(1, None), Err(Overflow { value: 2, max: 2 }));
        w.value.store(u32::MAX, Ordering::Relaxed);
        assert!(s.clamp());
        assert!(!s.clamp());
        assert_eq!(w.value.load(Ordering::Relaxed), 2);
        w.value.store(7, Ordering::Relaxed);
        assert_eq!(s.apply_adjustment(-1), -1, "counted from the maximum");
        assert_eq!(s.value(), 1);
    }

    /// Producers and consumers: every unit released is acquired exactly once, and the value
    /// never exceeds its bound.
    #[test]
    fn threads_never_lose_or_duplicate_units() {
        let per_thread = if cfg!(miri) { 50 } else { 20_000 };
        let w = Words::new(0);
        let max = 8;
        let mut handles = Vec::new();
        for _ in 0..2 {
            let w = Arc::clone(&w);
            handles.push(std::thread::spawn(move || {
                let s = w.sem(max);
                let mut sent = 0;
                while sent < per_thread {
                    if s.release(1, None).is_ok() {
                        sent += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        for _ in 0..2 {
            let w = Arc::clone(&w);
            handles.push(std::thread::spawn(move || {
                let s = w.sem(max);
                for _ in 0..per_thread {
                    assert!(s.acquire(None, Some(Duration::from_secs(60)), &mut || {}));
                    assert!(s.value() <= max);
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.value.load(Ordering::Relaxed), 0);
    }
}
