#!/usr/bin/env bash
# Shared build cache benchmark ("two CI machines, one registry"): machine A builds cold and
# exports its steps with `--cache-to type=registry,ref=…:cache,mode=max`; machine B, with a
# fresh state root, builds the same context with `--cache-from type=registry,ref=…:cache`.
# rbuild imports lazily (the cache manifest and its small config up front, a layer only when a
# later step needs its files or the final image carries it), so B should download the final
# image's few small layers, not the build stage's big ones. Prints each run, the medians, B's
# bytes against the cache's, and the ratio B / A cold.
#
# The workload, FROM a busybox base (scripts/busybox-context.sh, built and pushed by rbuild to a
# docker-registry the script starts on a loopback port; 127.0.0.0/8 registries are plain HTTP):
#
#   FROM base AS build: COPY input.txt; 3 RUN steps each writing CACHE_MIB MiB of random bytes
#                       (the first a big intermediate file the next two read; none of it is in
#                       the final image), the last one writing a small /out/result;
#   FROM base:          COPY --from=build /out/result; COPY config.txt.
#
# Each run uses its own repository (REG/appN) and fresh roots (--root), and measures:
#
#   1. A cold: `build --cache-to type=registry,ref=REG/appN:cache,mode=max -t REG/appN:1
#      --push` on a fresh root: the wall time, and the export's own time (rbuild's line
#      `exported cache to …: N steps, M layers (SIZE) in X.Ys`);
#   2. B: a fresh root, `--cache-from type=registry,ref=REG/appN:cache -t REG/appN:b --push`:
#      the wall time, the steps CACHED (plain progress), the layers fetched (rbuild's line
#      `fetched N layers (SIZE) from the imported cache`) and the bytes of the registry's GET
#      responses (its access log): of the cache's layer blobs, of every blob (the base too),
#      of everything; beside the cache manifest's layers (all, and those the final image
#      carries), read with curl. B's image must have A's manifest digest;
#   3. B after config.txt (used by the final stage only) changed: a fresh root again, the wall
#      time and the steps cached (config.txt is put back afterwards);
#   4. A re-export: A builds again on its own root (every step cached locally) with the same
#      --cache-to and push: the export's time (rbuild's line, 0.1 s resolution), the whole
#      build's wall time, and the blob HEADs the export sent (registry log, after the image's
#      manifest PUT): blobs the previous cache manifest lists are known to be there.
#
#   scripts/bench-cache.sh                     # RUNS=3, CACHE_MIB=64
#   RUNS=1 CACHE_MIB=16 scripts/bench-cache.sh
#   BENCH_KEEP=1 scripts/bench-cache.sh        # keep the work directory (logs in logs/)
#
# Everything is under a temporary directory ($TMPDIR), removed at exit, the registry stopped;
# nothing is deleted before the end (see scripts/bench-build.sh on ext4 deletes); `sync` runs
# before every timed build. Exits 0 whatever the figures: performance is reported, never
# asserted (DESIGN.md, Testing); a build that fails is shown and counts as "-".
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

RUNS=${RUNS:-3}
CACHE_MIB=${CACHE_MIB:-64}

for tool in docker-registry curl python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-cache.sh: $tool is not installed (scripts/test.sh installs it)" >&2
        exit 1
    fi
done

echo "+ cargo build --release -p rbuild" >&2
cargo build --release -q -p rbuild
RBUILD=$(realpath "${CARGO_TARGET_DIR:-target}/release/rbuild")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbuild-bench-cache.XXXXXX")
LOGS=$WORK/logs
# shellcheck source=scripts/bench-lib.sh
source "$REPO/scripts/bench-lib.sh"
mkdir -p "$LOGS"

