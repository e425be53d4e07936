//! The message → audit item mapping, with no I/O: parse and validate a message body into a
//! [`TrackingUpdate`] (or a maintenance request, or a [`Poison`] reason), derive the item key
//! from the update itself, and build the DynamoDB item.
//!
//! The sort key is `<event time, UTC, millisecond precision>#<event_id or content digest>`.
//! It never contains the processing time, so a redelivery, a producer retry and a second
//! worker all compute the same key, and the conditional put turns repeats into duplicates.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::contract::MAINTENANCE_KEY;

/// Longest accepted `tracking_id`, in bytes (DynamoDB allows 2 KiB for a partition key; real
/// tracking numbers are far shorter, and a bound keeps garbage out of the table).
pub const MAX_TRACKING_ID_LEN: usize = 128;
/// Longest accepted `event_id`, in bytes (it becomes part of the sort key).
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest accepted `status`, `location` or `carrier`, in bytes.
pub const MAX_FIELD_LEN: usize = 1024;
/// Status stored when an update carries none; the original Lambda did the same.
pub const DEFAULT_STATUS: &str = "UNKNOWN";
/// Partition keys starting with this are the worker's own bookkeeping items (maintenance
/// claims, summaries, DLQ samples, counters); producers may not use them.
pub const RESERVED_PREFIX: char = '#';

/// A validated tracking update.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackingUpdate {
    pub tracking_id: String,
    pub status: String,
    pub location: Option<String>,
    pub carrier: Option<String>,
    pub details: Map<String, Value>,
    /// The event time as the producer sent it (stored as `received_at`, as the original did).
    pub timestamp_raw: String,
    pub event_time: DateTime<Utc>,
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
    MissingTimestamp,
    BadTimestamp(String),
    EmptyEventId,
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
            Poison::EmptyEventId => "empty_event_id",
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
            Poison::BadTimestamp(e) => write!(f, "timestamp is not RFC 3339: {e}"),
            Poison::EmptyEventId => f.write_str("event_id is empty"),
        }
    }
}

/// Parses a message body. Never panics, whatever the body.
pub fn parse(body: &str) -> Result<Parsed, Poison> {
    let value: Value = serde_json::from_str(body).map_err(|e| Poison::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(Poison::NotAnObject);
    };
    if obj.contains_key(MAINTENANCE_KEY) {
        let scheduled_time = obj
            .get("scheduled_time")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        return Ok(Parsed::Maintenance(MaintenanceRequest { scheduled_time }));
    }
    parse_update(obj).map(|u| Parsed::Update(Box::new(u)))
}

fn parse_update(mut obj: Map<String, Value>) -> Result<TrackingUpdate, Poison> {
    let tracking_id = match obj.remove("tracking_id") {
        None | Some(Value::Null) => return Err(Poison::MissingTrackingId),
        Some(Value::String(s)) => s,
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
    let status = optional_string(&mut obj, "status", MAX_FIELD_LEN)?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_STATUS.to_string());
    let location = optional_string(&mut obj, "location", MAX_FIELD_LEN)?;
    let carrier = optional_string(&mut obj, "carrier", MAX_FIELD_LEN)?;
    let details = match obj.remove("details") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(wrong("details", "an object")),
    };
    let timestamp_raw =
        optional_string(&mut obj, "timestamp", MAX_FIELD_LEN)?.ok_or(Poison::MissingTimestamp)?;
    let event_time = DateTime::parse_from_rfc3339(&timestamp_raw)
        .map_err(|e| Poison::BadTimestamp(e.to_string()))?
        .with_timezone(&Utc);
    let event_id = optional_string(&mut obj, "event_id", MAX_EVENT_ID_LEN)?;
    if event_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(Poison::EmptyEventId);
    }
    Ok(TrackingUpdate {
        tracking_id,
        status,
        location,
        carrier,
        details,
        timestamp_raw,
        event_time,
        event_id,
    })
}

fn wrong(field: &'static str, expected: &'static str) -> Poison {
    Poison::WrongType { field, expected }
}

fn optional_string(
    obj: &mut Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, Poison> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > max => Err(Poison::FieldTooLong {
            field,
            len: s.len(),
        }),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(field, "a string")),
    }
}

