//! The `qcop` command-line tool against a real daemon: what a user sees (output lines and
//! exit statuses). Long-running commands are known to be ready by asking the daemon
//! (`is_registered`, `channels`), never by sleeping.

mod common;

use common::cli::{assert_run, finish, qcop, qstring, spawn, stderr, stdout, wait_registered};
use common::{eventually, Daemon, WAIT};
use qcop::Connection;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

fn wait_pattern(conn: &mut Connection, pattern: &str) {
    eventually(&format!("pattern {pattern} is subscribed"), || {
        let list = conn.channels().expect("channels");
        list.iter().any(|c| c.pattern && c.name == pattern)
    });
}

/// A `qcop` command whose socket does not exist (for errors found before connecting, and
/// for the daemon not running).
fn qcop_without_daemon(args: &[&str]) -> Output {
    let dir = common::temp_dir("nodaemon");
    let child = Command::new(common::program("qcop"))
        .args(args)
        .env("QCOP_SOCKET", dir.join("missing.sock"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn qcop");
    let out = finish(child);
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[test]
fn send_encodes_every_argument_type() {
    let d = Daemon::start();
    let mut conn = d.connect();
    conn.subscribe("test/types").unwrap();
    let sig =
        "all(int,uint,long,ulong,qlonglong,qulonglong,bool,double,QString,QByteArray,QStringList)";
    let o = qcop(
        &d,
        &[
            "send",
            "test/types",
            sig,
            "-5",
            "4000000000",
            "-9000000000",
            "18000000000000000000",
            "-1",
            "0x1122334455667788",
            "true",
            "1.5",
            "héllo",
            "0xdeadbeef",
            "a,bc",
        ],
    );
    assert_run(&o, 0, "");
    assert_eq!(stderr(&o), "");

    let mut expected = Vec::new();
    expected.extend_from_slice(&(-5i32).to_be_bytes());
    expected.extend_from_slice(&4_000_000_000u32.to_be_bytes());
    expected.extend_from_slice(&(-9_000_000_000i64).to_be_bytes());
    expected.extend_from_slice(&18_000_000_000_000_000_000u64.to_be_bytes());
    expected.extend_from_slice(&[0xff; 8]);
    expected.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    expected.push(1);
    expected.extend_from_slice(&[0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0, 0, 0, 10, 0, b'h', 0, 0xe9, 0, b'l', 0, b'l', 0, b'o']);
    expected.extend_from_slice(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
    expected.extend_from_slice(&[0, 0, 0, 2]);
    expected.extend_from_slice(&[0, 0, 0, 2, 0, b'a']);
    expected.extend_from_slice(&[0, 0, 0, 4, 0, b'b', 0, b'c']);

    let msg = conn
        .recv_timeout(WAIT)
        .unwrap()
        .expect("the message arrives");
    assert_eq!(msg.channel, "test/types");
    assert_eq!(msg.message, sig);
    assert_eq!(msg.data, expected);
    assert!(!msg.is_call());
}

#[test]
fn send_normalizes_the_signature() {
    let d = Daemon::start();
    let mut conn = d.connect();
    conn.subscribe("test/norm").unwrap();
    let o = qcop(
        &d,
        &[
            "send",
            "test/norm",
            " note( const QString &, unsigned int )",
            "x",
            "7",
        ],
    );
    assert_run(&o, 0, "");
    let msg = conn
        .recv_timeout(WAIT)
        .unwrap()
        .expect("the message arrives");
    assert_eq!(msg.message, "note(QString,uint)");
    let mut expected = qstring("x");
    expected.extend_from_slice(&7u32.to_be_bytes());
    assert_eq!(msg.data, expected);
}

#[test]
fn send_refused_by_the_daemon_limit_fails() {
    let d = Daemon::start_with("max_payload = 16\n");
    let o = qcop(
        &d,
        &["send", "test/big", "blob(QByteArray)", &"ab".repeat(32)],
    );
    assert_run(&o, 1, "");
    let err = stderr(&o);
    assert!(err.starts_with("qcop: "), "{err}");
    assert!(
        err.contains("exceeds the daemon's limit of 16 bytes"),
        "{err}"
    );
}

#[test]
fn watch_rich_format_prints_one_decoded_line_per_message() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let child = spawn(
        &d,
        &[
            "--format", "rich", "watch", "--count", "5", "test/w", "test/p/*",
        ],
    );
    wait_registered(&mut conn, "test/w");
    wait_pattern(&mut conn, "test/p/*");

    conn.send("test/w", "setVolume(int)", &42i32.to_be_bytes())
        .unwrap();
    let mut note = qstring("hi there");
    note.push(1);
    conn.send("test/p/sub", "note(QString,bool)", &note)
        .unwrap();
    conn.send("test/w", "blob(QVariant)", &[1, 2]).unwrap();
    conn.send("test/w", "short(int)", &[1]).unwrap();
    // flush: the daemon has routed the sends above before the call below starts.
    conn.flush().unwrap();
    let caller = d.connect();
    let call = thread::spawn(move || {
        let mut caller = caller;
        // Nobody answers: the watcher only prints calls. The outcome does not matter.
        let _ = caller.call(
            "test/w",
            "ask(int)",
            &7i32.to_be_bytes(),
            Duration::from_millis(500),
        );
    });

    let o = finish(child);
    call.join().unwrap();
    assert_run(
        &o,
        0,
        "test/w setVolume(int) 42\n\
         test/p/sub note(QString,bool) \"hi there\" true\n\
         test/w blob(QVariant) 0x0102\n\
         test/w short(int) 0x01\n\
         test/w ask(int) 7 [call]\n",
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn watch_nohex_modifier_and_idle_timeout() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let mut payload = 42i32.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
    // nohex changes how byte arrays print, and nothing else.
    for (args, expected) in [
        (
            &[
                "--format", "rich", "nohex", "watch", "--count", "1", "test/h",
            ][..],
            "test/h f(int,QByteArray) 42 \"hi\"\n",
        ),
        (
            &["--format", "rich", "hex", "watch", "--count", "1", "test/h"][..],
            "test/h f(int,QByteArray) 42 0x6869\n",
        ),
        (
            &["nohex", "watch", "--count", "1", "test/h"][..],
            "test/h: f( 42, \"hi\" )\n",
        ),
    ] {
        let child = spawn(&d, args);
        wait_registered(&mut conn, "test/h");
        conn.send("test/h", "f(int,QByteArray)", &payload).unwrap();
        conn.flush().unwrap();
        assert_run(&finish(child), 0, expected);
        eventually("the watcher left", || {
            !conn.is_registered("test/h").unwrap()
        });
    }

    // No message at all: --timeout ends the watch successfully.
    let o = qcop(&d, &["watch", "--timeout", "1", "test/quiet"]);
    assert_run(&o, 0, "");
}

#[test]
fn watch_into_a_reader_that_closes_early_exits_quietly() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let mut child = spawn(&d, &["watch", "test/pipe"]);
    wait_registered(&mut conn, "test/pipe");
    conn.send("test/pipe", "first()", &[]).unwrap();
    conn.flush().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "test/pipe: first()\n");
    // Like `qcop watch | head -1`: the reader goes away, the next line hits a closed pipe.
    drop(reader);
    // A process forked meanwhile by another test thread holds a copy of the read end until
    // it execs, and a line written then still succeeds; so keep lines coming until qcop
    // exits.
    eventually("qcop watch exits after its reader left", || {
        conn.send("test/pipe", "more()", &[]).unwrap();
        conn.flush().unwrap();
        child.try_wait().unwrap().is_some()
    });
    let o = finish(child);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn watch_reports_messages_the_daemon_dropped() {
    const SENT: usize = 3000;
    let d = Daemon::start_with("max_payload = 1024\nmax_queue_bytes = 4096\n");
    let mut conn = d.connect();
    let child = spawn(&d, &["watch", "--timeout", "5000", "test/slow"]);
    wait_registered(&mut conn, "test/slow");
    // A stopped reader is the slowest consumer: its socket buffer and queue fill up and the
    // daemon drops the oldest messages.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let filler = "x".repeat(400);
    for i in 0..SENT {
        let mut payload = (i as i32).to_be_bytes().to_vec();
        payload.extend_from_slice(&qstring(&filler));
        conn.send("test/slow", "s(int,QString)", &payload).unwrap();
    }
    conn.flush().unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();

    let o = finish(child);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let lost: usize = stderr(&o)
        .lines()
        .map(|l| {
            let n = l
                .strip_prefix("# lost ")
                .and_then(|r| r.strip_suffix(" messages"));
            n.and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("unexpected stderr line {l:?}"))
        })
        .sum();
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lost > 0, "nothing was dropped");
    assert_eq!(lines.len() + lost, SENT);
    // Drop-oldest keeps the newest message.
    assert_eq!(
        lines.last().copied(),
        Some(format!("test/slow: s( {}, \"{filler}\" )", SENT - 1).as_str())
    );
}

#[test]
fn wait_prints_the_arguments_of_the_matching_message() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let child = spawn(&d, &["wait", "test/wait", "done(int,QString)"]);
    wait_registered(&mut conn, "test/wait");
    conn.send("test/wait", "other(int)", &1i32.to_be_bytes())
        .unwrap();
    let mut payload = 7i32.to_be_bytes().to_vec();
    payload.extend_from_slice(&qstring("ok"));
    conn.send("test/wait", "done(int,QString)", &payload)
        .unwrap();
    conn.flush().unwrap();
    // As the original tool: one argument a line, unquoted.
    assert_run(&finish(child), 0, "7\nok\n");

    let child = spawn(
        &d,
        &["--format", "rich", "wait", "test/wait", "done(int,QString)"],
    );
    wait_registered(&mut conn, "test/wait");
    conn.send("test/wait", "done(int,QString)", &payload)
        .unwrap();
    conn.flush().unwrap();
    assert_run(&finish(child), 0, "7 \"ok\"\n");

    for (args, expected) in [
        (&["wait", "test/empty", "ping()"][..], ""),
        (
            &["--format", "rich", "wait", "test/empty", "ping()"][..],
            "\n",
        ),
    ] {
        eventually("the last waiter left", || {
            !conn.is_registered("test/empty").unwrap()
        });
        let child = spawn(&d, args);
        wait_registered(&mut conn, "test/empty");
        conn.send("test/empty", "ping()", &[]).unwrap();
        conn.flush().unwrap();
        assert_run(&finish(child), 0, expected);
    }
}

