//! `qcopd`, the channel server: configuration, the listening socket and the event loop.
//!
//! - [`config`]: embedded defaults and the optional TOML file.
//! - [`listen`]: socket directory, permissions, stale sockets, socket activation, sd_notify.
//! - [`router`]: the subscription table (exact channels and patterns).
//! - [`outq`]: each client's bounded outgoing queue and the slow-consumer policy.
//! - [`server`]: the single-threaded epoll loop tying them together.
//! - [`signals`]: SIGTERM/SIGINT/SIGHUP delivered to the loop.
//! - [`stats`]: the counters `qcop stats` shows.
//! - [`timers`]: call and handshake deadlines, with the time passed in.
//! - [`shm_segments`]: shared-memory segments and system semaphores (QSharedMemory,
//!   QSystemSemaphore): memfds handed to attachers, locks and units recovered from the dead.
//! - [`quota`]: what each user (uid) holds, against the per-user limits.
//! - [`policy`]: who may send, receive and monitor what (the `policy` rules).
//! - [`names`]: user and group names of the configuration, resolved at load.
//! - [`activate`]: services started on demand for their channel (`[[service]]`).
//! - `spawn`: fork and exec of those services (the daemon's only `unsafe` code).
//! - [`spool`]: the on-disk queue of persistent services.
//! - [`link`]: links to daemons on other boards over TCP.

pub mod activate;
pub mod config;
pub mod link;
pub mod listen;
pub mod names;
pub mod outq;
pub mod policy;
pub mod quota;
pub mod router;
pub mod server;
pub mod shm_segments;
pub mod signals;
#[allow(unsafe_code)]
mod spawn;
pub mod spool;
pub mod stats;
pub mod timers;

pub use config::{Config, ConfigError, SlowConsumerPolicy};
pub use server::{Server, SYSTEM_CHANNEL};

use std::path::PathBuf;

/// Starts the daemon on `socket` with `cfg` and runs it until SIGTERM/SIGINT.
pub fn run(
    mut cfg: Config,
    config_path: Option<PathBuf>,
    socket: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    // Handlers first: once the socket answers, a SIGTERM must mean a clean shutdown.
    let signals = signals::Signals::install()?;
    listen::fit_fd_limit(&mut cfg);
    let listening = listen::listen(&socket, &cfg)?;
    if listening.owned_path.is_some() {
        log::info!(
            "listening on {} (mode {:o})",
            socket.display(),
            cfg.socket_mode()
        );
    }
    let mut server = Server::new(cfg, config_path, listening, signals)?;
    server.run()?;
    Ok(())
}
