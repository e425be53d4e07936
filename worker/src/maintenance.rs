//! The daily maintenance job, and the per-day counters it summarises.
//!
//! The schedule's message may reach several replicas (and EventBridge delivers at least
//! once), so the job first claims the day with a conditional put; only the claimant records
//! the DLQ depth and sample and writes the summary (itself a conditional put, so a day never
//! gets two). The summary comes from counters every replica adds to while processing — no
//! table scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::consumer::dlq_attr;
use crate::error::{Error, Result};
use crate::model::{MaintenanceRequest, attr, s, ttl_attr};
use crate::retry::with_backoff;
use crate::store::PutOutcome;
use crate::worker::Ctx;

/// Partition keys of the worker's bookkeeping items (reserved: producers cannot use `#`).
pub const PK_STATS: &str = "#STATS";
pub const PK_CLAIM: &str = "#MAINTENANCE";
pub const PK_SUMMARY: &str = "#SUMMARY";
pub const PK_DLQ: &str = "#DLQ";
/// `status` of the items the job writes, so the `StatusIndex` finds them.
pub const STATUS_DLQ_DETECTED: &str = "DLQ_DETECTED";
pub const STATUS_DAILY_SUMMARY: &str = "DAILY_SUMMARY";
/// Counter attribute names on a `#STATS` item.
pub const COUNT_PREFIX: &str = "count:";
pub const COUNT_DUPLICATES: &str = "duplicates";
pub const COUNT_DEAD_LETTERED: &str = "dead_lettered";
/// DLQ messages recorded per run.
pub const DLQ_SAMPLE_SIZE: i32 = 10;
/// A claim older than this whose job never finished (the replica died) may be taken over
/// when SQS redelivers the schedule's message. Shorter than the queue's visibility timeout.
pub const CLAIM_STALE_SECONDS: i64 = 120;
/// How often each replica adds the day counters it kept to the table.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct DayCounts {
    pub statuses: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

/// In-memory counts per processing day (UTC), flushed to the table every few seconds with
/// atomic `ADD`s, so any replica can read the whole pipeline's day.
#[derive(Default)]
pub struct DailyCounters {
    days: Mutex<BTreeMap<NaiveDate, DayCounts>>,
}

impl DailyCounters {
    fn with_today(&self, f: impl FnOnce(&mut DayCounts)) {
        if let Ok(mut days) = self.days.lock() {
            f(days.entry(Utc::now().date_naive()).or_default());
        }
    }

    pub fn record_status(&self, status: &str) {
        self.with_today(|d| *d.statuses.entry(status.to_string()).or_default() += 1);
    }

    pub fn record_duplicate(&self) {
        self.with_today(|d| d.duplicates += 1);
    }

    pub fn record_dead_lettered(&self) {
        self.with_today(|d| d.dead_lettered += 1);
    }

    fn take(&self) -> BTreeMap<NaiveDate, DayCounts> {
        self.days
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// Puts back counts that could not be flushed.
    fn restore(&self, day: NaiveDate, counts: DayCounts) {
        if let Ok(mut days) = self.days.lock() {
            let d = days.entry(day).or_default();
            for (status, n) in counts.statuses {
                *d.statuses.entry(status).or_default() += n;
            }
            d.duplicates += counts.duplicates;
            d.dead_lettered += counts.dead_lettered;
        }
    }
}

/// The counter attributes for one day, as (attribute name, increment).
pub fn counter_attributes(counts: &DayCounts) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = counts
        .statuses
        .iter()
        .map(|(status, n)| (format!("{COUNT_PREFIX}{status}"), *n))
        .collect();
    for (name, n) in [
        (COUNT_DUPLICATES, counts.duplicates),
        (COUNT_DEAD_LETTERED, counts.dead_lettered),
    ] {
        if n > 0 {
            out.push((name.to_string(), n));
        }
    }
    out
}

