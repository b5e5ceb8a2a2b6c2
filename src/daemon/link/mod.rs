//! Links: qcopd daemons on several boards joined over TCP.
//!
//! The layers, bottom up:
//! - [`config`]: the `[links]` configuration section and its rules;
//! - `proto`: the link frames (same 12-byte header as the client protocol, own kinds);
//! - `auth`: the pre-shared-key challenge-response, the session keys and the daemon's
//!   randomness;
//! - `seal`: every frame after the handshake sealed in a ChaCha20-Poly1305 record;
//! - `topo`: flooded advertisements, the graph of daemons, interest per link;
//! - `dedupe`: per-origin windows that drop copies arriving by a second path;
//! - `queue`: a link's backlog, its unwritten frames and its unacknowledged messages;
//! - `layer` (re-exported here): the state of each link and of the link layer as a whole.
//!
//! The event-loop side (sockets ready, frames in, messages and calls routed) lives with the
//! loop in `server/links.rs` and `server/link_traffic.rs`. Everything but [`config`] is
//! compiled only with the cargo feature `links` (on by default); without it qcopd is
//! smaller and refuses a `[links]` section.

#[cfg(feature = "links")]
pub mod auth;
pub mod config;
#[cfg(feature = "links")]
pub mod dedupe;
#[cfg(feature = "links")]
mod net;
#[cfg(feature = "links")]
pub mod proto;
#[cfg(feature = "links")]
pub mod queue;
#[cfg(feature = "links")]
pub mod seal;
#[cfg(feature = "links")]
pub mod topo;

#[cfg(feature = "links")]
mod layer;
#[cfg(feature = "links")]
pub use layer::*;
