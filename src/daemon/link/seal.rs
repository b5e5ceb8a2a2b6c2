//! Protection of every link frame after the handshake (`docs/PROTOCOL.md`, "Sealed
//! records").
//!
//! Each direction of a connection has its own 256-bit key, derived from the pre-shared key
//! and the whole handshake ([`super::auth::Key::session_keys`]), and its own 64-bit record
//! counter, which starts at 0 and is the ChaCha20-Poly1305 nonce of the record. A frame is
//! carried inside a record:
//! - `Encrypted` (kind 0x4d): the frame encrypted, then the 16-byte tag; the record header
//!   is the associated data;
//! - `Authenticated` (kind 0x4e, the `protection = "integrity"` setting): the frame in the
//!   clear, then the tag of an empty plaintext whose associated data is the record header and
//!   the frame.
//!
//! The receiver opens records with the counter it expects next, so a forged, altered,
//! replayed or reordered record, or one that follows a lost one, fails its tag: the
//! connection is then closed and the frame never used. A counter never repeats under a key:
//! the sender refuses to seal past [`COUNTER_LIMIT`] (the connection must be made anew, with
//! fresh keys).

use crate::wire::HEADER_LEN;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

/// Kind of a record carrying an encrypted frame.
pub const KIND_ENCRYPTED: u8 = 0x4d;
/// Kind of a record carrying an authenticated frame in the clear.
pub const KIND_AUTHENTICATED: u8 = 0x4e;
/// Bytes of a record's tag (Poly1305).
pub const TAG_LEN: usize = 16;
/// Bytes a record adds to the frame it carries (its header and tag).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Bytes of a session key.
pub const SESSION_KEY_LEN: usize = 32;
/// Records sealed under one key, at most; a counter never reaches this value.
pub const COUNTER_LIMIT: u64 = u64::MAX;

/// How this daemon protects the frames it sends (`links.protection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// Encrypted and authenticated (the default).
    #[default]
    Encrypt,
    /// Authenticated only: frames cross in the clear, but cannot be altered or forged.
    Integrity,
}

impl Protection {
    fn kind(self) -> u8 {
        match self {
            Protection::Encrypt => KIND_ENCRYPTED,
            Protection::Integrity => KIND_AUTHENTICATED,
        }
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// A frame that is not a record arrived after the handshake.
    Unprotected,
    /// The tag does not match: forged, altered, replayed, reordered, or a record before it
    /// was lost.
    BadTag,
    /// The record is too short to hold a frame and its tag, or the frame inside is not
    /// whole.
    Malformed,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::Unprotected => "an unprotected frame after the handshake",
            OpenError::BadTag => {
                "a frame failed authentication (forged, altered, replayed, reordered, \
                 or one before it was lost)"
            }
            OpenError::Malformed => "a malformed sealed record",
        })
    }
}

/// The counter is exhausted: the connection must be made anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

fn header(kind: u8, body: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&(body as u32).to_be_bytes());
    h[4] = kind;
    h
}

/// The sending half of a session.
pub struct Sealer {
    aead: ChaCha20Poly1305,
    next: u64,
    protection: Protection,
}

impl Sealer {
    /// A sealer starting at counter 0.
    pub fn new(key: &[u8; SESSION_KEY_LEN], protection: Protection) -> Sealer {
        Sealer {
            aead: ChaCha20Poly1305::new(key.into()),
            next: 0,
            protection,
        }
    }

    /// Records sealed so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Appends the record carrying `frame` to `out`.
    pub fn seal(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), Exhausted> {
        let start = Sealer::begin(out);
        out.extend_from_slice(frame);
        self.finish(out, start)
    }

    /// Starts a record at the end of `out`: returns where it starts. The caller appends the
    /// frames it carries (whole, back to back), then calls [`Sealer::finish`].
    pub fn begin(out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        start
    }

