//! In-place access to a segment's data while its lock is held: the only `unsafe` of the
//! segments. Everything else copies through the bounds-checked [`Mapping::read`] /
//! [`Mapping::write`].
//!
//! Only [`SegmentGuard`](super::SegmentGuard) calls these, and only while its attachment
//! holds the segment lock. The lock is the segment's contract, as in Qt: every process that
//! touches the data in place or writes it holds the lock. A process that breaks the contract
//! (writing without the lock) can tear the bytes a lock holder sees, but bytes have no
//! invalid values, so that is wrong data, never an invalid value or a dangling reference.
#![allow(unsafe_code)]

use super::map::{Access, Mapping};

/// The whole mapping as bytes, for as long as `map` is borrowed.
#[inline]
pub(crate) fn bytes(map: &Mapping) -> &[u8] {
    // SAFETY: `as_ptr()..as_ptr()+len()` is one live MAP_SHARED mapping owned by `map`; it is
    // unmapped only when `map` drops, which the borrow prevents for the slice's lifetime.
    // The pointer is page-aligned and non-null (mmap succeeded), `len` is at most
    // isize::MAX (checked by `Mapping::map`), and every byte pattern is a valid `u8`. The
    // caller holds the segment lock, so no cooperating writer changes the bytes meanwhile
    // (see the module documentation for writers that do not cooperate).
    unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }
}

/// The whole mapping as mutable bytes; `None` for a read-only mapping.
#[inline]
pub(crate) fn bytes_mut(map: &mut Mapping) -> Option<&mut [u8]> {
    if map.access() != Access::ReadWrite {
        return None;
    }
    // SAFETY: as in `bytes`, plus: the mapping is PROT_WRITE (checked just above), and
    // `&mut Mapping` proves that nothing else in this process borrows this mapping for the
    // slice's lifetime. Other mappings of the same memory (other attachments, other
    // processes) write it only while holding the lock, which the caller holds.
    Some(unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), map.len()) })
}
