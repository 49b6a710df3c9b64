//! Every entry point of the C API against bad arguments, called as C calls them (through the
//! `extern "C"` functions): NULL for each pointer, zero and impossible lengths and timeouts,
//! impossible configurations, descriptors and ids, calls in the wrong state, and sides used
//! after their peer, their ring or their role went away. Each must return its documented status
//! and never `SHMPIPE_STATUS_PANIC`; a panic that escaped an `extern "C"` function would abort
//! this test's process. Heap and memfd rings only: nothing is left in `ipcs` or on disk.

use std::ptr::{null, null_mut};

use shmpipe::consumer::*;
use shmpipe::error::*;
use shmpipe::producer::*;
use shmpipe::ring::*;
use shmpipe::{SHMPIPE_WAIT_SLEEP, SHMPIPE_WAIT_SPIN};

use ShmpipeStatus as S;

/// `status` is `want`, with the last error's message on failure.
#[track_caller]
fn expect(status: ShmpipeStatus, want: ShmpipeStatus, what: &str) {
    assert_eq!(status, want, "{what}: {}", last_message());
}

fn last_message() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until this thread's next failing call.
    unsafe { std::ffi::CStr::from_ptr(shmpipe_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A config of `slot_count` slots of 64 bytes.
fn config(slot_count: u32) -> ShmpipeConfig {
    ShmpipeConfig {
        slot_size: 64,
        slot_count,
        max_message: 0,
        mode: 0,
        init_timeout_ms: 0,
        initial_index: 0,
        flags: 0,
        accept_owners_len: 0,
        accept_owners: null(),
    }
}

/// A heap ring of 16 slots of 64 bytes with both sides claimed, freed on drop.
struct Pair {
    ring: *mut ShmpipeRing,
    tx: *mut ShmpipeProducer,
    rx: *mut ShmpipeConsumer,
}

impl Pair {
    fn new() -> Pair {
        let mut p = Pair {
            ring: null_mut(),
            tx: null_mut(),
            rx: null_mut(),
        };
        // SAFETY: a valid config and out-pointers.
        unsafe {
            expect(
                shmpipe_ring_create_heap(&config(16), &mut p.ring),
                S::Ok,
                "heap ring",
            );
            expect(shmpipe_ring_producer(p.ring, &mut p.tx), S::Ok, "producer");
            expect(shmpipe_ring_consumer(p.ring, &mut p.rx), S::Ok, "consumer");
        }
        p
    }

    fn max(&self) -> usize {
        // SAFETY: a live handle.
        unsafe { shmpipe_producer_max_message(self.tx) }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // SAFETY: live handles or NULL, not used again.
        unsafe {
            shmpipe_producer_close(self.tx);
            shmpipe_consumer_close(self.rx);
            shmpipe_ring_close(self.ring);
        }
    }
}

#[test]
fn null_pointers_are_refused_by_every_entry_point() {
    let p = Pair::new();
    let mut ring = null_mut();
    let mut tx = null_mut();
    let mut rx = null_mut();
    let mut buf = [0u8; 8];
    let mut len = 0usize;
    let mut data = null_mut();
    let mut cdata = null();
    let mut int = 0i32;
    let mut size = 0usize;
    let cfg = config(16);
    let (np, nc, nr) = (null_mut(), null_mut(), null_mut::<ShmpipeRing>());
    // SAFETY: every pointer is valid or NULL; the functions are documented to refuse NULL.
    unsafe {
        let calls: Vec<(&str, ShmpipeStatus)> = vec![
            (
                "create_heap out",
                shmpipe_ring_create_heap(&cfg, null_mut()),
            ),
            (
                "create_memfd out",
                shmpipe_ring_create_memfd(&cfg, null_mut()),
            ),
            (
                "create_key out",
                shmpipe_ring_create_key(0, &cfg, null_mut()),
            ),
            ("open_key out", shmpipe_ring_open_key(1, &cfg, null_mut())),
            (
                "open_or_create_key out",
                shmpipe_ring_open_or_create_key(1, &cfg, null_mut()),
            ),
            (
                "open_shmid out",
                shmpipe_ring_open_shmid(0, &cfg, null_mut()),
            ),
            (
                "open_memfd out",
                shmpipe_ring_open_memfd(0, &cfg, null_mut()),
            ),
            (
                "create_path path",
                shmpipe_ring_create_path(null(), &cfg, &mut ring),
            ),
            (
                "open_path path",
                shmpipe_ring_open_path(null(), &cfg, &mut ring),
            ),
            (
                "open_or_create_path path",
                shmpipe_ring_open_or_create_path(null(), &cfg, &mut ring),
            ),
            (
                "create_path out",
                shmpipe_ring_create_path(c"/nonexistent/r".as_ptr(), &cfg, null_mut()),
            ),
            ("ftok path", shmpipe_ftok(null(), 1, &mut int)),
            ("ftok key", shmpipe_ftok(c"/".as_ptr(), 1, null_mut())),
            ("memfd_recv fd", shmpipe_memfd_recv(0, null_mut())),
            ("ring_remove ring", shmpipe_ring_remove(nr)),
            (
                "ring_info ring",
                shmpipe_ring_info(nr, &mut ShmpipeRingInfo::default()),
            ),
            ("ring_info info", shmpipe_ring_info(p.ring, null_mut())),
            (
                "ring_stats ring",
                shmpipe_ring_stats(nr, &mut ShmpipeStats::default()),
            ),
            ("ring_producer ring", shmpipe_ring_producer(nr, &mut tx)),
            (
                "ring_producer out",
                shmpipe_ring_producer(p.ring, null_mut()),
            ),
            ("ring_consumer ring", shmpipe_ring_consumer(nr, &mut rx)),
            (
                "ring_consumer out",
                shmpipe_ring_consumer(p.ring, null_mut()),
            ),
            (
                "take_over_producer ring",
                shmpipe_ring_take_over_producer(nr, &mut tx),
            ),
            (
                "take_over_producer out",
                shmpipe_ring_take_over_producer(p.ring, null_mut()),
            ),
            (
                "take_over_consumer ring",
                shmpipe_ring_take_over_consumer(nr, &mut rx),
            ),
            (
                "take_over_consumer out",
                shmpipe_ring_take_over_consumer(p.ring, null_mut()),
            ),
            ("gc count", shmpipe_gc(1, null_mut(), 0, null_mut())),
            ("gc shmids", shmpipe_gc(1, null_mut(), 4, &mut size)),
            (
                "try_send producer",
                shmpipe_producer_try_send(np, buf.as_ptr(), 1),
            ),
            ("try_send data", shmpipe_producer_try_send(p.tx, null(), 1)),
            ("send producer", shmpipe_producer_send(np, buf.as_ptr(), 1)),
            ("send data", shmpipe_producer_send(p.tx, null(), 1)),
            (
                "send_timeout producer",
                shmpipe_producer_send_timeout(np, buf.as_ptr(), 1, 0),
            ),
            (
                "send_timeout data",
                shmpipe_producer_send_timeout(p.tx, null(), 1, 0),
            ),
            (
                "try_reserve producer",
                shmpipe_producer_try_reserve(np, 1, &mut data),
            ),
            (
                "try_reserve data",
                shmpipe_producer_try_reserve(p.tx, 1, null_mut()),
            ),
            (
                "reserve producer",
                shmpipe_producer_reserve(np, 1, &mut data),
            ),
            (
                "reserve data",
                shmpipe_producer_reserve(p.tx, 1, null_mut()),
            ),
            (
                "reserve_timeout producer",
                shmpipe_producer_reserve_timeout(np, 1, 0, &mut data),
            ),
            (
                "reserve_timeout data",
                shmpipe_producer_reserve_timeout(p.tx, 1, 0, null_mut()),
            ),
            ("commit producer", shmpipe_producer_commit(np, 0)),
            ("abort producer", shmpipe_producer_abort(np)),
            ("producer batch_begin", shmpipe_producer_batch_begin(np)),
            ("producer batch_publish", shmpipe_producer_batch_publish(np)),
            ("producer batch_end", shmpipe_producer_batch_end(np)),
            (
                "producer set_wait_strategy",
                shmpipe_producer_set_wait_strategy(np, 0),
            ),
            (
                "check_consumer producer",
                shmpipe_producer_check_consumer(np),
            ),
            (
                "try_recv consumer",
                shmpipe_consumer_try_recv(nc, buf.as_mut_ptr(), 8, &mut len),
            ),
            (
                "try_recv buf",
                shmpipe_consumer_try_recv(p.rx, null_mut(), 8, &mut len),
            ),
            (
                "try_recv len",
                shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 8, null_mut()),
            ),
            (
                "recv consumer",
                shmpipe_consumer_recv(nc, buf.as_mut_ptr(), 8, &mut len),
            ),
            (
                "recv buf",
                shmpipe_consumer_recv(p.rx, null_mut(), 8, &mut len),
            ),
            (
                "recv len",
                shmpipe_consumer_recv(p.rx, buf.as_mut_ptr(), 8, null_mut()),
            ),
            (
                "recv_timeout consumer",
                shmpipe_consumer_recv_timeout(nc, buf.as_mut_ptr(), 8, &mut len, 0),
            ),
            (
                "recv_timeout len",
                shmpipe_consumer_recv_timeout(p.rx, buf.as_mut_ptr(), 8, null_mut(), 0),
            ),
            (
                "try_lend consumer",
                shmpipe_consumer_try_lend(nc, &mut cdata, &mut len),
            ),
            (
                "try_lend data",
                shmpipe_consumer_try_lend(p.rx, null_mut(), &mut len),
            ),
            (
                "try_lend len",
                shmpipe_consumer_try_lend(p.rx, &mut cdata, null_mut()),
            ),
            (
                "lend consumer",
                shmpipe_consumer_lend(nc, &mut cdata, &mut len),
            ),
            (
                "lend data",
                shmpipe_consumer_lend(p.rx, null_mut(), &mut len),
            ),
            (
                "lend_timeout len",
                shmpipe_consumer_lend_timeout(p.rx, 0, &mut cdata, null_mut()),
            ),
            ("release consumer", shmpipe_consumer_release(nc)),
            ("consumer batch_begin", shmpipe_consumer_batch_begin(nc)),
            ("consumer batch_release", shmpipe_consumer_batch_release(nc)),
            ("consumer batch_end", shmpipe_consumer_batch_end(nc)),
            (
                "consumer set_wait_strategy",
                shmpipe_consumer_set_wait_strategy(nc, 0),
            ),
        ];
        for (what, status) in calls {
            expect(status, S::NullPointer, what);
        }
        // NULL where it is allowed: no handle to free, no bytes, the defaults.
        shmpipe_ring_close(null_mut());
        expect(
            shmpipe_producer_close(null_mut()),
            S::Ok,
            "producer_close(NULL)",
        );
        expect(
            shmpipe_consumer_close(null_mut()),
            S::Ok,
            "consumer_close(NULL)",
        );
        assert_eq!(shmpipe_producer_max_message(null()), 0);
        assert_eq!(shmpipe_consumer_max_message(null()), 0);
        expect(
            shmpipe_producer_try_send(p.tx, null(), 0),
            S::Ok,
            "NULL data of 0 bytes",
        );
        expect(
            shmpipe_consumer_try_recv(p.rx, null_mut(), 0, &mut len),
            S::Ok,
            "the empty message into NULL of 0 bytes",
        );
        expect(
            shmpipe_gc(1, null_mut(), 0, &mut size),
            S::Ok,
            "gc into NULL of 0 ids",
        );
        expect(
            shmpipe_ring_create_heap(null(), &mut ring),
            S::Ok,
            "NULL config",
        );
        shmpipe_ring_close(ring);
        // Nothing the calls above refused was made or written.
        assert!(tx.is_null() && rx.is_null() && data.is_null() && cdata.is_null());
        assert_eq!(int, 0);
    }
}

#[test]
fn zero_and_impossible_lengths() {
    let p = Pair::new();
    let max = p.max();
    assert!(max > 0);
    let big = vec![7u8; max + 1];
    let mut buf = vec![0u8; max];
    let mut len = 0usize;
    let mut data = null_mut();
    // SAFETY: live handles; every buffer is as long as its length says.
    unsafe {
        // Sends: a length no object has, one over the maximum, the maximum.
        for n in [usize::MAX, isize::MAX as usize + 1] {
            expect(
                shmpipe_producer_try_send(p.tx, big.as_ptr(), n),
                S::InvalidArgument,
                "try_send of more than any object",
            );
            expect(
                shmpipe_producer_send_timeout(p.tx, big.as_ptr(), n, 0),
                S::InvalidArgument,
                "send_timeout of more than any object",
            );
        }
        expect(
            shmpipe_producer_try_send(p.tx, big.as_ptr(), max + 1),
            S::TooLarge,
            "max + 1",
        );
        expect(
            shmpipe_producer_send(p.tx, big.as_ptr(), max + 1),
            S::TooLarge,
            "blocking max + 1",
        );
        expect(
            shmpipe_producer_try_send(p.tx, big.as_ptr(), max),
            S::Ok,
            "max",
        );
        // Receives: a capacity no object has; 0 for a message that needs more.
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), usize::MAX, &mut len),
            S::InvalidArgument,
            "a capacity larger than any object",
        );
        expect(
            shmpipe_consumer_try_recv(p.rx, null_mut(), 0, &mut len),
            S::BufferTooSmall,
            "capacity 0",
        );
        assert_eq!(len, max, "the length needed");
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), max, &mut len),
            S::Ok,
            "recv max",
        );
        assert_eq!((len, &buf[..]), (max, &big[..max]));

        // Reserves: every impossible length, non-blocking, blocking and with a timeout.
        for n in [
            max + 1,
            u32::MAX as usize,
            u32::MAX as usize + 1,
            isize::MAX as usize,
            usize::MAX,
        ] {
            expect(
                shmpipe_producer_try_reserve(p.tx, n, &mut data),
                S::TooLarge,
                "try_reserve",
            );
            expect(
                shmpipe_producer_reserve(p.tx, n, &mut data),
                S::TooLarge,
                "reserve",
            );
            expect(
                shmpipe_producer_reserve_timeout(p.tx, n, u64::MAX, &mut data),
                S::TooLarge,
                "reserve_timeout",
            );
            assert!(data.is_null(), "no pointer for a refused reserve of {n}");
        }
        // A reserve of 0 bytes, committed longer than reserved (refused, still open), then 0.
        expect(
            shmpipe_producer_try_reserve(p.tx, 0, &mut data),
            S::Ok,
            "reserve 0",
        );
        for n in [1, usize::MAX] {
            expect(
                shmpipe_producer_commit(p.tx, n),
                S::InvalidArgument,
                "commit past the grant",
            );
        }
        expect(shmpipe_producer_commit(p.tx, 0), S::Ok, "commit 0");
        expect(
            shmpipe_consumer_try_recv(p.rx, null_mut(), 0, &mut len),
            S::Ok,
            "the empty one",
        );
        assert_eq!(len, 0);

        // Timeouts of 0 and of u64::MAX nanoseconds, where the answer is known at once.
        expect(
            shmpipe_producer_send_timeout(p.tx, big.as_ptr(), 1, u64::MAX),
            S::Ok,
            "send, no limit",
        );
        expect(
            shmpipe_consumer_recv_timeout(p.rx, buf.as_mut_ptr(), max, &mut len, u64::MAX),
            S::Ok,
            "recv, no limit",
        );
        expect(
            shmpipe_consumer_recv_timeout(p.rx, buf.as_mut_ptr(), max, &mut len, 0),
            S::Timeout,
            "recv, no time",
        );
        let mut cdata = null();
        expect(
            shmpipe_consumer_lend_timeout(p.rx, 0, &mut cdata, &mut len),
            S::Timeout,
            "lend, no time",
        );
        for strategy in [-1, 3, i32::MIN, i32::MAX] {
            expect(
                shmpipe_producer_set_wait_strategy(p.tx, strategy),
                S::InvalidArgument,
                "producer wait strategy",
            );
            expect(
                shmpipe_consumer_set_wait_strategy(p.rx, strategy),
                S::InvalidArgument,
                "consumer wait strategy",
            );
        }
        // The ring is unharmed: one message goes through.
        expect(
            shmpipe_producer_try_send(p.tx, big.as_ptr(), 3),
            S::Ok,
            "send after all that",
        );
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), max, &mut len),
            S::Ok,
            "recv it",
        );
        assert_eq!(len, 3);
    }
}

