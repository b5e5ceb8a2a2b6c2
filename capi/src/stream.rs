//! Shared-memory streams: a publisher writes messages into a ring qcopd set up, subscribers
//! on the same board read them in place (zero copy) or copy them out.

use crate::conn::{options, wait, Wait};
use crate::error::{self, ErrorText, Failure, Handle, QCOP_E_INVAL, QCOP_OK};
use crate::ffi::{self, held::Lent};
use qcop_client::shm::{Loan, Policy, Publisher, Sample, StreamOptions, Subscriber};
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

/// Flag of `qcop_publisher_open`: overwrite the oldest message when the slowest subscriber
/// is a whole ring behind (it learns how many it lost) instead of waiting for space.
pub const QCOP_LOSSY: u32 = 1;

/// The writing end of a stream (`qcop_publisher` in C).
pub struct Pub {
    inner: Lent<Publisher, Loan<'static>>,
    error: ErrorText,
}

/// A reading end of a stream (`qcop_subscriber` in C).
pub struct Sub {
    inner: Lent<Subscriber, Sample<'static>>,
    error: ErrorText,
}

impl Handle for Pub {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

impl Handle for Sub {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

fn busy(what: &str) -> Failure {
    Failure::state(format!("a {what} is outstanding: finish it first"))
}

/// A wait as the stream API takes it (a long one stands for "as long as it takes").
fn stream_wait(timeout_ms: c_int) -> Result<Duration, Failure> {
    Ok(match wait(timeout_ms)? {
        Wait::Forever => Duration::from_secs(100 * 365 * 86_400),
        Wait::For(d) => d,
    })
}

/// Connects to qcopd (`socket`: NULL for the default) and opens a stream on `channel`
/// whose messages all carry the signature `message` (ordinary subscribers receive them as
/// messages too). `slot_size`: largest message in bytes (rounded up to a multiple of 8);
/// `slots`: messages the ring holds (a power of two, at least 2); `flags`: `QCOP_LOSSY`
/// or 0. Stores the publisher in `*out` (close it with `qcop_publisher_close`, which ends
/// the stream). Errors go to `qcop_strerror(NULL)`: `QCOP_E_REFUSED` if the channel has a
/// stream already or the geometry is refused. Blocks for at most the default timeout.
///
/// ```c
/// qcop_publisher *pub;
/// if (qcop_publisher_open(&pub, NULL, "sensors/imu", "sample(QByteArray)", 64, 1024, 0) < 0)
///     fprintf(stderr, "%s\n", qcop_strerror(NULL));
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_open(
    out: *mut *mut Pub,
    socket: *const c_char,
    channel: *const c_char,
    message: *const c_char,
    slot_size: u32,
    slots: u32,
    flags: u32,
) -> c_int {
    error::run(|| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        if flags & !QCOP_LOSSY != 0 {
            return Err(Failure::inval(format!("unknown flags {flags:#x}")));
        }
        let opts = options(socket, std::ptr::null(), 0)?;
        let channel = ffi::str_arg(channel, "channel")?;
        let message = ffi::str_arg(message, "message")?;
        let policy = if flags & QCOP_LOSSY != 0 {
            Policy::Lossy
        } else {
            Policy::Lossless
        };
        let stream = StreamOptions::new()
            .slot_size(slot_size)
            .slots(slots)
            .policy(policy);
        let publisher = Publisher::open(&opts, channel, message, &stream)?;
        ffi::put(
            out,
            ffi::into_handle(Pub {
                inner: Lent::new(publisher),
                error: ErrorText::new(),
            }),
        );
        Ok(QCOP_OK)
    })
}

/// Ends the stream and frees the publisher (an outstanding loan is dropped unpublished);
/// subscribers read what was published, then get `QCOP_E_ENDED`. NULL is ignored.
///
/// ```c
/// qcop_publisher_close(pub);
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_close(publisher: *mut Pub) {
    error::free(publisher);
}

/// Loans the next slot to write a message in place: waits up to `timeout_ms` (`-1`: as
/// long as it takes, `0`: not at all) for space (lossless streams). Returns 1 and stores
/// the slot in `*buf` and its size in `*capacity`, 0 if no slot came in time, or a
/// negative code (`QCOP_E_STATE` if a loan is outstanding). Write at most `*capacity`
/// bytes, then `qcop_publisher_commit`. The slot stays valid until the commit or the close.
///
/// ```c
/// void *slot; size_t cap;
/// if (qcop_publisher_loan(pub, 1000, &slot, &cap) == 1) {
///     memcpy(slot, "hello", 5);
///     qcop_publisher_commit(pub, 5);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_loan(
    publisher: *mut Pub,
    timeout_ms: c_int,
    buf: *mut *mut c_void,
    capacity: *mut usize,
) -> c_int {
    error::with(publisher, "publisher", |p| {
        ffi::put_required(buf, std::ptr::null_mut(), "buf")?;
        ffi::put(capacity, 0);
        let timeout = wait(timeout_ms)?;
        let long = stream_wait(timeout_ms)?;
        let got = p.inner.lend(
            || busy("loan"),
            |publisher| match timeout {
                Wait::For(d) if d.is_zero() => Ok(publisher.try_loan()?),
                _ => match publisher.loan(long) {
                    Ok(l) => Ok(Some(l)),
                    Err(qcop_client::shm::StreamError::Timeout) => Ok(None),
                    Err(e) => Err(e.into()),
                },
            },
        )?;
        if !got {
            return Ok(0);
        }
        let loan = p.inner.lent().ok_or_else(|| busy("loan"))?;
        ffi::put(capacity, loan.capacity());
        ffi::put(buf, loan.as_mut_ptr().cast());
        Ok(1)
    })
}

