//! Process placement and the processes of a measurement: role processes (this bench binary
//! re-executed with `--role`), qcopd, and the watchdog that cleans up if anything hangs.
//!
//! Roles talk to the parent over their stdout, one line per event: `ready` once they can be
//! measured against, `result key=value ...` with what they measured. Their stderr is passed
//! through so that failures are visible.

use crate::util::{cpu_list_string, field, Context, Res};
use qcop::{ConnectOptions, Connection};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the processes of a measurement are placed on CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Every process on the first online CPU.
    Same,
    /// Each process on the CPU after its upstream neighbour's, so every hop crosses CPUs.
    Split,
    /// Every process allowed on every online CPU (explicitly, whatever the parent inherited).
    None,
    /// No `taskset`: children inherit the parent's affinity (e.g. `taskset -c 0 cargo bench`).
    Inherit,
}

impl Pin {
    /// Parses `same`, `split`, `none` or `inherit`.
    pub fn parse(text: &str) -> Res<Pin> {
        match text {
            "same" => Ok(Pin::Same),
            "split" => Ok(Pin::Split),
            "none" => Ok(Pin::None),
            "inherit" => Ok(Pin::Inherit),
            other => Err(format!(
                "unknown placement {other:?} (same, split, none, inherit)"
            )),
        }
    }
}

/// A placement resolved against this machine's CPUs.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The requested placement.
    pub pin: Pin,
    online: Vec<usize>,
    inherited: Vec<usize>,
}

impl Placement {
    /// Resolves `pin`; `None` if it cannot be honoured (split on one CPU).
    pub fn new(pin: Pin, online: &[usize], inherited: &[usize]) -> Option<Placement> {
        if pin == Pin::Split && online.len() < 2 {
            return None;
        }
        Some(Placement {
            pin,
            online: online.to_vec(),
            inherited: inherited.to_vec(),
        })
    }

    /// CPUs for the process `hop` steps downstream of the source (0: client or publisher,
    /// 1: qcopd or relay, 2: responder or subscribers), as a `taskset -c` list; `None` to
    /// inherit.
    pub fn cpus(&self, hop: usize) -> Option<String> {
        match self.pin {
            Pin::Same => Some(self.online[0].to_string()),
            Pin::Split => Some(self.online[hop % self.online.len()].to_string()),
            Pin::None => Some(cpu_list_string(&self.online)),
            Pin::Inherit => None,
        }
    }

    /// Short name for tables.
    pub fn label(&self) -> String {
        match self.pin {
            Pin::Same => format!("same-core (cpu {})", self.online[0]),
            Pin::Split => format!(
                "split (hops cross cpus {}→{})",
                self.online[0], self.online[1]
            ),
            Pin::None => format!("unpinned (cpus {})", cpu_list_string(&self.online)),
            Pin::Inherit if self.inherited.len() == 1 => {
                format!("same-core (inherited cpu {})", self.inherited[0])
            }
            Pin::Inherit => format!("inherited (cpus {})", cpu_list_string(&self.inherited)),
        }
    }
}

/// Pids of live children, for the watchdog.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills every child and exits if the run takes longer than `limit`: a hung measurement
/// must not hang CI. Children inherit nothing that would outlive them (roles also set a
/// parent-death signal).
pub fn arm_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("qcop_bench: watchdog: no result after {limit:?}; killing children");
        for &pid in live().iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::process::exit(1);
    });
}

/// A child process; killed and reaped when dropped.
pub struct Child {
    name: String,
    inner: std::process::Child,
    out: BufReader<ChildStdout>,
    input: Option<ChildStdin>,
    reaped: bool,
}

/// What to start.
pub struct Spawn<'a> {
    /// Name used in messages.
    pub name: &'a str,
    /// The executable.
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// `taskset -c` CPU list, or `None` to inherit.
    pub cpus: Option<String>,
    /// Extra environment.
    pub env: &'a [(&'a str, &'a str)],
    /// Give the child a pipe on stdin (roles wait on it for the parent's go-ahead).
    pub stdin: bool,
    /// Discard the child's stderr (a reference program's own chatter).
    pub quiet: bool,
}

impl Spawn<'_> {
    /// Starts the process with stdout piped to us.
    pub fn start(&self) -> Res<Child> {
        let mut cmd = match &self.cpus {
            // taskset execs the program, so the child's pid is the program's pid.
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(self.program);
                c
            }
            None => Command::new(self.program),
        };
        cmd.args(self.args)
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            });
        for var in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        let mut inner = cmd.spawn().ctx(format_args!(
            "start {} ({})",
            self.name,
            self.program.display()
        ))?;
        live().push(inner.id());
        let out = BufReader::new(inner.stdout.take().expect("stdout is piped"));
        let input = inner.stdin.take();
        Ok(Child {
            name: self.name.to_owned(),
            inner,
            out,
            input,
            reaped: false,
        })
    }
}

