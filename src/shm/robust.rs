//! The segment lock: a futex mutex in one shared 32-bit word that survives its holder's
//! death.
//!
//! ```text
//! bit 31       WAITERS     someone may sleep in FUTEX_WAIT: unlock must wake
//! bit 30       OWNER_DIED  the last holder died holding the lock
//! bits 0..=29  owner       the holder's token, 0 when free
//! ```
//!
//! This is the robust-futex protocol without the kernel's robust list (qemu-user has no
//! `set_robust_list`, and glibc owns each thread's list anyway). Someone else marks a dead
//! holder instead: the daemon when the holder's connection closes ([`RobustLock::recover`]),
//! or, while the daemon is unreachable, a waiter that finds the holder's process gone. Waiters
//! therefore never sleep longer than [`SLICE`] at a time: between slices they ask their
//! caller whether the owner still lives. The next locker of a lock marked `OWNER_DIED` gets
//! it with [`Acquired::OwnerDied`]: the data may be half-written, and it is told so once.

use super::futex::{self, Wait};
use super::token::{Liveness, Token, TOKEN_MASK};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Someone may be sleeping on the word.
pub const WAITERS: u32 = 0x8000_0000;
/// The previous holder died while holding the lock.
pub const OWNER_DIED: u32 = 0x4000_0000;
/// The holder's token.
pub const OWNER_MASK: u32 = TOKEN_MASK;

/// Longest single sleep of a waiter before it re-checks the owner.
pub const SLICE: Duration = Duration::from_millis(200);

/// How a lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// From a holder that unlocked it.
    Clean,
    /// From a holder that died holding it: the data it protects may be inconsistent.
    OwnerDied,
}

/// Why a lock was not obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFailure {
    /// Held by someone else (`try_lock`), with the holder's token as stored.
    Busy {
        /// Raw owner bits of the word.
        owner: u32,
    },
    /// The timeout passed.
    TimedOut,
    /// This token already holds the lock: locking again would deadlock.
    Recursive,
}

/// `unlock` by a token that does not hold the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOwner {
    /// Raw owner bits of the word (0: nobody holds it).
    pub owner: u32,
}

/// A view of one lock word. Holds no state of its own: any number of views, in any number
/// of processes, may exist for one word.
#[derive(Debug, Clone, Copy)]
pub struct RobustLock<'a> {
    word: &'a AtomicU32,
}

impl<'a> RobustLock<'a> {
    /// The lock stored in `word` (0 = free).
    #[inline]
    pub fn new(word: &'a AtomicU32) -> Self {
        RobustLock { word }
    }

    /// The word itself (benchmarks, tests).
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// The current holder's raw token, 0 when free.
    pub fn owner(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & OWNER_MASK
    }

    /// Takes the lock if it is free; never sleeps.
    #[inline]
    pub fn try_lock(&self, me: Token) -> Result<Acquired, LockFailure> {
        // The common case first: free and clean. Acquire: pairs with the Release in
        // `unlock`.
        let mut w =
            match self
                .word
                .compare_exchange(0, me.raw(), Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(Acquired::Clean),
                Err(now) => now,
            };
        loop {
            let owner = w & OWNER_MASK;
            if owner == me.raw() {
                return Err(LockFailure::Recursive);
            }
            if owner != 0 {
                return Err(LockFailure::Busy { owner });
            }
            match self.take(w, me.raw() | (w & WAITERS)) {
                Ok(a) => return Ok(a),
                Err(now) => w = now,
            }
        }
    }

