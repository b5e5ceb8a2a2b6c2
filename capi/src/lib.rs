//! libqcop: the C API of qcop, for C and C++ programs (built with cargo-c into
//! `libqcop.so.0`, `libqcop.a`, `qcop.h` and `qcop.pc`; see docs/C-API.md).
//!
//! A thin layer over the Rust client library: every function converts its arguments,
//! calls the library and converts the result. The layers:
//! - [`ffi`]: the only code that reads or writes through C pointers (`unsafe`, each block
//!   with its reason), and `ffi::held`, which lets a handle keep a loan, a sample or a lock
//!   of its own across calls;
//! - `error`: the error codes, last-error texts, and the wrapper that turns a panic into
//!   `QCOP_E_INTERNAL`;
//! - `conn` and `message`: connections, messages, channel lists and counters;
//! - `names`: the channel-name rules (what is a pattern, what it matches);
//! - `args`: the QDataStream argument builder and reader;
//! - `stream`: shared-memory streams; `segment`: segments and semaphores.
//!
//! The exported functions are `#[no_mangle] extern "C"`, which the `unsafe_code` lint
//! counts as unsafe: their modules allow it for that attribute alone and contain no
//! `unsafe` block (the test script checks that `unsafe {` appears only under `ffi/`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
pub mod args;
#[allow(unsafe_code)]
pub mod conn;
pub mod error;
pub mod ffi;
#[allow(unsafe_code)]
pub mod message;
#[allow(unsafe_code)]
pub mod names;
#[allow(unsafe_code)]
pub mod segment;
#[allow(unsafe_code)]
pub mod stream;
