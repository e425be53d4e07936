//! What a pass over the parts means for the status, as pure functions (no client, no clock):
//! "not ready yet" (an unconfirmed e-mail, a table still creating) is an outcome that keeps
//! Ready False and asks for a quick look again; a failure is reported on its part and
//! retried with backoff; a conflict stalls until a human acts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, FALSE, TRUE, Wanted};
use crate::api::{AlertsSpec, TrackingPipelineStatus, condition};
use crate::aws::{Part, Readiness};
use crate::error::Error;

/// Every condition the pipeline reports besides kstatus'.
pub const REPORTED: [&str; 7] = [
    condition::KEYS_READY,
    condition::QUEUES_READY,
    condition::TABLE_READY,
    condition::ALERTS_READY,
    condition::SCHEDULE_READY,
    condition::WORKER_READY,
    condition::READY,
];

/// The generation and time every condition of one pass is stamped with.
#[derive(Clone, Debug)]
pub struct Stamp {
    pub generation: Option<i64>,
    pub now: Time,
}

/// When to look again after a pass that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Everything ready: the periodic drift check.
    Resync,
    /// A part is not ready yet: look again soon.
    Soon,
}

/// The part that is not ready yet and why, for the Ready condition.
pub type NotReady = (String, String);

fn set(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let wanted = Wanted {
        type_,
        status: value,
        reason,
        message,
    };
    conditions::set(
        &mut status.conditions,
        &wanted,
        stamp.generation,
        &stamp.now,
    );
}

fn kstatus(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    type_: &str,
    active: Option<(&str, &str)>,
) {
    conditions::set_or_remove(
        &mut status.conditions,
        type_,
        active,
        stamp.generation,
        &stamp.now,
    );
}

/// First pass of a generation: every condition exists (Unknown if new) and kstatus says we
/// are working on it.
pub fn begin(status: &mut TrackingPipelineStatus, stamp: &Stamp) {
    for type_ in REPORTED {
        conditions::ensure_present(&mut status.conditions, type_, stamp.generation, &stamp.now);
    }
    // observedGeneration moves only when a pass for this generation concludes, so a Ready
    // from the previous generation is never presented as describing the new one.
    if status.observed_generation != stamp.generation {
        let why = (
            "NewGeneration",
            "converging AWS and cluster resources to the new spec",
        );
        kstatus(status, stamp, condition::RECONCILING, Some(why));
    }
}

/// A part converged as far as it can now. Returns the not-ready reason, if any.
pub fn part_done(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    part: Part,
    readiness: &Readiness,
    ready_message: &str,
) -> Option<NotReady> {
    match readiness {
        Readiness::Ready => {
            set(
                status,
                stamp,
                part.condition_type(),
                TRUE,
                "Ready",
                ready_message,
            );
            None
        }
        Readiness::NotReady { reason, message } => {
            set(status, stamp, part.condition_type(), FALSE, reason, message);
            Some((reason.clone(), format!("{}: {message}", part.as_str())))
        }
    }
}

/// Whether a part that is not ready keeps the pipeline's Ready False. An e-mail awaiting its
/// confirmation does not, unless the spec asks to wait for it: the pipeline works without it.
pub fn blocks_ready(part: Part, readiness: &Readiness, alerts: &AlertsSpec) -> bool {
    match readiness {
        Readiness::NotReady { reason, .. } if part == Part::Alerts => {
            reason != PENDING_CONFIRMATION || alerts.wait_for_confirmation
        }
        // Pods still starting: the pipeline works (messages wait in the queue); only a
        // worker that stays unavailable past the grace period holds Ready back.
        Readiness::NotReady { reason, .. } if part == Part::WorkerIdentity => {
            reason != crate::k8s::WORKER_STARTING && reason != super::observe::OBSERVING
        }
        _ => true,
    }
}

/// The reason the Alerts part reports while the e-mail subscription is unconfirmed.
pub const PENDING_CONFIRMATION: &str = "PendingConfirmation";

/// The reason a part reports while AWS asks us to wait (a quota, a change still applying):
/// a normal step at scale, announced by a Normal Event, never a Warning.
pub const WAITING_ON_AWS: &str = "WaitingOnAws";

/// Someone else's resource holds our name (in AWS or in the cluster): a human must act.
pub fn is_conflict(err: &Error) -> bool {
    err.is_conflict()
        || matches!(
            err,
            Error::ChildConflict { .. } | Error::AdoptionRefused { .. }
        )
}

