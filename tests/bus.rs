//! Message routing through a real `qcopd`: broadcast, patterns, registration queries,
//! lifecycle notices, ordering, request/response and payload limits.
//!
//! "Nothing else arrived" is never checked with a sleep: after the messages under test, the
//! same sender sends an end marker, and since the daemon keeps each sender's order for every
//! receiver, a receiver that reads the marker has seen everything sent before it.

mod common;

use common::{counter, recv, recv_notice, Daemon, Got, RawClient, WAIT};
use qcop::daemon::SYSTEM_CHANNEL;
use qcop::wire::{ErrorCode, Frame};
use qcop::{Connection, Error, Message};
use std::time::Duration;

const END: &str = "end()";

/// Receives until the end marker; returns what came before it.
fn until_end(conn: &mut Connection) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        let m = recv(conn);
        if m.message == END {
            return got;
        }
        got.push(m);
    }
}

// ----- broadcast ---------------------------------------------------------------------------

#[test]
fn broadcast_reaches_each_subscriber_exactly_once() {
    let d = Daemon::start();
    let mut subs: Vec<Connection> = (0..3).map(|_| d.connect()).collect();
    for s in &mut subs {
        s.subscribe("QPE/Audio").unwrap();
    }
    let mut bystander = d.connect();
    bystander.subscribe("QPE/Other").unwrap();

    // The first subscriber is also the sender: it gets its own messages too.
    let sent: Vec<(String, Vec<u8>)> = (0..5u8)
        .map(|i| (format!("setVolume{i}(int)"), vec![i, 0, 0xff, i]))
        .collect();
    let sender = &mut subs[0];
    for (message, data) in &sent {
        sender.send("QPE/Audio", message, data).unwrap();
    }
    sender.send("QPE/Audio", END, b"").unwrap();
    sender.send("QPE/Other", END, b"").unwrap();
    sender.flush().unwrap();

    for (i, s) in subs.iter_mut().enumerate() {
        let got = until_end(s);
        let got: Vec<(String, String, Vec<u8>, bool)> = got
            .into_iter()
            .map(|m| (m.channel, m.message, m.data, m.call_token.is_some()))
            .collect();
        let want: Vec<(String, String, Vec<u8>, bool)> = sent
            .iter()
            .map(|(m, d)| ("QPE/Audio".to_owned(), m.clone(), d.clone(), false))
            .collect();
        assert_eq!(got, want, "subscriber {i}");
    }
    // Not subscribed to QPE/Audio: the first thing it sees is its own channel's marker.
    let first = recv(&mut bystander);
    assert_eq!(
        (first.channel.as_str(), first.message.as_str()),
        ("QPE/Other", END)
    );
}

#[test]
fn message_without_subscriber_is_dropped_and_counted() {
    let d = Daemon::start();
    let mut listener = d.connect();
    listener.subscribe("here").unwrap();
    let mut sender = d.connect();
    let before = counter(&mut sender, "dropped_no_subscriber");

    // QCOP semantics: sending to an empty channel succeeds and the message is dropped.
    sender.send("nobody/home", "hello()", b"x").unwrap();
    assert_eq!(
        sender.send_acked("nobody/home", "hello()", b"x").unwrap(),
        0
    );
    sender.send("here", END, b"").unwrap();
    sender.flush().unwrap();

    assert!(until_end(&mut listener).is_empty());
    assert_eq!(counter(&mut sender, "dropped_no_subscriber"), before + 2);
}

#[test]
fn lifecycle_notices_nobody_listens_to_are_not_counted_as_dropped_messages() {
    let d = Daemon::start();
    let mut c = d.connect();
    // Channels come and go with nobody on the system channel: no sender lost anything.
    c.subscribe("a").unwrap();
    c.subscribe("b").unwrap();
    c.unsubscribe("a").unwrap();
    c.send("nobody/home", "hello()", b"x").unwrap();
    c.flush().unwrap();
    assert_eq!(
        counter(&mut c, "dropped_no_subscriber"),
        1,
        "only the one message sent to an empty channel was dropped"
    );
}