impl TrackingUpdate {
    /// The part of the sort key that identifies the update: its `event_id`, or a digest of
    /// its content when it has none (so a producer retry of the same content still matches).
    pub fn idempotency_key(&self) -> String {
        match &self.event_id {
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

    /// SHA-256 over a canonical JSON form (sorted keys, normalised event time), so field
    /// order and time-zone spelling do not make two copies of one update look different.
    fn content_digest(&self) -> String {
        let canonical = Value::Array(vec![
            Value::String(self.tracking_id.clone()),
            Value::String(self.status.clone()),
            self.location.clone().map_or(Value::Null, Value::String),
            self.carrier.clone().map_or(Value::Null, Value::String),
            canonicalize(&Value::Object(self.details.clone())),
            Value::String(self.event_time.to_rfc3339_opts(SecondsFormat::Nanos, true)),
        ]);
        let mut hasher = Sha256::new();
        hasher.update(canonical.to_string().as_bytes());
        hex::encode(&hasher.finalize()[..16])
    }

    /// The audit item, with the original's attributes (so the `StatusIndex` GSI works).
    pub fn to_item(
        &self,
        message_id: &str,
        processed_at: DateTime<Utc>,
        ttl_days: u32,
    ) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            (attr::TRACKING_ID.into(), s(&self.tracking_id)),
            (attr::TIMESTAMP.into(), s(self.sort_key())),
            (attr::IDEMPOTENCY_KEY.into(), s(self.idempotency_key())),
            (attr::MESSAGE_ID.into(), s(message_id)),
            (attr::STATUS.into(), s(&self.status)),
            (
                attr::DETAILS.into(),
                AttributeValue::M(json_map_to_attrs(&self.details)),
            ),
            (attr::RECEIVED_AT.into(), s(&self.timestamp_raw)),
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
            item.insert(attr::LOCATION.into(), s(v));
        }
        if let Some(v) = &self.carrier {
            item.insert(attr::CARRIER.into(), s(v));
        }
        if let Some(v) = &self.event_id {
            item.insert(attr::EVENT_ID.into(), s(v));
        }
        item
    }
}

/// Attribute names of the audit table.
pub mod attr {
    pub const TRACKING_ID: &str = "tracking_id";
    pub const TIMESTAMP: &str = "timestamp";
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
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

/// Recursively sorts object keys, whatever serde_json's map ordering feature is.
fn canonicalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonicalize(&m[k.as_str()]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonicalize).collect()),
        other => other.clone(),
    }
}

/// JSON → DynamoDB attribute, keeping numbers exact (DynamoDB numbers are decimal strings).
pub fn json_to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(x) => AttributeValue::S(x.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(json_to_attr).collect()),
        Value::Object(m) => AttributeValue::M(json_map_to_attrs(m)),
    }
}

fn json_map_to_attrs(m: &Map<String, Value>) -> HashMap<String, AttributeValue> {
    m.iter()
        .map(|(k, v)| (k.clone(), json_to_attr(v)))
        .collect()
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

    fn update(body: &str) -> TrackingUpdate {
        match parse(body) {
            Ok(Parsed::Update(u)) => *u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    fn poison(body: &str) -> &'static str {
        match parse(body) {
            Err(p) => p.code(),
            other => panic!("expected poison, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_update() {
        let u = update(GOOD);
        assert_eq!(u.tracking_id, "TRK-1");
        assert_eq!(u.status, "IN_TRANSIT");
        assert_eq!(u.location.as_deref(), Some("Leeds"));
        assert_eq!(u.details.len(), 3);
        assert!(
            u.sort_key().starts_with("2026-11-20T09:00:00.123Z#sha256:"),
            "{}",
            u.sort_key()
        );
    }

    #[test]
    fn key_ignores_field_order_and_zone_spelling() {
        let a = update(GOOD);
        let b = update(
            r#"{"timestamp":"2026-11-20T09:00:00.123Z","details":{"tags":["a"],"signed":false,"weight_kg":1.5},
            "carrier":"DHL","location":"Leeds","status":"IN_TRANSIT","tracking_id":"TRK-1"}"#,
        );
        assert_eq!(a.sort_key(), b.sort_key());
    }

    #[test]
    fn key_differs_when_content_differs() {
        let a = update(GOOD);
        let b = update(&GOOD.replace("Leeds", "York"));
        assert_ne!(a.sort_key(), b.sort_key());
    }

    #[test]
    fn event_id_wins_over_content() {
        let a = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":"e1","status":"A"}"#,
        );
        let b = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":"e1","status":"B"}"#,
        );
        assert_eq!(a.sort_key(), "2026-01-01T00:00:00.000Z#id:e1");
        assert_eq!(a.sort_key(), b.sort_key());
    }

    #[test]
    fn status_defaults_and_optional_fields_may_be_null() {
        let u = update(
            r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","location":null,"details":null}"#,
        );
        assert_eq!(u.status, DEFAULT_STATUS);
        assert_eq!(u.location, None);
        assert!(u.details.is_empty());
    }

    #[test]
    fn every_kind_of_poison_is_named() {
        let long = "x".repeat(MAX_TRACKING_ID_LEN + 1);
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
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","details":"x"}"#,
                "wrong_type",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","status":7}"#,
                "wrong_type",
            ),
            (r#"{"tracking_id":"T"}"#, "missing_timestamp"),
            (
                r#"{"tracking_id":"T","timestamp":"yesterday"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"tracking_id":"T","timestamp":1700000000}"#,
                "wrong_type",
            ),
            (
                r#"{"tracking_id":"T","timestamp":"2026-01-01T00:00:00Z","event_id":""}"#,
                "empty_event_id",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(poison(body), code, "body {body:?}");
        }
    }

    #[test]
    fn maintenance_body_is_recognised() {
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
    }

    #[test]
    fn item_has_the_original_attributes() {
        let u = update(GOOD);
        let now = DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let item = u.to_item("m-1", now, 90);
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
