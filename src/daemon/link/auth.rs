//! Mutual authentication of a link with a pre-shared key, and the daemon's randomness.
//!
//! Both sides send a `Hello` carrying a fresh 32-byte nonce. Each then proves it holds the
//! key with HMAC-SHA256 over a transcript of both hellos (nonces, daemon ids, names and
//! versions) and its role, dialer or acceptor. Because each side's proof covers the other
//! side's fresh nonce, a recorded session cannot be replayed, and because the role is
//! covered, a proof cannot be reflected back to its sender. Proofs are compared in constant
//! time (`Mac::verify_slice`).
//!
//! Both sides then derive the session's keys, one per direction, with HKDF-SHA256 from the
//! key and the whole handshake (both hellos and both proofs): see [`Key::session_keys`].

use super::proto::MAC_LEN;
use super::seal::SESSION_KEY_LEN;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::Read;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: these MACs mean nothing in any other protocol.
const CONTEXT: &[u8] = b"qcop link auth v2";
/// Domain separation of the HKDF salt (the handshake's hash).
const SESSION_CONTEXT: &[u8] = b"qcop link session v2";
/// HKDF `info` of the key sealing what the dialer sends.
const INFO_DIALER: &[u8] = b"qcop link v2 dialer to acceptor";
/// HKDF `info` of the key sealing what the acceptor sends.
const INFO_ACCEPTOR: &[u8] = b"qcop link v2 acceptor to dialer";

/// The two keys of a session.
pub struct SessionKeys {
    /// Seals what this daemon sends.
    pub send: [u8; SESSION_KEY_LEN],
    /// Opens what it receives.
    pub receive: [u8; SESSION_KEY_LEN],
}

/// Which end of the TCP connection a daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection.
    Dialer,
    /// Accepted it.
    Acceptor,
}

impl Role {
    fn tag(self) -> u8 {
        match self {
            Role::Dialer => b'D',
            Role::Acceptor => b'A',
        }
    }
}

/// The pre-shared key. An empty key is used on loopback or `insecure` links without one: the
/// exchange then only proves that both sides run without a key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    /// A key from its bytes.
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    /// The empty key of links configured without one.
    pub fn none() -> Key {
        Key(Vec::new())
    }

    fn mac(&self, role: Role, dialer_hello: &[u8], acceptor_hello: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key");
        m.update(CONTEXT);
        m.update(&[role.tag()]);
        for part in [dialer_hello, acceptor_hello] {
            m.update(&(part.len() as u32).to_be_bytes());
            m.update(part);
        }
        m
    }

    /// The proof that `role` holds the key, over both encoded `Hello` frames.
    pub fn proof(&self, role: Role, dialer_hello: &[u8], acceptor_hello: &[u8]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(
            &self
                .mac(role, dialer_hello, acceptor_hello)
                .finalize()
                .into_bytes(),
        );
        out
    }

    /// Checks the peer's proof in constant time.
    pub fn verify(
        &self,
        role: Role,
        dialer_hello: &[u8],
        acceptor_hello: &[u8],
        proof: &[u8],
    ) -> bool {
        self.mac(role, dialer_hello, acceptor_hello)
            .verify_slice(proof)
            .is_ok()
    }
}

