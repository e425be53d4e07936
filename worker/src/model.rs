//! The message → audit item mapping, with no I/O: parse and validate a message body into a
//! [`TrackingUpdate`] (or a maintenance request, or a [`Poison`] reason), derive the item key
//! from the update itself, and build the DynamoDB item.
//!
//! The sort key is `<event time, UTC, millisecond precision>#<event_id or content digest>`.
//! It never contains the processing time, so a redelivery, a producer retry and a second
//! worker all compute the same key, and the conditional put turns repeats into duplicates.
//! Every item also carries the digest of its content, so a key reused for different content
//! (a legacy producer's `event_id`, a correction re-sent under the same id) is told apart
//! from a repeat: see [`conflict_sort_key`].

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::contract::MAINTENANCE_KEY;
use crate::json::{self, Json, MAX_ITEM_BYTES, Unstorable};

/// Longest accepted `tracking_id`, in bytes: DynamoDB's partition key limit.
pub const MAX_TRACKING_ID_LEN: usize = 2048;
/// Longest accepted `status`, in bytes: it is the `StatusIndex` partition key.
pub const MAX_STATUS_LEN: usize = 2048;
/// Longest `event_id` used as is in the sort key (bytes); a longer one is hashed, so the sort
/// key stays within DynamoDB's 1,024 bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Status stored when an update carries none; the original Lambda did the same.
pub const DEFAULT_STATUS: &str = "UNKNOWN";
/// Partition keys starting with this are the worker's own bookkeeping items (maintenance
/// claims, summaries, DLQ samples, counters); producers may not use them.
pub const RESERVED_PREFIX: char = '#';
/// Room kept in the size check for what the writer adds (message id, times, token, a
/// conflict suffix), so an update that passes parsing always fits.
const ITEM_SIZE_MARGIN: usize = 1024;

/// Where an update's event time came from (stored as `time_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// The producer's `timestamp`.
    Producer,
    /// No `timestamp`: SQS's `SentTimestamp`, the same on every redelivery of the message.
    SqsSent,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Producer => "producer",
            TimeSource::SqsSent => "sqs_sent_timestamp",
        }
    }
}

/// A validated tracking update.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackingUpdate {
    pub tracking_id: String,
    pub status: String,
    /// Any JSON value, stored as it came (`None` when absent or null).
    pub location: Option<Json>,
    pub carrier: Option<Json>,
    /// Any JSON value; an empty object when absent or null.
    pub details: Json,
    /// The event time as the producer sent it (stored as `received_at`, as the original did).
    pub timestamp_raw: String,
    pub event_time: DateTime<Utc>,
    pub time_source: TimeSource,
    pub event_id: Option<String>,
}

/// A request to run the daily maintenance job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceRequest {
    /// When the schedule fired; `None` when the body carries no parseable time (e.g. sent by hand).
    pub scheduled_time: Option<DateTime<Utc>>,
}

/// What a message body is.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Update(Box<TrackingUpdate>),
    Maintenance(MaintenanceRequest),
}

/// Why a message can never succeed. The code goes into the DLQ message's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poison {
    NotJson(String),
    NotAnObject,
    MissingTrackingId,
    EmptyTrackingId,
    TrackingIdTooLong(usize),
    ReservedTrackingId,
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    FieldTooLong {
        field: &'static str,
        len: usize,
    },
    /// No `timestamp` and no `SentTimestamp` to fall back on (only outside SQS).
    MissingTimestamp,
    BadTimestamp(String),
    /// DynamoDB could not store the item.
    Unstorable(Unstorable),
}

