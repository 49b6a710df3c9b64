//! `include/shmpipe.h` is generated from the Rust definitions by cbindgen and checked in, so
//! that C programs build without cbindgen. This test regenerates it and fails when the
//! checked-in file differs: a change to the API that forgot the header fails CI.
//! `SHMPIPE_BLESS=1 cargo test -p shmpipe-c --test header` rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_is_what_cbindgen_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = dir.join("include/shmpipe.h");
    if std::env::var_os("SHMPIPE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/shmpipe.h");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in
            .split(|&b| b == b'\n')
            .zip(generated.split(|&b| b == b'\n'))
            .position(|(a, b)| a != b)
            .map_or("the length".to_string(), |n| format!("line {}", n + 1));
        panic!(
            "capi/include/shmpipe.h is stale (first difference: {first}); regenerate it with \
             `SHMPIPE_BLESS=1 cargo test -p shmpipe-c --test header` and commit it"
        );
    }
}
