//! The header is the authority (`shmpipe::at`): whoever joins an existing ring takes the shape
//! its creator chose, unless it set a shape field explicitly, which must then match. This is
//! what lets `examples/client.rs` (`RingConfig::new()` + `open_or_create`) join the 4 MiB ring
//! of a `shmpipe send --lines` that started first.

mod common;

use common::{RemoveFile, RemoveOnDrop, temp_path, unique_key};
use shmpipe::{Error, Ring, RingConfig, Shmid};

/// The CLI's default shape: 65536 slots of 64 bytes (4 MiB), not the library's default.
fn cli_shape() -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(65536)
}

/// `what` of a `ConfigMismatch`, or a panic naming what came instead.
fn mismatch(r: Result<Ring, Error>) -> String {
    match r {
        Err(Error::ConfigMismatch { what, .. }) => what,
        Err(e) => panic!("expected ConfigMismatch, got {e}"),
        Ok(ring) => panic!("expected ConfigMismatch, joined {ring:?}"),
    }
}

#[test]
fn open_or_create_by_key_joins_any_shape() {
    let key = unique_key();
    let first = Ring::create(key, &cli_shape()).unwrap();
    let _rm = RemoveOnDrop::ring(&first);
    let second = Ring::open_or_create(key, &RingConfig::new()).unwrap();
    assert_eq!(second.shmid(), first.shmid());
    assert_eq!((second.slot_size(), second.slot_count()), (64, 65536));
    // And the two ends talk.
    let (mut tx, mut rx) = (first.producer().unwrap(), second.consumer().unwrap());
    tx.try_send(b"joined").unwrap();
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"joined");
}

#[test]
fn open_or_create_by_path_joins_any_shape() {
    let path = temp_path("shape-join");
    let _rm = RemoveFile(path.clone());
    let first = Ring::create(&path, &cli_shape().persistent(true)).unwrap();
    let second = Ring::open_or_create(&path, &RingConfig::new()).unwrap();
    assert_eq!(second.slot_count(), 65536);
    assert_eq!(second.max_message(), first.max_message());
}

#[test]
fn an_explicit_shape_field_is_demanded() {
    let key = unique_key();
    let first = Ring::create(key, &cli_shape()).unwrap();
    let _rm = RemoveOnDrop::ring(&first);
    let what = mismatch(Ring::open_or_create(
        key,
        &RingConfig::new().slot_count(4096),
    ));
    assert!(
        what.contains("slot_count") && what.contains("4096") && what.contains("65536"),
        "{what}"
    );
    // The fields left alone are not checked: the slot size matches, so this joins.
    let id = Shmid(first.shmid().unwrap());
    assert!(Ring::open(id, &RingConfig::new().slot_size(64)).is_ok());
    let what = mismatch(Ring::open(id, &RingConfig::new().slot_size(128)));
    assert!(what.contains("slot_size") && what.contains("128"), "{what}");
    let what = mismatch(Ring::open(id, &RingConfig::new().max_message(100)));
    assert!(
        what.contains("max_message") && what.contains("100"),
        "{what}"
    );
    let what = mismatch(Ring::open(id, &RingConfig::new().message_type::<u64>()));
    assert!(
        what.contains("message_type") && what.contains("untyped"),
        "{what}"
    );
    // `join_any_shape` keeps a shape for creating only.
    let lenient = RingConfig::new().slot_count(4096).join_any_shape();
    assert_eq!(Ring::open(id, &lenient).unwrap().slot_count(), 65536);
}

#[test]
fn an_explicit_shape_is_demanded_of_a_file() {
    let path = temp_path("shape-demand");
    let _rm = RemoveFile(path.clone());
    let _first = Ring::create(&path, &cli_shape().persistent(true)).unwrap();
    let what = mismatch(Ring::open_or_create(
        &path,
        &RingConfig::new().slot_count(4096),
    ));
    assert!(what.contains("slot_count"), "{what}");
    let what = mismatch(Ring::open(&path, &RingConfig::new().slot_size(8)));
    assert!(what.contains("slot_size"), "{what}");
}
