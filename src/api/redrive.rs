//! A declarative DLQ redrive (`spec.redrive`), for teams that change clusters only through
//! pull requests: setting a new `requestId` asks the operator to move the dead-letter queue's
//! messages back to the main queue once; `status.redrive` reports how it went.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::rules::in_range;

/// One redrive request. The operator carries out each `requestId` once; changing only the
/// other fields under the same id does nothing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.requestId.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')").message("spec.redrive.requestId must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit").field_path(".requestId"))]
#[x_kube(validation = in_range("rate", "spec.redrive.rate", 1, 1_000, "messages per second"))]
#[serde(rename_all = "camelCase")]
pub struct RedriveSpec {
    /// Any new value starts a redrive (for example a date, or the ticket it fixes).
    pub request_id: String,

    /// Only messages the worker rejected with this reason (`invalid_json`,
    /// `missing_field`, ... as `trackctl dlq list` shows them); unset: every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub reason: Option<String>,

    /// Messages moved per second at most (1–1000), so a large DLQ does not flood the worker.
    #[serde(default = "default_rate")]
    pub rate: i32,

    /// Also move messages that an earlier redrive already moved once and that came back (still
    /// poison); by default they stay in the DLQ.
    #[serde(default)]
    pub include_returned: bool,
}

fn default_rate() -> i32 {
    10
}

/// Where a redrive stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum RedrivePhase {
    /// Waiting for the queues to exist.
    #[default]
    Pending,
    /// Moving messages.
    Running,
    /// Every message that matched was moved; `kept` stayed by choice.
    Succeeded,
    /// Stopped on an error (`message`); a new `requestId` tries again, and messages moved so
    /// far are not moved twice.
    Failed,
}

/// What the last redrive request did.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedriveStatus {
    /// The `spec.redrive.requestId` this reports on.
    pub request_id: String,
    pub phase: RedrivePhase,
    /// Messages copied to the main queue and deleted from the DLQ.
    #[serde(default)]
    pub moved: u64,
    /// Messages left in the DLQ on purpose (another reason, or returned after a redrive).
    #[serde(default)]
    pub kept: u64,
    /// Messages SQS refused to take (left in the DLQ).
    #[serde(default)]
    pub failed: u64,
    /// DLQ depth when the redrive ended (or at the last progress report).
    #[serde(default)]
    pub remaining: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it failed, or what it is waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