// ----- patterns ----------------------------------------------------------------------------

#[test]
fn patterns_match_shell_globs_and_deliver_the_original_channel() {
    let d = Daemon::start();
    let cases: [(&str, &[&str]); 6] = [
        ("sens*", &["sens", "sensors/imu/accel"]),
        ("QPE/*", &["QPE/System", "QPE/Application/clock"]),
        ("*cam?", &["cam0", "cam3", "cam4", "camX"]),
        ("*cam[0-3]", &["cam0", "cam3"]),
        ("*cam[!0-3]", &["cam4", "camX"]),
        ("*/imu/*", &["sensors/imu/accel"]),
    ];
    let channels = [
        "sens",
        "sensors/imu/accel",
        "Sensors/x",
        "QPE/System",
        "QPE/Application/clock",
        "qpe/System",
        "QPE",
        "cam",
        "cam0",
        "cam3",
        "cam4",
        "camX",
        "cam10",
        "CAM0",
    ];
    let mut subs: Vec<Connection> = cases
        .iter()
        .map(|(pattern, _)| {
            let mut c = d.connect();
            c.subscribe(pattern).unwrap();
            c.subscribe("end").unwrap();
            c
        })
        .collect();
    let mut sender = d.connect();
    for ch in channels {
        sender.send(ch, "ping(QString)", ch.as_bytes()).unwrap();
    }
    sender.send("end", END, b"").unwrap();
    sender.flush().unwrap();

    for ((pattern, want), sub) in cases.iter().zip(&mut subs) {
        let got = until_end(sub);
        for m in &got {
            // The receiver sees the channel the message was sent to, not the pattern.
            assert_eq!(m.data, m.channel.as_bytes(), "{pattern}: {m:?}");
            assert_eq!(m.message, "ping(QString)");
        }
        let got: Vec<&str> = got.iter().map(|m| m.channel.as_str()).collect();
        assert_eq!(&got, want, "pattern {pattern:?}");
    }
}

#[test]
fn exact_and_pattern_subscriptions_deliver_one_copy() {
    let d = Daemon::start();
    let mut both = d.connect();
    for sub in ["QPE/System", "QPE/*", "*", "QPE/Sys?em*", "[Q]PE/System*"] {
        both.subscribe(sub).unwrap();
    }
    let mut sender = d.connect();
    sender.send("QPE/System", "reboot()", b"1").unwrap();
    sender.send("QPE/Other", "other()", b"2").unwrap();
    sender.send("QPE/System", END, b"").unwrap();
    sender.flush().unwrap();

    // `*` also matches the daemon's channel, where the patterns were announced.
    let got: Vec<(String, Vec<u8>)> = until_end(&mut both)
        .into_iter()
        .filter(|m| m.channel != SYSTEM_CHANNEL)
        .map(|m| (m.channel, m.data))
        .collect();
    assert_eq!(
        got,
        [
            ("QPE/System".to_owned(), b"1".to_vec()),
            ("QPE/Other".to_owned(), b"2".to_vec())
        ]
    );
}

#[test]
fn library_refuses_to_send_to_a_pattern() {
    let d = Daemon::start();
    let mut watcher = d.connect();
    watcher.subscribe("*").unwrap();
    let mut c = d.connect();
    for name in ["QPE/*", "cam*?", "*cam[0]"] {
        match c.send(name, "x()", b"") {
            Err(Error::WildcardSend(n)) => assert_eq!(n, name),
            other => panic!("send to {name:?}: expected WildcardSend, got {other:?}"),
        }
        match c.call(name, "x()", b"", WAIT) {
            Err(Error::WildcardSend(_)) => {}
            other => panic!("call to {name:?}: expected WildcardSend, got {other:?}"),
        }
    }
    c.send("plain", END, b"").unwrap();
    c.flush().unwrap();
    // Only the daemon's announcement of the watcher's own pattern arrived.
    let got = until_end(&mut watcher);
    assert!(got.iter().all(|m| m.channel == SYSTEM_CHANNEL), "{got:?}");
}

