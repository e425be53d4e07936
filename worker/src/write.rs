//! Write: a batch's updates reach the audit table exactly once.
//!
//! Each update is a conditional put (`attribute_not_exists`) on its key. When the key exists,
//! DynamoDB returns the existing item, and [`judge`] tells three cases apart:
//! - the item carries this attempt's `write_token`: our own earlier write whose answer was
//!   lost (a timeout after DynamoDB applied it) — counted as written, not as a duplicate;
//! - same content digest: a repeat (redelivery, producer retry) — a duplicate;
//! - another digest: the key was reused for different content (a legacy producer's
//!   `event_id`, a correction under the same id) — written under [`model::conflict_sort_key`],
//!   so different content is never dropped.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use sha2::{Digest, Sha256};

use crate::config::WriteMode;
use crate::error::{Error, ErrorClass, Result};
use crate::model::{self, attr};
use crate::retry::{abandoned, backoff, with_backoff};
use crate::store::{AuditOutcome, Item, ItemVerdict, TransactOutcome};
use crate::worker::Ctx;

/// Most updates a single `TransactWriteItems` call may carry.
const TRANSACT_MAX: usize = 100;
/// Contention rounds before a transaction chunk falls back to single puts.
const TRANSACT_ROUNDS: u32 = 8;

/// An update ready to be written: its index in the batch and its item.
pub struct Pending {
    pub index: usize,
    pub item: Item,
}

/// What happened to one update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Stored now (or by this attempt before its answer was lost).
    New,
    /// Stored under a conflict key, because its key held different content.
    Conflict,
    /// Already stored by an earlier delivery or a producer retry.
    Duplicate,
}

/// What the existing item under an update's key is, relative to the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    OwnEarlierWrite,
    Repeat,
    Conflict,
}

/// Compares the update's item with the one DynamoDB returned for its key. Without the old
/// item (a backend that does not return it) or without a digest on it (an item written
/// before digests were stored) the update is taken as a repeat, as before.
pub fn judge(mine: &Item, old: Option<&Item>) -> Existing {
    let Some(old) = old else {
        return Existing::Repeat;
    };
    let text = |i: &Item, k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
    let token = text(mine, attr::WRITE_TOKEN);
    if token.is_some() && token == text(old, attr::WRITE_TOKEN) {
        return Existing::OwnEarlierWrite;
    }
    match (
        text(old, attr::CONTENT_DIGEST),
        text(mine, attr::CONTENT_DIGEST),
    ) {
        (Some(a), Some(b)) if a != b => Existing::Conflict,
        _ => Existing::Repeat,
    }
}

/// The item for an update whose key holds different content.
pub fn conflict_item(item: &Item) -> Option<Item> {
    let sk = item.get(attr::TIMESTAMP)?.as_s().ok()?;
    let digest = item.get(attr::CONTENT_DIGEST)?.as_s().ok()?;
    let mut out = item.clone();
    out.insert(
        attr::TIMESTAMP.into(),
        AttributeValue::S(model::conflict_sort_key(sk, digest)),
    );
    out.insert(attr::CONFLICTS_WITH.into(), AttributeValue::S(sk.clone()));
    Some(out)
}

/// Writes a batch's updates. Repeats inside the batch (same key, same content) are
/// duplicates outright; the rest go out as concurrent conditional puts or, in
/// [`WriteMode::Transaction`], as transactions with a per-item fallback.
pub async fn write_updates(ctx: &Ctx, pending: Vec<Pending>) -> Vec<(usize, Result<Written>)> {
    let mut out = Vec::with_capacity(pending.len());
    let repeat: Vec<bool> = {
        let mut seen = HashSet::with_capacity(pending.len());
        pending
            .iter()
            .map(|p| {
                let key = [attr::TRACKING_ID, attr::TIMESTAMP, attr::CONTENT_DIGEST]
                    .map(|k| p.item.get(k).and_then(|v| v.as_s().ok()));
                !seen.insert(key)
            })
            .collect()
    };
    let mut todo = Vec::with_capacity(pending.len());
    for (p, repeat) in pending.into_iter().zip(repeat) {
        if repeat {
            out.push((p.index, Ok(Written::Duplicate)));
        } else {
            todo.push(p);
        }
    }
    match ctx.config.write_mode {
        WriteMode::Put => out.extend(write_each(ctx, todo.iter().collect()).await),
        WriteMode::Transaction => {
            for chunk in todo.chunks(TRANSACT_MAX) {
                out.extend(write_transaction(ctx, chunk).await);
            }
        }
    }
    out
}

async fn write_each(ctx: &Ctx, pending: Vec<&Pending>) -> Vec<(usize, Result<Written>)> {
    join_all(
        pending
            .into_iter()
            .map(|p| async move { (p.index, write_one(ctx, &p.item).await) }),
    )
    .await
}

