//! What `qcop` prints: message lines, tables, and a stdout that tolerates being closed.

use crate::Failure;
use qcop::client::MonitorEvent;
use qcop::datastream::{self, ArgType, Value};
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

/// The arguments of a message as printed by `watch`, `wait` and `call`: each value decoded
/// with the types of `signature`, separated by spaces (empty for none); or, with `hex`, or
/// when a type is unknown or the payload does not decode, `0x` and the payload in hex.
pub fn arguments(signature: &str, payload: &[u8], hex: bool) -> String {
    match decode(signature, payload).filter(|_| !hex) {
        Some(values) => {
            let mut text = String::new();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                // Writing to a String cannot fail.
                let _ = write!(text, "{value}");
            }
            text
        }
        None => format!("0x{}", datastream::hex(payload)),
    }
}

fn decode(signature: &str, payload: &[u8]) -> Option<Vec<Value>> {
    let (_, types) = datastream::parse_signature_lenient(signature).ok()?;
    let types: Vec<ArgType> = types.into_iter().collect::<Option<_>>()?;
    datastream::decode_args(&types, payload).ok()
}

/// The line `watch` prints for a message: `CHANNEL MESSAGE ARGS...`, plus ` [call]` for a
/// call and ` [from pid=P uid=U gid=G]` when the sender's credentials came with it.
pub fn message_line(msg: &Message, hex: bool) -> String {
    let mut line = joined(
        &[&msg.channel, &msg.message],
        &arguments(&msg.message, &msg.data, hex),
    );
    if msg.is_call() {
        line.push_str(" [call]");
    }
    if let Some(sender) = msg.sender() {
        push_sender(&mut line, sender);
    }
    line
}

/// The line `monitor` prints: like `watch`, with ` [call T]`, ` [reply T]` or
/// ` [error reply T]` linking calls and replies by token, and always the sender. An error
/// reply's text is quoted.
pub fn monitor_line(m: &Monitored, hex: bool) -> String {
    let mut line = match m.event {
        MonitorEvent::ErrorReply => format!("{} {:?}", m.channel, m.message),
        _ => joined(
            &[&m.channel, &m.message],
            &arguments(&m.message, &m.data, hex),
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

    #[test]
    fn decoded_arguments() {
        let mut data = 42i32.to_be_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 4, 0, b'h', 0, b'i', 1]);
        assert_eq!(
            arguments("f(int,QString,bool)", &data, false),
            "42 \"hi\" true"
        );
        assert_eq!(arguments("ping()", &[], false), "");
    }

    #[test]
    fn hex_when_asked_unknown_or_undecodable() {
        assert_eq!(arguments("f(int)", &[0, 0, 0, 1], true), "0x00000001");
        assert_eq!(arguments("f(QVariant)", &[1, 2], false), "0x0102");
        assert_eq!(arguments("f(int)", &[1, 2], false), "0x0102");
        assert_eq!(arguments("f()", &[9], false), "0x09");
        assert_eq!(arguments("not a signature", &[9], false), "0x09");
    }

    #[test]
    fn message_lines() {
        let m = msg(
            "QPE/Audio",
            "setVolume(int)",
            5i32.to_be_bytes().to_vec(),
            false,
        );
        assert_eq!(message_line(&m, false), "QPE/Audio setVolume(int) 5");
        let m = msg("a", "ping()", Vec::new(), true);
        assert_eq!(message_line(&m, false), "a ping() [call]");
        let mut m = msg("a", "n(int)", 1i32.to_be_bytes().to_vec(), false);
        m.sender = Some(Credentials {
            pid: 12,
            uid: 1000,
            gid: 100,
        });
        assert_eq!(
            message_line(&m, false),
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
            monitor_line(&m(MonitorEvent::Call, "add(int,int)", two), false),
            "calc add(int,int) 2 3 [call 9] [from pid=1 uid=0 gid=0]"
        );
        assert_eq!(
            monitor_line(
                &m(MonitorEvent::Reply, "r(int)", 5i32.to_be_bytes().to_vec()),
                false
            ),
            "calc r(int) 5 [reply 9] [from pid=1 uid=0 gid=0]"
        );
        assert_eq!(
            monitor_line(&m(MonitorEvent::ErrorReply, "no way", vec![]), false),
            "calc \"no way\" [error reply 9] [from pid=1 uid=0 gid=0]"
        );
        let mut send = m(MonitorEvent::Send, "ping()", vec![]);
        send.token = 0;
        assert_eq!(
            monitor_line(&send, false),
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
