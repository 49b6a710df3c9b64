/*
 * shmpipe.h: the C API of shmpipe, a lock-free single-producer/single-consumer ring buffer
 * between two processes (Linux only), in a System V segment, a memfd, a file or the heap.
 * Link with `pkg-config --cflags --libs shmpipe`, or in CMake `find_package(shmpipe)` and
 * `target_link_libraries(app shmpipe::shmpipe)`. C++: include shmpipe.hpp, a header-only
 * RAII wrapper over this API.
 *
 * HANDLES. A ring (`shmpipe_ring`) is made or joined by `shmpipe_ring_create_*`,
 * `shmpipe_ring_open_*` or `shmpipe_ring_open_or_create_*`, where the suffix says where it
 * lives: `_key` (a SysV key; `shmpipe_ftok` makes one from a path), `_shmid`, `_memfd` (by
 * descriptor: `shmpipe_ring_create_memfd` makes one, `shmpipe_ring_info` gives its fd, which
 * goes to the other process across fork/exec or over a Unix socket with
 * `shmpipe_memfd_send`/`shmpipe_memfd_recv`, and `shmpipe_ring_open_memfd` opens it), `_path`
 * (a file, e.g. in /dev/shm) or `_heap` (two threads). From a ring, `shmpipe_ring_producer`
 * and `shmpipe_ring_consumer` claim the two sides; each exists once per ring, across
 * processes. Free with `shmpipe_ring_close`, `shmpipe_producer_close` and
 * `shmpipe_consumer_close`, in any order. A ring handle may be shared by threads; a producer
 * or consumer handle is used by one thread at a time. A producer or consumer inherited across
 * fork fails every call with SHMPIPE_STATUS_WRONG_PROCESS (the child claims its own).
 *
 * NAMES OF CALLS. `try_` calls never block (SHMPIPE_STATUS_FULL, SHMPIPE_STATUS_EMPTY); plain ones wait as
 * the side's wait strategy says; `_timeout` ones wait at most `timeout_ns` nanoseconds
 * (SHMPIPE_STATUS_TIMEOUT). A dead peer ends a wait with SHMPIPE_STATUS_PEER_DIED within about 20 ms, never a
 * hang. The producer closing is the end of stream: the consumer receives every message, then
 * SHMPIPE_STATUS_DISCONNECTED.
 *
 * ERRORS. Every call that can fail returns a `shmpipe_status`: SHMPIPE_STATUS_OK (0) or a code that
 * mirrors a kind of the Rust library's errors. `shmpipe_strerror(code)` is a static text for a
 * code; `shmpipe_last_error_message()` the detailed message of the last failed call on this
 * thread (which ring, which values), and `shmpipe_last_corruption()` what a peer got wrong for
 * SHMPIPE_STATUS_CORRUPTED. NULL pointers are SHMPIPE_STATUS_NULL_POINTER, impossible lengths and flags
 * SHMPIPE_STATUS_INVALID_ARGUMENT; no call lets a Rust panic unwind into C (SHMPIPE_STATUS_PANIC). Out
 * parameters are written only on success, except the length of SHMPIPE_STATUS_BUFFER_TOO_SMALL.
 *
 * TRUST. The other process is not trusted. Every index and record header read from the shared
 * memory is read once and validated against this side's private state before use; a peer (or
 * a third process) that breaks the protocol makes the side fail with SHMPIPE_STATUS_CORRUPTED, at
 * once and on every later call, never an out-of-bounds access, a crash or a hang. A receive
 * copies into the caller's buffer at most its capacity: a message that does not fit stays in
 * the ring, SHMPIPE_STATUS_BUFFER_TOO_SMALL, and the length argument says how many bytes it needs.
 * A ring owned by another user, or ours with a mode wider than asked for (0600 by default), is
 * refused on open (SHMPIPE_STATUS_FOREIGN_OWNER) unless its owner is accepted
 * (`shmpipe_config.accept_owners`).
 *
 * ZERO COPY. `shmpipe_producer_try_reserve` (and `_reserve`, `_reserve_timeout`) give a
 * pointer to write a message in place, sent by `shmpipe_producer_commit`;
 * `shmpipe_consumer_try_lend` (and `_lend`, `_lend_timeout`) give a pointer and a length to
 * read one in place, until `shmpipe_consumer_release`. The contract of these pointers:
 *   - The library validated the record's bounds against its private copy of the ring's shape,
 *     so `[data, data + len)` lies inside this process's mapping of the ring, and stays mapped
 *     and in place until the commit, abort, release or close. A peer cannot make the range point
 *     anywhere else, nor make it longer: the length is the one validated, not re-read.
 *   - The bytes themselves are shared memory that the peer's process can write at any time if
 *     it breaks the protocol (an honest peer never touches them while you hold them). So a
 *     hostile peer can change a lent message while you read it, or a reserved one while you
 *     write it. Read each byte once, or copy out first what you validate (a length field, a
 *     string you check for UTF-8): a check made on the ring and acted on after a second read
 *     is a check of nothing (a double fetch). What a copy put into private memory cannot
 *     change. `shmpipe_consumer_try_recv` does that copy for you.
 *   - Under a truncated ring file (or a huge page lost), the pages read as zeros rather than
 *     raising SIGBUS, and the side's next call fails with SHMPIPE_STATUS_CORRUPTED (memory lost).
 *   - Until the grant or lend ends, only its ending call (and close) is allowed on that side:
 *     others return SHMPIPE_STATUS_BAD_STATE.
 *
 * BATCHES. `shmpipe_producer_batch_begin` makes the messages sent until
 * `shmpipe_producer_batch_publish`/`_batch_end` visible together with one store;
 * `shmpipe_consumer_batch_begin` releases the slots of the messages received until
 * `shmpipe_consumer_batch_release`/`_batch_end` with one store.
 *
 * The protocol and the byte layout are docs/DESIGN.md and docs/LAYOUT.md of the repository.
 *
 * Example (error handling shortened):
 *
 *     shmpipe_ring *ring;
 *     shmpipe_producer *tx;
 *     if (shmpipe_ring_open_or_create_key(0x2020, NULL, &ring) != SHMPIPE_STATUS_OK ||
 *         shmpipe_ring_producer(ring, &tx) != SHMPIPE_STATUS_OK) {
 *         fprintf(stderr, "shmpipe: %s\n", shmpipe_last_error_message());
 *         return 1;
 *     }
 *     shmpipe_producer_send(tx, "hello", 5);
 *     shmpipe_producer_close(tx);  // the consumer sees the end of stream
 *     shmpipe_ring_close(ring);
 */

