//! qcopd at its open-file limit (`RLIMIT_NOFILE`, set for the daemon with util-linux
//! `prlimit`): `max_clients` is fitted to the limit at start-up with one warning, and when
//! `accept` fails with EMFILE the daemon stays idle (CPU time and log lines are counted, not
//! wall time), keeps serving its connected clients, and accepts the waiting connections once
//! descriptors are free.

mod common;

use common::users::find_program;
use common::{counter, eventually, recv, temp_dir, Daemon, RawClient, WAIT};
use qcop::wire::ErrorCode;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `prlimit`, or `None` (after saying why) where this machine has none; under `CI=true`
/// its absence fails the test.
fn prlimit(test: &str) -> Option<PathBuf> {
    match find_program("prlimit") {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} cannot run: prlimit (util-linux) is not installed")
        }
        None => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: prlimit (util-linux) is not installed"
            );
            None
        }
    }
}

/// qcopd with `config`, started through `wrapper`, its log (level info) going to a file.
fn start_logged(config: &str, wrapper: &[&str]) -> (Daemon, PathBuf) {
    let dir = temp_dir("fd");
    let socket = dir.join("run/qcopd.sock");
    let cfg = dir.join("qcopd.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("qcopd.log");
    let (prog, args) = wrapper.split_first().expect("a wrapper");
    let child = Command::new(prog)
        .args(args)
        .arg(common::program("qcopd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(&cfg)
        .env_remove("QCOP_SOCKET")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn qcopd");
    let d = Daemon {
        child,
        socket,
        dir,
        config: Some(cfg),
    };
    let start = Instant::now();
    while UnixStream::connect(&d.socket).is_err() {
        assert!(start.elapsed() < WAIT, "qcopd did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    (d, log)
}

fn log_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// CPU time the process has used, user and system, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The lowest descriptor number the process does not use: with the limit there, it can
/// open nothing more.
fn lowest_free_fd(pid: u32) -> usize {
    let used: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// The daemon's open-file limit as `/proc` shows it: (soft, hard).
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_owned(), v[4].to_owned())
}

#[test]
fn max_clients_is_fitted_to_the_open_file_limit() {
    let Some(prlimit) = prlimit("max_clients_is_fitted_to_the_open_file_limit") else {
        return;
    };
    let prlimit = prlimit.to_str().unwrap();

    // A hard limit that allows it: the soft limit is raised, nothing else changes.
    let (d, log) = start_logged("max_clients = 1000\n", &[prlimit, "--nofile=40:4096", "--"]);
    assert_eq!(nofile(d.pid()), ("1064".to_owned(), "4096".to_owned()));
    assert_eq!(log_lines(&log, "raised the open-file limit to 1064"), 1);
    assert_eq!(log_lines(&log, "serving at most"), 0);
    drop(d);

    // A hard limit that does not: max_clients is lowered to what fits, with one warning,
    // and the clients past it are refused with TooManyClients instead of left hanging.
    let (d, log) = start_logged("max_clients = 1000\n", &[prlimit, "--nofile=40:40", "--"]);
    assert_eq!(
        log_lines(
            &log,
            "max_clients = 1000 needs about 1064 open files but the limit is 40"
        ),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(log_lines(&log, "serving at most 20 clients"), 1);
    let clients: Vec<RawClient> = (0..20).map(|_| RawClient::greeted(&d.socket)).collect();
    let mut extra = RawClient::connect(&d.socket);
    match extra.next() {
        Some(common::Got::Error { fatal, code, .. }) => {
            assert!(fatal);
            assert_eq!(code, ErrorCode::TooManyClients);
        }
        other => panic!("expected TooManyClients, got {other:?}"),
    }
    assert_eq!(clients.len(), 20);
    assert_eq!(log_lines(&log, "accept failed"), 0);
}

#[test]
fn out_of_descriptors_the_daemon_idles_and_serves_its_clients() {
    let Some(prlimit) = prlimit("out_of_descriptors_the_daemon_idles_and_serves_its_clients")
    else {
        return;
    };
    let (d, log) = start_logged("max_clients = 200\n", &["env"]);
    let mut sub = d.connect();
    sub.subscribe("fd/x").unwrap();
    let mut sender = d.connect();
    sender.send("fd/x", "before()", b"").unwrap();
    sender.flush().unwrap();
    assert_eq!(recv(&mut sub).message, "before()");

    // Lower the running daemon's (soft) limit to the descriptors it has: every accept now
    // fails. (The hard limit stays, so that it can be raised again without privileges.)
    let pid = d.pid().to_string();
    let set_limit = |n: usize| {
        let st = Command::new(&prlimit)
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(st.success(), "prlimit --pid");
    };
    set_limit(lowest_free_fd(d.pid()));
    // Connections the kernel completes but the daemon cannot accept.
    let waiting: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&d.socket).expect("connect"))
        .collect();
    eventually("accept failures", || {
        counter(&mut sender, "accept_failures") > 0
    });
    let cpu_before = cpu_ticks(d.pid());
    let failures_before = counter(&mut sender, "accept_failures");
    // A second with 20 connections pending. A loop that retried accept at once would burn
    // the whole second (100 ticks) and log thousands of lines.
    std::thread::sleep(Duration::from_secs(1));
    // Connected clients are served meanwhile.
    sender.send("fd/x", "during()", b"").unwrap();
    sender.flush().unwrap();
    assert_eq!(recv(&mut sub).message, "during()");
    let cpu = cpu_ticks(d.pid()) - cpu_before;
    let failures = counter(&mut sender, "accept_failures") - failures_before;
    eprintln!("a second at EMFILE: {cpu} ticks of CPU, {failures} failed accepts");
    assert!(
        cpu <= 10,
        "qcopd used {cpu} ticks of CPU in a second at EMFILE"
    );
    // 10 ms doubling to 1 s: a handful of retries, not a spin.
    assert!(failures <= 10, "{failures} accept attempts in a second");
    assert_eq!(
        log_lines(&log, "accept failed"),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(log_lines(&log, "Too many open files"), 1);

    // Descriptors free again: the waiting connections are accepted and served.
    set_limit(1024);
    eventually("the waiting connections accepted", || {
        counter(&mut sender, "clients") == 2 + 20
    });
    drop(waiting);
    let mut late = RawClient::greeted(&d.socket);
    late.sync(1);
}

/// The link listener (TCP) pauses the same way at EMFILE.
#[cfg(feature = "links")]
#[test]
fn out_of_descriptors_the_link_listener_idles_too() {
    let Some(prlimit) = prlimit("out_of_descriptors_the_link_listener_idles_too") else {
        return;
    };
    let config = "[links]\nname = \"a\"\nkey = \"a test key of more than 16 bytes\"\n\
                  listen = \"127.0.0.1:0\"\n";
    let (d, log) = start_logged(config, &["env"]);
    let mut conn = d.connect();
    let port = conn.stats(false).unwrap().get("link_listen_port").unwrap() as u16;
    let pid = d.pid().to_string();
    let set_limit = |n: usize| {
        let st = Command::new(&prlimit)
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(st.success(), "prlimit --pid");
    };
    set_limit(lowest_free_fd(d.pid()));
    let waiting: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    eventually("a failed accept", || {
        log_lines(&log, "links: accept failed") >= 1
    });
    let cpu_before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(1));
    // The connected client is served meanwhile.
    conn.subscribe("x").unwrap();
    let cpu = cpu_ticks(d.pid()) - cpu_before;
    eprintln!("a second at EMFILE on the link listener: {cpu} ticks of CPU");
    assert!(
        cpu <= 10,
        "qcopd used {cpu} ticks of CPU in a second at EMFILE"
    );
    assert_eq!(log_lines(&log, "accept failed"), 1);
    set_limit(1024);
    // Accepted (and refused past max_unauthenticated): every one is taken off the backlog.
    eventually("the waiting links accepted", || {
        let stats = conn.stats(false).unwrap();
        stats.get("links_accepted").unwrap() == waiting.len() as u64
    });
}
