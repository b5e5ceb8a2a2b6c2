//! A fault-injecting TCP relay on loopback, put between two linked daemons.
//!
//! The dialing daemon connects to [`FaultProxy::port`]; the proxy connects to the target
//! port and relays the bytes both ways, one thread per connection. It can be told to:
//! - delay every chunk by a fixed time each way ([`FaultProxy::set_delay`]);
//! - stall: stop forwarding, connections left open, as on a congested or unplugged wire
//!   ([`FaultProxy::stall`]);
//! - cut: reset every open connection, both ends getting an RST (`SO_LINGER` 0),
//!   whatever is in flight lost ([`FaultProxy::cut`]);
//! - drop, duplicate, corrupt or truncate (forward half, then reset) the next chunk read
//!   in one direction ([`FaultProxy::inject`]).
//!
//! A chunk is what one `read` returned: frames or pieces of them, as TCP delivered them.
//! Every action takes effect asynchronously, within a few milliseconds: tests wait for what
//! the daemons report, never for the proxy.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the side that connected to the proxy to the target.
    ToTarget,
    /// From the target back to the side that connected.
    FromTarget,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToTarget => 0,
            Dir::FromTarget => 1,
        }
    }
}

/// What happens to the next chunk read in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not forwarded: a hole in the stream.
    Drop,
    /// Forwarded twice.
    Duplicate,
    /// Forwarded with its middle byte inverted.
    Corrupt,
    /// Its first half is forwarded, then both ends are reset.
    Truncate,
}

/// Bytes read and not yet written, per direction, before the proxy stops reading.
const MAX_PENDING: usize = 1 << 20;
/// How often a connection looks at its instructions when nothing happens.
const TICK: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Control {
    delay: Duration,
    stalled: bool,
    /// Connections numbered below this are reset.
    cut_below: u64,
    next: [VecDeque<Fault>; 2],
}

#[derive(Default)]
struct Shared {
    control: Mutex<Control>,
    accepted: AtomicU64,
    open: AtomicU64,
    forwarded: [AtomicU64; 2],
    applied: AtomicU64,
    stop: AtomicBool,
    relays: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The relay; stopped (its connections reset) when dropped.
pub struct FaultProxy {
    /// The loopback port to dial instead of the target.
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Relays connections on a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(listener, target, s));
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Every chunk read from now on waits `delay` before it is written on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.control().delay = delay;
    }

    /// Stops (`true`) or resumes forwarding in both directions, on every connection.
    pub fn stall(&self, stalled: bool) {
        self.shared.control().stalled = stalled;
    }

    /// Resets every connection open now: both daemons get an RST, bytes in flight are lost.
    pub fn cut(&self) {
        let accepted = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.control().cut_below = accepted + 1;
    }

    /// Applies `fault` to the next chunk read in direction `dir` (faults queue up in order).
    pub fn inject(&self, dir: Dir, fault: Fault) {
        self.shared.control().next[dir.index()].push_back(fault);
    }

    /// Faults injected and not applied yet (no chunk came their way).
    pub fn pending_faults(&self) -> usize {
        let c = self.shared.control();
        c.next[0].len() + c.next[1].len()
    }

    /// One-shot faults applied so far.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections being relayed now.
    pub fn open(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Bytes written on in direction `dir` so far, all connections together.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.shared.forwarded[dir.index()].load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let relays =
            std::mem::take(&mut *self.shared.relays.lock().unwrap_or_else(|e| e.into_inner()));
        for r in relays {
            let _ = r.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: u16, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            reset(client);
            continue;
        };
        let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        shared.open.fetch_add(1, Ordering::SeqCst);
        let s = Arc::clone(&shared);
        let relay = thread::spawn(move || {
            Relay::new(client, server, number).run(&s);
            s.open.fetch_sub(1, Ordering::SeqCst);
        });
        shared
            .relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(relay);
    }
}

/// Closes a socket with an RST instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = setsockopt(
        &stream,
        sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(stream);
}

/// A chunk waiting to be written: when, what, and whether to reset after it.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
    then_reset: bool,
}

/// One direction of a connection.
#[derive(Default)]
struct Way {
    pending: VecDeque<Chunk>,
    pending_bytes: usize,
    /// The source sent FIN.
    eof: bool,
    /// The FIN was passed on.
    shut: bool,
}

struct Relay {
    /// `[client, server]`: direction 0 reads the client and writes the server.
    ends: [TcpStream; 2],
    ways: [Way; 2],
    number: u64,
}

/// How a connection ends.
enum End {
    /// Both directions finished with a FIN.
    Closed,
    /// Reset both ends.
    Reset,
}

impl Relay {
    fn new(client: TcpStream, server: TcpStream, number: u64) -> Relay {
        for s in [&client, &server] {
            let _ = s.set_nonblocking(true);
            let _ = s.set_nodelay(true);
        }
        Relay {
            ends: [client, server],
            ways: [Way::default(), Way::default()],
            number,
        }
    }