impl Poison {
    /// A stable, low-cardinality code (metric label and DLQ attribute).
    pub fn code(&self) -> &'static str {
        match self {
            Poison::NotJson(_) => "not_json",
            Poison::NotAnObject => "not_an_object",
            Poison::MissingTrackingId => "missing_tracking_id",
            Poison::EmptyTrackingId => "empty_tracking_id",
            Poison::TrackingIdTooLong(_) => "tracking_id_too_long",
            Poison::ReservedTrackingId => "reserved_tracking_id",
            Poison::WrongType { .. } => "wrong_type",
            Poison::FieldTooLong { .. } => "field_too_long",
            Poison::MissingTimestamp => "missing_timestamp",
            Poison::BadTimestamp(_) => "bad_timestamp",
            Poison::Unstorable(u) => u.code(),
        }
    }
}

impl std::fmt::Display for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Poison::NotJson(e) => write!(f, "body is not JSON: {e}"),
            Poison::NotAnObject => f.write_str("body is not a JSON object"),
            Poison::MissingTrackingId => f.write_str("tracking_id is missing"),
            Poison::EmptyTrackingId => f.write_str("tracking_id is empty"),
            Poison::TrackingIdTooLong(n) => {
                write!(
                    f,
                    "tracking_id is {n} bytes, more than {MAX_TRACKING_ID_LEN}"
                )
            }
            Poison::ReservedTrackingId => {
                write!(f, "tracking_id may not start with {RESERVED_PREFIX:?}")
            }
            Poison::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            Poison::FieldTooLong { field, len } => write!(f, "{field} is {len} bytes, too long"),
            Poison::MissingTimestamp => f.write_str("timestamp is missing"),
            Poison::BadTimestamp(e) => write!(f, "timestamp cannot be read: {e}"),
            Poison::Unstorable(u) => write!(f, "DynamoDB cannot store it: {u}"),
        }
    }
}

/// Parses a message body without SQS's metadata (a missing `timestamp` is then poison).
/// Never panics, whatever the body.
pub fn parse(body: &str) -> Result<Parsed, Poison> {
    parse_message(body, None)
}

/// Parses a message body; `sent_at` is SQS's `SentTimestamp`, the event time of an update
/// that carries none (as the original used the processing time). Never panics.
pub fn parse_message(body: &str, sent_at: Option<DateTime<Utc>>) -> Result<Parsed, Poison> {
    let value = json::parse(body).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Poison::Unstorable(Unstorable::NestingTooDeep)
        } else if e.to_string().contains("number out of range") {
            Poison::Unstorable(Unstorable::NumberOutOfRange(e.to_string()))
        } else {
            Poison::NotJson(e.to_string())
        }
    })?;
    let Json::Object(fields) = value else {
        return Err(Poison::NotAnObject);
    };
    if let Some(request) = schedule_message(&fields) {
        return Ok(Parsed::Maintenance(request));
    }
    let update = parse_update(fields, sent_at)?;
    update.check_storable()?;
    Ok(Parsed::Update(Box::new(update)))
}

/// The schedule's message and nothing else: exactly the keys of
/// [`crate::contract::MAINTENANCE_MESSAGE_BODY`] (`scheduled_time` may be left out when sent
/// by hand), `maintenance` = `"daily"`. An update that happens to carry a `maintenance` field,
/// or `{"maintenance": null}`, is not maintenance.
fn schedule_message(fields: &[(String, Json)]) -> Option<MaintenanceRequest> {
    let mut daily = false;
    let mut scheduled_time = None;
    for (k, v) in fields {
        match (k.as_str(), v) {
            (MAINTENANCE_KEY, Json::String(s)) if s == "daily" => daily = true,
            ("scheduled_time", Json::String(s)) => {
                scheduled_time = DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
            }
            _ => return None,
        }
    }
    daily.then_some(MaintenanceRequest { scheduled_time })
}

