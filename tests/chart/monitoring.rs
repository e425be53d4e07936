//! The Grafana dashboard and the PrometheusRule: every PromQL expression parses and names
//! only metrics the operator's and the worker's registries really export (the names come
//! from encoding those registries, not from a list kept by hand), and every alert links a
//! runbook paragraph that exists.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

use crate::support::{self, find, template};

const DASHBOARD: &str = "dashboards/tracking-operator.json";
const RUNBOOKS: &str = "docs/runbooks.md";

/// Sample names as Prometheus stores them, from the `# TYPE` lines of both registries:
/// a counter `x` is `x_total`, a histogram `x` is `x_bucket`, `x_sum` and `x_count`.
///
/// prometheus-client leaves a labelled family out of the exposition until it has a child, so
/// every family is given one first, through the same calls the binaries make.
fn exported_names() -> BTreeSet<String> {
    let operator =
        tracking_operator::metrics::Metrics::new(tracking_operator::aws::CallCounter::new());
    drop(operator.reconcile_timer());
    operator.reconciled(Some("aws"));
    let operator = operator.encode().expect("operator metrics encode");
    let worker = tracking_worker::metrics::Metrics::new();
    worker.record_failure("store");
    worker.record_dead_lettered("not_json");
    worker.throttled("dynamodb", "PutItem");
    worker.call("sqs", "ReceiveMessage");
    worker
        .maintenance
        .get_or_create(&tracking_worker::metrics::ResultLabel { result: "ok" })
        .inc();
    let worker = worker.encode();
    let mut names = BTreeSet::new();
    for line in operator.lines().chain(worker.lines()) {
        let mut parts = line.split_whitespace();
        if (parts.next(), parts.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" | "summary" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Metric names a PromQL expression selects.
fn selected_metrics(expr: &str) -> Result<BTreeSet<String>> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
            let selector = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                let name = vs
                    .name
                    .clone()
                    .ok_or_else(|| format!("a selector without a metric name: {vs}"))?;
                self.0.insert(name);
            }
            Ok(true)
        }
    }
    let ast = parser::parse(expr).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(names.0)
}

/// Grafana's variables replaced by values PromQL accepts.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${namespace}", "ns")
        .replace("${pipeline}", "p")
        .replace("$namespace", "ns")
        .replace("$pipeline", "p")
}

/// Every query in the dashboard: panel targets, and the `label_values(...)` variables.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let title = map
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or(title)
                    .to_owned();
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("expr", Value::String(e)) => out.push((title.clone(), e.clone())),
                        ("definition", Value::String(d)) => {
                            // label_values(<selector>, <label>)
                            let inner = d
                                .trim()
                                .strip_prefix("label_values(")
                                .and_then(|r| r.rsplit_once(','))
                                .map(|(sel, _)| sel.to_owned())
                                .unwrap_or_else(|| d.clone());
                            out.push((format!("variable {title}"), inner));
                        }
                        _ => walk(child, &title, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "dashboard", &mut out);
    out
}

