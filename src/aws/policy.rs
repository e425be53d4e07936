//! Every IAM and KMS policy document the pipeline uses, as pure functions, and a
//! comparison that ignores formatting so equal policies never cause an update loop.

use serde_json::{Value, json};

use super::arn::Account;

pub const VERSION: &str = "2012-10-17";

/// Key policy: the account administers the key through IAM (AWS's default), and the AWS
/// services in `services` may use it on the account's behalf. CloudWatch needs the SQS key
/// to publish alarms to the topic encrypted with it.
pub fn key_policy(account: &Account, services: &[&str]) -> Value {
    let mut statements = vec![json!({
        "Sid": "AccountAdministersTheKeyThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": account.root()},
        "Action": "kms:*",
        "Resource": "*"
    })];
    if !services.is_empty() {
        statements.push(json!({
            "Sid": "AwsServicesUseTheKeyForThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": services},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account.id}}
        }));
    }
    json!({"Version": VERSION, "Statement": statements})
}

/// Trust policy of the schedule's role: only EventBridge Scheduler, only for this account.
pub fn scheduler_trust(account: &Account) -> Value {
    json!({
        "Version": VERSION,
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account.id}}
        }]
    })
}

/// The schedule's role may do exactly this: send to the queue, with the queue's key.
pub fn scheduler_policy(queue_arn: &str, queue_key_arn: &str) -> Value {
    json!({
        "Version": VERSION,
        "Statement": [
            {"Sid": "SendMaintenanceMessage", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn},
            {"Sid": "EncryptForTheQueue", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": queue_key_arn}
        ]
    })
}

/// IRSA trust: the worker's ServiceAccount, through the cluster's OIDC provider.
pub fn worker_trust(
    provider_arn: &str,
    issuer: &str,
    namespace: &str,
    service_account: &str,
) -> Value {
    json!({
        "Version": VERSION,
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{issuer}:sub"): format!("system:serviceaccount:{namespace}:{service_account}"),
                format!("{issuer}:aud"): "sts.amazonaws.com"
            }}
        }]
    })
}

/// The worker's least privilege, published in status: consume the queue (including
/// visibility changes for retries with backoff), move poison messages to the DLQ and sample
/// it for maintenance, write and query the table and its index, use both keys (the
/// original forgot `kms:Decrypt` on the SQS key), and put metrics only in its namespace.
pub struct WorkerResources<'a> {
    pub queue_arn: &'a str,
    pub dead_letter_queue_arn: &'a str,
    pub table_arn: &'a str,
    pub queue_key_arn: &'a str,
    pub table_key_arn: &'a str,
    pub metrics_namespace: &'a str,
}

