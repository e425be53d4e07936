//! Whether the worker Deployment actually runs: WorkerReady follows the Deployment's
//! `Available` condition, not the mere existence of the object, so a crash-looping worker
//! (bad image, missing permission, a panic at start) turns the pipeline not Ready.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

use crate::aws::Readiness;

/// Reported while Pods start within the grace period; does not hold the pipeline's Ready back.
pub const WORKER_STARTING: &str = "WorkerStarting";

/// Reported when no replica became available within the grace period, or the rollout
/// exceeded its progress deadline.
pub const WORKER_UNAVAILABLE: &str = "WorkerUnavailable";

/// The worker's readiness from the Deployment the API server returned. A Deployment no
/// controller has reported on yet (no `Available` condition) counts as ready: there is
/// nothing to judge, and the next status change or pass judges again.
///
/// A new or scaled-from-zero worker gets `grace` to become available before the pipeline is
/// reported not Ready: an image pull and the first AWS calls fit well within the default.
pub fn worker_readiness(deployment: &Deployment, now: Timestamp, grace: Duration) -> Readiness {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let conditions = status.conditions.unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);

    if let Some(progressing) = condition("Progressing") {
        if progressing.status == "False" && progressing.reason.as_deref() == Some(DEADLINE) {
            return Readiness::NotReady {
                reason: WORKER_UNAVAILABLE.into(),
                message: format!(
                    "the rollout exceeded its progress deadline ({available} of {desired} replicas available): {}",
                    progressing.message.as_deref().unwrap_or_default()
                ),
            };
        }
    }
    if desired == 0 || available > 0 {
        return Readiness::Ready;
    }
    let Some(unavailable) = condition("Available").filter(|c| c.status == "False") else {
        return Readiness::Ready;
    };
    let since = unavailable
        .last_transition_time
        .as_ref()
        .map_or(0, |t| now.as_second() - t.0.as_second());
    let message = format!(
        "0 of {desired} replicas available for {since}s: see `kubectl get pods` and the worker's logs"
    );
    let reason = if u64::try_from(since).unwrap_or(0) < grace.as_secs() {
        WORKER_STARTING
    } else {
        WORKER_UNAVAILABLE
    };
    Readiness::NotReady {
        reason: reason.into(),
        message,
    }
}

/// Whether a change of the Deployment's availability deserves a reconcile: it is
/// `Available`'s status, folded into the controller's change filter.
pub fn available_status(deployment: &Deployment) -> Option<&str> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Available")
        .map(|c| c.status.as_str())
}

const DEADLINE: &str = "ProgressDeadlineExceeded";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn deployment(
        replicas: i32,
        available: i32,
        conditions: &[(&str, &str, &str, i64)],
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s, r, at)| DeploymentCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            reason: Some((*r).into()),
                            last_transition_time: Some(Time(Timestamp::from_second(*at).unwrap())),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(90);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn reason(r: &Readiness) -> &str {
        match r {
            Readiness::Ready => "Ready",
            Readiness::NotReady { reason, .. } => reason,
        }
    }

    #[test]
    fn available_replicas_make_the_worker_ready() {
        let d = deployment(
            2,
            1,
            &[("Available", "False", "MinimumReplicasUnavailable", 0)],
        );
        assert_eq!(worker_readiness(&d, at(1000), GRACE), Readiness::Ready);
    }

    #[test]
    fn scaled_to_zero_is_ready() {
        let d = deployment(
            0,
            0,
            &[("Available", "True", "MinimumReplicasAvailable", 0)],
        );
        assert_eq!(worker_readiness(&d, at(1000), GRACE), Readiness::Ready);
    }

    #[test]
    fn no_available_replica_is_starting_then_unavailable() {
        let d = deployment(
            1,
            0,
            &[("Available", "False", "MinimumReplicasUnavailable", 1000)],
        );
        assert_eq!(
            reason(&worker_readiness(&d, at(1030), GRACE)),
            WORKER_STARTING
        );
        assert_eq!(
            reason(&worker_readiness(&d, at(1090), GRACE)),
            WORKER_UNAVAILABLE
        );
    }

    #[test]
    fn a_stuck_rollout_is_unavailable_even_with_old_replicas_running() {
        let d = deployment(
            2,
            2,
            &[
                ("Available", "True", "MinimumReplicasAvailable", 0),
                ("Progressing", "False", DEADLINE, 0),
            ],
        );
        assert_eq!(
            reason(&worker_readiness(&d, at(10), GRACE)),
            WORKER_UNAVAILABLE
        );
    }

    #[test]
    fn a_deployment_without_status_is_not_judged() {
        let d = Deployment::default();
        assert_eq!(worker_readiness(&d, at(10), GRACE), Readiness::Ready);
        assert_eq!(available_status(&d), None);
    }
}
