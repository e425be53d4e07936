//! The Helm chart, proven against helm itself and a real kube-apiserver (testenv):
//! lint and schema, the CRD template equal to `crds/`, manifests accepted by the API server,
//! install / upgrade / uninstall, RBAC that is exactly what the operator needs, and a
//! dashboard and alert rules that query only metrics the binaries export.

#[path = "chart/support.rs"]
mod support;

#[path = "chart/render.rs"]
mod render;

#[path = "chart/install.rs"]
mod install;

#[path = "chart/rbac.rs"]
mod rbac;

#[path = "chart/iam_policy.rs"]
mod iam_policy;

#[path = "chart/operator.rs"]
mod operator;

#[path = "chart/examples.rs"]
mod examples;

#[path = "chart/monitoring.rs"]
mod monitoring;

#[path = "controller_support/mod.rs"]
mod controller_support;

#[path = "chart/status.rs"]
mod status;
