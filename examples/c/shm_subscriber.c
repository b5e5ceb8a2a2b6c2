/* Maps the shared-memory stream of sensors/c and reads samples in place until the stream
 * ends (or COUNT arrived), checking their order.
 * Build: cc shm_subscriber.c $(pkg-config --cflags --libs qcop)
 * Run:   ./shm_subscriber 100 &   ./shm_publisher 100 */
#include <qcop.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long count = argc > 1 ? atol(argv[1]) : -1, got = 0;
    qcop_subscriber *sub;
    if (qcop_subscriber_open(&sub, NULL, "sensors/c", 60000) != QCOP_OK) {
        fprintf(stderr, "shm_subscriber: %s\n", qcop_strerror(NULL));
        return 1;
    }
    int rc;
    const void *data;
    size_t len;
    while ((count < 0 || got < count) && (rc = qcop_subscriber_borrow(sub, 5000, &data, &len, NULL)) == 1) {
        const unsigned char *b = data;
        long n = len == 4 ? (long)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3] : -1;
        if (qcop_subscriber_release(sub) != QCOP_OK || n != got) {
            fprintf(stderr, "shm_subscriber: sample %ld out of order (wanted %ld)\n", n, got);
            return 1;
        }
        got++;
    }
    printf("%ld samples, %llu lost\n", got, (unsigned long long)qcop_subscriber_lost(sub));
    qcop_subscriber_close(sub);
    return count < 0 || got == count ? 0 : 1;
}
