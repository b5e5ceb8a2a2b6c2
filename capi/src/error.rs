//! Error codes, the last-error texts, and the wrapper every exported function runs in: it
//! turns a Rust error into a negative code plus a message, and a panic into
//! `QCOP_E_INTERNAL` (no panic unwinds into C).

use crate::ffi;
use qcop_client::client::ErrorCode;
use qcop_client::shm::{ShmError, StreamError};
use qcop_client::Error;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const QCOP_OK: c_int = 0;
/// An argument is invalid: a NULL pointer where one is required, text that is not UTF-8,
/// a negative timeout other than -1, a buffer too small.
pub const QCOP_E_INVAL: c_int = -1;
/// The daemon's socket cannot be reached (usually: qcopd is not running).
pub const QCOP_E_CONNECT: c_int = -2;
/// The connection failed after connecting (a socket error).
pub const QCOP_E_IO: c_int = -3;
/// The daemon sent bytes that do not decode, or an unexpected handshake.
pub const QCOP_E_PROTOCOL: c_int = -4;
/// The daemon refused the request (its text says why, see `qcop_strerror`).
pub const QCOP_E_REFUSED: c_int = -5;
/// The daemon's access policy refused the request.
pub const QCOP_E_DENIED: c_int = -6;
/// A channel, message or object name is invalid.
pub const QCOP_E_BADNAME: c_int = -7;
/// A send or call addressed a pattern (`QPE/*`); messages go to plain channels.
pub const QCOP_E_WILDCARD: c_int = -8;
/// The payload exceeds the daemon's limit (or a stream's slot size).
pub const QCOP_E_TOOLARGE: c_int = -9;
/// No answer in time (for calls: the responder did not reply in time).
pub const QCOP_E_TIMEOUT: c_int = -10;
/// A call found nobody subscribed to its channel.
pub const QCOP_E_NORESPONDER: c_int = -11;
/// Every recipient of a call left without answering.
pub const QCOP_E_RESPONDERGONE: c_int = -12;
/// The responder answered the call with an error (its text is the message).
pub const QCOP_E_REMOTE: c_int = -13;
/// The connection to the daemon is lost (and was not, or could not be, re-established).
pub const QCOP_E_DISCONNECTED: c_int = -14;
/// `qcop_unsubscribe` for a channel the connection is not subscribed to.
pub const QCOP_E_NOTSUBSCRIBED: c_int = -15;
/// `qcop_reply` for a message that is not a call.
pub const QCOP_E_NOTACALL: c_int = -16;
/// A QDataStream payload does not hold the value asked for (too short, bad length).
pub const QCOP_E_DECODE: c_int = -17;
/// The handle is busy: a loan, sample or lock is outstanding, or none is for this call.
pub const QCOP_E_STATE: c_int = -18;
/// The shared-memory stream ended and everything published was read.
pub const QCOP_E_ENDED: c_int = -19;
/// qcopd went away while a shared-memory stream waited.
pub const QCOP_E_DAEMONGONE: c_int = -20;
/// A lossy publisher overwrote a borrowed message (what was read may be mixed).
pub const QCOP_E_OVERWRITTEN: c_int = -21;
/// The publisher of a stream wrote something impossible; the slot was skipped.
pub const QCOP_E_CORRUPT: c_int = -22;
/// A segment or semaphore with that name already exists.
pub const QCOP_E_EXISTS: c_int = -23;
/// No segment or semaphore with that name.
pub const QCOP_E_NOTFOUND: c_int = -24;
/// A shared-memory size or argument is invalid (zero size, value past the maximum...).
pub const QCOP_E_SHMINVAL: c_int = -25;
/// The daemon's limits on segments and semaphores are reached, or the lock failed.
pub const QCOP_E_RESOURCES: c_int = -26;
/// A Rust panic was caught inside the library: a bug. Close the handle.
pub const QCOP_E_INTERNAL: c_int = -27;

/// A failed call: its code and its message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) text: String,
}

impl Failure {
    pub(crate) fn new(code: c_int, text: impl Into<String>) -> Failure {
        Failure {
            code,
            text: text.into(),
        }
    }

    pub(crate) fn inval(text: impl Into<String>) -> Failure {
        Failure::new(QCOP_E_INVAL, text)
    }

    pub(crate) fn state(text: impl Into<String>) -> Failure {
        Failure::new(QCOP_E_STATE, text)
    }
}

