//! The dead-letter queue, from the command line (`trackctl dlq list|show|redrive`).
//!
//! **Looking without consuming.** A receive with `VisibilityTimeout=0` leaves a message
//! visible, but then the next receive may hand out the same messages again, so a listing can
//! neither enumerate the queue nor tell when it has seen everything. [`peek`] instead leases
//! each message for a short time (default 30 s), collects until a receive comes back empty,
//! and then hands every lease back with `ChangeMessageVisibility(0)`. Nothing is deleted; if
//! the command is interrupted, the messages reappear by themselves when the lease ends. A
//! peek raises `ApproximateReceiveCount` by one (the DLQ has no redrive policy of its own, so
//! that changes nothing else).
//!
//! **Redriving without losing or doubling.** SQS's own `StartMessageMoveTask` is used when
//! the backend has it and every message is to move ([`start_move_task`]); it runs server-side
//! and survives the command. Otherwise (a `--reason` filter, or a backend without it) each
//! message goes through receive → send to the main queue → delete from the DLQ
//! ([`redrive_copy`]), with a move ledger, an append-only file synced to disk at every step:
//! `sending ID` before the send, `sent ID NEW_ID` once SQS accepted it, `deleted ID` after the
//! delete. A message whose ledger says `sent` is only deleted, never sent again, so an
//! interruption anywhere except inside the one send call repeats nothing; and since nothing
//! is deleted before its copy is accepted, nothing is lost. The one window left, a kill
//! during the single in-flight `SendMessage`, cannot be resolved from outside a standard
//! queue (SQS keeps no idempotency key): that message, at most one, is reported as in doubt
//! and sent again, because a copy too many of a valid update is absorbed by the worker's
//! idempotent write while a lost one is gone for good.
//!
//! Messages the worker sends back (still poison after the redrive, or failing again until
//! `maxReceiveCount`) carry the new message id that the ledger recorded, so a later redrive
//! leaves them where they are: a poison message returns to the DLQ once, with its reason.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use serde::{Deserialize, Serialize};

use crate::consumer::dlq_attr;
use crate::error::Error;

/// The reason shown for a message without the worker's reason attribute: SQS moved it after
/// `maxReceiveCount` failed receives.
pub const REASON_MAX_RECEIVES: &str = "max_receive_count";

/// Prefix of the message attributes the worker and this module own; they are not carried
/// over to the main queue.
const OWN_ATTRIBUTE_PREFIX: &str = "tracking.";

/// Put on a redriven message: the DLQ message it was copied from.
pub const REDRIVEN_FROM: &str = "tracking.redrive.dead_letter_message_id";

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Aws(#[from] Error),
    #[error("move ledger {path}: {source}")]
    Ledger {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = RedriveError> = std::result::Result<T, E>;

/// A dead-lettered message as `trackctl dlq list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DlqMessage {
    pub message_id: String,
    /// The worker's rejection reason, or [`REASON_MAX_RECEIVES`].
    pub reason: String,
    pub detail: Option<String>,
    pub receive_count: Option<u32>,
    /// When the message entered SQS (ms since the epoch).
    pub sent_timestamp: Option<i64>,
    /// The main-queue message the worker rejected (poison only).
    pub source_message_id: Option<String>,
    pub body: String,
}

impl DlqMessage {
    pub fn from_sqs(m: &Message) -> Self {
        let attr = |name: &str| {
            m.message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .map(str::to_owned)
        };
        let system =
            |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
        Self {
            message_id: m.message_id().unwrap_or_default().to_owned(),
            reason: attr(dlq_attr::REASON).unwrap_or_else(|| REASON_MAX_RECEIVES.to_owned()),
            detail: attr(dlq_attr::DETAIL),
            receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse().ok()),
            sent_timestamp: system(MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse().ok()),
            source_message_id: attr(dlq_attr::SOURCE_MESSAGE_ID),
            body: m.body().unwrap_or_default().to_owned(),
        }
    }
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    lease_seconds: i32,
    wait_seconds: i32,
) -> Result<Vec<Message>> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(lease_seconds)
        .wait_time_seconds(wait_seconds)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| Error::aws("sqs.ReceiveMessage", e))?;
    Ok(out.messages.unwrap_or_default())
}

