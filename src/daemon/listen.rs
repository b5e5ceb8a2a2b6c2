//! Setting up the listening socket: the directory and file permissions, stale sockets left by
//! a crashed daemon, and sockets inherited through systemd socket activation.

use super::config::Config;
use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the daemon could not start listening.
#[derive(Debug)]
pub enum ListenError {
    /// Another daemon answers on the socket.
    AlreadyRunning(PathBuf),
    /// Something that is not a socket is in the way.
    NotASocket(PathBuf),
    /// The socket directory belongs to another user (or is a symlink).
    UnsafeDirectory(PathBuf),
    /// The configured group does not exist.
    UnknownGroup(String),
    /// An inherited descriptor is not a listening Unix stream socket.
    BadActivationFd,
    /// A system call failed.
    Io(&'static str, PathBuf, io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::AlreadyRunning(p) => {
                write!(f, "another qcopd is already running on {}", p.display())
            }
            ListenError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; refusing to replace it",
                p.display()
            ),
            ListenError::UnsafeDirectory(p) => write!(
                f,
                "socket directory {} is a symlink or belongs to another user",
                p.display()
            ),
            ListenError::UnknownGroup(g) => write!(f, "socket_group {g:?} does not exist"),
            ListenError::BadActivationFd => {
                f.write_str("inherited LISTEN_FDS descriptor is not a Unix stream socket")
            }
            ListenError::Io(what, p, e) => write!(f, "cannot {what} {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ListenError {}

/// A bound listener and whether the daemon owns (and must remove) the socket file.
pub struct Listening {
    /// The listener, non-blocking.
    pub listener: UnixListener,
    /// Path to unlink at shutdown; `None` for an inherited socket.
    pub owned_path: Option<PathBuf>,
}

/// Uses the socket inherited from systemd if there is one, otherwise binds `path`.
pub fn listen(path: &Path, cfg: &Config) -> Result<Listening, ListenError> {
    if let Some(fd) = crate::sys::take_activation_fd() {
        let listener = UnixListener::from(fd);
        // Inherited descriptors are not close-on-exec: the programs of activated services
        // must not get the listening socket.
        nix::fcntl::fcntl(
            &listener,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| ListenError::Io("configure", path.into(), e.into()))?;
        let addr = listener
            .local_addr()
            .map_err(|_| ListenError::BadActivationFd)?;
        log::info!(
            "using socket-activated listener {:?}",
            addr.as_pathname().unwrap_or(Path::new("(unnamed)"))
        );
        listener
            .set_nonblocking(true)
            .map_err(|e| ListenError::Io("configure", path.into(), e))?;
        return Ok(Listening {
            listener,
            owned_path: None,
        });
    }
    let gid = match &cfg.socket_group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| ListenError::UnknownGroup(name.clone()))?
                .gid,
        ),
        None => None,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, cfg.dir_mode(), gid)?;
    }
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| ListenError::Io("bind", path.into(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode()))
        .map_err(|e| ListenError::Io("set permissions on", path.into(), e))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| ListenError::Io("chown", path.into(), e.into()))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| ListenError::Io("configure", path.into(), e))?;
    Ok(Listening {
        listener,
        owned_path: Some(path.to_owned()),
    })
}

/// Creates the socket directory with `mode`, or checks an existing one is ours.
fn prepare_dir(dir: &Path, mode: u32, gid: Option<nix::unistd::Gid>) -> Result<(), ListenError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if meta.file_type().is_symlink() || !meta.is_dir() {
                return Err(ListenError::UnsafeDirectory(dir.into()));
            }
            // A shared directory such as /tmp is fine to use but not ours to chmod.
            if meta.uid() != nix::unistd::geteuid().as_raw() {
                if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
                    return Err(ListenError::UnsafeDirectory(dir.into()));
                }
                return Ok(());
            }
            if meta.mode() & 0o1000 != 0 {
                return Ok(()); // sticky, world-writable system directory like /tmp
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| ListenError::Io("create", dir.into(), e))?;
        }
        Err(e) => return Err(ListenError::Io("inspect", dir.into(), e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ListenError::Io("set permissions on", dir.into(), e))?;
    if let Some(gid) = gid {
        nix::unistd::chown(dir, None, Some(gid))
            .map_err(|e| ListenError::Io("chown", dir.into(), e.into()))?;
    }
    Ok(())
}

/// Removes a socket file nobody listens on; refuses if a daemon answers or if the path is
/// not a socket.
fn remove_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ListenError::Io("inspect", path.into(), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.into()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenError::AlreadyRunning(path.into())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|e| ListenError::Io("remove", path.into(), e))
        }
        Err(e) => Err(ListenError::Io("probe", path.into(), e)),
    }
}

/// Tells systemd (or any `$NOTIFY_SOCKET` listener) about a state change, e.g. `READY=1`.
/// Does nothing when the variable is unset.
pub fn sd_notify(state: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let addr = if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&target)
    };
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        log::warn!("sd_notify({state:?}) to {target} failed: {e}");
    }
}
