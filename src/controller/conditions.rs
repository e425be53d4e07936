//! Pure condition bookkeeping in the `metav1.Condition` shape: `lastTransitionTime` changes
//! only when a condition's status does, and kstatus' `Reconciling`/`Stalled` exist only
//! while true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// One condition's wanted state, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

pub fn get<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Sets a condition, keeping its `lastTransitionTime` when the status did not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    wanted: &Wanted<'_>,
    generation: Option<i64>,
    now: &Time,
) {
    let reason = if wanted.reason.is_empty() {
        "Unknown"
    } else {
        wanted.reason
    };
    // The API server caps messages at 32 KiB; AWS error chains can be long.
    let message: String = wanted.message.chars().take(4096).collect();
    match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(c) => {
            if c.status != wanted.status {
                c.last_transition_time = now.clone();
                c.status = wanted.status.to_string();
            }
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: wanted.type_.to_string(),
            status: wanted.status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Adds the condition as Unknown when absent (first pass), leaves it alone otherwise.
pub fn ensure_present(
    conditions: &mut Vec<Condition>,
    type_: &str,
    generation: Option<i64>,
    now: &Time,
) {
    if get(conditions, type_).is_none() {
        let wanted = Wanted {
            type_,
            status: UNKNOWN,
            reason: "Reconciling",
            message: "not checked yet",
        };
        set(conditions, &wanted, generation, now);
    }
}

/// kstatus conditions are written only while true, so absence means false.
pub fn set_or_remove(
    conditions: &mut Vec<Condition>,
    type_: &str,
    active: Option<(&str, &str)>,
    generation: Option<i64>,
    now: &Time,
) {
    match active {
        Some((reason, message)) => set(
            conditions,
            &Wanted {
                type_,
                status: TRUE,
                reason,
                message,
            },
            generation,
            now,
        ),
        None => conditions.retain(|c| c.type_ != type_),
    }
}

/// Whether a condition's change deserves a Warning Event: it turned False, for a reason that
/// is not a normal step. Worker Pods starting within their grace period are a normal step of
/// every creation, rollout and scale from zero, and so is waiting on an AWS quota at scale; a
/// Warning for each taught people to ignore the Warnings that matter.
pub fn warns(changed: &Condition) -> bool {
    changed.status == FALSE
        && changed.reason != crate::k8s::WORKER_STARTING
        && changed.reason != super::outcome::WAITING_ON_AWS
}

/// Conditions whose status differs from before (new ones included), for Events.
pub fn transitions<'n>(old: &[Condition], new: &'n [Condition]) -> Vec<&'n Condition> {
    new.iter()
        .filter(|n| get(old, &n.type_).is_none_or(|o| o.status != n.status))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn wanted<'a>(status: &'a str, reason: &'a str) -> Wanted<'a> {
        Wanted {
            type_: "QueuesReady",
            status,
            reason,
            message: "m",
        }
    }

    #[test]
    fn only_a_false_that_is_not_a_normal_step_warns() {
        let mut cs = vec![];
        set(&mut cs, &wanted(FALSE, "AwsError"), Some(1), &at(10));
        assert!(warns(&cs[0]));
        set(
            &mut cs,
            &wanted(FALSE, crate::k8s::WORKER_STARTING),
            Some(1),
            &at(10),
        );
        assert!(!warns(&cs[0]), "worker Pods starting are not a warning");
        set(
            &mut cs,
            &wanted(FALSE, crate::controller::outcome::WAITING_ON_AWS),
            Some(1),
            &at(10),
        );
        assert!(!warns(&cs[0]), "waiting on an AWS quota is not a warning");
        set(&mut cs, &wanted(TRUE, "Ready"), Some(1), &at(10));
        assert!(!warns(&cs[0]));
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut cs = vec![];
        set(&mut cs, &wanted(FALSE, "Creating"), Some(1), &at(10));
        set(&mut cs, &wanted(FALSE, "AwsError"), Some(2), &at(20));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert_eq!(cs[0].reason, "AwsError");
        assert_eq!(cs[0].observed_generation, Some(2));
        set(&mut cs, &wanted(TRUE, "Ready"), Some(2), &at(30));
        assert_eq!(cs[0].last_transition_time, at(30));
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn first_pass_is_unknown_and_kstatus_conditions_vanish_when_false() {
        let mut cs = vec![];
        ensure_present(&mut cs, "Ready", Some(1), &at(1));
        assert_eq!(cs[0].status, UNKNOWN);
        set(
            &mut cs,
            &Wanted {
                type_: "Ready",
                status: TRUE,
                reason: "Ready",
                message: "",
            },
            Some(1),
            &at(2),
        );
        ensure_present(&mut cs, "Ready", Some(1), &at(3));
        assert_eq!(cs[0].status, TRUE);
        set_or_remove(
            &mut cs,
            "Reconciling",
            Some(("Progressing", "x")),
            Some(1),
            &at(3),
        );
        assert!(is_true(&cs, "Reconciling"));
        set_or_remove(&mut cs, "Reconciling", None, Some(1), &at(4));
        assert!(get(&cs, "Reconciling").is_none());
    }

    #[test]
    fn transitions_lists_changed_and_new_conditions() {
        let mut old = vec![];
        set(&mut old, &wanted(FALSE, "x"), None, &at(1));
        let mut new = old.clone();
        set(
            &mut new,
            &Wanted {
                type_: "Ready",
                status: FALSE,
                reason: "r",
                message: "",
            },
            None,
            &at(2),
        );
        let changed: Vec<_> = transitions(&old, &new)
            .iter()
            .map(|c| c.type_.clone())
            .collect();
        assert_eq!(changed, ["Ready"]);
        set(&mut new, &wanted(TRUE, "Ready"), None, &at(3));
        assert_eq!(transitions(&old, &new).len(), 2);
    }
}
