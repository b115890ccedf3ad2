#!/usr/bin/env bash
# busybox-context.sh DIR: writes the build context of the `busybox:latest` base that the
# testdata/build cases start FROM, using Debian's busybox-static (no internet needed):
#
#   DIR/busybox         the static binary (from the installed package, or apt-get download)
#   DIR/etc/passwd      root, app (1000:1000), nobody
#   DIR/etc/group       root, staff (50, member app), app (1000), nogroup
#   DIR/Dockerfile      FROM scratch; COPY the binary; busybox --install -s; COPY etc; mkdir
#
# Everything but the binary is written here, byte for byte, so the base is the same whoever
# builds it (BuildKit for the expected files, rbuild in the tests). The cases' expected files
# list only what differs from this base, so the busybox version matters little; the one used
# for the committed files is in testdata/build/README.md.
set -euo pipefail

dir=${1:?usage: busybox-context.sh DIR}
mkdir -p "$dir/etc"

bin=""
for cand in /bin/busybox /usr/bin/busybox; do
    # busybox (not -static) is dynamically linked and would not run in a scratch image.
    if [[ -x $cand ]] && dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
        && dpkg -L busybox-static | grep -qx "$cand"; then
        bin=$cand
        break
    fi
done
if [[ -z $bin ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download busybox-static >/dev/null)
    dpkg -x "$tmp"/busybox-static_*.deb "$tmp/x"
    bin="$tmp/x/bin/busybox"
fi
install -m 0755 "$bin" "$dir/busybox"

cat >"$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$dir/etc/group" <<'G'
root:x:0:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
G
chmod 0644 "$dir/etc/passwd" "$dir/etc/group"

cat >"$dir/Dockerfile" <<'D'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY etc/passwd etc/group /etc/
RUN ["/bin/busybox", "sh", "-c", "mkdir -p /tmp /root /home/app && chmod 1777 /tmp && chmod 0700 /root && chown 1000:1000 /home/app"]
D
