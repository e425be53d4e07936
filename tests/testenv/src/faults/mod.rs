//! Reproducing AWS behaviour that moto does not have: an HTTP reverse proxy between the SDK and
//! moto that recognises the operation of every call and applies declarative, per-test rules.
//!
//! ```no_run
//! # async fn t() {
//! use std::time::Duration;
//! use testenv::faults::{FaultProxy, Rule};
//!
//! let aws = FaultProxy::start(&testenv::moto().endpoint());
//! aws.add_rule(Rule::error("sqs", "CreateQueue", "RequestThrottled").times(2));
//! aws.add_rule(Rule::table_creating(Duration::from_secs(3)));
//! let sdk = aws.sdk_config().await;            // point the code under test here
//! // ... later
//! assert_eq!(aws.calls("sqs", "CreateQueue"), 3);
//! # }
//! ```
//!
//! What each rule reproduces:
//! - [`Rule::error`]: AWS answers with an error code (throttling, access denied, validation,
//!   limits, 500/503), in the body format of the service's protocol, so the SDK parses the code.
//! - [`Rule::delay`]: a slow answer.
//! - [`Rule::drop_response`]: the call reaches AWS and takes effect, the client sees a broken
//!   connection and cannot know whether it happened.
//! - [`Rule::table_creating`] / [`Rule::tags_empty`]: DynamoDB's `CREATING` state and the
//!   eventually consistent tags of a new table.
//! - [`Rule::email_pending`]: an e-mail subscription nobody has confirmed yet.
//! - [`Rule::role_propagation`]: a new IAM role that EventBridge Scheduler cannot assume yet.
//! - [`Rule::rate_limit`]: a per-service request rate, answered with throttling when exceeded.
//!
//! A rule applies from the moment it is added. [`Rule::times`] and [`Rule::for_duration`]
//! bound it; without either it applies until [`FaultProxy::clear_rules`]. Services are named by
//! their SigV4 signing name (`sqs`, `dynamodb`, `kms`, `sns`, `iam`, `scheduler`, `sts`), with
//! `cloudwatch` for CloudWatch (signing name `monitoring`); `"*"` matches any service or
//! operation. Every call is counted per service and operation, faulted or not.

mod proxy;

use std::time::{Duration, Instant};

pub use proxy::FaultProxy;

/// One declarative behaviour of the proxy.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) kind: Kind,
    pub(crate) service: String,
    pub(crate) operation: String,
    /// Only calls whose request body contains this text (e.g. a table or queue name).
    pub(crate) body_contains: Option<String>,
    pub(crate) times: Option<u32>,
    pub(crate) duration: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Error { code: String, status: u16 },
    Delay(Duration),
    DropResponse,
    TableCreating(Duration),
    TagsEmpty(Duration),
    EmailPending,
    RolePropagation(Duration),
    RateLimit { per_second: f64, burst: f64 },
}

impl Rule {
    fn new(kind: Kind, service: &str, operation: &str) -> Rule {
        Rule {
            kind,
            service: canonical_service(service).to_string(),
            operation: operation.to_string(),
            body_contains: None,
            times: None,
            duration: None,
        }
    }

    /// Answer `service`'s `operation` with the AWS error `code`, without forwarding the call.
    /// The HTTP status is 400, or 500/503 for `InternalFailure`/`InternalServerError`/
    /// `ServiceUnavailable`; [`Rule::status`] overrides it.
    pub fn error(service: &str, operation: &str, code: &str) -> Rule {
        let status = match code {
            "InternalFailure" | "InternalServerError" | "InternalError" => 500,
            "ServiceUnavailable" | "ServiceUnavailableException" => 503,
            _ => 400,
        };
        Rule::new(
            Kind::Error {
                code: code.to_string(),
                status,
            },
            service,
            operation,
        )
    }

    /// Forward the call, and answer after `delay`.
    pub fn delay(service: &str, operation: &str, delay: Duration) -> Rule {
        Rule::new(Kind::Delay(delay), service, operation)
    }

    /// Forward the call (it takes effect) and close the client's connection instead of
    /// answering.
    pub fn drop_response(service: &str, operation: &str) -> Rule {
        Rule::new(Kind::DropResponse, service, operation)
    }

    /// A DynamoDB table created through this proxy reports `CREATING` (in `CreateTable` and
    /// `DescribeTable`) for `window` after its creation, as AWS does while it provisions it.
    pub fn table_creating(window: Duration) -> Rule {
        Rule::new(Kind::TableCreating(window), "dynamodb", "*")
    }

    /// `ListTagsOfResource` on a table created through this proxy answers no tags for `window`
    /// after its creation: AWS applies the tags of `CreateTable` eventually.
    pub fn tags_empty(window: Duration) -> Rule {
        Rule::new(Kind::TagsEmpty(window), "dynamodb", "ListTagsOfResource")
    }

