#!/usr/bin/env bash
# Build benchmark: the same workloads built with rbuild, BuildKit (Docker's daemon, the docker
# driver) and buildah when installed; rbuild and BuildKit alternate run by run, buildah runs in
# a pass of its own afterwards (below); prints each run, the medians, the ratios rbuild/BuildKit
# and rbuild/buildah, and the goals met or missed:
#
#   ctx-cold   a 10,000-file context (100 dirs × 100 files of 200-500 bytes), `COPY . /src` then
#              a RUN, with no cache at all (goal: rbuild ≤ 0.5× BuildKit);
#   ctx-noop   the same, built again unchanged (goal: ≤ 0.1×);
#   ctx-one    the same after one file of the context changed (goal: ≤ 0.5×);
#   stages     four independent stages of `RUN sleep 1`, copied into a last one, --no-cache
#              (goal: rbuild ≤ 1.2 s wall; rbuild runs with -j 4, buildah with --jobs 4,
#              BuildKit runs every ready step at once anyway);
#   export     `RUN head -c 536870912 /dev/urandom > /big`, --no-cache: a 512 MiB layer to
#              make and store (goal: ≤ 0.5×).
#
# Every tool builds into its default output, its own image store: rbuild's store under a
# temporary --root (layers gzip-compressed), Docker's image store for BuildKit's docker driver
# (layers kept uncompressed), buildah's containers-storage under a temporary --root (the same).
#
# The base of every workload is `FROM busybox`: busybox:latest built by rbuild from
# scripts/busybox-context.sh (Debian's busybox-static; no internet needed) and loaded into the
# other two (`rbuild save --format docker busybox:latest | docker load`; `buildah pull
# docker-archive:…`).
#
# Cold means no cache of any kind: each cold round builds a fresh copy of the context (a new
# directory, so BuildKit cannot reuse the copy of the context it keeps from an earlier build
# and transfers every file); rbuild builds it into a fresh --root holding only busybox (loaded
# before the clock starts); BuildKit and buildah build it with --no-cache. The other workloads
# use one warm store per tool. rbuild keeps its default -j (the CPU count) except for the stages.
#
# Nothing is deleted until the end: on ext4 without a journal (this project's VM), creating a
# file skips over every inode of its block group deleted in the last minute, and a COPY of
# 10,000 files right after an `rm -rf` of another 10,000 nearby took 3-4 s instead of 0.7-1 s.
# buildah deletes each step's working container, so it runs after the other two, not between
# them. For the same reason, leave a minute between two runs of this script (its cleanup
# deletes a lot).
#
# BuildKit: `DOCKER_BUILDKIT=1 /usr/bin/docker build --network=host` (Debian's docker.io CLI; a
# newer CLI without the buildx plugin refuses DOCKER_BUILDKIT=1). When no daemon answers, the
# script starts `dockerd --iptables=false --bridge=none` and stops it at exit. Without a daemon
# or buildah their columns show "-". Images the script made are removed at exit, a
# busybox:latest that was there before gets its name back, and the build cache is pruned
# (`docker builder prune -af`).
#
#   scripts/bench-build.sh                 # RUNS=3 for cold and export, QUICK_RUNS=5 for the rest
#   RUNS=1 QUICK_RUNS=1 scripts/bench-build.sh
#   BENCH_TOOLS="rbuild buildkit" scripts/bench-build.sh   # leave buildah out
#   BENCH_KEEP=1 scripts/bench-build.sh    # keep the work directory (build logs in logs/)
#
# Everything is under a temporary directory ($TMPDIR), removed at exit; `sync` runs before every
# timed build. Exits 0 whatever the figures: performance is reported, never asserted
# (DESIGN.md, Testing); a build that fails is shown and counts as "-".
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

RUNS=${RUNS:-3}
QUICK_RUNS=${QUICK_RUNS:-5}
TOOLS_WANTED=${BENCH_TOOLS:-rbuild buildkit buildah}
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)

echo "+ cargo build --release -p rbuild" >&2
cargo build --release -q -p rbuild
RBUILD=$(realpath "${CARGO_TARGET_DIR:-target}/release/rbuild")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbuild-bench-build.XXXXXX")
LOGS=$WORK/logs
SCRIPT=bench-build.sh
# shellcheck source=scripts/bench-lib.sh
source "$REPO/scripts/bench-lib.sh"
mkdir -p "$LOGS"

