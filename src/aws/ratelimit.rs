//! Client-side rate limits: a token bucket per service, and per operation where AWS's
//! default quota for that operation is lower than the service's, waited on before each
//! request leaves the process. At 1,000 pipelines a resync or a restart wave would otherwise
//! go above quotas that are shared with the rest of the account (CloudWatch's
//! `DescribeAlarms` serves every dashboard and console user too; IAM's cannot be raised).
//!
//! The wait happens in the HTTP layer of each service's client, so it also paces the SDK's
//! own retries. Throttling that still happens (another tenant of the account used the quota)
//! is handled by the SDK's adaptive retry, whose client-side limiter is per service as well:
//! one throttled service never slows the others.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Steady rate and burst of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Buckets by service (`kms`, `sqs`, `dynamodb`, `sns`, `cloudwatch`, `scheduler`, `iam`,
/// `sts`) and optionally operation (`cloudwatch:PutMetricAlarm`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    rates: BTreeMap<String, Rate>,
}

/// Below AWS's default quotas, with room left for the rest of the account: CloudWatch
/// `DescribeAlarms` 9/s and `PutMetricAlarm`/`DeleteAlarms` 3/s; KMS management calls
/// (every key and alias write the operator makes: `CreateKey`, `CreateAlias`, `TagResource`,
/// rotation, policy, deletion) 5/s each; IAM's account-wide control plane; Scheduler and SNS
/// topic calls in the tens per second.
const DEFAULTS: &[(&str, f64, u32)] = &[
    ("kms", 20.0, 20),
    ("kms:CreateKey", 4.0, 4),
    ("kms:CreateAlias", 4.0, 4),
    ("kms:DeleteAlias", 4.0, 4),
    ("kms:TagResource", 4.0, 4),
    ("kms:EnableKey", 4.0, 4),
    ("kms:CancelKeyDeletion", 4.0, 4),
    ("kms:ScheduleKeyDeletion", 4.0, 4),
    ("kms:PutKeyPolicy", 4.0, 4),
    ("kms:EnableKeyRotation", 4.0, 4),
    ("kms:DisableKeyRotation", 4.0, 4),
    ("sqs", 50.0, 50),
    ("dynamodb", 20.0, 20),
    ("sns", 20.0, 20),
    ("cloudwatch", 8.0, 8),
    ("cloudwatch:PutMetricAlarm", 2.5, 3),
    ("cloudwatch:DeleteAlarms", 2.5, 3),
    ("scheduler", 20.0, 20),
    ("iam", 10.0, 10),
    ("sts", 10.0, 10),
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rates: DEFAULTS
                .iter()
                .map(|(key, per_second, burst)| {
                    (
                        key.to_string(),
                        Rate {
                            per_second: *per_second,
                            burst: *burst,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Limits {
    /// No bucket at all.
    pub fn none() -> Self {
        Limits {
            rates: BTreeMap::new(),
        }
    }

    /// The defaults overridden by `KEY=RATE[/BURST]` entries, e.g. `cloudwatch=5`,
    /// `cloudwatch:DescribeAlarms=4/2`. A rate of 0 removes the bucket (no limit).
    pub fn with_overrides<'a>(
        mut self,
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected SERVICE[:OPERATION]=RATE[/BURST]"))?;
            let (service, _) = key.split_once(':').unwrap_or((key, ""));
            if !DEFAULTS.iter().any(|(k, ..)| *k == service) {
                return Err(format!("`{entry}`: unknown service `{service}`"));
            }
            let (rate, burst) = value.split_once('/').unwrap_or((value, ""));
            let per_second: f64 = rate
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                .ok_or_else(|| format!("`{entry}`: rate `{rate}` is not a number ≥ 0"))?;
            if per_second == 0.0 {
                self.rates.remove(key);
                continue;
            }
            let burst =
                match burst {
                    "" => (per_second.ceil() as u32).max(1),
                    b => b.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                        format!("`{entry}`: burst `{b}` is not a whole number > 0")
                    })?,
                };
            self.rates
                .insert(key.to_string(), Rate { per_second, burst });
        }
        Ok(self)
    }

    /// The bucket sizes in effect, for the start-up log.
    pub fn rates(&self) -> &BTreeMap<String, Rate> {
        &self.rates
    }

    /// The buckets of one service's client.
    pub fn buckets(&self, service: &str) -> Buckets {
        let prefix = format!("{service}:");
        let bucket = |rate: &Rate| Arc::new(RateLimiter::direct(quota(*rate)));
        Buckets {
            service: self.rates.get(service).map(bucket),
            operations: self
                .rates
                .iter()
                .filter_map(|(k, r)| Some((k.strip_prefix(&prefix)?.to_string(), bucket(r))))
                .collect(),
        }
    }
}

fn quota(rate: Rate) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate.per_second);
    Quota::with_period(period)
        .expect("a positive rate has a non-zero period")
        .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN))
}