# ---- cleanup ----
REGISTRY_PID=
cleanup() {
    set +e
    if [[ -n $REGISTRY_PID ]]; then
        kill "$REGISTRY_PID" 2>/dev/null
        wait "$REGISTRY_PID" 2>/dev/null
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench-cache.sh: work files kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the registry (its access log, one line per request, is $LOGS/registry) ----
start_registry

# ---- the base: busybox, pushed to the registry ----
echo "+ rbuild: $REG/busybox:1 from scripts/busybox-context.sh, pushed" >&2
scripts/busybox-context.sh "$WORK/busybox-context"
"$RBUILD" --root "$WORK/base-root" build --progress=plain -t "$REG/busybox:1" --push \
    "$WORK/busybox-context" >"$LOGS/base" 2>&1 || { cat "$LOGS/base" >&2; exit 1; }

# ---- the workload ----
CTX=$WORK/ctx
mkdir -p "$CTX"
echo "input of the build stage" >"$CTX/input.txt"
CONFIG="config of the final stage"
echo "$CONFIG" >"$CTX/config.txt"
BYTES=$((CACHE_MIB << 20))
cat >"$CTX/Dockerfile" <<EOF
FROM $REG/busybox:1 AS build
COPY input.txt /src/input.txt
RUN head -c $BYTES /dev/urandom > /big.bin
RUN head -c $BYTES /dev/urandom > /data2.bin && sha256sum /big.bin > /sums
RUN head -c $BYTES /dev/urandom > /data3.bin && mkdir -p /out && cat /src/input.txt /sums /data2.bin | sha256sum > /out/result

FROM $REG/busybox:1
COPY --from=build /out/result /app/result
COPY config.txt /app/config.txt
EOF
echo "+ the Dockerfile:" >&2
sed 's/^/    /' "$CTX/Dockerfile" >&2

# ---- running and measuring ----
# timed LOG CMD...: syncs, runs CMD (output to LOG), prints the seconds ("-" when it failed,
# the log's end on stderr).
timed() {
    local log=$1 start end
    shift
    sync
    start=$(date +%s.%N)
    if ! "$@" >"$log" 2>&1; then
        echo "bench-cache.sh: failed ($*):" >&2
        tail -n 8 "$log" | sed 's/^/    /' >&2
        echo -
        return
    fi
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}
rb() { # root args...
    local root=$1
    shift
    "$RBUILD" --root "$root" build --progress=plain "$@" "$CTX"
}

# The registry log's length now (the access log is written as each response completes).
log_mark() {
    sleep 0.2
    wc -l <"$LOGS/registry"
}
# log_since FROM TO: the registry log's lines after line FROM up to TO.
log_since() { sed -n "$(($1 + 1)),$2p" "$LOGS/registry"; }

# manifest_layers REF-PATH: "digest size" per layer of a manifest (an index: its first
# manifest), read with curl.
manifest_layers() {
    python3 - "http://$REG/v2/$1" <<'PY'
import json, sys, urllib.request
accept = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
def get(url):
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
m = get(sys.argv[1])
if "manifests" in m:
    base = sys.argv[1].rsplit("/manifests/", 1)[0]
    m = get(base + "/manifests/" + m["manifests"][0]["digest"])
for layer in m.get("layers", []):
    print(layer["digest"], layer["size"])
PY
}

# get_bytes FROM TO DIGESTS: "cache-blob-bytes all-blob-bytes all-bytes" of the successful GET
# responses in the registry log between the marks (cache blobs: the digests in DIGESTS, a
# "digest size" file). Access log lines: IP - - [date zone] "GET path HTTP/1.1" status bytes …
get_bytes() {
    log_since "$1" "$2" | awk -v list="$3" '
        BEGIN { while ((getline l < list) > 0) { split(l, f, " "); want[f[1]] = 1 } }
        $6 == "\"GET" && $9 ~ /^2/ && $10 ~ /^[0-9]+$/ {
            all += $10
            if (match($7, /\/blobs\/sha256:[0-9a-f]+$/)) {
                blobs += $10
                if (substr($7, RSTART + 7) in want) cache += $10
            }
        }
        END { printf "%d %d %d\n", cache, blobs, all }'
}

# export_heads FROM TO REPO: the blob HEADs sent after the image's manifest PUT (the cache
# export follows the image push).
export_heads() {
    log_since "$1" "$2" | awk -v repo="$3" '
        $6 == "\"PUT" && $7 == "/v2/" repo "/manifests/1" { on = 1; next }
        on && $6 == "\"HEAD" && index($7, "/v2/" repo "/blobs/") == 1 { n++ }
        END { print on ? n + 0 : "-" }'
}

cached_steps() { grep -cE '^#[0-9]+ CACHED$' "$1" || true; }
all_steps() { grep -cE '^#[0-9]+ \[[^]]* [0-9]+/[0-9]+\] ' "$1" || true; }
# export_secs LOG: X of `exported cache to …: … in X.Ys` ("-" without one).
export_secs() {
    local s
    s=$(sed -nE 's/^exported cache to .* in ([0-9.]+)s$/\1/p' "$1" | tail -n1)
    echo "${s:--}"
}
export_what() { sed -nE 's/^exported cache to [^ ]+: (.*) in [0-9.]+s$/\1/p' "$1" | tail -n1; }
fetched_what() { # LOG: "N layers (SIZE)" of the fetched line, "0 layers" without one
    local s
    s=$(sed -nE 's/^fetched (.*) from the imported cache$/\1/p' "$1" | tail -n1)
    echo "${s:-0 layers}"
}
pushed_digest() { # LOG TAG-REF
    sed -nE "s#^pushed $2@(sha256:[0-9a-f]+) in .*#\\1#p" "$1" | tail -n1
}
sum_sizes() { awk '{ s += $2 } END { print s + 0 }' "$1"; }
human() { # bytes, as rbuild prints them (decimal units)
    awk -v b="$1" 'BEGIN {
        if (b == "-") { print "-"; exit }
        split("B kB MB GB TB", u, " "); i = 1
        while (b >= 1000 && i < 5) { b /= 1000; i++ }
        printf (i == 1) ? "%d %s\n" : "%.2f %s\n", b, u[i] }'
}

