//! A ring's memory on the heap, made of atomic words: for threaded tests, Miri, loom models
//! and the fuzz target, where no memfd is needed (or possible).
//!
//! Every access is atomic (payload bytes too, as relaxed word loads and stores), so the
//! seqlock's intended races are data-race free in Rust's model and Miri and loom check the
//! protocol without false alarms. 32-bit and 64-bit fields live in separate word arrays;
//! the layout gives every field one width, so the two views never overlap in use.

use super::atomics::{AtomicU32, AtomicU64, Ordering};
use super::ring::RingMemory;
use std::time::Duration;

/// Heap-backed ring memory.
pub struct HeapMemory {
    w32: Box<[AtomicU32]>,
    w64: Box<[AtomicU64]>,
    len: usize,
    /// Times `signal_event` was called (the event-fd consumer's wake-ups).
    events: AtomicU32,
}

impl HeapMemory {
    /// `len` zeroed bytes (rounded up to a multiple of 8).
    pub fn new(len: usize) -> HeapMemory {
        let len = len.div_ceil(8) * 8;
        HeapMemory {
            w32: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
            w64: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
            len,
            events: AtomicU32::new(0),
        }
    }

    /// Memory holding `bytes` (as little-endian words), e.g. a scribbled-over ring image.
    pub fn from_bytes(bytes: &[u8]) -> HeapMemory {
        let mem = HeapMemory::new(bytes.len());
        let mut padded = bytes.to_vec();
        padded.resize(mem.len, 0);
        for (w, chunk) in mem.w32.iter().zip(padded.chunks_exact(4)) {
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            w.store(v, Ordering::Relaxed);
        }
        for (w, chunk) in mem.w64.iter().zip(padded.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        mem
    }

    /// The memory as bytes: each field read through the view of its own width, as the ring
    /// uses them (`is64(offset)` says which fields are 64-bit).
    pub fn to_bytes(&self, is64: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        let mut i = 0;
        while i < self.len {
            if i % 8 == 0 && is64(i) {
                let v = self.w64[i / 8].load(Ordering::Relaxed);
                out[i..i + 8].copy_from_slice(&v.to_le_bytes());
                i += 8;
            } else {
                let v = self.w32[i / 4].load(Ordering::Relaxed);
                out[i..i + 4].copy_from_slice(&v.to_le_bytes());
                i += 4;
            }
        }
        out
    }

    /// Overwrites the byte at `off` (in both word views), as a hostile process would;
    /// offsets past the end are ignored.
    pub fn scribble(&self, off: usize, byte: u8) {
        if off >= self.len {
            return;
        }
        let shift32 = 8 * (off % 4) as u32;
        let w = &self.w32[off / 4];
        let v = w.load(Ordering::Relaxed);
        w.store(
            (v & !(0xff << shift32)) | (u32::from(byte) << shift32),
            Ordering::Relaxed,
        );
        let shift64 = 8 * (off % 8) as u32;
        let w = &self.w64[off / 8];
        let v = w.load(Ordering::Relaxed);
        w.store(
            (v & !(0xff << shift64)) | (u64::from(byte) << shift64),
            Ordering::Relaxed,
        );
    }

    /// How many times the producer signalled the event-fd consumer.
    pub fn events(&self) -> u32 {
        self.events.load(Ordering::Relaxed)
    }
}

impl RingMemory for HeapMemory {
    fn size(&self) -> usize {
        self.len
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        debug_assert_eq!(off % 4, 0);
        &self.w32[off / 4]
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        debug_assert_eq!(off % 8, 0);
        &self.w64[off / 8]
    }

    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        debug_assert_eq!(off % 4, 0);
        for (i, chunk) in dst.chunks_mut(4).enumerate() {
            // Relaxed: the caller validates the copy with the slot's stamp afterwards.
            let v = self.w32[off / 4 + i].load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn write_bytes(&self, off: usize, src: &[u8]) {
        debug_assert_eq!(off % 4, 0);
        for (i, chunk) in src.chunks(4).enumerate() {
            let mut v = [0u8; 4];
            v[..chunk.len()].copy_from_slice(chunk);
            // Relaxed: published by the Release store of the slot's stamp.
            self.w32[off / 4 + i].store(u32::from_le_bytes(v), Ordering::Relaxed);
        }
    }

    fn wait(&self, off: usize, expected: u32, timeout: Duration) {
        #[cfg(loom)]
        {
            let _ = (off, expected, timeout);
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        {
            let _ = super::futex::wait(self.word32(off), expected, Some(timeout));
        }
    }

    fn wake_all(&self, off: usize) {
        #[cfg(loom)]
        let _ = off;
        #[cfg(not(loom))]
        super::futex::wake_all(self.word32(off));
    }

    fn signal_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}
