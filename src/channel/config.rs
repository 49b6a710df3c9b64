//! [`RingConfig`]: the shape and permissions of a ring to create, what an opener accepts, and
//! the shape demands an opener checks against the header it joins.

use std::time::Duration;

use super::Ring;
use crate::error::Error;
use crate::layout::{Geometry, MessageType};

/// How long [`Ring::open`] waits for a creator to finish initialising by default.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes per slot unless [`RingConfig::slot_size`] says otherwise: 8, so a record takes its
/// header and payload rounded up to 8 bytes (a 64-byte message, 72), and consecutive messages
/// share cache lines instead of each starting a line of its own (docs/BENCHMARKS.md, "Choosing
/// a ring": more messages per line crossing between the CPUs).
pub const DEFAULT_SLOT_SIZE: u32 = 8;

/// Slots unless [`RingConfig::slot_count`] says otherwise: 131 072 of [`DEFAULT_SLOT_SIZE`], a
/// 1 MiB ring, the size that streamed fastest in docs/BENCHMARKS.md ("Choosing a ring").
pub const DEFAULT_SLOT_COUNT: u32 = 1 << 17;

/// The shape and permissions of a ring to create, and what an opener accepts: the mode and
/// the other owners it trusts ([`RingConfig::mode`], [`RingConfig::accept_owner`]) and how long
/// it waits for the creator ([`RingConfig::init_timeout`]). Every constructor takes one
/// ([`Ring::create`], [`Ring::open`], [`Ring::open_or_create`]); `&RingConfig::new()` is the
/// default.
///
/// | option | [`create`](Ring::create) | [`open`](Ring::open) (and `open_or_create` joining) |
/// |---|---|---|
/// | [`slot_size`](RingConfig::slot_size), [`slot_count`](RingConfig::slot_count), [`max_message`](RingConfig::max_message), [`message_type`](RingConfig::message_type) | the shape made (set or default) | demanded only if set ([the header is the authority](crate::at#the-header-is-the-authority)) |
/// | [`mode`](RingConfig::mode) | the permission bits made | the widest mode accepted on a ring of ours |
/// | [`accept_owner`](RingConfig::accept_owner) | — | other owners accepted |
/// | [`init_timeout`](RingConfig::init_timeout) | — | how long to wait for the creator (and for a key's lock) |
/// | [`initial_index`](RingConfig::initial_index) | where the counters start | — |
/// | [`persistent`](RingConfig::persistent) | recorded in the header | — (the header says) |
/// | [`huge_pages`](RingConfig::huge_pages) | huge pages or an error | implies `accept_huge_pages` |
/// | [`accept_huge_pages`](RingConfig::accept_huge_pages) | — | a huge-page ring of another process accepted |
///
/// A ring is an array of `slot_count` slots of `slot_size` bytes (both powers of two). A
/// message takes `ceil((8 + len) / slot_size)` consecutive slots; the 8 bytes are its record
/// header. Small slots waste less space on small messages; slots of a cache line (the default,
/// 64 bytes) keep each message on lines of its own.
///
/// # Examples
///
/// ```
/// use shmpipe::RingConfig;
/// let cfg = RingConfig::new().slot_size(64).slot_count(1024).max_message(4096);
/// assert_eq!(cfg.capacity_bytes(), 64 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    pub(super) slot_size: u32,
    pub(super) slot_count: u32,
    pub(super) max_message: Option<u32>,
    pub(super) mode: u32,
    pub(super) init_timeout: Duration,
    pub(super) initial_index: u64,
    pub(super) persistent: bool,
    pub(super) huge_pages: bool,
    pub(super) accept_huge_pages: bool,
    /// A typed ring's message type (`crate::channel::typed`); `None` for a byte ring.
    pub(super) message_type: Option<MessageType>,
    /// Uids besides our own whose rings an opener accepts (`crate::backing::access`).
    pub(super) accepted_owners: Vec<u32>,
    /// The shape fields the caller set, which an opener demands (`crate::at`).
    pub(super) demanded: crate::channel::at::Demanded,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            slot_size: DEFAULT_SLOT_SIZE,
            slot_count: DEFAULT_SLOT_COUNT,
            max_message: None,
            mode: 0o600,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            initial_index: 0,
            persistent: false,
            huge_pages: false,
            accept_huge_pages: false,
            message_type: None,
            accepted_owners: Vec::new(),
            demanded: crate::channel::at::Demanded::default(),
        }
    }
}

impl RingConfig {
    /// The defaults: [`DEFAULT_SLOT_COUNT`] slots of [`DEFAULT_SLOT_SIZE`] bytes (1 MiB), the
    /// largest maximum message the shape allows (512 KiB − 8), mode `0o600`, a 1 s init timeout.
    pub fn new() -> RingConfig {
        RingConfig::default()
    }

    /// Bytes per slot: a power of two from 8 to 1 MiB.
    pub fn slot_size(mut self, bytes: u32) -> RingConfig {
        self.slot_size = bytes;
        self.demanded.slot_size = true;
        self
    }