#ifndef SHMPIPE_H
#define SHMPIPE_H

/* Generated by cbindgen from capi/src with capi/cbindgen.toml; do not edit by hand:
   SHMPIPE_BLESS=1 cargo test -p shmpipe-c --test header rewrites it, and the test fails when it is stale. */

#include <stdint.h>
#include <stddef.h>

/**
 * `shmpipe_*_set_wait_strategy`: spin until the peer acts (lowest latency, a CPU busy).
 */
#define SHMPIPE_WAIT_SPIN 0

/**
 * `shmpipe_*_set_wait_strategy`: spin briefly, then sleep on the futex (the default).
 */
#define SHMPIPE_WAIT_SPIN_THEN_SLEEP 1

/**
 * `shmpipe_*_set_wait_strategy`: sleep on the futex at once.
 */
#define SHMPIPE_WAIT_SLEEP 2

/**
 * `shmpipe_config.flags`: the ring stays until removed (`shmpipe_ring_remove`), instead of
 * going once both roles were claimed and both sides are gone.
 */
#define SHMPIPE_PERSISTENT 1

/**
 * `shmpipe_config.flags`: create the ring on huge pages (or fail with `SHMPIPE_STATUS_HUGE_PAGES`).
 */
#define SHMPIPE_HUGE_PAGES 2

/**
 * `shmpipe_config.flags`: an opener accepts a ring on huge pages made by another process.
 */
#define SHMPIPE_ACCEPT_HUGE_PAGES 4

/**
 * `shmpipe_config.flags`: the shape fields set are for creating only; an opener joins a ring
 * of any shape.
 */
#define SHMPIPE_JOIN_ANY_SHAPE 8

/**
 * What a call did. `SHMPIPE_STATUS_OK` (0) is success; every other value is a failure, and
 * `shmpipe_last_error_message` then describes it. The codes mirror the kinds of the Rust
 * library's errors (`shmpipe::Error`), plus a few of the C boundary (`NULL_POINTER`,
 * `INVALID_ARGUMENT`, `BAD_STATE`, `PANIC`). Values are stable; new ones may be added.
 */
