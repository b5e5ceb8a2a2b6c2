//! What the library hands out to read: received messages (and call replies), channel
//! lists and counters. Each is one allocation the caller frees; every pointer read from it
//! lives as long as it.

use crate::error::{self, c_text};
use crate::ffi;
use qcop_client::wire::{ChannelInfo, StatsReport};
use qcop_client::{Message, Reply};
use std::ffi::{c_char, c_int, CString};

/// Sender credentials of a message (`qcop_message_sender`): as the daemon saw them
/// (`SO_PEERCRED`), never taken from the sender.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials {
    /// Process id (in the daemon's pid namespace).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id (the primary group when the sender connected).
    pub gid: u32,
}

/// A received message or a call's reply (`qcop_message` in C).
pub struct Msg {
    msg: Message,
    channel: CString,
    name: CString,
}

impl Msg {
    pub(crate) fn new(msg: Message) -> Msg {
        Msg {
            channel: c_text(&msg.channel),
            name: c_text(&msg.message),
            msg,
        }
    }

    /// A reply as a message: the call's channel, the reply's signature and payload.
    pub(crate) fn reply(channel: &str, r: Reply) -> Msg {
        Msg::new(Message {
            channel: channel.to_owned(),
            message: r.message,
            data: r.data,
            call_token: None,
            sender: None,
        })
    }

    pub(crate) fn message(&self) -> &Message {
        &self.msg
    }
}

/// Frees a message from `qcop_recv` or `qcop_call`; NULL is ignored. Every pointer read
/// from it ends with it.
///
/// ```c
/// qcop_message_free(m);
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_free(msg: *mut Msg) {
    error::free(msg);
}

/// The channel the message was sent to (also when it came through a pattern). Valid as
/// long as the message; "" for NULL.
///
/// ```c
/// if (strcmp(qcop_message_channel(m), "QPE/Audio") == 0) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_channel(msg: *const Msg) -> *const c_char {
    error::get(msg, EMPTY.as_ptr().cast(), |m| m.channel.as_ptr())
}

/// The message signature, e.g. `setVolume(int)` (for a reply: the reply's signature).
/// Valid as long as the message; "" for NULL.
///
/// ```c
/// if (strcmp(qcop_message_name(m), "setVolume(int)") == 0) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_name(msg: *const Msg) -> *const c_char {
    error::get(msg, EMPTY.as_ptr().cast(), |m| m.name.as_ptr())
}

/// The payload: stores its length in `*len` (if not NULL) and returns its bytes (valid as
/// long as the message; not NUL-terminated; non-NULL even when empty).
///
/// ```c
/// size_t len;
/// const uint8_t *p = qcop_message_data(m, &len);
/// qcop_reader *r = qcop_reader_new(p, len);
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_data(msg: *const Msg, len: *mut usize) -> *const u8 {
    let (p, n) = error::get(msg, (EMPTY.as_ptr(), 0), |m| {
        if m.msg.data.is_empty() {
            (EMPTY.as_ptr(), 0)
        } else {
            (m.msg.data.as_ptr(), m.msg.data.len())
        }
    });
    ffi::put(len, n);
    p
}

/// 1 if the sender waits for an answer (`qcop_reply`, `qcop_reply_error`), else 0.
///
/// ```c
/// if (qcop_message_is_call(m)) qcop_reply(conn, m, "pong()", NULL, 0);
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_is_call(msg: *const Msg) -> c_int {
    error::get(msg, 0, |m| m.msg.is_call() as c_int)
}

/// The sender's credentials, for messages of a subscription made with credentials
/// (`qcop_subscribe(conn, ch, 1)`): returns 1 and fills `*out`, or 0 if the message has
/// none.
///
/// ```c
/// qcop_credentials who;
/// if (qcop_message_sender(m, &who) == 1 && who.uid != 0) return;  // root only
/// ```
#[no_mangle]
pub extern "C" fn qcop_message_sender(msg: *const Msg, out: *mut Credentials) -> c_int {
    match error::get(msg, None, |m| m.msg.sender()) {
        Some(c) => {
            ffi::put(
                out,
                Credentials {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                },
            );
            1
        }
        None => 0,
    }
}