#[test]
fn impossible_configurations_ids_and_descriptors() {
    let owners = [0u32; 2];
    let bad: Vec<(&str, ShmpipeConfig, ShmpipeStatus)> = vec![
        (
            "slot_size 3",
            ShmpipeConfig {
                slot_size: 3,
                ..config(16)
            },
            S::InvalidConfig,
        ),
        (
            "slot_size 2^31",
            ShmpipeConfig {
                slot_size: 1 << 31,
                ..config(16)
            },
            S::InvalidConfig,
        ),
        (
            "slot_size u32::MAX",
            ShmpipeConfig {
                slot_size: u32::MAX,
                ..config(16)
            },
            S::InvalidConfig,
        ),
        ("slot_count 3", config(3), S::InvalidConfig),
        ("slot_count 2^31", config(1 << 31), S::InvalidConfig),
        ("slot_count u32::MAX", config(u32::MAX), S::InvalidConfig),
        (
            "max_message u64::MAX",
            ShmpipeConfig {
                max_message: u64::MAX,
                ..config(16)
            },
            S::InvalidConfig,
        ),
        (
            "max_message 2^32",
            ShmpipeConfig {
                max_message: 1 << 32,
                ..config(16)
            },
            S::InvalidConfig,
        ),
        (
            "flags",
            ShmpipeConfig {
                flags: u32::MAX,
                ..config(16)
            },
            S::InvalidArgument,
        ),
        (
            "accept_owners NULL",
            ShmpipeConfig {
                accept_owners_len: u32::MAX,
                ..config(16)
            },
            S::NullPointer,
        ),
    ];
    let fine: Vec<(&str, ShmpipeConfig)> = vec![
        (
            "mode u32::MAX",
            ShmpipeConfig {
                mode: u32::MAX,
                ..config(16)
            },
        ),
        (
            "init_timeout u32::MAX",
            ShmpipeConfig {
                init_timeout_ms: u32::MAX,
                ..config(16)
            },
        ),
        (
            "initial_index u64::MAX",
            ShmpipeConfig {
                initial_index: u64::MAX,
                ..config(16)
            },
        ),
        (
            "max_message 1",
            ShmpipeConfig {
                max_message: 1,
                ..config(16)
            },
        ),
        (
            "accept_owners",
            ShmpipeConfig {
                accept_owners_len: 2,
                accept_owners: owners.as_ptr(),
                ..config(16)
            },
        ),
    ];
    let mut ring = null_mut();
    let mut key = 0i32;
    let mut fd = -1;
    // SAFETY: valid configs (their owners as long as they say) and out-pointers.
    unsafe {
        for (what, cfg, want) in &bad {
            expect(shmpipe_ring_create_heap(cfg, &mut ring), *want, what);
            expect(shmpipe_ring_create_memfd(cfg, &mut ring), *want, what);
            assert!(ring.is_null(), "{what}: no ring");
        }
        for (what, cfg) in &fine {
            for create in [shmpipe_ring_create_heap, shmpipe_ring_create_memfd] {
                let status = create(cfg, &mut ring);
                assert_ne!(status, S::Panic, "{what}: {}", last_message());
                if status == S::Ok {
                    shmpipe_ring_close(ring);
                    ring = null_mut();
                }
            }
        }
        // A ring whose counters start just before they wrap carries messages across the wrap.
        let cfg = ShmpipeConfig {
            initial_index: u64::MAX - 3,
            ..config(4)
        };
        expect(
            shmpipe_ring_create_heap(&cfg, &mut ring),
            S::Ok,
            "counters about to wrap",
        );
        let (mut tx, mut rx) = (null_mut(), null_mut());
        expect(shmpipe_ring_producer(ring, &mut tx), S::Ok, "producer");
        expect(shmpipe_ring_consumer(ring, &mut rx), S::Ok, "consumer");
        let mut buf = [0u8; 64];
        let mut len = 0;
        for i in 0..20u8 {
            expect(
                shmpipe_producer_try_send(tx, [i; 40].as_ptr(), 40),
                S::Ok,
                "send across the wrap",
            );
            expect(
                shmpipe_consumer_try_recv(rx, buf.as_mut_ptr(), 64, &mut len),
                S::Ok,
                "recv",
            );
            assert_eq!((len, buf[0]), (40, i));
        }
        shmpipe_producer_close(tx);
        shmpipe_consumer_close(rx);
        shmpipe_ring_close(ring);
        ring = null_mut();

        // ftok ids outside 1..=255, an empty path, a missing one.
        for id in [-1, 256, i32::MIN, i32::MAX] {
            expect(
                shmpipe_ftok(c"/".as_ptr(), id, &mut key),
                S::InvalidArgument,
                "ftok id",
            );
        }
        expect(
            shmpipe_ftok(c"".as_ptr(), 1, &mut key),
            S::InvalidArgument,
            "ftok empty path",
        );
        expect(
            shmpipe_ftok(c"/nonexistent/x".as_ptr(), 1, &mut key),
            S::Ftok,
            "ftok missing path",
        );
        assert_eq!(key, 0);
        expect(
            shmpipe_ring_open_path(c"".as_ptr(), null(), &mut ring),
            S::InvalidArgument,
            "empty path",
        );
        // Descriptors that are not open, or not a memfd ring; shmids that do not exist.
        for bad_fd in [-1, i32::MIN, i32::MAX] {
            expect(
                shmpipe_ring_open_memfd(bad_fd, null(), &mut ring),
                S::Sys,
                "open_memfd of no fd",
            );
            expect(
                shmpipe_memfd_send(bad_fd, bad_fd),
                S::Sys,
                "memfd_send over no socket",
            );
            expect(
                shmpipe_memfd_recv(bad_fd, &mut fd),
                S::Sys,
                "memfd_recv over no socket",
            );
        }
        let status = shmpipe_ring_open_memfd(2, null(), &mut ring);
        assert!(
            status != S::Ok && status != S::Panic,
            "stderr is no memfd ring: {status:?}"
        );
        for shmid in [-1, i32::MIN, i32::MAX] {
            let status = shmpipe_ring_open_shmid(shmid, null(), &mut ring);
            assert!(
                status != S::Ok && status != S::Panic,
                "shmid {shmid}: {status:?}"
            );
        }
        assert!(ring.is_null() && fd == -1);
        // Any status code has a text.
        for code in [i32::MIN, -1, 11, 59, 65, i32::MAX] {
            assert!(!shmpipe_strerror(code).is_null());
        }
    }
}

