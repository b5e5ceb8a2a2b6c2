//! Connections: connect, subscribe, send, receive, call and answer, queries.

use crate::error::{self, ErrorText, Failure, Handle, QCOP_OK};
use crate::ffi;
use crate::message::{ChannelList, Msg, Stats};
use qcop_client::{ConnectOptions, Connection};
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Flag of `qcop_connect`: reconnect when the daemon goes away (restart, upgrade),
/// re-registering every subscription, inside the next blocking call.
pub const QCOP_RECONNECT: u32 = 1;

/// A connection to qcopd (`qcop_conn` in C).
pub struct Conn {
    inner: Connection,
    error: ErrorText,
}

impl Handle for Conn {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

/// How long a call may wait: `-1` as long as it takes, `0` not at all, else milliseconds.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    Forever,
    For(Duration),
}

pub(crate) fn wait(timeout_ms: c_int) -> Result<Wait, Failure> {
    match timeout_ms {
        -1 => Ok(Wait::Forever),
        ms if ms >= 0 => Ok(Wait::For(Duration::from_millis(ms as u64))),
        ms => Err(Failure::inval(format!(
            "timeout of {ms} ms (use -1 to wait as long as it takes)"
        ))),
    }
}

/// A timeout that must be finite (calls): `0` is refused.
fn finite(timeout_ms: c_int) -> Result<Duration, Failure> {
    match wait(timeout_ms)? {
        Wait::For(d) if !d.is_zero() => Ok(d),
        _ => Err(Failure::inval(format!(
            "timeout of {timeout_ms} ms (a call needs a positive timeout)"
        ))),
    }
}

/// The connect options for `socket` (NULL: `$QCOP_SOCKET` or the built-in path).
pub(crate) fn options(
    socket: *const c_char,
    name: *const c_char,
    timeout_ms: c_int,
) -> Result<ConnectOptions, Failure> {
    let mut opts = ConnectOptions::new();
    if let Some(socket) = ffi::opt_str(socket, "socket")? {
        opts = opts.socket(socket);
    }
    if let Some(name) = ffi::opt_str(name, "name")? {
        opts = opts.name(name);
    }
    if timeout_ms != 0 {
        opts = opts.timeout(finite(timeout_ms)?);
    }
    Ok(opts)
}

/// Connects to qcopd and performs the handshake.
///
/// `socket`: the daemon's socket path, or NULL for `$QCOP_SOCKET` or the built-in path.
/// `name`: the client name shown by `qcop stats --clients`, or NULL for the program name.
/// `timeout_ms`: time allowed for connecting and for each request's answer (`0`: 5000).
/// `flags`: `QCOP_RECONNECT` or 0. On success stores the new connection in `*out` (free it
/// with `qcop_disconnect`) and returns `QCOP_OK`; on failure returns a negative code and
/// `qcop_strerror(NULL)` says why. Blocks for at most `timeout_ms`.
///
/// ```c
/// qcop_conn *conn;
/// if (qcop_connect(&conn, NULL, "volume-ui", 0, QCOP_RECONNECT) != QCOP_OK) {
///     fprintf(stderr, "qcop: %s\n", qcop_strerror(NULL));
///     return 1;
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_connect(
    out: *mut *mut Conn,
    socket: *const c_char,
    name: *const c_char,
    timeout_ms: c_int,
    flags: u32,
) -> c_int {
    error::run(|| {
        if out.is_null() {
            return Err(Failure::inval("out is NULL"));
        }
        ffi::put(out, std::ptr::null_mut());
        if flags & !QCOP_RECONNECT != 0 {
            return Err(Failure::inval(format!("unknown flags {flags:#x}")));
        }
        let opts = options(socket, name, timeout_ms)?.reconnect(flags & QCOP_RECONNECT != 0);
        let inner = Connection::connect(&opts)?;
        ffi::put(
            out,
            ffi::into_handle(Conn {
                inner,
                error: ErrorText::new(),
            }),
        );
        Ok(QCOP_OK)
    })
}

