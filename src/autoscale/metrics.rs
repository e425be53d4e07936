//! The autoscaler's gauges, registered in the operator's one registry (see
//! [`crate::metrics::Metrics`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub namespace: String,
    pub pipeline: String,
}

/// Per autoscaled pipeline: the replicas it wants and the backlog it measured.
#[derive(Clone, Debug, Default)]
pub struct AutoscaleMetrics {
    desired_replicas: Family<PipelineLabels, Gauge>,
    backlog: Family<PipelineLabels, Gauge>,
}

impl AutoscaleMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tracking_operator_worker_desired_replicas",
            "Worker replicas the autoscaler wants, per pipeline",
            metrics.desired_replicas.clone(),
        );
        registry.register(
            "tracking_operator_worker_backlog_messages",
            "Messages visible plus in flight in the pipeline's queue at the last measurement",
            metrics.backlog.clone(),
        );
        metrics
    }

    pub fn observe(&self, namespace: &str, pipeline: &str, desired: i32, backlog: i64) {
        let labels = PipelineLabels {
            namespace: namespace.into(),
            pipeline: pipeline.into(),
        };
        self.desired_replicas
            .get_or_create(&labels)
            .set(i64::from(desired));
        self.backlog.get_or_create(&labels).set(backlog);
    }

    /// A pipeline no longer autoscaled (or deleted) stops being reported.
    pub fn forget(&self, namespace: &str, pipeline: &str) {
        let labels = PipelineLabels {
            namespace: namespace.into(),
            pipeline: pipeline.into(),
        };
        self.desired_replicas.remove(&labels);
        self.backlog.remove(&labels);
    }
}
