//! What a misbehaving, greedy, slow or dying client can do to `qcopd`: nothing that hurts the
//! other clients. Malformed frames, limits, slow consumers, and clients killed mid-message.

mod common;

use common::{counter, raw_hello, recv, recv_notice, Daemon, Got, RawClient, WAIT};
use nix::sys::signal::Signal;
use qcop::daemon::SYSTEM_CHANNEL;
use qcop::pattern::NameError;
use qcop::wire::{ErrorCode, Frame, HEADER_LEN};
use qcop::{Connection, Error};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const END: &str = "end()";

/// Proves the daemon still routes: `before` (connected before the trouble) and a brand-new
/// connection exchange a message.
fn assert_still_serving(d: &Daemon, before: &mut Connection) {
    let mut after = d.connect();
    after.send("alive", "ping()", b"after").unwrap();
    after.flush().unwrap();
    let m = recv(before);
    assert_eq!(
        (m.channel.as_str(), m.data.as_slice()),
        ("alive", &b"after"[..])
    );
}

/// A connection subscribed to `alive`, for [`assert_still_serving`].
fn bystander(d: &Daemon) -> Connection {
    let mut c = d.connect();
    c.subscribe("alive").unwrap();
    c
}

// ----- malformed input ---------------------------------------------------------------------

/// Writes `bytes` on a fresh raw connection (after a valid Hello if `greet`) and checks that
/// the daemon answers with a fatal error with one of `codes`, closes that connection, counts
/// a protocol error and goes on serving everybody else.
fn assert_rejected(greet: bool, bytes: &[u8], codes: &[ErrorCode]) {
    let d = Daemon::start();
    let mut other = bystander(&d);
    let mut raw = RawClient::connect(&d.socket);
    let mut all = if greet {
        raw_hello().to_vec()
    } else {
        Vec::new()
    };
    all.extend_from_slice(bytes);
    // The daemon may close before taking everything; what it answers is what matters.
    let _ = raw.write(&all);
    let mut got = raw.until_closed();
    if greet {
        assert!(
            matches!(got.first(), Some(Got::Welcome { .. })),
            "no Welcome: {got:?}"
        );
        got.remove(0);
    }
    match got.as_slice() {
        [Got::Error {
            fatal: true, code, ..
        }] if codes.contains(code) => {}
        _ => panic!("expected one fatal error with a code in {codes:?}, got {got:?}"),
    }
    assert_eq!(counter(&mut other, "protocol_errors"), 1);
    common::eventually("the bad connection to be dropped", || {
        counter(&mut other, "clients") == 1
    });
    assert_still_serving(&d, &mut other);
}

fn sync_frame() -> Vec<u8> {
    Frame::Sync { seq: 1 }.to_vec()
}

#[test]
fn declared_length_over_the_limit_is_fatal() {
    let mut f = Frame::Send {
        seq: 1,
        ack: false,
        channel: "c",
        message: "m()",
        payload: b"",
    }
    .to_vec();
    f[..4].copy_from_slice(&0x7fff_ff00u32.to_be_bytes());
    assert_rejected(true, &f, &[ErrorCode::TooLarge, ErrorCode::Malformed]);
}

#[test]
fn declared_length_shorter_than_the_fields_is_fatal() {
    let f = Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "abc",
    }
    .to_vec();
    // A one-byte body cannot hold the channel's two-byte length.
    let mut bad = f[..HEADER_LEN + 1].to_vec();
    bad[..4].copy_from_slice(&1u32.to_be_bytes());
    assert_rejected(true, &bad, &[ErrorCode::Malformed]);
}