/// As in Qt's QCOP, only `*` makes a pattern: `cam?` and `QPE/cam[1]` are ordinary channels
/// that can be subscribed to and sent to, and a pattern counts as a channel of its own name
/// for `isRegistered`.
#[test]
fn question_marks_and_brackets_without_a_star_are_plain_channels() {
    let d = Daemon::start();
    let mut literal = d.connect();
    literal.subscribe("cam?").unwrap();
    literal.subscribe("QPE/cam[1]").unwrap();
    literal.subscribe("end").unwrap();
    let mut glob = d.connect();
    glob.subscribe("QPE/cam[0-9]*").unwrap();
    glob.subscribe("end").unwrap();
    let mut c = d.connect();
    for ch in ["cam?", "cam1", "QPE/cam[1]", "QPE/cam1"] {
        c.send(ch, "ping(QString)", ch.as_bytes()).unwrap();
    }
    c.send("end", END, b"").unwrap();
    c.flush().unwrap();
    let channels =
        |got: Vec<Message>| -> Vec<String> { got.into_iter().map(|m| m.channel).collect() };
    assert_eq!(channels(until_end(&mut literal)), ["cam?", "QPE/cam[1]"]);
    assert_eq!(channels(until_end(&mut glob)), ["QPE/cam1"]);

    assert!(c.is_registered("cam?").unwrap());
    assert!(!c.is_registered("cam1").unwrap());
    // The pattern is registered under its own text, and matches no other name here.
    assert!(c.is_registered("QPE/cam[0-9]*").unwrap());
    assert!(!c.is_registered("QPE/cam*").unwrap());
    assert!(!c.is_registered("QPE/cam1").unwrap());
    glob.unsubscribe("QPE/cam[0-9]*").unwrap();
    assert!(!c.is_registered("QPE/cam[0-9]*").unwrap());
}

#[test]
fn daemon_refuses_wildcard_send_and_keeps_the_connection() {
    let d = Daemon::start();
    let mut raw = RawClient::greeted(&d.socket);
    raw.send(&Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "QPE/*",
    });
    assert_eq!(raw.next(), Some(Got::Ok { seq: 1, value: 0 }));
    raw.send(&Frame::Send {
        seq: 2,
        ack: false,
        channel: "QPE/*",
        message: "x()",
        payload: b"",
    });
    match raw.next() {
        Some(Got::Error {
            seq: 2,
            fatal: false,
            code: ErrorCode::WildcardSend,
            ..
        }) => {}
        other => panic!("expected a WildcardSend error, got {other:?}"),
    }
    // Still served: a plain send matching its pattern comes back to it.
    raw.send(&Frame::Send {
        seq: 3,
        ack: false,
        channel: "QPE/Plain",
        message: "x()",
        payload: b"ok",
    });
    let before = raw.sync(4);
    assert_eq!(
        before,
        [Got::Message {
            channel: "QPE/Plain".into(),
            message: "x()".into(),
            payload: b"ok".to_vec()
        }]
    );
    let mut c = d.connect();
    assert_eq!(counter(&mut c, "requests_rejected"), 1);
}

// ----- registration ------------------------------------------------------------------------