/// How a part's failure reads in its condition: the AWS error code first.
pub fn failure_reason(err: &Error) -> (&'static str, String) {
    if matches!(err, Error::AdoptionRefused { .. }) {
        return ("AdoptionRefused", err.to_string());
    }
    if is_conflict(err) {
        return ("Conflict", err.to_string());
    }
    match err.aws_code() {
        Some(code) if err.asks_to_wait() => (WAITING_ON_AWS, format!("{code}: {err}")),
        Some(code) => ("AwsError", format!("{code}: {err}")),
        None if err.is_retryable() => ("AwsUnreachable", err.to_string()),
        None => ("Error", err.to_string()),
    }
}

/// A part failed: its condition and Ready say why. A conflict stalls; anything else is
/// retried (Reconciling). Returns the reason and message for the Event.
pub fn part_failed(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    part: Part,
    err: &Error,
) -> (&'static str, String) {
    let (reason, message) = failure_reason(err);
    status.observed_generation = stamp.generation;
    set(
        status,
        stamp,
        part.condition_type(),
        FALSE,
        reason,
        &message,
    );
    set(
        status,
        stamp,
        condition::READY,
        FALSE,
        reason,
        &format!("{}: {message}", part.as_str()),
    );
    if is_conflict(err) || err.is_terminal() {
        stall(status, stamp, reason, &message);
    } else {
        kstatus(
            status,
            stamp,
            condition::RECONCILING,
            Some(("Retrying", message.as_str())),
        );
    }
    (reason, message)
}

/// A spec that cannot be mapped to AWS (only possible when validation was bypassed).
pub fn invalid_spec(status: &mut TrackingPipelineStatus, stamp: &Stamp, message: &str) {
    status.observed_generation = stamp.generation;
    set(
        status,
        stamp,
        condition::READY,
        FALSE,
        "InvalidSpec",
        message,
    );
    stall(status, stamp, "InvalidSpec", message);
}

fn stall(status: &mut TrackingPipelineStatus, stamp: &Stamp, reason: &str, message: &str) {
    kstatus(status, stamp, condition::STALLED, Some((reason, message)));
    kstatus(status, stamp, condition::RECONCILING, None);
}

