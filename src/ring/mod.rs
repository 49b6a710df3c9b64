//! The algorithm over any memory: the lock-free SPSC protocol of docs/DESIGN.md, apart from
//! the operating system. No libc, no `/proc`, no backing, no roles; atomics and futexes come
//! from `crate::sync`, the bytes from `crate::layout`.
//!
//! Read it in this order: `memory.rs` (the seam: header, slots, geometry, revoked?),
//! `producer.rs` (reserve, write, publish, validate the head), `consumer.rs` (next record,
//! validate, copy or lend, release, validate the tail), `wake.rs` (the sleep/wake handshake).

mod consumer;
mod memory;
mod producer;
#[cfg(test)]
mod tests;
mod wake;

pub(crate) use consumer::{ConsumerCore, Record};
pub(crate) use memory::Memory;
pub(crate) use producer::ProducerCore;
pub(crate) use wake::{sleep_for_data, sleep_for_room, wake};