#[test]
fn is_registered_counts_exact_subscribers_only() {
    let d = Daemon::start();
    let mut q = d.connect();
    assert!(!q.is_registered("reg/ch").unwrap());
    assert_eq!(q.registered_count("reg/ch").unwrap(), 0);

    let mut a = d.connect();
    a.subscribe("reg/ch").unwrap();
    assert!(q.is_registered("reg/ch").unwrap());
    assert_eq!(q.registered_count("reg/ch").unwrap(), 1);

    let mut b = d.connect();
    b.subscribe("reg/ch").unwrap();
    let mut p = d.connect();
    p.subscribe("reg/*").unwrap();
    p.subscribe("*").unwrap();
    assert_eq!(q.registered_count("reg/ch").unwrap(), 2);
    // Pattern subscribers do not register the channels they match.
    assert!(!q.is_registered("reg/other").unwrap());
    assert_eq!(q.registered_count("reg/other").unwrap(), 0);

    drop(b);
    common::eventually("b's subscription to go", || {
        q.registered_count("reg/ch").unwrap() == 1
    });
    a.unsubscribe("reg/ch").unwrap();
    assert!(!q.is_registered("reg/ch").unwrap());
}

#[test]
fn subscriptions_are_reference_counted_per_connection() {
    let d = Daemon::start();
    let mut q = d.connect();
    let mut a = d.connect();
    a.subscribe("ref/ch").unwrap();
    a.subscribe("ref/ch").unwrap();
    // One connection counts once, however often it subscribed.
    assert_eq!(q.registered_count("ref/ch").unwrap(), 1);
    a.unsubscribe("ref/ch").unwrap();
    assert!(
        q.is_registered("ref/ch").unwrap(),
        "one subscription is left"
    );

    let mut sender = d.connect();
    sender.send("ref/ch", "still()", b"").unwrap();
    sender.flush().unwrap();
    assert_eq!(recv(&mut a).message, "still()");

    a.unsubscribe("ref/ch").unwrap();
    assert!(!q.is_registered("ref/ch").unwrap());
    match a.unsubscribe("ref/ch") {
        Err(Error::NotSubscribed(c)) => assert_eq!(c, "ref/ch"),
        other => panic!("expected NotSubscribed, got {other:?}"),
    }
}

// ----- lifecycle notices -------------------------------------------------------------------

#[test]
fn channel_lifecycle_is_announced_on_the_system_channel() {
    let d = Daemon::start();
    let mut sys = d.connect();
    sys.subscribe(SYSTEM_CHANNEL).unwrap();
    let new = |ch: &str| ("newChannel(QString)".to_owned(), ch.to_owned());
    let removed = |ch: &str| ("removedChannel(QString)".to_owned(), ch.to_owned());

    let mut a = d.connect();
    a.subscribe("life/one").unwrap();
    assert_eq!(recv_notice(&mut sys), new("life/one"));

    // A second subscriber and a repeated subscription announce nothing. A pattern counts as
    // a channel of its own name, as in Qt's QCOP: its first subscriber announces it.
    let mut b = d.connect();
    b.subscribe("life/one").unwrap();
    a.subscribe("life/one").unwrap();
    b.subscribe("life/*").unwrap();
    assert_eq!(recv_notice(&mut sys), new("life/*"));
    a.subscribe("life/*").unwrap();
    b.subscribe("marker/1").unwrap();
    assert_eq!(recv_notice(&mut sys), new("marker/1"));
    a.unsubscribe("life/*").unwrap();

    // The channel stays while a subscriber is left.
    a.unsubscribe("life/one").unwrap();
    a.unsubscribe("life/one").unwrap();
    b.subscribe("marker/2").unwrap();
    assert_eq!(recv_notice(&mut sys), new("marker/2"));

    b.unsubscribe("life/one").unwrap();
    assert_eq!(recv_notice(&mut sys), removed("life/one"));

    // A client that goes away (its socket closes) loses every registration at once.
    let mut c = d.connect();
    c.subscribe("life/two").unwrap();
    assert_eq!(recv_notice(&mut sys), new("life/two"));
    drop(c);
    assert_eq!(recv_notice(&mut sys), removed("life/two"));

    drop(b);
    let mut left = vec![
        recv_notice(&mut sys),
        recv_notice(&mut sys),
        recv_notice(&mut sys),
    ];
    left.sort();
    assert_eq!(
        left,
        [removed("life/*"), removed("marker/1"), removed("marker/2")]
    );
}

