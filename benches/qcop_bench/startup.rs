//! Group `startup`: time from spawning qcopd to the first completed handshake.
//!
//! A prober process (placed like a client) spawns the program itself, so the started
//! process inherits the prober's CPU affinity without a `taskset` exec in between, then
//! tries to connect every 100 µs. Figure: qcopd with its embedded defaults, until
//! `Connection::connect` (connect + Hello/Welcome) succeeds. Floor: this bench binary in
//! the `idle-listener` role, until a connect and a one-byte echo succeed.

use crate::procs::{die_with_parent, role, Placement};
use crate::report::{ms, ratio, Summary, Table};
use crate::util::{field, parse_list, role_args, Context, Res, RoleArgs};
use qcop::{ConnectOptions, Connection};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Gives up on a start after this long.
const START_LIMIT: Duration = Duration::from_secs(5);
/// Pause between connection attempts.
const RETRY: Duration = Duration::from_micros(100);

/// Measures the placements where a start is meaningful (split has no second process).
pub fn run(dir: &Path, placements: &[Placement], starts: usize) -> Res<Table> {
    let mut table = Table::new(
        "Start-up to accepting connections (ms, spawn → first completed handshake)",
        vec![
            "placement",
            "qcopd median",
            "qcopd min … max",
            "floor median",
            "floor min … max",
            "median ÷ floor",
        ],
    );
    table.notes.push(format!(
        "{starts} starts each, alternating floor and qcopd; connection attempts every \
         {} µs. Floor: a minimal Rust std process that binds a Unix socket and echoes a byte.",
        RETRY.as_micros()
    ));
    for pl in placements
        .iter()
        .filter(|p| p.pin != crate::procs::Pin::Split)
    {
        eprintln!("startup: {}", pl.label());
        let args = role_args(&[("dir", &dir.display()), ("starts", &starts)]);
        let mut prober = role("startup-probe", &args, pl.cpus(0))?;
        let line = prober.expect("result")?;
        prober.finish()?;
        let q = Summary::of(parse_list(&field::<String>(&line, "qcopd")?)?)
            .ok_or("startup: no qcopd samples")?;
        let f = Summary::of(parse_list(&field::<String>(&line, "floor")?)?)
            .ok_or("startup: no floor samples")?;
        table.rows.push(vec![
            pl.label(),
            ms(q.p50),
            format!("{} … {}", ms(q.min), ms(q.max)),
            ms(f.p50),
            format!("{} … {}", ms(f.min), ms(f.max)),
            ratio(q.p50 as f64, f.p50 as f64),
        ]);
    }
    Ok(table)
}

/// `startup-probe`: starts qcopd and the floor `--starts` times each.
pub fn probe_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let dir = Path::new(args.str("dir")?);
    let starts: usize = args.num("starts")?;
    let (mut qcopd, mut floor) = (Vec::new(), Vec::new());
    let (floor_socket, qcopd_socket) = (dir.join("floor.sock"), dir.join("start.sock"));
    for _ in 0..starts {
        // The floor leaves its socket behind when killed; qcopd removes its own.
        let _ = std::fs::remove_file(&floor_socket);
        floor.push(start_floor(&floor_socket)?);
        qcopd.push(start_qcopd(&qcopd_socket)?);
    }
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    println!("result qcopd={} floor={}", join(&qcopd), join(&floor));
    Ok(())
}

fn start_qcopd(socket: &Path) -> Res<u64> {
    let opts = ConnectOptions::new()
        .socket(socket)
        .name("startup-probe")
        .timeout(START_LIMIT);
    let t0 = Instant::now();
    let mut child = Command::new(crate::procs::qcopd_path())
        .arg("--socket")
        .arg(socket)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .ctx("spawn qcopd")?;
    let result = loop {
        match Connection::connect(&opts) {
            Ok(conn) => break Ok((t0.elapsed(), conn)),
            Err(qcop::Error::Connect(..)) if t0.elapsed() < START_LIMIT => {
                std::thread::sleep(RETRY)
            }
            Err(e) => break Err(format!("qcopd start: {e}")),
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().ctx("wait for qcopd")?;
    let (elapsed, conn) = result?;
    drop(conn);
    if !status.success() {
        return Err(format!("qcopd exited with {status} after SIGTERM"));
    }
    Ok(elapsed.as_nanos() as u64)
}

fn start_floor(socket: &Path) -> Res<u64> {
    let exe = std::env::current_exe().ctx("current_exe")?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(["--role", "idle-listener", "--listen"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .ctx("spawn floor")?;
    let result = loop {
        match UnixStream::connect(socket) {
            Ok(mut s) => {
                let mut b = [0u8; 1];
                break s
                    .write_all(b"x")
                    .and_then(|_| s.read_exact(&mut b))
                    .map(|_| t0.elapsed())
                    .ctx("floor echo");
            }
            Err(_) if t0.elapsed() < START_LIMIT => std::thread::sleep(RETRY),
            Err(e) => break Err(format!("floor start: {e}")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(result?.as_nanos() as u64)
}
