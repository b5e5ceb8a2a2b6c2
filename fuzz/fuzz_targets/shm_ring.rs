//! A shared-memory ring that a hostile producer scribbled over, read by a consumer: the
//! consumer returns messages or errors, never panics, never reads out of bounds (the heap
//! memory would panic on an index past its end), and always returns.
//!
//! Input: 5 bytes of scenario (policy, slot size, slot count, messages before and after),
//! then any number of 5-byte patches (u32 little-endian offset, byte value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcop::shm::ring::scribble::{consume_scribbled, Scenario};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let patches = rest
        .chunks_exact(5)
        .map(|p| (u32::from_le_bytes([p[0], p[1], p[2], p[3]]), p[4]))
        .collect();
    let s = Scenario {
        lossy: head[0] & 1 == 1,
        slot_words: head[1],
        count_log2: head[2],
        before: u16::from(head[3] % 64),
        after: u16::from(head[4] % 64),
        patches,
    };
    consume_scribbled(&s);
});
