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
/// Differences named in the condition message; the rest are counted. A whole unmanaged
/// stack has about a hundred (four ownership tags per resource alone).
const SHOWN: usize = 150;
/// Bytes of differences in the message, well under the API server's 32 KiB limit.
const MAX_BYTES: usize = 16 * 1024;

/// The differences one part's report describes when nothing was written.
pub fn differences(report: &PartReport) -> Vec<String> {
    report
        .created
        .iter()
        .map(|c| format!("missing {c}"))
        .chain(report.repaired.iter().cloned())
        .collect()
}

/// The `InSync` message: every difference, shortened past [`SHOWN`].
pub fn drift_message(drift: &[String]) -> String {
    let mut bytes = 0;
    let mut shown: Vec<&str> = drift
        .iter()
        .take(SHOWN)
        .take_while(|d| {
            bytes += d.len() + 2;
            bytes <= MAX_BYTES
        })
        .map(String::as_str)
        .collect();
    let more = drift.len() - shown.len();
    let extra = format!("and {more} more");
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
        let drift: Vec<String> = (0..160).map(|i| format!("d{i}")).collect();
        let m = drift_message(&drift);
        assert!(
            m.starts_with("160 difference(s)") && m.ends_with("and 10 more"),
            "{m}"
        );
        let long: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "x".repeat(500)))
            .collect();
        assert!(drift_message(&long).len() < 17 * 1024);
    }
}
