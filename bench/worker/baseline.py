#!/usr/bin/env python3
"""Baseline for the worker benchmark: the original stack's processor, run as one process.

It follows the original Lambda's algorithm (and the SQS event source's polling around it):
receive up to 10 messages with a 20 s long poll, hand the batch to the handler, which walks
the records one by one (json.loads, read tracking_id, build the item with the processing
time as sort key, boto3 resource Table.put_item with attribute_not_exists(idempotency_key)),
returns batchItemFailures, and the poller deletes the successes with DeleteMessageBatch.
Its defects are kept on purpose (a redelivery writes a new item; poison is retried).

Prints one JSON line: handled messages, failures, CPU seconds, peak RSS, calls by service.
"""

import argparse
import json
import resource
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import boto3
from botocore.exceptions import ClientError


def handler(table, records):
    """The original Lambda handler's per-record logic, with partial batch failure reporting."""
    failures = []
    for record in records:
        try:
            body = json.loads(record["body"], parse_float=Decimal)
            tracking_id = body["tracking_id"]
            if not tracking_id:
                raise ValueError("tracking_id is required")
            now = datetime.now(timezone.utc)
            item = {
                "tracking_id": tracking_id,
                "timestamp": now.isoformat(),
                "message_id": record["messageId"],
                "idempotency_key": f"{tracking_id}#{record['messageId']}",
                "status": body.get("status", "UNKNOWN"),
                "location": body.get("location", ""),
                "carrier": body.get("carrier", ""),
                "details": body.get("details", {}),
                "received_at": body.get("timestamp", now.isoformat()),
                "processed_at": now.isoformat(),
                "ttl": int((now + timedelta(days=90)).timestamp()),
            }
            try:
                table.put_item(Item=item, ConditionExpression="attribute_not_exists(idempotency_key)")
            except ClientError as e:
                if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        except Exception:  # noqa: BLE001 - the original reported every failure for retry
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue-url", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--expect", type=int, required=True, help="stop after this many successes")
    args = ap.parse_args()

    calls = Counter()
    sqs = boto3.client("sqs")
    ddb = boto3.resource("dynamodb")
    for client in (sqs, ddb.meta.client):
        client.meta.events.register(
            "before-call.*.*", lambda model, **_: calls.update([model.service_model.service_name])
        )
    table = ddb.Table(args.table)

    cpu0, wall0 = time.process_time(), time.monotonic()
    succeeded = failed_attempts = received = 0
    while succeeded < args.expect:
        out = sqs.receive_message(
            QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20,
            AttributeNames=["ApproximateReceiveCount"],
        )
        messages = out.get("Messages", [])
        if not messages:
            continue
        received += len(messages)
        records = [{"messageId": m["MessageId"], "body": m["Body"], "receiptHandle": m["ReceiptHandle"]}
                   for m in messages]
        failed_ids = {f["itemIdentifier"] for f in handler(table, records)["batchItemFailures"]}
        failed_attempts += len(failed_ids)
        done = [r for r in records if r["messageId"] not in failed_ids]
        if done:
            sqs.delete_message_batch(
                QueueUrl=args.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)],
            )
        succeeded += len(done)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(json.dumps({
        "received": received,
        "succeeded": succeeded,
        "failed_attempts": failed_attempts,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "sqs_calls": calls["sqs"],
        "dynamodb_calls": calls["dynamodb"],
    }))


if __name__ == "__main__":
    sys.exit(main())
