//! The worker Deployment. Its environment is the worker crate's own
//! [`WorkerSettings::to_env`], so the variable names exist in exactly one place.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use tracking_worker::contract::{WorkerSettings, cloudwatch};

use super::{PIPELINE_LABEL, bounded, child_labels, child_meta};
use crate::api::{AutoscalingMode, TrackingPipeline};
use crate::error::{Error, Result};

const METRICS_PORT_NAME: &str = "metrics";

/// Set on the Deployment when `spec.worker.autoscaling` is on (value: the mode), so the
/// controller's watch can tell, from the Deployment alone, that `replicas` is not ours.
pub const AUTOSCALING_ANNOTATION: &str = "tracking-operator.io/autoscaling";

/// Seconds a worker may take to stop after SIGTERM, as the worker's own shutdown bounds
/// them; the Pod's grace period, so the kubelet never kills a draining worker.
pub use tracking_worker::contract::drain_budget_seconds;

/// The controller's filter for Deployment events: a change worth a reconcile. The
/// generation moves on every spec change, `replicas` included; with autoscaling the replica
/// count is someone else's, so it is left out and scaling never costs a reconcile (and its
/// AWS calls). Status changes reach here as a new value only when the `Available`
/// condition flips.
pub fn deployment_change(deployment: &Deployment) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let autoscaled = deployment
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(AUTOSCALING_ANNOTATION));
    let mut spec = deployment.spec.clone().unwrap_or_default();
    if autoscaled {
        spec.replicas = None;
    }
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&spec).ok()?.hash(&mut hasher);
    deployment.metadata.annotations.hash(&mut hasher);
    deployment.metadata.labels.hash(&mut hasher);
    // Availability decides WorkerReady. With autoscaling every scale from zero would flip it
    // twice, so there it is judged on the passes that happen anyway.
    if !autoscaled {
        super::availability::available_status(deployment).hash(&mut hasher);
    }
    Some(hasher.finish())
}

pub fn deployment_name(pipeline: &TrackingPipeline) -> String {
    bounded(&pipeline.name_any(), "-worker", 63)
}

/// What the Deployment needs beyond the spec: identifiers AWS returned and operator settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInputs {
    pub image: String,
    pub service_account: String,
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    pub table_name: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// A Secret whose keys are added to the environment (optional: it may not exist).
    pub credentials_secret: Option<String>,
}

/// The worker's settings as the worker will parse them.
pub fn worker_settings(pipeline: &TrackingPipeline, inputs: &WorkerInputs) -> WorkerSettings {
    let spec = &pipeline.spec;
    let clamp = |v: i32| u32::try_from(v).unwrap_or(0);
    WorkerSettings {
        queue_url: inputs.queue_url.clone(),
        dead_letter_queue_url: inputs.dead_letter_queue_url.clone(),
        table_name: inputs.table_name.clone(),
        pipeline: format!(
            "{}/{}",
            pipeline.namespace().unwrap_or_default(),
            pipeline.name_any()
        ),
        batch_size: u16::try_from(spec.worker.batch_size)
            .unwrap_or(WorkerSettings::DEFAULT_BATCH_SIZE),
        max_batching_window_seconds: clamp(spec.worker.max_batching_window_seconds),
        concurrency: u16::try_from(spec.worker.concurrency)
            .unwrap_or(WorkerSettings::DEFAULT_CONCURRENCY),
        ttl_days: clamp(spec.table.ttl_days),
        visibility_timeout_seconds: clamp(spec.queue.visibility_timeout_seconds),
        metrics_namespace: cloudwatch::DEFAULT_NAMESPACE.to_string(),
        metrics_addr: WorkerSettings::DEFAULT_METRICS_ADDR.to_string(),
        region: inputs.region.clone(),
        endpoint_url: inputs.endpoint_url.clone(),
    }
}