/// One service's buckets: its own, and those of its operations with lower quotas.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    service: Option<Arc<DefaultDirectRateLimiter>>,
    operations: BTreeMap<String, Arc<DefaultDirectRateLimiter>>,
}

impl Buckets {
    /// Waits until a call of `operation` may go out.
    pub async fn acquire(&self, operation: Option<&str>) {
        if let Some(bucket) = operation.and_then(|op| self.operations.get(op)) {
            bucket.until_ready().await;
        }
        if let Some(bucket) = &self.service {
            bucket.until_ready().await;
        }
    }
}

/// The operation a request belongs to, put on the request by [`OperationTag`] so the HTTP
/// layer can pick its bucket.
#[derive(Clone, Debug)]
struct Operation(String);

/// Tags each outgoing request with its operation name.
#[derive(Debug)]
pub struct OperationTag;

impl Intercept for OperationTag {
    fn name(&self) -> &'static str {
        "OperationTag"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let operation = Operation(metadata.name().to_string());
            context.request_mut().add_extension(operation);
        }
        Ok(())
    }
}

/// The SDK's own default client (hyper 1, rustls with aws-lc, proxy from the environment),
/// built here because `SdkConfig` holds no client unless one was set, and ours must wrap it.
pub fn default_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// An HTTP client that waits for its service's buckets before each request.
#[derive(Debug)]
pub struct Paced {
    inner: SharedHttpClient,
    buckets: Buckets,
}

impl Paced {
    pub fn wrap(inner: SharedHttpClient, buckets: Buckets) -> SharedHttpClient {
        SharedHttpClient::new(Paced { inner, buckets })
    }
}

impl HttpClient for Paced {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector {
            inner: self.inner.http_connector(settings, components),
            buckets: self.buckets.clone(),
        })
    }
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    buckets: Buckets,
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let buckets = self.buckets.clone();
        HttpConnectorFuture::new(async move {
            let operation = request.extension::<Operation>().map(|o| o.0.clone());
            buckets.acquire(operation.as_deref()).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_add_and_remove_buckets() {
        let limits = Limits::default()
            .with_overrides(["cloudwatch=5", "cloudwatch:DescribeAlarms=4/2", "sqs=0"])
            .unwrap();
        let rates = limits.rates();
        assert_eq!(
            rates["cloudwatch"],
            Rate {
                per_second: 5.0,
                burst: 5
            }
        );
        assert_eq!(
            rates["cloudwatch:DescribeAlarms"],
            Rate {
                per_second: 4.0,
                burst: 2
            }
        );
        assert!(!rates.contains_key("sqs"));
        assert_eq!(rates["kms"], Limits::default().rates()["kms"]);
    }

    #[test]
    fn bad_entries_name_the_entry() {
        for (entry, says) in [
            ("cloudwatch", "expected SERVICE"),
            ("lambda=3", "unknown service `lambda`"),
            ("sqs=fast", "rate `fast`"),
            ("sqs=-1", "rate `-1`"),
            ("sqs=3/0", "burst `0`"),
        ] {
            let err = Limits::default().with_overrides([entry]).unwrap_err();
            assert!(err.contains(says), "{entry}: {err}");
        }
    }

    #[test]
    fn defaults_stay_under_the_published_cloudwatch_quotas() {
        let rates = Limits::default().rates().clone();
        assert!(rates["cloudwatch"].per_second < 9.0);
        assert!(rates["cloudwatch:PutMetricAlarm"].per_second < 3.0);
    }

    // governor keeps real time, so this waits about two seconds.
    #[tokio::test]
    async fn a_bucket_paces_calls_after_its_burst() {
        let limits = Limits::default()
            .with_overrides(["sts=2/2", "sts:GetCallerIdentity=1/1"])
            .unwrap();
        let buckets = limits.buckets("sts");
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            buckets.acquire(Some("GetCallerIdentity")).await;
        }
        // One per second for the operation: the 2nd and 3rd calls wait a second each.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
        let other = tokio::time::Instant::now();
        buckets.acquire(Some("AssumeRole")).await;
        assert!(
            other.elapsed() < Duration::from_millis(900),
            "{:?}",
            other.elapsed()
        );
    }
}