/// Reads a `#STATS` item back into counts.
pub fn parse_counts(item: &HashMap<String, AttributeValue>) -> DayCounts {
    let number = |v: &AttributeValue| {
        v.as_n()
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut counts = DayCounts::default();
    for (name, value) in item {
        if let Some(status) = name.strip_prefix(COUNT_PREFIX) {
            counts.statuses.insert(status.to_string(), number(value));
        } else if name == COUNT_DUPLICATES {
            counts.duplicates = number(value);
        } else if name == COUNT_DEAD_LETTERED {
            counts.dead_lettered = number(value);
        }
    }
    counts
}

pub async fn flush_counters(ctx: &Ctx) {
    let ttl_days = ctx.config.settings.ttl_days;
    for (day, counts) in ctx.counters.take() {
        let attrs = counter_attributes(&counts);
        let sk = day.to_string();
        let mut result = Ok(());
        // An update expression is limited to 4 KB; 40 counters stay well inside it.
        for chunk in attrs.chunks(40) {
            // One token per chunk, reused by every retry of it, so a lost answer never counts twice.
            let token = format!("{:016x}", rand::random::<u64>());
            // One attribute per replica, so replicas flushing the same day never refuse each
            // other's counts.
            let token_attr = format!("flush:{}", ctx.config.replica);
            result = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "UpdateItem", || {
                ctx.store.add_counts(
                    PK_STATS,
                    &sk,
                    chunk,
                    Some((attr::TTL, ttl_attr(Utc::now(), ttl_days))),
                    (&token_attr, &token),
                )
            })
            .await;
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            // Chunks already added stay added; only a failure before the first ADD is restored
            // exactly. Counters are for the daily report, not the audit trail.
            tracing::warn!(error = %e, day = %sk, "could not flush day counters; will retry");
            if attrs.len() <= 40 {
                ctx.counters.restore(day, counts);
            }
        }
    }
}

pub async fn flush_counters_periodically(ctx: std::sync::Arc<Ctx>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => flush_counters(&ctx).await,
            _ = stop.cancelled() => return,
        }
    }
}

/// The day a maintenance run belongs to, and the day it summarises (the one before).
pub fn run_days(request: &MaintenanceRequest, now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let run_day = request.scheduled_time.unwrap_or(now).date_naive();
    (run_day, run_day.pred_opt().unwrap_or(run_day))
}

/// How many days back a run looks for days with counters and no summary: a missed run
/// (an outage, a schedule in a time zone whose DST shift skipped 01:00) leaves no day out.
pub const SUMMARY_LOOKBACK_DAYS: u64 = 7;

/// The days a run summarises if they have counters and no summary yet, oldest first.
pub fn days_to_summarise(summary_day: NaiveDate) -> Vec<NaiveDate> {
    (0..SUMMARY_LOOKBACK_DAYS)
        .rev()
        .filter_map(|back| summary_day.checked_sub_days(chrono::Days::new(back)))
        .collect()
}

/// How long to wait before reading `day`'s counters: every replica flushes every
/// [`FLUSH_EVERY`], so a day's counters are complete two flush periods after it ends. A run
/// right after midnight waits for that; any later run (the schedule fires at 01:00) does not.
pub fn flush_wait(day: NaiveDate, now: DateTime<Utc>) -> Duration {
    let Some(end) = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
    else {
        return Duration::ZERO;
    };
    let settle = chrono::Duration::from_std(FLUSH_EVERY * 2).unwrap_or_default();
    let since_end = now - end;
    if since_end < chrono::Duration::zero() || since_end >= settle {
        return Duration::ZERO;
    }
    (settle - since_end).to_std().unwrap_or_default()
}

/// How often a replica that finds the day claimed by another checks whether that run is done.
const CLAIM_POLL: Duration = Duration::from_secs(5);

