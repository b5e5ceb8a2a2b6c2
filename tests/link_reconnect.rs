//! Reconnections under load: the fault proxy (`common/fault_proxy.rs`) between two real
//! `qcopd` resets and truncates the link twenty times while a publisher on board A streams
//! numbered messages to a subscriber on board B. Every message must arrive exactly once and
//! in order, or be counted as lost where `qcop stats` or the subscriber shows it; with cuts
//! alone (no byte altered) none may be lost.
//!
//! Nothing here is timed: the faults are paced by what the daemons report, and every wait
//! is a watchdog of [`WAIT`].
#![cfg(feature = "links")]

mod common;

use common::fault_proxy::{Dir, Fault, FaultProxy};
use common::{eventually, link_to as link, stat as counter, Daemon, WAIT};
use qcop::wire::LinkInfo;
use qcop::Connection;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "a test key of more than 16 bytes";
const CHANNEL: &str = "load/n";
const MSG: &str = "n(int)";
const END: &str = "end()";
/// Messages the publisher sends, in [`CYCLES`] batches.
const TOTAL: u32 = 12_000;
/// Faults: even cycles cut (RST), odd ones truncate a chunk and then reset.
const CYCLES: u32 = 20;
const BATCH: u32 = TOTAL / CYCLES;

/// Which board dials (through the proxy) and which accepts.
#[derive(Clone, Copy, PartialEq)]
enum Dialer {
    Subscriber,
    Publisher,
}

/// A board; `peer`: the port it dials. Fast timings so that a test sees twenty
/// reconnections quickly; the subscriber's queue holds the whole run, so that a slow
/// reader never loses messages in this test.
fn board(name: &str, peer: Option<u16>) -> Daemon {
    let mut c = format!(
        "max_queue_bytes = 4194304\n[links]\nname = \"{name}\"\nkey = \"{KEY}\"\n\
         keepalive_ms = 250\ndead_after_ms = 5000\nreconnect_min_ms = 50\n\
         reconnect_max_ms = 200\nhandshake_timeout_ms = 5000\n"
    );
    match peer {
        Some(p) => c.push_str(&format!(
            "[[links.peer]]\naddress = \"127.0.0.1:{p}\"\nexport = [\"*\"]\nimport = [\"*\"]\n"
        )),
        None => c.push_str("listen = \"127.0.0.1:0\"\nexport = [\"*\"]\nimport = [\"*\"]\n"),
    }
    Daemon::start_with(&c)
}

fn listen_port(d: &Daemon) -> u16 {
    d.stats().get("link_listen_port").expect("link_listen_port") as u16
}

fn link_counter(l: &LinkInfo, name: &str) -> u64 {
    l.get(name)
        .unwrap_or_else(|| panic!("no link counter {name}"))
}

/// Waits until `d`'s link to `peer` is up after at least `reconnects` reconnections.
fn wait_up(d: &Daemon, peer: &str, reconnects: u64) {
    eventually(
        &format!("link to {peer} up, {reconnects} reconnects"),
        || {
            link(d, peer)
                .is_some_and(|l| l.state == "up" && link_counter(&l, "reconnects") >= reconnects)
        },
    );
}

/// Batches the publisher may send: raised by the test, one per fault cycle.
#[derive(Default)]
struct Gate {
    open: Mutex<u32>,
    raised: Condvar,
}

impl Gate {
    fn allow(&self, batches: u32) {
        *self.open.lock().unwrap() = batches;
        self.raised.notify_all();
    }

    fn wait(&self, batch: u32) {
        let start = Instant::now();
        let mut open = self.open.lock().unwrap();
        while *open <= batch {
            assert!(
                start.elapsed() < 4 * WAIT,
                "the test never opened batch {batch}"
            );
            open = self.raised.wait_timeout(open, WAIT).unwrap().0;
        }
    }
}

/// What the subscriber got: the numbers in arrival order, its lost count, and whether the
/// end marker came (false: it stopped waiting).
struct Received {
    numbers: Vec<u32>,
    lost: u64,
    ended: bool,
}

fn subscribe(mut s: Connection) -> thread::JoinHandle<Received> {
    thread::spawn(move || {
        let mut numbers = Vec::with_capacity(TOTAL as usize);
        let ended = loop {
            match s.recv_timeout(4 * WAIT) {
                Ok(Some(m)) if m.message == END => break true,
                Ok(Some(m)) => {
                    assert_eq!((m.channel.as_str(), m.message.as_str()), (CHANNEL, MSG));
                    let n = u32::from_be_bytes(m.data[..4].try_into().expect("4 bytes"));
                    numbers.push(n);
                }
                Ok(None) => break false,
                Err(e) => panic!("subscriber: {e}"),
            }
        };
        Received {
            numbers,
            lost: s.lost(),
            ended,
        }
    })
}