#[test]
fn wait_times_out_with_exit_1() {
    let d = Daemon::start();
    for args in [
        &["wait", "test/none", "x()", "--timeout", "20"][..],
        &["timeout", "20", "wait", "test/none", "x()"][..],
    ] {
        let o = qcop(&d, args);
        assert_run(&o, 1, "");
        assert_eq!(
            stderr(&o),
            "qcop: timed out waiting for test/none x()\n",
            "{args:?}"
        );
    }
}

#[test]
fn chain_keeps_an_early_message_for_a_later_wait() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let child = spawn(
        &d,
        &[
            "wait", "test/two", "b(int)", "--", "wait", "test/two", "a(int)",
        ],
    );
    wait_registered(&mut conn, "test/two");
    // a(int) arrives while the first wait is still waiting for b(int).
    conn.send("test/two", "a(int)", &1i32.to_be_bytes())
        .unwrap();
    conn.send("test/two", "b(int)", &2i32.to_be_bytes())
        .unwrap();
    conn.flush().unwrap();
    assert_run(&finish(child), 0, "2\n1\n");
}

#[test]
fn registered_reports_with_exit_status() {
    let d = Daemon::start();
    let o = qcop(&d, &["registered", "test/reg"]);
    assert_run(&o, 1, "test/reg is not registered\n");

    let mut a = d.connect();
    a.subscribe("test/reg").unwrap();
    let o = qcop(&d, &["registered", "test/reg"]);
    assert_run(&o, 0, "test/reg is registered (1 local subscriber)\n");

    let mut b = d.connect();
    b.subscribe("test/reg").unwrap();
    let o = qcop(&d, &["registered", "test/reg"]);
    assert_run(&o, 0, "test/reg is registered (2 local subscribers)\n");
}