/// One conditional put (retried under backoff), with the existing item on a failed condition.
async fn put_audit(ctx: &Ctx, item: &Item) -> Result<AuditOutcome> {
    with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
        ctx.store.put_audit(item)
    })
    .await
}

/// One conditional put, judged on a failed condition; a conflict is written under its
/// conflict key (itself conditional, so a redelivery of the conflicting update is a repeat).
pub async fn write_one(ctx: &Ctx, item: &Item) -> Result<Written> {
    let old = match put_audit(ctx, item).await? {
        AuditOutcome::Written => return Ok(Written::New),
        AuditOutcome::Exists(old) => old,
    };
    match judge(item, old.as_ref()) {
        Existing::OwnEarlierWrite => Ok(Written::New),
        Existing::Repeat => Ok(Written::Duplicate),
        Existing::Conflict => write_conflict(ctx, item).await,
    }
}

/// An update whose key holds different content, written under its conflict key.
async fn write_conflict(ctx: &Ctx, item: &Item) -> Result<Written> {
    let Some(conflict) = conflict_item(item) else {
        return Ok(Written::Duplicate);
    };
    tracing::warn!(
        key = ?item.get(attr::TIMESTAMP),
        "key holds different content; writing under a conflict key"
    );
    let written = match put_audit(ctx, &conflict).await? {
        AuditOutcome::Written => Written::Conflict,
        AuditOutcome::Exists(old) => match judge(&conflict, old.as_ref()) {
            Existing::OwnEarlierWrite => Written::Conflict,
            Existing::Repeat => Written::Duplicate,
            Existing::Conflict => {
                return Err(Error::Aws {
                    operation: "dynamodb.PutItem",
                    class: ErrorClass::Permanent,
                    code: None,
                    message: "conflict key holds different content (digest collision)".into(),
                });
            }
        },
    };
    if written == Written::Conflict {
        ctx.metrics.key_conflicts.inc();
    }
    Ok(written)
}

/// A chunk in transactions of conditional puts. When a transaction is cancelled, DynamoDB
/// says per item why, with the existing item of every key that exists: those are judged as
/// [`write_one`] judges them (this attempt's own earlier write, a repeat, a key conflict)
/// without another call, and only the items refused for no fault of their own (cancelled by a
/// neighbour, or contended) are sent again. An item the backend gives no existing item for,
/// or rejects, is written alone (so it is judged, or fails on its own); a request-level error
/// (the 4 MB limit, one invalid item, `IdempotentParameterMismatch`, `TransactionInProgress`)
/// sends the whole chunk to single puts, so valid neighbours are never returned to the queue
/// with it.
async fn write_transaction(ctx: &Ctx, chunk: &[Pending]) -> Vec<(usize, Result<Written>)> {
    let mut out = Vec::with_capacity(chunk.len());
    let mut todo: Vec<&Pending> = chunk.iter().collect();
    let mut round = 0u32;
    while !todo.is_empty() {
        if todo.len() == 1 || round >= TRANSACT_ROUNDS {
            out.extend(write_each(ctx, todo).await);
            break;
        }
        let items: Vec<&Item> = todo.iter().map(|p| &p.item).collect();
        let token = transaction_token(&items, round);
        let sent = with_backoff(
            &ctx.metrics,
            &ctx.abandon,
            "dynamodb",
            "TransactWriteItems",
            || ctx.store.put_new_all(&items, &token),
        )
        .await;
        match sent {
            Ok(TransactOutcome::AllWritten) => {
                out.extend(todo.iter().map(|p| (p.index, Ok(Written::New))));
                break;
            }
            Ok(TransactOutcome::Cancelled(verdicts)) => {
                let mut again = Vec::with_capacity(todo.len());
                let mut alone = Vec::new();
                let mut conflicts = Vec::new();
                let mut contended = false;
                for (p, verdict) in todo.into_iter().zip(verdicts) {
                    match verdict {
                        ItemVerdict::Fine => again.push(p),
                        ItemVerdict::Retry => {
                            contended = true;
                            again.push(p);
                        }
                        ItemVerdict::AlreadyExists(Some(old)) => match judge(&p.item, Some(&old)) {
                            Existing::OwnEarlierWrite => out.push((p.index, Ok(Written::New))),
                            Existing::Repeat => out.push((p.index, Ok(Written::Duplicate))),
                            Existing::Conflict => conflicts.push(p),
                        },
                        // Without the existing item the update cannot be judged here; a
                        // single put returns it.
                        ItemVerdict::AlreadyExists(None) | ItemVerdict::Rejected => alone.push(p),
                    }
                }
                let (singles, conflicted) = futures::join!(
                    write_each(ctx, alone),
                    join_all(
                        conflicts
                            .into_iter()
                            .map(|p| async move { (p.index, write_conflict(ctx, &p.item).await) })
                    ),
                );
                out.extend(singles);
                out.extend(conflicted);
                if contended {
                    ctx.metrics.throttled("dynamodb", "TransactWriteItems");
                    tokio::time::sleep(backoff(round)).await;
                }
                todo = again;
                round += 1;
            }
            Err(e) if abandoned(&e, &ctx.abandon) => {
                out.extend(todo.iter().map(|p| {
                    let copy = Error::Aws {
                        operation: "dynamodb.TransactWriteItems",
                        class: e.class().unwrap_or(ErrorClass::Transient),
                        code: None,
                        message: e.to_string(),
                    };
                    (p.index, Err(copy))
                }));
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, items = todo.len(), "transaction refused; writing its items one by one");
                out.extend(write_each(ctx, todo).await);
                break;
            }
        }
    }
    out
}