/// Closes the connection and frees it; its subscriptions end. Buffered sends not yet
/// written are lost: call `qcop_flush` first to be sure they were routed. NULL is ignored.
/// Every message from this connection stays valid (free each with `qcop_message_free`).
///
/// ```c
/// qcop_flush(conn);
/// qcop_disconnect(conn);
/// ```
#[no_mangle]
pub extern "C" fn qcop_disconnect(conn: *mut Conn) {
    error::free(conn);
}

/// The text of the last failed call on `conn`, or with `conn` NULL the last failure of a
/// call in this thread that has no connection to keep it (`qcop_connect`, streams,
/// segments, semaphores, argument readers), or of any call in this thread. Never NULL;
/// empty if nothing failed. Valid until the next failing call on the same connection (or,
/// for NULL, in the same thread).
///
/// ```c
/// if (qcop_send(conn, "QPE/Audio", "setVolume(int)", buf, len) < 0)
///     fprintf(stderr, "send: %s\n", qcop_strerror(conn));
/// ```
#[no_mangle]
pub extern "C" fn qcop_strerror(conn: *const Conn) -> *const c_char {
    error::get(conn, error::thread_text(), |c| c.error.as_ptr())
}

/// The name of an error code (`"QCOP_E_TIMEOUT"`), for logs. Never NULL; static.
///
/// ```c
/// int rc = qcop_flush(conn);
/// if (rc < 0) printf("%s: %s\n", qcop_error_name(rc), qcop_strerror(conn));
/// ```
#[no_mangle]
pub extern "C" fn qcop_error_name(code: c_int) -> *const c_char {
    error::code_name(code)
}

/// Subscribes to a channel (`QPE/Audio`) or a pattern, a name containing `*` (`QPE/*`,
/// `sensor?*`, `*cam[0-3]`: `?` and `[...]` are wildcards only inside a pattern).
/// Subscriptions are counted: subscribing twice needs two `qcop_unsubscribe`. With
/// `with_credentials` nonzero, messages of this subscription carry the sender's pid, uid
/// and gid (`qcop_message_sender`). Waits for the daemon's answer (at most the timeout).
///
/// ```c
/// if (qcop_subscribe(conn, "QPE/Audio", 0) < 0) return -1;
/// ```
#[no_mangle]
pub extern "C" fn qcop_subscribe(
    conn: *mut Conn,
    channel: *const c_char,
    with_credentials: c_int,
) -> c_int {
    error::with(conn, "conn", |c| {
        let channel = ffi::str_arg(channel, "channel")?;
        if with_credentials != 0 {
            c.inner.subscribe_with_credentials(channel)?;
        } else {
            c.inner.subscribe(channel)?;
        }
        Ok(QCOP_OK)
    })
}

/// Drops one subscription to `channel`; the daemon is told when the count reaches zero.
/// `QCOP_E_NOTSUBSCRIBED` if there is none.
///
/// ```c
/// qcop_unsubscribe(conn, "QPE/Audio");
/// ```
#[no_mangle]
pub extern "C" fn qcop_unsubscribe(conn: *mut Conn, channel: *const c_char) -> c_int {
    error::with(conn, "conn", |c| {
        c.inner.unsubscribe(ffi::str_arg(channel, "channel")?)?;
        Ok(QCOP_OK)
    })
}

