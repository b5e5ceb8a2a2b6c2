//! The errors of [`SharedMemory`](super::SharedMemory) and
//! [`SystemSemaphore`](super::SystemSemaphore): Qt's cases, each with the daemon's or the
//! library's explanation.

use crate::client;
use crate::wire::ErrorCode;
use std::fmt;

/// Why a segment or semaphore operation failed.
///
/// | Qt (`QSharedMemory::SharedMemoryError`, `QSystemSemaphore::SystemSemaphoreError`) | here |
/// |---|---|
/// | `PermissionDenied` | [`ShmError::PermissionDenied`] |
/// | `InvalidSize` | [`ShmError::InvalidSize`] |
/// | `KeyError` | [`ShmError::BadName`] |
/// | `AlreadyExists` | [`ShmError::AlreadyExists`] |
/// | `NotFound` | [`ShmError::NotFound`] |
/// | `LockError` | [`ShmError::LockError`] |
/// | `OutOfResources` | [`ShmError::OutOfResources`] |
/// | `UnknownError` | [`ShmError::InvalidArgument`], [`ShmError::Unavailable`], [`ShmError::Daemon`] |
#[derive(Debug)]
pub enum ShmError {
    /// The object's mode does not allow this user to attach (or write, or remove) it, or
    /// a write through a read-only attachment.
    PermissionDenied(String),
    /// A size of 0, or over the daemon's limit.
    InvalidSize(String),
    /// The name is empty, too long (255 bytes) or has control characters.
    BadName(String),
    /// `create` of a name that exists.
    AlreadyExists(String),
    /// `attach` / `open` / `remove` of a name that does not exist.
    NotFound(String),
    /// Locking failed: locking twice through one attachment, or unlocking a lock that was
    /// taken away from it.
    LockError(String),
    /// A daemon limit (segments, bytes, semaphores, attachments per client, undo slots).
    OutOfResources(String),
    /// A value out of range: a mode, a semaphore maximum, a release past the maximum.
    InvalidArgument(String),
    /// The memory could not be created, shared or mapped (daemon or this process).
    Unavailable(String),
    /// The daemon could not be reached, went away, or answered out of protocol.
    Daemon(client::Error),
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::PermissionDenied(t) => write!(f, "permission denied: {t}"),
            ShmError::InvalidSize(t) => write!(f, "invalid size: {t}"),
            ShmError::BadName(t) => write!(f, "bad name: {t}"),
            ShmError::AlreadyExists(t) => write!(f, "already exists: {t}"),
            ShmError::NotFound(t) => write!(f, "not found: {t}"),
            ShmError::LockError(t) => write!(f, "lock error: {t}"),
            ShmError::OutOfResources(t) => write!(f, "out of resources: {t}"),
            ShmError::InvalidArgument(t) => write!(f, "invalid argument: {t}"),
            ShmError::Unavailable(t) => write!(f, "shared memory unavailable: {t}"),
            ShmError::Daemon(e) => write!(f, "daemon unreachable: {e}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmError::Daemon(e) => Some(e),
            _ => None,
        }
    }
}

impl From<client::Error> for ShmError {
    fn from(e: client::Error) -> ShmError {
        match e {
            client::Error::Refused { code, text } => match code {
                ErrorCode::Denied => ShmError::PermissionDenied(text),
                ErrorCode::SegInvalidSize => ShmError::InvalidSize(text),
                ErrorCode::BadName => ShmError::BadName(text),
                ErrorCode::SegExists => ShmError::AlreadyExists(text),
                ErrorCode::SegNotFound => ShmError::NotFound(text),
                ErrorCode::SegLimit => ShmError::OutOfResources(text),
                ErrorCode::SegInvalid => ShmError::InvalidArgument(text),
                ErrorCode::SegUnavailable => ShmError::Unavailable(text),
                code => ShmError::Daemon(client::Error::Refused { code, text }),
            },
            client::Error::BadName(e) => ShmError::BadName(e.to_string()),
            e => ShmError::Daemon(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_codes_map_to_qt_cases() {
        let refused = |code| client::Error::Refused {
            code,
            text: "why".into(),
        };
        assert!(matches!(
            ShmError::from(refused(ErrorCode::Denied)),
            ShmError::PermissionDenied(t) if t == "why"
        ));
        assert!(matches!(
            ShmError::from(refused(ErrorCode::SegLimit)),
            ShmError::OutOfResources(_)
        ));
        assert!(matches!(
            ShmError::from(refused(ErrorCode::SegExists)),
            ShmError::AlreadyExists(_)
        ));
        assert!(matches!(
            ShmError::from(client::Error::Disconnected),
            ShmError::Daemon(_)
        ));
        assert_eq!(
            ShmError::NotFound("no segment named \"x\"".into()).to_string(),
            "not found: no segment named \"x\""
        );
    }
}
