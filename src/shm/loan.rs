//! In-place access to ring slots: a publisher's [`Loan`] of the next slot and a subscriber's
//! [`Sample`] of the next message. This is the shared-memory queues' only `unsafe` code:
//! turning a slot of the mapping into a byte slice.
//!
//! Why it is sound: the slice lies inside the mapping (checked against its length); the
//! mapping outlives the slice (a `Loan` or `Sample` borrows its publisher or subscriber,
//! which owns the mapping, mutably, for as long as it lives); within this process nothing
//! else refers to those bytes while the slice exists (the mutable borrow shuts out every
//! other use of the ring end). Other processes may touch the bytes: the protocol forbids it
//! (the slot is loaned to the producer alone until it commits; a lossless producer does not
//! rewrite a slot until every consumer released it), but a buggy or hostile process can
//! ignore the protocol. Then the bytes change under the slice. `u8` has no invalid values,
//! the slice's bounds are this process's own, so that can make the bytes meaningless, never
//! make this process access memory outside the mapping. A lossy producer may legitimately
//! overwrite a sample being read: [`Sample::release`] says whether that happened.
#![allow(unsafe_code)]

use super::mapped::MappedMemory;
use super::ring::{Consumer, Producer, ReadSlot, RingMemory, StreamError, WriteSlot};
use std::ops::{Deref, DerefMut};

/// The next slot of a stream, loaned to the publisher to write a message in place.
///
/// Write into it (it derefs to the whole slot, [`Loan::capacity`] bytes) and
/// [`commit`](Loan::commit) the number of bytes written. Dropping a loan without committing
/// publishes nothing; the next loan gets the same slot.
pub struct Loan<'a> {
    producer: &'a mut Producer<MappedMemory>,
    slot: WriteSlot,
}

impl<'a> Loan<'a> {
    pub(crate) fn new(producer: &'a mut Producer<MappedMemory>, slot: WriteSlot) -> Loan<'a> {
        Loan { producer, slot }
    }

    /// Bytes the slot holds.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    /// Publishes the first `len` bytes of the slot (at most the capacity) as the next
    /// message, and wakes subscribers that sleep.
    #[inline]
    pub fn commit(self, len: usize) {
        self.producer.commit(self.slot, len);
    }

    fn in_bounds(&self) -> bool {
        self.slot
            .data
            .checked_add(self.slot.capacity)
            .is_some_and(|end| end <= self.producer.ring().memory().size())
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        if !self.in_bounds() {
            return &[]; // not reached: the ring checked its geometry against the mapping
        }
        let base = self.producer.ring().memory().mapping().as_ptr();
        // SAFETY: `data..data + capacity` lies inside the mapping (checked just above), which
        // lives as long as the producer this loan borrows; see the module documentation for
        // why no other reference to these bytes exists while the slice does.
        unsafe { std::slice::from_raw_parts(base.add(self.slot.data), self.slot.capacity) }
    }
}

impl DerefMut for Loan<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        if !self.in_bounds() {
            return &mut [];
        }
        let base = self.producer.ring().memory().mapping().as_ptr();
        // SAFETY: as in `deref`; the slice is unique because it borrows this loan mutably,
        // and the loan borrows the producer mutably (the slot is the producer's alone until
        // it commits).
        unsafe { std::slice::from_raw_parts_mut(base.add(self.slot.data), self.slot.capacity) }
    }
}

/// The next message of a stream, borrowed in place by a subscriber.
///
/// Derefs to the message bytes. Release it (or drop it) to move on; in a lossless stream
/// that hands the slot back to the publisher.
pub struct Sample<'a> {
    consumer: &'a mut Consumer<MappedMemory>,
    slot: ReadSlot,
    released: bool,
}

impl<'a> Sample<'a> {
    pub(crate) fn new(consumer: &'a mut Consumer<MappedMemory>, slot: ReadSlot) -> Sample<'a> {
        Sample {
            consumer,
            slot,
            released: false,
        }
    }

    /// Messages lost (the lossy publisher overran this subscriber) just before this one.
    pub fn lost_before(&self) -> u64 {
        self.slot.lost_before
    }

    /// Moves past this message. Fails with [`StreamError::Overwritten`] if a lossy
    /// publisher overwrote it while it was borrowed: what was read may then be a mix of two
    /// messages, and it is counted as lost.
    pub fn release(mut self) -> Result<(), StreamError> {
        self.released = true;
        if self.consumer.release_checked(self.slot.pos) {
            Ok(())
        } else {
            Err(StreamError::Overwritten)
        }
    }
}

impl Deref for Sample<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        let end = self.slot.data.checked_add(self.slot.len);
        if end.map_or(true, |e| e > self.consumer.ring().memory().size()) {
            return &[]; // not reached: lengths are checked against the slot size
        }
        let base = self.consumer.ring().memory().mapping().as_ptr();
        // SAFETY: `data..data + len` lies inside the mapping (checked above; `len` was also
        // checked against the slot size when the message was read), which lives as long as
        // the consumer this sample borrows; see the module documentation.
        unsafe { std::slice::from_raw_parts(base.add(self.slot.data), self.slot.len) }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.consumer.release_checked(self.slot.pos);
        }
    }
}
