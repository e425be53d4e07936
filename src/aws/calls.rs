//! Counts every AWS API call by service, operation and outcome, through an SDK
//! interceptor on every client. The controller exports the counts as metrics, the
//! benchmark prints calls per pipeline, and tests assert "zero writes when nothing differs".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// One counted kind of call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    /// Service name as the SDK reports it, e.g. `SQS`, `KMS`.
    pub service: String,
    /// Operation name, e.g. `GetQueueAttributes`.
    pub operation: String,
    /// `ok`, `client_error` (4xx, including not-found), `server_error` (5xx) or
    /// `network_error` (no response).
    pub outcome: &'static str,
}

impl CallKey {
    /// Reads (`Get*`, `Describe*`, `List*`) change nothing; every other operation is a write.
    pub fn is_write(&self) -> bool {
        is_write(&self.operation)
    }
}

pub fn is_write(operation: &str) -> bool {
    !["Get", "Describe", "List"]
        .iter()
        .any(|p| operation.starts_with(p))
}

/// Shared, cheap to clone; one per operator process (or per test).
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<CallKey, u64>>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, key: CallKey) {
        // A poisoned lock only means another thread panicked while counting; the map is fine.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> BTreeMap<CallKey, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Calls that change something (whatever their outcome).
    pub fn writes(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(k, _)| k.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// `Service:Operation` of every write so far, for test failure messages.
    pub fn write_operations(&self) -> Vec<String> {
        self.snapshot()
            .keys()
            .filter(|k| k.is_write())
            .map(|k| format!("{}:{}", k.service, k.operation))
            .collect()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let outcome = match (context.output_or_error(), context.response()) {
            (Some(Ok(_)), _) => "ok",
            (_, Some(r)) if r.status().is_server_error() => "server_error",
            (_, Some(_)) => "client_error",
            (_, None) => "network_error",
        };
        self.record(CallKey {
            service,
            operation,
            outcome,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_everything_but_reads() {
        assert!(!is_write("GetQueueAttributes"));
        assert!(!is_write("DescribeAlarms"));
        assert!(!is_write("ListQueueTags"));
        assert!(is_write("SetQueueAttributes"));
        assert!(is_write("PutMetricAlarm"));
        assert!(is_write("TagResource"));
        assert!(is_write("ScheduleKeyDeletion"));
    }

    #[test]
    fn counts_accumulate() {
        let c = CallCounter::new();
        let key = |op: &str| CallKey {
            service: "SQS".into(),
            operation: op.into(),
            outcome: "ok",
        };
        c.record(key("GetQueueUrl"));
        c.record(key("GetQueueUrl"));
        c.record(key("CreateQueue"));
        assert_eq!(c.total(), 3);
        assert_eq!(c.writes(), 1);
        assert_eq!(c.write_operations(), vec!["SQS:CreateQueue".to_string()]);
    }
}
