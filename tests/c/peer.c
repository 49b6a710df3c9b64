/*
 * A shmpipe peer in C11, written from docs/LAYOUT.md alone ("Writing a peer"): no header or
 * code derived from the Rust crate. tests/c_peer.rs builds it and runs it against the Rust
 * side in both directions and both start orders.
 *
 *   peer send --key K --count N --size S [options]   produce N messages of at most S bytes
 *   peer recv --key K --count N --size S [options]   consume and check N, then end of stream
 *
 * Instead of --key K (a SysV ring, created or opened), --path P opens an existing ring file
 * and --fd N an existing ring memfd whose descriptor N this process inherited; neither creates.
 *
 * Options (used only when this peer creates the ring; a joiner takes the header's shape):
 *   --slots C  --slot-size B  --initial-index X      default shape per LAYOUT.md
 *   --timeout SECONDS                                give up (exit 1) after this long
 *
 * Message i (from 0) has msg_len(i, S) bytes, byte j being msg_byte(i, j); the Rust test
 * computes the same. Prints "claimed" on stdout once the role is held. Exits 0 on a clean
 * transfer and close, 1 with a message on stderr on any violation.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <limits.h>

/* ---- The layout (LAYOUT.md, tables) ---------------------------------------------------- */

#define MAGIC 0x31455049504D4853ULL /* "SHMPIPE1" little-endian */
#define VERSION 6u
#define HEADER 384u
#define READY 0x21594452u /* "RDY!" */
#define FLAG_PERSISTENT 1u
#define KIND_MESSAGE 1u
#define KIND_PADDING 2u

/* configuration line */
#define C_MAGIC 0
#define C_VERSION 8
#define C_HEADER_SIZE 12
#define C_SLOT_SIZE 16
#define C_SLOT_COUNT 20
#define C_MAX_MESSAGE 24
#define C_FLAGS 28
#define C_INSTANCE_ID 32
#define C_RING_SIZE 40
#define C_INITIAL_INDEX 48
#define C_CREATOR_PID 56
#define C_READY 60
#define C_KEY 64
#define C_TYPE_SIZE 68
#define C_TYPE_FINGERPRINT 72
#define C_TYPE_ALIGN 80
/* producer line */
#define P_TAIL 128
#define P_SENT 136
#define P_OWNER 144
#define P_CLAIMS 152
#define P_DATA_EVENT 156
#define P_CONSUMER_WAITING 160
#define P_CONSUMER_CLOSED 164
#define P_OWNER_PIDNS 168
/* consumer line */
#define K_HEAD 256
#define K_RECEIVED 264
#define K_OWNER 272
#define K_CLAIMS 280
#define K_SPACE_EVENT 284
#define K_PRODUCER_WAITING 288
#define K_OWNER_PIDNS 296

typedef _Atomic uint64_t a64;
typedef _Atomic uint32_t a32;

static unsigned char *base;
#define W64(off) ((a64 *)(void *)(base + (off)))
#define W32(off) ((a32 *)(void *)(base + (off)))

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define AR memory_order_acq_rel
#define SC memory_order_seq_cst

/* The validated shape, kept privately (never re-read from the segment). */
static uint32_t slot_size, slot_count, max_message, flags;
static uint64_t mask;

/* ---- Process, errors, time -------------------------------------------------------------- */

static const char *side = "peer";
static double deadline;
/* What a run went through, printed on stderr at the end: padding records, futex sleeps. */
static uint64_t n_padding, n_sleeps;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "c peer %s: ", side);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check_deadline(const char *what) {
    if (now() > deadline)
        die("timed out %s", what);
}

static void pause_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* /proc/PID/stat: state (field 3) and start time (field 22), after the last ')'. */
static int proc_stat(const char *path, char *state, uint64_t *start) {
    char buf[4096];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    char *save = NULL;
    char *tok = strtok_r(p, " ", &save);
    if (!tok)
        return 0;
    *state = tok[0];
    for (int i = 0; i < 19; i++) {
        tok = strtok_r(NULL, " ", &save);
        if (!tok)
            return 0;
    }
    *start = strtoull(tok, NULL, 10);
    return 1;
}

static uint64_t my_identity, my_pidns;

