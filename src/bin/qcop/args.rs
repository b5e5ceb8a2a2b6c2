//! The command line of `qcop`: global options, then one command or a `--` chain of commands.
//!
//! Everything a user can get wrong is found here, before connecting: unknown commands and
//! options, bad channel names, signatures with unsupported types. Such mistakes are usage
//! errors (exit status 1 like the original tool; 2 with `--strict` and for the commands
//! only qcop has).
//!
//! ```text
//! qcop [GLOBAL OPTIONS] [MODIFIERS] COMMAND ARGS... [-- [MODIFIERS] COMMAND ARGS...]...
//! ```
//!
//! Modifiers (`timeout MS`, `notimeout`, `hex`, `nohex`, `service`) are Qt Extended's: each
//! sets a value for the command it precedes and every later command, until changed or until
//! a `--`, which resets them all. Where the original tool read an argument value leniently
//! (`send` and the old form), so does qcop, unless `--strict`: the guess is made and a
//! warning printed on stderr.

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
    /// `--strict`: refuse argument values that do not fit and wrong argument counts
    /// instead of guessing as the original tool did; usage errors exit 2.
    pub strict: bool,
    /// `--format`: how messages are printed; `None`: each command's default.
    pub format: Option<Format>,
    /// `-l USER`: run as this user.
    pub user: Option<String>,
    /// Type names declared with `enum NAME`: sent and printed as `int`.
    pub enums: Vec<String>,
    /// Warnings about guessed values, printed on stderr before running.
    pub warnings: Vec<String>,
}

/// How `watch`, `wait` and `call` print messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The original tool's: `CHANNEL: msg( 1, "a" )` for watch, one argument a line for wait.
    Classic,
    /// qcop's: `CHANNEL msg(int,QString) 1 "a"`, values on one line, `0x` hex for payloads
    /// that do not decode.
    Rich,
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
    /// `qcop query`.
    Query,
    /// `qcop list`.
    List,
    /// `qcop enum`.
    Enum,
    /// The Qt Extended form `qcop CHANNEL 'msg()' ... -w ...`.
    OldForm,
    /// Argument types and how to write their values.
    Types,
    /// Modifiers and `--` chains.
    Chain,
}

impl Topic {
    /// Every topic with the names `qcop help NAME` accepts (the first is the canonical one).
    const NAMES: [(Topic, &'static [&'static str]); 18] = [
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
        (Topic::Query, &["query"]),
        (Topic::List, &["list"]),
        (Topic::Enum, &["enum"]),
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

    /// Whether the original tool had this command (so its usage errors exit 1 by default).
    pub fn is_original(self) -> bool {
        matches!(
            self,
            Topic::Send
                | Topic::Watch
                | Topic::Wait
                | Topic::Query
                | Topic::List
                | Topic::Enum
                | Topic::OldForm
                | Topic::Chain
                | Topic::Types
        )
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
    /// From `hex`/`nohex`: print byte arrays as hex (the default) or as Latin-1 text.
    pub hex: bool,
    /// From `service`: channel names are names of services (see `qcop services`).
    pub service: bool,
    /// How messages are printed.
    pub format: Format,
}

/// A message name with its argument types, as sent and matched: the normalized signature
/// text, which keeps the names of `enum` types (encoded as `int`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Normalized signature, e.g. `setVolume(int)`.
    pub text: String,
    /// The argument types.
    pub types: Vec<datastream::ArgType>,
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A command, validated and with its arguments already encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Broadcast a message.
    Send {
        /// Plain channel name (or service name, with `service`).
        channel: String,
        /// The message signature.
        message: Msg,
        /// Encoded arguments.
        payload: Vec<u8>,
    },
    /// Print messages on channels or patterns.
    Watch {
        /// Channels and patterns.
        channels: Vec<String>,
        /// `--timeout MS`: stop when no message came for this long (the `timeout`
        /// modifier instead limits the whole run, as in the original).
        idle: Option<Duration>,
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
        message: Msg,
    },
    /// Ask a channel's adaptor for the messages it supports and print them.
    Query {
        /// Channel (or service name, with `service`).
        channel: String,
        /// Prefix of the messages to list (`SERVICE::` with `service`).
        prefix: String,
    },
    /// List the services and their channels.
    List,
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

/// A mistake on the command line (exit status 1, or 2: see [`UsageError::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, naming the offending word.
    pub message: String,
    /// The help topic that explains the right syntax.
    pub topic: Option<Topic>,
    /// `--strict` was given before the mistake.
    pub strict: bool,
}