#[test]
fn calls_in_the_wrong_state() {
    let p = Pair::new();
    let mut data = null_mut();
    let mut cdata = null();
    let mut len = 0usize;
    let mut buf = [0u8; 64];
    // SAFETY: live handles, valid buffers and out-pointers.
    unsafe {
        expect(
            shmpipe_producer_commit(p.tx, 0),
            S::BadState,
            "commit, no grant",
        );
        expect(shmpipe_producer_abort(p.tx), S::BadState, "abort, no grant");
        expect(
            shmpipe_producer_batch_publish(p.tx),
            S::BadState,
            "publish, no batch",
        );
        expect(
            shmpipe_producer_batch_end(p.tx),
            S::BadState,
            "end, no batch",
        );
        expect(
            shmpipe_consumer_release(p.rx),
            S::BadState,
            "release, nothing lent",
        );
        expect(
            shmpipe_consumer_batch_release(p.rx),
            S::BadState,
            "release, no batch",
        );
        expect(
            shmpipe_consumer_batch_end(p.rx),
            S::BadState,
            "end, no batch",
        );

        // A grant open: only commit and abort.
        expect(
            shmpipe_producer_try_reserve(p.tx, 4, &mut data),
            S::Ok,
            "reserve",
        );
        let refused = [
            shmpipe_producer_try_send(p.tx, buf.as_ptr(), 1),
            shmpipe_producer_send_timeout(p.tx, buf.as_ptr(), 1, 0),
            shmpipe_producer_try_reserve(p.tx, 4, &mut data),
            shmpipe_producer_reserve_timeout(p.tx, 4, 0, &mut data),
            shmpipe_producer_batch_begin(p.tx),
            shmpipe_producer_batch_publish(p.tx),
            shmpipe_producer_batch_end(p.tx),
            shmpipe_producer_set_wait_strategy(p.tx, SHMPIPE_WAIT_SLEEP),
            shmpipe_producer_check_consumer(p.tx),
        ];
        for status in refused {
            expect(status, S::BadState, "with a grant open");
        }
        expect(shmpipe_producer_abort(p.tx), S::Ok, "abort");

        // A batch open: no blocking call, no second batch.
        expect(shmpipe_producer_batch_begin(p.tx), S::Ok, "batch");
        expect(
            shmpipe_producer_batch_begin(p.tx),
            S::BadState,
            "a second batch",
        );
        expect(
            shmpipe_producer_send(p.tx, buf.as_ptr(), 1),
            S::BadState,
            "blocking send",
        );
        expect(
            shmpipe_producer_reserve(p.tx, 1, &mut data),
            S::BadState,
            "blocking reserve",
        );
        expect(
            shmpipe_producer_try_send(p.tx, buf.as_ptr(), 1),
            S::Ok,
            "batch send",
        );
        expect(
            shmpipe_producer_try_reserve(p.tx, 2, &mut data),
            S::Ok,
            "batch reserve",
        );
        expect(
            shmpipe_producer_batch_end(p.tx),
            S::BadState,
            "end with a grant open",
        );
        expect(
            shmpipe_producer_commit(p.tx, 2),
            S::Ok,
            "commit into the batch",
        );
        expect(shmpipe_producer_batch_end(p.tx), S::Ok, "end");

        // A message lent: only release. A batch open: no blocking call.
        expect(
            shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
            S::Ok,
            "lend",
        );
        let refused = [
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            shmpipe_consumer_recv_timeout(p.rx, buf.as_mut_ptr(), 64, &mut len, 0),
            shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
            shmpipe_consumer_lend_timeout(p.rx, 0, &mut cdata, &mut len),
            shmpipe_consumer_batch_begin(p.rx),
            shmpipe_consumer_set_wait_strategy(p.rx, SHMPIPE_WAIT_SPIN),
        ];
        for status in refused {
            expect(status, S::BadState, "with a message lent");
        }
        expect(shmpipe_consumer_release(p.rx), S::Ok, "release");
        expect(shmpipe_consumer_batch_begin(p.rx), S::Ok, "batch");
        expect(
            shmpipe_consumer_batch_begin(p.rx),
            S::BadState,
            "a second batch",
        );
        expect(
            shmpipe_consumer_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            S::BadState,
            "blocking recv",
        );
        expect(
            shmpipe_consumer_lend(p.rx, &mut cdata, &mut len),
            S::BadState,
            "blocking lend",
        );
        expect(
            shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
            S::Ok,
            "batch lend",
        );
        expect(
            shmpipe_consumer_batch_end(p.rx),
            S::BadState,
            "end with a message lent",
        );
        expect(
            shmpipe_consumer_release(p.rx),
            S::Ok,
            "release into the batch",
        );
        expect(shmpipe_consumer_batch_end(p.rx), S::Ok, "end");
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            S::Empty,
            "all read",
        );

        // Closing with a grant, a batch or a lend open frees everything.
        expect(shmpipe_producer_batch_begin(p.tx), S::Ok, "batch");
        expect(
            shmpipe_producer_try_reserve(p.tx, 4, &mut data),
            S::Ok,
            "reserve in it",
        );
        expect(
            shmpipe_producer_try_send(p.tx, buf.as_ptr(), 1),
            S::BadState,
            "send with grant",
        );
    }
    // `Pair`'s drop closes both sides with a batch and a grant open on the producer.
}