static void compute_identity(void) {
    char state;
    uint64_t start = 0;
    if (!proc_stat("/proc/self/stat", &state, &start))
        start = 0; /* unknown: readers then do not compare it */
    my_identity = ((start & 0xffffffffULL) << 32) | (uint32_t)getpid();
    struct stat st;
    my_pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static int dead_state(char s) { return s == 'Z' || s == 'X' || s == 'x'; }

/* The ring: a SysV segment (shmid_g), or a file or memfd mapped with mmap (map_dev, map_ino:
 * the object mapped, which another process's /proc/PID/maps shows; map_len: the mapping). */
static int shmid_g = -1;
static const char *path_g; /* a file ring's path, unlinked once both roles are claimed */
static dev_t map_dev;
static ino_t map_ino;
static size_t map_len;

/* Whether a /proc/PID/maps line is a mapping of our ring: for a segment, a /SYSV... path whose
 * inode column is the shmid; for a file or memfd, the device and inode of our mapping. */
static int maps_our_ring(const char *dev, unsigned long long inode, const char *file) {
    if (shmid_g >= 0)
        return strncmp(file, "/SYSV", 5) == 0 && inode == (unsigned long long)shmid_g;
    unsigned int maj, min;
    return sscanf(dev, "%x:%x", &maj, &min) == 2 && maj == major(map_dev) &&
           min == minor(map_dev) && inode == (unsigned long long)map_ino;
}

/* Whether the process maps our ring (LAYOUT.md, "Owner words"). */
static int maps_segment(uint32_t pid) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%u/maps", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : 1; /* unreadable maps count as mapped */
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char range[128], perms[16], off[32], dev[32], file[512] = "";
        unsigned long long inode;
        if (sscanf(line, "%127s %15s %31s %31s %llu %511s", range, perms, off, dev, &inode, file) >= 5)
            found = maps_our_ring(dev, inode, file);
    }
    fclose(f);
    return found;
}

