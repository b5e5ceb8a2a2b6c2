//! The command line of `qcop`: global options, then one command or a `--` chain of commands.
//!
//! Everything a user can get wrong is found here, before connecting: unknown commands and
//! options, bad channel names, signatures with unsupported types, argument values that do
//! not fit their types. Such mistakes are usage errors (exit status 2).
//!
//! ```text
//! qcop [GLOBAL OPTIONS] [MODIFIERS] COMMAND ARGS... [-- [MODIFIERS] COMMAND ARGS...]...
//! ```
//!
//! Modifiers (`timeout MS`, `notimeout`, `hex`, `nohex`) are Qt Extended's: each sets a
//! value for the command it precedes and every later command of the chain, until changed.

use qcop::datastream::{self, Signature};
use qcop::pattern::{self, Pattern};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Options given before the command.
    pub global: Global,
    /// What to do.
    pub action: Action,
}

/// Options that come before the command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Global {
    /// `-s/--socket PATH`; `None` means `$QCOP_SOCKET` or the built-in default.
    pub socket: Option<PathBuf>,
    /// `--connect-timeout MS`: time allowed to connect and for each request's answer.
    pub connect_timeout: Option<Duration>,
}

/// The action of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Print the general help, or the help of one topic.
    Help(Option<Topic>),
    /// Print the version.
    Version,
    /// Run these commands in order on one connection.
    Run(Vec<Step>),
}

/// A help topic: a command or a part of the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `qcop send`.
    Send,
    /// `qcop watch`.
    Watch,
    /// `qcop wait`.
    Wait,
    /// `qcop registered`.
    Registered,
    /// `qcop channels`.
    Channels,
    /// `qcop stats`.
    Stats,
    /// `qcop call`.
    Call,
    /// `qcop serve`.
    Serve,
    /// `qcop shm list` / `qcop shm rm`.
    Shm,
    /// `qcop monitor`.
    Monitor,
    /// `qcop services`.
    Services,
    /// `qcop shm-send`.
    ShmSend,
    /// The Qt Extended form `qcop CHANNEL 'msg()' ... -w ...`.
    OldForm,
    /// Argument types and how to write their values.
    Types,
    /// Modifiers and `--` chains.
    Chain,
}

impl Topic {
    /// Every topic with the names `qcop help NAME` accepts (the first is the canonical one).
    const NAMES: [(Topic, &'static [&'static str]); 15] = [
        (Topic::Send, &["send"]),
        (Topic::Watch, &["watch"]),
        (Topic::Wait, &["wait"]),
        (Topic::Registered, &["registered"]),
        (Topic::Channels, &["channels"]),
        (Topic::Stats, &["stats"]),
        (Topic::Call, &["call"]),
        (Topic::Serve, &["serve"]),
        (Topic::Shm, &["shm"]),
        (Topic::Monitor, &["monitor"]),
        (Topic::Services, &["services"]),
        (Topic::ShmSend, &["shm-send"]),
        (Topic::OldForm, &["old", "old-form", "-w"]),
        (Topic::Types, &["types", "arguments", "args"]),
        (Topic::Chain, &["chain", "modifiers", "--"]),
    ];

    fn lookup(name: &str) -> Option<Topic> {
        Topic::NAMES
            .iter()
            .find(|(_, names)| names.contains(&name))
            .map(|(topic, _)| *topic)
    }

    /// The name to type after `qcop help`.
    pub fn name(self) -> &'static str {
        Topic::NAMES
            .iter()
            .find(|(topic, _)| *topic == self)
            .map_or("", |(_, names)| names[0])
    }
}

/// The `timeout` setting a command runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Neither a modifier nor an option said anything: the command's default applies.
    Default,
    /// `notimeout`: wait as long as it takes.
    Never,
    /// `timeout MS` or `--timeout MS`.
    After(Duration),
}

/// One command of a chain with the modifiers in effect for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The command.
    pub command: Command,
    /// From `timeout`/`notimeout`, or the command's own `--timeout` (which wins).
    pub timeout: Timeout,
    /// From `hex`/`nohex`: print payloads as hex instead of decoding them.
    pub hex: bool,
}

/// A command, validated and with its arguments already encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Broadcast a message.
    Send {
        /// Plain channel name.
        channel: String,
        /// The message signature.
        message: Signature,
        /// Encoded arguments.
        payload: Vec<u8>,
    },
    /// Print messages on channels or patterns.
    Watch {
        /// Channels and patterns.
        channels: Vec<String>,
        /// Stop after this many messages.
        count: Option<u64>,
        /// Print each message's sender (pid, uid, gid).
        credentials: bool,
        /// Map the channel's shared-memory stream instead of subscribing (one channel).
        shm: bool,
    },
    /// Wait for one message and print its arguments.
    Wait {
        /// Channel or pattern.
        channel: String,
        /// The message to wait for.
        message: Signature,
    },
    /// Whether a channel has subscribers.
    Registered {
        /// Plain channel name.
        channel: String,
    },
    /// List channels and patterns.
    Channels,
    /// Print the daemon's counters.
    Stats {
        /// Also list the connected clients.
        clients: bool,
    },
    /// Request and wait for a reply.
    Call {
        /// Plain channel name.
        channel: String,
        /// The request signature.
        message: Signature,
        /// Encoded arguments.
        payload: Vec<u8>,
    },
    /// Answer calls with a fixed reply.
    Serve {
        /// Channel or pattern to answer on.
        channel: String,
        /// The calls to answer.
        message: Signature,
        /// The reply signature.
        reply: Signature,
        /// Encoded reply arguments.
        payload: Vec<u8>,
        /// Stop after answering this many calls.
        count: Option<u64>,
    },
    /// List shared-memory segments and semaphores.
    ShmList,
    /// Remove a segment's or semaphore's name.
    ShmRemove {
        /// The name.
        name: String,
        /// It names a semaphore.
        semaphore: bool,
    },
    /// Write bytes into a segment under its lock.
    ShmWrite {
        /// Segment name.
        name: String,
        /// Byte offset.
        offset: usize,
        /// The bytes.
        data: Vec<u8>,
        /// Create the segment with this size if it does not exist.
        create: Option<u64>,
        /// A created segment outlives this command.
        persistent: bool,
        /// Mode of a created segment.
        mode: u16,
    },
    /// Read bytes of a segment under its lock and print them as hex.
    ShmRead {
        /// Segment name.
        name: String,
        /// Byte offset.
        offset: usize,
        /// Bytes to read.
        len: usize,
    },
    /// Take a segment's lock and hold it.
    ShmLock {
        /// Segment name.
        name: String,
        /// Release after this long; `None`: hold until interrupted.
        hold: Option<Duration>,
    },
    /// Print all traffic (sends, calls, replies) with its senders.
    Monitor {
        /// Channels and patterns to show; empty: everything.
        patterns: Vec<String>,
        /// Stop after this many events.
        count: Option<u64>,
    },
    /// List the services the daemon starts on demand.
    Services,
    /// Open a shared-memory stream and publish messages on it.
    ShmSend {
        /// Plain channel name.
        channel: String,
        /// The signature of every message.
        message: Signature,
        /// Argument values as given; `%n` stands for the message number.
        args: Vec<String>,
        /// Messages to publish.
        count: u64,
        /// Pause between messages.
        interval: Duration,
        /// Slot size; default: 256 bytes or the first payload, whichever is larger.
        slot_size: Option<u32>,
        /// Slots in the ring.
        slots: u32,
        /// Lossy policy instead of lossless.
        lossy: bool,
        /// Subscribers to wait for (mapping the stream) before publishing.
        subscribers: u32,
    },
}

