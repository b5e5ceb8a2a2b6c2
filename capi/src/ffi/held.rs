//! Handles that lend part of themselves to C across calls: a publisher's loan of a slot, a
//! subscriber's borrowed sample, a segment's lock.
//!
//! The Rust types borrow their owner (`Loan<'a>` borrows its `Publisher` mutably, a
//! `SegmentGuard<'a>` its `SharedMemory`), but a C program holds the owner and the borrow
//! in one handle between calls. [`Lent`] keeps the owner in a heap allocation of its own,
//! which never moves, and the borrow beside it, typed with a `'static` lifetime that is in
//! truth "until the borrow is given back or the handle is freed":
//! - while a borrow is out, nothing else reaches the owner ([`Lent::owner`] refuses), so the
//!   borrow's unique access holds;
//! - the borrow is always dropped before the owner ([`Drop`] takes it first);
//! - borrows never leave this type except into the closures of [`Lent::lend`] and
//!   [`Lent::finish`], and [`Lent::lent`] hands out a reference tied to `&mut self`.
#![allow(unsafe_code)]

use std::ptr::NonNull;

/// An owner `O` and, at times, a borrow `B` of it.
pub(crate) struct Lent<O: 'static, B: 'static> {
    owner: NonNull<O>,
    borrow: Option<B>,
}

impl<O: 'static, B: 'static> Lent<O, B> {
    pub(crate) fn new(owner: O) -> Lent<O, B> {
        Lent {
            owner: NonNull::from(Box::leak(Box::new(owner))),
            borrow: None,
        }
    }

    /// The owner, unless a borrow is out.
    pub(crate) fn owner(&mut self) -> Option<&mut O> {
        if self.borrow.is_some() {
            return None;
        }
        // SAFETY: the allocation lives until `drop` (made by `Box::leak` in `new`); no borrow
        // is out (checked above) and the result is tied to `&mut self`, so it is the only
        // reference to the owner while it lives.
        Some(unsafe { self.owner.as_mut() })
    }

    /// Makes a borrow with `f` and keeps it; `Ok(false)` if `f` made none (nothing ready).
    /// Fails with `busy` if a borrow is out already.
    pub(crate) fn lend<E>(
        &mut self,
        busy: impl FnOnce() -> E,
        f: impl FnOnce(&'static mut O) -> Result<Option<B>, E>,
    ) -> Result<bool, E> {
        if self.borrow.is_some() {
            return Err(busy());
        }
        // SAFETY: the allocation lives until `drop`, which drops any borrow first; no other
        // reference to the owner exists (no borrow is out, checked above, and `owner()`
        // refuses while the one made here is kept). If `f` fails or makes no borrow, the
        // reference ends with it.
        let owner: &'static mut O = unsafe { &mut *self.owner.as_ptr() };
        match f(owner)? {
            Some(b) => {
                self.borrow = Some(b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The borrow that is out, if any.
    pub(crate) fn lent(&mut self) -> Option<&mut B> {
        self.borrow.as_mut()
    }

    /// Gives the borrow back through `f` (which consumes it: commit, release, unlock);
    /// `None` if none was out.
    pub(crate) fn finish<R>(&mut self, f: impl FnOnce(B) -> R) -> Option<R> {
        self.borrow.take().map(f)
    }
}

impl<O: 'static, B: 'static> Drop for Lent<O, B> {
    fn drop(&mut self) {
        // The borrow goes first: it refers to the owner.
        drop(self.borrow.take());
        // SAFETY: `owner` came from `Box::leak` in `new` and is freed only here, once; the
        // borrow that referred to it was dropped just above.
        drop(unsafe { Box::from_raw(self.owner.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owner(Vec<u8>);
    struct Guard<'a>(&'a mut Owner);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0 .0.push(9);
        }
    }

    #[test]
    fn the_owner_is_shut_out_while_lent_and_outlives_the_borrow() {
        let mut l: Lent<Owner, Guard<'static>> = Lent::new(Owner(vec![1]));
        assert!(l.owner().is_some());
        assert_eq!(l.lend(|| "busy", |o| Ok(Some(Guard(o)))), Ok(true));
        assert!(l.owner().is_none());
        assert_eq!(l.lend(|| "busy", |o| Ok(Some(Guard(o)))), Err("busy"));
        l.lent().unwrap().0 .0.push(2);
        assert!(l.finish(drop).is_some());
        assert_eq!(l.owner().unwrap().0, vec![1, 2, 9]);
        assert_eq!(l.lend(|| "busy", |_| Ok(None)), Ok(false));
        assert!(l.lent().is_none());
        // Dropped while lent: the guard runs first (Miri would flag the other order).
        l.lend(|| "busy", |o| Ok::<_, &str>(Some(Guard(o))))
            .unwrap();
        drop(l);
    }
}
