//! The algorithm over any memory: the lock-free SPSC protocol of docs/DESIGN.md, apart from
//! the operating system. No libc, no `/proc`, no backing, no roles; atomics and futexes come
//! from `crate::sync`, the bytes from `crate::layout`.

mod memory;
mod wake;

pub(crate) use memory::Memory;
pub(crate) use wake::{sleep_for_data, sleep_for_room, wake};
