//! The one copy between private memory and memory the peer can write (re-exported as
//! `shmpipe::shared::{copy_from_shared, copy_to_shared}`; why it exists: `channel/views.rs`).
//!
//! How the copy is made (measured in docs/BENCHMARKS.md, "Copying to and from shared memory"):
//! - below 16 bytes, and on every target but x86-64, a loop of Relaxed atomic loads or stores
//!   of `usize` words on the shared side (aligned; single bytes at the unaligned edges), plain
//!   unaligned accesses on the private side;
//! - on x86-64 from 16 bytes, inline assembly: below [`REP_MOVSB_FROM`] a loop of unaligned
//!   16-byte SSE2 moves (`memcpy`'s own method for mid sizes), from there one `rep movsb`, which
//!   the CPU runs as a fast string copy (ERMS/FSRM);
//! - under Miri, single-byte Relaxed atomics (Miri can run neither assembly nor mixed-size
//!   accesses to bytes a record header later covers; see `Region::read_record`).
//!
//! Why none is a data race in Rust's model: the loop is made of atomic accesses, and an
//! atomic access never takes part in a data race; the peer's writes come from outside the
//! program, and every value a Relaxed load returns is one some atomic store of the same size
//! could have written. An `asm!` block is, to the compiler, a call to an unknown function
//! whose effects must be ones Rust code could have had; the SSE moves and `rep movsb` read and
//! write each byte as single-copy-atomic byte accesses (x86 never tears a byte; the SSE loop's
//! overlapping last 16 bytes may touch a few bytes twice), which is what a loop of `AtomicU8`
//! Relaxed loads and stores does: the same argument as for the word loop, and the one the
//! Linux kernel makes for `copy_from_user`, which is assembly for the same reason. No Rust
//! reference to the bytes exists while a copy runs, so the compiler has nothing to re-load or
//! assume.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicUsize};

/// From how many bytes the x86-64 copy uses `rep movsb` instead of the SSE2 loop: below it,
/// the string instruction's start-up costs more than the loop (docs/BENCHMARKS.md).
pub const REP_MOVSB_FROM: usize = 1024;

