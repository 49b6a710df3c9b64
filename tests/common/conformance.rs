//! The conformance harness: one test body over every backing a ring can live in (heap, SysV
//! segment, memfd, file), so that each backing passes the same message-semantics, edge,
//! hostile-peer and two-process suites. The ported suites make and open their rings here and
//! nowhere else.
//!
//! [`conformance!`] turns each body into a module with one `#[test]` per backing (`heap`,
//! `sysv`, `memfd`, `file`). The heap test runs under Miri too; the others call the kernel and
//! are ignored there. Which backings a body runs over, and why:
//!
//! - `all`: every backing. A body that uses one process and the ring's API only.
//! - `shared` (no heap): a body that reaches the ring's memory around the library (a second
//!   mapping, [`TestRing::raw`], to play a hostile or foreign peer) or builds the memory itself
//!   ([`Backing::image`]). A heap ring has no second mapping: its memory is private to the ring
//!   and the library hands out no pointer into it.
//! - `processes` (no heap): a body with other processes, which re-run the test binary in a role
//!   ([`crate::common::ChildProcess`]) and open the ring by its name ([`TestRing::spawn`],
//!   [`RingPlace::spawn`]). Heap memory never leaves its process.
//!
//! What stays out, with the reason next to it, is about how a ring is found (keys, shmids,
//! `ftok`, paths, passing a descriptor): `tests/edges.rs` (keys), `tests/memfd.rs`,
//! `tests/file.rs`. `tests/crash.rs` (one test per crash point, not per backing) stays on SysV
//! for now: its successor processes attach after both roles were claimed, when a non-persistent
//! file ring's path is already gone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use shmpipe::{Error, Heap, Ident, Key, Memfd, Ring, RingConfig, Segment, Shmid};

use super::{ChildProcess, RawAttach, RemoveFile, RemoveOnDrop, param_opt, temp_path, unique_key};

/// One test per backing for each body: `all: a, b;` over [`Backing::ALL`] (`fn(Backing)`),
/// `shared: c;` over [`Backing::SHARED`] (`fn(Backing)`), and
/// `processes(run_child_role): d;` over [`Backing::SHARED`] (`fn(&str, Backing)`, given the
/// test's name for [`ChildProcess::spawn`]; `run_child_role()` runs a child's role and returns
/// true in a child). See the module documentation for which body goes where.
#[allow(unused_macros)]
macro_rules! conformance {
    () => {};
    (all: $($body:ident),+ $(,)? ; $($rest:tt)*) => {
        $(
            mod $body {
                #[test]
                fn heap() {
                    super::$body($crate::common::Backing::Heap);
                }
                $crate::common::conformance!(@shared $body);
            }
        )+
        $crate::common::conformance!($($rest)*);
    };
    (shared: $($body:ident),+ $(,)? ; $($rest:tt)*) => {
        $(
            mod $body {
                $crate::common::conformance!(@shared $body);
            }
        )+
        $crate::common::conformance!($($rest)*);
    };
    (processes($child:path): $($body:ident),+ $(,)? ; $($rest:tt)*) => {
        $(
            mod $body {
                $crate::common::conformance!(@processes $child, $body, sysv, Sysv);
                $crate::common::conformance!(@processes $child, $body, memfd, Memfd);
                $crate::common::conformance!(@processes $child, $body, file, File);
            }
        )+
        $crate::common::conformance!($($rest)*);
    };
    (@shared $body:ident) => {
        #[test]
        #[cfg_attr(miri, ignore)]
        fn sysv() {
            super::$body($crate::common::Backing::Sysv);
        }
        #[test]
        #[cfg_attr(miri, ignore)]
        fn memfd() {
            super::$body($crate::common::Backing::Memfd);
        }
        #[test]
        #[cfg_attr(miri, ignore)]
        fn file() {
            super::$body($crate::common::Backing::File);
        }
    };
    (@processes $child:path, $body:ident, $test:ident, $backing:ident) => {
        #[test]
        #[cfg_attr(miri, ignore)]
        fn $test() {
            use $child as run_child_role;
            if run_child_role() {
                return;
            }
            super::$body(
                concat!(stringify!($body), "::", stringify!($test)),
                $crate::common::Backing::$backing,
            );
        }
    };
}
#[allow(unused_imports)]
pub(crate) use conformance;

