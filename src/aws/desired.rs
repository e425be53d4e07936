//! The AWS desired state of one pipeline, computed from its spec without any client.
//! Values that only AWS can tell (ARNs, the account) are filled in by the parts that
//! create them and passed along through the outputs.

use std::collections::BTreeMap;

use tracking_worker::contract::cloudwatch;

use super::adopt::{Adoption, adopt_names};
use super::error::Error;
use super::naming::Names;
use super::tags::{Owner, desired_tags};
use crate::api::{DeletionPolicy, ManagementPolicy, Period, TrackingPipeline};

/// Operator-wide settings that shape the AWS side (from the command line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// ARN of the cluster's IAM OIDC provider; when set, the operator creates the worker's
    /// IAM role (IRSA trust on the worker's ServiceAccount) unless the spec names one.
    pub oidc_provider_arn: Option<String>,
    /// The operator's cluster identity: an ownership tag on every resource and part of the
    /// account-global names (IAM roles), so two clusters in one account never share them.
    pub cluster: Option<String>,
    /// ARN of the IAM policy attached as permissions boundary to every role the operator
    /// creates, so its credentials cannot mint a role with more rights than the boundary.
    pub permissions_boundary: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub owner: Owner,
    pub names: Names,
    /// Every tag of every taggable resource.
    pub tags: BTreeMap<String, String>,
    /// Permissions boundary for every IAM role we create (see [`Settings`]).
    pub permissions_boundary: Option<String>,
    pub delete_on_removal: bool,
    /// `spec.managementPolicy: Observe`: read and compare, never write.
    pub observe: bool,
    /// Set by the controller on a process's first pass over a pipeline whose status says its
    /// AWS parts were in place at its current generation (after a restart or a leader
    /// change): what that status proves is taken for granted at first (see `verified`).
    /// Never set for deletes.
    pub trusted: bool,
    /// The resources named in `spec.adopt` (their names replace ours in `names`).
    pub adoption: Adoption,
    pub keys: Keys,
    pub queues: Queues,
    pub table: Table,
    pub alerts: Alerts,
    pub schedule: Schedule,
    pub worker: Worker,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    pub rotation: bool,
    pub deletion_window_days: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queues {
    pub visibility_timeout_seconds: i32,
    pub retention_seconds: i64,
    pub max_receive_count: i32,
    pub dead_letter_visibility_timeout_seconds: i32,
    pub dead_letter_retention_seconds: i64,
    pub data_key_reuse_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub point_in_time_recovery: bool,
    pub status_index: bool,
    pub deletion_protection: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Alerts {
    pub display_name: String,
    pub email: Option<String>,
    pub queue_depth_threshold: f64,
    pub oldest_message_age_seconds: f64,
    pub worker_errors_threshold: f64,
    pub worker_throttles_threshold: f64,
    /// CloudWatch namespace the worker publishes in.
    pub metrics_namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub expression: String,
    pub timezone: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub service_account: String,
    /// A role the user manages (spec.worker.roleArn); we never create one then.
    pub role_arn: Option<String>,
    /// Create the worker role with IRSA trust on this provider.
    pub oidc_provider_arn: Option<String>,
}

/// The topic's display name, as in the original stack.
pub const TOPIC_DISPLAY_NAME: &str = "Logistics Tracking Alerts";

/// The ServiceAccount name the worker runs as when the spec names none.
pub fn default_service_account(pipeline_name: &str) -> String {
    format!("{pipeline_name}-worker")
}

/// The API server validates periods; this catches one that bypassed validation.
fn period(p: &Period, field: &str) -> Result<i64, Error> {
    p.seconds()
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| Error::InvalidSpec(format!("{field}: {p:?} is not a period like 7d")))
}

