//! Prometheus metrics under controller-runtime's names, so existing dashboards work, plus
//! every AWS API call by service, operation and outcome.

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::aws::CallCounter;

/// The `controller` label value.
pub const CONTROLLER: &str = "trackingpipeline";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

/// The operator's metrics; one per process.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    /// The autoscaler's gauges (src/autoscale).
    pub autoscale: crate::autoscale::AutoscaleMetrics,
}

impl Metrics {
    pub fn new(calls: CallCounter) -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        // prometheus-client appends `_total` to counters.
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            duration.clone(),
        );
        registry.register_collector(Box::new(AwsCalls(calls)));
        let autoscale = crate::autoscale::AutoscaleMetrics::register(&mut registry);
        Self {
            autoscale,
            registry,
            reconciles,
            errors,
            duration,
        }
    }

    /// Starts timing a reconcile; the time is recorded when the timer is dropped, so early
    /// returns are counted too.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            start: Instant::now(),
            histogram: self
                .duration
                .get_or_create(&ControllerLabels {
                    controller: CONTROLLER,
                })
                .clone(),
        }
    }

    pub fn reconciled(&self, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller: CONTROLLER,
                result,
            })
            .inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    controller: CONTROLLER,
                    error,
                })
                .inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records the reconcile's duration on drop.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Exports the AWS helper's call counts at scrape time (they are counted by an SDK
/// interceptor, not here).
#[derive(Debug)]
struct AwsCalls(CallCounter);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    operation: String,
    outcome: &'static str,
}

impl Collector for AwsCalls {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "tracking_operator_aws_api_calls",
            "AWS API calls by service, operation and outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (key, count) in self.0.snapshot() {
            let labels = CallLabels {
                service: key.service,
                operation: key.operation,
                outcome: key.outcome,
            };
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_controller_runtime() {
        let metrics = Metrics::new(CallCounter::new());
        drop(metrics.reconcile_timer());
        metrics.reconciled(None);
        metrics.reconciled(Some("aws"));
        let text = metrics.encode().unwrap();
        for expected in [
            r#"controller_runtime_reconcile_total{controller="trackingpipeline",result="success"} 1"#,
            r#"controller_runtime_reconcile_total{controller="trackingpipeline",result="error"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="trackingpipeline",error="aws"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="trackingpipeline"} 1"#,
            "# TYPE tracking_operator_aws_api_calls counter",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
