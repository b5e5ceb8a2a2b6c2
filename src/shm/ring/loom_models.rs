//! Loom models of the ring protocol: loom runs each closure under every interleaving (and
//! every weak-memory outcome it models) up to a preemption bound. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib shm::ring::loom_models`.
//!
//! Loom does not model time or futexes, so the models check the sleep protocol at its
//! decision points: whenever a waiter decides to sleep on a word with some value, the
//! waker must have changed that word by the time both are done (the futex wait would then
//! return at once), or there was nothing to wake it for.

use super::*;
use crate::shm::heap::HeapMemory;
use loom::thread;
use std::sync::Arc;

/// Preemptions loom explores per execution: enough for the interesting interleavings of
/// two threads, small enough that every model runs in seconds.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(PREEMPTIONS);
    b.check(f);
}

/// A two-slot ring with 8-byte slots and two records (0 for qcopd, 1 for a consumer).
fn ring(policy: Policy, start: u64) -> Arc<HeapMemory> {
    let geo = Geometry::new(8, 2, 2, policy).unwrap();
    let mem = Arc::new(HeapMemory::new(geo.total_len()));
    Ring::create(Arc::clone(&mem), geo, start).unwrap();
    mem
}

fn producer(mem: &Arc<HeapMemory>) -> Producer<Arc<HeapMemory>> {
    Producer::new(Ring::open(Arc::clone(mem)).unwrap())
}

fn consumer(mem: &Arc<HeapMemory>, record: u32) -> Consumer<Arc<HeapMemory>> {
    let ring = Ring::open(Arc::clone(mem)).unwrap();
    ring.join(record);
    Consumer::attach(ring, record)
}

/// An 8-byte message whose two halves both hold `v`: a torn copy shows as unequal halves.
fn msg(v: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&v.to_le_bytes());
    m[4..].copy_from_slice(&v.to_le_bytes());
    m
}

fn value(buf: &[u8]) -> u32 {
    let a = u32::from_le_bytes(buf[..4].try_into().unwrap());
    let b = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    assert_eq!(a, b, "torn message delivered");
    a
}

