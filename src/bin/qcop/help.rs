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
        Some(Topic::Query) => QUERY,
        Some(Topic::List) => LIST,
        Some(Topic::Enum) => ENUM,
        Some(Topic::OldForm) => OLD_FORM,
        Some(Topic::Types) => TYPES,
        Some(Topic::Chain) => CHAIN,
    }
}

/// Shown with a usage error when no command was given.
pub const SHORT: &str = "\
Usage: qcop [OPTIONS] COMMAND ARGS... [-- COMMAND ARGS...]...
Commands: send, watch, wait, query, list, enum, registered, channels, stats, call, serve,
          monitor, services, shm, shm-send, help
Run 'qcop --help' for the full description.
";

const GENERAL: &str = "\
qcop - send, watch and wait for QCOP messages (Qt Extended compatible)

Usage:
  qcop [OPTIONS] [MODIFIERS] COMMAND ARGS... [-- [MODIFIERS] COMMAND ARGS...]...
  qcop [OPTIONS] CHANNEL 'message(types)' [ARGS...] [-w CHANNEL 'message(types)' [TIMEOUT_MS]]

The commands, modifiers and old form of the Qt Extended / Qtopia qcop tool print and exit
as it did; the options --strict and --format rich give qcop's stricter checks and richer
output, which are the default for the commands only qcop has.

