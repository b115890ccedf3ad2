#!/usr/bin/env python3
"""image-listing.py IMAGE [--base BASE_LISTING] [--rootfs OUT] [--config OUT] [--config-file F]

Writes the rootfs listing and the config summary of one image in the format of
testdata/build/README.md, so that two builders' images can be compared with `diff`.

IMAGE is any of:
  - a `docker save` tar or directory (manifest.json with Config and Layers),
  - an OCI image layout, as a tar or a directory (index.json; the first manifest, following
    one level of index),
  - a plain rootfs directory (e.g. `-o type=local`); the config then comes from --config-file
    (an image config JSON, or a docker/OCI image tar or directory whose config is used).

Layers are applied in order honouring whiteouts (`.wh.NAME`, `.wh..wh..opq`), in memory: no
file is written, so it runs as any user and on any filesystem.

--base-config BASE_SUMMARY (with --base): the base's config summary; the listing is relative
to the base only when the image's history begins with the base's history, else full (an
image FROM scratch).

--base BASE_LISTING: a full listing (this tool's output without --base) of the base image;
the listing then has only the lines that differ from it, plus `- PATH` for base paths that
are gone. Without --rootfs the listing goes to stdout; --config writes the config summary.
"""

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import subprocess
import sys
import tarfile

CONFIG_KEYS = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
]


