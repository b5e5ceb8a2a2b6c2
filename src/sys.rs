//! The few operations that need `unsafe`: adopting file descriptors inherited from systemd.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// First descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes ownership of the first socket passed by systemd socket activation, if this process
/// was started that way (`LISTEN_PID` is our pid and `LISTEN_FDS` is at least 1). Clears the
/// variables so children do not inherit them.
pub fn take_activation_fd() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if pid != std::process::id() || fds == 0 {
        return None;
    }
    // Refuse a descriptor that is not open rather than adopting a number we do not own.
    nix::fcntl::fcntl(
        // SAFETY: fd 3 is only borrowed for this one fcntl(F_GETFD) call, which cannot
        // affect it; if it is not open the call fails with EBADF and we return None.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FDS_START) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .ok()?;
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID matched our pid) and nothing
    // else in the process has claimed it: this is the only place that adopts it, and the
    // environment variables were cleared above so it cannot be adopted twice.
    Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) })
}