async fn release(sqs: &aws_sdk_sqs::Client, url: &str, receipts: impl Iterator<Item = &String>) {
    for receipt in receipts {
        // Best effort: a lease that cannot be handed back ends by itself.
        let _ = sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
    }
}

/// (visible, leased) messages of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(i64, i64)> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| Error::aws("sqs.GetQueueAttributes", e))?;
    let get = |n| {
        out.attributes()
            .and_then(|a| a.get(&n))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// Up to `max` distinct messages of the DLQ, without consuming them (see the module doc).
pub async fn peek(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    max: usize,
    lease_seconds: i32,
) -> Result<Vec<DlqMessage>> {
    let mut seen: HashMap<String, (DlqMessage, String)> = HashMap::new();
    let mut order = Vec::new();
    let result = async {
        while seen.len() < max {
            let batch = receive(sqs, dlq_url, lease_seconds, 1).await?;
            if batch.is_empty() {
                break;
            }
            for m in &batch {
                let d = DlqMessage::from_sqs(m);
                let receipt = m.receipt_handle().unwrap_or_default().to_owned();
                if !seen.contains_key(&d.message_id) {
                    order.push(d.message_id.clone());
                }
                seen.insert(d.message_id.clone(), (d, receipt));
            }
        }
        Ok::<_, RedriveError>(())
    }
    .await;
    release(sqs, dlq_url, seen.values().map(|(_, r)| r)).await;
    result?;
    Ok(order
        .into_iter()
        .filter_map(|id| seen.remove(&id).map(|(d, _)| d))
        .take(max)
        .collect())
}

/// One line of the move ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    Sending { id: String },
    Sent { id: String, new_id: String },
    Deleted { id: String },
}

/// Where a DLQ message stands according to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The send was under way when a run stopped: it may or may not have reached SQS.
    InDoubt,
    /// SQS accepted the copy; only the delete from the DLQ is left.
    Sent,
    Deleted,
}

/// The append-only move ledger (see the module doc).
pub struct Ledger {
    path: PathBuf,
    file: File,
    steps: HashMap<String, Step>,
    /// Message ids of the copies sent to the main queue.
    copies: HashSet<String>,
}

