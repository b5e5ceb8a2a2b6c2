//! The boundary with C: every raw pointer the library is given is read or written here, and
//! nowhere else. The contract each helper relies on is the header's: a non-NULL pointer
//! points to what the function's documentation says (a NUL-terminated string, `len`
//! readable bytes, a handle this library returned and that was not freed), and stays valid
//! for the call. NULL is always checked; nothing else about a pointer can be.
#![allow(unsafe_code)]

pub(crate) mod held;

use crate::error::Failure;
use std::ffi::{c_char, c_void, CStr};

/// The handle behind `p`, or `None` for NULL.
pub(crate) fn handle<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: a non-NULL handle pointer was returned by this library (`into_handle`) and not
    // yet freed (the header's rule), so it points to a live, aligned `T`.
    unsafe { p.as_ref() }
}

/// The handle behind `p`, mutably, or `None` for NULL.
pub(crate) fn handle_mut<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: as in `handle`; the header forbids using one handle from two threads at once,
    // so this is the only reference to it during the call.
    unsafe { p.as_mut() }
}

/// Moves `value` to the heap and hands its pointer to C (freed by `free_handle`).
pub(crate) fn into_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Frees a handle made by `into_handle`; NULL is ignored.
pub(crate) fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: `p` came from `Box::into_raw` in `into_handle` and the caller gives it back
        // once (the header's rule: a freed handle is not used again).
        drop(unsafe { Box::from_raw(p) });
    }
}

/// A NUL-terminated UTF-8 string argument; `None` for NULL.
pub(crate) fn opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL string arguments are NUL-terminated and live for the call (header).
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes
        .to_str()
        .map(Some)
        .map_err(|_| Failure::inval(format!("{what} is not valid UTF-8")))
}

/// A NUL-terminated UTF-8 string argument that must not be NULL.
pub(crate) fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    opt_str(p, what)?.ok_or_else(|| Failure::inval(format!("{what} is NULL")))
}

/// Checks a C buffer argument: `Ok(false)` for an empty one (NULL allowed), `Ok(true)` when
/// `p` may be turned into a slice of `len` bytes.
fn check_buffer(null: bool, len: usize, what: &str) -> Result<bool, Failure> {
    if len == 0 {
        return Ok(false);
    }
    if null {
        return Err(Failure::inval(format!(
            "{what} is NULL with a length of {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::inval(format!(
            "{what}: length {len} is impossible"
        )));
    }
    Ok(true)
}

/// `len` bytes at `p`; NULL is allowed when `len` is 0.
pub(crate) fn bytes<'a>(p: *const c_void, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if !check_buffer(p.is_null(), len, what)? {
        return Ok(&[]);
    }
    // SAFETY: `p` is non-NULL and points to `len` readable bytes that live for the call
    // (header); `len` fits an allocation (checked above). `u8` has no alignment or validity
    // requirements.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// `len` writable bytes at `p`; NULL is allowed when `len` is 0.
pub(crate) fn bytes_mut<'a>(
    p: *mut c_void,
    len: usize,
    what: &str,
) -> Result<&'a mut [u8], Failure> {
    if !check_buffer(p.is_null(), len, what)? {
        return Ok(&mut []);
    }
    // SAFETY: `p` is non-NULL and points to `len` writable bytes that nothing else uses during
    // the call (header); `len` fits an allocation (checked above).
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// An array of `n` NUL-terminated UTF-8 strings (NULL allowed when `n` is 0).
pub(crate) fn str_array<'a>(
    p: *const *const c_char,
    n: usize,
    what: &str,
) -> Result<Vec<&'a str>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Failure::inval(format!("{what} is NULL with {n} elements")));
    }
    if n > isize::MAX as usize / std::mem::size_of::<*const c_char>() {
        return Err(Failure::inval(format!(
            "{what}: {n} elements is impossible"
        )));
    }
    // SAFETY: `p` is non-NULL, aligned and points to `n` string pointers (header).
    let items = unsafe { std::slice::from_raw_parts(p, n) };
    items
        .iter()
        .enumerate()
        .map(|(i, &s)| str_arg(s, &format!("{what}[{i}]")))
        .collect()
}

/// Stores `value` through an out-parameter, if the caller passed one.
pub(crate) fn put<T>(p: *mut T, value: T) {
    // SAFETY: a non-NULL out-parameter points to writable, aligned storage for a `T` (header).
    if let Some(slot) = unsafe { p.as_mut() } {
        *slot = value;
    }
}

/// Stores `value` through an out-parameter that must not be NULL.
pub(crate) fn put_required<T>(p: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::inval(format!("{what} is NULL")));
    }
    put(p, value);
    Ok(())
}
