//! The client library's fast path: buffered sends (when they go out, what happens to them
//! on a reconnect) and the borrowing receive.

mod common;

use common::{recv, Daemon, WAIT};
use qcop::wire::ErrorCode;
use qcop::{Connection, Error, MessageRef};

/// A buffer no test fills by accident.
const BIG: usize = 64 * 1024;

fn buffered(d: &Daemon) -> Connection {
    Connection::connect(&d.options().send_buffer(BIG)).unwrap()
}

fn subscriber(d: &Daemon, channel: &str) -> Connection {
    let mut s = d.connect();
    s.subscribe(channel).unwrap();
    s
}

#[test]
fn a_buffered_send_waits_in_the_connection_until_a_request_writes_it() {
    let d = Daemon::start();
    let mut sub = subscriber(&d, "buf/req");
    let mut p = buffered(&d);
    p.send("buf/req", "one()", b"1").unwrap();
    assert!(p.buffered() > 0, "a small send stays in the buffer");
    // Any request writes the buffer first; the daemon routes in order, so once the answer
    // is back the send has reached the subscriber's queue.
    assert!(p.is_registered("buf/req").unwrap());
    assert_eq!(p.buffered(), 0);
    let m = sub
        .try_recv()
        .unwrap()
        .expect("routed before the request's answer");
    assert_eq!(
        (m.message.as_str(), m.data.as_slice()),
        ("one()", &b"1"[..])
    );
}

#[test]
fn dropping_a_buffering_connection_delivers_its_sends() {
    let d = Daemon::start();
    let mut sub = subscriber(&d, "buf/drop");
    {
        let mut p = buffered(&d);
        for i in 0..100u32 {
            p.send("buf/drop", "n(int)", &i.to_be_bytes()).unwrap();
        }
        assert!(p.buffered() > 0);
    }
    for i in 0..100u32 {
        assert_eq!(recv(&mut sub).data, i.to_be_bytes());
    }
}

#[test]
fn a_full_buffer_is_written_without_any_other_call() {
    let d = Daemon::start();
    let mut sub = subscriber(&d, "buf/full");
    let mut p = Connection::connect(&d.options().send_buffer(1000)).unwrap();
    let mut sent = 0u32;
    while sent == 0 || p.buffered() > 0 {
        p.send("buf/full", "n(int)", &sent.to_be_bytes()).unwrap();
        sent += 1;
        assert!(
            p.buffered() < 1000,
            "the buffer never holds more than its size"
        );
    }
    assert!(sent > 1, "the first send was buffered");
    // The connection is kept open and idle: the sends were written when the buffer filled.
    for i in 0..sent {
        assert_eq!(recv(&mut sub).data, i.to_be_bytes());
    }
    assert_eq!(p.buffered(), 0);
}

#[test]
fn write_buffered_hands_sends_to_the_daemon_without_a_round_trip() {
    let d = Daemon::start();
    let mut sub = subscriber(&d, "buf/write");
    let mut p = buffered(&d);
    p.send("buf/write", "a()", b"").unwrap();
    p.write_buffered().unwrap();
    assert_eq!(p.buffered(), 0);
    // Nothing else happens on `p` from here: the message arrives all the same.
    assert_eq!(recv(&mut sub).message, "a()");
    // Turning buffering off writes what is buffered too.
    p.send("buf/write", "b()", b"").unwrap();
    assert!(p.buffered() > 0);
    p.set_send_buffer(0).unwrap();
    assert_eq!(p.buffered(), 0);
    assert_eq!(recv(&mut sub).message, "b()");
    p.send("buf/write", "c()", b"").unwrap();
    assert_eq!(
        p.buffered(),
        0,
        "unbuffered again: each send is written at once"
    );
    assert_eq!(recv(&mut sub).message, "c()");
}

#[test]
fn receiving_on_a_buffering_connection_writes_its_sends_first() {
    let d = Daemon::start();
    let mut p = buffered(&d);
    p.subscribe("buf/self").unwrap();
    p.send("buf/self", "echo()", b"e").unwrap();
    assert!(p.buffered() > 0);
    // Waiting for its own message would never end if the receive did not write the send.
    let m = recv(&mut p);
    assert_eq!(m.data, b"e");
    // The same for the non-blocking and borrowing receives.
    p.send("buf/self", "again()", b"").unwrap();
    let mut seen = None;
    common::eventually("the connection's own send to come back", || {
        seen = p.try_recv_borrowed().unwrap().map(|m| m.message.to_owned());
        seen.is_some()
    });
    assert_eq!(seen.as_deref(), Some("again()"));
}

