//! Help texts: `qcop --help` and `qcop help TOPIC` / `qcop COMMAND --help`.

use crate::args::Topic;

/// The text for `qcop --help` (`None`) or one topic.
pub fn text(topic: Option<Topic>) -> &'static str {
    match topic {
        None => GENERAL,
        Some(Topic::Send) => SEND,
        Some(Topic::Watch) => WATCH,
        Some(Topic::Wait) => WAIT,
        Some(Topic::Registered) => REGISTERED,
        Some(Topic::Channels) => CHANNELS,
        Some(Topic::Stats) => STATS,
        Some(Topic::Call) => CALL,
        Some(Topic::Serve) => SERVE,
        Some(Topic::Shm) => SHM,
        Some(Topic::Monitor) => MONITOR,
        Some(Topic::Services) => SERVICES,
        Some(Topic::ShmSend) => SHM_SEND,
        Some(Topic::OldForm) => OLD_FORM,
        Some(Topic::Types) => TYPES,
        Some(Topic::Chain) => CHAIN,
    }
}

/// Shown with a usage error when no command was given.
pub const SHORT: &str = "\
Usage: qcop [OPTIONS] COMMAND ARGS... [-- COMMAND ARGS...]...
Commands: send, watch, wait, registered, channels, stats, call, serve, monitor, services,
          shm, shm-send, help
Run 'qcop --help' for the full description.
";

const GENERAL: &str = "\
qcop - send, watch and wait for QCOP messages (Qt Extended compatible)

Usage:
  qcop [OPTIONS] [MODIFIERS] COMMAND ARGS... [-- [MODIFIERS] COMMAND ARGS...]...
  qcop [OPTIONS] CHANNEL 'message(types)' [ARGS...] [-w CHANNEL 'message(types)' [TIMEOUT_MS]]

