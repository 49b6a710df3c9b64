//! Fuzzing only (`--cfg fuzzing`): the shared atomics with a hook before every read.
//!
//! Each wrapper is `#[repr(transparent)]` over the std atomic, so it has the same size,
//! alignment and bit validity, and can be overlaid on segment bytes (and on record headers in
//! the slots) exactly as the std type is. Before every load, and before the read half of every
//! read-modify-write, it calls this thread's hook (if one is installed) with the word's address
//! and value; if the hook returns a value, that value is stored into the word first. So to the
//! code under test the memory "returns a different value each time it is read", as if a hostile
//! peer in another process wrote it just then. Stores are not hooked: what the peer does after
//! our store is seen by our next read.

use std::cell::Cell;
use std::sync::atomic::{self, Ordering};

/// One read of a shared word, as the hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Address of the word.
    pub addr: usize,
    /// Width of the word: 32 or 64.
    pub bits: u32,
    /// The value the word holds now (zero-extended).
    pub value: u64,
    /// Whether this is the read half of a read-modify-write (swap, fetch_add,
    /// compare_exchange) rather than a plain load.
    pub rmw: bool,
}

/// A hook: returns the value the word should hold before the read, or `None` to keep it.
/// For a 32-bit word only the low 32 bits are used.
pub type Hook = Box<dyn FnMut(&Access) -> Option<u64>>;

thread_local! {
    static HOOK: Cell<Option<Hook>> = const { Cell::new(None) };
}

/// Installs (or with `None` removes) this thread's hook; returns the previous one.
pub fn set_hook(hook: Option<Hook>) -> Option<Hook> {
    HOOK.try_with(|h| h.replace(hook)).unwrap_or(None)
}

/// Runs the hook, if any, for a read of the word at `addr`. The hook is taken out of the
/// thread-local while it runs, so atomics it reads itself (to pick a plausible value) are
/// not hooked again.
#[inline]
fn before_read(addr: usize, bits: u32, rmw: bool, value: impl FnOnce() -> u64) -> Option<u64> {
    HOOK.try_with(|h| {
        let mut hook = h.take()?;
        let access = Access {
            addr,
            bits,
            value: value(),
            rmw,
        };
        let new = hook(&access);
        h.set(Some(hook));
        new
    })
    .ok()
    .flatten()
}

macro_rules! hooked_atomic {
    ($name:ident, $int:ty, $bits:expr) => {
        #[doc = concat!("`std::sync::atomic::", stringify!($name), "` with the read hook.")]
        #[repr(transparent)]
        #[derive(Default, Debug)]
        pub(crate) struct $name(atomic::$name);

        #[allow(
            dead_code,
            reason = "one method set for both widths; each uses a subset"
        )]
        impl $name {
            /// Lets the hook rewrite the word before it is read.
            #[inline]
            fn attack(&self, rmw: bool) {
                let addr = std::ptr::from_ref(self).addr();
                let value = || u64::from(self.0.load(Ordering::Relaxed));
                if let Some(v) = before_read(addr, $bits, rmw, value) {
                    // Truncation intended: a 32-bit word takes the low half.
                    self.0.store(v as $int, Ordering::Relaxed);
                }
            }

            /// As the std method, after the hook.
            #[inline]
            pub(crate) fn load(&self, order: Ordering) -> $int {
                self.attack(false);
                self.0.load(order)
            }

            /// As the std method (not hooked).
            #[inline]
            pub(crate) fn store(&self, value: $int, order: Ordering) {
                self.0.store(value, order)
            }

            /// As the std method, after the hook.
            #[inline]
            pub(crate) fn swap(&self, value: $int, order: Ordering) -> $int {
                self.attack(true);
                self.0.swap(value, order)
            }

            /// As the std method, after the hook.
            #[inline]
            pub(crate) fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                self.attack(true);
                self.0.fetch_add(value, order)
            }

            /// As the std method, after the hook.
            #[inline]
            pub(crate) fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.attack(true);
                self.0.compare_exchange(current, new, success, failure)
            }

            /// As the std method (for the futex system calls).
            #[inline]
            pub(crate) fn as_ptr(&self) -> *mut $int {
                self.0.as_ptr()
            }
        }
    };
}

hooked_atomic!(AtomicU32, u32, 32);
hooked_atomic!(AtomicU64, u64, 64);