fn parse_update(
    fields: Vec<(String, Json)>,
    sent_at: Option<DateTime<Utc>>,
) -> Result<TrackingUpdate, Poison> {
    let mut obj: HashMap<String, Json> = fields.into_iter().collect();
    let tracking_id = match obj.remove("tracking_id") {
        None | Some(Json::Null) => return Err(Poison::MissingTrackingId),
        Some(Json::String(s)) => s,
        Some(_) => return Err(wrong("tracking_id", "a string")),
    };
    if tracking_id.trim().is_empty() {
        return Err(Poison::EmptyTrackingId);
    }
    if tracking_id.len() > MAX_TRACKING_ID_LEN {
        return Err(Poison::TrackingIdTooLong(tracking_id.len()));
    }
    if tracking_id.starts_with(RESERVED_PREFIX) {
        return Err(Poison::ReservedTrackingId);
    }
    let status = match obj.remove("status") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if s.len() > MAX_STATUS_LEN => {
            return Err(Poison::FieldTooLong {
                field: "status",
                len: s.len(),
            });
        }
        Some(Json::String(s)) => Some(s),
        // The `StatusIndex` key must be a string; the original's write failed here too.
        Some(_) => return Err(wrong("status", "a string")),
    }
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| DEFAULT_STATUS.to_string());
    let not_null = |v: Option<Json>| v.filter(|v| *v != Json::Null);
    let location = not_null(obj.remove("location"));
    let carrier = not_null(obj.remove("carrier"));
    let details = not_null(obj.remove("details")).unwrap_or(Json::Object(Vec::new()));
    let (timestamp_raw, event_time, time_source) = match not_null(obj.remove("timestamp")) {
        Some(v) => {
            let at = crate::timestamp::parse(&v).map_err(Poison::BadTimestamp)?;
            (
                v.scalar_text().unwrap_or_default(),
                at,
                TimeSource::Producer,
            )
        }
        None => {
            let at = sent_at.ok_or(Poison::MissingTimestamp)?;
            (
                at.to_rfc3339_opts(SecondsFormat::Millis, true),
                at,
                TimeSource::SqsSent,
            )
        }
    };
    let event_id = match not_null(obj.remove("event_id")) {
        None => None,
        Some(v @ (Json::String(_) | Json::Number(_))) => v.scalar_text(),
        Some(_) => return Err(wrong("event_id", "a string or a number")),
    }
    .filter(|s| !s.trim().is_empty());
    Ok(TrackingUpdate {
        tracking_id,
        status,
        location,
        carrier,
        details,
        timestamp_raw,
        event_time,
        time_source,
        event_id,
    })
}

fn wrong(field: &'static str, expected: &'static str) -> Poison {
    Poison::WrongType { field, expected }
}

impl TrackingUpdate {
    /// The part of the sort key that identifies the update: its `event_id` (hashed when
    /// long), or a digest of its content when it has none (so a producer retry of the same
    /// content still matches).
    pub fn idempotency_key(&self) -> String {
        match &self.event_id {
            Some(id) if id.len() > MAX_EVENT_ID_LEN => format!("idsha256:{}", sha256_hex(id)),
            Some(id) => format!("id:{id}"),
            None => format!("sha256:{}", self.content_digest()),
        }
    }

    /// The item's sort key: the event time (fixed width, so the string order is the time
    /// order) followed by the idempotency key.
    pub fn sort_key(&self) -> String {
        format!(
            "{}#{}",
            self.event_time.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.idempotency_key()
        )
    }