impl Ledger {
    /// Opens (creating) the ledger and replays it; a torn last line (a kill mid-write) is
    /// ignored, which at worst leaves that message one step behind.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| RedriveError::Ledger {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut steps = HashMap::new();
        let mut copies = HashSet::new();
        if path.exists() {
            for line in BufReader::new(File::open(path).map_err(err)?).lines() {
                let Ok(entry) = serde_json::from_str::<Entry>(&line.map_err(err)?) else {
                    continue;
                };
                match entry {
                    Entry::Sending { id } => {
                        steps.entry(id).or_insert(Step::InDoubt);
                    }
                    Entry::Sent { id, new_id } => {
                        copies.insert(new_id);
                        steps.insert(id, Step::Sent);
                    }
                    Entry::Deleted { id } => {
                        steps.insert(id, Step::Deleted);
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            steps,
            copies,
        })
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.get(id)
    }

    /// True when the message is one of our copies coming back (or the worker's DLQ copy of
    /// one): it was redriven once already.
    pub fn is_returned(&self, m: &DlqMessage) -> bool {
        self.copies.contains(&m.message_id)
            || m.source_message_id
                .as_ref()
                .is_some_and(|s| self.copies.contains(s))
    }

    /// Appends and syncs one entry before the caller goes on.
    pub fn record(&mut self, entry: Entry) -> Result<()> {
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        let err = |source| RedriveError::Ledger {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        match entry {
            Entry::Sending { id } => {
                self.steps.insert(id, Step::InDoubt);
            }
            Entry::Sent { id, new_id } => {
                self.copies.insert(new_id);
                self.steps.insert(id, Step::Sent);
            }
            Entry::Deleted { id } => {
                self.steps.insert(id, Step::Deleted);
            }
        }
        Ok(())
    }
}

/// The default ledger for a DLQ: `$XDG_STATE_HOME/trackctl/` (or `~/.local/state/trackctl/`),
/// one file per queue URL.
pub fn default_ledger_path(dlq_url: &str) -> PathBuf {
    use sha2::Digest;
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let hash = hex::encode(&sha2::Sha256::digest(dlq_url.as_bytes())[..8]);
    base.join("trackctl").join(format!("redrive-{hash}.jsonl"))
}

/// What to do with one DLQ message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Leave it in the DLQ (why).
    Keep(&'static str),
    /// Its copy is already in the main queue: delete it from the DLQ only.
    Finish,
    /// Send it to the main queue, then delete it; `in_doubt` when an interrupted run may
    /// already have sent it.
    Move { in_doubt: bool },
}

/// Which messages a redrive moves.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only messages with this reason (see [`DlqMessage::reason`]).
    pub reason: Option<String>,
    /// Also move messages that a previous redrive already moved once and came back.
    pub include_returned: bool,
}

/// Pure: the ledger and the filter decide.
pub fn decide(m: &DlqMessage, ledger: &Ledger, filter: &Filter) -> Decision {
    match ledger.step(&m.message_id) {
        Some(Step::Sent | Step::Deleted) => return Decision::Finish,
        Some(Step::InDoubt) => return Decision::Move { in_doubt: true },
        None => {}
    }
    if !filter.include_returned && ledger.is_returned(m) {
        return Decision::Keep("returned");
    }
    if filter.reason.as_ref().is_some_and(|r| *r != m.reason) {
        return Decision::Keep("other_reason");
    }
    Decision::Move { in_doubt: false }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub filter: Filter,
    /// Messages moved per second at most.
    pub rate: f64,
    /// Seconds a received DLQ message stays invisible while it is being moved.
    pub lease_seconds: i32,
    /// Stop after this many moves.
    pub max: Option<usize>,
    /// How long to wait for messages leased by someone else (an interrupted run, a listing)
    /// to come back before finishing.
    pub wait_for_leased: Duration,
}

/// Progress and result of a redrive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub method: &'static str,
    /// Messages copied to the main queue and deleted from the DLQ by this run.
    pub moved: u64,
    /// Messages whose copy an earlier, interrupted run had sent; this run deleted them.
    pub finished_from_earlier_run: u64,
    /// DLQ message ids that an interrupted run was sending when it stopped; sent again.
    pub in_doubt: Vec<String>,
    /// Messages left in the DLQ: another reason, or already redriven once and returned.
    pub kept: u64,
    /// Messages SQS refused to take (left in the DLQ).
    pub failed: u64,
    /// DLQ depth (visible + leased) when the run ended.
    pub remaining: i64,
    /// DLQ depth when the run started.
    pub initial: i64,
}

