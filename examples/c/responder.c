/* Answers add(int,int) calls on demo/calc with sum(int); anything else gets an error.
 * Build: cc responder.c $(pkg-config --cflags --libs qcop)
 * Run:   ./responder &   then: ./caller 2 3   or: qcop call demo/calc 'add(int,int)' 2 3 */
#include <qcop.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    qcop_conn *conn;
    if (qcop_connect(&conn, NULL, "c-responder", 0, QCOP_RECONNECT) != QCOP_OK ||
        qcop_subscribe(conn, "demo/calc", 0) != QCOP_OK) {
        fprintf(stderr, "responder: %s\n", qcop_strerror(NULL));
        return 1;
    }
    qcop_message *m;
    while (qcop_recv(conn, -1, &m) == 1) {
        if (qcop_message_is_call(m)) {
            size_t len;
            const uint8_t *p = qcop_message_data(m, &len);
            qcop_reader *r = qcop_reader_new(p, len);
            int32_t a, b;
            if (strcmp(qcop_message_name(m), "add(int,int)") == 0 &&
                qcop_reader_int(r, &a) == QCOP_OK && qcop_reader_int(r, &b) == QCOP_OK) {
                qcop_args *sum = qcop_args_new();
                qcop_args_int(sum, a + b);
                const void *data = qcop_args_data(sum, &len);
                qcop_reply(conn, m, "sum(int)", data, len);
                qcop_args_free(sum);
            } else {
                qcop_reply_error(conn, m, "unknown method");
            }
            qcop_reader_free(r);
        }
        qcop_message_free(m);
    }
    fprintf(stderr, "responder: %s\n", qcop_strerror(conn));
    qcop_disconnect(conn);
    return 1;
}
