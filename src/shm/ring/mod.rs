//! The ring protocol: one producer, any number of broadcast consumers, over memory that
//! other processes share and that this process does not trust.
//!
//! The memory is reached only through [`RingMemory`], implemented by a memfd mapping
//! (`super::mapped`), by plain heap words for tests, Miri and loom (`super::heap`), and
//! nothing else. Every offset used here is computed from a [`Geometry`] checked once when
//! the ring is created or opened; values read back from shared memory (stamps, lengths,
//! cursors, the head) are only compared, never used to index, and each is validated.
//!
//! Publishing position `p` (slot `p & mask`), the seqlock way:
//! 1. the slot's stamp becomes `p - 1` ("being written"), then a Release fence;
//! 2. length and payload are written;
//! 3. the stamp becomes `p` (SeqCst), then the head `p + 1` (Release);
//! 4. the producer loads the sleepers word (SeqCst: with the stamp store, one half of a
//!    Dekker pair with a consumer going to sleep) and makes a system call only if a
//!    consumer sleeps on the current wake value: none while every consumer is awake, one
//!    per sleep otherwise.
//!
//! Reading position `c`: load the stamp (Acquire); `c` means ready, an older lap means not
//! yet written, a newer lap means this consumer was overrun (lossy policy: it jumps to the
//! oldest message still in the ring and counts exactly how many it skipped). Copy, Acquire
//! fence, load the stamp again: a message is delivered only if the stamp did not change,
//! so a torn message is never returned.
//!
//! Lossless policy: each consumer publishes its cursor in its record (in batches, and
//! whenever it has caught up); the producer caches the slowest cursor and rescans the
//! records only when the cache says the ring is full.

mod consumer;
mod producer;
#[cfg(not(loom))]
#[doc(hidden)]
pub mod scribble;
mod spin;

pub use consumer::{Consumer, Deadline, Polled, ReadSlot, Received};
pub use producer::{Producer, WriteSlot};

use super::atomics::{dekker_fence, fence, AtomicU32, AtomicU64, Ordering, DEKKER};
use super::layout::{
    self, initial_stamp, off, record, sleepers, state, Geometry, LayoutError, Policy,
    EVENT_SLEEPER, HEADER_LEN,
};
use std::fmt;
use std::time::Duration;

/// Longest single sleep: between two sleeps a waiter checks the stream state, its deadline
/// and whether qcopd is still there, so nobody waits forever on a dead peer.
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The shared memory of one ring, and its wake-up channels.
///
/// Implementations give access to the words at offsets the ring computes from its checked
/// [`Geometry`]; they may panic on an offset outside the ring, which would be a bug in this
/// module, never a consequence of what another process wrote.
pub trait RingMemory {
    /// Bytes available.
    fn size(&self) -> usize;
    /// The 4-aligned 32-bit word at `off`.
    fn word32(&self, off: usize) -> &AtomicU32;
    /// The 8-aligned 64-bit word at `off`.
    fn word64(&self, off: usize) -> &AtomicU64;
    /// Copies bytes out; they may be changing under the copy (the caller validates).
    fn read_bytes(&self, off: usize, dst: &mut [u8]);
    /// Copies bytes in.
    fn write_bytes(&self, off: usize, src: &[u8]);
    /// Sleeps while the word at `off` equals `expected`, at most `timeout` (futex wait).
    fn wait(&self, off: usize, expected: u32, timeout: Duration);
    /// Wakes every sleeper on the word at `off` (futex wake).
    fn wake_all(&self, off: usize);
    /// Wakes the event-fd consumer (qcopd), which cannot sleep on a futex in its epoll loop.
    fn signal_event(&self) {}
}

/// Memory behind a reference or a shared pointer is ring memory too: each method forwards.
macro_rules! forward_ring_memory {
    ($($ptr:ty),*) => {$(
        impl<T: RingMemory + ?Sized> RingMemory for $ptr {
            fn size(&self) -> usize {
                (**self).size()
            }
            fn word32(&self, off: usize) -> &AtomicU32 {
                (**self).word32(off)
            }
            fn word64(&self, off: usize) -> &AtomicU64 {
                (**self).word64(off)
            }
            fn read_bytes(&self, off: usize, dst: &mut [u8]) {
                (**self).read_bytes(off, dst)
            }
            fn write_bytes(&self, off: usize, src: &[u8]) {
                (**self).write_bytes(off, src)
            }
            fn wait(&self, off: usize, expected: u32, timeout: Duration) {
                (**self).wait(off, expected, timeout)
            }
            fn wake_all(&self, off: usize) {
                (**self).wake_all(off)
            }
            fn signal_event(&self) {
                (**self).signal_event()
            }
        }
    )*};
}

