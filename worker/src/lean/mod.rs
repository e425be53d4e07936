//! A lean client for the four hot-path calls only — `ReceiveMessage`, `DeleteMessageBatch`
//! (SQS, AWS JSON 1.0, `AmazonSQS.*`), `PutItem` and `TransactWriteItems` (DynamoDB,
//! `DynamoDB_20120810.*`) — on hyper and AWS's own `aws-sigv4` signer. Every other call goes
//! through the SDK.
//!
//! Why: a drain's CPU went mostly to the SDK's per-call machinery (orchestrator, config bag,
//! interceptors, (de)serialisation through builders), not to the calls; at one call per
//! message that machinery, not the worker, set the CPU per message. This client writes the
//! JSON straight from the item and reads back only what the worker uses.
//!
//! What it keeps from the SDK: credentials come from the SDK's provider chain (cached until
//! five minutes before they expire), the endpoint and region from the SDK's configuration of
//! each service (so `AWS_ENDPOINT_URL_*` and the settings' endpoint apply the same way), and
//! errors are classified by [`crate::error::classify_code`] from the same code, message and
//! status the SDK would have surfaced. When the configuration asks for something this client
//! does not do (FIPS or dual-stack endpoints, a partition other than `aws`), [`Lean::new`]
//! declines and the SDK serves the hot path too.

mod attr;
pub mod dynamodb;
pub mod sqs;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, ErrorClass, classify_code};

/// Credentials are fetched again this long before they expire.
const CREDENTIALS_REFRESH: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The two services, with what differs between them on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Sqs,
    DynamoDb,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Service::Sqs => "sqs",
            Service::DynamoDb => "dynamodb",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Service::Sqs => "AmazonSQS.",
            Service::DynamoDb => "DynamoDB_20120810.",
        }
    }

    /// The same bounds as the SDK clients of [`crate::config`] (a long poll is 20 s).
    fn attempt_timeout(self) -> Duration {
        match self {
            Service::Sqs => Duration::from_secs(30),
            Service::DynamoDb => Duration::from_secs(10),
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The lean client: one connection pool for both services.
pub struct Lean {
    http: Client<Https, Full<Bytes>>,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    region: String,
    sqs: http::Uri,
    dynamodb: http::Uri,
}

/// A failed call, before it becomes an [`Error`]: the service's answer is kept whole, because
/// a failed condition or a cancelled transaction carries data the worker uses.
#[derive(Debug)]
pub enum Failure {
    /// The service answered with an error.
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        body: Bytes,
    },
    /// No answer (refused, reset, timed out), or one that could not be read: as the SDK's
    /// dispatch, timeout and response errors, transient. Unusable credentials: as the SDK's
    /// construction failure, the environment's fault.
    Local { class: ErrorClass, message: String },
}

impl Failure {
    /// The error the worker's retry logic sees: the same classification as
    /// [`crate::error::classify`] gives the SDK's error for the same answer.
    pub fn into_error(self, operation: &'static str) -> Error {
        match self {
            Failure::Service {
                status,
                code,
                message,
                ..
            } => Error::Aws {
                operation,
                class: classify_code(code.as_deref(), message.as_deref(), status),
                message: format!(
                    "service error: {}: {} (HTTP {status})",
                    code.as_deref().unwrap_or("unknown"),
                    message.as_deref().unwrap_or_default()
                ),
                code,
            },
            Failure::Local { class, message } => Error::Aws {
                operation,
                class,
                code: None,
                message,
            },
        }
    }

    /// The error code of a service answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => code.as_deref(),
            Failure::Local { .. } => None,
        }
    }
}

fn local(class: ErrorClass, message: impl std::fmt::Display) -> Failure {
    Failure::Local {
        class,
        message: message.to_string(),
    }
}

impl Lean {
    /// The client for the configuration the SDK clients are built from, or `None` when that
    /// configuration needs something only the SDK does (see the module doc).
    pub fn new(sdk: &SdkConfig) -> Option<Self> {
        let region = sdk.region()?.to_string();
        if sdk.use_fips().unwrap_or(false) || sdk.use_dual_stack().unwrap_or(false) {
            return None;
        }
        let endpoint = |explicit: Option<String>, prefix: &str| -> Option<http::Uri> {
            match explicit {
                Some(url) => url.parse().ok(),
                // Only the `aws` partition's regional endpoints; anything else is the SDK's.
                None if region.starts_with("cn-")
                    || region.starts_with("us-gov-")
                    || region.starts_with("us-iso") =>
                {
                    None
                }
                None => format!("https://{prefix}.{region}.amazonaws.com/")
                    .parse()
                    .ok(),
            }
        };
        let sqs = endpoint(configured_endpoint(sdk, "SQS"), "sqs")?;
        let dynamodb = endpoint(configured_endpoint(sdk, "DynamoDB"), "dynamodb")?;
        let credentials = sdk.credentials_provider()?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = if sqs.scheme_str() == Some("http") && dynamodb.scheme_str() == Some("http") {
            // Plain HTTP endpoints (emulators on loopback): no certificates needed, and a
            // machine without a CA bundle must not send the hot path back to the SDK.
            tls.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        } else {
            tls.with_native_roots().ok()?
        };
        let https = tls.https_or_http().enable_http1().wrap_connector(http);
        Some(Self {
            http: Client::builder(TokioExecutor::new()).build(https),
            credentials,
            cached: Mutex::new(None),
            region,
            sqs,
            dynamodb,
        })
    }