pub fn worker_deployment(pipeline: &TrackingPipeline, inputs: &WorkerInputs) -> Result<Deployment> {
    let settings = worker_settings(pipeline, inputs);
    let grace_seconds = drain_budget_seconds(&settings);
    let metrics_port: i32 = settings
        .metrics_addr
        .parse::<std::net::SocketAddr>()
        .map(|a| i32::from(a.port()))
        .map_err(|e| {
            Error::InvalidSpec(format!(
                "worker metrics address {}: {e}",
                settings.metrics_addr
            ))
        })?;
    let env = settings
        .to_env()
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.to_string(),
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    let labels = child_labels(pipeline);
    let selector = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "tracking-worker".to_string(),
        ),
        (PIPELINE_LABEL.to_string(), labels[PIPELINE_LABEL].clone()),
    ]);
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let container = Container {
        name: "worker".into(),
        image: Some(inputs.image.clone()),
        env: Some(env),
        env_from: inputs.credentials_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(true),
                }),
                ..EnvFromSource::default()
            }]
        }),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: metrics_port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        resources: Some(
            pipeline
                .spec
                .worker
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut metadata = child_meta(pipeline, deployment_name(pipeline))?;
    let autoscaling = pipeline.spec.worker.autoscaling.as_ref();
    if let Some(autoscaling) = autoscaling {
        let mode = match autoscaling.mode {
            AutoscalingMode::Operator => "operator",
            AutoscalingMode::External => "external",
        };
        metadata.annotations = Some(BTreeMap::from([(
            AUTOSCALING_ANNOTATION.to_string(),
            mode.to_string(),
        )]));
    }
    Ok(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // Absent, not set, when autoscaled: a field left out of a server-side apply is
            // not owned by our field manager, so the scale subresource (ours or an HPA's)
            // is the only writer and nothing fights over it.
            replicas: match autoscaling {
                Some(_) => None,
                None => Some(pipeline.spec.worker.replicas),
            },
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(inputs.service_account.clone()),
                    // IRSA mounts its own projected token; the Kubernetes API token is not needed.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    termination_grace_period_seconds: Some(grace_seconds),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The original function's size: 512 MB.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("512Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::fixtures::pipeline;
    use tracking_worker::contract::env;

    fn inputs() -> WorkerInputs {
        WorkerInputs {
            image: "example.com/worker:1".into(),
            service_account: "parcels-worker".into(),
            queue_url: "http://q".into(),
            dead_letter_queue_url: "http://dlq".into(),
            table_name: "table".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: None,
            credentials_secret: None,
        }
    }

    #[test]
    fn the_worker_parses_the_environment_we_give_it() {
        let mut p = pipeline();
        p.spec.worker.batch_size = 20;
        p.spec.table.ttl_days = 30;
        let d = worker_deployment(&p, &inputs()).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let env: BTreeMap<String, String> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        let parsed =
            WorkerSettings::from_lookup(|k| env.get(k).cloned()).expect("worker accepts its env");
        assert_eq!(parsed, worker_settings(&p, &inputs()));
        assert_eq!(parsed.pipeline, "logistics/parcels");
        assert_eq!(parsed.batch_size, 20);
        assert_eq!(parsed.ttl_days, 30);
        assert_eq!(env[env::AWS_REGION], "eu-west-1");
    }

    #[test]
    fn autoscaled_deployments_leave_replicas_out() {
        let fixed = worker_deployment(&pipeline(), &inputs()).unwrap();
        assert_eq!(fixed.spec.as_ref().unwrap().replicas, Some(1));
        assert!(fixed.metadata.annotations.is_none());

        let mut p = pipeline();
        p.spec.worker.autoscaling = Some(Default::default());
        let scaled = worker_deployment(&p, &inputs()).unwrap();
        assert_eq!(scaled.spec.as_ref().unwrap().replicas, None);
        // Serialized for server-side apply, the field is absent rather than null.
        let json = serde_json::to_value(&scaled).unwrap();
        assert!(json["spec"].get("replicas").is_none(), "{json}");
        assert_eq!(
            scaled.metadata.annotations.unwrap()[AUTOSCALING_ANNOTATION],
            "operator"
        );
    }

    #[test]
    fn grace_period_is_the_drain_budget() {
        let mut p = pipeline();
        p.spec.queue.visibility_timeout_seconds = 60;
        p.spec.worker.max_batching_window_seconds = 5;
        let d = worker_deployment(&p, &inputs()).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let budget = drain_budget_seconds(&worker_settings(&p, &inputs()));
        assert!(budget > 0);
        assert_eq!(pod.termination_grace_period_seconds, Some(budget));
    }

    #[test]
    fn replica_moves_trigger_a_reconcile_only_without_autoscaling() {
        let with_replicas = |d: &Deployment, n| {
            let mut d = d.clone();
            d.spec.as_mut().unwrap().replicas = Some(n);
            d.metadata.generation = Some(7);
            d
        };
        let fixed = worker_deployment(&pipeline(), &inputs()).unwrap();
        assert_ne!(
            deployment_change(&fixed),
            deployment_change(&with_replicas(&fixed, 3))
        );

        let mut p = pipeline();
        p.spec.worker.autoscaling = Some(Default::default());
        let scaled = worker_deployment(&p, &inputs()).unwrap();
        assert_eq!(
            deployment_change(&scaled),
            deployment_change(&with_replicas(&scaled, 3))
        );
        // A status change is no change either.
        let mut with_status = scaled.clone();
        with_status.status = Some(Default::default());
        assert_eq!(deployment_change(&scaled), deployment_change(&with_status));
        // The template still is.
        let mut image = scaled.clone();
        image
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("other".into());
        assert_ne!(deployment_change(&scaled), deployment_change(&image));
    }

    #[test]
    fn restricted_pod_security_and_probes() {
        let d = worker_deployment(&pipeline(), &inputs()).unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("parcels-worker"));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        let path = |p: &Option<Probe>| p.clone().unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(&c.liveness_probe), "/healthz");
        assert_eq!(path(&c.readiness_probe), "/readyz");
        assert_eq!(c.ports.clone().unwrap()[0].container_port, 9090);
        let limits = c.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["memory"], Quantity("512Mi".into()));
        // The selector is a subset of the template's labels (the API server requires it).
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(template_labels.get(&k), Some(&v));
        }
    }
}