/// What a ring lives in.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// The heap of this process (`Ring::in_process`).
    Heap,
    /// A SysV segment: at `Key::Private` ([`Backing::ring`]), or at a fresh key which either
    /// side may create ([`Backing::place`], `Ring::open_or_create`).
    Sysv,
    /// A sealed memfd. It has no name, so a child process inherits a copy of the descriptor
    /// across `exec`.
    Memfd,
    /// A file at a fresh path in the temporary directory.
    File,
}

#[allow(dead_code)]
impl Backing {
    /// Every backing.
    pub const ALL: [Backing; 4] = [Backing::Heap, Backing::Sysv, Backing::Memfd, Backing::File];
    /// The backings another process, or a second mapping, can reach.
    pub const SHARED: [Backing; 3] = [Backing::Sysv, Backing::Memfd, Backing::File];

    /// A new ring (`Ring::in_process`, `Ring::create(Key::Private, ..)`, `Ring::create_memfd`,
    /// `Ring::create_file`), removed with the returned guard.
    pub fn ring(self, config: &RingConfig) -> TestRing {
        let (ring, image) = match self {
            Backing::Heap => (
                Ring::create(Heap, config).expect("create a heap ring"),
                None,
            ),
            Backing::Sysv => {
                let ring = Ring::create(Key::Private, config).expect("create a SysV ring");
                let id = ring.shmid().expect("a SysV ring");
                let image = Image {
                    raw: RawAttach::new(id),
                    object: Object::Segment(id, RemoveOnDrop::id(id)),
                };
                (ring, Some(image))
            }
            Backing::Memfd => {
                let ring = Ring::create(Memfd, config).expect("create a memfd ring");
                let fd = dup(ring.memfd().expect("a memfd ring has its descriptor"));
                let image = Image {
                    raw: RawAttach::map_fd(fd.as_fd()),
                    object: Object::Memfd(fd),
                };
                (ring, Some(image))
            }
            Backing::File => {
                let path = RemoveFile(temp_path("ring"));
                let ring = Ring::create(&path.0, config).expect("create a file ring");
                // Opened now: once both roles are claimed the path is gone.
                let fd = OwnedFd::from(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path.0)
                        .expect("open the ring file"),
                );
                let image = Image {
                    raw: RawAttach::map_fd(fd.as_fd()),
                    object: Object::File(fd, path),
                };
                (ring, Some(image))
            }
        };
        TestRing { ring, image }
    }

    /// Memory of this backing holding `bytes` and nothing else (a segment, a sealed memfd or a
    /// file of exactly that size, mode 0600), not yet opened as a ring: for rings the library
    /// did not make. Not for the heap, whose memory only the library makes.
    pub fn image(self, bytes: &[u8]) -> Image {
        match self {
            Backing::Heap => panic!("a heap ring has no memory but its own"),
            Backing::Sysv => {
                let seg =
                    Segment::create(Key::Private, bytes.len(), 0o600).expect("create a segment");
                let id = seg.shmid();
                let rm = RemoveOnDrop::id(id);
                drop(seg);
                let raw = RawAttach::new(id);
                raw.write_bytes(0, bytes);
                Image {
                    raw,
                    object: Object::Segment(id, rm),
                }
            }
            Backing::Memfd => {
                // SAFETY: the name is a NUL-terminated literal.
                let fd = unsafe {
                    libc::memfd_create(
                        c"image".as_ptr(),
                        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
                    )
                };
                assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
                // SAFETY: a new descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let mut file = std::fs::File::from(fd);
                std::io::Write::write_all(&mut file, bytes).expect("fill the memfd");
                let fd = OwnedFd::from(file);
                let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
                // SAFETY: fcntl(F_ADD_SEALS) and fchmod on our own descriptor.
                unsafe {
                    assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
                    // 0600, as a ring's creator makes it (memfd_create makes it 0777).
                    assert_eq!(libc::fchmod(fd.as_raw_fd(), 0o600), 0);
                }
                Image {
                    raw: RawAttach::map_fd(fd.as_fd()),
                    object: Object::Memfd(fd),
                }
            }
            Backing::File => {
                use std::os::unix::fs::OpenOptionsExt;
                let path = RemoveFile(temp_path("image"));
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path.0)
                    .expect("create the image file");
                std::io::Write::write_all(&mut file, bytes).expect("fill the file");
                let fd = OwnedFd::from(file);
                Image {
                    raw: RawAttach::map_fd(fd.as_fd()),
                    object: Object::File(fd, path),
                }
            }
        }
    }

    /// A place for a new ring that either of two processes may create: a free key, or a
    /// fresh path (nothing is created); for a memfd, the ring itself (`Ring::create_memfd`),
    /// which must exist before any child starts. Not for the heap.
    pub fn place(self, config: &RingConfig) -> RingPlace {
        RingPlace(match self {
            Backing::Heap => panic!("a heap ring cannot be shared with another process"),
            Backing::Sysv => {
                let key = unique_key();
                Place::Key(key, RemoveOnDrop::key(key))
            }
            Backing::Memfd => {
                Place::Memfd(Ring::create(Memfd, config).expect("create the memfd ring"))
            }
            Backing::File => Place::Path(RemoveFile(temp_path("ring"))),
        })
    }
}

