//! The access policy, sender credentials and monitors, with clients running as real
//! different users (`tests/common/users.rs`): what each user may send, receive and
//! monitor, the `Denied` text naming the rule, exit statuses, reloads, and credentials that
//! match the real sender.

mod common;

use common::users::{runnable_copy, users, User, Users};
use common::{counter, eventually, recv, Daemon, RawClient, WAIT};
use nix::sys::signal::Signal;
use qcop::client::MonitorEvent;
use qcop::wire::{ErrorCode, Frame};
use qcop::{Connection, Error};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Everyone may connect; the policy decides the rest.
const OPEN_SOCKET: &str = "socket_mode = \"0666\"\n";

/// Upper bound for a `qcop` process to finish; only a watchdog against hangs.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A daemon with an open socket and the test accounts.
struct Bus {
    d: Daemon,
    users: Users,
    qcop: PathBuf,
}

impl Bus {
    fn start(test: &str, config: &str) -> Option<Bus> {
        let users = users(test)?;
        let d = Daemon::start_with(&format!("{OPEN_SOCKET}{config}"));
        std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let qcop = runnable_copy(&common::program("qcop"), &d.dir);
        Some(Bus { d, users, qcop })
    }

    /// `qcop ARGS` as `user`.
    fn qcop_as(&self, user: &User, args: &[&str]) -> Command {
        let mut c = self.users.command(user, &self.qcop);
        c.env("QCOP_SOCKET", &self.d.socket).args(args);
        c
    }

    fn run_as(&self, user: &User, args: &[&str]) -> Output {
        finish(self.qcop_as(user, args).spawn().expect("spawn qcop"))
    }

    fn reload(&self, config: &str) {
        let path = self.d.config.as_ref().expect("a config file");
        std::fs::write(path, format!("{OPEN_SOCKET}{config}")).unwrap();
        self.d.signal(Signal::SIGHUP);
    }
}

/// Waits for a child to exit and collects its output, killing it if it hangs.
fn finish(child: Child) -> Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(output) => output.expect("wait for qcop"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            panic!("qcop did not exit within {WATCHDOG:?}");
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Asserts exit status 1 and a stderr line containing `text`.
#[track_caller]
fn assert_denied(o: &Output, text: &str) {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(o));
    let err = stderr(o);
    assert!(err.contains("access denied"), "stderr: {err}");
    assert!(err.contains(text), "expected {text:?} in stderr: {err}");
}

fn wait_pattern(conn: &mut Connection, pattern: &str, subscribers: u32) {
    eventually(&format!("{subscribers} subscribers of {pattern}"), || {
        let list = conn.channels().expect("channels");
        list.iter()
            .any(|c| c.name == pattern && c.subscribers == subscribers)
    });
}

const RULES: &str = r#"
policy_default = "deny"
policy = [
    "deny send QPE/Secure/* for group qcoptest-extra",
    "deny send QPE/System message reboot() for group qcoptest",
    "deny receive QPE/Secure/* for user qcoptest-b",
    "allow send,receive QPE/*",
]
"#;

#[test]
fn sends_are_allowed_or_denied_per_user_group_channel_and_message() {
    let Some(bus) = Bus::start("sends_are_allowed_or_denied", RULES) else {
        return;
    };
    let (a, b) = (&bus.users.a, &bus.users.b);
    let mut root = bus.d.connect();
    root.subscribe("QPE/*").unwrap();

    // b is only a listed member of qcoptest-extra (not its primary group): rule 1 applies.
    let o = bus.run_as(b, &["send", "QPE/Secure/keys", "set(int)", "1"]);
    assert_denied(
        &o,
        "send to \"QPE/Secure/keys\" denied by rule 1 (deny send QPE/Secure/* for group qcoptest-extra)",
    );
    assert_ok(&bus.run_as(a, &["send", "QPE/Secure/keys", "set(int)", "2"]));

    // Rule 2 names a message: only reboot() is refused, and only to the qcoptest group.
    let o = bus.run_as(a, &["send", "QPE/System", "reboot()"]);
    assert_denied(
        &o,
        "denied by rule 2 (deny send QPE/System message reboot() for group qcoptest)",
    );
    // A call is a send too.
    let o = bus.run_as(a, &["call", "QPE/System", "reboot()"]);
    assert_denied(&o, "call to \"QPE/System\" denied by rule 2");
    assert_ok(&bus.run_as(a, &["send", "QPE/System", "halt()"]));
    assert_ok(&bus.run_as(b, &["send", "QPE/System", "reboot()"]));

    // Outside QPE/ no rule matches: the default (deny) applies.
    let o = bus.run_as(a, &["send", "other/x", "ping()"]);
    assert_denied(&o, "denied by the policy default");

    // Exactly the allowed messages arrived, in order; root is not bound by the rules.
    let got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let m = recv(&mut root);
            (m.channel, m.message)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("QPE/Secure/keys".into(), "set(int)".into()),
            ("QPE/System".into(), "halt()".into()),
            ("QPE/System".into(), "reboot()".into()),
        ]
    );
    root.send("other/x", "ping()", b"").unwrap();
    root.flush().unwrap();
    assert_eq!(counter(&mut root, "policy_denied_send"), 4);
    assert_eq!(counter(&mut root, "policy_denied_receive"), 0);
}

