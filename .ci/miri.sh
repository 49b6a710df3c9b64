#!/usr/bin/env bash
# Miri for shmpipe: the library's unit tests (the ring protocol on heap memory, including
# producer/consumer runs on two threads) under the interpreter, which reports undefined
# behaviour: out-of-bounds and use-after-free accesses, aliasing violations (Stacked Borrows),
# data races, and, with weak-memory emulation, loads that see stale values the C++20 model
# allows. Runs on a fresh machine: installs the nightly toolchain and its miri and rust-src
# components if they are missing. On 2 cores: about 1m45s with a cold target directory, 3 min
# when Miri's sysroot has to be built too (plus the toolchain download on a fresh machine).
#
# What runs: `cargo miri test -p shmpipe --lib`, so the library's src/**/tests only: no doc
# tests, no tests/ (those attach SysV segments and spawn processes, which Miri cannot), and not
# the command-line tool (the `shmpipe-cli` crate in cli/). Unit tests that read /proc or spawn a
# process are marked `#[cfg_attr(miri, ignore = "...")]` and show up as ignored; the heap ring
# (`Ring::in_process`) is the only backing the Miri tests use, as Miri cannot call shmget/shmat.
#
# MIRIFLAGS:
#   -Zmiri-strict-provenance: no integer-to-pointer casts anywhere in the tested code (every
#     pointer into the ring is derived from its allocation by `add`); passes.
#   Weak-memory emulation stays ON (Miri's default). It used to be turned off with
#     -Zmiri-disable-weak-memory-emulation, because Miri ICEd ("cannot have empty store buffer
#     when previous write was atomic", weak_memory.rs, nightly 2026-05-19; the family of
#     rust-lang/miri#5185): a slot's first 8 bytes are a record header written with 32-bit
#     atomics, and at other times payload bytes of a longer record written by
#     `copy_nonoverlapping`, which can end in the middle of a header word (16-byte slots, a
#     9-byte message covers 1 byte of the next slot's `len`); a later atomic store to that word
#     then hits the ICE. Reduced, on a zeroed buffer after any thread was spawned:
#       w = &*p.add(16).cast::<AtomicU32>(); w.store(1, Relaxed);
#       ptr::write_bytes(p.add(8), 7, 10);  // covers bytes 16..18 of w only
#       w.store(2, Relaxed);                // ICE (covering all of 16..20 does not ICE)
#     The Miri build of src/sync/slots.rs now reads and writes record headers with plain accesses
#     at the same addresses (production keeps the atomics, which the untrusted peer in another
#     process requires); in-process both sides are our code, so Miri's race detector then also
#     checks that the protocol orders every header access (see docs/DESIGN.md, "Miri and the
#     record header"). Checked to pass with 8 schedules (-Zmiri-many-seeds=0..8) and
#     with -Zmiri-tree-borrows; a Relaxed publish (P2) or release (C2), a read one byte past a
#     record, and a use-after-free of the slot array each fail it.
#   Extra flags can be appended through the environment, e.g.
#     MIRIFLAGS=-Zmiri-many-seeds=0..8 .ci/miri.sh   (8 schedules; ~8x the time)
#     MIRIFLAGS=-Zmiri-tree-borrows .ci/miri.sh      (Tree Borrows instead of Stacked Borrows)
#
# The build goes to its own target directory ($MIRI_TARGET_DIR, default target/miri inside this
# clone), so it neither invalidates nor waits for the lock of the normal `target/`. It belongs
# to the clone: a directory shared by every clone on the machine (it used to be
# /tmp/miri-target) remembers the clone that built it, and once that clone is deleted the next
# clone's Miri step fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
start=$(date +%s)
finish() {
  local rc=$? elapsed=$(($(date +%s) - start))
  local verdict=passed
  [ "$rc" -eq 0 ] || verdict="FAILED (exit $rc)"
  step "miri: $verdict in $((elapsed / 60))m$((elapsed % 60))s"
}
trap finish EXIT

step "toolchain: nightly with miri and rust-src"
# (The lists are read into a string first: `rustup ... | grep -q` can fail under pipefail when
# grep exits before rustup has finished writing.)
if ! grep -q '^nightly' <<<"$(rustup toolchain list)"; then
  rustup toolchain install nightly --profile minimal
fi
installed=$(rustup +nightly component list --installed)
for c in miri rust-src; do
  if ! grep -q "^$c" <<<"$installed"; then
    rustup +nightly component add "$c"
  fi
done
cargo +nightly miri --version

export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-$PWD/target/miri}"
export MIRIFLAGS="-Zmiri-strict-provenance${MIRIFLAGS:+ $MIRIFLAGS}"
# Report a Miri crash on stderr only, instead of also leaving a rustc-ice-*.txt in the tree.
export RUSTC_ICE=0

step "cargo +nightly miri setup"
cargo +nightly miri setup

step "MIRIFLAGS=\"$MIRIFLAGS\" cargo +nightly miri test -p shmpipe --lib"
cargo +nightly miri test -p shmpipe --lib
