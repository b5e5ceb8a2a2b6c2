//! Deadlines of the event loop (call timeouts, handshake timeouts): a heap keyed by time,
//! with the time passed in by the caller, so the rules are unit-tested without a clock.
//!
//! Entries are never removed when what they time out ends early (an answered call):
//! [`Timers::compact`] drops the stale ones once they outnumber the live ones, so the heap
//! does not grow with *rate × timeout*.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Entries below which compaction never runs.
const COMPACT_MIN: usize = 256;

/// Pending deadlines, each with what it is for.
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, T)>>,
}

impl<T: Ord + Copy> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord + Copy> Timers<T> {
    /// Adds a deadline.
    pub fn add(&mut self, at: Instant, what: T) {
        self.heap.push(Reverse((at, what)));
    }

    /// The earliest deadline, stale or not.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one entry whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// When entries outnumber twice `live` (what can still time out), keeps only those
    /// `keep` accepts. Amortised O(1) per entry.
    pub fn compact(&mut self, live: usize, mut keep: impl FnMut(&T) -> bool) {
        if self.heap.len() > COMPACT_MIN && self.heap.len() > 2 * live {
            self.heap.retain(|Reverse((_, t))| keep(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Timers::default();
        t.add(ms(30), 'c');
        t.add(ms(10), 'a');
        t.add(ms(20), 'b');
        assert_eq!(t.next_deadline(), Some(ms(10)));
        assert_eq!(t.pop_due(ms(5)), None);
        assert_eq!(t.pop_due(ms(20)), Some('a'));
        assert_eq!(t.pop_due(ms(20)), Some('b'));
        assert_eq!(t.pop_due(ms(20)), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(ms(99)), Some('c'));
        assert!(t.is_empty());
    }

    #[test]
    fn stale_entries_are_dropped_once_they_outnumber_live_ones() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..1000u32 {
            t.add(t0 + Duration::from_secs(60), i);
        }
        // Few entries, or as many live as held: nothing is scanned.
        t.compact(1000, |_| false);
        assert_eq!(t.len(), 1000);
        // Ten still live: the rest go.
        t.compact(10, |&i| i < 10);
        assert_eq!(t.len(), 10);
        let mut small = Timers::default();
        small.add(t0, 1u32);
        small.compact(0, |_| false);
        assert_eq!(small.len(), 1, "below the minimum nothing is compacted");
    }
}