// ----- ordering ----------------------------------------------------------------------------

#[test]
fn concurrent_senders_keep_their_order_and_every_receiver_sees_one_interleaving() {
    const SENDERS: u32 = 4;
    const EACH: u32 = 500;
    let d = Daemon::start();
    let mut receivers: Vec<Connection> = (0..3).map(|_| d.connect()).collect();
    for r in &mut receivers {
        r.subscribe("order/ch").unwrap();
    }
    let mut senders: Vec<Connection> = (0..SENDERS).map(|_| d.connect()).collect();
    let mut closer = d.connect();

    let logs: Vec<Vec<(u32, u32)>> = std::thread::scope(|s| {
        let readers: Vec<_> = receivers
            .iter_mut()
            .map(|r| {
                s.spawn(move || {
                    let log: Vec<(u32, u32)> = until_end(r)
                        .iter()
                        .map(|m| {
                            let v = &m.data;
                            let word =
                                |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().unwrap());
                            (word(0), word(4))
                        })
                        .collect();
                    assert_eq!(r.lost(), 0);
                    log
                })
            })
            .collect();
        let writers: Vec<_> = senders
            .iter_mut()
            .enumerate()
            .map(|(id, c)| {
                s.spawn(move || {
                    for n in 0..EACH {
                        let mut data = (id as u32).to_be_bytes().to_vec();
                        data.extend_from_slice(&n.to_be_bytes());
                        c.send("order/ch", "n(int,int)", &data).unwrap();
                    }
                    c.flush().unwrap();
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        // Every sender's flush returned: all their messages are routed before this one.
        closer.send("order/ch", END, b"").unwrap();
        closer.flush().unwrap();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });

    for (i, log) in logs.iter().enumerate() {
        assert_eq!(log.len(), (SENDERS * EACH) as usize, "receiver {i}");
        for sender in 0..SENDERS {
            let seen: Vec<u32> = log.iter().filter(|m| m.0 == sender).map(|m| m.1).collect();
            assert!(
                seen.iter().copied().eq(0..EACH),
                "receiver {i} saw sender {sender} out of order"
            );
        }
        assert!(
            log == &logs[0],
            "receiver {i} saw another interleaving than receiver 0"
        );
    }
}

// ----- request / response ------------------------------------------------------------------

/// A connection subscribed to `channel`, ready to answer calls.
fn responder(d: &Daemon, channel: &str) -> Connection {
    let mut r = d.connect();
    r.subscribe(channel).unwrap();
    r
}

fn next_call(r: &mut Connection) -> Message {
    let m = recv(r);
    assert!(m.is_call(), "expected a call, got {m:?}");
    m
}

#[test]
fn call_returns_the_responders_reply() {
    let d = Daemon::start();
    let mut r = responder(&d, "svc/echo");
    let mut caller = d.connect();
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            let m = next_call(&mut r);
            assert_eq!(
                (m.channel.as_str(), m.message.as_str()),
                ("svc/echo", "echo(QByteArray)")
            );
            let mut data = m.data.clone();
            data.reverse();
            r.reply(&m, "echoed(QByteArray)", &data).unwrap();
        });
        caller.call("svc/echo", "echo(QByteArray)", &[1, 2, 3], WAIT)
    })
    .unwrap();
    assert_eq!(reply.message, "echoed(QByteArray)");
    assert_eq!(reply.data, [3, 2, 1]);
    assert_eq!(counter(&mut caller, "calls_answered"), 1);
    // A plain send is not a call: there is nobody to reply to.
    caller.subscribe("plain").unwrap();
    caller.send("plain", "x()", b"").unwrap();
    let m = recv(&mut caller);
    assert!(matches!(caller.reply(&m, "y()", b""), Err(Error::NotACall)));
}

