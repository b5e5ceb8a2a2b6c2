//! Running the `qcop` tool against a test daemon and reading what a user sees: exit status,
//! stdout and stderr.

use super::{eventually, Daemon};
use qcop::Connection;
use std::process::{Child, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Upper bound for a `qcop` process to finish; only a watchdog against hangs.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `qcop` to completion.
pub fn qcop(d: &Daemon, args: &[&str]) -> Output {
    finish(spawn(d, args))
}

/// Starts `qcop` in the background.
pub fn spawn(d: &Daemon, args: &[&str]) -> Child {
    d.cli().args(args).spawn().expect("spawn qcop")
}

/// Waits for a child to exit and collects its output, killing it if it hangs.
pub fn finish(child: Child) -> Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(output) => output.expect("wait for qcop"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("qcop did not exit within {WATCHDOG:?}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit status and the exact stdout.
#[track_caller]
pub fn assert_run(o: &Output, code: i32, expected_stdout: &str) {
    assert_eq!(
        (o.status.code(), stdout(o).as_str()),
        (Some(code), expected_stdout),
        "stderr: {}",
        stderr(o)
    );
}

/// Waits until the daemon reports a subscriber on `channel`.
pub fn wait_registered(conn: &mut Connection, channel: &str) {
    eventually(&format!("{channel} is registered"), || {
        conn.is_registered(channel).expect("is_registered")
    });
}

/// `s` as QDataStream writes a QString: a big-endian byte length, then UTF-16BE.
pub fn qstring(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().collect();
    let mut v = ((units.len() * 2) as u32).to_be_bytes().to_vec();
    for u in units {
        v.extend_from_slice(&u.to_be_bytes());
    }
    v
}
