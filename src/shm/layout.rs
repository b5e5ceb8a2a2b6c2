//! Byte layout of a shared-memory ring, version 1.
//!
//! One memfd holds a header, one record per consumer and the slots. Every field has a fixed
//! width and a fixed offset (no `usize`, no compiler-chosen layout), and every group that
//! different processes write starts on its own 64-byte line, so that an armv7 process and
//! an aarch64 process on one kernel agree byte for byte and do not false-share. Integers
//! are in the machine's byte order; every target qcop supports is little-endian.
//!
//! ```text
//! offset        size  field                     written by
//! 0             4     magic 0x5251_4351 "QCQR"  creator (qcopd), then read-only
//! 4             4     version = 1
//! 8             4     slot_size (payload bytes per slot, multiple of 8)
//! 12            4     slot_count (power of two)
//! 16            4     records (consumer records)
//! 20            4     policy: 0 lossless, 1 lossy
//! 24            8     total_len (bytes of the ring)
//! 32            8     start (position of the first message)
//! 40            4     state: 0 open, 1 ended, 2 abandoned              producer, qcopd
//!                     (on the read-mostly line: the producer reads it per message)
//! 64            8     head: next position the producer writes          producer
//! 128           4     wake: futex word consumers sleep on              producer bumps
//! 132           4     sleepers: bits 0-15 futex sleepers, bits 16-30  consumers, producer
//!                     the newest wake value one sleeps on (15 bits),
//!                     bit 31 the event-fd consumer sleeps
//! 140           4     space: futex word a waiting producer sleeps on   consumers bump
//! 144           4     producer_waiting: 1 while the producer waits     producer
//! 192 + 64 r    64    consumer record r:                               qcopd, consumer r
//!                       +0 cursor u64 (next position it reads; lossless: all before it
//!                          are released), +8 state u32 (0 free, 1 active),
//!                       +12 sleeping u32 (1 while it is counted in sleepers)
//! slots_offset  n×stride  slot i (stride = 16 + slot_size rounded up to 64):
//!                       +0 stamp u64, +8 len u32, +12 reserved u32, +16 data
//! ```
//!
//! Positions are 64-bit and wrap around (every comparison is a wrapping difference). A
//! slot's stamp says what it holds: the position `p` of a committed message, or `p - 1`
//! while message `p` is being written. With at least two slots these never collide: a
//! slot only ever holds positions of one residue modulo `slot_count`.

use std::fmt;

/// `"QCQR"` read as a little-endian u32.
pub const MAGIC: u32 = 0x5251_4351;
/// Layout version written by this build.
pub const VERSION: u32 = 1;

/// Header fields (byte offsets).
pub mod off {
    /// u32 magic.
    pub const MAGIC: usize = 0;
    /// u32 version.
    pub const VERSION: usize = 4;
    /// u32 payload bytes per slot.
    pub const SLOT_SIZE: usize = 8;
    /// u32 number of slots.
    pub const SLOT_COUNT: usize = 12;
    /// u32 number of consumer records.
    pub const RECORDS: usize = 16;
    /// u32 overflow policy.
    pub const POLICY: usize = 20;
    /// u64 total bytes.
    pub const TOTAL_LEN: usize = 24;
    /// u64 first position.
    pub const START: usize = 32;
    /// u32 stream state.
    pub const STATE: usize = 40;
    /// u64 next position the producer writes.
    pub const HEAD: usize = 64;
    /// u32 futex word consumers sleep on.
    pub const WAKE: usize = 128;
    /// u32: futex sleepers ([`super::sleepers`]), plus [`super::EVENT_SLEEPER`].
    pub const SLEEPERS: usize = 132;
    /// u32 futex word a lossless producer sleeps on.
    pub const SPACE: usize = 140;
    /// u32 set while the producer waits for space.
    pub const PRODUCER_WAITING: usize = 144;
    /// First consumer record.
    pub const RECORDS_START: usize = 192;

    /// Record fields (relative to the record).
    pub mod rec {
        /// u64 next position the consumer reads.
        pub const CURSOR: usize = 0;
        /// u32 record state.
        pub const STATE: usize = 8;
        /// u32 set while the consumer is counted in the sleepers word.
        pub const SLEEPING: usize = 12;
    }