/// Lossless: three messages through two slots (the producer must wait for the consumer
/// once) arrive complete and in order, across the u64 wrap.
#[test]
fn lossless_publish_and_consume() {
    model(|| {
        let mem = ring(Policy::Lossless, u64::MAX);
        let mut c = consumer(&mem, 1);
        let mut p = producer(&mem);
        let t = thread::spawn(move || {
            for v in 0..3 {
                while p.try_send(&msg(v)).is_err() {
                    thread::yield_now();
                }
            }
        });
        let mut buf = Vec::new();
        for v in 0..3 {
            loop {
                match c.try_recv_into(&mut buf).unwrap() {
                    Some(r) => {
                        assert_eq!(r.lost_before, 0);
                        assert_eq!(value(&buf), v);
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
        }
        t.join().unwrap();
    });
}

/// Lossy: the producer laps a reader; whatever the interleaving, no torn message is
/// delivered, messages come in order, and received + lost = sent.
#[test]
fn lossy_overrun_is_counted_and_never_torn() {
    model(|| {
        let mem = ring(Policy::Lossy, 0);
        let mut c = consumer(&mem, 1);
        let mut p = producer(&mem);
        let t = thread::spawn(move || {
            for v in 0..4 {
                p.try_send(&msg(v)).unwrap();
            }
        });
        let mut buf = Vec::new();
        let mut next = 0u32;
        let mut got = 0u64;
        for _ in 0..2 {
            if let Some(r) = c.try_recv_into(&mut buf).unwrap() {
                let v = value(&buf);
                assert_eq!(u64::from(v), u64::from(next) + r.lost_before);
                next = v + 1;
                got += 1;
            }
        }
        t.join().unwrap();
        while let Some(r) = c.try_recv_into(&mut buf).unwrap() {
            let v = value(&buf);
            assert_eq!(u64::from(v), u64::from(next) + r.lost_before);
            next = v + 1;
            got += 1;
        }
        assert_eq!(next, 4, "the newest message is always readable at the end");
        assert_eq!(got + c.lost(), 4);
    });
}

/// A consumer that decides to sleep is either woken (the wake word moved past the value it
/// sleeps on) or sees the message in its re-check.
#[test]
fn consumer_wake_up_is_not_lost() {
    model(|| {
        let mem = ring(Policy::Lossy, 0);
        let c = consumer(&mem, 1);
        let mut p = producer(&mem);
        let t = thread::spawn(move || p.try_send(&msg(1)).unwrap());
        let decision = c.prepare_sleep();
        t.join().unwrap();
        if let Sleep::Wait(token) = decision {
            let now = mem.word32(off::WAKE).load(Ordering::Relaxed);
            assert_ne!(
                now, token,
                "a sleeper was not woken for a published message"
            );
            c.finish_sleep();
        }
        assert!(c.readable());
    });
}

/// Two consumers sleeping on different wake values while the producer publishes twice: the
/// producer skips the system call for sleepers on an old value (already woken), never for
/// one on the current value. Whoever decided to sleep finds the wake word moved past the
/// value it sleeps on.
#[test]
fn sleepers_on_old_and_new_wake_values_are_all_woken() {
    model(|| {
        let mem = ring(Policy::Lossy, 0);
        let slow = consumer(&mem, 0);
        let mut fast = consumer(&mem, 1);
        let mut p = producer(&mem);
        let t = thread::spawn(move || {
            p.try_send(&msg(1)).unwrap();
            p.try_send(&msg(2)).unwrap();
        });
        let s = thread::spawn(move || slow.prepare_sleep());
        // The fast consumer sleeps for message 1 (woken, or not sleeping at all), reads it,
        // and sleeps again for message 2 on the newer wake value.
        if let Sleep::Wait(_) = fast.prepare_sleep() {
            fast.finish_sleep();
        }
        let mut buf = Vec::new();
        while fast.try_recv_into(&mut buf).unwrap().is_none() {
            thread::yield_now();
        }
        let fast_decision = fast.prepare_sleep();
        let slow_decision = s.join().unwrap();
        t.join().unwrap();
        let now = mem.word32(off::WAKE).load(Ordering::Relaxed);
        for d in [slow_decision, fast_decision] {
            if let Sleep::Wait(token) = d {
                assert_ne!(now, token, "a sleeper was not woken");
            }
        }
    });
}

/// qcopd's event-fd consumer, likewise: if it went to sleep, the producer signalled it.
#[test]
fn event_wake_up_is_not_lost() {
    model(|| {
        let mem = ring(Policy::Lossy, 0);
        let c = consumer(&mem, 0);
        let mut p = producer(&mem);
        let t = thread::spawn(move || p.try_send(&msg(1)).unwrap());
        let sleeps = c.prepare_event_sleep();
        t.join().unwrap();
        if sleeps {
            assert_eq!(mem.events(), 1, "qcopd slept through a published message");
        }
    });
}

/// A lossless producer that decides to sleep for space is woken by the consumer that
/// frees a slot, or sees the space in its rescan.
#[test]
fn producer_wake_up_is_not_lost() {
    model(|| {
        let mem = ring(Policy::Lossless, 0);
        let mut c = consumer(&mem, 1);
        let mut p = producer(&mem);
        p.try_send(&msg(0)).unwrap();
        p.try_send(&msg(1)).unwrap();
        assert_eq!(p.try_send(&msg(2)), Err(Full));
        let t = thread::spawn(move || {
            let mut buf = Vec::new();
            assert!(c.try_recv_into(&mut buf).unwrap().is_some());
        });
        let decision = p.prepare_space_sleep();
        t.join().unwrap();
        if let Sleep::Wait(token) = decision {
            let now = mem.word32(off::SPACE).load(Ordering::Relaxed);
            assert_ne!(now, token, "the producer was not woken for a freed slot");
        }
        p.finish_space_sleep();
        p.try_send(&msg(2)).unwrap();
    });
}

/// With a ring large enough for batching (16 slots: the cursor is stored every 2
/// positions), a producer that decides to sleep for space is woken by the consumer's batch.
#[test]
fn batched_cursor_still_wakes_the_producer() {
    model(|| {
        let geo = Geometry::new(8, 16, 2, Policy::Lossless).unwrap();
        let mem = Arc::new(HeapMemory::new(geo.total_len()));
        Ring::create(Arc::clone(&mem), geo, 0).unwrap();
        let mut c = consumer(&mem, 1);
        let mut p = producer(&mem);
        for v in 0..16 {
            p.try_send(&msg(v)).unwrap();
        }
        let t = thread::spawn(move || {
            let mut buf = Vec::new();
            for _ in 0..2 {
                assert!(c.try_recv_into(&mut buf).unwrap().is_some());
            }
        });
        let decision = p.prepare_space_sleep();
        t.join().unwrap();
        if let Sleep::Wait(token) = decision {
            let now = mem.word32(off::SPACE).load(Ordering::Relaxed);
            assert_ne!(now, token, "the producer was not woken for a freed batch");
        }
        p.finish_space_sleep();
        p.try_send(&msg(16)).unwrap();
    });
}

/// qcopd joins a consumer while a lossless producer runs: the consumer starts at some
/// position and then receives every later message, none overwritten before it read it.
#[test]
fn a_joining_consumer_is_never_lapped() {
    model(|| {
        let mem = ring(Policy::Lossless, 0);
        let mut p = producer(&mem);
        let total = 3u32;
        let t = thread::spawn(move || {
            for v in 0..total {
                while p.try_send(&msg(v)).is_err() {
                    thread::yield_now();
                }
            }
        });
        let mut c = consumer(&mem, 1);
        let first = c.position() as u32;
        let mut buf = Vec::new();
        for v in first..total {
            loop {
                match c.try_recv_into(&mut buf).unwrap() {
                    Some(r) => {
                        assert_eq!(r.lost_before, 0, "lapped while joining");
                        assert_eq!(value(&buf), v);
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
        }
        t.join().unwrap();
        assert_eq!(c.lost(), 0);
    });
}

/// qcopd's own consumer, as its forwarding loop reads a lossless stream: record 0 joined
/// while the producer runs, `forward_into` until the ring is empty, then the event-fd
/// sleep. Three messages through two slots (the producer waits for qcopd): whatever the
/// interleaving, every message arrives in order, and an honest producer's slots are never
/// counted as corrupt, not even when a message is committed right after qcopd found the
/// ring empty.
#[test]
fn the_daemon_consumer_forwards_a_lossless_stream_whole() {
    model(|| {
        let mem = ring(Policy::Lossless, u64::MAX - 1);
        let mut p = producer(&mem);
        let total = 3u32;
        let t = thread::spawn(move || {
            for v in 0..total {
                while p.try_send(&msg(v)).is_err() {
                    thread::yield_now();
                }
            }
        });
        // As `shm_create` and `shm_refresh_forwarding` set it up.
        let ring = Ring::open(Arc::clone(&mem)).unwrap();
        let start = ring.start();
        let mut c = Consumer::new(ring, Some(0), start);
        let at = c.ring().join(0);
        c.restart_at(at);
        let first = at.wrapping_sub(start) as u32;
        let mut buf = Vec::new();
        let mut next = first;
        let mut events = mem.events();
        while next < total {
            match c.forward_into(&mut buf) {
                Ok(Polled::Message(r)) => {
                    assert_eq!(r.lost_before, 0);
                    assert_eq!(value(&buf), next);
                    next += 1;
                }
                Ok(Polled::Empty) => {
                    // The end of a turn: sleep on the event fd unless something came.
                    if c.prepare_event_sleep() {
                        while mem.events() == events {
                            thread::yield_now();
                        }
                        events = mem.events();
                    }
                }
                Ok(Polled::Stalled) => panic!("qcopd's consumer stalled on an honest ring"),
                Err(e) => panic!("an honest producer's slot counted as corrupt: {e}"),
            }
        }
        t.join().unwrap();
        assert_eq!(c.lost(), 0);
    });
}