enum shmpipe_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Success.
   */
  SHMPIPE_STATUS_OK = 0,
  /**
   * The ring has no room for the message now (non-blocking send or reserve).
   */
  SHMPIPE_STATUS_FULL = 1,
  /**
   * No message is waiting (non-blocking receive or lend).
   */
  SHMPIPE_STATUS_EMPTY = 2,
  /**
   * A blocking call's timeout passed first.
   */
  SHMPIPE_STATUS_TIMEOUT = 3,
  /**
   * The peer closed the ring. For a consumer: end of stream, every message was received.
   */
  SHMPIPE_STATUS_DISCONNECTED = 4,
  /**
   * The peer's process died (confirmed by the kernel); a consumer gets it after receiving
   * every message the producer published.
   */
  SHMPIPE_STATUS_PEER_DIED = 5,
  /**
   * The message is longer than the ring's maximum message size.
   */
  SHMPIPE_STATUS_TOO_LARGE = 6,
  /**
   * The next message does not fit in the buffer given; it stays in the ring and the length
   * argument holds the size needed.
   */
  SHMPIPE_STATUS_BUFFER_TOO_SMALL = 7,
  /**
   * The peer (or a third process) broke the protocol: this side is poisoned and every later
   * call on it fails the same way. `shmpipe_last_corruption` says what was wrong.
   */
  SHMPIPE_STATUS_CORRUPTED = 8,
  /**
   * The handle was claimed in another process (this one is a forked child).
   */
  SHMPIPE_STATUS_WRONG_PROCESS = 9,
  /**
   * A range outside a message.
   */
  SHMPIPE_STATUS_OUT_OF_BOUNDS = 10,
  /**
   * A segment already exists at the key.
   */
  SHMPIPE_STATUS_EXISTS = 20,
  /**
   * No ring at this key or shmid.
   */
  SHMPIPE_STATUS_NOT_FOUND = 21,
  /**
   * The kernel refused access to the segment.
   */
  SHMPIPE_STATUS_PERMISSION_DENIED = 22,
  /**
   * The ring belongs to another user, or its mode is wider than the configuration allows.
   */
  SHMPIPE_STATUS_FOREIGN_OWNER = 23,
  /**
   * A system limit (`SHMMAX`, `SHMMNI`, memory) was reached.
   */
  SHMPIPE_STATUS_SYSTEM_LIMIT = 24,
  /**
   * `ftok` failed (the path does not exist, or the id is 0).
   */
  SHMPIPE_STATUS_FTOK = 25,
  /**
   * Another system call failed; the message names it and the errno.
   */
  SHMPIPE_STATUS_SYS = 26,
  /**
   * A file operation on a ring file or lock file failed.
   */
  SHMPIPE_STATUS_FILE = 27,
  /**
   * Something already exists at the path.
   */
  SHMPIPE_STATUS_FILE_EXISTS = 28,
  /**
   * No ring file at the path.
   */
  SHMPIPE_STATUS_FILE_NOT_FOUND = 29,
  /**
   * An impossible shape or option in the configuration.
   */
  SHMPIPE_STATUS_INVALID_CONFIG = 30,
  /**
   * The memory is not a shmpipe ring.
   */
  SHMPIPE_STATUS_NOT_SHMPIPE = 31,
  /**
   * A ring of a layout version this build does not speak.
   */
  SHMPIPE_STATUS_VERSION_MISMATCH = 32,
  /**
   * The memory is smaller than its header says.
   */
  SHMPIPE_STATUS_SEGMENT_TOO_SMALL = 33,
  /**
   * A header field is invalid (or the descriptor is not a sealed memfd).
   */
  SHMPIPE_STATUS_BAD_HEADER = 34,
  /**
   * The creator did not finish initialising the ring in time.
   */
  SHMPIPE_STATUS_INIT_TIMEOUT = 35,
  /**
   * The key's or file's lock stayed held by another process.
   */
  SHMPIPE_STATUS_LOCKED = 36,
  /**
   * The ring differs from a shape field the configuration set.
   */
  SHMPIPE_STATUS_CONFIG_MISMATCH = 37,
  /**
   * The ring carries typed messages of another type.
   */
  SHMPIPE_STATUS_TYPE_MISMATCH = 38,
  /**
   * Another live process (or handle) holds the role; a dead holder's role can be taken
   * over (`shmpipe_ring_take_over_producer`, `shmpipe_ring_take_over_consumer`).
   */
  SHMPIPE_STATUS_ROLE_TAKEN = 39,
  /**
   * The kernel refused huge pages, or could not back one.
   */
  SHMPIPE_STATUS_HUGE_PAGES = 40,
  /**
   * The ring is on huge pages and the configuration does not accept them.
   */
  SHMPIPE_STATUS_HUGE_PAGES_NOT_ACCEPTED = 41,
  /**
   * `SIGBUS` is blocked on this thread, and the ring's memory could vanish under it.
   */
  SHMPIPE_STATUS_SIGBUS_BLOCKED = 42,
  /**
   * Locking the ring's memory (`mlock`) failed.
   */
  SHMPIPE_STATUS_LOCK_MEMORY = 43,
  /**
   * A required pointer argument was NULL.
   */
  SHMPIPE_STATUS_NULL_POINTER = 60,
  /**
   * An argument is out of range: a length, a flag, a wait strategy, a string that is not
   * a path.
   */
  SHMPIPE_STATUS_INVALID_ARGUMENT = 61,
  /**
   * The call is not allowed in the handle's state: a reserved message, a lent message or a
   * batch is open (or the call needs one and none is).
   */
  SHMPIPE_STATUS_BAD_STATE = 62,
  /**
   * The library panicked (a bug); the handle may be unusable. The message has the panic's.
   */
  SHMPIPE_STATUS_PANIC = 63,
  /**
   * An error of a kind this version of the C API does not name.
   */
  SHMPIPE_STATUS_OTHER = 64,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum shmpipe_status shmpipe_status;
#else
typedef int32_t shmpipe_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * What a peer got wrong, for `SHMPIPE_STATUS_CORRUPTED` (`shmpipe_last_corruption`). Mirrors the
 * Rust library's `shmpipe::Corruption`.
 */
enum shmpipe_corruption
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * The last error was not `SHMPIPE_STATUS_CORRUPTED`.
   */
  SHMPIPE_CORRUPTION_NONE = 0,
  /**
   * The producer's tail is behind the head, behind a tail seen before, or too far ahead.
   */
  SHMPIPE_CORRUPTION_TAIL_OUT_OF_RANGE = 1,
  /**
   * The consumer's head moved backwards or past the published tail.
   */
  SHMPIPE_CORRUPTION_HEAD_OUT_OF_RANGE = 2,
  /**
   * A record header declares more than the maximum message size.
   */
  SHMPIPE_CORRUPTION_RECORD_TOO_LONG = 3,
  /**
   * A record would run past the end of the slot array.
   */
  SHMPIPE_CORRUPTION_RECORD_OVERRUNS_ARRAY = 4,
  /**
   * A record extends past the published tail.
   */
  SHMPIPE_CORRUPTION_RECORD_BEYOND_TAIL = 5,
  /**
   * A record header of an unknown kind.
   */
  SHMPIPE_CORRUPTION_UNKNOWN_KIND = 6,
  /**
   * A padding record of the wrong length.
   */
  SHMPIPE_CORRUPTION_BAD_PADDING = 7,
  /**
   * A padding record not followed by a published message.
   */
  SHMPIPE_CORRUPTION_PADDING_WITHOUT_MESSAGE = 8,
  /**
   * A message of a typed ring that is not one value of its type.
   */
  SHMPIPE_CORRUPTION_WRONG_MESSAGE_SIZE = 9,
  /**
   * The ring's memory disappeared under the mapping (a truncated file, a lost huge page).
   */
  SHMPIPE_CORRUPTION_MEMORY_LOST = 10,
  /**
   * This side's owner word was rewritten by another process.
   */
  SHMPIPE_CORRUPTION_ROLE_LOST = 11,
  /**
   * The producer's claim count went down.
   */
  SHMPIPE_CORRUPTION_CLAIMS_BACKWARDS = 12,
  /**
   * Messages were published but the producer's claim count is 0.
   */
  SHMPIPE_CORRUPTION_PUBLISHED_WITHOUT_CLAIM = 13,
  /**
   * A kind this version of the C API does not name.
   */
  SHMPIPE_CORRUPTION_OTHER = 14,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum shmpipe_corruption shmpipe_corruption;