def esc(path):
    """A path as one word: bytes outside 0x21..0x7e, and the backslash, become \\xHH."""
    raw = os.fsencode(path)
    out = []
    for b in raw:
        if 0x21 <= b <= 0x7E and b != 0x5C:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def norm(path):
    """'./a/b/' or 'a//b' -> '/a/b'; '' or '.' -> '/'."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


class Entry:
    __slots__ = ("kind", "mode", "uid", "gid", "size", "digest", "target", "inode")

    def __init__(self, kind, mode, uid, gid, size="-", digest="-", target=None, inode=None):
        self.kind = kind  # f d l c b p
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.digest = digest
        self.target = target
        self.inode = inode

    def line(self, path):
        head = "%s %04o %d:%d %s" % (self.kind, self.mode, self.uid, self.gid, self.size)
        if self.kind == "l":
            return "%s -> %s %s" % (head, esc(self.target), esc(path))
        return "%s %s %s" % (head, self.digest, esc(path))


class Tree:
    """The merged filesystem: path -> Entry, '/' excluded."""

    def __init__(self):
        self.entries = {}
        self.next_inode = 0

    def inode(self):
        self.next_inode += 1
        return self.next_inode

    def remove(self, path):
        self.entries.pop(path, None)
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.entries if p.startswith(prefix)]:
            del self.entries[p]

    def clear_children(self, path):
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.entries if p.startswith(prefix)]:
            del self.entries[p]

    def parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        cur = ""
        for part in parts:
            cur += "/" + part
            e = self.entries.get(cur)
            if e is None or e.kind != "d":
                if e is not None:
                    self.remove(cur)
                self.entries[cur] = Entry("d", 0o755, 0, 0)

    def put(self, path, entry):
        old = self.entries.get(path)
        if old is not None and not (old.kind == "d" and entry.kind == "d"):
            self.remove(path)
        self.parents(path)
        self.entries[path] = entry

    def apply_layer(self, tf):
        members = tf.getmembers()
        # Whiteouts hide what lower layers had; apply them before the layer's own entries, so
        # that an opaque directory keeps what this very layer puts in it.
        for m in members:
            path = norm(m.name)
            base = path.rsplit("/", 1)[1]
            parent = path.rsplit("/", 1)[0] or "/"
            if base == ".wh..wh..opq":
                self.clear_children(parent)
            elif base.startswith(".wh."):
                self.remove(norm(parent + "/" + base[4:]))
        for m in members:
            path = norm(m.name)
            if path == "/":
                continue
            base = path.rsplit("/", 1)[1]
            if base.startswith(".wh."):
                continue
            mode = m.mode & 0o7777
            if m.isdir():
                old = self.entries.get(path)
                if old is not None and old.kind == "d":
                    old.mode, old.uid, old.gid = mode, m.uid, m.gid
                else:
                    self.put(path, Entry("d", mode, m.uid, m.gid))
            elif m.islnk():
                target = self.entries.get(norm(m.linkname))
                if target is None or target.kind != "f":
                    raise SystemExit("hardlink %s -> %s: no such file" % (m.name, m.linkname))
                link = Entry("f", target.mode, target.uid, target.gid, target.size, target.digest,
                             inode=target.inode)
                self.put(path, link)
            elif m.issym():
                self.put(path, Entry("l", mode, m.uid, m.gid, target=m.linkname))
            elif m.isreg():
                h = hashlib.sha256()
                f = tf.extractfile(m)
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                self.put(path, Entry("f", mode, m.uid, m.gid, str(m.size), h.hexdigest(),
                                     inode=self.inode()))
            elif m.ischr() or m.isblk():
                kind = "c" if m.ischr() else "b"
                self.put(path, Entry(kind, mode, m.uid, m.gid, "%d,%d" % (m.devmajor, m.devminor)))
            elif m.isfifo():
                self.put(path, Entry("p", mode, m.uid, m.gid))
            else:
                raise SystemExit("%s: unsupported tar entry type %r" % (m.name, m.type))

    def lines(self):
        out = [self.entries[p].line(p) for p in sorted(self.entries, key=esc)]
        groups = {}
        for p, e in self.entries.items():
            if e.kind == "f":
                groups.setdefault(e.inode, []).append(p)
        links = sorted(
            "hardlinks: " + " ".join(sorted(esc(p) for p in g))
            for g in groups.values() if len(g) > 1
        )
        return out + links


def tree_from_dir(root):
    tree = Tree()
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            path = norm(os.path.relpath(full, root))
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                e = Entry("d", mode, st.st_uid, st.st_gid)
            elif stat.S_ISLNK(st.st_mode):
                e = Entry("l", mode, st.st_uid, st.st_gid, target=os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                key = (st.st_dev, st.st_ino)
                if key not in inodes:
                    inodes[key] = tree.inode()
                e = Entry("f", mode, st.st_uid, st.st_gid, str(st.st_size), h.hexdigest(),
                          inode=inodes[key])
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                e = Entry(kind, mode, st.st_uid, st.st_gid,
                          "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif stat.S_ISFIFO(st.st_mode):
                e = Entry("p", mode, st.st_uid, st.st_gid)
            else:
                raise SystemExit("%s: unsupported file type" % full)
            tree.entries[path] = e
    return tree


class Source:
    """Reads named files from an image given as a directory or a tar."""

    def __init__(self, path):
        self.path = path
        self.tar = None if os.path.isdir(path) else tarfile.open(path, "r:*")

    def exists(self, name):
        if self.tar is None:
            return os.path.exists(os.path.join(self.path, name))
        try:
            self.tar.getmember(name)
            return True
        except KeyError:
            return False

    def read(self, name):
        if self.tar is None:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        f = self.tar.extractfile(self.tar.getmember(name))
        if f is None:
            raise SystemExit("%s: %s is not a file" % (self.path, name))
        return f.read()


def decompress(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-dc"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def blob(digest):
    algo, hexd = digest.split(":", 1)
    return "blobs/%s/%s" % (algo, hexd)


def load_image(path):
    """-> (config dict, [layer bytes]) of a docker-save or OCI image, tar or directory."""
    src = Source(path)
    if src.exists("index.json"):
        index = json.loads(src.read("index.json"))
        desc = index["manifests"][0]
        doc = json.loads(src.read(blob(desc["digest"])))
        while "manifests" in doc:  # an index inside the layout: take its first manifest
            doc = json.loads(src.read(blob(doc["manifests"][0]["digest"])))
        config = json.loads(src.read(blob(doc["config"]["digest"])))
        layers = [src.read(blob(l["digest"])) for l in doc["layers"]]
        return config, layers
    if src.exists("manifest.json"):
        manifest = json.loads(src.read("manifest.json"))[0]
        config = json.loads(src.read(manifest["Config"]))
        layers = [src.read(l) for l in manifest["Layers"]]
        return config, layers
    raise SystemExit("%s: neither an OCI layout (index.json) nor a docker save (manifest.json)"
                     % path)


def config_summary(config):
    cfg = config.get("config") or {}
    out = {}
    for k in CONFIG_KEYS:
        v = cfg.get(k)
        # null and empty are the same to a user; Docker writes null where OCI omits the key.
        if v is None or v == [] or v == {} or v == "":
            continue
        out[k] = v
    history = [[h.get("created_by", ""), bool(h.get("empty_layer", False))]
               for h in config.get("history") or []]
    return {"config": out, "history": history}


def diff_lines(lines, base_lines):
    def key(line):
        if line.startswith("hardlinks: "):
            return line
        return line.rsplit(" ", 1)[1]

    base = {key(l): l for l in base_lines}
    mine = {key(l): l for l in lines}
    out = [l for l in lines if base.get(key(l)) != l]
    gone = [k for k in base if k not in mine]
    out += ["- " + k for k in gone]
    paths = [l for l in out if not l.startswith("hardlinks: ") and not l.startswith("- hardlinks: ")]
    groups = [l for l in out if l.startswith("hardlinks: ") or l.startswith("- hardlinks: ")]

    return sorted(paths, key=lambda line: line.rsplit(" ", 1)[1]) + sorted(groups)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("image")
    ap.add_argument("--base", help="full listing of the base image; list only differences")
    ap.add_argument("--rootfs", help="write the listing here (default: stdout)")
    ap.add_argument("--config", help="write the config summary here")
    ap.add_argument("--config-file", help="config for a rootfs directory IMAGE")
    ap.add_argument("--base-config", help="the base's config summary (--config output): "
                    "--base applies only if the image's history starts with the base's")
    args = ap.parse_args()

    image = args.image
    is_rootfs = os.path.isdir(image) and not (
        os.path.exists(os.path.join(image, "index.json"))
        or os.path.exists(os.path.join(image, "manifest.json")))
    if is_rootfs:
        tree = tree_from_dir(image)
        config = None
        if args.config_file:
            if os.path.isfile(args.config_file) and not tarfile.is_tarfile(args.config_file):
                with open(args.config_file) as f:
                    config = json.load(f)
            else:
                config, _ = load_image(args.config_file)
    else:
        config, layers = load_image(image)
        tree = Tree()
        for data in layers:
            with tarfile.open(fileobj=io.BytesIO(decompress(data)), mode="r:") as tf:
                tree.apply_layer(tf)

    lines = tree.lines()
    use_base = bool(args.base)
    if use_base and args.base_config:
        with open(args.base_config) as f:
            base_history = json.load(f)["history"]
        history = config_summary(config or {})["history"]
        use_base = history[: len(base_history)] == base_history
    if use_base:
        with open(args.base) as f:
            base_lines = [l.rstrip("\n") for l in f if l.strip()]
        lines = diff_lines(lines, base_lines)
    text = "".join(l + "\n" for l in lines)
    if args.rootfs:
        with open(args.rootfs, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.config:
        if config is None:
            raise SystemExit("--config needs an image, or --config-file with a rootfs directory")
        with open(args.config, "w") as f:
            json.dump(config_summary(config), f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