fn refused_code(code: ErrorCode) -> c_int {
    match code {
        ErrorCode::Denied => QCOP_E_DENIED,
        ErrorCode::BadName => QCOP_E_BADNAME,
        ErrorCode::TooLarge => QCOP_E_TOOLARGE,
        _ => QCOP_E_REFUSED,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            Error::Connect(..) => QCOP_E_CONNECT,
            Error::Io(_) => QCOP_E_IO,
            Error::Protocol(_) | Error::Handshake(_) => QCOP_E_PROTOCOL,
            Error::Refused { code, .. } => refused_code(*code),
            Error::BadName(_) => QCOP_E_BADNAME,
            Error::WildcardSend(_) => QCOP_E_WILDCARD,
            Error::TooLarge { .. } => QCOP_E_TOOLARGE,
            Error::Timeout => QCOP_E_TIMEOUT,
            Error::NoResponder => QCOP_E_NORESPONDER,
            Error::ResponderGone => QCOP_E_RESPONDERGONE,
            Error::Remote(_) => QCOP_E_REMOTE,
            Error::Disconnected => QCOP_E_DISCONNECTED,
            Error::NotSubscribed(_) => QCOP_E_NOTSUBSCRIBED,
            Error::NotACall => QCOP_E_NOTACALL,
            // The client library's error enum may grow.
            #[allow(unreachable_patterns)]
            _ => QCOP_E_REFUSED,
        };
        // A responder's error text is the message itself, as the caller wants to show it.
        let text = match e {
            Error::Remote(text) => text,
            e => e.to_string(),
        };
        Failure { code, text }
    }
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Failure {
        let code = match e {
            StreamError::Timeout => QCOP_E_TIMEOUT,
            StreamError::Ended => QCOP_E_ENDED,
            StreamError::DaemonGone => QCOP_E_DAEMONGONE,
            StreamError::Corrupt(_) => QCOP_E_CORRUPT,
            StreamError::TooLarge { .. } => QCOP_E_TOOLARGE,
            StreamError::Overwritten => QCOP_E_OVERWRITTEN,
            #[allow(unreachable_patterns)]
            _ => QCOP_E_IO,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<ShmError> for Failure {
    fn from(e: ShmError) -> Failure {
        let text = e.to_string();
        let code = match e {
            ShmError::PermissionDenied(_) => QCOP_E_DENIED,
            ShmError::InvalidSize(_) | ShmError::InvalidArgument(_) => QCOP_E_SHMINVAL,
            ShmError::BadName(_) => QCOP_E_BADNAME,
            ShmError::AlreadyExists(_) => QCOP_E_EXISTS,
            ShmError::NotFound(_) => QCOP_E_NOTFOUND,
            ShmError::LockError(_) | ShmError::OutOfResources(_) => QCOP_E_RESOURCES,
            ShmError::Unavailable(_) => QCOP_E_REFUSED,
            ShmError::Daemon(d) => Failure::from(d).code,
            #[allow(unreachable_patterns)]
            _ => QCOP_E_REFUSED,
        };
        Failure { code, text }
    }
}

/// The text of a handle's last failed call (valid until its next failing call).
pub(crate) struct ErrorText(CString);

impl ErrorText {
    pub(crate) fn new() -> ErrorText {
        ErrorText(CString::default())
    }

    pub(crate) fn set(&mut self, text: &str) {
        self.0 = c_text(text);
    }

    pub(crate) fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr()
    }
}

/// A C string of `text`, cut at an interior NUL (a daemon's text could hold one).
pub(crate) fn c_text(text: &str) -> CString {
    let end = text.find('\0').unwrap_or(text.len());
    CString::new(&text[..end]).unwrap_or_default()
}

thread_local! {
    /// The calling thread's last error text (`qcop_strerror(NULL)`).
    static LAST: RefCell<ErrorText> = RefCell::new(ErrorText::new());
}

fn set_thread(text: &str) {
    // A thread being torn down has no slot left: nothing to record then.
    let _ = LAST.try_with(|l| l.borrow_mut().set(text));
}

pub(crate) fn thread_text() -> *const c_char {
    LAST.try_with(|l| l.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr().cast())
}

static EMPTY: &[u8; 1] = b"\0";

/// A handle that keeps its own last-error text.
pub(crate) trait Handle {
    fn error_text(&mut self) -> &mut ErrorText;
}

fn panic_failure() -> Failure {
    Failure::new(
        QCOP_E_INTERNAL,
        "internal error in libqcop (a bug): close this handle",
    )
}

fn record(slot: Option<&mut ErrorText>, f: &Failure) -> c_int {
    if let Some(slot) = slot {
        slot.set(&f.text);
    }
    set_thread(&f.text);
    f.code
}

/// Runs `f` on the handle behind `h`; a failure is recorded in the handle and the thread.
pub(crate) fn with<T: Handle>(
    h: *mut T,
    what: &str,
    f: impl FnOnce(&mut T) -> Result<c_int, Failure>,
) -> c_int {
    let Some(h) = ffi::handle_mut(h) else {
        return record(None, &Failure::inval(format!("{what} is NULL")));
    };
    match catch_unwind(AssertUnwindSafe(|| f(&mut *h))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => record(Some(h.error_text()), &e),
        Err(_) => record(Some(h.error_text()), &panic_failure()),
    }
}

/// Runs `f`, which has no handle to record in (opening one, arguments): a failure is
/// recorded for the calling thread.
pub(crate) fn run(f: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => record(None, &e),
        Err(_) => record(None, &panic_failure()),
    }
}

