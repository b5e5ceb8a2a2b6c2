# shellcheck shell=dash
# End-to-end scenario run on each QEMU board (busybox sh), against the qcopd that
# /etc/init.d/qcopd started. Results go to the serial console as marker lines, which the
# host (qemu/run test-system) checks:
#   @@QCOP PLAN <step>...       the steps, in order
#   @@QCOP PASS <step>          a step passed
#   @@QCOP FAIL <step> <why>    a step failed (its log follows, indented)
#   @@QCOP NA <step> <why>      a step that does not apply to this board
#   @@QCOP INFO <step> <text>   a figure worth seeing in the host's summary
#   @@QCOP DONE pass=N fail=M   the end
# A missing marker means the board crashed or hung: the host fails the run.
#
# Adding a step: write step_<name> below and add <name> to STEPS. The host reads STEPS from
# this file, so a new step is required on every board at once.

STEPS="board daemon pubsub patterns registered call slow_consumer sigkill compat compat_seg shm_stream compat_shm tests daemon_stop"

# Tier 3 (qemu/run test-link): two boards, a (10.9.0.1) and b (10.9.0.2), on one virtual
# network, each qcopd linked to the other over TCP. Both boards run these steps in lockstep,
# each playing its side; QCOP_LINK (a or b) says which.
LINK_STEPS="board net link_up a_to_b b_to_a cut_heal link_stats finish"

# shellcheck disable=SC1091
. /etc/qcop/board
SOCKET=/run/qcop/qcopd.sock
T=/tmp/scenario
mkdir -p "$T"

# ----- helpers --------------------------------------------------------------------------

fail() { echo "FAILED: $*"; exit 1; }

# A line for the host's summary (the step's own output only shows when it fails).
info() { echo "@@QCOP INFO $CURRENT_STEP $*" >/dev/console; }

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
    [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"
}

# until_true SECONDS COMMAND...: polls COMMAND every 0.1 s.
until_true() {
    local tries=$(($1 * 10))
    shift
    until "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] || return 1
        usleep 100000
    done
}