#[test]
fn declared_length_longer_than_the_fields_is_fatal() {
    let mut f = sync_frame();
    f[..4].copy_from_slice(&4u32.to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn invalid_utf8_in_a_name_is_fatal() {
    let mut f = Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "ab",
    }
    .to_vec();
    let n = f.len();
    f[n - 2..].copy_from_slice(&[0xff, 0xfe]);
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn unknown_frame_kind_is_fatal() {
    let mut f = sync_frame();
    f[4] = 0x7f;
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn reserved_header_bits_are_fatal() {
    let mut f = sync_frame();
    f[7] = 0x01;
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn undefined_flags_are_fatal() {
    let mut f = sync_frame();
    f[5] = 0x80;
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn daemon_frame_kinds_from_a_client_are_fatal() {
    let f = Frame::Ok { seq: 1, value: 0 }.to_vec();
    assert_rejected(true, &f, &[ErrorCode::Malformed]);
}

#[test]
fn a_second_hello_is_fatal() {
    assert_rejected(true, &raw_hello().to_vec(), &[ErrorCode::Malformed]);
}

#[test]
fn requests_before_hello_are_fatal() {
    let f = Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "abc",
    }
    .to_vec();
    assert_rejected(false, &f, &[ErrorCode::HandshakeRequired]);
}

#[test]
fn wrong_magic_is_fatal() {
    let mut f = raw_hello().to_vec();
    f[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"QCOX");
    assert_rejected(false, &f, &[ErrorCode::Malformed]);
}

#[test]
fn unsupported_protocol_version_is_fatal() {
    let f = Frame::Hello {
        version_min: 7,
        version_max: 9,
        name: "future",
    }
    .to_vec();
    assert_rejected(false, &f, &[ErrorCode::UnsupportedVersion]);
}

#[test]
fn a_peer_speaking_another_protocol_is_fatal() {
    assert_rejected(
        false,
        b"GET / HTTP/1.1\r\nHost: qcop\r\n\r\n",
        &[ErrorCode::Malformed, ErrorCode::TooLarge],
    );
}

#[test]
fn a_frame_cut_short_by_a_close_is_dropped_quietly() {
    let d = Daemon::start();
    let mut other = bystander(&d);
    let mut raw = RawClient::greeted(&d.socket);
    let f = Frame::Send {
        seq: 1,
        ack: false,
        channel: "alive",
        message: "half()",
        payload: &[7; 100],
    }
    .to_vec();
    raw.write(&f[..f.len() / 2]).unwrap();
    raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
    // Nothing to answer: the daemon closes its end, and the half message goes nowhere.
    assert_eq!(raw.until_closed(), []);
    common::eventually("the connection to be dropped", || {
        counter(&mut other, "clients") == 1
    });
    assert_still_serving(&d, &mut other);
    assert_eq!(counter(&mut other, "messages_received"), 1);
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let d = Daemon::start_with("handshake_timeout_ms = 1000\n");
    let mut other = bystander(&d);
    let mut silent = RawClient::connect(&d.socket);
    let mut partial = RawClient::connect(&d.socket);
    partial.write(&raw_hello().to_vec()[..5]).unwrap();
    for raw in [&mut silent, &mut partial] {
        match raw.until_closed().as_slice() {
            [Got::Error {
                fatal: true,
                code: ErrorCode::HandshakeRequired,
                ..
            }] => {}
            got => panic!("expected a HandshakeRequired error, got {got:?}"),
        }
    }
    assert_eq!(counter(&mut other, "handshake_timeouts"), 2);
    assert_still_serving(&d, &mut other);
}

// ----- limits ------------------------------------------------------------------------------

#[test]
fn connections_beyond_max_clients_are_refused() {
    let d = Daemon::start_with("max_clients = 2\n");
    let mut a = d.connect();
    let b = d.connect();
    match Connection::connect(&d.options()) {
        Err(Error::Refused {
            code: ErrorCode::TooManyClients,
            text,
        }) => assert!(text.contains('2'), "unclear refusal: {text}"),
        Err(e) => panic!("expected TooManyClients, got {e:?}"),
        Ok(_) => panic!("a third client was admitted"),
    }
    let mut raw = RawClient::connect(&d.socket);
    match raw.until_closed().as_slice() {
        [Got::Error {
            fatal: true,
            code: ErrorCode::TooManyClients,
            ..
        }] => {}
        got => panic!("expected a TooManyClients error, got {got:?}"),
    }
    assert_eq!(counter(&mut a, "clients_refused"), 2);
    assert_eq!(counter(&mut a, "clients"), 2);

    // A freed place can be taken again.
    drop(b);
    common::eventually("the second client to be gone", || {
        counter(&mut a, "clients") == 1
    });
    let mut c = d.connect();
    a.subscribe("x").unwrap();
    c.send("x", "hi()", b"").unwrap();
    c.flush().unwrap();
    assert_eq!(recv(&mut a).message, "hi()");
}

#[test]
fn subscriptions_beyond_the_per_client_limit_are_refused() {
    let d = Daemon::start_with("max_subscriptions_per_client = 3\n");
    let mut a = d.connect();
    assert_eq!(a.limits().max_subscriptions, 3);
    a.subscribe("s/1").unwrap();
    a.subscribe("s/2").unwrap();
    a.subscribe("s/*").unwrap();
    match a.subscribe("s/4") {
        Err(Error::Refused {
            code: ErrorCode::TooManySubscriptions,
            text,
        }) => assert!(text.contains('3'), "unclear refusal: {text}"),
        other => panic!("expected TooManySubscriptions, got {other:?}"),
    }
    assert_eq!(a.subscriptions().collect::<Vec<_>>(), ["s/*", "s/1", "s/2"]);
    // Subscribing again to a held channel does not take another place.
    a.subscribe("s/1").unwrap();
    a.unsubscribe("s/*").unwrap();
    a.subscribe("s/4").unwrap();
    // The limit is per client.
    let mut b = d.connect();
    for ch in ["s/1", "s/2", "s/4"] {
        b.subscribe(ch).unwrap();
    }
    assert_eq!(b.registered_count("s/4").unwrap(), 2);
}

#[test]
fn names_over_the_length_limit_are_refused_clearly() {
    let d = Daemon::start();
    let mut c = d.connect();
    assert_eq!(
        (c.limits().max_channel, c.limits().max_message),
        (1024, 1024)
    );
    let long = "c".repeat(1025);
    let too_long = NameError::TooLong {
        len: 1025,
        max: 1024,
    };
    let check = |r: Result<(), Error>, what: &str| match r {
        Err(Error::BadName(e)) => {
            assert_eq!(e, too_long, "{what}");
            assert!(Error::BadName(e).to_string().contains("1024"), "{what}");
        }
        other => panic!("{what}: expected BadName, got {other:?}"),
    };
    check(c.subscribe(&long), "subscribe");
    check(c.send(&long, "m()", b""), "send channel");
    check(c.send("ok", &long, b""), "send message");
    check(c.is_registered(&long).map(|_| ()), "is_registered");
    check(c.call("ok", &long, b"", WAIT).map(|_| ()), "call message");
    assert!(matches!(
        c.subscribe(""),
        Err(Error::BadName(NameError::Empty))
    ));
    assert!(matches!(
        c.send("a\nb", "m()", b""),
        Err(Error::BadName(NameError::ControlChar))
    ));

    // At the limit is fine.
    let longest = "c".repeat(1024);
    c.subscribe(&longest).unwrap();
    c.send(&longest, &"m".repeat(1024), b"").unwrap();
    let m = recv(&mut c);
    assert_eq!((m.channel.len(), m.message.len()), (1024, 1024));

    // The daemon enforces the same limits on clients that skip the library's checks, and
    // keeps the connection.
    let mut raw = RawClient::greeted(&d.socket);
    raw.send(&Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: &long,
    });
    raw.send(&Frame::Send {
        seq: 2,
        ack: false,
        channel: "ok",
        message: &long,
        payload: b"",
    });
    raw.send(&Frame::Subscribe {
        seq: 3,
        credentials: false,
        channel: "",
    });
    for seq in 1..=3 {
        match raw.next() {
            Some(Got::Error {
                seq: s,
                fatal: false,
                code: ErrorCode::BadName,
                ..
            }) if s == seq => {}
            other => panic!("request {seq}: expected BadName, got {other:?}"),
        }
    }
    assert!(raw.sync(4).is_empty());
}

#[test]
fn is_registered_checks_names_like_subscribe_and_send() {
    let d = Daemon::start();
    let long = "c".repeat(1025);
    let mut raw = RawClient::greeted(&d.socket);
    let bad = ["", "a\u{1}b", "tab\there", long.as_str()];
    for (seq, channel) in (1..).zip(bad) {
        raw.send(&Frame::IsRegistered { seq, channel });
        match raw.next() {
            Some(Got::Error {
                seq: s,
                fatal: false,
                code: ErrorCode::BadName,
                ..
            }) if s == seq => {}
            other => panic!("IsRegistered {channel:?}: expected BadName, got {other:?}"),
        }
    }
    // A valid name is still answered, and the connection is kept.
    raw.send(&Frame::IsRegistered {
        seq: 10,
        channel: &long[..255],
    });
    assert_eq!(raw.next(), Some(Got::Other(qcop::wire::Kind::Registered)));
    assert!(raw.sync(11).is_empty());
}

#[test]
fn documented_corner_cases_of_requests() {
    let d = Daemon::start();
    let mut a = RawClient::greeted(&d.socket);
    // seq 0 is a request number like any other.
    a.send(&Frame::Subscribe {
        seq: 0,
        credentials: false,
        channel: "corner/a",
    });
    assert_eq!(a.next(), Some(Got::Ok { seq: 0, value: 0 }));
    a.send(&Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "corner/*",
    });
    assert_eq!(a.next(), Some(Got::Ok { seq: 1, value: 0 }));
    // The ack counts local connections, each once (exact and pattern subscription here).
    a.send(&Frame::Send {
        seq: 0,
        ack: true,
        channel: "corner/a",
        message: "m()",
        payload: b"",
    });
    assert!(matches!(a.next(), Some(Got::Message { channel, .. }) if channel == "corner/a"));
    assert_eq!(a.next(), Some(Got::Ok { seq: 0, value: 1 }));
    // A reply with token 0 matches no call: dropped, the connection kept.
    a.send(&Frame::Respond {
        token: 0,
        error: false,
        message: "r()",
        payload: b"",
    });
    assert!(a.sync(2).is_empty());
    // ShmOpen's policy byte is checked by the daemon: non-fatal RingSize.
    a.send(&Frame::ShmOpen {
        seq: 3,
        policy: 7,
        slot_size: 64,
        slot_count: 8,
        channel: "corner/shm",
        message: "m()",
    });
    match a.next() {
        Some(Got::Error {
            seq: 3,
            fatal: false,
            code: ErrorCode::RingSize,
            text,
        }) => assert!(text.contains("unknown overflow policy 7"), "{text}"),
        other => panic!("expected RingSize, got {other:?}"),
    }
    assert!(a.sync(4).is_empty());

    // A second Monitor replaces the first one's patterns; a refused one changes nothing.
    let mut m = RawClient::greeted(&d.socket);
    let monitored = |a: &mut RawClient, m: &mut RawClient, channel: &str, seq: u32| {
        a.send(&Frame::Send {
            seq,
            ack: false,
            channel,
            message: "m()",
            payload: b"",
        });
        assert!(a.sync(seq + 1).is_empty());
        m.sync(seq + 2).len()
    };
    for (seq, pattern) in [(1, "mon/a"), (2, "mon/b")] {
        m.send(&Frame::Monitor {
            seq,
            patterns: vec![pattern],
        });
        assert_eq!(m.next(), Some(Got::Ok { seq, value: 0 }));
    }
    assert_eq!(monitored(&mut a, &mut m, "mon/a", 10), 0);
    assert_eq!(monitored(&mut a, &mut m, "mon/b", 20), 1);
    m.send(&Frame::Monitor {
        seq: 3,
        patterns: vec![""],
    });
    assert!(matches!(
        m.next(),
        Some(Got::Error {
            seq: 3,
            fatal: false,
            code: ErrorCode::BadName,
            ..
        })
    ));
    assert_eq!(monitored(&mut a, &mut m, "mon/b", 30), 1);
    assert_eq!(monitored(&mut a, &mut m, "mon/a", 40), 0);
    assert_eq!(counter(&mut d.connect(), "monitors"), 1);
}

#[test]
fn configured_name_limits_are_announced_and_enforced() {
    let d = Daemon::start_with("max_channel_len = 16\nmax_message_len = 8\n");
    let mut c = d.connect();
    assert_eq!((c.limits().max_channel, c.limits().max_message), (16, 8));
    assert!(matches!(
        c.subscribe("0123456789abcdefg"),
        Err(Error::BadName(NameError::TooLong { len: 17, max: 16 }))
    ));
    assert!(matches!(
        c.send("ok", "toolong()", b""),
        Err(Error::BadName(NameError::TooLong { len: 9, max: 8 }))
    ));
    c.subscribe("0123456789abcdef").unwrap();
}

// ----- slow consumers ----------------------------------------------------------------------

/// A 64-byte payload carrying `n`.
fn numbered(n: u64) -> [u8; 64] {
    let mut p = [0x5a; 64];
    p[..8].copy_from_slice(&n.to_be_bytes());
    p
}

fn number(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[..8].try_into().expect("numbered payload"))
}

#[test]
fn slow_consumer_under_a_flood_loses_the_oldest_and_memory_stays_bounded() {
    // The figure the issue asks for. In a debug build this takes a few seconds: each send is
    // one small write, and the daemon decodes and routes every message.
    const N: u64 = 1_000_000;
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    let d = Daemon::start();
    let mut slow = d.connect();
    slow.subscribe("flood").unwrap();
    let slow_id = slow.client_id();
    let mut tx = d.connect();

    let peak_kib = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak_kib.fetch_max(d.rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        for n in 0..N {
            tx.send("flood", "tick(QByteArray)", &numbered(n)).unwrap();
        }
        tx.send("flood", END, b"").unwrap();
        // Returns: the sender was never blocked for good by the subscriber that does not read.
        tx.flush().unwrap();
        peak_kib.fetch_max(d.rss_kib(), Ordering::Relaxed);
        done.store(true, Ordering::Relaxed);
    });
    let peak_kib = peak_kib.into_inner();

    let stats = tx.stats(true).unwrap();
    let get = |k: &str| stats.get(k).unwrap();
    let dropped = get("dropped_slow_consumer");
    let delivered = get("messages_delivered");
    let me = stats.clients.iter().find(|c| c.id == slow_id).unwrap();
    eprintln!(
        "flood of {N}: daemon RSS peak {peak_kib} KiB, messages_delivered {delivered}, \
         dropped_slow_consumer {dropped}, bytes_queued_peak {}",
        get("bytes_queued_peak")
    );
    assert!(peak_kib < RSS_BOUND_KIB, "qcopd grew to {peak_kib} KiB");
    assert!(
        dropped > 0,
        "nothing was dropped: the flood did not outrun the reader"
    );
    assert_eq!(get("messages_received"), N + 1);
    assert_eq!(get("dropped_memory_budget"), 0);
    assert_eq!(me.dropped, dropped);

    // The slow subscriber finally reads: increasing numbers, the newest kept, and a loss
    // count that accounts for every gap.
    let mut received = 0u64;
    let mut last = None;
    loop {
        let m = recv(&mut slow);
        if m.message == END {
            break;
        }
        let n = number(&m.data);
        assert!(last.map_or(true, |l| n > l), "{n} after {last:?}");
        last = Some(n);
        received += 1;
    }
    assert_eq!(
        slow.lost(),
        dropped,
        "Lost notices disagree with the daemon's count"
    );
    assert_eq!(received + slow.lost(), N);
    assert_eq!(last, Some(N - 1), "the newest messages are kept");

    // Every message sent to the one subscriber (the end marker included) is either
    // delivered or dropped, not both.
    assert_eq!(
        delivered + dropped,
        N + 1,
        "messages_delivered {delivered} + dropped_slow_consumer {dropped}"
    );
    assert_eq!(me.delivered + me.dropped, N + 1, "per-client counters");
}