/// Sends `TOTAL` numbered messages, batch by batch as the gate opens, a few at a time (so
/// that a fault finds some in every stage: in the sender's queue, on the wire, in flight in
/// the proxy). Returns the connection, for the end marker.
fn publish(
    mut p: Connection,
    gate: Arc<Gate>,
    sent: Arc<AtomicU32>,
) -> thread::JoinHandle<Connection> {
    thread::spawn(move || {
        for n in 0..TOTAL {
            if n % BATCH == 0 {
                p.flush().expect("flush");
                gate.wait(n / BATCH);
            }
            p.send(CHANNEL, MSG, &n.to_be_bytes()).expect("send");
            if n % 20 == 19 {
                p.flush().expect("flush");
                sent.store(n + 1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1));
            }
        }
        p.flush().expect("flush");
        sent.store(TOTAL, Ordering::SeqCst);
        p
    })
}

fn twenty_faults_under_load(dialer: Dialer) {
    // a publishes, b subscribes; the dialer reaches the other through the proxy.
    let (a, b, proxy) = match dialer {
        Dialer::Subscriber => {
            let a = board("a", None);
            let proxy = FaultProxy::start(listen_port(&a));
            let b = board("b", Some(proxy.port));
            (a, b, proxy)
        }
        Dialer::Publisher => {
            let b = board("b", None);
            let proxy = FaultProxy::start(listen_port(&b));
            let a = board("a", Some(proxy.port));
            (a, b, proxy)
        }
    };
    // The publisher's messages travel away from the dialer or towards it.
    let (data, acks) = match dialer {
        Dialer::Subscriber => (Dir::FromTarget, Dir::ToTarget),
        Dialer::Publisher => (Dir::ToTarget, Dir::FromTarget),
    };
    // Bytes in flight inside the proxy are lost at each cut, as on a real wire.
    proxy.set_delay(Duration::from_millis(2));

    let mut s = b.connect();
    s.subscribe(CHANNEL).expect("subscribe");
    let mut ca = a.connect();
    eventually("a counts b's subscriber", || {
        ca.registered_counts(CHANNEL).expect("registered").1 == 1
    });
    let receiver = subscribe(s);
    let gate = Arc::new(Gate::default());
    let sent = Arc::new(AtomicU32::new(0));
    let publisher = publish(a.connect(), Arc::clone(&gate), Arc::clone(&sent));

    let mut truncations = 0;
    for cycle in 0..CYCLES {
        wait_up(&a, "b", cycle as u64);
        gate.allow(cycle + 1);
        // Strike in the middle of the batch, while it streams.
        let mid = cycle * BATCH + BATCH / 2;
        eventually(&format!("batch {cycle} half sent"), || {
            sent.load(Ordering::SeqCst) >= mid
        });
        if cycle % 2 == 0 {
            proxy.cut();
        } else {
            // Alternately a message stream and an acknowledgement stream cut mid-frame.
            let dir = if cycle % 4 == 1 { data } else { acks };
            proxy.inject(dir, Fault::Truncate);
            truncations += 1;
            eventually(&format!("truncation {cycle} applied"), || {
                proxy.pending_faults() == 0
            });
        }
        eventually(&format!("fault {cycle} took the link down"), || {
            link(&a, "b").is_some_and(|l| link_counter(&l, "reconnects") > cycle as u64)
                || link(&a, "b").is_some_and(|l| l.state != "up")
        });
    }
    wait_up(&a, "b", CYCLES as u64);
    let mut p = publisher.join().expect("publisher");
    // The marker goes out over a link that stays up: it follows everything else.
    p.send(CHANNEL, END, b"").expect("send end");
    p.flush().expect("flush");
    let got = receiver.join().expect("subscriber");

    // The accounts of both boards.
    let la = link(&a, "b").expect("a's link to b");
    let lb = link(&b, "a").expect("b's link to a");
    let lost_at_sender: u64 = [
        "dropped_buffer_full",
        "dropped_unconfirmed",
        "dropped_unwanted",
        "dropped_too_large",
    ]
    .iter()
    .map(|c| link_counter(&la, c))
    .sum();
    let lost_at_receiver: u64 = ["dropped_not_imported", "dropped_invalid"]
        .iter()
        .map(|c| link_counter(&lb, c))
        .sum::<u64>()
        + got.lost;
    let counted_lost = lost_at_sender + lost_at_receiver;
    let silent = counter(&a, "dropped_no_subscriber");
    let report = format!(
        "delivered {}, counted lost {counted_lost} (sender {lost_at_sender}, receiver \
         {lost_at_receiver}), a's dropped_no_subscriber {silent}, end marker {}\n\
         a's link: {la:?}\nb's link: {lb:?}",
        got.numbers.len(),
        got.ended
    );

    assert!(got.ended, "the end marker never came: {report}");
    let mut seen = vec![false; TOTAL as usize];
    let mut duplicates = 0;
    for &n in &got.numbers {
        assert!(n < TOTAL, "a number never sent: {n}");
        duplicates += u32::from(std::mem::replace(&mut seen[n as usize], true));
    }
    assert_eq!(duplicates, 0, "messages delivered twice: {report}");
    assert!(
        got.numbers.windows(2).all(|w| w[0] < w[1]),
        "messages out of order: {report}"
    );
    // Every message is accounted for: delivered, or lost on a counter someone can see.
    assert_eq!(
        got.numbers.len() as u64 + counted_lost,
        TOTAL as u64,
        "messages lost silently: {report}"
    );
    assert_eq!(
        silent, 0,
        "messages dropped as if nobody subscribed: {report}"
    );
    // Cuts alone lose nothing: each message arrived exactly once.
    assert_eq!(counted_lost, 0, "{report}");
    assert_eq!(got.numbers, (0..TOTAL).collect::<Vec<_>>());

    // The faults really happened, each one a reconnection, and caught messages on the
    // wire: those were written again after the reconnect (and arrived once).
    assert_eq!(proxy.applied(), truncations);
    assert!(
        link_counter(&la, "messages_out") > TOTAL as u64,
        "no fault caught a message in flight: {report}"
    );
    assert!(link_counter(&la, "reconnects") >= CYCLES as u64, "{report}");
    assert!(proxy.connections() > CYCLES as u64);
    assert_eq!(counter(&a, "link_protocol_errors"), 0);
}