/// Receive → send → delete, with the ledger (see the module doc). `progress` is called
/// after every message.
pub async fn redrive_copy(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    ledger: &mut Ledger,
    opts: &Options,
    mut progress: impl FnMut(&Report),
) -> Result<Report> {
    if opts.rate <= 0.0 {
        return Err(RedriveError::Usage("--rate must be positive".into()));
    }
    let (visible, leased) = depth(sqs, dlq_url).await?;
    let mut report = Report {
        method: "copy",
        initial: visible + leased,
        ..Report::default()
    };
    let pace = Duration::from_secs_f64(1.0 / opts.rate);
    let mut next_send = Instant::now();
    // Messages kept in the DLQ, by id, with their latest receipt: handed back at the end.
    let mut kept: HashMap<String, String> = HashMap::new();
    let mut waiting_since: Option<Instant> = None;
    let result = async {
        loop {
            let done = (report.moved + report.finished_from_earlier_run) as usize;
            if opts.max.is_some_and(|max| done >= max) {
                break;
            }
            let batch = receive(sqs, dlq_url, opts.lease_seconds, 1).await?;
            if batch.is_empty() || batch.iter().all(|m| kept.contains_key(m.message_id().unwrap_or_default())) {
                for m in &batch {
                    kept.insert(
                        m.message_id().unwrap_or_default().to_owned(),
                        m.receipt_handle().unwrap_or_default().to_owned(),
                    );
                }
                let (visible, leased) = depth(sqs, dlq_url).await?;
                let others = leased - kept.len() as i64;
                if visible <= 0 && others <= 0 {
                    break;
                }
                // Someone else's leases (an interrupted run): wait until they end.
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() > opts.wait_for_leased {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            waiting_since = None;
            for m in &batch {
                let d = DlqMessage::from_sqs(m);
                let receipt = m.receipt_handle().unwrap_or_default().to_owned();
                match decide(&d, ledger, &opts.filter) {
                    Decision::Keep(_) => {
                        if kept.insert(d.message_id.clone(), receipt).is_none() {
                            report.kept += 1;
                        }
                    }
                    Decision::Finish => {
                        delete(sqs, dlq_url, &receipt).await?;
                        ledger.record(Entry::Deleted {
                            id: d.message_id.clone(),
                        })?;
                        report.finished_from_earlier_run += 1;
                    }
                    Decision::Move { in_doubt } => {
                        if let Some(wait) = next_send.checked_duration_since(Instant::now()) {
                            tokio::time::sleep(wait).await;
                        }
                        next_send = Instant::now() + pace;
                        if in_doubt {
                            report.in_doubt.push(d.message_id.clone());
                        }
                        ledger.record(Entry::Sending {
                            id: d.message_id.clone(),
                        })?;
                        match send_copy(sqs, queue_url, m).await {
                            Ok(new_id) => {
                                ledger.record(Entry::Sent {
                                    id: d.message_id.clone(),
                                    new_id,
                                })?;
                                delete(sqs, dlq_url, &receipt).await?;
                                ledger.record(Entry::Deleted {
                                    id: d.message_id.clone(),
                                })?;
                                report.moved += 1;
                            }
                            Err(e) => {
                                // Refused, so certainly not sent: the message stays.
                                tracing::warn!(message_id = %d.message_id, error = %e, "send to the main queue failed");
                                report.failed += 1;
                                kept.insert(d.message_id.clone(), receipt);
                            }
                        }
                    }
                }
                progress(&report);
            }
        }
        Ok::<_, RedriveError>(())
    }
    .await;
    release(sqs, dlq_url, kept.values()).await;
    result?;
    let (visible, leased) = depth(sqs, dlq_url).await?;
    report.remaining = visible + leased;
    Ok(report)
}

async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, receipt: &str) -> Result<()> {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .map_err(|e| Error::aws("sqs.DeleteMessage", e))?;
    Ok(())
}

/// Sends the body with the producer's own message attributes (not the worker's rejection
/// attributes, which a new rejection writes afresh); returns the copy's message id.
async fn send_copy(sqs: &aws_sdk_sqs::Client, queue_url: &str, m: &Message) -> Result<String> {
    let mut req = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(m.body().unwrap_or_default());
    for (name, value) in m.message_attributes().into_iter().flatten() {
        if !name.starts_with(OWN_ATTRIBUTE_PREFIX) {
            req = req.message_attributes(name, value.clone());
        }
    }
    if let Ok(from) = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(m.message_id().unwrap_or("-"))
        .build()
    {
        req = req.message_attributes(REDRIVEN_FROM, from);
    }
    let out = req
        .send()
        .await
        .map_err(|e| Error::aws("sqs.SendMessage", e))?;
    Ok(out.message_id.unwrap_or_default())
}

/// The outcome of asking SQS for a message-move task.
#[derive(Debug)]
pub enum MoveTask {
    /// Started (or one was already running for this DLQ): its handle.
    Running(String),
    /// The backend has no message-move tasks (or refused this one); use [`redrive_copy`].
    Unsupported(String),
}

/// Starts SQS's own redrive from `dlq_arn` to `queue_arn`, or attaches to the one already
/// running (SQS allows one per queue).
pub async fn start_move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq_arn: &str,
    queue_arn: &str,
    rate: i32,
) -> Result<MoveTask> {
    let started = sqs
        .start_message_move_task()
        .source_arn(dlq_arn)
        .destination_arn(queue_arn)
        .max_number_of_messages_per_second(rate.clamp(1, 500))
        .send()
        .await;
    match started {
        Ok(out) => Ok(MoveTask::Running(out.task_handle.unwrap_or_default())),
        Err(e) => {
            let err = Error::aws("sqs.StartMessageMoveTask", e);
            if let Some(handle) = running_task(sqs, dlq_arn).await {
                return Ok(MoveTask::Running(handle));
            }
            Ok(MoveTask::Unsupported(err.to_string()))
        }
    }
}

async fn running_task(sqs: &aws_sdk_sqs::Client, dlq_arn: &str) -> Option<String> {
    let out = sqs
        .list_message_move_tasks()
        .source_arn(dlq_arn)
        .max_results(1)
        .send()
        .await
        .ok()?;
    out.results()
        .iter()
        .find(|t| t.status() == Some("RUNNING"))
        .map(|t| t.task_handle().unwrap_or_default().to_owned())
}