/// A mistake on the command line (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, naming the offending word.
    pub message: String,
    /// The help topic that explains the right syntax.
    pub topic: Option<Topic>,
}

impl UsageError {
    fn new(topic: Option<Topic>, message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            topic,
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// The command names; any other first word starts the old form.
const COMMANDS: [(&str, Topic); 12] = [
    ("send", Topic::Send),
    ("watch", Topic::Watch),
    ("wait", Topic::Wait),
    ("registered", Topic::Registered),
    ("channels", Topic::Channels),
    ("stats", Topic::Stats),
    ("call", Topic::Call),
    ("serve", Topic::Serve),
    ("shm", Topic::Shm),
    ("monitor", Topic::Monitor),
    ("services", Topic::Services),
    ("shm-send", Topic::ShmSend),
];

/// The usage error for an empty command line (answered with a short usage summary).
pub const NO_COMMAND: &str = "no command given";

/// Separates the commands of a chain.
const CHAIN_SEPARATOR: &str = "--";

/// Converts the raw arguments, refusing any that is not UTF-8 (channel names and signatures
/// are text on the wire).
pub fn utf8_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Vec<String>, UsageError> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            arg.into_string().map_err(|raw| {
                UsageError::new(
                    None,
                    format!("argument {} ({raw:?}) is not valid UTF-8", i + 1),
                )
            })
        })
        .collect()
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut global = Global::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let (flag, inline) = split_inline_value(arg);
        let mut value = |name: &str| -> Result<String, UsageError> {
            if let Some(v) = inline {
                return Ok(v.to_owned());
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| UsageError::new(None, format!("{name} needs a value")))
        };
        match flag {
            "-s" | "--socket" => {
                let path = value("--socket")?;
                if path.is_empty() {
                    return Err(UsageError::new(None, "--socket needs a non-empty path"));
                }
                global.socket = Some(PathBuf::from(path));
            }
            "--connect-timeout" => {
                let text = value("--connect-timeout")?;
                let limit = parse_millis(&text, "--connect-timeout", None)?;
                if limit.is_zero() {
                    return Err(UsageError::new(
                        None,
                        "--connect-timeout must be at least 1 ms",
                    ));
                }
                global.connect_timeout = Some(limit);
            }
            "-h" | "--help" => return Ok(help(global, None)),
            "-V" | "--version" => {
                return Ok(Invocation {
                    global,
                    action: Action::Version,
                })
            }
            _ if is_option(arg) || arg == "-" => {
                return Err(UsageError::new(
                    None,
                    format!("unknown option {arg:?} (global options come before the command)"),
                ))
            }
            _ => break,
        }
        i += 1;
    }
    let words = &args[i..];
    match words.first().map(String::as_str) {
        None => Err(UsageError::new(None, NO_COMMAND)),
        Some("help") => parse_help(global, &words[1..]),
        Some(_) => Ok(match parse_chain(words)? {
            Chain::Steps(steps) => Invocation {
                global,
                action: Action::Run(steps),
            },
            Chain::Help(topic) => help(global, Some(topic)),
        }),
    }
}

fn help(global: Global, topic: Option<Topic>) -> Invocation {
    Invocation {
        global,
        action: Action::Help(topic),
    }
}

fn parse_help(global: Global, words: &[String]) -> Result<Invocation, UsageError> {
    match words {
        [] => Ok(help(global, None)),
        [name] => match Topic::lookup(name) {
            Some(topic) => Ok(help(global, Some(topic))),
            None => Err(UsageError::new(
                None,
                format!(
                    "no help on {name:?} (topics: send, watch, wait, registered, channels, \
                     stats, call, serve, monitor, services, shm, old, types, chain)"
                ),
            )),
        },
        [_, extra, ..] => Err(UsageError::new(
            None,
            format!("help takes one topic, unexpected {extra:?}"),
        )),
    }
}

/// `--name=value` split into `("--name", Some("value"))`; anything else unchanged.
fn split_inline_value(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") && flag.len() > 2 => (flag, Some(value)),
        _ => (arg, None),
    }
}