#[test]
fn twenty_cuts_under_load_lose_nothing_when_the_subscriber_dials() {
    twenty_faults_under_load(Dialer::Subscriber);
}

#[test]
fn twenty_cuts_under_load_lose_nothing_when_the_publisher_dials() {
    twenty_faults_under_load(Dialer::Publisher);
}

/// The proxy itself, between two plain sockets: each fault does what it says.
#[test]
fn the_fault_proxy_does_what_it_is_told() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};

    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = FaultProxy::start(target.local_addr().unwrap().port());
    let open = || {
        let client = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        let (server, _) = target.accept().unwrap();
        for s in [&client, &server] {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        (client, server)
    };
    let read = |s: &mut TcpStream, n: usize| {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).unwrap();
        buf
    };
    // Whether the next read finds the connection reset (rather than data or a clean end).
    let reset = |s: &mut TcpStream| {
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("read: {e}"),
            }
        }
    };

    let (mut c, mut s) = open();
    c.write_all(b"hello").unwrap();
    assert_eq!(read(&mut s, 5), b"hello");
    s.write_all(b"back").unwrap();
    assert_eq!(read(&mut c, 4), b"back");

    // One-shot faults, each on the next chunk only.
    proxy.inject(Dir::ToTarget, Fault::Duplicate);
    c.write_all(b"abc").unwrap();
    assert_eq!(read(&mut s, 6), b"abcabc");
    proxy.inject(Dir::ToTarget, Fault::Corrupt);
    c.write_all(b"abc").unwrap();
    assert_eq!(read(&mut s, 3), [b'a', !b'b', b'c']);
    proxy.inject(Dir::FromTarget, Fault::Drop);
    s.write_all(b"gone").unwrap();
    eventually("the drop applied", || proxy.pending_faults() == 0);
    s.write_all(b"kept").unwrap();
    assert_eq!(read(&mut c, 4), b"kept");
    assert_eq!(proxy.applied(), 3);

    // Truncation: half the chunk, then both ends are reset.
    proxy.inject(Dir::FromTarget, Fault::Truncate);
    s.write_all(b"abcdef").unwrap();
    assert_eq!(read(&mut c, 3), b"abc");
    assert!(reset(&mut c));
    assert!(reset(&mut s));

    // A cut resets both ends of every open connection; new ones are relayed again.
    let (mut c, mut s) = open();
    c.write_all(b"x").unwrap();
    assert_eq!(read(&mut s, 1), b"x");
    proxy.cut();
    assert!(reset(&mut c));
    assert!(reset(&mut s));
    let (mut c, mut s) = open();
    c.write_all(b"y").unwrap();
    assert_eq!(read(&mut s, 1), b"y");
    assert_eq!(proxy.connections(), 3);
    // A clean close passes through as a clean close.
    drop(c);
    assert!(!reset(&mut s));
    drop(s);
    eventually("no connection left", || proxy.open() == 0);
}
