//! Starting and reaping the programs of activatable services: `fork` and `execve`, the only
//! `unsafe` code of the daemon.
//!
//! `std::process::Command` would do, but costs tens of KiB of flash (its environment map
//! and spawn strategies); this is the small subset a service needs. Everything the child
//! uses is prepared before `fork`, so the child only makes async-signal-safe system calls,
//! and a failure in the child (switching ids, changing directory, `execve`) comes back to
//! the parent through a close-on-exec pipe, so it is reported as the error it was.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::ffi::{c_char, CString};
use std::fmt;

/// A program to start, prepared for `execve`.
#[derive(Debug, Clone)]
pub struct Program {
    /// Absolute path of the executable (also `argv[0]`).
    pub argv: Vec<CString>,
    /// `KEY=value` entries: the whole environment.
    pub envp: Vec<CString>,
    /// Working directory.
    pub cwd: CString,
    /// User to switch to.
    pub uid: Option<u32>,
    /// Group to switch to.
    pub gid: Option<u32>,
    /// Supplementary groups, set when switching user (empty: none).
    pub groups: Vec<u32>,
}

/// Why a program could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnError {
    /// The step that failed.
    pub step: &'static str,
    /// Its error.
    pub errno: Errno,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.errno.desc())
    }
}

/// Steps of the child, numbered for the error pipe.
const STEPS: [&str; 7] = [
    "redirecting stdin",
    "setting supplementary groups",
    "switching group",
    "switching user",
    "changing directory",
    "exec",
    "resetting signals",
];

/// Starts `p` with stdin from `/dev/null` and the daemon's stdout and stderr. Returns its
/// pid once it has exec'd; reap it with [`try_reap`].
pub fn spawn(p: &Program) -> Result<u32, SpawnError> {
    let fail = |step: usize| {
        move |errno| SpawnError {
            step: STEPS[step],
            errno,
        }
    };
    if p.argv.is_empty() {
        return Err(fail(5)(Errno::EINVAL));
    }
    let devnull = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(fail(0))?;
    let (report_rx, report_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fail(5))?;
    let argv: Vec<*const c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = p
        .envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let groups: Vec<Gid> = p.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    // SAFETY: after fork the child runs only the code below until execve or _exit: plain
    // system calls on data prepared above (no allocation, no lock), which are
    // async-signal-safe, so this is sound even if the parent had other threads.
    match unsafe { nix::unistd::fork() }.map_err(fail(5))? {
        ForkResult::Child => {
            let (step, errno) = child(p, &devnull, &argv, &envp, &groups);
            let mut report = [0u8; 5];
            report[0] = step;
            report[1..].copy_from_slice(&(errno as i32).to_be_bytes());
            let _ = nix::unistd::write(&report_tx, &report);
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // destructors, which belong to the parent's copy of the state.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(report_tx);
            let mut report = [0u8; 5];
            let mut got = 0;
            while got < report.len() {
                match nix::unistd::read(&report_rx, &mut report[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
            if got < report.len() {
                // The pipe closed on exec: the program runs.
                return Ok(child.as_raw() as u32);
            }
            // The child failed before exec and exits at once: reap it here.
            while let Err(Errno::EINTR) = waitpid(child, None) {}
            let step = STEPS.get(report[0] as usize).copied().unwrap_or("exec");
            let errno = Errno::from_raw(i32::from_be_bytes([
                report[1], report[2], report[3], report[4],
            ]));
            Err(SpawnError { step, errno })
        }
    }
}

/// The child's side: returns the failed step and its error (on success it does not return).
fn child(
    p: &Program,
    devnull: &std::os::fd::OwnedFd,
    argv: &[*const c_char],
    envp: &[*const c_char],
    groups: &[Gid],
) -> (u8, Errno) {
    if let Err(e) = nix::unistd::dup2_stdin(devnull) {
        return (0, e);
    }
    // The Rust runtime ignores SIGPIPE in the daemon; a program expects the default, and
    // an empty signal mask.
    let default = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigDfl,
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: installing the default disposition runs no handler code.
    if let Err(e) = unsafe { nix::sys::signal::sigaction(nix::sys::signal::SIGPIPE, &default) } {
        return (6, e);
    }
    let none = nix::sys::signal::SigSet::empty();
    if let Err(e) =
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&none), None)
    {
        return (6, e);
    }
    if p.uid.is_some() {
        // Like a login: the user's groups, not the daemon's. Fails harmlessly when not root.
        if let Err(e) = nix::unistd::setgroups(groups) {
            if e != Errno::EPERM {
                return (1, e);
            }
        }
    }
    if let Some(gid) = p.gid {
        if let Err(e) = nix::unistd::setgid(Gid::from_raw(gid)) {
            return (2, e);
        }
    }
    if let Some(uid) = p.uid {
        if let Err(e) = nix::unistd::setuid(Uid::from_raw(uid)) {
            return (3, e);
        }
    }
    if let Err(e) = nix::unistd::chdir(p.cwd.as_c_str()) {
        return (4, e);
    }
    // SAFETY: argv and envp are null-terminated arrays of pointers to the NUL-terminated
    // strings of `p`, which outlive this call (execve only returns on failure).
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
    (5, Errno::last())
}

/// How a started program ended, if it has: `Ok(None)` while it runs.
pub fn try_reap(pid: u32) -> Result<Option<String>, Errno> {
    match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG))? {
        WaitStatus::Exited(_, code) => Ok(Some(format!("exit status: {code}"))),
        WaitStatus::Signaled(_, sig, _) => {
            Ok(Some(format!("signal: {} ({})", sig as i32, sig.as_str())))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(args: &[&str]) -> Program {
        Program {
            argv: args.iter().map(|a| CString::new(*a).unwrap()).collect(),
            envp: vec![CString::new("QCOP_TEST=7").unwrap()],
            cwd: CString::new("/").unwrap(),
            uid: None,
            gid: None,
            groups: Vec::new(),
        }
    }

    fn wait(pid: u32) -> String {
        loop {
            if let Some(s) = try_reap(pid).unwrap() {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn runs_with_the_given_environment_and_reports_its_exit() {
        let pid = spawn(&program(&["/bin/sh", "-c", "exit $QCOP_TEST"])).unwrap();
        assert_eq!(wait(pid), "exit status: 7");
        // SIGPIPE has its default action again (the test harness, like the daemon, ignores
        // it) and no signal is blocked.
        let pid = spawn(&program(&["/bin/sleep", "30"])).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let mask = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            u64::from_str_radix(line[key.len()..].trim(), 16).unwrap()
        };
        let ignored = mask("SigIgn:");
        let blocked = mask("SigBlk:");
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        assert_eq!(wait(pid), "signal: 9 (SIGKILL)");
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE still ignored"
        );
        assert_eq!(blocked, 0);
        let pid = spawn(&program(&["/bin/sh", "-c", "kill -9 $$"])).unwrap();
        assert_eq!(wait(pid), "signal: 9 (SIGKILL)");
    }

    #[test]
    fn failures_in_the_child_come_back_as_errors() {
        let e = spawn(&program(&["/nonexistent/program"])).unwrap_err();
        assert_eq!(e.step, "exec");
        assert_eq!(e.errno, Errno::ENOENT);
        let mut p = program(&["/bin/sh", "-c", "exit 0"]);
        p.cwd = CString::new("/nonexistent/dir").unwrap();
        let e = spawn(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "changing directory: No such file or directory"
        );
    }
}
