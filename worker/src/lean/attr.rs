//! DynamoDB's JSON form of items (`{"S": ...}`, `{"M": {...}}`, ...), written straight from
//! the SDK's `AttributeValue` (no intermediate document) and read back into it.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::base64;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::store::Item;

/// An item, serialised as DynamoDB's JSON.
pub struct ItemJson<'a>(pub &'a Item);

struct Av<'a>(&'a AttributeValue);
struct Binaries<'a>(&'a [Blob]);

impl Serialize for ItemJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, &Av(v))?;
        }
        m.end()
    }
}

impl Serialize for Av<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::S(v) => m.serialize_entry("S", v)?,
            AttributeValue::N(v) => m.serialize_entry("N", v)?,
            AttributeValue::Bool(v) => m.serialize_entry("BOOL", v)?,
            AttributeValue::Null(v) => m.serialize_entry("NULL", v)?,
            AttributeValue::M(v) => m.serialize_entry("M", &ItemJson(v))?,
            AttributeValue::L(v) => m.serialize_entry("L", &List(v))?,
            AttributeValue::Ss(v) => m.serialize_entry("SS", v)?,
            AttributeValue::Ns(v) => m.serialize_entry("NS", v)?,
            AttributeValue::B(v) => m.serialize_entry("B", &base64::encode(v.as_ref()))?,
            AttributeValue::Bs(v) => m.serialize_entry("BS", &Binaries(v))?,
            other => {
                return Err(S::Error::custom(format!(
                    "unknown attribute type {other:?}"
                )));
            }
        }
        m.end()
    }
}

struct List<'a>(&'a [AttributeValue]);

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&Av(v))?;
        }
        seq.end()
    }
}

impl Serialize for Binaries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(&base64::encode(b.as_ref()))?;
        }
        seq.end()
    }
}

/// An item from DynamoDB's JSON; `None` when it is not one.
pub fn item_from_json(v: Value) -> Option<Item> {
    let Value::Object(map) = v else { return None };
    map.into_iter()
        .map(|(k, v)| Some((k, attr_from_json(v)?)))
        .collect::<Option<HashMap<_, _>>>()
}

fn attr_from_json(v: Value) -> Option<AttributeValue> {
    let Value::Object(map) = v else { return None };
    let (kind, v) = map.into_iter().next()?;
    let strings = |v: Value| -> Option<Vec<String>> {
        match v {
            Value::Array(a) => a
                .into_iter()
                .map(|e| match e {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    let blob = |s: &str| base64::decode(s).ok().map(Blob::new);
    Some(match (kind.as_str(), v) {
        ("S", Value::String(s)) => AttributeValue::S(s),
        ("N", Value::String(s)) => AttributeValue::N(s),
        ("BOOL", Value::Bool(b)) => AttributeValue::Bool(b),
        ("NULL", Value::Bool(b)) => AttributeValue::Null(b),
        ("M", m) => AttributeValue::M(item_from_json(m)?),
        ("L", Value::Array(l)) => AttributeValue::L(
            l.into_iter()
                .map(attr_from_json)
                .collect::<Option<Vec<_>>>()?,
        ),
        ("SS", v) => AttributeValue::Ss(strings(v)?),
        ("NS", v) => AttributeValue::Ns(strings(v)?),
        ("B", Value::String(s)) => AttributeValue::B(blob(&s)?),
        ("BS", v) => AttributeValue::Bs(
            strings(v)?
                .iter()
                .map(|s| blob(s))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_type_round_trips() {
        let nested: Item = [("n".to_string(), AttributeValue::N("1.50".into()))].into();
        let item: Item = [
            ("s", AttributeValue::S("é \"quoted\" \\ \u{1}".into())),
            ("n", AttributeValue::N("-12345678901234567890.5".into())),
            ("t", AttributeValue::Bool(true)),
            ("z", AttributeValue::Null(true)),
            ("m", AttributeValue::M(nested)),
            (
                "l",
                AttributeValue::L(vec![
                    AttributeValue::S("a".into()),
                    AttributeValue::L(vec![]),
                ]),
            ),
            ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into(), "2".into()])),
            ("b", AttributeValue::B(Blob::new(vec![0u8, 255, 10]))),
            ("bs", AttributeValue::Bs(vec![Blob::new(vec![1u8])])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let text = serde_json::to_string(&ItemJson(&item)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["m"], serde_json::json!({"M": {"n": {"N": "1.50"}}}));
        assert_eq!(value["b"], serde_json::json!({"B": "AP8K"}));
        assert_eq!(item_from_json(value), Some(item));
    }
}