/* Whether any thread in /proc/PID/task is in a state other than Z, X, x. */
static int any_live_thread(uint32_t pid) {
    char dir[64], path[384];
    snprintf(dir, sizeof dir, "/proc/%u/task", pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int live = 0;
    struct dirent *e;
    while (!live && (e = readdir(d)) != NULL) {
        char state;
        uint64_t start;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
        live = proc_stat(path, &state, &start) && !dead_state(state);
    }
    closedir(d);
    return live;
}

/* "Owner words": is the holder `id` of the role whose owner word is at `owner_off` dead? */
static int holder_dead(uint64_t id, size_t owner_off, size_t pidns_off) {
    uint64_t ns = atomic_load_explicit(W64(pidns_off), RLX);
    if (ns != 0 && my_pidns != 0 && ns != my_pidns)
        return 0; /* another pid namespace: unknown, never dead */
    uint32_t pid = (uint32_t)id;
    uint64_t start = id >> 32;
    int dead;
    char path[64], state;
    uint64_t s;
    if (pid == 0 || pid > INT_MAX) {
        dead = 1;
    } else {
        snprintf(path, sizeof path, "/proc/%u/stat", pid);
        if (!proc_stat(path, &state, &s)) {
            dead = kill((pid_t)pid, 0) == -1 && errno == ESRCH;
        } else if (start != 0 && (s & 0xffffffffULL) != start) {
            dead = 1;
        } else if (dead_state(state)) {
            dead = !any_live_thread(pid); /* a zombie leader with a live thread is alive */
        } else {
            dead = !maps_segment(pid); /* alive and leader running: did it exec? */
        }
    }
    /* A dead verdict stands only if the word still holds that identity. */
    return dead && atomic_load_explicit(W64(owner_off), ACQ) == id;
}

/* ---- Futexes (LAYOUT.md, "Futexes", "Sleeping") ------------------------------------------ */

/* The sleeper's barrier (LAYOUT.md, "Futexes"): the Rust side wakes the light way (a load of
 * the announcement word, no locked instruction), which is sound only because this call makes
 * every registered process pass a full barrier between our announcement and our re-check.
 * Refused, we may sleep at most 1 ms at a time. */
static int barrier_refused;
static void sleeper_barrier(void) {
    atomic_thread_fence(memory_order_seq_cst);
    barrier_refused = syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0;
}

static void futex_wait(a32 *word, uint32_t seen) {
    /* at most 10 ms, or 1 ms if the barrier was refused */
    struct timespec ts = {0, (barrier_refused ? 1 : 10) * 1000 * 1000};
    syscall(SYS_futex, (uint32_t *)(void *)word, FUTEX_WAIT, seen, &ts, NULL, 0);
}

static void wake(size_t waiting_off, size_t event_off) {
    if (atomic_exchange_explicit(W32(waiting_off), 0, AR) == 1) {
        atomic_fetch_add_explicit(W32(event_off), 1, REL);
        syscall(SYS_futex, (uint32_t *)(void *)W32(event_off), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
}

/* ---- Messages --------------------------------------------------------------------------- */

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static uint32_t msg_len(uint64_t i, uint32_t size) {
    if (i % 13 == 0)
        return size;
    if (i % 17 == 0)
        return 0;
    return (uint32_t)(mix(i) % ((uint64_t)size + 1));
}

static unsigned char msg_byte(uint64_t i, uint32_t j) {
    return (unsigned char)(i * 7 + j * 13 + (i >> 8));
}

/* ---- Key lock (LAYOUT.md, "Create or open", steps 1 and 5) ------------------------------ */

static char lock_path[64];
static int lock_fd = -1;

static void lock_key(uint32_t key) {
    snprintf(lock_path, sizeof lock_path, "/dev/shm/.shmpipe-key-%08x.lock", key);
    const int fl = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    double give_up = now() + 6.0;
    for (;;) {
        int fd = open(lock_path, fl);
        if (fd < 0 && errno == ENOENT) {
            fd = open(lock_path, fl | O_CREAT | O_EXCL, 0444);
            if (fd < 0 && errno == EEXIST)
                continue;
            if (fd < 0 && (errno == ENOENT || errno == EROFS || errno == EACCES))
                return; /* no lock file possible: go on without */
            if (fd >= 0)
                fchmod(fd, 0444);
        }
        if (fd < 0)
            die("open %s: %s", lock_path, strerror(errno));
        struct stat st, here;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
            die("%s is not a regular file", lock_path);
        while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EINTR && errno != EWOULDBLOCK)
                die("flock %s: %s", lock_path, strerror(errno));
            if (now() > give_up)
                die("key lock %s held too long", lock_path);
            pause_us(1000);
        }
        if (lstat(lock_path, &here) == 0 && here.st_dev == st.st_dev && here.st_ino == st.st_ino) {
            lock_fd = fd;
            return;
        }
        close(fd); /* unlinked while we waited: start again */
    }
}

static void unlock_key(void) {
    if (lock_fd < 0)
        return;
    struct stat st, here;
    if (fstat(lock_fd, &st) == 0 && lstat(lock_path, &here) == 0 && here.st_dev == st.st_dev &&
        here.st_ino == st.st_ino)
        unlink(lock_path);
    close(lock_fd);
    lock_fd = -1;
}

/* ---- Create or open --------------------------------------------------------------------- */

static int pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

static uint64_t limit_for(uint32_t size, uint32_t count) {
    uint64_t slots = count / 2 ? count / 2 : 1;
    return slots * size - 8;
}

static uint64_t random64(void) {
    uint64_t v = 0;
    if (syscall(SYS_getrandom, &v, sizeof v, 0x0001 /* GRND_NONBLOCK */) != (long)sizeof v)
        v = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    return v;
}

static void create_header(uint32_t key, uint32_t size, uint32_t count, uint64_t initial) {
    atomic_store_explicit(W64(C_MAGIC), MAGIC, RLX);
    atomic_store_explicit(W32(C_VERSION), VERSION, RLX);
    atomic_store_explicit(W32(C_HEADER_SIZE), HEADER, RLX);
    atomic_store_explicit(W32(C_SLOT_SIZE), size, RLX);
    atomic_store_explicit(W32(C_SLOT_COUNT), count, RLX);
    atomic_store_explicit(W32(C_MAX_MESSAGE), (uint32_t)limit_for(size, count), RLX);
    atomic_store_explicit(W32(C_FLAGS), 0, RLX);
    atomic_store_explicit(W64(C_INSTANCE_ID), random64(), RLX);
    atomic_store_explicit(W64(C_RING_SIZE), HEADER + (uint64_t)size * count, RLX);
    atomic_store_explicit(W64(C_INITIAL_INDEX), initial, RLX);
    atomic_store_explicit(W32(C_CREATOR_PID), (uint32_t)getpid(), RLX);
    atomic_store_explicit(W32(C_KEY), key, RLX);
    atomic_store_explicit(W64(P_TAIL), initial, RLX);
    atomic_store_explicit(W64(K_HEAD), initial, RLX);
    atomic_store_explicit(W32(C_READY), READY, REL);
}

static void validate_header(size_t segsz) {
    double give_up = now() + 1.0;
    for (;;) {
        uint32_t ready = atomic_load_explicit(W32(C_READY), ACQ);
        if (ready == READY)
            break;
        uint64_t magic = atomic_load_explicit(W64(C_MAGIC), RLX);
        if (magic != 0 && magic != MAGIC)
            die("not a shmpipe ring (magic %#" PRIx64 ")", magic);
        if (ready != 0)
            die("bad ready word %#x", ready);
        if (now() > give_up)
            die("init timeout: the creator never set ready");
        pause_us(100);
    }
    /* Each field once, into locals. */
    uint64_t magic = atomic_load_explicit(W64(C_MAGIC), RLX);
    uint32_t version = atomic_load_explicit(W32(C_VERSION), RLX);
    uint32_t header = atomic_load_explicit(W32(C_HEADER_SIZE), RLX);
    uint32_t size = atomic_load_explicit(W32(C_SLOT_SIZE), RLX);
    uint32_t count = atomic_load_explicit(W32(C_SLOT_COUNT), RLX);
    uint32_t max = atomic_load_explicit(W32(C_MAX_MESSAGE), RLX);
    uint32_t fl = atomic_load_explicit(W32(C_FLAGS), RLX);
    uint64_t ring_size = atomic_load_explicit(W64(C_RING_SIZE), RLX);
    uint32_t tsize = atomic_load_explicit(W32(C_TYPE_SIZE), RLX);
    uint64_t tfp = atomic_load_explicit(W64(C_TYPE_FINGERPRINT), RLX);
    uint32_t talign = atomic_load_explicit(W32(C_TYPE_ALIGN), RLX);
    if (magic != MAGIC)
        die("magic %#" PRIx64, magic);
    if (version != VERSION)
        die("layout version %u, expected %u", version, VERSION);
    if (header != HEADER)
        die("header size %u", header);
    if (fl & ~FLAG_PERSISTENT)
        die("unknown flags %#x", fl);
    if (!pow2(size) || size < 8 || size > (1u << 20))
        die("slot size %u", size);
    if (!pow2(count) || count > (1u << 30) || (uint64_t)size * count > (1ULL << 31))
        die("slot count %u", count);
    if (max > limit_for(size, count))
        die("max message %u over the limit", max);
    if (ring_size != HEADER + (uint64_t)size * count)
        die("ring size %" PRIu64 " does not match the shape", ring_size);
    if (ring_size > segsz)
        die("ring size %" PRIu64 " exceeds the segment's %zu bytes", ring_size, segsz);
    if (tsize == 0 ? (talign != 0 || tfp != 0)
                   : (tsize != max || !pow2(talign) || talign > 8 || tsize % talign != 0))
        die("bad type fields (size %u, align %u)", tsize, talign);
    slot_size = size;
    slot_count = count;
    max_message = max;
    flags = fl;
    mask = (uint64_t)count - 1;
}

static void create_or_open(uint32_t key, uint32_t size, uint32_t count, uint64_t initial) {
    lock_key(key);
    for (int round = 0; round < 8; round++) {
        size_t ring_size = HEADER + (size_t)size * count;
        int id = shmget((key_t)key, ring_size, IPC_CREAT | IPC_EXCL | 0600);
        if (id >= 0) {
            void *p = shmat(id, NULL, 0);
            if (p == (void *)-1) {
                shmctl(id, IPC_RMID, NULL);
                die("shmat of our new segment: %s", strerror(errno));
            }
            base = p;
            shmid_g = id;
            create_header(key, size, count, initial);
            validate_header(ring_size);
            unlock_key();
            return;
        }
        if (errno != EEXIST)
            die("shmget(IPC_CREAT|IPC_EXCL): %s", strerror(errno));
        id = shmget((key_t)key, 0, 0);
        if (id < 0) {
            if (errno == ENOENT)
                continue; /* removed in between: create again */
            die("shmget: %s", strerror(errno));
        }
        void *p = shmat(id, NULL, 0);
        if (p == (void *)-1)
            die("shmat: %s", strerror(errno));
        struct shmid_ds ds;
        if (shmctl(id, IPC_STAT, &ds) != 0)
            die("IPC_STAT: %s", strerror(errno));
        uid_t me = geteuid();
        if (ds.shm_perm.uid != me || ds.shm_perm.cuid != me)
            die("segment owned by uid %u (creator %u), not ours", ds.shm_perm.uid, ds.shm_perm.cuid);
        if (ds.shm_perm.mode & 077)
            die("segment mode %o is wider than 0600", ds.shm_perm.mode & 0777);
        base = p;
        shmid_g = id;
        validate_header(ds.shm_segsz);
        unlock_key();
        return;
    }
    die("the segment kept vanishing between create and open");
}

/* Checks the kernel's record of a ring file or memfd as the SysV path checks IPC_STAT
 * (DESIGN.md, "Whose ring is it"), maps all of it and validates the header. */
static void open_mapped(int fd, const char *what) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat %s: %s", what, strerror(errno));
    if (!S_ISREG(st.st_mode))
        die("%s is not a regular file", what);
    if (st.st_uid != geteuid())
        die("%s owned by uid %u, not ours", what, (unsigned)st.st_uid);
    if (st.st_mode & 077)
        die("%s mode %o is wider than 0600", what, (unsigned)(st.st_mode & 0777));
    if (st.st_size < (off_t)HEADER)
        die("%s has %lld bytes, less than a header", what, (long long)st.st_size);
    /* It may be larger than the ring: map it up to the largest ring there can be. */
    uint64_t len = (uint64_t)st.st_size;
    if (len > HEADER + (1ULL << 31))
        len = HEADER + (1ULL << 31);
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("mmap %s: %s", what, strerror(errno));
    base = p;
    map_len = (size_t)len;
    map_dev = st.st_dev;
    map_ino = st.st_ino;
    close(fd); /* the mapping keeps the file */
    validate_header(map_len);
}

