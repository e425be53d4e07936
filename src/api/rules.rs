//! CEL rules shared by the spec structs. Each rule sits on the struct that owns the field and
//! names the field both in `fieldPath` (so the API server reports the exact path) and in the
//! message (so a human reading `kubectl apply` output knows what to fix).

use kube::core::Rule;

use super::duration::PERIOD_PATTERN;

/// `min <= self.<field> <= max`.
pub fn in_range(field: &str, path: &str, min: i64, max: i64, unit: &str) -> Rule {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    Rule::new(format!("self.{field} >= {min} && self.{field} <= {max}"))
        .message(format!("{path} must be between {min} and {max}{unit}").as_str())
        .field_path(format!(".{field}"))
}

/// `self.<field> >= min`.
pub fn at_least(field: &str, path: &str, min: i64) -> Rule {
    Rule::new(format!("self.{field} >= {min}"))
        .message(format!("{path} must be at least {min}").as_str())
        .field_path(format!(".{field}"))
}

/// A [`super::Period`] field: its syntax and its length in seconds.
pub fn period_in_range(
    field: &str,
    path: &str,
    min_seconds: i64,
    max_seconds: i64,
    range: &str,
) -> Rule {
    let f = format!("self.{field}");
    let seconds = format!(
        "int({f}.substring(0, size({f}) - 1)) * ({f}.endsWith('d') ? 86400 : {f}.endsWith('h') ? 3600 : {f}.endsWith('m') ? 60 : 1)"
    );
    // `&&` short-circuits on the syntax check, so `int()` never sees a malformed number.
    Rule::new(format!(
        "{f}.matches('{PERIOD_PATTERN}') && {seconds} >= {min_seconds} && {seconds} <= {max_seconds}"
    ))
    .message(
        format!("{path} must be a whole number with unit s, m, h or d (like 7d) between {range}").as_str(),
    )
    .field_path(format!(".{field}"))
}

/// `self.<field> == oldSelf.<field>`: a transition rule, checked on update only.
pub fn immutable(field: &str, path: &str, why: &str) -> Rule {
    Rule::new(format!("self.{field} == oldSelf.{field}"))
        .message(format!("{path} is immutable: {why}").as_str())
        .field_path(format!(".{field}"))
}