/// Broadcasts `message` (a signature such as `setVolume(int)`) with `len` bytes of
/// `data` (QDataStream arguments by convention; NULL if `len` is 0) to every subscriber of
/// `channel`, including this connection if subscribed. Returns once the message is
/// buffered (blocking only while more than 256 KiB wait to be written); `qcop_flush`
/// reports what the daemon refused. A payload over the daemon's limit fails at once with
/// `QCOP_E_TOOLARGE`, a pattern with `QCOP_E_WILDCARD`, a bad name with `QCOP_E_BADNAME`.
///
/// ```c
/// qcop_args *a = qcop_args_new();
/// qcop_args_int(a, 42);
/// size_t len;
/// const void *p = qcop_args_data(a, &len);
/// qcop_send(conn, "QPE/Audio", "setVolume(int)", p, len);
/// qcop_args_free(a);
/// ```
#[no_mangle]
pub extern "C" fn qcop_send(
    conn: *mut Conn,
    channel: *const c_char,
    message: *const c_char,
    data: *const c_void,
    len: usize,
) -> c_int {
    error::with(conn, "conn", |c| {
        let channel = ffi::str_arg(channel, "channel")?;
        let message = ffi::str_arg(message, "message")?;
        c.inner
            .send(channel, message, ffi::bytes(data, len, "data")?)?;
        Ok(QCOP_OK)
    })
}

/// Like `qcop_send`, and waits for the daemon's acknowledgement (at most the timeout).
/// Stores in `*receivers` (if not NULL) how many subscribers it was queued for.
///
/// ```c
/// uint32_t n;
/// if (qcop_send_acked(conn, "QPE/System", "reboot()", NULL, 0, &n) == QCOP_OK && n == 0)
///     puts("nobody listens");
/// ```
#[no_mangle]
pub extern "C" fn qcop_send_acked(
    conn: *mut Conn,
    channel: *const c_char,
    message: *const c_char,
    data: *const c_void,
    len: usize,
    receivers: *mut u32,
) -> c_int {
    error::with(conn, "conn", |c| {
        let channel = ffi::str_arg(channel, "channel")?;
        let message = ffi::str_arg(message, "message")?;
        let n = c
            .inner
            .send_acked(channel, message, ffi::bytes(data, len, "data")?)?;
        ffi::put(receivers, n);
        Ok(QCOP_OK)
    })
}

/// Writes every buffered send and waits until the daemon routed them (at most the
/// timeout). Returns the first error the daemon reported for a send since the last flush.
///
/// ```c
/// if (qcop_flush(conn) < 0) fprintf(stderr, "%s\n", qcop_strerror(conn));
/// ```
#[no_mangle]
pub extern "C" fn qcop_flush(conn: *mut Conn) -> c_int {
    error::with(conn, "conn", |c| {
        c.inner.flush()?;
        Ok(QCOP_OK)
    })
}

/// Receives the next message. `timeout_ms`: `-1` waits as long as it takes, `0` returns at
/// once, otherwise waits at most that long. Returns 1 and stores the message in `*out` (free
/// it with `qcop_message_free`), 0 if none came in time (`*out` is NULL), or a negative
/// code. In a poll loop, call it with 0 until it returns 0 whenever `qcop_fd` is readable:
/// messages may already be buffered when the descriptor is not readable.
///
/// ```c
/// qcop_message *m;
/// while (qcop_recv(conn, 1000, &m) == 1) {
///     printf("%s %s\n", qcop_message_channel(m), qcop_message_name(m));
///     qcop_message_free(m);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_recv(conn: *mut Conn, timeout_ms: c_int, out: *mut *mut Msg) -> c_int {
    error::with(conn, "conn", |c| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        let msg = match wait(timeout_ms)? {
            Wait::Forever => Some(c.inner.recv()?),
            Wait::For(d) if d.is_zero() => c.inner.try_recv()?,
            Wait::For(d) => c.inner.recv_timeout(d)?,
        };
        Ok(match msg {
            Some(m) => {
                ffi::put(out, ffi::into_handle(Msg::new(m)));
                1
            }
            None => 0,
        })
    })
}

/// The connection's socket descriptor, to watch for readability in a poll, epoll, glib or
/// Qt loop (then call `qcop_recv` with timeout 0 until it returns 0). Do not read, write or
/// close it. It changes after an automatic reconnect (`qcop_reconnects` counts them).
/// -1 for NULL.
///
/// ```c
/// struct pollfd p = { .fd = qcop_fd(conn), .events = POLLIN };
/// poll(&p, 1, -1);
/// ```
#[no_mangle]
pub extern "C" fn qcop_fd(conn: *const Conn) -> c_int {
    error::get(conn, -1, |c| c.inner.as_raw_fd())
}