/// Whether a word is read as an option: `--name` or a single-letter `-x` (a negative
/// number such as `-5` or `-0x10` is an argument value, not an option).
fn is_option(word: &str) -> bool {
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (Some('-'), Some('-')) => word.len() > 2,
        (Some('-'), Some(c)) => c.is_ascii_alphabetic(),
        _ => false,
    }
}

enum Chain {
    Steps(Vec<Step>),
    Help(Topic),
}

/// The modifiers in effect while reading a chain.
#[derive(Clone, Copy)]
struct Modifiers {
    timeout: Timeout,
    hex: bool,
}

fn parse_chain(words: &[String]) -> Result<Chain, UsageError> {
    let mut modifiers = Modifiers {
        timeout: Timeout::Default,
        hex: false,
    };
    let mut steps = Vec::new();
    let segments: Vec<&[String]> = words.split(|w| w == CHAIN_SEPARATOR).collect();
    let chained = segments.len() > 1;
    for (n, segment) in segments.into_iter().enumerate() {
        let rest = read_modifiers(segment, &mut modifiers)?;
        if rest.is_empty() {
            let message = if !chained {
                "no command given after the modifiers".to_owned()
            } else if segment.is_empty() {
                format!("command {} of the '--' chain is empty", n + 1)
            } else {
                format!(
                    "command {} of the '--' chain has modifiers but no command",
                    n + 1
                )
            };
            return Err(UsageError::new(Some(Topic::Chain), message));
        }
        match parse_command(rest, modifiers)? {
            Parsed::Steps(mut new) => steps.append(&mut new),
            Parsed::Help(topic) => return Ok(Chain::Help(topic)),
        }
    }
    Ok(Chain::Steps(steps))
}

/// Consumes leading modifiers, updating `modifiers`; returns the words after them.
fn read_modifiers<'a>(
    mut words: &'a [String],
    modifiers: &mut Modifiers,
) -> Result<&'a [String], UsageError> {
    loop {
        match words.first().map(String::as_str) {
            Some("timeout") => {
                let text = words.get(1).ok_or_else(|| {
                    UsageError::new(
                        Some(Topic::Chain),
                        "the timeout modifier needs milliseconds, e.g. 'timeout 5000'",
                    )
                })?;
                let ms = parse_millis(text, "timeout", Some(Topic::Chain))?;
                modifiers.timeout = Timeout::After(ms);
                words = &words[2..];
            }
            Some("notimeout") => {
                modifiers.timeout = Timeout::Never;
                words = &words[1..];
            }
            Some("hex") => {
                modifiers.hex = true;
                words = &words[1..];
            }
            Some("nohex") => {
                modifiers.hex = false;
                words = &words[1..];
            }
            _ => return Ok(words),
        }
    }
}

enum Parsed {
    Steps(Vec<Step>),
    Help(Topic),
}

