//! The daemon-to-daemon link protocol: frames and their encoding (`docs/PROTOCOL.md`,
//! "Links between daemons").
//!
//! Frames reuse the client protocol's 12-byte header (length, kind, flags, reserved, seq)
//! with their own kinds; `seq` is always 0. Every integer is big-endian and fixed-width, so
//! an armv7 board and an aarch64 board agree byte for byte. [`LinkFrame::decode`] checks
//! every field against the bytes present and never panics.

use crate::wire::{put_bytes, put_str, DecodeError, Reader, HEADER_LEN};

/// First four bytes of a link `Hello` body.
pub const LINK_MAGIC: [u8; 4] = *b"QCLK";
/// Link protocol version spoken by this build. Version 2 seals every frame after the
/// handshake (see `seal`); version 1 carried them in the clear and is refused.
pub const LINK_VERSION: u16 = 2;
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of an authentication code (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Largest frame body accepted before the peer has authenticated.
pub const PREAUTH_MAX_BODY: u32 = 512;
pub use super::config::MSG_OVERHEAD;
/// Most subscription names one daemon advertises; beyond it, it advertises `*`.
pub const ADVERT_MAX_NAMES: usize = 1024;
/// Most neighbours listed in one advertisement.
pub const ADVERT_MAX_NEIGHBORS: usize = 256;
/// Most bytes of names (with their length and count fields) in one advertisement; beyond
/// it, the daemon advertises `*`.
pub const ADVERT_MAX_NAME_BYTES: usize = 60_000;
/// Every daemon accepts frame bodies of at least this size once authenticated, so that an
/// advert within the limits above always fits, whatever the message size limits.
pub const ADVERT_MAX_BODY: u32 = 64 * 1024;

const FLAG: u8 = 0x01;

/// Link frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkKind {
    /// Handshake opener, sent by both sides.
    Hello = 0x41,
    /// Proof of the key.
    Auth = 0x42,
    /// Limits, import patterns and resume point, after authentication.
    Ready = 0x43,
    /// One daemon's neighbours and subscriptions, flooded.
    Advert = 0x44,
    /// A message.
    Msg = 0x45,
    /// A call.
    Call = 0x46,
    /// The answer to a call.
    Reply = 0x47,
    /// A call that found no (remaining) responder behind this link.
    CallGone = 0x48,
    /// Messages received so far.
    Ack = 0x49,
    /// Keepalive.
    Ping = 0x4a,
    /// Keepalive answer.
    Pong = 0x4b,
    /// Reason for closing the link.
    Close = 0x4c,
}

impl LinkKind {
    fn from_u8(v: u8) -> Option<LinkKind> {
        use LinkKind::*;
        Some(match v {
            0x41 => Hello,
            0x42 => Auth,
            0x43 => Ready,
            0x44 => Advert,
            0x45 => Msg,
            0x46 => Call,
            0x47 => Reply,
            0x48 => CallGone,
            0x49 => Ack,
            0x4a => Ping,
            0x4b => Pong,
            0x4c => Close,
            _ => return None,
        })
    }
}