/// A ring of one test and, but for the heap, its memory mapped a second time ([`Image`]).
/// Dereferences to the [`Ring`]. Dropping it drops the ring, then unmaps and removes the
/// memory (`IPC_RMID`, unlink), also when the test panics.
#[allow(dead_code)]
pub struct TestRing {
    ring: Ring,
    image: Option<Image>,
}

impl std::ops::Deref for TestRing {
    type Target = Ring;

    fn deref(&self) -> &Ring {
        &self.ring
    }
}

#[allow(dead_code)]
impl TestRing {
    /// The ring's memory as another process maps it. Panics for the heap.
    pub fn image(&self) -> &Image {
        self.image
            .as_ref()
            .expect("a heap ring has no second mapping")
    }

    /// The ring's bytes through the second mapping. Panics for the heap.
    pub fn raw(&self) -> &RawAttach {
        &self.image().raw
    }

    /// Another handle to the ring, attached anew as another process would attach it
    /// ([`Image::open`]); for the heap, a clone. A file ring must still be linked (not both
    /// roles claimed yet).
    pub fn reopen(&self) -> Result<Ring, Error> {
        match &self.image {
            Some(image) => image.open(),
            None => Ok(self.ring.clone()),
        }
    }

    /// [`Image::spawn`]. Panics for the heap.
    pub fn spawn(&self, test: &str, role: &str, vars: &[(&str, String)]) -> ChildProcess {
        self.image().spawn(test, role, vars)
    }
}

/// The memory of a ring in a segment, memfd or file, mapped (a second time) with a bare `shmat`
/// or `mmap` ([`RawAttach`]), and removed on drop.
#[allow(dead_code)]
pub struct Image {
    raw: RawAttach,
    object: Object,
}

/// What holds an [`Image`]'s memory, and its removal guard.
enum Object {
    Segment(i32, #[allow(dead_code)] RemoveOnDrop),
    Memfd(OwnedFd),
    /// The file (opened before anyone could unlink it) and its path.
    File(OwnedFd, RemoveFile),
}

/// The variables that tell a child started by [`Image::spawn`] where the ring is.
const IMAGE_SHMID_VAR: &str = "SHMPIPE_TEST_IMAGE_SHMID";
const IMAGE_FD_VAR: &str = "SHMPIPE_TEST_IMAGE_FD";
const IMAGE_PATH_VAR: &str = "SHMPIPE_TEST_IMAGE_PATH";

#[allow(dead_code)]
impl Image {
    /// The bytes, through a mapping of their own.
    pub fn raw(&self) -> &RawAttach {
        &self.raw
    }