/// Maps a pipeline to its AWS desired state. Fails only on a pipeline without identity.
pub fn desired(pipeline: &TrackingPipeline, settings: &Settings) -> Result<Desired, Error> {
    let meta = &pipeline.metadata;
    let missing = |what: &str| Error::InvalidSpec(format!("the pipeline has no metadata.{what}"));
    let owner = Owner {
        namespace: meta.namespace.clone().ok_or_else(|| missing("namespace"))?,
        name: meta.name.clone().ok_or_else(|| missing("name"))?,
        uid: meta.uid.clone().ok_or_else(|| missing("uid"))?,
        cluster: settings.cluster.clone().filter(|c| !c.is_empty()),
    };
    let spec = &pipeline.spec;
    let tags = desired_tags(&spec.tags, &spec.environment, &owner);
    let worker_role_arn = spec.worker.role_arn.clone().filter(|a| !a.is_empty());
    let mut names = Names::new(&owner.namespace, &owner.name).for_cluster(
        &owner.namespace,
        &owner.name,
        owner.cluster.as_deref(),
    );
    let adoption = spec
        .adopt
        .as_ref()
        .map(|a| adopt_names(&mut names, a))
        .unwrap_or_default();
    Ok(Desired {
        names,
        observe: spec.management_policy == ManagementPolicy::Observe,
        trusted: false,
        adoption,
        tags,
        permissions_boundary: settings
            .permissions_boundary
            .clone()
            .filter(|b| !b.is_empty()),
        delete_on_removal: spec.deletion_policy == DeletionPolicy::Delete,
        keys: Keys {
            rotation: spec.encryption.key_rotation,
            deletion_window_days: spec.encryption.key_deletion_window_days,
        },
        queues: Queues {
            visibility_timeout_seconds: spec.queue.visibility_timeout_seconds,
            retention_seconds: period(&spec.queue.retention_period, "spec.queue.retentionPeriod")?,
            max_receive_count: spec.queue.max_receive_count,
            dead_letter_visibility_timeout_seconds: spec
                .queue
                .dead_letter_visibility_timeout_seconds,
            dead_letter_retention_seconds: period(
                &spec.queue.dead_letter_retention_period,
                "spec.queue.deadLetterRetentionPeriod",
            )?,
            data_key_reuse_seconds: period(
                &spec.encryption.data_key_reuse_period,
                "spec.encryption.dataKeyReusePeriod",
            )?,
        },
        table: Table {
            point_in_time_recovery: spec.table.point_in_time_recovery,
            status_index: spec.table.status_index,
            deletion_protection: spec.table.deletion_protection,
        },
        alerts: Alerts {
            display_name: TOPIC_DISPLAY_NAME.into(),
            email: spec.alerts.email.clone().filter(|e| !e.is_empty()),
            queue_depth_threshold: spec.alerts.queue_depth_threshold.into(),
            oldest_message_age_seconds: spec.alerts.oldest_message_age_seconds.into(),
            worker_errors_threshold: spec.alerts.worker_errors_threshold.into(),
            worker_throttles_threshold: spec.alerts.worker_throttles_threshold.into(),
            metrics_namespace: cloudwatch::DEFAULT_NAMESPACE.into(),
        },
        schedule: Schedule {
            expression: spec.schedule.maintenance.clone(),
            timezone: spec.schedule.timezone.clone(),
        },
        worker: Worker {
            service_account: spec
                .worker
                .service_account_name
                .clone()
                .unwrap_or_else(|| default_service_account(&owner.name)),
            oidc_provider_arn: if worker_role_arn.is_none() {
                settings.oidc_provider_arn.clone()
            } else {
                None
            },
            role_arn: worker_role_arn,
        },
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TrackingPipelineSpec;

    pub(crate) fn pipeline(spec: TrackingPipelineSpec) -> TrackingPipeline {
        let mut p = TrackingPipeline::new("parcels", spec);
        p.metadata.namespace = Some("logistics".into());
        p.metadata.uid = Some("uid-1".into());
        p
    }

    #[test]
    fn defaults_are_the_reference_settings() {
        let d = desired(
            &pipeline(TrackingPipelineSpec::default()),
            &Settings::default(),
        )
        .unwrap();
        assert!(d.keys.rotation);
        assert_eq!(d.keys.deletion_window_days, 7);
        assert_eq!(d.queues.visibility_timeout_seconds, 150);
        assert_eq!(d.queues.retention_seconds, 7 * 86_400);
        assert_eq!(d.queues.max_receive_count, 3);
        assert_eq!(d.queues.dead_letter_visibility_timeout_seconds, 300);
        assert_eq!(d.queues.dead_letter_retention_seconds, 14 * 86_400);
        assert_eq!(d.queues.data_key_reuse_seconds, 300);
        assert_eq!(
            d.table,
            Table {
                point_in_time_recovery: true,
                status_index: true,
                deletion_protection: false
            }
        );
        assert_eq!(d.alerts.display_name, "Logistics Tracking Alerts");
        assert_eq!(d.alerts.queue_depth_threshold, 1000.0);
        assert_eq!(d.alerts.oldest_message_age_seconds, 300.0);
        assert_eq!(d.schedule.expression, "cron(0 1 * * ? *)");
        assert_eq!(d.schedule.timezone, "UTC");
        assert_eq!(d.tags["Environment"], "Production");
        assert_eq!(d.tags["Project"], "LogisticsTracking");
        assert_eq!(d.worker.service_account, "parcels-worker");
        assert!(!d.delete_on_removal);
        assert_eq!(d.owner.key(), "logistics/parcels");
    }

    #[test]
    fn user_role_wins_over_operator_created_role() {
        let mut spec = TrackingPipelineSpec::default();
        spec.worker.role_arn = Some("arn:aws:iam::123456789012:role/mine".into());
        let settings = Settings {
            oidc_provider_arn: Some("arn:aws:iam::123456789012:oidc-provider/x".into()),
            ..Settings::default()
        };
        let d = desired(&pipeline(spec), &settings).unwrap();
        assert_eq!(d.worker.oidc_provider_arn, None);
        let d = desired(&pipeline(TrackingPipelineSpec::default()), &settings).unwrap();
        assert!(d.worker.oidc_provider_arn.is_some());
    }

    #[test]
    fn a_pipeline_without_uid_is_refused() {
        let mut p = pipeline(TrackingPipelineSpec::default());
        p.metadata.uid = None;
        assert!(matches!(
            desired(&p, &Settings::default()),
            Err(Error::InvalidSpec(_))
        ));
    }
}