impl Key {
    /// The session keys of `role` after a handshake made of `parts`: the dialer's hello, the
    /// acceptor's hello, the dialer's `Auth` and the acceptor's `Auth`, as encoded frames.
    ///
    /// `salt = SHA-256(SESSION_CONTEXT || for each part: u32 length || part)`, then
    /// HKDF-SHA256 with that salt and the pre-shared key as input keying material, expanded
    /// to 32 bytes with `INFO_DIALER` and with `INFO_ACCEPTOR`.
    pub fn session_keys(&self, role: Role, parts: [&[u8]; 4]) -> SessionKeys {
        let mut h = Sha256::new();
        h.update(SESSION_CONTEXT);
        for part in parts {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        let salt = h.finalize();
        let kdf = Hkdf::<Sha256>::new(Some(&salt), &self.0);
        let (mut dialer, mut acceptor) = ([0u8; SESSION_KEY_LEN], [0u8; SESSION_KEY_LEN]);
        // 32 bytes are far below HKDF-SHA256's limit (8160): these cannot fail.
        kdf.expand(INFO_DIALER, &mut dialer)
            .expect("32-byte HKDF output");
        kdf.expand(INFO_ACCEPTOR, &mut acceptor)
            .expect("32-byte HKDF output");
        match role {
            Role::Dialer => SessionKeys {
                send: dialer,
                receive: acceptor,
            },
            Role::Acceptor => SessionKeys {
                send: acceptor,
                receive: dialer,
            },
        }
    }
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A small non-cryptographic generator for reconnect jitter (xorshift64*), seeded from the
/// kernel. Nonces and daemon ids never come from it.
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from `/dev/urandom` (or the clock if that fails: jitter only spreads retries).
    pub fn new() -> Jitter {
        let mut seed = [0u8; 8];
        if random_bytes(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            seed = t.to_be_bytes();
        }
        Jitter(u64::from_be_bytes(seed) | 1)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_key_role_and_both_hellos() {
        let k = Key::new(b"0123456789abcdef".to_vec());
        let (d, a) = (b"dialer hello".as_slice(), b"acceptor hello".as_slice());
        let p = k.proof(Role::Dialer, d, a);
        assert!(k.verify(Role::Dialer, d, a, &p));
        // Reflection: the acceptor's proof is a different value.
        assert!(!k.verify(Role::Acceptor, d, a, &p));
        // Another nonce (hello), another proof: a recorded one does not replay.
        assert!(!k.verify(Role::Dialer, d, b"acceptor hellp", &p));
        // Another key.
        assert!(!Key::new(b"0123456789abcdeF".to_vec()).verify(Role::Dialer, d, a, &p));
        assert!(!Key::none().verify(Role::Dialer, d, a, &p));
        // Truncated proofs are refused.
        assert!(!k.verify(Role::Dialer, d, a, &p[..16]));
        // Known answer: HMAC-SHA256 over the documented transcript.
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"0123456789abcdef").unwrap();
        m.update(b"qcop link auth v2D\0\0\0\x0cdialer hello\0\0\0\x0eacceptor hello");
        assert_eq!(p[..], m.finalize().into_bytes()[..]);
    }

    #[test]
    fn session_keys_pair_up_and_bind_key_and_handshake() {
        let k = Key::new(b"0123456789abcdef".to_vec());
        let parts: [&[u8]; 4] = [b"hd", b"ha", b"pd", b"pa"];
        let d = k.session_keys(Role::Dialer, parts);
        let a = k.session_keys(Role::Acceptor, parts);
        assert_eq!((d.send, d.receive), (a.receive, a.send));
        assert_ne!(d.send, d.receive);
        // Another key, or any other handshake byte, gives other keys.
        let other = Key::new(b"0123456789abcdeF".to_vec()).session_keys(Role::Dialer, parts);
        assert_ne!(other.send, d.send);
        let moved = k.session_keys(Role::Dialer, [b"hdh", b"a", b"pd", b"pa"]);
        assert_ne!(moved.send, d.send);
        // Known answer: the documented derivation.
        let mut h = Sha256::new();
        h.update(b"qcop link session v2\0\0\0\x02hd\0\0\0\x02ha\0\0\0\x02pd\0\0\0\x02pa");
        let salt = h.finalize();
        // HKDF-Extract is HMAC(salt, key); Expand's first block HMAC(prk, info || 0x01).
        let mut m = <HmacSha256 as Mac>::new_from_slice(&salt).unwrap();
        m.update(b"0123456789abcdef");
        let prk = m.finalize().into_bytes();
        let mut m = <HmacSha256 as Mac>::new_from_slice(&prk).unwrap();
        m.update(b"qcop link v2 dialer to acceptor\x01");
        assert_eq!(d.send[..], m.finalize().into_bytes()[..]);
    }

    #[test]
    fn randomness_differs() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        let mut j = Jitter::new();
        assert!((0..100).all(|_| j.below(10) < 10));
    }
}