/// Every part passed without failing: Ready follows the first part that is not ready.
pub fn conclude(
    status: &mut TrackingPipelineStatus,
    stamp: &Stamp,
    not_ready: Option<&NotReady>,
) -> Next {
    status.observed_generation = stamp.generation;
    kstatus(status, stamp, condition::STALLED, None);
    match not_ready {
        None => {
            let message = "every AWS resource and the worker are provisioned";
            set(status, stamp, condition::READY, TRUE, "Ready", message);
            kstatus(status, stamp, condition::RECONCILING, None);
            Next::Resync
        }
        Some((reason, message)) => {
            set(status, stamp, condition::READY, FALSE, reason, message);
            kstatus(
                status,
                stamp,
                condition::RECONCILING,
                Some((reason.as_str(), message.as_str())),
            );
            Next::Soon
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::{UNKNOWN, get, is_true};
    use k8s_openapi::jiff::Timestamp;

    fn stamp(generation: i64) -> Stamp {
        Stamp {
            generation: Some(generation),
            now: Time(Timestamp::from_second(1_000 + generation).unwrap()),
        }
    }

    fn state(status: &TrackingPipelineStatus, type_: &str) -> (String, String) {
        let c = get(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn first_pass_sets_every_condition_unknown_and_reconciling() {
        let mut status = TrackingPipelineStatus::default();
        begin(&mut status, &stamp(1));
        for type_ in REPORTED {
            assert_eq!(state(&status, type_).0, UNKNOWN, "{type_}");
        }
        assert!(is_true(&status.conditions, condition::RECONCILING));
        assert_eq!(
            status.observed_generation, None,
            "set when the pass concludes"
        );
        assert_eq!(conclude(&mut status, &stamp(1), None), Next::Resync);
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn pending_confirmation_is_not_ready_not_an_error() {
        let mut status = TrackingPipelineStatus::default();
        let s = stamp(1);
        begin(&mut status, &s);
        let mut not_ready = None;
        for part in Part::ALL {
            let readiness = if part == Part::Alerts {
                Readiness::NotReady {
                    reason: "PendingConfirmation".into(),
                    message: "ops@example.com has not confirmed the subscription".into(),
                }
            } else {
                Readiness::Ready
            };
            let outcome = part_done(&mut status, &s, part, &readiness, "ready");
            not_ready = not_ready.or(outcome);
        }
        assert_eq!(conclude(&mut status, &s, not_ready.as_ref()), Next::Soon);
        assert_eq!(
            state(&status, condition::ALERTS_READY),
            ("False".into(), "PendingConfirmation".into())
        );
        assert_eq!(
            state(&status, condition::READY),
            ("False".into(), "PendingConfirmation".into())
        );
        assert_eq!(state(&status, condition::QUEUES_READY).0, "True");
        assert!(is_true(&status.conditions, condition::RECONCILING));
        assert!(get(&status.conditions, condition::STALLED).is_none());
    }

    #[test]
    fn all_ready_clears_kstatus_and_keeps_transition_times() {
        let mut status = TrackingPipelineStatus::default();
        begin(&mut status, &stamp(1));
        for part in Part::ALL {
            part_done(&mut status, &stamp(1), part, &Readiness::Ready, "ready");
        }
        assert_eq!(conclude(&mut status, &stamp(1), None), Next::Resync);
        let first = get(&status.conditions, condition::READY)
            .unwrap()
            .last_transition_time
            .clone();
        // The next resync finds everything still ready: nothing moves.
        begin(&mut status, &stamp(1));
        for part in Part::ALL {
            part_done(&mut status, &stamp(2), part, &Readiness::Ready, "ready");
        }
        let before = status.clone();
        conclude(&mut status, &stamp(2), None);
        assert_eq!(
            get(&status.conditions, condition::READY)
                .unwrap()
                .last_transition_time,
            first
        );
        assert!(get(&status.conditions, condition::RECONCILING).is_none());
        assert_eq!(status.conditions.len(), REPORTED.len());
        assert_eq!(before.conditions.len(), status.conditions.len());
    }

    #[test]
    fn aws_errors_name_the_code_and_retry_while_conflicts_stall() {
        let mut status = TrackingPipelineStatus::default();
        let s = stamp(1);
        begin(&mut status, &s);
        let throttled = Error::Aws {
            service: "SQS",
            operation: "CreateQueue",
            code: Some("ThrottlingException".into()),
            message: "slow down".into(),
            status: Some(400),
            retryable: true,
        };
        let (reason, message) = part_failed(&mut status, &s, Part::Queues, &throttled);
        assert_eq!(reason, WAITING_ON_AWS, "a quota is waited on, not an error");
        assert!(message.starts_with("ThrottlingException"), "{message}");
        assert_eq!(
            state(&status, condition::QUEUES_READY),
            ("False".into(), WAITING_ON_AWS.into())
        );
        assert_eq!(
            state(&status, condition::RECONCILING),
            ("True".into(), "Retrying".into())
        );

        let failing = Error::Aws {
            service: "SQS",
            operation: "CreateQueue",
            code: Some("InternalError".into()),
            message: "try again".into(),
            status: Some(500),
            retryable: true,
        };
        let (reason, message) = part_failed(&mut status, &s, Part::Queues, &failing);
        assert_eq!(reason, "AwsError");
        assert!(message.starts_with("InternalError"), "{message}");
        assert_eq!(
            state(&status, condition::QUEUES_READY),
            ("False".into(), "AwsError".into())
        );
        assert_eq!(
            state(&status, condition::RECONCILING),
            ("True".into(), "Retrying".into())
        );

        let conflict = Error::AwsConflict {
            resource: "SQS queue tp-x-queue".into(),
            reason: "tagged for another pipeline".into(),
        };
        part_failed(&mut status, &s, Part::Queues, &conflict);
        let stalled = get(&status.conditions, condition::STALLED).unwrap();
        assert_eq!(stalled.status, "True");
        assert!(stalled.message.contains("SQS queue tp-x-queue"));
        assert!(get(&status.conditions, condition::RECONCILING).is_none());
        assert_eq!(
            state(&status, condition::READY),
            ("False".into(), "Conflict".into())
        );
    }

    #[test]
    fn unreachable_aws_has_its_own_reason() {
        let err = Error::Aws {
            service: "KMS",
            operation: "DescribeKey",
            code: None,
            message: "connection refused".into(),
            status: None,
            retryable: true,
        };
        assert_eq!(failure_reason(&err).0, "AwsUnreachable");
    }
}
