//! qcop: QCOP-style channel IPC for embedded Linux.
//!
//! Processes talk through named *channels* (`QPE/System`, `sensors/imu`): a message such as
//! `setVolume(int)` with a payload is broadcast to every process subscribed to the channel,
//! including wildcard subscribers (`QPE/*`). The `qcopd` daemon routes messages over a Unix
//! socket; this crate holds the daemon, the client library and the pieces both share.
//!
//! The layers, bottom up:
//! - [`wire`]: the frame codec spoken between clients and the daemon (and between daemons).
//!   Every byte from a socket goes through its checked decoder.
//! - [`datastream`]: Qt `QDataStream` encoding of message arguments, and message signatures.
//! - [`pattern`]: channel name rules and wildcard matching.
//! - [`client`]: the library applications link: connect, subscribe, send, receive, call.
//! - [`daemon`]: the channel server behind the `qcopd` binary.
//! - [`paths`]: where the socket lives by default.
//! - [`shm`]: shared-memory foundations (memfd, mappings, shared futexes), and on them
//!   [`shm::SharedMemory`] and [`shm::SystemSemaphore`] (Qt's `QSharedMemory` and
//!   `QSystemSemaphore`, with locks and semaphore units recovered from dead holders).
//!
//! The daemon is also a system bus: an access policy by user and group, sender credentials
//! for receivers that ask, applications started on demand for their channel, and monitors
//! (see [`daemon::policy`] and [`daemon::activate`]).
//!
//! `unsafe` code is confined to named modules, each block with its safety argument: `sys`
//! (adopting inherited and received file descriptors), [`shm::futex`] (the futex system call),
//! [`shm::map`] (memory mappings), `shm::borrow` (in-place access to a locked segment) and
//! `daemon::spawn` (fork and exec of activated services).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod datastream;
pub mod paths;
pub mod pattern;
pub mod shm;
#[allow(unsafe_code)]
mod sys;
pub mod wire;

pub use client::{
    ConnectOptions, Connection, Credentials, Error, Message, MessageRef, Monitored, Reply,
    Revocation,
};
