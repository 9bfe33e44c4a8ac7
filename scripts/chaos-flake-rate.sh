#!/usr/bin/env bash
# Measures how often the real-process chaos tier fails, and why: runs `leasehold chaos
# --scenario all` for seeds 1..N in a row, then the chaos tests of `.ci/run`
# (`cargo test -p leasehold --test chaos`) M times, optionally while a parallel release
# build of the workspace loads the machine, and prints a tally by outcome with the kept
# folder of every failure. docs/chaos.md records what it printed.
#
#   scripts/chaos-flake-rate.sh [--campaigns N] [--duration S] [--test-runs M] [--load]
#                               [--out DIR]
#
# Defaults: 30 campaigns of 60 s, 10 test runs, no load, results under a new temporary
# folder (printed). Ctrl-C stops it; each campaign stops everything it started.
set -uo pipefail
cd "$(dirname "$0")/.."

campaigns=30
duration=60
test_runs=10
load=0
out=""
while (($#)); do
  case "$1" in
    --campaigns) campaigns="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --test-runs) test_runs="$2"; shift 2 ;;
    --load) load=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
out="${out:-$(mktemp -d -t chaos-flake-XXXXXX)}"
mkdir -p "$out"
echo "results in $out"

echo "building the debug binary and the chaos tests first (not part of any measurement)"
cargo build --quiet --bin leasehold || exit 1
cargo test --quiet -p leasehold --test chaos --no-run || exit 1
binary="$PWD/target/debug/leasehold"

load_pid=""
stop_load() {
  if [[ -n "$load_pid" ]]; then
    kill -- "-$load_pid" 2>/dev/null
    wait "$load_pid" 2>/dev/null
    load_pid=""
  fi
}
trap 'stop_load; echo; echo "stopped; results so far in $out"; exit 130' INT TERM
if ((load)); then
  # The load: a release build of the whole workspace from scratch, again and again, in a
  # target dir of its own, at the default priority (cargo uses both cores).
  setsid bash -c "while true; do
      cargo build --release --workspace --quiet --target-dir '$out/load-target' >/dev/null 2>&1
      rm -rf '$out/load-target'
    done" &
  load_pid=$!
  echo "load: a release build of the workspace in a loop (process group $load_pid)"
fi

summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
note "machine: $(nproc) cores, $(uname -r); load: $([[ $load = 1 ]] && echo 'parallel release build' || echo none)"

passed=0
failed=0
declare -A outcomes=()
for seed in $(seq 1 "$campaigns"); do
  report="$out/campaign-$seed.json"
  started=$(date +%s)
  "$binary" chaos --scenario all --seed "$seed" --duration "$duration" --report "$report" \
    >"$out/campaign-$seed.out" 2>"$out/campaign-$seed.err"
  code=$?
  took=$(($(date +%s) - started))
  outcome=$(sed -n 's/^  "outcome": "\([a-z-]*\)",$/\1/p' "$report" 2>/dev/null | head -1)
  outcome="${outcome:-no-report}"
  outcomes[$outcome]=$((${outcomes[$outcome]:-0} + 1))
  if ((code == 0)); then
    passed=$((passed + 1))
    note "campaign seed $seed: passed (${took} s)"
  else
    failed=$((failed + 1))
    note "campaign seed $seed: FAILED exit $code, $outcome (${took} s)"
    grep '^chaos: ' "$out/campaign-$seed.err" | grep -v '^chaos: +' | sed 's/^/    /' | tee -a "$summary"
  fi
done

test_passed=0
test_failed=0
for run in $(seq 1 "$test_runs"); do
  log="$out/tests-$run.log"
  started=$(date +%s)
  cargo test --quiet -p leasehold --test chaos >"$log" 2>&1
  code=$?
  took=$(($(date +%s) - started))
  if ((code == 0)); then
    test_passed=$((test_passed + 1))
    note "tests/chaos.rs run $run: passed (${took} s)"
  else
    test_failed=$((test_failed + 1))
    note "tests/chaos.rs run $run: FAILED (${took} s); log $log"
    grep -E '^test .* FAILED|^---- |chaos: FAILED|files kept in' "$log" | sed 's/^/    /' | tee -a "$summary"
  fi
done
stop_load

note ""
note "campaigns: $passed passed, $failed failed (scenario all, seeds 1..$campaigns, $duration s each)"
for outcome in "${!outcomes[@]}"; do
  note "  $outcome: ${outcomes[$outcome]}"
done
note "tests/chaos.rs: $test_passed passed, $test_failed failed"
note "$((passed + test_passed)) passed, $((failed + test_failed)) failed"
((failed + test_failed == 0))
