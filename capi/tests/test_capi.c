/*
 * The C test suite of libqcop: every function against a real qcopd, with the qcop tool as
 * the peer (interop both ways, calls both ways, shared memory both ways), and the errors a
 * C program must be able to tell apart.
 *
 * Usage: test_capi QCOPD QCOP DIR   (qcopd and qcop binaries, a private scratch directory)
 * Prints one line per test and closes with "capi: N passed, N failed".
 */
#define _GNU_SOURCE
#include <qcop.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *qcopd_bin, *qcop_bin, *dir;
static char sock[512];
static pid_t daemon_pid;
static int passed, failed, current_failed;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            printf("  check failed at line %d: %s\n", __LINE__, #cond);                 \
            current_failed = 1;                                                         \
            return;                                                                     \
        }                                                                               \
    } while (0)
#define CHECK_RC(expr, want)                                                            \
    do {                                                                                \
        int rc_ = (expr);                                                               \
        if (rc_ != (want)) {                                                            \
            printf("  line %d: %s returned %d (%s), wanted %d; last error: %s\n",        \
                   __LINE__, #expr, rc_, qcop_error_name(rc_), (want),                  \
                   qcop_strerror(NULL));                                                \
            current_failed = 1;                                                         \
            return;                                                                     \
        }                                                                               \
    } while (0)

