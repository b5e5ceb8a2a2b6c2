//! Shared-memory streams for applications: a [`Publisher`] writes messages into a ring that
//! qcopd created, [`Subscriber`]s on the same board read them in place; qcopd forwards them
//! to ordinary subscribers of the channel too.
//!
//! ```no_run
//! use qcop::shm::{Policy, Publisher, StreamOptions, Subscriber};
//! use qcop::ConnectOptions;
//! use std::time::Duration;
//!
//! let opts = ConnectOptions::new();
//! let mut publisher = Publisher::open(
//!     &opts,
//!     "sensors/imu",
//!     "sample(QByteArray)",
//!     &StreamOptions::new().slot_size(64).slots(1024).policy(Policy::Lossless),
//! )?;
//! let mut subscriber = Subscriber::open(&opts, "sensors/imu")?;
//!
//! // Zero-copy: write into the slot, then commit.
//! let mut loan = publisher.loan(Duration::from_secs(1))?;
//! loan[..5].copy_from_slice(b"hello");
//! loan.commit(5);
//! // Zero-copy: read the message where it lies, then release it.
//! let sample = subscriber.borrow(Duration::from_secs(1))?;
//! assert_eq!(&sample[..], b"hello");
//! sample.release()?;
//!
//! // Copying, for convenience.
//! publisher.send(b"world", Duration::from_secs(1))?;
//! let mut buf = Vec::new();
//! subscriber.recv(&mut buf, Duration::from_secs(1))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each publisher and subscriber holds its own connection to qcopd: closing it (dropping the
//! value, or the process dying) is how qcopd learns that the stream ended or that a
//! subscriber's slots are free.

use super::layout::{state, Geometry, Policy};
use super::loan::{Loan, Sample};
use super::mapped::MappedMemory;
use super::ring::{Consumer, Deadline, Producer, Received, Ring, StreamError, WaitMode};
use crate::client::{unexpected, Answer};
use crate::pattern::{check_name, is_pattern};
use crate::wire::{ErrorCode, Frame};
use crate::{ConnectOptions, Connection, Error};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Geometry, policy and waiting of a stream a publisher opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    slot_size: u32,
    slots: u32,
    policy: Policy,
    wait: WaitMode,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions::new()
    }
}

impl StreamOptions {
    /// 256 slots of 256 bytes, lossless, sleeping waits.
    pub fn new() -> StreamOptions {
        StreamOptions {
            slot_size: 256,
            slots: 256,
            policy: Policy::Lossless,
            wait: WaitMode::Sleep,
        }
    }

    /// Largest message, in bytes (rounded up to a multiple of 8; at most qcopd's
    /// `max_payload`).
    pub fn slot_size(mut self, bytes: u32) -> StreamOptions {
        self.slot_size = bytes;
        self
    }

    /// Messages the ring holds (a power of two, at least 2).
    pub fn slots(mut self, count: u32) -> StreamOptions {
        self.slots = count;
        self
    }

    /// What happens when the slowest subscriber is a whole ring behind.
    pub fn policy(mut self, policy: Policy) -> StreamOptions {
        self.policy = policy;
        self
    }

    /// How the publisher waits for space (lossless policy).
    pub fn wait_mode(mut self, mode: WaitMode) -> StreamOptions {
        self.wait = mode;
        self
    }
}

/// Whether qcopd still holds its end of `conn`'s socket (no system call beyond one `poll`).
fn daemon_alive(conn: &Connection) -> bool {
    // POLLHUP comes with the peer's close (qcopd exited or was killed), also while unread
    // bytes are pending; only POLLIN is asked for so that every reported bit is one nix
    // knows (an unknown bit would hide the whole answer).
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) | Err(_) => true,
        Ok(_) => !fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
    }
}

/// How often `Subscriber::open_wait` asks again for a stream that is not open yet.
const STREAM_POLL: Duration = Duration::from_millis(20);

fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
}

/// The writing end of a shared-memory stream.
///
/// Dropping it ends the stream: subscribers read what was published, then get
/// [`StreamError::Ended`].
pub struct Publisher {
    conn: Connection,
    producer: Producer<MappedMemory>,
    channel: String,
    message: String,
    mode: WaitMode,
}

