//! Observe-only and adoption in the controller, as pure functions: what a pass's reports
//! mean for the `InSync` condition, and which parts an observing pass leaves alone.
//!
//! With `managementPolicy: Observe` the AWS modules write nothing and report what they
//! would have created (`created`) or changed (`repaired`); here those become the
//! differences named in `InSync=False` (reason `DriftDetected`). In `Full` the same reports
//! are repairs already made, so a pass that did not fail leaves AWS in sync.

use super::conditions::{self, FALSE, TRUE, Wanted};
use super::outcome::Stamp;
use crate::api::{TrackingPipelineStatus, condition};
use crate::aws::PartReport;

/// The reason of `InSync=False`, and of the Event that names the differences.
pub const DRIFT_DETECTED: &str = "DriftDetected";
/// The WorkerReady reason while observing: no worker runs, on purpose.
pub const OBSERVING: &str = "Observing";
/// Resources named in the condition message; the rest are counted.
const SHOWN: usize = 40;
/// Bytes of differences in the message: conditions keep 4,096 characters.
const MAX_BYTES: usize = 3_800;
/// Tags the operator adds to every resource it owns.
const OWNERSHIP_TAG_PREFIX: &str = "tracking-operator.io/";

/// The differences one part's report describes when nothing was written.
pub fn differences(report: &PartReport) -> Vec<String> {
    report
        .created
        .iter()
        .map(|c| format!("missing {c}"))
        .chain(report.repaired.iter().cloned())
        .collect()
}

/// The differences grouped by resource (`SQS queue q: VisibilityTimeout, ownership tags`),
/// in the order the parts found them; the operator's four ownership tags read as one.
pub fn grouped(drift: &[String]) -> Vec<String> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in drift {
        let Some((resource, attribute)) = d.split_once(": ") else {
            groups.push((d.clone(), Vec::new()));
            continue;
        };
        let attribute = if attribute.starts_with(&format!("tag {OWNERSHIP_TAG_PREFIX}")) {
            "ownership tags".to_string()
        } else {
            attribute.to_string()
        };
        match groups
            .iter_mut()
            .find(|(r, a)| r == resource && !a.is_empty())
        {
            Some((_, attributes)) if !attributes.contains(&attribute) => attributes.push(attribute),
            Some(_) => {}
            None => groups.push((resource.to_string(), vec![attribute])),
        }
    }
    groups
        .into_iter()
        .map(|(r, a)| {
            if a.is_empty() {
                r
            } else {
                format!("{r}: {}", a.join(", "))
            }
        })
        .collect()
}

/// The `InSync` message: every difference, grouped, shortened past [`SHOWN`] groups or
/// [`MAX_BYTES`].
pub fn drift_message(drift: &[String]) -> String {
    let groups = grouped(drift);
    let mut bytes = 0;
    let mut shown: Vec<&str> = groups
        .iter()
        .take(SHOWN)
        .take_while(|d| {
            bytes += d.len() + 2;
            bytes <= MAX_BYTES
        })
        .map(String::as_str)
        .collect();
    let more = groups.len() - shown.len();
    let extra = format!("and {more} more resource(s)");
    if more > 0 {
        shown.push(&extra);
    }
    format!(
        "{} difference(s) from the spec (managementPolicy Observe: nothing changed): {}",
        drift.len(),
        shown.join("; ")
    )
}

/// Sets `InSync` after a pass without failures. Observing: False with the differences, or
/// True. Full: True, but only on a pipeline that reported it before (a pipeline that never
/// observed keeps its conditions as they were). Returns the differences message when it
/// is new, for the `DriftDetected` Event.
pub fn set_in_sync(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    observe: bool,
    drift: &[String],
) -> Option<String> {
    let before = conditions::get(&status.conditions, condition::IN_SYNC).cloned();
    if !observe && before.is_none() {
        return None;
    }
    let (value, reason, message) = if observe && !drift.is_empty() {
        (FALSE, DRIFT_DETECTED, drift_message(drift))
    } else if observe {
        (TRUE, "InSync", "AWS matches the spec".to_string())
    } else {
        (
            TRUE,
            "Converged",
            "managementPolicy Full: every difference was converged".to_string(),
        )
    };
    conditions::set(
        &mut status.conditions,
        &Wanted {
            type_: condition::IN_SYNC,
            status: value,
            reason,
            message: &message,
        },
        stamp.generation,
        &stamp.now,
    );
    let changed = before.is_none_or(|b| b.message != message);
    (value == FALSE && changed).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn stamp() -> Stamp {
        Stamp {
            generation: Some(1),
            now: Time(Timestamp::from_second(10).unwrap()),
        }
    }

    #[test]
    fn observed_differences_are_named_and_announced_once() {
        let mut report = PartReport::default();
        report.created("EventBridge schedule s");
        report.repaired("SQS queue q", &["VisibilityTimeout".into()]);
        let drift = differences(&report);
        assert_eq!(
            drift,
            vec![
                "missing EventBridge schedule s",
                "SQS queue q: VisibilityTimeout"
            ]
        );
        let mut status = TrackingPipelineStatus::default();
        let first = set_in_sync(&mut status, &stamp(), true, &drift);
        assert!(first.unwrap().contains("SQS queue q: VisibilityTimeout"));
        let c = conditions::get(&status.conditions, condition::IN_SYNC).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (FALSE, DRIFT_DETECTED)
        );
        assert_eq!(set_in_sync(&mut status, &stamp(), true, &drift), None);
        // Full converges: InSync turns True.
        assert_eq!(set_in_sync(&mut status, &stamp(), false, &[]), None);
        assert!(conditions::is_true(&status.conditions, condition::IN_SYNC));
    }

    #[test]
    fn a_pipeline_that_never_observed_gets_no_in_sync() {
        let mut status = TrackingPipelineStatus::default();
        set_in_sync(&mut status, &stamp(), false, &["x".into()]);
        assert!(status.conditions.is_empty());
    }

    #[test]
    fn long_lists_are_shortened() {
        let drift: Vec<String> = (0..50).map(|i| format!("missing d{i}")).collect();
        let m = drift_message(&drift);
        assert!(
            m.starts_with("50 difference(s)") && m.ends_with("and 10 more resource(s)"),
            "{m}"
        );
        let long: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "x".repeat(500)))
            .collect();
        assert!(drift_message(&long).len() < 4_096);
    }

    #[test]
    fn differences_are_grouped_by_resource() {
        let drift: Vec<String> = [
            "SQS queue q: VisibilityTimeout",
            "SQS queue q: tag tracking-operator.io/managed-by",
            "SQS queue q: tag tracking-operator.io/pipeline-uid",
            "SQS queue q: tag Environment",
            "missing EventBridge schedule s",
            "KMS key arn:aws:kms:r:1:key/k: KeyPolicy",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            grouped(&drift),
            vec![
                "SQS queue q: VisibilityTimeout, ownership tags, tag Environment",
                "missing EventBridge schedule s",
                "KMS key arn:aws:kms:r:1:key/k: KeyPolicy",
            ]
        );
    }
}
