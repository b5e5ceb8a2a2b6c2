//! A ring's memory in a memfd mapping, with the event fd that wakes qcopd.

use super::map::{Access, Mapping};
use super::ring::RingMemory;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// A read-write mapping of a ring's memfd, and optionally the event fd through which the
/// producer wakes qcopd's consumer.
pub struct MappedMemory {
    map: Mapping,
    event: Option<OwnedFd>,
}

impl MappedMemory {
    /// Maps the whole memfd read-write.
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<MappedMemory> {
        Ok(MappedMemory {
            map: Mapping::map(fd, Access::ReadWrite)?,
            event: None,
        })
    }

    /// Gives the producer the event fd it writes when qcopd's consumer sleeps.
    pub fn set_event(&mut self, fd: OwnedFd) {
        self.event = Some(fd);
    }

    /// The mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The event fd, if any.
    pub fn event(&self) -> Option<BorrowedFd<'_>> {
        self.event.as_ref().map(AsFd::as_fd)
    }
}

/// Adds one to an event fd's counter (a non-blocking eventfd never blocks a write of 1
/// unless its counter is about to overflow, in which case qcopd has a wake-up pending
/// anyway).
pub fn signal_eventfd(fd: BorrowedFd<'_>) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

#[cfg(not(loom))]
impl RingMemory for MappedMemory {
    #[inline]
    fn size(&self) -> usize {
        self.map.len()
    }

    #[inline]
    fn word32(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        // The ring only computes offsets from a geometry it checked against this length.
        self.map
            .atomic_u32(off)
            .expect("ring offset inside the checked, writable mapping")
    }

    #[inline]
    fn word64(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        self.map
            .atomic_u64(off)
            .expect("ring offset inside the checked, writable mapping")
    }

    #[inline]
    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        let ok = self.map.read(off, dst);
        debug_assert!(ok, "ring payload inside the mapping");
    }

    #[inline]
    fn write_bytes(&self, off: usize, src: &[u8]) {
        let ok = self.map.write(off, src);
        debug_assert!(ok, "ring payload inside the mapping");
    }

    #[inline]
    fn wait(&self, off: usize, expected: u32, timeout: Duration) {
        let _ = self.map.wait_u32(off, expected, Some(timeout));
    }

    #[inline]
    fn wake_all(&self, off: usize) {
        if let Some(w) = self.map.atomic_u32(off) {
            super::futex::wake_all(w);
        }
    }

    #[inline]
    fn signal_event(&self) {
        if let Some(fd) = &self.event {
            signal_eventfd(fd.as_fd());
        }
    }
}

/// Under loom the ring's atomics are loom's, which a real mapping cannot provide; loom
/// models run on heap memory, and nothing maps a ring in a loom build.
#[cfg(loom)]
impl RingMemory for MappedMemory {
    fn size(&self) -> usize {
        self.map.len()
    }
    fn word32(&self, _: usize) -> &super::atomics::AtomicU32 {
        unreachable!("loom builds model rings on the heap")
    }
    fn word64(&self, _: usize) -> &super::atomics::AtomicU64 {
        unreachable!("loom builds model rings on the heap")
    }
    fn read_bytes(&self, _: usize, _: &mut [u8]) {}
    fn write_bytes(&self, _: usize, _: &[u8]) {}
    fn wait(&self, _: usize, _: u32, _: Duration) {}
    fn wake_all(&self, _: usize) {}
}
