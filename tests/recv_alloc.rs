//! The borrowing receive makes no heap allocation per message once the connection's
//! buffers have grown to their working size. A counting global allocator (this binary
//! only) counts what the receiving thread allocates while it takes messages; the count is
//! per thread, so tests running side by side do not see each other's allocations.

mod common;

use common::{Daemon, WAIT};
use qcop::Connection;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Set on the thread whose allocations are counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations this thread made while counting.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const CHANNEL: &str = "alloc/ticks";
const WARM_UP: u64 = 2_000;
const COUNTED: u64 = 20_000;

/// Sends `n` numbered 64-byte messages from another thread's connection.
fn publish(d: &Daemon, n: u64) -> std::thread::JoinHandle<()> {
    let opts = d.options().send_buffer(16 * 1024);
    std::thread::spawn(move || {
        let mut p = Connection::connect(&opts).unwrap();
        let mut payload = [0u8; 64];
        for i in 0..n {
            payload[..8].copy_from_slice(&i.to_be_bytes());
            p.send(CHANNEL, "tick(QByteArray)", &payload).unwrap();
        }
        p.flush().unwrap();
    })
}

/// Takes one message with the borrowing receive (alternating its three forms) and
/// returns its sequence number.
fn take_borrowed(sub: &mut Connection, i: u64) -> u64 {
    let m = match i % 3 {
        0 => sub.recv_borrowed().unwrap(),
        1 => sub.recv_timeout_borrowed(WAIT).unwrap().expect("a message"),
        _ => loop {
            // Spin on the non-blocking form; a `None` here allocates nothing either.
            if let Some(m) = sub.try_recv_borrowed().unwrap() {
                break m;
            }
        },
    };
    assert_eq!(m.channel, CHANNEL);
    u64::from_be_bytes(m.data[..8].try_into().unwrap())
}

#[test]
fn the_borrowing_receive_allocates_nothing_per_message() {
    // The daemon's queue for this subscriber holds every message: nothing is dropped.
    let d = Daemon::start_with("max_queue_bytes = 8388608\nmax_total_queue_bytes = 67108864\n");
    let mut sub = d.connect();
    sub.subscribe(CHANNEL).unwrap();
    let publisher = publish(&d, WARM_UP + COUNTED);
    for i in 0..WARM_UP {
        assert_eq!(take_borrowed(&mut sub, i), i);
    }
    let (allocations, ()) = allocations_in(|| {
        for i in WARM_UP..WARM_UP + COUNTED {
            // No assert_eq! formatting in the counted loop unless it fails.
            let seq = take_borrowed(&mut sub, i);
            if seq != i {
                COUNTING.with(|c| c.set(false));
                panic!("message {seq} arrived when {i} was due");
            }
        }
    });
    publisher.join().unwrap();
    assert_eq!(sub.lost(), 0);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {COUNTED} messages taken by the borrowing receive"
    );
}

#[test]
fn the_owned_receive_allocates_for_each_message() {
    // The counter sees allocations on this thread: the owned receive copies channel,
    // message and payload.
    let d = Daemon::start();
    let mut sub = d.connect();
    sub.subscribe(CHANNEL).unwrap();
    publish(&d, 100).join().unwrap();
    let (allocations, ()) = allocations_in(|| {
        for i in 0..100u64 {
            let m = sub.recv_timeout(WAIT).unwrap().expect("a message");
            assert_eq!(m.data[..8], i.to_be_bytes());
        }
    });
    assert!(
        allocations >= 300,
        "only {allocations} allocations for 100 owned messages"
    );
}