    /// Takes the lock, sleeping while it is held, for at most `timeout` (`None`: no limit).
    ///
    /// After every [`SLICE`] of sleep without a wake-up, `liveness` is asked about the
    /// holder's raw token; [`Liveness::Dead`] makes this waiter mark the lock `OWNER_DIED`
    /// and take it. Callers answer [`Liveness::Unknown`] while the daemon is reachable (it
    /// marks dead holders itself) and check the holder's process otherwise.
    pub fn lock(
        &self,
        me: Token,
        timeout: Option<Duration>,
        liveness: &mut dyn FnMut(u32) -> Liveness,
    ) -> Result<Acquired, LockFailure> {
        match self.try_lock(me) {
            Err(LockFailure::Busy { .. }) => {}
            other => return other,
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            let owner = w & OWNER_MASK;
            if owner == 0 {
                // Free. Having waited, we cannot know whether others still sleep: keep
                // WAITERS set so our unlock wakes one of them.
                match self.take(w, me.raw() | WAITERS) {
                    Ok(a) => return Ok(a),
                    Err(now) => {
                        w = now;
                        continue;
                    }
                }
            }
            if owner == me.raw() {
                return Err(LockFailure::Recursive);
            }
            if w & WAITERS == 0 {
                if let Err(now) = self.word.compare_exchange_weak(
                    w,
                    w | WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    w = now;
                    continue;
                }
                w |= WAITERS;
            }
            let slice = match deadline {
                None => SLICE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.pass_on_wake();
                        return Err(LockFailure::TimedOut);
                    }
                    left.min(SLICE)
                }
            };
            if futex::wait(self.word, w, Some(slice)) == Wait::TimedOut
                && liveness(owner) == Liveness::Dead
            {
                self.recover(owner);
            }
            w = self.word.load(Ordering::Relaxed);
        }
    }

    /// Releases the lock held by `me`, waking one waiter if any sleeps.
    #[inline]
    pub fn unlock(&self, me: Token) -> Result<(), NotOwner> {
        // The common case first: held by us, nobody waiting. Release: pairs with the
        // Acquire in `take` / `try_lock` of the next holder, which then sees everything
        // written under the lock.
        let mut w =
            match self
                .word
                .compare_exchange(me.raw(), 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => now,
            };
        loop {
            if w & OWNER_MASK != me.raw() {
                return Err(NotOwner {
                    owner: w & OWNER_MASK,
                });
            }
            // Release: pairs with the Acquire in `take` of the next holder, which then sees
            // everything written under the lock.
            match self
                .word
                .compare_exchange_weak(w, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
            futex::wake(self.word, 1);
        }
        Ok(())
    }

    /// Marks the lock `OWNER_DIED` if `dead` (a raw token) holds it, and wakes every
    /// waiter; returns whether it did. Called by the daemon for a holder whose connection
    /// closed, and by waiters that found the holder's process gone.
    pub fn recover(&self, dead: u32) -> bool {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if dead == 0 || w & OWNER_MASK != dead & OWNER_MASK {
                return false;
            }
            match self.word.compare_exchange_weak(
                w,
                (w & WAITERS) | OWNER_DIED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        // All of them: the one a single wake would pick may itself be dead.
        futex::wake_all(self.word);
        true
    }

    /// Takes the lock if it is free, for an attacher that locks through the daemon (a
    /// read-only one): as [`RobustLock::try_lock`], except that after the attacher slept on
    /// the word (`waited`), `WAITERS` stays set, as in [`RobustLock::lock`], so that our
    /// unlock wakes whoever else sleeps.
    pub fn try_lock_after(&self, me: Token, waited: bool) -> Result<Acquired, LockFailure> {
        if !waited {
            return self.try_lock(me);
        }
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            let owner = w & OWNER_MASK;
            if owner == me.raw() {
                return Err(LockFailure::Recursive);
            }
            if owner != 0 {
                return Err(LockFailure::Busy { owner });
            }
            match self.take(w, me.raw() | WAITERS) {
                Ok(a) => return Ok(a),
                Err(now) => w = now,
            }
        }
    }

    /// Sets `WAITERS` on a held lock, so that its unlock wakes sleepers, and returns the
    /// word as it then is: the value a waiter passes to `FUTEX_WAIT`. A free lock is left
    /// alone (owner bits 0 in the result: try again).
    pub fn announce_waiter(&self) -> u32 {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & OWNER_MASK == 0 || w & WAITERS != 0 {
                return w;
            }
            match self.word.compare_exchange_weak(
                w,
                w | WAITERS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return w | WAITERS,
                Err(now) => w = now,
            }
        }
    }

    /// CAS from `from` (free) to `to`; reports whether the previous holder died.
    #[inline]
    fn take(&self, from: u32, to: u32) -> Result<Acquired, u32> {
        // Acquire: pairs with the Release in `unlock` (and the AcqRel in `recover`).
        self.word
            .compare_exchange_weak(from, to, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| {
                if from & OWNER_DIED != 0 {
                    Acquired::OwnerDied
                } else {
                    Acquired::Clean
                }
            })
    }

    /// A waiter giving up may have consumed the wake-up meant for the next holder: pass it
    /// on if the lock is free.
    fn pass_on_wake(&self) {
        if self.word.load(Ordering::Relaxed) & OWNER_MASK == 0 {
            futex::wake(self.word, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tok(pid: u32) -> Token {
        Token::new(pid, 0).unwrap()
    }

    fn unknown(_: u32) -> Liveness {
        Liveness::Unknown
    }

    #[test]
    fn lock_try_lock_unlock_and_ownership() {
        let word = AtomicU32::new(0);
        let l = RobustLock::new(&word);
        assert_eq!(l.try_lock(tok(1)), Ok(Acquired::Clean));
        assert_eq!(l.owner(), tok(1).raw());
        assert_eq!(
            l.try_lock(tok(2)),
            Err(LockFailure::Busy {
                owner: tok(1).raw()
            })
        );
        assert_eq!(l.try_lock(tok(1)), Err(LockFailure::Recursive));
        assert_eq!(
            l.lock(tok(1), None, &mut unknown),
            Err(LockFailure::Recursive)
        );
        assert_eq!(
            l.unlock(tok(2)),
            Err(NotOwner {
                owner: tok(1).raw()
            })
        );
        assert_eq!(l.unlock(tok(1)), Ok(()));
        assert_eq!(l.unlock(tok(1)), Err(NotOwner { owner: 0 }));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lock_timeout_expires_while_held() {
        let word = AtomicU32::new(0);
        let l = RobustLock::new(&word);
        l.try_lock(tok(1)).unwrap();
        let r = l.lock(tok(2), Some(Duration::from_millis(30)), &mut unknown);
        assert_eq!(r, Err(LockFailure::TimedOut));
        assert_eq!(l.owner(), tok(1).raw(), "the holder keeps it");
        assert_ne!(word.load(Ordering::Relaxed) & WAITERS, 0);
        l.unlock(tok(1)).unwrap();
        assert_eq!(
            l.lock(tok(2), Some(Duration::ZERO), &mut unknown),
            Ok(Acquired::Clean)
        );
    }

    #[test]
    fn recovered_lock_reports_owner_died_once() {
        let word = AtomicU32::new(0);
        let l = RobustLock::new(&word);
        l.try_lock(tok(7)).unwrap();
        assert!(!l.recover(tok(8).raw()), "not the holder");
        assert!(l.recover(tok(7).raw()));
        assert!(!l.recover(tok(7).raw()), "already recovered");
        assert_eq!(l.try_lock(tok(9)), Ok(Acquired::OwnerDied));
        l.unlock(tok(9)).unwrap();
        assert_eq!(l.try_lock(tok(9)), Ok(Acquired::Clean));
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_recovery() {
        let word = Arc::new(AtomicU32::new(0));
        RobustLock::new(&word).try_lock(tok(3)).unwrap();
        let w2 = Arc::clone(&word);
        let waiter = std::thread::spawn(move || {
            RobustLock::new(&w2).lock(tok(4), Some(Duration::from_secs(20)), &mut unknown)
        });
        while word.load(Ordering::Relaxed) & WAITERS == 0 {
            std::thread::yield_now();
        }
        assert!(RobustLock::new(&word).recover(tok(3).raw()));
        assert_eq!(waiter.join().unwrap(), Ok(Acquired::OwnerDied));
    }

    #[test]
    fn waiters_take_over_from_a_holder_their_liveness_check_finds_dead() {
        let word = AtomicU32::new(0);
        let l = RobustLock::new(&word);
        l.try_lock(tok(11)).unwrap();
        let mut asked = Vec::new();
        let r = l.lock(tok(12), Some(Duration::from_secs(20)), &mut |owner| {
            asked.push(owner);
            if asked.len() < 2 {
                Liveness::Alive
            } else {
                Liveness::Dead
            }
        });
        assert_eq!(r, Ok(Acquired::OwnerDied));
        assert_eq!(asked, vec![tok(11).raw(); 2]);
    }

    #[test]
    fn brokered_locking_announces_waiters_and_keeps_them_after_a_wait() {
        let word = AtomicU32::new(0);
        let l = RobustLock::new(&word);
        assert_eq!(l.announce_waiter(), 0, "free: nothing to announce");
        l.try_lock(tok(1)).unwrap();
        let w = l.announce_waiter();
        assert_eq!(w, tok(1).raw() | WAITERS);
        assert_eq!(
            l.try_lock_after(tok(2), true),
            Err(LockFailure::Busy {
                owner: tok(1).raw()
            })
        );
        l.unlock(tok(1)).unwrap();
        assert_eq!(l.try_lock_after(tok(2), true), Ok(Acquired::Clean));
        assert_eq!(word.load(Ordering::Relaxed), tok(2).raw() | WAITERS);
        assert_eq!(l.try_lock_after(tok(2), false), Err(LockFailure::Recursive));
    }

    /// Threads with their own tokens increment a counter under the lock without atomics;
    /// lost updates would show as a short total.
    #[test]
    fn threads_exclude_each_other() {
        let threads = 4;
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let word = Arc::new(AtomicU32::new(0));
        // A non-atomic read-modify-write split into two relaxed accesses: only mutual
        // exclusion keeps the total exact.
        let counter = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (word, counter) = (Arc::clone(&word), Arc::clone(&counter));
                std::thread::spawn(move || {
                    let me = tok(100 + i);
                    let l = RobustLock::new(&word);
                    for n in 0..rounds {
                        if n % 3 == 0 {
                            while l.try_lock(me).is_err() {
                                std::hint::spin_loop();
                            }
                        } else {
                            l.lock(me, None, &mut unknown).unwrap();
                        }
                        let v = counter.load(Ordering::Relaxed);
                        if n % 64 == 0 {
                            std::thread::yield_now();
                        }
                        counter.store(v + 1, Ordering::Relaxed);
                        l.unlock(me).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), threads * rounds);
        assert_eq!(word.load(Ordering::Relaxed) & OWNER_MASK, 0);
    }
}
