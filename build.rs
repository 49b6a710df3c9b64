//! Refuses every target but Linux with one sentence, before the crate meets a missing libc item.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=shmpipe runs only on Linux (it needs futexes, memfd and Linux's System V \
             shared memory), not on target OS `{os}`."
        );
    }
}
