//! The `qcop` tool as old Qtopia / Qt Extended scripts call it: the old form with missing,
//! extra and malformed arguments, `-w` replies read with `$(...)`, `service send`, `list`,
//! `query`, `enum`, `-l USER`, the modifiers, and what `watch` and `wait` print for every
//! type (the original tool's format). Each test asserts stdout and the exit status a script
//! sees, and what the receiver got.

mod common;

use common::cli::{assert_run, finish, qcop, qstring, spawn, stderr, stdout, wait_registered};
use common::{eventually, Daemon, WAIT};
use qcop::{Connection, Message};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The next message on `conn`.
fn next(conn: &mut Connection) -> Message {
    conn.recv_timeout(WAIT)
        .expect("recv")
        .expect("a message within the wait limit")
}

/// A subscriber on `channel`, ready before this returns.
fn listener(d: &Daemon, channel: &str) -> Connection {
    let mut conn = d.connect();
    conn.subscribe(channel).unwrap();
    let mut probe = d.connect();
    wait_registered(&mut probe, channel);
    conn
}

#[test]
fn old_form_sends_a_null_string_for_a_missing_argument() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/System");
    let o = qcop(&d, &["QPE/System", "linkChanged(QString)"]);
    assert_run(&o, 0, "");
    assert!(
        stderr(&o).contains("argument 1 (QString) is missing; sending null"),
        "{}",
        stderr(&o)
    );
    let m = next(&mut rx);
    assert_eq!(m.message, "linkChanged(QString)");
    assert_eq!(m.data, [0xff, 0xff, 0xff, 0xff]);

    // A missing number is 0, a missing list empty.
    let o = qcop(&d, &["QPE/System", "f(int,QStringList)", "7"]);
    assert_run(&o, 0, "");
    let m = next(&mut rx);
    assert_eq!(m.data, [0, 0, 0, 7, 0, 0, 0, 0]);
}

/// Only `*` makes a pattern, as in the original: scripts send to `cam?` and `QPE/cam[1]`,
/// and watch them, as plain channels.
#[test]
fn question_marks_and_brackets_name_plain_channels() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/cam[1]");
    let o = qcop(&d, &["QPE/cam[1]", "shoot(int)", "3"]);
    assert_run(&o, 0, "");
    let m = next(&mut rx);
    assert_eq!(
        (m.channel.as_str(), m.data.as_slice()),
        ("QPE/cam[1]", &[0, 0, 0, 3][..])
    );

    let watch = spawn(&d, &["watch", "--count", "2", "cam?"]);
    let mut probe = d.connect();
    wait_registered(&mut probe, "cam?");
    for (ch, n) in [("cam1", "7"), ("cam?", "8"), ("camX", "9"), ("cam?", "10")] {
        assert_run(&qcop(&d, &["send", ch, "frame(int)", n]), 0, "");
    }
    assert_run(&finish(watch), 0, "cam?: frame( 8 )\ncam?: frame( 10 )\n");
}

#[test]
fn old_form_guesses_values_and_ignores_extra_arguments() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/System");
    let o = qcop(
        &d,
        &[
            "QPE/System",
            "f(int,uint,QByteArray)",
            "abc",
            "12",
            "de:ad-BE ef",
            "extra",
            "words",
        ],
    );
    assert_run(&o, 0, "");
    let err = stderr(&o);
    assert!(err.contains("\"abc\" is not a number; sending 0"), "{err}");
    assert!(err.contains("ignoring [\"extra\", \"words\"]"), "{err}");
    assert!(err.contains("sending 0xdeadbeef"), "{err}");
    let m = next(&mut rx);
    assert_eq!(
        m.data,
        [0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]
    );

    // A bool must still be one, as in the original.
    let o = qcop(&d, &["QPE/System", "setLight(bool)", "maybe"]);
    assert_run(&o, 1, "");
    // With --strict the guesses are usage errors.
    let o = qcop(&d, &["--strict", "QPE/System", "f(int)", "abc"]);
    assert_run(&o, 2, "");
    let o = qcop(&d, &["--strict", "QPE/System", "f(int)", "1", "2"]);
    assert_run(&o, 2, "");
}