impl Publisher {
    /// Connects to qcopd and opens a stream on `channel`, whose messages all carry the
    /// signature `message` (for ordinary subscribers, which receive them as `Message`s).
    ///
    /// Fails with [`Error::Refused`] when the channel already has a stream
    /// (`StreamExists`), the daemon's limits are reached (`TooManyStreams`, `RingSize`) or
    /// the geometry is invalid (`RingSize`).
    pub fn open(
        opts: &ConnectOptions,
        channel: &str,
        message: &str,
        stream: &StreamOptions,
    ) -> Result<Publisher, Error> {
        let mut conn = Connection::connect(opts)?;
        let limits = conn.limits();
        check_name(channel, limits.max_channel as usize).map_err(Error::BadName)?;
        if is_pattern(channel) {
            return Err(Error::WildcardSend(channel.to_owned()));
        }
        check_name(message, limits.max_message as usize).map_err(Error::BadName)?;
        let (answer, memfd) = conn.request_with_fd(|seq| Frame::ShmOpen {
            seq,
            policy: stream.policy.to_u32() as u8,
            slot_size: stream.slot_size,
            slot_count: stream.slots,
            channel,
            message,
        })?;
        let Answer::ShmStream { stream: id } = answer else {
            return Err(unexpected(answer));
        };
        let (answer, event) = conn.request_with_fd(|seq| Frame::ShmEventFd { seq, stream: id })?;
        if !matches!(answer, Answer::ShmEvent) {
            return Err(unexpected(answer));
        }
        let mut mem = MappedMemory::map(memfd.as_fd())?;
        mem.set_event(event);
        let ring = Ring::open(mem).map_err(invalid)?;
        Ok(Publisher {
            conn,
            producer: Producer::new(ring),
            channel: channel.to_owned(),
            message: message.to_owned(),
            mode: stream.wait,
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The signature of the stream's messages.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Largest message, in bytes.
    pub fn slot_size(&self) -> usize {
        self.producer.ring().geometry().slot_size() as usize
    }

    /// Messages the ring holds.
    pub fn slots(&self) -> u32 {
        self.producer.ring().geometry().slot_count()
    }

    /// The overflow policy.
    pub fn policy(&self) -> Policy {
        self.producer.ring().geometry().policy()
    }

    /// Subscribers that map the stream now (read from the ring's records, which qcopd
    /// keeps; the publisher may wait for its audience before publishing).
    pub fn subscribers(&self) -> usize {
        let ring = self.producer.ring();
        (1..ring.geometry().records())
            .filter(|&r| ring.record_active(r))
            .count()
    }

    /// How `loan` and `send` wait for space (lossless policy).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.mode = mode;
    }

    /// Loans the next slot, waiting up to `timeout` for a lossless ring to have room.
    ///
    /// Fails with `Timeout` (the slowest subscriber did not release a slot in time),
    /// `Ended` (qcopd ended the stream, e.g. while shutting down) or `DaemonGone`.
    pub fn loan(&mut self, timeout: Duration) -> Result<Loan<'_>, StreamError> {
        let conn = &self.conn;
        let slot = self
            .producer
            .begin(timeout, self.mode, &mut || daemon_alive(conn))?;
        Ok(Loan::new(&mut self.producer, slot))
    }

    /// Loans the next slot if there is room now (`None`: a lossless ring is full).
    pub fn try_loan(&mut self) -> Result<Option<Loan<'_>>, StreamError> {
        if !self.producer.ring().is_open() {
            return Err(StreamError::Ended);
        }
        match self.producer.try_begin() {
            Ok(slot) => Ok(Some(Loan::new(&mut self.producer, slot))),
            Err(_) => Ok(None),
        }
    }

    /// Copies `data` into the next slot and publishes it, waiting as for [`Publisher::loan`].
    pub fn send(&mut self, data: &[u8], timeout: Duration) -> Result<(), StreamError> {
        self.check_size(data)?;
        let mut loan = self.loan(timeout)?;
        loan[..data.len()].copy_from_slice(data);
        loan.commit(data.len());
        Ok(())
    }

