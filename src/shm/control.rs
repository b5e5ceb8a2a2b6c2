//! The control block: one small memfd per segment or semaphore, mapped by the daemon and by
//! the attachers that may change it.
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
//! 0x28    4     slots      number of undo slots that follow (0, or MAX_SLOTS with undo)
//! 0x2c    20    reserved   zero
//! 0x40    8×n   slot i     token: u32, adjustment: i32 (see `counting`)
//! ```
//!
//! Who may write it: the daemon, the read-write attachers of a segment and every opener of
//! a semaphore map it read-write. A read-only attacher of a segment gets a read-only
//! descriptor of an owner-only inode, so it can read and futex-wait on the lock word but
//! never change it; it takes and releases the lock through the daemon.
//!
//! The header fields (0x00-0x17, 0x20, 0x28-0x3f) are written by the daemon at creation and
//! are informational for attachers: the values that matter (kind, size, maximum, undo) come
//! in the daemon's answers, and [`Control::open`] uses those. Whoever may write the block
//! can scribble it, so the daemon never trusts it for its own bookkeeping and checks it
//! against its records whenever it hands it out or acts on it ([`Control::repair_header`]).

use super::counting::{Counting, UndoSlot};
use super::map::{Access, Mapping};
use super::robust::RobustLock;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
const OFF_RESERVED: usize = 0x2c;
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

    /// Maps, read-write, a control memfd received from the daemon, with the fields the
    /// daemon announced for it. Only the size is checked: nothing else in the block is
    /// trusted.
    pub fn open(fd: BorrowedFd<'_>, header: Header) -> Result<Control, ControlError> {
        let map = Mapping::map(fd, Access::ReadWrite).map_err(ControlError::Map)?;
        if (map.len() as u64) < CONTROL_SIZE {
            return Err(ControlError::Corrupt(format!(
                "{} bytes, need {CONTROL_SIZE}",
                map.len()
            )));
        }
        Ok(Control {
            map,
            header: Header {
                slots: header.slots.min(MAX_SLOTS),
                ..header
            },
        })
    }

    /// Daemon: rewrites every header field that differs from what it wrote at creation
    /// (the reserved bytes included). Returns the names of the fields it found damaged.
    pub fn repair_header(&self) -> Vec<&'static str> {
        let h = self.header;
        let mut fixed = Vec::new();
        if let Some(size) = self.map.atomic_u64(OFF_DATA_SIZE) {
            if size.load(Ordering::Relaxed) != h.data_size {
                size.store(h.data_size, Ordering::Relaxed);
                fixed.push("data_size");
            }
        }
        let mut check = |name: &'static str, off: usize, want: u32| {
            let w = self.word_at(off);
            if w.load(Ordering::Relaxed) != want {
                w.store(want, Ordering::Relaxed);
                fixed.push(name);
            }
        };
        check("magic", OFF_MAGIC, MAGIC);
        check("version", OFF_VERSION, VERSION);
        check("kind", OFF_KIND, h.kind as u32);
        check("flags", OFF_FLAGS, h.flags);
        check("max", OFF_MAX, h.max);
        check("slots", OFF_SLOTS, h.slots);
        for off in (OFF_RESERVED..OFF_SLOT_TABLE).step_by(4) {
            check("reserved", off, 0);
        }
        fixed.dedup();
        fixed
    }

    /// The fields written at creation (the daemon's), as announced to [`Control::open`].
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

    /// Daemon: stores its own count of recoveries (the word is informational).
    pub fn set_recovered(&self, n: u32) {
        self.word_at(OFF_RECOVERED).store(n, Ordering::Relaxed);
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

/// A read-only view of a segment's control block: what a read-only attacher maps. It can
/// read the lock word and sleep on it, nothing else; the lock itself is taken and released
/// through the daemon.
pub struct ControlView {
    map: Mapping,
}

impl fmt::Debug for ControlView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlView")
            .field("word", &self.word())
            .finish()
    }
}