# stop_job PID [SIGNAL]: ends a background job of this step and reaps it.
stop_job() {
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# A daemon counter from `qcop stats`.
stat_of() { qcop stats | awk -v k="$1" '$1 == k { print $2 }'; }

# One column (by header name) of the `qcop stats --clients` row of client PID.
client_col() {
    qcop stats --clients | awk -v pid="$1" -v col="$2" '
        $1 == "ID" && $2 == "PID" { for (i = 1; i <= NF; i++) idx[$i] = i; table = 1; next }
        table && $2 == pid { print $idx[col] }'
}

channel_listed() { qcop channels | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'; }

qcopd_pid() { cat /run/qcopd.pid; }

# The daemon's resident memory in KiB.
qcopd_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$(qcopd_pid)/status"; }

# Prints N lowercase hex digit pairs: a QByteArray argument of N bytes.
hex_bytes() { head -c "$1" /dev/zero | tr '\0' 'a' | sed 's/a/ab/g'; }

# ----- steps ----------------------------------------------------------------------------

step_board() {
    info "$QCOP_TRIPLE on Linux $(uname -r) $(uname -m), $(grep -c '^processor' /proc/cpuinfo) CPUs"
    expect_eq "$(uname -m)" "$QCOP_UNAME_M" "uname -m"
    expect_eq "$(grep -c '^processor' /proc/cpuinfo)" "$QCOP_SMP" "CPUs online"
    file_arch=$(od -An -tx1 -j18 -N1 /usr/bin/qcopd | tr -d ' ')
    echo "qcopd ELF e_machine 0x$file_arch; $(qcopd --version)"
    qcop --version
}

step_daemon() {
    [ -S "$SOCKET" ] || fail "no socket at $SOCKET"
    expect_eq "$(stat -c %a "$SOCKET")" 600 "socket mode"
    expect_eq "$(stat -c %a "$(dirname "$SOCKET")")" 700 "socket directory mode"
    kill -0 "$(qcopd_pid)" || fail "qcopd is not running"
    # The stats connection itself is the only client.
    expect_eq "$(stat_of clients)" 1 "clients"
    qcopd --check-config --config /etc/qcop/qcopd.toml | head -3
    # A second daemon on the same socket refuses to start, and the first keeps serving.
    if qcopd --config /etc/qcop/qcopd.toml >"$T/second.log" 2>&1; then
        fail "a second qcopd started on a live socket"
    fi
    cat "$T/second.log"
    qcop stats >/dev/null || fail "the first daemon stopped serving"
    info "qcopd at rest: $(awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s %s KiB ", $1, $2 }' "/proc/$(qcopd_pid)/status")"
}

step_pubsub() {
    qcop --format rich watch --count 3 --timeout 20000 'QPE/*' >"$T/watch.out" 2>"$T/watch.err" &
    w=$!
    until_true 10 channel_listed 'QPE/*' || fail "the watcher did not subscribe"
    qcop send QPE/Audio 'setVolume(int)' 42 || fail "send"
    qcop send QPE/System 'notify(QString,bool)' 'Battery low' true || fail "send"
    qcop send QPE/Launcher 'open(QStringList)' clock,alarm || fail "send"
    wait $w || fail "watch exited with $?: $(cat "$T/watch.err")"
    cat "$T/watch.out"
    expect_eq "$(cat "$T/watch.out")" 'QPE/Audio setVolume(int) 42
QPE/System notify(QString,bool) "Battery low" true
QPE/Launcher open(QStringList) ["clock", "alarm"]' "watched lines"
    # QCOP semantics: a channel without subscribers drops the message and counts it.
    before=$(stat_of dropped_no_subscriber)
    qcop send nobody/home 'hello()' || fail "send to an empty channel"
    expect_eq "$(stat_of dropped_no_subscriber)" $((before + 1)) "dropped_no_subscriber"
}

step_patterns() {
    # One connection with an exact subscription and two overlapping patterns: each message
    # comes once, and cam12 matches nothing. (Only `*` makes a pattern; `?` and `[...]` are
    # wildcards inside one.)
    qcop --format rich watch --count 3 --timeout 20000 cam1 '*cam?' '*cam[0-3]' >"$T/cams.out" 2>&1 &
    w=$!
    until_true 10 channel_listed '*cam[0-3]' || fail "the watcher did not subscribe"
    for m in "cam1 1" "cam7 2" "cam12 3" "cam2 4"; do
        # shellcheck disable=SC2086
        set -- $m
        qcop send "$1" 'frame(int)' "$2" || fail "send to $1"
    done
    wait $w || fail "watch exited with $?: $(cat "$T/cams.out")"
    cat "$T/cams.out"
    expect_eq "$(cat "$T/cams.out")" 'cam1 frame(int) 1
cam7 frame(int) 2
cam2 frame(int) 4' "pattern deliveries"
    qcop channels
}

step_registered() {
    if qcop registered QPE/Application/clock; then fail "registered before anyone subscribed"; fi
    qcop --format rich watch QPE/Application/clock >/dev/null 2>&1 &
    w=$!
    until_true 10 qcop registered QPE/Application/clock || fail "not registered after subscribing"
    qcop registered QPE/Application/clock
    # A pattern does not register a channel (as QCopChannel::isRegistered).
    qcop --format rich watch 'QPE/Application/*' >/dev/null 2>&1 &
    p=$!
    until_true 10 channel_listed 'QPE/Application/*' || fail "pattern watcher did not subscribe"
    stop_job $w
    until_true 10 sh -c '! qcop registered QPE/Application/clock' ||
        fail "still registered after its only subscriber left"
    stop_job $p
}

step_call() {
    # Request/response with the CLI on both ends.
    qcop serve --count 2 QPE/Calc 'add(int,int)' 'result(int)' 5 >"$T/serve.out" 2>&1 &
    s=$!
    until_true 10 qcop registered QPE/Calc || fail "server not registered"
    expect_eq "$(qcop call QPE/Calc 'add(int,int)' 2 3)" 'result(int) 5' "call reply"
    expect_eq "$(qcop call --timeout 10000 QPE/Calc 'add(int,int)' 1 4)" 'result(int) 5' "second call"
    wait $s || fail "serve exited with $?"
    cat "$T/serve.out"
    # Nobody to answer: a prompt failure, not a timeout.
    if qcop call --timeout 20000 QPE/Nobody 'ping()' 2>"$T/call.err"; then fail "call without responder succeeded"; fi
    cat "$T/call.err"
    # The Qt Extended pattern: send, then wait for the answer on the same connection.
    (qcop wait QPE/pppd 'dial()' --timeout 20000 >/dev/null && qcop send QPE/pppd 'dialResult(bool)' true) &
    r=$!
    until_true 10 qcop registered QPE/pppd || fail "responder not registered"
    expect_eq "$(qcop send QPE/pppd 'dial()' -- timeout 20000 wait QPE/pppd 'dialResult(bool)')" true "chained wait"
    wait $r || fail "the responder failed"
    # The old form.
    (qcop wait QPE/System 'ping()' --timeout 20000 >/dev/null && qcop send QPE/System 'pong(int)' 7) &
    r=$!
    until_true 10 qcop registered QPE/System || fail "responder not registered"
    expect_eq "$(qcop QPE/System 'ping()' -w QPE/System 'pong(int)' 20000)" 7 "old form -w"
    wait $r || fail "the responder failed"
}

step_slow_consumer() {
    # A subscriber that stops reading while 24 messages of 60000 bytes arrive: far more than
    # its queue (max_queue_bytes) and the socket buffers hold. The daemon drops its oldest
    # messages, stays small, and every message is either delivered or counted as dropped.
    n=24
    qcop --format rich watch flood/slow >"$T/slow.out" 2>"$T/slow.err" &
    w=$!
    until_true 10 qcop registered flood/slow || fail "watcher not registered"
    kill -STOP $w
    blob=$(hex_bytes 60000)
    rss0=$(qcopd_rss_kib)
    i=0
    while [ $i -lt $n ]; do
        qcop send flood/slow 'blob(int,QByteArray)' $i "$blob" || fail "send $i"
        i=$((i + 1))
    done
    rss1=$(qcopd_rss_kib)
    queued=$(client_col $w QUEUED_BYTES)
    dropped=$(client_col $w DROPPED)
    info "qcopd RSS ${rss0} -> ${rss1} KiB under the flood; queued for the stopped reader: $queued bytes; dropped $dropped of $n"
    qcop stats --clients
    [ "$dropped" -gt 0 ] || fail "nothing was dropped for the stopped reader"
    limit=$(qcopd --check-config --config /etc/qcop/qcopd.toml | sed -n 's/^ *max_queue_bytes: \([0-9]*\).*/\1/p')
    [ -n "$limit" ] || fail "max_queue_bytes not in qcopd --check-config"
    [ "$queued" -le "$limit" ] || fail "queued $queued bytes > max_queue_bytes $limit"
    [ $((rss1 - rss0)) -lt 4096 ] || fail "qcopd grew by $((rss1 - rss0)) KiB"
    kill -CONT $w
    qcop send flood/slow 'end()' || fail "send end"
    until_true 20 grep -q '^flood/slow end()' "$T/slow.out" || fail "the reader never got end()"
    delivered=$(client_col $w DELIVERED)
    dropped=$(client_col $w DROPPED)
    stop_job $w
    got=$(grep -c '^flood/slow blob' "$T/slow.out")
    lost=$(sed -n 's/^# lost \([0-9]*\) messages*$/\1/p' "$T/slow.err" | awk '{ s += $1 } END { print s + 0 }')
    echo "reader: $got blobs, told of $lost lost; daemon: delivered $delivered, dropped $dropped"
    cat "$T/slow.err"
    expect_eq $((got + lost)) $n "blobs received + reported lost"
    expect_eq "$lost" "$dropped" "lost reported to the reader vs dropped by the daemon"
    expect_eq $((delivered + dropped)) $((n + 1)) "delivered + dropped"
    # In order, with one gap: what was already in the socket when the reader stopped, then
    # the newest messages (drop-oldest), the last one included.
    numbers=$(sed -n 's/^flood\/slow blob(int,QByteArray) \([0-9]*\) .*/\1/p' "$T/slow.out" | tr '\n' ' ')
    echo "received: $numbers"
    gaps=$(echo "$numbers" | awk -v n=$n '{ want = 0; gaps = 0
        for (i = 1; i <= NF; i++) { if ($i != want) gaps++; want = $i + 1 }
        if (want != n) gaps = -1; print gaps }')
    expect_eq "$gaps" 1 "gaps in the received sequence (-1: the newest message is missing)"
}

step_sigkill() {
    clients0=$(stat_of clients)
    # A subscriber killed outright: its channel goes, its connection is closed.
    qcop --format rich watch kill/me >/dev/null 2>&1 &
    w=$!
    until_true 10 qcop registered kill/me || fail "watcher not registered"
    expect_eq "$(stat_of clients)" $((clients0 + 1)) "clients with the watcher"
    stop_job $w KILL
    until_true 10 sh -c '! qcop registered kill/me' || fail "kill/me still registered"
    until_true 10 sh -c "[ \$(qcop stats | awk '\$1 == \"clients\" { print \$2 }') = $clients0 ]" ||
        fail "the killed client's connection was not closed"
    # A stopped reader with a backlog, killed: its queue is freed.
    qcop --format rich watch kill/backlog >/dev/null 2>&1 &
    w=$!
    until_true 10 qcop registered kill/backlog || fail "watcher not registered"
    kill -STOP $w
    blob=$(hex_bytes 30000)
    for i in 1 2 3 4 5 6 7 8 9 10 11 12; do qcop send kill/backlog 'blob(QByteArray)' "$blob"; done
    [ "$(client_col $w QUEUED_BYTES)" -gt 0 ] || fail "nothing queued for the stopped reader"
    stop_job $w KILL
    until_true 10 sh -c "[ \$(qcop stats | awk '\$1 == \"bytes_queued\" { print \$2 }') = 0 ]" ||
        fail "bytes_queued not back to 0 after the kill"
    # A responder killed while a call waits for it: the caller is told, long before its
    # 30 s timeout.
    qcop --format rich watch QPE/Slow >/dev/null 2>&1 &
    w=$!
    until_true 10 qcop registered QPE/Slow || fail "responder not registered"
    start=$(date +%s)
    qcop call --timeout 30000 QPE/Slow 'work()' >"$T/call.out" 2>&1 &
    c=$!
    usleep 500000
    stop_job $w KILL
    if wait $c; then fail "the call succeeded without a reply"; fi
    took=$(($(date +%s) - start))
    cat "$T/call.out"
    [ $took -lt 20 ] || fail "the caller waited ${took}s for a responder that was gone"
    # Still serving.
    expect_eq "$(qcop send kill/after 'x()' -- stats | awk '$1 == "clients" { print $2 }')" "$clients0" "clients"
}

# armv7 programs on the aarch64 kernel (CONFIG_COMPAT): the 32-bit CLI talks to the 64-bit
# daemon and to 64-bit clients, both ways.
step_compat() {
    [ -n "$QCOP_COMPAT" ] || { echo "NA no 32-bit compat payload on this board"; return 77; }
    for triple in $QCOP_COMPAT; do
        q32=/opt/qcop/$triple/qcop
        class=$(od -An -tx1 -j4 -N1 "$q32" | tr -d ' ')
        expect_eq "$class" 01 "ELF class of $q32 (01: 32-bit)"
        "$q32" --version || fail "the kernel does not run 32-bit ARM programs (CONFIG_COMPAT?)"
        args="-1 4294967295 -9000000000 true 0.5 héllo 00ff7f a,b"
        sig='all(int,uint,qlonglong,bool,double,QString,QByteArray,QStringList)'
        want='mixed/x all(int,uint,qlonglong,bool,double,QString,QByteArray,QStringList) -1 4294967295 -9000000000 true 0.5 "héllo" 0x00ff7f ["a", "b"]'
        # 64-bit sends, 32-bit watches.
        "$q32" --format rich watch --count 1 --timeout 20000 mixed/x >"$T/w32.out" 2>&1 &
        w=$!
        until_true 10 qcop registered mixed/x || fail "32-bit watcher not registered"
        # shellcheck disable=SC2086
        qcop send mixed/x "$sig" $args || fail "64-bit send"
        wait $w || fail "32-bit watch: $(cat "$T/w32.out")"
        expect_eq "$(cat "$T/w32.out")" "$want" "32-bit reader"
        # 32-bit sends, 64-bit watches.
        qcop --format rich watch --count 1 --timeout 20000 mixed/x >"$T/w64.out" 2>&1 &
        w=$!
        until_true 10 qcop registered mixed/x || fail "64-bit watcher not registered"
        # shellcheck disable=SC2086
        "$q32" send mixed/x "$sig" $args || fail "32-bit send"
        wait $w || fail "64-bit watch: $(cat "$T/w64.out")"
        expect_eq "$(cat "$T/w64.out")" "$want" "64-bit reader"
        # Calls both ways.
        "$q32" serve --count 1 mixed/calc 'add(int,int)' 'result(qlonglong)' 9000000000 >/dev/null &
        s=$!
        until_true 10 qcop registered mixed/calc || fail "32-bit server not registered"
        expect_eq "$(qcop call mixed/calc 'add(int,int)' 1 2)" 'result(qlonglong) 9000000000' "64-bit call, 32-bit answer"
        wait $s || fail "the server failed"
        qcop serve --count 1 mixed/calc 'add(int,int)' 'result(double)' 2.5 >/dev/null &
        s=$!
        until_true 10 qcop registered mixed/calc || fail "64-bit server not registered"
        expect_eq "$("$q32" call mixed/calc 'add(int,int)' 1 2)" 'result(double) 2.5' "32-bit call, 64-bit answer"
        wait $s || fail "the server failed"
        # SO_PEERCRED through the compat layer: the daemon sees the 32-bit client's pid.
        "$q32" --format rich watch mixed/peer >/dev/null 2>&1 &
        w=$!
        until_true 10 qcop registered mixed/peer || fail "32-bit watcher not registered"
        expect_eq "$(client_col $w PID)" "$w" "pid of the 32-bit client in stats --clients"
        stop_job $w
        info "$triple qcop (32-bit, compat mode) interoperates with the $(uname -m) qcopd and qcop"
    done
}

# A shared-memory segment between armv7 and aarch64 programs on the aarch64 kernel: the
# fixed-width control block and lock word must mean the same to both, including the lock
# hand-over when a 32-bit holder is killed.
step_compat_seg() {
    [ -n "$QCOP_COMPAT" ] || { echo "NA no 32-bit compat payload on this board"; return 77; }
    for triple in $QCOP_COMPAT; do
        q32=/opt/qcop/$triple/qcop
        qcop shm write --create 64 --persistent compat/seg 0 0102030405060708 || fail "64-bit create"
        expect_eq "$("$q32" shm read compat/seg 0 8)" 0x0102030405060708 "32-bit read of 64-bit data"
        "$q32" shm write compat/seg 8 a1a2 || fail "32-bit write"
        expect_eq "$(qcop shm read compat/seg 6 4)" 0x0708a1a2 "64-bit read of 32-bit data"
        # A 32-bit holder killed with the lock: the 64-bit locker gets it, and is told.
        recovered=$(stat_of shm_locks_recovered)
        "$q32" shm lock compat/seg >"$T/lock32.out" 2>&1 &
        l=$!
        until_true 10 grep -q "locked compat/seg" "$T/lock32.out" || fail "32-bit lock: $(cat "$T/lock32.out")"
        stop_job $l KILL
        qcop shm read compat/seg 0 2 >"$T/after.out" 2>"$T/after.err" || fail "64-bit lock after the kill: $(cat "$T/after.err")"
        grep -q "previous lock holder" "$T/after.err" || fail "the holder's death was not reported: $(cat "$T/after.err")"
        expect_eq "$(stat_of shm_locks_recovered)" $((recovered + 1)) "locks recovered by qcopd"
        # And the other way: a 64-bit holder killed, a 32-bit locker told.
        qcop shm lock compat/seg >"$T/lock64.out" 2>&1 &
        l=$!
        until_true 10 grep -q "locked compat/seg" "$T/lock64.out" || fail "64-bit lock"
        stop_job $l KILL
        "$q32" shm read compat/seg 0 2 >/dev/null 2>"$T/after32.err" || fail "32-bit lock after the kill"
        grep -q "previous lock holder" "$T/after32.err" || fail "not reported to the 32-bit locker"
        qcop shm rm compat/seg || fail "remove"
        info "$triple qcop and the $(uname -m) qcop share a segment and its robust lock"
    done
}

# expect_from_zero FILE [COUNT]: FILE holds n(int) 0, 1, 2... in order, each once (and, with
# COUNT, exactly COUNT of them); prints how many.
expect_from_zero() {
    awk -v want="${2:--1}" '
        /^#/ { next }
        { if ($NF != n) { printf "line %d is %s, expected %d\n", n + 1, $NF, n; bad = 1; exit } n++ }
        END { if (!bad && want >= 0 && n != want) { printf "%d messages, expected %d\n", n, want; bad = 1 }
              if (!bad) print n; exit bad }' "$1"
}

# A shared-memory stream: one subscriber maps the ring, one reads through qcopd; both get
# all 2000 messages in order. Then a publisher killed mid-stream: the mapped reader sees
# the end promptly and never a torn message.
step_shm_stream() {
    qcop --format rich watch --shm --count 2000 --timeout 60000 board/shm >"$T/shm.mapped" 2>&1 &
    m=$!
    qcop --format rich watch --count 2000 --timeout 60000 board/shm >"$T/shm.daemon" 2>&1 &
    d=$!
    until_true 10 qcop registered board/shm || fail "the daemon-path subscriber did not subscribe"
    qcop shm-send --count 2000 --subscribers 1 --timeout 30000 board/shm 'n(int)' %n ||
        fail "shm-send failed"
    wait $m
    wait $d
    n=$(expect_from_zero "$T/shm.mapped" 2000) || fail "mapped reader: $n"
    n=$(expect_from_zero "$T/shm.daemon" 2000) || fail "reader through qcopd: $n"
    info "2000 messages, in order, to a mapped reader and to a reader through qcopd"
    # The publisher dies with SIGKILL while streaming.
    qcop shm-send --count 100000000 --interval 1 --subscribers 1 board/kill 'n(int)' %n >/dev/null 2>&1 &
    p=$!
    qcop --format rich watch --shm --timeout 60000 board/kill >"$T/kill.mapped" 2>&1 &
    w=$!
    until_true 20 sh -c "[ \$(grep -c 'n(int)' $T/kill.mapped) -ge 20 ]" || fail "no messages before the kill"
    stop_job $p KILL
    until_true 10 sh -c "! kill -0 $w" || fail "the mapped reader still waits 10 s after its publisher died"
    wait $w 2>/dev/null || true
    n=$(expect_from_zero "$T/kill.mapped") || fail "messages before the kill: $n"
    info "publisher SIGKILLed after $n messages: the mapped reader saw the end, no torn message"
}

# An armv7 (32-bit) and an aarch64 (64-bit) process share one ring, each way round.
step_compat_shm() {
    [ -n "$QCOP_COMPAT" ] || { echo "NA no 32-bit compat payload on this board"; return 77; }
    for triple in $QCOP_COMPAT; do
        q32=/opt/qcop/$triple/qcop
        "$q32" --format rich watch --shm --count 1000 --timeout 60000 compat/shm >"$T/c32.in" 2>&1 &
        r=$!
        qcop shm-send --count 1000 --subscribers 1 --timeout 30000 compat/shm 'n(int)' %n ||
            fail "64-bit publisher"
        wait $r
        n=$(expect_from_zero "$T/c32.in" 1000) || fail "32-bit reader of a 64-bit publisher: $n"
        qcop --format rich watch --shm --count 1000 --timeout 60000 compat/shm >"$T/c64.in" 2>&1 &
        r=$!
        "$q32" shm-send --count 1000 --subscribers 1 --timeout 30000 compat/shm 'n(int)' %n ||
            fail "32-bit publisher"
        wait $r
        n=$(expect_from_zero "$T/c64.in" 1000) || fail "64-bit reader of a 32-bit publisher: $n"
        info "$triple and $(uname -m) processes share a shared-memory ring both ways (1000 + 1000 messages)"
    done
}

# Test programs that cannot run under qemu-user (qemu/qemu-user.skip) run here, on a real
# kernel, against the same debug qcopd they were built with.
step_tests() {
    [ -s /qcop/tests.list ] || { echo "NA no test program listed for the boards"; return 77; }
    rc=0
    while read -r bin name; do
        echo "== $bin $name"
        if [ "$name" = "*" ]; then
            set -- "$bin"
        else
            set -- "$bin" --exact "$name"
        fi
        (cd /tmp && "$@" 2>&1) >"$T/test.out" || rc=1
        cat "$T/test.out"
        grep '^test result' "$T/test.out" | while read -r line; do info "$(basename "$bin") $name: $line"; done
    done </qcop/tests.list
    return $rc
}

step_daemon_stop() {
    pid=$(qcopd_pid)
    kill -TERM "$pid"
    until_true 10 sh -c "! kill -0 $pid" || fail "qcopd did not exit on SIGTERM"
    until_true 5 test -s /run/qcopd.exit || fail "no exit status recorded"
    expect_eq "$(cat /run/qcopd.exit)" 0 "qcopd exit status"
    [ ! -e "$SOCKET" ] || fail "the socket was left behind"
    if qcop stats 2>"$T/stats.err"; then fail "qcop stats succeeded with no daemon"; fi
    cat "$T/stats.err"
    echo "--- /var/log/qcopd.log"
    cat /var/log/qcopd.log
}

# ----- tier 3: linked boards ------------------------------------------------------------

peer_addr() { case "$QCOP_LINK" in a) echo 10.9.0.2 ;; *) echo 10.9.0.1 ;; esac; }

