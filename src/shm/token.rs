//! Who holds a lock or a semaphore slot: 30-bit tokens that name one attachment, and the
//! liveness check the daemon-less fallback uses.
//!
//! A token packs the process id the attacher reported (22 bits: Linux never hands out pids
//! above `PID_MAX_LIMIT` = 2²²) and a nonce the daemon chose (8 bits) so that two
//! attachments of one process to one object never share a token. The two top bits of a lock
//! word are flags, which is why tokens stop at 30 bits.
//!
//! The daemon identifies a dead holder by its connection closing and compares tokens only,
//! so pids do not matter there. Only the fallback used while the daemon is unreachable looks
//! at the pid inside a token; its limits are spelled out on [`process_liveness`].

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Bits of a token that hold the process id.
pub const PID_BITS: u32 = 22;
/// Mask of the process id in a token.
pub const PID_MASK: u32 = (1 << PID_BITS) - 1;
/// Mask of a whole token inside a 32-bit word (the two top bits are flags).
pub const TOKEN_MASK: u32 = 0x3fff_ffff;
/// Attachments one process may hold on one object at once (one token each).
pub const NONCES: u32 = 1 << (30 - PID_BITS);

/// One attachment's identity inside shared words; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u32);

impl Token {
    /// The token of attachment `nonce` (below [`NONCES`]) of process `pid` (1..=2²²-1).
    pub fn new(pid: u32, nonce: u32) -> Option<Token> {
        if pid == 0 || pid > PID_MASK || nonce >= NONCES {
            return None;
        }
        Some(Token(nonce << PID_BITS | pid))
    }

    /// A token read from shared memory: `None` unless it is one [`Token::new`] can produce.
    pub fn from_raw(raw: u32) -> Option<Token> {
        if raw & !TOKEN_MASK != 0 || raw & PID_MASK == 0 {
            return None;
        }
        Some(Token(raw))
    }

    /// The 30-bit value stored in shared words.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The process id the attacher reported.
    pub fn pid(self) -> u32 {
        self.0 & PID_MASK
    }

    /// The daemon-chosen nonce.
    pub fn nonce(self) -> u32 {
        self.0 >> PID_BITS
    }
}

/// Whether the holder named by a token is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (or the check cannot tell it from a running process).
    Alive,
    /// It has exited, or the word does not hold a valid token at all.
    Dead,
    /// Not checked: the daemon is reachable and will report the death itself.
    Unknown,
}

/// Whether process `pid` still runs, as seen from this process.
///
/// `kill(pid, 0)` failing with `ESRCH` means gone; a zombie (exited, not yet reaped by its
/// parent) also counts as gone, read from `/proc/<pid>/stat`. `EPERM` means the process
/// exists under another user: alive.
///
/// Limits, which is why this is only the fallback while the daemon is unreachable:
/// - **pid reuse**: if the holder died and its pid was handed to a new process before the
///   check, the holder looks alive and waiters keep waiting (until their own timeout, or
///   until a daemon is reachable again). Pids are reused only after the pid space wraps
///   (`/proc/sys/kernel/pid_max`, 32768 by default on 32-bit, 4194304 on 64-bit kernels).
/// - **pid namespaces**: the pid in a token is the one the attacher saw. A waiter in another
///   pid namespace checks the wrong process: attachers of one object should share a pid
///   namespace for the fallback to be right.
pub fn process_liveness(pid: u32) -> Liveness {
    if pid == 0 || pid > PID_MASK {
        return Liveness::Dead;
    }
    match kill(Pid::from_raw(pid as i32), None) {
        Err(Errno::ESRCH) => Liveness::Dead,
        Ok(()) | Err(_) => {
            // Field 3 of /proc/<pid>/stat is the state; the name before it is in
            // parentheses and may itself contain spaces or parentheses.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            match state {
                Some("Z" | "X" | "x") => Liveness::Dead,
                _ => Liveness::Alive,
            }
        }
    }
}

/// [`process_liveness`] of the pid inside a raw word; an invalid token is dead.
pub fn token_liveness(raw: u32) -> Liveness {
    match Token::from_raw(raw) {
        Some(t) => process_liveness(t.pid()),
        None => Liveness::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_pack_pid_and_nonce_and_reject_what_cannot_be_one() {
        let t = Token::new(4_194_303, 255).unwrap();
        assert_eq!((t.pid(), t.nonce()), (4_194_303, 255));
        assert_eq!(t.raw() & !TOKEN_MASK, 0);
        assert_eq!(Token::from_raw(t.raw()), Some(t));
        assert_eq!(Token::new(0, 0), None);
        assert_eq!(Token::new(1 << 22, 0), None);
        assert_eq!(Token::new(1, 256), None);
        assert_eq!(Token::from_raw(0), None);
        assert_eq!(Token::from_raw(5 << PID_BITS), None, "pid 0");
        assert_eq!(Token::from_raw(0x8000_0001), None, "flag bits");
    }

    #[test]
    fn liveness_of_this_process_a_reaped_child_and_a_zombie() {
        assert_eq!(process_liveness(std::process::id()), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits, which counts as dead.
        let start = std::time::Instant::now();
        while process_liveness(pid) != Liveness::Dead {
            assert!(start.elapsed() < std::time::Duration::from_secs(20));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert_eq!(process_liveness(pid), Liveness::Dead);
        assert_eq!(token_liveness(0), Liveness::Dead);
    }
}
