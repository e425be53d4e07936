//! Realistic synthetic traffic for `trackctl send`, the tests and the benchmark: shipments
//! moving through their life cycle, some updates sent twice (redeliveries and producer
//! retries that re-encode the same update), and some poison of every kind.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

const LIFECYCLE: &[&str] = &[
    "LABEL_CREATED",
    "PICKED_UP",
    "IN_TRANSIT",
    "OUT_FOR_DELIVERY",
    "DELIVERED",
];
const CARRIERS: &[&str] = &["UPS", "FedEx", "DHL", "USPS", "Royal Mail", "DPD"];
const LOCATIONS: &[&str] = &[
    "Memphis, TN",
    "Louisville, KY",
    "Leipzig, DE",
    "East Midlands, GB",
    "Chicago, IL",
    "Rotterdam, NL",
    "Paris CDG, FR",
    "Dallas, TX",
    "Toronto, ON",
    "Madrid, ES",
];
/// Every kind of poison the worker must dead-letter at once.
pub const POISON_KINDS: &[&str] = &[
    "not_json",
    "not_an_object",
    "missing_tracking_id",
    "empty_tracking_id",
    "wrong_type",
    "tracking_id_too_long",
    "bad_timestamp",
    "number_out_of_range",
    "nesting_too_deep",
    "empty_map_key",
    "item_too_large",
    "field_too_long",
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Distinct valid updates.
    pub count: usize,
    pub duplicate_percent: f64,
    pub poison_percent: f64,
    pub seed: u64,
    /// Tracking ids are `<prefix>-<n>`; give each run its own to keep runs apart.
    pub prefix: String,
}

/// What was generated, by kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub messages: usize,
    pub distinct_updates: usize,
    pub duplicates: usize,
    pub poison: usize,
    pub seed: u64,
    pub by_status: BTreeMap<String, usize>,
    pub poison_by_kind: BTreeMap<String, usize>,
}

pub struct Plan {
    /// Message bodies in send order.
    pub bodies: Vec<String>,
    /// The distinct valid updates, one body each (for checking the table afterwards).
    pub distinct: Vec<String>,
    pub summary: Summary,
}