Commands:
  send CHANNEL 'msg(types)' [ARGS...]
                       Broadcast a message to every subscriber of CHANNEL
  watch [--count N] [--timeout MS] [--credentials] [--shm] CHANNEL...
                       Print one line per message on channels or patterns (QPE/*);
                       --shm maps a channel's shared-memory stream directly
  wait CHANNEL 'msg(types)' [--timeout MS]
                       Wait for one message, print its arguments (exit 1 on timeout)
  registered CHANNEL   Tell whether CHANNEL has subscribers (exit 1 if not)
  channels             List channels and patterns with their subscriber counts
  stats [--clients]    Show the daemon's counters (and its clients)
  call CHANNEL 'msg(types)' [ARGS...] [--timeout MS]
                       Send a request and print the reply (default timeout 5000 ms)
  serve CHANNEL 'msg(types)' 'reply(types)' [REPLY ARGS...] [--count N]
                       Answer calls of one message with a fixed reply
  shm list             List shared-memory segments and semaphores, with who has them
  shm rm [--semaphore] NAME
                       Remove a segment's (or semaphore's) name
  shm read|write|lock ...
                       Read or write a segment's bytes under its lock, or hold the lock
  monitor [--count N] [--timeout MS] [PATTERN...]
                       Print all traffic with its senders (if the policy allows)
  services             List the services qcopd starts on demand, with their state
  shm-send [--count N] [OPTIONS] CHANNEL 'msg(types)' [ARGS...]
                       Open a shared-memory stream on CHANNEL and publish messages on it
  help [COMMAND|TOPIC] Show help on a command, or on: types, chain, old

Options (before the command):
  -s, --socket PATH        Daemon socket (default: $QCOP_SOCKET, else /run/qcop/qcopd.sock
                           for root, $XDG_RUNTIME_DIR/qcop/qcopd.sock or
                           /tmp/qcop-$UID/qcopd.sock for other users)
      --connect-timeout MS Time allowed to connect and for each answer of the daemon
                           (default 5000)
  -h, --help               Show this help ('qcop COMMAND --help' for one command)
  -V, --version            Show the version

Message signatures and arguments:
  A message is named by its signature, 'name(type,...)', quoted for the shell. The
  signature is normalized as Qt does ('f(const QString &)' is sent as 'f(QString)') and
  each ARG is converted to its type and encoded as QDataStream (big-endian):
    int uint long ulong qlonglong qulonglong
                   decimal or 0x hex, optionally negative: 42, -7, 0x1f
                   (long and ulong travel as 64 bits)
    bool           true, false, 1 or 0
    double         1.5, -2e-3, inf, NaN
    QString        the text as given
    QByteArray     hex digits, optional 0x prefix: 0a0b or 0x0a0b
    QStringList    comma-separated elements: a,b,c (empty: no elements)
  Received arguments print the same way; strings are double-quoted and escaped, string
  lists as [\"a\", \"b\"]. A payload that does not decode (unknown types such as QVariant)
  prints as 0x followed by hex.

Modifiers (Qt Extended style, before a command; they stay in effect for the rest of the
chain):
  timeout MS     Time limit for wait and call, idle time limit for watch
  notimeout      No time limit (the default for wait and watch; call: the daemon's
                 maximum call time instead of 5000 ms)
  hex            Print payloads as hex instead of decoding them
  nohex          Decode payloads again

Chains: '--' separates commands that run in order on one connection; the chain stops at
the first failure. The channels of every wait in the chain are subscribed before the first
command runs, so a reply that comes right after a send is not missed.

Old form: a first word that is not a command is a channel: 'qcop CHANNEL msg() ARGS...'
sends; '-w CHANNEL msg() [TIMEOUT_MS]' then waits for a reply (see 'qcop help old').

Exit status:
  0  success
  1  failure: timeout, not registered, no responder, refused by the daemon (including
     'access denied' by its policy, with the rule that denied it), qcopd not running
  2  usage error (unknown command or option, bad signature or argument)

Examples:
  qcop send QPE/Audio 'setVolume(int)' 42
  qcop watch 'QPE/*'
  qcop watch --count 1 --timeout 2000 QPE/System
  qcop wait QPE/pppd 'dialResult(bool)' --timeout 30000
  qcop send QPE/pppd 'dial()' -- timeout 30000 wait QPE/pppd 'dialResult(bool)'
  qcop registered QPE/Application/clock && echo clock is running
  qcop call QPE/Calc 'add(int,int)' 2 3
  qcop QPE/System 'ping()' -w QPE/System 'pong()' 1000
  qcop stats --clients
  qcop monitor 'QPE/*'
  qcop services
  qcop shm-send --count 1000 sensors/imu 'sample(int)' %n
";

const SHM: &str = "\
qcop shm - shared-memory segments and system semaphores

Usage:
  qcop shm list
  qcop shm rm [--semaphore] NAME
  qcop shm read NAME OFFSET LEN
  qcop shm write [--create SIZE [--persistent] [--mode MODE]] NAME OFFSET HEX
  qcop shm lock [--hold MS] NAME

'list' prints every segment and semaphore you may read (root: all of them), then who has
them attached:
  KIND       segment or semaphore
  NAME       the name applications use (Qt's key)
  SIZE       bytes of a segment; VALUE/MAX of a semaphore
  MODE       permission bits, on the owner UID and the group GID
  STATE      persistent (outlives its attachers until removed), removed (nameless, gone
             with its last attacher), undo (units of openers that go away come back),
             locked by pid N, owner died N times (locks recovered from dead holders)
  ATTACHED   number of attachments; the second table lists each one: client id, pid, uid,
             rw or ro, and the client's name
'rm' removes a name (a segment's; with --semaphore, a semaphore's). Processes that have it
attached keep using it; new ones cannot attach; the memory goes with the last of them. Only
the owner or root may remove. Nothing lives in /dev/shm: a segment without attachers that
is not persistent is gone already, and everything goes when qcopd stops.

'read' attaches read-only, takes the lock, and prints LEN bytes at OFFSET as hex (0x...).
'write' attaches read-write, takes the lock and writes HEX (like 0a0b or 0x0a0b) at OFFSET;
with --create SIZE it creates the segment if it does not exist (mode 0600 unless --mode;
--persistent to keep it after the command exits, which it otherwise would not be).
'lock' takes the lock, prints 'locked NAME', and holds it for --hold MS, or until the
command is interrupted: the next locker is then told the holder died, as with any process.
All three warn on stderr when the previous lock holder died holding the lock.

Exit status: 0 done, 1 not found, not allowed, out of range, or qcopd not running.

Examples:
  qcop shm list
  qcop shm rm status-table
  qcop shm rm --semaphore encoder-slots
  qcop shm write --create 4096 --persistent --mode 0644 board/status 0 01
  qcop shm read board/status 0 16
";

const SEND: &str = "\
qcop send - broadcast a message

Usage: qcop send CHANNEL 'message(types)' [ARGS...]

Sends the message to every subscriber of CHANNEL (a plain name, not a pattern) and waits
until the daemon has routed it, so a refusal (message too large, name too long) is
reported. A channel without subscribers drops the message, as QCOP always did: check with
'qcop registered' first if that matters; a channel of a service qcopd starts on demand
queues it instead ('qcop help services'). Each ARG must fit its type ('qcop help types').
If the daemon's access policy does not let this user send there, qcop prints
'qcop: qcopd: access denied: send to \"CHANNEL\" denied by rule N (...)' and exits 1.

Exit status: 0 sent, 1 refused (denied, queue full, service failed) or qcopd not running,
2 usage error.

Examples:
  qcop send QPE/Audio 'setVolume(int)' 42
  qcop send QPE/System 'notify(QString,bool)' 'Battery low' true
  qcop send sensors/cam0 'frame(QByteArray)' 0xdeadbeef
  qcop send QPE/Launcher 'open(QStringList)' clock,alarm
";

const WATCH: &str = "\
qcop watch - print messages as they arrive

Usage: qcop watch [--count N] [--timeout MS] [--credentials] [--shm] CHANNEL...

Subscribes to each CHANNEL (wildcard patterns such as 'QPE/*', 'cam?' or 'cam[0-3]'
allowed) and prints one line per message, flushed at once so it can be piped:
  CHANNEL MESSAGE ARG1 ARG2 ...
CHANNEL is the channel the message was sent to, also when it matched a pattern. The
arguments are decoded with the types of the message signature; when a type is unknown or
the payload does not match, the payload is printed as 0x hex. Calls (requests waiting for
a reply) end with ' [call]'. Messages the daemon dropped because this reader was too slow
are reported on stderr as '# lost N messages'. With --credentials each line ends with the
sender as the daemon saw it: ' [from pid=P uid=U gid=G]' (it cannot be forged by the
sender). A subscription the daemon's access policy refuses, or revokes after a reload, is
reported on stderr; watch fails once none is left.

With --shm, CHANNEL (one plain channel) carries a shared-memory stream (see 'qcop help
shm-send'): the ring is mapped and read directly instead of subscribing, waiting for the
stream to be opened if it is not yet. Messages a lossy publisher overwrote before they
were read are reported as '# lost N messages'. Without --shm, watching a stream's channel
works too: qcopd forwards the stream's messages to ordinary subscribers.

Options:
  --count N        Exit after N messages
  --timeout MS     Exit when no message came for MS milliseconds (default: never)
  --credentials    Show who sent each message
  --shm            Map CHANNEL's shared-memory stream; exit when the stream ends

Exit status: 0 when --count or --timeout ends it, when stdout is closed, or (--shm) when
the stream ends; 1 if the connection to qcopd fails or a subscription is denied.

Examples:
  qcop watch 'QPE/*'
  qcop watch QPE/Audio QPE/System | grep setVolume
  qcop hex watch sensors/imu
  qcop watch --count 1 --timeout 5000 QPE/System
  qcop watch --credentials QPE/Power
  qcop watch --shm sensors/imu
";

const SHM_SEND: &str = "\
qcop shm-send - publish on a shared-memory stream

Usage: qcop shm-send [OPTIONS] CHANNEL 'message(types)' [ARGS...]

Asks qcopd for a shared-memory stream on CHANNEL (a ring of slots in memory qcopd
creates and hands over; no file in /dev/shm), then writes the message --count times into
it. Subscribers that map the stream ('qcop watch --shm', the library's Subscriber) read it
without going through qcopd; ordinary subscribers of CHANNEL ('qcop watch') receive every
message from qcopd. An ARG written %n is replaced by the message's number, counting from
0, so a reader can check order and completeness. The stream ends when the command exits;
subscribers then read what is left and stop.

Options:
  --count N          Messages to publish (default 1)
  --interval MS      Pause between messages (default 0)
  --slot-size BYTES  Largest message (default 256, or the first message if larger; at
                     most qcopd's max_payload)
  --slots N          Messages the ring holds, a power of two (default 256)
  --lossy            Overwrite the oldest message when a subscriber is a whole ring behind
                     (default: lossless, wait for the slowest subscriber)
  --subscribers N    Wait until N subscribers map the stream before publishing
  --timeout MS       Limit for waiting for subscribers and, lossless, for a slot
                     (default: no limit)

Exit status: 0 published; 1 refused by qcopd (the channel has a stream already, limits),
a timeout, or qcopd not running; 2 usage error.

Examples:
  qcop shm-send sensors/imu 'sample(int,double)' 7 0.5
  qcop shm-send --count 1000 --subscribers 1 sensors/imu 'sample(int)' %n &
  qcop watch --shm --count 1000 sensors/imu
";

const WAIT: &str = "\
qcop wait - wait for one message and print its arguments

Usage: qcop wait CHANNEL 'message(types)' [--timeout MS]

Subscribes to CHANNEL (or a pattern) and waits for a message with that signature
(compared after normalization). Prints its decoded arguments on one line, separated by
spaces (an empty line for a message without arguments). Other messages are ignored.
Without --timeout (or a 'timeout MS' modifier) it waits forever.

Exit status: 0 received; 1 on timeout ('qcop: timed out waiting for CHANNEL MESSAGE' on
stderr) or if qcopd is not running; 2 usage error.

Examples:
  qcop wait QPE/pppd 'dialResult(bool)' --timeout 30000
  qcop timeout 30000 wait QPE/pppd 'dialResult(bool)'
  qcop send QPE/pppd 'dial()' -- timeout 30000 wait QPE/pppd 'dialResult(bool)'
  level=$(qcop wait QPE/Power 'batteryLevel(int)')
";

const REGISTERED: &str = "\
qcop registered - tell whether a channel has subscribers

Usage: qcop registered CHANNEL

Prints 'CHANNEL is registered (...)' and exits 0, or 'CHANNEL is not registered' and
exits 1. Only exact subscriptions count, not patterns (as Qt's
QCopChannel::isRegistered). The count says where the subscribers are: 'local' ones are
connected to this daemon, 'remote' ones to daemons on other boards that a message sent
here would reach over links (see qcopd's [links] configuration), e.g.
  QPE/Audio is registered (1 local and 2 remote subscribers)

Examples:
  qcop registered QPE/Application/clock
  qcop registered QPE/Audio >/dev/null || start-audio-service
";

const CHANNELS: &str = "\
qcop channels - list channels and patterns

Usage: qcop channels

Prints a table of every channel and pattern the daemon knows, sorted by name, with
columns NAME, LOCAL (subscribers connected to this daemon), REMOTE (subscribers on other
boards reached over links) and KIND (channel or pattern).

Example:
  qcop channels
";

const STATS: &str = "\
qcop stats - show the daemon's counters

Usage: qcop stats [--clients]

Prints the daemon's counters and gauges, one 'name value' per line: connections,
messages, drops, calls, and also access-policy denials (policy_denied_*), monitors, and
services started on demand (activation_*, spool_*). With --clients, also
a table of the connected clients: ID, PID, UID, GID, SUBSCRIPTIONS, QUEUED_BYTES (not yet
written to the client), DELIVERED, DROPPED and NAME (the client's program name).

With links to other boards configured, the counters include links, links_up and the
link_* totals, and a table follows with one row per link: PEER (address), NAME (the peer
daemon's name), STATE (up, down, connecting, handshake), RTT_US (last keepalive round
trip), MSGS_OUT/BYTES_OUT and MSGS_IN/BYTES_IN (each way), BUFFERED (messages waiting),
DROPPED (messages dropped, the sum of the reasons that follow), then one column per reason:
FULL (buffer full while down or slow), UNCONFIRMED (in flight when the peer restarted),
UNWANTED (no subscriber any more when the link came back), NOT_IMPORTED, INVALID,
TOO_LARGE and LIMIT (calls in flight), DUPLICATES (copies that came by a second path,
dropped) and RECONNECTS.

Examples:
  qcop stats
  qcop stats --clients
  qcop stats | grep dropped
  qcop stats | sed -n '/^PEER/,$p'       # the links table only
";

const CALL: &str = "\
qcop call - send a request and print the reply

Usage: qcop call CHANNEL 'message(types)' [ARGS...] [--timeout MS]

Sends the message as a call to the subscribers of CHANNEL and waits for the first reply
(default 5000 ms; 'notimeout' waits as long as the daemon allows). Prints the reply as
  MESSAGE ARG1 ARG2 ...
decoded like 'qcop watch'.

Exit status: 0 answered; 1 when nobody is subscribed, no reply came in time, the
responder answered with an error or left, or qcopd is not running; 2 usage error.

Examples:
  qcop call QPE/Calc 'add(int,int)' 2 3
  qcop call --timeout 500 QPE/Power 'batteryLevel()'
";

const SERVE: &str = "\
qcop serve - answer calls with a fixed reply

Usage: qcop serve CHANNEL 'message(types)' 'reply(types)' [REPLY ARGS...] [--count N]

Subscribes to CHANNEL and answers every call of that message with the reply and its
arguments (encoded like 'qcop send'). Each answered call is printed like 'qcop watch'
prints it. Other messages and calls are ignored. Meant for scripts and tests.

Options:
  --count N      Exit after answering N calls (default: serve forever)

Examples:
  qcop serve QPE/Calc 'add(int,int)' 'result(int)' 5
  qcop serve --count 1 QPE/Power 'batteryLevel()' 'level(int)' 80 &
";

const MONITOR: &str = "\
qcop monitor - print all traffic

Usage: qcop monitor [--count N] [--timeout MS] [PATTERN...]

Shows every message sent on the bus (or on the channels matching the PATTERNs), every
call and every reply, with who sent it, one line each:
  CHANNEL MESSAGE ARGS... [from pid=P uid=U gid=G]
  CHANNEL MESSAGE ARGS... [call T] [from ...]
  CHANNEL REPLY ARGS... [reply T] [from ...]        (T links a reply to its call)
  CHANNEL \"error text\" [error reply T] [from ...]
A monitor changes nothing for the others: it is not a subscriber (not counted by
'registered' or 'channels'), never answers calls, starts no service, and when it reads too
slowly only its own oldest lines are dropped ('# lost N events' on stderr). Messages sent
while nobody subscribed are shown too. Only root and the daemon's user may monitor, unless
the daemon's policy has a rule allowing 'monitor'; otherwise qcop prints 'access denied'
and exits 1.

Options:
  --count N      Exit after N lines
  --timeout MS   Exit when nothing happened for MS milliseconds (default: never)

Exit status: 0 when --count or --timeout ends it, or when stdout is closed; 1 if denied
or the connection to qcopd fails.

Examples:
  qcop monitor
  qcop monitor 'QPE/*' sensors/imu
  qcop monitor --count 10 | grep setVolume
";

const SERVICES: &str = "\
qcop services - list the services qcopd starts on demand

Usage: qcop services

qcopd can start a program when a message arrives for its channel and nobody is subscribed
to that channel ([[service]] entries in its configuration, Qt Extended's
QPE/Application/<app>). The message waits in a queue until the program subscribes to the
channel. Prints a table with NAME, CHANNEL (channel or pattern), STATE, QUEUED and BYTES
(messages waiting for it to subscribe), STARTS and FAILURES. STATE is one of
  idle                  not started (or exited normally)
  starting (pid P)      started, messages queued until it subscribes
  running (pid P)       subscribed
  failed (WHY)          the last start failed: it could not run, exited or did not
                        subscribe in time (the queued messages were dropped)

Example:
  qcop services
";

const OLD_FORM: &str = "\
qcop CHANNEL ... - the Qt Extended form

Usage: qcop CHANNEL 'message(types)' [ARGS...] [-w CHANNEL 'message(types)' [TIMEOUT_MS]]

When the first word (after options and modifiers) is not a command name, it is the channel
of a send, as in Qtopia's qcop. With -w, qcop then waits for a message on the second
channel and prints its arguments like 'qcop wait'; the -w channel is subscribed before
sending, so an immediate reply is not missed. Without TIMEOUT_MS it waits forever (or for
a 'timeout MS' modifier).

Examples:
  qcop QPE/System 'setBacklight(int)' 255
  qcop QPE/System 'ping()' -w QPE/System 'pong()' 1000
";

const TYPES: &str = "\
qcop argument types

Signatures name their argument types: 'setVolume(int)', 'notify(QString,bool)'. They are
normalized as Qt normalizes them: 'unsigned int' is uint, 'const QString &' is QString.
Qt's typedef names keep their spelling, as in Qt: 'f(qint64)' is sent as 'f(qint64)' and
encoded like qlonglong (quint64 like qulonglong, qint32 like int, quint32 like uint).
Values are written as:

  int, uint, long, ulong, qlonglong, qulonglong
                 decimal or 0x hex, optionally negative: 42, -7, 0x1f; out-of-range
                 values are refused, never wrapped (long/ulong are 64-bit on the wire)
  bool           true, false, 1 or 0 (any case)
  double         1.5, -2e-3, inf, NaN
  QString        the text as given (quote it for the shell)
  QByteArray     hex digits with an optional 0x prefix: 0a0b, 0x0a0b ('0x' is empty)
  QStringList    comma-separated elements: a,b,c (an empty word is an empty list)

Received values print as: numbers plainly, doubles with a decimal point (1.0), strings
double-quoted with \\ escapes, byte arrays as 0x hex, string lists as [\"a\", \"b\"], null
strings as null. Messages with other types (QVariant, QDateTime, ...) can be watched but
print as 0x hex; they cannot be sent from the command line.

Examples:
  qcop send t 'all(int,bool,double,QString,QByteArray,QStringList)' -1 true 0.5 hi 0xff a,b
";

const CHAIN: &str = "\
qcop modifiers and chains

Usage: qcop [MODIFIERS] COMMAND ARGS... -- [MODIFIERS] COMMAND ARGS... -- ...

'--' separates commands that run in order on one connection. The chain stops at the first
failing command and qcop exits with its status (0 if all succeed). The channels of every
wait (and -w) in the chain are subscribed before the first command runs, so a reply sent
right after a 'send' is not missed; a message that an earlier command received but a
later wait asks for is kept for it.

Modifiers come before a command and stay in effect for the rest of the chain:
  timeout MS     Time limit for wait and call, idle time limit for watch
  notimeout      No time limit (for call: the daemon's maximum call time)
Without either, wait and watch have no time limit and call waits 5000 ms.
  hex            Print payloads as 0x hex instead of decoding them
  nohex          Decode payloads again
A command's own --timeout option overrides the modifier for that command.

Examples:
  qcop send QPE/pppd 'dial()' -- timeout 30000 wait QPE/pppd 'dialResult(bool)'
  qcop registered QPE/Audio -- send QPE/Audio 'setVolume(int)' 42
  qcop hex watch --count 1 sensors/imu
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_help_has_usage_and_examples() {
        for topic in [
            Topic::Send,
            Topic::Watch,
            Topic::Wait,
            Topic::Registered,
            Topic::Channels,
            Topic::Stats,
            Topic::Call,
            Topic::Serve,
            Topic::Monitor,
            Topic::Services,
            Topic::ShmSend,
            Topic::OldForm,
        ] {
            let t = text(Some(topic));
            assert!(t.contains("Usage: qcop"), "{topic:?}");
            assert!(t.contains("Example"), "{topic:?}");
        }
    }

    #[test]
    fn general_help_mentions_every_type() {
        for ty in qcop::datastream::ArgType::ALL {
            assert!(GENERAL.contains(ty.name()), "{ty}");
            assert!(TYPES.contains(ty.name()), "{ty}");
        }
    }
}