    /// Opens the memory as a ring, as another process would (`Ring::open_id`,
    /// `Ring::from_memfd` of a duplicate descriptor, `Ring::open_file`).
    pub fn open(&self) -> Result<Ring, Error> {
        match &self.object {
            Object::Segment(id, _) => Ring::open(Shmid(*id), &RingConfig::new()),
            Object::Memfd(fd) => Ring::open(dup(fd.as_fd()), &RingConfig::new()),
            Object::File(_, path) => Ring::open(&path.0, &RingConfig::new()),
        }
    }

    /// [`Image::open`], kept together with this memory as a [`TestRing`].
    pub fn into_ring(self) -> TestRing {
        TestRing {
            ring: self.open().expect("open the image as a ring"),
            image: Some(self),
        }
    }

    /// Whether `ident` names this memory (its shmid, or its path; a memfd has no name).
    pub fn is(&self, ident: &Ident) -> bool {
        match &self.object {
            Object::Segment(id, _) => ident.shmid == Some(*id),
            Object::Memfd(_) => *ident == Ident::default(),
            Object::File(_, path) => ident.path.map(PathBuf::as_path) == Some(path.0.as_path()),
        }
    }

    /// [`ChildProcess::spawn`] with what lets [`child_image_ring`] and [`child_image_raw`] find
    /// the memory: its shmid; or a descriptor the child inherits (the memfd; the file, whose
    /// path may be gone by the time the child maps it) and, for a file, the path too.
    pub fn spawn(&self, test: &str, role: &str, vars: &[(&str, String)]) -> ChildProcess {
        let mut vars = vars.to_vec();
        match &self.object {
            Object::Segment(id, _) => {
                vars.push((IMAGE_SHMID_VAR, id.to_string()));
                ChildProcess::spawn(test, role, &vars)
            }
            Object::Memfd(fd) => spawn_with_fd(test, role, vars, IMAGE_FD_VAR, fd.as_fd()),
            Object::File(fd, path) => {
                vars.push((IMAGE_PATH_VAR, path.0.display().to_string()));
                spawn_with_fd(test, role, vars, IMAGE_FD_VAR, fd.as_fd())
            }
        }
    }
}

/// In a child started by [`Image::spawn`]: opens the ring (`Ring::open_id`, `Ring::from_memfd`
/// of the inherited descriptor, `Ring::open_file` of the path, which must still be linked).
#[allow(dead_code)]
pub fn child_image_ring() -> Result<Ring, Error> {
    if let Some(id) = param_opt::<i32>(IMAGE_SHMID_VAR) {
        Ring::open(Shmid(id), &RingConfig::new())
    } else if let Some(path) = param_opt::<std::path::PathBuf>(IMAGE_PATH_VAR) {
        Ring::open(path, &RingConfig::new())
    } else {
        // SAFETY: the parent left this descriptor open for us across exec, and nothing else in
        // this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(super::param(IMAGE_FD_VAR)) };
        Ring::open(fd, &RingConfig::new())
    }
}

/// In a child started by [`Image::spawn`]: maps the memory with a bare `shmat` or `mmap`.
#[allow(dead_code)]
pub fn child_image_raw() -> RawAttach {
    match param_opt::<i32>(IMAGE_SHMID_VAR) {
        Some(id) => RawAttach::new(id),
        None => {
            let fd: i32 = super::param(IMAGE_FD_VAR);
            // SAFETY: the parent left this descriptor open for us across exec; it stays open
            // (nothing closes it) for the duration of the call.
            RawAttach::map_fd(unsafe { BorrowedFd::borrow_raw(fd) })
        }
    }
}

/// A duplicate of `fd` (close-on-exec).
fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
    fd.try_clone_to_owned().expect("dup a descriptor")
}