impl ControlView {
    /// Maps a control memfd read-only (the daemon hands read-only attachers a read-only
    /// descriptor, so nothing else would work).
    pub fn open(fd: BorrowedFd<'_>) -> Result<ControlView, ControlError> {
        let map = Mapping::map(fd, Access::ReadOnly).map_err(ControlError::Map)?;
        if (map.len() as u64) < CONTROL_SIZE {
            return Err(ControlError::Corrupt(format!(
                "{} bytes, need {CONTROL_SIZE}",
                map.len()
            )));
        }
        Ok(ControlView { map })
    }

    /// The lock word (Acquire).
    pub fn word(&self) -> u32 {
        self.map.load_u32(OFF_WORD).unwrap_or(0)
    }

    /// Sleeps while the lock word equals `expected`, for at most `timeout`.
    pub fn wait(&self, expected: u32, timeout: Duration) {
        let _ = self.map.wait_u32(OFF_WORD, expected, Some(timeout));
    }

    /// Wakes one sleeper on the lock word (passing on a wake-up this waiter will not use).
    pub fn wake_one(&self) {
        let _ = self.map.wake_u32(OFF_WORD, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::map::create_memfd;
    use crate::shm::token::Token;
    use std::os::fd::AsFd;

    fn sem_header() -> Header {
        Header {
            kind: Kind::Semaphore,
            flags: FLAG_UNDO,
            data_size: 0,
            max: 9,
            slots: 4,
        }
    }

    #[test]
    fn init_then_open_share_the_words() {
        let fd = create_memfd("qcop-test-control", CONTROL_SIZE).unwrap();
        let header = sem_header();
        let a = Control::init(fd.as_fd(), header, 3).unwrap();
        let b = Control::open(fd.as_fd(), header).unwrap();
        assert_eq!(b.header(), header);
        assert_eq!(b.semaphore().value(), 3);
        assert!(b.slot(3).is_some() && b.slot(4).is_none());
        assert!(a.semaphore().try_acquire(None));
        assert_eq!(b.semaphore().value(), 2, "both views share the word");
        let small = create_memfd("qcop-test-control", 64).unwrap();
        assert!(Control::open(small.as_fd(), header).is_err());
    }

    #[test]
    fn openers_use_the_announced_fields_not_the_block() {
        let fd = create_memfd("qcop-test-control", CONTROL_SIZE).unwrap();
        let header = sem_header();
        let daemon = Control::init(fd.as_fd(), header, 1).unwrap();
        // Someone scribbles the whole block.
        let w = Control::open(fd.as_fd(), header).unwrap();
        for off in (0..CONTROL_SIZE as usize).step_by(4) {
            w.word_at(off)
                .store(0xdead_beef ^ off as u32, Ordering::Relaxed);
        }
        // A later opener still works with the daemon's maximum.
        let later = Control::open(fd.as_fd(), header).unwrap();
        assert_eq!(later.semaphore().max(), 9);
        assert_eq!(later.semaphore().value(), 9, "clamped to the maximum");
        let mut fixed = daemon.repair_header();
        fixed.sort_unstable();
        assert_eq!(
            fixed,
            [
                "data_size",
                "flags",
                "kind",
                "magic",
                "max",
                "reserved",
                "slots",
                "version"
            ]
        );
        assert!(daemon.repair_header().is_empty(), "repaired once");
        assert_eq!(daemon.map.load_u32(OFF_MAGIC), Some(MAGIC));
        assert_eq!(daemon.map.load_u32(OFF_MAX), Some(9));
    }

    #[test]
    fn a_read_only_view_reads_the_lock_word_and_cannot_write_it() {
        let fd = create_memfd("qcop-test-control", CONTROL_SIZE).unwrap();
        let header = Header {
            kind: Kind::Segment,
            flags: 0,
            data_size: 100,
            max: 0,
            slots: 0,
        };
        let c = Control::init(fd.as_fd(), header, 0).unwrap();
        let t = Token::new(1, 0).unwrap();
        assert!(c.lock().try_lock(t).is_ok());
        let v = ControlView::open(fd.as_fd()).unwrap();
        assert_eq!(v.word(), t.raw());
        assert_eq!(v.map.access(), Access::ReadOnly);
        v.wait(0, Duration::from_millis(1));
        v.wake_one();
    }
}
