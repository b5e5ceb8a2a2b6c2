//! Shared memory between processes on one board: the foundation of the shared-memory queues
//! and segments.
//!
//! - [`futex`]: waiting and waking on 32-bit words in shared memory (shared futexes).
//! - [`map`]: anonymous memory files (memfd) and their mappings, with bounds-checked access.
//!
//! Memory is created by `qcopd` as a memfd and handed to clients as a file descriptor over
//! the daemon's socket, so nothing is ever named in `/dev/shm` and nothing outlives the last
//! process that holds it. Everything placed in shared memory uses fixed-width fields at
//! explicit offsets, so a 32-bit armv7 process and a 64-bit aarch64 process on the same
//! kernel see the same layout. Memory another process writes is untrusted: every index and
//! length read from it is checked before use.

pub mod control;
pub mod counting;
pub mod futex;
pub mod map;
pub mod robust;
pub mod token;
