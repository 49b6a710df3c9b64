//! Each OS object that can hold a ring, one file each.

pub(crate) mod access;
pub(crate) mod file;
pub(crate) mod keylock;
pub mod memfd;
pub(crate) mod sigbus;
pub mod sysv;
