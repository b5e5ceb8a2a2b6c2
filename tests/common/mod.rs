//! Test harness: a real `qcopd` on a private socket, stopped when dropped.
#![allow(dead_code)]

use qcop::{ConnectOptions, Connection};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Generous bound for anything a test waits on; tests never assert on speed.
pub const WAIT: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh empty directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("qcop-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub config: Option<PathBuf>,
}

impl Daemon {
    /// Starts qcopd with embedded defaults.
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// Starts qcopd with `config` as the contents of its TOML file (empty: no file).
    pub fn start_with(config: &str) -> Daemon {
        let dir = temp_dir("d");
        let socket = dir.join("run/qcopd.sock");
        let cfg_path = (!config.is_empty()).then(|| {
            let p = dir.join("qcopd.toml");
            std::fs::write(&p, config).expect("write config");
            p
        });
        let child = spawn_daemon(&socket, cfg_path.as_deref());
        let d = Daemon {
            child,
            socket,
            dir,
            config: cfg_path,
        };
        d.wait_ready();
        d
    }

    /// Starts a daemon again on the same socket (after a crash or stop).
    pub fn restart(&mut self) {
        self.child = spawn_daemon(&self.socket, self.config.as_deref());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            assert!(start.elapsed() < WAIT, "qcopd did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .socket(&self.socket)
            .timeout(WAIT)
            .name("test")
    }

    pub fn connect(&self) -> Connection {
        Connection::connect(&self.options()).expect("connect to qcopd")
    }

    /// Sends SIGKILL and reaps the process (the socket file stays behind, as after a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signal qcopd");
    }

    /// SIGTERM, then waits for exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(start.elapsed() < WAIT, "qcopd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Number of open file descriptors of the daemon.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A `qcop` CLI command pointed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qcop"));
        c.env("QCOP_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_daemon(socket: &Path, config: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qcopd"));
    cmd.arg("--socket")
        .arg(socket)
        .env_remove("QCOP_SOCKET")
        .env("RUST_LOG", std::env::var("QCOP_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.spawn().expect("spawn qcopd")
}

/// Polls `f` until it returns true or [`WAIT`] passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