    /// Seals the record begun at `start`: fills its header, encrypts (or not) the frames
    /// after it and appends the tag.
    pub fn finish(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), Exhausted> {
        if self.next == COUNTER_LIMIT {
            out.truncate(start);
            return Err(Exhausted);
        }
        let n = nonce(self.next);
        self.next += 1;
        let body = out.len() - start - HEADER_LEN + TAG_LEN;
        out[start..start + HEADER_LEN].copy_from_slice(&header(self.protection.kind(), body));
        let tag = match self.protection {
            Protection::Encrypt => {
                let (head, body) = out[start..].split_at_mut(HEADER_LEN);
                self.aead.encrypt_in_place_detached(&n, head, body)
            }
            Protection::Integrity => {
                self.aead
                    .encrypt_in_place_detached(&n, &out[start..], &mut [])
            }
        }
        // Only plaintexts beyond 256 GiB fail; a record is at most 4 GiB.
        .map_err(|_| Exhausted)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    #[cfg(test)]
    fn set_counter(&mut self, next: u64) {
        self.next = next;
    }
}

/// The receiving half of a session.
pub struct Opener {
    aead: ChaCha20Poly1305,
    next: u64,
}

impl Opener {
    /// An opener expecting counter 0 first.
    pub fn new(key: &[u8; SESSION_KEY_LEN]) -> Opener {
        Opener {
            aead: ChaCha20Poly1305::new(key.into()),
            next: 0,
        }
    }

    /// Records opened so far.
    pub fn opened(&self) -> u64 {
        self.next
    }

    /// Opens one whole record (header and body, as the frame reader cut it). The frames it
    /// carries are `record[HEADER_LEN..]` minus the tag for an authenticated record, or are
    /// decrypted into `scratch` for an encrypted one; either way the returned slice, which
    /// holds one or more whole frames back to back (see [`split_frame`]).
    pub fn open<'a>(
        &mut self,
        record: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], OpenError> {
        if record.len() < HEADER_LEN {
            return Err(OpenError::Malformed);
        }
        let kind = record[4];
        if kind != KIND_ENCRYPTED && kind != KIND_AUTHENTICATED {
            return Err(OpenError::Unprotected);
        }
        // The frame reader checked the length field against the bytes; the rest of the
        // header must be zero, like every link frame's.
        if record[5..HEADER_LEN].iter().any(|&b| b != 0) {
            return Err(OpenError::Malformed);
        }
        if record.len() < SEAL_OVERHEAD + HEADER_LEN || self.next == COUNTER_LIMIT {
            return Err(OpenError::Malformed);
        }
        let (head, rest) = record.split_at(HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let tag = chacha20poly1305::Tag::from_slice(tag);
        let n = nonce(self.next);
        let frame: &'a [u8] = if kind == KIND_ENCRYPTED {
            let plain: &'a mut Vec<u8> = scratch;
            plain.clear();
            plain.extend_from_slice(body);
            self.aead
                .decrypt_in_place_detached(&n, head, &mut plain[..], tag)
                .map_err(|_| OpenError::BadTag)?;
            let plain: &'a Vec<u8> = plain;
            &plain[..]
        } else {
            self.aead
                .decrypt_in_place_detached(&n, &record[..record.len() - TAG_LEN], &mut [], tag)
                .map_err(|_| OpenError::BadTag)?;
            body
        };
        self.next += 1;
        // Inside: one or more whole frames, back to back.
        let mut rest = frame;
        while !rest.is_empty() {
            let (_, after) = split_frame(rest).ok_or(OpenError::Malformed)?;
            rest = after;
        }
        Ok(frame)
    }
}

