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
    /// The socket directory exists and is not safe to use; says why.
    UnsafeDirectory(PathBuf, String),
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
            ListenError::UnsafeDirectory(p, why) => write!(
                f,
                "refusing socket directory {}: {why}; choose another --socket or fix the \
                 directory",
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

/// Creates the socket directory with `mode` (and group `gid`), or, if it exists, checks that
/// it is safe to put the socket in and leaves it as it is: qcopd changes the mode and group
/// only of a directory it created, never of one such as `/run` that it was pointed into.
fn prepare_dir(dir: &Path, mode: u32, gid: Option<nix::unistd::Gid>) -> Result<(), ListenError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => return check_existing_dir(dir, &meta, mode, gid),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ListenError::Io("inspect", dir.into(), e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ListenError::Io("create", parent.into(), e))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Created by someone else meanwhile: theirs, so checked, not changed.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)
                .map_err(|e| ListenError::Io("inspect", dir.into(), e))?;
            return check_existing_dir(dir, &meta, mode, gid);
        }
        Err(e) => return Err(ListenError::Io("create", dir.into(), e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ListenError::Io("set permissions on", dir.into(), e))?;
    if let Some(gid) = gid {
        nix::unistd::chown(dir, None, Some(gid))
            .map_err(|e| ListenError::Io("chown", dir.into(), e.into()))?;
    }
    Ok(())
}

/// Refuses an existing socket directory that others could use to replace or intercept the
/// socket: a symlink or non-directory, one owned by another user than qcopd's or root, or
/// one that others may write (without the sticky bit that keeps them from removing what is
/// not theirs) — group write is trusted only for qcopd's own group or `socket_group`.
fn check_existing_dir(
    dir: &Path,
    meta: &std::fs::Metadata,
    mode: u32,
    gid: Option<nix::unistd::Gid>,
) -> Result<(), ListenError> {
    let unsafe_dir = |why: String| ListenError::UnsafeDirectory(dir.into(), why);
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to qcopd's user (uid {me}) or root",
            meta.uid()
        )));
    }
    let bits = meta.mode() & 0o7777;
    let sticky = bits & 0o1000 != 0;
    if bits & 0o002 != 0 && !sticky {
        return Err(unsafe_dir(format!(
            "everyone may write to it (mode {bits:04o}) and it is not sticky"
        )));
    }
    let trusted_group = meta.gid() == nix::unistd::getegid().as_raw()
        || gid.is_some_and(|g| g.as_raw() == meta.gid());
    if bits & 0o020 != 0 && !sticky && !trusted_group {
        return Err(unsafe_dir(format!(
            "group {} may write to it (mode {bits:04o}), which is neither qcopd's group nor \
             socket_group",
            meta.gid()
        )));
    }
    if bits & 0o777 != mode && meta.uid() == me && !sticky {
        log::info!(
            "socket directory {} exists with mode {:04o}; it is left as it is (qcopd gives \
             mode {mode:04o} only to a directory it creates)",
            dir.display(),
            bits
        );
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

/// Descriptors qcopd keeps for itself besides one per client: the listener, epoll, the
/// signal pipe, the standard streams, links, stream eventfds, segment memfds and the pipes
/// of services being started.
pub const RESERVED_FDS: u64 = 64;

/// Makes `max_clients` fit the open-file limit (`RLIMIT_NOFILE`): each client holds a
/// descriptor, and past the limit `accept` fails. Raises the soft limit towards
/// `max_clients + RESERVED_FDS` (up to the hard limit); if that is not enough, lowers
/// `max_clients` to what fits, and says so once.
pub fn fit_fd_limit(cfg: &mut Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    // rlim_t is 32 bits wide on armv7 (RLIM_INFINITY is its largest value), 64 elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let (soft, hard_limit) = (soft as u64, hard as u64);
    let need = u64::from(cfg.max_clients) + RESERVED_FDS;
    if soft >= need {
        return;
    }
    let raised = need.min(hard_limit);
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, raised as _, hard) {
        Ok(()) => raised,
        Err(e) => {
            log::warn!("cannot raise the open-file limit from {soft} to {raised}: {e}");
            soft
        }
    };
    if soft >= need {
        log::info!(
            "raised the open-file limit to {soft} for max_clients = {}",
            cfg.max_clients
        );
        return;
    }
    let fits = soft.saturating_sub(RESERVED_FDS).max(soft / 2).max(1);
    let fits = u32::try_from(fits).unwrap_or(u32::MAX);
    log::warn!(
        "max_clients = {} needs about {need} open files but the limit is {soft} (hard limit \
         {hard_limit}); serving at most {fits} clients (raise RLIMIT_NOFILE, e.g. LimitNOFILE= in \
         the systemd unit or ulimit -n, to serve more)",
        cfg.max_clients
    );
    cfg.max_clients = fits;
}

/// What the event loop does when `accept` fails for want of descriptors or memory (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM): it stops watching the listener for a while (10 ms, doubling up
/// to 1 s while it keeps failing, and ends early when a client disconnects), so that a
/// pending connection cannot make it spin, and it logs at most one line a minute.
/// Connected clients are served meanwhile; waiting connections stay in the backlog.
#[derive(Debug, Default)]
pub struct AcceptPause {
    until: Option<std::time::Instant>,
    delay: std::time::Duration,
    last_log: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptPause {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(1);
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Records a failed `accept` on the listener for `what` (clients or links) while
    /// `connected` of them are; the listener is to be ignored until
    /// [`AcceptPause::deadline`].
    pub fn failed(&mut self, what: &str, e: &io::Error, connected: usize) {
        let now = std::time::Instant::now();
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::LONGEST);
        self.until = Some(now + self.delay);
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < Self::LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        let more = match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more failures since the last report)"),
        };
        log::error!(
            "{what}: accept failed: {e}, with {connected} connected; new connections wait \
             until descriptors are free{more}"
        );
        self.last_log = Some(now);
    }

    /// A connection was accepted: the next failure starts with the shortest pause again.
    pub fn succeeded(&mut self) {
        self.delay = std::time::Duration::ZERO;
    }

    /// When to watch the listener again; `None` when it is watched.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.until
    }

    /// A descriptor was freed: try again at once.
    pub fn descriptor_freed(&mut self) {
        if self.until.is_some() {
            self.until = Some(std::time::Instant::now());
        }
    }

    /// True (once) when the pause is over and the listener is to be watched again.
    pub fn take_due(&mut self, now: std::time::Instant) -> bool {
        match self.until {
            Some(at) if at <= now => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}
