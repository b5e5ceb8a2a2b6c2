//! The spin-then-sleep schedule of a wait.

use super::{WaitMode, WAIT_SLICE};
use crate::shm::atomics::spin_hint;
use std::time::{Duration, Instant};

/// Spin iterations between two looks at the clock.
const SPINS_PER_CLOCK: u32 = 256;
/// Spin iterations between two liveness checks (a system call) while spinning.
const SPINS_PER_CHECK: u32 = 1 << 16;

pub(super) enum Spin {
    /// Keep spinning.
    Again,
    /// Keep spinning, but first check that qcopd is still there.
    Check,
    /// Sleep at most this long.
    Sleep(Duration),
    /// The deadline passed.
    TimedOut,
}

/// The spin-then-sleep schedule of one wait. Reads the clock only every
/// `SPINS_PER_CLOCK` spins (and before each sleep), never on a wait's first iterations.
pub(super) struct Spinner {
    mode: WaitMode,
    deadline: Option<Instant>,
    /// Adaptive: when spinning stops (fixed at the first look at the clock).
    spin_until: Option<Instant>,
    spinning: bool,
    spins: u32,
}

impl Spinner {
    pub(super) fn new(mode: WaitMode, deadline: Option<Instant>) -> Spinner {
        Spinner {
            mode,
            deadline,
            spin_until: None,
            spinning: mode != WaitMode::Sleep,
            spins: 0,
        }
    }

    #[inline]
    pub(super) fn next(&mut self) -> Spin {
        if self.spinning {
            self.spins = self.spins.wrapping_add(1);
            if self.spins % SPINS_PER_CLOCK != 0 {
                spin_hint();
                return Spin::Again;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Spin::TimedOut;
            }
            if let WaitMode::Adaptive(d) = self.mode {
                let until = *self.spin_until.get_or_insert(now + d);
                self.spinning = now < until;
            }
            if self.spinning {
                spin_hint();
                // Spinning still checks liveness now and then (a system call).
                return if self.spins % SPINS_PER_CHECK == 0 {
                    Spin::Check
                } else {
                    Spin::Again
                };
            }
        }
        let now = Instant::now();
        match self.deadline {
            Some(d) if now >= d => Spin::TimedOut,
            Some(d) => Spin::Sleep((d - now).min(WAIT_SLICE)),
            None => Spin::Sleep(WAIT_SLICE),
        }
    }
}