/* A ring file at `path`, opened (never created). */
static void open_file(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("open %s: %s", path, strerror(errno));
    path_g = path;
    open_mapped(fd, path);
}

/* A ring memfd inherited as descriptor `fd`: it must be sealed against shrinking and growing
 * before it is mapped (LAYOUT.md: a file that can shrink would fault under the mapping). */
static void open_memfd(int fd) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        die("descriptor %d is not a sealable memfd: %s", fd, strerror(errno));
    if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        die("memfd %d is not sealed against resizing (seals %#x)", fd, seals);
    open_mapped(fd, "the memfd");
}

/* Both roles have been claimed (LAYOUT.md, "Claiming a role", step 5): a segment is marked for
 * removal, a file's path unlinked if it still names the file we map, a memfd left alone.
 * Errors are ignored. */
static void remove_name(void) {
    struct stat here;
    if (shmid_g >= 0)
        shmctl(shmid_g, IPC_RMID, NULL);
    else if (path_g && stat(path_g, &here) == 0 && here.st_dev == map_dev && here.st_ino == map_ino)
        unlink(path_g);
}

/* ---- Claim (LAYOUT.md, "Claiming a role") ----------------------------------------------- */

static void claim(size_t owner_off, size_t pidns_off, size_t claims_off, size_t other_claims_off) {
    uint64_t cur = atomic_load_explicit(W64(owner_off), ACQ);
    if (cur != 0)
        die("role taken by pid %u", (uint32_t)cur);
    atomic_store_explicit(W64(pidns_off), my_pidns, RLX);
    uint64_t expected = 0;
    if (!atomic_compare_exchange_strong_explicit(W64(owner_off), &expected, my_identity, SC, ACQ))
        die("role taken by pid %u", (uint32_t)expected);
    atomic_store_explicit(W64(pidns_off), my_pidns, RLX);
    atomic_fetch_add_explicit(W32(claims_off), 1, SC);
    if (atomic_load_explicit(W32(other_claims_off), SC) != 0 && !(flags & FLAG_PERSISTENT))
        remove_name(); /* both roles claimed */
}