/// Answers `request` on `channel` with `reply` and `payload` on `reply_channel`, once the
/// request came.
fn responder(
    d: &Daemon,
    channel: &str,
    request: &str,
    reply_channel: &str,
    reply: &str,
    payload: Vec<u8>,
) -> thread::JoinHandle<()> {
    let mut conn = listener(d, channel);
    let (reply_channel, reply, request) = (
        reply_channel.to_owned(),
        reply.to_owned(),
        request.to_owned(),
    );
    thread::spawn(move || loop {
        if next(&mut conn).message == request {
            conn.send(&reply_channel, &reply, &payload).unwrap();
            conn.flush().unwrap();
            return;
        }
    })
}

#[test]
fn old_form_reply_prints_one_argument_a_line_for_command_substitution() {
    let d = Daemon::start();
    let mut payload = 42i32.to_be_bytes().to_vec();
    payload.extend_from_slice(&qstring("hi there"));
    payload.push(1);
    let t = responder(
        &d,
        "QPE/Modem",
        "query()",
        "QPE/Modem/reply",
        "reply(int,QString,bool)",
        payload,
    );
    let o = qcop(
        &d,
        &[
            "QPE/Modem",
            "query()",
            "-w",
            "QPE/Modem/reply",
            "reply(int,QString,bool)",
            "20000",
        ],
    );
    t.join().unwrap();
    assert_run(&o, 0, "42\nhi there\ntrue\n");
}

