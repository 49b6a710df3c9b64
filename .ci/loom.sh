#!/usr/bin/env bash
# The loom suite (tests/loom.rs): the ring protocol model-checked, then the negative controls:
# the same build run with one ordering or one half of the sleep/wake handshake deliberately
# broken (SHMPIPE_BREAK, read only in loom builds: see src/sync/sabotage.rs). Each
# control must make a model fail with a loom report; a control that passes means the models
# have gone blind, and CI fails.
#
# LOOM_MAX_PREEMPTIONS (default 3) bounds the preemptions per execution.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
export RUSTFLAGS="--cfg loom"
bound="${LOOM_MAX_PREEMPTIONS:-3}"
start=$SECONDS
run() { cargo test --release -p shmpipe --test loom -- --test-threads 2 "$@"; }

cargo test --release -p shmpipe --test loom --no-run
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Both wakers (src/sync/barrier.rs): the light one (a fence, and the sleeper's barrier), which
# a process uses once it registered with membarrier, and the heavy swap, used otherwise.
for wake in light heavy; do
  echo "--- loom models, $wake wake-ups (preemption bound $bound)"
  if ! SHMPIPE_WAKE="$wake" LOOM_MAX_PREEMPTIONS="$bound" run --nocapture >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  sed -n 's/^.*\(loom model .*\)$/\1/p; /^test result/p' "$log"
done

echo "--- negative controls (preemption bound 2)"
# Each control with the waker it breaks: the swaps are the heavy waker's, the fence and the
# barrier the light one's; the orderings of the indices matter to both.
for control in publish-relaxed:light release-relaxed:light wake-no-fence:light \
  sleep-no-barrier:light wake-load:heavy sleep-store:heavy; do
  broken=${control%%:*}
  wake=${control##*:}
  if SHMPIPE_WAKE="$wake" SHMPIPE_BREAK="$broken" LOOM_MAX_PREEMPTIONS=2 run >"$log" 2>&1; then
    echo "negative control '$broken': every model passed; the models cannot see this bug" >&2
    exit 1
  fi
  why=$(grep -oE 'Causality violation[^.]*|deadlock|panicked at tests/loom.rs' "$log" |
    sed 's/Concurrent read and write accesses.*/data race on a slot/' | sort | uniq -c |
    tr -s ' ' | paste -sd ';' -)
  if [ -z "$why" ]; then
    echo "negative control '$broken' failed, but not with a loom report:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  echo "negative control '$broken': caught by loom ($why)"
done
echo "loom suite: $((SECONDS - start)) s"