# ---- cleanup ----
BUSYBOX_BEFORE=     # the busybox:latest image ID in Docker before the script loaded its own
BUSYBOX_LOADED=     # the ID of the one loaded
BUILDAH=()
cleanup() {
    set +e
    if [[ -n $BUSYBOX_LOADED ]] && docker_up; then
        local ids
        # Every image BuildKit wrote: the builds' --iidfile files.
        # (An iidfile has no final newline.)
        mapfile -t ids < <(awk 1 "$LOGS"/*.iid 2>/dev/null | sort -u)
        ((${#ids[@]})) && "$DOCKER" rmi -f "${ids[@]}" >/dev/null 2>&1
        if [[ -n $BUSYBOX_BEFORE && $BUSYBOX_BEFORE != "$BUSYBOX_LOADED" ]]; then
            "$DOCKER" tag "$BUSYBOX_BEFORE" busybox:latest
            "$DOCKER" rmi "$BUSYBOX_LOADED" >/dev/null 2>&1
        elif [[ -z $BUSYBOX_BEFORE ]]; then
            "$DOCKER" rmi busybox:latest >/dev/null 2>&1
        fi
        "$DOCKER" builder prune -af >/dev/null 2>&1
    fi
    if ((${#BUILDAH[@]})); then
        "${BUILDAH[@]}" rm -a >/dev/null 2>&1
        "${BUILDAH[@]}" rmi -af >/dev/null 2>&1
        # containers-storage may leave its overlay home mounted.
        mount | awk -v w="$WORK/" 'index($3, w) == 1 { print $3 }' | sort -r | xargs -r umount -l
    fi
    stop_dockerd
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench-build.sh: work files kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# ---- the tools ----
TOOLS=()
for t in $TOOLS_WANTED; do
    case $t in
        rbuild) TOOLS+=(rbuild) ;;
        buildkit)
            ensure_dockerd || continue
            TOOLS+=(buildkit)
            ;;
        buildah)
            if ! command -v buildah >/dev/null; then
                echo "bench-build.sh: buildah is not installed (apt-get install buildah); left out" >&2
                continue
            fi
            BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run"
                --storage-driver overlay)
            TOOLS+=(buildah)
            ;;
        *) echo "bench-build.sh: unknown tool $t in BENCH_TOOLS" >&2; exit 2 ;;
    esac
done
have() { [[ " ${TOOLS[*]} " == *" $1 "* ]]; }

# ---- the base: busybox:latest, built by rbuild, loaded into the others ----
echo "+ busybox:latest: built by rbuild, loaded into the other tools" >&2
scripts/busybox-context.sh "$WORK/busybox-context"
ROOT=$WORK/rbuild-root
"$RBUILD" --root "$ROOT" build --progress=quiet -t busybox:latest "$WORK/busybox-context" >"$LOGS/base" 2>&1 ||
    { cat "$LOGS/base" >&2; exit 1; }
"$RBUILD" --root "$ROOT" save -o "$WORK/busybox.oci.tar" busybox:latest
"$RBUILD" --root "$ROOT" save --format docker -o "$WORK/busybox.docker.tar" busybox:latest
if have buildkit; then
    BUSYBOX_BEFORE=$("$DOCKER" image inspect -f '{{.Id}}' busybox:latest 2>/dev/null || true)
    "$DOCKER" load -q -i "$WORK/busybox.docker.tar" >/dev/null
    BUSYBOX_LOADED=$("$DOCKER" image inspect -f '{{.Id}}' busybox:latest)
fi
if have buildah; then
    "${BUILDAH[@]}" pull -q "docker-archive:$WORK/busybox.docker.tar" >"$LOGS/buildah-base" 2>&1 ||
        { cat "$LOGS/buildah-base" >&2; exit 1; }
fi

# ---- the workloads' contexts ----
echo "+ generating the contexts" >&2
CTX=$WORK/ctx10k
python3 - "$CTX" <<'PY'
import os, random, sys
base = sys.argv[1]
rng = random.Random(10000)
for d in range(100):
    os.makedirs(f"{base}/d{d:02}")
    for f in range(100):
        line = f"directory {d} file {f} "
        with open(f"{base}/d{d:02}/f{f:02}.txt", "w") as out:
            out.write((line * 40)[: rng.randint(200, 500)] + "\n")
PY
printf 'FROM busybox\nCOPY . /src\nRUN ls -R /src | wc -l > /count\n' >"$CTX/Dockerfile"
CHANGED=$CTX/d42/f42.txt

STAGES=$WORK/stages
mkdir -p "$STAGES"
{
    for s in a b c d; do
        printf 'FROM busybox AS %s\nRUN sleep 1 && echo %s > /%s\n' "$s" "$s" "$s"
    done
    echo "FROM busybox"
    for s in a b c d; do echo "COPY --from=$s /$s /$s"; done
} >"$STAGES/Dockerfile"

BIG=$WORK/big
mkdir -p "$BIG"
printf 'FROM busybox\nRUN head -c 536870912 /dev/urandom > /big\n' >"$BIG/Dockerfile"

# ---- running and timing ----
# build TOOL WORKLOAD LOG CONTEXT [extra args]: one build into the tool's store.
build() {
    local tool=$1 name=rbuild-bench/$2:latest log=$3 ctx=$4
    shift 4
    case $tool in
        rbuild)
            "$RBUILD" --root "${RB_ROOT:-$ROOT}" build --progress=plain "$@" -t "$name" "$ctx" >"$log" 2>&1 ;;
        buildkit)
            DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network=host --iidfile "$log.iid" \
                "$@" -t "$name" "$ctx" >"$log" 2>&1 ;;
        buildah)
            "${BUILDAH[@]}" build --layers --network host "$@" -t "$name" "$ctx" >"$log" 2>&1 ;;
    esac
}

# timed TOOL WORKLOAD RUN CONTEXT [extra args]: syncs, builds, prints the seconds ("-" when the
# build failed, its log's end on stderr).
timed() {
    local tool=$1 workload=$2 run=$3 start end
    local log=$LOGS/$workload-$tool-$run
    sync
    start=$(date +%s.%N)
    if ! build "$tool" "$workload" "$log" "${@:4}"; then
        echo "bench-build.sh: $tool failed on $workload (run $run):" >&2
        tail -n 8 "$log" | sed 's/^/    /' >&2
        echo -
        return
    fi
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

declare -A T   # T[workload,tool] = the runs' seconds, space-separated
record() { # workload tool seconds
    T[$1,$2]="${T[$1,$2]:-}${T[$1,$2]:+ }$3"
    printf '  %-9s %-9s %s s\n' "$1" "$2" "$3" >&2
}

# Untimed first build of a workload with every tool of the pass (the warm stores for no-op and
# one-file).
warm() { # workload context [args]
    local tool
    for tool in "${PASS[@]}"; do
        build "$tool" "$1" "$LOGS/$1-$tool-warm" "${@:2}" || {
            echo "bench-build.sh: $tool failed to build $1:" >&2
            tail -n 8 "$LOGS/$1-$tool-warm" | sed 's/^/    /' >&2
        }
    done
}

# bench_pass TOOL...: every workload, the tools alternating run by run.
bench_pass() {
    PASS=("$@")
    local r tool cold_ctx fresh args
    echo "+ pass: ${PASS[*]}" >&2

    # 1. Cold: a fresh copy of the context; a fresh rbuild root, --no-cache for the others.
    echo "+ ctx-cold: $RUNS runs each" >&2
    for ((r = 1; r <= RUNS; r++)); do
        cold_ctx=$WORK/ctx10k-cold-$1-$r
        cp -a "$CTX" "$cold_ctx"
        for tool in "${PASS[@]}"; do
            case $tool in
                rbuild)
                    fresh=$WORK/rbuild-cold-$r
                    "$RBUILD" --root "$fresh" load -i "$WORK/busybox.oci.tar" >/dev/null
                    record ctx-cold rbuild "$(RB_ROOT=$fresh timed rbuild ctx-cold "$r" "$cold_ctx")" ;;
                *)
                    record ctx-cold "$tool" "$(timed "$tool" ctx-cold "$r" "$cold_ctx" --no-cache)" ;;
            esac
        done
    done

    # 2. No-op: built once (untimed), then again unchanged.
    echo "+ ctx-noop: $QUICK_RUNS runs each" >&2
    warm ctx "$CTX"
    for ((r = 1; r <= QUICK_RUNS; r++)); do
        for tool in "${PASS[@]}"; do
            record ctx-noop "$tool" "$(timed "$tool" ctx "noop-$r" "$CTX")"
        done
    done

    # 3. One file changed before each round: every tool sees exactly that change since its
    # last build.
    echo "+ ctx-one: $QUICK_RUNS runs each" >&2
    for ((r = 1; r <= QUICK_RUNS; r++)); do
        echo "changed in round $r of the $1 pass: $RANDOM$RANDOM" >>"$CHANGED"
        for tool in "${PASS[@]}"; do
            record ctx-one "$tool" "$(timed "$tool" ctx "one-$r" "$CTX")"
        done
    done

    # 4. Four independent `sleep 1` stages.
    echo "+ stages: $QUICK_RUNS runs each (rbuild -j 4, buildah --jobs 4)" >&2
    for ((r = 1; r <= QUICK_RUNS; r++)); do
        for tool in "${PASS[@]}"; do
            case $tool in
                rbuild) args=(--no-cache -j 4) ;;
                buildah) args=(--no-cache --jobs 4) ;;
                *) args=(--no-cache) ;;
            esac
            record stages "$tool" "$(timed "$tool" stages "$r" "$STAGES" "${args[@]}")"
        done
    done

    # 5. A 512 MiB layer.
    echo "+ export: $RUNS runs each" >&2
    for ((r = 1; r <= RUNS; r++)); do
        for tool in "${PASS[@]}"; do
            record export "$tool" "$(timed "$tool" export "$r" "$BIG" --no-cache)"
        done
    done
}

# rbuild and BuildKit alternate; buildah gets a pass of its own afterwards, as it deletes each
# step's working container (10,000 files for the COPY) and would slow the next tool's file
# creation (see above).
first=()
for tool in rbuild buildkit; do have "$tool" && first+=("$tool"); done
((${#first[@]})) && bench_pass "${first[@]}"
have buildah && bench_pass buildah

# ---- the figures ----
med() { # workload tool
    have "$2" || { echo -; return; }
    # shellcheck disable=SC2086
    median ${T[$1,$2]:--}
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "build benchmark, $(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)"
echo "rbuild $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (release, default -j $(nproc); -j 4 for stages)"
if have buildkit; then
    echo "BuildKit: Docker $("$DOCKER" version -f '{{.Server.Version}}') docker driver, $("$DOCKER" info -f '{{.Driver}}') image store${DOCKERD_PID:+ (dockerd started by this script)}"
fi
have buildah && echo "buildah: $(buildah --version | awk '{ print $3 }') (--layers, overlay storage; --jobs 4 for stages)"
order="rbuild and BuildKit alternating"
have buildah && order="$order, buildah in a pass of its own after them"
echo "medians of $RUNS runs (cold, export) and $QUICK_RUNS runs (no-op, one file, stages); $order"
echo
printf '%-28s %10s %10s %10s %9s %9s\n' workload rbuild BuildKit buildah rb/BK rb/buildah
declare -A LABEL=(
    [ctx-cold]="10k-file context, cold"
    [ctx-noop]="10k-file context, no-op"
    [ctx-one]="10k-file context, 1 file"
    [stages]="4 stages of sleep 1"
    [export]="512 MiB layer (export)"
)
WORKLOADS=(ctx-cold ctx-noop ctx-one stages export)
for w in "${WORKLOADS[@]}"; do
    a=$(med "$w" rbuild) b=$(med "$w" buildkit) c=$(med "$w" buildah)
    printf '%-28s %10s %10s %10s %9s %9s\n' "${LABEL[$w]}" "$(secs "$a")" "$(secs "$b")" "$(secs "$c")" \
        "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
done
echo
echo "runs (s):"
for w in "${WORKLOADS[@]}"; do
    for tool in "${TOOLS[@]}"; do
        printf '  %-10s %-9s %s\n' "$w" "$tool" "${T[$w,$tool]:--}"
    done
done
echo
echo "goals:"
goal_ratio() { # workload limit text
    local r
    r=$(ratio "$(med "$1" rbuild)" "$(med "$1" buildkit)")
    if [[ $r == - ]]; then
        printf '  %-44s n/a (no BuildKit figure)\n' "$3 ≤ $2× BuildKit"
    else
        printf '  %-44s %s (%s×)\n' "$3 ≤ $2× BuildKit" \
            "$(awk -v r="$r" -v g="$2" 'BEGIN { print (r <= g) ? "met" : "MISSED" }')" "$r"
    fi
}
goal_ratio ctx-noop 0.1 "no-op rebuild"
goal_ratio ctx-one 0.5 "one-file change"
goal_ratio ctx-cold 0.5 "cold 10k-file context"
s=$(med stages rbuild)
if [[ $s == - ]]; then
    printf '  %-44s n/a\n' "four sleep-1 stages ≤ 1.2 s wall"
else
    printf '  %-44s %s (%.3f s)\n' "four sleep-1 stages ≤ 1.2 s wall" \
        "$(awk -v s="$s" 'BEGIN { print (s <= 1.2) ? "met" : "MISSED" }')" "$s"
fi
goal_ratio export 0.5 "512 MiB export"