#[test]
fn old_form_wait_timeouts_as_the_original_read_them() {
    let d = Daemon::start();
    for timeout in ["50", "soon"] {
        let o = qcop(&d, &["QPE/A", "ping()", "-w", "QPE/B", "pong()", timeout]);
        assert_run(&o, 1, "");
        assert!(
            stderr(&o).contains("timed out waiting for QPE/B pong()"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn old_form_w_counts_only_right_after_the_arguments() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/A");
    // The argument is missing, so '-w' is the argument: it is sent and nothing is waited
    // for, as with the original.
    let o = qcop(&d, &["QPE/A", "open(QString)", "-w", "QPE/B", "done()"]);
    assert_run(&o, 0, "");
    assert_eq!(next(&mut rx).data, qstring("-w"));
    // An extra word before -w: ignored, and so is the wait.
    let o = qcop(&d, &["QPE/A", "ping()", "x", "-w", "QPE/B", "done()"]);
    assert_run(&o, 0, "");
    assert!(
        stderr(&o).contains("and so the -w after them"),
        "{}",
        stderr(&o)
    );
    assert_eq!(next(&mut rx).message, "ping()");
}

#[test]
fn watch_prints_what_the_original_printed() {
    let d = Daemon::start();
    let mut conn = d.connect();
    // The pattern first: qcopd handles the watcher's subscriptions in order, so once
    // QPE/W is registered the pattern is in place too.
    let child = spawn(&d, &["watch", "--count", "6", "QPE/P/*", "QPE/W"]);
    wait_registered(&mut conn, "QPE/W");
    let mut args = 5i32.to_be_bytes().to_vec();
    args.extend_from_slice(&qstring("say \"hi\"\n"));
    args.push(1);
    args.extend_from_slice(&[0, 0, 0, 2, 0xca, 0xfe]);
    args.extend_from_slice(&[0, 0, 0, 2]);
    args.extend_from_slice(&qstring("a"));
    args.extend_from_slice(&qstring("b"));
    conn.send(
        "QPE/W",
        "all(int,QString,bool,QByteArray,QStringList)",
        &args,
    )
    .unwrap();
    conn.send("QPE/W", "ping()", &[]).unwrap();
    // The 4-byte bool the original tool, Qtopia 1/2 and Opie wrote.
    conn.send("QPE/W", "setLight(bool,int)", &[0, 0, 0, 1, 0, 0, 0, 9])
        .unwrap();
    let mut when = 2_460_432u32.to_be_bytes().to_vec(); // 2024-05-01
    when.extend_from_slice(&(45_296_000u32).to_be_bytes()); // 12:34:56
    when.push(1);
    when.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
    when.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
    conn.send("QPE/P/x", "at(QDateTime,QUuid)", &when).unwrap();
    conn.send("QPE/W", "odd(int,QPoint,int)", &[0, 0, 0, 1])
        .unwrap();
    conn.send("QPE/W", "Time::editTime()", &[]).unwrap();
    conn.flush().unwrap();
    assert_run(
        &finish(child),
        0,
        "QPE/W: all( 5, \"say \\22hi\\22\\0A\", true, \"CAFE\", [\"a\",\"b\"] )\n\
         QPE/W: ping()\n\
         QPE/W: setLight( true, 9 )\n\
         QPE/P/x: at( \"2024-05-01T12:34:56\", {12345678-9abc-def0-1234-56789abcdef0} )\n\
         QPE/W: odd( 1, ? QPoint, int )\n\
         QPE/W: Time::editTime()\n",
    );
}

#[test]
fn timeout_modifier_ends_a_watch_under_steady_traffic() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let child = spawn(&d, &["timeout", "300", "watch", "QPE/busy"]);
    wait_registered(&mut conn, "QPE/busy");
    // Messages keep coming faster than the limit: an idle limit would never end.
    let sender = {
        let stop = Arc::clone(&stop);
        let mut conn = d.connect();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                conn.send("QPE/busy", "tick()", &[]).unwrap();
                conn.flush().unwrap();
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let o = finish(child);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).lines().all(|l| l == "QPE/busy: tick()"));
}

#[test]
fn empty_commands_do_nothing_and_succeed() {
    // Without a daemon, too: nothing needs one.
    let dir = common::temp_dir("empty");
    for args in [
        &["timeout", "5"][..],
        &["hex", "--", "--"],
        &["enum", "Mode"],
    ] {
        let o = finish(
            std::process::Command::new(common::program("qcop"))
                .args(args)
                .env("QCOP_SOCKET", dir.join("missing.sock"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        assert_run(&o, 0, "");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn separator_resets_every_modifier() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let child = spawn(
        &d,
        &[
            "nohex",
            "wait",
            "QPE/b",
            "f(QByteArray)",
            "--",
            "wait",
            "QPE/b",
            "f(QByteArray)",
        ],
    );
    wait_registered(&mut conn, "QPE/b");
    for _ in 0..2 {
        conn.send("QPE/b", "f(QByteArray)", &[0, 0, 0, 2, b'h', b'i'])
            .unwrap();
    }
    conn.flush().unwrap();
    // nohex for the first wait only; the second prints hex, the default.
    assert_run(&finish(child), 0, "hi\n6869\n");
}

const SERVICES: &str = "[[service]]\nname = \"RotationManager\"\nchannel = \"QPE/Application/rotation\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 0\"]\n\n[[service]]\nname = \"Time\"\nchannel = \"QPE/Application/clock\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 0\"]\n";

#[test]
fn service_send_goes_to_the_services_channel_with_its_scope() {
    let d = Daemon::start_with(SERVICES);
    // The program runs (is subscribed), so nothing is started.
    let mut rx = listener(&d, "QPE/Application/rotation");
    let o = qcop(
        &d,
        &[
            "service",
            "send",
            "RotationManager",
            "setCurrentRotation(int)",
            "90",
        ],
    );
    assert_run(&o, 0, "");
    let m = next(&mut rx);
    assert_eq!(
        (m.channel.as_str(), m.message.as_str(), m.data.as_slice()),
        (
            "QPE/Application/rotation",
            "RotationManager::setCurrentRotation(int)",
            &[0, 0, 0, 90][..]
        )
    );
    // A leading '::' sends no scope; '--' ends the service modifier.
    let o = qcop(
        &d,
        &[
            "service",
            "send",
            "RotationManager",
            "::reset()",
            "--",
            "send",
            "QPE/Application/rotation",
            "plain()",
        ],
    );
    assert_run(&o, 0, "");
    assert_eq!(next(&mut rx).message, "reset()");
    assert_eq!(next(&mut rx).message, "plain()");
    // A service qcopd does not know.
    let o = qcop(&d, &["service", "send", "Nothing", "f()"]);
    assert_run(&o, 1, "");
    assert!(stderr(&o).contains("no service named \"Nothing\""));
}

#[test]
fn list_prints_services_and_channels_and_fails_without_the_daemon() {
    let d = Daemon::start_with(SERVICES);
    let o = qcop(&d, &["list"]);
    assert_run(
        &o,
        0,
        "RotationManager\tQPE/Application/rotation\nTime\tQPE/Application/clock\n",
    );
    // `qcop list >/dev/null 2>&1` is how start-up scripts wait for the daemon.
    let dir = common::temp_dir("nolist");
    let o = finish(
        std::process::Command::new(common::program("qcop"))
            .arg("list")
            .env("QCOP_SOCKET", dir.join("missing.sock"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _ = std::fs::remove_dir_all(dir);
    assert_run(&o, 1, "");
}

#[test]
fn query_prints_each_supported_message_once() {
    let d = Daemon::start_with(SERVICES);
    let mut adaptor = listener(&d, "QPE/Application/clock");
    let answer = thread::spawn(move || {
        let m = next(&mut adaptor);
        assert_eq!(m.message, "__query_qcop_messages(QString,QString)");
        let values = qcop::datastream::decode_args(
            &[
                qcop::datastream::ArgType::QString,
                qcop::datastream::ArgType::QString,
            ],
            &m.data,
        )
        .unwrap();
        let [qcop::datastream::Value::QString(Some(prefix)), qcop::datastream::Value::QString(Some(reply))] =
            values.as_slice()
        else {
            panic!("{values:?}");
        };
        for name in ["Time::editTime()", "Time::editTime()", "setTime(QDateTime)"] {
            adaptor
                .send(reply, "queryResponse(QString)", &qstring(name))
                .unwrap();
        }
        adaptor.flush().unwrap();
        prefix.clone()
    });
    let o = qcop(&d, &["service", "query", "Time"]);
    assert_eq!(answer.join().unwrap(), "Time::");
    assert_run(&o, 0, "Time::editTime()\nsetTime(QDateTime)\n");

    // Nobody answers: nothing printed once the time is up, still a success.
    let o = qcop(&d, &["timeout", "100", "query", "QPE/Nobody"]);
    assert_run(&o, 0, "");
}

#[test]
fn enum_types_travel_as_int() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/Phone");
    let o = qcop(
        &d,
        &[
            "enum",
            "QPhone::Mode",
            "--",
            "send",
            "QPE/Phone",
            "setMode(QPhone::Mode)",
            "2",
        ],
    );
    assert_run(&o, 0, "");
    let m = next(&mut rx);
    assert_eq!(
        (m.message.as_str(), m.data.as_slice()),
        ("setMode(QPhone::Mode)", &[0, 0, 0, 2][..])
    );
    // Without the declaration the type is unknown: a usage error, as in the original.
    let o = qcop(&d, &["send", "QPE/Phone", "setMode(QPhone::Mode)", "2"]);
    assert_run(&o, 1, "");

    let mut conn = d.connect();
    let child = spawn(
        &d,
        &["enum", "Mode", "--", "watch", "--count", "1", "QPE/E"],
    );
    wait_registered(&mut conn, "QPE/E");
    conn.send("QPE/E", "set(Mode)", &[0, 0, 0, 3]).unwrap();
    conn.flush().unwrap();
    assert_run(&finish(child), 0, "QPE/E: set( 3 )\n");
}

#[test]
fn new_types_are_sent_from_the_command_line() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/T");
    let uuid = "{12345678-9abc-def0-1234-56789abcdef0}";
    let id = format!("{uuid}:7");
    let o = qcop(
        &d,
        &[
            "send",
            "QPE/T",
            "f(QDateTime,QUuid,QUniqueId,QContentIdList)",
            "2024-05-01T12:34:56",
            uuid,
            &id,
            "1:42",
        ],
    );
    assert_run(&o, 0, "");
    let m = next(&mut rx);
    let bytes: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
    let mut expected = 2_460_432u32.to_be_bytes().to_vec();
    expected.extend_from_slice(&45_296_000u32.to_be_bytes());
    expected.push(0xFF); // local time, as Qt 5 and 6 write it with Qt 4 stream versions
    expected.extend_from_slice(&bytes);
    expected.extend_from_slice(&bytes);
    expected.extend_from_slice(&bytes);
    expected.extend_from_slice(&bytes);
    expected.extend_from_slice(&[0, 0, 0, 7]);
    expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    expected.extend_from_slice(&42u64.to_be_bytes());
    assert_eq!(m.data, expected);
}

#[test]
fn wait_decodes_edge_cases_as_qt_does() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        // A null string inside a list is kept.
        (
            "l(QStringList)",
            [&[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff][..], &qstring("a")].concat(),
            "[null, \"a\"]\n",
        ),
        // An unpaired surrogate is kept.
        (
            "s(QString)",
            vec![0, 0, 0, 2, 0xd8, 0x00],
            "\"\\u{d800}\"\n",
        ),
        // Trailing bytes are ignored.
        ("n(int)", vec![0, 0, 0, 7, 0xee, 0xee], "7\n"),
        // A QVariant holding an int, and a list of variants.
        ("v(QVariant)", vec![0, 0, 0, 2, 0, 0, 0, 0, 5], "5\n"),
        (
            "vl(QVariant)",
            [
                &[0, 0, 0, 9, 0, 0, 0, 0, 2, 0, 0, 0, 10, 0][..],
                &qstring("x"),
                &[0, 0, 0, 1, 0, 1],
            ]
            .concat(),
            "[\"x\", true]\n",
        ),
    ];
    for (message, payload, expected) in cases {
        eventually("the last waiter left", || {
            !conn.is_registered("QPE/edge").unwrap()
        });
        let child = spawn(&d, &["--format", "rich", "wait", "QPE/edge", message]);
        wait_registered(&mut conn, "QPE/edge");
        conn.send("QPE/edge", message, &payload).unwrap();
        conn.flush().unwrap();
        assert_run(&finish(child), 0, expected);
    }
    // The classic format prints the null element as an empty one, as the original.
    eventually("the last waiter left", || {
        !conn.is_registered("QPE/edge").unwrap()
    });
    let child = spawn(&d, &["wait", "QPE/edge", "l(QStringList)"]);
    wait_registered(&mut conn, "QPE/edge");
    let payload = [&[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff][..], &qstring("a")].concat();
    conn.send("QPE/edge", "l(QStringList)", &payload).unwrap();
    conn.flush().unwrap();
    assert_run(&finish(child), 0, ",a\n");
}

#[test]
fn l_option_runs_as_the_user() {
    let d = Daemon::start();
    let mut rx = listener(&d, "QPE/L");
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("this user has a name")
        .name;
    let o = qcop(&d, &["-l", &me, "QPE/L", "hello(QString)", "x"]);
    assert_run(&o, 0, "");
    assert_eq!(next(&mut rx).message, "hello(QString)");
    let o = qcop(&d, &["-l", "no-such-user-here", "QPE/L", "hello()"]);
    assert_run(&o, 1, "");
    assert!(stderr(&o).contains("unknown user"), "{}", stderr(&o));
}