#[test]
fn channels_lists_channels_and_patterns() {
    let d = Daemon::start();
    let mut conn = d.connect();
    conn.subscribe("test/chan").unwrap();
    conn.subscribe("test/pat*").unwrap();
    let o = qcop(&d, &["channels"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let rows: Vec<Vec<String>> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "LOCAL", "REMOTE", "KIND"]);
    let row = |cells: [&str; 4]| cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    assert!(
        rows.contains(&row(["test/chan", "1", "0", "channel"])),
        "{rows:?}"
    );
    assert!(
        rows.contains(&row(["test/pat*", "1", "0", "pattern"])),
        "{rows:?}"
    );
}

#[test]
fn stats_prints_counters_and_clients() {
    let d = Daemon::start();
    let mut conn = d.connect();
    conn.subscribe("test/s").unwrap();
    let o = qcop(&d, &["stats"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let counters: Vec<(String, u64)> = text
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(fields.len(), 2, "{l:?}");
            (fields[0].to_owned(), fields[1].parse().expect("a number"))
        })
        .collect();
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(get("clients"), Some(2), "{text}");
    assert_eq!(get("subscriptions"), Some(1), "{text}");
    assert!(get("messages_received").is_some(), "{text}");

    let o = qcop(&d, &["stats", "--clients"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let (_, table) = text
        .split_once("\n\n")
        .expect("a blank line before the clients");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ID",
            "PID",
            "UID",
            "GID",
            "SUBSCRIPTIONS",
            "QUEUED_BYTES",
            "DELIVERED",
            "DROPPED",
            "NAME"
        ]
    );
    let me = conn.client_id().to_string();
    let pid = std::process::id().to_string();
    let row = rows
        .iter()
        .find(|r| r[0] == me)
        .expect("the test's client is listed");
    assert_eq!(
        (row[1], row[4], row[8]),
        (pid.as_str(), "1", "test"),
        "{text}"
    );
    assert!(rows.iter().any(|r| r[8] == "qcop"), "{text}");
}

