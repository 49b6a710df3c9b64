/*
 * A C producer or consumer of a shmpipe ring, against a peer in any language.
 *
 *   pipe send PLACE COUNT    sends COUNT messages, then closes (the end of stream)
 *   pipe recv PLACE COUNT    receives until the end of stream and checks there were COUNT
 *
 * PLACE says where the ring lives:
 *   key:0x2020          a SysV key (created by whichever side comes first)
 *   path:/dev/shm/name  a ring file (created by whichever side comes first)
 *   shmid:98306         an existing SysV segment, by id
 *   fd:3                an existing memfd ring, inherited as descriptor 3
 *   memfd-send:3        a new memfd ring, whose descriptor is sent over the Unix socket 3
 *
 * Message i has (i * 37) % 301 bytes, byte j being (i * 7 + j * 13) & 0xff, so the receiver
 * checks every byte. The sender alternates a copy (shmpipe_producer_send), a message built in
 * place (shmpipe_producer_reserve + commit) and batches of up to 8 published with one store;
 * the receiver alternates messages read in place (shmpipe_consumer_lend + release) and batches
 * of copies released with one store.
 *
 * Build: cc -std=c11 pipe.c $(pkg-config --cflags --libs shmpipe) -o pipe
 */
#include <shmpipe.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t msg_len(uint64_t i) { return (size_t)((i * 37) % 301); }
static uint8_t msg_byte(uint64_t i, size_t j) { return (uint8_t)(i * 7 + j * 13); }

static int fail(const char *what, shmpipe_status status) {
    fprintf(stderr, "pipe: %s: %s (%s)\n", what, shmpipe_strerror(status),
            shmpipe_last_error_message());
    return 1;
}

/* Opens (or creates) the ring PLACE names. */
static shmpipe_status open_place(const char *place, shmpipe_ring **ring) {
    const char *arg = strchr(place, ':');
    if (!arg) {
        return SHMPIPE_STATUS_INVALID_ARGUMENT;
    }
    arg++;
    shmpipe_config cfg = {0}; /* the defaults; a joiner takes the creator's shape */
    cfg.slot_size = 64;       /* 64 slots of 64 bytes: small, so that the ring is */
    cfg.slot_count = 64;      /* full and empty often */
    cfg.flags = SHMPIPE_JOIN_ANY_SHAPE;
    if (strncmp(place, "key:", 4) == 0) {
        return shmpipe_ring_open_or_create_key((int32_t)strtoll(arg, NULL, 0), &cfg, ring);
    }
    if (strncmp(place, "path:", 5) == 0) {
        return shmpipe_ring_open_or_create_path(arg, &cfg, ring);
    }
    if (strncmp(place, "shmid:", 6) == 0) {
        return shmpipe_ring_open_shmid((int32_t)strtol(arg, NULL, 0), &cfg, ring);
    }
    if (strncmp(place, "fd:", 3) == 0) {
        return shmpipe_ring_open_memfd((int)strtol(arg, NULL, 0), &cfg, ring);
    }
    if (strncmp(place, "memfd-send:", 11) == 0) {
        shmpipe_status s = shmpipe_ring_create_memfd(&cfg, ring);
        shmpipe_info info;
        if (s == SHMPIPE_STATUS_OK && (s = shmpipe_ring_info(*ring, &info)) == SHMPIPE_STATUS_OK) {
            s = shmpipe_memfd_send((int)strtol(arg, NULL, 0), info.memfd);
        }
        return s;
    }
    return SHMPIPE_STATUS_INVALID_ARGUMENT;
}

static int send_all(shmpipe_producer *tx, uint64_t count) {
    uint8_t msg[301];
    shmpipe_status s;
    for (uint64_t i = 0; i < count;) {
        size_t len = msg_len(i);
        for (size_t j = 0; j < len; j++) {
            msg[j] = msg_byte(i, j);
        }
        if (i % 3 == 0) { /* a copy into the ring, waiting for room */
            if ((s = shmpipe_producer_send(tx, msg, len)) != SHMPIPE_STATUS_OK) {
                return fail("send", s);
            }
            i++;
        } else if (i % 3 == 1) { /* built in place: one copy fewer */
            uint8_t *slot;
            if ((s = shmpipe_producer_reserve(tx, len, &slot)) != SHMPIPE_STATUS_OK) {
                return fail("reserve", s);
            }
            memcpy(slot, msg, len); /* slot .. slot + len is ours until the commit */
            if ((s = shmpipe_producer_commit(tx, len)) != SHMPIPE_STATUS_OK) {
                return fail("commit", s);
            }
            i++;
        } else { /* up to 8 messages made visible with one store; the rest as they come */
            if ((s = shmpipe_producer_batch_begin(tx)) != SHMPIPE_STATUS_OK) {
                return fail("batch_begin", s);
            }
            for (int k = 0; k < 8 && i < count; k++, i++) {
                len = msg_len(i);
                for (size_t j = 0; j < len; j++) {
                    msg[j] = msg_byte(i, j);
                }
                s = shmpipe_producer_try_send(tx, msg, len);
                if (s == SHMPIPE_STATUS_FULL) {
                    break; /* no room: message i goes out after the batch */
                }
                if (s != SHMPIPE_STATUS_OK) {
                    return fail("batch try_send", s);
                }
            }
            if ((s = shmpipe_producer_batch_end(tx)) != SHMPIPE_STATUS_OK) {
                return fail("batch_end", s);
            }
        }
    }
    return 0;
}

