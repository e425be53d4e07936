//! Periods written the way people say them (`7d`, `5m`, `14d`): one whole number and one
//! unit. AWS wants seconds; this type converts. Go's duration syntax (`168h`) was the
//! alternative, but it has no day unit, and retention periods are spoken in days.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A period such as `60s`, `5m`, `12h` or `7d`. The API server checks the syntax and the
/// range of every period field with CEL; [`Period::seconds`] is `None` only for values that
/// bypassed that validation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Period(String);

/// The syntax, shared by the CEL rules and [`Period::seconds`].
pub const PERIOD_PATTERN: &str = "^[0-9]{1,7}[smhd]$";

impl Period {
    pub fn days(n: u32) -> Self {
        Self(format!("{n}d"))
    }
    pub fn hours(n: u32) -> Self {
        Self(format!("{n}h"))
    }
    pub fn minutes(n: u32) -> Self {
        Self(format!("{n}m"))
    }
    pub fn secs(n: u32) -> Self {
        Self(format!("{n}s"))
    }

    /// The text as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in seconds, or `None` when the text is not `<1-7 digits><s|m|h|d>`.
    pub fn seconds(&self) -> Option<u64> {
        let text = self.0.as_str();
        let unit = text.chars().last()?;
        let digits = &text[..text.len() - unit.len_utf8()];
        if digits.is_empty() || digits.len() > 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let factor = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        };
        Some(n * factor)
    }
}

impl From<&str> for Period {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Period {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Period".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The syntax is checked by the CEL rule on the owning struct (it also checks the
        // range, and the unit tests can evaluate it); maxLength bounds the rule's cost.
        json_schema!({
            "type": "string",
            "maxLength": 8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_units_to_seconds() {
        assert_eq!(Period::from("60s").seconds(), Some(60));
        assert_eq!(Period::from("5m").seconds(), Some(300));
        assert_eq!(Period::from("24h").seconds(), Some(86_400));
        assert_eq!(Period::days(14).seconds(), Some(1_209_600));
    }

    #[test]
    fn refuses_other_text() {
        for bad in [
            "",
            "d",
            "7",
            "7w",
            "1.5h",
            "-1d",
            "12345678s",
            "7 d",
            "7dd",
            "٣d",
        ] {
            assert_eq!(Period::from(bad).seconds(), None, "{bad:?}");
        }
    }
}