    async fn credentials(&self) -> Result<Credentials, Failure> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIALS_REFRESH)
        };
        if let Ok(cached) = self.cached.lock()
            && let Some(c) = cached.as_ref()
            && fresh(c)
        {
            return Ok(c.clone());
        }
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| local(ErrorClass::Environment, format!("no credentials: {e}")))?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(c.clone());
        }
        Ok(c)
    }

    /// One signed call; the body of a 2xx answer, or the failure.
    pub async fn call(
        &self,
        service: Service,
        operation: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, Failure> {
        let credentials = self.credentials().await?;
        let uri = match service {
            Service::Sqs => &self.sqs,
            Service::DynamoDb => &self.dynamodb,
        };
        let host = match (uri.host(), uri.port()) {
            (Some(h), Some(p)) => format!("{h}:{}", p.as_u16()),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(local(ErrorClass::Environment, "endpoint without a host")),
        };
        let target = format!("{}{operation}", service.target_prefix());
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        // SQS answers with the Query protocol's error codes (`AWS.SimpleQueueService.*`, as
        // the SDK surfaces them) in `x-amzn-query-error` when asked.
        if service == Service::Sqs {
            headers.push(("x-amzn-query-mode", "true"));
        }
        let identity: Identity = credentials.into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| local(ErrorClass::Environment, format!("cannot sign: {e}")))?
            .into();
        let uri_text = uri.to_string();
        let signable = SignableRequest::new(
            "POST",
            &uri_text,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| local(ErrorClass::Environment, format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| local(ErrorClass::Environment, format!("cannot sign: {e}")))?
            .into_parts();
        let mut builder = http::Request::post(uri.clone());
        for (k, v) in &headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| local(ErrorClass::Permanent, e))?;
        instructions.apply_to_request_http1x(&mut request);

        let answer = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| local(ErrorClass::Transient, format!("dispatch failure: {e}")))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| local(ErrorClass::Transient, format!("response error: {e}")))?
                .to_bytes();
            Ok::<_, Failure>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(service.attempt_timeout(), answer)
            .await
            .map_err(|_| local(ErrorClass::Transient, "timeout: no answer in time"))??;
        if parts.status.is_success() {
            return Ok(body);
        }
        let (code, message) = error_code(&parts.headers, &body);
        Err(Failure::Service {
            status: parts.status.as_u16(),
            code,
            message,
            body,
        })
    }
}

/// The endpoint a service's SDK client takes from `sdk`, by the SDK's own rule
/// (`Builder::from(&SdkConfig)`): one set in code wins; else the service's own setting
/// (`AWS_ENDPOINT_URL_<SERVICE>`, a profile's service section), else the global one.
fn configured_endpoint(sdk: &SdkConfig, service_id: &str) -> Option<String> {
    if sdk.get_origin("endpoint_url").is_client_config() {
        return sdk.endpoint_url().map(str::to_string);
    }
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id(service_id)
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk.service_config()
        .and_then(|c| c.load_config(key))
        .or_else(|| sdk.endpoint_url().map(str::to_string))
}

/// The error code and message of a JSON protocol answer, as the SDK reads them: SQS's
/// query-compatible code from `x-amzn-query-error` first, else `__type` (or the
/// `x-amzn-errortype` header) without its namespace (`...#Code`) or URI suffix (`Code:...`).
pub fn error_code(headers: &http::HeaderMap, body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let (kind, message) = answer.map(|a| (a.kind, a.message)).unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let query = header("x-amzn-query-error")
        .and_then(|v| v.split(';').next())
        .filter(|c| !c.is_empty());
    let sanitize = |raw: &str| {
        let raw = raw.split(':').next().unwrap_or(raw);
        raw.rsplit('#').next().unwrap_or(raw).to_string()
    };
    let code = query
        .map(str::to_string)
        .or_else(|| header("x-amzn-errortype").map(sanitize))
        .or_else(|| kind.as_deref().map(sanitize));
    (code.filter(|c| !c.is_empty()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_as_the_sdk_reads_them() {
        let none = http::HeaderMap::new();
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#;
        assert_eq!(
            error_code(&none, body),
            (
                Some("ConditionalCheckFailedException".into()),
                Some("The conditional request failed".into())
            )
        );
        let mut sqs = http::HeaderMap::new();
        sqs.insert(
            "x-amzn-query-error",
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
                .parse()
                .unwrap(),
        );
        let body = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#;
        assert_eq!(
            error_code(&sqs, body).0.as_deref(),
            Some("AWS.SimpleQueueService.NonExistentQueue")
        );
        assert_eq!(
            error_code(&none, body).0.as_deref(),
            Some("QueueDoesNotExist")
        );
        let body =
            br#"{"__type":"ThrottlingException:http://internal.amazon.com/","Message":"slow"}"#;
        assert_eq!(
            error_code(&none, body),
            (Some("ThrottlingException".into()), Some("slow".into()))
        );
        assert_eq!(error_code(&none, b"<html>bad gateway</html>"), (None, None));
    }

    #[test]
    fn failures_classify_as_the_sdk_errors_do() {
        let answer = |status, code: &str| Failure::Service {
            status,
            code: Some(code.into()),
            message: None,
            body: Bytes::new(),
        };
        let class = |f: Failure| f.into_error("t").class();
        assert_eq!(
            class(answer(400, "ThrottlingException")),
            Some(ErrorClass::Transient)
        );
        assert_eq!(
            class(answer(400, "AccessDeniedException")),
            Some(ErrorClass::Environment)
        );
        assert_eq!(
            class(answer(400, "ValidationException")),
            Some(ErrorClass::Permanent)
        );
        assert_eq!(class(answer(502, "whatever")), Some(ErrorClass::Transient));
        assert_eq!(
            class(local(ErrorClass::Transient, "refused")),
            Some(ErrorClass::Transient)
        );
    }
}
