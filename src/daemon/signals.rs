//! SIGTERM/SIGINT/SIGHUP/SIGCHLD as flags plus a wake-up descriptor for the event loop.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Installed signal handlers. Install them before the socket accepts connections, so a
/// signal sent to a daemon that is already reachable is never fatal by default action.
pub struct Signals {
    /// Readable when a signal arrived; added to the epoll set.
    pub(crate) rx: UnixStream,
    terminate: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    child: Arc<AtomicBool>,
}

impl Signals {
    /// Routes SIGTERM and SIGINT to a shutdown flag, SIGHUP to a reload flag and SIGCHLD
    /// (an activated service exited) to a reap flag.
    pub fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let terminate = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let child = Arc::new(AtomicBool::new(false));
        for (sig, flag) in [
            (SIGTERM, &terminate),
            (SIGINT, &terminate),
            (SIGHUP, &reload),
            (SIGCHLD, &child),
        ] {
            // The flag is registered before the wake-up write, so the loop sees the flag set
            // when the byte wakes it.
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
        }
        Ok(Signals {
            rx,
            terminate,
            reload,
            child,
        })
    }

    /// A shutdown was requested.
    pub fn terminate_requested(&self) -> bool {
        self.terminate.load(Ordering::Relaxed)
    }

    /// A reload was requested since the last call (clears the request).
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }

    /// A child process exited since the last call (clears the flag).
    pub fn take_child_exited(&self) -> bool {
        self.child.swap(false, Ordering::Relaxed)
    }

    /// Empties the wake-up descriptor.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
    }
}