    fn run(mut self, shared: &Shared) {
        let end = self.relay(shared);
        let [a, b] = self.ends;
        if let End::Reset = end {
            reset(a);
            reset(b);
        }
    }

    fn relay(&mut self, shared: &Shared) -> End {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return End::Reset;
            }
            let (stalled, cut, delay) = {
                let c = shared.control();
                (c.stalled, self.number < c.cut_below, c.delay)
            };
            if cut {
                return End::Reset;
            }
            if stalled {
                thread::sleep(TICK);
                continue;
            }
            let now = Instant::now();
            // What to wait for on each end: reading its direction, writing the other's.
            let mut events = [PollFlags::empty(); 2];
            let mut wake = now + TICK;
            for d in 0..2 {
                let w = &self.ways[d];
                if !w.eof && w.pending_bytes < MAX_PENDING {
                    events[d] |= PollFlags::POLLIN;
                }
                if let Some(front) = w.pending.front() {
                    if front.due <= now {
                        events[1 - d] |= PollFlags::POLLOUT;
                    } else {
                        wake = wake.min(front.due);
                    }
                }
            }
            let watched: Vec<usize> = (0..2).filter(|&i| !events[i].is_empty()).collect();
            let mut ready = [PollFlags::empty(); 2];
            if watched.is_empty() {
                thread::sleep(wake.saturating_duration_since(now));
            } else {
                let mut fds: Vec<PollFd<'_>> = watched
                    .iter()
                    .map(|&i| PollFd::new(self.ends[i].as_fd(), events[i]))
                    .collect();
                let wait = wake.saturating_duration_since(now).as_millis().min(1000) as u16;
                match poll(&mut fds, PollTimeout::from(wait)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return End::Reset,
                }
                for (&i, f) in watched.iter().zip(&fds) {
                    ready[i] = f.revents().unwrap_or(PollFlags::empty());
                }
            }
            for d in 0..2 {
                let hangup = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
                if ready[d].intersects(hangup) && events[d].contains(PollFlags::POLLIN) {
                    if let Some(end) = self.read(d, &mut buf, delay, shared) {
                        return end;
                    }
                }
            }
            for d in 0..2 {
                if let Some(end) = self.write(d, shared) {
                    return end;
                }
            }
            if self.ways.iter().all(|w| w.shut) {
                return End::Closed;
            }
        }
    }

    /// Reads a chunk from the source of direction `d` and queues it, as the next fault says.
    fn read(&mut self, d: usize, buf: &mut [u8], delay: Duration, shared: &Shared) -> Option<End> {
        let n = match (&self.ends[d]).read(buf) {
            Ok(0) => {
                self.ways[d].eof = true;
                return None;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                return None;
            }
            // A reset (or any error) on one end is passed on to the other.
            Err(_) => return Some(End::Reset),
        };
        let fault = shared.control().next[d].pop_front();
        if fault.is_some() {
            shared.applied.fetch_add(1, Ordering::SeqCst);
        }
        let mut bytes = buf[..n].to_vec();
        let mut copies = 1;
        let mut then_reset = false;
        match fault {
            None => {}
            Some(Fault::Drop) => copies = 0,
            Some(Fault::Duplicate) => copies = 2,
            Some(Fault::Corrupt) => bytes[n / 2] ^= 0xff,
            Some(Fault::Truncate) => {
                bytes.truncate((n / 2).max(1));
                then_reset = true;
            }
        }
        let due = Instant::now() + delay;
        let way = &mut self.ways[d];
        for _ in 0..copies {
            way.pending_bytes += bytes.len();
            way.pending.push_back(Chunk {
                due,
                bytes: bytes.clone(),
                then_reset,
            });
        }
        None
    }

    /// Writes what is due in direction `d`; passes a FIN on once the source sent one and
    /// everything before it is written.
    fn write(&mut self, d: usize, shared: &Shared) -> Option<End> {
        let now = Instant::now();
        let sink = &self.ends[1 - d];
        let way = &mut self.ways[d];
        while let Some(front) = way.pending.front_mut() {
            if front.due > now {
                break;
            }
            match (&*sink).write(&front.bytes) {
                Ok(n) => {
                    shared.forwarded[d].fetch_add(n as u64, Ordering::SeqCst);
                    way.pending_bytes -= n;
                    if n < front.bytes.len() {
                        front.bytes.drain(..n);
                        break;
                    }
                    let done = way.pending.pop_front().expect("front exists");
                    if done.then_reset {
                        return Some(End::Reset);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    break;
                }
                Err(_) => return Some(End::Reset),
            }
        }
        if way.eof && way.pending.is_empty() && !way.shut {
            way.shut = true;
            let _ = sink.shutdown(Shutdown::Write);
        }
        None
    }
}