# One column (by header name) of the links table of `qcop stats` (one link per board here).
link_col() {
    qcop stats | awk -v col="$1" '
        $1 == "PEER" && $3 == "STATE" { for (i = 1; i <= NF; i++) idx[$i] = i; table = 1; next }
        table && NF >= 3 { print $idx[col]; exit }'
}

link_is_up() { [ "$(link_col STATE)" = up ]; }
link_is_down() { ! link_is_up; }

# send_numbered CHANNEL FROM TO: one qcop process sends n(int) FROM..TO on CHANNEL, in order.
send_numbered() {
    set -- "$1" "$2" "$3" ""
    i=$2
    while [ "$i" -le "$3" ]; do
        set -- "$1" "$2" "$3" "$4${4:+ -- }send $1 n(int) $i"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    qcop $4
}

# expect_numbered FILE FROM TO: FILE holds exactly the messages FROM..TO, in order, once each.
expect_numbered() {
    awk -v from="$2" -v to="$3" '
        { n++; if ($NF != from + n - 1) { printf "message %d is %s, expected %d\n", n, $NF, from + n - 1; bad = 1; exit } }
        END { if (!bad && n != to - from + 1) { printf "%d messages, expected %d\n", n, to - from + 1; bad = 1 } exit bad }' "$1" ||
        fail "$1: not exactly $2..$3 in order (first lines: $(head -3 "$1" | tr '\n' '|'))"
}