#[test]
fn reply_error_reaches_the_caller_as_remote_error() {
    let d = Daemon::start();
    let mut r = responder(&d, "svc/fail");
    let mut caller = d.connect();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let m = next_call(&mut r);
            r.reply_error(&m, "disk full").unwrap();
        });
        caller.call("svc/fail", "save()", b"", WAIT)
    });
    match result {
        Err(Error::Remote(text)) => assert_eq!(text, "disk full"),
        other => panic!("expected Remote, got {other:?}"),
    }
}

#[test]
fn call_without_subscriber_fails_with_no_responder() {
    let d = Daemon::start();
    let mut caller = d.connect();
    let mut pattern_only = d.connect();
    pattern_only.subscribe("other/*").unwrap();
    match caller.call("svc/none", "ping()", b"", WAIT) {
        Err(Error::NoResponder) => {}
        other => panic!("expected NoResponder, got {other:?}"),
    }
    assert_eq!(counter(&mut caller, "calls_no_responder"), 1);
    assert_eq!(counter(&mut caller, "calls_pending"), 0);
}

#[test]
fn call_times_out_when_nobody_answers() {
    let d = Daemon::start();
    let _silent = responder(&d, "svc/silent");
    let mut caller = d.connect();
    match caller.call("svc/silent", "ping()", b"", Duration::from_millis(300)) {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    common::eventually("the daemon to count the timeout", || {
        counter(&mut caller, "calls_timed_out") == 1
    });
    assert_eq!(counter(&mut caller, "calls_pending"), 0);
    // The connection is still usable.
    caller.flush().unwrap();
}

#[test]
fn call_fails_when_the_responder_disconnects_without_answering() {
    let d = Daemon::start();
    let mut r = responder(&d, "svc/quitter");
    let mut caller = d.connect();
    let result = std::thread::scope(|s| {
        s.spawn(move || {
            next_call(&mut r);
            drop(r);
        });
        caller.call("svc/quitter", "ping()", b"", WAIT)
    });
    match result {
        Err(Error::ResponderGone) => {}
        other => panic!("expected ResponderGone, got {other:?}"),
    }
    assert_eq!(counter(&mut caller, "calls_responder_gone"), 1);
}

#[test]
fn first_reply_wins() {
    let d = Daemon::start();
    let mut a = responder(&d, "svc/two");
    let mut b = responder(&d, "svc/two");
    let mut caller = d.connect();
    std::thread::scope(|s| {
        let call = s.spawn(|| caller.call("svc/two", "who()", b"", WAIT));
        let ma = next_call(&mut a);
        let mb = next_call(&mut b);
        a.reply(&ma, "me(QString)", b"a").unwrap();
        let reply = call.join().unwrap().unwrap();
        assert_eq!(reply.data, b"a");
        // The late answer is discarded by the daemon, not delivered.
        b.reply(&mb, "me(QString)", b"b").unwrap();
        b.flush().unwrap();
    });
    assert_eq!(counter(&mut caller, "replies_unmatched"), 1);
    assert_eq!(counter(&mut caller, "calls_answered"), 1);
    // Nothing stray arrived for the caller: its next call gets its own answer.
    std::thread::scope(|s| {
        s.spawn(|| {
            let m = next_call(&mut a);
            a.reply(&m, "second()", b"").unwrap();
        });
        s.spawn(|| {
            let m = next_call(&mut b);
            b.reply(&m, "second()", b"").unwrap();
        });
        let reply = caller.call("svc/two", "again()", b"", WAIT).unwrap();
        assert_eq!(reply.message, "second()");
    });
}

#[test]
fn call_counters_add_up() {
    let d = Daemon::start();
    let mut r = responder(&d, "svc/count");
    let mut caller = d.connect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..3 {
                let m = next_call(&mut r);
                if i == 2 {
                    r.reply_error(&m, "no").unwrap();
                } else {
                    r.reply(&m, "ok()", b"").unwrap();
                }
            }
            // The fourth call is never answered.
            next_call(&mut r);
        });
        caller.call("svc/count", "a()", b"", WAIT).unwrap();
        caller.call("svc/count", "b()", b"", WAIT).unwrap();
        assert!(matches!(
            caller.call("svc/count", "c()", b"", WAIT),
            Err(Error::Remote(_))
        ));
        let short = Duration::from_millis(300);
        assert!(matches!(
            caller.call("svc/count", "d()", b"", short),
            Err(Error::Timeout)
        ));
    });
    assert!(matches!(
        caller.call("svc/empty", "e()", b"", WAIT),
        Err(Error::NoResponder)
    ));
    common::eventually("the timeout to be counted", || {
        counter(&mut caller, "calls_timed_out") == 1
    });
    let stats = caller.stats(false).unwrap();
    let get = |k: &str| stats.get(k).unwrap();
    assert_eq!(get("calls"), 5);
    assert_eq!(get("calls_answered"), 3);
    assert_eq!(get("calls_no_responder"), 1);
    assert_eq!(get("calls_responder_gone"), 0);
    assert_eq!(get("calls_pending"), 0);
}

