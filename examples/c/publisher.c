/* Sends setVolume(int) to QPE/Audio with QDataStream arguments, as a Qt program would.
 * Build: cc publisher.c $(pkg-config --cflags --libs qcop)
 * Run:   ./publisher 42        (watch it with: qcop watch QPE/Audio) */
#include <qcop.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    qcop_conn *conn;
    if (qcop_connect(&conn, NULL, "c-publisher", 0, 0) != QCOP_OK) {
        fprintf(stderr, "publisher: %s\n", qcop_strerror(NULL));
        return 1;
    }
    qcop_args *args = qcop_args_new();
    qcop_args_int(args, argc > 1 ? atoi(argv[1]) : 50);
    size_t len;
    const void *data = qcop_args_data(args, &len);
    int rc = qcop_send(conn, "QPE/Audio", "setVolume(int)", data, len);
    if (rc == QCOP_OK) rc = qcop_flush(conn); /* routed, or the daemon's refusal */
    if (rc != QCOP_OK) fprintf(stderr, "publisher: %s\n", qcop_strerror(conn));
    qcop_args_free(args);
    qcop_disconnect(conn);
    return rc == QCOP_OK ? 0 : 1;
}