# Board RECEIVER subscribes to CHANNEL and expects n(int) 1..COUNT from the other board,
# which sends once the subscription has crossed the link.
transfer() {
    receiver=$1 channel=$2 count=$3
    file="$T/$(echo "$channel" | tr / _).in"
    if [ "$QCOP_LINK" = "$receiver" ]; then
        qcop --format rich watch --count "$count" --timeout 60000 "$channel" >"$file" 2>&1 || true
        expect_numbered "$file" 1 "$count"
        info "board $receiver received $count messages on $channel, in order, none twice"
    else
        until_true 60 qcop registered "$channel" || fail "no remote subscriber on $channel"
        qcop registered "$channel" | grep -q remote || fail "$channel: subscriber not shown as remote"
        send_numbered "$channel" 1 "$count"
    fi
}

step_link_up() {
    until_true 60 link_is_up || fail "the link did not come up: $(qcop stats 2>&1 | tail -5)"
    info "link to $(link_col NAME) ($(link_col PEER)) up, rtt $(link_col RTT_US) us"
}

step_a_to_b() { transfer b board/b/in 200; }

step_b_to_a() { transfer a board/a/in 200; }

# Board a sends 50 messages, loses its cable, sends 50 more while the link is down (they
# wait in a's link buffer), gets its cable back; board b receives all 100 exactly once.
step_cut_heal() {
    if [ "$QCOP_LINK" = b ]; then
        # 20 s without a message ends the watch: longer than the cut lasts.
        qcop --format rich watch --timeout 20000 board/b/cut >"$T/cut.in" 2>&1 || true
        expect_numbered "$T/cut.in" 1 100
        info "board b received 100 of 100 messages across the cut, in order, none twice"
    else
        until_true 60 qcop registered board/b/cut || fail "no remote subscriber on board/b/cut"
        send_numbered board/b/cut 1 50
        sleep 2
        ifconfig eth0 down
        until_true 15 link_is_down || fail "the link stayed up without a cable"
        info "cable out: link $(link_col STATE)"
        send_numbered board/b/cut 51 100
        info "buffered while down: $(link_col BUFFERED)"
        ifconfig eth0 up
        until_true 60 link_is_up || fail "the link did not come back"
        info "cable back: link up again, reconnects $(link_col RECONNECTS)"
    fi
}

