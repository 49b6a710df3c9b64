/*
 * The C API against a hostile writer, and its edges. A ring is made through the C API; a
 * second mapping of its SysV segment (shmat, as any process with access could) rewrites record
 * headers under the consumer. Every receive must then fail with SHMPIPE_STATUS_CORRUPTED and
 * the right corruption kind, without writing the caller's buffer or handing out a pointer, and
 * a length rewritten under a lent message must not change the range already handed out.
 * Then: NULL pointers, impossible lengths, calls in the wrong state, buffers too small.
 * Prints one line per check; exits 0 if all passed, 1 at the first failure.
 */
#include <shmpipe.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/shm.h>

#define SLOT_ARRAY 384 /* docs/LAYOUT.md: slot 0 starts here; a record header is len, kind */

static int failures;

static void expect(int ok, const char *what) {
    printf("%s: %s\n", ok ? "ok" : "FAILED", what);
    if (!ok) {
        failures++;
        printf("  last error: %s\n", shmpipe_last_error_message());
    }
}

/* A ring of 16 slots of 64 bytes with both sides claimed here, and a second mapping of its
 * segment: the hostile writer's view. */
struct fixture {
    shmpipe_ring *ring;
    shmpipe_producer *tx;
    shmpipe_consumer *rx;
    volatile uint32_t *slot0; /* the record header of slot 0, through the second mapping */
    void *mapping;
};

static struct fixture make(void) {
    struct fixture f;
    shmpipe_config cfg = {0};
    cfg.slot_size = 64;
    cfg.slot_count = 16;
    shmpipe_info info;
    if (shmpipe_ring_create_key(0, &cfg, &f.ring) != SHMPIPE_STATUS_OK ||
        shmpipe_ring_info(f.ring, &info) != SHMPIPE_STATUS_OK ||
        shmpipe_ring_producer(f.ring, &f.tx) != SHMPIPE_STATUS_OK ||
        shmpipe_ring_consumer(f.ring, &f.rx) != SHMPIPE_STATUS_OK) {
        fprintf(stderr, "fixture: %s\n", shmpipe_last_error_message());
        exit(1);
    }
    f.mapping = shmat(info.shmid, NULL, 0);
    if (f.mapping == (void *)-1) {
        perror("shmat");
        exit(1);
    }
    f.slot0 = (volatile uint32_t *)((uint8_t *)f.mapping + SLOT_ARRAY);
    return f;
}

static void done(struct fixture *f) {
    shmdt(f->mapping);
    shmpipe_producer_close(f->tx);
    shmpipe_consumer_close(f->rx);
    shmpipe_ring_remove(f->ring);
    shmpipe_ring_close(f->ring);
}

/* A record header rewritten to `len`, `kind` after "hello" was published: every receive fails
 * with `kind_expected`, touching neither the buffer nor the out-parameters. */
static void corrupt_header(uint32_t len, uint32_t kind, shmpipe_corruption expected, const char *what) {
    struct fixture f = make();
    char line[200];
    expect(shmpipe_producer_try_send(f.tx, (const uint8_t *)"hello", 5) == SHMPIPE_STATUS_OK, "send hello");
    f.slot0[0] = len;
    f.slot0[1] = kind;
    uint8_t buf[16];
    memset(buf, 0xee, sizeof buf);
    size_t got = 12345;
    shmpipe_status s = shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &got);
    snprintf(line, sizeof line, "%s: try_recv is CORRUPTED", what);
    expect(s == SHMPIPE_STATUS_CORRUPTED, line);
    snprintf(line, sizeof line, "%s: corruption kind %d", what, (int)expected);
    expect(shmpipe_last_corruption() == expected, line);
    int untouched = got == 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        untouched &= buf[i] == 0xee;
    }
    snprintf(line, sizeof line, "%s: buffer and length untouched", what);
    expect(untouched, line);
    const uint8_t *data = NULL;
    got = 12345;
    s = shmpipe_consumer_try_lend(f.rx, &data, &got);
    snprintf(line, sizeof line, "%s: try_lend is CORRUPTED (sticky), no pointer", what);
    expect(s == SHMPIPE_STATUS_CORRUPTED && data == NULL && got == 12345, line);
    s = shmpipe_consumer_recv_timeout(f.rx, buf, sizeof buf, &got, 1000000);
    snprintf(line, sizeof line, "%s: recv_timeout is CORRUPTED at once", what);
    expect(s == SHMPIPE_STATUS_CORRUPTED, line);
    done(&f);
}