    /// SHA-256 (first 128 bits) over a canonical JSON form: sorted keys, canonical numbers
    /// (`1` = `1.0` = `1e0`, big integers exact), the normalised event time. Field order,
    /// number spelling and time-zone spelling do not make two copies of one update differ.
    pub fn content_digest(&self) -> String {
        let text = |v: &str| Json::String(v.to_string());
        let canonical = Json::Array(vec![
            text(&self.tracking_id),
            text(&self.status),
            self.location.clone().unwrap_or(Json::Null),
            self.carrier.clone().unwrap_or(Json::Null),
            self.details.clone(),
            text(&self.event_time.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            self.event_id.clone().map_or(Json::Null, Json::String),
        ]);
        sha256_hex(&canonical.canonical())
    }

    fn check_storable(&self) -> Result<(), Poison> {
        for v in [
            Some(&self.details),
            self.location.as_ref(),
            self.carrier.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(problem) = v.dynamodb_problem() {
                return Err(Poison::Unstorable(problem));
            }
        }
        let size = json::item_size(&self.to_item("", "", DateTime::UNIX_EPOCH, 1));
        if size + ITEM_SIZE_MARGIN > MAX_ITEM_BYTES {
            return Err(Poison::Unstorable(Unstorable::ItemTooLarge(size)));
        }
        Ok(())
    }

    /// The audit item, with the original's attributes (so the `StatusIndex` GSI works),
    /// the content digest, and `write_token`: unique per processing attempt, so a write
    /// whose answer was lost is recognised as this attempt's own when it is retried.
    pub fn to_item(
        &self,
        message_id: &str,
        write_token: &str,
        processed_at: DateTime<Utc>,
        ttl_days: u32,
    ) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            (attr::TRACKING_ID.into(), s(&self.tracking_id)),
            (attr::TIMESTAMP.into(), s(self.sort_key())),
            (attr::IDEMPOTENCY_KEY.into(), s(self.idempotency_key())),
            (attr::CONTENT_DIGEST.into(), s(self.content_digest())),
            (attr::MESSAGE_ID.into(), s(message_id)),
            (attr::WRITE_TOKEN.into(), s(write_token)),
            (attr::STATUS.into(), s(&self.status)),
            (attr::DETAILS.into(), self.details.to_attr()),
            (attr::RECEIVED_AT.into(), s(&self.timestamp_raw)),
            (attr::TIME_SOURCE.into(), s(self.time_source.as_str())),
            (
                attr::EVENT_TIME.into(),
                s(self.event_time.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            ),
            (
                attr::PROCESSED_AT.into(),
                s(processed_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            ),
            (attr::TTL.into(), ttl_attr(processed_at, ttl_days)),
        ]);
        if let Some(v) = &self.location {
            item.insert(attr::LOCATION.into(), v.to_attr());
        }
        if let Some(v) = &self.carrier {
            item.insert(attr::CARRIER.into(), v.to_attr());
        }
        if let Some(v) = &self.event_id {
            item.insert(attr::EVENT_ID.into(), s(v));
        }
        item
    }
}

/// The key an update takes when its own key already holds different content (same
/// `event_id` and event time, another digest): the original key plus the digest. Different
/// content is never dropped, and a redelivery of the conflicting update finds this key.
pub fn conflict_sort_key(sort_key: &str, digest: &str) -> String {
    format!("{sort_key}#conflict:{digest}")
}