#[test]
fn answers_to_a_slow_consumer_are_never_dropped() {
    let d = Daemon::start();
    let mut slow = RawClient::greeted(&d.socket);
    slow.send(&Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "flood",
    });
    assert_eq!(slow.next(), Some(Got::Ok { seq: 1, value: 0 }));
    let mut tx = d.connect();
    let max_queue = 256 * 1024;
    let flood = |tx: &mut Connection, bytes: usize| {
        for n in 0..bytes / 64 {
            tx.send("flood", "tick(QByteArray)", &numbered(n as u64))
                .unwrap();
        }
        tx.flush().unwrap();
    };
    // Fill its socket and its queue until messages are dropped.
    while counter(&mut tx, "dropped_slow_consumer") == 0 {
        flood(&mut tx, max_queue);
    }
    // It asks something while its queue is full, and reads nothing.
    slow.send(&Frame::IsRegistered {
        seq: 2,
        channel: "flood",
    });
    slow.send(&Frame::Sync { seq: 3 });
    // These round trips complete after the daemon handled the requests above (written
    // earlier, so reported by the same or an earlier epoll wake-up).
    tx.flush().unwrap();
    tx.flush().unwrap();
    // The flood goes on for more than a whole queue's worth.
    flood(&mut tx, 4 * max_queue);
    tx.send("flood", END, b"").unwrap();
    tx.flush().unwrap();

    let mut answers = Vec::new();
    loop {
        match slow.next() {
            Some(Got::Message { message, .. }) if message == END => break,
            Some(Got::Message { .. } | Got::Lost(_)) => {}
            Some(other) => answers.push(other),
            None => panic!("qcopd closed the slow consumer's connection"),
        }
    }
    // Anything still on its way comes before the answer to one more round trip.
    answers.extend(slow.sync(4));
    assert_eq!(
        answers,
        [
            Got::Other(qcop::wire::Kind::Registered),
            Got::Ok { seq: 3, value: 0 }
        ],
        "the answers to its own requests must survive the drop-oldest policy"
    );
}

