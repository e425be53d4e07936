//! Prometheus metrics under controller-runtime's names, so existing dashboards work, plus
//! every AWS API call by service, operation and outcome, and per-pipeline gauges (conditions,
//! queue depths, alert thresholds) read at scrape time from the controller's cache.
//!
//! The chart's Grafana dashboard and PrometheusRule query these names; `tests/chart/
//! monitoring.rs` fails when a query names a metric no registry exports.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::TrackingPipeline;
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
    pipelines: Arc<OnceLock<Store<TrackingPipeline>>>,
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
        let pipelines = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(PipelineGauges(pipelines.clone())));
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "tracking_operator_build_info",
            "Always 1, labelled with the operator's version; its absence means the operator is down",
            build_info,
        );
        let autoscale = crate::autoscale::AutoscaleMetrics::register(&mut registry);
        Self {
            autoscale,
            registry,
            reconciles,
            errors,
            duration,
            pipelines,
        }
    }

    /// Exports per-pipeline gauges from the controller's cache from now on. Only the replica
    /// that runs the controller (the leader) calls this, so a standby exports no pipeline
    /// series and sums over replicas count each pipeline once.
    pub fn observe_pipelines(&self, store: Store<TrackingPipeline>) {
        let _ = self.pipelines.set(store);
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Gauges computed from the cached pipelines at scrape time: no API call, always as fresh as
/// the watch.
struct PipelineGauges(Arc<OnceLock<Store<TrackingPipeline>>>);

impl std::fmt::Debug for PipelineGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineGauges")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ConditionCountLabels {
    pub condition: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PipelineLabels {
    pub namespace: String,
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PipelineConditionLabels {
    pub namespace: String,
    pub pipeline: String,
    pub condition: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct QueueStateLabels {
    pub namespace: String,
    pub pipeline: String,
    pub state: &'static str,
}

/// Everything [`PipelineGauges`] exports, computed from pipelines (pure, for tests).
#[derive(Debug, Default, PartialEq)]
pub struct PipelineSamples {
    /// Pipelines per condition type and status.
    pub by_condition: BTreeMap<ConditionCountLabels, i64>,
    /// 1 per pipeline, condition type and its status.
    pub conditions: Vec<PipelineConditionLabels>,
    /// Main-queue depth per pipeline and state (visible, in_flight, delayed).
    pub queue: Vec<(QueueStateLabels, i64)>,
    pub dead_letter: Vec<(PipelineLabels, i64)>,
    /// `spec.alerts.oldestMessageAgeSeconds`, for the backlog-age alert.
    pub age_threshold: Vec<(PipelineLabels, i64)>,
    /// `spec.alerts.queueDepthThreshold`, for the dashboard's backlog panel.
    pub depth_threshold: Vec<(PipelineLabels, i64)>,
}

pub fn pipeline_samples(pipelines: &[Arc<TrackingPipeline>]) -> PipelineSamples {
    let mut out = PipelineSamples::default();
    for p in pipelines {
        let id = PipelineLabels {
            namespace: p.namespace().unwrap_or_default(),
            pipeline: p.name_any(),
        };
        let status = p.status.clone().unwrap_or_default();
        for Condition {
            type_,
            status: value,
            ..
        } in &status.conditions
        {
            *out.by_condition
                .entry(ConditionCountLabels {
                    condition: type_.clone(),
                    status: value.clone(),
                })
                .or_default() += 1;
            out.conditions.push(PipelineConditionLabels {
                namespace: id.namespace.clone(),
                pipeline: id.pipeline.clone(),
                condition: type_.clone(),
                status: value.clone(),
            });
        }
        if let Some(q) = &status.queue {
            for (state, value) in [
                ("visible", q.visible),
                ("in_flight", q.in_flight),
                ("delayed", q.delayed),
            ] {
                if let Some(v) = value {
                    out.queue.push((
                        QueueStateLabels {
                            namespace: id.namespace.clone(),
                            pipeline: id.pipeline.clone(),
                            state,
                        },
                        v,
                    ));
                }
            }
            if let Some(v) = q.dead_letter {
                out.dead_letter.push((id.clone(), v));
            }
        }
        let alerts = &p.spec.alerts;
        out.age_threshold
            .push((id.clone(), i64::from(alerts.oldest_message_age_seconds)));
        out.depth_threshold
            .push((id, i64::from(alerts.queue_depth_threshold)));
    }
    out
}

impl Collector for PipelineGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pipelines = self.0.get().map(Store::state).unwrap_or_default();
        let s = pipeline_samples(&pipelines);
        // Descriptors are written even with no pipeline, so every name is always listed.
        let mut m = encoder.encode_descriptor(
            "tracking_operator_pipelines",
            "Pipelines by condition type and status",
            None,
            MetricType::Gauge,
        )?;
        for (labels, n) in &s.by_condition {
            ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "tracking_operator_pipeline_condition",
            "1 for each pipeline's condition with its current status",
            None,
            MetricType::Gauge,
        )?;
        for labels in &s.conditions {
            ConstGauge::new(1i64).encode(m.encode_family(labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "tracking_operator_pipeline_queue_messages",
            "Messages in the pipeline's main queue by state, as of the last reconcile",
            None,
            MetricType::Gauge,
        )?;
        for (labels, n) in &s.queue {
            ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
        }
        for (name, help, samples) in [
            (
                "tracking_operator_pipeline_dead_letter_messages",
                "Messages in the pipeline's dead-letter queue, as of the last reconcile",
                &s.dead_letter,
            ),
            (
                "tracking_operator_pipeline_oldest_message_age_threshold_seconds",
                "spec.alerts.oldestMessageAgeSeconds: the backlog age that should page",
                &s.age_threshold,
            ),
            (
                "tracking_operator_pipeline_queue_depth_threshold",
                "spec.alerts.queueDepthThreshold: the queue depth that should page",
                &s.depth_threshold,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, n) in samples {
                ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
            }
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

    #[test]
    fn pipeline_gauges_follow_conditions_and_queue_status() {
        use crate::api::{QueueStatus, TrackingPipelineSpec, TrackingPipelineStatus};
        let cond = |t: &str, s: &str| Condition {
            type_: t.into(),
            status: s.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        };
        let mut a = TrackingPipeline::new("a", TrackingPipelineSpec::default());
        a.metadata.namespace = Some("ns".into());
        a.status = Some(TrackingPipelineStatus {
            conditions: vec![cond("Ready", "True")],
            queue: Some(QueueStatus {
                visible: Some(7),
                in_flight: Some(2),
                delayed: None,
                dead_letter: Some(3),
            }),
            ..Default::default()
        });
        let mut b = TrackingPipeline::new("b", TrackingPipelineSpec::default());
        b.metadata.namespace = Some("ns".into());
        b.status = Some(TrackingPipelineStatus {
            conditions: vec![cond("Ready", "False"), cond("Stalled", "True")],
            ..Default::default()
        });
        let s = pipeline_samples(&[Arc::new(a), Arc::new(b)]);
        let count = |c: &str, st: &str| {
            s.by_condition
                .get(&ConditionCountLabels {
                    condition: c.into(),
                    status: st.into(),
                })
                .copied()
        };
        assert_eq!(count("Ready", "True"), Some(1));
        assert_eq!(count("Ready", "False"), Some(1));
        assert_eq!(count("Stalled", "True"), Some(1));
        assert_eq!(s.conditions.len(), 3);
        assert_eq!(s.queue.len(), 2, "delayed is unknown, so not exported");
        assert_eq!(s.dead_letter[0].1, 3);
        assert_eq!(s.age_threshold.len(), 2);
        assert_eq!(s.age_threshold[0].1, 300);

        // With no store yet, the descriptors are still listed.
        let text = Metrics::new(CallCounter::new()).encode().unwrap();
        for name in [
            "# TYPE tracking_operator_pipelines gauge",
            "# TYPE tracking_operator_pipeline_condition gauge",
            "# TYPE tracking_operator_pipeline_dead_letter_messages gauge",
            "tracking_operator_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
