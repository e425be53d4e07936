//! The lean client (`src/lean`) against the SDK, on moto: the same requests through both, to
//! two pipelines, must leave the same items in the table, give the same answers (a failed
//! condition with the existing item, a cancelled transaction's verdicts, undeleted receipt
//! handles) and the same error classes.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tracking_worker::Ctx;
use tracking_worker::config::ClientKind;
use tracking_worker::model::{Parsed, attr, parse};
use tracking_worker::store::{Item, TransactOutcome};

async fn ctx(p: &common::Pipeline, client: ClientKind) -> Ctx {
    let mut config = p.config(&testenv::moto().endpoint());
    config.client = client;
    let sdk = testenv::sdk_config_for(&testenv::moto().endpoint()).await;
    Ctx::new(config, &sdk)
}

fn item(n: usize) -> Item {
    // Every JSON type the worker stores, nested, with text that needs escaping.
    let body = format!(
        r#"{{"tracking_id":"LEAN-{n}","timestamp":"2026-11-20T12:00:0{n}Z","event_id":"e{n}",
            "status":"IN_TRANSIT","location":{{"lat":52.52,"lon":-13.405e0,"name":"Zürich \"HB\"\n"}},
            "carrier":null,"details":{{"weight":12345678901234567890123,"fragile":true,
            "tags":["a",1,false,null,{{"deep":[[]]}}],"empty":{{}}}}}}"#
    );
    let Ok(Parsed::Update(u)) = parse(&body) else {
        panic!("not an update: {body}")
    };
    u.to_item(&format!("m-{n}"), "token-1", chrono::Utc::now(), 90)
}