pub fn worker_policy(r: &WorkerResources<'_>) -> Value {
    json!({
        "Version": VERSION,
        "Statement": [
            {"Sid": "ConsumeQueue", "Effect": "Allow", "Action": [
                "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage",
                // The worker requeues a message SQS would dead-letter for lost deliveries.
                "sqs:SendMessage"
            ], "Resource": r.queue_arn},
            // The worker dead-letters poison, and sweeps back updates SQS moved there.
            {"Sid": "DeadLetterQueue", "Effect": "Allow", "Action": [
                "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage",
                "sqs:SendMessage"
            ], "Resource": r.dead_letter_queue_arn},
            {"Sid": "AuditTable", "Effect": "Allow", "Action": [
                "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem",
                "dynamodb:Query", "dynamodb:UpdateItem"
            ], "Resource": [r.table_arn, format!("{}/index/*", r.table_arn)]},
            {"Sid": "Keys", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": [r.queue_key_arn, r.table_key_arn]},
            {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": r.metrics_namespace}}}
        ]
    })
}

/// Parses a policy as AWS returns it: IAM URL-encodes documents, KMS does not.
pub fn parse_policy(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

/// Equal up to formatting, key order, `"x"` vs `["x"]` and the order of string lists,
/// which AWS may change when it stores a policy.
pub fn same_policy(actual: &str, desired: &Value) -> bool {
    parse_policy(actual).is_some_and(|a| normalise(&a) == normalise(desired))
}

fn normalise(v: &Value) -> Value {
    match v {
        Value::Array(items) if items.len() == 1 => normalise(&items[0]),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalise).collect();
            if items.iter().all(Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            Value::Array(items)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            partition: "aws".into(),
            id: "123456789012".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn formatting_and_encoding_do_not_count_as_drift() {
        let desired = scheduler_policy("arn:q", "arn:k");
        let reordered = r#"{"Statement":[{"Resource":"arn:q","Action":["sqs:SendMessage"],"Effect":"Allow","Sid":"SendMaintenanceMessage"},
            {"Sid":"EncryptForTheQueue","Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"arn:k"}],"Version":"2012-10-17"}"#;
        assert!(same_policy(reordered, &desired));
        let encoded: String = percent_encoding::utf8_percent_encode(
            &desired.to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert!(same_policy(&encoded, &desired));
        let widened = desired.to_string().replace("sqs:SendMessage", "sqs:*");
        assert!(!same_policy(&widened, &desired));
        assert!(!same_policy("not json", &desired));
    }

    #[test]
    fn scheduler_role_is_allowed_exactly_send_and_the_key() {
        let p = scheduler_policy("arn:aws:sqs:us-east-1:1:q", "arn:aws:kms:us-east-1:1:key/k");
        let st = p["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0]["Action"], "sqs:SendMessage");
        assert_eq!(st[0]["Resource"], "arn:aws:sqs:us-east-1:1:q");
        assert_eq!(st[1]["Resource"], "arn:aws:kms:us-east-1:1:key/k");
        let trust = scheduler_trust(&account());
        assert_eq!(
            trust["Statement"][0]["Principal"]["Service"],
            "scheduler.amazonaws.com"
        );
        assert_eq!(
            trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
            "123456789012"
        );
    }

    #[test]
    fn worker_policy_is_least_privilege() {
        let p = worker_policy(&WorkerResources {
            queue_arn: "q",
            dead_letter_queue_arn: "dlq",
            table_arn: "t",
            queue_key_arn: "kq",
            table_key_arn: "kt",
            metrics_namespace: "NS",
        });
        let text = p.to_string();
        assert!(
            !text.contains("\"*\"") || text.matches("\"*\"").count() == 1,
            "only PutMetricData may use *"
        );
        assert!(!text.contains(":*\""), "no wildcard actions: {text}");
        let st = p["Statement"].as_array().unwrap();
        let by_sid = |sid: &str| st.iter().find(|s| s["Sid"] == sid).unwrap().clone();
        assert!(
            by_sid("ConsumeQueue")["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("sqs:ChangeMessageVisibility"))
        );
        assert_eq!(by_sid("DeadLetterQueue")["Resource"], "dlq");
        assert_eq!(by_sid("AuditTable")["Resource"], json!(["t", "t/index/*"]));
        assert_eq!(by_sid("Keys")["Resource"], json!(["kq", "kt"]));
        assert!(
            by_sid("Keys")["Action"]
                .as_array()
                .unwrap()
                .contains(&json!("kms:Decrypt"))
        );
        assert_eq!(
            by_sid("Metrics")["Condition"]["StringEquals"]["cloudwatch:namespace"],
            "NS"
        );
    }

    #[test]
    fn key_policy_lets_cloudwatch_use_the_queue_key() {
        let p = key_policy(&account(), &["cloudwatch.amazonaws.com"]);
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::123456789012:root"
        );
        assert_eq!(
            p["Statement"][1]["Principal"]["Service"],
            json!(["cloudwatch.amazonaws.com"])
        );
        assert_eq!(
            key_policy(&account(), &[])["Statement"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn irsa_trust_names_the_service_account() {
        let t = worker_trust(
            "arn:aws:iam::1:oidc-provider/oidc.example/id/X",
            "oidc.example/id/X",
            "ns",
            "sa",
        );
        assert_eq!(
            t["Statement"][0]["Condition"]["StringEquals"]["oidc.example/id/X:sub"],
            "system:serviceaccount:ns:sa"
        );
    }
}
