//! The `iceoryx2` transport (cargo feature `iceoryx2`): iceoryx2's publish-subscribe between
//! the two processes, measured like the shmpipe transports (docs/BENCHMARKS.md, "iceoryx2 in
//! the comparison").
//!
//! Two IPC services of `[u8]` slices, `down` (the measuring side publishes, the peer
//! subscribes) and `up` (the other way), one publisher and one subscriber each, created by the
//! measuring side before it starts the peer, which opens them. A message is a sample loaned
//! from the publisher (`loan_slice_uninit`, its max slice length the session's size), written
//! whole in place and sent; the receiver spins on `receive` (no waitset, like
//! `shmpipe-spin`) and reads the sample whole where it lies. The echo copies the received
//! sample straight into the reply's loan.
//!
//! Streams are lossless: safe overflow off and the publisher's backpressure strategy
//! `RetryUntilDelivered`, so a publisher facing a full subscriber buffer waits (iceoryx2's own
//! wait: it yields, then sleeps) instead of dropping or overwriting. The subscriber's buffer
//! holds as many messages as the shmpipe rings of the same size do.
//!
//! Each session has its own iceoryx2 root directory and shared-memory prefix, named by the
//! measuring process and the session ([`Files`]), so it meets no other iceoryx2 user, and
//! whatever is left there is removed by name when the session ends (iceoryx2 itself leaves each
//! node's `global_mgmt` object and the empty directories; a killed peer, more); what an
//! interrupted run left is removed by the next run.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use ::iceoryx2::port::BackpressureAction;
use ::iceoryx2::port::publisher::Publisher;
use ::iceoryx2::port::subscriber::Subscriber;
use ::iceoryx2::prelude::*;
use ::iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use super::{
    CHECK_PEER_AFTER, Endpoint, Res, STALLED_AFTER, Spin, Waiting, check, ring_bytes, stamp,
};

type Ipc = ipc::Service;
type Service = PortFactory<Ipc, [u8], ()>;

/// The service the measuring side publishes on, and the one the peer publishes on.
const DOWN: &str = "shmpipe-bench/down";
const UP: &str = "shmpipe-bench/up";

/// Samples a subscriber may hold unread: as many messages as a shmpipe ring of the session
/// holds (`ring_bytes` in 64-byte slots, 8 bytes of header each), so both may stream as far
/// ahead.
fn depth(size: usize) -> usize {
    ring_bytes(size) / ((size + 8).div_ceil(64) * 64)
}

/// Where one session's iceoryx2 files are: a root directory of its own (instead of
/// `/tmp/iceoryx2`) and a prefix for its `/dev/shm` objects (instead of `iox2_`), both named
/// by the measuring process and the session.
struct Place {
    root: PathBuf,
    prefix: String,
}

/// The start of the names of a [`Place`]: `shmpipe-bench-iceoryx2-PID-N` in the temporary
/// directory, `shmpipe_bench_PID_N_` in `/dev/shm`.
const ROOT_PREFIX: &str = "shmpipe-bench-iceoryx2-";
const SHM_PREFIX: &str = "shmpipe_bench_";
const SHM_DIR: &str = "/dev/shm";

impl Place {
    fn of(parent: u32, session: u32) -> Place {
        Place {
            root: std::env::temp_dir().join(format!("{ROOT_PREFIX}{parent}-{session}")),
            prefix: format!("{SHM_PREFIX}{parent}_{session}_"),
        }
    }

    /// The iceoryx2 configuration that puts everything here, with iceoryx2's defaults
    /// otherwise (no configuration file is read).
    fn config(&self) -> Res<Config> {
        let mut config = Config::default();
        config.global.prefix = FileName::new(self.prefix.as_bytes())?;
        let root = self
            .root
            .to_str()
            .ok_or("the temporary directory is not UTF-8")?;
        config.global.set_root_path(&Path::new(root.as_bytes())?);
        Ok(config)
    }

    /// Removes everything here.
    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.root);
        let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes the places of measuring processes that are gone (an interrupted run).
    fn remove_orphans() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((pid, session)) = name
                .to_str()
                .and_then(|n| n.strip_prefix(ROOT_PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(p, s)| Some((p.parse::<u32>().ok()?, s.parse::<u32>().ok()?)))
            else {
                continue;
            };
            let Ok(pid_t) = libc::pid_t::try_from(pid) else {
                continue;
            };
            // SAFETY: kill with signal 0 sends nothing; it only asks whether `pid_t` exists.
            let gone = unsafe { libc::kill(pid_t, 0) } == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                Place::of(pid, session).remove();
            }
        }
    }
}

/// A session's [`Place`], removed when this is dropped (once neither side uses it).
pub(super) struct Files(Place);

