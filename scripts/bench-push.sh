#!/usr/bin/env bash
# Push benchmark: `rbuild push` of a 1 GiB image of random bytes (4 layers: incompressible, so
# the layers are ~1 GiB on the wire) to a local `docker-registry` on 127.0.0.1 (plain HTTP),
# beside `skopeo copy` of the same image from an OCI layout. Each timed push into an empty
# repository gets a freshly started registry with empty storage, so nothing is already there
# and nothing is mounted. Also timed: a re-push to the same repository (HEAD checks only) and
# a push to a second repository of the same registry (cross-repository mounts), for both
# tools. Prints the median of RUNS runs, MiB/s, peak RSS (the largest of the runs, from
# /usr/bin/time: a layer is streamed from its file, so RSS should stay far below the layer size)
# and the requests each tool sent (from the registry's access log).
#
#   scripts/bench-push.sh                          # 1024 MiB in 4 layers, 3 runs each
#   PUSH_MIB=256 PUSH_LAYERS=8 RUNS=5 scripts/bench-push.sh
#
# The image is built once with rbuild into a temporary --root (its build time is printed, not
# part of the comparison); everything is under a temporary directory ($TMPDIR), removed at exit,
# as is the registry. Needs docker-registry (Debian: docker-registry) and skopeo.
# Exits 0 whatever the figures: performance is reported, never asserted (DESIGN.md, Testing).
set -euo pipefail
cd "$(dirname "$0")/.."

PUSH_MIB=${PUSH_MIB:-1024}
PUSH_LAYERS=${PUSH_LAYERS:-4}
RUNS=${RUNS:-3}
MIB=$((1024 * 1024))
LAYER_MIB=$((PUSH_MIB / PUSH_LAYERS))
if ((PUSH_LAYERS < 1 || LAYER_MIB < 1)); then
    echo "bench-push.sh: PUSH_MIB=$PUSH_MIB in PUSH_LAYERS=$PUSH_LAYERS: < 1 MiB a layer" >&2
    exit 2
fi

# Tools: installed with apt-get when missing and run as root; else a hint.
need() { # command package
    command -v "$1" >/dev/null && return
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        echo "+ apt-get install $2" >&2
        local install=(apt-get install -y -qq --no-install-recommends "$2")
        "${install[@]}" >/dev/null || { apt-get update -qq && "${install[@]}" >/dev/null; }
    fi
    if ! command -v "$1" >/dev/null; then
        echo "bench-push.sh: needs $1 (apt-get install $2)" >&2
        exit 1
    fi
}
need docker-registry docker-registry
need skopeo skopeo
need curl curl
need python3 python3
HAVE_TIME=true
if [[ ! -x /usr/bin/time ]]; then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        need /usr/bin/time time
    else
        HAVE_TIME=false
        echo "bench-push.sh: no /usr/bin/time (apt-get install time): peak RSS is not measured" >&2
    fi
fi

echo "+ cargo build --release -p rbuild" >&2
cargo build --release -q -p rbuild
RBUILD=$(realpath "${CARGO_TARGET_DIR:-target}/release/rbuild")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbuild-bench-push.XXXXXX")
ROOT=$WORK/root
LAYOUT=$WORK/layout
LOGS=$WORK/logs
mkdir -p "$LOGS"

REGISTRY_PID=
stop_registry() {
    if [[ -n $REGISTRY_PID ]]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
        REGISTRY_PID=
    fi
}
cleanup() {
    stop_registry
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port, kept for every registry of the run (the image names carry it).
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: $HOST
EOF

# Starts the registry with empty storage (stopping the one running); its access log, which the
# request counts read, is $WORK/registry.log. The storage is on disk, under $TMPDIR.
start_registry() {
    stop_registry
    rm -rf "$WORK/registry"
    mkdir -p "$WORK/registry"
    # The last run's gigabyte is written back now, not during the next timed run.
    sync
    docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
    REGISTRY_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null "http://$HOST/v2/" && return
        kill -0 "$REGISTRY_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-push.sh: docker-registry did not come up on $HOST:" >&2
    tail -n 20 "$WORK/registry.log" >&2
    exit 1
}

# timed LOG COMMAND...: runs it with its output in LOG; prints "<elapsed s> <peak RSS KiB>"
# (RSS "-" without /usr/bin/time). A failed command is an error, not a figure: its log is shown.
timed() {
    local log=$1 start end rss=-
    shift
    start=$(date +%s.%N)
    if $HAVE_TIME; then
        if ! /usr/bin/time -f '%M' -o "$log.rss" "$@" >"$log" 2>&1; then
            echo "bench-push.sh: failed: $*" >&2
            tail -n 30 "$log" >&2
            exit 1
        fi
        rss=$(tail -n 1 "$log.rss")
    elif ! "$@" >"$log" 2>&1; then
        echo "bench-push.sh: failed: $*" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" -v r="$rss" 'BEGIN { printf "%.3f %s\n", b - a, r }'
}

median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

maximum() { # numbers... ("-" when there are none)
    printf '%s\n' "$@" | awk '$1 != "-" && ($1 > m || m == "") { m = $1 } END {
        print (m == "") ? "-" : m }'
}

