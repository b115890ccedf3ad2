#!/usr/bin/env bash
# The whole check, locally and in CI (.ci/run execs this): install what the tests need, then
# formatting, lints and the test suite. Prints every command before it runs it.
#
# Later issues add their system packages to SYSTEM_PACKAGES below (runc, docker-registry,
# skopeo, umoci, qemu-user-static, …); need_pkg installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI once failed before any test ran: cargo's target probe (`rustc - …`, reading /dev/null)
# parsed build-script errors as its source. /dev/null had become a regular file, renamed over
# by `-o type=tar,dest=/dev/null` in a test, and the probes had written into it. CI runs on the
# machine the last session used, so a broken /dev/null is repaired here, and the run fails if
# the tests break it again. Nothing here reads standard input, nor needs the probe cache.
if [ ! -c /dev/null ] && [ "$(id -u)" = 0 ]; then
    echo "warning: /dev/null is not a character device; making it one again" >&2
    rm -f /dev/null && mknod -m 666 /dev/null c 1 3
fi
exec </dev/null
export CARGO_CACHE_RUSTC_INFO=0

# Debian packages the tests use: peers that must accept what rbuild writes (skopeo, umoci),
# the compressors layers are checked against (gzip, zstd), tar/diff for round trips.
# qemu-user-static runs the arm64 steps of the multi-platform tests (they register its binfmt
# handlers themselves with `rbuild setup-binfmt`). openssh-client's ssh-agent serves `--ssh`
# key files; the tests make keys with ssh-keygen and ask the forwarded agent with ssh-add; git
# serves and checks out the repositories ADD fetches in the tests (git daemon on loopback).
SYSTEM_PACKAGES=(skopeo umoci zstd gzip tar diffutils python3 runc busybox-static docker-registry apache2-utils openssl curl
    qemu-user-static openssh-client git)

run() {
    echo "+ $*" >&2
    "$@"
}

APT_UPDATED=false

# need_pkg PKG...: apt-get install the packages that are not installed yet.
need_pkg() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    if ! $APT_UPDATED; then
        run "${sudo[@]}" apt-get update -qq
        APT_UPDATED=true
    fi
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# need_cmd CMD HINT: fail early, with a hint, when a tool is missing.
need_cmd() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "test.sh: '$1' not found; $2" >&2
        exit 1
    fi
}

# need_arm64_busybox: the multi-platform tests' arm64 base image is Debian's busybox-static:arm64,
# which they extract from its .deb in $RBUILD_TEST_DEBS (builder/tests/cli/arm64.rs). Downloaded
# once (kept while a busybox-static_*_arm64.deb is there); `apt-get download` needs the arm64
# dpkg architecture, so it is added when missing, then the package lists are fetched again.
RBUILD_TEST_DEBS=${RBUILD_TEST_DEBS:-/var/cache/rbuild-test-debs}
need_arm64_busybox() {
    if compgen -G "$RBUILD_TEST_DEBS/busybox-static_*_arm64.deb" >/dev/null; then
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        run "${sudo[@]}" dpkg --add-architecture arm64
        APT_UPDATED=false
    fi
    if ! $APT_UPDATED; then
        run "${sudo[@]}" apt-get update -qq
        APT_UPDATED=true
    fi
    run "${sudo[@]}" mkdir -p "$RBUILD_TEST_DEBS"
    # As root, apt warns that the download runs unsandboxed (its _apt user cannot write the
    # directory); the .deb is verified against the signed lists all the same.
    (cd "$RBUILD_TEST_DEBS" && run "${sudo[@]}" apt-get download -qq busybox-static:arm64)
    if ! compgen -G "$RBUILD_TEST_DEBS/busybox-static_*_arm64.deb" >/dev/null; then
        echo "test.sh: apt-get download left no busybox-static_*_arm64.deb in $RBUILD_TEST_DEBS" >&2
        exit 1
    fi
}

need_cmd cargo "install Rust (rustup or Debian's cargo)"
need_cmd rustfmt "install it with 'rustup component add rustfmt'"
need_cmd cargo-clippy "install it with 'rustup component add clippy'"
if ((${#SYSTEM_PACKAGES[@]} > 0)); then
    need_pkg "${SYSTEM_PACKAGES[@]}"
fi
need_arm64_busybox
export RBUILD_TEST_DEBS

run cargo --version
run cargo fmt --all --check
run cargo clippy --workspace --all-targets -- -D warnings
# --no-fail-fast: every suite runs and prints its `test result:` line, even after a failure.
run cargo test --workspace --no-fail-fast
if [ ! -c /dev/null ]; then
    echo "error: /dev/null is no longer a character device: something the tests ran replaced it" >&2
    exit 1
fi
