/* The C half of libqcop's round-trip benchmark (capi/bench/run.sh): the exchange of
 * capi/examples/rust_rr.rs through the C API.
 * rr SOCKET COUNT: a child echoes ping() on bench/ping as pong() on bench/pong; this process
 * times COUNT round trips and prints the mean in nanoseconds.
 * rr SOCKET COUNT SUBSCRIBERS: broadcast; SUBSCRIBERS children each receive COUNT messages on
 * bench/bcast and say done() on bench/done; prints the mean time per message sent. */
#define _DEFAULT_SOURCE
#include <qcop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static qcop_conn *connect_to(const char *sock) {
    qcop_conn *c;
    if (qcop_connect(&c, sock, "bench", 0, 0) != QCOP_OK) {
        fprintf(stderr, "rr: %s\n", qcop_strerror(NULL));
        exit(1);
    }
    return c;
}

static void echo(const char *sock) {
    qcop_conn *c = connect_to(sock);
    qcop_subscribe(c, "bench/ping", 0);
    qcop_message *m;
    while (qcop_recv(c, -1, &m) == 1) {
        if (strcmp(qcop_message_name(m), "stop()") == 0) break;
        size_t len;
        const uint8_t *p = qcop_message_data(m, &len);
        qcop_send(c, "bench/pong", "pong()", p, len);
        qcop_message_free(m);
    }
    qcop_disconnect(c);
    exit(0);
}

static int round_trip(qcop_conn *c, const char *payload) {
    qcop_message *m;
    if (qcop_send(c, "bench/ping", "ping()", payload, 16) != QCOP_OK) return -1;
    if (qcop_recv(c, -1, &m) != 1) return -1;
    qcop_message_free(m);
    return 0;
}

static void receiver(const char *sock, long count) {
    qcop_conn *c = connect_to(sock);
    qcop_subscribe(c, "bench/bcast", 0);
    qcop_message *m;
    /* Messages the daemon dropped for a slow reader count too (qcop_lost). */
    for (long got = 0; got + (long)qcop_lost(c) < count && qcop_recv(c, 5000, &m) == 1; got++)
        qcop_message_free(m);
    qcop_send(c, "bench/done", "done()", NULL, 0);
    qcop_flush(c);
    qcop_disconnect(c);
    exit(0);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int broadcast(const char *sock, long count, int subscribers) {
    qcop_conn *c = connect_to(sock);
    qcop_subscribe(c, "bench/done", 0);
    for (int i = 0; i < subscribers; i++)
        if (fork() == 0) receiver(sock, count);
    qcop_channels *l;
    for (unsigned n = 0; n < (unsigned)subscribers;) {
        usleep(5000);
        if (qcop_channels_list(c, &l) != QCOP_OK) return 1;
        for (size_t i = 0; i < qcop_channels_count(l); i++)
            if (strcmp(qcop_channels_name(l, i), "bench/bcast") == 0) n = qcop_channels_subscribers(l, i);
        qcop_channels_free(l);
    }
    char payload[16] = {0};
    long long t0 = now_ns();
    for (long i = 0; i < count; i++)
        if (qcop_send(c, "bench/bcast", "sample()", payload, sizeof payload) != QCOP_OK) return 1;
    qcop_message *m;
    for (int done = 0; done < subscribers; done++)
        if (qcop_recv(c, -1, &m) != 1) return 1;
        else qcop_message_free(m);
    long long ns = (now_ns() - t0) / count;
    while (wait(NULL) > 0) {
    }
    qcop_disconnect(c);
    printf("%lld\n", ns);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) return 2;
    const char *sock = argv[1];
    long count = atol(argv[2]);
    if (argc == 4) return broadcast(sock, count, atoi(argv[3]));
    qcop_conn *c = connect_to(sock);
    qcop_subscribe(c, "bench/pong", 0);
    pid_t child = fork();
    if (child == 0) echo(sock);
    while (qcop_is_registered(c, "bench/ping") != 1) usleep(5000);
    char payload[16] = {0};
    for (long i = 0; i < count / 10; i++)
        if (round_trip(c, payload)) return 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++)
        if (round_trip(c, payload)) return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = ((long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)) / count;
    qcop_send(c, "bench/ping", "stop()", NULL, 0);
    qcop_flush(c);
    waitpid(child, NULL, 0);
    qcop_disconnect(c);
    printf("%lld\n", ns);
    return 0;
}
