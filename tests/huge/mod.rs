//! Huge-page fixtures shared by tests/sigbus.rs and the command line's tests
//! (cli/tests/hugepages.rs): the resizable pool and a hostile `SHM_NORESERVE` segment.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use shmpipe::{Ring, RingConfig, Segment};

use crate::common::RemoveOnDrop;

pub const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// A ring whose slot array spans two huge pages of 2 MiB: 2 MiB of slots after the header.
pub fn two_page_config() -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(32768)
}

/// The huge page pool, resized for one test and restored on drop. Holding it serialises the
/// huge-page tests of this binary.
pub struct HugePool {
    old: u64,
    _serial: MutexGuard<'static, ()>,
}

impl HugePool {
    /// Takes the pool, or `None` (after saying why) where huge pages cannot be tested.
    pub fn take() -> Option<HugePool> {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: resizing the huge page pool needs root");
            return None;
        }
        if shmpipe::segment::huge_page_size() != Some(2 << 20) {
            eprintln!("skipped: no 2 MiB huge pages on this machine");
            return None;
        }
        let Ok(old) = std::fs::read_to_string(NR_HUGEPAGES) else {
            eprintln!("skipped: {NR_HUGEPAGES} is not readable");
            return None;
        };
        let pool = HugePool {
            old: old.trim().parse().expect("nr_hugepages is a number"),
            _serial: serial,
        };
        if std::fs::write(NR_HUGEPAGES, pool.old.to_string()).is_err() {
            eprintln!("skipped: {NR_HUGEPAGES} is not writable");
            return None;
        }
        Some(pool)
    }

    /// Makes `n` more huge pages than before the test (0: back to the old size, which drains
    /// every page freed since). `false` (after saying why) if the kernel found too few.
    pub fn set_extra(&self, n: u64) -> bool {
        std::fs::write(NR_HUGEPAGES, (self.old + n).to_string()).expect("resize the pool");
        let total = meminfo("HugePages_Total");
        if total < self.old + n {
            eprintln!(
                "skipped: the kernel made {total} huge pages, not {}",
                self.old + n
            );
            return false;
        }
        true
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NR_HUGEPAGES, self.old.to_string()) {
            eprintln!(
                "warning: could not restore {NR_HUGEPAGES} to {}: {e}",
                self.old
            );
        }
    }
}

/// A count from `/proc/meminfo`.
pub fn meminfo(field: &str) -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A hostile creator's SysV segment: two huge pages with `SHM_HUGETLB | SHM_NORESERVE` (none
/// reserved), a valid ring header in the first, which takes the one free page of the pool, so
/// that nothing can back the second. Removed on drop.
pub struct HostileSegment {
    /// The segment's id.
    pub shmid: i32,
    _attached: Segment,
    _honest: (RemoveOnDrop, Ring),
    _removed: RemoveOnDrop,
}

impl HostileSegment {
    /// Makes it; the pool must have exactly one free page more than the test found.
    pub fn new() -> HostileSegment {
        let huge = 2usize << 20;
        // SAFETY: shmget takes plain integers.
        let shmid = unsafe {
            libc::shmget(
                libc::IPC_PRIVATE,
                2 * huge,
                libc::IPC_CREAT | 0o600 | libc::SHM_HUGETLB | libc::SHM_NORESERVE,
            )
        };
        assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
        let removed = RemoveOnDrop::id(shmid);
        let attached = Segment::attach_id(shmid).unwrap();
        assert_eq!(attached.page_size(), huge);
        // A valid header, copied from an honest ring of the same shape.
        let honest = Ring::create(shmpipe::Key::Private, &two_page_config()).unwrap();
        let src = honest.segment().unwrap().as_ptr();
        // SAFETY: both ranges are HEADER_SIZE bytes inside live attachments (the honest ring's
        // segment, and the first huge page of ours, which the one free pool page backs);
        // nobody else writes them during the copy.
        unsafe { std::ptr::copy_nonoverlapping(src, attached.as_ptr(), shmpipe::HEADER_SIZE) };
        HostileSegment {
            shmid,
            _attached: attached,
            _honest: (RemoveOnDrop::ring(&honest), honest),
            _removed: removed,
        }
    }
}