/// Follows the newest move task of the DLQ until it ends; `progress(moved, to_move)`.
pub async fn follow_move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq_arn: &str,
    mut progress: impl FnMut(i64, i64),
) -> Result<Report> {
    loop {
        let out = sqs
            .list_message_move_tasks()
            .source_arn(dlq_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| Error::aws("sqs.ListMessageMoveTasks", e))?;
        let Some(task) = out.results().first() else {
            return Err(RedriveError::Usage("no message-move task found".into()));
        };
        let moved = task.approximate_number_of_messages_moved();
        let to_move = task.approximate_number_of_messages_to_move().unwrap_or(0);
        progress(moved, to_move);
        match task.status() {
            Some("RUNNING") | Some("CANCELLING") => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            status => {
                if let Some(reason) = task.failure_reason() {
                    return Err(RedriveError::Usage(format!(
                        "message-move task {}: {reason}",
                        status.unwrap_or("?")
                    )));
                }
                return Ok(Report {
                    method: "move_task",
                    moved: moved.max(0) as u64,
                    initial: to_move,
                    ..Report::default()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, reason: Option<&str>, source: Option<&str>) -> DlqMessage {
        DlqMessage {
            message_id: id.into(),
            reason: reason.unwrap_or(REASON_MAX_RECEIVES).into(),
            detail: None,
            receive_count: Some(1),
            sent_timestamp: None,
            source_message_id: source.map(Into::into),
            body: "{}".into(),
        }
    }

    fn ledger(name: &str) -> (Ledger, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "redrive-ledger-{name}-{}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        (Ledger::open(&path).unwrap(), path)
    }

    #[test]
    fn the_ledger_decides_after_an_interruption() {
        let (mut l, path) = ledger("decide");
        let all = Filter::default();
        l.record(Entry::Sending { id: "a".into() }).unwrap();
        l.record(Entry::Sent {
            id: "a".into(),
            new_id: "A2".into(),
        })
        .unwrap();
        l.record(Entry::Sending { id: "b".into() }).unwrap();
        drop(l);
        // A kill mid-write leaves a torn line; it is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"sen")
            .unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(decide(&msg("a", None, None), &l, &all), Decision::Finish);
        assert_eq!(
            decide(&msg("b", None, None), &l, &all),
            Decision::Move { in_doubt: true }
        );
        assert_eq!(
            decide(&msg("c", Some("not_json"), None), &l, &all),
            Decision::Move { in_doubt: false }
        );
        // The copy of `a` came back: as itself (SQS redrive keeps the id) or as the
        // worker's poison copy naming it.
        assert_eq!(
            decide(&msg("A2", None, None), &l, &all),
            Decision::Keep("returned")
        );
        assert_eq!(
            decide(&msg("z", Some("not_json"), Some("A2")), &l, &all),
            Decision::Keep("returned")
        );
        let again = Filter {
            include_returned: true,
            ..Filter::default()
        };
        assert_eq!(
            decide(&msg("A2", None, None), &l, &again),
            Decision::Move { in_doubt: false }
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_reason_filter_keeps_other_messages() {
        let (l, path) = ledger("filter");
        let only = Filter {
            reason: Some("bad_timestamp".into()),
            include_returned: false,
        };
        assert_eq!(
            decide(&msg("x", Some("not_json"), None), &l, &only),
            Decision::Keep("other_reason")
        );
        assert_eq!(
            decide(&msg("y", Some("bad_timestamp"), None), &l, &only),
            Decision::Move { in_doubt: false }
        );
        let max = Filter {
            reason: Some(REASON_MAX_RECEIVES.into()),
            include_returned: false,
        };
        assert_eq!(
            decide(&msg("w", None, None), &l, &max),
            Decision::Move { in_doubt: false }
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_message_without_the_reason_attribute_was_moved_by_sqs() {
        let m = Message::builder()
            .message_id("m1")
            .body("b")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "4")
            .build();
        let d = DlqMessage::from_sqs(&m);
        assert_eq!(d.reason, REASON_MAX_RECEIVES);
        assert_eq!(d.receive_count, Some(4));
    }
}