#[test]
fn subscriptions_and_deliveries_follow_receive_rules() {
    let Some(bus) = Bus::start("subscriptions_follow_receive_rules", RULES) else {
        return;
    };
    let (a, b) = (&bus.users.a, &bus.users.b);
    // Rule 3 matches the name as written: the channel and the pattern on it are refused.
    let o = bus.run_as(
        b,
        &[
            "--format",
            "rich",
            "watch",
            "--count",
            "1",
            "QPE/Secure/keys",
        ],
    );
    assert_denied(
        &o,
        "subscription to \"QPE/Secure/keys\" denied by rule 3 (deny receive QPE/Secure/* for user qcoptest-b)",
    );
    let o = bus.run_as(
        b,
        &["--format", "rich", "watch", "--count", "1", "QPE/Secure/*"],
    );
    assert_denied(&o, "denied by rule 3");
    let o = bus.run_as(
        a,
        &["--format", "rich", "watch", "--count", "1", "elsewhere"],
    );
    assert_denied(&o, "denied by the policy default");

    // A broader pattern is allowed, but what it matches under QPE/Secure is filtered out
    // for b, message by message; a gets everything.
    let mut root = bus.d.connect();
    let watch_b = bus
        .qcop_as(b, &["--format", "rich", "watch", "--count", "2", "QPE/*"])
        .spawn()
        .unwrap();
    let watch_a = bus
        .qcop_as(a, &["--format", "rich", "watch", "--count", "3", "QPE/*"])
        .spawn()
        .unwrap();
    wait_pattern(&mut root, "QPE/*", 2);
    root.send("QPE/Secure/keys", "k(int)", &7i32.to_be_bytes())
        .unwrap();
    root.send("QPE/Audio", "one()", b"").unwrap();
    root.send("QPE/Audio", "two()", b"").unwrap();
    root.flush().unwrap();
    let (ob, oa) = (finish(watch_b), finish(watch_a));
    assert_ok(&ob);
    assert_eq!(stdout(&ob), "QPE/Audio one()\nQPE/Audio two()\n");
    assert_ok(&oa);
    assert_eq!(
        stdout(&oa),
        "QPE/Secure/keys k(int) 7\nQPE/Audio one()\nQPE/Audio two()\n"
    );
    assert_eq!(counter(&mut root, "policy_filtered"), 1);
    assert_eq!(counter(&mut root, "policy_denied_receive"), 3);
}