/// A subscriber whose socket has room for a burst is not slow, however fast the burst
/// arrives: the daemon must hand its queue to the socket before judging it.
fn burst_to_an_idle_subscriber(policy: &str) {
    let d = Daemon::start_with(&format!(
        "max_payload = 1024\nmax_queue_bytes = 4096\nslow_consumer = \"{policy}\"\n"
    ));
    let mut sub = d.connect();
    sub.subscribe("burst").unwrap();
    // 40 messages of 1000 bytes in one write: 40 KB, which the subscriber's socket buffer
    // takes whole, though it is ten times its queue limit.
    let mut bytes = Vec::new();
    for n in 0..40u32 {
        let mut payload = [0xa5; 1000];
        payload[..8].copy_from_slice(&u64::from(n).to_be_bytes());
        Frame::Send {
            seq: n + 1,
            ack: false,
            channel: "burst",
            message: "blob(QByteArray)",
            payload: &payload,
        }
        .encode(&mut bytes);
    }
    Frame::Send {
        seq: 41,
        ack: false,
        channel: "burst",
        message: END,
        payload: b"",
    }
    .encode(&mut bytes);
    let mut raw = RawClient::greeted(&d.socket);
    raw.write(&bytes).unwrap();
    assert!(raw.sync(42).is_empty());

    let mut got = Vec::new();
    loop {
        match sub.recv_timeout(WAIT) {
            Ok(Some(m)) if m.message == END => break,
            Ok(Some(m)) => got.push(number(&m.data)),
            other => panic!("{policy}: after {} messages: {other:?}", got.len()),
        }
    }
    assert_eq!(got, (0..40).collect::<Vec<u64>>(), "{policy}");
    assert_eq!(sub.lost(), 0, "{policy}");
    assert_eq!(counter(&mut sub, "dropped_slow_consumer"), 0, "{policy}");
    assert_eq!(
        counter(&mut sub, "slow_consumer_disconnects"),
        0,
        "{policy}"
    );
}