/// Handles the schedule's message. `Ok` means the message can be deleted: this replica ran
/// the job, or another one finished it. While another replica holds the claim, the message is
/// kept (under the batch's heartbeat) until that run is done, or the claim goes stale (its
/// holder died) and this replica takes it over: a day is never skipped.
pub async fn run_daily(ctx: &Ctx, request: &MaintenanceRequest, _message: &Message) -> Result<()> {
    let (run_day, summary_day) = run_days(request, Utc::now());
    flush_counters(ctx).await;
    let mut waited = false;
    loop {
        let now = Utc::now();
        if claim(ctx, run_day, now).await? {
            break;
        }
        if claim_done(ctx, run_day).await? {
            tracing::info!(%run_day, "maintenance done by another replica");
            ctx.metrics
                .maintenance
                .get_or_create(&result("skipped"))
                .inc();
            return Ok(());
        }
        if !waited {
            tracing::info!(%run_day, "maintenance claimed by another replica; waiting for it to finish");
            waited = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(CLAIM_POLL) => {}
            _ = ctx.abandon.cancelled() => return Err(Error::Task("maintenance abandoned at shutdown".into())),
        }
    }
    let now = Utc::now();
    let wait = flush_wait(summary_day, now);
    if !wait.is_zero() {
        tracing::info!(?wait, %summary_day, "waiting for the other replicas' last counter flush");
        tokio::time::sleep(wait).await;
    }
    let (depth, sampled) = record_dlq(ctx, run_day, now).await?;
    let mut written = Vec::new();
    for day in days_to_summarise(summary_day) {
        if write_summary(ctx, day, depth, sampled, now, day == summary_day).await? {
            written.push(day.to_string());
        }
    }
    finish_claim(ctx, run_day, now).await?;
    tracing::info!(%run_day, %summary_day, dlq_depth = depth, dlq_sampled = sampled, summaries = ?written, "maintenance done");
    ctx.metrics.maintenance.get_or_create(&result("ran")).inc();
    Ok(())
}

async fn claim_done(ctx: &Ctx, run_day: NaiveDate) -> Result<bool> {
    let sk = run_day.to_string();
    let item = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "GetItem", || {
        ctx.store.get(PK_CLAIM, &sk)
    })
    .await?;
    Ok(item
        .as_ref()
        .and_then(|i| i.get("state"))
        .and_then(|v| v.as_s().ok())
        .is_some_and(|s| s == "done"))
}

fn result(r: &'static str) -> crate::metrics::ResultLabel {
    crate::metrics::ResultLabel { result: r }
}

fn time(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

async fn claim(ctx: &Ctx, run_day: NaiveDate, now: DateTime<Utc>) -> Result<bool> {
    let item = HashMap::from([
        (attr::TRACKING_ID.to_string(), s(PK_CLAIM)),
        (attr::TIMESTAMP.to_string(), s(run_day.to_string())),
        ("state".to_string(), s("claimed")),
        ("owner".to_string(), s(&ctx.config.replica)),
        (
            "claimed_at".to_string(),
            AttributeValue::N(now.timestamp().to_string()),
        ),
        (
            attr::TTL.to_string(),
            ttl_attr(now, ctx.config.settings.ttl_days),
        ),
    ]);
    let values = HashMap::from([
        (":claimed".to_string(), s("claimed")),
        (
            ":stale".to_string(),
            AttributeValue::N((now.timestamp() - CLAIM_STALE_SECONDS).to_string()),
        ),
    ]);
    let outcome = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
        ctx.store.put_if(
            item.clone(),
            "attribute_not_exists(#pk) OR (#state = :claimed AND #at < :stale)",
            &[("#state", "state"), ("#at", "claimed_at")],
            values.clone(),
        )
    })
    .await?;
    Ok(outcome == PutOutcome::Written)
}

async fn finish_claim(ctx: &Ctx, run_day: NaiveDate, now: DateTime<Utc>) -> Result<()> {
    let item = HashMap::from([
        (attr::TRACKING_ID.to_string(), s(PK_CLAIM)),
        (attr::TIMESTAMP.to_string(), s(run_day.to_string())),
        ("state".to_string(), s("done")),
        ("owner".to_string(), s(&ctx.config.replica)),
        ("finished_at".to_string(), time(Utc::now())),
        (
            attr::TTL.to_string(),
            ttl_attr(now, ctx.config.settings.ttl_days),
        ),
    ]);
    with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
        ctx.store
            .put_if(item.clone(), "attribute_exists(#pk)", &[], HashMap::new())
    })
    .await?;
    Ok(())
}