#else
typedef int32_t shmpipe_corruption;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The receiving side of a ring, claimed with `shmpipe_ring_consumer`, freed with
 * `shmpipe_consumer_close`. Exactly one exists per ring, across processes. Not thread-safe:
 * one thread at a time may use it (it may move between threads).
 */
typedef struct shmpipe_consumer shmpipe_consumer;

/**
 * The sending side of a ring, claimed with `shmpipe_ring_producer`, freed with
 * `shmpipe_producer_close`. Exactly one exists per ring, across processes. Not thread-safe:
 * one thread at a time may use it (it may move between threads).
 */
typedef struct shmpipe_producer shmpipe_producer;

/**
 * A ring: made or joined by one of the `shmpipe_ring_create_*` / `_open_*` /
 * `_open_or_create_*` functions, freed by `shmpipe_ring_close`. Producers and consumers
 * claimed from it keep the memory mapped on their own, so the ring handle may be closed
 * first. May be used by several threads at once.
 */
typedef struct shmpipe_ring shmpipe_ring;

/**
 * How a ring is made or joined. All zeros (`shmpipe_config cfg = {0};`, or a NULL pointer)
 * is the default: 4096 slots of 64 bytes, the largest maximum message the shape allows,
 * mode 0600, a 1 s init timeout. A zero field keeps its default; a shape field that is set
 * (`slot_size`, `slot_count`, `max_message`) is also demanded of an existing ring an opener
 * joins (`SHMPIPE_STATUS_CONFIG_MISMATCH` if it differs), unless `SHMPIPE_JOIN_ANY_SHAPE`.
 */
typedef struct shmpipe_config {
  /**
   * Bytes per slot: a power of two from 8 to 1 MiB (0: 64).
   */
  uint32_t slot_size;
  /**
   * Number of slots: a power of two, at most 2^30 (0: 4096).
   */
  uint32_t slot_count;
  /**
   * Largest message in bytes (0: half the ring less a record header).
   */
  uint64_t max_message;
  /**
   * Permission bits of a ring created, and the widest mode accepted on a ring of ours that
   * is opened (0: 0600).
   */
  uint32_t mode;
  /**
   * How long an opener waits for the creator to finish, in milliseconds (0: 1000).
   */
  uint32_t init_timeout_ms;
  /**
   * Where the free-running counters start (0: 0).
   */
  uint64_t initial_index;
  /**
   * `SHMPIPE_PERSISTENT`, `SHMPIPE_HUGE_PAGES`, `SHMPIPE_ACCEPT_HUGE_PAGES`,
   * `SHMPIPE_JOIN_ANY_SHAPE`, or'ed; other bits are `SHMPIPE_STATUS_INVALID_ARGUMENT`.
   */
  uint32_t flags;
  /**
   * Number of uids in `accept_owners`.
   */
  uint32_t accept_owners_len;
  /**
   * Users besides ourselves whose rings an opener accepts (NULL if `accept_owners_len` is
   * 0): by default a ring another user owns or created is refused (`SHMPIPE_STATUS_FOREIGN_OWNER`).
   */
  const uint32_t *accept_owners;
} shmpipe_config;

/**
 * What a ring is: its shape and where it lives (`shmpipe_ring_info`).
 */
typedef struct shmpipe_info {
  /**
   * Bytes per slot.
   */
  uint64_t slot_size;
  /**
   * Slots in the ring.
   */
  uint64_t slot_count;
  /**
   * Largest message the ring carries.
   */
  uint64_t max_message;
  /**
   * The SysV segment's id, or -1 for a memfd, file or heap ring.
   */
  int32_t shmid;
  /**
   * The memfd (owned by the ring handle: do not close it), or -1.
   */
  int32_t memfd;
  /**
   * 1 if the ring stays until removed.
   */
  uint32_t persistent;
} shmpipe_info;

/**
 * The shared counters of a ring at one moment (`shmpipe_ring_stats`). They are read from
 * memory the peer can write: information, not something to rely on.
 */
typedef struct shmpipe_stats {
  /**
   * The producer's published tail (a slot counter).
   */
  uint64_t tail;
  /**
   * The consumer's released head (a slot counter).
   */
  uint64_t head;
  /**
   * `tail - head`: slots holding unreleased records.
   */
  uint64_t used_slots;
  /**
   * Messages published so far.
   */
  uint64_t sent;
  /**
   * Messages released so far.
   */
  uint64_t received;
  /**
   * Pid holding the producer role, 0 if none.
   */
  uint32_t producer_pid;
  /**
   * Pid holding the consumer role, 0 if none.
   */
  uint32_t consumer_pid;
} shmpipe_stats;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Receives the next message now, if one is waiting, by copying it into `buf` (`capacity`
 * bytes); `*len` is its length. `SHMPIPE_STATUS_EMPTY` if none waits, `SHMPIPE_STATUS_DISCONNECTED` if none
 * waits and the producer closed (end of stream), `SHMPIPE_STATUS_BUFFER_TOO_SMALL` if it does not
 * fit: it stays in the ring and `*len` is the capacity needed (a buffer of
 * `shmpipe_consumer_max_message` bytes always fits); `SHMPIPE_STATUS_CORRUPTED` if the producer broke
 * the protocol. Never writes past `buf + capacity`, whatever the peer wrote into the ring.
 * In an open batch the message's slots are freed at the batch's release.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle; `buf` is NULL (then `capacity` is 0) or valid for
 * `capacity` writes; `len` is valid for a write.
 */