    /// Slot fields (relative to the slot).
    pub mod slot {
        /// u64 stamp.
        pub const STAMP: usize = 0;
        /// u32 message length.
        pub const LEN: usize = 8;
        /// First payload byte.
        pub const DATA: usize = 16;
    }
}

/// Bytes of the header before the first record.
pub const HEADER_LEN: usize = off::RECORDS_START;
/// Bytes per consumer record.
pub const RECORD_LEN: usize = 64;
/// Bytes of a slot before its payload.
pub const SLOT_HEADER_LEN: usize = off::slot::DATA;
/// Alignment of records and slots.
pub const LINE: usize = 64;
/// Bit of the sleepers word that says the event-fd consumer (qcopd) sleeps.
pub const EVENT_SLEEPER: u32 = 0x8000_0000;

/// The sleepers word: how many consumers sleep on the futex, and the newest wake value one
/// of them sleeps on (its low 15 bits). A producer wakes them only if that value is still
/// current: sleepers on older values were woken already and are on their way out, so a
/// stream whose consumers keep falling asleep costs one wake-up per sleep, not one per
/// message until each sleeper has deregistered.
pub mod sleepers {
    use super::EVENT_SLEEPER;

    const COUNT: u32 = 0xffff;
    const GEN_SHIFT: u32 = 16;
    const GEN: u32 = 0x7fff;

    /// Futex sleepers counted.
    pub fn count(s: u32) -> u32 {
        s & COUNT
    }

    /// Whether a sleeper may wait on wake value `wake`.
    pub fn sleeps_on(s: u32, wake: u32) -> bool {
        count(s) != 0 && (s >> GEN_SHIFT) & GEN == wake & GEN
    }

    /// `s` with one more sleeper, which sleeps on wake value `wake`. The generation only
    /// moves forward (wrapping), so a sleeper that read an older value cannot hide a newer
    /// one.
    pub fn register(s: u32, wake: u32) -> u32 {
        let gen = (s >> GEN_SHIFT) & GEN;
        let w = wake & GEN;
        let newer = w.wrapping_sub(gen) & GEN;
        let gen = if count(s) == 0 || (newer != 0 && newer < GEN / 2) {
            w
        } else {
            gen
        };
        (s & EVENT_SLEEPER) | (gen << GEN_SHIFT) | (count(s) + 1).min(COUNT)
    }

    /// `s` with one sleeper less (never below zero; generation and event bit kept).
    pub fn deregister(s: u32) -> Option<u32> {
        (count(s) != 0).then(|| s - 1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_generation_only_moves_forward() {
            let s = register(0, 5);
            assert!(sleeps_on(s, 5) && !sleeps_on(s, 6));
            let s = register(s, 6);
            let s = register(s, 5); // read the wake word before the producer bumped it
            assert!(sleeps_on(s, 6), "a late registration hid a newer sleeper");
            assert_eq!(count(s), 3);
            let s = deregister(deregister(deregister(s).unwrap()).unwrap()).unwrap();
            assert_eq!((count(s), deregister(s)), (0, None));
            assert!(!sleeps_on(s, 6));
            // Wrapping: 0x7fff then 0 (the next value) is newer.
            let s = register(register(0, 0x7fff), 0x1_0000);
            assert!(sleeps_on(s, 0x1_0000));
            assert_eq!(register(EVENT_SLEEPER, 1) & EVENT_SLEEPER, EVENT_SLEEPER);
        }
    }
}

/// Stream states.
pub mod state {
    /// The producer may publish.
    pub const OPEN: u32 = 0;
    /// The producer closed the stream.
    pub const ENDED: u32 = 1;
    /// The producer went away without closing it (qcopd noticed its connection close).
    pub const ABANDONED: u32 = 2;
}

/// Consumer record states.
pub mod record {
    /// Not in use.
    pub const FREE: u32 = 0;
    /// In use: a lossless producer waits for this cursor.
    pub const ACTIVE: u32 = 1;
}

/// Largest payload per slot (16 MiB).
pub const MAX_SLOT_SIZE: u32 = 16 << 20;
/// Most slots in a ring.
pub const MAX_SLOT_COUNT: u32 = 1 << 20;
/// Most consumer records in a ring.
pub const MAX_RECORDS: u32 = 256;
/// Largest ring (1 GiB), whatever the geometry.
pub const MAX_TOTAL_LEN: u64 = 1 << 30;

/// What a producer does when the slowest consumer is a whole ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Wait (with a timeout) until the slowest active consumer released a slot.
    Lossless,
    /// Overwrite the oldest message; an overrun consumer learns how many it lost.
    Lossy,
}

