//! The EventBridge Scheduler schedule that sends the maintenance message to the queue, and
//! the role it assumes (allowed exactly `sqs:SendMessage` on the queue and the queue key's
//! data-key operations). Schedules cannot carry tags (only schedule groups can), so
//! ownership is written into the schedule's description.

use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use tracking_worker::contract::MAINTENANCE_MESSAGE_BODY;

use super::adopt::{observe_missing, refuse_missing, retained_on_delete};
use super::desired::Desired;
use super::error::{Error, api, unexpected};
use super::iam::{RoleDesired, delete_role, ensure_role};
use super::policy::{scheduler_policy, scheduler_trust};
use super::tags::Owner;
use super::{AwsClients, DeleteReport, Outputs, PartReport, Result, found, need};

const SVC: &str = "Scheduler";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleDesired {
    pub name: String,
    pub expression: String,
    pub timezone: String,
    pub description: String,
    pub target_arn: String,
    pub role_arn: String,
    pub input: String,
}

pub fn desired_schedule(d: &Desired, queue_arn: &str, role_arn: &str) -> ScheduleDesired {
    ScheduleDesired {
        name: d.names.schedule.clone(),
        expression: d.schedule.expression.clone(),
        timezone: d.schedule.timezone.clone(),
        description: d.owner.marker(),
        target_arn: queue_arn.into(),
        role_arn: role_arn.into(),
        input: MAINTENANCE_MESSAGE_BODY.into(),
    }
}

/// The schedule's description names its pipeline; anything else is not ours.
pub fn owned_by(description: Option<&str>, owner: &Owner) -> bool {
    let prefix = format!(
        "Managed by tracking-operator for TrackingPipeline {} ",
        owner.key()
    );
    description.is_some_and(|d| d.starts_with(&prefix))
}

pub fn schedule_drift(desired: &ScheduleDesired, actual: &GetScheduleOutput) -> Vec<String> {
    let target = actual.target();
    [
        (
            "ScheduleExpression",
            actual.schedule_expression() != Some(desired.expression.as_str()),
        ),
        (
            "ScheduleExpressionTimezone",
            actual.schedule_expression_timezone() != Some(desired.timezone.as_str()),
        ),
        (
            "Description",
            actual.description() != Some(desired.description.as_str()),
        ),
        ("State", actual.state() != Some(&ScheduleState::Enabled)),
        (
            "FlexibleTimeWindow",
            actual.flexible_time_window().map(|f| f.mode()) != Some(&FlexibleTimeWindowMode::Off),
        ),
        (
            "Target.Arn",
            target.map(Target::arn) != Some(desired.target_arn.as_str()),
        ),
        (
            "Target.RoleArn",
            target.map(Target::role_arn) != Some(desired.role_arn.as_str()),
        ),
        (
            "Target.Input",
            target.and_then(Target::input) != Some(desired.input.as_str()),
        ),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(n, _)| n.to_string())
    .collect()
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| unexpected(SVC, e.to_string()))
}

fn target(s: &ScheduleDesired) -> Result<Target> {
    build(
        Target::builder()
            .arn(&s.target_arn)
            .role_arn(&s.role_arn)
            .input(&s.input)
            .build(),
    )
}

fn window() -> Result<FlexibleTimeWindow> {
    build(
        FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build(),
    )
}

