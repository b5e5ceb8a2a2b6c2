//! Ring protocol tests on heap memory: single-threaded behaviour, wraparound, and threaded
//! stress (counts scaled down under Miri).

use super::*;
use crate::shm::heap::HeapMemory;
use std::sync::Arc;
use std::time::Duration;

/// Generous: tests never assert speed.
const SOON: Duration = Duration::from_secs(20);

/// A fresh ring on the heap and the memory, to open more ends on.
fn ring(
    slot_size: u32,
    count: u32,
    records: u32,
    policy: Policy,
    start: u64,
) -> (Arc<HeapMemory>, Ring<Arc<HeapMemory>>) {
    let geo = Geometry::new(slot_size, count, records, policy).unwrap();
    let mem = Arc::new(HeapMemory::new(geo.total_len()));
    let ring = Ring::create(Arc::clone(&mem), geo, start).unwrap();
    (mem, ring)
}

fn open(mem: &Arc<HeapMemory>) -> Ring<Arc<HeapMemory>> {
    Ring::open(Arc::clone(mem)).unwrap()
}

/// A consumer that qcopd joined to record `r`.
fn joined(mem: &Arc<HeapMemory>, r: u32) -> Consumer<Arc<HeapMemory>> {
    let ring = open(mem);
    ring.join(r);
    Consumer::attach(ring, r)
}

fn recv(c: &mut Consumer<Arc<HeapMemory>>) -> Option<(Vec<u8>, u64)> {
    let mut buf = Vec::new();
    c.try_recv_into(&mut buf)
        .unwrap()
        .map(|r| (buf, r.lost_before))
}