static void check_own(size_t owner_off) {
    uint64_t o = atomic_load_explicit(W64(owner_off), RLX);
    if (o != my_identity)
        die("role lost: owner word holds %#" PRIx64, o);
}

static void announced(void) {
    printf("claimed\n");
    fflush(stdout);
}

/* ---- Producer --------------------------------------------------------------------------- */

static uint64_t p_tail, p_published, p_head_cache, p_sent;

static void publish(void) {
    if (p_tail == p_published)
        return;
    atomic_store_explicit(W64(P_SENT), p_sent, RLX);
    atomic_store_explicit(W64(P_TAIL), p_tail, REL);
    p_published = p_tail;
    wake(P_CONSUMER_WAITING, P_DATA_EVENT);
}

static void refresh_head(void) {
    uint64_t head = atomic_load_explicit(W64(K_HEAD), ACQ);
    if (head - p_head_cache > p_published - p_head_cache)
        die("head %" PRIu64 " out of range (last %" PRIu64 ", tail %" PRIu64 ")", head, p_head_cache,
            p_published);
    p_head_cache = head;
}

static void write_record(uint64_t at, uint32_t len, uint32_t kind) {
    unsigned char *slot = base + HEADER + (size_t)(at & mask) * slot_size;
    atomic_store_explicit((a32 *)(void *)slot, len, RLX);
    atomic_store_explicit((a32 *)(void *)(slot + 4), kind, RLX);
}

