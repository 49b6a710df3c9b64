//! The import rules of the source tree (docs/DESIGN.md, "Where the code is"), checked on the
//! text of `src/` so that the layering cannot silently decay. Each rule is one test; a failure
//! names every offending `file:line`.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (relative to the crate root), sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = Vec::new();
    if root.is_file() {
        out.push(root);
    } else {
        walk(&root, &mut out);
    }
    out.sort();
    out
}

/// The `file:line: text` of every code line (comment lines skipped) in the files under `dirs`
/// that contains one of `needles` and none of `allowed`.
fn offenders(dirs: &[&str], needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in dirs {
        for file in rust_files(dir) {
            let text = fs::read_to_string(&file).expect("source file");
            for (i, line) in text.lines().enumerate() {
                // Comments describe; only code imports.
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if needles.iter().any(|n| line.contains(n))
                    && !allowed.iter().any(|a| line.contains(a))
                {
                    let rel = file.strip_prefix(base).unwrap_or(&file);
                    found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{rule}:\n  {}", found.join("\n  "));
}

/// The configuration switches that belong to `src/sync/` alone.
const SWITCHES: &[&str] = &[
    "cfg(loom",
    "cfg!(loom",
    "(loom)",
    "not(loom",
    ", loom",
    "cfg(miri",
    "cfg!(miri",
    "(miri)",
    "not(miri",
    ", miri",
    "cfg(fuzzing",
    "cfg!(fuzzing",
    "(fuzzing,",
    "fuzzing)",
];

#[test]
fn the_ring_algorithm_touches_no_operating_system_and_no_layer_above() {
    let mut found = offenders(
        &["src/ring"],
        &[
            "libc",
            "/proc",
            "crate::backing",
            "crate::channel",
            "crate::admin",
            "crate::cli",
            "crate::segment",
            "crate::memfd",
            "crate::gc",
            "crate::shared",
            "crate::wait",
            "std::fs",
            "std::process",
            "std::time::Instant",
        ],
        &[],
    );
    // The one exception: the unit tests take heap memory from the heap backing, as the
    // algorithm's Miri suite runs on heap memory only.
    found.retain(|f| !(f.starts_with("src/ring/tests.rs:") && f.contains("crate::backing::heap")));
    assert_none(
        "src/ring/ is the algorithm over any memory: no libc, /proc, backing, channel, admin, CLI",
        found,
    );
}

#[test]
fn the_channel_sides_leave_the_protocol_to_the_ring() {
    assert_none(
        "channel/producer.rs, consumer.rs and stream.rs reach the indices, record headers and \
         orderings only through ring::ProducerCore and ring::ConsumerCore",
        offenders(
            &[
                "src/channel/producer.rs",
                "src/channel/consumer.rs",
                "src/channel/stream.rs",
            ],
            &[
                ".tail.load",
                ".tail.store",
                ".head.load",
                ".head.store",
                "region().tail()",
                "region().head()",
                "read_record",
                "write_record",
                "sabotage::",
                "check_indices",
            ],
            &[],
        ),
    );
}

#[test]
fn the_ring_algorithm_has_no_configuration_switch() {
    assert_none(
        "src/ring/ reaches loom, Miri and fuzzing only through crate::sync",
        offenders(&["src/ring"], SWITCHES, &[]),
    );
}

#[test]
fn only_sync_switches_between_loom_miri_and_fuzzing() {
    // Allowed elsewhere: a unit test ignored under Miri, and the one gate of the fuzzing entry
    // points in lib.rs (a module declaration cannot move into sync/).
    let dirs = [
        "src/ring",
        "src/backing",
        "src/channel",
        "src/admin",
        "src/layout.rs",
    ];
    let mut found = offenders(&dirs, SWITCHES, &["#[cfg_attr(miri, ignore"]);
    found.extend(offenders(
        &["src/error.rs", "src/key.rs", "src/fuzzing.rs"],
        SWITCHES,
        &[],
    ));
    found.extend(offenders(
        &["src/lib.rs"],
        SWITCHES,
        &["pub mod __fuzz", "#[cfg(all(fuzzing, not(loom)))]"],
    ));
    assert_none("cfg(loom)/cfg(miri)/cfg(fuzzing) outside src/sync/", found);
}

#[test]
fn backings_do_not_import_the_channel_or_admin() {
    assert_none(
        "src/backing/ turns OS objects into ring memory; it may not use the channel API or admin",
        offenders(
            &["src/backing"],
            &[
                "crate::channel",
                "crate::admin",
                "crate::gc",
                "crate::Ring",
                "crate::cli",
            ],
            // Doc links to the public API a user meets are not imports.
            &["](crate::"],
        ),
    );
}

#[test]
fn the_layout_imports_only_sync() {
    let found = offenders(
        &["src/layout.rs"],
        &["crate::", "super::"],
        &["crate::sync", "](crate::", "use super::*;"],
    );
    assert_none("src/layout.rs depends on nothing but crate::sync", found);
}

#[test]
fn errors_import_no_backing_and_no_layer_above() {
    assert_none(
        "src/error.rs is a leaf (it may name crate::key)",
        offenders(
            &["src/error.rs"],
            &[
                "crate::backing",
                "crate::channel",
                "crate::admin",
                "crate::ring",
                "crate::segment",
            ],
            &["](crate::"],
        ),
    );
}

#[test]
fn nothing_below_admin_imports_admin() {
    assert_none(
        "admin (gc, inspect) sits on top: only lib.rs re-exports it",
        offenders(
            &[
                "src/ring",
                "src/backing",
                "src/channel",
                "src/sync",
                "src/layout.rs",
                "src/error.rs",
            ],
            &["crate::admin", "crate::gc"],
            &["](crate::"],
        ),
    );
}

#[test]
fn sync_imports_nothing_of_the_crate_but_itself() {
    assert_none(
        "src/sync/ is the bottom layer",
        offenders(&["src/sync"], &["crate::"], &["crate::sync", "](crate::"]),
    );
}

/// The library builds without the command line's dependencies: no `[dependencies]` table of its
/// manifest (plain, target-specific or build) names clap or indicatif, so a library user
/// compiles neither; nor zenoh, which only the bridge crate (`bridge/`) brings. A line scan of the manifest as written (`Cargo.toml.orig` in a published
/// package, whose `Cargo.toml` cargo rewrote), not a TOML parser; it checks that it found
/// `libc`, so a changed layout fails instead of passing empty.
#[test]
fn the_library_depends_on_neither_clap_nor_indicatif() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let orig = base.join("Cargo.toml.orig");
    let path = if orig.is_file() {
        orig
    } else {
        base.join("Cargo.toml")
    };
    let manifest = fs::read_to_string(&path).expect("read the library's Cargo.toml");
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let table = line.trim_matches(['[', ']']);
            in_deps = table.ends_with("dependencies") && !table.ends_with("dev-dependencies");
        } else if in_deps && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                deps.push(name.trim().to_string());
            }
        }
    }
    assert!(
        deps.iter().any(|d| d == "libc"),
        "no libc found in {deps:?}"
    );
    for cli_only in ["clap", "indicatif", "zenoh"] {
        assert!(
            !deps.iter().any(|d| d == cli_only),
            "the library depends on {cli_only}: {deps:?}"
        );
    }
}