/// Runs `f` for a value-returning accessor: a NULL handle or a panic gives `fallback`.
pub(crate) fn get<T, R>(h: *const T, fallback: R, f: impl FnOnce(&T) -> R) -> R {
    match ffi::handle(h) {
        Some(h) => catch_unwind(AssertUnwindSafe(|| f(h))).unwrap_or(fallback),
        None => fallback,
    }
}

/// Frees a handle; a panic in a destructor is caught like any other.
pub(crate) fn free<T>(h: *mut T) {
    let _ = catch_unwind(AssertUnwindSafe(|| ffi::free_handle(h)));
}

/// The short name of an error code, e.g. `"QCOP_E_TIMEOUT"`.
const NAMES: [&str; 28] = [
    "QCOP_OK\0",
    "QCOP_E_INVAL\0",
    "QCOP_E_CONNECT\0",
    "QCOP_E_IO\0",
    "QCOP_E_PROTOCOL\0",
    "QCOP_E_REFUSED\0",
    "QCOP_E_DENIED\0",
    "QCOP_E_BADNAME\0",
    "QCOP_E_WILDCARD\0",
    "QCOP_E_TOOLARGE\0",
    "QCOP_E_TIMEOUT\0",
    "QCOP_E_NORESPONDER\0",
    "QCOP_E_RESPONDERGONE\0",
    "QCOP_E_REMOTE\0",
    "QCOP_E_DISCONNECTED\0",
    "QCOP_E_NOTSUBSCRIBED\0",
    "QCOP_E_NOTACALL\0",
    "QCOP_E_DECODE\0",
    "QCOP_E_STATE\0",
    "QCOP_E_ENDED\0",
    "QCOP_E_DAEMONGONE\0",
    "QCOP_E_OVERWRITTEN\0",
    "QCOP_E_CORRUPT\0",
    "QCOP_E_EXISTS\0",
    "QCOP_E_NOTFOUND\0",
    "QCOP_E_SHMINVAL\0",
    "QCOP_E_RESOURCES\0",
    "QCOP_E_INTERNAL\0",
];

pub(crate) fn code_name(code: c_int) -> *const c_char {
    let i = code.checked_neg().and_then(|n| usize::try_from(n).ok());
    let name = i.and_then(|i| NAMES.get(i)).unwrap_or(&"QCOP_E_UNKNOWN\0");
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_name() {
        assert_eq!(NAMES.len() as c_int - 1, -QCOP_E_INTERNAL);
        // By text: identical string literals need not share an address.
        let name = |c| crate::ffi::str_arg(code_name(c), "name").ok();
        assert_eq!(name(QCOP_E_TIMEOUT), Some("QCOP_E_TIMEOUT"));
        assert_eq!(name(QCOP_E_INTERNAL), Some("QCOP_E_INTERNAL"));
        assert_eq!(name(QCOP_OK), Some("QCOP_OK"));
        assert!(NAMES.iter().all(|n| n.ends_with('\0')));
    }

    #[test]
    fn a_panic_becomes_an_error_code() {
        assert_eq!(run(|| panic!("boom")), QCOP_E_INTERNAL);
        assert_eq!(run(|| Err(Failure::inval("x"))), QCOP_E_INVAL);
        assert_eq!(run(|| Ok(3)), 3);
    }

    #[test]
    fn texts_are_cut_at_a_nul() {
        assert_eq!(c_text("a\0b").as_bytes(), b"a");
    }
}
