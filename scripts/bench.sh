#!/usr/bin/env bash
# Benchmarks, each printing its figures and ratios:
#   1. front end: parse + lower a generated 1,000-instruction Dockerfile (goal: 5 ms median);
#   2. layers (scripts/bench-layers.sh): creation and extraction throughput and peak RSS on a
#      512 MiB tree, beside `tar | gzip`, `tar | zstd -T0` and their extracting pipelines;
#   3. push (scripts/bench-push.sh): `rbuild push` of a 1 GiB image of random bytes in 4 layers
#      to a local docker-registry (a fresh, empty one per run), beside `skopeo copy` of the
#      same image from an OCI layout: median time, MiB/s, peak RSS, the ratio, requests sent,
#      and the times of a re-push (HEAD checks only) and of a push to a second repository
#      (cross-repository mounts). PUSH_MIB=1024 and PUSH_LAYERS=4 set the image's size;
#   4. build (scripts/bench-build.sh): the same Dockerfiles built with rbuild, BuildKit (Docker's
#      daemon, started if installed and not running) and buildah when installed, alternating:
#      a 10,000-file context cold, no-op and after one file changed, four `RUN sleep 1` stages,
#      a 512 MiB layer; medians, the ratios rbuild/BuildKit and the goals met or missed;
#   5. multiplatform (scripts/bench-multiplatform.sh): one rbuild build for linux/amd64 and
#      linux/arm64 (arm64 through qemu-user-static) of 4 RUN-heavy steps FROM a busybox index in
#      a loopback registry, beside BuildKit's two single-platform builds of the same Dockerfile;
#      medians and the ratio rbuild / BuildKit;
#   6. cache (scripts/bench-cache.sh): the shared build cache, "two CI machines, one registry":
#      A builds cold with --cache-to type=registry,…,mode=max into a loopback docker-registry,
#      B builds the same context on a fresh root with --cache-from (lazy import: only the final
#      image's layers are fetched), then after one final-stage file changed, and A re-exports
#      with every step cached; medians, B / A cold, and B's bytes fetched against the cache's.
#      CACHE_MIB=64 sets each of the build stage's 3 RUN layers.
#
#   scripts/bench.sh            # all six
#   scripts/bench.sh frontend   # only the front end (GOAL_MS=2 for another goal)
#   scripts/bench.sh layers     # only the layers
#   scripts/bench.sh push       # only the push
#   scripts/bench.sh build      # only the builds
#   scripts/bench.sh multiplatform   # only the multi-platform builds
#   scripts/bench.sh cache      # only the shared build cache
#
# Exits 0 whatever the figure: performance is reported, never asserted (DESIGN.md, Testing).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
case $WHAT in
    layers) exec scripts/bench-layers.sh ;;
    push) exec scripts/bench-push.sh ;;
    build) exec scripts/bench-build.sh ;;
    multiplatform) exec scripts/bench-multiplatform.sh ;;
    cache) exec scripts/bench-cache.sh ;;
    all | frontend) ;;
    *)
        echo "usage: scripts/bench.sh [frontend|layers|push|build|multiplatform|cache]" >&2
        exit 2
        ;;
esac

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
    echo
    scripts/bench-push.sh
    echo
    scripts/bench-build.sh
    echo
    scripts/bench-multiplatform.sh
    echo
    scripts/bench-cache.sh
fi