/// Publishes the first `len` bytes of the loaned slot (`len` at most its capacity) and
/// wakes subscribers that sleep. `QCOP_E_STATE` without a loan, `QCOP_E_TOOLARGE` if
/// `len` exceeds the capacity (the loan stays).
///
/// ```c
/// qcop_publisher_commit(pub, 5);
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_commit(publisher: *mut Pub, len: usize) -> c_int {
    error::with(publisher, "publisher", |p| {
        let cap = p
            .inner
            .lent()
            .map(|l| l.capacity())
            .ok_or_else(|| Failure::state("no slot is loaned"))?;
        if len > cap {
            return Err(Failure::new(
                crate::error::QCOP_E_TOOLARGE,
                format!("{len} bytes exceed the slot's {cap}"),
            ));
        }
        p.inner.finish(|l| l.commit(len));
        Ok(QCOP_OK)
    })
}

/// Copies `len` bytes in as the next message, waiting up to `timeout_ms` for space.
/// Returns 1 when sent, 0 if no space came in time, or a negative code
/// (`QCOP_E_TOOLARGE` over the slot size).
///
/// ```c
/// qcop_publisher_send(pub, "world", 5, 1000);
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_send(
    publisher: *mut Pub,
    data: *const c_void,
    len: usize,
    timeout_ms: c_int,
) -> c_int {
    error::with(publisher, "publisher", |p| {
        let data = ffi::bytes(data, len, "data")?;
        let timeout = wait(timeout_ms)?;
        let long = stream_wait(timeout_ms)?;
        let publisher = p.inner.owner().ok_or_else(|| busy("loan"))?;
        match timeout {
            Wait::For(d) if d.is_zero() => Ok(publisher.try_send(data)? as c_int),
            _ => match publisher.send(data, long) {
                Ok(()) => Ok(1),
                Err(qcop_client::shm::StreamError::Timeout) => Ok(0),
                Err(e) => Err(e.into()),
            },
        }
    })
}

/// Subscribers mapped to the stream now (-1 for NULL or during a loan).
///
/// ```c
/// if (qcop_publisher_subscribers(pub) == 0) skip_work();
/// ```
#[no_mangle]
pub extern "C" fn qcop_publisher_subscribers(publisher: *mut Pub) -> c_int {
    match ffi::handle_mut(publisher).and_then(|p| p.inner.owner()) {
        Some(p) => p.subscribers().min(c_int::MAX as usize) as c_int,
        None => -1,
    }
}

/// Connects to qcopd (`socket`: NULL for the default) and maps the stream of `channel`;
/// reading starts with the next message published. While the channel has no stream yet,
/// asks again for up to `wait_ms` (0: fail at once with `QCOP_E_REFUSED`). Stores the
/// subscriber in `*out` (close with `qcop_subscriber_close`). Errors go to
/// `qcop_strerror(NULL)`.
///
/// ```c
/// qcop_subscriber *sub;
/// if (qcop_subscriber_open(&sub, NULL, "sensors/imu", 5000) < 0) return 1;
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_open(
    out: *mut *mut Sub,
    socket: *const c_char,
    channel: *const c_char,
    wait_ms: c_int,
) -> c_int {
    error::run(|| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        if wait_ms < 0 {
            return Err(Failure::inval(format!("wait of {wait_ms} ms")));
        }
        let opts = options(socket, std::ptr::null(), 0)?;
        let channel = ffi::str_arg(channel, "channel")?;
        let sub = Subscriber::open_wait(&opts, channel, Duration::from_millis(wait_ms as u64))?;
        ffi::put(
            out,
            ffi::into_handle(Sub {
                inner: Lent::new(sub),
                error: ErrorText::new(),
            }),
        );
        Ok(QCOP_OK)
    })
}

/// Unmaps the stream and frees the subscriber (a borrowed sample is released). NULL is
/// ignored.
///
/// ```c
/// qcop_subscriber_close(sub);
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_close(subscriber: *mut Sub) {
    error::free(subscriber);
}

