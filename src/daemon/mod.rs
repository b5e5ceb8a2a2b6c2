//! `qcopd`, the channel server: configuration, the listening socket and the event loop.
//!
//! - [`config`]: embedded defaults and the optional TOML file.
//! - [`listen`]: socket directory, permissions, stale sockets, socket activation, sd_notify.
//! - [`router`]: the subscription table (exact channels and patterns).
//! - [`outq`]: each client's bounded outgoing queue and the slow-consumer policy.
//! - [`server`]: the single-threaded epoll loop tying them together.
//! - [`stats`]: the counters `qcop stats` shows.

pub mod config;
pub mod listen;
pub mod outq;
pub mod router;
pub mod server;
pub mod stats;

pub use config::{Config, ConfigError, SlowConsumerPolicy};
pub use server::{Server, SYSTEM_CHANNEL};

use std::path::PathBuf;

/// Starts the daemon on `socket` with `cfg` and runs it until SIGTERM/SIGINT.
pub fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    socket: PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let listening = listen::listen(&socket, &cfg)?;
    if listening.owned_path.is_some() {
        log::info!(
            "listening on {} (mode {:o})",
            socket.display(),
            cfg.socket_mode()
        );
    }
    let mut server = Server::new(cfg, config_path, listening)?;
    server.run()?;
    Ok(())
}
