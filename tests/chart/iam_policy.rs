//! `deploy/iam/operator-policy.json` against the operator's code: every AWS operation the
//! operator calls is allowed, every statement is scoped (name prefix, ownership tag or a
//! service condition), and the prefixes and tag key are the ones the operator really uses.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tracking_operator::aws::naming::Names;
use tracking_operator::aws::tags::{MANAGED_BY, MANAGED_BY_VALUE};

use crate::support::root;

fn policy() -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        root().join("deploy/iam/operator-policy.json"),
    )?)?)
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// `service:Operation` for every `api(SVC, "Operation")` call in src/aws (the error mapper
/// every AWS call goes through), with each file's `SVC` mapped to its IAM prefix.
fn operations_in_code() -> Result<BTreeSet<String>> {
    let prefixes: BTreeMap<&str, &str> = [
        ("CloudWatch", "cloudwatch"),
        ("IAM", "iam"),
        ("KMS", "kms"),
        ("DynamoDB", "dynamodb"),
        ("SNS", "sns"),
        ("SQS", "sqs"),
        ("Scheduler", "scheduler"),
    ]
    .into();
    let mut ops = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("src/aws"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let Some(svc) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("const SVC: &str = \""))
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let prefix = prefixes
            .get(svc)
            .with_context(|| format!("unknown service {svc}"))?;
        for call in text.split("api(SVC, \"").skip(1) {
            let op = call.split('"').next().context("operation name")?;
            ops.insert(format!("{prefix}:{op}"));
        }
    }
    Ok(ops)
}

#[test]
fn policy_allows_every_aws_operation_the_operator_calls() -> Result<()> {
    let ops = operations_in_code()?;
    ensure!(
        ops.len() > 30,
        "found only {} operations in src/aws: {ops:?}",
        ops.len()
    );
    let policy = policy()?;
    let allowed: BTreeSet<String> = policy["Statement"]
        .as_array()
        .context("Statement")?
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    let missing: Vec<_> = ops.iter().filter(|op| !allowed.contains(*op)).collect();
    ensure!(missing.is_empty(), "operator-policy.json lacks {missing:?}");
    // And nothing the operator never calls (CreateKey's tags need kms:TagResource etc.).
    let implied = [
        "kms:TagResource",
        "sqs:TagQueue",
        "dynamodb:TagResource",
        "sns:TagResource",
        "cloudwatch:TagResource",
        "iam:TagRole",
        "iam:PassRole",
        "kms:CreateGrant",
        // spec.redrive moves DLQ messages through tracking_worker::redrive (src/redrive.rs).
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    ];
    let unused: Vec<_> = allowed
        .iter()
        .filter(|a| !ops.contains(*a) && !implied.contains(&a.as_str()))
        .collect();
    ensure!(
        unused.is_empty(),
        "operator-policy.json allows actions the operator never calls: {unused:?}"
    );
    Ok(())
}

#[test]
fn every_statement_is_scoped_by_name_prefix_tag_or_condition() -> Result<()> {
    let policy = policy()?;
    let owned = format!("aws:ResourceTag/{MANAGED_BY}");
    let requested = format!("aws:RequestTag/{MANAGED_BY}");
    let mut tag_scoped = 0;
    for s in policy["Statement"].as_array().context("Statement")? {
        let sid = s["Sid"].as_str().unwrap_or("?");
        ensure!(s["Effect"] == "Allow", "{sid}");
        for action in strings(&s["Action"]) {
            ensure!(!action.contains('*'), "{sid}: wildcard action {action}");
        }
        let cond = s["Condition"]["StringEquals"].as_object();
        if let Some(cond) = cond {
            for key in [&owned, &requested] {
                if let Some(v) = cond.get(key.as_str()) {
                    ensure!(
                        v == MANAGED_BY_VALUE,
                        "{sid}: {key} must be {MANAGED_BY_VALUE}"
                    );
                    tag_scoped += 1;
                }
            }
        }
        for resource in strings(&s["Resource"]) {
            let by_name = ["tp_", "alias/tracking-operator/", "key/*"]
                .iter()
                .any(|p| resource.contains(p));
            // Listing calls AWS cannot scope (the orphaned-key lookup reads only).
            let unscopable_list = strings(&s["Action"])
                .iter()
                .all(|a| ["kms:ListKeys", "kms:ListAliases"].contains(&a.as_str()));
            ensure!(
                by_name || s.get("Condition").is_some() || unscopable_list,
                "{sid}: {resource} is neither scoped by name nor by a condition"
            );
            if resource == "arn:aws:kms:*:*:key/*"
                && strings(&s["Action"]).iter().any(|a| a != "kms:DescribeKey")
            {
                // Keys have random ids: writes need the ownership tag or a service condition,
                // reads and turning rotation on are harmless.
                let harmless = [
                    "kms:DescribeKey",
                    "kms:GetKeyPolicy",
                    "kms:GetKeyRotationStatus",
                    "kms:ListResourceTags",
                    "kms:EnableKeyRotation",
                    "kms:CreateAlias",
                ];
                ensure!(
                    s.get("Condition").is_some()
                        || strings(&s["Action"])
                            .iter()
                            .all(|a| harmless.contains(&a.as_str())),
                    "{sid}: key writes need a condition"
                );
            }
        }
    }
    ensure!(
        tag_scoped >= 8,
        "only {tag_scoped} statements use the ownership tag"
    );
    Ok(())
}

#[test]
fn name_prefixes_in_the_policy_match_the_operators_names() -> Result<()> {
    // Short, long (hashed) and dotted names all keep the prefixes the policy relies on.
    for (ns, name) in [
        ("logistics", "parcels"),
        ("n".repeat(63).as_str(), "a".repeat(253).as_str()),
        ("ns", "a.b"),
    ] {
        let n = Names::new(ns, name);
        for aws_name in [
            &n.queue,
            &n.dead_letter_queue,
            &n.table,
            &n.topic,
            &n.schedule,
            &n.scheduler_role,
            &n.worker_role,
        ] {
            ensure!(
                aws_name.starts_with("tp_"),
                "{aws_name} does not start with tp_"
            );
        }
        ensure!(n.alarms().iter().all(|a| a.starts_with("tp_")));
        ensure!(n.scheduler_role.ends_with("-scheduler") && n.worker_role.ends_with("-worker"));
        for alias in [&n.queue_key_alias, &n.table_key_alias] {
            ensure!(alias.starts_with("alias/tracking-operator/"), "{alias}");
        }
    }
    Ok(())
}