#[test]
fn call_and_serve_round_trip() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let server = spawn(
        &d,
        &[
            "serve",
            "test/calc",
            "add(int,int)",
            "result(int)",
            "5",
            "--count",
            "1",
        ],
    );
    wait_registered(&mut conn, "test/calc");
    let o = qcop(&d, &["call", "test/calc", "add(int,int)", "2", "3"]);
    assert_run(&o, 0, "result(int) 5\n");
    assert_run(&finish(server), 0, "test/calc add(int,int) 2 3 [call]\n");
}

#[test]
fn call_without_responder_fails() {
    let d = Daemon::start();
    let o = qcop(&d, &["call", "test/nobody", "f()"]);
    assert_run(&o, 1, "");
    let err = stderr(&o);
    assert!(err.starts_with("qcop: "), "{err}");
    assert!(err.contains("no responder"), "{err}");
}

#[test]
fn call_reports_the_responders_error() {
    let d = Daemon::start();
    let mut responder = d.connect();
    responder.subscribe("test/busy").unwrap();
    let t = thread::spawn(move || {
        let call = responder
            .recv_timeout(WAIT)
            .unwrap()
            .expect("the call arrives");
        responder.reply_error(&call, "busy right now").unwrap();
        responder.flush().unwrap();
    });
    let o = qcop(&d, &["call", "test/busy", "f(int)", "1"]);
    t.join().unwrap();
    assert_run(&o, 1, "");
    let err = stderr(&o);
    assert!(
        err.starts_with("qcop: ") && err.contains("busy right now"),
        "{err}"
    );
}

/// Answers the first `request` on `channel` by sending `reply` with `payload` to
/// `reply_channel` at once, from its own connection.
fn instant_responder(
    d: &Daemon,
    channel: &str,
    request: &'static str,
    reply_channel: &'static str,
    reply: &'static str,
    payload: Vec<u8>,
) -> thread::JoinHandle<()> {
    let mut conn = d.connect();
    conn.subscribe(channel).unwrap();
    thread::spawn(move || loop {
        let msg = conn
            .recv_timeout(WAIT)
            .unwrap()
            .expect("the request arrives");
        if msg.message == request {
            conn.send(reply_channel, reply, &payload).unwrap();
            conn.flush().unwrap();
            return;
        }
    })
}

#[test]
fn old_form_sends_and_waits_for_the_reply() {
    let d = Daemon::start();
    let t = instant_responder(
        &d,
        "test/old",
        "ping(int)",
        "test/old/reply",
        "pong(int)",
        6i32.to_be_bytes().to_vec(),
    );
    let o = qcop(
        &d,
        &[
            "test/old",
            "ping(int)",
            "5",
            "-w",
            "test/old/reply",
            "pong(int)",
            "20000",
        ],
    );
    t.join().unwrap();
    assert_run(&o, 0, "6\n");
}

#[test]
fn chain_does_not_miss_an_immediate_reply() {
    let d = Daemon::start();
    let t = instant_responder(
        &d,
        "QPE/pppd",
        "dial()",
        "QPE/pppd",
        "dialResult(bool)",
        vec![1],
    );
    let o = qcop(
        &d,
        &[
            "send",
            "QPE/pppd",
            "dial()",
            "--",
            "timeout",
            "20000",
            "wait",
            "QPE/pppd",
            "dialResult(bool)",
        ],
    );
    t.join().unwrap();
    assert_run(&o, 0, "true\n");
}

#[test]
fn chain_stops_at_the_first_failure() {
    let d = Daemon::start();
    let o = qcop(&d, &["registered", "test/a", "--", "registered", "test/b"]);
    assert_run(&o, 1, "test/a is not registered\n");

    let mut conn = d.connect();
    conn.subscribe("test/b").unwrap();
    let o = qcop(&d, &["send", "test/b", "x()", "--", "registered", "test/b"]);
    assert_run(&o, 0, "test/b is registered (1 local subscriber)\n");
}

