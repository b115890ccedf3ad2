#!/usr/bin/env bash
# Benchmarks, each printing its figures and ratios:
#   1. front end: parse + lower a generated 1,000-instruction Dockerfile (goal: 5 ms median);
#   2. layers (scripts/bench-layers.sh): creation and extraction throughput and peak RSS on a
#      512 MiB tree, beside `tar | gzip`, `tar | zstd -T0` and their extracting pipelines.
#
#   scripts/bench.sh            # both
#   scripts/bench.sh frontend   # only the front end (GOAL_MS=2 for another goal)
#   scripts/bench.sh layers     # only the layers
#
# Exits 0 whatever the figure: performance is reported, never asserted (DESIGN.md, Testing).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
if [[ $WHAT == layers ]]; then
    exec scripts/bench-layers.sh
fi

GOAL_MS=${GOAL_MS:-5}
BENCH=parse_and_lower

echo "+ cargo bench -p rbuild-frontend --bench $BENCH" >&2
out=$(cargo bench -p rbuild-frontend --bench "$BENCH")
echo "$out"

# divan prints: "╰─ parse_and_lower  561.1 µs │ 848.6 µs │ 575.6 µs │ 581.9 µs │ 100 │ 100"
# (fastest │ slowest │ median │ mean …); take the median of the whole-front-end row.
row=$(grep -E "─ $BENCH " <<<"$out" | head -n1)
if [[ -z "$row" ]]; then
    echo "bench.sh: no '$BENCH' row in the divan output" >&2
    exit 1
fi
awk -F'│' -v goal="$GOAL_MS" -v name="$BENCH" '{
    split($3, m, " ")
    value = m[1]; unit = m[2]
    if (unit == "ns") ms = value / 1e6
    else if (unit == "µs" || unit == "us") ms = value / 1e3
    else if (unit == "ms") ms = value
    else if (unit == "s") ms = value * 1e3
    else { print "bench.sh: unknown unit " unit > "/dev/stderr"; exit 1 }
    verdict = (ms <= goal) ? "meets" : "MISSES"
    printf "%s (1,000 instructions): median %.3f ms, goal %s ms: %s the goal (%.1fx headroom)\n",
        name, ms, goal, verdict, goal / ms
}' <<<"$row"

if [[ $WHAT == all ]]; then
    echo
    scripts/bench-layers.sh
fi