#[test]
fn errors_the_daemon_reports_for_buffered_sends_come_back_from_flush() {
    let d = Daemon::start();
    // A monitor may not send: the daemon answers each send with an error frame.
    let mut m = buffered(&d);
    m.monitor(&[]).unwrap();
    m.send("buf/mon", "a()", b"").unwrap();
    m.send("buf/mon", "b()", b"").unwrap();
    assert!(m.buffered() > 0);
    assert!(matches!(
        m.flush(),
        Err(Error::Refused {
            code: ErrorCode::MonitorConnection,
            ..
        })
    ));
    // Reported once: the next flush has nothing to say.
    m.flush().unwrap();
    // What the library checks itself fails the send at once and buffers nothing.
    let too_big = vec![0u8; m.limits().max_payload as usize + 1];
    assert!(matches!(
        m.send("buf/mon", "big()", &too_big),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(m.buffered(), 0);
}

#[test]
fn buffered_sends_not_yet_written_reach_the_restarted_daemon() {
    let mut d = Daemon::start();
    let mut sub = Connection::connect(&d.options().reconnect(true)).unwrap();
    sub.subscribe("buf/re").unwrap();
    let mut p = Connection::connect(&d.options().reconnect(true).send_buffer(BIG)).unwrap();
    p.send("buf/re", "before()", b"").unwrap();
    p.flush().unwrap();
    assert_eq!(recv(&mut sub).message, "before()");

    d.kill();
    d.restart();
    // The subscriber reconnects and re-registers (its request retries on the new daemon).
    assert!(sub.is_registered("buf/re").unwrap());
    for i in 0..10u32 {
        p.send("buf/re", "after(int)", &i.to_be_bytes()).unwrap();
    }
    assert!(p.buffered() > 0);
    // The flush finds the old connection gone, reconnects and writes the buffered sends to
    // the new daemon, then waits until it routed them.
    p.flush().unwrap();
    assert_eq!(p.reconnects(), 1);
    for i in 0..10u32 {
        let m = recv(&mut sub);
        assert_eq!(
            (m.message.as_str(), m.data),
            ("after(int)", i.to_be_bytes().to_vec())
        );
    }
}

#[test]
fn without_reconnect_a_lost_daemon_fails_the_call_that_writes() {
    let mut d = Daemon::start();
    let mut p = buffered(&d);
    p.send("buf/gone", "x()", b"").unwrap();
    p.flush().unwrap();
    d.kill();
    p.send("buf/gone", "y()", b"").unwrap();
    let err = p.write_buffered().unwrap_err();
    assert!(err.is_disconnect(), "got {err}");
    assert_eq!(
        p.buffered(),
        0,
        "nothing is kept for a connection that cannot come back"
    );
}

#[test]
fn the_borrowing_receive_returns_every_message_in_order_with_the_owned_one() {
    let d = Daemon::start();
    let mut sub = d.connect();
    sub.subscribe("borrow/*").unwrap();
    sub.subscribe_with_credentials("borrow/cred").unwrap();
    let mut p = d.connect();
    for i in 0..20u32 {
        p.send("borrow/a", "n(int)", &i.to_be_bytes()).unwrap();
    }
    p.send("borrow/cred", "who()", b"").unwrap();
    p.flush().unwrap();
    // A request on the subscriber: messages that arrive while it waits for the answer are
    // kept in order with those still unread.
    assert!(sub.is_registered("borrow/a").is_ok());
    for i in 0..20u32 {
        if i % 3 == 0 {
            let m = sub.recv_timeout(WAIT).unwrap().expect("owned receive");
            assert_eq!(m.data, i.to_be_bytes());
        } else {
            let m: MessageRef<'_> = sub.recv_timeout_borrowed(WAIT).unwrap().expect("borrowed");
            assert_eq!((m.channel, m.message), ("borrow/a", "n(int)"));
            assert_eq!(m.data, i.to_be_bytes());
            assert!(!m.is_call());
            assert_eq!(m.sender(), None);
        }
    }
    let m = sub.recv_borrowed().unwrap();
    assert_eq!(m.channel, "borrow/cred");
    let who = m
        .sender()
        .expect("credentials on a credentials subscription");
    assert_eq!(who.pid, std::process::id());
    assert_eq!(m.to_message().sender, Some(who));
    assert!(sub.try_recv_borrowed().unwrap().is_none());
}

#[test]
fn a_call_received_by_the_borrowing_receive_can_be_answered() {
    let d = Daemon::start();
    let mut responder = subscriber(&d, "borrow/svc");
    let socket_opts = d.options();
    std::thread::scope(|s| {
        let caller = s.spawn(move || {
            let mut c = Connection::connect(&socket_opts).unwrap();
            c.call("borrow/svc", "ping()", b"p", WAIT).unwrap()
        });
        let call = {
            let m = responder.recv_borrowed().unwrap();
            assert!(m.is_call());
            m.to_message()
        };
        responder.reply(&call, "pong()", b"q").unwrap();
        let reply = caller.join().unwrap();
        assert_eq!(
            (reply.message.as_str(), reply.data),
            ("pong()", b"q".to_vec())
        );
    });
}