static EMPTY: &[u8; 1] = b"\0";

/// A list of channels (`qcop_channels` in C).
pub struct ChannelList {
    list: Vec<ChannelInfo>,
    names: Vec<CString>,
}

impl ChannelList {
    pub(crate) fn new(list: Vec<ChannelInfo>) -> ChannelList {
        let names = list.iter().map(|c| c_text(&c.name)).collect();
        ChannelList { list, names }
    }
}

/// Entries in the list (0 for NULL).
///
/// ```c
/// size_t n = qcop_channels_count(l);
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_count(list: *const ChannelList) -> usize {
    error::get(list, 0, |l| l.list.len())
}

/// The name (or pattern) of entry `i`; NULL past the end. Valid as long as the list.
///
/// ```c
/// puts(qcop_channels_name(l, 0));
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_name(list: *const ChannelList, i: usize) -> *const c_char {
    error::get(list, std::ptr::null(), |l| {
        l.names.get(i).map_or(std::ptr::null(), |n| n.as_ptr())
    })
}

/// Local subscribers of entry `i` (0 past the end).
///
/// ```c
/// unsigned n = qcop_channels_subscribers(l, i);
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_subscribers(list: *const ChannelList, i: usize) -> u32 {
    error::get(list, 0, |l| l.list.get(i).map_or(0, |c| c.subscribers))
}

/// 1 if entry `i` is a wildcard pattern, else 0.
///
/// ```c
/// if (qcop_channels_is_pattern(l, i)) printf("(pattern) ");
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_is_pattern(list: *const ChannelList, i: usize) -> c_int {
    error::get(list, 0, |l| l.list.get(i).map_or(0, |c| c.pattern as c_int))
}

/// Frees a channel list; NULL is ignored.
///
/// ```c
/// qcop_channels_free(l);
/// ```
#[no_mangle]
pub extern "C" fn qcop_channels_free(list: *mut ChannelList) {
    error::free(list);
}

/// The daemon's counters (`qcop_stats` in C).
pub struct Stats {
    report: StatsReport,
    names: Vec<CString>,
}

impl Stats {
    pub(crate) fn new(report: StatsReport) -> Stats {
        let names = report.counters.iter().map(|(n, _)| c_text(n)).collect();
        Stats { report, names }
    }
}

/// Looks up the counter `name`: returns 1 and stores its value in `*value`, or 0 if the
/// daemon has no such counter.
///
/// ```c
/// uint64_t v;
/// if (qcop_stats_value(s, "messages_routed", &v) == 1) printf("%llu\n", (unsigned long long)v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_stats_value(
    stats: *const Stats,
    name: *const c_char,
    value: *mut u64,
) -> c_int {
    let Ok(Some(name)) = ffi::opt_str(name, "name") else {
        return 0;
    };
    match error::get(stats, None, |s| s.report.get(name)) {
        Some(v) => {
            ffi::put(value, v);
            1
        }
        None => 0,
    }
}

/// Counters in the report (0 for NULL).
///
/// ```c
/// for (size_t i = 0; i < qcop_stats_count(s); i++) ...
/// ```
#[no_mangle]
pub extern "C" fn qcop_stats_count(stats: *const Stats) -> usize {
    error::get(stats, 0, |s| s.report.counters.len())
}

/// The name of counter `i` (NULL past the end; valid as long as the report); its value in
/// `*value` if not NULL.
///
/// ```c
/// uint64_t v;
/// const char *name = qcop_stats_entry(s, i, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_stats_entry(
    stats: *const Stats,
    i: usize,
    value: *mut u64,
) -> *const c_char {
    let entry = error::get(stats, None, |s| {
        Some((s.names.get(i)?.as_ptr(), s.report.counters.get(i)?.1))
    });
    match entry {
        Some((name, v)) => {
            ffi::put(value, v);
            name
        }
        None => std::ptr::null(),
    }
}

/// Frees a counters report; NULL is ignored.
///
/// ```c
/// qcop_stats_free(s);
/// ```
#[no_mangle]
pub extern "C" fn qcop_stats_free(stats: *mut Stats) {
    error::free(stats);
}