#[test]
fn sides_after_their_peer_their_ring_or_their_role_went_away() {
    let mut buf = [0u8; 64];
    let mut len = 0usize;
    let mut data = null_mut();
    let mut cdata = null();
    // SAFETY: live handles, valid buffers and out-pointers; no handle used after its close.
    unsafe {
        // The ring handle closed first: the sides keep working.
        let mut p = Pair::new();
        shmpipe_ring_close(p.ring);
        p.ring = null_mut();
        expect(
            shmpipe_producer_try_send(p.tx, buf.as_ptr(), 3),
            S::Ok,
            "send, ring closed",
        );
        // The producer closed: the message, then the end of stream on every receive, at once
        // even with no time limit.
        expect(shmpipe_producer_close(p.tx), S::Ok, "producer close");
        p.tx = null_mut();
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            S::Ok,
            "the message",
        );
        expect(
            shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            S::Disconnected,
            "try_recv",
        );
        expect(
            shmpipe_consumer_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
            S::Disconnected,
            "recv",
        );
        expect(
            shmpipe_consumer_recv_timeout(p.rx, buf.as_mut_ptr(), 64, &mut len, u64::MAX),
            S::Disconnected,
            "recv_timeout",
        );
        expect(
            shmpipe_consumer_lend(p.rx, &mut cdata, &mut len),
            S::Disconnected,
            "lend",
        );
        expect(
            shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
            S::Disconnected,
            "try_lend",
        );
        drop(p);

        // The consumer closed: every send and reserve says so, blocking or not.
        let mut p = Pair::new();
        expect(shmpipe_consumer_close(p.rx), S::Ok, "consumer close");
        p.rx = null_mut();
        expect(
            shmpipe_producer_try_send(p.tx, buf.as_ptr(), 1),
            S::Disconnected,
            "try_send",
        );
        expect(
            shmpipe_producer_send(p.tx, buf.as_ptr(), 1),
            S::Disconnected,
            "send",
        );
        expect(
            shmpipe_producer_send_timeout(p.tx, buf.as_ptr(), 1, u64::MAX),
            S::Disconnected,
            "send_timeout",
        );
        expect(
            shmpipe_producer_try_reserve(p.tx, 1, &mut data),
            S::Disconnected,
            "try_reserve",
        );
        expect(
            shmpipe_producer_reserve(p.tx, 1, &mut data),
            S::Disconnected,
            "reserve",
        );
        expect(
            shmpipe_producer_check_consumer(p.tx),
            S::Disconnected,
            "check_consumer",
        );
        assert!(data.is_null());

        // A role held by a live side cannot be claimed or taken over again; given back, it
        // cannot be claimed again either (the stream ended) and nothing panics.
        let mut p = Pair::new();
        let (mut tx, mut rx) = (null_mut(), null_mut());
        expect(
            shmpipe_ring_producer(p.ring, &mut tx),
            S::RoleTaken,
            "second producer",
        );
        expect(
            shmpipe_ring_consumer(p.ring, &mut rx),
            S::RoleTaken,
            "second consumer",
        );
        expect(
            shmpipe_ring_take_over_producer(p.ring, &mut tx),
            S::RoleTaken,
            "take over a live producer",
        );
        expect(
            shmpipe_ring_take_over_consumer(p.ring, &mut rx),
            S::RoleTaken,
            "take over a live consumer",
        );
        assert!(tx.is_null() && rx.is_null());
        expect(shmpipe_producer_close(p.tx), S::Ok, "close");
        p.tx = null_mut();
        for status in [
            shmpipe_ring_producer(p.ring, &mut tx),
            shmpipe_ring_take_over_producer(p.ring, &mut tx),
        ] {
            assert_ne!(status, S::Panic, "{}", last_message());
            if status == S::Ok {
                shmpipe_producer_close(tx);
                tx = null_mut();
            }
        }
        // Removing a heap ring is nothing to do, twice.
        expect(shmpipe_ring_remove(p.ring), S::Ok, "remove");
        expect(shmpipe_ring_remove(p.ring), S::Ok, "remove again");
    }
}