impl Drop for Files {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// A node of `place`'s configuration that installs no signal handler (SIGINT must still end
/// `shmpipe bench`).
fn node(place: &Place) -> Res<Node<Ipc>> {
    Ok(NodeBuilder::new()
        .config(&place.config()?)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ipc>()?)
}

/// Creates (`create` true) or opens the service `name` for messages of `size` bytes.
fn service(node: &Node<Ipc>, name: &str, size: usize, create: bool) -> Res<Service> {
    let builder = node
        .service_builder(&ServiceName::new(name)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2)
        .history_size(0)
        .subscriber_max_buffer_size(depth(size))
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(false);
    Ok(if create {
        builder.create()?
    } else {
        builder.open()?
    })
}

/// The measuring side's services, before the peer runs.
pub(super) struct Services {
    down: Service,
    up: Service,
    node: Node<Ipc>,
    session: u32,
}

/// Sessions started by this process.
static SESSIONS: AtomicU32 = AtomicU32::new(0);

/// Creates the two services of a new session for messages of `size` bytes; returns them and
/// the session's number (the peer's `a`).
pub(super) fn set_up(size: usize) -> Res<(Services, i64)> {
    Place::remove_orphans();
    // Relaxed: a counter; only its uniqueness matters.
    let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
    let node = node(&Place::of(std::process::id(), session))?;
    let down = service(&node, DOWN, size, true)?;
    let up = service(&node, UP, size, true)?;
    Ok((
        Services {
            down,
            up,
            node,
            session,
        },
        i64::from(session),
    ))
}

impl Services {
    /// The guard that removes the session's files.
    pub(super) fn files(&self) -> Files {
        Files(Place::of(std::process::id(), self.session))
    }

    /// The measuring side's ports, once the peer is known (`waiting` watches it).
    pub(super) fn into_end(self, size: usize, waiting: Waiting) -> Res<IceEnd> {
        IceEnd::new(self.node, &self.down, &self.up, size, waiting)
    }
}

/// The peer's end of session `session` of the measuring process `parent`.
pub(super) fn open(
    parent: libc::pid_t,
    session: i64,
    size: usize,
    waiting: Waiting,
) -> Res<IceEnd> {
    let node = node(&Place::of(u32::try_from(parent)?, u32::try_from(session)?))?;
    let down = service(&node, DOWN, size, false)?;
    let up = service(&node, UP, size, false)?;
    IceEnd::new(node, &up, &down, size, waiting)
}

/// One side: a publisher on one service, a subscriber on the other.
pub(super) struct IceEnd {
    tx: Publisher<Ipc, [u8], ()>,
    rx: Subscriber<Ipc, [u8], ()>,
    waiting: Waiting,
    /// Dropped after the ports (fields drop in order).
    _node: Node<Ipc>,
}

impl IceEnd {
    /// Publishes on `tx`, subscribes to `rx`.
    fn new(
        node: Node<Ipc>,
        tx: &Service,
        rx: &Service,
        size: usize,
        waiting: Waiting,
    ) -> Res<IceEnd> {
        let rx = rx.subscriber_builder().buffer_size(depth(size)).create()?;
        // A full subscriber buffer is waited on (RetryUntilDelivered); the handler only gives
        // up, failing the send, when the peer is gone or has not read for STALLED_AFTER.
        let watch = waiting.watch.clone();
        let tx = tx
            .publisher_builder()
            .initial_max_slice_len(size)
            .allocation_strategy(AllocationStrategy::Static)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .set_backpressure_handler(move |info: &::iceoryx2::port::BackpressureInfo| {
                let waited = info.elapsed_time;
                if waited > STALLED_AFTER || (waited > CHECK_PEER_AFTER && !watch.alive()) {
                    BackpressureAction::DiscardDataAndFail
                } else {
                    BackpressureAction::Retry
                }
            })
            .create()?;
        Ok(IceEnd {
            tx,
            rx,
            waiting,
            _node: node,
        })
    }
}

/// A send's result: the number of subscribers reached, which must be the one.
fn delivered(n: usize) -> Res<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(format!("iceoryx2 delivered a message to {n} subscribers, not 1").into())
    }
}

impl Endpoint for IceEnd {
    #[inline]
    fn send(&mut self, len: usize, seq: u64) -> Res<()> {
        let mut sample = self.tx.loan_slice_uninit(len)?;
        sample.payload_mut().fill(MaybeUninit::new(seq as u8));
        // SAFETY: every byte of the payload was written on the line above.
        let mut sample = unsafe { sample.assume_init() };
        stamp(sample.payload_mut(), seq);
        delivered(sample.send()?)
    }

    #[inline]
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64> {
        let mut spin = Spin::new(&self.waiting);
        loop {
            match self.rx.receive()? {
                Some(sample) => return check(sample.payload(), len, seq),
                None => spin.pause()?,
            }
        }
    }

    #[inline]
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64> {
        let mut spin = Spin::new(&self.waiting);
        loop {
            match self.rx.receive()? {
                Some(sample) => {
                    let msg = sample.payload();
                    let sum = check(msg, len, seq)?;
                    let reply = self.tx.loan_slice_uninit(msg.len())?;
                    delivered(reply.write_from_slice(msg).send()?)?;
                    return Ok(sum);
                }
                None => spin.pause()?,
            }
        }
    }
}
