//! Transaction mode against moto, through the fault layer: a cancelled transaction judges the
//! keys that exist from the items DynamoDB returns with the cancellation (no call per item)
//! and resends only the rest; a request-level error writes the chunk one item at a time, so
//! no valid update goes back to the queue with it.

mod common;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use testenv::faults::{FaultProxy, Rule};
use tracking_worker::config::WriteMode;
use tracking_worker::model::{Parsed, attr, parse};
use tracking_worker::write::{Pending, Written, write_one, write_updates};

fn body(prefix: &str, n: usize, status: &str) -> String {
    format!(
        r#"{{"tracking_id":"{prefix}-{n}","timestamp":"2026-11-20T12:00:00Z","event_id":"e{n}","status":"{status}"}}"#
    )
}

fn item(body: &str, token: &str) -> HashMap<String, AttributeValue> {
    let Ok(Parsed::Update(u)) = parse(body) else {
        panic!("not an update: {body}")
    };
    u.to_item("m-1", token, chrono::Utc::now(), 90)
}

async fn transaction_ctx(p: &common::Pipeline, proxy: &FaultProxy) -> tracking_worker::Ctx {
    let mut ctx = p.ctx_at(&proxy.endpoint()).await;
    ctx.config.write_mode = WriteMode::Transaction;
    ctx
}

fn by_index(
    out: Vec<(usize, tracking_worker::error::Result<Written>)>,
) -> BTreeMap<usize, Written> {
    out.into_iter()
        .map(|(i, r)| (i, r.unwrap_or_else(|e| panic!("update {i} failed: {e}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_resends_only_what_was_not_refused() {
    let p = common::pipeline("txcancel", 30).await;
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    let direct = p.ctx().await;
    // Already in the table before the batch: five updates an earlier delivery wrote, one this
    // very attempt wrote before its answer was lost, and one key holding other content.
    for n in 0..5 {
        write_one(&direct, &item(&body("TX", n, "A"), "earlier-delivery"))
            .await
            .expect("seed");
    }
    write_one(&direct, &item(&body("TX", 5, "A"), "this-attempt"))
        .await
        .expect("seed");
    write_one(&direct, &item(&body("TX", 6, "OTHER"), "earlier-delivery"))
        .await
        .expect("seed");

    let ctx = transaction_ctx(&p, &proxy).await;
    let pending: Vec<Pending> = (0..20)
        .map(|n| Pending {
            index: n,
            item: item(&body("TX", n, "A"), "this-attempt"),
        })
        .collect();
    let started = std::time::Instant::now();
    let out = by_index(write_updates(&ctx, pending).await);
    eprintln!(
        "20 updates in {:?}: {:?}",
        started.elapsed(),
        proxy.call_counts()
    );

    for n in 0..5 {
        assert_eq!(out[&n], Written::Duplicate, "update {n}");
    }
    assert_eq!(out[&5], Written::New, "this attempt's own earlier write");
    assert_eq!(out[&6], Written::Conflict, "other content under the key");
    for n in 7..20 {
        assert_eq!(out[&n], Written::New, "update {n}");
    }
    // One transaction of 20, cancelled; one of the 13 that were refused for a neighbour's
    // sake; one put for the conflict key. The refused keys cost no call of their own.
    assert_eq!(proxy.calls("dynamodb", "TransactWriteItems"), 2);
    assert_eq!(
        proxy.calls("dynamodb", "PutItem"),
        1,
        "only the conflict key is written alone"
    );
    let items = p.items().await;
    assert_eq!(items.len(), 21, "20 keys and one conflict key");
    assert_eq!(ctx.metrics.report().key_conflicts, 1);
    let conflict = p.items_of("TX-6").await;
    let statuses: std::collections::BTreeSet<_> = conflict
        .iter()
        .filter_map(|i| common::text(i, attr::STATUS))
        .collect();
    assert_eq!(statuses, ["A", "OTHER"].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_transaction_errors_fall_back_to_single_puts() {
    let p = common::pipeline("txrefused", 30).await;
    let proxy = FaultProxy::start(&testenv::moto().endpoint());
    let ctx = transaction_ctx(&p, &proxy).await;
    let codes = [
        "ValidationException",
        "IdempotentParameterMismatchException",
        "TransactionInProgressException",
    ];
    for (c, code) in codes.iter().enumerate() {
        proxy.reset_counts();
        proxy.add_rule(Rule::error("dynamodb", "TransactWriteItems", code).times(1));
        let pending: Vec<Pending> = (0..5)
            .map(|n| Pending {
                index: n,
                item: item(&body(&format!("TR{c}"), n, "A"), &format!("attempt-{c}")),
            })
            .collect();
        let out = by_index(write_updates(&ctx, pending).await);
        assert!(
            out.values().all(|w| *w == Written::New) && out.len() == 5,
            "{code}: {out:?}"
        );
        assert_eq!(
            proxy.faulted("dynamodb", "TransactWriteItems"),
            1,
            "{code} was answered"
        );
        assert_eq!(
            proxy.calls("dynamodb", "PutItem"),
            5,
            "{code}: every item written alone"
        );
    }
    assert_eq!(p.update_keys().await.len(), 15);
    let report = ctx.metrics.report();
    assert_eq!((report.failed, report.dead_lettered), (0, 0), "{report:?}");
}