    /// E-mail subscriptions stay `PendingConfirmation`, as until a person clicks the link:
    /// `Subscribe` answers `pending confirmation`, `ListSubscriptions*` answers the ARN
    /// `PendingConfirmation`, `GetSubscriptionAttributes` answers `PendingConfirmation=true`.
    pub fn email_pending() -> Rule {
        Rule::new(Kind::EmailPending, "sns", "*")
    }

    /// For `window` after an IAM role is created through this proxy, `CreateSchedule` and
    /// `UpdateSchedule` with that role answer `ValidationException`, as Scheduler does until
    /// the new role has propagated.
    pub fn role_propagation(window: Duration) -> Rule {
        Rule::new(Kind::RolePropagation(window), "scheduler", "*")
    }

    /// A token bucket per service: `per_second` calls refill it, up to `burst`; a call that
    /// finds it empty is answered with the service's throttling error.
    pub fn rate_limit(service: &str, per_second: f64, burst: u32) -> Rule {
        Rule::new(
            Kind::RateLimit {
                per_second,
                burst: f64::from(burst),
            },
            service,
            "*",
        )
    }

    /// Apply to the first `n` matching calls only.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    /// Apply for `window` after the rule is added.
    pub fn for_duration(mut self, window: Duration) -> Rule {
        self.duration = Some(window);
        self
    }

    /// Only calls whose request body contains `text` (a queue, table or role name).
    pub fn when_body_contains(mut self, text: &str) -> Rule {
        self.body_contains = Some(text.to_string());
        self
    }

    /// Only calls of `operation` (e.g. a per-operation quota such as CloudWatch's
    /// `PutMetricAlarm` next to the service-wide one).
    pub fn on_operation(mut self, operation: &str) -> Rule {
        self.operation = operation.to_string();
        self
    }

    /// The HTTP status of an [`Rule::error`] answer.
    pub fn status(mut self, status: u16) -> Rule {
        if let Kind::Error { status: s, .. } = &mut self.kind {
            *s = status;
        }
        self
    }

    pub(crate) fn matches(&self, call: &Call) -> bool {
        (self.service == "*" || self.service == call.service)
            && (self.operation == "*" || self.operation == call.operation)
            && self
                .body_contains
                .as_deref()
                .is_none_or(|t| call.body.contains(t))
    }
}

/// A rule as installed: its budget and when it expires.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) id: u64,
    pub(crate) rule: Rule,
    pub(crate) remaining: Option<u32>,
    pub(crate) until: Option<Instant>,
    /// Token bucket state of a rate limit: tokens and last refill.
    pub(crate) bucket: (f64, Instant),
}

impl Active {
    pub(crate) fn new(id: u64, rule: Rule) -> Active {
        let now = Instant::now();
        let burst = match rule.kind {
            Kind::RateLimit { burst, .. } => burst,
            _ => 0.0,
        };
        Active {
            id,
            remaining: rule.times,
            until: rule.duration.map(|d| now + d),
            rule,
            bucket: (burst, now),
        }
    }

    pub(crate) fn live(&self, now: Instant) -> bool {
        self.remaining != Some(0) && self.until.is_none_or(|u| now < u)
    }

    /// Uses one of the rule's `times`, if it has a budget.
    pub(crate) fn spend(&mut self) {
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
        }
    }

    /// Takes a token; false when the bucket is empty.
    pub(crate) fn take_token(&mut self, now: Instant) -> bool {
        let Kind::RateLimit { per_second, burst } = self.rule.kind else {
            return true;
        };
        let (tokens, last) = self.bucket;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * per_second).min(burst);
        if refilled >= 1.0 {
            self.bucket = (refilled - 1.0, now);
            true
        } else {
            self.bucket = (refilled, now);
            false
        }
    }
}

/// The call as the proxy understood it.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) service: String,
    pub(crate) operation: String,
    pub(crate) protocol: Protocol,
    pub(crate) body: String,
}

/// The three wire protocols of the services the operator calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `X-Amz-Target` + JSON body (DynamoDB, KMS, SQS).
    Json,
    /// `Action=` form body, XML answers (SNS, IAM, CloudWatch, STS).
    Query,
    /// REST paths with JSON bodies (EventBridge Scheduler).
    RestJson,
}

/// SigV4 signing names, with CloudWatch's `monitoring` under the name people use.
pub(crate) fn canonical_service(name: &str) -> &str {
    match name {
        "monitoring" => "cloudwatch",
        other => other,
    }
}

/// The throttling code each service answers with; the SDK retries all of them.
pub(crate) fn throttling_code(service: &str) -> &'static str {
    match service {
        "sqs" => "RequestThrottled",
        "sns" | "iam" | "cloudwatch" | "sts" => "Throttling",
        _ => "ThrottlingException",
    }
}