/// Starts this bench binary in a role.
pub fn role(role: &str, args: &[String], cpus: Option<String>) -> Res<Child> {
    let exe = std::env::current_exe().ctx("current_exe")?;
    let mut all = vec!["--role".to_owned(), role.to_owned()];
    all.extend_from_slice(args);
    Spawn {
        name: role,
        program: &exe,
        args: &all,
        cpus,
        env: &[],
        stdin: true,
        quiet: false,
    }
    .start()
}

impl Child {
    /// The process id (of the program itself, also when started through taskset).
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Reads lines until one starts with `tag`; returns the rest of it.
    pub fn expect(&mut self, tag: &str) -> Res<String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .out
                .read_line(&mut line)
                .ctx(format_args!("read from {}", self.name))?;
            if n == 0 {
                let status = self.reap()?;
                return Err(format!(
                    "{} ended ({status}) before saying {tag:?}",
                    self.name
                ));
            }
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return Ok(rest.trim().to_owned());
            }
        }
    }

    /// Writes a line to the child's stdin (a role waiting in [`wait_for_parent`]).
    pub fn send(&mut self, line: &str) -> Res<()> {
        let input = self.input.as_mut().ok_or("child has no stdin pipe")?;
        writeln!(input, "{line}").ctx(format_args!("write to {}", self.name))
    }

    /// Waits for the process to exit and checks that it succeeded.
    pub fn finish(mut self) -> Res<()> {
        let status = self.reap()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} failed ({status})", self.name))
        }
    }

    /// Sends SIGTERM and waits (SIGKILL after 5 s); returns the exit status.
    pub fn terminate(mut self) -> Res<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.inner.try_wait().ctx("wait")? {
                self.forget();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.inner.kill();
                return self.reap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn reap(&mut self) -> Res<ExitStatus> {
        self.input = None;
        let status = self
            .inner
            .wait()
            .ctx(format_args!("wait for {}", self.name))?;
        self.forget();
        Ok(status)
    }

    fn forget(&mut self) {
        self.reaped = true;
        let pid = self.inner.id();
        live().retain(|&p| p != pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
            self.forget();
        }
    }
}

/// Connects to qcopd, retrying while the socket is missing or refuses (daemon starting).
pub fn connect_retry(socket: &Path, name: &str, within: Duration) -> Res<Connection> {
    let opts = ConnectOptions::new()
        .socket(socket)
        .name(name)
        .timeout(Duration::from_secs(30));
    let deadline = Instant::now() + within;
    loop {
        match Connection::connect(&opts) {
            Ok(c) => return Ok(c),
            Err(qcop::Error::Connect(..)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("connect to {}: {e}", socket.display())),
        }
    }
}

/// Environment variable naming another qcopd binary to measure (e.g. a static musl build);
/// the default is the bench-profile qcopd cargo built with this bench.
pub const QCOPD_ENV: &str = "QCOP_BENCH_QCOPD";

/// The qcopd binary under test.
pub fn qcopd_path() -> PathBuf {
    std::env::var_os(QCOPD_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_qcopd")), PathBuf::from)
}

/// A running qcopd on a private socket.
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the bench-profile qcopd with `config` (TOML) on `dir/<tag>.sock` and waits
    /// until it completes a handshake.
    pub fn start(dir: &Path, tag: &str, config: &str, cpus: Option<String>) -> Res<Daemon> {
        let socket = dir.join(format!("{tag}.sock"));
        let config_path = dir.join(format!("{tag}.toml"));
        std::fs::write(&config_path, config).ctx("write qcopd config")?;
        let args = [
            "--socket".to_owned(),
            socket.display().to_string(),
            "--config".to_owned(),
            config_path.display().to_string(),
        ];
        let mut child = Spawn {
            name: "qcopd",
            program: &qcopd_path(),
            args: &args,
            cpus,
            env: &[("RUST_LOG", "warn")],
            stdin: false,
            quiet: false,
        }
        .start()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // Probe until it answers, but notice a daemon that exits instead of listening.
        loop {
            match connect_retry(&socket, "bench-probe", Duration::from_millis(50)) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            if let Some(status) = child.inner.try_wait().ctx("wait for qcopd")? {
                child.forget();
                return Err(format!("qcopd exited during start-up ({status})"));
            }
        }
        Ok(Daemon { child, socket })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Stops it with SIGTERM and checks it exited cleanly.
    pub fn stop(self) -> Res<()> {
        let status = self.child.terminate()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("qcopd did not shut down cleanly ({status})"))
        }
    }
}

/// In a role: waits for the parent's next line on stdin (or for it to go away).
pub fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Sets SIGKILL as this role process's parent-death signal, so that a killed bench does not
/// leave roles behind.
pub fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// Reads each reader's result: the latest end time and the totals.
pub fn collect_readers(readers: Vec<Child>) -> Res<(u64, u64, u64)> {
    let (mut end, mut received, mut lost) = (0u64, 0u64, 0u64);
    for mut r in readers {
        let line = r.expect("result")?;
        end = end.max(field(&line, "end_ns")?);
        received += field::<u64>(&line, "received")?;
        lost += field::<u64>(&line, "lost")?;
        r.finish()?;
    }
    Ok((end, received, lost))
}
