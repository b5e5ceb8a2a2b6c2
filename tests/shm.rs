//! Shared-memory streams with a real qcopd: publishers and subscribers mapping the ring,
//! ordinary subscribers served by the daemon, limits, and every way a peer can die.

mod common;

use common::{counter, eventually, recv, wait_exit, Daemon, WAIT};
use qcop::shm::{Policy, Publisher, StreamError, StreamOptions, Subscriber, WaitMode};
use qcop::wire::ErrorCode;
use qcop::{ConnectOptions, Error};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const CHANNEL: &str = "sensors/imu";
const MESSAGE: &str = "sample(int)";

fn options(slots: u32, policy: Policy) -> StreamOptions {
    StreamOptions::new()
        .slot_size(64)
        .slots(slots)
        .policy(policy)
}

fn publisher(d: &Daemon, slots: u32, policy: Policy) -> Publisher {
    Publisher::open(&d.options(), CHANNEL, MESSAGE, &options(slots, policy)).expect("open stream")
}

fn subscriber(d: &Daemon) -> Subscriber {
    Subscriber::open(&d.options(), CHANNEL).expect("map stream")
}

/// The payload of message `i`: a QDataStream int.
fn payload(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn number(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("4-byte payload"))
}

fn refused(e: Error) -> ErrorCode {
    match e {
        Error::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn subscribers_mapping_the_ring_and_ordinary_subscribers_see_the_same_messages() {
    let d = Daemon::start();
    let mut plain = d.connect();
    plain.subscribe("sensors/*").unwrap();
    let mut p = publisher(&d, 8, Policy::Lossless);
    let mut s1 = subscriber(&d);
    let mut s2 = subscriber(&d);
    assert_eq!(s1.message(), MESSAGE);
    let mut buf = Vec::new();
    for i in 0..100u32 {
        if i % 2 == 0 {
            p.send(&payload(i), WAIT).unwrap();
        } else {
            let mut loan = p.loan(WAIT).unwrap();
            loan[..4].copy_from_slice(&payload(i));
            loan.commit(4);
        }
        assert_eq!(s1.recv(&mut buf, WAIT).map(|r| r.lost_before), Ok(0));
        assert_eq!(number(&buf), i);
        let sample = s2.borrow(WAIT).unwrap();
        assert_eq!(number(&sample), i);
        sample.release().unwrap();
    }
    for i in 0..100u32 {
        let m = recv(&mut plain);
        assert_eq!((m.channel.as_str(), m.message.as_str()), (CHANNEL, MESSAGE));
        assert_eq!(number(&m.data), i);
    }
    assert_eq!(counter(&mut plain, "shm_forwarded"), 100);
    assert_eq!(counter(&mut plain, "shm_streams"), 1);
    assert_eq!(counter(&mut plain, "shm_subscribers"), 2);
    drop(p);
    assert_eq!(s1.recv(&mut buf, WAIT), Err(StreamError::Ended));
    assert!(matches!(s2.borrow(WAIT), Err(StreamError::Ended)));
    drop((s1, s2));
    eventually("the ended stream is released", || {
        counter(&mut plain, "shm_ring_bytes") == 0
    });
    assert_eq!(counter(&mut plain, "shm_streams_abandoned"), 0);
}

#[test]
fn without_ordinary_subscribers_the_daemon_reads_nothing() {
    let d = Daemon::start();
    let mut stats = d.connect();
    let mut p = publisher(&d, 4, Policy::Lossless);
    let mut s = subscriber(&d);
    let mut buf = Vec::new();
    // Three laps of a four-slot lossless ring: qcopd holds no slot back.
    for i in 0..12u32 {
        p.send(&payload(i), WAIT).unwrap();
        s.recv(&mut buf, WAIT).unwrap();
        assert_eq!(number(&buf), i);
    }
    assert_eq!(counter(&mut stats, "shm_forwarded"), 0);
    // A watcher arrives: forwarding starts with the next message.
    let mut plain = d.connect();
    plain.subscribe(CHANNEL).unwrap();
    p.send(&payload(12), WAIT).unwrap();
    assert_eq!(number(&recv(&mut plain).data), 12);
    plain.unsubscribe(CHANNEL).unwrap();
    for i in 13..30u32 {
        p.send(&payload(i), WAIT).unwrap();
        s.recv(&mut buf, WAIT).unwrap();
    }
    assert_eq!(counter(&mut stats, "shm_forwarded"), 1);
}

#[test]
fn limits_and_refusals() {
    let d = Daemon::start_with(
        "shm_max_streams = 2\nshm_max_stream_subscribers = 1\nshm_max_ring_bytes = 65536\n\
         shm_max_total_ring_bytes = 65536\n",
    );
    let o = d.options();
    let err = |r: Result<Publisher, Error>| refused(r.err().expect("refused"));
    assert_eq!(
        refused(Subscriber::open(&o, CHANNEL).err().unwrap()),
        ErrorCode::NoStream
    );
    assert_eq!(
        err(Publisher::open(
            &o,
            "a",
            MESSAGE,
            &options(3, Policy::Lossy)
        )),
        ErrorCode::RingSize,
        "not a power of two"
    );
    assert_eq!(
        err(Publisher::open(
            &o,
            "a",
            MESSAGE,
            &options(4096, Policy::Lossy)
        )),
        ErrorCode::RingSize,
        "over shm_max_ring_bytes"
    );
    let big = StreamOptions::new().slot_size(70_000).slots(2);
    assert_eq!(
        err(Publisher::open(&o, "a", MESSAGE, &big)),
        ErrorCode::RingSize,
        "slot over max_payload"
    );
    let _a = Publisher::open(&o, "a", MESSAGE, &options(256, Policy::Lossy)).unwrap();
    assert_eq!(
        err(Publisher::open(
            &o,
            "a",
            MESSAGE,
            &options(4, Policy::Lossy)
        )),
        ErrorCode::StreamExists
    );
    assert_eq!(
        err(Publisher::open(
            &o,
            "b",
            MESSAGE,
            &options(256, Policy::Lossy)
        )),
        ErrorCode::RingSize,
        "over shm_max_total_ring_bytes"
    );
    let _b = Publisher::open(&o, "b", MESSAGE, &options(4, Policy::Lossy)).unwrap();
    assert_eq!(
        err(Publisher::open(
            &o,
            "c",
            MESSAGE,
            &options(4, Policy::Lossy)
        )),
        ErrorCode::TooManyStreams
    );
    assert!(matches!(
        Publisher::open(&o, "c*", MESSAGE, &options(4, Policy::Lossy)),
        Err(Error::WildcardSend(_))
    ));
    let _s = Subscriber::open(&o, "a").unwrap();
    assert_eq!(
        refused(Subscriber::open(&o, "a").err().unwrap()),
        ErrorCode::TooManyConsumers
    );
    let mut c = d.connect();
    assert_eq!(counter(&mut c, "shm_streams"), 2);
    // Every refusal above but the wildcard (refused by the library) came from qcopd.
    assert_eq!(counter(&mut c, "requests_rejected"), 8);
}

// ----- processes that die ----------------------------------------------------------------

/// Environment variable that turns this test binary into a helper process (see
/// [`role_process`]).
const ROLE_ENV: &str = "QCOP_SHM_TEST_ROLE";

/// Not a test: the body of the helper processes the crash tests start and SIGKILL (this
/// test binary re-executed with only this test selected and [`ROLE_ENV`] set). Each role
/// gets into the state the test needs, prints `holding`, and waits to be killed.
#[test]
#[ignore = "helper: a process the crash tests start and kill"]
fn role_process() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    // Never outlive the test that started us.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let opts = ConnectOptions::new().timeout(WAIT).name(role.as_str());
    match role.as_str() {
        // A publisher that dies in the middle of writing message 3.
        "hold-loan" => {
            let mut p = Publisher::open(
                &opts,
                CHANNEL,
                "sample(int,int)",
                &options(8, Policy::Lossless),
            )
            .expect("open stream");
            let start = Instant::now();
            while p.subscribers() < 1 {
                assert!(start.elapsed() < WAIT, "nobody mapped the stream");
                std::thread::sleep(Duration::from_millis(5));
            }
            for i in 0..3 {
                p.send(&pair(i), WAIT).expect("send");
            }
            let mut loan = p.loan(WAIT).expect("loan");
            loan[..4].copy_from_slice(&3u32.to_be_bytes());
            println!("holding");
            std::thread::sleep(WAIT * 3);
            let _ = loan.capacity();
        }
        // A subscriber that dies holding the first message it borrowed.
        "hold-sample" => {
            let mut s = Subscriber::open_wait(&opts, CHANNEL, WAIT).expect("map stream");
            println!("mapped");
            let sample = s.borrow(WAIT).expect("borrow");
            println!("holding");
            std::thread::sleep(WAIT * 3);
            drop(sample);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts a helper process in `role` against `d`.
fn spawn_role(d: &Daemon, role: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["role_process", "--exact", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env("QCOP_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helper process");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    (child, out)
}

/// Reads the helper's output until the line `marker`.
fn expect_line(out: &mut BufReader<ChildStdout>, marker: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read helper output");
        assert!(n > 0, "the helper process ended before saying {marker:?}");
        if line.trim_end() == marker {
            return;
        }
    }
}

/// Payload of `sample(int,int)` message `i`: both halves hold `i`, so a torn message shows.
fn pair(i: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m[4..].copy_from_slice(&i.to_be_bytes());
    m
}

fn unpair(bytes: &[u8]) -> u32 {
    assert_eq!(bytes.len(), 8, "sample(int,int) payload");
    assert_eq!(bytes[..4], bytes[4..], "torn message");
    number(&bytes[..4])
}

#[test]
fn a_publisher_killed_mid_write_ends_the_stream_for_every_reader() {
    let d = Daemon::start();
    let mut plain = d.connect();
    plain.subscribe(CHANNEL).unwrap();
    let (mut child, mut out) = spawn_role(&d, "hold-loan");
    let mut s = Subscriber::open_wait(&d.options(), CHANNEL, WAIT).unwrap();
    expect_line(&mut out, "holding");
    let mut buf = Vec::new();
    for i in 0..3 {
        s.recv(&mut buf, WAIT).unwrap();
        assert_eq!(unpair(&buf), i);
    }
    // Message 3 is half written: it is not delivered.
    assert_eq!(
        s.recv(&mut buf, Duration::from_millis(100)),
        Err(StreamError::Timeout)
    );
    child.kill().unwrap();
    wait_exit(&mut child);
    assert_eq!(s.recv(&mut buf, WAIT), Err(StreamError::Ended));
    for i in 0..3 {
        assert_eq!(unpair(&recv(&mut plain).data), i);
    }
    assert_eq!(
        plain.recv_timeout(Duration::from_millis(100)).unwrap(),
        None
    );
    assert_eq!(counter(&mut plain, "shm_streams_abandoned"), 1);
    assert_eq!(counter(&mut plain, "shm_streams"), 0);
    // The channel is free for a new stream at once.
    let _again = publisher(&d, 8, Policy::Lossless);
}

#[test]
fn a_subscriber_killed_holding_a_slot_no_longer_holds_back_a_lossless_publisher() {
    let d = Daemon::start();
    let mut p = publisher(&d, 4, Policy::Lossless);
    let (mut child, mut out) = spawn_role(&d, "hold-sample");
    expect_line(&mut out, "mapped");
    eventually("the helper maps the stream", || p.subscribers() == 1);
    p.send(&payload(0), WAIT).unwrap();
    expect_line(&mut out, "holding");
    for i in 1..4 {
        p.send(&payload(i), WAIT).unwrap();
    }
    // Four slots, the oldest borrowed: the ring is full for as long as the helper lives.
    assert_eq!(
        p.send(&payload(4), Duration::from_millis(100)),
        Err(StreamError::Timeout)
    );
    child.kill().unwrap();
    wait_exit(&mut child);
    // qcopd sees the connection close, frees the record and wakes the publisher.
    p.send(&payload(4), WAIT).unwrap();
    for i in 5..20 {
        p.send(&payload(i), WAIT).unwrap();
    }
    let mut c = d.connect();
    assert_eq!(counter(&mut c, "shm_subscribers"), 0);
    assert_eq!(counter(&mut c, "shm_subscribers_freed"), 1);
}

#[test]
fn waiting_publishers_and_subscribers_notice_a_killed_daemon() {
    let mut d = Daemon::start();
    let mut p = publisher(&d, 2, Policy::Lossless);
    let mut waiting = subscriber(&d);
    // A subscriber that never reads holds the lossless ring once it is full.
    let _stalled = subscriber(&d);
    p.send(&payload(0), WAIT).unwrap();
    p.send(&payload(1), WAIT).unwrap();
    let mut buf = Vec::new();
    waiting.recv(&mut buf, WAIT).unwrap();
    waiting.recv(&mut buf, WAIT).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let started = Instant::now();
        let r = waiting.recv(&mut buf, WAIT);
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    d.kill();
    // Each waiter sleeps at most one slice before it checks the daemon's socket.
    let (r, waited) = reader.join().unwrap();
    assert_eq!(r, Err(StreamError::DaemonGone));
    assert!(waited < WAIT, "the reader waited out its whole timeout");
    assert_eq!(p.send(&payload(2), WAIT), Err(StreamError::DaemonGone));
    p.set_wait_mode(WaitMode::Spin);
    assert_eq!(p.send(&payload(2), WAIT), Err(StreamError::DaemonGone));
}

#[test]
fn a_daemon_shutting_down_ends_its_streams() {
    let mut d = Daemon::start();
    let mut p = publisher(&d, 4, Policy::Lossless);
    let mut s = subscriber(&d);
    p.send(&payload(1), WAIT).unwrap();
    assert_eq!(d.stop(), Some(0));
    // What was published is still read; then the end, not a wait for a dead daemon.
    let mut buf = Vec::new();
    s.recv(&mut buf, WAIT).unwrap();
    assert_eq!(number(&buf), 1);
    assert_eq!(s.recv(&mut buf, WAIT), Err(StreamError::Ended));
    assert_eq!(p.send(&payload(2), WAIT), Err(StreamError::Ended));
}

#[test]
fn a_lossy_stream_tells_ordinary_subscribers_what_the_daemon_missed() {
    use nix::sys::signal::Signal;
    let d = Daemon::start();
    let mut plain = d.connect();
    plain.subscribe(CHANNEL).unwrap();
    let mut p = publisher(&d, 4, Policy::Lossy);
    let mut s = subscriber(&d);
    // Freeze qcopd: the stream goes on without it, and laps its consumer.
    d.signal(Signal::SIGSTOP);
    eventually("qcopd is stopped", || {
        std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).is_ok_and(|st| {
            st.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
        })
    });
    for i in 0..20 {
        p.send(&payload(i), WAIT).unwrap();
    }
    let mut buf = Vec::new();
    let r = s.recv(&mut buf, WAIT).unwrap();
    assert_eq!((number(&buf), r.lost_before), (16, 16));
    d.signal(Signal::SIGCONT);
    for i in 16..20 {
        assert_eq!(number(&recv(&mut plain).data), i);
    }
    assert_eq!(plain.lost(), 16);
    assert_eq!(counter(&mut plain, "shm_overruns"), 16);
    assert_eq!(counter(&mut plain, "shm_forwarded"), 4);
}

#[test]
fn the_cli_publishes_and_watches_streams() {
    let d = Daemon::start();
    let mut shm = d
        .cli()
        .args([
            "--format",
            "rich",
            "watch",
            "--shm",
            "--timeout",
            "20000",
            CHANNEL,
        ])
        .spawn()
        .unwrap();
    let mut plain = d
        .cli()
        .args([
            "--format",
            "rich",
            "watch",
            "--count",
            "50",
            "--timeout",
            "20000",
            CHANNEL,
        ])
        .spawn()
        .unwrap();
    let mut c = d.connect();
    eventually("the plain watcher subscribed", || {
        c.registered_count(CHANNEL).unwrap() == 1
    });
    let send = d
        .cli()
        .args([
            "shm-send",
            "--count",
            "50",
            "--slots",
            "8",
            "--subscribers",
            "1",
            "--timeout",
            "20000",
            CHANNEL,
            "sample(int,QString)",
            "%n",
            "x",
        ])
        .output()
        .unwrap();
    assert!(
        send.status.success(),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    let expected: String = (0..50)
        .map(|i| format!("{CHANNEL} sample(int,QString) {i} \"x\"\n"))
        .collect();
    for (what, child) in [("watch --shm", &mut shm), ("watch", &mut plain)] {
        assert!(wait_exit(child).success(), "{what}");
        let mut text = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
        assert_eq!(text, expected, "{what}");
    }
    // A second stream on the channel while one is open is refused.
    let _p = publisher(&d, 4, Policy::Lossy);
    let again = d
        .cli()
        .args(["shm-send", CHANNEL, "sample(int)", "1"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a shared-memory stream"));
}

#[test]
fn a_streaming_cli_publisher_killed_at_any_moment_ends_the_stream() {
    let d = Daemon::start();
    let mut cli = d
        .cli()
        .args([
            "shm-send",
            "--count",
            "100000000",
            "--slots",
            "16",
            "--subscribers",
            "1",
            CHANNEL,
            "sample(int,int)",
            "%n",
            "%n",
        ])
        .spawn()
        .unwrap();
    let mut s = Subscriber::open_wait(&d.options(), CHANNEL, WAIT).unwrap();
    let mut buf = Vec::new();
    let mut next = 0;
    while next < 2000 {
        s.recv(&mut buf, WAIT).unwrap();
        assert_eq!(unpair(&buf), next);
        next += 1;
    }
    cli.kill().unwrap();
    wait_exit(&mut cli);
    // Whatever it was doing, what it committed is read in order, then the end.
    loop {
        match s.recv(&mut buf, WAIT) {
            Ok(_) => {
                assert_eq!(unpair(&buf), next);
                next += 1;
            }
            Err(e) => {
                assert_eq!(e, StreamError::Ended);
                break;
            }
        }
    }
    assert_eq!(s.lost(), 0);
}

/// A publisher writes `scribble` over its own ring while qcopd forwards it to an ordinary
/// subscriber: qcopd stays responsive, counts the corruption, stops reading the stream;
/// the mapped subscriber returns errors or messages, never hangs; the channel keeps
/// working as an ordinary channel.
fn hostile_publisher(policy: Policy, scribble: impl Fn(&qcop::shm::mapped::MappedMemory, u64)) {
    use qcop::shm::ring::RingMemory;
    let d = Daemon::start();
    let mut plain = d.connect();
    plain.subscribe(CHANNEL).unwrap();
    let mut p = publisher(&d, 8, policy);
    let mut s = subscriber(&d);
    let mut buf = Vec::new();
    p.send(&payload(0), WAIT).unwrap();
    assert_eq!(number(&recv(&mut plain).data), 0);
    s.recv(&mut buf, WAIT).unwrap();
    let mem = p.memory();
    for slot in 0..8u64 {
        scribble(mem, slot);
    }
    for _ in 0..3 {
        mem.signal_event();
        std::thread::sleep(Duration::from_millis(20));
    }
    eventually("qcopd counted the corrupt slots", || {
        counter(&mut plain, "shm_corrupt") >= 64
    });
    assert_eq!(counter(&mut plain, "shm_forwarded"), 1);
    for _ in 0..20 {
        match s.recv(&mut buf, Duration::from_millis(20)) {
            Err(StreamError::Corrupt(_)) | Err(StreamError::Timeout) => {}
            Ok(r) => assert!(r.len <= 64),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let mut sender = d.connect();
    sender.send(CHANNEL, MESSAGE, &payload(7)).unwrap();
    sender.flush().unwrap();
    assert_eq!(number(&recv(&mut plain).data), 7);
}

/// Where slot `slot` of the stream's ring is (the daemon's default geometry).
fn slot_at(slot: u64) -> usize {
    use qcop::shm::layout::Geometry;
    Geometry::new(64, 8, 17, Policy::Lossy)
        .unwrap()
        .slot_offset(slot)
}

#[test]
fn a_publisher_scribbling_over_its_ring_cannot_hurt_qcopd_or_its_subscribers() {
    use qcop::shm::layout::off;
    use qcop::shm::ring::RingMemory;
    use std::sync::atomic::Ordering;
    // Stamps no position can explain, lengths past the slot, a garbage head.
    hostile_publisher(Policy::Lossy, |mem, slot| {
        let at = slot_at(slot);
        mem.word64(at + off::slot::STAMP)
            .store(slot + 2 + 8 * 0x1234_5678, Ordering::Relaxed);
        mem.word32(at + off::slot::LEN)
            .store(u32::MAX, Ordering::Relaxed);
        mem.word64(off::HEAD).store(u64::MAX / 3, Ordering::Relaxed);
    });
}

#[test]
fn a_publisher_announcing_messages_it_never_writes_cannot_hurt_qcopd() {
    use qcop::shm::layout::off;
    use qcop::shm::ring::RingMemory;
    use std::sync::atomic::Ordering;
    // Every slot claims a far later lap (an overrun without end); the head says nothing.
    for policy in [Policy::Lossy, Policy::Lossless] {
        hostile_publisher(policy, |mem, slot| {
            mem.word64(slot_at(slot) + off::slot::STAMP)
                .store(slot + 8 * (1 << 59), Ordering::Relaxed);
            mem.word64(off::HEAD).store(0, Ordering::Relaxed);
        });
    }
}

#[test]
fn a_lossless_publisher_scribbling_over_its_ring_is_caught_too() {
    use qcop::shm::layout::off;
    use qcop::shm::ring::RingMemory;
    use std::sync::atomic::Ordering;
    // Impossible stamps and lengths.
    hostile_publisher(Policy::Lossless, |mem, slot| {
        let at = slot_at(slot);
        mem.word64(at + off::slot::STAMP)
            .store(slot + 2 + 8 * 0x1234_5678, Ordering::Relaxed);
        mem.word32(at + off::slot::LEN)
            .store(u32::MAX, Ordering::Relaxed);
    });
}

/// A stream's messages reach subscribers on another board: qcopd forwards the stream's
/// messages like any message, and its links carry them on.
#[cfg(feature = "links")]
#[test]
fn a_stream_reaches_subscribers_on_a_linked_board() {
    let links = |name: &str, rest: &str| {
        format!(
            "[links]\nname = \"{name}\"\nkey = \"a test key of more than 16 bytes\"\n\
             keepalive_ms = 250\ndead_after_ms = 2000\nreconnect_min_ms = 50\n\
             reconnect_max_ms = 400\n{rest}"
        )
    };
    let a = Daemon::start_with(&links(
        "a",
        "listen = \"127.0.0.1:0\"\nexport = [\"*\"]\nimport = [\"*\"]\n",
    ));
    let port = counter(&mut a.connect(), "link_listen_port");
    let b = Daemon::start_with(&links(
        "b",
        &format!(
            "[[links.peer]]\naddress = \"127.0.0.1:{port}\"\nexport = [\"*\"]\nimport = [\"*\"]\n"
        ),
    ));
    let mut remote = b.connect();
    remote.subscribe(CHANNEL).unwrap();
    let mut local = a.connect();
    eventually("board a learns of b's subscriber", || {
        local.registered_count(CHANNEL).unwrap() >= 1
    });
    let mut p = publisher(&a, 16, Policy::Lossless);
    for i in 0..50 {
        p.send(&payload(i), WAIT).unwrap();
    }
    for i in 0..50 {
        assert_eq!(number(&recv(&mut remote).data), i);
    }
    assert_eq!(counter(&mut local, "shm_forwarded"), 50);
}

/// A lossless stream on a small ring, published flat out, read through qcopd by an ordinary
/// subscriber that cannot keep up: qcopd holds the stream back instead of dropping, so every
/// message arrives, in order, and none of the honest publisher's slots counts as corrupt.
fn a_lossless_stream_reaches_ordinary_subscribers_whole(slots: u32, count: u64) {
    let d = Daemon::start();
    let channel = format!("flat/{slots}");
    let mut plain = d.connect();
    plain.subscribe(&channel).unwrap();
    let stream = StreamOptions::new()
        .slot_size(8)
        .slots(slots)
        .policy(Policy::Lossless);
    let mut p = Publisher::open(&d.options(), &channel, "sample(qulonglong)", &stream).unwrap();
    let publisher = std::thread::spawn(move || {
        for i in 0..count {
            p.send(&i.to_be_bytes(), WAIT).expect("lossless send");
        }
        p
    });
    for i in 0..count {
        let m = recv(&mut plain);
        let n = u64::from_be_bytes(m.data[..].try_into().expect("8-byte payload"));
        assert_eq!(n, i, "message {i} of {count} on a ring of {slots} slots");
    }
    let p = publisher.join().unwrap();
    assert_eq!(plain.lost(), 0);
    assert_eq!(counter(&mut plain, "shm_forwarded"), count);
    assert_eq!(counter(&mut plain, "shm_overruns"), 0);
    assert_eq!(counter(&mut plain, "shm_corrupt"), 0);
    assert_eq!(counter(&mut plain, "dropped_slow_consumer"), 0);
    drop(p);
}

/// Messages per ring size in the test below.
const FLAT_OUT: u64 = 1_000_000;

#[test]
fn a_lossless_stream_on_4_slots_reaches_ordinary_subscribers_whole() {
    a_lossless_stream_reaches_ordinary_subscribers_whole(4, FLAT_OUT);
}

#[test]
fn a_lossless_stream_on_16_slots_reaches_ordinary_subscribers_whole() {
    a_lossless_stream_reaches_ordinary_subscribers_whole(16, FLAT_OUT);
}

#[test]
fn a_lossless_stream_on_64_slots_reaches_ordinary_subscribers_whole() {
    a_lossless_stream_reaches_ordinary_subscribers_whole(64, FLAT_OUT);
}