/// [`ChildProcess::spawn`] with a duplicate of `fd` the child inherits (no close-on-exec), its
/// number in `var`; this process closes it again once the child is started. (A child that
/// another test thread starts meanwhile inherits it too; it only keeps the memory alive until
/// it exits.)
fn spawn_with_fd(
    test: &str,
    role: &str,
    mut vars: Vec<(&str, String)>,
    var: &'static str,
    fd: BorrowedFd<'_>,
) -> ChildProcess {
    // SAFETY: dup of a descriptor the caller keeps open during the call; the new descriptor
    // is closed below.
    let inheritable = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(inheritable >= 0, "dup: {}", std::io::Error::last_os_error());
    vars.push((var, inheritable.to_string()));
    let child = ChildProcess::spawn(test, role, &vars);
    // SAFETY: our own duplicate from above, which nothing else owns; the child has its copy.
    unsafe { libc::close(inheritable) };
    child
}

// ---------------------------------------------------------------------------------------------
// The words of the layout (docs/LAYOUT.md), through a raw mapping
// ---------------------------------------------------------------------------------------------

/// Byte offset of the producer's tail.
#[allow(dead_code)]
pub const TAIL: usize = 128;
/// Byte offset of the consumer's head.
#[allow(dead_code)]
pub const HEAD: usize = 256;
/// Byte offset of the slot array.
#[allow(dead_code)]
pub const SLOTS: usize = shmpipe::HEADER_SIZE;
/// Record kind: a message.
#[allow(dead_code)]
pub const KIND_MESSAGE: u32 = 1;
/// Record kind: padding to the end of the slot array.
#[allow(dead_code)]
pub const KIND_PADDING: u32 = 2;

#[allow(dead_code)]
impl RawAttach {
    /// Writes the producer's tail, as a (hostile) producer publishes it.
    pub fn set_tail(&self, tail: u64) {
        self.u64(TAIL).store(tail, Ordering::Release);
    }

    /// Writes the consumer's head, as a (hostile) consumer releases it.
    pub fn set_head(&self, head: u64) {
        self.u64(HEAD).store(head, Ordering::Release);
    }

    /// Writes a record header (len, kind) at slot `index` of a ring with `slot_size`.
    pub fn set_record(&self, slot_size: usize, index: usize, len: u32, kind: u32) {
        let off = SLOTS + index * slot_size;
        self.u32(off).store(len, Ordering::Relaxed);
        self.u32(off + 4).store(kind, Ordering::Relaxed);
    }

    /// The record header (len, kind) at slot `index` of a ring with `slot_size`.
    pub fn record(&self, slot_size: usize, index: usize) -> (u32, u32) {
        let off = SLOTS + index * slot_size;
        (
            self.u32(off).load(Ordering::Relaxed),
            self.u32(off + 4).load(Ordering::Relaxed),
        )
    }

    /// The first `n` bytes (a multiple of 8), read as words.
    pub fn words(&self, n: usize) -> Vec<u64> {
        (0..n / 8)
            .map(|i| self.u64(i * 8).load(Ordering::Relaxed))
            .collect()
    }

