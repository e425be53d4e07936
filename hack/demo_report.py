"""Waits for a demo pipeline's queue to drain, then prints what happened.

Run by hack/demo.sh with moto's virtualenv (which has boto3). Reads the pipeline's outputs from
its status, the queues and table from AWS, and the worker's Prometheus metrics.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import boto3


def kubectl_json(*args):
    return json.loads(subprocess.check_output(["kubectl", *args, "-o", "json"]))


def metrics(urls):
    """Every worker's samples, summed by series (counters and histogram buckets add up)."""
    out = {}
    for url in urls:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def quantile_from_histogram(m, base, q):
    buckets = []
    for k, v in m.items():
        match = re.match(re.escape(base) + r'_bucket\{.*le="([^"]+)".*\}', k)
        if match:
            le = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
            buckets.append((le, v))
    if not buckets:
        return None
    buckets.sort()
    count = buckets[-1][1]
    if count == 0:
        return None
    for le, cumulative in buckets:
        if cumulative >= q * count:
            return le
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--namespace", required=True)
    p.add_argument("--pipeline", required=True)
    p.add_argument("--sent", required=True)
    p.add_argument("--worker-metrics", required=True, action="append",
                   help="a worker's /metrics URL; repeat for every worker Pod")
    p.add_argument("--send-start", type=float, required=True)
    p.add_argument("--ready-after", type=float, required=True)
    p.add_argument("--samples", help="write the run's time series here (JSON) for the chart")
    p.add_argument("--sender-pid", type=int,
                   help="the sender still running: sample until it exits and the queue is empty")
    a = p.parse_args()

    tp = kubectl_json("-n", a.namespace, "get", "trackingpipeline", a.pipeline)
    out = tp.get("status", {}).get("outputs", {})
    sqs = boto3.client("sqs")
    ddb = boto3.client("dynamodb")

    def sending():
        if a.sender_pid is None:
            return False
        try:
            os.kill(a.sender_pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (exited, not yet reaped by the shell) has finished sending.
        try:
            with open(f"/proc/{a.sender_pid}/stat") as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def depth(url):
        attrs = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    last = None
    samples = []
    while True:
        d = depth(out["queueUrl"])
        m = metrics(a.worker_metrics)
        done = total(m, "tracking_worker_updates_written_total") + total(m, "tracking_worker_duplicates_total")
        samples.append({
            "t": time.time() - a.send_start,
            "backlog": d,
            "done": done,
            "latency_sum": total(m, "tracking_worker_end_to_end_latency_seconds_sum"),
            "latency_count": total(m, "tracking_worker_end_to_end_latency_seconds_count"),
        })
        line = f"  queue depth {d:6d}   written {int(done):6d}"
        if line != last:
            print(line, flush=True)
            last = line
        if d == 0 and not sending():
            break
        time.sleep(2)
    drained = time.time()
    if a.samples:
        with open(a.samples, "w") as f:
            json.dump(samples, f)

    sent = json.load(open(a.sent))
    m = metrics(a.worker_metrics)
    written = total(m, "tracking_worker_updates_written_total")
    dups = total(m, "tracking_worker_duplicates_total")
    items = 0
    # Items whose tracking_id starts with '#' are the worker's own bookkeeping (day counters,
    # maintenance claims), not tracking updates.
    kwargs = {
        "TableName": out["tableName"], "Select": "COUNT",
        "FilterExpression": "NOT begins_with(tracking_id, :h)",
        "ExpressionAttributeValues": {":h": {"S": "#"}},
    }
    while True:
        page = ddb.scan(**kwargs)
        items += page["Count"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    reasons = {}
    seen = set()
    for _ in range(20):
        resp = sqs.receive_message(
            QueueUrl=out["deadLetterQueueUrl"], MaxNumberOfMessages=10, VisibilityTimeout=30,
            MessageAttributeNames=["All"], WaitTimeSeconds=0,
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            break
        for msg in msgs:
            if msg["MessageId"] in seen:
                continue
            seen.add(msg["MessageId"])
            attrs = msg.get("MessageAttributes", {})
            reason = next((v.get("StringValue") for k, v in attrs.items() if "reason" in k.lower()), "unknown")
            reasons[reason] = reasons.get(reason, 0) + 1

    elapsed = drained - a.send_start
    messages = sent.get("messages") or sent.get("messages_sent") or 0
    print()
    print("AWS resources (from the pipeline's status)")
    for k in sorted(out):
        if k != "workerPolicy":
            print(f"  {k:22s} {out[k]}")
    print()
    print("Traffic")
    print(f"  messages sent          {messages}  ({json.dumps({k: v for k, v in sent.items() if k != 'seed'})})")
    print(f"  updates written        {int(written)}  (update items in the table: {items})")
    print(f"  duplicates absorbed    {int(dups)}")
    requeued = total(m, "tracking_worker_requeued_total")
    if requeued:
        print(f"  requeued as fresh copies {int(requeued)}  (deliveries lost near SQS's receive limit)")
    print(f"  in the DLQ             {len(seen)}  by reason: {json.dumps(reasons)}")
    print(f"  pipeline Ready after   {a.ready_after:.1f} s")
    print(f"  send + drain           {elapsed:.1f} s  ->  {messages / elapsed:.0f} messages/s (moto backend)")
    for q in (0.5, 0.99):
        v = quantile_from_histogram(m, "tracking_worker_end_to_end_latency_seconds", q)
        if v is not None:
            print(f"  end-to-end latency p{int(q * 100):<3d} <= {v} s (SQS SentTimestamp -> audit item written)")
    b50 = quantile_from_histogram(m, "tracking_worker_batch_duration_seconds", 0.5)
    b99 = quantile_from_histogram(m, "tracking_worker_batch_duration_seconds", 0.99)
    if b50 is not None:
        print(f"  batch latency          p50 <= {b50} s, p99 <= {b99} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
