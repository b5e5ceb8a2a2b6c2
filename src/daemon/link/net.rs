//! TCP plumbing for links: non-blocking dial, the listener, gathered writes.

use nix::sys::socket::{
    connect, getsockopt, sendmsg, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    SockaddrStorage,
};
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Starts a non-blocking connection to `addr`. `Ok((stream, true))` if it completed at once,
/// `Ok((stream, false))` if it is in progress (EPOLLOUT will say when it is done; then see
/// [`connect_result`]).
pub fn dial(addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let stream = TcpStream::from(fd);
    match connect(stream.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok((stream, true)),
        Err(nix::errno::Errno::EINPROGRESS) => Ok((stream, false)),
        Err(e) => Err(e.into()),
    }
}

/// The outcome of a non-blocking connect that reported writable.
pub fn connect_result(stream: &TcpStream) -> io::Result<()> {
    match getsockopt(stream, sockopt::SocketError)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Binds the link listener (non-blocking).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Prepares an accepted or dialed socket: non-blocking, and Nagle off if asked.
pub fn configure(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(nodelay)
}

/// One `sendmsg` of `slices`, without SIGPIPE and without blocking.
pub fn send(stream: &TcpStream, slices: &[IoSlice<'_>]) -> nix::Result<usize> {
    sendmsg::<SockaddrStorage>(
        stream.as_raw_fd(),
        slices,
        &[],
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
}