#[test]
fn sides_inherited_across_fork_fail_every_call() {
    let p = Pair::new();
    let mut data = null_mut();
    let mut cdata = null();
    let mut len = 0usize;
    // SAFETY: live handles, valid buffers and out-pointers. The child only calls the C API
    // (which allocates: glibc's malloc is usable in a forked child) and leaves with `_exit`.
    unsafe {
        expect(
            shmpipe_producer_try_send(p.tx, b"one".as_ptr(), 3),
            S::Ok,
            "send one",
        );
        expect(
            shmpipe_producer_try_send(p.tx, b"two".as_ptr(), 3),
            S::Ok,
            "send two",
        );
        expect(
            shmpipe_producer_try_reserve(p.tx, 5, &mut data),
            S::Ok,
            "reserve",
        );
        expect(
            shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
            S::Ok,
            "lend one",
        );
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut buf = [0u8; 64];
            let calls = [
                ("commit", shmpipe_producer_commit(p.tx, 5)),
                ("abort", shmpipe_producer_abort(p.tx)),
                ("try_send", shmpipe_producer_try_send(p.tx, buf.as_ptr(), 1)),
                (
                    "send_timeout",
                    shmpipe_producer_send_timeout(p.tx, buf.as_ptr(), 1, 0),
                ),
                (
                    "try_reserve",
                    shmpipe_producer_try_reserve(p.tx, 1, &mut data),
                ),
                ("producer batch_begin", shmpipe_producer_batch_begin(p.tx)),
                ("batch_publish", shmpipe_producer_batch_publish(p.tx)),
                ("producer batch_end", shmpipe_producer_batch_end(p.tx)),
                (
                    "producer wait strategy",
                    shmpipe_producer_set_wait_strategy(p.tx, 0),
                ),
                ("check_consumer", shmpipe_producer_check_consumer(p.tx)),
                ("release", shmpipe_consumer_release(p.rx)),
                (
                    "try_recv",
                    shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
                ),
                (
                    "try_lend",
                    shmpipe_consumer_try_lend(p.rx, &mut cdata, &mut len),
                ),
                ("consumer batch_begin", shmpipe_consumer_batch_begin(p.rx)),
                ("batch_release", shmpipe_consumer_batch_release(p.rx)),
                ("consumer batch_end", shmpipe_consumer_batch_end(p.rx)),
                (
                    "consumer wait strategy",
                    shmpipe_consumer_set_wait_strategy(p.rx, 0),
                ),
                ("producer close", shmpipe_producer_close(p.tx)),
                ("consumer close", shmpipe_consumer_close(p.rx)),
            ];
            let mut failed = 0;
            for (what, status) in calls {
                if status != S::WrongProcess {
                    eprintln!("in the child, {what} returned {status:?}, not WrongProcess");
                    failed += 1;
                }
            }
            libc::_exit(failed);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child's calls did not all fail with WrongProcess (see its stderr): {status:#x}"
        );
        // The parent's grant, lend and messages are as they were.
        assert!(!data.is_null() && len == 3);
        std::ptr::copy_nonoverlapping(b"three".as_ptr(), data, 5);
        expect(
            shmpipe_producer_commit(p.tx, 5),
            S::Ok,
            "the parent commits",
        );
        expect(shmpipe_consumer_release(p.rx), S::Ok, "the parent releases");
        let mut buf = [0u8; 64];
        for want in [&b"two"[..], b"three"] {
            expect(
                shmpipe_consumer_try_recv(p.rx, buf.as_mut_ptr(), 64, &mut len),
                S::Ok,
                "recv",
            );
            assert_eq!(&buf[..len], want);
        }
    }
}
