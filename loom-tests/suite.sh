#!/usr/bin/env bash
# Runs every loom test binary one scenario at a time with a per-scenario time limit, and
# prints the loom-report lines (scenario, reclaimer, executions, seconds, result).
# Usage: loom-tests/suite.sh [filter]   (env: LOOM_SCENARIO_TIMEOUT, default 300 s;
# LOOM_FAIL_FAST=1 stops at the first failure)
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom ${EXTRA_RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
mkdir -p "$CARGO_TARGET_DIR"
cargo test --release -p loom-tests --tests --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]: print(m["executable"])' > "$CARGO_TARGET_DIR/loom-binaries" || exit 1
[ -s "$CARGO_TARGET_DIR/loom-binaries" ] || { echo "loom build failed"; cargo test --release -p loom-tests --tests --no-run; exit 1; }
failed=0
while read -r bin; do
  for t in $("$bin" --list 2>/dev/null | sed -n 's/: test$//p'); do
    [ -n "${1:-}" ] && [[ "$t" != *"$1"* ]] && continue
    out=$(timeout "${LOOM_SCENARIO_TIMEOUT:-300}" "$bin" --exact "$t" --test-threads=1 --nocapture 2>&1)
    rc=$?
    line=$(grep -m1 "loom-report" <<<"$out" || true)
    if [ $rc -eq 124 ]; then echo "loom-report scenario=$t result=TIMEOUT"; failed=1
    elif [ $rc -ne 0 ]; then echo "${line:-loom-report scenario=$t result=FAILED}"; grep -m3 -A2 "panicked" <<<"$out"; failed=1
    else echo "${line:-loom-report scenario=$t result=ok}"; fi
    [ $failed -ne 0 ] && [ -n "${LOOM_FAIL_FAST:-}" ] && exit 1
  done
done < "$CARGO_TARGET_DIR/loom-binaries"
exit $failed
