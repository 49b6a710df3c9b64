//! Bridges a shmpipe ring across machines over [zenoh](https://zenoh.io): [`bridge_out`] takes
//! the consumer role of a local ring and publishes every message, in order, on a zenoh key
//! expression; [`bridge_in`] subscribes to it and takes the producer role of a ring on the other
//! machine, so an unchanged shmpipe consumer there reads the stream.
//!
//! Nothing is lost, reordered or duplicated without an error: every sample carries a stream id
//! and a sequence number that the receiving bridge checks, a hole is an error and never a
//! stream with a hole. The stream header carries the source ring's shape and message type,
//! checked against the receiving ring. End of stream crosses as a message; the death of a
//! bridge (its process, machine or link) crosses as a zenoh liveliness token that vanishes.
//! Delivery is reliable with [`CongestionControl::Block`](zenoh::qos::CongestionControl), so a
//! full ring at the far end blocks zenoh, which blocks the sending bridge, which stops draining
//! its ring, which blocks the local producer. `docs/DESIGN.md` ("Bridging over zenoh") has the
//! protocol and what a restarted bridge does.
//!
//! Both calls run inside the caller's tokio runtime on a [`zenoh::Session`] the caller opened
//! (e.g. with [`ZenohOptions::to_config`]); the ring work runs on tokio's blocking pool.
//!
//! ```no_run
//! use shmpipe::{Key, Ring, RingConfig};
//! use shmpipe_bridge::{InTarget, ZenohOptions, bridge_in, bridge_out};
//! # async fn run() -> Result<(), zenoh::Error> {
//! let opts = ZenohOptions { listen: vec!["tcp/127.0.0.1:7447".into()], ..Default::default() };
//! let session = zenoh::open(opts.to_config()?).await?;
//! // This machine: publish ring 0x2020 on demo/ticks.
//! let ring = Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?;
//! let sent = bridge_out(&session, &ring, "demo/ticks").await?;
//! // The other machine: deliver demo/ticks into ring 0x2121 (created if missing).
//! let got = bridge_in(&session, "demo/ticks", InTarget::Key(Key::Number(0x2121)), RingConfig::new()).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use shmpipe::{Consumer, Error, Key, Producer, RecvError, Ring, RingConfig};
use zenoh::bytes::ZBytes;
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::sample::{Sample, SampleKind};
use zenoh::{Session, Wait};

pub use wire::Header;
use wire::{Kind, Tag};

/// How often a bridge waiting on its local ring looks whether the remote bridge is still
/// there: a remote death is reported within this (plus zenoh's own detection) while idle.
const POLL: Duration = Duration::from_millis(50);
/// How long a sending bridge waits for an end-of-stream acknowledgement after the receiving
/// bridge's token went.
const ACK_GRACE: Duration = Duration::from_secs(2);
/// Samples the receiving bridge holds between zenoh and its ring. When its ring is full, these
/// fill, then zenoh's receive path blocks and the backpressure crosses the link: the bridge's
/// memory is bounded by this many messages (plus zenoh's fixed queues).
const IN_QUEUE: usize = 64;
/// How often a receiving bridge says it is there (on [`beat_key`]). zenoh's own keep-alives
/// cannot be relied on for that while the sending bridge is blocked in a send: see
/// [`OutOptions::receiver_silence`].
const BEAT: Duration = Duration::from_millis(250);
/// zenoh's default lease (`transport/link/tx/lease`), the default of
/// [`OutOptions::receiver_silence`].
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const LEASE: &str = "transport/link/tx/lease";
/// zenoh closes a link whose blocking send waited this long (5 s by default); a consumer that
/// stalls for longer must slow the producer, not cut the stream, so a bridge waits an hour.
const WAIT_BEFORE_CLOSE_US: i64 = 3_600_000_000;
const WAIT_BEFORE_CLOSE: &str =
    "transport/link/tx/queue/congestion_control/block/wait_before_close";

/// The liveliness token of a sending bridge on key expression `key`.
fn out_token(key: &str) -> String {
    format!("{key}/shmpipe-bridge-out")
}