#[test]
fn messages_arrive_in_order_with_their_lengths() {
    let (mem, r) = ring(16, 4, 2, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    assert_eq!(recv(&mut c), None);
    for m in [&b"a"[..], b"", b"0123456789abcdef"] {
        p.try_send(m).unwrap();
    }
    assert_eq!(recv(&mut c), Some((b"a".to_vec(), 0)));
    assert_eq!(recv(&mut c), Some((Vec::new(), 0)));
    assert_eq!(recv(&mut c), Some((b"0123456789abcdef".to_vec(), 0)));
    assert_eq!(recv(&mut c), None);
}

#[test]
fn every_consumer_sees_every_message() {
    let (mem, r) = ring(8, 8, 4, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut cs: Vec<_> = (1..4).map(|i| joined(&mem, i)).collect();
    for i in 0u8..5 {
        p.try_send(&[i]).unwrap();
    }
    for c in &mut cs {
        for i in 0u8..5 {
            assert_eq!(recv(c), Some((vec![i], 0)));
        }
    }
}

#[test]
fn lossless_producer_waits_for_the_slowest_active_consumer() {
    let (mem, r) = ring(8, 4, 3, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut fast = joined(&mem, 1);
    let mut slow = joined(&mem, 2);
    for i in 0u8..4 {
        p.try_send(&[i]).unwrap();
        assert!(recv(&mut fast).is_some());
    }
    assert_eq!(
        p.try_send(&[4]),
        Err(Full),
        "the slow consumer holds every slot"
    );
    assert_eq!(recv(&mut slow), Some((vec![0], 0)));
    p.try_send(&[4]).unwrap();
    assert_eq!(p.try_send(&[5]), Err(Full));
    // The slow consumer leaves (qcopd frees its record): nothing holds the producer.
    open(&mem).leave(2);
    for i in 5u8..20 {
        p.try_send(&[i]).unwrap();
        assert_eq!(recv(&mut fast), Some((vec![i - 1], 0)));
    }
}

#[test]
fn released_slots_go_back_in_batches_or_when_the_reader_caught_up() {
    // 64 slots: the cursor is stored every 8 positions.
    let (mem, r) = ring(8, 64, 2, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    for i in 0..64u32 {
        p.try_send(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(p.try_send(b"x"), Err(Full));
    for _ in 0..7 {
        assert!(recv(&mut c).is_some());
    }
    assert_eq!(
        p.try_send(b"x"),
        Err(Full),
        "7 released, not yet handed back"
    );
    assert!(recv(&mut c).is_some());
    for _ in 0..8 {
        p.try_send(b"y").unwrap();
    }
    assert_eq!(p.try_send(b"z"), Err(Full));
    // A producer that waits is noticed at the next release.
    assert!(matches!(p.prepare_space_sleep(), Sleep::Wait(_)));
    assert!(recv(&mut c).is_some());
    p.finish_space_sleep();
    p.try_send(b"z").unwrap();
    // A reader that caught up hands everything back before it would wait.
    while recv(&mut c).is_some() {}
    for _ in 0..63 {
        p.try_send(b"w").unwrap();
    }
}

#[test]
fn a_lossless_ring_without_consumers_never_blocks() {
    let (_mem, r) = ring(8, 2, 2, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    for i in 0u8..10 {
        p.try_send(&[i]).unwrap();
    }
}

#[test]
fn lossy_consumer_learns_exactly_how_many_it_lost() {
    let (mem, r) = ring(8, 4, 2, Policy::Lossy, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    for i in 0u8..10 {
        p.try_send(&[i]).unwrap();
    }
    // Positions 6..9 are still in the ring; 0..5 were overwritten.
    assert_eq!(recv(&mut c), Some((vec![6], 6)));
    assert_eq!(recv(&mut c), Some((vec![7], 0)));
    assert_eq!(c.lost(), 6);
    for i in 10u8..12 {
        p.try_send(&[i]).unwrap();
    }
    assert_eq!(recv(&mut c), Some((vec![8], 0)));
    assert_eq!(recv(&mut c), Some((vec![9], 0)));
    assert_eq!(recv(&mut c), Some((vec![10], 0)));
    assert_eq!(recv(&mut c), Some((vec![11], 0)));
    assert_eq!(recv(&mut c), None);
}

#[test]
fn a_message_overwritten_during_the_copy_is_not_delivered() {
    let (mem, r) = ring(8, 2, 2, Policy::Lossy, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    p.try_send(b"first").unwrap();
    let m = c.peek().unwrap().unwrap();
    // The producer laps the reader between its first look and its re-check.
    p.try_send(b"x").unwrap();
    p.try_send(b"torn").unwrap();
    assert!(!c.still_valid(m.pos));
    // Position 0 is gone; 1 and 2 are in the ring.
    assert_eq!(recv(&mut c), Some((b"x".to_vec(), 1)));
    assert_eq!(recv(&mut c), Some((b"torn".to_vec(), 0)));
}

#[test]
fn positions_wrap_around_u64() {
    for policy in [Policy::Lossless, Policy::Lossy] {
        let start = u64::MAX - 5;
        let (mem, r) = ring(8, 4, 2, policy, start);
        let mut p = Producer::new(r);
        let mut c = joined(&mem, 1);
        assert_eq!(c.position(), start);
        for i in 0u32..40 {
            p.try_send(&i.to_le_bytes()).unwrap();
            assert_eq!(recv(&mut c), Some((i.to_le_bytes().to_vec(), 0)));
        }
        assert_eq!(p.position(), start.wrapping_add(40));
        // And an overrun across the wrap is counted exactly.
        if policy == Policy::Lossy {
            let (mem, r) = ring(8, 4, 2, policy, u64::MAX - 2);
            let mut p = Producer::new(r);
            let mut c = joined(&mem, 1);
            for i in 0u32..9 {
                p.try_send(&i.to_le_bytes()).unwrap();
            }
            assert_eq!(recv(&mut c), Some((5u32.to_le_bytes().to_vec(), 5)));
        }
    }
}

#[test]
fn a_consumer_joining_late_starts_at_the_head() {
    let (mem, r) = ring(8, 4, 2, Policy::Lossless, 7);
    let mut p = Producer::new(r);
    p.try_send(b"old").unwrap();
    let mut c = joined(&mem, 1);
    p.try_send(b"new").unwrap();
    assert_eq!(recv(&mut c), Some((b"new".to_vec(), 0)));
}

#[test]
fn end_of_stream_comes_after_the_last_message() {
    let (mem, r) = ring(8, 4, 2, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    p.try_send(b"last").unwrap();
    // A message being written when the producer died is never delivered.
    let _half = p.try_begin().unwrap();
    assert!(open(&mem).end(state::ABANDONED));
    assert!(!open(&mem).end(state::ENDED), "ends once");
    let mut buf = Vec::new();
    let got = c.recv_into(&mut buf, SOON, WaitMode::Sleep, &mut || true);
    assert_eq!(got.map(|r| r.len), Ok(4));
    let got = c.recv_into(&mut buf, SOON, WaitMode::Sleep, &mut || true);
    assert_eq!(got, Err(StreamError::Ended));
    assert_eq!(
        Producer::new(open(&mem)).begin(SOON, WaitMode::Sleep, &mut || true),
        Err(StreamError::Ended)
    );
}

#[test]
fn waits_time_out_and_notice_a_dead_daemon() {
    let (mem, r) = ring(8, 2, 2, Policy::Lossless, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    let mut buf = Vec::new();
    let quick = Duration::from_millis(30);
    for mode in [
        WaitMode::Sleep,
        WaitMode::Spin,
        WaitMode::Adaptive(Duration::from_millis(5)),
    ] {
        assert_eq!(
            c.recv_into(&mut buf, quick, mode, &mut || true),
            Err(StreamError::Timeout)
        );
    }
    let mut dead = || false;
    assert_eq!(
        c.recv_into(&mut buf, SOON, WaitMode::Sleep, &mut dead),
        Err(StreamError::DaemonGone)
    );
    p.try_send(b"1").unwrap();
    p.try_send(b"2").unwrap();
    assert_eq!(
        p.begin(quick, WaitMode::Sleep, &mut || true).map(|_| ()),
        Err(StreamError::Timeout)
    );
    // Spinning checks liveness every 65536 spins, which Miri takes too long to reach.
    let spin = if cfg!(miri) {
        WaitMode::Adaptive(Duration::from_millis(1))
    } else {
        WaitMode::Spin
    };
    assert_eq!(
        p.begin(SOON, spin, &mut dead).map(|_| ()),
        Err(StreamError::DaemonGone)
    );
}

#[test]
fn the_event_consumer_is_signalled_once_per_sleep() {
    let (mem, r) = ring(8, 8, 2, Policy::Lossy, 0);
    let mut p = Producer::new(r);
    let c = joined(&mem, 0);
    p.try_send(b"a").unwrap();
    assert_eq!(mem.events(), 0, "nobody sleeps: no signal");
    assert!(!c.prepare_event_sleep(), "something to read: do not sleep");
    let mut c = c;
    assert!(recv(&mut c).is_some());
    assert!(c.prepare_event_sleep());
    p.try_send(b"b").unwrap();
    p.try_send(b"c").unwrap();
    assert_eq!(mem.events(), 1);
}

#[test]
fn a_consumer_that_died_asleep_is_taken_off_the_sleepers() {
    let (mem, _ring) = ring(8, 8, 2, Policy::Lossless, 0);
    let c = joined(&mem, 1);
    assert!(matches!(c.prepare_sleep(), Sleep::Wait(_)));
    let sleepers = || sleepers::count(mem.word32(off::SLEEPERS).load(Ordering::Relaxed));
    assert_eq!(sleepers(), 1);
    // The process dies here; qcopd frees its record.
    open(&mem).leave(1);
    assert_eq!(sleepers(), 0);
    // Its late `finish_sleep` (had it lived) would not wrap the count.
    c.finish_sleep();
    assert_eq!(sleepers(), 0);
}

#[test]
fn corrupt_stamps_and_lengths_are_reported_and_skipped() {
    let (mem, r) = ring(8, 4, 2, Policy::Lossy, 0);
    let mut p = Producer::new(r);
    let mut c = joined(&mem, 1);
    for i in 0u8..3 {
        p.try_send(&[i]).unwrap();
    }
    let geo = *c.ring().geometry();
    mem.word64(geo.slot_offset(0) + off::slot::STAMP)
        .store(0xdead_beef_0000_0002, Ordering::Relaxed);
    mem.word32(geo.slot_offset(1) + off::slot::LEN)
        .store(9, Ordering::Relaxed);
    let mut buf = Vec::new();
    assert_eq!(
        c.try_recv_into(&mut buf),
        Err(Corrupt::Stamp(0xdead_beef_0000_0002))
    );
    assert_eq!(c.try_recv_into(&mut buf), Err(Corrupt::Length(9)));
    assert_eq!(recv(&mut c), Some((vec![2], 2)));
    assert_eq!(c.lost(), 2);
}

#[test]
fn bad_headers_are_refused() {
    let geo = Geometry::new(8, 4, 1, Policy::Lossy).unwrap();
    let mem = HeapMemory::new(geo.total_len());
    assert_eq!(Ring::open(&mem).err(), Some(LayoutError::Magic(0)));
    Ring::create(&mem, geo, 0).unwrap();
    assert!(Ring::open(&mem).is_ok());
    mem.word32(off::VERSION).store(2, Ordering::Relaxed);
    assert_eq!(Ring::open(&mem).err(), Some(LayoutError::Version(2)));
    mem.word32(off::VERSION).store(1, Ordering::Relaxed);
    mem.word32(off::SLOT_COUNT).store(8, Ordering::Relaxed);
    assert!(matches!(
        Ring::open(&mem).err(),
        Some(LayoutError::TotalLen(_))
    ));
    let small = HeapMemory::new(64);
    assert!(matches!(
        Ring::open(&small).err(),
        Some(LayoutError::Truncated { .. })
    ));
    assert!(matches!(
        Ring::create(&small, geo, 0).err(),
        Some(LayoutError::Truncated { .. })
    ));
}

/// Threads: one producer, several consumers (some sleeping, some spinning). Lossless:
/// every consumer gets every message, in order, intact. Lossy: every message a consumer
/// gets is intact and in order, and received + lost accounts for every message.
#[test]
fn threaded_stress() {
    let n: u32 = if cfg!(miri) { 200 } else { 50_000 };
    for policy in [Policy::Lossless, Policy::Lossy] {
        let (mem, r) = ring(64, 16, 4, policy, u64::MAX - 1000);
        let consumers: Vec<_> = (1..4u32)
            .map(|i| {
                let mut c = joined(&mem, i);
                let mode = match i {
                    1 => WaitMode::Sleep,
                    2 => WaitMode::Spin,
                    _ => WaitMode::Adaptive(Duration::from_micros(50)),
                };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let (mut got, mut next) = (0u32, 0u32);
                    loop {
                        match c.recv_into(&mut buf, SOON, mode, &mut || true) {
                            Ok(r) => {
                                let v = u32::from_le_bytes(buf[..4].try_into().unwrap());
                                // Intact: every byte after the number repeats its low byte.
                                assert_eq!(buf.len(), 4 + (v % 60) as usize);
                                assert!(buf[4..].iter().all(|&b| b == v as u8), "torn");
                                assert_eq!(u64::from(v), u64::from(next) + r.lost_before);
                                next = v + 1;
                                got += 1;
                            }
                            Err(StreamError::Ended) => return (got, c.lost(), next),
                            Err(e) => panic!("consumer {i}: {e}"),
                        }
                    }
                })
            })
            .collect();
        let mut p = Producer::new(r);
        let mut msg = Vec::new();
        for v in 0..n {
            msg.clear();
            msg.extend_from_slice(&v.to_le_bytes());
            msg.resize(4 + (v % 60) as usize, v as u8);
            let s = p.begin(SOON, WaitMode::Sleep, &mut || true).unwrap();
            mem.write_bytes(s.data, &msg);
            p.commit(s, msg.len());
        }
        p.ring().end(state::ENDED);
        for t in consumers {
            let (got, lost, next) = t.join().unwrap();
            assert_eq!(u64::from(got) + lost, u64::from(n), "{policy}");
            if policy == Policy::Lossless {
                assert_eq!((got, lost), (n, 0));
            }
            assert_eq!(next, n, "the last message is never lost");
        }
        assert_eq!(
            sleepers::count(mem.word32(off::SLEEPERS).load(Ordering::Relaxed)),
            0
        );
    }
}

/// qcopd's forwarding read (record 0, `forward_into`, the event-fd sleep between empty
/// turns) against a producer publishing flat out into small lossless rings: every message
/// arrives in order, none is lost, and no honest slot counts as corrupt.
#[test]
fn the_daemon_consumer_reads_a_busy_lossless_ring_whole() {
    let n: u32 = if cfg!(miri) { 100 } else { 50_000 };
    for slots in [2, 4, 16] {
        let (mem, r) = ring(
            8,
            slots,
            2,
            Policy::Lossless,
            u64::MAX - 4 * u64::from(slots),
        );
        let start = r.start();
        let mut c = Consumer::new(open(&mem), Some(0), start);
        let at = c.ring().join(0);
        c.restart_at(at);
        let producer = std::thread::spawn(move || {
            let mut p = Producer::new(r);
            for v in 0..n {
                let s = p.begin(SOON, WaitMode::Sleep, &mut || true).unwrap();
                p.ring().memory().write_bytes(s.data, &v.to_le_bytes());
                p.commit(s, 4);
            }
            p.ring().end(state::ENDED);
        });
        let mut buf = Vec::new();
        let mut next = 0u32;
        loop {
            match c.forward_into(&mut buf) {
                Ok(Polled::Message(r)) => {
                    assert_eq!(r.lost_before, 0);
                    assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), next);
                    next += 1;
                }
                Ok(Polled::Empty) if !c.ring().is_open() && !c.readable() => break,
                Ok(Polled::Empty) => {
                    // The end of a turn: qcopd would sleep on the event fd now.
                    let _ = c.prepare_event_sleep();
                    std::thread::yield_now();
                }
                Ok(Polled::Stalled) => panic!("stalled on an honest ring of {slots} slots"),
                Err(e) => panic!("honest slot counted as corrupt ({slots} slots): {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!((next, c.lost()), (n, 0), "{slots} slots");
    }
}

/// Targeted scribbles: the fields a hostile producer would aim for.
#[test]
fn scribbled_headers_stamps_and_lengths_are_survived() {
    use super::scribble::{consume_scribbled, Scenario};
    let geo = Geometry::new(8, 4, 2, Policy::Lossy).unwrap();
    let targets = [
        off::SLOT_SIZE,
        off::SLOT_COUNT,
        off::RECORDS,
        off::TOTAL_LEN,
        off::HEAD,
        off::HEAD + 7,
        off::SLEEPERS,
        off::STATE,
        geo.record_offset(1),
        geo.record_offset(1) + 7,
        geo.slot_offset(0),
        geo.slot_offset(0) + 7,
        geo.slot_offset(1) + off::slot::LEN,
        geo.slot_offset(1) + off::slot::LEN + 3,
    ];
    for lossy in [false, true] {
        for &t in &targets {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let s = Scenario {
                    lossy,
                    slot_words: 0,
                    count_log2: 1,
                    before: 3,
                    after: 5,
                    patches: vec![(t as u32, byte)],
                };
                let out = consume_scribbled(&s);
                assert!(out.received <= 8 + 8, "{s:?}: {out:?}");
            }
        }
    }
}

#[cfg(not(miri))]
mod scribble_props {
    use super::super::scribble::{consume_scribbled, Scenario};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Random bytes anywhere in a live ring: the consumer returns messages or errors,
        /// never panics, never reads past the memory, always returns.
        #[test]
        fn scribbled_rings_never_panic_or_hang(
            lossy: bool,
            slot_words: u8,
            count_log2: u8,
            before in 0u16..40,
            after in 0u16..40,
            patches in proptest::collection::vec((any::<u32>(), any::<u8>()), 0..48),
        ) {
            let s = Scenario { lossy, slot_words, count_log2, before, after, patches };
            consume_scribbled(&s);
        }
    }
}