/// Records the DLQ depth and up to [`DLQ_SAMPLE_SIZE`] of its messages as `DLQ_DETECTED`
/// items (keyed by day and message id, so a rerun does not repeat them). The sample is
/// received with a zero visibility timeout so it stays available for inspection and redrive.
async fn record_dlq(ctx: &Ctx, run_day: NaiveDate, now: DateTime<Utc>) -> Result<(u64, usize)> {
    let dlq = &ctx.config.settings.dead_letter_queue_url;
    let attrs = with_backoff(
        &ctx.metrics,
        &ctx.abandon,
        "sqs",
        "GetQueueAttributes",
        || async {
            ctx.sqs
                .get_queue_attributes()
                .queue_url(dlq)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .map_err(|e| Error::aws("sqs.GetQueueAttributes", e))
        },
    )
    .await?;
    let depth = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if depth == 0 {
        return Ok((0, 0));
    }
    let sample = with_backoff(
        &ctx.metrics,
        &ctx.abandon,
        "sqs",
        "ReceiveMessage",
        || async {
            ctx.sqs
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(DLQ_SAMPLE_SIZE)
                .visibility_timeout(0)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| Error::aws("sqs.ReceiveMessage", e))
        },
    )
    .await?;
    let messages = sample.messages.unwrap_or_default();
    for m in &messages {
        let item = dlq_item(m, run_day, depth, now, ctx.config.settings.ttl_days);
        with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
            ctx.store.put_new(item.clone())
        })
        .await?;
    }
    Ok((depth, messages.len()))
}

/// A `DLQ_DETECTED` audit item for one sampled DLQ message.
pub fn dlq_item(
    m: &Message,
    run_day: NaiveDate,
    depth: u64,
    now: DateTime<Utc>,
    ttl_days: u32,
) -> HashMap<String, AttributeValue> {
    let message_id = m.message_id().unwrap_or("unknown");
    let body: String = m.body().unwrap_or_default().chars().take(4096).collect();
    let reason = m
        .message_attributes()
        .and_then(|a| a.get(dlq_attr::REASON))
        .and_then(|v| v.string_value())
        .unwrap_or("redriven_after_max_receives");
    HashMap::from([
        (attr::TRACKING_ID.to_string(), s(PK_DLQ)),
        (
            attr::TIMESTAMP.to_string(),
            s(format!("{run_day}#{message_id}")),
        ),
        (attr::STATUS.to_string(), s(STATUS_DLQ_DETECTED)),
        (attr::MESSAGE_ID.to_string(), s(message_id)),
        (
            "body".to_string(),
            s(if body.is_empty() {
                "-".to_string()
            } else {
                body
            }),
        ),
        ("reason".to_string(), s(reason)),
        (
            "dlq_depth".to_string(),
            AttributeValue::N(depth.to_string()),
        ),
        (attr::PROCESSED_AT.to_string(), time(now)),
        (attr::TTL.to_string(), ttl_attr(now, ttl_days)),
    ])
}

/// Writes `day`'s summary unless it has one. A day without counters gets a summary only when
/// it is the run's own summary day (an idle day is still reported); an older day without
/// counters had no traffic or belongs to before the pipeline existed.
async fn write_summary(
    ctx: &Ctx,
    day: NaiveDate,
    dlq_depth: u64,
    dlq_sampled: usize,
    now: DateTime<Utc>,
    always: bool,
) -> Result<bool> {
    let sk = day.to_string();
    let stats = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "GetItem", || {
        ctx.store.get(PK_STATS, &sk)
    })
    .await?;
    if stats.is_none() && !always {
        return Ok(false);
    }
    let counts = stats.as_ref().map(parse_counts).unwrap_or_default();
    let item = summary_item(
        day,
        &counts,
        dlq_depth,
        dlq_sampled,
        &ctx.config.replica,
        now,
        ctx.config.settings.ttl_days,
    );
    let outcome = with_backoff(&ctx.metrics, &ctx.abandon, "dynamodb", "PutItem", || {
        ctx.store.put_new(item.clone())
    })
    .await?;
    Ok(outcome == PutOutcome::Written)
}