/// The liveliness token of a receiving bridge on key expression `key`.
fn in_token(key: &str) -> String {
    format!("{key}/shmpipe-bridge-in")
}

/// Where a receiving bridge says, every [`BEAT`], that it is there: its id (u64), then 0, or 1
/// once it has delivered the end of stream.
fn beat_key(key: &str) -> String {
    format!("{key}/shmpipe-bridge-beat")
}

/// Where a receiving bridge acknowledges the end of stream: the stream id, once it has
/// closed its ring after the last message.
fn ack_key(key: &str) -> String {
    format!("{key}/shmpipe-bridge-ack")
}

/// Which bridge of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The sending bridge (`bridge out`, [`bridge_out`]).
    Out,
    /// The receiving bridge (`bridge in`, [`bridge_in`]).
    In,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Out => "sending (out)",
            Side::In => "receiving (in)",
        })
    }
}

/// Why a bridge stopped short of a clean end of stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// zenoh refused a configuration, a session or a declaration.
    #[error("zenoh: {what}: {source}")]
    Zenoh {
        /// What was being done.
        what: String,
        /// zenoh's error.
        source: zenoh::Error,
    },
    /// The local ring could not be opened, created or claimed.
    #[error("{key}: the local ring: {source}")]
    Ring {
        /// The zenoh key expression of the stream.
        key: String,
        /// The ring's error (it names the ring's key, shmid or path).
        source: Error,
    },
    /// The local ring failed while the stream ran: its peer died or closed, or it broke the
    /// protocol.
    #[error("{key}: the local ring, after {messages} messages: {what}")]
    Local {
        /// The zenoh key expression of the stream.
        key: String,
        /// Messages bridged before the failure.
        messages: u64,
        /// The ring's error, as text (it names the ring).
        what: String,
    },
    /// The remote bridge's liveliness token vanished mid-stream: its process, its machine or
    /// the link died. Everything it sent before was delivered, in order.
    #[error(
        "{key}: the {side} bridge at the other end died (or its link did) after {messages} messages"
    )]
    PeerDied {
        /// The zenoh key expression of the stream.
        key: String,
        /// Which bridge died.
        side: Side,
        /// Messages bridged before.
        messages: u64,
    },
    /// The sending bridge failed and said why; everything it sent before was delivered.
    #[error("{key}: the sending bridge failed after {messages} messages: {reason}")]
    RemoteFailed {
        /// The zenoh key expression of the stream.
        key: String,
        /// Messages delivered before.
        messages: u64,
        /// The sending bridge's error.
        reason: String,
    },
    /// A sample arrived out of sequence: the messages in between were lost, so the stream is
    /// refused from there (everything before was delivered).
    #[error(
        "{key}: sample {got} of stream {stream:#x} arrived where {expected} was due; the stream has a hole and stops here"
    )]
    Gap {
        /// The zenoh key expression of the stream.
        key: String,
        /// The stream's id.
        stream: u64,
        /// The sequence number due.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// The stream cannot go into the local ring: another message type, or messages longer
    /// than it takes.
    #[error("{key}: stream refused: {what}")]
    Mismatch {
        /// The zenoh key expression of the stream.
        key: String,
        /// What differs.
        what: String,
    },
    /// A sample that does not follow the bridge protocol (another version, a stream joined in
    /// the middle, a second sender on the key expression).
    #[error("{key}: {what}")]
    Protocol {
        /// The zenoh key expression of the stream.
        key: String,
        /// What was wrong.
        what: String,
    },
}

impl BridgeError {
    fn zenoh(what: impl Into<String>, source: zenoh::Error) -> BridgeError {
        BridgeError::Zenoh {
            what: what.into(),
            source,
        }
    }
}

