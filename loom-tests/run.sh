#!/usr/bin/env bash
# Runs the loom model checks. Usage: loom-tests/run.sh [test filter] [-- extra cargo test args]
#
# - RUSTFLAGS: `--cfg loom` switches epoch-slotmap to loom's primitives, `--cfg crossbeam_loom`
#   does the same for crossbeam-epoch (a compile_error! stops a build with only one of them).
# - A separate target dir, so switching RUSTFLAGS does not rebuild the normal build.
# - --release with debug assertions: loom is slow unoptimised.
# - Preemption bound: each scenario sets its own (none for the grace-period reclaimer, 2 for
#   crossbeam-epoch); LOOM_MAX_PREEMPTIONS overrides both.
# - Checkpoints: a failing run writes its schedule to $LOOM_CHECKPOINT_FILE (default
#   target-loom/loom-checkpoint.json) every LOOM_CHECKPOINT_INTERVAL executions; rerun with
#   the same file and LOOM_LOG=1 LOOM_LOCATION=1 to replay it with a trace.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom ${EXTRA_RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export LOOM_CHECKPOINT_INTERVAL="${LOOM_CHECKPOINT_INTERVAL:-10000}"
filter=()
if [ $# -gt 0 ] && [ "$1" != "--" ]; then filter=("$1"); shift; fi
[ "${1:-}" = "--" ] && shift
cargo test --release -p loom-tests --tests "$@" -- --test-threads=1 --nocapture "${filter[@]}"
