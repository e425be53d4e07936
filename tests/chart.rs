//! The Helm chart, proven against helm itself and a real kube-apiserver (testenv):
//! lint and schema, the CRD template equal to `crds/`, manifests accepted by the API server,
//! install / upgrade / uninstall, and RBAC that is exactly what the operator needs.

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
