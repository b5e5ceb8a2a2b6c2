//! The control block: one small memfd per segment or semaphore, mapped read-write by every
//! attacher (also read-only ones, so they can lock) and by the daemon.
//!
//! Fixed-width fields at fixed offsets, in the machine's byte order (all attachers run on
//! one kernel), so 32-bit armv7 and 64-bit aarch64 processes share it:
//!
//! ```text
//! offset  size  field
//! 0x00    4     magic      "QSHM" (0x4d485351 read as a little-endian u32)
//! 0x04    4     version    1
//! 0x08    4     kind       1 = segment, 2 = semaphore
//! 0x0c    4     flags      bit 0 = undo (semaphores)
//! 0x10    8     data_size  bytes of the segment's data memfd (0 for semaphores)
//! 0x18    4     word       segment: the lock word (see `robust`); semaphore: the value
//! 0x1c    4     waiters    semaphore: sleepers on `word` (hint)
//! 0x20    4     max        semaphore: largest value
//! 0x24    4     recovered  times a dead holder's lock or units were recovered
//! 0x28    4     slots      number of undo slots that follow (0..=MAX_SLOTS)
//! 0x2c    20    reserved   zero
//! 0x40    8×n   slot i     token: u32, adjustment: i32 (see `counting`)
//! ```
//!
//! Every attacher can write every byte of it, so everything read from it is checked
//! ([`Control::open`]) and the daemon never trusts it for its own bookkeeping: a
//! misbehaving attacher can break the lock or the semaphore it was allowed to use, nothing
//! else.

use super::counting::{Counting, UndoSlot};
use super::map::{Access, Mapping};
use super::robust::RobustLock;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of the control memfd.
pub const CONTROL_SIZE: u64 = 4096;
/// First four bytes, `"QSHM"` in memory order.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QSHM");
/// Layout version.
pub const VERSION: u32 = 1;
/// Undo slots a semaphore's control block holds at most.
pub const MAX_SLOTS: u32 = 256;

const OFF_MAGIC: usize = 0x00;
const OFF_VERSION: usize = 0x04;
const OFF_KIND: usize = 0x08;
const OFF_FLAGS: usize = 0x0c;
const OFF_DATA_SIZE: usize = 0x10;
const OFF_WORD: usize = 0x18;
const OFF_WAITERS: usize = 0x1c;
const OFF_MAX: usize = 0x20;
const OFF_RECOVERED: usize = 0x24;
const OFF_SLOTS: usize = 0x28;
const OFF_SLOT_TABLE: usize = 0x40;
const SLOT_SIZE: usize = 8;

/// Flag: units of dead attachers are given back.
pub const FLAG_UNDO: u32 = 0x1;

// The slot table must fit the control block.
const _: () = assert!(OFF_SLOT_TABLE + MAX_SLOTS as usize * SLOT_SIZE <= CONTROL_SIZE as usize);

/// What a control block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A shared-memory segment's lock.
    Segment = 1,
    /// A counting semaphore.
    Semaphore = 2,
}

/// The fields written once at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Segment or semaphore.
    pub kind: Kind,
    /// [`FLAG_UNDO`] or 0.
    pub flags: u32,
    /// Segment data size in bytes (0 for a semaphore).
    pub data_size: u64,
    /// Semaphore maximum (0 for a segment).
    pub max: u32,
    /// Undo slots (0 unless `FLAG_UNDO`).
    pub slots: u32,
}

/// A control block that does not have the expected layout.
#[derive(Debug)]
pub enum ControlError {
    /// It could not be mapped.
    Map(io::Error),
    /// A field holds an impossible value.
    Corrupt(String),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Map(e) => write!(f, "cannot map the control block: {e}"),
            ControlError::Corrupt(what) => write!(f, "control block is corrupt: {what}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// A mapped, validated control block.
pub struct Control {
    map: Mapping,
    header: Header,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("header", &self.header)
            .finish()
    }
}

impl Control {
    /// Maps a fresh (zeroed) control memfd and writes `header` and the initial word value.
    pub fn init(fd: BorrowedFd<'_>, header: Header, word: u32) -> Result<Control, ControlError> {
        let map = Mapping::map(fd, Access::ReadWrite).map_err(ControlError::Map)?;
        if (map.len() as u64) < CONTROL_SIZE {
            return Err(ControlError::Corrupt(format!(
                "{} bytes, need {CONTROL_SIZE}",
                map.len()
            )));
        }
        let c = Control { map, header };
        c.word_at(OFF_VERSION).store(VERSION, Ordering::Relaxed);
        c.word_at(OFF_KIND)
            .store(header.kind as u32, Ordering::Relaxed);
        c.word_at(OFF_FLAGS).store(header.flags, Ordering::Relaxed);
        c.map
            .atomic_u64(OFF_DATA_SIZE)
            .ok_or_else(|| ControlError::Corrupt("data size field".into()))?
            .store(header.data_size, Ordering::Relaxed);
        c.word_at(OFF_MAX).store(header.max, Ordering::Relaxed);
        c.word_at(OFF_SLOTS)
            .store(header.slots.min(MAX_SLOTS), Ordering::Relaxed);
        c.word_at(OFF_WORD).store(word, Ordering::Relaxed);
        // Release: an attacher that sees the magic (Acquire in `open`) sees the rest.
        c.word_at(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ok(c)
    }

    /// Maps a control memfd received from the daemon and checks it is a `kind` block.
    pub fn open(fd: BorrowedFd<'_>, kind: Kind) -> Result<Control, ControlError> {
        let map = Mapping::map(fd, Access::ReadWrite).map_err(ControlError::Map)?;
        let bad = |what: String| Err(ControlError::Corrupt(what));
        if (map.len() as u64) < CONTROL_SIZE {
            return bad(format!("{} bytes, need {CONTROL_SIZE}", map.len()));
        }
        let load = |off| map.load_u32(off).unwrap_or(0);
        if load(OFF_MAGIC) != MAGIC {
            return bad("bad magic".into());
        }
        if load(OFF_VERSION) != VERSION {
            return bad(format!("layout version {}", load(OFF_VERSION)));
        }
        if load(OFF_KIND) != kind as u32 {
            return bad(format!(
                "kind {} where {} was expected",
                load(OFF_KIND),
                kind as u32
            ));
        }
        let slots = load(OFF_SLOTS);
        if slots > MAX_SLOTS {
            return bad(format!("{slots} undo slots"));
        }
        let header = Header {
            kind,
            flags: load(OFF_FLAGS),
            data_size: map.load_u64(OFF_DATA_SIZE).unwrap_or(0),
            max: load(OFF_MAX),
            slots,
        };
        Ok(Control { map, header })
    }

    /// The fields written at creation, as validated by [`Control::open`].
    pub fn header(&self) -> Header {
        self.header
    }

    /// The segment lock.
    #[inline]
    pub fn lock(&self) -> RobustLock<'_> {
        RobustLock::new(self.word_at(OFF_WORD))
    }