fn sha256_hex(text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Attribute names of the audit table.
pub mod attr {
    pub const TRACKING_ID: &str = "tracking_id";
    pub const TIMESTAMP: &str = "timestamp";
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// Digest of the update's canonical content (see `TrackingUpdate::content_digest`).
    pub const CONTENT_DIGEST: &str = "content_digest";
    /// Unique per processing attempt: tells a lost answer from a duplicate.
    pub const WRITE_TOKEN: &str = "write_token";
    /// `producer` or `sqs_sent_timestamp`: where the event time came from.
    pub const TIME_SOURCE: &str = "time_source";
    /// On an item written under a conflict key: the key it conflicted with.
    pub const CONFLICTS_WITH: &str = "conflicts_with";
    pub const MESSAGE_ID: &str = "message_id";
    pub const STATUS: &str = "status";
    pub const LOCATION: &str = "location";
    pub const CARRIER: &str = "carrier";
    pub const DETAILS: &str = "details";
    pub const RECEIVED_AT: &str = "received_at";
    pub const EVENT_TIME: &str = "event_time";
    pub const EVENT_ID: &str = "event_id";
    pub const PROCESSED_AT: &str = "processed_at";
    pub const TTL: &str = "ttl";
    /// Name of the GSI over (`status`, `timestamp`).
    pub const STATUS_INDEX: &str = "StatusIndex";
}

/// `ttl` is epoch seconds, as DynamoDB's TTL feature requires.
pub fn ttl_attr(now: DateTime<Utc>, ttl_days: u32) -> AttributeValue {
    AttributeValue::N((now.timestamp() + i64::from(ttl_days) * 86_400).to_string())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// DynamoDB attribute → JSON, for `trackctl history` and tests.
pub fn attr_to_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(x) => Value::String(x.clone()),
        AttributeValue::N(n) => n
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| n.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(n.clone())),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(l) => Value::Array(l.iter().map(attr_to_json).collect()),
        AttributeValue::M(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), attr_to_json(v)))
                .collect(),
        ),
        AttributeValue::Ss(l) => Value::from(l.clone()),
        AttributeValue::Ns(l) => Value::from(l.clone()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"tracking_id":"TRK-1","status":"IN_TRANSIT","location":"Leeds",
        "carrier":"DHL","details":{"weight_kg":1.5,"signed":false,"tags":["a"]},
        "timestamp":"2026-11-20T10:00:00.123+01:00"}"#;

    fn sent() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T08:00:00.456Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn update(body: &str) -> TrackingUpdate {
        match parse_message(body, Some(sent())) {
            Ok(Parsed::Update(u)) => *u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    fn poison(body: &str) -> &'static str {
        match parse_message(body, Some(sent())) {
            Err(p) => p.code(),
            other => panic!("expected poison, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_update() {
        let u = update(GOOD);
        assert_eq!(u.tracking_id, "TRK-1");
        assert_eq!(u.status, "IN_TRANSIT");
        assert_eq!(u.location, Some(Json::String("Leeds".into())));
        assert_eq!(u.time_source, TimeSource::Producer);
        assert!(
            u.sort_key().starts_with("2026-11-20T09:00:00.123Z#sha256:"),
            "{}",
            u.sort_key()
        );
    }

    #[test]
    fn key_ignores_field_order_zone_and_number_spelling() {
        let a = update(GOOD);
        let b = update(
            r#"{"timestamp":"2026-11-20T09:00:00.123Z","details":{"tags":["a"],"signed":false,"weight_kg":1.50},
            "carrier":"DHL","location":"Leeds","status":"IN_TRANSIT","tracking_id":"TRK-1"}"#,
        );
        let c = update(&GOOD.replace("1.5", "15e-1"));
        assert_eq!(a.sort_key(), b.sort_key());
        assert_eq!(a.sort_key(), c.sort_key());
        assert_eq!(a.content_digest(), c.content_digest());
    }

    #[test]
    fn key_differs_when_content_differs() {
        let a = update(GOOD);
        let b = update(&GOOD.replace("Leeds", "York"));
        assert_ne!(a.sort_key(), b.sort_key());
        // Big integers are not rounded through f64 into one value.
        let big = |n: &str| {
            update(&format!(
                r#"{{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":{{"n":{n}}}}}"#
            ))
            .sort_key()
        };
        assert_ne!(big("9007199254740993"), big("9007199254740992"));
        assert_ne!(big("123456789012345678901"), big("123456789012345678900"));
    }

    #[test]
    fn event_id_wins_over_content_but_the_digest_tells_them_apart() {
        let a = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":"e1","status":"A"}"#,
        );
        let b = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":"e1","status":"B"}"#,
        );
        assert_eq!(a.sort_key(), "2026-01-01T00:00:00.000Z#id:e1");
        assert_eq!(a.sort_key(), b.sort_key());
        assert_ne!(a.content_digest(), b.content_digest());
        let item = a.to_item("m", "tok", sent(), 90);
        assert_eq!(item[attr::CONTENT_DIGEST], s(a.content_digest()));
        assert_eq!(
            conflict_sort_key(&b.sort_key(), &b.content_digest()),
            format!(
                "2026-01-01T00:00:00.000Z#id:e1#conflict:{}",
                b.content_digest()
            )
        );
    }

    #[test]
    fn the_shapes_the_original_stored_are_accepted() {
        // No or null timestamp: SQS's SentTimestamp, marked as such.
        for body in [
            r#"{"tracking_id":"T"}"#,
            r#"{"tracking_id":"T","timestamp":null}"#,
        ] {
            let u = update(body);
            assert_eq!(u.event_time, sent());
            assert_eq!(u.time_source, TimeSource::SqsSent);
            let item = u.to_item("m", "tok", sent(), 90);
            assert_eq!(item[attr::TIME_SOURCE], s("sqs_sent_timestamp"));
            assert_eq!(u.status, DEFAULT_STATUS);
        }
        // Epoch numbers, naive ISO (UTC), +hhmm offsets.
        for ts in [
            "1795176000",
            "1795176000000",
            r#""2026-11-20T12:00:00""#,
            r#""2026-11-20T13:00:00+0100""#,
        ] {
            let u = update(&format!(r#"{{"tracking_id":"T","timestamp":{ts}}}"#));
            assert_eq!(u.sort_key()[..24], *"2026-11-20T12:00:00.000Z", "{ts}");
        }
        // details, location, carrier of any JSON type, stored as they came.
        let u = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":"fragile",
                "location":{"lat":53.8,"lon":-1.5},"carrier":["DHL","DPD"]}"#,
        );
        assert_eq!(u.details, Json::String("fragile".into()));
        let item = u.to_item("m", "tok", sent(), 90);
        assert!(matches!(item[attr::LOCATION], AttributeValue::M(_)));
        assert!(matches!(item[attr::CARRIER], AttributeValue::L(_)));
        for details in ["[1,2]", "7", "true"] {
            update(&format!(
                r#"{{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":{details}}}"#
            ));
        }
        // Numeric event_id as a string, empty as absent, long hashed.
        let u = update(r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":42}"#);
        assert_eq!(u.event_id.as_deref(), Some("42"));
        assert!(u.sort_key().ends_with("#id:42"));
        let u = update(r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":""}"#);
        assert_eq!(u.event_id, None);
        assert!(u.idempotency_key().starts_with("sha256:"));
        let long = "e".repeat(5000);
        let u = update(&format!(
            r#"{{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":"{long}"}}"#
        ));
        assert!(u.sort_key().len() < 1024);
        assert!(u.idempotency_key().starts_with("idsha256:"));
        // Keys up to DynamoDB's limits.
        let id = "T".repeat(MAX_TRACKING_ID_LEN);
        let status = "S".repeat(MAX_STATUS_LEN);
        let u = update(&format!(
            r#"{{"tracking_id":"{id}","status":"{status}","timestamp":"2026-01-01T00:00:00Z"}}"#
        ));
        assert_eq!(u.tracking_id.len(), 2048);
        // A `maintenance` field on an update is just a field.
        let u = update(
            r#"{"tracking_id":"T","maintenance":"daily","timestamp":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(u.tracking_id, "T");
    }

    #[test]
    fn every_kind_of_poison_is_named() {
        let long = "x".repeat(MAX_TRACKING_ID_LEN + 1);
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let huge = "x".repeat(MAX_ITEM_BYTES);
        let cases = [
            ("not json", "not_json"),
            ("", "not_json"),
            ("[1,2]", "not_an_object"),
            ("\"TRK\"", "not_an_object"),
            (
                r#"{"status":"X","timestamp":"2026-01-01T00:00:00Z"}"#,
                "missing_tracking_id",
            ),
            (
                r#"{"tracking_id":"  ","timestamp":"2026-01-01T00:00:00Z"}"#,
                "empty_tracking_id",
            ),
            (
                r#"{"tracking_id":42,"timestamp":"2026-01-01T00:00:00Z"}"#,
                "wrong_type",
            ),
            (
                &format!(r#"{{"tracking_id":"{long}","timestamp":"2026-01-01T00:00:00Z"}}"#),
                "tracking_id_too_long",
            ),
            (
                r##"{"tracking_id":"#SUMMARY","timestamp":"2026-01-01T00:00:00Z"}"##,
                "reserved_tracking_id",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","status":7}"#,
                "wrong_type",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":{"a":1}}"#,
                "wrong_type",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"yesterday"}"#,
                "bad_timestamp",
            ),
            (r#"{"tracking_id":"T","timestamp":true}"#, "bad_timestamp"),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":{"n":1e200}}"#,
                "number_out_of_range",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":{"n":1e400}}"#,
                "number_out_of_range",
            ),
            (
                &format!(
                    r#"{{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":{deep}}}"#
                ),
                "nesting_too_deep",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","location":{"":1}}"#,
                "empty_map_key",
            ),
            (
                &format!(
                    r#"{{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":"{huge}"}}"#
                ),
                "item_too_large",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(poison(body), code, "body {:?}", &body[..body.len().min(80)]);
        }
        // Without SQS's SentTimestamp (outside a queue), a missing timestamp is poison.
        assert_eq!(
            parse(r#"{"tracking_id":"T"}"#).map_err(|p| p.code()),
            Err("missing_timestamp")
        );
    }

    #[test]
    fn only_the_schedules_exact_message_is_maintenance() {
        let body = crate::contract::MAINTENANCE_MESSAGE_BODY
            .replace("<aws.scheduler.scheduled-time>", "2026-11-21T01:00:00Z");
        let Ok(Parsed::Maintenance(m)) = parse(&body) else {
            panic!("not maintenance")
        };
        assert_eq!(
            m.scheduled_time.map(|t| t.to_rfc3339()),
            Some("2026-11-21T01:00:00+00:00".into())
        );
        let Ok(Parsed::Maintenance(m)) = parse(crate::contract::MAINTENANCE_MESSAGE_BODY) else {
            panic!("not maintenance")
        };
        assert_eq!(m.scheduled_time, None);
        assert!(matches!(
            parse(r#"{"maintenance":"daily"}"#),
            Ok(Parsed::Maintenance(_))
        ));
        for body in [
            r#"{"maintenance":null}"#,
            r#"{"maintenance":"weekly"}"#,
            r#"{"maintenance":"daily","scheduled_time":"x","extra":1}"#,
            r#"{"maintenance":true,"tracking_id":"T"}"#,
            r#"{"tracking_id":"T","maintenance":"daily","timestamp":"2026-01-01T00:00:00Z"}"#,
        ] {
            assert!(
                !matches!(parse(body), Ok(Parsed::Maintenance(_))),
                "{body} is not the schedule's message"
            );
        }
    }

    #[test]
    fn item_has_the_original_attributes() {
        let u = update(GOOD);
        let now = DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let item = u.to_item("m-1", "tok", now, 90);
        for a in [
            attr::TRACKING_ID,
            attr::TIMESTAMP,
            attr::IDEMPOTENCY_KEY,
            attr::MESSAGE_ID,
            attr::STATUS,
            attr::LOCATION,
            attr::CARRIER,
            attr::DETAILS,
            attr::RECEIVED_AT,
            attr::PROCESSED_AT,
            attr::TTL,
            attr::CONTENT_DIGEST,
            attr::WRITE_TOKEN,
            attr::TIME_SOURCE,
        ] {
            assert!(item.contains_key(a), "missing {a}");
        }
        assert_eq!(
            item[attr::TTL],
            AttributeValue::N((now.timestamp() + 90 * 86_400).to_string())
        );
        assert_eq!(item[attr::RECEIVED_AT], s("2026-11-20T10:00:00.123+01:00"));
        let details = attr_to_json(&item[attr::DETAILS]);
        assert_eq!(details["weight_kg"], serde_json::json!(1.5));
        assert_eq!(details["tags"], serde_json::json!(["a"]));
    }
}
