//! The few operations that need `unsafe`: adopting file descriptors inherited from systemd
//! or received over a Unix socket.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// First descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
#[cfg(feature = "daemon")]
const LISTEN_FDS_START: RawFd = 3;

/// Takes ownership of the first socket passed by systemd socket activation, if this process
/// was started that way (`LISTEN_PID` is our pid and `LISTEN_FDS` is at least 1). Clears the
/// variables so children do not inherit them.
#[cfg(feature = "daemon")]
pub fn take_activation_fd() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if pid != std::process::id() || fds == 0 {
        return None;
    }
    // Refuse a descriptor that is not open rather than adopting a number we do not own.
    nix::fcntl::fcntl(
        // SAFETY: fd 3 is only borrowed for this one fcntl(F_GETFD) call, which cannot
        // affect it; if it is not open the call fails with EBADF and we return None.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FDS_START) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .ok()?;
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID matched our pid) and nothing
    // else in the process has claimed it: this is the only place that adopts it, and the
    // environment variables were cleared above so it cannot be adopted twice.
    Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) })
}

/// Control-message space for the four descriptors one read accepts.
// SAFETY: CMSG_SPACE only computes a size from its argument; it touches no memory.
const CMSG_BYTES: usize =
    unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<RawFd>() as u32) } as usize;

/// A control-message buffer aligned for `struct cmsghdr` (whose widest field is a
/// `size_t`).
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);

/// Reads from a Unix stream socket like `read`, keeping any file descriptors that arrive
/// with the bytes (`SCM_RIGHTS`) at the back of `fds`, in order, close-on-exec.
///
/// At most `max_fds` descriptors are kept: past that, or when the kernel had to truncate the
/// control data (descriptors lost), the extra descriptors are closed and an `InvalidData`
/// error is returned, since the stream can no longer be matched to its descriptors.
pub fn recv_with_fds(
    stream: &std::os::unix::net::UnixStream,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<OwnedFd>,
    max_fds: usize,
) -> std::io::Result<usize> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    // On the stack, not `cmsg_space!`'s Vec: a read allocates nothing.
    let mut cmsg = CmsgBuf([0; CMSG_BYTES]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg.0),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let n = msg.bytes;
    let mut overflow = false;
    let cmsgs = match msg.cmsgs() {
        Ok(c) => c,
        // Control data truncated: the kernel closed the descriptors that did not fit.
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "file descriptors were lost in transit (control data truncated)",
            ))
        }
    };
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // nothing else knows the number, so adopting it here gives it exactly one
                // owner, which closes it on drop.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if fds.len() < max_fds {
                    fds.push_back(owned);
                } else {
                    overflow = true;
                }
            }
        }
    }
    if overflow {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the daemon sent more file descriptors than requested",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::map::{create_memfd, Access, Mapping};
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::collections::VecDeque;
    use std::io::{IoSlice, Write};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::net::UnixStream;

    fn send_fd(s: &UnixStream, bytes: &[u8], fd: RawFd) {
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<UnixAddr>(
            s.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn descriptors_arrive_in_order_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let m1 = create_memfd("one", 4096).unwrap();
        let m2 = create_memfd("two", 8192).unwrap();
        (&a).write_all(b"plain").unwrap();
        send_fd(&a, b"first", m1.as_raw_fd());
        send_fd(&a, b"second", m2.as_raw_fd());
        let mut fds = VecDeque::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 16 {
            let n = recv_with_fds(&b, &mut buf, &mut fds, 4).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"plainfirstsecond");
        let sizes: Vec<usize> = fds
            .iter()
            .map(|fd| Mapping::map(fd.as_fd(), Access::ReadOnly).unwrap().len())
            .collect();
        assert_eq!(sizes, [4096, 8192]);
    }

    #[test]
    fn too_many_descriptors_is_an_error_and_closes_them() {
        let (a, b) = UnixStream::pair().unwrap();
        let m = create_memfd("x", 4096).unwrap();
        send_fd(&a, b"x", m.as_raw_fd());
        let mut fds = VecDeque::new();
        let mut buf = [0u8; 8];
        let err = recv_with_fds(&b, &mut buf, &mut fds, 0).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(fds.is_empty());
    }
}