impl UsageError {
    fn new(topic: Option<Topic>, message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            topic,
            strict: false,
        }
    }

    /// 1, as the original tool exits on any usage error; 2 with `--strict` and for the
    /// commands only qcop has, as qcop always did.
    pub fn status(&self) -> u8 {
        if self.strict || self.topic.is_some_and(|t| !t.is_original()) {
            2
        } else {
            1
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
const COMMANDS: [(&str, Topic); 14] = [
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
    ("query", Topic::Query),
    ("list", Topic::List),
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
    let mut strict = false;
    parse_words(args, &mut strict).map_err(|mut e| {
        e.strict = strict;
        e
    })
}

fn parse_words(args: &[String], strict: &mut bool) -> Result<Invocation, UsageError> {
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
            "--strict" if inline.is_none() => {
                global.strict = true;
                *strict = true;
            }
            "--format" => {
                global.format = Some(match value("--format")?.as_str() {
                    "classic" => Format::Classic,
                    "rich" => Format::Rich,
                    other => {
                        return Err(UsageError::new(
                            None,
                            format!("--format takes classic or rich, not {other:?}"),
                        ))
                    }
                });
            }
            "-l" | "--user" => {
                let user = value("-l")?;
                if user.is_empty() {
                    return Err(UsageError::new(None, "-l needs a user name"));
                }
                global.user = Some(user);
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
        Some(_) => match parse_chain(words, &mut global)? {
            Chain::Steps(steps) if steps.is_empty() && global.strict => Err(UsageError::new(
                Some(Topic::Chain),
                "no command given after the modifiers",
            )),
            Chain::Steps(steps) => Ok(Invocation {
                global,
                action: Action::Run(steps),
            }),
            Chain::Help(topic) => Ok(help(global, Some(topic))),
        },
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
                    "no help on {name:?} (topics: send, watch, wait, query, list, enum, \
                     registered, channels, stats, call, serve, monitor, services, shm, \
                     shm-send, old, types, chain)"
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
    service: bool,
}

impl Modifiers {
    /// What every command starts with, and what `--` goes back to.
    const RESET: Modifiers = Modifiers {
        timeout: Timeout::Default,
        hex: true,
        service: false,
    };
}

/// Reads the commands: modifiers, then a command up to the next `--` (which resets the
/// modifiers), or the old form, which takes every word to the end as the original did.
/// Empty commands between `--`s are allowed, as in the original (not with `--strict`).
fn parse_chain(words: &[String], global: &mut Global) -> Result<Chain, UsageError> {
    let mut modifiers = Modifiers::RESET;
    let mut steps = Vec::new();
    let mut rest = words;
    let mut n = 0;
    loop {
        n += 1;
        let after = read_modifiers(rest, &mut modifiers, global)?;
        let had_modifiers = after.len() != rest.len();
        rest = after;
        let is_command = rest
            .first()
            .is_some_and(|w| w == "enum" || COMMANDS.iter().any(|(name, _)| name == w));
        let end = if is_command {
            rest.iter()
                .position(|w| w == CHAIN_SEPARATOR)
                .unwrap_or(rest.len())
        } else {
            rest.iter()
                .position(|w| w == CHAIN_SEPARATOR)
                .filter(|&at| at == 0)
                .unwrap_or(rest.len())
        };
        let segment = &rest[..end];
        if segment.is_empty() {
            if global.strict && (had_modifiers || n > 1 || end < rest.len()) {
                let message = if had_modifiers {
                    format!("command {n} of the '--' chain has modifiers but no command")
                } else {
                    format!("command {n} of the '--' chain is empty")
                };
                return Err(UsageError::new(Some(Topic::Chain), message));
            }
        } else if segment[0] == "enum" {
            match &segment[1..] {
                [name] => global.enums.push(name.clone()),
                _ => {
                    return Err(UsageError::new(
                        Some(Topic::Enum),
                        "enum takes one type NAME, then '--' or the end",
                    ))
                }
            }
        } else {
            let parsed = if is_command {
                parse_command(segment, modifiers, global)?
            } else {
                parse_old_form(segment, modifiers, global)?
            };
            match parsed {
                Parsed::Steps(mut new) => steps.append(&mut new),
                Parsed::Help(topic) => return Ok(Chain::Help(topic)),
            }
        }
        if end == rest.len() {
            return Ok(Chain::Steps(steps));
        }
        rest = &rest[end + 1..];
        modifiers = Modifiers::RESET;
    }
}

/// Consumes leading modifiers, updating `modifiers`; returns the words after them.
fn read_modifiers<'a>(
    mut words: &'a [String],
    modifiers: &mut Modifiers,
    global: &mut Global,
) -> Result<&'a [String], UsageError> {
    loop {
        match words.first().map(String::as_str) {
            Some("timeout") => {
                let text = words
                    .get(1)
                    .filter(|t| global.strict || t.starts_with(|c: char| c.is_ascii_digit()))
                    .ok_or_else(|| {
                        UsageError::new(
                            Some(Topic::Chain),
                            "the timeout modifier needs milliseconds, e.g. 'timeout 5000'",
                        )
                    })?;
                let ms = if global.strict {
                    parse_millis(text, "timeout", Some(Topic::Chain))?
                } else {
                    lenient_millis(text, "timeout", global)
                };
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
            Some("service") => {
                modifiers.service = true;
                words = &words[1..];
            }
            _ => return Ok(words),
        }
    }
}

/// Milliseconds read as the original read them (`QString::toInt`): a number that does not
/// parse is 0, with a warning.
fn lenient_millis(text: &str, what: &str, global: &mut Global) -> Duration {
    match text.trim().parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => {
            global.warnings.push(format!(
                "qcop: warning: {what} {text:?} is not a number of milliseconds; using 0"
            ));
            Duration::ZERO
        }
    }
}

enum Parsed {
    Steps(Vec<Step>),
    Help(Topic),
}

/// Parses one command (the words between `--` separators, after the modifiers).
fn parse_command(
    words: &[String],
    modifiers: Modifiers,
    global: &mut Global,
) -> Result<Parsed, UsageError> {
    let name = words[0].as_str();
    let Some(&(_, topic)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        return parse_old_form(words, modifiers, global);
    };
    let opts = Options::split(&words[1..], topic)?;
    if opts.help {
        return Ok(Parsed::Help(topic));
    }
    let timeout = match opts.timeout {
        Some(d) if topic != Topic::Watch => Timeout::After(d),
        _ => modifiers.timeout,
    };
    let pos = &opts.positional;
    let command = match topic {
        Topic::Send => {
            let [channel, message, args @ ..] = pos.as_slice() else {
                return Err(missing(topic, "CHANNEL and 'message(types)'"));
            };
            let (channel, message) = if modifiers.service {
                ((*channel).to_owned(), scoped(message, channel))
            } else {
                (plain_channel(channel, topic)?, (*message).to_owned())
            };
            let message = msg(&message, topic, global)?;
            if args.len() != message.types.len() {
                let e = datastream::ArgError::WrongCount {
                    expected: message.types.len(),
                    given: args.len(),
                };
                return Err(UsageError::new(Some(topic), format!("{message}: {e}")));
            }
            let payload = encode_msg(&message, args, topic, global)?;
            Command::Send {
                channel,
                message,
                payload,
            }
        }
        Topic::Call => {
            let [channel, message, args @ ..] = pos.as_slice() else {
                return Err(missing(topic, "CHANNEL and 'message(types)'"));
            };
            let channel = plain_channel(channel, topic)?;
            let message = signature(message, topic)?;
            let payload = encode(&message, args, topic)?;
            Command::Call {
                channel,
                message,
                payload,
            }
        }
        Topic::Query => match pos.as_slice() {
            [channel] => Command::Query {
                channel: if modifiers.service {
                    (*channel).to_owned()
                } else {
                    plain_channel(channel, topic)?
                },
                prefix: if modifiers.service {
                    format!("{channel}::")
                } else {
                    String::new()
                },
            },
            [] => return Err(missing(topic, "CHANNEL")),
            [_, extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::List => match pos.as_slice() {
            [] => Command::List,
            [extra, ..] => return Err(unexpected(topic, extra)),
        },
        Topic::Watch => {
            if pos.is_empty() {
                return Err(missing(topic, "at least one CHANNEL or pattern"));
            }
            let channels: Vec<String> = if modifiers.service {
                pos.iter().map(|c| (*c).to_owned()).collect()
            } else {
                pos.iter()
                    .map(|c| channel_or_pattern(c, topic))
                    .collect::<Result<_, _>>()?
            };
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
                idle: opts.timeout,
                count: opts.count,
                credentials: opts.credentials,
                shm: opts.shm,
            }
        }
        Topic::Wait => match pos.as_slice() {
            [channel, message] => Command::Wait {
                channel: if modifiers.service {
                    (*channel).to_owned()
                } else {
                    channel_or_pattern(channel, topic)?
                },
                message: msg(message, topic, global)?,
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
        Topic::OldForm | Topic::Types | Topic::Chain | Topic::Enum => {
            unreachable!("not a command")
        }
    };
    let classic = matches!(
        topic,
        Topic::Send | Topic::Watch | Topic::Wait | Topic::Query | Topic::List
    );
    Ok(Parsed::Steps(vec![Step {
        command,
        timeout,
        hex: modifiers.hex,
        service: modifiers.service,
        format: global.format.unwrap_or(if classic {
            Format::Classic
        } else {
            Format::Rich
        }),
    }]))
}

/// With `service`, a message name gets the service's scope (`Time::editTime()`) unless it
/// has one; a leading `::` asks for no scope.
fn scoped(message: &str, service: &str) -> String {
    let message = message.trim();
    match message.strip_prefix("::") {
        Some(bare) => bare.to_owned(),
        None if message.contains("::") => message.to_owned(),
        None => format!("{service}::{message}"),
    }
}

/// `CHANNEL 'msg(types)' ARGS... [-w CHANNEL 'msg(types)' [TIMEOUT_MS]]`: a send, then
/// optionally a wait (whose channel is subscribed before the send, like every wait).
///
/// As in the original, the arguments are taken one per type of the signature (a missing
/// one is null or 0, with a warning), and `-w` counts only right after them; anything else
/// is ignored (with a warning). With `--strict`, the arguments must match the signature and
/// `-w` is found wherever it is.
fn parse_old_form(
    words: &[String],
    modifiers: Modifiers,
    global: &mut Global,
) -> Result<Parsed, UsageError> {
    let topic = Some(Topic::OldForm);
    let [channel, message, rest @ ..] = words else {
        return Err(UsageError::new(
            None,
            format!("unknown command {:?} (see qcop --help)", words[0]),
        ));
    };
    if datastream::parse_signature_lenient(message).is_err() && !message.contains('(') {
        // `qcop sned x` reads as the old form; say what was probably meant.
        return Err(UsageError::new(
            None,
            format!(
                "unknown command {channel:?}, and {message:?} is not a message signature \
                 for the old form CHANNEL 'message(types)' (see qcop --help)"
            ),
        ));
    }
    let message = msg(message, Topic::OldForm, global)?;
    let (args, wait) = if global.strict {
        match rest.iter().position(|w| w == "-w") {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        }
    } else {
        let n = message.types.len().min(rest.len());
        let (args, after) = rest.split_at(n);
        match after.first().map(String::as_str) {
            Some("-w") => (args, Some(&after[1..])),
            Some(_) => {
                let note = if after.iter().any(|w| w == "-w") {
                    " (and so the -w after them, as the original did)"
                } else {
                    ""
                };
                global.warnings.push(format!(
                    "qcop: warning: {message} takes {} arguments; ignoring {:?}{note}",
                    message.types.len(),
                    after
                ));
                (args, None)
            }
            None => (args, None),
        }
    };
    if global.strict && args.len() != message.types.len() {
        let e = datastream::ArgError::WrongCount {
            expected: message.types.len(),
            given: args.len(),
        };
        return Err(UsageError::new(topic, format!("{message}: {e}")));
    }
    let mut steps = vec![Step {
        command: Command::Send {
            channel: plain_channel(channel, Topic::OldForm)?,
            payload: encode_msg(&message, args, Topic::OldForm, global)?,
            message,
        },
        timeout: modifiers.timeout,
        hex: modifiers.hex,
        service: false,
        format: global.format.unwrap_or(Format::Classic),
    }];
    if let Some(wait) = wait {
        let (channel, message, timeout) = match wait {
            [channel, message] => (channel, message, modifiers.timeout),
            [channel, message, ms, extra @ ..] => {
                if global.strict && !extra.is_empty() {
                    return Err(UsageError::new(
                        topic,
                        format!("unexpected {:?} after -w", extra[0]),
                    ));
                }
                let timeout = if global.strict {
                    Timeout::After(parse_millis(ms, "the -w timeout", topic)?)
                } else if ms.trim().starts_with('-') && ms.trim()[1..].parse::<u64>().is_ok() {
                    // The original waited forever for a negative timeout.
                    Timeout::Never
                } else {
                    Timeout::After(lenient_millis(ms, "the -w timeout", global))
                };
                (channel, message, timeout)
            }
            [] | [_] => {
                return Err(UsageError::new(
                    topic,
                    "-w needs CHANNEL and 'message(types)' to wait for",
                ))
            }
        };
        steps.push(Step {
            command: Command::Wait {
                channel: channel_or_pattern(channel, Topic::OldForm)?,
                message: msg(message, Topic::OldForm, global)?,
            },
            timeout,
            hex: modifiers.hex,
            service: false,
            format: global.format.unwrap_or(Format::Classic),
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

/// Parses a signature whose types are supported or declared with `enum` (sent as `int`).
fn msg(text: &str, topic: Topic, global: &Global) -> Result<Msg, UsageError> {
    let fail =
        |e: datastream::SignatureError| UsageError::new(Some(topic), format!("{text:?}: {e}"));
    let (normalized, types) = datastream::parse_signature_lenient(text).map_err(fail)?;
    // The normalized text is `name(type,type)`: the type names are between the parentheses.
    let inner = normalized
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or("");
    let names = if inner.is_empty() {
        Vec::new()
    } else {
        split_types(inner)
    };
    let types = types
        .into_iter()
        .zip(names)
        .map(|(ty, name)| match ty {
            Some(ty) => Ok(ty),
            None if global.enums.iter().any(|e| e == name) => Ok(datastream::ArgType::Int),
            None => Err(fail(datastream::SignatureError::UnknownType(
                name.to_owned(),
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Msg {
        text: normalized,
        types,
    })
}

use qcop::datastream::split_types;

/// Encodes `args` for `message`: strictly with `--strict`, else leniently as the original
/// tool did (a missing argument is null or 0), with a warning for every guess.
fn encode_msg<S: AsRef<str>>(
    message: &Msg,
    args: &[S],
    topic: Topic,
    global: &mut Global,
) -> Result<Vec<u8>, UsageError> {
    if global.strict {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        return datastream::encode_args(&message.types, &args)
            .map_err(|e| UsageError::new(Some(topic), format!("{message}: {e}")));
    }
    let mut out = Vec::new();
    for (i, &ty) in message.types.iter().enumerate() {
        let value = match args.get(i).map(AsRef::as_ref) {
            Some(text) => match datastream::parse_arg_lenient(ty, text) {
                Ok((value, None)) => value,
                Ok((value, Some(problem))) => {
                    let e = datastream::ArgError::Invalid {
                        index: Some(i + 1),
                        ty,
                        text: text.to_owned(),
                        problem,
                    };
                    global
                        .warnings
                        .push(format!("qcop: warning: {message}: {e}; sending {value}"));
                    value
                }
                Err(e) => {
                    let e = match e {
                        datastream::ArgError::Invalid {
                            ty, text, problem, ..
                        } => datastream::ArgError::Invalid {
                            index: Some(i + 1),
                            ty,
                            text,
                            problem,
                        },
                        e => e,
                    };
                    return Err(UsageError::new(Some(topic), format!("{message}: {e}")));
                }
            },
            None if ty == datastream::ArgType::Bool => {
                return Err(UsageError::new(
                    Some(topic),
                    format!(
                        "{message}: argument {} (bool) is missing (use true or false)",
                        i + 1
                    ),
                ))
            }
            None => {
                let value = datastream::Value::null_of(ty);
                global.warnings.push(format!(
                    "qcop: warning: {message}: argument {} ({ty}) is missing; sending {value}",
                    i + 1
                ));
                value
            }
        };
        value.encode(&mut out);
    }
    Ok(out)
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

    fn m(text: &str) -> Msg {
        msg(text, Topic::Send, &Global::default()).unwrap()
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
                    message: m("setVolume(int)"),
                    payload: (-5i32).to_be_bytes().to_vec(),
                },
                timeout: Timeout::Default,
                hex: true,
                service: false,
                format: Format::Classic,
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
        assert_eq!(message.text, "note(QString,uint)");
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
                (Timeout::Default, true),
                (ms(30000), true),
                // '--' resets every modifier.
                (Timeout::Default, true),
                (Timeout::Never, false)
            ]
        );
        assert_eq!(
            s[1].command,
            Command::Wait {
                channel: "QPE/pppd".into(),
                message: m("dialResult(bool)")
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
                idle: Some(Duration::from_millis(50)),
                count: Some(3),
                credentials: false,
                shm: false,
            }
        );
        assert_eq!(s[0].timeout, Timeout::Default);
        // The modifier is a limit on the whole run.
        assert_eq!(steps(&["timeout", "7", "watch", "x"])[0].timeout, ms(7));
        let s = steps(&["watch", "--credentials", "x"]);
        assert_eq!(
            s[0].command,
            Command::Watch {
                channels: vec!["x".into()],
                idle: None,
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
        assert_eq!(usage(&["monitor", "a[b*"]).topic, Some(Topic::Monitor));
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
                idle: None,
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
                message: m("ping(QString)"),
                payload,
            }
        );
        assert_eq!(
            s[1],
            Step {
                command: Command::Wait {
                    channel: "QPE/Reply".into(),
                    message: m("pong()")
                },
                timeout: ms(2500),
                hex: true,
                service: false,
                format: Format::Classic,
            }
        );
        let s = steps(&["timeout", "10", "a", "b()", "-w", "c", "d()"]);
        assert_eq!(s[1].timeout, ms(10));
        assert_eq!(steps(&["a", "b()"]).len(), 1);
    }

    #[test]
    fn old_form_takes_one_word_per_type_as_the_original() {
        // A missing argument is null, with a warning.
        let inv = parse(&words(&["QPE/A", "f(QString,int)"])).unwrap();
        assert_eq!(inv.global.warnings.len(), 2, "{:?}", inv.global.warnings);
        let Action::Run(s) = inv.action else { panic!() };
        let Command::Send { payload, .. } = &s[0].command else {
            panic!("{s:?}");
        };
        assert_eq!(payload, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        // '-w' right after the arguments waits; anywhere else it is an argument or ignored.
        assert_eq!(steps(&["QPE/A", "f(int)", "1", "-w", "b", "r()"]).len(), 2);
        assert_eq!(
            steps(&["QPE/A", "f(int)", "1", "2", "-w", "b", "r()"]).len(),
            1
        );
        assert_eq!(steps(&["QPE/A", "f(QString)", "-w", "b", "r()"]).len(), 1);
        // The old form takes the rest of the line, '--' included.
        let s = steps(&["QPE/A", "f(QString)", "--", "send", "x", "y()"]);
        assert_eq!(s.len(), 1);
        // A negative -w timeout waits forever, one that is not a number is 0.
        let s = steps(&["QPE/A", "f()", "-w", "b", "r()", "-1"]);
        assert_eq!(s[1].timeout, Timeout::Never);
        let s = steps(&["QPE/A", "f()", "-w", "b", "r()", "x"]);
        assert_eq!(s[1].timeout, ms(0));
    }

    #[test]
    fn separators_reset_modifiers_and_may_be_empty() {
        let s = steps(&[
            "service", "nohex", "timeout", "5", "wait", "Svc", "f()", "--", "--", "wait", "a",
            "g()", "--",
        ]);
        let summary: Vec<(Timeout, bool, bool)> =
            s.iter().map(|s| (s.timeout, s.hex, s.service)).collect();
        assert_eq!(
            summary,
            vec![(ms(5), false, true), (Timeout::Default, true, false)]
        );
        assert!(steps(&["timeout", "5"]).is_empty());
        // 'timeout 5s' reads as 0, as toInt() read it; a word that is no number at all is
        // a usage error.
        assert_eq!(
            steps(&["timeout", "5s", "wait", "a", "b()"])[0].timeout,
            ms(0)
        );
        assert_eq!(usage(&["timeout", "x", "wait", "a", "b()"]).status(), 1);
    }

    #[test]
    fn service_scopes_the_message_and_enum_declares_int_types() {
        let s = steps(&["service", "send", "Time", "editTime()"]);
        let Command::Send {
            channel, message, ..
        } = &s[0].command
        else {
            panic!("{s:?}");
        };
        assert_eq!(
            (channel.as_str(), message.text.as_str()),
            ("Time", "Time::editTime()")
        );
        assert!(s[0].service);
        let s = steps(&["service", "query", "Time"]);
        assert_eq!(
            s[0].command,
            Command::Query {
                channel: "Time".into(),
                prefix: "Time::".into()
            }
        );
        let s = steps(&["enum", "Mode", "--", "send", "a", "set(Mode,int)", "2", "3"]);
        let Command::Send {
            message, payload, ..
        } = &s[0].command
        else {
            panic!("{s:?}");
        };
        assert_eq!(message.text, "set(Mode,int)");
        assert_eq!(payload, &[0, 0, 0, 2, 0, 0, 0, 3]);
        assert_eq!(usage(&["enum", "A", "B"]).topic, Some(Topic::Enum));
    }

    #[test]
    fn usage_error_statuses() {
        assert_eq!(usage(&["send", "a"]).status(), 1);
        assert_eq!(usage(&["--strict", "send", "a"]).status(), 2);
        assert_eq!(usage(&["registered"]).status(), 2);
        assert_eq!(usage(&["--format", "json", "watch", "a"]).status(), 1);
        let (g, _) = run(&["--strict", "--format=rich", "-l", "nobody", "list"]);
        assert!(g.strict);
        assert_eq!(g.format, Some(Format::Rich));
        assert_eq!(g.user.as_deref(), Some("nobody"));
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
                &["send", "a", "f(QPoint)", "x"],
                "unsupported argument type \"QPoint\"",
            ),
            (
                &["send", "a", "f", "x"],
                "needs an argument list in parentheses",
            ),
            (&["send", "QPE/*", "f()"], "\"QPE/*\" is a pattern"),
            (&["send", "", "f()"], "invalid channel name \"\""),
            (&["watch"], "watch needs at least one CHANNEL"),
            (&["watch", "cam[0-*"], "invalid pattern"),
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
            (&["a", "b()", "-w", "c"], "-w needs CHANNEL"),
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
        assert_eq!(
            usage(&["--strict", "a", "b(int)"]).topic,
            Some(Topic::OldForm)
        );
        assert_eq!(
            usage(&["--strict", "send", "a", "b()", "--"]).topic,
            Some(Topic::Chain)
        );
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