/// Parses one command (the words between `--` separators, after the modifiers).
fn parse_command(words: &[String], modifiers: Modifiers) -> Result<Parsed, UsageError> {
    let name = words[0].as_str();
    let Some(&(_, topic)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        return parse_old_form(words, modifiers);
    };
    let opts = Options::split(&words[1..], topic)?;
    if opts.help {
        return Ok(Parsed::Help(topic));
    }
    let timeout = match opts.timeout {
        Some(d) => Timeout::After(d),
        None => modifiers.timeout,
    };
    let pos = &opts.positional;
    let command = match topic {
        Topic::Send | Topic::Call => {
            let [channel, message, args @ ..] = pos.as_slice() else {
                return Err(missing(topic, "CHANNEL and 'message(types)'"));
            };
            let channel = plain_channel(channel, topic)?;
            let message = signature(message, topic)?;
            let payload = encode(&message, args, topic)?;
            if topic == Topic::Send {
                Command::Send {
                    channel,
                    message,
                    payload,
                }
            } else {
                Command::Call {
                    channel,
                    message,
                    payload,
                }
            }
        }
        Topic::Watch => {
            if pos.is_empty() {
                return Err(missing(topic, "at least one CHANNEL or pattern"));
            }
            let channels: Vec<String> = pos
                .iter()
                .map(|c| channel_or_pattern(c, topic))
                .collect::<Result<_, _>>()?;
            if opts.shm {
                channels_single_plain(&channels, topic)?;
                if opts.credentials {
                    return Err(UsageError::new(
                        Some(topic),
                        "--credentials does not apply to --shm (the stream has one publisher)",
                    ));
                }
            }
            Command::Watch {
                channels,
                count: opts.count,
                credentials: opts.credentials,
                shm: opts.shm,
            }
        }
        Topic::Wait => match pos.as_slice() {
            [channel, message] => Command::Wait {
                channel: channel_or_pattern(channel, topic)?,
                message: signature(message, topic)?,
            },
            [_] | [] => return Err(missing(topic, "CHANNEL and 'message(types)'")),
            [_, _, extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::Registered => match pos.as_slice() {
            [channel] => Command::Registered {
                channel: plain_channel(channel, topic)?,
            },
            [] => return Err(missing(topic, "CHANNEL")),
            [_, extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::Channels => match pos.as_slice() {
            [] => Command::Channels,
            [extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::Stats => match pos.as_slice() {
            [] => Command::Stats {
                clients: opts.clients,
            },
            [extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::Serve => {
            let [channel, message, reply, args @ ..] = pos.as_slice() else {
                return Err(missing(
                    topic,
                    "CHANNEL, 'message(types)' and 'reply(types)'",
                ));
            };
            let reply = signature(reply, topic)?;
            Command::Serve {
                channel: channel_or_pattern(channel, topic)?,
                message: signature(message, topic)?,
                payload: encode(&reply, args, topic)?,
                reply,
                count: opts.count,
            }
        }
        Topic::Shm => match pos.as_slice() {
            ["list"] => Command::ShmList,
            ["write", name, offset, hex] => Command::ShmWrite {
                name: shm_name(name)?,
                offset: parse_size(offset, "OFFSET")?,
                data: match datastream::parse_arg(datastream::ArgType::QByteArray, hex) {
                    Ok(datastream::Value::QByteArray(Some(bytes))) => bytes,
                    _ => {
                        return Err(UsageError::new(
                            Some(topic),
                            format!("{hex:?} is not hex bytes (like 0a0b or 0x0a0b)"),
                        ))
                    }
                },
                create: opts.create,
                persistent: opts.persistent,
                mode: opts.mode.unwrap_or(0o600),
            },
            ["read", name, offset, len] => Command::ShmRead {
                name: shm_name(name)?,
                offset: parse_size(offset, "OFFSET")?,
                len: parse_size(len, "LEN")?,
            },
            ["lock", name] => Command::ShmLock {
                name: shm_name(name)?,
                hold: opts.hold,
            },
            ["write" | "read", ..] => {
                return Err(missing(topic, "NAME, OFFSET and HEX (write) or LEN (read)"))
            }
            ["lock", ..] => return Err(missing(topic, "exactly one NAME to lock")),
            ["rm", name] => Command::ShmRemove {
                name: shm_name(name)?,
                semaphore: opts.semaphore,
            },
            ["list", extra, ..] | ["rm", _, extra, ..] => return Err(unexpected(topic, extra)),
            ["rm"] => return Err(missing(topic, "the NAME to remove")),
            [] => return Err(missing(topic, "'list' or 'rm NAME'")),
            [other, ..] => {
                return Err(UsageError::new(
                    Some(topic),
                    format!("unknown shm command {other:?} (list, rm, read, write, lock)"),
                ))
            }
        },
        Topic::Monitor => Command::Monitor {
            patterns: pos
                .iter()
                .map(|c| channel_or_pattern(c, topic))
                .collect::<Result<_, _>>()?,
            count: opts.count,
        },
        Topic::Services => match pos.as_slice() {
            [] => Command::Services,
            [extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::ShmSend => {
            let [channel, message, args @ ..] = pos.as_slice() else {
                return Err(missing(topic, "CHANNEL and 'message(types)'"));
            };
            let channel = plain_channel(channel, topic)?;
            let message = signature(message, topic)?;
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            // Checked now with message number 0, so a bad value is a usage error.
            encode(&message, &substitute(&args, 0), topic)?;
            if opts.slots.is_some_and(|n| n < 2 || !n.is_power_of_two()) {
                return Err(UsageError::new(
                    Some(topic),
                    "--slots takes a power of two of at least 2",
                ));
            }
            Command::ShmSend {
                channel,
                message,
                args,
                count: opts.count.unwrap_or(1),
                interval: opts.interval.unwrap_or(Duration::ZERO),
                slot_size: opts.slot_size,
                slots: opts.slots.unwrap_or(256),
                lossy: opts.lossy,
                subscribers: opts.subscribers.unwrap_or(0),
            }
        }
        Topic::OldForm | Topic::Types | Topic::Chain => unreachable!("not a command"),
    };
    Ok(Parsed::Steps(vec![Step {
        command,
        timeout,
        hex: modifiers.hex,
    }]))
}

/// `CHANNEL 'msg(types)' ARGS... [-w CHANNEL 'msg(types)' [TIMEOUT_MS]]`: a send, then
/// optionally a wait (whose channel is subscribed before the send, like every wait).
fn parse_old_form(words: &[String], modifiers: Modifiers) -> Result<Parsed, UsageError> {
    let topic = Some(Topic::OldForm);
    let (send, wait) = match words.iter().position(|w| w == "-w") {
        Some(at) => (&words[..at], Some(&words[at + 1..])),
        None => (words, None),
    };
    let [channel, message, args @ ..] = send else {
        return Err(UsageError::new(
            None,
            format!("unknown command {:?} (see qcop --help)", words[0]),
        ));
    };
    let message = match datastream::parse_signature(message) {
        Ok(sig) => sig,
        // `qcop sned x` reads as the old form; say what was probably meant.
        Err(_) if !message.contains('(') => {
            return Err(UsageError::new(
                None,
                format!(
                    "unknown command {channel:?}, and {message:?} is not a message signature \
                     for the old form CHANNEL 'message(types)' (see qcop --help)"
                ),
            ))
        }
        Err(e) => return Err(UsageError::new(topic, format!("{message:?}: {e}"))),
    };
    let mut steps = vec![Step {
        command: Command::Send {
            channel: plain_channel(channel, Topic::OldForm)?,
            payload: encode(&message, args, Topic::OldForm)?,
            message,
        },
        timeout: modifiers.timeout,
        hex: modifiers.hex,
    }];
    if let Some(wait) = wait {
        let (channel, message, timeout) = match wait {
            [channel, message] => (channel, message, modifiers.timeout),
            [channel, message, ms] => {
                let ms = parse_millis(ms, "the -w timeout", topic)?;
                (channel, message, Timeout::After(ms))
            }
            [] | [_] => {
                return Err(UsageError::new(
                    topic,
                    "-w needs CHANNEL and 'message(types)' to wait for",
                ))
            }
            [_, _, _, extra, ..] => {
                return Err(UsageError::new(
                    topic,
                    format!("unexpected {extra:?} after -w"),
                ))
            }
        };
        steps.push(Step {
            command: Command::Wait {
                channel: channel_or_pattern(channel, Topic::OldForm)?,
                message: signature(message, Topic::OldForm)?,
            },
            timeout,
            hex: modifiers.hex,
        });
    }
    Ok(Parsed::Steps(steps))
}

/// A command's words sorted into positional arguments and its options.
struct Options<'a> {
    positional: Vec<&'a str>,
    timeout: Option<Duration>,
    count: Option<u64>,
    clients: bool,
    semaphore: bool,
    create: Option<u64>,
    persistent: bool,
    mode: Option<u16>,
    hold: Option<Duration>,
    credentials: bool,
    help: bool,
    shm: bool,
    interval: Option<Duration>,
    slot_size: Option<u32>,
    slots: Option<u32>,
    lossy: bool,
    subscribers: Option<u32>,
}

impl<'a> Options<'a> {
    fn split(words: &'a [String], topic: Topic) -> Result<Options<'a>, UsageError> {
        let mut opts = Options {
            positional: Vec::new(),
            timeout: None,
            count: None,
            clients: false,
            semaphore: false,
            create: None,
            persistent: false,
            mode: None,
            hold: None,
            credentials: false,
            help: false,
            shm: false,
            interval: None,
            slot_size: None,
            slots: None,
            lossy: false,
            subscribers: None,
        };
        // Past the channel and signature(s), words that are not this command's options are
        // argument values: `qcop send ch 'say(QString)' -v` sends "-v".
        let fixed = match topic {
            Topic::Send | Topic::Call | Topic::ShmSend => 2,
            Topic::Serve => 3,
            _ => usize::MAX,
        };
        let mut it = words.iter();
        while let Some(word) = it.next() {
            if !is_option(word) {
                opts.positional.push(word);
                continue;
            }
            let (flag, inline) = split_inline_value(word);
            let mut value = || -> Result<&'a str, UsageError> {
                match inline {
                    Some(v) => Ok(v),
                    None => it.next().map(String::as_str).ok_or_else(|| {
                        UsageError::new(Some(topic), format!("{flag} needs a value"))
                    }),
                }
            };
            match (flag, topic) {
                ("-h" | "--help", _) => opts.help = true,
                (
                    "--timeout",
                    Topic::Watch | Topic::Wait | Topic::Call | Topic::Monitor | Topic::ShmSend,
                ) => {
                    opts.timeout = Some(parse_millis(value()?, "--timeout", Some(topic))?);
                }
                ("--count", Topic::Watch | Topic::Serve | Topic::Monitor | Topic::ShmSend) => {
                    opts.count = Some(parse_count(value()?, topic)?);
                }
                ("--shm", Topic::Watch) if inline.is_none() => opts.shm = true,
                ("--lossy", Topic::ShmSend) if inline.is_none() => opts.lossy = true,
                ("--interval", Topic::ShmSend) => {
                    opts.interval = Some(parse_millis(value()?, "--interval", Some(topic))?);
                }
                ("--slot-size", Topic::ShmSend) => {
                    opts.slot_size = Some(parse_u32(value()?, "--slot-size", topic)?);
                }
                ("--slots", Topic::ShmSend) => {
                    opts.slots = Some(parse_u32(value()?, "--slots", topic)?);
                }
                ("--subscribers", Topic::ShmSend) => {
                    opts.subscribers = Some(parse_u32(value()?, "--subscribers", topic)?);
                }
                ("--clients", Topic::Stats) if inline.is_none() => opts.clients = true,
                ("--semaphore", Topic::Shm) if inline.is_none() => opts.semaphore = true,
                ("--persistent", Topic::Shm) if inline.is_none() => opts.persistent = true,
                ("--create", Topic::Shm) => {
                    opts.create = Some(parse_size(value()?, "--create")? as u64);
                }
                ("--mode", Topic::Shm) => {
                    let text = value()?;
                    let mode = u16::from_str_radix(text.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            UsageError::new(
                                Some(topic),
                                format!(
                                    "--mode takes octal permission bits like 0640, not {text:?}"
                                ),
                            )
                        })?;
                    opts.mode = Some(mode);
                }
                ("--hold", Topic::Shm) => {
                    opts.hold = Some(parse_millis(value()?, "--hold", Some(topic))?);
                }
                ("--credentials", Topic::Watch) if inline.is_none() => opts.credentials = true,
                _ if opts.positional.len() >= fixed => opts.positional.push(word),
                _ => {
                    return Err(UsageError::new(
                        Some(topic),
                        format!("unknown option {word:?} for {}", topic.name()),
                    ))
                }
            }
        }
        Ok(opts)
    }
}

fn missing(topic: Topic, what: &str) -> UsageError {
    UsageError::new(Some(topic), format!("{} needs {what}", topic.name()))
}

fn unexpected(topic: Topic, word: &str) -> UsageError {
    UsageError::new(
        Some(topic),
        format!("unexpected argument {word:?} for {}", topic.name()),
    )
}

fn parse_millis(text: &str, what: &str, topic: Option<Topic>) -> Result<Duration, UsageError> {
    match text.parse::<u64>() {
        Ok(ms) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(Duration::from_millis(ms)),
        _ => Err(UsageError::new(
            topic,
            format!("{what} takes milliseconds (a whole number), not {text:?}"),
        )),
    }
}

/// A segment or semaphore name.
fn shm_name(name: &str) -> Result<String, UsageError> {
    qcop::pattern::check_name(name, qcop::shm::MAX_NAME_LEN)
        .map(|()| name.to_owned())
        .map_err(|e| UsageError::new(Some(Topic::Shm), format!("invalid name {name:?}: {e}")))
}

/// A byte offset, length or size (decimal).
fn parse_size(text: &str, what: &str) -> Result<usize, UsageError> {
    match text.parse::<usize>() {
        Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(UsageError::new(
            Some(Topic::Shm),
            format!("{what} takes a number of bytes, not {text:?}"),
        )),
    }
}

fn parse_count(text: &str, topic: Topic) -> Result<u64, UsageError> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(UsageError::new(
            Some(topic),
            format!("--count takes a number of messages of at least 1, not {text:?}"),
        )),
    }
}

fn parse_u32(text: &str, what: &str, topic: Topic) -> Result<u32, UsageError> {
    match text.parse::<u32>() {
        Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(UsageError::new(
            Some(topic),
            format!("{what} takes a whole number, not {text:?}"),
        )),
    }
}

/// `watch --shm` maps one stream: exactly one plain channel.
fn channels_single_plain(channels: &[String], topic: Topic) -> Result<(), UsageError> {
    match channels {
        [one] => plain_channel(one, topic).map(|_| ()),
        _ => Err(UsageError::new(
            Some(topic),
            "watch --shm takes exactly one plain CHANNEL (a stream is mapped by its channel)",
        )),
    }
}

/// The argument values for message number `n`: each `%n` replaced by `n`.
pub fn substitute(args: &[String], n: u64) -> Vec<String> {
    args.iter()
        .map(|a| if a == "%n" { n.to_string() } else { a.clone() })
        .collect()
}

/// Encodes `args` (as [`substitute`] made them) for `message`.
pub fn encode_values(message: &Signature, args: &[String]) -> Result<Vec<u8>, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    datastream::encode_args(&message.types, &args).map_err(|e| format!("{message}: {e}"))
}

fn check_channel(name: &str, topic: Topic) -> Result<(), UsageError> {
    // The daemon's length limit is checked when the request is made.
    pattern::check_name(name, usize::MAX)
        .map_err(|e| UsageError::new(Some(topic), format!("invalid channel name {name:?}: {e}")))
}

/// A channel that messages can be sent to: not a pattern.
fn plain_channel(name: &str, topic: Topic) -> Result<String, UsageError> {
    check_channel(name, topic)?;
    if pattern::is_pattern(name) {
        return Err(UsageError::new(
            Some(topic),
            format!(
                "{name:?} is a pattern (it contains '*', '?' or '['); {} needs a plain channel name",
                topic.name()
            ),
        ));
    }
    Ok(name.to_owned())
}

/// A channel or a wildcard pattern that compiles.
fn channel_or_pattern(name: &str, topic: Topic) -> Result<String, UsageError> {
    check_channel(name, topic)?;
    if pattern::is_pattern(name) {
        Pattern::new(name)
            .map_err(|e| UsageError::new(Some(topic), format!("invalid pattern {name:?}: {e}")))?;
    }
    Ok(name.to_owned())
}

fn signature(text: &str, topic: Topic) -> Result<Signature, UsageError> {
    datastream::parse_signature(text)
        .map_err(|e| UsageError::new(Some(topic), format!("{text:?}: {e}")))
}

fn encode<S: AsRef<str>>(
    message: &Signature,
    args: &[S],
    topic: Topic,
) -> Result<Vec<u8>, UsageError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    datastream::encode_args(&message.types, &args)
        .map_err(|e| UsageError::new(Some(topic), format!("{message}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &[&str]) -> Vec<String> {
        line.iter().map(|w| (*w).to_owned()).collect()
    }

    fn run(line: &[&str]) -> (Global, Vec<Step>) {
        let inv = parse(&words(line)).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match inv.action {
            Action::Run(steps) => (inv.global, steps),
            other => panic!("{line:?}: expected commands, got {other:?}"),
        }
    }

    fn steps(line: &[&str]) -> Vec<Step> {
        run(line).1
    }

    fn usage(line: &[&str]) -> UsageError {
        match parse(&words(line)) {
            Err(e) => e,
            Ok(inv) => panic!("{line:?}: expected a usage error, got {inv:?}"),
        }
    }

    fn sig(text: &str) -> Signature {
        datastream::parse_signature(text).unwrap()
    }

    fn ms(n: u64) -> Timeout {
        Timeout::After(Duration::from_millis(n))
    }

    #[test]
    fn send_encodes_its_arguments() {
        let s = steps(&["send", "QPE/Audio", "setVolume(int)", "-5"]);
        assert_eq!(
            s,
            vec![Step {
                command: Command::Send {
                    channel: "QPE/Audio".into(),
                    message: sig("setVolume(int)"),
                    payload: (-5i32).to_be_bytes().to_vec(),
                },
                timeout: Timeout::Default,
                hex: false,
            }]
        );
    }

    #[test]
    fn signatures_are_normalized() {
        let s = steps(&[
            "send",
            "a",
            " note ( const QString & , unsigned int )",
            "x",
            "1",
        ]);
        let Command::Send { message, .. } = &s[0].command else {
            panic!("{s:?}");
        };
        assert_eq!(message.normalized(), "note(QString,uint)");
    }

    #[test]
    fn global_options_come_first() {
        let (g, s) = run(&[
            "-s",
            "/tmp/x.sock",
            "--connect-timeout=250",
            "registered",
            "QPE/System",
        ]);
        assert_eq!(g.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(g.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            s[0].command,
            Command::Registered {
                channel: "QPE/System".into()
            }
        );
        let (g, _) = run(&["--socket=/s", "channels"]);
        assert_eq!(g.socket, Some(PathBuf::from("/s")));
    }

    #[test]
    fn chain_with_modifiers_that_stick() {
        let s = steps(&[
            "send",
            "QPE/pppd",
            "dial()",
            "--",
            "timeout",
            "30000",
            "hex",
            "wait",
            "QPE/pppd",
            "dialResult(bool)",
            "--",
            "call",
            "a",
            "b()",
            "--",
            "nohex",
            "notimeout",
            "wait",
            "c",
            "d()",
        ]);
        let summary: Vec<(Timeout, bool)> = s.iter().map(|s| (s.timeout, s.hex)).collect();
        assert_eq!(
            summary,
            vec![
                (Timeout::Default, false),
                (ms(30000), true),
                (ms(30000), true),
                (Timeout::Never, false)
            ]
        );
        assert_eq!(
            s[1].command,
            Command::Wait {
                channel: "QPE/pppd".into(),
                message: sig("dialResult(bool)")
            }
        );
    }

    #[test]
    fn command_timeout_option_wins_over_the_modifier() {
        let s = steps(&["timeout", "100", "wait", "a", "b()", "--timeout", "7"]);
        assert_eq!(s[0].timeout, ms(7));
        let s = steps(&["call", "--timeout=9", "a", "b(int)", "1"]);
        assert_eq!(s[0].timeout, ms(9));
    }

    #[test]
    fn watch_takes_patterns_count_and_timeout() {
        let s = steps(&["watch", "--count", "3", "QPE/*", "x", "--timeout", "50"]);
        assert_eq!(
            s[0].command,
            Command::Watch {
                channels: vec!["QPE/*".into(), "x".into()],
                count: Some(3),
                credentials: false,
                shm: false,
            }
        );
        assert_eq!(s[0].timeout, ms(50));
        let s = steps(&["watch", "--credentials", "x"]);
        assert_eq!(
            s[0].command,
            Command::Watch {
                channels: vec!["x".into()],
                count: None,
                credentials: true,
                shm: false,
            }
        );
    }

    #[test]
    fn monitor_and_services() {
        let s = steps(&["monitor"]);
        assert_eq!(
            s[0].command,
            Command::Monitor {
                patterns: vec![],
                count: None
            }
        );
        let s = steps(&["monitor", "--count", "2", "QPE/*", "--timeout", "10", "a"]);
        assert_eq!(
            s[0].command,
            Command::Monitor {
                patterns: vec!["QPE/*".into(), "a".into()],
                count: Some(2)
            }
        );
        assert_eq!(s[0].timeout, ms(10));
        assert_eq!(steps(&["services"])[0].command, Command::Services);
        assert_eq!(usage(&["services", "x"]).topic, Some(Topic::Services));
        assert_eq!(usage(&["monitor", "a[b"]).topic, Some(Topic::Monitor));
        assert_eq!(
            usage(&["monitor", "--credentials"]).topic,
            Some(Topic::Monitor)
        );
    }

    #[test]
    fn watch_shm_maps_one_plain_channel() {
        let s = steps(&["watch", "--shm", "sensors/imu"]);
        assert_eq!(
            s[0].command,
            Command::Watch {
                channels: vec!["sensors/imu".into()],
                count: None,
                credentials: false,
                shm: true,
            }
        );
        assert_eq!(
            usage(&["watch", "--shm", "--credentials", "a"]).topic,
            Some(Topic::Watch)
        );
        assert_eq!(
            usage(&["watch", "--shm", "a", "b"]).topic,
            Some(Topic::Watch)
        );
        assert_eq!(usage(&["watch", "--shm", "a/*"]).topic, Some(Topic::Watch));
    }

    #[test]
    fn shm_send_options_and_message_numbers() {
        let s = steps(&[
            "shm-send",
            "--count",
            "10",
            "--slots",
            "64",
            "--lossy",
            "sensors/imu",
            "sample(int,QString)",
            "%n",
            "-x",
            "--subscribers",
            "2",
        ]);
        let Command::ShmSend {
            channel,
            message,
            args,
            count,
            slots,
            lossy,
            subscribers,
            slot_size,
            interval,
        } = &s[0].command
        else {
            panic!("{s:?}");
        };
        assert_eq!(
            (channel.as_str(), message.normalized()),
            ("sensors/imu", "sample(int,QString)".into())
        );
        assert_eq!(args, &["%n".to_string(), "-x".into()]);
        assert_eq!((*count, *slots, *lossy, *subscribers), (10, 64, true, 2));
        assert_eq!((*slot_size, *interval), (None, Duration::ZERO));
        assert_eq!(substitute(args, 7), ["7", "-x"]);
        assert_eq!(
            usage(&["shm-send", "c", "f(int)", "x"]).topic,
            Some(Topic::ShmSend)
        );
        assert_eq!(
            usage(&["shm-send", "--slots", "3", "c", "f()"]).topic,
            Some(Topic::ShmSend)
        );
        assert_eq!(
            usage(&["shm-send", "c*", "f()"]).topic,
            Some(Topic::ShmSend)
        );
    }

    #[test]
    fn serve_encodes_the_reply() {
        let s = steps(&[
            "serve",
            "calc",
            "add(int,int)",
            "result(int)",
            "5",
            "--count",
            "2",
        ]);
        assert_eq!(
            s[0].command,
            Command::Serve {
                channel: "calc".into(),
                message: sig("add(int,int)"),
                reply: sig("result(int)"),
                payload: 5i32.to_be_bytes().to_vec(),
                count: Some(2),
            }
        );
    }

    #[test]
    fn stats_and_channels() {
        assert_eq!(
            steps(&["stats", "--clients"])[0].command,
            Command::Stats { clients: true }
        );
        assert_eq!(steps(&["channels"])[0].command, Command::Channels);
    }

    #[test]
    fn shm_commands() {
        assert_eq!(steps(&["shm", "list"])[0].command, Command::ShmList);
        assert_eq!(
            steps(&["shm", "rm", "--semaphore", "a/b"])[0].command,
            Command::ShmRemove {
                name: "a/b".into(),
                semaphore: true
            }
        );
        assert_eq!(
            steps(&["shm", "write", "--create", "64", "--mode", "0644", "s", "8", "0x0a0B"])[0]
                .command,
            Command::ShmWrite {
                name: "s".into(),
                offset: 8,
                data: vec![0x0a, 0x0b],
                create: Some(64),
                persistent: false,
                mode: 0o644,
            }
        );
        assert_eq!(
            steps(&["shm", "lock", "--hold", "250", "s"])[0].command,
            Command::ShmLock {
                name: "s".into(),
                hold: Some(Duration::from_millis(250)),
            }
        );
        for bad in [
            &["shm"][..],
            &["shm", "rm"],
            &["shm", "list", "x"],
            &["shm", "frob"],
            &["shm", "read", "s", "0"],
            &["shm", "read", "s", "-1", "4"],
            &["shm", "write", "s", "0", "abc"],
            &["shm", "write", "--mode", "999", "s", "0", "00"],
            &["shm", "rm", ""],
            &["stats", "--semaphore"],
        ] {
            let e = usage(bad);
            assert!(!e.message.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn old_form_sends_then_waits() {
        let s = steps(&[
            "QPE/System",
            "ping(QString)",
            "hi",
            "-w",
            "QPE/Reply",
            "pong()",
            "2500",
        ]);
        assert_eq!(s.len(), 2);
        let mut payload = 4u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, b'h', 0, b'i']);
        assert_eq!(
            s[0].command,
            Command::Send {
                channel: "QPE/System".into(),
                message: sig("ping(QString)"),
                payload,
            }
        );
        assert_eq!(
            s[1],
            Step {
                command: Command::Wait {
                    channel: "QPE/Reply".into(),
                    message: sig("pong()")
                },
                timeout: ms(2500),
                hex: false,
            }
        );
        let s = steps(&["timeout", "10", "a", "b()", "-w", "c", "d()"]);
        assert_eq!(s[1].timeout, ms(10));
        assert_eq!(steps(&["a", "b()"]).len(), 1);
    }

    #[test]
    fn dash_words_after_the_signature_are_values() {
        let s = steps(&["send", "a", "f(QString,QString)", "-v", "--x"]);
        let Command::Send { payload, .. } = &s[0].command else {
            panic!("{s:?}");
        };
        assert_eq!(payload.len(), 2 * 4 + 2 * 2 + 3 * 2);
        assert!(usage(&["send", "--x", "a", "f()"])
            .message
            .contains("unknown option"));
    }

    #[test]
    fn negative_numbers_are_arguments() {
        let s = steps(&["send", "a", "f(int,qlonglong)", "-1", "-0x10"]);
        let Command::Send { payload, .. } = &s[0].command else {
            panic!("{s:?}");
        };
        let mut expected = (-1i32).to_be_bytes().to_vec();
        expected.extend_from_slice(&(-16i64).to_be_bytes());
        assert_eq!(payload, &expected);
    }

    #[test]
    fn help_and_version() {
        let topic = |line: &[&str]| match parse(&words(line)).unwrap().action {
            Action::Help(t) => t,
            other => panic!("{line:?}: {other:?}"),
        };
        assert_eq!(topic(&["--help"]), None);
        assert_eq!(topic(&["-s", "x", "-h"]), None);
        assert_eq!(topic(&["help"]), None);
        assert_eq!(topic(&["help", "watch"]), Some(Topic::Watch));
        assert_eq!(topic(&["help", "modifiers"]), Some(Topic::Chain));
        assert_eq!(topic(&["send", "--help"]), Some(Topic::Send));
        assert_eq!(
            topic(&["send", "a", "b()", "--", "wait", "-h"]),
            Some(Topic::Wait)
        );
        assert_eq!(parse(&words(&["-V"])).unwrap().action, Action::Version);
    }

    #[test]
    fn usage_errors_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["--bogus"], "unknown option \"--bogus\""),
            (&["-s"], "--socket needs a value"),
            (&["--connect-timeout", "soon", "channels"], "not \"soon\""),
            (&["--connect-timeout", "0", "channels"], "at least 1 ms"),
            (&["send", "a"], "send needs CHANNEL"),
            (
                &["send", "a", "f(int)"],
                "f(int): message takes 1 argument but 0 were given",
            ),
            (
                &["send", "a", "f(int,bool)", "1", "maybe"],
                "argument 2 (bool): \"maybe\" is not a boolean",
            ),
            (
                &["send", "a", "f(QVariant)", "x"],
                "unsupported argument type \"QVariant\"",
            ),
            (
                &["send", "a", "f", "x"],
                "needs an argument list in parentheses",
            ),
            (&["send", "QPE/*", "f()"], "\"QPE/*\" is a pattern"),
            (&["send", "", "f()"], "invalid channel name \"\""),
            (&["watch"], "watch needs at least one CHANNEL"),
            (&["watch", "cam[0-"], "invalid pattern"),
            (&["watch", "--count", "0", "a"], "at least 1"),
            (&["watch", "--count"], "--count needs a value"),
            (&["wait", "a"], "wait needs CHANNEL"),
            (&["wait", "a", "b()", "c"], "unexpected argument \"c\""),
            (&["wait", "a", "b()", "--timeout", "-1"], "not \"-1\""),
            (&["registered"], "registered needs CHANNEL"),
            (&["channels", "x"], "unexpected argument \"x\""),
            (
                &["stats", "--count", "1"],
                "unknown option \"--count\" for stats",
            ),
            (&["serve", "a", "b()"], "serve needs CHANNEL"),
            (
                &["serve", "a", "b()", "r(int)"],
                "r(int): message takes 1 argument",
            ),
            (&["timeout"], "needs milliseconds"),
            (&["timeout", "5"], "no command given after the modifiers"),
            (
                &["send", "a", "b()", "--"],
                "command 2 of the '--' chain is empty",
            ),
            (
                &["send", "a", "b()", "--", "hex"],
                "has modifiers but no command",
            ),
            (&["a", "b()", "-w", "c"], "-w needs CHANNEL"),
            (
                &["a", "b()", "-w", "c", "d()", "soon"],
                "the -w timeout takes milliseconds",
            ),
            (&["sned", "x"], "unknown command \"sned\""),
            (&["frobnicate"], "unknown command \"frobnicate\""),
            (&["help", "nothing"], "no help on \"nothing\""),
        ];
        for (line, expected) in cases {
            let err = usage(line);
            assert!(
                err.message.contains(expected),
                "{line:?}: {:?} does not contain {expected:?}",
                err.message
            );
        }
    }

    #[test]
    fn usage_errors_point_at_help() {
        assert_eq!(usage(&["send", "a"]).topic, Some(Topic::Send));
        assert_eq!(usage(&["a", "b(int)"]).topic, Some(Topic::OldForm));
        assert_eq!(usage(&["send", "a", "b()", "--"]).topic, Some(Topic::Chain));
        for (topic, names) in Topic::NAMES {
            assert_eq!(Topic::lookup(names[0]), Some(topic));
            assert_eq!(topic.name(), names[0]);
        }
    }

    #[test]
    fn non_utf8_arguments_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            std::ffi::OsString::from("send"),
            std::ffi::OsString::from_vec(vec![0xff]),
        ];
        let err = utf8_args(args).unwrap_err();
        assert!(err.message.contains("argument 2"), "{err}");
    }
}
