//! Administration: finding, classifying and removing stale rings.

pub mod gc;