Commands:
  send CHANNEL 'msg(types)' [ARGS...]
                       Broadcast a message to every subscriber of CHANNEL
  watch [--count N] [--timeout MS] [--credentials] [--shm] CHANNEL...
                       Print one line per message on channels or patterns (QPE/*);
                       --shm maps a channel's shared-memory stream directly
  wait CHANNEL 'msg(types)' [--timeout MS]
                       Wait for one message, print its arguments (exit 1 on timeout)
  query CHANNEL        List the messages CHANNEL's adaptor supports
  list                 List the services and their channels
  enum NAME            Send and print type NAME as an int (then '--')
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
      --strict             Refuse argument values that do not fit their type and wrong
                           argument counts instead of guessing; usage errors exit 2
      --format classic|rich
                           How watch, wait and call print messages (default: classic,
                           the original tool's, for watch and wait; rich for the rest)
  -l, --user USER          Run as USER (supplementary groups, group, user), as root may
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
    QDateTime      2024-05-01T12:30:00 (Z: UTC)
    QUuid          {67c8770b-44f1-410a-ab9a-f9b5446f13ee}
    QUniqueId      UUID:INDEX
    QContentIdList DB:ID,DB:ID
    QVariant       the text, as a variant holding a QString
  A value that does not fit is sent as 0 or null with a warning, as the original did (a
  usage error with --strict). See 'qcop help types', 'qcop help watch', 'qcop help wait'
  for how received values print.

Modifiers (Qt Extended style, before a command; in effect until the next '--'):
  timeout MS     Time limit for wait, call and query; total run time of watch
  notimeout      No time limit (the default for wait and watch; call: the daemon's
                 maximum call time instead of 5000 ms)
  hex            Print byte arrays as hex (the default)
  nohex          Print byte arrays as Latin-1 text
  service        Channel names are service names

Chains: '--' separates commands that run in order on one connection; the chain stops at
the first failure. The channels of every wait in the chain are subscribed before the first
command runs, so a reply that comes right after a send is not missed.

Old form: a first word that is not a command is a channel: 'qcop CHANNEL msg() ARGS...'
sends; '-w CHANNEL msg() [TIMEOUT_MS]' then waits for a reply (see 'qcop help old').

Exit status:
  0  success
  1  failure: timeout, not registered, no responder, refused by the daemon (including
     'access denied' by its policy, with the rule that denied it), qcopd not running;
     a usage error of the original's commands and forms, as the original exited
  2  usage error with --strict, or of a command only qcop has (registered, channels,
     stats, call, serve, monitor, services, shm, shm-send)

Examples:
  qcop send QPE/Audio 'setVolume(int)' 42
  qcop watch 'QPE/*'
  qcop timeout 2000 watch QPE/System
  qcop --format rich watch --count 1 QPE/System
  qcop wait QPE/pppd 'dialResult(bool)' --timeout 30000
  qcop send QPE/pppd 'dial()' -- timeout 30000 wait QPE/pppd 'dialResult(bool)'
  qcop registered QPE/Application/clock && echo clock is running
  qcop call QPE/Calc 'add(int,int)' 2 3
  qcop QPE/System 'ping()' -w QPE/System 'pong()' 1000
  qcop query QPE/Application/clock
  qcop -l user QPE/System 'linkChanged(QString)' /home/user/Documents
  qcop stats --clients
  qcop monitor 'QPE/*'
  qcop services
  qcop shm-send --count 1000 sensors/imu 'sample(int)' %n
";

const QUERY: &str = "\
qcop query - list the messages a channel's adaptor supports

Usage:
  qcop [MODIFIERS] query CHANNEL
  qcop [MODIFIERS] service query SERVICE

Sends '__query_qcop_messages(QString,QString)' (a prefix and a private reply channel
QPE/Query/{UUID}) to CHANNEL, the introspection request of Qt Extended adaptors, and prints
each message named in a 'queryResponse(QString)' answer once, one a line, as the answers
come. It collects answers for 1000 ms ('timeout MS' changes that, 'notimeout' waits until
interrupted) and exits 0, also when nothing answered. With the 'service' modifier, SERVICE
is a service name (see 'qcop services'): its channel is asked, for the messages of that
service only (prefix 'SERVICE::').

Example:
  qcop query QPE/Application/clock
";

const LIST: &str = "\
qcop list - the services and their channels

Usage:
  qcop list

Prints one line per service qcopd knows (its configuration's [service.NAME] sections): the
name, a tab, and the channel its messages go to ('no mapping' if it has none), as the
original tool listed Qt Extended services. 'qcop services' shows more: state, queues,
starts and failures.
";

const ENUM: &str = "\
qcop enum - declare an enumerated type

Usage:
  qcop enum NAME [-- COMMAND ...]

Makes NAME an argument type for the rest of the command line: sent and printed as an int,
as Qt sends an enum. 'enum' is a command of its own, so '--' follows it.

Example:
  qcop enum QPhone::Mode -- send QPE/Phone 'setMode(QPhone::Mode)' 2
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

Usage: qcop [MODIFIERS] send CHANNEL 'message(types)' [ARGS...]

Sends the message to every subscriber of CHANNEL (a plain name, not a pattern) and waits
until the daemon has routed it, so a refusal (message too large, name too long) is
reported. A channel without subscribers drops the message, as QCOP always did: check with
'qcop registered' first if that matters; a channel of a service qcopd starts on demand
queues it instead ('qcop help services'). There must be one ARG per type. As in the
original tool, a value that does not fit its type is guessed (a number that does not parse
is 0, non-hex characters of a QByteArray are skipped; 'qcop help types') and a warning says
so on stderr; a bool must be true, false, 1 or 0. With --strict (before the command) such
values are usage errors. With the 'service' modifier CHANNEL is a service name and the
message gets its scope: 'service send Time editTime()' sends 'Time::editTime()' to the
Time service's channel ('::editTime()' sends no scope).
If the daemon's access policy does not let this user send there, qcop prints
'qcop: qcopd: access denied: send to \"CHANNEL\" denied by rule N (...)' and exits 1.

Exit status: 0 sent; 1 refused (denied, queue full, service failed), qcopd not running, or
a usage error (2 with --strict).

Examples:
  qcop send QPE/Audio 'setVolume(int)' 42
  qcop send QPE/System 'notify(QString,bool)' 'Battery low' true
  qcop send sensors/cam0 'frame(QByteArray)' 0xdeadbeef
  qcop send QPE/Launcher 'open(QStringList)' clock,alarm
  qcop service send Time 'editTime()'
";

const WATCH: &str = "\
qcop watch - print messages as they arrive

Usage: qcop [MODIFIERS] watch [--count N] [--timeout MS] [--credentials] [--shm] CHANNEL...

Subscribes to each CHANNEL (wildcard patterns such as 'QPE/*', 'cam?' or 'cam[0-3]'
allowed) and prints one line per message, flushed at once so it can be piped. As the
original tool prints it (--format classic, the default):
  CHANNEL: name( 42, \"text\", true, \"0A0B\", [\"a\",\"b\"] )
  CHANNEL: ping()
Strings, byte arrays (upper-case hex; Latin-1 text after 'nohex') and dates are quoted,
with '\"', '\\' and control characters written as \\ and two hex digits (\\22, \\0A);
a type qcop cannot decode shows as '? TYPE'. With --format rich (before the command):
  CHANNEL MESSAGE ARG1 ARG2 ...
values as in 'qcop help types', a payload that does not decode as 0x hex, and calls
(requests waiting for a reply) end with ' [call]'. CHANNEL is the channel the message was
sent to, also when it matched a pattern. Bytes after the last argument are ignored, as Qt
ignores them; bools of old senders (4 bytes) are read as such. Messages the daemon
dropped because this reader was too slow are reported on stderr as '# lost N messages'.
With --credentials each line ends with the sender as the daemon saw it:
' [from pid=P uid=U gid=G]' (it cannot be forged by the sender). A subscription the
daemon's access policy refuses, or revokes after a reload, is reported on stderr; watch
fails once none is left.

With --shm, CHANNEL (one plain channel) carries a shared-memory stream (see 'qcop help
shm-send'): the ring is mapped and read directly instead of subscribing, waiting for the
stream to be opened if it is not yet. Messages a lossy publisher overwrote before they
were read are reported as '# lost N messages'. Without --shm, watching a stream's channel
works too: qcopd forwards the stream's messages to ordinary subscribers.

Options:
  --count N        Exit after N messages
  --timeout MS     Exit when no message came for MS milliseconds (default: never); the
                   'timeout MS' modifier instead ends the watch MS ms after it started
  --credentials    Show who sent each message
  --shm            Map CHANNEL's shared-memory stream; exit when the stream ends

Exit status: 0 when --count or a time limit ends it, when stdout is closed, or (--shm)
when the stream ends; 1 if the connection to qcopd fails or a subscription is denied.

Examples:
  qcop watch 'QPE/*'
  qcop watch QPE/Audio QPE/System | grep setVolume
  qcop timeout 5000 watch QPE/System
  qcop --format rich watch sensors/imu
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

Usage: qcop [MODIFIERS] wait CHANNEL 'message(types)' [--timeout MS]

Subscribes to CHANNEL (or a pattern) and waits for a message with that signature
(compared after normalization). Prints its arguments as the original tool did, one a line
and unquoted: numbers, true/false, strings as they are, byte arrays as upper-case hex
(Latin-1 text after 'nohex'), string lists as a,b, dates as 2024-05-01T12:30:00. A message
without arguments prints nothing. With --format rich (before the command) the values are
printed on one line as 'qcop watch --format rich' shows them. Other messages are ignored.
Without --timeout (or a 'timeout MS' modifier) it waits forever.

Exit status: 0 received; 1 on timeout ('qcop: timed out waiting for CHANNEL MESSAGE' on
stderr), if qcopd is not running, or a usage error (2 with --strict).

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
dropped), RECONNECTS and REJECTED (connections closed on a frame that failed
authentication or was cut short: forged, altered, replayed or truncated on the way).

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
of a send, as in Qtopia's qcop; the rest of the line belongs to it ('--' included). As in
the original, the words after the signature are taken one per argument type: a missing
argument is sent as a null QString, 0, an empty list (a bool cannot be missing), extra
words are ignored, and -w counts only right after the arguments; each guess is reported
on stderr. With -w, qcop then waits for a message on the second channel and prints its
arguments like 'qcop wait'; the -w channel is subscribed before sending, so an immediate
reply is not missed. Without TIMEOUT_MS (or with a negative one) it waits forever (or for
a 'timeout MS' modifier); a TIMEOUT_MS that is not a number is 0. With --strict the
arguments must match the signature and -w may follow any of them.

Exit status: 0 sent (and the reply came); 1 timeout, failure or usage error (2 with
--strict).

Examples:
  qcop QPE/System 'setBacklight(int)' 255
  qcop QPE/System 'ping()' -w QPE/System 'pong()' 1000
  r=$(qcop QPE/Modem 'query()' -w QPE/Modem 'reply(int,QString)' 2000)
";

const TYPES: &str = "\
qcop argument types

Signatures name their argument types: 'setVolume(int)', 'notify(QString,bool)'. They are
normalized as Qt normalizes them: 'unsigned int' is uint, 'const QString &' is QString.
Qt's typedef names keep their spelling, as in Qt: 'f(qint64)' is sent as 'f(qint64)' and
encoded like qlonglong (quint64 like qulonglong, qint32 like int, quint32 like uint).
Message names may carry a scope: 'Time::editTime()'. Types declared with 'qcop enum NAME'
are sent and printed as int. Values are written as:

  int, uint, long, ulong, qlonglong, qulonglong
                 decimal or 0x hex, optionally negative: 42, -7, 0x1f; out of range is
                 refused with --strict, else sent as 0 (long/ulong are 64-bit on the wire)
  bool           true, false, 1 or 0 (any case); sent as Qt's 1-byte bool
  double         1.5, -2e-3, inf, NaN
  QString        the text as given (quote it for the shell)
  QByteArray     hex digits with an optional 0x prefix: 0a0b, 0x0a0b ('0x' is empty);
                 other characters are skipped (refused with --strict)
  QStringList    comma-separated elements: a,b,c (an empty word is an empty list)
  QDateTime      ISO: 2024-05-01T12:30:00, optionally .mmm and Z (UTC; else local time)
  QUuid          {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx} (braces optional)
  QUniqueId      UUID:INDEX
  QContentIdList DB:ID pairs separated by commas: 1:42,1:43
  QVariant       the text, sent as a variant holding a QString
Without --strict, a value that does not parse is sent as 0 or null, with a warning.

Received values print as the original tool printed them ('qcop help watch', 'qcop help
wait'), or with --format rich: numbers plainly, doubles with a decimal point (1.0), strings
double-quoted with \\ escapes (an unpaired surrogate as \\u{d800}), byte arrays as 0x hex,
string lists as [\"a\", \"b\"], null strings and dates as null, a QVariant as the value it
holds. A QVariant is decoded when it holds one of the core types of Qt 4's QDataStream
format: bool, int, uint, qlonglong, qulonglong, double, QChar, QString, QStringList,
QByteArray, QDate, QTime, QDateTime, or lists and maps of them; another one prints as 0x
hex (rich) or 'invalid' (classic). Types other than these print as 0x hex (rich) or
'? TYPE' (classic).

Examples:
  qcop send t 'all(int,bool,double,QString,QByteArray,QStringList)' -1 true 0.5 hi 0xff a,b
  qcop send t 'at(QDateTime)' 2024-05-01T12:30:00Z
  qcop send t 'id(QUuid)' 67c8770b-44f1-410a-ab9a-f9b5446f13ee
";

const CHAIN: &str = "\
qcop modifiers and chains

Usage: qcop [MODIFIERS] COMMAND ARGS... -- [MODIFIERS] COMMAND ARGS... -- ...

'--' separates commands that run in order on one connection. The chain stops at the first
failing command and qcop exits with its status (0 if all succeed). The channels of every
wait (and -w) in the chain are subscribed before the first command runs, so a reply sent
right after a 'send' is not missed; a message that an earlier command received but a
later wait asks for is kept for it. Empty commands ('-- --', a trailing '--', modifiers
alone) do nothing, as in the original (usage errors with --strict).

Modifiers come before a command and stay in effect until the next '--', which resets
them all:
  timeout MS     Time limit for wait, call and query, and the total run time of watch
  notimeout      No time limit (for call: the daemon's maximum call time)
Without either, wait and watch have no time limit, call waits 5000 ms, query 1000 ms.
  hex            Print byte arrays as hex (the default)
  nohex          Print byte arrays as Latin-1 text
  service        Channel names are service names (see 'qcop services', 'qcop list')
A command's own --timeout option overrides the modifier for that command.

Examples:
  qcop send QPE/pppd 'dial()' -- timeout 30000 wait QPE/pppd 'dialResult(bool)'
  qcop registered QPE/Audio -- send QPE/Audio 'setVolume(int)' 42
  qcop nohex watch sensors/names
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