/// The `DAILY_SUMMARY` item for `day`.
pub fn summary_item(
    day: NaiveDate,
    counts: &DayCounts,
    dlq_depth: u64,
    dlq_sampled: usize,
    replica: &str,
    now: DateTime<Utc>,
    ttl_days: u32,
) -> HashMap<String, AttributeValue> {
    let n = |v: u64| AttributeValue::N(v.to_string());
    let per_status = counts
        .statuses
        .iter()
        .map(|(k, v)| (k.clone(), n(*v)))
        .collect();
    HashMap::from([
        (attr::TRACKING_ID.to_string(), s(PK_SUMMARY)),
        (attr::TIMESTAMP.to_string(), s(day.to_string())),
        (attr::STATUS.to_string(), s(STATUS_DAILY_SUMMARY)),
        ("counts".to_string(), AttributeValue::M(per_status)),
        (
            "total_written".to_string(),
            n(counts.statuses.values().sum()),
        ),
        ("duplicates".to_string(), n(counts.duplicates)),
        ("dead_lettered".to_string(), n(counts.dead_lettered)),
        ("dlq_depth".to_string(), n(dlq_depth)),
        ("dlq_sampled".to_string(), n(dlq_sampled as u64)),
        ("generated_by".to_string(), s(replica)),
        (attr::PROCESSED_AT.to_string(), time(now)),
        (attr::TTL.to_string(), ttl_attr(now, ttl_days)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_attributes() {
        let mut counts = DayCounts::default();
        counts.statuses.insert("DELIVERED".into(), 3);
        counts.statuses.insert("IN_TRANSIT".into(), 5);
        counts.duplicates = 2;
        let item: HashMap<String, AttributeValue> = counter_attributes(&counts)
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::N(v.to_string())))
            .chain([(attr::TRACKING_ID.to_string(), s(PK_STATS))])
            .collect();
        assert_eq!(parse_counts(&item), counts);
    }

    #[test]
    fn summary_covers_the_day_before_the_schedule() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let req = MaintenanceRequest {
            scheduled_time: Some(at("2026-11-21T01:00:00Z")),
        };
        let (run, summary) = run_days(&req, at("2026-11-25T00:00:00Z"));
        assert_eq!(
            (run.to_string(), summary.to_string()),
            ("2026-11-21".into(), "2026-11-20".into())
        );
        let (run, _) = run_days(
            &MaintenanceRequest {
                scheduled_time: None,
            },
            at("2026-11-25T00:00:00Z"),
        );
        assert_eq!(run.to_string(), "2026-11-25");
    }

    #[test]
    fn a_run_looks_back_for_missed_days() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let days: Vec<String> = days_to_summarise(day)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(days.len(), SUMMARY_LOOKBACK_DAYS as usize);
        assert_eq!(days.first().map(String::as_str), Some("2026-11-14"));
        assert_eq!(days.last().map(String::as_str), Some("2026-11-20"));
    }

    #[test]
    fn a_run_right_after_midnight_waits_for_the_last_flush() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(
            flush_wait(day, at("2026-11-21T00:00:05Z")),
            FLUSH_EVERY * 2 - Duration::from_secs(5)
        );
        assert_eq!(flush_wait(day, at("2026-11-21T01:00:00Z")), Duration::ZERO);
        assert_eq!(flush_wait(day, at("2026-11-20T12:00:00Z")), Duration::ZERO);
    }

    #[test]
    fn summary_item_totals() {
        let mut counts = DayCounts::default();
        counts.statuses.insert("DELIVERED".into(), 3);
        counts.statuses.insert("IN_TRANSIT".into(), 5);
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let item = summary_item(day, &counts, 4, 4, "r1", Utc::now(), 90);
        assert_eq!(item["total_written"], AttributeValue::N("8".into()));
        assert_eq!(item[attr::STATUS], s(STATUS_DAILY_SUMMARY));
        assert_eq!(item[attr::TIMESTAMP], s("2026-11-20"));
    }
}
