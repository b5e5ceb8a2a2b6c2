//! Channel-name rules as qcopd applies them: which names are patterns, and what a pattern
//! matches. A program that hands one connection's messages to several local subscribers
//! (the Qt library's `QCopChannel` objects) needs exactly the daemon's rules.

use crate::error::{self, Failure, QCOP_E_BADNAME};
use crate::ffi;
use qcop_client::pattern::{is_pattern, Pattern};
use std::ffi::{c_char, c_int};

/// Whether `name` is a pattern: 1 if it contains `*` (as in Qt's QCOP; `?` and `[...]` are
/// wildcards only inside a pattern, so `cam?` is a plain channel), 0 if not, or
/// `QCOP_E_INVAL` for NULL or text that is not UTF-8 (`qcop_strerror(NULL)` says which).
///
/// ```c
/// if (qcop_is_pattern("QPE/*") == 1) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_is_pattern(name: *const c_char) -> c_int {
    error::run(|| Ok(c_int::from(is_pattern(ffi::str_arg(name, "name")?))))
}

/// Whether a subscription to `pattern` receives messages sent to `channel`: 1 or 0. A name
/// that is not a pattern matches only itself. `QCOP_E_BADNAME` for a pattern the daemon
/// would refuse (an unclosed `[`), `QCOP_E_INVAL` for NULL or text that is not UTF-8.
///
/// ```c
/// if (qcop_pattern_matches("QPE/cam[0-3]*", "QPE/cam2") == 1) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_pattern_matches(pattern: *const c_char, channel: *const c_char) -> c_int {
    error::run(|| {
        let pattern = ffi::str_arg(pattern, "pattern")?;
        let channel = ffi::str_arg(channel, "channel")?;
        if !is_pattern(pattern) {
            return Ok(c_int::from(pattern == channel));
        }
        let compiled = Pattern::new(pattern)
            .map_err(|e| Failure::new(QCOP_E_BADNAME, format!("pattern {pattern:?}: {e}")))?;
        Ok(c_int::from(compiled.matches(channel)))
    })
}
