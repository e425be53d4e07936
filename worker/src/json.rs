//! JSON as producers send it, kept exact: numbers keep their decimal value (no trip through
//! `f64`, so `12345678901234567890123` stays that number), objects keep every key. Pure.
//!
//! Two uses need this: the content digest, where `1`, `1.0` and `1e0` must be one number (a
//! producer retry through another serializer must not become a second item), and the
//! DynamoDB item, whose numbers are decimal strings with limits of their own.
//!
//! Unicode: strings are compared as the code points the JSON decodes to (`"\u00e9"` and `"é"`
//! are equal) and are not normalised (NFC `é` and NFD `e` + U+0301 differ): a re-serialising
//! producer does not change the normalisation form, and the audit trail keeps what was sent.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A JSON value whose numbers are exact decimals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    /// In document order; a repeated key keeps its last value, as every JSON library does.
    Object(Vec<(String, Json)>),
}

/// An exact decimal: `(-1)^negative × digits × 10^exponent`, with no leading or trailing
/// zeros in `digits` (zero is `digits = ""`), so equal values have equal representations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number {
    negative: bool,
    digits: String,
    exponent: i64,
}

/// DynamoDB's number limits: 38 significant digits, magnitude from 1E-130 to below 1E+126.
pub const MAX_SIGNIFICANT_DIGITS: usize = 38;
pub const MIN_ADJUSTED_EXPONENT: i64 = -130;
pub const MAX_ADJUSTED_EXPONENT: i64 = 125;
/// DynamoDB's nesting limit for lists and maps.
pub const MAX_DEPTH: usize = 32;
/// DynamoDB's item size limit, in bytes.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Why DynamoDB cannot store a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unstorable {
    NumberOutOfRange(String),
    NestingTooDeep,
    EmptyMapKey,
    ItemTooLarge(usize),
}

impl Unstorable {
    pub fn code(&self) -> &'static str {
        match self {
            Unstorable::NumberOutOfRange(_) => "number_out_of_range",
            Unstorable::NestingTooDeep => "nesting_too_deep",
            Unstorable::EmptyMapKey => "empty_map_key",
            Unstorable::ItemTooLarge(_) => "item_too_large",
        }
    }
}

impl fmt::Display for Unstorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unstorable::NumberOutOfRange(d) => f.write_str(d),
            Unstorable::NestingTooDeep => {
                write!(f, "nesting deeper than DynamoDB's {MAX_DEPTH} levels")
            }
            Unstorable::EmptyMapKey => {
                f.write_str("an object has an empty key, which a DynamoDB map cannot hold")
            }
            Unstorable::ItemTooLarge(n) => write!(
                f,
                "the item would be {n} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte limit"
            ),
        }
    }
}

impl Number {
    /// Parses a JSON number token (already validated by the JSON parser).
    pub fn parse(raw: &str) -> Option<Number> {
        let (negative, rest) = match raw.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, raw),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all = format!("{int}{frac}");
        let trimmed_start = all.trim_start_matches('0');
        let digits = trimmed_start.trim_end_matches('0');
        let trailing = (trimmed_start.len() - digits.len()) as i64;
        let exponent = exp.checked_sub(frac.len() as i64)?.checked_add(trailing)?;
        if digits.is_empty() {
            return Some(Number {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        Some(Number {
            negative,
            digits: digits.to_string(),
            exponent,
        })
    }

    /// The exponent of the leading digit (`123` → 2, `0.05` → -2).
    fn adjusted_exponent(&self) -> i64 {
        self.exponent + self.digits.len() as i64 - 1
    }

    /// Why DynamoDB would refuse this number, if it would.
    pub fn dynamodb_problem(&self) -> Option<Unstorable> {
        if self.digits.is_empty() {
            return None;
        }
        if self.digits.len() > MAX_SIGNIFICANT_DIGITS {
            return Some(Unstorable::NumberOutOfRange(format!(
                "{self} has {} significant digits; DynamoDB keeps {MAX_SIGNIFICANT_DIGITS}",
                self.digits.len()
            )));
        }
        let adj = self.adjusted_exponent();
        if !(MIN_ADJUSTED_EXPONENT..=MAX_ADJUSTED_EXPONENT).contains(&adj) {
            return Some(Unstorable::NumberOutOfRange(format!(
                "{self} is outside DynamoDB's range (1E-130 to 1E+126)"
            )));
        }
        None
    }
}

/// Canonical text: plain decimal when short (`1`, `-0.25`, `1500`), else `d.dddE±x`.
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.digits.is_empty() {
            return f.write_str("0");
        }
        let sign = if self.negative { "-" } else { "" };
        let n = self.digits.len() as i64;
        if (0..=20).contains(&self.exponent) {
            let zeros = "0".repeat(self.exponent as usize);
            return write!(f, "{sign}{}{zeros}", self.digits);
        }
        if self.exponent < 0 && self.exponent >= -(n + 20) {
            let point = n + self.exponent;
            return if point > 0 {
                let (a, b) = self.digits.split_at(point as usize);
                write!(f, "{sign}{a}.{b}")
            } else {
                let zeros = "0".repeat((-point) as usize);
                write!(f, "{sign}0.{zeros}{}", self.digits)
            };
        }
        let (first, rest) = self.digits.split_at(1);
        let adj = self.adjusted_exponent();
        let exp_sign = if adj < 0 { "-" } else { "+" };
        if rest.is_empty() {
            write!(f, "{sign}{first}E{exp_sign}{}", adj.abs())
        } else {
            write!(f, "{sign}{first}.{rest}E{exp_sign}{}", adj.abs())
        }
    }
}

