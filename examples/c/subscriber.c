#define _POSIX_C_SOURCE 200809L
/* Subscribes to channels (default QPE/System) and prints each message, driven by a poll
 * loop on the connection's descriptor, as a glib or Qt event loop would drive it.
 * Build: cc subscriber.c $(pkg-config --cflags --libs qcop)
 * Run:   ./subscriber QPE/Audio   then: qcop send QPE/Audio 'setVolume(int)' 42 */
#include <qcop.h>
#include <poll.h>
#include <stdio.h>

int main(int argc, char **argv) {
    qcop_conn *conn;
    if (qcop_connect(&conn, NULL, "c-subscriber", 0, QCOP_RECONNECT) != QCOP_OK) {
        fprintf(stderr, "subscriber: %s\n", qcop_strerror(NULL));
        return 1;
    }
    for (int i = 1; i < argc || i == 1; i++) {
        const char *channel = argc > 1 ? argv[i] : "QPE/System";
        if (qcop_subscribe(conn, channel, 0) != QCOP_OK) {
            fprintf(stderr, "subscribe %s: %s\n", channel, qcop_strerror(conn));
            return 1;
        }
    }
    for (;;) {
        /* The descriptor changes after a reconnect: ask for it every time. */
        struct pollfd p = {.fd = qcop_fd(conn), .events = POLLIN};
        poll(&p, 1, 1000);
        qcop_message *m;
        int rc;
        while ((rc = qcop_recv(conn, 0, &m)) == 1) {
            size_t len;
            qcop_message_data(m, &len);
            printf("%s %s (%zu bytes)\n", qcop_message_channel(m), qcop_message_name(m), len);
            fflush(stdout);
            qcop_message_free(m);
        }
        if (rc < 0) {
            fprintf(stderr, "subscriber: %s\n", qcop_strerror(conn));
            qcop_disconnect(conn);
            return 1;
        }
    }
}
