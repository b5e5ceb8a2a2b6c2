//! What `qcop` prints: message lines, tables, and a stdout that tolerates being closed.

use crate::args::Format;
use crate::Failure;
use qcop::client::MonitorEvent;
use qcop::datastream::{self, ArgType, Value, Variant};
use qcop::wire::LinkInfo;
use qcop::{Credentials, Message, Monitored};
use std::fmt::Write as _;
use std::io::{self, Write};

/// Standard output, locked once and flushed after every line so that a pipe reader sees
/// each message as it comes.
pub struct Out {
    stdout: io::StdoutLock<'static>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            stdout: io::stdout().lock(),
        }
    }

    /// Writes `text` and a newline, then flushes. A closed pipe (`qcop watch | head -1`)
    /// becomes [`Failure::OutputClosed`], which ends the program quietly.
    pub fn line(&mut self, text: &str) -> Result<(), Failure> {
        writeln!(self.stdout, "{text}")
            .and_then(|()| self.stdout.flush())
            .map_err(write_failure)
    }

    /// Writes a block of text that already ends with a newline.
    pub fn text(&mut self, text: &str) -> Result<(), Failure> {
        self.stdout
            .write_all(text.as_bytes())
            .and_then(|()| self.stdout.flush())
            .map_err(write_failure)
    }
}

fn write_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::Error(format!("cannot write to standard output: {e}"))
    }
}

/// Writes one line to stderr. Errors are ignored: there is nowhere left to report them, and
/// `eprintln!` would panic instead.
pub fn warn(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// How to print the values of messages: the format, the `hex`/`nohex` modifier, and the
/// type names declared with `enum`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub format: Format,
    /// Byte arrays as hex (the default) rather than as Latin-1 text.
    pub hex: bool,
    pub enums: &'a [String],
}

/// A message's signature read for printing: its name, and each argument's type (`None`
/// for a type qcop cannot decode) with its name.
struct Read<'s> {
    name: &'s str,
    types: Vec<(Option<ArgType>, &'s str)>,
}

fn read_signature<'s>(normalized: &'s str, enums: &[String]) -> Option<Read<'s>> {
    let (name, rest) = normalized.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let names = if inner.is_empty() {
        Vec::new()
    } else {
        qcop::datastream::split_types(inner)
    };
    let types = names
        .into_iter()
        .map(|n| {
            let ty =
                ArgType::parse(n).or_else(|| enums.iter().any(|e| e == n).then_some(ArgType::Int));
            (ty, n)
        })
        .collect();
    Some(Read { name, types })
}

/// The arguments of a message in the rich format, as `watch`, `wait` and `call` print them:
/// each value decoded with the types of `signature`, separated by spaces (empty for none);
/// or, when a type is unknown or the payload is too short for the types, `0x` and the
/// payload in hex. Bytes after the last argument are ignored, as Qt ignores them.
pub fn arguments(signature: &str, payload: &[u8], view: View<'_>) -> String {
    match decode_all(signature, payload, view.enums) {
        Some(values) => {
            let mut text = String::new();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                match value {
                    Value::QByteArray(Some(bytes)) if !view.hex => {
                        let _ = write!(text, "{}", Value::QString(Some(latin1(bytes))));
                    }
                    // Writing to a String cannot fail.
                    v => {
                        let _ = write!(text, "{v}");
                    }
                }
            }
            text
        }
        None => format!("0x{}", datastream::hex(payload)),
    }
}

/// Every argument decoded, or `None` if a type is unknown or the payload too short.
fn decode_all(signature: &str, payload: &[u8], enums: &[String]) -> Option<Vec<Value>> {
    let (normalized, _) = datastream::parse_signature_lenient(signature).ok()?;
    let read = read_signature(&normalized, enums)?;
    let types: Vec<ArgType> = read.types.iter().map(|(t, _)| *t).collect::<Option<_>>()?;
    let decoded = datastream::decode_message(&types, payload);
    decoded.short_at.is_none().then_some(decoded.values)
}