static void check_consumer_alive(void) {
    uint64_t holder = atomic_load_explicit(W64(K_OWNER), ACQ);
    if (holder != 0 && holder_dead(holder, K_OWNER, K_OWNER_PIDNS))
        die("consumer pid %u died", (uint32_t)holder);
}

static void send_one(uint64_t i, uint32_t len) {
    uint64_t pad, k;
    double slept = 0;
    for (;;) {
        check_own(P_OWNER);
        if (atomic_load_explicit(W32(P_CONSUMER_CLOSED), ACQ) != 0)
            die("consumer closed the ring before message %" PRIu64, i);
        k = ((uint64_t)len + 8 + slot_size - 1) / slot_size;
        uint64_t p = p_tail & mask;
        pad = p + k > slot_count ? slot_count - p : 0;
        if (slot_count - (p_tail - p_head_cache) >= pad + k)
            break;
        refresh_head();
        if (slot_count - (p_tail - p_head_cache) >= pad + k)
            break;
        /* Full: publish what we hold, then sleep. */
        publish();
        uint32_t seen = atomic_load_explicit(W32(K_SPACE_EVENT), ACQ);
        atomic_exchange_explicit(W32(K_PRODUCER_WAITING), 1, AR);
        sleeper_barrier();
        if (atomic_load_explicit(W64(K_HEAD), ACQ) == p_head_cache &&
            atomic_load_explicit(W32(P_CONSUMER_CLOSED), ACQ) == 0) {
            futex_wait(W32(K_SPACE_EVENT), seen);
            n_sleeps++;
        }
        atomic_exchange_explicit(W32(K_PRODUCER_WAITING), 0, RLX);
        if (now() - slept > 0.01) {
            slept = now();
            check_consumer_alive();
            check_deadline("waiting for room");
        }
    }
    if (pad) {
        write_record(p_tail, (uint32_t)(pad * slot_size - 8), KIND_PADDING);
        n_padding++;
    }
    uint64_t at = p_tail + pad;
    unsigned char *payload = base + HEADER + (size_t)(at & mask) * slot_size + 8;
    for (uint32_t j = 0; j < len; j++)
        payload[j] = msg_byte(i, j);
    write_record(at, len, KIND_MESSAGE);
    p_tail = at + k;
    p_sent++;
}

static void run_producer(uint64_t count, uint32_t size) {
    claim(P_OWNER, P_OWNER_PIDNS, P_CLAIMS, K_CLAIMS);
    p_tail = atomic_load_explicit(W64(P_TAIL), RLX);
    p_published = p_tail;
    p_head_cache = atomic_load_explicit(W64(K_HEAD), ACQ);
    p_sent = atomic_load_explicit(W64(P_SENT), RLX);
    if (p_tail - p_head_cache > slot_count)
        die("tail - head > slot count at claim");
    if (size > max_message)
        die("--size %u exceeds the ring's max message %u", size, max_message);
    announced();
    for (uint64_t i = 0; i < count; i++) {
        send_one(i, msg_len(i, size));
        if (i % 4 != 3) /* publish most messages at once, some in pairs */
            publish();
    }
    /* Close: own word, publish, release, wake. */
    check_own(P_OWNER);
    publish();
    uint64_t me = my_identity;
    if (!atomic_compare_exchange_strong_explicit(W64(P_OWNER), &me, 0, REL, RLX))
        die("role lost at close");
    wake(P_CONSUMER_WAITING, P_DATA_EVENT);
}

/* ---- Consumer --------------------------------------------------------------------------- */

static uint64_t c_head, c_released, c_tail_cache, c_received;
static uint32_t c_last_claims;
static int c_producer_seen;

enum { NOT_EMPTY, EMPTY, END };

static void refresh_tail(void) {
    uint64_t tail = atomic_load_explicit(W64(P_TAIL), ACQ);
    uint64_t ahead = tail - c_released, seen = c_tail_cache - c_released;
    if (ahead > slot_count || ahead < seen)
        die("tail %" PRIu64 " out of range (released head %" PRIu64 ", last tail %" PRIu64 ")", tail,
            c_released, c_tail_cache);
    if (tail != c_tail_cache)
        c_producer_seen = 1;
    c_tail_cache = tail;
}

static int empty_or_end(void) {
    uint32_t c = atomic_load_explicit(W32(P_CLAIMS), ACQ);
    if (c < c_last_claims)
        die("producer claims went down (%u < %u)", c, c_last_claims);
    if (c == 0 && c_producer_seen)
        die("producer claims 0 after a producer was seen");
    c_last_claims = c;
    if (c)
        c_producer_seen = 1;
    uint64_t o = atomic_load_explicit(W64(P_OWNER), ACQ);
    refresh_tail();
    if (c_head != c_tail_cache)
        return NOT_EMPTY;
    check_own(K_OWNER);
    return o == 0 && c != 0 ? END : EMPTY;
}