declare -A T # T[what] = the runs' values, space-separated
declare -A S # S[what] = the runs' strings, "; "-separated
record() {   # what value
    T[$1]="${T[$1]:-}${T[$1]:+ }$2"
    printf '  %-24s %s\n' "$1" "$2" >&2
}
note() { # what string
    S[$1]="${S[$1]:-}${S[$1]:+; }$2"
    printf '  %-24s %s\n' "$1" "$2" >&2
}

echo "+ $RUNS runs" >&2
for ((r = 1; r <= RUNS; r++)); do
    repo=app$r
    ref=$REG/$repo
    echo "$CONFIG" >"$CTX/config.txt"
    echo "+ run $r: $ref" >&2

    # 1. A cold.
    m0=$(log_mark)
    t=$(timed "$LOGS/a-cold-$r" rb "$WORK/a-$r" \
        --cache-to "type=registry,ref=$ref:cache,mode=max" -t "$ref:1" --push)
    m1=$(log_mark)
    record a-cold "$t"
    record a-export "$(export_secs "$LOGS/a-cold-$r")"
    note a-export-what "$(export_what "$LOGS/a-cold-$r")"
    record a-export-heads "$(export_heads "$m0" "$m1" "$repo")"
    a_digest=$(pushed_digest "$LOGS/a-cold-$r" "$ref:1")

    # The cache's layers, and those of them the final image carries.
    manifest_layers "$repo/manifests/cache" >"$WORK/cache-layers-$r" 2>"$LOGS/cache-manifest-$r" || true
    manifest_layers "$repo/manifests/1" >"$WORK/image-layers-$r" 2>"$LOGS/image-manifest-$r" || true
    record cache-layers "$(wc -l <"$WORK/cache-layers-$r")"
    record cache-bytes "$(sum_sizes "$WORK/cache-layers-$r")"
    awk 'NR == FNR { in_image[$1] = 1; next } $1 in in_image' \
        "$WORK/image-layers-$r" "$WORK/cache-layers-$r" >"$WORK/cache-in-image-$r"
    record cache-in-image-layers "$(wc -l <"$WORK/cache-in-image-$r")"
    record cache-in-image-bytes "$(sum_sizes "$WORK/cache-in-image-$r")"

    # 2. B: a fresh root, from the cache.
    m0=$(log_mark)
    t=$(timed "$LOGS/b-$r" rb "$WORK/b-$r" \
        --cache-from "type=registry,ref=$ref:cache" -t "$ref:b" --push)
    m1=$(log_mark)
    record b "$t"
    record b-cached "$(cached_steps "$LOGS/b-$r")"
    record b-steps "$(all_steps "$LOGS/b-$r")"
    note b-fetched "$(fetched_what "$LOGS/b-$r")"
    read -r cache_get blob_get all_get < <(get_bytes "$m0" "$m1" "$WORK/cache-layers-$r")
    record b-get-cache "$cache_get"
    record b-get-blobs "$blob_get"
    record b-get-all "$all_get"
    b_digest=$(pushed_digest "$LOGS/b-$r" "$ref:b")
    if [[ -n $a_digest && $a_digest == "$b_digest" ]]; then
        note b-same-image "yes"
    else
        note b-same-image "NO (A ${a_digest:-none}, B ${b_digest:-none})"
    fi

    # 3. B after config.txt changed: a fresh root again.
    echo "$CONFIG, changed in run $r: $RANDOM$RANDOM" >"$CTX/config.txt"
    m0=$(log_mark)
    t=$(timed "$LOGS/b-one-$r" rb "$WORK/b-one-$r" \
        --cache-from "type=registry,ref=$ref:cache" -t "$ref:b-one" --push)
    m1=$(log_mark)
    record b-one "$t"
    record b-one-cached "$(cached_steps "$LOGS/b-one-$r")"
    note b-one-fetched "$(fetched_what "$LOGS/b-one-$r")"
    read -r cache_get _ _ < <(get_bytes "$m0" "$m1" "$WORK/cache-layers-$r")
    record b-one-get-cache "$cache_get"
    echo "$CONFIG" >"$CTX/config.txt"

    # 4. A again on its own root, every step cached: the re-export.
    m0=$(log_mark)
    t=$(timed "$LOGS/a-again-$r" rb "$WORK/a-$r" \
        --cache-to "type=registry,ref=$ref:cache,mode=max" -t "$ref:1" --push)
    m1=$(log_mark)
    record a-again "$t"
    record a-again-cached "$(cached_steps "$LOGS/a-again-$r")"
    record a-reexport "$(export_secs "$LOGS/a-again-$r")"
    record a-reexport-heads "$(export_heads "$m0" "$m1" "$repo")"