#[test]
fn a_burst_the_socket_can_take_loses_nothing_under_drop_oldest() {
    burst_to_an_idle_subscriber("drop-oldest");
}

#[test]
fn a_burst_the_socket_can_take_disconnects_nobody() {
    burst_to_an_idle_subscriber("disconnect");
}

#[test]
fn slow_consumer_is_disconnected_under_the_disconnect_policy() {
    let d = Daemon::start_with("slow_consumer = \"disconnect\"\n");
    let mut slow = d.connect();
    slow.subscribe("flood").unwrap();
    let mut tx = d.connect();
    let mut sent = 0u64;
    while counter(&mut tx, "slow_consumer_disconnects") == 0 {
        assert!(
            sent < 1_000_000,
            "still connected after {sent} unread messages"
        );
        for _ in 0..1000 {
            tx.send("flood", "tick(QByteArray)", &numbered(sent))
                .unwrap();
            sent += 1;
        }
        tx.flush().unwrap();
    }
    assert_eq!(counter(&mut tx, "dropped_slow_consumer"), 0);
    // The dropped subscriber stops counting as a receiver at once, although its connection
    // lingers until its goodbye is written.
    assert!(
        !tx.is_registered("flood").unwrap(),
        "a disconnected slow consumer still counts as a subscriber"
    );

    // The slow client reads what reached its socket, in order, then learns it was dropped.
    let mut last = None;
    let err = loop {
        match slow.recv_timeout(WAIT) {
            Ok(Some(m)) => {
                let n = number(&m.data);
                assert!(last.map_or(true, |l| n == l + 1), "{n} after {last:?}");
                last = Some(n);
            }
            Ok(None) => panic!("neither a message nor an error within {WAIT:?}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::SlowConsumer,
                ..
            }
        ),
        "unexpected error {err:?}"
    );
    assert!(err.is_disconnect());
    common::eventually("the slow consumer to be dropped", || {
        counter(&mut tx, "clients") == 1
    });
    assert!(counter(&mut tx, "dropped_disconnected") > 0);
    // The sender carries on; the channel lost its only subscriber.
    assert!(!tx.is_registered("flood").unwrap());
    assert_eq!(tx.send_acked("flood", "tick(QByteArray)", b"").unwrap(), 0);
}

