//! Test support: a ring whose memory a hostile or crashed producer scribbled over, read by
//! a consumer that must neither panic, nor read out of bounds, nor loop forever. Used by
//! the property test in `tests.rs` and by the fuzz target `fuzz/fuzz_targets/shm_ring.rs`.

use super::{Consumer, Producer, Ring, StreamError, WaitMode};
use crate::shm::heap::HeapMemory;
use crate::shm::layout::{state, Geometry, Policy};
use std::time::{Duration, Instant};

/// What to build, publish and scribble.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Overflow policy.
    pub lossy: bool,
    /// Slot size is `8 * (1 + slot_words % 8)` bytes.
    pub slot_words: u8,
    /// Slot count is `2 << (count_log2 % 6)`.
    pub count_log2: u8,
    /// Messages published before the scribbling.
    pub before: u16,
    /// Messages published after it.
    pub after: u16,
    /// `(offset, byte)` writes; offsets wrap modulo the ring length plus 64 (some land past
    /// the end and are ignored).
    pub patches: Vec<(u32, u8)>,
}

/// What the consumers got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Messages delivered.
    pub received: u64,
    /// Corrupt slots reported.
    pub corrupt: u64,
    /// Whether a second consumer could open the scribbled header.
    pub reopened: bool,
}

/// Runs the scenario. Panics only if the ring code itself misbehaves (a delivered message
/// longer than a slot).
pub fn consume_scribbled(s: &Scenario) -> Outcome {
    let policy = if s.lossy {
        Policy::Lossy
    } else {
        Policy::Lossless
    };
    let slot_size = 8 * (1 + u32::from(s.slot_words % 8));
    let geo = match Geometry::new(slot_size, 2 << (s.count_log2 % 6), 2, policy) {
        Ok(g) => g,
        Err(_) => return Outcome::default(),
    };
    let mem = HeapMemory::new(geo.total_len());
    let Ok(ring) = Ring::create(&mem, geo, u64::MAX - 3) else {
        return Outcome::default();
    };
    ring.join(1);
    let mut c = Consumer::attach(ring, 1);
    let mut p = match Ring::open(&mem) {
        Ok(r) => Producer::new(r),
        Err(_) => return Outcome::default(),
    };
    let mut out = Outcome::default();
    let mut buf = Vec::new();
    publish(&mut p, s.before, &mut c, &mut buf, &mut out);
    let span = geo.total_len() as u32 + 64;
    for &(off, byte) in &s.patches {
        mem.scribble((off % span) as usize, byte);
    }
    // A consumer opening the scribbled ring checks its header first.
    if let Ok(ring) = Ring::open(&mem) {
        out.reopened = true;
        let g = *ring.geometry();
        ring.join(0);
        let mut c2 = Consumer::attach(ring, 0);
        let bound = 2 * u64::from(g.slot_count()) + 8;
        drain(&mut c2, &mut buf, &mut out, bound);
        wait_once(&mut c2);
        c2.ring().leave(0);
    }
    publish(&mut p, s.after, &mut c, &mut buf, &mut out);
    let bound = 2 * (u64::from(s.before) + u64::from(s.after) + u64::from(geo.slot_count())) + 8;
    drain(&mut c, &mut buf, &mut out, bound);
    wait_once(&mut c);
    c.ring().end(state::ABANDONED);
    drain(&mut c, &mut buf, &mut out, bound);
    wait_once(&mut c);
    out
}

/// Publishes `n` messages of varying length; a full lossless ring is drained a little.
fn publish(
    p: &mut Producer<&HeapMemory>,
    n: u16,
    c: &mut Consumer<&HeapMemory>,
    buf: &mut Vec<u8>,
    out: &mut Outcome,
) {
    let slot = p.ring().geometry().slot_size() as usize;
    for i in 0..n {
        let m = [i as u8; 64];
        let len = usize::from(i) % (slot.min(64) + 1);
        if p.try_send(&m[..len]).is_err() {
            drain(c, buf, out, 4);
        }
    }
}

fn drain(c: &mut Consumer<&HeapMemory>, buf: &mut Vec<u8>, out: &mut Outcome, bound: u64) {
    let max = c.ring().geometry().slot_size() as usize;
    for _ in 0..bound {
        match c.try_recv_into(buf) {
            Ok(Some(r)) => {
                assert!(
                    r.len <= max && buf.len() == r.len,
                    "message larger than its slot"
                );
                out.received += 1;
            }
            Ok(None) => return,
            Err(_) => out.corrupt += 1,
        }
    }
}

/// Waits that must return within their (short) timeouts whatever the memory holds.
fn wait_once(c: &mut Consumer<&HeapMemory>) {
    let r = c.wait(Some(Instant::now()), WaitMode::Sleep, &mut || true);
    debug_assert!(r != Err(StreamError::DaemonGone));
    let mut buf = Vec::new();
    for mode in [WaitMode::Sleep, WaitMode::Spin] {
        let started = Instant::now();
        let _ = c.recv_into(&mut buf, Duration::ZERO, mode, &mut || true);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "recv_into overstayed its timeout"
        );
    }
}