/// Messages the daemon dropped for this connection because it read too slowly (0 for
/// NULL).
///
/// ```c
/// if (qcop_lost(conn) > 0) fprintf(stderr, "lost %llu\n", (unsigned long long)qcop_lost(conn));
/// ```
#[no_mangle]
pub extern "C" fn qcop_lost(conn: *const Conn) -> u64 {
    error::get(conn, 0, |c| c.inner.lost())
}

/// How many times the connection was re-established (`QCOP_RECONNECT`); 0 for NULL.
///
/// ```c
/// uint64_t seen = qcop_reconnects(conn);  // compare later: the fd has changed
/// ```
#[no_mangle]
pub extern "C" fn qcop_reconnects(conn: *const Conn) -> u64 {
    error::get(conn, 0, |c| c.inner.reconnects())
}

/// The daemon's largest payload for this connection, in bytes (0 for NULL).
///
/// ```c
/// if (len > qcop_max_payload(conn)) return -1;
/// ```
#[no_mangle]
pub extern "C" fn qcop_max_payload(conn: *const Conn) -> u32 {
    error::get(conn, 0, |c| c.inner.limits().max_payload)
}

/// The id the daemon gave this connection, as `qcop stats --clients` shows it (0 for NULL).
///
/// ```c
/// printf("client %u\n", qcop_client_id(conn));
/// ```
#[no_mangle]
pub extern "C" fn qcop_client_id(conn: *const Conn) -> u32 {
    error::get(conn, 0, |c| c.inner.client_id())
}

/// Sends a request to the subscribers of `channel` and waits at most `timeout_ms` (> 0)
/// for the first reply. Returns `QCOP_OK` and stores the reply in `*reply` (a message:
/// `qcop_message_name` is the reply's signature, `qcop_message_data` its payload; free it
/// with `qcop_message_free`). Fails with `QCOP_E_NORESPONDER` (nobody subscribed),
/// `QCOP_E_TIMEOUT`, `QCOP_E_RESPONDERGONE`, or `QCOP_E_REMOTE` (the responder's error
/// text is in `qcop_strerror(conn)`).
///
/// ```c
/// qcop_message *r;
/// if (qcop_call(conn, "svc/clock", "now()", NULL, 0, 2000, &r) == QCOP_OK) {
///     // decode qcop_message_data(r, &len) with a qcop_reader
///     qcop_message_free(r);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_call(
    conn: *mut Conn,
    channel: *const c_char,
    message: *const c_char,
    data: *const c_void,
    len: usize,
    timeout_ms: c_int,
    reply: *mut *mut Msg,
) -> c_int {
    error::with(conn, "conn", |c| {
        ffi::put_required(reply, std::ptr::null_mut(), "reply")?;
        let channel = ffi::str_arg(channel, "channel")?;
        let message = ffi::str_arg(message, "message")?;
        let data = ffi::bytes(data, len, "data")?;
        let r = c.inner.call(channel, message, data, finite(timeout_ms)?)?;
        ffi::put(reply, ffi::into_handle(Msg::reply(channel, r)));
        Ok(QCOP_OK)
    })
}

fn call_of(call: *const Msg) -> Result<&'static qcop_client::Message, Failure> {
    ffi::handle(call)
        .map(Msg::message)
        .ok_or_else(|| Failure::inval("call is NULL"))
}

/// Answers `call` (a message received with `qcop_recv` for which `qcop_message_is_call`
/// is 1) with `message` and `len` bytes of `data`. Returns once buffered and written.
/// `QCOP_E_NOTACALL` if `call` is not a call.
///
/// ```c
/// if (qcop_message_is_call(m))
///     qcop_reply(conn, m, "now(qlonglong)", p, len);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reply(
    conn: *mut Conn,
    call: *const Msg,
    message: *const c_char,
    data: *const c_void,
    len: usize,
) -> c_int {
    error::with(conn, "conn", |c| {
        let call = call_of(call)?;
        let message = ffi::str_arg(message, "message")?;
        c.inner
            .reply(call, message, ffi::bytes(data, len, "data")?)?;
        Ok(QCOP_OK)
    })
}