shmpipe_status shmpipe_consumer_try_recv(struct shmpipe_consumer *consumer,
                                         uint8_t *buf,
                                         size_t capacity,
                                         size_t *len);

/**
 * Receives the next message, waiting for one as the wait strategy says. As
 * `shmpipe_consumer_try_recv`, and `SHMPIPE_STATUS_PEER_DIED` once the producer's process died and
 * every message it published was received. Not in a batch (`SHMPIPE_STATUS_BAD_STATE`).
 *
 * # Safety
 *
 * As `shmpipe_consumer_try_recv`.
 */
shmpipe_status shmpipe_consumer_recv(struct shmpipe_consumer *consumer,
                                     uint8_t *buf,
                                     size_t capacity,
                                     size_t *len);

/**
 * `shmpipe_consumer_recv`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds
 * without a message.
 *
 * # Safety
 *
 * As `shmpipe_consumer_try_recv`.
 */
shmpipe_status shmpipe_consumer_recv_timeout(struct shmpipe_consumer *consumer,
                                             uint8_t *buf,
                                             size_t capacity,
                                             size_t *len,
                                             uint64_t timeout_ns);

/**
 * Lends the next message in place (zero copy), if one is waiting: `*data` and `*len` say
 * where its bytes are, until `shmpipe_consumer_release` (until then only that call, and
 * `shmpipe_consumer_close`, are allowed on the consumer). The library validated the record,
 * so `*data .. *data + *len` lies inside the ring's mapping and stays there until the
 * release; but the bytes are memory the producer's process can write at any time (see "Zero
 * copy" in the header's opening comment): read each byte once, or copy out what you check.
 * Errors as `shmpipe_consumer_try_recv` (a buffer is never too small).
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle; `data` and `len` are valid for writes.
 */
shmpipe_status shmpipe_consumer_try_lend(struct shmpipe_consumer *consumer,
                                         const uint8_t **data,
                                         size_t *len);

/**
 * Waits for a message as the wait strategy says, then lends it as
 * `shmpipe_consumer_try_lend`. Not in a batch. Errors as `shmpipe_consumer_recv`.
 *
 * # Safety
 *
 * As `shmpipe_consumer_try_lend`.
 */
shmpipe_status shmpipe_consumer_lend(struct shmpipe_consumer *consumer,
                                     const uint8_t **data,
                                     size_t *len);

/**
 * `shmpipe_consumer_lend`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds.
 *
 * # Safety
 *
 * As `shmpipe_consumer_try_lend`.
 */
shmpipe_status shmpipe_consumer_lend_timeout(struct shmpipe_consumer *consumer,
                                             uint64_t timeout_ns,
                                             const uint8_t **data,
                                             size_t *len);

/**
 * Ends the lend: the message's slots go back to the producer (in a batch: at the batch's
 * release). The pointer the lend gave must not be used afterwards. `SHMPIPE_STATUS_BAD_STATE` if
 * nothing is lent.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
shmpipe_status shmpipe_consumer_release(struct shmpipe_consumer *consumer);

/**
 * Opens a batch: the slots of messages received (`shmpipe_consumer_try_recv`) or lent and
 * released (`shmpipe_consumer_try_lend`, `shmpipe_consumer_release`) until it ends go back
 * to the producer together, with one store, at `shmpipe_consumer_batch_release` or
 * `shmpipe_consumer_batch_end`. Blocking calls are refused while it is open.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
shmpipe_status shmpipe_consumer_batch_begin(struct shmpipe_consumer *consumer);

/**
 * Frees the slots of every message of the batch so far; it stays open. `SHMPIPE_STATUS_BAD_STATE`
 * without an open batch, or with a message lent.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
shmpipe_status shmpipe_consumer_batch_release(struct shmpipe_consumer *consumer);

/**
 * Frees the batch's slots and closes it. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or with
 * a message lent.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
shmpipe_status shmpipe_consumer_batch_end(struct shmpipe_consumer *consumer);

/**
 * How blocking calls wait: `SHMPIPE_WAIT_SPIN`, `SHMPIPE_WAIT_SPIN_THEN_SLEEP` (the default)
 * or `SHMPIPE_WAIT_SLEEP`; anything else is `SHMPIPE_STATUS_INVALID_ARGUMENT`.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
shmpipe_status shmpipe_consumer_set_wait_strategy(struct shmpipe_consumer *consumer,
                                                  int32_t strategy);

/**
 * The ring's largest message in bytes (0 for NULL): a receive buffer this large always fits.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle.
 */
size_t shmpipe_consumer_max_message(const struct shmpipe_consumer *consumer);