/// Parses `text` as JSON, strictly (serde_json's grammar and error messages), keeping numbers
/// exact. serde_json reports numbers to a visitor as `f64`/`i64`; the exact text is taken from
/// a scan of the number tokens, which the parser visits in document order.
pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
    let tokens = RefCell::new(number_tokens(text).into_iter());
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Seed { tokens: &tokens }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The number tokens of a JSON text, in order (everything outside strings that starts with
/// `-` or a digit).
fn number_tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                out.push(&text[start..i]);
            }
            _ => i += 1,
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Seed<'a, 't> {
    tokens: &'a RefCell<std::vec::IntoIter<&'t str>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Json;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_, '_> {
    fn number<E: de::Error>(self) -> Result<Json, E> {
        let raw = self
            .tokens
            .borrow_mut()
            .next()
            .ok_or_else(|| E::custom("number token missing"))?;
        Number::parse(raw)
            .map(Json::Number)
            .ok_or_else(|| E::custom(format!("invalid number {raw}")))
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        self.number()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        self.number()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        self.number()
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out: Vec<(String, Json)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            out.retain(|(existing, _)| *existing != k);
            out.push((k, v));
        }
        Ok(Json::Object(out))
    }
}

impl Json {
    /// Canonical JSON text: keys sorted, numbers canonical, no whitespace. Equal for every
    /// re-serialisation of the same value.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&n.to_string()),
            Json::String(s) => out.push_str(&quote(s)),
            Json::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_canonical(out);
                }
                out.push(']');
            }
            Json::Object(m) => {
                let sorted: BTreeMap<&str, &Json> =
                    m.iter().map(|(k, v)| (k.as_str(), v)).collect();
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(k));
                    out.push(':');
                    v.write_canonical(out);
                }
                out.push('}');
            }
        }
    }

    /// Why DynamoDB cannot store this value, if it cannot: a number out of its range, nesting
    /// deeper than 32 levels, or an empty map key. Found here so such a message is poison at
    /// once, with the reason, instead of failing three times and reaching the DLQ without one.
    pub fn dynamodb_problem(&self) -> Option<Unstorable> {
        self.problem_at(0)
    }

    fn problem_at(&self, depth: usize) -> Option<Unstorable> {
        match self {
            Json::Number(n) => n.dynamodb_problem(),
            Json::Array(_) | Json::Object(_) if depth > MAX_DEPTH => {
                Some(Unstorable::NestingTooDeep)
            }
            Json::Array(a) => a.iter().find_map(|v| v.problem_at(depth + 1)),
            Json::Object(m) => m.iter().find_map(|(k, v)| {
                if k.is_empty() {
                    Some(Unstorable::EmptyMapKey)
                } else {
                    v.problem_at(depth + 1)
                }
            }),
            _ => None,
        }
    }

    /// The DynamoDB attribute, numbers in canonical text.
    pub fn to_attr(&self) -> AttributeValue {
        match self {
            Json::Null => AttributeValue::Null(true),
            Json::Bool(b) => AttributeValue::Bool(*b),
            Json::Number(n) => AttributeValue::N(n.to_string()),
            Json::String(s) => AttributeValue::S(s.clone()),
            Json::Array(a) => AttributeValue::L(a.iter().map(Json::to_attr).collect()),
            Json::Object(m) => AttributeValue::M(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_attr()))
                    .collect::<HashMap<_, _>>(),
            ),
        }
    }

    /// The text of a scalar as a producer would read it (a number in canonical form).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// DynamoDB's size of an item, in bytes, as its documentation defines it (names plus values;
