//! Duplicate detection for messages that reach a daemon by more than one path (meshes with
//! cycles, and copies buffered for a link while another path carried them).
//!
//! Each message carries its origin daemon and a number the origin gave it. Per origin a
//! sliding window remembers the highest number seen and which of the last [`WINDOW`] numbers
//! arrived. A number older than the window is treated as a duplicate: delivering it that
//! late would also break the per-sender order.

use super::topo::DaemonId;

/// Numbers remembered per origin.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;
/// Origins tracked at most; the least recently heard one is forgotten first.
pub const MAX_ORIGINS: usize = 128;

struct Window {
    hi: u64,
    bits: [u64; WORDS],
    /// Value of the owner's clock when this origin was last heard.
    used: u64,
}

impl Window {
    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.hi {
            if seq - self.hi >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.hi + 1..=seq {
                    let (w, b) = Window::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.hi = seq;
        } else if self.hi - seq >= WINDOW {
            return false;
        }
        let (w, b) = Window::bit(seq);
        let fresh = self.bits[w] & b == 0;
        self.bits[w] |= b;
        fresh
    }
}

/// The windows of all origins (a few boards: a small vector).
#[derive(Default)]
pub struct Dedupe {
    windows: Vec<(DaemonId, Window)>,
    clock: u64,
}

impl Dedupe {
    /// True the first time `(origin, seq)` is seen, false for a duplicate.
    pub fn accept(&mut self, origin: DaemonId, seq: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if let Some((_, w)) = self.windows.iter_mut().find(|(o, _)| *o == origin) {
            w.used = clock;
            return w.accept(seq);
        }
        if self.windows.len() >= MAX_ORIGINS {
            let oldest = (0..self.windows.len()).min_by_key(|&i| self.windows[i].1.used);
            if let Some(i) = oldest {
                self.windows.swap_remove(i);
            }
        }
        let mut w = Window {
            hi: seq,
            bits: [0; WORDS],
            used: clock,
        };
        w.accept(seq);
        self.windows.push((origin, w));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_passes_once() {
        let mut d = Dedupe::default();
        assert!(d.accept(1, 10));
        assert!(!d.accept(1, 10));
        assert!(d.accept(1, 12));
        // Out of order within the window: still new once.
        assert!(d.accept(1, 11));
        assert!(!d.accept(1, 11));
        // Another origin has its own numbers.
        assert!(d.accept(2, 10));
    }

    #[test]
    fn older_than_the_window_is_a_duplicate() {
        let mut d = Dedupe::default();
        assert!(d.accept(1, 1));
        assert!(d.accept(1, 1 + WINDOW));
        assert!(!d.accept(1, 1));
        assert!(d.accept(1, 2));
        // A jump past the window forgets everything before it.
        assert!(d.accept(1, 10 * WINDOW));
        assert!(d.accept(1, 10 * WINDOW - 1));
        assert!(!d.accept(1, 10 * WINDOW - WINDOW));
    }

    #[test]
    fn slots_are_cleared_as_the_window_moves() {
        let mut d = Dedupe::default();
        for s in 1..=3 * WINDOW {
            assert!(d.accept(7, s), "{s}");
        }
        for s in 2 * WINDOW + 1..=3 * WINDOW {
            assert!(!d.accept(7, s), "{s}");
        }
    }

    #[test]
    fn origins_are_bounded() {
        let mut d = Dedupe::default();
        for o in 0..MAX_ORIGINS as u64 + 10 {
            assert!(d.accept(o, 1));
        }
        assert!(d.windows.len() <= MAX_ORIGINS);
        // The most recent ones are still remembered.
        assert!(!d.accept(MAX_ORIGINS as u64 + 9, 1));
    }
}
