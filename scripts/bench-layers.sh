#!/usr/bin/env bash
# Layer benchmark: rbuild's layer writer against `tar | gzip` and `tar | zstd` on a 512 MiB
# tree (half random bytes, half text, files of mixed sizes), with elapsed time and peak RSS
# from /usr/bin/time.
#
#   scripts/bench-layers.sh                       # tree cached under $TMPDIR, reused next run
#   BENCH_DIR=/var/tmp/lb scripts/bench-layers.sh # elsewhere
#
# Exits 0 whatever the figures: performance is reported, never asserted (DESIGN.md, Testing).
# Peak RSS of a pipeline is the largest single process in it (GNU time reports the
# children's maximum, not their sum).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/rbuild-bench-layers}
TREE=$BENCH_DIR/tree
WORK=$BENCH_DIR/out
THREADS=${THREADS:-$(nproc)}
MIB=$((1024 * 1024))

# Writes 256 MiB, half of the tree, under $1: random bytes when $2 = random, else text.
fill_half() (
    # head closes the generators' pipes early; that SIGPIPE is the point, not a failure.
    set +o pipefail
    local dir=$1 kind=$2
    mkdir -p "$dir"
    # 8×16 MiB + 64×1 MiB + 512×96 KiB + 4096×4 KiB = 256 MiB in 4,680 files.
    local spec
    for spec in 8:$((16 * MIB)) 64:$MIB 512:$((96 * 1024)) 4096:4096; do
        local count=${spec%%:*} size=${spec#*:} i
        for ((i = 0; i < count; i++)); do
            local sub=$dir/s$size/d$((i % 16))
            mkdir -p "$sub"
            if [[ $kind == random ]]; then
                head -c "$size" /dev/urandom >"$sub/f$i"
            elif ((i % 2)); then
                seq "$((i * 1000))" 100000000 | head -c "$size" >"$sub/f$i"
            else
                shuf -r -n "$((size / 4))" --random-source=<(yes "$i") \
                    -e layer tar digest overlay rbuild zstd gzip blob the of and to in is \
                    container image build cache snapshot manifest index config registry \
                    | tr '\n' ' ' | head -c "$size" >"$sub/f$i"
            fi
        done
    done
)

make_tree() {
    if [[ -f $BENCH_DIR/.tree-done ]]; then
        echo "+ reusing $TREE" >&2
        return
    fi
    echo "+ generating a 512 MiB tree under $TREE (once)" >&2
    rm -rf "$TREE"
    fill_half "$TREE/random" random
    fill_half "$TREE/text" text
    touch "$BENCH_DIR/.tree-done"
}

# Runs "$@" under /usr/bin/time; prints "<elapsed s> <peak RSS KiB>".
timed() {
    local tf
    tf=$(mktemp)
    /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null
    cat "$tf"
    rm -f "$tf"
}

row() { # name seconds rss_kib bytes_out
    awk -v n="$1" -v s="$2" -v r="$3" -v o="$4" -v i="$TAR_BYTES" 'BEGIN {
        printf "%-14s %8.2f s %9.1f MB/s %8.1f MiB RSS %10.1f MiB out (%.1f%%)\n",
            n, s, i / 1e6 / (s > 0 ? s : 0.01), r / 1024, o / 1048576, 100 * o / i }'
}

ratio() { # label ours theirs
    awk -v l="$1" -v a="$2" -v b="$3" 'BEGIN { printf "  %-32s %6.2f\n", l, a / b }'
}

mkdir -p "$BENCH_DIR" "$WORK"
make_tree

echo "+ cargo build --release -p rbuild-cache --example layer_throughput" >&2
cargo build --release -q -p rbuild-cache --example layer_throughput
BIN=${CARGO_TARGET_DIR:-target}/release/examples/layer_throughput

# Warm the page cache so every contender reads from memory.
TAR_BYTES=$(tar -C "$TREE" -cf - . | wc -c)
echo "tree: $((TAR_BYTES / MIB)) MiB of tar, $(find "$TREE" -type f | wc -l) files; threads=$THREADS; $(nproc) cores"
echo

declare -A SEC RSS OUT
run() { # name command...
    local name=$1 out=$2
    shift 2
    read -r SEC[$name] RSS[$name] < <(timed "$@")
    OUT[$name]=$(stat -c %s "$out")
    row "$name" "${SEC[$name]}" "${RSS[$name]}" "${OUT[$name]}"
}

for c in gzip zstd none; do
    run "rbuild-$c" "$WORK/ours.$c" \
        "$BIN" create "$TREE" --compression "$c" --threads "$THREADS" -o "$WORK/ours.$c"
done
run "tar|gzip-6" "$WORK/theirs.gz" \
    bash -c "tar -C '$TREE' -cf - . | gzip -6 >'$WORK/theirs.gz'"
run "tar|zstd-T0-3" "$WORK/theirs.zst" \
    bash -c "tar -C '$TREE' -cf - . | zstd -q -T0 -3 >'$WORK/theirs.zst'"

echo
echo "ours / theirs:"
ratio "gzip throughput (higher=better)" "${SEC[tar|gzip-6]}" "${SEC[rbuild-gzip]}"
ratio "gzip peak RSS" "${RSS[rbuild-gzip]}" "${RSS[tar|gzip-6]}"
ratio "gzip size" "${OUT[rbuild-gzip]}" "${OUT[tar|gzip-6]}"
ratio "zstd throughput (higher=better)" "${SEC[tar|zstd-T0-3]}" "${SEC[rbuild-zstd]}"
ratio "zstd peak RSS" "${RSS[rbuild-zstd]}" "${RSS[tar|zstd-T0-3]}"
ratio "zstd size" "${OUT[rbuild-zstd]}" "${OUT[tar|zstd-T0-3]}"

# Extraction: rbuild's applier (in-root path resolution, diffID while reading) against
# `gzip -dc | tar -x` and `zstd -dc | tar -x` on the blobs made above. MB/s counts tar bytes.
bench_extract() {
    local work=$1
    echo "+ cargo build --release -p rbuild-cache --example layer_extract" >&2
    cargo build --release -q -p rbuild-cache --example layer_extract
    local bin=${CARGO_TARGET_DIR:-target}/release/examples/layer_extract
    echo
    echo "extraction:"
    local c
    for c in gzip zstd; do
        rm -rf "$work/x-ours-$c"
        run "apply-$c" "$work/ours.$c" "$bin" apply "$work/ours.$c" "$work/x-ours-$c"
        rm -rf "$work/x-ours-$c"
    done
    mkdir -p "$work/x-theirs"
    run "gzip-d|tar-x" "$work/theirs.gz" \
        bash -c "gzip -dc '$work/theirs.gz' | tar -C '$work/x-theirs' -xf -"
    rm -rf "$work/x-theirs" && mkdir -p "$work/x-theirs"
    run "zstd-d|tar-x" "$work/theirs.zst" \
        bash -c "zstd -q -dc '$work/theirs.zst' | tar -C '$work/x-theirs' -xf -"
    rm -rf "$work/x-theirs"
    echo
    echo "ours / theirs (extraction):"
    ratio "gzip throughput (higher=better)" "${SEC[gzip-d|tar-x]}" "${SEC[apply-gzip]}"
    ratio "gzip peak RSS" "${RSS[apply-gzip]}" "${RSS[gzip-d|tar-x]}"
    ratio "zstd throughput (higher=better)" "${SEC[zstd-d|tar-x]}" "${SEC[apply-zstd]}"
    ratio "zstd peak RSS" "${RSS[apply-zstd]}" "${RSS[zstd-d|tar-x]}"
}
bench_extract "$WORK"