// ----- payload size ------------------------------------------------------------------------

fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn payload_over_the_limit_is_refused_locally_and_never_truncated() {
    let d = Daemon::start();
    let mut rx = d.connect();
    rx.subscribe("big").unwrap();
    let mut tx = d.connect();
    let max = tx.limits().max_payload as usize;
    assert_eq!(max, 64 * 1024, "the embedded default");

    let at_limit = pattern_bytes(max);
    tx.send("big", "blob(QByteArray)", &at_limit).unwrap();
    match tx.send("big", "blob(QByteArray)", &pattern_bytes(max + 1)) {
        Err(Error::TooLarge { size, max: m }) => assert_eq!((size, m as usize), (max + 1, max)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match tx.call("big", "blob(QByteArray)", &pattern_bytes(max + 1), WAIT) {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("expected TooLarge from call, got {other:?}"),
    }
    tx.send("big", END, b"").unwrap();
    tx.flush().unwrap();

    let got = until_end(&mut rx);
    assert_eq!(got.len(), 1, "only the message at the limit is delivered");
    assert!(got[0].data == at_limit, "the payload arrived altered");
}

#[test]
fn daemon_refuses_an_oversized_payload_that_bypasses_the_library() {
    let d = Daemon::start();
    let mut rx = d.connect();
    rx.subscribe("big").unwrap();
    let mut raw = RawClient::greeted(&d.socket);
    let payload = pattern_bytes(64 * 1024 + 1);
    raw.send(&Frame::Send {
        seq: 7,
        ack: false,
        channel: "big",
        message: "blob(QByteArray)",
        payload: &payload,
    });
    match raw.next() {
        Some(Got::Error {
            seq: 7,
            fatal: false,
            code: ErrorCode::TooLarge,
            ..
        }) => {}
        other => panic!("expected a TooLarge error, got {other:?}"),
    }
    // The connection is kept, and nothing (truncated or not) was delivered.
    raw.send(&Frame::Send {
        seq: 8,
        ack: false,
        channel: "big",
        message: END,
        payload: b"",
    });
    assert!(raw.sync(9).is_empty());
    assert!(until_end(&mut rx).is_empty());
}

#[test]
fn sixteen_mib_payload_is_delivered_intact_with_a_raised_limit() {
    let d = Daemon::start_with(
        "max_payload = 16777216\nmax_queue_bytes = 33554432\nmax_total_queue_bytes = 67108864",
    );
    let mut rx = d.connect();
    rx.subscribe("huge").unwrap();
    let mut tx = d.connect();
    assert_eq!(tx.limits().max_payload, 16 << 20);
    let data = pattern_bytes(16 << 20);
    tx.send("huge", "blob(QByteArray)", &data).unwrap();
    tx.send("huge", END, b"").unwrap();
    tx.flush().unwrap();
    let got = until_end(&mut rx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data.len(), data.len());
    assert!(got[0].data == data, "the payload arrived altered");
    assert_eq!(rx.lost(), 0);
}