/// A decoded link frame; strings and payloads borrow the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFrame<'a> {
    /// Opens the handshake.
    Hello {
        /// Oldest link protocol version spoken.
        version_min: u16,
        /// Newest link protocol version spoken.
        version_max: u16,
        /// The sender's random id for this run.
        daemon_id: u64,
        /// Fresh random challenge.
        nonce: [u8; NONCE_LEN],
        /// The sender's name (for logs and `qcop stats`).
        name: &'a str,
    },
    /// HMAC-SHA256 over both hellos, proving the key.
    Auth {
        /// The code.
        mac: [u8; MAC_LEN],
    },
    /// Sent once authenticated.
    Ready {
        /// Largest payload the sender accepts.
        max_payload: u32,
        /// Longest channel name the sender accepts.
        max_channel: u16,
        /// Longest message name the sender accepts.
        max_message: u16,
        /// Whose messages `rx_count` counts (0: none).
        rx_from: u64,
        /// Messages received from daemon `rx_from` over this link so far.
        rx_count: u64,
        /// Channels the sender takes from this link (patterns).
        import: Vec<&'a str>,
    },
    /// One daemon's view: its neighbours and its local subscriptions.
    Advert {
        /// The daemon described.
        origin: u64,
        /// Increases with every change; older versions are ignored.
        version: u64,
        /// Daemons it has links up with.
        neighbors: Vec<u64>,
        /// Subscription names (channels and patterns) with their local subscriber counts.
        subs: Vec<(&'a str, u32)>,
    },
    /// A message published at `origin`.
    Msg {
        /// The daemon where it was sent.
        origin: u64,
        /// Its number at the origin (for duplicate detection).
        oseq: u64,
        /// Channel.
        channel: &'a str,
        /// Message signature.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// A call made at `origin`.
    Call {
        /// The caller's daemon.
        origin: u64,
        /// Its number at the origin (for duplicate detection).
        oseq: u64,
        /// The call's id at the origin.
        call_id: u32,
        /// Time the caller waits, in milliseconds.
        timeout_ms: u32,
        /// Channel.
        channel: &'a str,
        /// Message signature.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// The first answer to a call, travelling back towards its origin.
    Reply {
        /// The caller's daemon.
        origin: u64,
        /// The call's id at the origin.
        call_id: u32,
        /// The responder answered with an error.
        error: bool,
        /// Reply signature or error text.
        message: &'a str,
        /// Payload.
        payload: &'a [u8],
    },
    /// Nobody behind this link will answer the call.
    CallGone {
        /// The caller's daemon.
        origin: u64,
        /// The call's id at the origin.
        call_id: u32,
        /// The call reached at least one responder (who then left).
        delivered: bool,
    },
    /// Cumulative count of `Msg` frames received on this link.
    Ack {
        /// Messages received from the peer (as in `Ready.rx_count`).
        count: u64,
    },
    /// Keepalive; answered with `Pong`.
    Ping {
        /// Echoed.
        stamp: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The `Ping`'s stamp.
        stamp: u64,
    },
    /// The sender closes the link, and why.
    Close {
        /// Error code (see the client protocol's table).
        code: u16,
        /// Human-readable reason.
        text: &'a str,
    },
}

impl<'a> LinkFrame<'a> {
    /// Decodes one whole frame (header and body).
    pub fn decode(bytes: &'a [u8]) -> Result<LinkFrame<'a>, DecodeError> {
        let mut h = Reader::new(bytes);
        let len = h.u32()? as usize;
        let kind_byte = h.u8()?;
        let flags = h.u8()?;
        let reserved = h.u16()?;
        let seq = h.u32()?;
        if bytes.len() != HEADER_LEN + len {
            return Err(DecodeError::Truncated);
        }
        let kind = LinkKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        if reserved != 0 || seq != 0 {
            return Err(DecodeError::Reserved);
        }
        let allowed = match kind {
            LinkKind::Reply | LinkKind::CallGone => FLAG,
            _ => 0,
        };
        if flags & !allowed != 0 {
            return Err(DecodeError::UnknownFlags {
                kind: kind_byte,
                flags,
            });
        }
        let flag = flags & FLAG != 0;
        let mut r = Reader::new(&bytes[HEADER_LEN..]);
        let frame = match kind {
            LinkKind::Hello => {
                if r.take(4)? != LINK_MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                LinkFrame::Hello {
                    version_min: r.u16()?,
                    version_max: r.u16()?,
                    daemon_id: r.u64()?,
                    nonce: array(&mut r)?,
                    name: r.str()?,
                }
            }
            LinkKind::Auth => LinkFrame::Auth {
                mac: array(&mut r)?,
            },
            LinkKind::Ready => LinkFrame::Ready {
                max_payload: r.u32()?,
                max_channel: r.u16()?,
                max_message: r.u16()?,
                rx_from: r.u64()?,
                rx_count: r.u64()?,
                import: {
                    let n = r.count(2)?;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(r.str()?);
                    }
                    v
                },
            },
            LinkKind::Advert => {
                let origin = r.u64()?;
                let version = r.u64()?;
                let n = r.count(8)?;
                if n > ADVERT_MAX_NEIGHBORS {
                    return Err(DecodeError::BadCount);
                }
                let mut neighbors = Vec::with_capacity(n);
                for _ in 0..n {
                    neighbors.push(r.u64()?);
                }
                let n = r.count(6)?;
                if n > ADVERT_MAX_NAMES {
                    return Err(DecodeError::BadCount);
                }
                let mut subs = Vec::with_capacity(n);
                for _ in 0..n {
                    subs.push((r.str()?, r.u32()?));
                }
                LinkFrame::Advert {
                    origin,
                    version,
                    neighbors,
                    subs,
                }
            }
            LinkKind::Msg => LinkFrame::Msg {
                origin: r.u64()?,
                oseq: r.u64()?,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
            },
            LinkKind::Call => LinkFrame::Call {
                origin: r.u64()?,
                oseq: r.u64()?,
                call_id: r.u32()?,
                timeout_ms: r.u32()?,
                channel: r.str()?,
                message: r.str()?,
                payload: r.bytes()?,
            },
            LinkKind::Reply => LinkFrame::Reply {
                origin: r.u64()?,
                call_id: r.u32()?,
                error: flag,
                message: r.str()?,
                payload: r.bytes()?,
            },
            LinkKind::CallGone => LinkFrame::CallGone {
                origin: r.u64()?,
                call_id: r.u32()?,
                delivered: flag,
            },
            LinkKind::Ack => LinkFrame::Ack { count: r.u64()? },
            LinkKind::Ping => LinkFrame::Ping { stamp: r.u64()? },
            LinkKind::Pong => LinkFrame::Pong { stamp: r.u64()? },
            LinkKind::Close => LinkFrame::Close {
                code: r.u16()?,
                text: r.str()?,
            },
        };
        r.finish()?;
        Ok(frame)
    }

    /// The frame's kind.
    pub fn kind(&self) -> LinkKind {
        match self {
            LinkFrame::Hello { .. } => LinkKind::Hello,
            LinkFrame::Auth { .. } => LinkKind::Auth,
            LinkFrame::Ready { .. } => LinkKind::Ready,
            LinkFrame::Advert { .. } => LinkKind::Advert,
            LinkFrame::Msg { .. } => LinkKind::Msg,
            LinkFrame::Call { .. } => LinkKind::Call,
            LinkFrame::Reply { .. } => LinkKind::Reply,
            LinkFrame::CallGone { .. } => LinkKind::CallGone,
            LinkFrame::Ack { .. } => LinkKind::Ack,
            LinkFrame::Ping { .. } => LinkKind::Ping,
            LinkFrame::Pong { .. } => LinkKind::Pong,
            LinkFrame::Close { .. } => LinkKind::Close,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let flags = match *self {
            LinkFrame::Reply { error: f, .. } | LinkFrame::CallGone { delivered: f, .. } => {
                u8::from(f)
            }
            _ => 0,
        };
        out.extend_from_slice(&[0; 4]);
        out.push(self.kind() as u8);
        out.push(flags);
        out.extend_from_slice(&[0; 6]);
        match self {
            LinkFrame::Hello {
                version_min,
                version_max,
                daemon_id,
                nonce,
                name,
            } => {
                out.extend_from_slice(&LINK_MAGIC);
                out.extend_from_slice(&version_min.to_be_bytes());
                out.extend_from_slice(&version_max.to_be_bytes());
                out.extend_from_slice(&daemon_id.to_be_bytes());
                out.extend_from_slice(nonce);
                put_str(out, name);
            }
            LinkFrame::Auth { mac } => out.extend_from_slice(mac),
            LinkFrame::Ready {
                max_payload,
                max_channel,
                max_message,
                rx_from,
                rx_count,
                import,
            } => {
                out.extend_from_slice(&max_payload.to_be_bytes());
                out.extend_from_slice(&max_channel.to_be_bytes());
                out.extend_from_slice(&max_message.to_be_bytes());
                out.extend_from_slice(&rx_from.to_be_bytes());
                out.extend_from_slice(&rx_count.to_be_bytes());
                out.extend_from_slice(&(import.len() as u32).to_be_bytes());
                for p in import {
                    put_str(out, p);
                }
            }
            LinkFrame::Advert {
                origin,
                version,
                neighbors,
                subs,
            } => {
                out.extend_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&(neighbors.len() as u32).to_be_bytes());
                for n in neighbors {
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out.extend_from_slice(&(subs.len() as u32).to_be_bytes());
                for (name, count) in subs {
                    put_str(out, name);
                    out.extend_from_slice(&count.to_be_bytes());
                }
            }
            LinkFrame::Msg {
                origin,
                oseq,
                channel,
                message,
                payload,
            } => {
                out.extend_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(&oseq.to_be_bytes());
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
            }
            LinkFrame::Call {
                origin,
                oseq,
                call_id,
                timeout_ms,
                channel,
                message,
                payload,
            } => {
                out.extend_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(&oseq.to_be_bytes());
                out.extend_from_slice(&call_id.to_be_bytes());
                out.extend_from_slice(&timeout_ms.to_be_bytes());
                put_str(out, channel);
                put_str(out, message);
                put_bytes(out, payload);
            }
            LinkFrame::Reply {
                origin,
                call_id,
                message,
                payload,
                ..
            } => {
                out.extend_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(&call_id.to_be_bytes());
                put_str(out, message);
                put_bytes(out, payload);
            }
            LinkFrame::CallGone {
                origin, call_id, ..
            } => {
                out.extend_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(&call_id.to_be_bytes());
            }
            LinkFrame::Ack { count: v }
            | LinkFrame::Ping { stamp: v }
            | LinkFrame::Pong { stamp: v } => out.extend_from_slice(&v.to_be_bytes()),
            LinkFrame::Close { code, text } => {
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, text);
            }
        }
        let body = (out.len() - start - HEADER_LEN) as u32;
        out[start..start + 4].copy_from_slice(&body.to_be_bytes());
    }

    /// The encoded frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    out.copy_from_slice(r.take(N)?);
    Ok(out)
}

/// The channel of an encoded `Msg` frame (the bytes were checked when they were built or
/// received, so this only fails on a frame that is not a `Msg`).
pub fn msg_channel(frame: &[u8]) -> Option<&str> {
    let mut r = Reader::new(frame.get(HEADER_LEN + 16..)?);
    r.str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<LinkFrame<'static>> {
        vec![
            LinkFrame::Hello {
                version_min: 1,
                version_max: 3,
                daemon_id: 0x0102_0304_0506_0708,
                nonce: [7; NONCE_LEN],
                name: "display",
            },
            LinkFrame::Auth { mac: [9; MAC_LEN] },
            LinkFrame::Ready {
                max_payload: 65536,
                max_channel: 255,
                max_message: 255,
                rx_from: 42,
                rx_count: 7,
                import: vec!["sensors/*", "ui"],
            },
            LinkFrame::Advert {
                origin: 1,
                version: 2,
                neighbors: vec![3, 4],
                subs: vec![("a", 1), ("b/*", 2)],
            },
            LinkFrame::Msg {
                origin: 1,
                oseq: 2,
                channel: "c",
                message: "m(int)",
                payload: &[0, 0, 0, 5],
            },
            LinkFrame::Call {
                origin: 1,
                oseq: 2,
                call_id: 3,
                timeout_ms: 4,
                channel: "c",
                message: "m()",
                payload: b"",
            },
            LinkFrame::Reply {
                origin: 1,
                call_id: 3,
                error: true,
                message: "failed",
                payload: b"x",
            },
            LinkFrame::CallGone {
                origin: 1,
                call_id: 3,
                delivered: true,
            },
            LinkFrame::Ack { count: 9 },
            LinkFrame::Ping { stamp: 10 },
            LinkFrame::Pong { stamp: 11 },
            LinkFrame::Close {
                code: 36,
                text: "wrong key",
            },
        ]
    }

    #[test]
    fn every_kind_roundtrips() {
        for f in samples() {
            let bytes = f.to_vec();
            assert_eq!(LinkFrame::decode(&bytes), Ok(f));
        }
    }

    /// The documented example in docs/PROTOCOL.md.
    #[test]
    fn msg_bytes_are_as_documented() {
        let f = LinkFrame::Msg {
            origin: 0x1122_3344_5566_7788,
            oseq: 5,
            channel: "a/b",
            message: "f()",
            payload: &[0xab],
        };
        let bytes = f.to_vec();
        let expected: Vec<u8> = [
            &[0, 0, 0, 0x1f, 0x45, 0, 0, 0, 0, 0, 0, 0][..],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            &[0, 0, 0, 0, 0, 0, 0, 5],
            &[0, 3, b'a', b'/', b'b'],
            &[0, 3, b'f', b'(', b')'],
            &[0, 0, 0, 1, 0xab],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(msg_channel(&bytes), Some("a/b"));
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = LinkFrame::Ping { stamp: 1 }.to_vec();
        let mut b = good.clone();
        b[4] = 0x04; // a client kind
        assert_eq!(LinkFrame::decode(&b), Err(DecodeError::UnknownKind(0x04)));
        let mut b = good.clone();
        b[5] = 1;
        assert!(matches!(
            LinkFrame::decode(&b),
            Err(DecodeError::UnknownFlags { .. })
        ));
        let mut b = good.clone();
        b[11] = 1;
        assert_eq!(LinkFrame::decode(&b), Err(DecodeError::Reserved));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(LinkFrame::decode(&b), Err(DecodeError::Truncated));
        b[3] += 1;
        assert_eq!(LinkFrame::decode(&b), Err(DecodeError::TrailingBytes));
        let mut b = samples()[0].to_vec();
        b[HEADER_LEN] = b'X';
        assert_eq!(LinkFrame::decode(&b), Err(DecodeError::BadMagic));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = LinkFrame::decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(pick in 0usize..12, at in any::<usize>(), val in any::<u8>()) {
            let mut bytes = samples()[pick].to_vec();
            let i = at % bytes.len();
            bytes[i] = val;
            let _ = LinkFrame::decode(&bytes);
        }
    }
}