/// What a bridge carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages bridged.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The usual zenoh options, turned into a [`zenoh::Config`]: a zenoh JSON5 configuration file,
/// then the endpoints and scouting switches on top, as zenoh's own tools take them.
#[derive(Clone, Debug, Default)]
pub struct ZenohOptions {
    /// A zenoh configuration file (JSON5); zenoh's defaults if `None`.
    pub config: Option<PathBuf>,
    /// Endpoints to connect to, e.g. `tcp/192.168.1.2:7447`.
    pub connect: Vec<String>,
    /// Endpoints to listen on, e.g. `tcp/0.0.0.0:7447`.
    pub listen: Vec<String>,
    /// `peer` (the default), `client` or `router`.
    pub mode: Option<String>,
    /// Turns multicast scouting off (then only the endpoints above are used).
    pub no_multicast_scouting: bool,
}

impl ZenohOptions {
    /// The configuration: the file (or zenoh's defaults), these options on top, and, unless
    /// the file changed it, zenoh's 5 s limit on a blocked send raised to an hour so that a
    /// stalled consumer slows the producer instead of cutting the link.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Zenoh`] for an unreadable file or a value zenoh refuses.
    pub fn to_config(&self) -> Result<zenoh::Config, BridgeError> {
        let mut c = match &self.config {
            Some(p) => zenoh::Config::from_file(p)
                .map_err(|e| BridgeError::zenoh(format!("config file {}", p.display()), e))?,
            None => zenoh::Config::default(),
        };
        let default_wait = c.get_json(WAIT_BEFORE_CLOSE).ok().as_deref() == Some("5000000");
        let mut set = |key: &str, value: String| {
            c.insert_json5(key, &value)
                .map_err(|e| BridgeError::zenoh(format!("{key} = {value}"), e))
        };
        let list = |v: &[String]| {
            let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", quoted.join(","))
        };
        if !self.connect.is_empty() {
            set("connect/endpoints", list(&self.connect))?;
        }
        if !self.listen.is_empty() {
            set("listen/endpoints", list(&self.listen))?;
        }
        if let Some(m) = &self.mode {
            set("mode", format!("{m:?}"))?;
        }
        if self.no_multicast_scouting {
            set("scouting/multicast/enabled", "false".into())?;
        }
        if default_wait {
            set(WAIT_BEFORE_CLOSE, WAIT_BEFORE_CLOSE_US.to_string())?;
        }
        Ok(c)
    }
}

/// The lease zenoh uses with `config` (`transport/link/tx/lease`, 10 s unless set): how long
/// a link may stay silent before zenoh closes it. The `shmpipe bridge out` command uses it as
/// [`OutOptions::receiver_silence`].
pub fn lease_of(config: &zenoh::Config) -> Duration {
    config
        .get_json(LEASE)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(DEFAULT_LEASE, Duration::from_millis)
}

/// What [`bridge_out_with`] takes beyond the ring and the key expression.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OutOptions {
    /// How long the sending bridge, blocked in a send, waits for a word from a receiving
    /// bridge that was there (each says it is every 250 ms) before it takes it for dead
    /// ([`BridgeError::PeerDied`]). Default: zenoh's default lease, 10 s.
    ///
    /// zenoh notices a vanished peer (a machine that went away without closing its sockets)
    /// when its lease runs out, but cannot close the link while a blocking send waits on it:
    /// a bridge held back by a full link would wait for zenoh's `wait_before_close` (an hour,
    /// see [`ZenohOptions::to_config`]). This bound takes the lease's place there.
    pub receiver_silence: Duration,
}

impl Default for OutOptions {
    fn default() -> Self {
        OutOptions {
            receiver_silence: DEFAULT_LEASE,
        }
    }
}

impl OutOptions {
    /// Options with this [`OutOptions::receiver_silence`].
    pub fn receiver_silence(mut self, silence: Duration) -> Self {
        self.receiver_silence = silence;
        self
    }
}

/// A stream id no other stream is likely to have: the clock and the pid, mixed.
fn new_stream_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key_expr(key: &str) -> Result<KeyExpr<'static>, BridgeError> {
    KeyExpr::try_from(key.to_string())
        .map_err(|e| BridgeError::zenoh(format!("key expression {key:?}"), e))
}