    /// The semaphore.
    pub fn semaphore(&self) -> Counting<'_> {
        Counting::new(
            self.word_at(OFF_WORD),
            self.word_at(OFF_WAITERS),
            self.header.max,
        )
    }

    /// Undo slot `i`, if the block has that many.
    pub fn slot(&self, i: u32) -> Option<UndoSlot<'_>> {
        if i >= self.header.slots {
            return None;
        }
        let off = OFF_SLOT_TABLE + i as usize * SLOT_SIZE;
        Some(UndoSlot {
            token: self.word_at(off),
            adj: self.word_at(off + 4),
        })
    }

    /// Times a dead holder's lock or units were recovered.
    pub fn recovered(&self) -> u32 {
        self.word_at(OFF_RECOVERED).load(Ordering::Relaxed)
    }

    /// Counts one recovery.
    pub fn note_recovery(&self) {
        self.word_at(OFF_RECOVERED).fetch_add(1, Ordering::Relaxed);
    }

    /// The raw lock word or semaphore value.
    pub fn word(&self) -> u32 {
        self.word_at(OFF_WORD).load(Ordering::Relaxed)
    }

    /// A word of the block. Every offset used is a constant inside `CONTROL_SIZE` (or a
    /// slot index checked against `MAX_SLOTS`), 4-aligned, and the mapping was checked to
    /// be read-write and at least `CONTROL_SIZE` long, so the lookup cannot fail.
    #[inline]
    fn word_at(&self, off: usize) -> &AtomicU32 {
        self.map
            .atomic_u32(off)
            .expect("control block offsets are validated at open")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::map::create_memfd;
    use crate::shm::token::Token;
    use std::os::fd::AsFd;

    #[test]
    fn init_then_open_round_trips_and_checks_the_kind() {
        let fd = create_memfd("qcop-test-control", CONTROL_SIZE).unwrap();
        let header = Header {
            kind: Kind::Semaphore,
            flags: FLAG_UNDO,
            data_size: 0,
            max: 9,
            slots: 4,
        };
        let a = Control::init(fd.as_fd(), header, 3).unwrap();
        let b = Control::open(fd.as_fd(), Kind::Semaphore).unwrap();
        assert_eq!(b.header(), header);
        assert_eq!(b.semaphore().value(), 3);
        assert!(b.slot(3).is_some() && b.slot(4).is_none());
        assert!(a.semaphore().try_acquire(None));
        assert_eq!(b.semaphore().value(), 2, "both views share the word");
        assert!(matches!(
            Control::open(fd.as_fd(), Kind::Segment),
            Err(ControlError::Corrupt(_))
        ));
    }

    #[test]
    fn garbage_is_refused() {
        let fd = create_memfd("qcop-test-control", CONTROL_SIZE).unwrap();
        assert!(matches!(
            Control::open(fd.as_fd(), Kind::Segment),
            Err(ControlError::Corrupt(_))
        ));
        let header = Header {
            kind: Kind::Segment,
            flags: 0,
            data_size: 100,
            max: 0,
            slots: 0,
        };
        let c = Control::init(fd.as_fd(), header, 0).unwrap();
        c.word_at(OFF_SLOTS).store(MAX_SLOTS + 1, Ordering::Relaxed);
        assert!(Control::open(fd.as_fd(), Kind::Segment).is_err());
        c.word_at(OFF_SLOTS).store(0, Ordering::Relaxed);
        let t = Token::new(1, 0).unwrap();
        let c2 = Control::open(fd.as_fd(), Kind::Segment).unwrap();
        assert!(c2.lock().try_lock(t).is_ok());
        assert_eq!(c.lock().owner(), t.raw());
        let small = create_memfd("qcop-test-control", 64).unwrap();
        assert!(Control::open(small.as_fd(), Kind::Segment).is_err());
    }
}
