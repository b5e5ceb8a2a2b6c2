//! The daemon's life: restarts with reconnecting clients, a second daemon on a live socket,
//! SIGTERM, SIGHUP reloads, and the peer credentials it reports.

mod common;

use common::{counter, recv, wait_exit, Daemon, WAIT};
use nix::sys::signal::Signal;
use qcop::wire::ErrorCode;
use qcop::{Connection, Error};
use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn reconnecting_client_gets_its_subscriptions_back_after_a_daemon_restart() {
    let mut d = Daemon::start();
    let mut r = Connection::connect(&d.options().reconnect(true)).unwrap();
    let subscriptions = ["re/a", "re/b", "re/p/*"];
    for s in subscriptions {
        r.subscribe(s).unwrap();
    }

    let (got, reconnects) = std::thread::scope(|s| {
        // The client waits for messages across the crash and the restart.
        let receiver = s.spawn(|| {
            let mut got = Vec::new();
            while got.len() < 3 {
                match r.recv_timeout(WAIT) {
                    Ok(Some(m)) => got.push((m.channel, m.data)),
                    Ok(None) => panic!("nothing arrived within {WAIT:?} after the restart"),
                    Err(e) => panic!("the reconnecting client failed: {e}"),
                }
            }
            (got, r.reconnects())
        });

        d.kill();
        assert!(
            d.socket.exists(),
            "a crashed daemon leaves its socket file behind"
        );
        let refused = std::os::unix::net::UnixStream::connect(&d.socket).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // The new daemon replaces the stale socket (the harness waits until it answers).
        d.restart();

        let mut fresh = d.connect();
        common::eventually("the client to re-register its subscriptions", || {
            let channels = fresh.channels().unwrap();
            subscriptions
                .iter()
                .all(|s| channels.iter().any(|c| c.name == *s && c.subscribers == 1))
        });
        fresh.send("re/a", "one()", b"1").unwrap();
        fresh.send("re/b", "two()", b"2").unwrap();
        fresh.send("re/p/x", "three()", b"3").unwrap();
        fresh.flush().unwrap();
        receiver.join().unwrap()
    });
    let want: Vec<(String, Vec<u8>)> = [("re/a", b"1"), ("re/b", b"2"), ("re/p/x", b"3")]
        .iter()
        .map(|(c, d)| (c.to_string(), d.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(reconnects, 1);
    assert_eq!(r.subscriptions().collect::<Vec<_>>(), subscriptions);
}

#[test]
fn a_second_daemon_on_a_live_socket_exits_with_status_1() {
    let d = Daemon::start();
    let mut c = d.connect();
    c.subscribe("still/here").unwrap();
    let mut second = Command::new(common::program("qcopd"))
        .arg("--socket")
        .arg(&d.socket)
        .env_remove("QCOP_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qcopd");
    let status = wait_exit(&mut second);
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("already running"),
        "unclear message: {stderr}"
    );

    // The first daemon and its socket are untouched.
    assert!(d.socket.exists());
    c.send("still/here", "ping()", b"").unwrap();
    assert_eq!(recv(&mut c).message, "ping()");
    let mut other = d.connect();
    assert!(other.is_registered("still/here").unwrap());
}

#[test]
fn sigterm_tells_clients_removes_the_socket_and_exits_0() {
    let mut d = Daemon::start();
    // A completed handshake means the signal handlers are installed.
    let mut c = d.connect();
    c.subscribe("x").unwrap();
    assert_eq!(d.stop(), Some(0));
    assert!(!d.socket.exists(), "the socket file was left behind");
    match c.recv_timeout(WAIT) {
        Err(Error::Refused {
            code: ErrorCode::ShuttingDown,
            ..
        }) => {}
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
}

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_the_file_is_broken() {
    let d = Daemon::start_with("max_payload = 65536\n");
    let config = d.config.clone().expect("config file");
    let mut old = d.connect();
    assert_eq!(counter(&mut old, "reloads"), 0);

    std::fs::write(&config, "max_payload = 1024\n").unwrap();
    d.signal(Signal::SIGHUP);
    common::eventually("the reload", || counter(&mut old, "reloads") == 1);
    let mut new = d.connect();
    assert_eq!(new.limits().max_payload, 1024);
    assert!(matches!(
        new.send("x", "m()", &[0; 2000]),
        Err(Error::TooLarge {
            size: 2000,
            max: 1024
        })
    ));

    for broken in [
        "max_payload = [\n",
        "max_clients = 0\n",
        "no_such_key = 1\n",
    ] {
        let failures = counter(&mut old, "reload_failures");
        std::fs::write(&config, broken).unwrap();
        d.signal(Signal::SIGHUP);
        common::eventually("the failed reload", || {
            counter(&mut old, "reload_failures") == failures + 1
        });
    }
    assert_eq!(counter(&mut old, "reloads"), 1);
    assert_eq!(counter(&mut old, "reload_failures"), 3);

    // Still serving, with the last good configuration.
    let mut after = d.connect();
    assert_eq!(after.limits().max_payload, 1024);
    after.subscribe("x").unwrap();
    new.send("x", "m()", &[7; 1024]).unwrap();
    new.flush().unwrap();
    assert_eq!(recv(&mut after).data, [7; 1024]);
}

#[test]
fn stats_show_each_clients_peer_credentials() {
    let d = Daemon::start();
    let mut c = Connection::connect(&d.options().name("creds-test")).unwrap();
    let report = c.stats(true).unwrap();
    let me = report
        .clients
        .iter()
        .find(|info| info.id == c.client_id())
        .expect("this connection is listed");
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.uid, nix::unistd::getuid().as_raw());
    assert_eq!(me.gid, nix::unistd::getgid().as_raw());
    assert_eq!(me.name, "creds-test");
    assert_eq!(report.clients.len(), 1);
}

#[test]
fn readiness_and_shutdown_are_reported_to_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = common::temp_dir("notify");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let socket = dir.join("qcopd.sock");
    let mut child = Command::new(common::program("qcopd"))
        .arg("--socket")
        .arg(&socket)
        .env_remove("QCOP_SOCKET")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn qcopd");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY notification");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.contains("READY=1"), "got {ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "got {ready:?}"
    );
    // Ready means accepting: a client connects at once.
    let opts = qcop::ConnectOptions::new().socket(&socket).timeout(WAIT);
    Connection::connect(&opts).expect("connect after READY=1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING notification");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