forward_ring_memory!(&T, std::sync::Arc<T>);

/// How a waiting consumer (or a lossless producer waiting for space) passes the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// Sleep on the futex at once: no CPU while idle, a wake-up costs the producer one
    /// system call and the sleeper a context switch.
    Sleep,
    /// Spin on the stamp, never sleep: lowest latency, one CPU at 100 % while waiting.
    Spin,
    /// Spin for up to this long, then sleep: the latency of spinning for messages that come
    /// in quick succession, the CPU cost of sleeping across longer gaps.
    Adaptive(Duration),
}

/// Why a stream operation returned without a message or without a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// The deadline passed.
    Timeout,
    /// The stream ended (the producer closed it or went away) and nothing is left to read.
    Ended,
    /// qcopd went away (the liveness check failed): nobody is left to end the stream or to
    /// free a dead consumer's slots.
    DaemonGone,
    /// The consumer found something the protocol does not allow; it skipped the slot
    /// (counted as lost) and the next call goes on.
    Corrupt(Corrupt),
    /// A message larger than a slot (nothing was sent).
    TooLarge {
        /// Message bytes.
        size: usize,
        /// Slot size of the stream.
        max: usize,
    },
    /// Lossy policy: the producer overwrote a message while it was borrowed in place, so
    /// what was read from it may be a mix of two messages. Counted as lost.
    Overwritten,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Timeout => f.write_str("timed out"),
            StreamError::Ended => f.write_str("end of stream"),
            StreamError::DaemonGone => f.write_str("qcopd went away"),
            StreamError::Corrupt(c) => c.fmt(f),
            StreamError::TooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds the slot size of {max}")
            }
            StreamError::Overwritten => {
                f.write_str("the message was overwritten while it was borrowed")
            }
        }
    }
}

impl std::error::Error for StreamError {}

impl From<Corrupt> for StreamError {
    fn from(c: Corrupt) -> StreamError {
        StreamError::Corrupt(c)
    }
}

/// Something a consumer read from shared memory that the protocol does not allow. The
/// consumer skips the offending slot (counted as lost) and reports it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// A stamp that is neither a position of this slot nor "being written".
    Stamp(u64),
    /// A length larger than the slot.
    Length(u32),
    /// Lossless: slots that claim messages the consumer can never read (overrun skips and
    /// rereads without end, which a lossless producer never causes).
    NoProgress,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corrupt::Stamp(s) => write!(f, "corrupt ring: impossible slot stamp {s:#x}"),
            Corrupt::Length(l) => write!(f, "corrupt ring: message length {l} exceeds the slot"),
            Corrupt::NoProgress => {
                f.write_str("corrupt ring: the ring announces messages it never delivers")
            }
        }
    }
}

impl std::error::Error for Corrupt {}

/// The lossless ring is full: the slowest consumer has not released the oldest slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A ring over some memory, with its checked geometry.
pub struct Ring<M> {
    mem: M,
    geo: Geometry,
}