int main(void) {
    /* Lengths and kinds a hostile writer may put in the header of a published record. */
    corrupt_header(0x7fffffff, 1, SHMPIPE_CORRUPTION_RECORD_TOO_LONG, "length past the maximum");
    corrupt_header(200, 1, SHMPIPE_CORRUPTION_RECORD_BEYOND_TAIL, "length past the tail");
    corrupt_header(5, 7, SHMPIPE_CORRUPTION_UNKNOWN_KIND, "unknown kind");
    corrupt_header(16 * 64 - 8, 2, SHMPIPE_CORRUPTION_PADDING_WITHOUT_MESSAGE, "padding at slot 0");

    /* A length rewritten while a message is lent: the range handed out stays the one
     * validated; releasing it and the stream go on. */
    struct fixture f = make();
    const uint8_t *data;
    size_t len;
    expect(shmpipe_producer_try_send(f.tx, (const uint8_t *)"hello", 5) == SHMPIPE_STATUS_OK, "send hello");
    expect(shmpipe_consumer_try_lend(f.rx, &data, &len) == SHMPIPE_STATUS_OK && len == 5 &&
               memcmp(data, "hello", 5) == 0,
           "lend hello");
    f.slot0[0] = 0x7fffffff;
    expect(len == 5, "the lent length is the validated one");
    expect(shmpipe_consumer_release(f.rx) == SHMPIPE_STATUS_OK, "release after the rewrite");
    expect(shmpipe_producer_try_send(f.tx, (const uint8_t *)"again", 5) == SHMPIPE_STATUS_OK, "send again");
    uint8_t buf[64];
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_OK && len == 5 &&
               memcmp(buf, "again", 5) == 0,
           "the next message is received");

    /* Edges of the boundary. */
    expect(shmpipe_producer_try_send(NULL, buf, 1) == SHMPIPE_STATUS_NULL_POINTER, "NULL producer");
    expect(shmpipe_producer_try_send(f.tx, NULL, 1) == SHMPIPE_STATUS_NULL_POINTER, "NULL data");
    expect(shmpipe_producer_try_send(f.tx, NULL, 0) == SHMPIPE_STATUS_OK, "NULL data of 0 bytes");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, NULL) == SHMPIPE_STATUS_NULL_POINTER, "NULL len");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_OK && len == 0,
           "the empty message");
    expect(shmpipe_producer_try_send(f.tx, buf, (size_t)-1) == SHMPIPE_STATUS_INVALID_ARGUMENT,
           "a negative length");
    expect(shmpipe_producer_try_send(f.tx, buf, 4096) == SHMPIPE_STATUS_TOO_LARGE, "too large");
    expect(strlen(shmpipe_last_error_message()) > 0, "a message for the last failure");
    expect(shmpipe_last_error() == SHMPIPE_STATUS_TOO_LARGE, "the last failure's code");

    expect(shmpipe_producer_try_send(f.tx, (const uint8_t *)"twelve bytes", 12) == SHMPIPE_STATUS_OK, "send 12");
    len = 0;
    expect(shmpipe_consumer_try_recv(f.rx, buf, 4, &len) == SHMPIPE_STATUS_BUFFER_TOO_SMALL && len == 12,
           "a buffer too small says the length needed");
    expect(shmpipe_consumer_try_recv(f.rx, buf, len, &len) == SHMPIPE_STATUS_OK && len == 12,
           "then the message is received");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_EMPTY, "empty");

    uint8_t *slot;
    expect(shmpipe_producer_try_reserve(f.tx, 8, &slot) == SHMPIPE_STATUS_OK, "reserve 8");
    expect(shmpipe_producer_try_send(f.tx, buf, 1) == SHMPIPE_STATUS_BAD_STATE, "no send while a grant is open");
    expect(shmpipe_producer_commit(f.tx, 9) == SHMPIPE_STATUS_INVALID_ARGUMENT, "no commit past the grant");
    memcpy(slot, "in place", 8);
    expect(shmpipe_producer_commit(f.tx, 8) == SHMPIPE_STATUS_OK, "commit");
    expect(shmpipe_producer_commit(f.tx, 8) == SHMPIPE_STATUS_BAD_STATE, "no second commit");
    expect(shmpipe_consumer_try_lend(f.rx, &data, &len) == SHMPIPE_STATUS_OK && len == 8 &&
               memcmp(data, "in place", 8) == 0,
           "lend what was built in place");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_BAD_STATE,
           "no receive while a message is lent");
    expect(shmpipe_consumer_release(f.rx) == SHMPIPE_STATUS_OK, "release");
    expect(shmpipe_consumer_release(f.rx) == SHMPIPE_STATUS_BAD_STATE, "no second release");

    expect(shmpipe_producer_batch_begin(f.tx) == SHMPIPE_STATUS_OK, "batch begin");
    expect(shmpipe_producer_try_send(f.tx, (const uint8_t *)"b1", 2) == SHMPIPE_STATUS_OK, "batch send");
    expect(shmpipe_producer_send(f.tx, (const uint8_t *)"b2", 2) == SHMPIPE_STATUS_BAD_STATE,
           "no blocking send in a batch");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_EMPTY,
           "a batch is invisible before its publish");
    expect(shmpipe_producer_batch_end(f.tx) == SHMPIPE_STATUS_OK, "batch end");
    expect(shmpipe_consumer_try_recv(f.rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_OK && len == 2,
           "and visible after it");

    expect(shmpipe_producer_set_wait_strategy(f.tx, 99) == SHMPIPE_STATUS_INVALID_ARGUMENT, "unknown wait strategy");
    expect(shmpipe_consumer_set_wait_strategy(f.rx, SHMPIPE_WAIT_SLEEP) == SHMPIPE_STATUS_OK, "wait strategy");
    expect(shmpipe_consumer_recv_timeout(f.rx, buf, sizeof buf, &len, 2000000) == SHMPIPE_STATUS_TIMEOUT,
           "a receive times out");
    expect(strcmp(shmpipe_strerror(9999), "unknown status code") == 0, "strerror of an unknown code");
    expect(shmpipe_ring_stats(f.ring, NULL) == SHMPIPE_STATUS_NULL_POINTER, "NULL stats");
    shmpipe_stats stats;
    expect(shmpipe_ring_stats(f.ring, &stats) == SHMPIPE_STATUS_OK && stats.sent == 6 && stats.received == 6,
           "stats count what was sent and received");
    done(&f);

    shmpipe_config bad = {0};
    bad.flags = 1u << 20;
    shmpipe_ring *ring = NULL;
    expect(shmpipe_ring_create_heap(&bad, &ring) == SHMPIPE_STATUS_INVALID_ARGUMENT && ring == NULL,
           "unknown config flags");
    expect(shmpipe_ring_open_path(NULL, NULL, &ring) == SHMPIPE_STATUS_NULL_POINTER, "NULL path");
    expect(shmpipe_ring_open_path("/nonexistent/shmpipe-ring", NULL, &ring) == SHMPIPE_STATUS_FILE_NOT_FOUND,
           "no ring at the path");

    /* Closing the producer ends the stream; the consumer then sees it. */
    expect(shmpipe_ring_create_heap(NULL, &ring) == SHMPIPE_STATUS_OK, "heap ring");
    shmpipe_producer *tx;
    shmpipe_consumer *rx;
    expect(shmpipe_ring_producer(ring, &tx) == SHMPIPE_STATUS_OK, "producer");
    expect(shmpipe_ring_producer(ring, &tx) == SHMPIPE_STATUS_ROLE_TAKEN, "one producer per ring");
    expect(shmpipe_ring_consumer(ring, &rx) == SHMPIPE_STATUS_OK, "consumer");
    shmpipe_ring_close(ring); /* the sides keep the memory */
    expect(shmpipe_producer_send(tx, (const uint8_t *)"last", 4) == SHMPIPE_STATUS_OK, "send last");
    expect(shmpipe_producer_close(tx) == SHMPIPE_STATUS_OK, "clean close");
    expect(shmpipe_consumer_recv(rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_OK && len == 4, "receive last");
    expect(shmpipe_consumer_recv(rx, buf, sizeof buf, &len) == SHMPIPE_STATUS_DISCONNECTED, "end of stream");
    expect(shmpipe_consumer_close(rx) == SHMPIPE_STATUS_OK, "consumer close");

    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