/// Borrows the next message in place, waiting up to `timeout_ms` (`-1`: as long as it
/// takes, `0`: not at all). Returns 1 and stores its bytes in `*data` and its length in
/// `*len`, 0 if none came in time, or a negative code: `QCOP_E_ENDED` once the stream
/// ended and everything was read, `QCOP_E_DAEMONGONE`, `QCOP_E_CORRUPT` (skipped; go on),
/// `QCOP_E_STATE` if a sample is borrowed already. The bytes stay valid until
/// `qcop_subscriber_release` (or the close). `*lost` (if not NULL): messages a lossy
/// publisher overwrote just before this one.
///
/// ```c
/// const void *p; size_t n;
/// if (qcop_subscriber_borrow(sub, 1000, &p, &n, NULL) == 1) {
///     use(p, n);
///     qcop_subscriber_release(sub);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_borrow(
    subscriber: *mut Sub,
    timeout_ms: c_int,
    data: *mut *const c_void,
    len: *mut usize,
    lost: *mut u64,
) -> c_int {
    error::with(subscriber, "subscriber", |s| {
        ffi::put_required(data, std::ptr::null(), "data")?;
        ffi::put(len, 0);
        ffi::put(lost, 0);
        let timeout = wait(timeout_ms)?;
        let long = stream_wait(timeout_ms)?;
        let got = s.inner.lend(
            || busy("sample"),
            |sub| match timeout {
                Wait::For(d) if d.is_zero() => Ok(sub.try_borrow()?),
                _ => match sub.borrow(long) {
                    Ok(sample) => Ok(Some(sample)),
                    Err(qcop_client::shm::StreamError::Timeout) => Ok(None),
                    Err(e) => Err(e.into()),
                },
            },
        )?;
        if !got {
            return Ok(0);
        }
        let sample = s.inner.lent().ok_or_else(|| busy("sample"))?;
        ffi::put(len, sample.len());
        ffi::put(lost, sample.lost_before());
        ffi::put(data, sample.as_ptr().cast());
        Ok(1)
    })
}

/// Gives the borrowed message back (in a lossless stream, its slot returns to the
/// publisher). `QCOP_E_OVERWRITTEN` if a lossy publisher overwrote it meanwhile (what was
/// read may be a mix of two messages); `QCOP_E_STATE` if none is borrowed.
///
/// ```c
/// if (qcop_subscriber_release(sub) == QCOP_E_OVERWRITTEN) discard();
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_release(subscriber: *mut Sub) -> c_int {
    error::with(subscriber, "subscriber", |s| {
        s.inner
            .finish(Sample::release)
            .ok_or_else(|| Failure::state("no sample is borrowed"))??;
        Ok(QCOP_OK)
    })
}

/// Copies the next message into `buf` (`capacity` bytes, at least the stream's slot size,
/// `qcop_subscriber_slot_size`), waiting up to `timeout_ms`. Returns 1 and stores its
/// length in `*len`, 0 if none came in time, or a negative code as for
/// `qcop_subscriber_borrow`.
///
/// ```c
/// char buf[256]; size_t n;
/// while (qcop_subscriber_recv(sub, buf, sizeof buf, &n, 1000) == 1) handle(buf, n);
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_recv(
    subscriber: *mut Sub,
    buf: *mut c_void,
    capacity: usize,
    len: *mut usize,
    timeout_ms: c_int,
) -> c_int {
    error::with(subscriber, "subscriber", |s| {
        ffi::put(len, 0);
        let buf = ffi::bytes_mut(buf, capacity, "buf")?;
        let timeout = wait(timeout_ms)?;
        let long = stream_wait(timeout_ms)?;
        let sub = s.inner.owner().ok_or_else(|| busy("sample"))?;
        if capacity < sub.slot_size() {
            return Err(Failure::new(
                QCOP_E_INVAL,
                format!(
                    "a buffer of {capacity} bytes is smaller than the slot size {}",
                    sub.slot_size()
                ),
            ));
        }
        let sample = match timeout {
            Wait::For(d) if d.is_zero() => sub.try_borrow()?,
            _ => match sub.borrow(long) {
                Ok(sample) => Some(sample),
                Err(qcop_client::shm::StreamError::Timeout) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let Some(sample) = sample else {
            return Ok(0);
        };
        let n = sample.len();
        let dst = buf
            .get_mut(..n)
            .ok_or_else(|| Failure::inval("message larger than the buffer"))?;
        dst.copy_from_slice(&sample);
        sample.release()?;
        ffi::put(len, n);
        Ok(1)
    })
}

/// The stream's largest message in bytes (0 for NULL or during a borrow).
///
/// ```c
/// void *buf = malloc(qcop_subscriber_slot_size(sub));
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_slot_size(subscriber: *mut Sub) -> usize {
    ffi::handle_mut(subscriber)
        .and_then(|s| s.inner.owner())
        .map_or(0, |s| s.slot_size())
}

/// Messages this subscriber lost to a lossy publisher (or skipped as corrupt); 0 for NULL
/// or during a borrow.
///
/// ```c
/// printf("lost %llu\n", (unsigned long long)qcop_subscriber_lost(sub));
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscriber_lost(subscriber: *mut Sub) -> u64 {
    ffi::handle_mut(subscriber)
        .and_then(|s| s.inner.owner())
        .map_or(0, |s| s.lost())
}