/// A subscriber speaking the protocol directly stops reading under `disconnect`, with
/// messages of `size` bytes: once it reads again it gets whole frames, in order, and then
/// the fatal `SlowConsumer` error before the connection closes. Never a frame cut short.
fn slow_raw_subscriber_sees_whole_frames_then_the_error(size: usize) {
    let d = Daemon::start_with("slow_consumer = \"disconnect\"\n");
    let mut slow = RawClient::greeted(&d.socket);
    slow.send(&Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "flood",
    });
    assert_eq!(slow.next(), Some(Got::Ok { seq: 1, value: 0 }));
    let mut tx = d.connect();
    let mut payload = vec![0x5a; size];
    let mut sent = 0u64;
    while counter(&mut tx, "slow_consumer_disconnects") == 0 {
        assert!(
            sent < 100_000,
            "still connected after {sent} unread messages"
        );
        for _ in 0..16 {
            payload[..8].copy_from_slice(&sent.to_be_bytes());
            tx.send("flood", "blob(QByteArray)", &payload).unwrap();
            sent += 1;
        }
        tx.flush().unwrap();
    }
    let got = slow.until_closed();
    let (last, messages) = got.split_last().expect("nothing arrived");
    match last {
        Got::Error {
            seq: 0,
            fatal: true,
            code: ErrorCode::SlowConsumer,
            ..
        } => {}
        other => panic!("{size}-byte frames: expected a fatal SlowConsumer, got {other:?}"),
    }
    for (n, got) in messages.iter().enumerate() {
        match got {
            Got::Message { payload, .. } => {
                assert_eq!(payload.len(), size);
                assert_eq!(payload[..8], (n as u64).to_be_bytes(), "message {n}");
                assert!(payload[8..].iter().all(|&b| b == 0x5a), "message {n}");
            }
            other => panic!("{size}-byte frames: after {n} messages: {other:?}"),
        }
    }
    assert!((messages.len() as u64) < sent);
    common::eventually("the slow consumer to be dropped", || {
        counter(&mut tx, "clients") == 1
    });
}