pub(super) async fn ensure(
    c: &AwsClients,
    d: &Desired,
    out: &mut Outputs,
    report: &mut PartReport,
) -> Result<()> {
    let queue_arn = need(&out.queue_arn, "Schedule", "the queue ARN")?.to_string();
    let key_arn = need(&out.queue_key_arn, "Schedule", "the SQS key ARN")?.to_string();
    let account = c.account().await?.clone();
    let role_desired = RoleDesired {
        name: &d.names.scheduler_role,
        description: format!(
            "EventBridge Scheduler sends the maintenance message of TrackingPipeline {}",
            d.owner.key()
        ),
        trust: scheduler_trust(&account),
        policy: scheduler_policy(&queue_arn, &key_arn),
    };
    let Some((role_arn, role_is_new)) = ensure_role(c, d, &role_desired, report).await? else {
        // Observing: without the role the schedule's target cannot be compared; its
        // existence still can.
        return observe_schedule_exists(c, d, report).await;
    };
    out.schedule_role_arn = Some(role_arn.clone());

    let desired = desired_schedule(d, &queue_arn, &role_arn);
    let resource = format!("EventBridge schedule {}", desired.name);
    let existing = found(
        c.scheduler
            .get_schedule()
            .name(&desired.name)
            .send()
            .await
            .map_err(api(SVC, "GetSchedule")),
    )?;
    let result = match &existing {
        None if d.observe || d.adoption.contains(&desired.name) => {
            refuse_missing(d, &desired.name, &resource)?;
            observe_missing(report, &resource);
            return Ok(());
        }
        None => c
            .scheduler
            .create_schedule()
            .name(&desired.name)
            .description(&desired.description)
            .schedule_expression(&desired.expression)
            .schedule_expression_timezone(&desired.timezone)
            .state(ScheduleState::Enabled)
            .flexible_time_window(window()?)
            .target(target(&desired)?)
            .send()
            .await
            .map(|o| Some(o.schedule_arn))
            .map_err(api(SVC, "CreateSchedule")),
        Some(actual) => {
            // An adopted schedule gets our description (its ownership mark) with the update.
            let adoptable = d.adoption.contains(&desired.name)
                && !actual
                    .description()
                    .is_some_and(|t| t.starts_with(MARKER_PREFIX));
            if !adoptable && !owned_by(actual.description(), &d.owner) {
                return Err(Error::AwsConflict {
                    resource,
                    reason: format!(
                        "its description {:?} does not name TrackingPipeline {}",
                        actual.description().unwrap_or_default(),
                        d.owner.key()
                    ),
                });
            }
            let drift = schedule_drift(&desired, actual);
            report.repaired(&resource, &drift);
            if drift.is_empty() || d.observe {
                Ok(None)
            } else {
                // UpdateSchedule replaces the whole definition.
                c.scheduler
                    .update_schedule()
                    .name(&desired.name)
                    .description(&desired.description)
                    .schedule_expression(&desired.expression)
                    .schedule_expression_timezone(&desired.timezone)
                    .state(ScheduleState::Enabled)
                    .flexible_time_window(window()?)
                    .target(target(&desired)?)
                    .send()
                    .await
                    .map(|o| Some(o.schedule_arn))
                    .map_err(api(SVC, "UpdateSchedule"))
            }
        }
    };
    let written = match result {
        Ok(arn) => arn,
        // A role created seconds ago may not be assumable yet: not a failure, just not yet.
        Err(e) if role_is_new && e.aws_code() == Some("ValidationException") => {
            report.not_ready(
                "RolePropagating",
                format!("IAM role {} is not usable yet: {e}", d.names.scheduler_role),
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if existing.is_none() {
        report.created(&resource);
    }
    let arn = written
        .or_else(|| existing.as_ref().and_then(|e| e.arn().map(str::to_string)))
        .ok_or_else(|| unexpected(SVC, format!("{resource} has no ARN")))?;
    out.schedule_arn = Some(arn);
    Ok(())
}

/// Observe-only without the scheduler role: report only whether the schedule exists.
async fn observe_schedule_exists(
    c: &AwsClients,
    d: &Desired,
    report: &mut PartReport,
) -> Result<()> {
    let name = &d.names.schedule;
    let existing = found(
        c.scheduler
            .get_schedule()
            .name(name)
            .send()
            .await
            .map_err(api(SVC, "GetSchedule")),
    )?;
    if existing.is_none() {
        refuse_missing(d, name, &format!("EventBridge schedule {name}"))?;
        observe_missing(report, &format!("EventBridge schedule {name}"));
    }
    Ok(())
}

/// How every schedule the operator owns describes itself (see [`Owner::marker`]).
const MARKER_PREFIX: &str = "Managed by tracking-operator";

pub(super) async fn delete(c: &AwsClients, d: &Desired, report: &mut DeleteReport) -> Result<()> {
    let name = &d.names.schedule;
    let resource = format!("EventBridge schedule {name}");
    if let Some(why) = retained_on_delete(d, name, &resource) {
        report.retained.push(why);
        // The schedule keeps working after the pipeline is gone only with its role.
        report.retained.push(format!(
            "IAM role {}: the retained schedule assumes it",
            d.names.scheduler_role
        ));
        return Ok(());
    }
    let existing = found(
        c.scheduler
            .get_schedule()
            .name(name)
            .send()
            .await
            .map_err(api(SVC, "GetSchedule")),
    )?;
    if let Some(actual) = existing {
        if owned_by(actual.description(), &d.owner) {
            if found(
                c.scheduler
                    .delete_schedule()
                    .name(name)
                    .send()
                    .await
                    .map_err(api(SVC, "DeleteSchedule")),
            )?
            .is_some()
            {
                report.deleted.push(resource);
            }
        } else {
            report.retained.push(format!(
                "{resource}: its description does not name this pipeline"
            ));
        }
    }
    delete_role(c, d, &d.names.scheduler_role, report).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            cluster: None,
        }
    }

    #[test]
    fn ownership_by_description() {
        assert!(owned_by(Some(&owner().marker()), &owner()));
        let other = Owner {
            name: "p2".into(),
            ..owner()
        };
        assert!(!owned_by(Some(&other.marker()), &owner()));
        assert!(!owned_by(None, &owner()));
        assert!(!owned_by(Some("nightly job"), &owner()));
    }

    #[test]
    fn drift_of_a_schedule() {
        let desired = ScheduleDesired {
            name: "s".into(),
            expression: "cron(0 1 * * ? *)".into(),
            timezone: "UTC".into(),
            description: owner().marker(),
            target_arn: "arn:q".into(),
            role_arn: "arn:r".into(),
            input: MAINTENANCE_MESSAGE_BODY.into(),
        };
        let actual = GetScheduleOutput::builder()
            .schedule_expression("cron(0 1 * * ? *)")
            .schedule_expression_timezone("Europe/Berlin")
            .description(owner().marker())
            .state(ScheduleState::Enabled)
            .flexible_time_window(window().unwrap())
            .target(target(&desired).unwrap())
            .build();
        assert_eq!(
            schedule_drift(&desired, &actual),
            vec!["ScheduleExpressionTimezone"]
        );
    }
}
