#!/usr/bin/env bash
# Generates the hostile layers in testdata/layers/hostile/ (committed; rerun only to change them).
# Deterministic: fixed mtimes, numeric owners 0:0, entries in a fixed order, gzip with mtime 0
# and no file name, pseudo-random data from a fixed seed. See hostile/README.md.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/hostile"
mkdir -p "$out"
python3 - "$out" <<'PY'
import gzip, io, random, sys, tarfile

out = sys.argv[1]
MTIME = 1700000000

def info(name, kind=tarfile.REGTYPE, size=0, link="", mode=0o644):
    t = tarfile.TarInfo(name)
    t.type, t.size, t.linkname, t.mode = kind, size, link, mode
    t.mtime, t.uid, t.gid, t.uname, t.gname = MTIME, 0, 0, "", ""
    return t

def layer(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()

def write(name, data):
    with open(f"{out}/{name}", "wb") as f:
        f.write(data)

def file(name, data):
    return info(name, size=len(data)), data

def dir_(name):
    return info(name, tarfile.DIRTYPE, mode=0o755), None

def sym(name, target):
    return info(name, tarfile.SYMTYPE, link=target, mode=0o777), None

def hard(name, target):
    return info(name, tarfile.LNKTYPE, link=target), None

write("dotdot.tar", layer([file("../escape", b"escaped\n")]))
write("absolute.tar", layer([file("/tmp/rbuild-absolute-pwned", b"pwned\n")]))
write("symlink-escape.tar", layer([
    sym("link", "../../../../../../tmp/rbuild-outside"),
    file("link/pwned", b"pwned\n"),
]))
write("symlink-abs.tar", layer([sym("abs", "/"), file("abs/tmp/pwned", b"inside\n")]))
write("hardlink-escape.tar", layer([hard("h", "../../etc/passwd")]))
write("hardlink-via-symlink.tar", layer([sym("up", "../.."), hard("h", "up/etc/passwd")]))

# A real-looking layer, gzipped, then cut in half: the gzip stream ends mid-deflate.
rng = random.Random(1)
blob = bytes(rng.getrandbits(8) for _ in range(96 * 1024))
good = layer([dir_("data/"), file("data/blob", blob), file("data/after", b"after\n")])
gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=6, mtime=0, filename="") as g:
    g.write(good)
gz = gz.getvalue()
write("truncated.tar.gz", gz[: len(gz) // 2])

# A header claiming 1 TiB (base-256 size field, GNU format) followed by 5 bytes and EOF.
huge = info("huge", size=1 << 40)
write("huge-header.tar", huge.tobuf(format=tarfile.GNU_FORMAT) + b"hello")
PY
ls -l "$out"
