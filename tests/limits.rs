//! Per-user limits, with the attacker and the bystanders running as real different users
//! (`tests/common/users.rs`): one user holding every connection it may does not lock out
//! the others, the places reserved for administrators stay free, and the attacker is told
//! which limit it reached.

mod common;

use common::users::{runnable_copy, users, User, Users};
use common::{counter, Daemon, WAIT};
use qcop::{Connection, Error};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Everyone may connect; silent connections are not timed out during the test.
const OPEN: &str = "socket_mode = \"0666\"\nhandshake_timeout_ms = 600000\n";

/// How a helper is told what to do: a mode, the socket, then the mode's arguments, one a line.
const HELPER_ENV: &str = "QCOP_TEST_LIMITS_HELPER";

/// The channel the responder answers on.
const SERVICE: &str = "Limits/Service";

struct Bus {
    d: Daemon,
    users: Users,
    test_binary: PathBuf,
    responder: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl Bus {
    fn start(test: &str, config: &str) -> Option<Bus> {
        let users = users(test)?;
        let d = Daemon::start_with(&format!("{OPEN}{config}"));
        std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let test_binary = runnable_copy(&std::env::current_exe().unwrap(), &d.dir);
        let mut bus = Bus {
            d,
            users,
            test_binary,
            responder: None,
        };
        bus.start_responder();
        Some(bus)
    }

    /// A root client answering `echo()` calls on [`SERVICE`]: it first sends `hello()` to
    /// the channel named in the payload, then replies `pong()`.
    fn start_responder(&mut self) {
        let mut conn = self.d.connect();
        conn.subscribe(SERVICE).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Some(m) = conn.recv_timeout(Duration::from_millis(50)).unwrap() else {
                    continue;
                };
                if m.is_call() {
                    let inbox = String::from_utf8(m.data.clone()).unwrap();
                    conn.send(&inbox, "hello()", b"").unwrap();
                    conn.reply(&m, "pong()", b"").unwrap();
                }
            }
        });
        self.responder = Some((stop, handle));
    }

    /// This test binary's helper `name` run as `user` with `spec` (see [`HELPER_ENV`]).
    fn helper(&self, user: &User, name: &str, spec: &[&str]) -> Child {
        let mut lines = vec![self.d.socket.to_str().unwrap()];
        lines.extend_from_slice(spec);
        let mut c = self.users.command(user, &self.test_binary);
        c.args(["--exact", name, "--include-ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(HELPER_ENV, lines.join("\n"))
            .stdin(Stdio::piped());
        c.spawn().expect("spawn a helper")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.responder.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

/// The next line of a helper's output starting with `tag` (libtest may print its own text
/// in front of the first one).
fn line(out: &mut BufReader<ChildStdout>, tag: &str) -> String {
    let mut l = String::new();
    loop {
        l.clear();
        let n = out.read_line(&mut l).expect("read helper output");
        assert!(n > 0, "helper ended before printing {tag}");
        if let Some(at) = l.find(tag) {
            return l[at + tag.len()..].trim().to_owned();
        }
    }
}

fn spec() -> Vec<String> {
    let spec = std::env::var(HELPER_ENV).expect("a helper needs QCOP_TEST_LIMITS_HELPER");
    spec.split('\n').map(str::to_owned).collect()
}

fn options(socket: &str) -> qcop::ConnectOptions {
    qcop::ConnectOptions::new()
        .socket(socket)
        .timeout(WAIT)
        .name("limits")
}

/// Connects, subscribes to an inbox and to a pattern below it, sends to the service, calls it and receives what the
/// responder sent to the inbox. Returns what failed, if anything.
fn use_the_bus(opts: &qcop::ConnectOptions, inbox: &str) -> Result<(), String> {
    let mut conn = Connection::connect(opts).map_err(|e| format!("connect: {e}"))?;
    conn.subscribe(inbox)
        .map_err(|e| format!("subscribe: {e}"))?;
    conn.subscribe(&format!("{inbox}/*"))
        .map_err(|e| format!("subscribe to a pattern: {e}"))?;
    let receivers = conn
        .send_acked(SERVICE, "note()", b"")
        .map_err(|e| format!("send: {e}"))?;
    if receivers != 1 {
        return Err(format!("send reached {receivers} receivers"));
    }
    let reply = conn
        .call(SERVICE, "echo()", inbox.as_bytes(), WAIT)
        .map_err(|e| format!("call: {e}"))?;
    if reply.message != "pong()" {
        return Err(format!("call answered {}", reply.message));
    }
    match conn.recv_timeout(WAIT) {
        Ok(Some(m)) if m.channel == inbox && m.message == "hello()" => Ok(()),
        other => Err(format!("receive: {other:?}")),
    }
}

/// Not run on its own: started as a test user. Opens N silent connections (no Hello), then
/// one that says Hello; prints how that one was answered (`ATTEMPT`), how many of the
/// silent ones were refused and how many held (`SILENT`), then keeps them all open until
/// its standard input closes.
#[test]
#[ignore = "helper: started as a test user by the tests of this file"]
fn flood() {
    let spec = spec();
    let n: usize = spec[1].parse().unwrap();
    let silent: Vec<UnixStream> = (0..n)
        .map(|_| UnixStream::connect(&spec[0]).expect("connect"))
        .collect();
    match Connection::connect(&options(&spec[0])) {
        Ok(_) => println!("ATTEMPT admitted"),
        Err(Error::Refused { code, text }) => println!("ATTEMPT refused {code:?} {text}"),
        Err(e) => println!("ATTEMPT error {e}"),
    }
    // The daemon accepts in order, so every silent connection was answered (or not) before
    // the last one was.
    let (mut held, mut refused) = (0, 0);
    for s in &silent {
        s.set_nonblocking(true).unwrap();
        match (&*s).read(&mut [0; 64]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Ok(n) if n > 0 => refused += 1,
            other => panic!("a silent connection read {other:?}"),
        }
    }
    println!("SILENT held {held} refused {refused}");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(silent);
}

/// Not run on its own: started as a test user; [`use_the_bus`] with the inbox given,
/// printing `BUS ok` or `BUS failed: WHY`.
#[test]
#[ignore = "helper: started as a test user by the tests of this file"]
fn bystander() {
    let spec = spec();
    match use_the_bus(&options(&spec[0]), &spec[1]) {
        Ok(()) => println!("BUS ok"),
        Err(why) => println!("BUS failed: {why}"),
    }
}

fn bystander_result(bus: &Bus, user: &User, inbox: &str) -> String {
    let mut child = bus.helper(user, "bystander", &[inbox]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let result = line(&mut out, "BUS ");
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "bystander helper failed: {status}");
    result
}

/// A running flood helper.
struct Flood {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Flood {
    fn start(bus: &Bus, user: &User, connections: usize) -> Flood {
        let mut child = bus.helper(user, "flood", &[&connections.to_string()]);
        let out = BufReader::new(child.stdout.take().unwrap());
        Flood { child, out }
    }

    /// The answer to its greeted attempt and the silent tallies.
    fn result(&mut self) -> (String, String) {
        let attempt = line(&mut self.out, "ATTEMPT ");
        let silent = line(&mut self.out, "SILENT ");
        (attempt, silent)
    }

    /// Lets it close its connections and exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = std::io::copy(&mut self.out, &mut std::io::sink());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "flood helper failed: {status}");
    }
}

#[test]
fn one_user_with_256_silent_connections_does_not_lock_out_others() {
    let Some(bus) = Bus::start("one_user_with_256_silent_connections", "") else {
        return;
    };
    let a = bus.users.a.clone();
    let b = bus.users.b.clone();
    // Defaults: max_clients = 256, so max_clients_per_user = 64.
    let mut attacker = Flood::start(&bus, &a, 256);
    let (attempt, silent) = attacker.result();
    assert_eq!(silent, "held 64 refused 192");
    assert!(
        attempt.starts_with(&format!(
            "refused TooManyClients uid {} already holds 64 connections",
            a.uid
        )) && attempt.contains("max_clients_per_user = 64"),
        "{attempt}"
    );

    // Another user and root are served while the attacker holds its connections.
    assert_eq!(bystander_result(&bus, &b, "Limits/B/Inbox"), "ok");
    use_the_bus(&bus.d.options(), "Limits/Root/Inbox").unwrap();

    let mut admin = bus.d.connect();
    assert_eq!(counter(&mut admin, "clients_refused_per_user"), 193);
    assert_eq!(counter(&mut admin, "clients_refused"), 193);
    // The responder, the administrator and the attacker's 64.
    common::eventually("66 clients", || counter(&mut admin, "clients") == 66);
    attacker.stop();
    common::eventually("the attacker's connections to be gone", || {
        counter(&mut admin, "clients") == 2
    });
    // Its places are free again.
    assert_eq!(bystander_result(&bus, &a, "Limits/A/Inbox"), "ok");
}

#[test]
fn the_reserved_places_keep_the_bus_open_to_root() {
    let config = "max_clients = 32\nmax_clients_per_user = 32\nreserved_admin_clients = 4\n";
    let Some(bus) = Bus::start("the_reserved_places_keep_the_bus_open_to_root", config) else {
        return;
    };
    let a = bus.users.a.clone();
    let b = bus.users.b.clone();
    // With the responder connected, 27 places are open to ordinary users.
    let mut attacker = Flood::start(&bus, &a, 32);
    let (attempt, silent) = attacker.result();
    assert_eq!(silent, "held 27 refused 5");
    assert!(
        attempt.contains("refused TooManyClients")
            && attempt.contains("the last 4 (reserved_admin_clients)"),
        "{attempt}"
    );
    let result = bystander_result(&bus, &b, "Limits/B/Inbox");
    assert!(
        result.contains("failed: connect") && result.contains("reserved_admin_clients"),
        "{result}"
    );

    // Root still gets in: to look (stats with the client list, a monitor) and to use the bus.
    let mut admin = bus.d.connect();
    let report = admin.stats(true).unwrap();
    assert_eq!(report.clients.len(), 29);
    let mut monitor = bus.d.connect();
    monitor.monitor(&["*"]).unwrap();
    use_the_bus(&bus.d.options(), "Limits/Root/Inbox").unwrap();
    assert_eq!(counter(&mut admin, "clients_refused"), 7);
    assert_eq!(counter(&mut admin, "clients_refused_per_user"), 0);
    attacker.stop();
}

/// Not run on its own: started as a test user. Opens N connections and on each writes all
/// but the last 4 KiB of one frame of about 8 MiB, without a Hello; prints how many took
/// the whole part and the error the first refused one was sent (`PARTIAL`), then keeps
/// them open until its standard input closes.
#[test]
#[ignore = "helper: started as a test user by the tests of this file"]
fn partial_frames() {
    let spec = spec();
    let n: usize = spec[1].parse().unwrap();
    let payload = vec![0x55; 8 * 1024 * 1024 - 1024];
    let frame = qcop::wire::Frame::Send {
        seq: 1,
        ack: false,
        channel: "Limits/Big",
        message: "big(QByteArray)",
        payload: &payload,
    }
    .to_vec();
    let part = &frame[..frame.len() - 4096];
    let (mut held, mut dropped, mut error) = (Vec::new(), 0, None);
    for _ in 0..n {
        let mut s = UnixStream::connect(&spec[0]).expect("connect");
        if std::io::Write::write_all(&mut s, part).is_ok() {
            held.push(s);
            continue;
        }
        dropped += 1;
        if error.is_none() {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let mut reader = qcop::wire::FrameReader::new(qcop::wire::MAX_FRAME_BODY);
            reader.buffer_mut(got.len())[..got.len()].copy_from_slice(&got);
            reader.filled(got.len());
            error = Some(match reader.next_frame() {
                Ok(Some(qcop::wire::Frame::Error { code, text, .. })) => format!("{code:?} {text}"),
                other => format!("no error frame: {other:?}"),
            });
        }
    }
    println!(
        "PARTIAL held {} dropped {dropped} error {}",
        held.len(),
        error.unwrap_or_default()
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}

/// Resident memory of `pid` in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn partial_frames_stay_within_the_memory_budget() {
    const BUDGET: u64 = 32 * 1024 * 1024;
    let config = format!(
        "max_payload = 8388608\nmax_queue_bytes = 8454144\nmax_total_queue_bytes = {BUDGET}\n"
    );
    let Some(bus) = Bus::start("partial_frames_stay_within_the_memory_budget", &config) else {
        return;
    };
    let a = bus.users.a.clone();
    let b = bus.users.b.clone();
    let mut admin = bus.d.connect();
    let before = rss_kib(bus.d.pid());

    let mut child = bus.helper(&a, "partial_frames", &["24"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let result = line(&mut out, "PARTIAL ");
    // The user's share is a quarter of the budget (8 MiB): one such frame.
    assert!(
        result.starts_with(&format!(
            "held 1 dropped 23 error TooLarge partial frames of uid {}",
            a.uid
        )) && result.contains("max_total_queue_bytes"),
        "{result}"
    );
    assert_eq!(counter(&mut admin, "clients_dropped_input_budget"), 23);
    common::eventually("the held partial frame to be read", || {
        counter(&mut admin, "bytes_partial_input") > 8 * 1024 * 1024 - 8192
    });
    let after = rss_kib(bus.d.pid());
    assert!(
        after < before + BUDGET / 1024,
        "qcopd grew from {before} KiB to {after} KiB, over max_total_queue_bytes"
    );

    // Others are served meanwhile.
    assert_eq!(bystander_result(&bus, &b, "Limits/B/Inbox"), "ok");
    use_the_bus(&bus.d.options(), "Limits/Root/Inbox").unwrap();

    drop(child.stdin.take());
    let _ = std::io::copy(&mut out, &mut std::io::sink());
    assert!(child.wait().unwrap().success());
    common::eventually("the partial frame's buffer to be released", || {
        counter(&mut admin, "bytes_partial_input") == 0
    });
}

#[test]
fn a_frame_left_unfinished_is_dropped_after_the_partial_frame_timeout() {
    // Needs no other users: the timeout applies to everyone.
    let d = Daemon::start_with("partial_frame_timeout_ms = 100\n");
    let mut admin = d.connect();
    let mut raw = common::RawClient::greeted(&d.socket);
    let frame = qcop::wire::Frame::Send {
        seq: 1,
        ack: false,
        channel: "Limits/Slow",
        message: "slow(QByteArray)",
        payload: &[7; 4000],
    }
    .to_vec();
    raw.write(&frame[..2000]).unwrap();
    match raw.until_closed().as_slice() {
        [common::Got::Error {
            fatal: true,
            code: qcop::wire::ErrorCode::Timeout,
            ..
        }] => {}
        got => panic!("expected a Timeout error, got {got:?}"),
    }
    assert_eq!(counter(&mut admin, "clients_dropped_partial_timeout"), 1);
    assert_eq!(counter(&mut admin, "bytes_partial_input"), 0);
    // Whole frames, however many, are never cut off.
    let mut steady = common::RawClient::greeted(&d.socket);
    for _ in 0..3 {
        steady.write(&frame).unwrap();
    }
    common::eventually("three messages received", || {
        counter(&mut admin, "messages_received") == 3
    });
    assert_eq!(counter(&mut admin, "clients_dropped_partial_timeout"), 1);
}

/// Not run on its own: started as a test user. Opens two connections and subscribes to
/// the given names alternately on each, printing `SUB NAME: ok` or `SUB NAME: refused
/// CODE TEXT` for each, then waits for its standard input to close.
#[test]
#[ignore = "helper: started as a test user by the tests of this file"]
fn subscriber() {
    let spec = spec();
    let opts = options(&spec[0]);
    let mut conns = [
        Connection::connect(&opts).expect("connect"),
        Connection::connect(&opts).expect("connect"),
    ];
    for (i, name) in spec[1..].iter().enumerate() {
        match conns[i % 2].subscribe(name) {
            Ok(()) => println!("SUB {name}: ok"),
            Err(Error::Refused { code, text }) => println!("SUB {name}: refused {code:?} {text}"),
            Err(e) => println!("SUB {name}: error {e}"),
        }
    }
    println!("SUB done");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn subscriptions_and_patterns_are_limited_per_user_over_all_its_connections() {
    let config = "max_subscriptions_per_user = 6\nmax_patterns_per_user = 2\n";
    let Some(bus) = Bus::start("subscriptions_and_patterns_are_limited_per_user", config) else {
        return;
    };
    let a = bus.users.a.clone();
    let b = bus.users.b.clone();
    let names = [
        "A/p1/*", "A/p2/*", "A/p3/*", "A/c1", "A/c2", "A/c3", "A/c4", "A/c5",
    ];
    let mut child = bus.helper(&a, "subscriber", &names);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let results: Vec<String> = names
        .iter()
        .map(|n| line(&mut out, &format!("SUB {n}: ")))
        .collect();
    line(&mut out, "SUB done");
    // Two patterns, then the third refused; exact channels up to six in all.
    for (i, r) in results.iter().enumerate() {
        let refused = matches!(i, 2 | 7);
        assert_eq!(
            r.starts_with("refused TooManySubscriptions"),
            refused,
            "{names:?}: {results:?}"
        );
    }
    assert!(
        results[2].contains(&format!("uid {}", a.uid))
            && results[2].contains("max_patterns_per_user = 2"),
        "{}",
        results[2]
    );
    assert!(
        results[7].contains("max_subscriptions_per_user = 6"),
        "{}",
        results[7]
    );
    let mut admin = bus.d.connect();
    assert_eq!(counter(&mut admin, "subscriptions_refused_per_user"), 2);

    // Another user and root still subscribe (patterns too), send and call.
    assert_eq!(bystander_result(&bus, &b, "Limits/B/Inbox"), "ok");
    use_the_bus(&bus.d.options(), "Limits/Root/Inbox").unwrap();

    // The user's subscriptions are released with its connections.
    drop(child.stdin.take());
    let _ = std::io::copy(&mut out, &mut std::io::sink());
    assert!(child.wait().unwrap().success());
    common::eventually("the subscriber to be gone", || {
        counter(&mut admin, "clients") == 2
    });
    assert_eq!(bystander_result(&bus, &a, "Limits/A/Inbox"), "ok");
}
