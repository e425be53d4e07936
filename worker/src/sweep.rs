//! Sweep: valid updates that SQS moved to the dead-letter queue are stored and taken out of it.
//!
//! The worker dead-letters only poison, itself, with a reason attribute. A message SQS moved
//! (no reason) is one whose deliveries were lost `maxReceiveCount` times: receives answered to
//! replicas as they were killed, beyond what the requeue at receipt can see (see
//! [`crate::requeue`]). Nothing is wrong with it, and usually its item is already written. So
//! every [`Config::dlq_sweep`](crate::config::Config) each replica looks at the DLQ (one
//! `GetQueueAttributes` while it is empty, the normal case) and handles each message without
//! a reason once, as the main queue's consumer would:
//!
//! - an update is written with the same conditional put (same key, same digest), then deleted
//!   from the DLQ: stored now, or found already stored;
//! - poison is dead-lettered with its reason (the marker keeps it to one copy), and the
//!   reasonless original deleted;
//! - the daily maintenance message, and anything that cannot be handled now (the table
//!   refuses writes), is left where it is for people to see.
//!
//! A sweep leases every message it looks at, as `trackctl dlq list` does, until a receive
//! comes back empty (up to [`MAX_MESSAGES`]): SQS, and ElasticMQ even more so, hands out the
//! oldest messages first, so a sweep that handed each page back at once would see the same
//! hundred of a large DLQ every time. Every lease not ending in a delete is handed back when
//! the sweep ends, so people and redrives see the DLQ as it was. A sweep that meets a message
//! twice (its lease ran out during a slow write) stops there.
//!
//! Looking at the whole DLQ costs about two calls per ten messages, so the periodic sweep
//! skips a DLQ that has not grown since a sweep that left nothing to do later: a message SQS
//! moves makes it grow.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, Message, QueueAttributeName};
use chrono::Utc;

use crate::consumer::{dlq_attr, sent_at, write_token};
use crate::error::{Error, Result};
use crate::model::{self, Parsed};
use crate::settle::{Outcome, dead_letter_from, delete_from};
use crate::worker::Ctx;
use crate::write::{Pending, Written, write_updates};

/// How long a sweep holds the messages it looks at (handed back sooner).
const LEASE_SECONDS: i32 = 30;
/// Messages one sweep looks at, at most.
pub const MAX_MESSAGES: usize = 1_000;
/// How long one update's write may take (retries of an outage included) before it is left
/// for a later sweep: well inside the lease, so no other sweep takes the message meanwhile.
const WRITE_LIMIT: Duration = Duration::from_secs(20);

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Every visible message was looked at (an empty receive ended the sweep).
    pub complete: bool,
    /// Messages SQS moved that could not be handled now (the table refused the write).
    pub retry_later: u64,
    /// Updates SQS had moved that were not in the table: written now.
    pub written: u64,
    /// Updates SQS had moved whose item was already written.
    pub already_stored: u64,
    /// Reasonless poison, dead-lettered again with its reason.
    pub poison: u64,
    /// Messages left in the DLQ (the worker's own, with a reason; maintenance; failures).
    pub left: u64,
}

impl Swept {
    /// Whether anything was taken out of the DLQ.
    pub fn took_back(&self) -> bool {
        self.written + self.already_stored + self.poison > 0
    }
}

/// Sweeps the DLQ every `ctx.config.dlq_sweep` until `stop` fires.
pub async fn sweep_periodically(ctx: Arc<Ctx>, stop: tokio_util::sync::CancellationToken) {
    let every = ctx.config.dlq_sweep;
    if every.is_zero() {
        return;
    }
    // The DLQ's depth after a sweep that left nothing to do later.
    let mut quiet: Option<i64> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // While the table refuses writes nothing here could be stored either.
        if ctx.metrics.any_environment_failing() {
            continue;
        }
        let depth = match visible(&ctx).await {
            Ok(depth) => depth,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the dead-letter queue's depth");
                continue;
            }
        };
        if depth == 0 || quiet.is_some_and(|q| depth <= q) {
            // Smaller (a redrive, retention): growth is measured from here.
            quiet = Some(depth);
            continue;
        }
        match sweep_visible(&ctx).await {
            Ok(s) => {
                if s.took_back() || s.retry_later > 0 {
                    tracing::info!(?s, "dead-letter queue swept");
                }
                quiet = (s.complete && s.retry_later == 0).then_some(depth);
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep the dead-letter queue"),
        }
    }
}

/// One sweep of the DLQ (see the module doc).
pub async fn sweep(ctx: &Ctx) -> Result<Swept> {
    if visible(ctx).await? == 0 {
        return Ok(Swept {
            complete: true,
            ..Swept::default()
        });
    }
    sweep_visible(ctx).await
}

