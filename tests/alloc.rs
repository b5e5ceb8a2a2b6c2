//! qcopd's routing makes no heap allocation per message once warm: the daemon runs on a
//! thread of this test, under a global allocator that counts the allocations made on that
//! thread, while clients on the main thread broadcast through it.

use qcop::daemon::Config;
use qcop::{ConnectOptions, Connection};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the daemon's thread: only its allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the counter only
// observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `dealloc`; the caller's contract is the system allocator's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn connect(socket: &std::path::Path) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Connection::connect(&ConnectOptions::new().socket(socket)) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("qcopd on a thread did not answer: {e}"),
        }
    }
}

/// Sends `n` messages from `publisher` and receives them on every subscriber.
fn broadcast(publisher: &mut Connection, subscribers: &mut [Connection], n: u32, payload: &[u8]) {
    for i in 0..n {
        let channel = if i % 2 == 0 { "alloc/a" } else { "alloc/b" };
        publisher
            .send(channel, "sample(QByteArray)", payload)
            .unwrap();
        if i % 64 == 63 {
            publisher.flush().unwrap();
            for s in subscribers.iter_mut() {
                for _ in 0..64 {
                    s.recv().unwrap();
                }
            }
        }
    }
    publisher.flush().unwrap();
}

#[test]
fn routing_makes_no_allocation_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qcopd.sock");
    let path = socket.clone();
    std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let _ = qcop::daemon::run(Config::default(), None, path);
    });
    let mut publisher = connect(&socket);
    // One subscriber by channel name, one by pattern, one by both.
    let mut subscribers = [connect(&socket), connect(&socket), connect(&socket)];
    subscribers[0].subscribe("alloc/a").unwrap();
    subscribers[0].subscribe("alloc/b").unwrap();
    subscribers[1].subscribe("alloc/*").unwrap();
    subscribers[2].subscribe("alloc/a").unwrap();
    subscribers[2].subscribe("alloc/?*").unwrap();
    let payload = [7u8; 64];
    // Warm up: buffers and tables reach their working sizes.
    broadcast(&mut publisher, &mut subscribers, 4_096, &payload);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let n = 20_480;
    broadcast(&mut publisher, &mut subscribers, n, &payload);
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!("qcopd allocations while routing {n} messages: {during}");
    // One allocation per message would be 20,480; a few may come from buffers that grow
    // once more (a burst larger than the warm-up's).
    assert!(
        during <= 16,
        "qcopd allocated {during} times while routing {n} messages"
    );
}