pub fn plan(spec: &Spec) -> Plan {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut summary = Summary {
        seed: spec.seed,
        ..Summary::default()
    };
    let shipments = (spec.count / LIFECYCLE.len()).max(1);
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let mut distinct = Vec::with_capacity(spec.count);
    for i in 0..spec.count {
        let shipment = i % shipments;
        let step = i / shipments;
        let status = if rng.random_bool(0.02) {
            "EXCEPTION"
        } else {
            LIFECYCLE[step.min(LIFECYCLE.len() - 1)]
        };
        *summary.by_status.entry(status.to_string()).or_default() += 1;
        let event_time = chrono::DateTime::from_timestamp(
            base + (step as i64) * 3_600 + (shipment as i64 % 3_600),
            (i % 1000) as u32 * 1_000_000,
        )
        .unwrap_or_default();
        let mut update = json!({
            "tracking_id": format!("{}-{shipment:06}", spec.prefix),
            "status": status,
            "location": LOCATIONS.choose(&mut rng).copied().unwrap_or("Unknown"),
            "carrier": CARRIERS[shipment % CARRIERS.len()],
            "details": {
                "weight_kg": (rng.random_range(1..500) as f64) / 10.0,
                "service": if shipment.is_multiple_of(4) { "express" } else { "ground" },
                "scan": {"device": format!("HH-{:04}", rng.random_range(0..10_000)), "seq": step},
            },
            "timestamp": event_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if i.is_multiple_of(2) {
            update["event_id"] = Value::String(format!(
                "{}-evt-{i:08}-{:08x}",
                spec.prefix,
                rng.random::<u32>()
            ));
        }
        distinct.push(update);
    }
    let mut bodies: Vec<String> = distinct.iter().map(Value::to_string).collect();
    let dups = ((spec.count as f64) * spec.duplicate_percent / 100.0).round() as usize;
    for (n, update) in distinct
        .choose_multiple(&mut rng, dups.min(spec.count))
        .enumerate()
    {
        bodies.push(if n.is_multiple_of(2) {
            update.to_string()
        } else {
            producer_retry(update)
        });
    }
    summary.duplicates = dups.min(spec.count);
    let poison = ((spec.count as f64) * spec.poison_percent / 100.0).round() as usize;
    for n in 0..poison {
        let kind = POISON_KINDS[n % POISON_KINDS.len()];
        *summary.poison_by_kind.entry(kind.to_string()).or_default() += 1;
        bodies.push(poison_body(kind, &spec.prefix, n));
    }
    summary.poison = poison;
    bodies.shuffle(&mut rng);
    summary.messages = bodies.len();
    summary.distinct_updates = spec.count;
    Plan {
        bodies,
        distinct: distinct.iter().map(Value::to_string).collect(),
        summary,
    }
}

/// The same update as a producer would re-send it through another serializer: other field
/// order (at every level), whitespace, numbers spelled otherwise (`3` as `3.0`, `12.5` as
/// `1.25e1`), the time in another zone. It must map to the same item (same key, same digest).
fn producer_retry(update: &Value) -> String {
    let plus_one = chrono::FixedOffset::east_opt(3_600);
    let mut update = update.clone();
    if let (Some(t), Some(zone)) = (update.get("timestamp").and_then(Value::as_str), plus_one)
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(t)
    {
        update["timestamp"] = Value::String(t.with_timezone(&zone).to_rfc3339());
    }
    respell(&update)
}

/// `value` as JSON text with reversed object keys, spaces, and numbers in another spelling.
fn respell(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("{} : {}", Value::String(k.clone()), respell(v)))
                .collect();
            format!("{{ {} }}", fields.join(" ,\n "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(respell).collect();
            format!("[ {} ]", items.join(", "))
        }
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => format!("{i}.0"),
            (None, Some(f)) => format!("{f:e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

pub fn poison_body(kind: &str, prefix: &str, n: usize) -> String {
    let ts = "2026-11-20T12:00:00Z";
    match kind {
        "not_json" => format!("tracking {prefix}-{n} delivered (not JSON)"),
        "not_an_object" => format!("[\"{prefix}-{n}\",\"DELIVERED\"]"),
        "missing_tracking_id" => {
            json!({"status": "DELIVERED", "timestamp": ts, "n": n}).to_string()
        }
        "empty_tracking_id" => {
            json!({"tracking_id": "", "status": "DELIVERED", "timestamp": ts, "n": n}).to_string()
        }
        "wrong_type" => {
            json!({"tracking_id": n, "status": "DELIVERED", "timestamp": ts}).to_string()
        }
        "tracking_id_too_long" => {
            json!({"tracking_id": format!("{prefix}-{n}-{}", "X".repeat(2100)), "timestamp": ts})
                .to_string()
        }
        "bad_timestamp" => {
            json!({"tracking_id": format!("{prefix}-P{n}"), "timestamp": "yesterday noon"})
                .to_string()
        }
        "number_out_of_range" => format!(
            r#"{{"tracking_id":"{prefix}-P{n}","timestamp":"{ts}","details":{{"weight_kg":1e300}}}}"#
        ),
        "nesting_too_deep" => format!(
            r#"{{"tracking_id":"{prefix}-P{n}","timestamp":"{ts}","details":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        ),
        "empty_map_key" => {
            json!({"tracking_id": format!("{prefix}-P{n}"), "timestamp": ts, "details": {"": n}})
                .to_string()
        }
        // Under SQS's 256 KiB, over DynamoDB's 400 KB once stored: a list element costs more
        // in an item than in JSON.
        "item_too_large" => format!(
            r#"{{"tracking_id":"{prefix}-P{n}","timestamp":"{ts}","details":[{}[1]]}}"#,
            "[1],".repeat(60_000)
        ),
        "field_too_long" => {
            json!({"tracking_id": format!("{prefix}-P{n}"), "timestamp": ts, "status": "S".repeat(3000)})
                .to_string()
        }
        _ => format!("{prefix}-{n} is not a kind of poison"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Parsed, parse};
    use std::collections::BTreeSet;

    /// The item key and content digest: a re-serialised retry must match both, or it would
    /// be stored again as a key conflict.
    fn key(body: &str) -> Option<(String, String, String)> {
        match parse(body) {
            Ok(Parsed::Update(u)) => {
                Some((u.tracking_id.clone(), u.sort_key(), u.content_digest()))
            }
            _ => None,
        }
    }

    #[test]
    fn plan_has_the_promised_mix_and_keys() {
        let spec = Spec {
            count: 1000,
            duplicate_percent: 10.0,
            poison_percent: 2.0,
            seed: 7,
            prefix: "T".into(),
        };
        let p = plan(&spec);
        assert_eq!(p.bodies.len(), 1000 + 100 + 20);
        let distinct: BTreeSet<_> = p.distinct.iter().filter_map(|b| key(b)).collect();
        assert_eq!(
            distinct.len(),
            1000,
            "distinct updates must have distinct keys"
        );
        let sent: BTreeSet<_> = p.bodies.iter().filter_map(|b| key(b)).collect();
        assert_eq!(
            sent, distinct,
            "duplicates and producer retries must map to existing keys"
        );
        let poison = p.bodies.iter().filter(|b| parse(b).is_err()).count();
        assert_eq!(poison, 20);
        let codes: BTreeSet<_> = p
            .bodies
            .iter()
            .filter_map(|b| parse(b).err())
            .map(|e| e.code())
            .collect();
        assert_eq!(
            codes,
            POISON_KINDS.iter().copied().collect(),
            "each kind is its code"
        );
        let respelled = p.bodies.iter().filter(|b| b.contains(".0 ")).count();
        assert!(respelled > 0, "some retries spell numbers otherwise");
    }

    #[test]
    fn same_seed_same_plan() {
        let spec = Spec {
            count: 50,
            duplicate_percent: 5.0,
            poison_percent: 0.5,
            seed: 1,
            prefix: "T".into(),
        };
        assert_eq!(plan(&spec).bodies, plan(&spec).bodies);
    }
}