impl<M: RingMemory> Ring<M> {
    /// Initialises a new ring in `mem` (which must be zeroed or unused by anyone else):
    /// header, records and slot stamps. The first message will have position `start`.
    pub fn create(mem: M, geo: Geometry, start: u64) -> Result<Ring<M>, LayoutError> {
        if mem.size() < geo.total_len() {
            return Err(LayoutError::Truncated {
                need: geo.total_len() as u64,
                have: mem.size() as u64,
            });
        }
        let ring = Ring { mem, geo };
        let w32 = |o, v| ring.w32(o).store(v, Ordering::Relaxed);
        w32(off::VERSION, layout::VERSION);
        w32(off::SLOT_SIZE, geo.slot_size());
        w32(off::SLOT_COUNT, geo.slot_count());
        w32(off::RECORDS, geo.records());
        w32(off::POLICY, geo.policy().to_u32());
        ring.w64(off::TOTAL_LEN)
            .store(geo.total_len() as u64, Ordering::Relaxed);
        ring.w64(off::START).store(start, Ordering::Relaxed);
        ring.w64(off::HEAD).store(start, Ordering::Relaxed);
        for w in [
            off::WAKE,
            off::SLEEPERS,
            off::STATE,
            off::SPACE,
            off::PRODUCER_WAITING,
        ] {
            w32(w, 0);
        }
        for r in 0..geo.records() {
            let rec = geo.record_offset(r);
            ring.w64(rec + off::rec::CURSOR)
                .store(start, Ordering::Relaxed);
            w32(rec + off::rec::STATE, record::FREE);
            w32(rec + off::rec::SLEEPING, 0);
        }
        for slot in 0..geo.slot_count() {
            let s = geo.slots_offset() + slot as usize * geo.stride();
            ring.w64(s + off::slot::STAMP)
                .store(initial_stamp(&geo, start, slot), Ordering::Relaxed);
            w32(s + off::slot::LEN, 0);
        }
        // Release: pairs with the Acquire load of the magic in `Ring::open`. The magic is
        // written last (a process that maps the ring receives its descriptor through a
        // socket, which orders everything above before its first read anyway).
        ring.w32(off::MAGIC).store(layout::MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// Opens a ring another process created, checking its header against the memory.
    pub fn open(mem: M) -> Result<Ring<M>, LayoutError> {
        let have = mem.size() as u64;
        if mem.size() < HEADER_LEN {
            return Err(LayoutError::Truncated {
                need: HEADER_LEN as u64,
                have,
            });
        }
        // Acquire: pairs with the Release store of the magic in `create`.
        let magic = mem.word32(off::MAGIC).load(Ordering::Acquire);
        if magic != layout::MAGIC {
            return Err(LayoutError::Magic(magic));
        }
        let r32 = |o| mem.word32(o).load(Ordering::Relaxed);
        let version = r32(off::VERSION);
        if version != layout::VERSION {
            return Err(LayoutError::Version(version));
        }
        let policy = r32(off::POLICY);
        let policy = Policy::from_u32(policy).ok_or(LayoutError::Policy(policy))?;
        let geo = Geometry::new(
            r32(off::SLOT_SIZE),
            r32(off::SLOT_COUNT),
            r32(off::RECORDS),
            policy,
        )?;
        let total = mem.word64(off::TOTAL_LEN).load(Ordering::Relaxed);
        if total != geo.total_len() as u64 {
            return Err(LayoutError::TotalLen(total));
        }
        if have < total {
            return Err(LayoutError::Truncated { need: total, have });
        }
        Ok(Ring { mem, geo })
    }

    /// The checked geometry.
    #[inline]
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The memory.
    #[inline]
    pub fn memory(&self) -> &M {
        &self.mem
    }

    #[inline]
    fn w32(&self, o: usize) -> &AtomicU32 {
        self.mem.word32(o)
    }

    #[inline]
    fn w64(&self, o: usize) -> &AtomicU64 {
        self.mem.word64(o)
    }

    #[inline]
    fn rec32(&self, r: u32, field: usize) -> &AtomicU32 {
        self.w32(self.geo.record_offset(r) + field)
    }

    #[inline]
    fn cursor_word(&self, r: u32) -> &AtomicU64 {
        self.w64(self.geo.record_offset(r) + off::rec::CURSOR)
    }

    #[inline]
    fn stamp(&self, pos: u64) -> &AtomicU64 {
        self.w64(self.geo.slot_offset(pos) + off::slot::STAMP)
    }

    /// The stream state (`layout::state`). Acquire: pairs with the Release in
    /// [`Ring::end`], so every message committed before the end is visible after it.
    #[inline]
    pub fn state(&self) -> u32 {
        self.w32(off::STATE).load(Ordering::Acquire)
    }

    /// Whether the stream is still open (any state but open counts as ended).
    #[inline]
    pub fn is_open(&self) -> bool {
        self.state() == state::OPEN
    }

    /// The producer's next position. Acquire: pairs with the Release store after each
    /// commit. Untrusted: only compared.
    #[inline]
    pub fn head(&self) -> u64 {
        self.w64(off::HEAD).load(Ordering::Acquire)
    }

    /// Ends the stream (`state::ENDED` or `state::ABANDONED`) and wakes everybody: sleeping
    /// consumers see the end after reading what was committed, a waiting producer stops
    /// waiting. Returns false if it had already ended.
    pub fn end(&self, how: u32) -> bool {
        // Release: pairs with the Acquire in `state()`.
        let first = self
            .w32(off::STATE)
            .compare_exchange(state::OPEN, how, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        // SeqCst fence: orders the state above before the bump of the wake word below. A
        // consumer that reads the bumped word (Acquire, in `Consumer::prepare_sleep`) sees
        // the end in its re-check; one that read an older value finds the futex word
        // changed and does not sleep. No Dekker pair needed: everybody is woken.
        fence(Ordering::SeqCst);
        self.w32(off::WAKE).fetch_add(1, Ordering::Relaxed);
        self.mem.wake_all(off::WAKE);
        self.w32(off::SPACE).fetch_add(1, Ordering::Relaxed);
        self.mem.wake_all(off::SPACE);
        let s = self
            .w32(off::SLEEPERS)
            .fetch_and(!EVENT_SLEEPER, Ordering::Relaxed);
        if s & EVENT_SLEEPER != 0 {
            self.mem.signal_event();
        }
        first
    }

    /// qcopd's side: activates consumer record `r` at the producer's current position and
    /// returns that position. A lossless producer waits for the record from then on.
    pub fn join(&self, r: u32) -> u64 {
        let h0 = self.head();
        self.cursor_word(r).store(h0, Ordering::Relaxed);
        self.rec32(r, off::rec::SLEEPING)
            .store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire load of the record state in `Producer::rescan`
        // (the producer that sees the record active sees its cursor).
        self.rec32(r, off::rec::STATE)
            .store(record::ACTIVE, Ordering::Release);
        // SeqCst: pairs with the fence in `Producer::rescan`. Either the producer's scan
        // sees this record, or this load sees the head the producer had when it scanned,
        // and the consumer starts there, where the producer cannot have lapped it yet.
        fence(Ordering::SeqCst);
        let h1 = self.head();
        if h1 != h0 {
            self.publish_cursor(r, h1);
        }
        h1
    }

    /// qcopd's side: frees consumer record `r` (its consumer left or died), drops it from
    /// the sleepers count if it died asleep, and wakes a producer that may wait for it.
    pub fn leave(&self, r: u32) {
        // Release: pairs with the Acquire load in `Producer::rescan`.
        self.rec32(r, off::rec::STATE)
            .store(record::FREE, Ordering::Release);
        if self.rec32(r, off::rec::SLEEPING).swap(0, Ordering::Relaxed) != 0 {
            self.drop_sleeper();
        }
        // SeqCst: pairs with the fence that starts `Producer::rescan`, so a rescan after
        // the wake-up below sees the record free.
        fence(Ordering::SeqCst);
        self.w32(off::SPACE).fetch_add(1, Ordering::Relaxed);
        self.mem.wake_all(off::SPACE);
    }

    /// Takes one sleeper off the count, never below zero (a consumer that lies about its
    /// sleeping flag must not wrap the count into the event bit).
    fn drop_sleeper(&self) {
        // `fetch_update` is `try_update` on newer nightlies; the old name builds on 1.75 and loom.
        #[allow(deprecated)]
        let _ = self.w32(off::SLEEPERS).fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            sleepers::deregister,
        );
    }

    /// Stores consumer `r`'s cursor and wakes the producer if it waits for space.
    fn publish_cursor(&self, r: u32, cursor: u64) {
        // SeqCst (at least Release): pairs with the Acquire load in `Producer::rescan`: this
        // consumer's reads of the slots before `cursor` happen before the producer
        // overwrites them. And a Dekker pair with `Producer::prepare_space_sleep`, which
        // sets the waiting flag, then (after a SeqCst fence) loads the cursors: either its
        // rescan sees the new cursor, or the load below sees that it waits and wakes it.
        self.cursor_word(r).store(cursor, DEKKER);
        dekker_fence();
        if self.w32(off::PRODUCER_WAITING).load(DEKKER) != 0 {
            self.w32(off::SPACE).fetch_add(1, Ordering::Relaxed);
            self.mem.wake_all(off::SPACE);
        }
    }

    /// The cursor of record `r` (untrusted).
    pub fn record_cursor(&self, r: u32) -> u64 {
        // Acquire: pairs with the Release (SeqCst) store in `Ring::publish_cursor`.
        self.cursor_word(r).load(Ordering::Acquire)
    }

    /// Whether record `r` is active.
    pub fn record_active(&self, r: u32) -> bool {
        // Acquire: pairs with the Release stores in `Ring::join` and `Ring::leave`.
        self.rec32(r, off::rec::STATE).load(Ordering::Acquire) == record::ACTIVE
    }

    /// The stream's first position.
    pub fn start(&self) -> u64 {
        self.w64(off::START).load(Ordering::Relaxed)
    }
}

/// Whether a sleeping consumer needs to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleep {
    /// Something to read, or the stream ended: do not sleep.
    Ready,
    /// Registered as a sleeper: sleep on the wake word while it holds this value, then call
    /// `finish_sleep`.
    Wait(u32),
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_models;
