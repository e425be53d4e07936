#!/usr/bin/env python3
"""Run every test binary of the workspace, two at a time, longest first.

`cargo test` runs its binaries one after the other, and most of ours spend their time waiting on
a real kube-apiserver, moto or a Pod rather than on the CPU, so two lanes roughly halve the wall
time on this 2-core machine. Binaries that start the node (kubelet + containerd, one per host:
they share the pod bridge and /var/lib/kubelet) never run beside each other.

Each binary runs where `cargo test` would run it (its package's folder); its output is kept in
target/test-logs and printed in full when it fails. Durations are remembered in
target/test-times.json so that the next run starts the longest binaries first.

Usage: hack/run-tests.py   (TEST_JOBS=N sets the number of lanes, default 2; TEST_JOBS=1 is
`cargo test`'s order; TEST_THREADS=N the tests run at once inside a binary, default 4)
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
LOGS = TARGET / "test-logs"
TIMES = TARGET / "test-times.json"
# Durations measured on this machine, for the first run of a fresh clone.
SEED_TIMES = ROOT / "hack" / "test-times.json"
# Test binaries that start a node (testenv::cluster(), or the node's own tests).
NODE_BINARIES = {("tracking-operator", "on_node"), ("testenv", "node")}
# A binary never timed before is assumed to be this long (seconds), so new ones start early.
UNKNOWN_SECONDS = 30.0


def test_binaries():
    """Builds every test target and returns [(package, target name, kind, executable, folder)]."""
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True,
    ).stdout)
    names = {p["manifest_path"]: p["name"] for p in meta["packages"]}
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"],
        cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        kind = msg["target"]["kind"][0]
        found.append((names[msg["manifest_path"]], msg["target"]["name"], kind, msg["executable"],
                      Path(msg["manifest_path"]).parent))
    return found


def main():
    jobs = int(os.environ.get("TEST_JOBS", "2"))
    binaries = test_binaries()
    times = json.loads((TIMES if TIMES.exists() else SEED_TIMES).read_text())
    key = lambda b: f"{b[0]}/{b[2]}/{b[1]}"
    queue = sorted(binaries, key=lambda b: -times.get(key(b), UNKNOWN_SECONDS))
    LOGS.mkdir(parents=True, exist_ok=True)

    lock = threading.Condition()
    node_busy = [False]
    results = []
    start = time.monotonic()

    def take():
        """The next binary this lane may start, or None when none is left."""
        with lock:
            while True:
                if not queue:
                    return None
                for i, b in enumerate(queue):
                    node = (b[0], b[1]) in NODE_BINARIES
                    if not node or not node_busy[0]:
                        if node:
                            node_busy[0] = True
                        return queue.pop(i)
                lock.wait()

    def lane():
        while (b := take()) is not None:
            pkg, name, kind, exe, pkg_dir = b
            log = LOGS / f"{pkg}-{kind}-{name}.log"
            env = dict(os.environ, CARGO_MANIFEST_DIR=str(pkg_dir), CARGO_PKG_NAME=pkg)
            # Tests inside a binary mostly wait too (a visibility timeout, a rollout), so each
            # binary runs up to TEST_THREADS of its tests at once, not one per core.
            env.setdefault("RUST_TEST_THREADS", os.environ.get("TEST_THREADS", "4"))
            t0 = time.monotonic()
            with open(log, "w") as f:
                rc = subprocess.run([exe], cwd=pkg_dir, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
            took = time.monotonic() - t0
            with lock:
                if (pkg, name) in NODE_BINARIES:
                    node_busy[0] = False
                lock.notify_all()
                results.append((b, rc, took))
                times[key(b)] = round(took, 1)
                report(b, rc, took, log, time.monotonic() - start)

    threads = [threading.Thread(target=lane) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))

    print(">> doc tests", flush=True)
    doc = subprocess.run(["cargo", "test", "--workspace", "--doc", "--quiet"], cwd=ROOT).returncode

    failed = [b for b, rc, _ in results if rc != 0]
    busy = sum(t for _, _, t in results)
    print(f">> {len(results)} test binaries, {busy:.0f}s of test time in {time.monotonic() - start:.0f}s with {jobs} lanes")
    if failed or doc != 0:
        for b in failed:
            print(f"FAILED: {b[0]} {b[2]} {b[1]} (log: {LOGS / f'{b[0]}-{b[2]}-{b[1]}.log'})")
        if doc != 0:
            print("FAILED: doc tests")
        sys.exit(1)


def report(b, rc, took, log, elapsed):
    pkg, name, kind, *_ = b
    text = log.read_text(errors="replace")
    summary = [l for l in text.splitlines() if l.startswith("test result:")]
    status = "ok  " if rc == 0 else "FAIL"
    print(f"[{elapsed:5.0f}s] {status} {took:6.1f}s  {pkg} {kind} {name}  {summary[-1] if summary else ''}", flush=True)
    if rc != 0:
        lines = text.splitlines()
        print("\n".join(lines[-400:]), flush=True)


if __name__ == "__main__":
    main()
