"""Draws the demo's run as a PNG: throughput, backlog and end-to-end latency over time.

Usage: demo_chart.py SAMPLES.json OUT.png

SAMPLES.json is what hack/demo_report.py recorded while the worker Pods drained the queue:
every ~2 s the queue's depth (SQS) and the workers' counters (written + duplicates, and the
end-to-end latency histogram's sum and count, summed over every worker Pod).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt  # noqa: E402


def rates(samples):
    """Per interval between two samples: messages/s and the mean end-to-end latency."""
    out = []
    for a, b in zip(samples, samples[1:]):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        done = b["done"] - a["done"]
        count = b["latency_count"] - a["latency_count"]
        latency = (b["latency_sum"] - a["latency_sum"]) / count if count > 0 else None
        out.append((b["t"], done / dt, latency))
    return out


def main():
    samples = json.load(open(sys.argv[1]))
    if len(samples) < 2:
        print("too few samples for a chart", file=sys.stderr)
        return 1
    per = rates(samples)
    fig, (top, mid, low) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    top.plot([t for t, _, _ in per], [r for _, r, _ in per], color="tab:blue")
    top.set_ylabel("messages/s")
    top.set_title("make demo: the worker Pods draining the queue")
    mid.plot([s["t"] for s in samples], [s["backlog"] for s in samples], color="tab:orange")
    mid.set_ylabel("backlog (visible + in flight)")
    lat = [(t, v) for t, _, v in per if v is not None]
    low.plot([t for t, _ in lat], [v for _, v in lat], color="tab:green")
    low.set_ylabel("end-to-end latency (s, mean)")
    low.set_xlabel("seconds since the first message was sent")
    for ax in (top, mid, low):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