static void release(void) {
    if (c_head == c_released)
        return;
    check_own(K_OWNER);
    atomic_store_explicit(W64(K_RECEIVED), c_received, RLX);
    atomic_store_explicit(W64(K_HEAD), c_head, REL);
    c_released = c_head;
    wake(K_PRODUCER_WAITING, K_SPACE_EVENT);
}

static void sleep_for_data(void) {
    uint32_t seen = atomic_load_explicit(W32(P_DATA_EVENT), ACQ);
    atomic_exchange_explicit(W32(P_CONSUMER_WAITING), 1, AR);
    sleeper_barrier();
    int ever = atomic_load_explicit(W32(P_CLAIMS), ACQ) != 0;
    uint64_t holder = atomic_load_explicit(W64(P_OWNER), ACQ);
    uint64_t tail = atomic_load_explicit(W64(P_TAIL), ACQ);
    if (!(tail != c_head || (holder == 0 && ever))) {
        futex_wait(W32(P_DATA_EVENT), seen);
        n_sleeps++;
    }
    atomic_exchange_explicit(W32(P_CONSUMER_WAITING), 0, RLX);
}

/* Waits until a record is published (NOT_EMPTY) or the stream ends (END). */
static int wait_for_data(const char *what) {
    double checked = now();
    for (;;) {
        int r = empty_or_end();
        if (r != EMPTY)
            return r;
        release(); /* never block holding read slots (we release each message anyway) */
        sleep_for_data();
        if (now() - checked > 0.01) {
            checked = now();
            uint64_t holder = atomic_load_explicit(W64(P_OWNER), ACQ);
            if (holder != 0 && holder_dead(holder, P_OWNER, P_OWNER_PIDNS) &&
                empty_or_end() == EMPTY)
                die("producer pid %u died %s", (uint32_t)holder, what);
            check_deadline(what);
        }
    }
}

/* Finds the next message: its counter and length, validated. */
static uint64_t next_message(uint64_t i, uint32_t *len_out) {
    for (int round = 0;; round++) {
        if (round > 2)
            die("more than one padding record in a row");
        if (c_head == c_tail_cache && wait_for_data("waiting for a message") == END)
            die("end of stream after %" PRIu64 " messages, expected more", i);
        uint64_t at = c_head, available = c_tail_cache - at, p = at & mask;
        unsigned char *slot = base + HEADER + (size_t)p * slot_size;
        uint32_t len = atomic_load_explicit((a32 *)(void *)slot, RLX);
        uint32_t kind = atomic_load_explicit((a32 *)(void *)(slot + 4), RLX);
        if (kind == KIND_MESSAGE) {
            uint64_t k = ((uint64_t)len + 8 + slot_size - 1) / slot_size;
            if (len > max_message)
                die("record at %" PRIu64 " of %u bytes exceeds max message %u", at, len, max_message);
            if (p + k > slot_count)
                die("record at %" PRIu64 " overruns the array", at);
            if (k > available)
                die("record at %" PRIu64 " extends beyond the tail", at);
            *len_out = len;
            return at;
        } else if (kind == KIND_PADDING) {
            uint64_t slots = slot_count - p;
            if (slots >= available)
                die("padding at %" PRIu64 " not followed by a message", at);
            if (len != slots * slot_size - 8)
                die("padding at %" PRIu64 " has length %u, expected %" PRIu64, at, len,
                    slots * slot_size - 8);
            c_head = at + slots;
            n_padding++;
        } else {
            die("record at %" PRIu64 " has unknown kind %u", at, kind);
        }
    }
}