    /// Overwrites the first words with `words`.
    pub fn write_words(&self, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.u64(i * 8).store(*w, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A ring either of two processes may create (tests/two_process.rs)
// ---------------------------------------------------------------------------------------------

/// The variable that tells a child the SysV key of the ring.
#[allow(dead_code)]
const RING_KEY_VAR: &str = "SHMPIPE_TEST_RING_KEY";
/// The variable that tells a child the number of the memfd descriptor it inherited.
#[allow(dead_code)]
const RING_FD_VAR: &str = "SHMPIPE_TEST_RING_FD";
/// The variable that tells a child the path of the ring file.
#[allow(dead_code)]
const RING_PATH_VAR: &str = "SHMPIPE_TEST_RING_PATH";

/// Where the ring of one test is, as the parent knows it; cleans up on drop (the segment at
/// the key, the file at the path). Create it before the child guards, so that it is dropped
/// after them: the children are dead by then and cannot create the ring again.
#[allow(dead_code)]
pub struct RingPlace(Place);

#[allow(dead_code)]
enum Place {
    Key(Key, RemoveOnDrop),
    Memfd(Ring),
    Path(RemoveFile),
}

#[allow(dead_code)]
impl RingPlace {
    /// The backing of this place.
    pub fn backing(&self) -> Backing {
        match self.0 {
            Place::Key(..) => Backing::Sysv,
            Place::Memfd(_) => Backing::Memfd,
            Place::Path(_) => Backing::File,
        }
    }

    /// Opens the ring or creates it (`Ring::open_or_create`, `Ring::open_or_create_file`; a
    /// memfd ring already exists: another handle to it).
    pub fn open_or_create(&self, config: &RingConfig) -> Result<Ring, Error> {
        match &self.0 {
            Place::Key(key, _) => Ring::open_or_create(*key, config),
            Place::Memfd(ring) => Ok(ring.clone()),
            Place::Path(path) => Ring::open_or_create(&path.0, config),
        }
    }

    /// Opens the ring if someone has created it (`Ring::open`, `Ring::open_file`), `Ok(None)`
    /// if nobody has yet.
    pub fn open(&self) -> Result<Option<Ring>, Error> {
        match &self.0 {
            Place::Key(key, _) => match Ring::open(*key, &RingConfig::new()) {
                Err(Error::NotFound { .. }) => Ok(None),
                r => r.map(Some),
            },
            Place::Memfd(ring) => Ok(Some(ring.clone())),
            Place::Path(path) => match Ring::open(&path.0, &RingConfig::new()) {
                Err(Error::FileNotFound { .. }) => Ok(None),
                r => r.map(Some),
            },
        }
    }

    /// [`ChildProcess::spawn`] with the variables that let [`child_ring`] find the ring. For a
    /// memfd, the child inherits a duplicate of the descriptor without close-on-exec, which
    /// this process closes again once the child is started. (A child that another test thread
    /// starts meanwhile inherits it too; it only keeps the memory alive until it exits.)
    pub fn spawn(&self, test: &str, role: &str, vars: &[(&str, String)]) -> ChildProcess {
        let mut vars = vars.to_vec();
        match &self.0 {
            Place::Key(key, _) => vars.push((RING_KEY_VAR, key.raw().to_string())),
            Place::Memfd(ring) => {
                let fd = ring.memfd().expect("a memfd ring has its descriptor");
                return spawn_with_fd(test, role, vars, RING_FD_VAR, fd);
            }
            Place::Path(path) => vars.push((RING_PATH_VAR, path.0.display().to_string())),
        }
        ChildProcess::spawn(test, role, &vars)
    }

    /// Checks that a non-persistent ring whose two roles have both been claimed can no longer
    /// be found by its name: the key is marked for removal, the file unlinked (a memfd has no
    /// name).
    pub fn assert_unlinked(&self, ring: &Ring) {
        assert!(
            !ring.is_linked(),
            "{:?}: the ring is still linked",
            self.backing()
        );
        match &self.0 {
            Place::Key(key, _) => assert!(
                matches!(Segment::open(*key), Err(Error::NotFound { .. })),
                "key {key} still names a segment"
            ),
            Place::Memfd(_) => assert!(ring.memfd().is_some() && ring.shmid().is_none()),
            Place::Path(path) => assert!(!path.0.exists(), "{} still exists", path.0.display()),
        }
    }
}

/// In a child started by [`RingPlace::spawn`]: opens the ring the parent named (or creates it:
/// `Ring::open_or_create` by key, `Ring::open_or_create_file` by path; a memfd is opened from
/// the inherited descriptor). `None` if the parent named no ring this way.
#[allow(dead_code)]
pub fn child_ring(config: &RingConfig) -> Option<Result<Ring, Error>> {
    if let Some(key) = param_opt::<i32>(RING_KEY_VAR) {
        Some(Ring::open_or_create(Key::new(key), config))
    } else if let Some(fd) = param_opt::<i32>(RING_FD_VAR) {
        // SAFETY: the parent left this descriptor open for us across exec, and nothing else in
        // this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Ring::open(fd, &RingConfig::new()))
    } else {
        param_opt::<std::path::PathBuf>(RING_PATH_VAR)
            .map(|path| Ring::open_or_create(path, config))
    }
}