/// Answers `call` with an error: the caller's `qcop_call` fails with `QCOP_E_REMOTE`
/// and `text` as its message.
///
/// ```c
/// qcop_reply_error(conn, m, "unknown method");
/// ```
#[no_mangle]
pub extern "C" fn qcop_reply_error(
    conn: *mut Conn,
    call: *const Msg,
    text: *const c_char,
) -> c_int {
    error::with(conn, "conn", |c| {
        let call = call_of(call)?;
        c.inner.reply_error(call, ffi::str_arg(text, "text")?)?;
        Ok(QCOP_OK)
    })
}

/// Whether `channel` has at least one exact subscriber (here or on a linked daemon):
/// returns 1 or 0, or a negative code. Waits at most the timeout.
///
/// ```c
/// if (qcop_is_registered(conn, "QPE/Application/clock") == 1) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_is_registered(conn: *mut Conn, channel: *const c_char) -> c_int {
    error::with(conn, "conn", |c| {
        Ok(c.inner.is_registered(ffi::str_arg(channel, "channel")?)? as c_int)
    })
}

/// The channels and patterns the daemon knows, with their subscriber counts. Stores the
/// list in `*out` (free it with `qcop_channels_free`). Waits at most the timeout.
///
/// ```c
/// qcop_channels *l;
/// if (qcop_channels_list(conn, &l) == QCOP_OK) {
///     for (size_t i = 0; i < qcop_channels_count(l); i++)
///         printf("%s %u\n", qcop_channels_name(l, i), qcop_channels_subscribers(l, i));
///     qcop_channels_free(l);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_list(conn: *mut Conn, out: *mut *mut ChannelList) -> c_int {
    error::with(conn, "conn", |c| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        let list = c.inner.channels()?;
        ffi::put(out, ffi::into_handle(ChannelList::new(list)));
        Ok(QCOP_OK)
    })
}

/// The daemon's counters (as `qcop stats` shows them). Stores them in `*out` (free with
/// `qcop_stats_free`). Waits at most the timeout.
///
/// ```c
/// qcop_stats *s;
/// uint64_t dropped;
/// if (qcop_stats_get(conn, &s) == QCOP_OK) {
///     if (qcop_stats_value(s, "dropped_no_subscriber", &dropped) == 1) ...
///     qcop_stats_free(s);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_stats_get(conn: *mut Conn, out: *mut *mut Stats) -> c_int {
    error::with(conn, "conn", |c| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        let report = c.inner.stats(false)?;
        ffi::put(out, ffi::into_handle(Stats::new(report)));
        Ok(QCOP_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QCOP_E_INVAL;

    #[test]
    fn timeouts_map_to_waits() {
        assert!(matches!(wait(-1), Ok(Wait::Forever)));
        assert!(matches!(wait(0), Ok(Wait::For(d)) if d.is_zero()));
        assert!(matches!(wait(-2), Err(f) if f.code == QCOP_E_INVAL));
        assert!(finite(0).is_err() && finite(-1).is_err());
        assert_eq!(finite(5).ok(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn a_null_connection_is_an_error_not_a_crash() {
        assert_eq!(qcop_flush(std::ptr::null_mut()), QCOP_E_INVAL);
        assert_eq!(qcop_fd(std::ptr::null()), -1);
        qcop_disconnect(std::ptr::null_mut());
        let mut out = std::ptr::null_mut();
        let missing = b"/nonexistent/qcop.sock\0".as_ptr().cast();
        assert_eq!(
            qcop_connect(&mut out, missing, std::ptr::null(), 100, 0),
            crate::error::QCOP_E_CONNECT
        );
        assert!(out.is_null());
    }
}
