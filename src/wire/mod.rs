//! The qcop wire protocol: length-prefixed, big-endian frames (see `docs/PROTOCOL.md`).
//!
//! This is the one codec shared by the daemon, the client library and the TCP links between
//! daemons. It never trusts its input: [`FrameReader::next_frame`] and [`Frame::decode_exact`] check
//! every length against the bytes actually present and against the negotiated limits, and
//! return a [`DecodeError`] instead of panicking. Field widths are fixed (no `usize` on the
//! wire), so armv7 and aarch64 peers agree byte for byte.

mod buf;
mod frame;
pub mod segments;

#[cfg(feature = "daemon")]
pub(crate) use buf::{put_bytes, put_str};
pub use buf::{DecodeError, Reader};
pub use frame::{
    ChannelInfo, ClientInfo, Credentials, ErrorCode, Frame, Kind, LinkInfo, MonitorEvent,
    ServiceInfo, ServiceState, StatsReport, FLAG_FD, HEADER_LEN, MAGIC, PROTOCOL_VERSION,
};

/// Hard ceiling on a frame body, whatever the configuration says (64 MiB).
///
/// The configurable payload limit is checked against this at start-up so that a
/// misconfiguration cannot make a peer allocate gigabytes.
pub const MAX_FRAME_BODY: u32 = 64 * 1024 * 1024;

/// Bytes a frame needs on top of its payload: header, the two name strings with their
/// length prefixes, the payload length and the fixed fields of the largest message frame
/// (a `Monitored` frame's event and sender credentials, 13 bytes, rounded up to 16).
pub fn frame_overhead(max_channel: usize, max_message: usize) -> usize {
    HEADER_LEN + 4 + 2 + max_channel + 2 + max_message + 16
}

/// Incremental frame splitter over a byte buffer that fills from a stream socket.
///
/// Owns no socket: the caller appends what it read with [`FrameReader::buffer_mut`] /
/// [`FrameReader::filled`] and pulls complete frames with [`FrameReader::next_frame`]. The
/// buffer never grows past `HEADER_LEN + max_body`.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte; `start <= end <= buf.len()`.
    start: usize,
    /// End of the valid bytes.
    end: usize,
    max_body: u32,
    /// Frames returned so far.
    frames: u64,
}

impl FrameReader {
    /// A reader that accepts frame bodies of at most `max_body` bytes.
    pub fn new(max_body: u32) -> Self {
        let max_body = max_body.min(MAX_FRAME_BODY);
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_body,
            frames: 0,
        }
    }

    /// Largest frame body this reader accepts.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Changes the body limit (after a handshake or a configuration reload).
    pub fn set_max_body(&mut self, max_body: u32) {
        self.max_body = max_body.min(MAX_FRAME_BODY);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// A writable slice at the end of the buffer of at least `min` bytes (the caller reads
    /// into it and then calls [`FrameReader::filled`]).
    pub fn buffer_mut(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < min {
            // Move the partial frame to the front instead of growing.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = self.end + min;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// The bytes buffered but not yet returned as frames.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Appends `bytes` (the start of a frame another reader received).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        self.buffer_mut(n)[..n].copy_from_slice(bytes);
        self.filled(n);
    }

    /// Forgets every buffered byte (keeps the capacity).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Marks `n` bytes of the slice returned by [`FrameReader::buffer_mut`] as filled.
    pub fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.buf.len());
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Frames this reader has returned since it was made.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes of buffer this reader holds (allocated and written, whether filled or not).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Drops the buffer's capacity when it is idle and larger than `keep` bytes, so a single
    /// large message does not pin memory for the rest of a connection's life.
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.start == self.end && self.buf.len() > keep {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next complete frame as raw bytes (header included), `Ok(None)` if more bytes are
    /// needed. Only the length is checked (against the limit); the caller decodes the rest.
    /// This serves protocols that share the 12-byte header but not the frame kinds (the links
    /// between daemons).
    pub fn next_raw(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if len > self.max_body {
            return Err(DecodeError::TooLarge {
                len,
                max: self.max_body,
            });
        }
        let total = HEADER_LEN + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let from = self.start;
        self.start += total;
        self.frames += 1;
        Ok(Some(&self.buf[from..from + total]))
    }

    /// Like [`FrameReader::next_frame`], with the frame's encoded body beside it (the
    /// daemon forwards the fields of a `Send` without encoding them again).
    pub fn next_frame_and_body(&mut self) -> Result<Option<(Frame<'_>, &[u8])>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        let Some(header) = frame::Header::parse(avail, self.max_body)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let from = self.start;
        self.start += total;
        self.frames += 1;
        let body = &self.buf[from + HEADER_LEN..from + total];
        Frame::decode(&header, body).map(|f| Some((f, body)))
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of sync and the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        Ok(self.next_frame_and_body()?.map(|(frame, _)| frame))
    }
}

#[cfg(test)]
mod tests;
