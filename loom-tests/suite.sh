#!/usr/bin/env bash
# Runs every loom test binary one scenario at a time with a per-scenario time limit, and
# prints the loom-report lines (scenario, reclaimer, executions, seconds, result).
# Usage: loom-tests/suite.sh [filter]   (env: LOOM_SCENARIO_TIMEOUT, default 300 s;
# LOOM_FAIL_FAST=1 stops at the first failure)
#
# Fails when a scenario fails or times out, and when fewer scenarios ran than the suite's
# source defines (counted from `scenario!` declarations and `#[test]` functions in
# loom-tests/tests, not from the binaries' own lists), or, with a filter, when none matched.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom ${EXTRA_RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
# No backtraces: some scenarios panic on purpose in every execution, and capturing a trace
# each time multiplied one scenario's time by eight. A failure prints its message; replay it
# with run.sh (and RUST_BACKTRACE=1) for the trace.
export RUST_BACKTRACE=0
mkdir -p "$CARGO_TARGET_DIR"
# What the source defines: each `scenario!` runs on both reclaimers (two tests), except the
# three-actor ones (grace only); each plain `#[test]` is one.
expected=$(python3 - <<'PY'
import glob, re
n = 0
for path in sorted(glob.glob("loom-tests/tests/*.rs")):
    src = open(path).read()
    for m in re.finditer(r"^scenario!\(\s*(\w+)\s*,\s*(\w*)", src, re.M):
        n += 1 if m.group(2) == "three_actors" else 2
    n += len(re.findall(r"^#\[test\]", src, re.M))
print(n)
PY
)
cargo test --release -p loom-tests --tests --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]: print(m["executable"])' > "$CARGO_TARGET_DIR/loom-binaries" || exit 1
[ -s "$CARGO_TARGET_DIR/loom-binaries" ] || { echo "loom build failed"; cargo test --release -p loom-tests --tests --no-run; exit 1; }
failed=0
ran=0
while read -r bin; do
  for t in $("$bin" --list 2>/dev/null | sed -n 's/: test$//p'); do
    [ -n "${1:-}" ] && [[ "$t" != *"$1"* ]] && continue
    ran=$((ran + 1))
    out=$(timeout "${LOOM_SCENARIO_TIMEOUT:-300}" "$bin" --exact "$t" --test-threads=1 --nocapture 2>&1)
    rc=$?
    line=$(grep -m1 "loom-report" <<<"$out" || true)
    if [ $rc -eq 124 ]; then echo "loom-report scenario=$t result=TIMEOUT"; failed=1
    elif [ $rc -ne 0 ]; then echo "${line:-loom-report scenario=$t result=FAILED}"; grep -m3 -A2 "panicked" <<<"$out"; failed=1
    else echo "${line:-loom-report scenario=$t result=ok}"; fi
    [ $failed -ne 0 ] && [ -n "${LOOM_FAIL_FAST:-}" ] && exit 1
  done
done < "$CARGO_TARGET_DIR/loom-binaries"
if [ -z "${1:-}" ] && [ "$ran" -ne "$expected" ]; then
  echo "loom-suite: ran $ran scenarios, the source defines $expected: FAILED"
  failed=1
elif [ -n "${1:-}" ] && [ "$ran" -eq 0 ]; then
  echo "loom-suite: no scenario matches \"$1\": FAILED"
  failed=1
else
  echo "loom-suite: ran $ran scenarios (the source defines $expected)"
fi
exit $failed
