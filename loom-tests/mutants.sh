#!/usr/bin/env bash
# Proves the loom suite bites: builds the engine once with every deliberate bug compiled in
# (`--cfg epoch_slotmap_mutants`), then for each bug turns it on (`EPOCH_SLOTMAP_MUTANT=name`,
# see crates/epoch-slotmap/src/mutant.rs) and runs the loom scenarios until one fails. Each
# mutant names the scenario expected to kill it, which runs first; if it survives that, the
# whole suite runs. A mutant is killed only by a scenario that FAILED (a failed assertion or a
# violation loom detected); a scenario that timed out proves nothing, so a mutant that only
# times out is "survived (timed out)". Prints a table and `mutants: K killed of N`; exits
# non-zero if any mutant survives. Usage: loom-tests/mutants.sh [mutant ...]
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A first=(
  [free_at_once]="get_vs_remove::grace"
  [no_version_check]="stale_key_after_reuse::grace"
  [relaxed_publish]="insert_publishes_the_value_with_the_key::grace"
  [untagged_free_list]="free_list_aba_through_a_panicking_insert::grace"
  [remove_keeps_version]="stale_key_after_reuse::grace"
  [reclaim_without_wait]="reclaim_vs_pinned_reader::grace"
  [take_without_wait]="take_vs_get::grace"
  [shrink_without_watermark]="shrink_vs_stale_reader::grace"
  [grow_without_rescan]="inserts_race_to_allocate_a_page::grace"
  [hint_without_recheck]="batch_run_by_another_thread_while_its_owner_inserts::grace"
  [shrink_keeps_the_slots]="shrink_vs_remove_of_the_last_occupant::grace"
  [limit_without_wait]="insert_at_the_limit_waits_for_a_grace_period::grace"
)
order=(free_at_once no_version_check relaxed_publish untagged_free_list remove_keeps_version
       reclaim_without_wait take_without_wait shrink_without_watermark grow_without_rescan
       hint_without_recheck shrink_keeps_the_slots limit_without_wait)
[ $# -gt 0 ] && order=("$@")
export LOOM_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom-mutants}"
export EXTRA_RUSTFLAGS="--cfg epoch_slotmap_mutants"
killed=0; total=0; table=()
for m in "${order[@]}"; do
  total=$((total + 1))
  export EPOCH_SLOTMAP_MUTANT="$m"
  start=$(date +%s)
  out=$(LOOM_SCENARIO_TIMEOUT=${LOOM_SCENARIO_TIMEOUT:-240} loom-tests/suite.sh "${first[$m]:-}" 2>&1)
  if ! grep -q "result=FAILED" <<<"$out"; then
    first_out=$out
    out=$(LOOM_FAIL_FAST=1 LOOM_SCENARIO_TIMEOUT=${LOOM_SCENARIO_TIMEOUT:-240} loom-tests/suite.sh 2>&1)
    out="$first_out"$'\n'"$out"
  fi
  line=$(grep -m1 "result=FAILED" <<<"$out" || true)
  secs=$(( $(date +%s) - start ))
  if [ -n "$line" ]; then
    killed=$((killed + 1))
    scenario=$(sed -n 's/.*scenario=\([^ ]*\).*/\1/p' <<<"$line")
    execs=$(sed -n 's/.*executions=\([0-9]*\).*/\1/p' <<<"$line")
    why=$(grep -A1 "panicked" <<<"$out" | tail -1 | cut -c1-70)
    table+=("$(printf '%-26s killed   by %-48s after %8s executions (%ss) %s' "$m" "$scenario" "${execs:-?}" "$secs" "$why")")
  elif grep -q "result=TIMEOUT" <<<"$out"; then
    table+=("$(printf '%-26s SURVIVED (timed out: %s) (%ss)' "$m" "$(grep -m1 -o 'scenario=[^ ]*' <<<"$(grep -m1 'result=TIMEOUT' <<<"$out")")" "$secs")")
  else
    table+=("$(printf '%-26s SURVIVED (%ss)' "$m" "$secs")")
  fi
  echo "${table[-1]}"
done
echo
echo "mutant                     result"
printf '%s\n' "${table[@]}"
echo "mutants: $killed killed of $total"
[ "$killed" -eq "$total" ]