    /// Publishes `data` if there is room now; `Ok(false)` if a lossless ring is full.
    pub fn try_send(&mut self, data: &[u8]) -> Result<bool, StreamError> {
        self.check_size(data)?;
        match self.try_loan()? {
            Some(mut loan) => {
                loan[..data.len()].copy_from_slice(data);
                loan.commit(data.len());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn check_size(&self, data: &[u8]) -> Result<(), StreamError> {
        if data.len() > self.slot_size() {
            return Err(StreamError::TooLarge {
                size: data.len(),
                max: self.slot_size(),
            });
        }
        Ok(())
    }

    /// The ring's memory: for tests and diagnostic tools (writing to it bypasses the ring
    /// protocol).
    #[doc(hidden)]
    pub fn memory(&self) -> &MappedMemory {
        self.producer.ring().memory()
    }

    /// Ends the stream and closes the connection (the same as dropping the publisher).
    pub fn close(self) {}
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.producer.ring().end(state::ENDED);
    }
}

/// A reading end of a shared-memory stream, mapped directly: messages never pass through
/// qcopd.
pub struct Subscriber {
    conn: Connection,
    consumer: Consumer<MappedMemory>,
    channel: String,
    message: String,
    mode: WaitMode,
}

impl Subscriber {
    /// Connects to qcopd and maps the stream open on `channel`. Reading starts with the
    /// next message published.
    ///
    /// Fails with [`Error::Refused`] `NoStream` if the channel has no open stream, or
    /// `TooManyConsumers` if every subscriber place of the stream is taken.
    pub fn open(opts: &ConnectOptions, channel: &str) -> Result<Subscriber, Error> {
        Subscriber::open_wait(opts, channel, Duration::ZERO)
    }

    /// Like [`Subscriber::open`], but while the channel has no open stream, asks again
    /// (every 20 ms, on one connection) until `timeout` passes: a subscriber may start
    /// before its publisher.
    pub fn open_wait(
        opts: &ConnectOptions,
        channel: &str,
        timeout: Duration,
    ) -> Result<Subscriber, Error> {
        let deadline = deadline(timeout);
        let mut conn = Connection::connect(opts)?;
        check_name(channel, conn.limits().max_channel as usize).map_err(Error::BadName)?;
        let (answer, memfd) = loop {
            match conn.request_with_fd(|seq| Frame::ShmMap { seq, channel }) {
                Err(Error::Refused {
                    code: ErrorCode::NoStream,
                    ..
                }) if deadline.map_or(true, |d| Instant::now() < d) => {
                    std::thread::sleep(STREAM_POLL);
                }
                r => break r?,
            }
        };
        let Answer::ShmMapped { record, message } = answer else {
            return Err(unexpected(answer));
        };
        // The header is checked: another process (the publisher) writes this memory.
        let ring = Ring::open(MappedMemory::map(memfd.as_fd())?).map_err(invalid)?;
        Ok(Subscriber {
            conn,
            consumer: Consumer::attach(ring, record),
            channel: channel.to_owned(),
            message,
            mode: WaitMode::Sleep,
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The signature of the stream's messages.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Largest message, in bytes.
    pub fn slot_size(&self) -> usize {
        self.consumer.ring().geometry().slot_size() as usize
    }

    /// The overflow policy.
    pub fn policy(&self) -> Policy {
        self.consumer.ring().geometry().policy()
    }

    /// How `recv` and `borrow` wait: [`WaitMode::Sleep`] (the default) costs no CPU while
    /// idle and one wake-up per message that finds this subscriber asleep;
    /// [`WaitMode::Spin`] keeps one CPU busy for the lowest latency;
    /// [`WaitMode::Adaptive`] spins for a while after each message, then sleeps.
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.mode = mode;
    }

    /// Messages this subscriber lost to a lossy publisher that overran it (or skipped as
    /// corrupt).
    pub fn lost(&self) -> u64 {
        self.consumer.lost()
    }

    /// Whether the stream ended (messages published before the end may still be unread).
    pub fn is_ended(&self) -> bool {
        !self.consumer.ring().is_open()
    }

    /// Copies the next message into `buf` (resized to it), waiting up to `timeout`.
    ///
    /// Fails with `Timeout`, with `Ended` once the stream ended and everything published
    /// was read, with `DaemonGone` if qcopd went away while the ring was empty, or with
    /// `Corrupt` if the publisher wrote something impossible (the slot is skipped; the next
    /// call goes on).
    pub fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Received, StreamError> {
        let conn = &self.conn;
        self.consumer
            .recv_into(buf, timeout, self.mode, &mut || daemon_alive(conn))
    }

    /// Copies the next message into `buf` if one is ready.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<Option<Received>, StreamError> {
        if let Some(r) = self.consumer.try_recv_into(buf)? {
            return Ok(Some(r));
        }
        if !self.consumer.ring().is_open() && !self.consumer.readable() {
            return Err(StreamError::Ended);
        }
        Ok(None)
    }

    /// Borrows the next message in place, waiting up to `timeout` (errors as for `recv`).
    pub fn borrow(&mut self, timeout: Duration) -> Result<Sample<'_>, StreamError> {
        let mut deadline = Deadline::new(timeout);
        let slot = loop {
            if let Some(slot) = self.consumer.peek()? {
                break slot;
            }
            // Only a wait reads the clock.
            let d = deadline.for_wait()?;
            let conn = &self.conn;
            self.consumer
                .wait(d, self.mode, &mut || daemon_alive(conn))?;
        };
        Ok(Sample::new(&mut self.consumer, slot))
    }

    /// Borrows the next message in place if one is ready.
    pub fn try_borrow(&mut self) -> Result<Option<Sample<'_>>, StreamError> {
        let slot = match self.consumer.peek()? {
            Some(slot) => Some(slot),
            // Everything committed before the end is visible once the end is: look again.
            None if !self.consumer.ring().is_open() => match self.consumer.peek()? {
                Some(slot) => Some(slot),
                None => return Err(StreamError::Ended),
            },
            None => None,
        };
        Ok(slot.map(|slot| Sample::new(&mut self.consumer, slot)))
    }
}

/// The slot size a stream opened with `bytes` gets (rounded up to a multiple of 8).
pub fn slot_size_for(bytes: u32) -> u32 {
    Geometry::slot_size_for(bytes)
}