fn dashboard() -> Result<Value> {
    let path = support::chart().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Checks each expression; returns every metric they use.
fn check_queries(queries: &[(String, String)]) -> Result<BTreeSet<String>> {
    let exported = exported_names();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (where_, expr) in queries {
        match selected_metrics(&without_grafana_variables(expr)) {
            Ok(names) => {
                for n in names {
                    if !exported.contains(&n) {
                        problems.push(format!("{where_}: {n} is not exported (in {expr})"));
                    }
                    used.insert(n);
                }
            }
            Err(e) => problems.push(format!("{where_}: {expr} does not parse: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}\n\nexported names: {exported:?}", problems.join("\n"));
    }
    Ok(used)
}

#[test]
fn exported_names_come_from_both_registries() {
    let names = exported_names();
    for expected in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "tracking_operator_aws_api_calls_total",
        "tracking_operator_pipelines",
        "tracking_worker_updates_written_total",
        "tracking_worker_end_to_end_latency_seconds_bucket",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    // The checker itself must be able to fail.
    assert!(check_queries(&[("t".into(), "rate(not_a_metric_total[5m])".into())]).is_err());
    assert!(check_queries(&[("t".into(), "sum by (".into())]).is_err());
}

#[test]
fn dashboard_queries_name_only_exported_metrics() -> Result<()> {
    let dashboard = dashboard()?;
    let queries = dashboard_queries(&dashboard);
    ensure!(queries.len() >= 20, "only {} queries found", queries.len());
    let used = check_queries(&queries)?;
    // What the dashboard promises to show.
    for needed in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "tracking_operator_aws_api_calls_total",
        "tracking_operator_pipelines",
        "tracking_operator_pipeline_condition",
        "tracking_operator_pipeline_queue_messages",
        "tracking_operator_pipeline_dead_letter_messages",
        "tracking_worker_messages_received_total",
        "tracking_worker_updates_written_total",
        "tracking_worker_duplicates_total",
        "tracking_worker_dead_lettered_total",
        "tracking_worker_batch_duration_seconds_bucket",
        "tracking_worker_end_to_end_latency_seconds_bucket",
        "tracking_worker_messages_in_flight",
    ] {
        ensure!(used.contains(needed), "no panel shows {needed}");
    }
    // Panel ids are unique (Grafana keys panel state on them) and every panel uses the
    // dashboard's data source variable, so the dashboard works with any Prometheus.
    let mut ids = BTreeSet::new();
    for p in dashboard["panels"].as_array().context("panels")? {
        let id = p["id"].as_i64().context("panel id")?;
        ensure!(ids.insert(id), "panel id {id} repeated");
        if p["type"] != "row" {
            ensure!(
                p["datasource"]["uid"] == "${datasource}",
                "panel {} has a fixed data source",
                p["title"]
            );
        }
    }
    Ok(())
}

#[test]
fn dashboard_configmap_carries_the_sidecar_label_and_the_json() -> Result<()> {
    let off = template("t", "monitoring", &[])?;
    ensure!(
        find(&off, "ConfigMap", "-dashboard").is_none(),
        "the dashboard is off by default"
    );
    let docs = template(
        "t",
        "monitoring",
        &[
            "metrics.dashboard.enabled=true",
            "metrics.dashboard.namespace=grafana",
        ],
    )?;
    let cm = find(&docs, "ConfigMap", "-dashboard").context("dashboard ConfigMap")?;
    ensure!(cm["metadata"]["labels"]["grafana_dashboard"] == "1");
    ensure!(cm["metadata"]["namespace"] == "grafana");
    let shipped: Value = serde_json::from_str(
        cm["data"]["tracking-operator.json"]
            .as_str()
            .context("dashboard data")?,
    )?;
    ensure!(shipped == dashboard()?, "the ConfigMap holds another JSON");
    Ok(())
}

/// The rendered PrometheusRule's rules.
fn rendered_rules() -> Result<Vec<Value>> {
    let docs = template(
        "t",
        "monitoring",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
        ],
    )?;
    let rule = find(&docs, "PrometheusRule", "").context("PrometheusRule rendered")?;
    let mut rules = Vec::new();
    for group in rule["spec"]["groups"].as_array().context("groups")? {
        rules.extend(group["rules"].as_array().context("rules")?.iter().cloned());
    }
    Ok(rules)
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn alert_rules_name_only_exported_metrics_and_link_a_runbook() -> Result<()> {
    let off = template("t", "monitoring", &[])?;
    ensure!(find(&off, "PrometheusRule", "").is_none(), "off by default");

    let rules = rendered_rules()?;
    let runbooks = std::fs::read_to_string(support::root().join(RUNBOOKS))?;
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let mut queries = Vec::new();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().context("alert name")?.to_owned();
        let expr = rule["expr"].as_str().context("expr")?;
        queries.push((name.clone(), expr.to_owned()));
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .with_context(|| format!("{name} has no runbook_url"))?;
        let (_, fragment) = url.split_once('#').context("runbook anchor")?;
        ensure!(
            anchors.contains(fragment),
            "{name} links #{fragment}, which {RUNBOOKS} has no heading for ({anchors:?})"
        );
        ensure!(
            rule["labels"]["severity"].is_string(),
            "{name} has no severity"
        );
        alerts.insert(name);
    }
    check_queries(&queries)?;
    for needed in [
        "TrackingOperatorDown",
        "TrackingPipelineNotReady",
        "TrackingPipelineStalled",
        "TrackingWorkerErrorRate",
        "TrackingDeadLetterQueueGrowing",
        "TrackingBacklogTooOld",
    ] {
        ensure!(alerts.contains(needed), "no {needed} alert in {alerts:?}");
    }
    Ok(())
}

#[test]
fn worker_pod_monitor_labels_series_with_the_pipeline() -> Result<()> {
    let docs = template(
        "t",
        "monitoring",
        &[
            "metrics.workerPodMonitor.enabled=true",
            "operator.watchNamespace=logistics",
        ],
    )?;
    let pm = find(&docs, "PodMonitor", "-workers").context("PodMonitor")?;
    ensure!(pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "tracking-worker");
    ensure!(pm["spec"]["namespaceSelector"]["matchNames"][0] == "logistics");
    let relabel = &pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    ensure!(relabel["targetLabel"] == "pipeline");
    ensure!(
        relabel["sourceLabels"][0] == "__meta_kubernetes_pod_label_tracking_operator_io_pipeline"
    );
    // The pipeline label the PodMonitor reads is the one the operator puts on worker Pods.
    ensure!(tracking_operator::k8s::PIPELINE_LABEL == "tracking-operator.io/pipeline");
    let sm = template("t", "monitoring", &["metrics.serviceMonitor.enabled=true"])?;
    let sm = find(&sm, "ServiceMonitor", "").context("ServiceMonitor")?;
    ensure!(
        sm["spec"]["endpoints"][0]["honorLabels"] == true,
        "the operator's per-pipeline namespace label must survive the scrape"
    );
    Ok(())
}
