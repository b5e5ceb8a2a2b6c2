//! Checked big-endian reads from untrusted bytes, and the matching writes.

use std::fmt;

/// Why bytes could not be decoded as a frame. After any of these the byte stream is out of
/// sync: the peer is told (where possible) and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A field needs more bytes than the frame holds.
    Truncated,
    /// The frame declares a body larger than the negotiated maximum.
    TooLarge {
        /// Declared body length.
        len: u32,
        /// Largest body accepted.
        max: u32,
    },
    /// Reserved bits or fields are not zero (or a boolean field is neither 0 nor 1).
    Reserved,
    /// The frame kind is not one this protocol version knows.
    UnknownKind(u8),
    /// Flag bits that are undefined for this frame kind are set.
    UnknownFlags {
        /// Frame kind.
        kind: u8,
        /// The offending flag byte.
        flags: u8,
    },
    /// A name is not valid UTF-8.
    BadUtf8,
    /// Bytes remain after the last field of the frame.
    TrailingBytes,
    /// The handshake does not start with the protocol magic.
    BadMagic,
    /// A count field is larger than the frame could possibly hold.
    BadCount,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("frame truncated: a field runs past its end"),
            DecodeError::TooLarge { len, max } => {
                write!(
                    f,
                    "frame body of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            DecodeError::Reserved => f.write_str("reserved bits or fields are not zero"),
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            DecodeError::UnknownFlags { kind, flags } => {
                write!(
                    f,
                    "undefined flags 0x{flags:02x} on frame kind 0x{kind:02x}"
                )
            }
            DecodeError::BadUtf8 => f.write_str("a name is not valid UTF-8"),
            DecodeError::TrailingBytes => f.write_str("bytes left over after the last field"),
            DecodeError::BadMagic => f.write_str("not a qcop peer (bad handshake magic)"),
            DecodeError::BadCount => f.write_str("a count field exceeds the frame size"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over untrusted bytes. Every read checks the remaining length first; none panics.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a string: `u16` byte length, then that many bytes of UTF-8.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::BadUtf8)
    }

    /// Reads a byte string: `u32` length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Reads a count of records, each at least `min_record` bytes long, rejecting counts the
    /// remaining bytes cannot hold (so a hostile count cannot cause a large allocation).
    pub fn count(&mut self, min_record: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_record.max(1)) > self.remaining() {
            return Err(DecodeError::BadCount);
        }
        Ok(n)
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Appends a string with its `u16` length prefix. Strings longer than `u16::MAX` bytes are
/// cut at a character boundary; callers validate name lengths long before this point.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Appends a byte string with its `u32` length prefix.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&b[..len as usize]);
}
