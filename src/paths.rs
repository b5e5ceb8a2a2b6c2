//! Where the daemon's socket lives by default.

use std::path::PathBuf;

/// Environment variable that overrides the socket path for the daemon, library and CLI.
pub const SOCKET_ENV: &str = "QCOP_SOCKET";

/// The socket path used when nothing else is configured:
/// `$QCOP_SOCKET` if set; `/run/qcop/qcopd.sock` for root; otherwise
/// `$XDG_RUNTIME_DIR/qcop/qcopd.sock`, or `/tmp/qcop-$UID/qcopd.sock` without a runtime dir.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    builtin_socket_path()
}

/// The built-in default, ignoring `$QCOP_SOCKET`.
pub fn builtin_socket_path() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/qcop/qcopd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("qcop/qcopd.sock"),
        None => PathBuf::from(format!("/tmp/qcop-{uid}/qcopd.sock")),
    }
}