/// numbers about one byte per two digits plus one; three bytes of overhead per list or map
/// and one per element), rounded up so the estimate never undercounts.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + attr_size(v)).sum()
}

fn attr_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + attr_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + attr_size(e))
                .sum::<usize>()
        }
        AttributeValue::B(b) => b.as_ref().len(),
        _ => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(raw: &str) -> String {
        Number::parse(raw).unwrap().to_string()
    }

    #[test]
    fn equal_numbers_have_one_canonical_text() {
        for raw in ["1", "1.0", "1e0", "1E+0", "10e-1", "0.1e1", "1.000"] {
            assert_eq!(num(raw), "1", "{raw}");
        }
        assert_eq!(num("-0"), "0");
        assert_eq!(num("0.0e5"), "0");
        assert_eq!(num("1500"), "1500");
        assert_eq!(num("1.5e3"), "1500");
        assert_eq!(num("-0.25"), "-0.25");
        assert_eq!(num("2.5e-3"), "0.0025");
        assert_eq!(num("1e100"), "1E+100");
        assert_eq!(num("-1.25e-60"), "-1.25E-60");
    }

    #[test]
    fn big_integers_stay_exact() {
        let v = parse(r#"{"n":123456789012345678901234567890,"m":18446744073709551617}"#).unwrap();
        assert_eq!(
            v.canonical(),
            r#"{"m":18446744073709551617,"n":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn canonical_ignores_order_spacing_and_number_spelling() {
        let a = parse(r#"{"b":[1.0,2e0,"x"],"a":{"z":null,"y":true}}"#).unwrap();
        let b = parse("{ \"a\" : {\"y\":true,\"z\":null}, \"b\":[1,2.00,\"\\u0078\"] }").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        // Numbers inside strings are text, not numbers.
        let c = parse(r#"{"s":"1.0 -2e5","t":"\"3\""}"#).unwrap();
        assert_eq!(c.canonical(), r#"{"s":"1.0 -2e5","t":"\"3\""}"#);
    }

    #[test]
    fn unicode_is_decoded_but_not_normalised() {
        let escaped = parse(r#""\u00e9""#).unwrap();
        let literal = parse("\"\u{e9}\"").unwrap();
        let decomposed = parse("\"e\u{301}\"").unwrap();
        assert_eq!(escaped, literal);
        assert_ne!(literal.canonical(), decomposed.canonical());
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let v = parse(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(v.canonical(), r#"{"a":2}"#);
    }

    #[test]
    fn dynamodb_limits_are_found() {
        let ok = parse(r#"{"a":[1.5,-2e125,1e-130],"b":{"c":"d"}}"#).unwrap();
        assert_eq!(ok.dynamodb_problem(), None);
        for bad in [
            r#"{"a":1e126}"#,
            r#"{"a":1e-131}"#,
            r#"{"a":123456789012345678901234567890123456789}"#,
            r#"{"":1}"#,
            r#"{"a":{"":1}}"#,
        ] {
            assert!(parse(bad).unwrap().dynamodb_problem().is_some(), "{bad}");
        }
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(parse(&deep).unwrap().dynamodb_problem().is_some());
        let fine = format!("{}1{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(parse(&fine).unwrap().dynamodb_problem(), None);
    }

    #[test]
    fn invalid_json_is_refused() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":01}",
            "nul",
            "{\"a\":1} x",
            "1.",
            "-",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
