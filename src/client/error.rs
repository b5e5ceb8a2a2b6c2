//! Errors returned by the client library.

use crate::pattern::NameError;
use crate::wire::{DecodeError, ErrorCode};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong talking to `qcopd`.
#[derive(Debug)]
pub enum Error {
    /// The daemon's socket could not be reached (usually: qcopd is not running).
    Connect(PathBuf, io::Error),
    /// The socket failed after connecting.
    Io(io::Error),
    /// The daemon sent bytes that do not decode; the connection is unusable.
    Protocol(DecodeError),
    /// The daemon's handshake answer was missing or unexpected.
    Handshake(String),
    /// The daemon refused a request.
    Refused {
        /// Why.
        code: ErrorCode,
        /// The daemon's explanation.
        text: String,
    },
    /// A channel or message name is invalid.
    BadName(NameError),
    /// Messages go to plain channels; this one is a pattern.
    WildcardSend(String),
    /// The payload exceeds the daemon's limit.
    TooLarge {
        /// Payload size.
        size: usize,
        /// The daemon's limit.
        max: u32,
    },
    /// No answer in time.
    Timeout,
    /// A call found nobody subscribed to its channel.
    NoResponder,
    /// Every recipient of a call left without answering.
    ResponderGone,
    /// The responder answered the call with an error.
    Remote(String),
    /// The connection to the daemon was lost (and was not, or could not be, re-established).
    Disconnected,
    /// `unsubscribe` for a channel this connection is not subscribed to.
    NotSubscribed(String),
    /// A reply was attempted for a message that is not a call.
    NotACall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(p, e) => write!(
                f,
                "cannot connect to qcopd at {}: {e} (is qcopd running? set QCOP_SOCKET or --socket)",
                p.display()
            ),
            Error::Io(e) => write!(f, "connection to qcopd failed: {e}"),
            Error::Protocol(e) => write!(f, "protocol error from qcopd: {e}"),
            Error::Handshake(e) => write!(f, "handshake with qcopd failed: {e}"),
            Error::Refused { code, text } if text.is_empty() => write!(f, "qcopd: {code}"),
            Error::Refused { code, text } => write!(f, "qcopd: {code}: {text}"),
            Error::BadName(e) => write!(f, "invalid name: {e}"),
            Error::WildcardSend(c) => {
                write!(f, "{c:?} is a pattern; messages can only be sent to plain channels")
            }
            Error::TooLarge { size, max } => write!(
                f,
                "payload of {size} bytes exceeds the daemon's limit of {max} bytes"
            ),
            Error::Timeout => f.write_str("timed out waiting for an answer"),
            Error::NoResponder => f.write_str("no responder is subscribed to that channel"),
            Error::ResponderGone => f.write_str("the responder disconnected without answering"),
            Error::Remote(e) => write!(f, "the responder returned an error: {e}"),
            Error::Disconnected => f.write_str("disconnected from qcopd"),
            Error::NotSubscribed(c) => write!(f, "not subscribed to {c:?}"),
            Error::NotACall => f.write_str("the message is not a call; there is nobody to reply to"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(_, e) | Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::BadName(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// Maps an error frame from the daemon to the matching variant.
    pub(crate) fn from_daemon(code: ErrorCode, text: String) -> Error {
        match code {
            ErrorCode::Timeout => Error::Timeout,
            ErrorCode::NoResponder => Error::NoResponder,
            ErrorCode::ResponderGone => Error::ResponderGone,
            code => Error::Refused { code, text },
        }
    }

    /// True if the connection is gone (as opposed to one request failing).
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            Error::Io(_) | Error::Protocol(_) | Error::Disconnected | Error::Connect(..)
        ) || matches!(
            self,
            Error::Refused {
                code: ErrorCode::ShuttingDown | ErrorCode::SlowConsumer,
                ..
            }
        )
    }
}