done

# ---- the figures ----
med() { # shellcheck disable=SC2086
    median ${T[$1]:--}
}
# The distinct strings of the runs.
distinct() { tr ';' '\n' <<<"${S[$1]:--}" | sed 's/^ *//' | sort -u | paste -sd'|' | sed 's/|/; /g'; }
rsecs() { [[ $1 == - ]] && echo - || echo "$1 s"; } # rbuild's own figure, as printed
pct() { # part whole
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2g %%\n", 100 * a / b }'
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "shared-cache benchmark, $(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)"
echo "rbuild $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (release); docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo '?') on 127.0.0.1 (plain HTTP)"
echo "workload: FROM a loopback-registry busybox; build stage: COPY + 3 RUN × $CACHE_MIB MiB random (not in the final image);"
echo "          final stage: COPY --from=build of a small result + COPY config.txt; --cache-to …,mode=max"
echo "medians of $RUNS runs, each in its own repository with fresh roots"
echo
a=$(med a-cold) b=$(med b) b1=$(med b-one)
cache=$(med cache-bytes)
printf '%-44s %12s  %s\n' "A: cold build + push + cache export" "$(secs "$a")" ""
printf '%-44s %12s  %s\n' "A: of which the export (rbuild's line)" "$(rsecs "$(med a-export)")" \
    "$(distinct a-export-what); blob HEADs $(med a-export-heads)"
printf '%-44s %12s  %s\n' "B: fresh root, --cache-from + push" "$(secs "$b")" \
    "B / A cold $(ratio "$b" "$a"); $(med b-cached)/$(med b-steps) steps cached; same image as A: $(distinct b-same-image)"
printf '%-44s %12s  %s\n' "B: fetched from the cache (rbuild's line)" "" "$(distinct b-fetched)"
printf '%-44s %12s  %s\n' "B: cache blobs GET (registry log)" "$(human "$(med b-get-cache)")" \
    "$(pct "$(med b-get-cache)" "$cache") of the cache's $(med cache-layers) layers ($(human "$cache")); the final image carries $(med cache-in-image-layers) of them ($(human "$(med cache-in-image-bytes)"))"
printf '%-44s %12s  %s\n' "B: all GET bytes (registry log)" "$(human "$(med b-get-all)")" \
    "blobs $(human "$(med b-get-blobs)") (the base, the cache's config and layers) + manifests"
printf '%-44s %12s  %s\n' "B after one final-stage file changed" "$(secs "$b1")" \
    "B / A cold $(ratio "$b1" "$a"); $(med b-one-cached)/$(med b-steps) steps cached; fetched $(distinct b-one-fetched)"
printf '%-44s %12s  %s\n' "A re-export (rbuild's line)" "$(rsecs "$(med a-reexport)")" \
    "0.1 s resolution; blob HEADs $(med a-reexport-heads) (cold export: $(med a-export-heads)) for $(med cache-layers) layers"
printf '%-44s %12s  %s\n' "A rebuild + push + re-export, whole" "$(secs "$(med a-again)")" \
    "$(med a-again-cached)/$(med b-steps) steps cached"
echo
echo "runs:"
for what in a-cold a-export a-export-heads b b-cached b-get-cache b-get-blobs b-get-all b-one b-one-cached \
    b-one-get-cache a-again a-reexport a-reexport-heads cache-layers cache-bytes; do
    printf '  %-18s %s\n' "$what" "${T[$what]:--}"
done