/// Copies `dst.len()` bytes from shared memory at `src` into private memory.
///
/// The bytes at `src` may be written by another process (or thread) at the same time: the copy
/// is then some mix of old and new bytes, never undefined behaviour, and `dst` is private
/// afterwards (nothing changes it behind the caller's back).
///
/// # Safety
///
/// `src..src + dst.len()` must be readable for the whole call (mapped and not freed), and no
/// Rust reference may point into it while the call runs unless the caller also guarantees that
/// nobody writes those bytes (every other access to them must be this module's copies, atomics,
/// or a process outside this program).
#[inline]
pub unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    // SAFETY: forwarded from the caller; `dst` is private memory of exactly `dst.len()` bytes
    // and cannot overlap shared memory no reference may point into.
    unsafe { read_shared(src, dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` from private memory into shared memory at `dst`.
///
/// # Safety
///
/// `dst..dst + src.len()` must be writable for the whole call (mapped, not freed, not
/// read-only), and no Rust reference may point into it while the call runs (every other access
/// to those bytes must be this module's copies, atomics, or a process outside this program).
#[inline]
pub unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    // SAFETY: forwarded from the caller; `src` is a reference, so it is not the shared range.
    unsafe { write_shared(src.as_ptr(), dst, src.len()) }
}

/// [`copy_from_shared`] into a raw private destination (e.g. a `Vec`'s spare capacity).
///
/// # Safety
///
/// As [`copy_from_shared`]; `dst..dst + len` must be private memory, writable, not overlapping
/// the source.
#[inline]
pub(crate) unsafe fn read_shared(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if len >= 16 {
        // SAFETY: forwarded from the caller; `len >= 16`.
        unsafe { strategies::asm_copy(src, dst, len) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { strategies::words_from_shared(src, dst, len) }
}

/// [`copy_to_shared`] from a raw private source.
///
/// # Safety
///
/// As [`copy_to_shared`]; `src..src + len` must be private and readable.
#[inline]
pub(crate) unsafe fn write_shared(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if len >= 16 {
        // SAFETY: forwarded from the caller; `len >= 16`.
        unsafe { strategies::asm_copy(src, dst, len) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { strategies::words_to_shared(src, dst, len) }
}

/// Not API: the two copies the primitive chooses between, public only for `benches/copy.rs`.
#[doc(hidden)]
pub mod strategies {
    use super::*;

    /// Bytes per word of the loop.
    const W: usize = size_of::<usize>();

    /// How many bytes from `p` until it is word-aligned (at most `len`). Under Miri every byte
    /// is copied singly, so this is `len`.
    #[inline(always)]
    fn lead(p: *const u8, len: usize) -> usize {
        if cfg!(miri) {
            len
        } else {
            (p.addr().wrapping_neg() & (W - 1)).min(len)
        }
    }

    /// Relaxed atomic loads of `usize` words from shared `src` (single bytes at its unaligned
    /// edges), plain unaligned stores into private `dst`.
    ///
    /// # Safety
    ///
    /// As [`copy_from_shared`](super::copy_from_shared), into private `dst..dst + len`.
    #[inline(always)]
    pub unsafe fn words_from_shared(src: *const u8, dst: *mut u8, len: usize) {
        let head = lead(src, len);
        let mut i = 0;
        while i < head {
            // SAFETY: `i < len`: inside both ranges (caller); a byte is always aligned for
            // AtomicU8, and shared bytes are accessed only atomically (module comment).
            unsafe {
                dst.add(i)
                    .write(AtomicU8::from_ptr(src.add(i).cast_mut()).load(Relaxed))
            };
            i += 1;
        }
        while len - i >= W {
            // SAFETY: `src + i` is word-aligned (after `head`) and `i + W <= len`; as above.
            let w = unsafe { AtomicUsize::from_ptr(src.add(i).cast_mut().cast()) }.load(Relaxed);
            // SAFETY: `i + W <= len` bytes of private `dst`, written unaligned.
            unsafe { dst.add(i).cast::<usize>().write_unaligned(w) };
            i += W;
        }
        while i < len {
            // SAFETY: as in the first loop.
            unsafe {
                dst.add(i)
                    .write(AtomicU8::from_ptr(src.add(i).cast_mut()).load(Relaxed))
            };
            i += 1;
        }
    }

    /// Plain unaligned loads from private `src`, Relaxed atomic stores of `usize` words into
    /// shared `dst` (single bytes at its unaligned edges).
    ///
    /// # Safety
    ///
    /// As [`copy_to_shared`](super::copy_to_shared), from private `src..src + len`.
    #[inline(always)]
    pub unsafe fn words_to_shared(src: *const u8, dst: *mut u8, len: usize) {
        let head = lead(dst, len);
        let mut i = 0;
        while i < head {
            // SAFETY: `i < len`: inside both ranges (caller); see `words_from_shared`.
            unsafe { AtomicU8::from_ptr(dst.add(i)).store(src.add(i).read(), Relaxed) };
            i += 1;
        }
        while len - i >= W {
            // SAFETY: `i + W <= len` bytes of private `src`, read unaligned.
            let w = unsafe { src.add(i).cast::<usize>().read_unaligned() };
            // SAFETY: `dst + i` is word-aligned (after `head`) and inside the range.
            unsafe { AtomicUsize::from_ptr(dst.add(i).cast()) }.store(w, Relaxed);
            i += W;
        }
        while i < len {
            // SAFETY: as in the first loop.
            unsafe { AtomicU8::from_ptr(dst.add(i)).store(src.add(i).read(), Relaxed) };
            i += 1;
        }
    }

    /// The x86-64 copy of 16 bytes or more: [`sse_loop`] below [`REP_MOVSB_FROM`] bytes,
    /// [`rep_movsb`] from there.
    ///
    /// # Safety
    ///
    /// As [`rep_movsb`], and `len >= 16`.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    pub unsafe fn asm_copy(src: *const u8, dst: *mut u8, len: usize) {
        if len < REP_MOVSB_FROM {
            // SAFETY: forwarded from the caller.
            unsafe { sse_loop(src, dst, len) }
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { rep_movsb(src, dst, len) }
        }
    }

    /// A loop of unaligned 16-byte SSE2 loads and stores (32 bytes per round), with the last
    /// 16 bytes copied by one more pair that may overlap the loop's last round: the copy of
    /// `memcpy` for mid sizes, opaque to the compiler (see the module comment for why it is
    /// not a data race: each byte is read and written with single-copy-atomic byte accesses,
    /// a byte of the overlap possibly twice, as a Rust loop of `AtomicU8` accesses could).
    ///
    /// # Safety
    ///
    /// As [`rep_movsb`], and `len >= 16`.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    pub unsafe fn sse_loop(src: *const u8, dst: *mut u8, len: usize) {
        debug_assert!(len >= 16);
        // SAFETY: every access is inside `src..src+len` or `dst..dst+len` (the caller's
        // ranges): rounds copy `[i, i+32)` only while `i + 32 <= len`, one more `[i, i+16)`
        // only if `i + 16 <= len`, and the last 16 bytes `[len-16, len)` lie inside because
        // `len >= 16`. SSE2 is part of x86-64. Only the declared registers and the flags are
        // changed; no stack is used.
        unsafe {
            std::arch::asm!(
                "movups {t}, [{src} + {last}]",
                "2:",
                "lea {n}, [{i} + 32]",
                "cmp {n}, {len}",
                "ja 3f",
                "movups {a}, [{src} + {i}]",
                "movups {b}, [{src} + {i} + 16]",
                "movups [{dst} + {i}], {a}",
                "movups [{dst} + {i} + 16], {b}",
                "add {i}, 32",
                "jmp 2b",
                "3:",
                "lea {n}, [{i} + 16]",
                "cmp {n}, {len}",
                "ja 4f",
                "movups {a}, [{src} + {i}]",
                "movups [{dst} + {i}], {a}",
                "4:",
                "movups [{dst} + {last}], {t}",
                src = in(reg) src,
                dst = in(reg) dst,
                len = in(reg) len,
                last = in(reg) len - 16,
                i = inout(reg) 0usize => _,
                n = out(reg) _,
                t = out(xmm_reg) _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                options(nostack)
            );
        }
    }

    /// One `rep movsb`: the CPU's string copy, opaque to the compiler (see the module comment
    /// for why it is not a data race).
    ///
    /// # Safety
    ///
    /// `src..src + len` readable and `dst..dst + len` writable for the call, not overlapping;
    /// whichever of the two is shared memory has no Rust reference pointing into it.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    pub unsafe fn rep_movsb(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: the caller guarantees both ranges. `rep movsb` copies `rcx` bytes from
        // `[rsi]` to `[rdi]` forwards (the direction flag is clear on entry to `asm!`, as Rust
        // guarantees, and stays clear), touches no stack and no flags, and clobbers only the
        // three registers declared.
        unsafe {
            std::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rsi") src => _,
                inout("rdi") dst => _,
                options(nostack, preserves_flags)
            );
        }
    }
}
