#!/usr/bin/env bash
# Multi-platform benchmark (issue 7): one rbuild build for linux/amd64 and linux/arm64 beside two
# single-platform BuildKit builds of the same Dockerfile (linux/amd64, then linux/arm64), the
# arm64 steps of both running through qemu-user-static and binfmt_misc; rbuild and BuildKit
# alternate run by run; prints each run, the medians and the ratio rbuild / BuildKit (the sum of
# its two builds, timed as one).
#
# The workload, every step --no-cache: FROM a busybox index for linux/amd64 and linux/arm64
# served by a docker-registry the script starts on a loopback port (Docker treats 127.0.0.0/8
# registries as insecure by default), then 4 RUN steps, each a shell arithmetic loop of
# MP_LOOPS iterations (≈1.3 s native, ≈14 s under qemu for 1,000,000 here) that writes MP_MIB
# MiB of random bytes. The base is built by rbuild from Debian's busybox-static (this machine's,
# amd64) and busybox-static:arm64 (from $RBUILD_TEST_ARM64_BUSYBOX, else the .deb in
# $RBUILD_TEST_DEBS that scripts/test.sh downloads, else `apt-get download` here, which needs
# the arm64 dpkg architecture): `FROM scratch`, `ARG TARGETARCH`, `COPY bin-$TARGETARCH /bin`
# (the binary and a link per applet), pushed for both platforms as one index.
#
# Each tool builds into its own store: rbuild into a temporary --root (an index over two
# images), BuildKit into Docker's image store (docker driver; one image per build). BuildKit is
# `DOCKER_BUILDKIT=1 /usr/bin/docker build --network=host`, as in scripts/bench-build.sh; when no
# daemon answers, the script starts `dockerd --iptables=false --bridge=none` and stops it at
# exit. Without a daemon the BuildKit column shows "-".
#
# binfmt: both tools need the qemu-aarch64 handler. When it is not registered, the script runs
# `rbuild setup-binfmt linux/arm64` (root), and stops if that fails.
#
#   scripts/bench-multiplatform.sh                   # RUNS=3
#   RUNS=1 MP_LOOPS=200000 scripts/bench-multiplatform.sh
#   BENCH_KEEP=1 scripts/bench-multiplatform.sh      # keep the work directory (logs in logs/)
#
# Everything is under a temporary directory ($TMPDIR), removed at exit; images BuildKit made are
# removed and its build cache pruned. Exits 0 whatever the figures: performance is reported,
# never asserted (DESIGN.md, Testing); a build that fails is shown and counts as "-".
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

RUNS=${RUNS:-3}
MP_LOOPS=${MP_LOOPS:-1000000}
MP_MIB=${MP_MIB:-4}
STEPS=4
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)

for tool in docker-registry curl python3 qemu-aarch64-static; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-multiplatform.sh: $tool is not installed (scripts/test.sh installs it)" >&2
        exit 1
    fi
done

echo "+ cargo build --release -p rbuild" >&2
cargo build --release -q -p rbuild
RBUILD=$(realpath "${CARGO_TARGET_DIR:-target}/release/rbuild")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbuild-bench-mp.XXXXXX")
LOGS=$WORK/logs
SCRIPT=bench-multiplatform.sh
# shellcheck source=scripts/bench-lib.sh
source "$REPO/scripts/bench-lib.sh"
mkdir -p "$LOGS"
ROOT=$WORK/rbuild-root