    /// Number of slots: a power of two, at most 2^30, with at most 2 GiB of slots in all.
    pub fn slot_count(mut self, count: u32) -> RingConfig {
        self.slot_count = count;
        self.demanded.slot_count = true;
        self
    }

    /// Largest message in bytes. By default the largest the shape allows: half the slots less
    /// one record header (or one whole slot less its header in a one-slot ring), which
    /// guarantees that an empty ring always has room for a maximum-size message.
    pub fn max_message(mut self, bytes: usize) -> RingConfig {
        self.max_message = Some(u32::try_from(bytes).unwrap_or(u32::MAX));
        self.demanded.max_message = true;
        self
    }

    /// Permission bits of a ring this configuration creates (default `0o600`: owner only),
    /// exactly, whatever the umask. For an opener ([`Ring::open`], [`Ring::open_or_create`])
    /// it is also the widest mode accepted on a ring of its
    /// own: a ring owned by our effective uid whose mode grants group or others a permission
    /// this mode does not is refused with [`Error::ForeignOwner`] (someone may be reading it).
    /// A group that shares a ring on purpose says so on both sides, e.g. `mode(0o660)`.
    pub fn mode(mut self, mode: u32) -> RingConfig {
        self.mode = mode;
        self
    }

    /// Accepts rings owned or created by the user `uid`, besides our own effective uid. By
    /// default an opener refuses a segment, memfd or file that another user owns (or, for a
    /// segment, created and then gave to us) with [`Error::ForeignOwner`], root included:
    /// anyone can create a ring at a key first and read what we send into it. Accept the uid
    /// of the user you mean to share with (e.g. the daemon that creates the ring); its ring is
    /// then taken with the mode its owner chose. Call it once per uid to accept several.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use shmpipe::{Key, Ring, RingConfig};
    /// // A ring created by the service account 990 for its group.
    /// let ring = Ring::open(Key::new(0x2020), &RingConfig::new().accept_owner(990))?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn accept_owner(mut self, uid: u32) -> RingConfig {
        if !self.accepted_owners.contains(&uid) {
            self.accepted_owners.push(uid);
        }
        self
    }

    /// What an opener accepts (`crate::backing::access`).
    pub(super) fn expect(&self) -> crate::backing::access::Expect<'_> {
        crate::backing::access::Expect {
            mode: self.mode,
            owners: &self.accepted_owners,
        }
    }

    /// How long an opener waits for the creator to finish initialising (default 1 s).
    pub fn init_timeout(mut self, timeout: Duration) -> RingConfig {
        self.init_timeout = timeout;
        self
    }

    /// The value the head and tail counters start from (default 0). The counters are
    /// free-running 64-bit slot counts that wrap; starting near `u64::MAX` exercises the wrap.
    pub fn initial_index(mut self, index: u64) -> RingConfig {
        self.initial_index = index;
        self
    }

    /// A persistent ring stays at its key until removed explicitly ([`Ring::remove`]). By
    /// default (not persistent) the segment is marked for removal as soon as both a producer
    /// and a consumer have claimed their roles (at the same time or one after the other), so
    /// the kernel frees it when both are gone,
    /// crash or not; from then on it can no longer be opened by key (a process given the shmid
    /// can still attach, on Linux).
    pub fn persistent(mut self, persistent: bool) -> RingConfig {
        self.persistent = persistent;
        self
    }

    /// Back the segment with huge pages (`SHM_HUGETLB`; default off): fewer TLB misses on a
    /// large ring, and the memory is reserved up front and never swapped. Only the creator
    /// decides; [`Ring::open`] attaches whatever was created, and [`Ring::open_or_create`]
    /// uses an existing ring of the right shape whatever its pages. The segment is rounded up
    /// to the huge page size ([`segment::huge_page_size`](crate::backing::sysv::huge_page_size));
    /// the header still describes the ring's own size, which an attacher checks against the
    /// (larger) segment as usual. Huge pages must have been reserved by the administrator
    /// (`/proc/sys/vm/nr_hugepages`).
    ///
    /// [`Ring::create`] then fails with [`Error::HugePages`] if the kernel refuses them; it
    /// never falls back to normal pages. A [`Memfd`](crate::Memfd) ring honours it too
    /// (`MFD_HUGETLB`). [`Heap`](crate::Heap) and file rings refuse it with
    /// [`Error::InvalidConfig`]: a heap ring has no segment, and a file gets its pages from its
    /// filesystem (`MAP_HUGETLB` applies to anonymous memory only).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Error, Key, Ring, RingConfig};
    /// let cfg = RingConfig::new().slot_count(1024).huge_pages(true);
    /// let ring = match Ring::create(Key::Private, &cfg) {
    ///     Ok(ring) => ring,
    ///     // No huge pages reserved here: the caller decides whether normal pages will do.
    ///     Err(Error::HugePages { .. }) => Ring::create(Key::Private, &cfg.huge_pages(false))?,
    ///     Err(e) => return Err(e),
    /// };
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn huge_pages(mut self, huge_pages: bool) -> RingConfig {
        self.huge_pages = huge_pages;
        self
    }

    /// Accept a ring on huge pages made by another process when opening it (default off:
    /// refused with [`Error::HugePagesNotAccepted`]). Read by [`Ring::open`] (of a segment or
    /// memfd) and [`Ring::open_or_create`] when they open an existing ring; a ring this process
    /// creates with [`RingConfig::huge_pages`] is always accepted, and a configuration that asks
    /// for [`RingConfig::huge_pages`] accepts them too.
    ///
    /// Why an opt-in: huge pages can vanish under a mapping. A creator can make a segment
    /// with `SHM_NORESERVE` (no page reserved), or the peer can remove a page (`MADV_REMOVE`,
    /// a hole punched in a memfd) while the pool is empty; touching such a page raises
    /// `SIGBUS`. An accepted ring is pre-faulted at attach (every page touched), so pages
    /// missing then are [`Error::HugePages`] at attach, and a page lost later is
    /// [`Corruption::MemoryLost`](crate::Corruption::MemoryLost) (docs/DESIGN.md, "When
    /// memory disappears: SIGBUS"). Either way no signal reaches the program.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Key, Ring, RingConfig, Shmid};
    /// let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
    /// let cfg = RingConfig::new().accept_huge_pages(true);
    /// // The other process: Ring::open(Shmid(shmid), &cfg)
    /// let peer = Ring::open(Shmid(ring.shmid().unwrap()), &cfg)?;
    /// assert_eq!(peer.slot_count(), 1024);
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn accept_huge_pages(mut self, accept: bool) -> RingConfig {
        self.accept_huge_pages = accept;
        self
    }

    /// Whether an opener with this configuration accepts huge pages made by another process:
    /// asked explicitly, or implied by asking for huge pages.
    pub(super) fn accepts_huge_pages(&self) -> bool {
        self.accept_huge_pages || self.huge_pages
    }

    /// Bytes of the slot array.
    pub fn capacity_bytes(&self) -> u64 {
        u64::from(self.slot_size) * u64::from(self.slot_count)
    }

    pub(super) fn geometry(&self) -> Result<Geometry, Error> {
        let invalid = |what: String| Error::InvalidConfig { what };
        // Validate the shape first with a zero maximum, then compute the default maximum.
        let shape = Geometry::new(self.slot_size, self.slot_count, 0).map_err(invalid)?;
        let max = match self.max_message {
            Some(m) => m,
            None => shape.max_message_limit() as u32,
        };
        Geometry::new(self.slot_size, self.slot_count, max)
            .and_then(|g| g.with_message_type(self.message_type))
            .map_err(invalid)
    }

    /// Makes the ring a typed ring of `t`, whose maximum message is the type's size (the
    /// builders are `RingConfig::message_type*` in `crate::channel::typed`).
    pub(crate) fn set_message_type(mut self, t: MessageType) -> RingConfig {
        self.max_message = Some(t.size);
        self.message_type = Some(t);
        self.demanded.message_type = true;
        self
    }

    /// Keeps the shape set so far for [`Ring::create`] only: [`Ring::open`] and
    /// [`Ring::open_or_create`] then join an existing ring of any shape, as with the defaults.
    /// A shape field set after this call is demanded again.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Key, Ring, RingConfig};
    /// let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
    /// // Create big rings, but join whatever ring is there.
    /// let cfg = RingConfig::new().slot_count(65536).join_any_shape();
    /// let peer = Ring::open(shmpipe::Shmid(ring.shmid().unwrap()), &cfg)?;
    /// assert_eq!(peer.slot_count(), 1024);
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn join_any_shape(mut self) -> RingConfig {
        self.demanded = crate::channel::at::Demanded::default();
        self
    }

    /// Checks the shape fields this configuration set explicitly against `ring`, which an
    /// opener joined: the header is the authority for every other field (`crate::at`).
    pub(crate) fn check_demanded(&self, ring: &Ring) -> Result<(), Error> {
        let got = ring.region.geometry();
        let d = &self.demanded;
        let wrong = |field: &str, asked: String, found: String| {
            Err(Error::ConfigMismatch {
                ident: ring.ident(),
                what: format!(
                    "{field}: asked for {asked}, found {found} ({})",
                    got.describe()
                ),
            })
        };
        if d.slot_size && got.slot_size != self.slot_size {
            return wrong(
                "slot_size",
                self.slot_size.to_string(),
                got.slot_size.to_string(),
            );
        }
        if d.slot_count && got.slot_count != self.slot_count {
            return wrong(
                "slot_count",
                self.slot_count.to_string(),
                got.slot_count.to_string(),
            );
        }
        match self.max_message {
            Some(m) if d.max_message && got.max_message != m => {
                return wrong("max_message", m.to_string(), got.max_message.to_string());
            }
            _ => {}
        }
        if d.message_type && got.message_type != self.message_type {
            let name = |t: Option<MessageType>| t.map_or("untyped".to_string(), |t| t.to_string());
            return wrong(
                "message_type",
                name(self.message_type),
                name(got.message_type),
            );
        }
        Ok(())
    }
}
