//! Test harness: a real `qcopd` on a private socket, stopped when dropped.
#![allow(dead_code)]

pub mod cli;
pub mod fault_proxy;
pub mod users;

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

    /// Starts qcopd under a wrapper command (such as `ip netns exec NS`) that execs it.
    pub fn start_wrapped(config: &str, wrapper: &[&str]) -> Daemon {
        let dir = temp_dir("d");
        let socket = dir.join("run/qcopd.sock");
        let p = dir.join("qcopd.toml");
        std::fs::write(&p, config).expect("write config");
        let child = spawn_wrapped(wrapper, &socket, Some(&p));
        let d = Daemon {
            child,
            socket,
            dir,
            config: Some(p),
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
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Replaces the configuration file; it takes effect at the next [`Daemon::restart`].
    pub fn set_config(&mut self, text: &str) {
        let p = self.dir.join("qcopd.toml");
        std::fs::write(&p, text).expect("write config");
        self.config = Some(p);
    }

    /// The daemon's counters and links.
    pub fn stats(&self) -> qcop::wire::StatsReport {
        let mut c = self.connect();
        c.stats(false).expect("stats")
    }

    /// A `qcop` CLI command pointed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(program("qcop"));
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

/// The program `name` (`qcopd` or `qcop`) that the tests run. `QCOP_BIN_DIR`, read at run
/// time, names the directory of installed programs (the ptest on a target sets it);
/// otherwise it is the one cargo built for this test binary, `<profile>/NAME` next to
/// `<profile>/deps/TEST-HASH`. No path is compiled in (`env!("CARGO_BIN_EXE_qcopd")`
/// would put the build directory into every test binary).
pub fn program(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("QCOP_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    exe.parent()
        .and_then(Path::parent)
        .map(|profile| profile.join(name))
        .unwrap_or_else(|| {
            panic!("{name}: no cargo build directory above {exe:?}; set QCOP_BIN_DIR")
        })
}

fn spawn_daemon(socket: &Path, config: Option<&Path>) -> Child {
    spawn_wrapped(&[], socket, config)
}

fn spawn_wrapped(wrapper: &[&str], socket: &Path, config: Option<&Path>) -> Child {
    let qcopd = program("qcopd");
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(qcopd);
            c
        }
        None => Command::new(qcopd),
    };
    cmd.arg("--socket")
        .arg(socket)
        .env_remove("QCOP_SOCKET")
        .env(
            "RUST_LOG",
            std::env::var("QCOP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
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

// ----- helpers shared by the bus, robustness and lifecycle tests -------------------------

/// The next message on `conn`, waiting up to [`WAIT`]; panics if none comes.
pub fn recv(conn: &mut Connection) -> qcop::Message {
    match conn.recv_timeout(WAIT) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("no message arrived within {WAIT:?}"),
        Err(e) => panic!("recv failed: {e}"),
    }
}

/// The next lifecycle notice on the system channel: the message signature and the channel
/// named in its QString payload.
pub fn recv_notice(conn: &mut Connection) -> (String, String) {
    use qcop::datastream::{decode_args, ArgType, Value};
    let m = recv(conn);
    assert_eq!(
        m.channel,
        qcop::daemon::SYSTEM_CHANNEL,
        "unexpected message {m:?}"
    );
    match decode_args(&[ArgType::QString], &m.data).as_deref() {
        Ok([Value::QString(Some(name))]) => (m.message, name.clone()),
        other => panic!("notice {} has a bad payload: {other:?}", m.message),
    }
}

/// A daemon counter from `stats(false)`.
pub fn counter(conn: &mut Connection, name: &str) -> u64 {
    let report = conn.stats(false).expect("stats");
    report
        .get(name)
        .unwrap_or_else(|| panic!("qcopd reports no counter {name:?}"))
}

/// Waits up to [`WAIT`] for `child` to exit (killing it on timeout) and returns its status.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a raw connection read from the daemon, owned (decoded frames borrow the buffer).
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// Handshake answer.
    Welcome { client_id: u32, max_payload: u32 },
    /// A request succeeded.
    Ok { seq: u32, value: u32 },
    /// A request failed, or (fatal) the connection is about to close.
    Error {
        seq: u32,
        fatal: bool,
        code: qcop::wire::ErrorCode,
        text: String,
    },
    /// A delivered message.
    Message {
        channel: String,
        message: String,
        payload: Vec<u8>,
    },
    /// Messages dropped for this connection.
    Lost(u64),
    /// Any other frame.
    Other(qcop::wire::Kind),
}

/// A connection that bypasses the client library: writes arbitrary bytes, decodes answers.
pub struct RawClient {
    pub stream: UnixStream,
    reader: qcop::wire::FrameReader,
}

impl RawClient {
    /// Connects without saying Hello.
    pub fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket).expect("connect to qcopd");
        stream.set_read_timeout(Some(WAIT)).expect("set timeout");
        stream.set_write_timeout(Some(WAIT)).expect("set timeout");
        RawClient {
            stream,
            reader: qcop::wire::FrameReader::new(qcop::wire::MAX_FRAME_BODY),
        }
    }

    /// Connects and completes the handshake.
    pub fn greeted(socket: &Path) -> RawClient {
        let mut raw = RawClient::connect(socket);
        raw.send(&raw_hello());
        match raw.next() {
            Some(Got::Welcome { .. }) => raw,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Writes bytes as they are; fails if the daemon already closed the connection.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.stream, bytes)
    }

    /// Writes an encoded frame.
    pub fn send(&mut self, frame: &qcop::wire::Frame<'_>) {
        self.write(&frame.to_vec()).expect("write frame");
    }

    /// The next frame from the daemon, `None` once the daemon closed the connection.
    /// Panics if nothing arrives within [`WAIT`] or the bytes do not decode.
    pub fn next(&mut self) -> Option<Got> {
        use qcop::wire::Frame;
        use std::io::{ErrorKind, Read};
        loop {
            if let Some(frame) = self.reader.next_frame().expect("daemon sent a bad frame") {
                return Some(match frame {
                    Frame::Welcome {
                        client_id,
                        max_payload,
                        ..
                    } => Got::Welcome {
                        client_id,
                        max_payload,
                    },
                    Frame::Ok { seq, value } => Got::Ok { seq, value },
                    Frame::Error {
                        seq,
                        fatal,
                        code,
                        text,
                    } => Got::Error {
                        seq,
                        fatal,
                        code,
                        text: text.to_owned(),
                    },
                    Frame::Message {
                        channel,
                        message,
                        payload,
                        ..
                    } => Got::Message {
                        channel: channel.to_owned(),
                        message: message.to_owned(),
                        payload: payload.to_vec(),
                    },
                    Frame::Lost { count } => Got::Lost(count),
                    other => Got::Other(other.kind()),
                });
            }
            match (&self.stream).read(self.reader.buffer_mut(64 * 1024)) {
                Ok(0) => return None,
                Ok(n) => self.reader.filled(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Closing a socket with unread input resets the peer instead of a clean EOF.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no frame from qcopd within {WAIT:?}: {e}"),
            }
        }
    }

    /// Reads until the daemon closes the connection; returns everything it sent.
    pub fn until_closed(&mut self) -> Vec<Got> {
        let mut all = Vec::new();
        while let Some(got) = self.next() {
            all.push(got);
        }
        all
    }

    /// Round trip proving the connection is still served: `Sync` answered by `Ok`.
    /// Messages arriving before the answer are returned.
    pub fn sync(&mut self, seq: u32) -> Vec<Got> {
        self.send(&qcop::wire::Frame::Sync { seq });
        let mut before = Vec::new();
        loop {
            match self.next() {
                Some(Got::Ok { seq: s, .. }) if s == seq => return before,
                Some(other) => before.push(other),
                None => panic!("qcopd closed the connection instead of answering Sync"),
            }
        }
    }
}

/// A valid `Hello` frame.
pub fn raw_hello() -> qcop::wire::Frame<'static> {
    qcop::wire::Frame::Hello {
        version_min: qcop::wire::PROTOCOL_VERSION,
        version_max: qcop::wire::PROTOCOL_VERSION,
        name: "raw",
    }
}

/// A counter of `d`'s `qcop stats`, by name.
pub fn stat(d: &Daemon, name: &str) -> u64 {
    d.stats()
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// The link of `d` to the daemon called `peer`, once it is known by that name.
pub fn link_to(d: &Daemon, peer: &str) -> Option<qcop::wire::LinkInfo> {
    d.stats().links.into_iter().find(|l| l.name == peer)
}