/**
 * Closes the consumer and frees the handle, whatever the result: a lent message and an open
 * batch are released, then the role is given back (sends then fail with
 * `SHMPIPE_STATUS_DISCONNECTED`). Returns `SHMPIPE_STATUS_OK` for a clean end, or `SHMPIPE_STATUS_CORRUPTED` if
 * the role could not be given back or the consumer was poisoned before; in a forked child that
 * inherited the handle, `SHMPIPE_STATUS_WRONG_PROCESS` (the handle is freed, the parent's consumer
 * untouched). NULL is ignored.
 *
 * # Safety
 *
 * `consumer` is NULL or a live handle, not used again.
 */
shmpipe_status shmpipe_consumer_close(struct shmpipe_consumer *consumer);

/**
 * A static description of a status code (any `int32_t`; an unknown one gets "unknown status
 * code"). Never NULL; the string lives for the whole program and must not be freed. For the
 * details of the last failure (which ring, which values) use `shmpipe_last_error_message`.
 */
const char *shmpipe_strerror(int32_t status);

/**
 * The message of the last call on this thread that failed: which ring, which values, what
 * to check. Never NULL (an empty string before any failure). The string belongs to the
 * library and stays valid until the next failing call on this thread; copy it to keep it.
 */
const char *shmpipe_last_error_message(void);

/**
 * The status of the last call on this thread that failed (`SHMPIPE_STATUS_OK` before any failure).
 */
shmpipe_status shmpipe_last_error(void);

/**
 * What was wrong, if the last call on this thread that failed returned `SHMPIPE_STATUS_CORRUPTED`;
 * `SHMPIPE_CORRUPTION_NONE` otherwise.
 */
shmpipe_corruption shmpipe_last_corruption(void);

/**
 * Sends a message of `len` bytes now if there is room (one copy into the ring): `SHMPIPE_STATUS_OK`,
 * or `SHMPIPE_STATUS_FULL` (nothing sent), `SHMPIPE_STATUS_TOO_LARGE`, `SHMPIPE_STATUS_DISCONNECTED` (the consumer
 * closed), `SHMPIPE_STATUS_CORRUPTED`, ... In an open batch the message joins the batch, visible at
 * its publish; on `SHMPIPE_STATUS_FULL` the batch so far is published first. `data` may be NULL when
 * `len` is 0 (an empty message is a message).
 *
 * # Safety
 *
 * `producer` is NULL or a live handle; `data` is NULL or points to `len` readable bytes.
 */
shmpipe_status shmpipe_producer_try_send(struct shmpipe_producer *producer,
                                         const uint8_t *data,
                                         size_t len);

/**
 * Sends a message, waiting for room as the wait strategy says (`SHMPIPE_STATUS_PEER_DIED` if the
 * consumer's process dies meanwhile). Not in a batch (`SHMPIPE_STATUS_BAD_STATE`).
 *
 * # Safety
 *
 * As `shmpipe_producer_try_send`.
 */
shmpipe_status shmpipe_producer_send(struct shmpipe_producer *producer,
                                     const uint8_t *data,
                                     size_t len);

/**
 * `shmpipe_producer_send`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds
 * without room.
 *
 * # Safety
 *
 * As `shmpipe_producer_try_send`.
 */
shmpipe_status shmpipe_producer_send_timeout(struct shmpipe_producer *producer,
                                             const uint8_t *data,
                                             size_t len,
                                             uint64_t timeout_ns);

/**
 * Reserves room for a message of exactly `len` bytes now, if there is room, to build it in
 * place (zero copy): `*data` is where its bytes are. Write them, then
 * `shmpipe_producer_commit` sends it (or `shmpipe_producer_abort` discards it); until then
 * only those two calls are allowed on the producer. The bytes are memory the consumer's
 * process could write if it broke the protocol (see "Zero copy" in the header's opening
 * comment); their initial content is whatever the slots held. In an open batch the message
 * joins the batch at its commit. Errors as `shmpipe_producer_try_send`.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle; `data` is valid for a write.
 */
shmpipe_status shmpipe_producer_try_reserve(struct shmpipe_producer *producer,
                                            size_t len,
                                            uint8_t **data);

/**
 * Waits for room as the wait strategy says, then reserves as `shmpipe_producer_try_reserve`.
 * Not in a batch. Errors as `shmpipe_producer_send`.
 *
 * # Safety
 *
 * As `shmpipe_producer_try_reserve`.
 */
shmpipe_status shmpipe_producer_reserve(struct shmpipe_producer *producer,
                                        size_t len,
                                        uint8_t **data);

/**
 * `shmpipe_producer_reserve`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns`
 * nanoseconds.
 *
 * # Safety
 *
 * As `shmpipe_producer_try_reserve`.
 */
shmpipe_status shmpipe_producer_reserve_timeout(struct shmpipe_producer *producer,
                                                size_t len,
                                                uint64_t timeout_ns,
                                                uint8_t **data);

