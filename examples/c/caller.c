/* Calls add(int,int) on demo/calc and prints the reply (see responder.c).
 * Build: cc caller.c $(pkg-config --cflags --libs qcop)
 * Run:   ./caller 2 3 */
#include <qcop.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    qcop_conn *conn;
    if (qcop_connect(&conn, NULL, "c-caller", 0, 0) != QCOP_OK) {
        fprintf(stderr, "caller: %s\n", qcop_strerror(NULL));
        return 1;
    }
    qcop_args *args = qcop_args_new();
    qcop_args_int(args, argc > 1 ? atoi(argv[1]) : 2);
    qcop_args_int(args, argc > 2 ? atoi(argv[2]) : 3);
    size_t len;
    const void *data = qcop_args_data(args, &len);
    qcop_message *reply;
    int rc = qcop_call(conn, "demo/calc", "add(int,int)", data, len, 2000, &reply);
    if (rc == QCOP_OK) {
        const uint8_t *p = qcop_message_data(reply, &len);
        qcop_reader *r = qcop_reader_new(p, len);
        int32_t sum;
        if (qcop_reader_int(r, &sum) == QCOP_OK) printf("%s %d\n", qcop_message_name(reply), sum);
        qcop_reader_free(r);
        qcop_message_free(reply);
    } else {
        /* QCOP_E_NORESPONDER, QCOP_E_TIMEOUT, QCOP_E_REMOTE (the responder's text)... */
        fprintf(stderr, "caller: %s: %s\n", qcop_error_name(rc), qcop_strerror(conn));
    }
    qcop_args_free(args);
    qcop_disconnect(conn);
    return rc == QCOP_OK ? 0 : 1;
}