/// A token unique to the request's content (every attribute of every item, and the round):
/// a retry of a call whose answer was lost is answered from DynamoDB's idempotency record,
/// and no two different requests share a token (`IdempotentParameterMismatch`).
pub fn transaction_token(items: &[&Item], round: u32) -> String {
    let mut h = Sha256::new();
    for item in items {
        hash_item(&mut h, item);
        h.update([0xff]);
    }
    h.update(round.to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

fn hash_item(h: &mut Sha256, item: &Item) {
    let mut keys: Vec<&String> = item.keys().collect();
    keys.sort();
    for k in keys {
        h.update(k.as_bytes());
        h.update([0]);
        hash_attr(h, &item[k]);
    }
}

fn hash_attr(h: &mut Sha256, v: &AttributeValue) {
    match v {
        AttributeValue::S(s) => {
            h.update(b"S");
            h.update(s.as_bytes());
        }
        AttributeValue::N(n) => {
            h.update(b"N");
            h.update(n.as_bytes());
        }
        AttributeValue::Bool(b) => h.update(if *b { b"T" } else { b"F" }),
        AttributeValue::Null(_) => h.update(b"0"),
        AttributeValue::L(l) => {
            h.update(b"L");
            for e in l {
                hash_attr(h, e);
                h.update([1]);
            }
        }
        AttributeValue::M(m) => {
            h.update(b"M");
            hash_item(h, m);
        }
        other => h.update(format!("{other:?}").as_bytes()),
    }
    h.update([2]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    #[test]
    fn a_lost_answer_is_our_own_write_not_a_duplicate() {
        let mine = item(&[(attr::WRITE_TOKEN, "t1"), (attr::CONTENT_DIGEST, "d")]);
        let same_attempt = mine.clone();
        let other_delivery = item(&[(attr::WRITE_TOKEN, "t0"), (attr::CONTENT_DIGEST, "d")]);
        let other_content = item(&[(attr::WRITE_TOKEN, "t0"), (attr::CONTENT_DIGEST, "e")]);
        let legacy = item(&[(attr::MESSAGE_ID, "m")]);
        assert_eq!(judge(&mine, Some(&same_attempt)), Existing::OwnEarlierWrite);
        assert_eq!(judge(&mine, Some(&other_delivery)), Existing::Repeat);
        assert_eq!(judge(&mine, Some(&other_content)), Existing::Conflict);
        assert_eq!(judge(&mine, Some(&legacy)), Existing::Repeat);
        assert_eq!(judge(&mine, None), Existing::Repeat);
    }

    #[test]
    fn conflict_item_keeps_the_content_under_a_key_of_its_own() {
        let mine = item(&[
            (attr::TIMESTAMP, "2026-01-01T00:00:00.000Z#id:e1"),
            (attr::CONTENT_DIGEST, "abc"),
        ]);
        let c = conflict_item(&mine).unwrap();
        assert_eq!(
            c[attr::TIMESTAMP],
            AttributeValue::S("2026-01-01T00:00:00.000Z#id:e1#conflict:abc".into())
        );
        assert_eq!(
            c[attr::CONFLICTS_WITH],
            AttributeValue::S("2026-01-01T00:00:00.000Z#id:e1".into())
        );
    }

    #[test]
    fn transaction_token_follows_the_whole_content() {
        let a = item(&[
            (attr::TRACKING_ID, "T"),
            (attr::TIMESTAMP, "k"),
            ("status", "A"),
        ]);
        let b = item(&[
            (attr::TRACKING_ID, "T"),
            (attr::TIMESTAMP, "k"),
            ("status", "B"),
        ]);
        // Same keys, other content: another token (a keys-only token made DynamoDB answer
        // IdempotentParameterMismatch).
        let one = |i: &Item, round| transaction_token(&[i], round);
        assert_ne!(one(&a, 0), one(&b, 0));
        assert_eq!(one(&a, 0), one(&a, 0));
        assert_ne!(one(&a, 0), one(&a, 1));
    }
}