static int check(uint64_t i, const uint8_t *data, size_t len) {
    if (len != msg_len(i)) {
        fprintf(stderr, "pipe: message %" PRIu64 " has %zu bytes, expected %zu\n", i, len,
                msg_len(i));
        return 1;
    }
    for (size_t j = 0; j < len; j++) {
        if (data[j] != msg_byte(i, j)) {
            fprintf(stderr, "pipe: message %" PRIu64 " differs at byte %zu\n", i, j);
            return 1;
        }
    }
    return 0;
}

static int recv_all(shmpipe_consumer *rx, uint64_t count) {
    uint8_t buf[301];
    size_t len;
    uint64_t i = 0;
    for (;;) {
        /* Whatever is waiting, copied out, its slots freed with one store at the end. */
        shmpipe_status s = shmpipe_consumer_batch_begin(rx);
        if (s != SHMPIPE_STATUS_OK) {
            return fail("batch_begin", s);
        }
        int got = 0;
        while (got < 16 && (s = shmpipe_consumer_try_recv(rx, buf, sizeof buf, &len)) ==
                               SHMPIPE_STATUS_OK) {
            if (check(i++, buf, len)) {
                return 1;
            }
            got++;
        }
        shmpipe_status ended = shmpipe_consumer_batch_end(rx);
        if (ended != SHMPIPE_STATUS_OK) {
            return fail("batch_end", ended);
        }
        if (got > 0) {
            continue;
        }
        if (s != SHMPIPE_STATUS_EMPTY && s != SHMPIPE_STATUS_DISCONNECTED) {
            return fail("try_recv", s);
        }
        /* Nothing waiting: wait for the next message and read it in place. The bytes are
         * the producer's to change if it misbehaves: check() reads each byte once. */
        const uint8_t *data;
        s = shmpipe_consumer_lend(rx, &data, &len);
        if (s == SHMPIPE_STATUS_DISCONNECTED) {
            break; /* the end of stream: every message was received */
        }
        if (s != SHMPIPE_STATUS_OK) {
            return fail("lend", s);
        }
        int bad = check(i++, data, len);
        if ((s = shmpipe_consumer_release(rx)) != SHMPIPE_STATUS_OK) {
            return fail("release", s);
        }
        if (bad) {
            return 1;
        }
    }
    if (i != count) {
        fprintf(stderr, "pipe: received %" PRIu64 " messages, expected %" PRIu64 "\n", i, count);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "send") != 0 && strcmp(argv[1], "recv") != 0)) {
        fprintf(stderr, "usage: pipe send|recv PLACE COUNT\n");
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 0);
    shmpipe_ring *ring;
    shmpipe_status s = open_place(argv[2], &ring);
    if (s != SHMPIPE_STATUS_OK) {
        return fail(argv[2], s);
    }
    int rc;
    if (strcmp(argv[1], "send") == 0) {
        shmpipe_producer *tx;
        if ((s = shmpipe_ring_producer(ring, &tx)) != SHMPIPE_STATUS_OK) {
            return fail("producer", s);
        }
        rc = send_all(tx, count);
        /* Closing ends the stream; it fails if another process took the role from us. */
        s = shmpipe_producer_close(tx);
        if (rc == 0 && s != SHMPIPE_STATUS_OK) {
            rc = fail("close", s);
        }
    } else {
        shmpipe_consumer *rx;
        if ((s = shmpipe_ring_consumer(ring, &rx)) != SHMPIPE_STATUS_OK) {
            return fail("consumer", s);
        }
        rc = recv_all(rx, count);
        s = shmpipe_consumer_close(rx);
        if (rc == 0 && s != SHMPIPE_STATUS_OK) {
            rc = fail("close", s);
        }
    }
    shmpipe_ring_close(ring);
    if (rc == 0) {
        printf("%s %" PRIu64 " messages\n", argv[1], count);
    }
    return rc;
}