#[test]
fn receivers_learn_the_real_sender() {
    let Some(bus) = Bus::start("receivers_learn_the_real_sender", "") else {
        return;
    };
    let a = &bus.users.a;
    let mut with = bus.d.connect();
    with.subscribe_with_credentials("cred/*").unwrap();
    let mut without = bus.d.connect();
    without.subscribe("cred/x").unwrap();

    let child = bus
        .qcop_as(a, &["send", "cred/x", "hello(int)", "5"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert_ok(&finish(child));
    let m = recv(&mut with);
    let sender = m
        .sender()
        .expect("credentials on a credentials subscription");
    assert_eq!((sender.pid, sender.uid, sender.gid), (pid, a.uid, a.gid));
    let plain = recv(&mut without);
    assert_eq!(
        (plain.message.as_str(), plain.sender()),
        ("hello(int)", None)
    );
    assert_eq!(plain.data, m.data);

    // Our own sends carry our own credentials.
    with.send("cred/y", "mine()", b"").unwrap();
    let m = recv(&mut with);
    let me = m.sender().unwrap();
    assert_eq!(
        (me.pid, me.uid, me.gid),
        (
            std::process::id(),
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw()
        )
    );

    // The CLI shows them with --credentials.
    let watch = bus
        .d
        .cli()
        .args([
            "--format",
            "rich",
            "watch",
            "--credentials",
            "--count",
            "1",
            "cred/z",
        ])
        .spawn()
        .unwrap();
    eventually("the watcher subscribed", || {
        with.is_registered("cred/z").unwrap()
    });
    let child = bus.qcop_as(a, &["send", "cred/z", "hi()"]).spawn().unwrap();
    let pid = child.id();
    assert_ok(&finish(child));
    let o = finish(watch);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        format!("cred/z hi() [from pid={pid} uid={} gid={}]\n", a.uid, a.gid)
    );
}

#[test]
fn credentials_cannot_be_forged() {
    let d = Daemon::start();
    let mut r = d.connect();
    r.subscribe_with_credentials("forge").unwrap();
    // A client writing a delivered-message frame with a credentials trailer, or a send with
    // the credentials flag, is closed as a protocol error; nothing is routed.
    for bytes in [
        Frame::Message {
            token: 0,
            call: false,
            channel: "forge",
            message: "m()",
            payload: b"",
            sender: Some(qcop::Credentials {
                pid: 1,
                uid: 0,
                gid: 0,
            }),
        }
        .to_vec(),
        {
            let mut b = Frame::Send {
                seq: 1,
                ack: false,
                channel: "forge",
                message: "m()",
                payload: b"",
            }
            .to_vec();
            b[5] |= 0x02;
            b
        },
    ] {
        let mut raw = RawClient::greeted(&d.socket);
        raw.write(&bytes).unwrap();
        let got = raw.until_closed();
        assert!(
            matches!(
                got.as_slice(),
                [common::Got::Error {
                    fatal: true,
                    code: ErrorCode::Malformed,
                    ..
                }]
            ),
            "{got:?}"
        );
    }
    r.send("forge", "real()", b"").unwrap();
    assert_eq!(recv(&mut r).message, "real()");
}

#[test]
fn monitor_is_for_root_unless_a_rule_allows_it() {
    let Some(bus) = Bus::start("monitor_is_for_root", "") else {
        return;
    };
    let a = &bus.users.a;
    // No policy: only root and the daemon's user.
    let o = bus.run_as(a, &["monitor", "--count", "1"]);
    assert_denied(&o, "only root and the daemon's user may monitor");

    bus.reload(
        r#"
        policy_default = "allow"
        policy = ["allow monitor QPE/* for user qcoptest-a"]
        "#,
    );
    let mut root = bus.d.connect();
    eventually("the reload", || counter(&mut root, "reloads") == 1);
    // Everything ("*") is more than the rule allows; QPE/* is what it allows.
    let o = bus.run_as(a, &["monitor", "--count", "1"]);
    assert_denied(&o, "monitor of \"*\" denied: no policy rule allows monitor");
    let mon = bus
        .qcop_as(a, &["monitor", "--count", "2", "QPE/*"])
        .spawn()
        .unwrap();
    eventually("the monitor", || counter(&mut root, "monitors") == 1);
    root.send("other", "hidden()", b"").unwrap();
    root.send("QPE/Audio", "setVolume(int)", &3i32.to_be_bytes())
        .unwrap();
    root.send("QPE/Audio", "mute()", b"").unwrap();
    root.flush().unwrap();
    let o = finish(mon);
    assert_ok(&o);
    let (pid, uid, gid) = (
        std::process::id(),
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    assert_eq!(
        stdout(&o),
        format!(
            "QPE/Audio setVolume(int) 3 [from pid={pid} uid={uid} gid={gid}]\n\
             QPE/Audio mute() [from pid={pid} uid={uid} gid={gid}]\n"
        )
    );
    assert_eq!(counter(&mut root, "policy_denied_monitor"), 2);
}

#[test]
fn reload_revokes_subscriptions_and_a_broken_file_keeps_the_old_rules() {
    let allow_b = r#"
        policy_default = "allow"
        policy = []
    "#;
    let Some(bus) = Bus::start("reload_revokes_subscriptions", allow_b) else {
        return;
    };
    let b = &bus.users.b;
    let mut root = bus.d.connect();
    let watch = bus
        .qcop_as(b, &["--format", "rich", "watch", "r/x", "r/y"])
        .spawn()
        .unwrap();
    eventually("b's watch", || {
        root.is_registered("r/x").unwrap() && root.is_registered("r/y").unwrap()
    });

    // Now b may receive r/y but not r/x: r/x is revoked (and its channel removed), the
    // watch goes on with r/y.
    let deny_x = r#"
        policy_default = "allow"
        policy = ["deny receive,send r/x for user qcoptest-b"]
    "#;
    bus.reload(deny_x);
    eventually("r/x revoked", || !root.is_registered("r/x").unwrap());
    assert!(root.is_registered("r/y").unwrap());
    assert_eq!(counter(&mut root, "policy_revoked"), 1);
    root.send("r/y", "still()", b"").unwrap();
    root.flush().unwrap();

    // A broken file (unknown user) is refused as a whole: the previous rules stay.
    bus.reload(
        r#"
        policy_default = "allow"
        policy = ["allow receive * for user no-such-user-qcop"]
    "#,
    );
    eventually("the failed reload", || {
        counter(&mut root, "reload_failures") == 1
    });
    let o = bus.run_as(b, &["send", "r/x", "again()"]);
    assert_denied(
        &o,
        "denied by rule 1 (deny receive,send r/x for user qcoptest-b)",
    );

    // Denying r/y too leaves the watch with nothing: it says why and fails.
    bus.reload(
        r#"
        policy_default = "allow"
        policy = ["deny receive r/* for user qcoptest-b"]
    "#,
    );
    let o = finish(watch);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "r/y still()\n");
    let err = stderr(&o);
    assert!(
        err.contains("subscription to \"r/x\" revoked: denied by rule 1"),
        "{err}"
    );
    assert!(
        err.contains("subscription to \"r/y\" revoked: denied by rule 1 (deny receive r/* for user qcoptest-b)"),
        "{err}"
    );
    assert!(err.contains("revoked every subscription"), "{err}");
    assert_eq!(counter(&mut root, "policy_revoked"), 2);
    assert_eq!(counter(&mut root, "reloads"), 2);
}

/// A reload that revokes the last ordinary subscriber of a channel with a shared-memory
/// stream stops qcopd's own reading of the ring, as an unsubscribe would.
#[test]
fn revoking_the_last_subscriber_of_a_stream_stops_its_forwarding() {
    use qcop::shm::{Policy, Publisher, StreamOptions};
    let allow = "policy_default = \"allow\"\npolicy = []\n";
    let Some(bus) = Bus::start("revoke_stream_subscriber", allow) else {
        return;
    };
    let mut root = bus.d.connect();
    let options = StreamOptions::new()
        .slot_size(64)
        .slots(8)
        .policy(Policy::Lossless);
    let mut p = Publisher::open(&bus.d.options(), "r/imu", "sample(int)", &options).unwrap();
    assert_eq!(counter(&mut root, "shm_streams_forwarded"), 0);
    // The watch keeps another subscription, so its connection stays open.
    let mut watch = bus
        .qcop_as(&bus.users.b, &["watch", "r/imu", "r/keep"])
        .spawn()
        .unwrap();
    eventually("b's watch", || {
        root.is_registered("r/imu").unwrap() && root.is_registered("r/keep").unwrap()
    });
    eventually("qcopd reads the stream", || {
        counter(&mut root, "shm_streams_forwarded") == 1
    });
    p.send(&1u32.to_be_bytes(), WAIT).unwrap();
    eventually("the message forwarded", || {
        counter(&mut root, "shm_forwarded") == 1
    });

    bus.reload(
        r#"
        policy_default = "allow"
        policy = ["deny receive r/imu for user qcoptest-b"]
    "#,
    );
    eventually("r/imu revoked", || !root.is_registered("r/imu").unwrap());
    assert_eq!(counter(&mut root, "policy_revoked"), 1);
    eventually("qcopd stops reading the stream", || {
        counter(&mut root, "shm_streams_forwarded") == 0
    });
    // Two laps of the lossless ring go by without qcopd reading a message.
    for i in 2..18u32 {
        p.send(&i.to_be_bytes(), WAIT).unwrap();
    }
    assert_eq!(counter(&mut root, "shm_forwarded"), 1);
    assert!(
        root.is_registered("r/keep").unwrap(),
        "the watch is still there"
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn a_denial_stops_a_chain_but_not_what_it_already_did() {
    let Some(bus) = Bus::start("a_denial_stops_a_chain", RULES) else {
        return;
    };
    // A chain as b: the send goes through, the denied subscription after it fails the
    // command (exit 1) without a protocol error.
    let mut root = bus.d.connect();
    root.subscribe("QPE/ok").unwrap();
    let o = bus.run_as(
        &bus.users.b,
        &["send", "QPE/ok", "first()", "--", "watch", "QPE/Secure/x"],
    );
    assert_denied(&o, "subscription to \"QPE/Secure/x\" denied by rule 3");
    assert_eq!(recv(&mut root).message, "first()");
    // The daemon logged and counted, and serves everyone as before.
    assert_eq!(counter(&mut root, "policy_denied_receive"), 1);
    assert_eq!(counter(&mut root, "protocol_errors"), 0);
}

/// What the subscribers of one round of traffic saw: the exact subscriber's messages, the
/// pattern subscriber's, `registered_count`, and the channel list.
type Seen = (Vec<String>, Vec<String>, u32, Vec<(String, u32)>);

#[test]
fn monitor_sees_all_traffic_and_changes_nothing() {
    let d = Daemon::start();
    // One round of traffic: sends to an exact and a pattern subscriber, a call answered by
    // a responder, a send to a channel nobody listens to.
    let round = |d: &Daemon| -> Seen {
        let mut s = d.connect();
        s.subscribe("mon/x").unwrap();
        let mut p = d.connect();
        p.subscribe("mon/*").unwrap();
        let mut responder = d.connect();
        responder.subscribe("mon/calc").unwrap();
        let mut sender = d.connect();
        let answer = thread::spawn(move || {
            let call = recv(&mut responder);
            responder
                .reply(&call, "sum(int)", &5i32.to_be_bytes())
                .unwrap();
            responder.flush().unwrap();
            responder
        });
        for i in 0..5i32 {
            sender.send("mon/x", "n(int)", &i.to_be_bytes()).unwrap();
        }
        sender.send("nobody/here", "lost()", b"").unwrap();
        let reply = sender
            .call("mon/calc", "add(int,int)", &[0, 0, 0, 2, 0, 0, 0, 3], WAIT)
            .unwrap();
        assert_eq!(reply.message, "sum(int)");
        let responder = answer.join().unwrap();
        let take = |c: &mut Connection, n: usize| -> Vec<String> {
            (0..n)
                .map(|_| {
                    let m = recv(c);
                    format!("{} {} {:?}", m.channel, m.message, m.data)
                })
                .collect()
        };
        let got_s = take(&mut s, 5);
        let got_p = take(&mut p, 6);
        let registered = sender.registered_count("mon/x").unwrap();
        let channels = sender
            .channels()
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.subscribers))
            .collect();
        drop((s, p, responder));
        eventually("the round's subscribers to leave", || {
            sender.channels().unwrap().is_empty()
        });
        (got_s, got_p, registered, channels)
    };
    let without = round(&d);

    let mut m = d.connect();
    m.monitor(&[]).unwrap();
    let mut root = d.connect();
    assert_eq!(counter(&mut root, "monitors"), 1);
    let with = round(&d);
    assert_eq!(with, without, "a monitor changed what subscribers see");
    assert_eq!(with.2, 1);

    let events: Vec<(MonitorEvent, String, String)> = (0..8)
        .map(|_| {
            let e = m.recv_monitored(WAIT).unwrap().expect("an event");
            assert_eq!(e.sender.pid, std::process::id());
            (e.event, e.channel, e.message)
        })
        .collect();
    let mut want: Vec<(MonitorEvent, String, String)> = (0..5)
        .map(|_| (MonitorEvent::Send, "mon/x".into(), "n(int)".into()))
        .collect();
    want.push((MonitorEvent::Send, "nobody/here".into(), "lost()".into()));
    want.push((MonitorEvent::Call, "mon/calc".into(), "add(int,int)".into()));
    want.push((MonitorEvent::Reply, "mon/calc".into(), "sum(int)".into()));
    assert_eq!(events, want);

    // A monitor cannot subscribe, send or call.
    assert!(matches!(
        m.subscribe("mon/x"),
        Err(Error::Refused {
            code: ErrorCode::MonitorConnection,
            ..
        })
    ));
    assert!(matches!(
        m.call("mon/calc", "add(int,int)", &[], WAIT),
        Err(Error::Refused {
            code: ErrorCode::MonitorConnection,
            ..
        })
    ));
}

#[test]
fn a_slow_monitor_loses_only_its_own_events() {
    let d = Daemon::start_with("max_payload = 1024\nmax_queue_bytes = 4096\n");
    let mut slow = d.connect();
    slow.monitor(&["load/*"]).unwrap();
    let mut s = d.connect();
    s.subscribe("load/x").unwrap();
    const N: u32 = 1000;
    const BATCH: u32 = 50;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let progress = std::sync::Arc::clone(&received);
    let reader = thread::spawn(move || {
        for i in 0..N {
            let m = recv(&mut s);
            assert_eq!(m.data[..4], i.to_be_bytes(), "subscriber lost or reordered");
            progress.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
        s.lost()
    });
    let mut sender = d.connect();
    let mut payload = vec![0u8; 1000];
    // The subscriber keeps up (it is never more than a batch behind, well within its
    // socket buffer); the monitor never reads and must overflow.
    for i in 0..N {
        payload[..4].copy_from_slice(&i.to_be_bytes());
        sender.send("load/x", "blob(QByteArray)", &payload).unwrap();
        if (i + 1) % BATCH == 0 {
            sender.flush().unwrap();
            eventually("the subscriber to keep up", || {
                received.load(std::sync::atomic::Ordering::Relaxed) == i + 1
            });
        }
    }
    assert_eq!(reader.join().unwrap(), 0);
    let mut root = d.connect();
    let dropped = counter(&mut root, "monitor_dropped");
    assert!(dropped > 0, "the monitor did not fall behind");
    assert_eq!(counter(&mut root, "dropped_slow_consumer"), 0);
    assert_eq!(counter(&mut root, "dropped_memory_budget"), 0);
    // The monitor reads now: what it kept, in order, plus the gap it was told about.
    let mut seen = 0u64;
    let mut last = None;
    while last != Some(N - 1) {
        let e = slow
            .recv_monitored(WAIT)
            .unwrap()
            .expect("the monitor keeps the newest events");
        let i = u32::from_be_bytes(e.data[..4].try_into().unwrap());
        assert!(last.map_or(true, |l| i > l), "events out of order");
        last = Some(i);
        seen += 1;
    }
    assert_eq!(seen + slow.lost(), N as u64);
    assert_eq!(slow.lost(), dropped);
}

// ----- message names: every spelling is the same message ---------------------------------

/// How `raw_client` is told what to do: the socket, the channel, then one message name a
/// line, each sent and called exactly as written.
const RAW_CLIENT_ENV: &str = "QCOP_TEST_RAW_CLIENT";

/// Spellings of `reboot()` that Qt's normalisation (and so every Qt receiver) takes for it.
const REBOOT_SPELLINGS: [&str; 8] = [
    "reboot()",
    "reboot( )",
    "reboot ()",
    " reboot()",
    "reboot(  )",
    "reboot() ",
    " reboot ( ) ",
    "reboot(void)",
];

/// Not run on its own: the client `every_spelling_of_a_denied_message_is_denied` starts as
/// a test user (this test binary, run again through setpriv). The library sends a message
/// name exactly as given, unlike the `qcop` CLI, which normalises it first. Prints one
/// `RAW send|call NAME: RESULT` line per request.
#[test]
#[ignore = "helper: started as a test user by every_spelling_of_a_denied_message_is_denied"]
fn raw_client() {
    let spec = std::env::var(RAW_CLIENT_ENV).expect("raw_client needs QCOP_TEST_RAW_CLIENT");
    let mut lines = spec.split('\n');
    let socket = lines.next().expect("socket");
    let channel = lines.next().expect("channel");
    let opts = qcop::ConnectOptions::new()
        .socket(socket)
        .timeout(Duration::from_secs(10))
        .name("raw");
    let mut conn = Connection::connect(&opts).expect("connect");
    let outcome = |r: Result<String, Error>| match r {
        Ok(v) => format!("ok {v}"),
        Err(Error::Refused { code, text }) => format!("refused {code:?} {text}"),
        Err(e) => format!("error {e}"),
    };
    for name in lines {
        let sent = conn.send_acked(channel, name, b"").map(|n| n.to_string());
        println!("RAW send {name:?}: {}", outcome(sent));
        let called = conn
            .call(channel, name, b"", Duration::from_secs(2))
            .map(|r| r.message);
        println!("RAW call {name:?}: {}", outcome(called));
    }
}

#[test]
fn every_spelling_of_a_denied_message_is_denied() {
    let rules = r#"
policy_default = "allow"
policy = [
    "deny send QPE/System message reboot() for group qcoptest",
    "deny send QPE/System message \" shutdown ( ) \" for group qcoptest",
]
"#;
    let Some(bus) = Bus::start("every_spelling_of_a_denied_message_is_denied", rules) else {
        return;
    };
    let a = &bus.users.a;
    // A receiver that answers every spelling, as a Qt receiver does, and a monitor.
    let mut root = bus.d.connect();
    root.subscribe("QPE/System").unwrap();
    let mut monitor = bus.d.connect();
    monitor.monitor(&["QPE/System"]).unwrap();

    let test_binary = runnable_copy(&std::env::current_exe().unwrap(), &bus.d.dir);
    let mut names: Vec<&str> = REBOOT_SPELLINGS.to_vec();
    names.extend(["shutdown()", "shutdown ( )", "halt( )"]);
    let spec = format!(
        "{}\nQPE/System\n{}",
        bus.d.socket.display(),
        names.join("\n")
    );
    let mut c = bus.users.command(a, &test_binary);
    c.args(["--exact", "raw_client", "--include-ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(RAW_CLIENT_ENV, spec);
    let o = finish(c.spawn().unwrap());
    assert_ok(&o);
    let out = stdout(&o);
    // libtest may print its `test raw_client ... ` in front of the first line.
    let results: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("RAW ").map(|at| &l[at..]))
        .collect();
    assert_eq!(results.len(), names.len() * 2, "{out}");
    for name in &names[..names.len() - 1] {
        for verb in ["send", "call"] {
            let prefix = format!("RAW {verb} {name:?}: ");
            let line = results
                .iter()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no result for {prefix}\n{out}"));
            assert!(
                line.contains("refused Denied") && line.contains("denied by rule"),
                "{line}"
            );
        }
    }
    // The rule's own text was normalised: it names shutdown() as the daemon compares it.
    assert!(
        out.contains(
            "denied by rule 2 (deny send QPE/System message shutdown() for group qcoptest)"
        ),
        "{out}"
    );
    // halt( ) is allowed, and arrives normalised, once as a send and once as a call.
    assert!(out.contains("RAW send \"halt( )\": ok 1"), "{out}");
    let m = recv(&mut root);
    assert_eq!(
        (m.channel.as_str(), m.message.as_str()),
        ("QPE/System", "halt()")
    );
    let call = recv(&mut root);
    assert_eq!(call.message, "halt()");
    // Nothing of the denied ones reached the receiver.
    root.send("QPE/System", "marker()", b"").unwrap();
    root.flush().unwrap();
    assert_eq!(recv(&mut root).message, "marker()");
    // The monitor saw the same normalised names.
    let seen: Vec<String> = (0..3)
        .map(|_| {
            monitor
                .recv_monitored(WAIT)
                .expect("monitor")
                .expect("a monitored message")
                .message
        })
        .collect();
    assert_eq!(seen, ["halt()", "halt()", "marker()"]);
    let denied = counter(&mut root, "policy_denied_send");
    assert_eq!(denied, (names.len() as u64 - 1) * 2);
}