/// What a sending bridge hears of the receiving bridges, with a way to wait for a change.
#[derive(Default)]
struct Presence {
    seen: Mutex<Seen>,
    changed: Condvar,
    /// While the sending thread is in a send: one more than the sample's sequence number;
    /// 0 between sends.
    in_send: AtomicU64,
}

/// See [`Presence`].
#[derive(Default)]
struct Seen {
    /// Receiving bridges whose liveliness token is there.
    alive: usize,
    /// The stream ids of the end-of-stream acknowledgements received.
    acks: Vec<u64>,
    /// The receiving bridges heard on [`beat_key`], by id: when last, and whether they said
    /// they are done.
    beats: HashMap<u64, (Instant, bool)>,
}

impl Seen {
    fn acks_of(&self, stream: u64) -> usize {
        self.acks.iter().filter(|&&a| a == stream).count()
    }
}

impl Presence {
    fn change(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// A receiving bridge's token came or went.
    fn token(&self, sample: &Sample) {
        self.change(|s| match sample.kind() {
            SampleKind::Put => s.alive += 1,
            SampleKind::Delete => s.alive = s.alive.saturating_sub(1),
        });
    }

    /// A receiving bridge said it is there (or done).
    fn beat(&self, sample: &Sample) {
        let bytes = sample.payload().to_bytes();
        if let (Some(id), Some(&done)) = (bytes.get(..8), bytes.get(8)) {
            let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
            self.change(|s| {
                s.beats.insert(id, (Instant::now(), done != 0));
            });
        }
    }

    /// Whether a receiving bridge that is not done has said nothing for `silence`, or none
    /// has said anything yet (the caller has been blocked sending for `silence`).
    fn receiver_silent(&self, silence: Duration) -> bool {
        self.look(|s| {
            s.beats.is_empty()
                || s.beats
                    .values()
                    .any(|&(last, done)| !done && last.elapsed() > silence)
        })
    }

    /// A receiving bridge acknowledged the end of a stream.
    fn ack(&self, sample: &Sample) {
        if let Ok(id) = <[u8; 8]>::try_from(&*sample.payload().to_bytes()) {
            self.change(|s| s.acks.push(u64::from_le_bytes(id)));
        }
    }

    fn look<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until `done` says so, looking again at every change (and every [`POLL`]).
    fn wait_until(&self, mut done: impl FnMut(&Seen) -> bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&seen) {
            seen = self
                .changed
                .wait_timeout(seen, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Subscribes to `key`, handing each sample to `on` of `presence`.
async fn hear(
    session: &Session,
    key: String,
    presence: &Arc<Presence>,
    on: fn(&Presence, &Sample),
) -> Result<zenoh::pubsub::Subscriber<()>, BridgeError> {
    let p = presence.clone();
    session
        .declare_subscriber(key.clone())
        .callback(move |s| on(&p, &s))
        .await
        .map_err(|e| BridgeError::zenoh(format!("subscriber on {key}"), e))
}

/// Claims the consumer role of `ring` (taking it over from a dead holder) and publishes every
/// message on `key`, in order, until its producer closes
/// it (then the end of stream crosses, and this returns once every receiving bridge has
/// finished). Waits for a receiving bridge ([`bridge_in`]) before sending anything, so the two
/// may start in either order.
///
/// On an error the consumer is dropped (the local producer's next blocked send fails) and this
/// bridge's liveliness token is withdrawn, so the receiving bridge reports the failure too.
///
/// # Errors
///
/// [`BridgeError::PeerDied`] if the receiving bridge vanished mid-stream,
/// [`BridgeError::Local`] if the local producer died or the ring broke the protocol (the
/// receiving bridge is told: [`BridgeError::RemoteFailed`]), [`BridgeError::Zenoh`].
pub async fn bridge_out(session: &Session, ring: &Ring, key: &str) -> Result<Summary, BridgeError> {
    bridge_out_with(session, ring, key, &OutOptions::default()).await
}

/// [`bridge_out`] with [`OutOptions`].
///
/// If a receiving bridge falls silent for [`OutOptions::receiver_silence`] while this bridge
/// is blocked sending to it, this returns [`BridgeError::PeerDied`] at once and leaves the
/// blocked send (and the ring's consumer role) to a thread that ends when zenoh gives up on the
/// link; the `shmpipe bridge out` command exits, so the local producer sees it die.
///
/// # Errors
///
/// As [`bridge_out`].
pub async fn bridge_out_with(
    session: &Session,
    ring: &Ring,
    key: &str,
    options: &OutOptions,
) -> Result<Summary, BridgeError> {
    let ke = key_expr(key)?;
    let header = Header::of(ring);
    let consumer = claim(ring, Ring::consumer, Ring::take_over_consumer).map_err(|source| {
        BridgeError::Ring {
            key: key.into(),
            source,
        }
    })?;
    let ins = Arc::new(Presence::default());
    let watch = ins.clone();
    let _ins_sub = session
        .liveliness()
        .declare_subscriber(in_token(key))
        .history(true)
        .callback(move |s| watch.token(&s))
        .await
        .map_err(|e| BridgeError::zenoh("liveliness subscriber", e))?;
    let _ack_sub = hear(session, ack_key(key), &ins, Presence::ack).await?;
    let _beat_sub = hear(session, beat_key(key), &ins, Presence::beat).await?;
    let publisher = session
        .declare_publisher(ke)
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(|e| BridgeError::zenoh(format!("publisher on {key}"), e))?;
    let _token = session
        .liveliness()
        .declare_token(out_token(key))
        .await
        .map_err(|e| BridgeError::zenoh("liveliness token", e))?;
    let sent = Arc::new(AtomicU64::new(0));
    let (watch, count) = (ins.clone(), sent.clone());
    let owned_key = key.to_string();
    let mut pump = tokio::task::spawn_blocking(move || {
        pump_out(&publisher, consumer, header, &ins, &count, owned_key)
    });
    // The send the pump is in (see `Presence::in_send`), and since when it is seen there.
    let mut blocked: (u64, Instant) = (0, Instant::now());
    loop {
        tokio::select! {
            done = &mut pump => return done.expect("the bridge's ring task panicked"),
            () = tokio::time::sleep(POLL) => {
                let now = watch.in_send.load(Ordering::Relaxed);
                if now != blocked.0 {
                    blocked = (now, Instant::now());
                }
                // Blocked in one send for the whole silence while a receiver said nothing: it
                // vanished, and zenoh, whose lease noticed, cannot close the link under the
                // blocked send.
                let silence = options.receiver_silence;
                if blocked.0 != 0
                    && blocked.1.elapsed() > silence
                    && watch.receiver_silent(silence)
                {
                    return Err(BridgeError::PeerDied {
                        key: key.into(),
                        side: Side::In,
                        messages: sent.load(Ordering::Relaxed),
                    });
                }
            }
        }
    }
}

/// The sending loop of [`bridge_out`], on a blocking thread.
fn pump_out(
    publisher: &Publisher<'static>,
    mut rx: Consumer,
    header: Header,
    ins: &Presence,
    sent: &AtomicU64,
    key: String,
) -> Result<Summary, BridgeError> {
    let stream = new_stream_id();
    let mut seq = 0u64;
    let put = |kind: Kind, seq: u64, payload: ZBytes| {
        ins.in_send.store(seq + 1, Ordering::Relaxed);
        let r = publisher
            .put(payload)
            .attachment(Tag { kind, stream, seq }.encode().to_vec())
            .wait()
            .map_err(|e| BridgeError::zenoh(format!("publishing on {key}"), e));
        ins.in_send.store(0, Ordering::Relaxed);
        r
    };
    ins.wait_until(|s| s.alive > 0);
    // Every receiving bridge there now must acknowledge the end.
    let receivers = ins.look(|s| s.alive);
    put(Kind::Header, seq, header.encode().to_vec().into())?;
    let mut sum = Summary::default();
    let gone = |sum: &Summary| BridgeError::PeerDied {
        key: key.clone(),
        side: Side::In,
        messages: sum.messages,
    };
    loop {
        let mut msg = Vec::new();
        match rx.recv_vec_timeout(&mut msg, POLL) {
            Ok(n) => {
                seq += 1;
                put(Kind::Data, seq, msg.into())?;
                sum.messages += 1;
                sum.bytes += n as u64;
                sent.store(sum.messages, Ordering::Relaxed);
                if ins.look(|s| s.alive == 0) {
                    return Err(gone(&sum));
                }
            }
            Err(RecvError::Timeout) => {
                if ins.look(|s| s.alive == 0) {
                    return Err(gone(&sum));
                }
            }
            Err(RecvError::Disconnected) => {
                put(
                    Kind::End,
                    seq + 1,
                    sum.messages.to_le_bytes().to_vec().into(),
                )?;
                // Each receiving bridge acknowledges once it has delivered the end; one that
                // leaves without doing so failed.
                ins.wait_until(|s| s.acks_of(stream) >= receivers || s.alive < receivers);
                // zenoh may deliver a token's withdrawal before a sample sent just ahead of it
                // (declarations travel at another priority): give a late acknowledgement time.
                let grace = std::time::Instant::now() + ACK_GRACE;
                ins.wait_until(|s| {
                    s.acks_of(stream) >= receivers || std::time::Instant::now() > grace
                });
                if ins.look(|s| s.acks_of(stream)) < receivers {
                    return Err(gone(&sum));
                }
                return Ok(sum);
            }
            Err(e) => {
                let what = e.to_string();
                put(Kind::Abort, seq + 1, what.clone().into_bytes().into())?;
                return Err(BridgeError::Local {
                    key,
                    messages: sum.messages,
                    what,
                });
            }
        }
    }
}

/// Where [`bridge_in`] delivers the stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum InTarget {
    /// A ring the caller opened (any backing: a key, a file, a memfd).
    Ring(Ring),
    /// The SysV ring at this key, created with the stream's shape if missing.
    Key(Key),
    /// The ring file at this path, created with the stream's shape if missing.
    Path(PathBuf),
}

/// What the zenoh callbacks hand the delivering thread, in the order zenoh delivered them.
enum Event {
    Sample(Tag, ZBytes),
    Bad(String),
    OutGone,
}

/// Subscribes to `key` and delivers the stream of a sending bridge ([`bridge_out`]) into the
/// ring `target`, as its producer, until the end of stream (then the producer closes the ring
/// and the local consumer sees the end after the last message). The ring is opened (created
/// with the stream's shape, from `base`'s other settings, if missing) when the stream's header
/// arrives, and refused if its message type differs or its messages are too short: the two
/// bridges may start in either order.
///
/// On an error the producer role is left held, not closed, so the local consumer never takes
/// a broken stream for a complete one: it gets [`RecvError::PeerDied`] once this process exits
/// (the `shmpipe bridge in` command exits at once). A program that embeds the bridge and
/// stays up should exit too, or tell its consumer otherwise.
///
/// # Errors
///
/// [`BridgeError::PeerDied`] if the sending bridge vanished mid-stream,
/// [`BridgeError::RemoteFailed`], [`BridgeError::Gap`], [`BridgeError::Mismatch`],
/// [`BridgeError::Protocol`], [`BridgeError::Ring`], [`BridgeError::Local`] (the local consumer
/// died or closed), [`BridgeError::Zenoh`].
pub async fn bridge_in(
    session: &Session,
    key: &str,
    target: InTarget,
    base: RingConfig,
) -> Result<Summary, BridgeError> {
    let ke = key_expr(key)?;
    let (tx, rx) = sync_channel::<Event>(IN_QUEUE);
    let on_sample = tx.clone();
    // Declared before our token: a sending bridge that sees the token finds the subscriber.
    let _sub = session
        .declare_subscriber(ke)
        .callback(move |s: Sample| {
            let ev = match s.attachment().map(|a| Tag::decode(&a.to_bytes())) {
                Some(Ok(tag)) => Event::Sample(tag, s.payload().clone()),
                Some(Err(what)) => Event::Bad(what),
                None => Event::Bad("a sample without the bridge's attachment".into()),
            };
            // Blocks while the queue is full: the backpressure reaches the link.
            let _ = on_sample.send(ev);
        })
        .await
        .map_err(|e| BridgeError::zenoh(format!("subscriber on {key}"), e))?;
    let _out_sub = session
        .liveliness()
        .declare_subscriber(out_token(key))
        .callback(move |s: Sample| {
            if s.kind() == SampleKind::Delete {
                let _ = tx.send(Event::OutGone);
            }
        })
        .await
        .map_err(|e| BridgeError::zenoh("liveliness subscriber", e))?;
    let _token = session
        .liveliness()
        .declare_token(in_token(key))
        .await
        .map_err(|e| BridgeError::zenoh("liveliness token", e))?;
    // Says every BEAT that this bridge is there, for a sending bridge blocked in a send (see
    // `OutOptions::receiver_silence`); dropped beats do no harm, so they never block.
    let beat = Arc::new(
        session
            .declare_publisher(beat_key(key))
            .await
            .map_err(|e| BridgeError::zenoh("beat publisher", e))?,
    );
    let me = new_stream_id();
    let beat_of = |done: u8| {
        let mut b = me.to_le_bytes().to_vec();
        b.push(done);
        b
    };
    let beating = tokio::spawn({
        let beat = beat.clone();
        let alive = beat_of(0);
        async move {
            loop {
                let _ = beat.put(alive.clone()).await;
                tokio::time::sleep(BEAT).await;
            }
        }
    });
    let key = key.to_string();
    let ack = session
        .declare_publisher(ack_key(&key))
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(|e| BridgeError::zenoh("acknowledgement publisher", e))?;
    let deliver = tokio::task::spawn_blocking(move || {
        let (stream, result) = deliver_in(&rx, target, &base, &key);
        if let (Some(stream), Ok(_)) = (stream, &result) {
            ack.put(stream.to_le_bytes().to_vec())
                .wait()
                .map_err(|e| BridgeError::zenoh("acknowledging the end", e))?;
        }
        result
    });
    let result = deliver.await.expect("the bridge's ring task panicked");
    beating.abort();
    if result.is_ok() {
        let _ = beat.put(beat_of(1)).await;
    }
    result
}

/// The stream being delivered.
struct Delivery {
    stream: u64,
    next: u64,
    tx: Producer,
    sum: Summary,
}

/// The delivering loop of [`bridge_in`], on a blocking thread. Returns the stream's id with
/// the result.
fn deliver_in(
    events: &Receiver<Event>,
    target: InTarget,
    base: &RingConfig,
    key: &str,
) -> (Option<u64>, Result<Summary, BridgeError>) {
    let mut target = Some(target);
    let mut cur: Option<Delivery> = None;
    let result = loop {
        let Ok(ev) = events.recv() else {
            unreachable!("the subscribers live as long as this loop")
        };
        let (tag, payload) = match ev {
            Event::Sample(tag, payload) => (tag, payload),
            // A sender that goes away between streams is no business of ours.
            Event::OutGone if cur.is_none() => continue,
            Event::OutGone => {
                break Err(BridgeError::PeerDied {
                    key: key.into(),
                    side: Side::Out,
                    messages: cur.as_ref().map_or(0, |d| d.sum.messages),
                });
            }
            Event::Bad(what) => {
                break Err(BridgeError::Protocol {
                    key: key.into(),
                    what,
                });
            }
        };
        let Some(d) = cur.as_mut() else {
            if tag.kind != Kind::Header || tag.seq != 0 {
                break Err(BridgeError::Protocol {
                    key: key.into(),
                    what: format!(
                        "joined stream {:#x} in the middle (sample {}): a receiving bridge \
                         must be running before the stream starts",
                        tag.stream, tag.seq
                    ),
                });
            }
            match start(&payload, target.take().expect("one header"), base, key) {
                Ok(tx) => {
                    cur = Some(Delivery {
                        stream: tag.stream,
                        next: 1,
                        tx,
                        sum: Summary::default(),
                    });
                    continue;
                }
                Err(e) => break Err(e),
            }
        };
        if tag.stream != d.stream || tag.seq != d.next {
            break Err(if tag.stream != d.stream {
                BridgeError::Protocol {
                    key: key.into(),
                    what: format!(
                        "a sample of stream {:#x} amid stream {:#x}: two sending bridges on one key expression",
                        tag.stream, d.stream
                    ),
                }
            } else {
                BridgeError::Gap {
                    key: key.into(),
                    stream: d.stream,
                    expected: d.next,
                    got: tag.seq,
                }
            });
        }
        d.next += 1;
        match tag.kind {
            Kind::Data => {
                let msg = payload.to_bytes();
                if let Err(e) = d.tx.send(&msg) {
                    break Err(BridgeError::Local {
                        key: key.into(),
                        messages: d.sum.messages,
                        what: e.to_string(),
                    });
                }
                d.sum.messages += 1;
                d.sum.bytes += msg.len() as u64;
            }
            Kind::End => {
                let d = cur.take().expect("streaming");
                let sent = payload.to_bytes();
                if *sent != d.sum.messages.to_le_bytes() {
                    cur = Some(d);
                    break Err(BridgeError::Protocol {
                        key: key.into(),
                        what: "the end of stream counts other messages than arrived".into(),
                    });
                }
                let closed = d.tx.close().map(|()| d.sum);
                return (
                    Some(d.stream),
                    closed.map_err(|c| BridgeError::Local {
                        key: key.into(),
                        messages: d.sum.messages,
                        what: c.to_string(),
                    }),
                );
            }
            Kind::Abort => {
                break Err(BridgeError::RemoteFailed {
                    key: key.into(),
                    messages: d.sum.messages,
                    reason: String::from_utf8_lossy(&payload.to_bytes()).into_owned(),
                });
            }
            Kind::Header => {
                break Err(BridgeError::Protocol {
                    key: key.into(),
                    what: "a second stream header".into(),
                });
            }
        }
    };
    let stream = cur.as_ref().map(|d| d.stream);
    if let Some(d) = cur {
        // Not closed: the local consumer must not see an end of stream (see `bridge_in`).
        std::mem::forget(d.tx);
    }
    (stream, result)
}

/// Opens (or creates) the target ring for a stream whose header is `payload`, checks it takes
/// the stream, and claims its producer role (taking it over from a dead holder).
fn start(
    payload: &ZBytes,
    target: InTarget,
    base: &RingConfig,
    key: &str,
) -> Result<Producer, BridgeError> {
    let header =
        wire::Header::decode(&payload.to_bytes()).map_err(|what| BridgeError::Protocol {
            key: key.into(),
            what,
        })?;
    let ring_err = |source| BridgeError::Ring {
        key: key.into(),
        source,
    };
    let mut cfg = base
        .clone()
        .slot_size(header.slot_size)
        .slot_count(header.slot_count);
    cfg = match header.message_type {
        Some(t) => cfg.message_type_raw(t),
        None => cfg.max_message(header.max_message as usize),
    };
    // Created with the stream's shape; an existing ring is checked below instead.
    let cfg = cfg.join_any_shape();
    let ring = match target {
        InTarget::Ring(r) => r,
        InTarget::Key(k) => Ring::open_or_create(k, &cfg).map_err(ring_err)?,
        InTarget::Path(p) => Ring::open_or_create(p.as_path(), &cfg).map_err(ring_err)?,
    };
    header
        .check_against(&ring)
        .map_err(|what| BridgeError::Mismatch {
            key: key.into(),
            what,
        })?;
    claim(&ring, Ring::producer, Ring::take_over_producer).map_err(ring_err)
}

/// Claims a role, taking it over if its holder died.
pub fn claim<T>(
    ring: &Ring,
    fresh: fn(&Ring) -> Result<T, Error>,
    take_over: fn(&Ring) -> Result<T, Error>,
) -> Result<T, Error> {
    match fresh(ring) {
        Err(Error::RoleTaken { .. }) => take_over(ring),
        r => r,
    }
}