/// A table's items, in key order (both clients wrote the very same items).
async fn stored(p: &common::Pipeline) -> Vec<Item> {
    let mut items = p.items().await;
    items.sort_by_key(|i| format!("{:?}", i.get(attr::TIMESTAMP)));
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_sdk_writes_store_and_answer_the_same() {
    let (ps, pl) = tokio::join!(
        common::pipeline("leansdk", 30),
        common::pipeline("lean", 30)
    );
    let (sdk, lean) = tokio::join!(ctx(&ps, ClientKind::Sdk), ctx(&pl, ClientKind::Lean));
    assert!(
        lean.sqs.is_lean() && !sdk.sqs.is_lean(),
        "each client in use"
    );
    let items: Vec<Item> = (0..6).map(item).collect();
    let refs: Vec<&Item> = items.iter().collect();

    // New keys, then the same keys again: written, then the existing item comes back.
    for i in &items[..2] {
        let (a, b) = tokio::join!(sdk.store.put_audit(i), lean.store.put_audit(i));
        assert_eq!(a.expect("sdk put"), b.expect("lean put"));
        let (a, b) = tokio::join!(sdk.store.put_audit(i), lean.store.put_audit(i));
        let (a, b) = (a.expect("sdk repeat"), b.expect("lean repeat"));
        assert!(
            matches!(&b, tracking_worker::store::AuditOutcome::Exists(Some(old)) if old.get(attr::STATUS).is_some()),
            "{b:?}"
        );
        assert_eq!(a, b, "the existing item, as each client reads it");
    }
    // A transaction over two existing keys and four new ones: cancelled, with the same
    // verdicts (and existing items); then the four new ones alone: all written.
    let (a, b) = tokio::join!(
        sdk.store.put_new_all(&refs, "tok-a"),
        lean.store.put_new_all(&refs, "tok-a")
    );
    let (a, b) = (a.expect("sdk transaction"), b.expect("lean transaction"));
    assert!(
        matches!(b, TransactOutcome::Cancelled(ref v) if v.len() == 6),
        "{b:?}"
    );
    assert_eq!(a, b);
    let (a, b) = tokio::join!(
        sdk.store.put_new_all(&refs[2..], "tok-b"),
        lean.store.put_new_all(&refs[2..], "tok-b")
    );
    assert_eq!(a.expect("sdk"), TransactOutcome::AllWritten);
    assert_eq!(b.expect("lean"), TransactOutcome::AllWritten);

    let (a, b) = tokio::join!(stored(&ps), stored(&pl));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "both tables hold the same items");
    let deep = &b[0]["details"];
    assert!(
        matches!(deep, AttributeValue::M(m) if m.contains_key("tags") && m.contains_key("empty")),
        "{deep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_sdk_receive_delete_and_fail_the_same() {
    let (ps, pl) = tokio::join!(
        common::pipeline("leansdkq", 30),
        common::pipeline("leanq", 30)
    );
    let (sdk, lean) = tokio::join!(ctx(&ps, ClientKind::Sdk), ctx(&pl, ClientKind::Lean));
    let bodies: Vec<String> = (0..4)
        .map(|n| format!(r#"{{"tracking_id":"Q-{n}","note":"é\n\"{n}\""}}"#))
        .collect();
    for p in [&ps, &pl] {
        p.send_paced(&bodies, 100).await;
    }
    let (a, b) = tokio::join!(receive_all(&sdk), receive_all(&lean));
    let view = |ms: &[aws_sdk_sqs::types::Message]| {
        let mut v: Vec<_> = ms
            .iter()
            .map(|m| {
                let at = |k| m.attributes().and_then(|a| a.get(&k)).cloned();
                (
                    m.body().map(str::to_string),
                    at(MessageSystemAttributeName::ApproximateReceiveCount),
                    at(MessageSystemAttributeName::SentTimestamp).is_some(),
                    m.message_id().is_some() && m.receipt_handle().is_some(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(view(&a).len(), 4);
    assert_eq!(view(&a), view(&b));

    // Delete all but one, plus a receipt handle SQS refuses: the same failed entries.
    let (fa, fb) = tokio::join!(delete(&sdk, a), delete(&lean, b));
    assert_eq!(fa.len(), 1, "{fa:?}");
    assert_eq!(fa, fb);
    let (da, db) = tokio::join!(ps.depth(), pl.depth());
    assert_eq!(da, db, "one message left in flight in each queue");

    // A queue and a table that do not exist: the same error code and class.
    let missing_queue = format!("{}-missing", pl.queue_url);
    let (ea, eb) = tokio::join!(
        sdk.sqs.receive(&missing_queue, 1, 0, None),
        lean.sqs.receive(&missing_queue, 1, 0, None)
    );
    let (ea, eb) = (ea.expect_err("sdk"), eb.expect_err("lean"));
    assert_eq!(
        (ea.class(), code(&ea)),
        (eb.class(), code(&eb)),
        "{ea} / {eb}"
    );
    assert_eq!(
        ea.class(),
        Some(tracking_worker::error::ErrorClass::Environment)
    );

    let i = item(9);
    let missing_sdk = missing_table(&sdk).await;
    let missing_lean = missing_table(&lean).await;
    let (ea, eb) = tokio::join!(missing_sdk.put_audit(&i), missing_lean.put_audit(&i));
    let (ea, eb) = (ea.expect_err("sdk"), eb.expect_err("lean"));
    assert_eq!(
        (ea.class(), code(&ea)),
        (eb.class(), code(&eb)),
        "{ea} / {eb}"
    );
    assert_eq!(
        ea.class(),
        Some(tracking_worker::error::ErrorClass::Environment)
    );
}

async fn receive_all(c: &Ctx) -> Vec<aws_sdk_sqs::types::Message> {
    let url = &c.config.settings.queue_url;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(c.sqs.receive(url, 10, 1, Some(30)).await.expect("receive"));
        if got.len() >= 4 {
            break;
        }
    }
    got
}

/// Deletes all but the first message, plus a receipt handle SQS refuses; the failed entries.
async fn delete(c: &Ctx, ms: Vec<aws_sdk_sqs::types::Message>) -> Vec<(String, bool, String)> {
    let handles: Vec<String> = ms[1..]
        .iter()
        .filter_map(|m| m.receipt_handle().map(str::to_string))
        .collect();
    let mut entries: Vec<(String, &str)> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| (i.to_string(), h.as_str()))
        .collect();
    entries.push(("bogus".into(), "not-a-receipt-handle"));
    let failed = c
        .sqs
        .delete_batch(&c.config.settings.queue_url, &entries)
        .await
        .expect("delete batch");
    failed
        .into_iter()
        .map(|f| (f.id, f.sender_fault, f.code))
        .collect()
}

/// A context whose table does not exist, on the same client kind.
async fn missing_table(c: &Ctx) -> tracking_worker::store::Store {
    let mut config = c.config.clone();
    config.settings.table_name = format!("{}-missing", config.settings.table_name);
    let sdk = testenv::sdk_config_for(&testenv::moto().endpoint()).await;
    Ctx::new(config, &sdk).store
}

fn code(e: &tracking_worker::error::Error) -> Option<String> {
    match e {
        tracking_worker::error::Error::Aws { code, .. } => code.clone(),
        _ => None,
    }
}
