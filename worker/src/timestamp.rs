//! The event-time spellings producers of the original stack sent, read as one instant. Pure.
//!
//! The original stored `timestamp` as it came and keyed items by the processing time, so it
//! accepted any spelling; the worker keys items by the event time, so it must read it. It
//! accepts RFC 3339, ISO 8601 without a zone (taken as UTC), `+hhmm` / `+hh` offsets, a space
//! instead of `T`, and epoch numbers (seconds, or milliseconds when above 10^11, i.e. after
//! 5138 as seconds). A string it cannot read (`"yesterday"`) is poison.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::json::Json;

/// Epoch values at or above this are milliseconds (as seconds they would be after year 5138).
const MILLIS_THRESHOLD: f64 = 1e11;

/// Reads a `timestamp` value; `Err` says why it cannot be read.
pub fn parse(value: &Json) -> Result<DateTime<Utc>, String> {
    match value {
        Json::String(s) => parse_text(s.trim()),
        Json::Number(n) => {
            let text = n.to_string();
            let v: f64 = text
                .parse()
                .map_err(|_| format!("{text} is not an epoch time"))?;
            from_epoch(v).ok_or_else(|| format!("{text} is not an epoch time in range"))
        }
        other => Err(format!("timestamp is {}", other.type_name())),
    }
}

fn from_epoch(v: f64) -> Option<DateTime<Utc>> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let millis = if v >= MILLIS_THRESHOLD { v } else { v * 1000.0 };
    DateTime::from_timestamp_millis(millis.round() as i64)
}

const ZONED: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
];
const NAIVE: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

fn parse_text(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // RFC 3339 allows a lower-case `z`/`t`; chrono's %z does not read `Z`.
    let upper = s.to_ascii_uppercase();
    let zulu = upper.strip_suffix('Z').map(|rest| format!("{rest}+0000"));
    for candidate in [Some(upper.as_str()), zulu.as_deref()]
        .into_iter()
        .flatten()
    {
        for f in ZONED {
            if let Ok(t) = DateTime::parse_from_str(candidate, f) {
                return Ok(t.with_timezone(&Utc));
            }
        }
    }
    for f in NAIVE {
        if let Ok(t) = NaiveDateTime::parse_from_str(&upper, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    Err(format!(
        "{s:?} is not a time (RFC 3339, ISO 8601 or epoch seconds/milliseconds)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(v: &str) -> String {
        let json = crate::json::parse(v).unwrap();
        parse(&json)
            .unwrap_or_else(|e| panic!("{v}: {e}"))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    #[test]
    fn every_spelling_the_original_stored_is_read() {
        let noon = "2026-11-20T12:00:00.000Z";
        for v in [
            r#""2026-11-20T12:00:00Z""#,
            r#""2026-11-20T12:00:00z""#,
            r#""2026-11-20T13:00:00+01:00""#,
            r#""2026-11-20T13:00:00+0100""#,
            r#""2026-11-20T13:00:00.000+0100""#,
            r#""2026-11-20T13:00:00+01""#,
            r#""2026-11-20 13:00:00+01:00""#,
            r#""2026-11-20T12:00:00""#,
            r#""2026-11-20 12:00:00""#,
            r#""2026-11-20T12:00""#,
            r#""2026-11-20T12:00:00.000000""#,
            "1795176000",
            "1795176000.0",
            "1795176000000",
            "1.795176e9",
        ] {
            assert_eq!(at(v), noon, "{v}");
        }
        assert_eq!(at(r#""2026-11-20""#), "2026-11-20T00:00:00.000Z");
        assert_eq!(at("1795176000.123"), "2026-11-20T12:00:00.123Z");
    }

    #[test]
    fn garbage_is_refused() {
        for v in [
            r#""yesterday""#,
            r#""""#,
            r#""2026-13-01T00:00:00Z""#,
            "-5",
            "true",
            "{}",
            "[]",
        ] {
            let json = crate::json::parse(v).unwrap();
            assert!(parse(&json).is_err(), "{v}");
        }
    }
}
