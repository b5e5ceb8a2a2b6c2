//! Shared memory between processes on one board: the foundation of the shared-memory queues
//! and segments.
//!
//! - [`futex`]: waiting and waking on 32-bit words in shared memory (shared futexes).
//! - [`map`]: anonymous memory files (memfd) and their mappings, with bounds-checked access.
//!
//! Segments and semaphores (Qt's `QSharedMemory` and `QSystemSemaphore`), bottom up:
//! - [`token`]: 30-bit holder tokens, and the process liveness check of the daemon-less
//!   fallback;
//! - [`robust`]: the segment lock, a futex mutex that hands itself over with an
//!   "owner died" flag when its holder dies;
//! - [`counting`]: counting semaphores with SysV-style undo slots;
//! - [`control`]: the control block layout that holds the lock or the semaphore;
//! - [`SharedMemory`], [`SystemSemaphore`] and [`ShmError`]: the API applications use
//!   (`borrow`, the in-place data access under the lock, is its only `unsafe`).
//!
//! Shared-memory queues (streams: one publisher, broadcast to every subscriber):
//! - [`stream`]: the application API, [`Publisher`] and [`Subscriber`], with zero-copy
//!   [`Loan`]s and [`Sample`]s (the `loan` module, this layer's only `unsafe`).
//! - [`ring`]: the lock-free ring protocol, generic over its memory; [`layout`]: its bytes.
//! - [`mapped`]: ring memory in a memfd mapping; [`heap`]: on the heap, for tests, Miri,
//!   loom and fuzzing; [`atomics`]: the atomics, swapped for loom's under `--cfg loom`.
//!
//! Memory is created by `qcopd` as a memfd and handed to clients as a file descriptor over
//! the daemon's socket, so nothing is ever named in `/dev/shm` and nothing outlives the last
//! process that holds it. Everything placed in shared memory uses fixed-width fields at
//! explicit offsets, so a 32-bit armv7 process and a 64-bit aarch64 process on the same
//! kernel see the same layout. Memory another process writes is untrusted: every index and
//! length read from it is checked before use.

pub mod futex;
pub mod map;

mod borrow;
pub mod control;
pub mod counting;
mod error;
pub mod robust;
mod segment;
mod semaphore;
pub mod token;

pub use error::ShmError;
pub use map::Access;
pub use segment::{SegmentBuilder, SegmentGuard, SharedMemory, MAX_NAME_LEN};
pub use semaphore::{SemaphoreBuilder, SystemSemaphore};

// Shared-memory queues (streams): the ring protocol and the API built on it.
pub mod atomics;
pub mod heap;
pub mod layout;
mod loan;
pub mod mapped;
pub mod ring;
pub mod stream;

pub use layout::Policy;
pub use loan::{Loan, Sample};
pub use ring::{Received, StreamError, WaitMode};
pub use stream::{Publisher, StreamOptions, Subscriber};