# ---- cleanup ----
REGISTRY_PID=
cleanup() {
    set +e
    if [[ -n $DOCKER ]] && docker_up; then
        local ids
        # Every image BuildKit wrote: the builds' --iidfile files (no final newline).
        mapfile -t ids < <(awk 1 "$LOGS"/*.iid 2>/dev/null | sort -u)
        ((${#ids[@]})) && "$DOCKER" rmi -f "${ids[@]}" >/dev/null 2>&1
        "$DOCKER" builder prune -af >/dev/null 2>&1
    fi
    stop_dockerd
    if [[ -n $REGISTRY_PID ]]; then
        kill "$REGISTRY_PID" 2>/dev/null
        wait "$REGISTRY_PID" 2>/dev/null
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench-multiplatform.sh: work files kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# ---- binfmt ----
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
    ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    echo "+ $RBUILD setup-binfmt linux/arm64" >&2
    if ! "$RBUILD" setup-binfmt linux/arm64; then
        echo "bench-multiplatform.sh: no qemu-aarch64 binfmt handler, and rbuild setup-binfmt failed" >&2
        exit 1
    fi
fi
echo "binfmt qemu-aarch64: $(grep -E '^(interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' ')" >&2

# ---- BuildKit ----
HAVE_BUILDKIT=false
if ensure_dockerd; then
    HAVE_BUILDKIT=true
fi

# ---- the registry ----
start_registry

# ---- the base: a busybox index for linux/amd64 and linux/arm64 ----
host_busybox() {
    local cand
    for cand in /bin/busybox /usr/bin/busybox; do
        if [[ -x $cand ]] && dpkg -L busybox-static 2>/dev/null | grep -qx "$cand"; then
            echo "$cand"
            return
        fi
    done
    echo "bench-multiplatform.sh: busybox-static is not installed" >&2
    exit 1
}
arm64_busybox() {
    if [[ -n ${RBUILD_TEST_ARM64_BUSYBOX:-} ]]; then
        echo "$RBUILD_TEST_ARM64_BUSYBOX"
        return
    fi
    local debs=${RBUILD_TEST_DEBS:-/var/cache/rbuild-test-debs} deb
    deb=$(compgen -G "$debs/busybox-static_*_arm64.deb" | head -n1 || true)
    if [[ -z $deb ]]; then
        if ! dpkg --print-foreign-architectures | grep -qx arm64; then
            echo "bench-multiplatform.sh: no busybox-static:arm64 .deb in $debs and arm64 is not a dpkg architecture (scripts/test.sh sets both up)" >&2
            exit 1
        fi
        mkdir -p "$WORK/debs"
        (cd "$WORK/debs" && apt-get download -qq busybox-static:arm64 >&2)
        deb=$(compgen -G "$WORK/debs/busybox-static_*_arm64.deb" | head -n1)
    fi
    dpkg-deb -x "$deb" "$WORK/arm64-deb"
    echo "$WORK/arm64-deb/bin/busybox"
}
if [[ $(uname -m) != x86_64 ]]; then
    echo "bench-multiplatform.sh: written for an x86_64 host (arm64 emulated)" >&2
    exit 1
fi
BASE_CTX=$WORK/base
AMD64_BB=$(host_busybox)
ARM64_BB=$(arm64_busybox)
for arch in amd64 arm64; do
    bin=$BASE_CTX/bin-$arch
    mkdir -p "$bin"
    if [[ $arch == amd64 ]]; then src=$AMD64_BB; else src=$ARM64_BB; fi
    install -m 0755 "$src" "$bin/busybox"
    # The same busybox version for both (Debian's 1.35): the host's applet list serves.
    for applet in $("$AMD64_BB" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$bin/$applet"
    done
done
printf 'FROM scratch\nARG TARGETARCH\nCOPY bin-$TARGETARCH /bin\n' >"$BASE_CTX/Dockerfile"
echo "+ rbuild: $REG/busybox:1 for linux/amd64,linux/arm64, pushed" >&2
"$RBUILD" --root "$ROOT" build --progress=plain --platform linux/amd64,linux/arm64 \
    -t "$REG/busybox:1" --push "$BASE_CTX" >"$LOGS/base" 2>&1 || { cat "$LOGS/base" >&2; exit 1; }

# ---- the workload ----
CTX=$WORK/ctx
mkdir -p "$CTX"
{
    echo "FROM $REG/busybox:1"
    for ((s = 1; s <= STEPS; s++)); do
        echo "RUN i=0; s=$s; while [ \$i -lt $MP_LOOPS ]; do s=\$(( (s * 31 + i) % 1000003 )); i=\$((i + 1)); done;" \
            "echo \"\$s \$(uname -m)\" > /step$s; head -c $((MP_MIB << 20)) /dev/urandom > /data$s"
    done
} >"$CTX/Dockerfile"
echo "+ the Dockerfile:" >&2
sed 's/^/    /' "$CTX/Dockerfile" >&2

# ---- running and timing ----
# timed LOG CMD...: syncs, runs CMD (output to LOG), prints the seconds ("-" when it failed,
# the log's end on stderr).
timed() {
    local log=$1 start end
    shift
    sync
    start=$(date +%s.%N)
    if ! "$@" >"$log" 2>&1; then
        echo "bench-multiplatform.sh: failed ($*):" >&2
        tail -n 8 "$log" | sed 's/^/    /' >&2
        echo -
        return
    fi
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}
rbuild_two() { # run
    "$RBUILD" --root "$ROOT" build --progress=plain --no-cache \
        --platform linux/amd64,linux/arm64 -t "rbuild-bench/mp:$1" "$CTX"
}
buildkit_one() { # run arch
    DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network=host --no-cache \
        --platform "linux/$2" --iidfile "$LOGS/buildkit-$1-$2.iid" -t "rbuild-bench/mp:$1-$2" "$CTX"
}

declare -A T # T[what] = the runs' seconds, space-separated
record() {   # what seconds
    T[$1]="${T[$1]:-}${T[$1]:+ }$2"
    printf '  %-16s %s s\n' "$1" "$2" >&2
}

# Untimed: BuildKit pulls the base once (both platforms), as rbuild has it in its store.
if $HAVE_BUILDKIT; then
    echo "+ BuildKit: warm-up builds (untimed)" >&2
    for arch in amd64 arm64; do
        buildkit_one warm "$arch" >"$LOGS/buildkit-warm-$arch" 2>&1 ||
            { tail -n 8 "$LOGS/buildkit-warm-$arch" >&2; HAVE_BUILDKIT=false; }
    done
fi

echo "+ $RUNS runs each, alternating" >&2
for ((r = 1; r <= RUNS; r++)); do
    record rbuild-2plat "$(timed "$LOGS/rbuild-$r" rbuild_two "$r")"
    if $HAVE_BUILDKIT; then
        a=$(timed "$LOGS/buildkit-$r-amd64" buildkit_one "$r" amd64)
        b=$(timed "$LOGS/buildkit-$r-arm64" buildkit_one "$r" arm64)
        record buildkit-amd64 "$a"
        record buildkit-arm64 "$b"
        record buildkit-both "$(awk -v a="$a" -v b="$b" 'BEGIN {
            if (a == "-" || b == "-") print "-"; else printf "%.3f\n", a + b }')"
    fi
done

# A check that the figures are of builds that did what they say: the steps' outputs of rbuild's
# two platforms (the same build again, cached, into a local directory split per platform) and
# the architecture of BuildKit's images.
out=$WORK/check
"$RBUILD" --root "$ROOT" build --progress=quiet --platform linux/amd64,linux/arm64 \
    -o "type=local,dest=$out" "$CTX" >/dev/null 2>"$LOGS/check" || { cat "$LOGS/check" >&2; exit 1; }
for arch in amd64 arm64; do
    echo "rbuild linux/$arch /step$STEPS: $(cat "$out/linux_$arch/step$STEPS")" >&2
    if $HAVE_BUILDKIT && [[ -s $LOGS/buildkit-$RUNS-$arch.iid ]]; then
        echo "BuildKit linux/$arch image: $("$DOCKER" image inspect -f '{{.Os}}/{{.Architecture}}' \
            "$(cat "$LOGS/buildkit-$RUNS-$arch.iid")")" >&2
    fi
done

# ---- the figures ----
med() { # shellcheck disable=SC2086
    median ${T[$1]:--}
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "multi-platform benchmark, $(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)"
echo "rbuild $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (release, default -j $(nproc)); qemu-user-static $(dpkg-query -W -f='${Version}' qemu-user-static 2>/dev/null || echo '?')"
if $HAVE_BUILDKIT; then
    echo "BuildKit: Docker $("$DOCKER" version -f '{{.Server.Version}}') docker driver${DOCKERD_PID:+ (dockerd started by this script)}"
fi
echo "workload: FROM a loopback-registry busybox index, $STEPS RUN steps of $MP_LOOPS shell-loop iterations + $MP_MIB MiB written, --no-cache"
echo "medians of $RUNS runs, rbuild and BuildKit alternating"
echo
rb=$(med rbuild-2plat) bk=$(med buildkit-both)
printf '%-48s %10s\n' "rbuild, linux/amd64,linux/arm64 (one build)" "$(secs "$rb")"
printf '%-48s %10s\n' "BuildKit, linux/amd64" "$(secs "$(med buildkit-amd64)")"
printf '%-48s %10s\n' "BuildKit, linux/arm64" "$(secs "$(med buildkit-arm64)")"
printf '%-48s %10s\n' "BuildKit, both (the two builds in a row)" "$(secs "$bk")"
printf '%-48s %10s\n' "ratio rbuild / BuildKit both" "$(ratio "$rb" "$bk")"
echo
echo "runs (s):"
for what in rbuild-2plat buildkit-amd64 buildkit-arm64 buildkit-both; do
    printf '  %-16s %s\n' "$what" "${T[$what]:--}"
done
