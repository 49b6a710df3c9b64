//! `shmpipe.gc`: removing the SysV rings that dead processes left (Rust `shmpipe::gc`, the
//! command's `shmpipe gc`).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use shmpipe::Key;
use shmpipe::gc::{self as rings, Class, Entry};

use crate::{errors, key_of, uids};

/// Removes the stale SysV rings: nobody attached, no live role holder, and left by a crash
/// (or closed and empty, or abandoned while being created). Never a segment that is not a
/// shmpipe ring, one in use, one keeping messages for a consumer that may still come, a
/// persistent one, nor another user's unless `accept_owner` names its owner. Every ring on the
/// system, or only the one at `key` or `shmid`. Returns the shmids removed (with `dry_run`:
/// that would be removed, removing nothing).
#[pyfunction]
#[pyo3(signature = (key=None, *, shmid=None, dry_run=false, accept_owner=None))]
pub fn gc(
    py: Python<'_>,
    key: Option<i64>,
    shmid: Option<i32>,
    dry_run: bool,
    accept_owner: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<i32>> {
    let owners = match accept_owner {
        Some(v) => uids(v)?,
        None => Vec::new(),
    };
    let target = match (key, shmid) {
        (None, None) => None,
        (Some(0), None) => {
            return Err(PyValueError::new_err(
                "key 0 (IPC_PRIVATE) names no segment: give shmid=",
            ));
        }
        (Some(k), None) => Some(Target::Key(key_of(k)?)),
        (None, Some(id)) => Some(Target::Shmid(id)),
        (Some(_), Some(_)) => {
            return Err(PyTypeError::new_err("give key or shmid=, not both"));
        }
    };
    // A scan attaches each segment under its key's lock, which may be busy for a while.
    let entries = py
        .detach(|| match target {
            None => rings::gc_accepting(dry_run, &owners).map_err(Failed::Rust),
            Some(t) => one(t, dry_run, &owners),
        })
        .map_err(|e| match e {
            Failed::Rust(e) => errors::from_error(py, e),
            Failed::NoKey(k) => {
                PyErr::new::<errors::NotFound, _>(format!("key {k}: no such segment"))
            }
            Failed::Foreign(id) => {
                PyErr::new::<errors::NotShmpipe, _>(format!("shmid {id}: not a shmpipe ring"))
            }
        })?;
    Ok(entries
        .into_iter()
        .filter(|e| e.collected(dry_run, &owners))
        .map(|e| e.stat.shmid)
        .collect())
}

/// The one ring `gc` is asked about.
#[derive(Clone, Copy)]
enum Target {
    Key(Key),
    Shmid(i32),
}

/// Why `gc` failed, found without the GIL.
enum Failed {
    Rust(shmpipe::Error),
    /// No segment has this key.
    NoKey(Key),
    /// The segment is not a shmpipe ring.
    Foreign(i32),
}

/// `gc` of one segment (`shmpipe::gc::gc_one`), found by key or shmid.
fn one(target: Target, dry_run: bool, owners: &[u32]) -> Result<Vec<Entry>, Failed> {
    let shmid = match target {
        Target::Shmid(id) => id,
        Target::Key(k) => rings::segment_ids()
            .map_err(Failed::Rust)?
            .into_iter()
            .find(|&id| shmpipe::segment::stat_id(id).is_ok_and(|s| s.key == k))
            .ok_or(Failed::NoKey(k))?,
    };
    let entry = rings::gc_one(shmid, dry_run, owners).map_err(Failed::Rust)?;
    if entry.class == Class::Foreign {
        return Err(Failed::Foreign(shmid));
    }
    Ok(vec![entry])
}
