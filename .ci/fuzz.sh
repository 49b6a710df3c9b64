#!/usr/bin/env bash
# Fuzzing (issue #5): builds the cargo-fuzz targets in fuzz/ (ops, image, hostile), replays the
# committed seed corpus of each, then fuzzes each for FUZZ_SECONDS seconds (default 60) and
# prints libFuzzer's final statistics (executions, exec/s). Fails on any crash, panic,
# sanitizer report, timeout (an input running over 10 s: a hang) or out-of-memory.
#
# New corpus entries go to a fresh temporary directory (printed at the end), never into
# fuzz/corpus/; crashing inputs are saved under fuzz/artifacts/<target>/ (git-ignored).
#
#   bash .ci/fuzz.sh                              # all three, 60 s each
#   FUZZ_SECONDS=600 FUZZ_TARGETS=hostile bash .ci/fuzz.sh
#
# Needs the nightly toolchain (AddressSanitizer and coverage instrumentation) and cargo-fuzz;
# installs whichever is missing. About 6 minutes on 2 cores with the default 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-ops image hostile}

step() { printf '\n=== %s\n' "$*"; }

step "toolchain"
if ! grep -q '^nightly' <<<"$(rustup toolchain list)"; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo +nightly --version
cargo fuzz --version

work=$(mktemp -d "${TMPDIR:-/tmp}/shmpipe-fuzz.XXXXXX")
echo "new corpus entries and logs: $work"

step "build"
start=$SECONDS
cargo +nightly fuzz build
echo "built in $((SECONDS - start)) s"

# Runs libFuzzer on one target with the given arguments; on failure shows the end of its log
# (the crash report and the input's path) and fails.
fuzz() {
  local t=$1 log=$2
  shift 2
  if ! cargo +nightly fuzz run "$t" "$work/$t" "fuzz/corpus/$t" -- -timeout=10 "$@" >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "FAILED: fuzz target $t (full log: $log; crashing inputs: fuzz/artifacts/$t/)" >&2
    exit 1
  fi
}

for t in $targets; do
  mkdir -p "$work/$t"
  step "replay fuzz/corpus/$t ($(find "fuzz/corpus/$t" -type f | wc -l) seeds)"
  fuzz "$t" "$work/$t.replay.log" -runs=0
  grep -E '^#[0-9]+[[:space:]]+INITED' "$work/$t.replay.log" || true
done

for t in $targets; do
  step "fuzz $t for ${seconds} s"
  fuzz "$t" "$work/$t.log" -max_total_time="$seconds" -print_final_stats=1
  # The final status line (executions, coverage, exec/s), libFuzzer's "Done N runs in S
  # second(s)" and the averaged statistics.
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/$t.log"
  echo "new corpus entries: $(find "$work/$t" -type f | wc -l) in $work/$t"
done
