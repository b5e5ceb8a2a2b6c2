#define _POSIX_C_SOURCE 200809L
/* Opens a shared-memory stream on sensors/c and publishes COUNT samples, written in place
 * (zero copy): sample(int) with the sample's number.
 * Build: cc shm_publisher.c $(pkg-config --cflags --libs qcop)
 * Run:   ./shm_publisher 100 &   ./shm_subscriber 100   (or: qcop watch --shm sensors/c) */
#include <qcop.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 10;
    qcop_publisher *pub;
    if (qcop_publisher_open(&pub, NULL, "sensors/c", "sample(int)", 64, 256, 0) != QCOP_OK) {
        fprintf(stderr, "shm_publisher: %s\n", qcop_strerror(NULL));
        return 1;
    }
    while (qcop_publisher_subscribers(pub) < 1) {
        /* wait for a reader, so that none of the samples goes unread */
        struct timespec t = {0, 10000000};
        nanosleep(&t, NULL);
    }
    for (int i = 0; i < count; i++) {
        void *slot;
        size_t cap;
        if (qcop_publisher_loan(pub, 5000, &slot, &cap) != 1) {
            fprintf(stderr, "shm_publisher: no slot: %s\n", qcop_strerror(NULL));
            break;
        }
        unsigned char *b = slot; /* QDataStream int: big-endian */
        b[0] = (unsigned char)(i >> 24), b[1] = (unsigned char)(i >> 16);
        b[2] = (unsigned char)(i >> 8), b[3] = (unsigned char)i;
        qcop_publisher_commit(pub, 4);
    }
    qcop_publisher_close(pub); /* ends the stream */
    return 0;
}