/// The line `watch` prints for a message. Classic, as the original tool:
/// `CHANNEL: name( 1, "text", true )`, or `CHANNEL: name()` for a message without
/// arguments. Rich: `CHANNEL MESSAGE ARGS...`, plus ` [call]` for a call. Both add
/// ` [from pid=P uid=U gid=G]` when the sender's credentials came with it.
pub fn message_line(msg: &Message, view: View<'_>) -> String {
    let mut line = match view.format {
        Format::Classic => format!(
            "{}: {}",
            msg.channel,
            classic_call(&msg.message, &msg.data, view)
        ),
        Format::Rich => {
            let mut line = joined(
                &[&msg.channel, &msg.message],
                &arguments(&msg.message, &msg.data, view),
            );
            if msg.is_call() {
                line.push_str(" [call]");
            }
            line
        }
    };
    if let Some(sender) = msg.sender() {
        push_sender(&mut line, sender);
    }
    line
}

/// `name( v1, v2 )` as the original tool printed a message: values quoted by type, a type
/// it cannot decode as `? TYPE` and the types after it by name only.
fn classic_call(message: &str, payload: &[u8], view: View<'_>) -> String {
    let normalized = datastream::parse_signature_lenient(message).map(|(n, _)| n);
    let read = normalized
        .as_deref()
        .ok()
        .and_then(|n| read_signature(n, view.enums));
    let Some(read) = read.filter(|r| !r.types.is_empty() && !message.ends_with("_fragment_"))
    else {
        return message.to_owned();
    };
    let known: Vec<ArgType> = read.types.iter().map_while(|(t, _)| *t).collect();
    let decoded = datastream::decode_message(&known, payload);
    let mut parts = Vec::with_capacity(read.types.len());
    for (i, (_, name)) in read.types.iter().enumerate() {
        parts.push(match decoded.values.get(i) {
            Some(v) => classic_value(v, view.hex, true),
            None if i == known.len() => format!("? {name}"),
            None => (*name).to_owned(),
        });
    }
    format!("{}( {} )", read.name, parts.join(", "))
}

/// What `wait` (and `-w`) print for a message's arguments. Classic: one line per argument,
/// unquoted, as the original tool (nothing for a message without arguments). Rich: the
/// values on one line, as [`arguments`].
pub fn wait_text(message: &str, payload: &[u8], view: View<'_>) -> String {
    match view.format {
        Format::Rich => {
            let mut line = arguments(message, payload, view);
            line.push('\n');
            line
        }
        Format::Classic => {
            let normalized = datastream::parse_signature_lenient(message).map(|(n, _)| n);
            let Some(read) = normalized
                .as_deref()
                .ok()
                .and_then(|n| read_signature(n, view.enums))
            else {
                return String::new();
            };
            let known: Vec<ArgType> = read.types.iter().map_while(|(t, _)| *t).collect();
            let decoded = datastream::decode_message(&known, payload);
            let mut text = String::new();
            for i in 0..read.types.len() {
                if let Some(v) = decoded.values.get(i) {
                    text.push_str(&classic_value(v, view.hex, false));
                }
                text.push('\n');
            }
            text
        }
    }
}

/// A value as the original tool printed it: numbers and `true`/`false` plainly; strings,
/// byte arrays (upper-case hex, or Latin-1 with `nohex`) and dates quoted when `quote`;
/// string lists as `["a","b"]` (quoted) or `a,b`; UUIDs and ids plainly.
pub fn classic_value(value: &Value, hex: bool, quote: bool) -> String {
    let text = |s: &str| {
        if quote {
            classic_quoted(s)
        } else {
            s.to_owned()
        }
    };
    match value {
        Value::QString(s) => text(s.as_deref().unwrap_or("")),
        Value::QStringUtf16(units) => text(&String::from_utf16_lossy(units)),
        Value::QByteArray(bytes) => {
            let bytes = bytes.as_deref().unwrap_or(&[]);
            if hex {
                text(&datastream::hex(bytes).to_ascii_uppercase())
            } else {
                text(&latin1(bytes))
            }
        }
        Value::QDateTime(dt) => text(&dt.iso()),
        Value::QStringList(list) => {
            let items = list.iter().map(|s| s.as_deref().unwrap_or(""));
            if quote {
                let items: Vec<String> = items.map(classic_quoted).collect();
                format!("[{}]", items.join(","))
            } else {
                items.collect::<Vec<_>>().join(",")
            }
        }
        Value::QVariant(Variant::Value(inner)) => classic_value(inner, hex, quote),
        Value::Double(v) => format!("{v}"),
        other => other.to_string(),
    }
}