#[test]
fn a_slow_raw_subscriber_gets_the_error_after_whole_1k_frames() {
    slow_raw_subscriber_sees_whole_frames_then_the_error(1024);
}

#[test]
fn a_slow_raw_subscriber_gets_the_error_after_whole_60k_frames() {
    slow_raw_subscriber_sees_whole_frames_then_the_error(60 * 1024);
}

// ----- clients that die ---------------------------------------------------------------------

const CHILD_ROLE: &str = "QCOP_TEST_CHILD_ROLE";
const CHILD_SOCKET: &str = "QCOP_TEST_CHILD_SOCKET";

/// Not a test of its own: the body of the child processes that
/// `killed_clients_leave_no_descriptor_behind` starts by running this test binary again
/// with a role in the environment. Without one it returns at once.
#[test]
fn child_process_role() {
    let (Ok(role), Ok(socket)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_SOCKET)) else {
        return;
    };
    let socket = std::path::PathBuf::from(socket);
    // Exit once the parent closes our stdin (also when it dies), so no child outlives it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    match role.as_str() {
        "half-frame" => {
            let mut raw = RawClient::greeted(&socket);
            raw.send(&Frame::Subscribe {
                seq: 1,
                credentials: false,
                channel: "kill/half",
            });
            assert_eq!(raw.next(), Some(Got::Ok { seq: 1, value: 0 }));
            let f = Frame::Send {
                seq: 2,
                ack: false,
                channel: "kill/half",
                message: "big(QByteArray)",
                payload: &[1; 1000],
            }
            .to_vec();
            raw.write(&f[..f.len() / 2]).unwrap();
            println!("READY");
            loop {
                std::thread::park();
            }
        }
        "watcher" => {
            let opts = qcop::ConnectOptions::new().socket(&socket).name("watcher");
            let mut c = Connection::connect(&opts).unwrap();
            c.subscribe("kill/watch").unwrap();
            println!("READY");
            loop {
                let _ = c.recv();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A child process killed (and reaped) when dropped.
struct ChildProcess(Child);

impl ChildProcess {
    /// Runs `role` against `d` and waits until it says it is set up.
    fn spawn(d: &Daemon, role: &str) -> ChildProcess {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "child_process_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROLE, role)
            .env(CHILD_SOCKET, &d.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut child = ChildProcess(child);
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                // The test harness prints "test child_process_role ... " before it.
                Some(Ok(line)) if line.ends_with("READY") => return child,
                Some(Ok(_)) => {}
                _ => {
                    let status = child.0.wait();
                    panic!("child {role} ended before it was ready: {status:?}");
                }
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.id() as i32)
    }

    fn sigkill(&mut self) {
        self.0.kill().expect("SIGKILL child");
        self.0.wait().expect("reap child");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_clients_leave_no_descriptor_behind() {
    let d = Daemon::start();
    let mut sys = d.connect();
    sys.subscribe(SYSTEM_CHANNEL).unwrap();
    let mut tx = d.connect();
    let baseline = d.fd_count();
    assert!(baseline > 0);
    let new = |ch: &str| ("newChannel(QString)".to_owned(), ch.to_owned());
    let removed = |ch: &str| ("removedChannel(QString)".to_owned(), ch.to_owned());

    for round in 0..2 {
        // Client to daemon: killed with half a frame written.
        let mut half = ChildProcess::spawn(&d, "half-frame");
        assert_eq!(recv_notice(&mut sys), new("kill/half"));
        assert_eq!(d.fd_count(), baseline + 1, "round {round}");
        half.sigkill();
        assert_eq!(recv_notice(&mut sys), removed("kill/half"));

        // Daemon to client: a stopped reader with a backlog (the daemon holds a partly
        // written frame for it) is killed.
        let mut watcher = ChildProcess::spawn(&d, "watcher");
        assert_eq!(recv_notice(&mut sys), new("kill/watch"));
        nix::sys::signal::kill(watcher.pid(), Signal::SIGSTOP).unwrap();
        let watcher_pid = watcher.0.id();
        let backlog = |tx: &mut Connection| {
            let stats = tx.stats(true).unwrap();
            let me = stats.clients.iter().find(|c| c.pid == watcher_pid);
            me.expect("watcher listed").queued_bytes
        };
        let mut sent = 0;
        while backlog(&mut tx) == 0 {
            assert!(
                sent < 100_000,
                "the daemon never queued anything for the watcher"
            );
            for _ in 0..64 {
                tx.send("kill/watch", "blob(QByteArray)", &[3; 999])
                    .unwrap();
                sent += 1;
            }
            tx.flush().unwrap();
        }
        watcher.sigkill();
        assert_eq!(recv_notice(&mut sys), removed("kill/watch"));

        common::eventually("the daemon to close the dead clients' sockets", || {
            d.fd_count() == baseline
        });
        assert_eq!(counter(&mut tx, "clients"), 2, "round {round}");
        assert_eq!(counter(&mut tx, "bytes_queued"), 0, "round {round}");
    }
    assert_still_serving_after_kills(&d, &mut sys);
}

fn assert_still_serving_after_kills(d: &Daemon, sys: &mut Connection) {
    let mut c = bystander(d);
    assert_eq!(recv_notice(sys).1, "alive");
    assert_still_serving(d, &mut c);
}

/// 4,096 patterns held by one connection that cannot match a channel do not make routing
/// on it any dearer: qcopd's pattern index visits as many nodes per message as with 16.
#[test]
fn patterns_that_cannot_match_do_not_add_routing_work() {
    let d = Daemon::start_with("max_subscriptions_per_client = 8192\n");
    let mut holder = d.connect();
    let mut receiver = d.connect();
    receiver.subscribe("bench/rr").unwrap();
    receiver.subscribe("bench/rs").unwrap();
    let mut sender = d.connect();
    let mut hold = |from: usize, to: usize| {
        for i in from..to {
            let p = match i % 4 {
                0 => format!("noise/{i}/*"),
                1 => format!("*/noise{i}"),
                2 => format!("?oise{i}*"),
                _ => format!("bench/[0-9]{i}*"),
            };
            holder.subscribe(&p).unwrap();
        }
    };
    let mut visits_per_message = |sender: &mut Connection| {
        let before = counter(sender, "pattern_visits");
        // Two channels in turn: qcopd caches only the last route, so each message walks the
        // index.
        for i in 0..200u32 {
            let channel = if i % 2 == 0 { "bench/rr" } else { "bench/rs" };
            sender.send(channel, "n(int)", &i.to_be_bytes()).unwrap();
        }
        for i in 0..200u32 {
            assert_eq!(recv(&mut receiver).data, i.to_be_bytes());
        }
        (counter(sender, "pattern_visits") - before) / 200
    };
    hold(0, 16);
    let few = visits_per_message(&mut sender);
    hold(16, 4096);
    assert_eq!(counter(&mut sender, "patterns"), 4096);
    let many = visits_per_message(&mut sender);
    assert!(few < 64, "{few} nodes visited per message");
    assert_eq!(
        many, few,
        "routing work grew with patterns that cannot match"
    );
}
