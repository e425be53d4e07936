#!/usr/bin/env python3
"""Assembles an OCI image (an OCI-layout tarball) from one binary, without a daemon or registry.

    hack/mkimage.py IMAGE BINARY OUT.tar [--ref REF]      IMAGE: tracking-operator|tracking-worker|pause

The layer holds the binary, the shared libraries it loads (from `ldd`, at the same paths, as
distroless/cc provides them), CA certificates and the nonroot user's passwd/group entries. User,
entrypoint, command and ports are those of the Dockerfiles (tests/images.rs checks they agree).
The tarball is what `ctr -n k8s.io images import` takes; the index carries the image name in
`io.containerd.image.name`, so no registry is involved. Output is deterministic (mtime 0, sorted).
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

NONROOT = "65532:65532"
# The same settings as Dockerfile and worker/Dockerfile (user, entrypoint, cmd, ports).
IMAGES = {
    "tracking-operator": {
        "path": "/usr/local/bin/tracking-operator",
        "user": NONROOT,
        "entrypoint": ["/usr/local/bin/tracking-operator"],
        "cmd": ["run"],
        "ports": ["8080/tcp", "8081/tcp"],
    },
    "tracking-worker": {
        "path": "/usr/local/bin/tracking-worker",
        "user": NONROOT,
        "entrypoint": ["/usr/local/bin/tracking-worker"],
        "cmd": [],
        "ports": [],
    },
    # The Pod sandbox: a static binary, nothing else.
    "pause": {"path": "/pause", "user": "65535:65535", "entrypoint": ["/pause"], "cmd": [], "ports": []},
}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def shared_libraries(binary):
    """Absolute paths of the libraries the dynamic loader maps for `binary` (none if static)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" ")[0]
        else:
            target = line.split(" ")[0]
        if target.startswith("/"):
            libs.append(target)
    return libs


def add_file(tar, arcpath, data, mode=0o644):
    info = tarfile.TarInfo(arcpath.lstrip("/"))
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, arcpath, mode=0o755, owner=0):
    info = tarfile.TarInfo(arcpath.lstrip("/"))
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.uid = info.gid = owner
    info.mtime = 0
    tar.addfile(info)


def strip_copy(binary, tmp):
    """A copy without debug sections when objcopy is there (debug builds are large)."""
    dst = os.path.join(tmp, os.path.basename(binary))
    if shutil.which("objcopy") and subprocess.run(
        ["objcopy", "--strip-debug", binary, dst], capture_output=True
    ).returncode == 0:
        return dst
    shutil.copyfile(binary, dst)
    return dst


def layer_tar(image, binary):
    spec = IMAGES[image]
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        with open(strip_copy(binary, tmp), "rb") as f:
            files[spec["path"]] = (f.read(), 0o755)
    for lib in shared_libraries(binary):
        with open(os.path.realpath(lib), "rb") as f:
            files[lib] = (f.read(), 0o755)
    if image != "pause":
        if os.path.isfile(CA_BUNDLE):
            with open(CA_BUNDLE, "rb") as f:
                files[CA_BUNDLE] = (f.read(), 0o644)
        files["/etc/passwd"] = (b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644)
        files["/etc/group"] = (b"root:x:0:\nnonroot:x:65532:\n", 0o644)
    dirs = {"/tmp": 0o1777, "/home/nonroot": 0o700} if image != "pause" else {}
    for path in list(files) + list(dirs):
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            dirs.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            add_dir(tar, d, dirs[d], 65532 if d == "/home/nonroot" else 0)
        for path in sorted(files):
            data, mode = files[path]
            add_file(tar, path, data, mode)
    return buf.getvalue()


def config_json(image, layer_digest):
    spec = IMAGES[image]
    config = {"User": spec["user"], "Entrypoint": spec["entrypoint"], "WorkingDir": "/", "Env": [PATH_ENV]}
    if image != "pause":
        config["Env"].append("SSL_CERT_FILE=" + CA_BUNDLE)
    if spec["cmd"]:
        config["Cmd"] = spec["cmd"]
    if spec["ports"]:
        config["ExposedPorts"] = {p: {} for p in spec["ports"]}
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "hack/mkimage.py " + image}],
    }


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def build(image, binary, out, ref):
    layer_digest, layer = blob(layer_tar(image, binary))
    config_digest, config = blob(json.dumps(config_json(image, layer_digest), sort_keys=True).encode())
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest = blob(json.dumps(manifest_obj, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
        }],
    }
    with tarfile.open(out, "w") as tar:
        add_file(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_file(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        add_dir(tar, "blobs")
        add_dir(tar, "blobs/sha256")
        for digest, data in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest)):
            add_file(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return manifest_digest


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("image", choices=sorted(IMAGES))
    p.add_argument("binary")
    p.add_argument("out")
    p.add_argument("--ref", help="image name (default localhost/IMAGE:dev)")
    p.add_argument("--print-config", action="store_true", help="print the image config as JSON and exit")
    a = p.parse_args()
    if a.print_config:
        print(json.dumps(config_json(a.image, "sha256:0"), sort_keys=True))
        return
    if not os.path.isfile(a.binary):
        sys.exit(f"error: {a.binary} does not exist (build it first: make release, or cargo build)")
    digest = build(a.image, a.binary, a.out, a.ref or f"localhost/{a.image}:dev")
    print(f"{a.out}: {a.ref or 'localhost/' + a.image + ':dev'} {digest}")


if __name__ == "__main__":
    main()