step_link_stats() {
    until_true 30 link_is_up || fail "link not up: $(qcop stats 2>&1 | sed -n '/^ *PEER /,$p' | tr -s ' ' | tr '\n' '|')"
    qcop stats | sed -n '/^ *PEER /,$p'
    expect_eq "$(link_col DUPLICATES)" 0 "duplicates dropped on this board"
    expect_eq "$(link_col DROPPED)" 0 "messages dropped on this board's link"
    info "in $(link_col MSGS_IN) msgs / out $(link_col MSGS_OUT) msgs, reconnects $(link_col RECONNECTS)"
}

# Neither board powers off before the other is done with the link: each tells the other.
step_finish() {
    peer=$( [ "$QCOP_LINK" = a ] && echo b || echo a )
    qcop --format rich watch --count 1 --timeout 120000 "board/$QCOP_LINK/done" >"$T/done.in" 2>&1 &
    w=$!
    until_true 120 qcop registered "board/$peer/done" || fail "board $peer never got to the end"
    qcop send "board/$peer/done" 'done()'
    wait $w
    grep -q 'done()' "$T/done.in" || fail "no word from board $peer: $(cat "$T/done.in")"
}

step_net() {
    ifconfig eth0 | grep -q 'inet addr:10.9.0.' || fail "eth0 has no 10.9.0.x address"
    until_true 60 ping -c 1 -W 1 "$(peer_addr)" || fail "board $(peer_addr) does not answer ping"
    info "$(ping -c 3 -W 2 "$(peer_addr)" | tail -1)"
}

