//! Shared futexes on 32-bit words (`futex(2)` without `FUTEX_PRIVATE_FLAG`).
//!
//! The words live in memory mapped by several processes, so the kernel keys waiters by the
//! physical page, not by the address space: the private variant would never wake a waiter in
//! another process. Every wait in this project passes a timeout, so that no process sleeps
//! forever on a peer that died.

#![allow(unsafe_code)]

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Woken by [`wake`] (or spuriously: callers re-check the word).
    Woken,
    /// The word no longer held the expected value when the call started (`EAGAIN`).
    Changed,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleeps while `*word == expected`, for at most `timeout` (`None`: no limit).
///
/// The check and the sleep are atomic with respect to [`wake`]: a waker that changes the word
/// and then calls [`wake`] cannot be missed. Returns as soon as the word changes, a waker
/// wakes this thread, the timeout passes or a signal arrives.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wait {
    let ts = timeout.map(|d| libc::timespec {
        // Saturates far beyond any timeout this project uses (years); fits a 32-bit time_t.
        tv_sec: d.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, 4-aligned `AtomicU32` for the duration of the call (the
    // borrow guarantees it); the kernel only reads it. `ts_ptr` is null or points to a
    // timespec that lives until the call returns. The remaining arguments are unused by
    // FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Wait::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Wait::Changed,
        Some(libc::ETIMEDOUT) => Wait::TimedOut,
        Some(libc::EINTR) => Wait::Interrupted,
        // EFAULT/EINVAL cannot happen for a valid aligned word; treat as spurious.
        _ => Wait::Woken,
    }
}

/// Wakes at most `count` threads (in any process) sleeping on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32);
    // SAFETY: `word` is a valid, 4-aligned `AtomicU32` for the duration of the call; the
    // kernel does not access it for FUTEX_WAKE beyond hashing its address. The remaining
    // arguments are unused by FUTEX_WAKE.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc < 0 {
        0
    } else {
        rc as usize
    }
}

/// Wakes every thread sleeping on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn mismatch_returns_at_once() {
        let w = AtomicU32::new(1);
        assert_eq!(
            wait(&w, 2, Some(Duration::from_secs(5))),
            Wait::Changed,
            "a stale expected value must not sleep"
        );
    }

    #[test]
    fn timeout_is_honoured() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(wait(&w, 0, Some(Duration::from_millis(20))), Wait::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn wake_reaches_a_sleeper() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
            w2.load(Ordering::Acquire)
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(7, Ordering::Release);
        wake_all(&w);
        assert_eq!(t.join().unwrap(), 7);
    }

    #[test]
    fn wake_without_sleepers_wakes_nobody() {
        let w = AtomicU32::new(0);
        assert_eq!(wake(&w, 1), 0);
    }
}