/// `s` in double quotes, with `"`, `\`, and control characters written as `\` and two
/// upper-case hex digits (`\22`, `\5C`, `\0A`), as the original tool quoted strings.
fn classic_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_ascii_control() {
            let _ = write!(out, "\\{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Bytes as Latin-1 text (each byte the character of the same code).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The line `monitor` prints: like `watch`, with ` [call T]`, ` [reply T]` or
/// ` [error reply T]` linking calls and replies by token, and always the sender. An error
/// reply's text is quoted.
pub fn monitor_line(m: &Monitored, view: View<'_>) -> String {
    let mut line = match m.event {
        MonitorEvent::ErrorReply => format!("{} {:?}", m.channel, m.message),
        _ => joined(
            &[&m.channel, &m.message],
            &arguments(&m.message, &m.data, view),
        ),
    };
    // Writing to a String cannot fail.
    let _ = match m.event {
        MonitorEvent::Send => Ok(()),
        MonitorEvent::Call => write!(line, " [call {}]", m.token),
        MonitorEvent::Reply => write!(line, " [reply {}]", m.token),
        MonitorEvent::ErrorReply => write!(line, " [error reply {}]", m.token),
    };
    push_sender(&mut line, m.sender);
    line
}

fn push_sender(line: &mut String, c: Credentials) {
    // Writing to a String cannot fail.
    let _ = write!(line, " [from {c}]");
}

/// `head` words and `args`, separated by single spaces, without a trailing space when
/// `args` is empty.
pub fn joined(head: &[&str], args: &str) -> String {
    let mut line = head.join(" ");
    if !args.is_empty() {
        line.push(' ');
        line.push_str(args);
    }
    line
}

/// Where the subscribers of a channel are, for `qcop registered`: "1 local subscriber",
/// "2 remote subscribers", "1 local and 2 remote subscribers".
pub fn where_subscribed(local: u32, remote: u32) -> String {
    let plural = if local + remote == 1 { "" } else { "s" };
    match (local, remote) {
        (l, 0) => format!("{l} local subscriber{plural}"),
        (0, r) => format!("{r} remote subscriber{plural}"),
        (l, r) => format!("{l} local and {r} remote subscribers"),
    }
}

/// The links table of `qcop stats`: one row per link, with the drops summed and then by
/// reason.
pub fn links_table(links: &[LinkInfo]) -> (Vec<Vec<String>>, Vec<Align>) {
    const REASONS: [(&str, &str); 8] = [
        ("FULL", "dropped_buffer_full"),
        ("UNCONFIRMED", "dropped_unconfirmed"),
        ("UNWANTED", "dropped_unwanted"),
        ("NOT_IMPORTED", "dropped_not_imported"),
        ("INVALID", "dropped_invalid"),
        ("TOO_LARGE", "dropped_too_large"),
        ("LIMIT", "dropped_limit"),
        ("DUPLICATES", "duplicates"),
    ];
    let mut header: Vec<String> = [
        "PEER",
        "NAME",
        "STATE",
        "RTT_US",
        "MSGS_OUT",
        "BYTES_OUT",
        "MSGS_IN",
        "BYTES_IN",
        "BUFFERED",
        "DROPPED",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    header.extend(REASONS.iter().map(|(h, _)| (*h).to_owned()));
    header.push("RECONNECTS".into());
    header.push("REJECTED".into());
    let mut rows = vec![header];
    for l in links {
        let get = |k: &str| l.get(k).unwrap_or(0);
        let dropped: u64 = REASONS[..7].iter().map(|(_, k)| get(k)).sum();
        let name = if l.name.is_empty() { "-" } else { &l.name };
        let mut row = vec![l.peer.clone(), name.to_owned(), l.state.clone()];
        for k in [
            "rtt_us",
            "messages_out",
            "bytes_out",
            "messages_in",
            "bytes_in",
            "buffered_messages",
        ] {
            row.push(get(k).to_string());
        }
        row.push(dropped.to_string());
        row.extend(REASONS.iter().map(|(_, k)| get(k).to_string()));
        row.push(get("reconnects").to_string());
        row.push((get("frames_rejected") + get("truncated")).to_string());
        rows.push(row);
    }
    let mut align = vec![Align::Right; rows[0].len()];
    align[..3].fill(Align::Left);
    (rows, align)
}

/// How a table column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Lays out rows as aligned columns separated by two spaces, with no trailing spaces.
pub fn columns(rows: &[Vec<String>], align: &[Align]) -> Vec<String> {
    let mut widths = vec![0usize; align.len()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, ((cell, &w), &a)) in row.iter().zip(&widths).zip(align).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                // Writing to a String cannot fail.
                let _ = match a {
                    Align::Left => write!(line, "{cell:<w$}"),
                    Align::Right => write!(line, "{cell:>w$}"),
                };
            }
            line.truncate(line.trim_end().len());
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, message: &str, data: Vec<u8>, call: bool) -> Message {
        Message {
            channel: channel.into(),
            message: message.into(),
            data,
            call_token: call.then_some(7),
            sender: None,
        }
    }

    const RICH: View<'static> = View {
        format: Format::Rich,
        hex: true,
        enums: &[],
    };
    const CLASSIC: View<'static> = View {
        format: Format::Classic,
        hex: true,
        enums: &[],
    };

    #[test]
    fn decoded_arguments() {
        let mut data = 42i32.to_be_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 4, 0, b'h', 0, b'i', 1]);
        assert_eq!(
            arguments("f(int,QString,bool)", &data, RICH),
            "42 \"hi\" true"
        );
        assert_eq!(arguments("ping()", &[], RICH), "");
    }

    #[test]
    fn hex_for_unknown_types_and_short_payloads_only() {
        assert_eq!(arguments("f(QPoint)", &[1, 2], RICH), "0x0102");
        assert_eq!(arguments("f(int)", &[1, 2], RICH), "0x0102");
        assert_eq!(arguments("not a signature", &[9], RICH), "0x09");
        // Qt ignores bytes after the last argument.
        assert_eq!(arguments("f()", &[9], RICH), "");
        assert_eq!(arguments("f(int)", &[0, 0, 0, 1, 7], RICH), "1");
        // hex and nohex change only how byte arrays print.
        let data = [0, 0, 0, 2, b'h', b'i'];
        assert_eq!(arguments("f(QByteArray)", &data, RICH), "0x6869");
        let nohex = View { hex: false, ..RICH };
        assert_eq!(arguments("f(QByteArray)", &data, nohex), "\"hi\"");
        assert_eq!(arguments("f(int)", &[0, 0, 0, 1], nohex), "1");
    }

    fn classic(channel: &str, message: &str, data: &[u8], view: View<'_>) -> String {
        message_line(&msg(channel, message, data.to_vec(), false), view)
    }

    #[test]
    fn classic_watch_lines() {
        let mut data = 42i32.to_be_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 6, 0, b'a', 0, b'"', 0, b'\n', 1]);
        data.extend_from_slice(&[0, 0, 0, 2, 0x0a, 0xff]);
        data.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 2, 0, b'a', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            classic(
                "QPE/A",
                "f(int,QString,bool,QByteArray,QStringList)",
                &data,
                CLASSIC
            ),
            "QPE/A: f( 42, \"a\\22\\0A\", true, \"0AFF\", [\"a\",\"\"] )"
        );
        assert_eq!(classic("QPE/A", "ping()", &[], CLASSIC), "QPE/A: ping()");
        // A type qcop cannot decode, and the ones after it, by name.
        assert_eq!(
            classic("c", "f(int,QPoint,int)", &[0, 0, 0, 1], CLASSIC),
            "c: f( 1, ? QPoint, int )"
        );
        // Too short: what Qt reads from an exhausted stream.
        assert_eq!(
            classic("c", "f(int,QString)", &[0, 0], CLASSIC),
            "c: f( 0, \"\" )"
        );
        // The 4-byte bool of old senders.
        assert_eq!(
            classic("c", "f(bool,int)", &[0, 0, 0, 1, 0, 0, 0, 7], CLASSIC),
            "c: f( true, 7 )"
        );
        let enums = ["Mode".to_owned()];
        let view = View {
            enums: &enums,
            ..CLASSIC
        };
        assert_eq!(
            classic("c", "set(Mode)", &[0, 0, 0, 3], view),
            "c: set( 3 )"
        );
        assert_eq!(
            classic("c", "Time::editTime()", &[], CLASSIC),
            "c: Time::editTime()"
        );
    }

    #[test]
    fn classic_wait_lines() {
        let mut data = 42i32.to_be_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 4, 0, b'h', 0, b'i']);
        data.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 2, 0, b'a', 0, 0, 0, 2, 0, b'b']);
        assert_eq!(
            wait_text("r(int,QString,QStringList)", &data, CLASSIC),
            "42\nhi\na,b\n"
        );
        assert_eq!(wait_text("r()", &[], CLASSIC), "");
        assert_eq!(
            wait_text("r(int,QString)", &data[..8], RICH),
            "0x0000002a00000004\n"
        );
    }

    #[test]
    fn message_lines() {
        let m = msg(
            "QPE/Audio",
            "setVolume(int)",
            5i32.to_be_bytes().to_vec(),
            false,
        );
        assert_eq!(message_line(&m, RICH), "QPE/Audio setVolume(int) 5");
        let m = msg("a", "ping()", Vec::new(), true);
        assert_eq!(message_line(&m, RICH), "a ping() [call]");
        let mut m = msg("a", "n(int)", 1i32.to_be_bytes().to_vec(), false);
        m.sender = Some(Credentials {
            pid: 12,
            uid: 1000,
            gid: 100,
        });
        assert_eq!(
            message_line(&m, RICH),
            "a n(int) 1 [from pid=12 uid=1000 gid=100]"
        );
    }

    #[test]
    fn monitor_lines() {
        let sender = Credentials {
            pid: 1,
            uid: 0,
            gid: 0,
        };
        let m = |event, message: &str, data: Vec<u8>| Monitored {
            event,
            token: 9,
            channel: "calc".into(),
            message: message.into(),
            data,
            sender,
        };
        let two = [2i32.to_be_bytes(), 3i32.to_be_bytes()].concat();
        assert_eq!(
            monitor_line(&m(MonitorEvent::Call, "add(int,int)", two), RICH),
            "calc add(int,int) 2 3 [call 9] [from pid=1 uid=0 gid=0]"
        );
        assert_eq!(
            monitor_line(
                &m(MonitorEvent::Reply, "r(int)", 5i32.to_be_bytes().to_vec()),
                RICH
            ),
            "calc r(int) 5 [reply 9] [from pid=1 uid=0 gid=0]"
        );
        assert_eq!(
            monitor_line(&m(MonitorEvent::ErrorReply, "no way", vec![]), RICH),
            "calc \"no way\" [error reply 9] [from pid=1 uid=0 gid=0]"
        );
        let mut send = m(MonitorEvent::Send, "ping()", vec![]);
        send.token = 0;
        assert_eq!(
            monitor_line(&send, RICH),
            "calc ping() [from pid=1 uid=0 gid=0]"
        );
    }

    #[test]
    fn subscriber_counts_say_where() {
        assert_eq!(where_subscribed(1, 0), "1 local subscriber");
        assert_eq!(where_subscribed(2, 0), "2 local subscribers");
        assert_eq!(where_subscribed(0, 1), "1 remote subscriber");
        assert_eq!(where_subscribed(1, 2), "1 local and 2 remote subscribers");
    }

    #[test]
    fn links_table_sums_the_drops() {
        let link = LinkInfo {
            peer: "10.0.0.2:4250".into(),
            name: "control".into(),
            state: "up".into(),
            counters: vec![
                ("dropped_buffer_full".into(), 3),
                ("dropped_not_imported".into(), 2),
                ("duplicates".into(), 7),
                ("reconnects".into(), 1),
            ],
        };
        let (rows, align) = links_table(&[link]);
        assert_eq!(rows[0].len(), align.len());
        let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
        assert_eq!(rows[1][col("DROPPED")], "5");
        assert_eq!(rows[1][col("FULL")], "3");
        assert_eq!(rows[1][col("DUPLICATES")], "7");
        assert_eq!(rows[1][col("RECONNECTS")], "1");
        assert_eq!(rows[1][col("STATE")], "up");
    }

    #[test]
    fn aligned_columns() {
        let rows = vec![
            vec!["NAME".to_owned(), "N".to_owned(), "KIND".to_owned()],
            vec![
                "a/long/name".to_owned(),
                "12".to_owned(),
                "channel".to_owned(),
            ],
            vec!["b*".to_owned(), "3".to_owned(), "pattern".to_owned()],
        ];
        let lines = columns(&rows, &[Align::Left, Align::Right, Align::Left]);
        assert_eq!(
            lines,
            vec![
                "NAME          N  KIND",
                "a/long/name  12  channel",
                "b*            3  pattern",
            ]
        );
    }
}