# ----- runner ---------------------------------------------------------------------------

# Each step runs in a subshell with `set -e`, its output to a log that is shown on failure,
# and a watchdog: a hung step fails alone instead of eating the host's timeout.
run_step() {
    name=$1
    CURRENT_STEP=$name
    log="$T/$name.log"
    (
        set -e
        "step_$name"
    ) >"$log" 2>&1 </dev/null &
    pid=$!
    # The test programs take minutes on an emulated board; every other step, seconds.
    limit=120
    [ "$name" != tests ] || limit=600
    (sleep $limit && kill -KILL $pid 2>/dev/null && echo "TIMEOUT after ${limit}s" >>"$log") &
    dog=$!
    wait $pid
    rc=$?
    kill $dog 2>/dev/null
    wait $dog 2>/dev/null
    if [ $rc = 0 ]; then
        echo "@@QCOP PASS $name"
        pass=$((pass + 1))
    elif [ $rc = 77 ]; then
        echo "@@QCOP NA $name $(sed -n 's/^NA //p' "$log" | tail -1)"
    else
        why=$(grep -E '^(FAILED: |TIMEOUT)' "$log" | tail -1)
        echo "@@QCOP FAIL $name ${why:-exit status $rc}"
        sed 's/^/    | /' "$log" | tail -60
        fail=$((fail + 1))
    fi
    # A step that leaves its clients behind spoils the next one: flag it there.
    if [ "$name" != daemon_stop ]; then
        until_true 10 sh -c "[ \$(qcop stats 2>/dev/null | awk '\$1 == \"clients\" { print \$2 }') = 1 ]" ||
            { echo "warning: clients still connected after $name:"; qcop stats --clients 2>&1 | sed -n '/^ *ID /,$p'; }
    fi
}

pass=0
fail=0
[ -z "${QCOP_LINK:-}" ] || STEPS=$LINK_STEPS
[ -z "${QCOP_STEPS:-}" ] || STEPS=$(echo "$QCOP_STEPS" | tr , ' ')
echo "@@QCOP PLAN $STEPS"
for step in $STEPS; do
    run_step "$step"
done
echo "@@QCOP DONE pass=$pass fail=$fail"