/// Recognises a call: the service from the SigV4 credential scope, the operation from the
/// JSON `X-Amz-Target`, the Query `Action=` parameter, or the REST method and path.
pub(crate) fn recognise(
    method: &str,
    path_and_query: &str,
    authorization: Option<&str>,
    target: Option<&str>,
    body: &str,
) -> Call {
    let service = authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .map(canonical_service)
        .unwrap_or("unknown")
        .to_string();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let (operation, protocol) = if let Some(t) = target {
        let op = t.rsplit('.').next().unwrap_or(t);
        (op.to_string(), Protocol::Json)
    } else if let Some(action) = form_value(body, "Action").or_else(|| form_value(query, "Action"))
    {
        (action, Protocol::Query)
    } else {
        (rest_operation(method, path), Protocol::RestJson)
    };
    Call {
        service,
        operation,
        protocol,
        body: body.to_string(),
    }
}

/// EventBridge Scheduler's REST operations, by method and path.
fn rest_operation(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let op = match (method, segments.as_slice()) {
        ("POST", ["schedules", _]) => "CreateSchedule",
        ("PUT", ["schedules", _]) => "UpdateSchedule",
        ("GET", ["schedules", _]) => "GetSchedule",
        ("DELETE", ["schedules", _]) => "DeleteSchedule",
        ("GET", ["schedules"]) => "ListSchedules",
        ("POST", ["schedule-groups", _]) => "CreateScheduleGroup",
        ("GET", ["schedule-groups", _]) => "GetScheduleGroup",
        ("DELETE", ["schedule-groups", _]) => "DeleteScheduleGroup",
        ("GET", ["schedule-groups"]) => "ListScheduleGroups",
        ("POST", ["tags", ..]) => "TagResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        _ => return format!("{method} {path}"),
    };
    op.to_string()
}

/// One value of an `application/x-www-form-urlencoded` body or query string.
pub(crate) fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            let v = v.replace('+', " ");
            percent_decode(&v)
        })
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body and headers of an AWS error answer in `protocol`'s format, so the SDK reads `code`.
pub(crate) fn error_answer(
    protocol: Protocol,
    code: &str,
    message: &str,
) -> (Vec<(&'static str, String)>, String) {
    match protocol {
        Protocol::Json => (
            vec![
                ("content-type", "application/x-amz-json-1.0".to_string()),
                // SQS's JSON protocol is "query compatible": the SDK takes the legacy code here.
                ("x-amzn-query-error", format!("{code};Sender")),
            ],
            serde_json::json!({ "__type": code, "message": message }).to_string(),
        ),
        Protocol::RestJson => (
            vec![
                ("content-type", "application/json".to_string()),
                ("x-amzn-errortype", code.to_string()),
            ],
            serde_json::json!({ "message": message }).to_string(),
        ),
        Protocol::Query => (
            vec![("content-type", "text/xml".to_string())],
            format!(
                "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error>\
                 <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>{}</RequestId></ErrorResponse>",
                crate::random_token()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20261202/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=x";

    #[test]
    fn a_rule_narrowed_to_one_operation_leaves_the_others_alone() {
        let put = recognise("POST", "/", Some(AUTH), None, "Action=PutMetricAlarm");
        let describe = recognise("POST", "/", Some(AUTH), None, "Action=DescribeAlarms");
        let rule = Rule::rate_limit("cloudwatch", 3.0, 3).on_operation("PutMetricAlarm");
        assert!(rule.matches(&put));
        assert!(!rule.matches(&describe));
        assert!(Rule::rate_limit("cloudwatch", 9.0, 9).matches(&describe));
    }

    #[test]
    fn recognises_the_three_protocols() {
        let json = recognise(
            "POST",
            "/",
            Some(&AUTH.replace("monitoring", "dynamodb")),
            Some("DynamoDB_20120810.DescribeTable"),
            "{}",
        );
        assert_eq!(
            (json.service.as_str(), json.operation.as_str()),
            ("dynamodb", "DescribeTable")
        );
        let query = recognise(
            "POST",
            "/",
            Some(AUTH),
            None,
            "Action=PutMetricAlarm&Version=1",
        );
        assert_eq!(
            (query.service.as_str(), query.operation.as_str()),
            ("cloudwatch", "PutMetricAlarm")
        );
        assert_eq!(query.protocol, Protocol::Query);
        let rest = recognise(
            "PUT",
            "/schedules/a%2Fb?x=1",
            Some(&AUTH.replace("monitoring", "scheduler")),
            None,
            "{}",
        );
        assert_eq!(rest.operation, "UpdateSchedule");
        assert_eq!(rest.protocol, Protocol::RestJson);
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value(
                "Action=Subscribe&Endpoint=a%40b.c&Protocol=email",
                "Endpoint"
            )
            .as_deref(),
            Some("a@b.c")
        );
    }

    #[test]
    fn a_token_bucket_refills_at_its_rate() {
        let mut a = Active::new(1, Rule::rate_limit("sqs", 10.0, 2));
        let t0 = a.bucket.1;
        assert!(a.take_token(t0));
        assert!(a.take_token(t0));
        assert!(!a.take_token(t0));
        assert!(a.take_token(t0 + Duration::from_millis(110)));
    }
}