#[test]
fn usage_errors_exit_1_like_the_original_and_2_when_strict() {
    // The original's commands and forms: exit 1, as the original exited.
    let original: &[(&[&str], &str)] = &[
        (&[], "qcop: no command given\n"),
        (&["frobnicate"], "qcop: unknown command \"frobnicate\""),
        (
            &["send", "a", "f(int)"],
            "qcop: f(int): message takes 1 argument but 0 were given\n",
        ),
        (
            &["send", "a", "f(int,bool)", "1", "yes"],
            "qcop: f(int,bool): argument 2 (bool): \"yes\" is not a boolean",
        ),
        (
            &["send", "a", "f(QPoint)", "x"],
            "qcop: \"f(QPoint)\": unsupported argument type",
        ),
        (&["send", "QPE/*", "f()"], "qcop: \"QPE/*\" is a pattern"),
        (
            &["watch", "--bogus", "a"],
            "qcop: unknown option \"--bogus\" for watch\n",
        ),
        (
            &["wait", "a", "b()", "--timeout", "soon"],
            "qcop: --timeout takes milliseconds",
        ),
        (
            &["timeout", "soon", "watch", "a"],
            "qcop: the timeout modifier",
        ),
        (
            &["QPE/a", "f(bool)"],
            "qcop: f(bool): argument 1 (bool) is missing",
        ),
        (&["QPE/a", "f()", "-w", "QPE/b"], "qcop: -w needs CHANNEL"),
        (&["enum"], "qcop: enum takes one type NAME"),
    ];
    // --strict, and the commands only qcop has: exit 2, as qcop always did.
    let strict: &[(&[&str], &str)] = &[
        (
            &["--strict", "send", "a", "f(int)", "x"],
            "qcop: f(int): argument 1 (int): \"x\" is not a number\n",
        ),
        (
            &["--strict", "QPE/a", "f(QString)"],
            "qcop: f(QString): message takes 1 argument but 0 were given\n",
        ),
        (
            &["--strict", "send", "a", "b()", "--"],
            "qcop: command 2 of the '--' chain is empty\n",
        ),
        (
            &["call", "a", "f(int)", "x"],
            "qcop: f(int): argument 1 (int): \"x\" is not a number\n",
        ),
        (&["registered"], "qcop: registered needs CHANNEL"),
    ];
    for (cases, code) in [(original, 1), (strict, 2)] {
        for (args, expected) in cases {
            let o = qcop_without_daemon(args);
            assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
            assert_eq!(stdout(&o), "", "{args:?}");
            assert!(stderr(&o).starts_with(expected), "{args:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn daemon_not_running_exits_1_with_a_hint() {
    let o = qcop_without_daemon(&["send", "test/x", "f()"]);
    assert_run(&o, 1, "");
    let err = stderr(&o);
    assert!(
        err.starts_with("qcop: cannot connect to qcopd at "),
        "{err}"
    );
    assert!(err.contains("missing.sock"), "{err}");
    assert!(err.contains("is qcopd running?"), "{err}");

    // --socket wins over $QCOP_SOCKET.
    let d = Daemon::start();
    let elsewhere = d.dir.join("elsewhere.sock");
    let o = qcop(&d, &["--socket", elsewhere.to_str().unwrap(), "channels"]);
    assert_run(&o, 1, "");
    assert!(stderr(&o).contains("elsewhere.sock"), "{}", stderr(&o));
}

#[test]
fn help_and_version() {
    let o = qcop_without_daemon(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for needle in [
        "Usage:",
        "send CHANNEL",
        "watch",
        "wait CHANNEL",
        "registered CHANNEL",
        "channels",
        "stats",
        "call CHANNEL",
        "serve CHANNEL",
        "query CHANNEL",
        "list",
        "enum NAME",
        "--strict",
        "--format classic|rich",
        "-l, --user USER",
        "QDateTime",
        "QContentIdList",
        "qulonglong",
        "QStringList",
        "notimeout",
        "-w CHANNEL",
        "Exit status",
        "Examples",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }

    let by_command = qcop_without_daemon(&["wait", "--help"]);
    let by_help = qcop_without_daemon(&["help", "wait"]);
    assert_eq!(by_command.status.code(), Some(0));
    assert_eq!(stdout(&by_command), stdout(&by_help));
    assert!(stdout(&by_help).contains("qcop wait QPE/pppd 'dialResult(bool)'"));

    let o = qcop_without_daemon(&["-V"]);
    assert_run(&o, 0, &format!("qcop {}\n", env!("CARGO_PKG_VERSION")));
}