static void run_consumer(uint64_t count, uint32_t size) {
    claim(K_OWNER, K_OWNER_PIDNS, K_CLAIMS, P_CLAIMS);
    c_head = c_released = atomic_load_explicit(W64(K_HEAD), RLX);
    c_tail_cache = atomic_load_explicit(W64(P_TAIL), ACQ);
    c_received = atomic_load_explicit(W64(K_RECEIVED), RLX);
    c_last_claims = atomic_load_explicit(W32(P_CLAIMS), ACQ);
    c_producer_seen = c_last_claims != 0 || c_tail_cache != c_head ||
                      atomic_load_explicit(W64(P_SENT), RLX) != 0;
    if (c_tail_cache - c_head > slot_count)
        die("tail - head > slot count at claim");
    /* Reopen the ring for the producer only once the checks passed. */
    atomic_store_explicit(W32(P_CONSUMER_CLOSED), 0, REL);
    announced();
    unsigned char *buf = malloc(max_message ? max_message : 1);
    if (!buf)
        die("out of memory");
    for (uint64_t i = 0; i < count; i++) {
        uint32_t len;
        uint64_t at = next_message(i, &len);
        const unsigned char *payload = base + HEADER + (size_t)(at & mask) * slot_size + 8;
        memcpy(buf, payload, len); /* copy out once, check the copy */
        uint32_t want = msg_len(i, size);
        if (len != want)
            die("message %" PRIu64 " has %u bytes, expected %u", i, len, want);
        for (uint32_t j = 0; j < len; j++)
            if (buf[j] != msg_byte(i, j))
                die("message %" PRIu64 " byte %u is %u, expected %u", i, j, buf[j], msg_byte(i, j));
        c_head = at + ((uint64_t)len + 8 + slot_size - 1) / slot_size;
        c_received++;
        if (i % 3 != 2) /* release most messages at once, some in pairs */
            release();
    }
    free(buf);
    /* Exactly N: the next thing must be the end of stream, not a message. */
    if (c_head != c_tail_cache || wait_for_data("waiting for the end of stream") != END)
        die("a message after the %" PRIu64 " expected", count);
    /* Close: own word, release, closed flag, give the role back, wake. */
    check_own(K_OWNER);
    release();
    atomic_store_explicit(W32(P_CONSUMER_CLOSED), 1, REL);
    uint64_t me = my_identity;
    if (!atomic_compare_exchange_strong_explicit(W64(K_OWNER), &me, 0, REL, RLX))
        die("role lost at close");
    wake(K_PRODUCER_WAITING, K_SPACE_EVENT);
}

/* ---- Main ------------------------------------------------------------------------------- */

static uint64_t num(const char *s, const char *what) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || !*s)
        die("%s: not a number: %s", what, s);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: peer send|recv --key K|--path P|--fd N --count N --size S [--slots C] "
            "[--slot-size B] [--initial-index X] [--timeout SECONDS]");
    side = argv[1];
    int sending = strcmp(side, "send") == 0;
    if (!sending && strcmp(side, "recv") != 0)
        die("unknown mode %s", side);
    uint64_t key = 0, count = 0, size = 0, slots = 4096, ssize = 64, initial = 0, timeout = 120;
    int have_key = 0, places = 0;
    const char *path = NULL;
    uint64_t fd = 0;
    for (int a = 2; a + 1 < argc + 1; a += 2) {
        if (a + 1 >= argc)
            die("option %s needs a value", argv[a]);
        const char *o = argv[a], *v = argv[a + 1];
        if (!strcmp(o, "--key"))
            key = num(v, o), have_key = 1, places++;
        else if (!strcmp(o, "--path"))
            path = v, places++;
        else if (!strcmp(o, "--fd"))
            fd = num(v, o), places++;
        else if (!strcmp(o, "--count"))
            count = num(v, o);
        else if (!strcmp(o, "--size"))
            size = num(v, o);
        else if (!strcmp(o, "--slots"))
            slots = num(v, o);
        else if (!strcmp(o, "--slot-size"))
            ssize = num(v, o);
        else if (!strcmp(o, "--initial-index"))
            initial = num(v, o);
        else if (!strcmp(o, "--timeout"))
            timeout = num(v, o);
        else
            die("unknown option %s", o);
    }
    if (places != 1)
        die("give exactly one of --key, --path and --fd");
    if (have_key && (key == 0 || key > UINT32_MAX))
        die("--key must be a non-zero 32-bit key");
    if (!have_key && !path && fd > INT_MAX)
        die("--fd must be a descriptor number");
    if (size > UINT32_MAX || !pow2(slots) || !pow2(ssize) || ssize < 8)
        die("bad --size, --slots or --slot-size");
    deadline = now() + (double)timeout;
    compute_identity();
    if (have_key)
        create_or_open((uint32_t)key, (uint32_t)ssize, (uint32_t)slots, initial);
    else if (path)
        open_file(path);
    else
        open_memfd((int)fd);
    if (sending)
        run_producer(count, (uint32_t)size);
    else
        run_consumer(count, (uint32_t)size);
    if (shmid_g >= 0)
        shmdt(base);
    else
        munmap(base, map_len);
    fprintf(stderr, "c peer %s: ok, %" PRIu64 " messages, %" PRIu64 " padding records, %" PRIu64
            " futex sleeps\n", side, count, n_padding, n_sleeps);
    return 0;
}