static void run(const char *name, void (*test)(void)) {
    current_failed = 0;
    test();
    if (current_failed) {
        failed++;
        printf("FAIL %s\n", name);
    } else {
        passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

/* ----- the daemon and the qcop tool ------------------------------------------------ */

static void start_daemon(void) {
    pid_t pid = fork();
    if (pid == 0) {
        execl(qcopd_bin, qcopd_bin, "--socket", sock, (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    /* Ready once a connection succeeds (a watchdog in the runner bounds the whole suite). */
    for (;;) {
        qcop_conn *c;
        if (qcop_connect(&c, sock, "probe", 200, 0) == QCOP_OK) {
            qcop_disconnect(c);
            return;
        }
        usleep(20000);
    }
}

static void stop_daemon(void) {
    kill(daemon_pid, SIGTERM);
    waitpid(daemon_pid, NULL, 0);
}

/* Runs the qcop tool with a shell command line after "qcop -s SOCK"; returns its output
 * (first line, newline cut) in out, and its exit status. */
static int qcop_tool(char *out, size_t cap, const char *fmt, ...) {
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' -s '%s' %s", qcop_bin, sock, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    if (out) {
        out[0] = 0;
        if (fgets(out, (int)cap, p)) out[strcspn(out, "\n")] = 0;
    }
    char rest[4096];
    while (fread(rest, 1, sizeof rest, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Starts the qcop tool in the background; its output goes to the returned stream. */
static FILE *qcop_background(const char *fmt, ...) {
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec '%s' -s '%s' %s", qcop_bin, sock, args);
    return popen(cmd, "r");
}

static void read_line(FILE *p, char *out, size_t cap) {
    out[0] = 0;
    if (fgets(out, (int)cap, p)) out[strcspn(out, "\n")] = 0;
}

static qcop_conn *connect_or_die(unsigned flags) {
    qcop_conn *c = NULL;
    if (qcop_connect(&c, NULL, "test_capi", 3000, flags) != QCOP_OK) {
        printf("cannot connect: %s\n", qcop_strerror(NULL));
        exit(1);
    }
    return c;
}

static void wait_registered(qcop_conn *c, const char *channel) {
    while (qcop_is_registered(c, channel) != 1) usleep(10000);
}

/* ----- tests -------------------------------------------------------------------------- */

static void test_connect_errors(void) {
    qcop_conn *c = (qcop_conn *)1;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.sock", dir);
    CHECK_RC(qcop_connect(&c, missing, NULL, 200, 0), QCOP_E_CONNECT);
    CHECK(c == NULL);
    CHECK(strstr(qcop_strerror(NULL), "none.sock") != NULL);
    CHECK_RC(qcop_connect(NULL, sock, NULL, 0, 0), QCOP_E_INVAL);
    CHECK_RC(qcop_connect(&c, sock, NULL, -5, 0), QCOP_E_INVAL);
    CHECK_RC(qcop_connect(&c, sock, NULL, 0, 0x80), QCOP_E_INVAL);
    CHECK_RC(qcop_flush(NULL), QCOP_E_INVAL);
    CHECK(strcmp(qcop_error_name(QCOP_E_TIMEOUT), "QCOP_E_TIMEOUT") == 0);
    CHECK(strcmp(qcop_error_name(-999), "QCOP_E_UNKNOWN") == 0);
    qcop_disconnect(NULL);
}

/* Every argument type, encoded by the builder and read back by the reader. */
static void test_args_round_trip(void) {
    qcop_args *a = qcop_args_new();
    const char *list[] = {"clock", "radio", ""};
    CHECK_RC(qcop_args_int(a, -7), QCOP_OK);
    CHECK_RC(qcop_args_uint(a, 4000000000u), QCOP_OK);
    CHECK_RC(qcop_args_long(a, -1234567890123LL), QCOP_OK);
    CHECK_RC(qcop_args_ulong(a, 18000000000000000000ULL), QCOP_OK);
    CHECK_RC(qcop_args_longlong(a, INT64_MIN), QCOP_OK);
    CHECK_RC(qcop_args_ulonglong(a, UINT64_MAX), QCOP_OK);
    CHECK_RC(qcop_args_bool(a, 5), QCOP_OK);
    CHECK_RC(qcop_args_double(a, 0.25), QCOP_OK);
    CHECK_RC(qcop_args_string(a, "Gr\xc3\xbc\xc3\x9f" "e"), QCOP_OK);
    CHECK_RC(qcop_args_string(a, NULL), QCOP_OK);
    CHECK_RC(qcop_args_bytes(a, "\x00\x01\x02", 3), QCOP_OK);
    CHECK_RC(qcop_args_bytes(a, NULL, 0), QCOP_OK);
    CHECK_RC(qcop_args_stringlist(a, list, 3), QCOP_OK);
    CHECK_RC(qcop_args_text(a, "int", "42"), QCOP_OK);
    CHECK_RC(qcop_args_text(a, "int", "forty-two"), QCOP_E_INVAL);
    CHECK_RC(qcop_args_text(a, "QDateTimeX", "1"), QCOP_E_INVAL);
    CHECK_RC(qcop_args_string(a, "\xff\xfe"), QCOP_E_INVAL);
    size_t len;
    const void *p = qcop_args_data(a, &len);
    /* int 4 + uint 4 + long 8 + ulong 8 + ll 8 + ull 8 + bool 1 + double 8 + QString 4+10 +
     * null 4 + bytes 4+3 + null 4 + list 4+(4+10)+(4+10)+4 + int 4 */
    CHECK(len == 4 + 4 + 8 + 8 + 8 + 8 + 1 + 8 + 14 + 4 + 7 + 4 + 4 + 14 + 14 + 4 + 4);
    CHECK(memcmp(p, "\xff\xff\xff\xf9", 4) == 0);

    qcop_reader *r = qcop_reader_new(p, len);
    int32_t i;
    uint32_t u;
    int64_t l;
    uint64_t ul;
    int b;
    double d;
    const char *s;
    size_t n;
    const uint8_t *bytes;
    const char *const *items;
    CHECK_RC(qcop_reader_int(r, &i), QCOP_OK);
    CHECK(i == -7);
    CHECK_RC(qcop_reader_uint(r, &u), QCOP_OK);
    CHECK(u == 4000000000u);
    CHECK_RC(qcop_reader_long(r, &l), QCOP_OK);
    CHECK(l == -1234567890123LL);
    CHECK_RC(qcop_reader_ulong(r, &ul), QCOP_OK);
    CHECK(ul == 18000000000000000000ULL);
    CHECK_RC(qcop_reader_longlong(r, &l), QCOP_OK);
    CHECK(l == INT64_MIN);
    CHECK_RC(qcop_reader_ulonglong(r, &ul), QCOP_OK);
    CHECK(ul == UINT64_MAX);
    CHECK_RC(qcop_reader_bool(r, &b), QCOP_OK);
    CHECK(b == 1);
    CHECK_RC(qcop_reader_double(r, &d), QCOP_OK);
    CHECK(d == 0.25);
    CHECK_RC(qcop_reader_string(r, &s, &n), QCOP_OK);
    CHECK(s && strcmp(s, "Gr\xc3\xbc\xc3\x9f" "e") == 0 && n == 7);
    CHECK_RC(qcop_reader_string(r, &s, &n), QCOP_OK);
    CHECK(s == NULL && n == 0);
    CHECK_RC(qcop_reader_bytes(r, &bytes, &n), QCOP_OK);
    CHECK(n == 3 && memcmp(bytes, "\x00\x01\x02", 3) == 0);
    CHECK_RC(qcop_reader_bytes(r, &bytes, &n), QCOP_OK);
    CHECK(bytes == NULL);
    CHECK_RC(qcop_reader_stringlist(r, &items, &n), QCOP_OK);
    CHECK(n == 3 && strcmp(items[0], "clock") == 0 && strcmp(items[1], "radio") == 0 &&
          items[2][0] == 0 && items[3] == NULL);
    CHECK_RC(qcop_reader_text(r, "int", &s), QCOP_OK);
    CHECK(strcmp(s, "42") == 0);
    CHECK(qcop_reader_remaining(r) == 0);
    /* Past the end: a clear decode error, nothing read. */
    CHECK_RC(qcop_reader_int(r, &i), QCOP_E_DECODE);
    CHECK(strstr(qcop_strerror(NULL), "int") != NULL);
    qcop_reader_free(r);

    /* A lying length prefix is refused, not trusted. */
    r = qcop_reader_new("\x00\x00\x10\x00" "ab", 6);
    CHECK_RC(qcop_reader_bytes(r, &bytes, &n), QCOP_E_DECODE);
    qcop_reader_free(r);
    CHECK(qcop_reader_new(NULL, 3) == NULL);
    CHECK_RC(qcop_args_clear(a), QCOP_OK);
    qcop_args_data(a, &len);
    CHECK(len == 0);
    qcop_args_free(a);
}

static void test_send_recv_self(void) {
    qcop_conn *c = connect_or_die(0);
    qcop_message *m = (qcop_message *)1;
    CHECK_RC(qcop_subscribe(c, "capi/self", 0), QCOP_OK);
    CHECK_RC(qcop_recv(c, 0, &m), 0);
    CHECK(m == NULL);
    CHECK_RC(qcop_recv(c, 50, &m), 0);
    qcop_args *a = qcop_args_new();
    qcop_args_int(a, 42);
    size_t len;
    const void *p = qcop_args_data(a, &len);
    CHECK_RC(qcop_send(c, "capi/self", "setVolume(int)", p, len), QCOP_OK);
    CHECK_RC(qcop_flush(c), QCOP_OK);
    CHECK_RC(qcop_recv(c, -1, &m), 1);
    CHECK(strcmp(qcop_message_channel(m), "capi/self") == 0);
    CHECK(strcmp(qcop_message_name(m), "setVolume(int)") == 0);
    size_t n;
    const uint8_t *d = qcop_message_data(m, &n);
    CHECK(n == 4 && memcmp(d, "\x00\x00\x00\x2a", 4) == 0);
    CHECK(qcop_message_is_call(m) == 0);
    qcop_credentials who;
    CHECK(qcop_message_sender(m, &who) == 0);
    qcop_message_free(m);

    uint32_t receivers = 99;
    CHECK_RC(qcop_send_acked(c, "capi/self", "ping()", NULL, 0, &receivers), QCOP_OK);
    CHECK(receivers == 1);
    CHECK_RC(qcop_send_acked(c, "capi/nobody", "ping()", NULL, 0, &receivers), QCOP_OK);
    CHECK(receivers == 0);
    CHECK_RC(qcop_recv(c, 1000, &m), 1);
    CHECK(strcmp(qcop_message_name(m), "ping()") == 0);
    qcop_message_data(m, &n);
    CHECK(n == 0);
    qcop_message_free(m);

    /* Credentials when asked for: the daemon fills in this process. */
    CHECK_RC(qcop_subscribe(c, "capi/creds", 1), QCOP_OK);
    CHECK_RC(qcop_send(c, "capi/creds", "who()", NULL, 0), QCOP_OK);
    CHECK_RC(qcop_recv(c, 2000, &m), 1);
    CHECK(qcop_message_sender(m, &who) == 1);
    CHECK(who.pid == (uint32_t)getpid() && who.uid == (uint32_t)getuid());
    qcop_message_free(m);

    /* Patterns: delivered under the original channel. */
    CHECK_RC(qcop_subscribe(c, "capi/pat/*", 0), QCOP_OK);
    CHECK_RC(qcop_send(c, "capi/pat/x", "hi()", NULL, 0), QCOP_OK);
    CHECK_RC(qcop_recv(c, 2000, &m), 1);
    CHECK(strcmp(qcop_message_channel(m), "capi/pat/x") == 0);
    qcop_message_free(m);

    CHECK(qcop_is_registered(c, "capi/self") == 1);
    CHECK(qcop_is_registered(c, "capi/nobody") == 0);
    qcop_channels *l;
    CHECK_RC(qcop_channels_list(c, &l), QCOP_OK);
    int found = 0, pattern = 0;
    for (size_t i = 0; i < qcop_channels_count(l); i++) {
        if (strcmp(qcop_channels_name(l, i), "capi/self") == 0)
            found = qcop_channels_subscribers(l, i) == 1;
        if (strcmp(qcop_channels_name(l, i), "capi/pat/*") == 0)
            pattern = qcop_channels_is_pattern(l, i);
    }
    CHECK(found && pattern);
    CHECK(qcop_channels_name(l, qcop_channels_count(l)) == NULL);
    qcop_channels_free(l);

    qcop_stats *s;
    CHECK_RC(qcop_stats_get(c, &s), QCOP_OK);
    CHECK(qcop_stats_count(s) > 0);
    uint64_t v, v2;
    const char *first = qcop_stats_entry(s, 0, &v);
    CHECK(first != NULL);
    CHECK(qcop_stats_value(s, first, &v2) == 1 && v2 == v);
    CHECK(qcop_stats_value(s, "no such counter", &v2) == 0);
    qcop_stats_free(s);

    CHECK(qcop_lost(c) == 0);
    CHECK(qcop_client_id(c) > 0);
    CHECK(qcop_max_payload(c) > 0);
    CHECK_RC(qcop_unsubscribe(c, "capi/self"), QCOP_OK);
    CHECK(qcop_is_registered(c, "capi/self") == 0);
    qcop_args_free(a);
    qcop_disconnect(c);
}

static void test_errors(void) {
    qcop_conn *c = connect_or_die(0);
    size_t big = (size_t)qcop_max_payload(c) + 1;
    char *payload = calloc(1, big);
    CHECK_RC(qcop_send(c, "capi/big", "blob(QByteArray)", payload, big), QCOP_E_TOOLARGE);
    CHECK(strstr(qcop_strerror(c), "exceeds") != NULL);
    CHECK_RC(qcop_send(c, "capi/big", "blob(QByteArray)", payload, big - 1), QCOP_OK);
    free(payload);
    CHECK_RC(qcop_send(c, "", "x()", NULL, 0), QCOP_E_BADNAME);
    CHECK(qcop_strerror(c)[0] != 0);
    CHECK_RC(qcop_subscribe(c, "", 0), QCOP_E_BADNAME);
    CHECK_RC(qcop_send(c, "capi/*", "x()", NULL, 0), QCOP_E_WILDCARD);
    /* Only `*` makes a pattern, as in Qt's QCOP; `?` and `[...]` are wildcards inside one. */
    CHECK_RC(qcop_is_pattern("capi/*"), 1);
    CHECK_RC(qcop_is_pattern("cam?"), 0);
    CHECK_RC(qcop_is_pattern(NULL), QCOP_E_INVAL);
    CHECK_RC(qcop_pattern_matches("*cam[0-3]", "QPE/cam2"), 1);
    CHECK_RC(qcop_pattern_matches("*cam[0-3]", "QPE/cam4"), 0);
    CHECK_RC(qcop_pattern_matches("cam?", "cam?"), 1);
    CHECK_RC(qcop_pattern_matches("cam?", "cam1"), 0);
    CHECK_RC(qcop_pattern_matches("cam[0-*", "cam0"), QCOP_E_BADNAME);
    CHECK(strstr(qcop_strerror(NULL), "cam[0-*") != NULL);
    CHECK_RC(qcop_send(c, "capi/x", NULL, NULL, 0), QCOP_E_INVAL);
    CHECK_RC(qcop_send(c, "capi/x", "x()", NULL, 3), QCOP_E_INVAL);
    CHECK_RC(qcop_send(c, "capi/\xff", "x()", NULL, 0), QCOP_E_INVAL);
    CHECK_RC(qcop_unsubscribe(c, "capi/never"), QCOP_E_NOTSUBSCRIBED);
    CHECK_RC(qcop_recv(c, -7, NULL), QCOP_E_INVAL);
    qcop_message *m;
    CHECK_RC(qcop_subscribe(c, "capi/err", 0), QCOP_OK);
    CHECK_RC(qcop_send(c, "capi/err", "x()", NULL, 0), QCOP_OK);
    CHECK_RC(qcop_recv(c, 2000, &m), 1);
    CHECK_RC(qcop_reply(c, m, "y()", NULL, 0), QCOP_E_NOTACALL);
    qcop_message_free(m);
    /* The connection still works after every refusal. */
    CHECK_RC(qcop_flush(c), QCOP_OK);
    qcop_disconnect(c);
}

/* qcop send -> C subscriber, and C sender -> qcop watch: the same arguments both ways. */
static void test_cli_interop(void) {
    qcop_conn *c = connect_or_die(0);
    qcop_message *m;
    CHECK_RC(qcop_subscribe(c, "capi/in", 0), QCOP_OK);
    CHECK(qcop_tool(NULL, 0,
                    "send capi/in 'set(int,QString,bool,QStringList,qulonglong,QByteArray)' "
                    "-5 'h\xc3\xa9llo' true a,b 18446744073709551615 0a0b") == 0);
    CHECK_RC(qcop_recv(c, 5000, &m), 1);
    CHECK(strcmp(qcop_message_name(m), "set(int,QString,bool,QStringList,qulonglong,QByteArray)") == 0);
    size_t len, n;
    const uint8_t *p = qcop_message_data(m, &len);
    qcop_reader *r = qcop_reader_new(p, len);
    int32_t i;
    const char *s;
    int b;
    const char *const *items;
    uint64_t u;
    const uint8_t *bytes;
    CHECK_RC(qcop_reader_int(r, &i), QCOP_OK);
    CHECK(i == -5);
    CHECK_RC(qcop_reader_string(r, &s, NULL), QCOP_OK);
    CHECK(strcmp(s, "h\xc3\xa9llo") == 0);
    CHECK_RC(qcop_reader_bool(r, &b), QCOP_OK);
    CHECK(b == 1);
    CHECK_RC(qcop_reader_stringlist(r, &items, &n), QCOP_OK);
    CHECK(n == 2 && strcmp(items[0], "a") == 0 && strcmp(items[1], "b") == 0);
    CHECK_RC(qcop_reader_ulonglong(r, &u), QCOP_OK);
    CHECK(u == UINT64_MAX);
    CHECK_RC(qcop_reader_bytes(r, &bytes, &n), QCOP_OK);
    CHECK(n == 2 && bytes[0] == 0x0a && bytes[1] == 0x0b);
    CHECK(qcop_reader_remaining(r) == 0);
    qcop_reader_free(r);

    /* The same payload built in C is byte for byte what the tool sent. */
    qcop_args *a = qcop_args_new();
    const char *ab[] = {"a", "b"};
    qcop_args_int(a, -5);
    qcop_args_string(a, "h\xc3\xa9llo");
    qcop_args_bool(a, 1);
    qcop_args_stringlist(a, ab, 2);
    qcop_args_ulonglong(a, UINT64_MAX);
    qcop_args_bytes(a, "\x0a\x0b", 2);
    size_t alen;
    const void *ap = qcop_args_data(a, &alen);
    CHECK(alen == len && memcmp(ap, p, len) == 0);
    qcop_message_free(m);

    /* C sender -> qcop watch; the tool decodes it exactly as the tool's own send. */
    FILE *w = qcop_background("--format rich watch --count 2 capi/out");
    CHECK(w != NULL);
    wait_registered(c, "capi/out");
    CHECK_RC(qcop_send(c, "capi/out", "set(int,QString,bool,QStringList,qulonglong,QByteArray)",
                       ap, alen), QCOP_OK);
    CHECK_RC(qcop_flush(c), QCOP_OK);
    CHECK(qcop_tool(NULL, 0,
                    "send capi/out 'set(int,QString,bool,QStringList,qulonglong,QByteArray)' "
                    "-5 'h\xc3\xa9llo' true a,b 18446744073709551615 0a0b") == 0);
    char from_c[1024], from_tool[1024];
    read_line(w, from_c, sizeof from_c);
    read_line(w, from_tool, sizeof from_tool);
    CHECK(pclose(w) == 0);
    CHECK(strncmp(from_c, "capi/out set(", 13) == 0);
    CHECK(strstr(from_c, "-5") != NULL && strstr(from_c, "llo") != NULL);
    if (strcmp(from_c, from_tool) != 0) printf("  C: %s\n  tool: %s\n", from_c, from_tool);
    CHECK(strcmp(from_c, from_tool) == 0);
    qcop_args_free(a);
    qcop_disconnect(c);
}

/* A C responder on its own thread and connection. */
struct responder {
    const char *channel;
    int calls;
    int ready;
};

static void *respond(void *arg) {
    struct responder *rs = arg;
    qcop_conn *c = connect_or_die(0);
    qcop_subscribe(c, rs->channel, 0);
    __atomic_store_n(&rs->ready, 1, __ATOMIC_RELEASE);
    for (int done = 0; done < rs->calls;) {
        qcop_message *m;
        if (qcop_recv(c, -1, &m) != 1) break;
        if (qcop_message_is_call(m)) {
            size_t len;
            const uint8_t *p = qcop_message_data(m, &len);
            qcop_reader *r = qcop_reader_new(p, len);
            int32_t x = 0, y = 0;
            if (strcmp(qcop_message_name(m), "add(int,int)") == 0 &&
                qcop_reader_int(r, &x) == QCOP_OK && qcop_reader_int(r, &y) == QCOP_OK) {
                qcop_args *a = qcop_args_new();
                qcop_args_int(a, x + y);
                const void *ap = qcop_args_data(a, &len);
                qcop_reply(c, m, "sum(int)", ap, len);
                qcop_args_free(a);
            } else if (strcmp(qcop_message_name(m), "silent()") == 0) {
                /* never answered: the caller times out */
            } else {
                qcop_reply_error(c, m, "unknown method");
            }
            qcop_reader_free(r);
            done++;
        }
        qcop_message_free(m);
    }
    qcop_disconnect(c);
    return NULL;
}

static void test_calls(void) {
    qcop_conn *c = connect_or_die(0);
    qcop_message *reply = (qcop_message *)1;
    /* Nobody there. */
    CHECK_RC(qcop_call(c, "capi/svc", "add(int,int)", NULL, 0, 500, &reply), QCOP_E_NORESPONDER);
    CHECK(reply == NULL);
    CHECK_RC(qcop_call(c, "capi/svc", "add(int,int)", NULL, 0, 0, &reply), QCOP_E_INVAL);

    struct responder rs = {"capi/svc", 4, 0};
    pthread_t t;
    pthread_create(&t, NULL, respond, &rs);
    while (!__atomic_load_n(&rs.ready, __ATOMIC_ACQUIRE)) usleep(1000);
    wait_registered(c, "capi/svc");

    /* C caller -> C responder. */
    qcop_args *a = qcop_args_new();
    qcop_args_int(a, 2);
    qcop_args_int(a, 3);
    size_t len;
    const void *ap = qcop_args_data(a, &len);
    CHECK_RC(qcop_call(c, "capi/svc", "add(int,int)", ap, len, 5000, &reply), QCOP_OK);
    CHECK(strcmp(qcop_message_name(reply), "sum(int)") == 0);
    const uint8_t *p = qcop_message_data(reply, &len);
    CHECK(len == 4 && p[3] == 5);
    qcop_message_free(reply);
    /* An error reply. */
    CHECK_RC(qcop_call(c, "capi/svc", "mul(int,int)", NULL, 0, 5000, &reply), QCOP_E_REMOTE);
    CHECK(strcmp(qcop_strerror(c), "unknown method") == 0);
    /* A responder that never answers. */
    CHECK_RC(qcop_call(c, "capi/svc", "silent()", NULL, 0, 300, &reply), QCOP_E_TIMEOUT);

    /* qcop call -> C responder. */
    char out[256];
    CHECK(qcop_tool(out, sizeof out, "call capi/svc 'add(int,int)' 20 22") == 0);
    CHECK(strstr(out, "42") != NULL);
    pthread_join(t, NULL);

    /* C caller -> qcop serve. */
    FILE *srv = qcop_background("serve capi/tool 'ping(int)' 'pong(QString)' hello --count 1");
    CHECK(srv != NULL);
    wait_registered(c, "capi/tool");
    qcop_args_clear(a);
    qcop_args_int(a, 1);
    ap = qcop_args_data(a, &len);
    CHECK_RC(qcop_call(c, "capi/tool", "ping(int)", ap, len, 5000, &reply), QCOP_OK);
    CHECK(strcmp(qcop_message_name(reply), "pong(QString)") == 0);
    p = qcop_message_data(reply, &len);
    qcop_reader *r = qcop_reader_new(p, len);
    const char *s;
    CHECK_RC(qcop_reader_string(r, &s, NULL), QCOP_OK);
    CHECK(strcmp(s, "hello") == 0);
    qcop_reader_free(r);
    qcop_message_free(reply);
    pclose(srv);
    qcop_args_free(a);
    qcop_disconnect(c);
}

/* The descriptor in a poll loop: readable when a message comes. */
static void test_poll_loop(void) {
    qcop_conn *c = connect_or_die(0);
    CHECK_RC(qcop_subscribe(c, "capi/poll", 0), QCOP_OK);
    CHECK(qcop_tool(NULL, 0, "send capi/poll 'tick(int)' 1 -- send capi/poll 'tick(int)' 2") == 0);
    int got = 0;
    while (got < 2) {
        struct pollfd pfd = {.fd = qcop_fd(c), .events = POLLIN};
        CHECK(pfd.fd >= 0);
        CHECK(poll(&pfd, 1, 5000) == 1);
        qcop_message *m;
        int rc;
        while ((rc = qcop_recv(c, 0, &m)) == 1) {
            got++;
            qcop_message_free(m);
        }
        CHECK(rc == 0);
    }
    CHECK(got == 2);
    qcop_disconnect(c);
}

/* The daemon goes away: clear errors, no SIGPIPE (its default action is kept here); with
 * QCOP_RECONNECT the connection comes back and re-registers. */
static void test_daemon_gone_and_reconnect(void) {
    qcop_conn *plain = connect_or_die(0);
    qcop_conn *again = connect_or_die(QCOP_RECONNECT);
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    CHECK_RC(qcop_subscribe(again, "capi/back", 0), QCOP_OK);
    int old_fd = qcop_fd(again);
    stop_daemon();
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        rc = qcop_send(plain, "capi/x", "x()", "12345678", 8);
        if (rc == 0) rc = qcop_flush(plain);
    }
    CHECK(rc == QCOP_E_IO || rc == QCOP_E_DISCONNECTED);
    CHECK(qcop_strerror(plain)[0] != 0);
    qcop_disconnect(plain);
    qcop_conn *none;
    CHECK_RC(qcop_connect(&none, NULL, NULL, 200, 0), QCOP_E_CONNECT);

    start_daemon();
    qcop_message *m;
    /* The next blocking call reconnects and re-registers. */
    CHECK(qcop_recv(again, 300, &m) == 0);
    CHECK(qcop_reconnects(again) >= 1);
    CHECK(qcop_fd(again) >= 0);
    (void)old_fd;
    CHECK(qcop_tool(NULL, 0, "send capi/back 'hello()'") == 0);
    CHECK_RC(qcop_recv(again, 5000, &m), 1);
    CHECK(strcmp(qcop_message_name(m), "hello()") == 0);
    qcop_message_free(m);
    qcop_disconnect(again);
}

/* C publisher -> qcop watch --shm, and qcop shm-send -> C subscriber. */
static void test_shm_streams(void) {
    qcop_publisher *pub;
    CHECK_RC(qcop_publisher_open(&pub, NULL, "capi/shm", "sample(int)", 64, 16, 0), QCOP_OK);
    qcop_publisher *twice;
    CHECK(qcop_publisher_open(&twice, NULL, "capi/shm", "sample(int)", 64, 16, 0) < 0);
    FILE *w = qcop_background("--format rich watch --shm --count 3 capi/shm");
    CHECK(w != NULL);
    while (qcop_publisher_subscribers(pub) < 1) usleep(10000);
    for (int32_t i = 0; i < 2; i++) {
        void *slot;
        size_t cap;
        CHECK_RC(qcop_publisher_loan(pub, 1000, &slot, &cap), 1);
        CHECK(cap >= 64);
        void *again;
        CHECK_RC(qcop_publisher_loan(pub, 0, &again, NULL), QCOP_E_STATE);
        CHECK_RC(qcop_publisher_send(pub, "x", 1, 0), QCOP_E_STATE);
        uint8_t be[4] = {0, 0, 0, (uint8_t)(10 + i)};
        memcpy(slot, be, 4);
        CHECK_RC(qcop_publisher_commit(pub, cap + 1), QCOP_E_TOOLARGE);
        CHECK_RC(qcop_publisher_commit(pub, 4), QCOP_OK);
    }
    CHECK_RC(qcop_publisher_commit(pub, 4), QCOP_E_STATE);
    CHECK_RC(qcop_publisher_send(pub, "\x00\x00\x00\x0c", 4, 1000), 1);
    char big[200] = {0};
    CHECK_RC(qcop_publisher_send(pub, big, sizeof big, 1000), QCOP_E_TOOLARGE);
    char line[256];
    for (int i = 0; i < 3; i++) {
        read_line(w, line, sizeof line);
        char want[64];
        snprintf(want, sizeof want, "capi/shm sample(int) %d", 10 + i);
        if (strcmp(line, want) != 0) printf("  got: %s\n", line);
        CHECK(strcmp(line, want) == 0);
    }
    CHECK(pclose(w) == 0);
    qcop_publisher_close(pub);

    /* The Rust publisher; this C subscriber reads in place, then by copy. */
    qcop_subscriber *sub;
    FILE *s = qcop_background("shm-send --count 4 --subscribers 1 --slots 8 capi/rs 'sample(int)' %%n");
    CHECK(s != NULL);
    CHECK_RC(qcop_subscriber_open(&sub, NULL, "capi/rs", 10000), QCOP_OK);
    CHECK(qcop_subscriber_slot_size(sub) >= 4);
    for (int i = 0; i < 2; i++) {
        const void *data;
        size_t len;
        uint64_t lost;
        CHECK_RC(qcop_subscriber_borrow(sub, 5000, &data, &len, &lost), 1);
        CHECK(len == 4 && ((const uint8_t *)data)[3] == i && lost == 0);
        CHECK_RC(qcop_subscriber_borrow(sub, 0, &data, &len, NULL), QCOP_E_STATE);
        CHECK_RC(qcop_subscriber_release(sub), QCOP_OK);
    }
    CHECK_RC(qcop_subscriber_release(sub), QCOP_E_STATE);
    char small[2];
    size_t n;
    CHECK_RC(qcop_subscriber_recv(sub, small, sizeof small, &n, 1000), QCOP_E_INVAL);
    char *buf = malloc(qcop_subscriber_slot_size(sub));
    for (int i = 2; i < 4; i++) {
        CHECK_RC(qcop_subscriber_recv(sub, buf, qcop_subscriber_slot_size(sub), &n, 5000), 1);
        CHECK(n == 4 && buf[3] == i);
    }
    /* The publisher exits: the stream ends once everything was read. */
    CHECK_RC(qcop_subscriber_recv(sub, buf, qcop_subscriber_slot_size(sub), &n, 10000), QCOP_E_ENDED);
    free(buf);
    CHECK(qcop_subscriber_lost(sub) == 0);
    qcop_subscriber_close(sub);
    CHECK(pclose(s) == 0);
    qcop_subscriber *none;
    CHECK_RC(qcop_subscriber_open(&none, NULL, "capi/nostream", 0), QCOP_E_REFUSED);
}

static void test_segments_and_semaphores(void) {
    qcop_segment *seg;
    CHECK_RC(qcop_segment_open(&seg, NULL, "capi-seg", 64, 0, QCOP_SEG_CREATE), QCOP_OK);
    CHECK(qcop_segment_size(seg) == 64);
    qcop_segment *dup;
    CHECK_RC(qcop_segment_open(&dup, NULL, "capi-seg", 64, 0, QCOP_SEG_CREATE), QCOP_E_EXISTS);
    CHECK_RC(qcop_segment_open(&dup, NULL, "capi-none", 0, 0, QCOP_SEG_ATTACH), QCOP_E_NOTFOUND);
    CHECK_RC(qcop_segment_open(&dup, NULL, "capi-seg", 0, 0, 0), QCOP_E_INVAL);
    CHECK(qcop_segment_data(seg) == NULL);
    int died = 7;
    CHECK_RC(qcop_segment_lock(seg, -1, &died), 1);
    CHECK(died == 0);
    CHECK_RC(qcop_segment_lock(seg, 0, NULL), QCOP_E_STATE);
    unsigned char *data = qcop_segment_data(seg);
    CHECK(data != NULL);
    memcpy(data, "\xca\xfe", 2);
    CHECK_RC(qcop_segment_write(seg, 2, "\x01", 1), QCOP_OK);
    CHECK_RC(qcop_segment_write(seg, 64, "\x01", 1), QCOP_E_SHMINVAL);
    CHECK_RC(qcop_segment_unlock(seg), QCOP_OK);
    CHECK_RC(qcop_segment_unlock(seg), QCOP_E_STATE);

    /* The Rust peer reads what C wrote, and writes what C reads. */
    char out[256];
    CHECK(qcop_tool(out, sizeof out, "shm read capi-seg 0 3") == 0);
    if (strstr(out, "cafe01") == NULL) printf("  shm read: %s\n", out);
    CHECK(strstr(out, "cafe01") != NULL);
    CHECK(qcop_tool(NULL, 0, "shm write capi-seg 4 0a0b") == 0);
    unsigned char back[2];
    CHECK_RC(qcop_segment_read(seg, 4, back, 2), QCOP_OK);
    CHECK(back[0] == 0x0a && back[1] == 0x0b);

    /* A holder that dies does not block the segment: the lock comes back marked. */
    pid_t child = fork();
    if (child == 0) {
        qcop_segment *s2;
        if (qcop_segment_open(&s2, NULL, "capi-seg", 0, 0, QCOP_SEG_ATTACH) != QCOP_OK) _exit(2);
        if (qcop_segment_lock(s2, -1, NULL) != 1) _exit(3);
        kill(getpid(), SIGKILL); /* dies holding the lock, as in a crash */
        _exit(4);
    }
    int st;
    waitpid(child, &st, 0);
    if (!WIFSIGNALED(st)) printf("  child exited with %d\n", WEXITSTATUS(st));
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    died = 0;
    CHECK_RC(qcop_segment_lock(seg, 10000, &died), 1);
    CHECK(died == 1);
    CHECK_RC(qcop_segment_unlock(seg), QCOP_OK);
    qcop_segment_close(seg);

    qcop_semaphore *sem;
    CHECK_RC(qcop_semaphore_open(&sem, NULL, "capi-none", 0, 0), QCOP_E_NOTFOUND);
    CHECK_RC(qcop_semaphore_open(&sem, NULL, "capi-sem", 1, QCOP_SEM_CREATE | QCOP_SEM_UNDO), QCOP_OK);
    CHECK(qcop_semaphore_value(sem) == 1);
    CHECK_RC(qcop_semaphore_acquire(sem, 0), 1);
    CHECK_RC(qcop_semaphore_acquire(sem, 0), 0);
    CHECK_RC(qcop_semaphore_acquire(sem, 100), 0);
    CHECK_RC(qcop_semaphore_release(sem, 1), QCOP_OK);
    CHECK_RC(qcop_semaphore_acquire(sem, -1), 1);
    CHECK_RC(qcop_semaphore_release(sem, 1), QCOP_OK);
    CHECK(qcop_semaphore_value(sem) == 1);
    qcop_semaphore_close(sem);

    qcop_segment *p;
    CHECK_RC(qcop_segment_open(&p, NULL, "capi-keep", 8, 0, QCOP_SEG_CREATE | QCOP_SHM_PERSISTENT), QCOP_OK);
    qcop_segment_close(p);
    CHECK_RC(qcop_segment_open(&p, NULL, "capi-keep", 0, 0, QCOP_SEG_ATTACH | QCOP_SEG_READONLY), QCOP_OK);
    CHECK_RC(qcop_segment_write(p, 0, "x", 1), QCOP_E_DENIED);
    qcop_segment_close(p);
    CHECK_RC(qcop_shm_remove(NULL, "capi-keep", 0), QCOP_OK);
    CHECK_RC(qcop_segment_open(&p, NULL, "capi-keep", 0, 0, QCOP_SEG_ATTACH), QCOP_E_NOTFOUND);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_capi QCOPD QCOP DIR\n");
        return 2;
    }
    qcopd_bin = argv[1];
    qcop_bin = argv[2];
    dir = argv[3];
    snprintf(sock, sizeof sock, "%s/qcopd.sock", dir);
    setenv("QCOP_SOCKET", sock, 1);
    start_daemon();

    run("connect errors", test_connect_errors);
    run("arguments: every type built and read back", test_args_round_trip);
    run("send and receive, queries", test_send_recv_self);
    run("errors: oversized payload, bad names, wrong use", test_errors);
    run("interop with the qcop tool both ways", test_cli_interop);
    run("calls both ways, error replies, timeouts", test_calls);
    run("poll loop on the descriptor", test_poll_loop);
    run("daemon gone, restarted, reconnect", test_daemon_gone_and_reconnect);
    run("shared-memory streams with a Rust peer both ways", test_shm_streams);
    run("segments and semaphores", test_segments_and_semaphores);

    stop_daemon();
    printf("capi: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