async fn sweep_visible(ctx: &Ctx) -> Result<Swept> {
    let dlq = &ctx.config.settings.dead_letter_queue_url;
    let mut swept = Swept::default();
    let mut seen = HashSet::new();
    let mut held = Vec::new();
    let result = receive_all(ctx, dlq, &mut swept, &mut seen, &mut held).await;
    release(ctx, dlq, &held).await;
    result.map(|()| swept)
}

/// Leases and handles messages until a receive comes back empty (or a bound is met);
/// `held` collects the leases to hand back.
async fn receive_all(
    ctx: &Ctx,
    dlq: &str,
    swept: &mut Swept,
    seen: &mut HashSet<String>,
    held: &mut Vec<String>,
) -> Result<()> {
    while seen.len() < MAX_MESSAGES {
        ctx.metrics.call("sqs", "ReceiveMessage");
        let messages = ctx.sqs.receive(dlq, 10, 0, Some(LEASE_SECONDS)).await?;
        if messages.is_empty() {
            swept.complete = true;
            return Ok(());
        }
        let mut again = false;
        for m in &messages {
            let Some(receipt) = m.receipt_handle() else {
                continue;
            };
            if !seen.insert(m.message_id().unwrap_or_default().to_string()) {
                held.push(receipt.to_string());
                again = true;
                continue;
            }
            let recovered = if has_reason(m) {
                false
            } else {
                recover(ctx, m, swept).await
            };
            if !recovered {
                swept.left += 1;
                held.push(receipt.to_string());
            }
        }
        if again || ctx.stop.is_cancelled() {
            return Ok(());
        }
    }
    Ok(())
}

fn has_reason(m: &Message) -> bool {
    m.message_attributes()
        .is_some_and(|a| a.contains_key(dlq_attr::REASON))
}

/// Handles one message SQS moved; whether it is gone from the DLQ.
async fn recover(ctx: &Ctx, m: &Message, swept: &mut Swept) -> bool {
    let dlq = &ctx.config.settings.dead_letter_queue_url;
    let receipt = m.receipt_handle().unwrap_or_default().to_string();
    match model::parse_message(m.body().unwrap_or_default(), sent_at(m)) {
        Ok(Parsed::Update(u)) => {
            let item = u.to_item(
                crate::requeue::source_message_id(m),
                &write_token(),
                Utc::now(),
                ctx.config.settings.ttl_days,
            );
            let write = write_updates(ctx, vec![Pending { index: 0, item }]);
            let Ok(written) = tokio::time::timeout(WRITE_LIMIT, write).await else {
                tracing::warn!(
                    message_id = m.message_id(),
                    "the table did not take an update from the dead-letter queue in time; leaving it there"
                );
                swept.retry_later += 1;
                return false;
            };
            let outcome = match written.into_iter().next().map(|(_, r)| r) {
                Some(Ok(Written::New | Written::Conflict)) => {
                    ctx.metrics.record_written();
                    ctx.counters.record_status(&u.status);
                    swept.written += 1;
                    "written"
                }
                Some(Ok(Written::Duplicate)) => {
                    swept.already_stored += 1;
                    "already_stored"
                }
                Some(Err(e)) => {
                    tracing::warn!(message_id = m.message_id(), error = %e, "could not store an update from the dead-letter queue; leaving it there");
                    swept.retry_later += 1;
                    return false;
                }
                None => return false,
            };
            ctx.metrics.record_recovered(outcome);
            tracing::info!(
                message_id = m.message_id(),
                source_message_id = crate::requeue::source_message_id(m),
                outcome,
                "update moved to the dead-letter queue by SQS taken back"
            );
            delete_from(ctx, dlq, vec![receipt]).await == 0
        }
        // The day's run is for people to look at once it failed this often.
        Ok(Parsed::Maintenance(_)) => false,
        Err(poison) => match dead_letter_from(ctx, m, &poison, dlq).await {
            Outcome::Deleted | Outcome::Delete => {
                swept.poison += 1;
                true
            }
            Outcome::Retry(_) | Outcome::Leave => {
                swept.retry_later += 1;
                false
            }
        },
    }
}

async fn visible(ctx: &Ctx) -> Result<i64> {
    ctx.metrics.call("sqs", "GetQueueAttributes");
    let out = ctx
        .sqs
        .get_queue_attributes()
        .queue_url(&ctx.config.settings.dead_letter_queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| Error::aws("sqs.GetQueueAttributes", e))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Hands leases back, ten per call; best effort, a lease not handed back ends by itself.
async fn release(ctx: &Ctx, url: &str, receipts: &[String]) {
    for chunk in receipts.chunks(10) {
        let entries = chunk.iter().enumerate().filter_map(|(i, receipt)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .build()
                .ok()
        });
        ctx.metrics.call("sqs", "ChangeMessageVisibilityBatch");
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            ctx.sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries.collect()))
                .send(),
        )
        .await;
    }
}
