# Sourced by the benchmarks (bench-build.sh, bench-multiplatform.sh, bench-cache.sh):
# Docker's daemon, started when none answers and stopped at exit, and the figures' arithmetic.
# The caller sets DOCKER (the CLI's path, empty when there is none), LOGS (a directory for
# dockerd's log) and SCRIPT (its own name, for messages), and calls stop_dockerd from its exit
# trap.

DOCKERD_PID=

docker_up() { [[ -n $DOCKER ]] && "$DOCKER" info >/dev/null 2>&1; }

# ensure_dockerd: succeeds when a Docker daemon answers, after starting
# `dockerd --iptables=false --bridge=none` if none did; otherwise says why BuildKit is left out.
ensure_dockerd() {
    if [[ -z $DOCKER ]]; then
        echo "$SCRIPT: no docker CLI; BuildKit left out" >&2
        return 1
    fi
    docker_up && return 0
    local dockerd
    dockerd=$(PATH=$PATH:/usr/sbin:/sbin command -v dockerd || true)
    if [[ -z $dockerd || $EUID != 0 ]]; then
        echo "$SCRIPT: no Docker daemon answers and none can be started here; BuildKit left out" >&2
        return 1
    fi
    echo "+ $dockerd --iptables=false --bridge=none" >&2
    "$dockerd" --iptables=false --bridge=none >"$LOGS/dockerd" 2>&1 &
    DOCKERD_PID=$!
    local i
    for ((i = 0; i < 120; i++)); do
        docker_up && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    docker_up && return 0
    echo "$SCRIPT: dockerd did not come up; BuildKit left out:" >&2
    tail -n 5 "$LOGS/dockerd" >&2
    return 1
}

# stop_dockerd: stops the daemon ensure_dockerd started, if it did.
stop_dockerd() {
    if [[ -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
}

median() { # numbers or "-"... ("-" when none is a number)
    printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"
        else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { # a b
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'
}

secs() { [[ $1 == - ]] && echo - || printf '%.3f s' "$1"; }

# start_registry: Debian's docker-registry on a free loopback port, storage under
# $WORK/registry, its log in $LOGS/registry; sets PORT, REG (127.0.0.1:PORT) and REGISTRY_PID
# (the caller stops it at exit). Exits when it does not answer.
start_registry() {
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/registry"
    cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: rbuild-bench-secret
EOF
    echo "+ docker-registry serve (127.0.0.1:$PORT)" >&2
    docker-registry serve "$WORK/registry/config.yml" >"$LOGS/registry" 2>&1 &
    REGISTRY_PID=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/" 2>/dev/null && break
        sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/" || { cat "$LOGS/registry" >&2; exit 1; }
    REG=127.0.0.1:$PORT
}
