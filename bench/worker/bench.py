#!/usr/bin/env python3
"""Drives the worker benchmark (run.sh starts the emulators and builds the binaries).

Fills a queue with `trackctl send` (25,000 updates, 5% duplicates, 0.5% poison by default),
drains it with the release-built worker, then fills a second queue with the same messages
(same seed) and drains it with baseline.py; prints both and the ratios.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import boto3

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def create_pipeline(sqs, ddb, name):
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "150",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
    })["QueueUrl"]
    s = lambda n: {"AttributeName": n, "AttributeType": "S"}
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "tracking_id", "KeyType": "HASH"},
                   {"AttributeName": "timestamp", "KeyType": "RANGE"}],
        AttributeDefinitions=[s("tracking_id"), s("timestamp"), s("status")],
        GlobalSecondaryIndexes=[{
            "IndexName": "StatusIndex",
            "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                          {"AttributeName": "timestamp", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    return queue, dlq, name


def fill(args, env, queue):
    """Starts `trackctl send`; with --shallow it keeps at most 50 messages visible, so it runs
    alongside the consumer (moto slows sharply with queue depth)."""
    cmd = [args.trackctl, "send", "--queue-url", queue, "--count", str(args.count),
           "--duplicate-percent", str(args.duplicate_percent), "--poison-percent", str(args.poison_percent),
           "--seed", str(args.seed), "--prefix", "BENCH"]
    cmd += ["--max-depth", "50", "--concurrency", "2"] if args.shallow else ["--concurrency", "16"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if args.shallow:
        return proc
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit("bench: trackctl send failed")
    return json.loads(out)


def planned(args):
    """Message counts of the plan, as trackctl computes them (round half away from zero)."""
    r = lambda x: math.floor(x + 0.5)
    dups = r(args.count * args.duplicate_percent / 100)
    poison = r(args.count * args.poison_percent / 100)
    return {"messages": args.count + dups + poison, "distinct_updates": args.count,
            "duplicates": dups, "poison": poison}


def metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        out[base] = out.get(base, 0) + float(value)
    return out


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    if os.environ.get("BENCH_DEBUG"):
        log(f"utime {int(fields[11]) / CLK_TCK}s stime {int(fields[12]) / CLK_TCK}s threads {fields[17]}")
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, hwm


def run_worker(args, env, queue, dlq, table, messages, namespace):
    port = int(os.environ.get("BENCH_METRICS_PORT", "19090"))
    wenv = dict(env, TRACKING_QUEUE_URL=queue, TRACKING_METRICS_NAMESPACE=namespace, TRACKING_DEAD_LETTER_QUEUE_URL=dlq, TRACKING_TABLE_NAME=table,
                TRACKING_PIPELINE="bench/worker", TRACKING_CONCURRENCY=str(args.concurrency),
                TRACKING_BATCH_SIZE=str(args.batch_size), TRACKING_MAX_BATCHING_WINDOW_SECONDS=str(args.window),
                TRACKING_WRITE_MODE=args.write_mode, TRACKING_AWS_CLIENT=args.client,
                TRACKING_METRICS_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn")
    t0 = time.monotonic()
    proc = subprocess.Popen([args.worker], env=wenv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # Start-up (SDK set-up, TLS roots) is a one-time cost: measure CPU from the first
    # answer on /metrics, as the baseline measures from after its clients are built.
    while not metrics(port):
        time.sleep(0.01)
        if proc.poll() is not None:
            sys.exit("bench: the worker exited early")
    cpu0, _ = proc_stats(proc.pid)
    perf = None
    if os.environ.get("BENCH_PERF"):
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(proc.pid), "-o", os.environ["BENCH_PERF"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settled = 0
    while settled < messages:
        time.sleep(0.2)
        m = metrics(port)
        settled = sum(m.get(k, 0) for k in ("tracking_worker_updates_written_total",
                                             "tracking_worker_duplicates_total",
                                             "tracking_worker_dead_lettered_total"))
        if proc.poll() is not None:
            sys.exit("bench: the worker exited early")
    wall = time.monotonic() - t0
    cpu, hwm = proc_stats(proc.pid)
    cpu -= cpu0
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1])
    return dict(report, wall_seconds=wall, cpu_seconds=cpu, peak_rss_kib=hwm)


# The services the worker, trackctl and the baseline call, by their endpoint variable's suffix.
SERVICES = ("SQS", "DYNAMODB", "CLOUDWATCH")


def loopback_only(env):
    """Every AWS service the processes call has an endpoint on this machine, so no call (the
    worker's CloudWatch publish included) goes looking for AWS's public endpoints."""
    endpoints = {}
    for service in SERVICES:
        name = f"AWS_ENDPOINT_URL_{service}"
        value = env.get(name) or env.get("AWS_ENDPOINT_URL")
        host = urllib.parse.urlparse(value or "").hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"bench: {service} endpoint {value!r} is not loopback; refusing to run")
        endpoints[service.lower()] = value
    for k, v in env.items():
        if k.startswith("AWS_ENDPOINT_URL") and urllib.parse.urlparse(v).hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"bench: {k}={v} is not loopback; refusing to run")
    return endpoints


def published_metrics(namespace):
    """The metrics the worker published to CloudWatch (moto on loopback)."""
    cw = boto3.client("cloudwatch")
    return sorted({m["MetricName"] for m in cw.list_metrics(Namespace=namespace).get("Metrics", [])})


def count_items(ddb, table):
    """(update items, bookkeeping items): bookkeeping partition keys start with '#' (the day
    counters, the dead-letter markers of poison)."""
    def count(**filter_args):
        n, kwargs = 0, dict(TableName=table, Select="COUNT", **filter_args)
        while True:
            page = ddb.scan(**kwargs)
            n += page["Count"]
            if "LastEvaluatedKey" not in page:
                return n
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    total = count()
    updates = count(FilterExpression="NOT begins_with(tracking_id, :h)", ExpressionAttributeValues={":h": {"S": "#"}})
    return updates, total - updates


def run_baseline(args, env, queue, table, valid_messages):
    out = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(__file__), "baseline.py"),
         "--queue-url", queue, "--table", table, "--expect", str(valid_messages)],
        env=env, check=True, stdout=subprocess.PIPE, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--trackctl", required=True)
    ap.add_argument("--backend", required=True, help="description printed with the results")
    ap.add_argument("--count", type=int, default=25_000)
    ap.add_argument("--duplicate-percent", type=float, default=5.0)
    ap.add_argument("--poison-percent", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--window", type=int, default=1, help="batching window, seconds")
    ap.add_argument("--write-mode", choices=["put", "transaction"], default="put")
    ap.add_argument("--client", choices=["lean", "sdk"], default="lean",
                    help="the worker's client for the hot-path calls (TRACKING_AWS_CLIENT)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--shallow", action="store_true", help="produce while draining (for moto)")
    args = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    endpoints = loopback_only(env)
    sqs, ddb = boto3.client("sqs"), boto3.client("dynamodb")
    run_id = str(int(time.time()))

    queue, dlq, table = create_pipeline(sqs, ddb, f"bench-worker-{run_id}")
    log(f"filling {queue} with {args.count} updates")
    filling = fill(args, env, queue)
    sent = planned(args)
    messages = sent["messages"]
    log(f"draining {messages} messages with the worker")
    namespace = f"TrackingOperator/Bench-{run_id}"
    w = run_worker(args, env, queue, dlq, table, messages, namespace)
    log(f"worker done in {w['wall_seconds']:.1f}s")
    cloudwatch = published_metrics(namespace)
    w["table_items"] = count_items(ddb, table)
    if args.shallow:
        filling.wait()

    b = None
    if not args.skip_baseline:
        bqueue, _, btable = create_pipeline(sqs, ddb, f"bench-baseline-{run_id}")
        log(f"filling {bqueue} with the same messages")
        bfilling = fill(args, env, bqueue)
        log("draining with the Python/boto3 baseline (the original Lambda's algorithm)")
        b = run_baseline(args, env, bqueue, btable, messages - sent["poison"])
        log(f"baseline done in {b['wall_seconds']:.1f}s")
        if args.shallow:
            bfilling.terminate()

    print()
    print(f"backend: {args.backend}")
    print(f"messages: {messages} ({sent['distinct_updates']} distinct updates, "
          f"{sent['duplicates']} duplicates, {sent['poison']} poison)")
    print(f"worker: release build, concurrency {args.concurrency} x batch {args.batch_size} "
          f"(window {args.window}s), write mode {args.write_mode}, client {args.client}")
    rows = [("worker", w, messages)]
    if b:
        rows.append(("baseline", b, b["received"]))
    calls = lambda r: r["sqs_calls"] + r["dynamodb_calls"]
    print(f"{'':10} {'wall s':>8} {'msg/s':>8} {'CPU s/1k msg':>13} {'CPU us/call':>12} {'peak RSS MiB':>13} "
          f"{'SQS calls/msg':>14} {'DDB calls/msg':>14}")
    for name, r, n in rows:
        print(f"{name:10} {r['wall_seconds']:8.1f} {n / r['wall_seconds']:8.0f} "
              f"{1000 * r['cpu_seconds'] / n:13.3f} {1e6 * r['cpu_seconds'] / max(calls(r), 1):12.0f} "
              f"{r['peak_rss_kib'] / 1024:13.1f} "
              f"{r['sqs_calls'] / n:14.3f} {r['dynamodb_calls'] / n:14.3f}")
    print(f"endpoints: {', '.join(f'{k}={v}' for k, v in sorted(endpoints.items()))}")
    print(f"worker's CloudWatch publish (moto on loopback, namespace {namespace}): "
          f"{', '.join(cloudwatch) if cloudwatch else 'NOT received'}")
    print(f"worker: written {w['written']}, duplicates {w['duplicates']}, dead-lettered {w['dead_lettered']}, "
          f"retried {w['throttles']}; table: {w['table_items'][0]} update items (expected {sent['distinct_updates']}: "
          f"{'exactly once' if w['table_items'][0] == sent['distinct_updates'] else 'MISMATCH'}), "
          f"{w['table_items'][1]} bookkeeping (day counters, dead-letter markers)")
    if b:
        wc, bc = w["cpu_seconds"] / messages, b["cpu_seconds"] / b["received"]
        print(f"baseline: succeeded {b['succeeded']} (every duplicate written again: its sort key is the "
              f"processing time), failed attempts {b['failed_attempts']} (poison left for 3 receives and redrive)")
        wcall, bcall = w["cpu_seconds"] / max(calls(w), 1), b["cpu_seconds"] / max(calls(b), 1)
        print(f"ratios (baseline / worker): CPU per message {bc / wc:.1f}x, CPU per AWS call {bcall / wcall:.1f}x, "
              f"throughput {(messages / w['wall_seconds']) / (b['received'] / b['wall_seconds']):.1f}x, "
              f"peak RSS {b['peak_rss_kib'] / max(w['peak_rss_kib'], 1):.1f}x")
        print(f"targets: CPU/msg >= 20x lower: {'met' if bc / wc >= 20 else 'NOT met'}; "
              f"RSS < 30 MB: {'met' if w['peak_rss_kib'] < 30 * 1024 else 'NOT met'}")


if __name__ == "__main__":
    main()