impl Policy {
    /// The policy's number in the header (and on the wire).
    pub fn to_u32(self) -> u32 {
        match self {
            Policy::Lossless => 0,
            Policy::Lossy => 1,
        }
    }

    /// The policy for a number, if it is one.
    pub fn from_u32(v: u32) -> Option<Policy> {
        match v {
            0 => Some(Policy::Lossless),
            1 => Some(Policy::Lossy),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Lossless => "lossless",
            Policy::Lossy => "lossy",
        })
    }
}

/// Why a geometry or a ring header is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Slot size zero, not a multiple of 8, or over [`MAX_SLOT_SIZE`].
    SlotSize(u32),
    /// Slot count not a power of two between 2 and [`MAX_SLOT_COUNT`].
    SlotCount(u32),
    /// Record count zero or over [`MAX_RECORDS`].
    Records(u32),
    /// The whole ring would exceed [`MAX_TOTAL_LEN`].
    TooLarge(u64),
    /// The memory is smaller than the header or than the ring the header describes.
    Truncated {
        /// Bytes the header asks for.
        need: u64,
        /// Bytes mapped.
        have: u64,
    },
    /// The magic number is wrong: not a qcop ring.
    Magic(u32),
    /// A layout version this build does not read.
    Version(u32),
    /// An unknown overflow policy.
    Policy(u32),
    /// The header's total length disagrees with its geometry.
    TotalLen(u64),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::SlotSize(v) => write!(
                f,
                "slot size {v} must be a multiple of 8 between 8 and {MAX_SLOT_SIZE}"
            ),
            LayoutError::SlotCount(v) => write!(
                f,
                "slot count {v} must be a power of two between 2 and {MAX_SLOT_COUNT}"
            ),
            LayoutError::Records(v) => {
                write!(
                    f,
                    "consumer records {v} must be between 1 and {MAX_RECORDS}"
                )
            }
            LayoutError::TooLarge(v) => {
                write!(
                    f,
                    "a ring of {v} bytes exceeds the limit of {MAX_TOTAL_LEN}"
                )
            }
            LayoutError::Truncated { need, have } => {
                write!(f, "ring needs {need} bytes but only {have} are mapped")
            }
            LayoutError::Magic(v) => write!(f, "bad magic {v:#010x}: not a qcop ring"),
            LayoutError::Version(v) => write!(f, "ring layout version {v} is not supported"),
            LayoutError::Policy(v) => write!(f, "unknown overflow policy {v}"),
            LayoutError::TotalLen(v) => {
                write!(f, "header length {v} disagrees with the ring geometry")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// A checked ring geometry. Every offset the ring code computes comes from here (from
/// values checked once), never from a value read back from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    slot_size: u32,
    slot_count: u32,
    records: u32,
    policy: Policy,
}

const fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Geometry {
    /// Checks a geometry.
    pub fn new(
        slot_size: u32,
        slot_count: u32,
        records: u32,
        policy: Policy,
    ) -> Result<Geometry, LayoutError> {
        if slot_size == 0 || slot_size % 8 != 0 || slot_size > MAX_SLOT_SIZE {
            return Err(LayoutError::SlotSize(slot_size));
        }
        if !(2..=MAX_SLOT_COUNT).contains(&slot_count) || !slot_count.is_power_of_two() {
            return Err(LayoutError::SlotCount(slot_count));
        }
        if records == 0 || records > MAX_RECORDS {
            return Err(LayoutError::Records(records));
        }
        let g = Geometry {
            slot_size,
            slot_count,
            records,
            policy,
        };
        // At most 2^24 + 64 per slot times 2^20 slots: no overflow in u64.
        let total = g.total_len_u64();
        if total > MAX_TOTAL_LEN {
            return Err(LayoutError::TooLarge(total));
        }
        Ok(g)
    }

    /// The smallest slot size (a multiple of 8) that holds `bytes`.
    pub fn slot_size_for(bytes: u32) -> u32 {
        (bytes.max(1).saturating_add(7) / 8).saturating_mul(8)
    }

    /// Payload bytes per slot.
    #[inline]
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Number of slots.
    #[inline]
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Number of consumer records.
    #[inline]
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Overflow policy.
    #[inline]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// `slot_count - 1`, to map a position to its slot.
    #[inline]
    pub fn mask(&self) -> u64 {
        u64::from(self.slot_count) - 1
    }

    /// Bytes from one slot to the next.
    #[inline]
    pub fn stride(&self) -> usize {
        round_up(
            SLOT_HEADER_LEN as u64 + u64::from(self.slot_size),
            LINE as u64,
        ) as usize
    }

    /// Offset of the first slot.
    #[inline]
    pub fn slots_offset(&self) -> usize {
        HEADER_LEN + RECORD_LEN * self.records as usize
    }

    fn total_len_u64(&self) -> u64 {
        let stride = round_up(
            SLOT_HEADER_LEN as u64 + u64::from(self.slot_size),
            LINE as u64,
        );
        (HEADER_LEN + RECORD_LEN * self.records as usize) as u64
            + stride * u64::from(self.slot_count)
    }

    /// Bytes of the whole ring (at most [`MAX_TOTAL_LEN`], so it fits a 32-bit `usize`).
    pub fn total_len(&self) -> usize {
        self.total_len_u64() as usize
    }

    /// Offset of consumer record `r` (`r < records`).
    #[inline]
    pub fn record_offset(&self, r: u32) -> usize {
        debug_assert!(r < self.records);
        HEADER_LEN + RECORD_LEN * (r % self.records) as usize
    }

    /// Offset of the slot that holds position `pos`.
    #[inline]
    pub fn slot_offset(&self, pos: u64) -> usize {
        self.slots_offset() + (pos & self.mask()) as usize * self.stride()
    }
}

/// The stamp a slot holds before anything was written to it: the position of the previous
/// lap that maps to it, so that every consumer starting at `start` sees it as not yet
/// written.
pub fn initial_stamp(geo: &Geometry, start: u64, slot: u32) -> u64 {
    let back = u64::from(slot).wrapping_sub(start) & geo.mask();
    start
        .wrapping_sub(u64::from(geo.slot_count))
        .wrapping_add(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_limits() {
        assert!(Geometry::new(64, 1024, 8, Policy::Lossless).is_ok());
        assert_eq!(
            Geometry::new(60, 8, 1, Policy::Lossy),
            Err(LayoutError::SlotSize(60))
        );
        assert_eq!(
            Geometry::new(0, 8, 1, Policy::Lossy),
            Err(LayoutError::SlotSize(0))
        );
        assert_eq!(
            Geometry::new(8, 1, 1, Policy::Lossy),
            Err(LayoutError::SlotCount(1))
        );
        assert_eq!(
            Geometry::new(8, 48, 1, Policy::Lossy),
            Err(LayoutError::SlotCount(48))
        );
        assert_eq!(
            Geometry::new(8, 8, 0, Policy::Lossy),
            Err(LayoutError::Records(0))
        );
        assert!(matches!(
            Geometry::new(MAX_SLOT_SIZE, MAX_SLOT_COUNT, 1, Policy::Lossy),
            Err(LayoutError::TooLarge(_))
        ));
    }

    #[test]
    fn offsets_are_aligned_and_inside() {
        let g = Geometry::new(64, 4, 3, Policy::Lossless).unwrap();
        assert_eq!(g.stride(), 128);
        assert_eq!(g.slots_offset(), 192 + 3 * 64);
        assert_eq!(g.total_len(), g.slots_offset() + 4 * 128);
        assert_eq!(g.slot_offset(5), g.slots_offset() + 128);
        assert_eq!(g.slot_offset(u64::MAX), g.slots_offset() + 3 * 128);
        assert_eq!(g.record_offset(2), 192 + 128);
        assert_eq!(Geometry::slot_size_for(1), 8);
        assert_eq!(Geometry::slot_size_for(64), 64);
        assert_eq!(Geometry::slot_size_for(65), 72);
    }

    #[test]
    fn initial_stamps_precede_the_start_in_their_slot() {
        let g = Geometry::new(8, 4, 1, Policy::Lossy).unwrap();
        for start in [0u64, 3, u64::MAX - 1, u64::MAX] {
            for slot in 0..4u32 {
                let s = initial_stamp(&g, start, slot);
                assert_eq!(s & g.mask(), u64::from(slot));
                let behind = start.wrapping_sub(s);
                assert!((1..=4).contains(&behind), "start {start} slot {slot}");
            }
        }
    }
}