/// The first whole frame of `frames` and what follows it; `None` if `frames` does not start
/// with a whole frame.
pub fn split_frame(frames: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = frames.get(..4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let end = HEADER_LEN.checked_add(len)?;
    if frames.len() < end {
        return None;
    }
    Some(frames.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::link::proto::LinkFrame;

    fn pair(p: Protection) -> (Sealer, Opener) {
        let k = [7u8; SESSION_KEY_LEN];
        (Sealer::new(&k, p), Opener::new(&k))
    }

    fn frames() -> Vec<Vec<u8>> {
        (0..4u64)
            .map(|i| LinkFrame::Ping { stamp: i }.to_vec())
            .collect()
    }

    #[test]
    fn records_roundtrip_in_order_in_both_modes() {
        for p in [Protection::Encrypt, Protection::Integrity] {
            let (mut s, mut o) = pair(p);
            let mut wire = Vec::new();
            let mut ends = Vec::new();
            for f in frames() {
                s.seal(&f, &mut wire).unwrap();
                ends.push(wire.len());
            }
            let mut scratch = Vec::new();
            let mut at = 0;
            for (f, end) in frames().iter().zip(ends) {
                let rec = &wire[at..end];
                assert_eq!(rec.len(), f.len() + SEAL_OVERHEAD);
                // Encrypted: the frame does not appear; integrity only: it does.
                let clear = rec.windows(f.len()).any(|w| w == &f[..]);
                assert_eq!(clear, p == Protection::Integrity);
                assert_eq!(o.open(rec, &mut scratch).unwrap(), &f[..]);
                at = end;
            }
            assert_eq!((s.sealed(), o.opened()), (4, 4));
        }
    }

    #[test]
    fn altered_replayed_reordered_and_skipped_records_fail() {
        for p in [Protection::Encrypt, Protection::Integrity] {
            let (mut s, _) = pair(p);
            let recs: Vec<Vec<u8>> = frames()
                .iter()
                .map(|f| {
                    let mut w = Vec::new();
                    s.seal(f, &mut w).unwrap();
                    w
                })
                .collect();
            let mut scratch = Vec::new();
            // Every single flipped bit (header, body or tag) is caught.
            for i in 0..recs[0].len() {
                for bit in 0..8 {
                    let mut r = recs[0].clone();
                    r[i] ^= 1 << bit;
                    let (_, mut o) = pair(p);
                    assert!(o.open(&r, &mut scratch).is_err(), "byte {i} bit {bit}");
                }
            }
            // Replay: the second copy of record 0 fails.
            let (_, mut o) = pair(p);
            o.open(&recs[0], &mut scratch).unwrap();
            assert_eq!(o.open(&recs[0], &mut scratch), Err(OpenError::BadTag));
            // Reorder, or record 1 lost: record 2 where 1 was expected fails.
            let (_, mut o) = pair(p);
            o.open(&recs[0], &mut scratch).unwrap();
            assert_eq!(o.open(&recs[2], &mut scratch), Err(OpenError::BadTag));
            // A record under another key fails; a plain frame is refused as unprotected.
            let mut o = Opener::new(&[8u8; SESSION_KEY_LEN]);
            assert_eq!(o.open(&recs[0], &mut scratch), Err(OpenError::BadTag));
            assert_eq!(
                o.open(&frames()[0], &mut scratch),
                Err(OpenError::Unprotected)
            );
            // Too short to hold a tag.
            assert_eq!(
                o.open(&recs[0][..HEADER_LEN + 3], &mut scratch),
                Err(OpenError::Malformed)
            );
        }
    }

    #[test]
    fn a_record_carries_several_frames() {
        for p in [Protection::Encrypt, Protection::Integrity] {
            let (mut s, mut o) = pair(p);
            let mut wire = Vec::new();
            let start = Sealer::begin(&mut wire);
            for f in frames() {
                wire.extend_from_slice(&f);
            }
            s.finish(&mut wire, start).unwrap();
            let mut scratch = Vec::new();
            let mut inside = o.open(&wire, &mut scratch).unwrap();
            let mut got = Vec::new();
            while let Some((f, rest)) = split_frame(inside) {
                got.push(f.to_vec());
                inside = rest;
            }
            assert!(inside.is_empty());
            assert_eq!(got, frames());
            // A record whose frames do not add up is refused, even with a good tag.
            let (mut s, mut o) = pair(p);
            let mut bad = Vec::new();
            let start = Sealer::begin(&mut bad);
            bad.extend_from_slice(&frames()[0]);
            bad.extend_from_slice(&frames()[1][..5]);
            s.finish(&mut bad, start).unwrap();
            assert_eq!(o.open(&bad, &mut scratch), Err(OpenError::Malformed));
        }
    }

    #[test]
    fn the_counter_never_wraps() {
        let (mut s, _) = pair(Protection::Encrypt);
        s.set_counter(COUNTER_LIMIT - 1);
        let mut w = Vec::new();
        assert!(s.seal(b"x", &mut w).is_ok());
        assert_eq!(s.seal(b"y", &mut w), Err(Exhausted));
        assert_eq!(s.seal(b"z", &mut w), Err(Exhausted));
    }

    /// The documented example in docs/PROTOCOL.md: key 0x07 × 32, counter 0, `Ping` 1.
    #[test]
    fn record_bytes_are_as_documented() {
        let (mut s, _) = pair(Protection::Integrity);
        let mut w = Vec::new();
        s.seal(&LinkFrame::Ping { stamp: 1 }.to_vec(), &mut w)
            .unwrap();
        assert_eq!(w[..HEADER_LEN], [0, 0, 0, 36, 0x4e, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(w.len(), 48);
    }
}
