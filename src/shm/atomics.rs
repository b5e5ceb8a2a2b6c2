//! The atomics the ring protocol uses, in one place so that loom can replace them.
//!
//! Under `--cfg loom` these are loom's model-checked types and every spin loop yields to
//! loom's scheduler; otherwise they are the standard library's. The ring code
//! (`super::ring`) imports atomics only from here.

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Ordering of the two accesses on each side of a Dekker pair: one thread stores (or
/// read-modify-writes) word A and then loads word B, the other does the same with B then A;
/// at least one of them must see the other's write. With every such access SeqCst, the
/// single total order of SeqCst operations guarantees it: a plain `xchg` and `mov` on
/// x86-64, `stlr` and `ldar` on ARMv8, where a SeqCst fence would cost an `mfence` or a
/// `dmb ish` on every message.
pub const DEKKER: Ordering = Ordering::SeqCst;

/// Goes between the two accesses of a Dekker pair. Nothing on real hardware (the SeqCst
/// accesses order themselves); a SeqCst fence under loom, which models SeqCst fences but
/// not the total order of SeqCst loads and stores (tokio-rs/loom#180), so that loom checks
/// the protocol with an ordering it models and that gives the same guarantee.
#[inline]
pub fn dekker_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// Body of a busy-wait loop: a CPU pause hint, or a scheduling point under loom (a loom
/// model that spins without yielding never terminates).
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