# Requests the client with user agent $1 sent, by kind, from the running registry's access log.
requests() {
    awk -v ua="\"$1/" 'index($0, ua) && match($0, /"[A-Z]+ \/v2\/[^ ]*/) {
        split(substr($0, RSTART + 1, RLENGTH - 1), r, " ")
        kind = r[1]
        if (r[2] == "/v2/") kind = kind " /v2/"
        else if (r[2] ~ /mount=/) kind = kind " mount"
        else if (r[2] ~ /\/blobs\/uploads\//) kind = kind " upload"
        else if (r[2] ~ /\/blobs\//) kind = kind " blob"
        else if (r[2] ~ /\/manifests\//) kind = kind " manifest"
        n[kind]++; total++
    } END {
        split("GET /v2/,HEAD blob,POST mount,POST upload,PATCH upload,PUT upload," \
            "HEAD manifest,GET manifest,PUT manifest", order, ",")
        out = (total + 0) " requests:"
        for (i = 1; i in order; i++) {
            if (n[order[i]]) out = out " " n[order[i]] " " order[i] ","
            n[order[i]] = 0
        }
        for (k in n) if (n[k]) out = out " " n[k] " " k ","
        sub(/,$/, "", out)
        print out
    }' "$WORK/registry.log"
}

manifest_digest() { # repository
    curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$HOST/v2/$1/manifests/latest" |
        awk -F': ' 'tolower($1) == "docker-content-digest" { sub(/\r$/, "", $2); print $2 }'
}

# 1. The image: PUSH_LAYERS files of random bytes, one COPY each, built once.
echo "+ generating $PUSH_MIB MiB of random bytes in $PUSH_LAYERS files" >&2
mkdir -p "$WORK/context"
{
    echo "FROM scratch"
    for ((i = 1; i <= PUSH_LAYERS; i++)); do
        head -c "$((LAYER_MIB * MIB))" /dev/urandom >"$WORK/context/layer-$i"
        echo "COPY layer-$i /layer-$i"
    done
} >"$WORK/context/Dockerfile"

NAME=$HOST/rbuild-bench:latest
tags=(-t "$NAME")
for ((i = 1; i <= RUNS; i++)); do
    tags+=(-t "$HOST/rbuild-mount-$i:latest")
done
echo "+ rbuild build ($((${#tags[@]} / 2)) names on $HOST)" >&2
read -r BUILD_SEC _ < <(timed "$LOGS/build" \
    "$RBUILD" --root "$ROOT" build "${tags[@]}" "$WORK/context")
rm -rf "$WORK/context"

echo "+ rbuild save, untarred for skopeo" >&2
"$RBUILD" --root "$ROOT" save -o "$WORK/image.tar" "$NAME"
mkdir -p "$LAYOUT"
tar -C "$LAYOUT" -xf "$WORK/image.tar"
rm -f "$WORK/image.tar"
# Pushed bytes: every blob of the image (layers, config, manifest), the same in the store.
BYTES=$(find "$LAYOUT/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
BLOBS=$(find "$LAYOUT/blobs" -type f | wc -l)
# Both tools read from the page cache.
cat "$ROOT"/content/blobs/sha256/* "$LAYOUT"/blobs/sha256/* >/dev/null

SKOPEO=(skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT")

# 2. Into an empty registry, alternating the tools run by run. Every registry listens on the same
# port, so each tool pushes to one repository name throughout: rbuild's cache.db (and skopeo's
# blob-info cache) then only know the blobs in the repository being pushed to, and neither
# tries a cross-repository mount that the fresh registry would refuse.
declare -a RB_SEC RB_RSS SK_SEC SK_RSS
for ((i = 1; i <= RUNS; i++)); do
    echo "+ run $i/$RUNS: rbuild push, skopeo copy (each into a fresh registry)" >&2
    start_registry
    read -r RB_SEC[i] RB_RSS[i] < <(timed "$LOGS/rbuild-$i" "$RBUILD" --root "$ROOT" push "$NAME")
    if ((i == 1)); then
        RB_REQUESTS=$(requests rbuild)
        RB_DIGEST=$(manifest_digest rbuild-bench)
    fi
    start_registry
    read -r SK_SEC[i] SK_RSS[i] < <(timed "$LOGS/skopeo-$i" \
        "${SKOPEO[@]}" "docker://$HOST/skopeo-bench:latest")
    if ((i == 1)); then
        SK_REQUESTS=$(requests skopeo)
        SK_DIGEST=$(manifest_digest skopeo-bench)
    fi
done

# 3. Everything already there (HEAD checks only), then a second repository of the same registry
# (cross-repository mounts), on one registry holding both pushes.
echo "+ re-push and mount runs" >&2
start_registry
timed "$LOGS/rbuild-setup" "$RBUILD" --root "$ROOT" push "$NAME" >/dev/null
timed "$LOGS/skopeo-setup" "${SKOPEO[@]}" "docker://$HOST/skopeo-bench:latest" >/dev/null
declare -a RB_RE RB_MOUNT SK_RE SK_MOUNT
for ((i = 1; i <= RUNS; i++)); do
    read -r RB_RE[i] _ < <(timed "$LOGS/rbuild-re-$i" "$RBUILD" --root "$ROOT" push "$NAME")
    read -r SK_RE[i] _ < <(timed "$LOGS/skopeo-re-$i" \
        "${SKOPEO[@]}" "docker://$HOST/skopeo-bench:latest")
done
: >"$WORK/registry.log"
for ((i = 1; i <= RUNS; i++)); do
    read -r RB_MOUNT[i] _ < <(timed "$LOGS/rbuild-mount-$i" \
        "$RBUILD" --root "$ROOT" push "$HOST/rbuild-mount-$i:latest")
    if ((i == 1)); then
        RB_MOUNT_REQUESTS=$(requests rbuild)
        : >"$WORK/registry.log"
    fi
    read -r SK_MOUNT[i] _ < <(timed "$LOGS/skopeo-mount-$i" \
        "${SKOPEO[@]}" "docker://$HOST/skopeo-mount-$i:latest")
    if ((i == 1)); then
        SK_MOUNT_REQUESTS=$(requests skopeo)
    fi
done
MOUNTED=$(grep -c 'mounted from' "$LOGS/rbuild-mount-1" || true)
stop_registry

# 4. The figures.
row() { # label seconds... (the runs; MiB/s and RSS only for uploads)
    local label=$1 mode=$2 rss=$3
    shift 3
    local med
    med=$(median "$@")
    awk -v l="$label" -v m="$med" -v b="$BYTES" -v mode="$mode" -v rss="$rss" -v runs="$*" 'BEGIN {
        rate = (mode == "upload") ? sprintf("%8.1f", b / 1048576 / (m > 0 ? m : 0.001)) : "       -"
        mem = (rss == "-") ? "        -" : sprintf("%5.1f MiB", rss / 1024)
        printf "  %-28s %8.3f s %s MiB/s %s   [%s]\n", l, m, rate, mem, runs }'
}

echo
printf 'image: %d MiB of random bytes in %d layers, %d bytes (%.1f MiB) in %d blobs; %d cores\n' \
    "$PUSH_MIB" "$PUSH_LAYERS" "$BYTES" "$(awk -v b="$BYTES" 'BEGIN { print b / 1048576 }')" \
    "$BLOBS" "$(nproc)"
printf 'build with rbuild (once, not compared): %.1f s\n' "$BUILD_SEC"
echo "registry: docker-registry $(docker-registry --version | awk '{ print $NF }') on $HOST; \
$(skopeo --version); rbuild --max-concurrent-uploads default (5)"
echo
printf '  %-28s %10s %14s %9s   %s\n' "median of $RUNS runs" time rate "peak RSS" "[runs, s]"
row "rbuild push, empty registry" upload "$(maximum "${RB_RSS[@]}")" "${RB_SEC[@]}"
row "skopeo copy, empty registry" upload "$(maximum "${SK_RSS[@]}")" "${SK_SEC[@]}"
row "rbuild re-push (all there)" other - "${RB_RE[@]}"
row "skopeo re-push (all there)" other - "${SK_RE[@]}"
row "rbuild push, mount from repo" other - "${RB_MOUNT[@]}"
row "skopeo copy, mount from repo" other - "${SK_MOUNT[@]}"
echo
awk -v a="$(median "${RB_SEC[@]}")" -v b="$(median "${SK_SEC[@]}")" 'BEGIN {
    printf "rbuild / skopeo time, empty registry: %.2f (below 1: rbuild is faster)\n", a / b }'
echo "requests, empty registry: rbuild $RB_REQUESTS"
echo "                          skopeo $SK_REQUESTS"
echo "requests, mount:          rbuild $RB_MOUNT_REQUESTS"
echo "                          skopeo $SK_MOUNT_REQUESTS"
echo "rbuild mount run 1: $MOUNTED of $((BLOBS - 1)) blobs (config, layers) reported 'mounted from'"
if [[ $RB_DIGEST == "$SK_DIGEST" ]]; then
    echo "manifest digest (both tools): $RB_DIGEST"
else
    echo "manifest digests DIFFER: rbuild $RB_DIGEST, skopeo $SK_DIGEST"
fi