/**
 * Sends the reserved message, its first `len` bytes only (at most the length reserved, else
 * `SHMPIPE_STATUS_INVALID_ARGUMENT` and the grant stays open): for a message whose length is known
 * once written. In a batch it joins the batch. `SHMPIPE_STATUS_BAD_STATE` without an open grant.
 * The pointer the reserve gave is not to be used afterwards.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_commit(struct shmpipe_producer *producer, size_t len);

/**
 * Discards the reserved message: nothing is sent, the ring is as before.
 * `SHMPIPE_STATUS_BAD_STATE` without an open grant.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_abort(struct shmpipe_producer *producer);

/**
 * Opens a batch: messages sent (`shmpipe_producer_try_send`) or committed
 * (`shmpipe_producer_try_reserve`, `shmpipe_producer_commit`) until it ends become visible to
 * the consumer together, with one store, at `shmpipe_producer_batch_publish` or
 * `shmpipe_producer_batch_end`. Blocking calls are refused while it is open.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_batch_begin(struct shmpipe_producer *producer);

/**
 * Publishes the batch so far; it stays open. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or
 * with a grant open.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_batch_publish(struct shmpipe_producer *producer);

/**
 * Publishes the batch and closes it. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or with a
 * grant open.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_batch_end(struct shmpipe_producer *producer);

/**
 * How blocking calls wait: `SHMPIPE_WAIT_SPIN`, `SHMPIPE_WAIT_SPIN_THEN_SLEEP` (the default)
 * or `SHMPIPE_WAIT_SLEEP`; anything else is `SHMPIPE_STATUS_INVALID_ARGUMENT`.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_set_wait_strategy(struct shmpipe_producer *producer,
                                                  int32_t strategy);

/**
 * Whether the consumer is still there, without sending: `SHMPIPE_STATUS_OK` if it holds the role and
 * lives, or has not come yet; `SHMPIPE_STATUS_DISCONNECTED` if it closed; `SHMPIPE_STATUS_PEER_DIED` if
 * its process died. A send notices a dead consumer only when it has to wait for room.
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
shmpipe_status shmpipe_producer_check_consumer(struct shmpipe_producer *producer);

/**
 * The ring's largest message in bytes (0 for NULL).
 *
 * # Safety
 *
 * `producer` is NULL or a live handle.
 */
size_t shmpipe_producer_max_message(const struct shmpipe_producer *producer);

/**
 * Closes the producer and frees the handle, whatever the result: an open grant is discarded,
 * an open batch published, then the role is given back and the consumer, after receiving
 * every message, sees the end of stream (`SHMPIPE_STATUS_DISCONNECTED`). Returns `SHMPIPE_STATUS_OK` for a
 * clean end, or `SHMPIPE_STATUS_CORRUPTED` if the role could not be given back (another process
 * rewrote it) or the producer was poisoned before; in a forked child that inherited the handle,
 * `SHMPIPE_STATUS_WRONG_PROCESS` (the handle is freed, the parent's producer untouched). NULL is
 * ignored (`SHMPIPE_STATUS_OK`).
 *
 * # Safety
 *
 * `producer` is NULL or a live handle, not used again.
 */
shmpipe_status shmpipe_producer_close(struct shmpipe_producer *producer);

/**
 * Creates a new ring in a SysV segment at `key` (exclusively: `SHMPIPE_STATUS_EXISTS` if the key
 * is taken); key 0 (`IPC_PRIVATE`) makes a segment only reachable by its shmid
 * (`shmpipe_ring_info`). `config` may be NULL for the defaults. On success `*out` is the new
 * ring; on failure it is untouched.
 *
 * # Safety
 *
 * `config` is NULL or a valid `shmpipe_config`; `out` is valid for a write.
 */
shmpipe_status shmpipe_ring_create_key(int32_t key,
                                       const struct shmpipe_config *config,
                                       struct shmpipe_ring **out);

/**
 * Opens the existing ring at `key`, waiting up to the init timeout for its creator to
 * finish. Its shape is the header's, unless `config` sets a shape field (demanded). A ring
 * another user owns, or ours with a mode wider than `config->mode`, is refused
 * (`SHMPIPE_STATUS_FOREIGN_OWNER`) unless accepted.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`.
 */
shmpipe_status shmpipe_ring_open_key(int32_t key,
                                     const struct shmpipe_config *config,
                                     struct shmpipe_ring **out);

/**
 * Creates the ring at `key`, or opens it if another process created it first, so either side
 * may start first; a stale ring of ours at the key (left by crashed processes) is recycled.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`.
 */
shmpipe_status shmpipe_ring_open_or_create_key(int32_t key,
                                               const struct shmpipe_config *config,
                                               struct shmpipe_ring **out);

/**
 * Opens the ring in the SysV segment `shmid` (e.g. one another process created at key 0 and
 * told us the shmid of).
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`.
 */
shmpipe_status shmpipe_ring_open_shmid(int32_t shmid,
                                       const struct shmpipe_config *config,
                                       struct shmpipe_ring **out);

/**
 * The SysV key `ftok(3)` derives from an existing `path` and `id` (1 to 255), for the
 * `_key` functions.
 *
 * # Safety
 *
 * `path` is NULL or a NUL-terminated string; `key` is valid for a write.
 */
shmpipe_status shmpipe_ftok(const char *path, int id, int32_t *key);

/**
 * Creates a ring in a new anonymous memfd, sealed against resizing. No key, nothing in
 * `ipcs`, nothing to remove. Hand the descriptor (`shmpipe_ring_info`'s `memfd`) to the
 * other process, across `fork`/`exec` or over a Unix socket (`shmpipe_memfd_send`); it
 * opens it with `shmpipe_ring_open_memfd`.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`.
 */
shmpipe_status shmpipe_ring_create_memfd(const struct shmpipe_config *config,
                                         struct shmpipe_ring **out);

/**
 * Opens the ring in the memfd `fd` (inherited, or received with `shmpipe_memfd_recv`). The
 * library duplicates `fd`: the caller still owns it and may close it at once. A descriptor
 * that is not a memfd sealed against resizing is refused (`SHMPIPE_STATUS_BAD_HEADER`), as is one of
 * another user (`SHMPIPE_STATUS_FOREIGN_OWNER`).
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`. (`fd` may be any number: a closed one is `SHMPIPE_STATUS_SYS`.)
 */
shmpipe_status shmpipe_ring_open_memfd(int fd,
                                       const struct shmpipe_config *config,
                                       struct shmpipe_ring **out);

/**
 * Sends the descriptor `fd` (a ring's memfd) over the connected Unix socket `socket`
 * (`SCM_RIGHTS`, one byte of data). Neither descriptor is closed.
 */
shmpipe_status shmpipe_memfd_send(int socket, int fd);

/**
 * Receives a descriptor sent with `shmpipe_memfd_send` (or the Rust library's
 * `memfd::send_fd`) from the Unix socket `socket`; `*fd` is then a new close-on-exec
 * descriptor the caller owns (pass it to `shmpipe_ring_open_memfd`, then close it).
 *
 * # Safety
 *
 * `fd` is valid for a write.
 */
shmpipe_status shmpipe_memfd_recv(int socket, int *fd);

/**
 * Creates a new ring in a file at `path` (`SHMPIPE_STATUS_FILE_EXISTS` if something is there),
 * e.g. in `/dev/shm` or on a disk; built under a temporary name and linked into place
 * complete. A file truncated under the ring is `SHMPIPE_STATUS_CORRUPTED` (memory lost), never a
 * `SIGBUS`.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`; `path` is NULL or a NUL-terminated string.
 */
shmpipe_status shmpipe_ring_create_path(const char *path,
                                        const struct shmpipe_config *config,
                                        struct shmpipe_ring **out);

/**
 * Opens the ring file at `path`.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_path`.
 */
shmpipe_status shmpipe_ring_open_path(const char *path,
                                      const struct shmpipe_config *config,
                                      struct shmpipe_ring **out);

/**
 * Creates the ring file at `path`, or opens it if another process created it first.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_path`.
 */
shmpipe_status shmpipe_ring_open_or_create_path(const char *path,
                                                const struct shmpipe_config *config,
                                                struct shmpipe_ring **out);

/**
 * Creates a ring on this process's heap, for two threads.
 *
 * # Safety
 *
 * As `shmpipe_ring_create_key`.
 */
shmpipe_status shmpipe_ring_create_heap(const struct shmpipe_config *config,
                                        struct shmpipe_ring **out);

/**
 * Frees a ring handle (NULL is ignored). Producers and consumers claimed from it stay valid.
 *
 * # Safety
 *
 * `ring` is NULL or a live handle, not used again.
 */
void shmpipe_ring_close(struct shmpipe_ring *ring);

/**
 * Removes the ring now: a segment is marked for removal (freed once everyone detaches), a
 * file unlinked; a memfd or heap ring has nothing to remove. Sides attached keep working.
 *
 * # Safety
 *
 * `ring` is NULL or a live handle.
 */
shmpipe_status shmpipe_ring_remove(const struct shmpipe_ring *ring);

/**
 * The ring's shape and where it lives.
 *
 * # Safety
 *
 * `ring` is NULL or a live handle; `info` is valid for a write.
 */
shmpipe_status shmpipe_ring_info(const struct shmpipe_ring *ring, struct shmpipe_info *info);

/**
 * The ring's shared counters now: messages sent and received, slots used, role holders.
 *
 * # Safety
 *
 * `ring` is NULL or a live handle; `stats` is valid for a write.
 */
shmpipe_status shmpipe_ring_stats(const struct shmpipe_ring *ring, struct shmpipe_stats *stats);

/**
 * Claims the producer role (`SHMPIPE_STATUS_ROLE_TAKEN` if another side holds it). Free the handle
 * with `shmpipe_producer_close`.
 *
 * # Safety
 *
 * `ring` is NULL or a live handle; `out` is valid for a write.
 */
shmpipe_status shmpipe_ring_producer(const struct shmpipe_ring *ring,
                                     struct shmpipe_producer **out);

/**
 * Claims the consumer role (`SHMPIPE_STATUS_ROLE_TAKEN` if another side holds it). Free the handle
 * with `shmpipe_consumer_close`.
 *
 * # Safety
 *
 * As `shmpipe_ring_producer`.
 */
shmpipe_status shmpipe_ring_consumer(const struct shmpipe_ring *ring,
                                     struct shmpipe_consumer **out);

/**
 * Claims the producer role from a holder the kernel confirms dead; the stream goes on after
 * the last message it published.
 *
 * # Safety
 *
 * As `shmpipe_ring_producer`.
 */
shmpipe_status shmpipe_ring_take_over_producer(const struct shmpipe_ring *ring,
                                               struct shmpipe_producer **out);

/**
 * Claims the consumer role from a holder the kernel confirms dead; messages it had read but
 * not released are received again.
 *
 * # Safety
 *
 * As `shmpipe_ring_producer`.
 */
shmpipe_status shmpipe_ring_take_over_consumer(const struct shmpipe_ring *ring,
                                               struct shmpipe_consumer **out);

/**
 * Removes the SysV rings that crashed processes left behind (nobody attached, no live
 * holder, nothing waiting to be read), never a segment that is not a shmpipe ring nor
 * another user's ring. With `dry_run` non-zero nothing is removed. The shmids of the stale
 * rings found (removed unless a dry run) go to `shmids`, at most `capacity` of them
 * (`shmids` may be NULL if `capacity` is 0); `*count` is how many were found, which may be
 * more than `capacity`.
 *
 * # Safety
 *
 * `shmids` is NULL or valid for `capacity` writes; `count` is valid for a write.
 */
shmpipe_status shmpipe_gc(int dry_run, int32_t *shmids, size_t capacity, size_t *count);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* SHMPIPE_H */
