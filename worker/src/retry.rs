//! Retrying transient backend failures with capped exponential backoff and full jitter.
//!
//! The worker's SDK clients make one attempt per call, so this is the only retry policy:
//! every retried failure is visible here and counted as a throttle.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

const BASE_MS: u64 = 50;
const CAP_MS: u64 = 5_000;
/// Environment errors (IAM propagating, a key being enabled) clear in minutes, not
/// milliseconds: retry them more slowly.
const ENVIRONMENT_BASE_MS: u64 = 500;
const ENVIRONMENT_CAP_MS: u64 = 15_000;

/// Full-jitter backoff: uniform in `[0, min(cap, base * 2^attempt)]`, so replicas hitting the
/// same outage do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_MS.saturating_mul(1u64 << attempt.min(20)).min(CAP_MS);
    Duration::from_millis(rand::random_range(0..=ceiling))
}

fn environment_backoff(attempt: u32) -> Duration {
    let ceiling = ENVIRONMENT_BASE_MS
        .saturating_mul(1u64 << attempt.min(20))
        .min(ENVIRONMENT_CAP_MS);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

/// Calls `f` until it succeeds, fails permanently, or `abandon` fires; transient failures
/// (throttling, 5xx, timeouts, refused connections) and environment failures (access denied,
/// missing resource, KMS, credentials, clock skew) are retried without limit, because a
/// backend that is down or not yet set up must not turn valid work into failures. While an
/// environment failure lasts the service is marked failing (not ready, receiving paused).
pub async fn with_backoff<T, F, Fut>(
    metrics: &Metrics,
    abandon: &CancellationToken,
    service: &'static str,
    operation: &'static str,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        metrics.call(service, operation);
        let err = match f().await {
            Ok(v) => {
                metrics.environment_recovered(service);
                return Ok(v);
            }
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        let delay = if err.is_transient() {
            metrics.throttled(service, operation);
            backoff(attempt)
        } else {
            metrics.environment_failed(service, operation);
            environment_backoff(attempt)
        };
        if attempt.is_multiple_of(20) {
            tracing::warn!(service, operation, attempt, error = %err, "backend call failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abandon.cancelled() => return Err(err),
        }
        if abandon.is_cancelled() {
            return Err(err);
        }
        attempt = attempt.saturating_add(1);
    }
}

/// True when `err` ended a retry loop because the worker is giving up on in-flight work.
pub fn abandoned(err: &Error, abandon: &CancellationToken) -> bool {
    err.is_retryable() && abandon.is_cancelled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> Error {
        Error::Aws {
            operation: "t",
            class: ErrorClass::Transient,
            code: Some("ThrottlingException".into()),
            message: "slow down".into(),
        }
    }

    #[test]
    fn backoff_is_capped() {
        for attempt in [0, 1, 5, 30, u32::MAX] {
            assert!(backoff(attempt) <= Duration::from_millis(CAP_MS));
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_counted() {
        let metrics = Metrics::new();
        let calls = AtomicU32::new(0);
        let out = with_backoff(
            &metrics,
            &CancellationToken::new(),
            "dynamodb",
            "PutItem",
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient())
                } else {
                    Ok(7)
                }
            },
        )
        .await;
        assert_eq!(out.ok(), Some(7));
        let r = metrics.report();
        assert_eq!((r.throttles, r.dynamodb_calls), (3, 4));
    }

    #[tokio::test]
    async fn permanent_errors_and_abandon_stop_the_loop() {
        let metrics = Metrics::new();
        let permanent = || async {
            Err::<(), _>(Error::Aws {
                operation: "p",
                class: ErrorClass::Permanent,
                code: None,
                message: "no".into(),
            })
        };
        let out = with_backoff(
            &metrics,
            &CancellationToken::new(),
            "sqs",
            "SendMessage",
            permanent,
        )
        .await;
        assert!(out.is_err());
        assert_eq!(metrics.report().throttles, 0);
        let abandon = CancellationToken::new();
        abandon.cancel();
        let out = with_backoff(&metrics, &abandon, "sqs", "SendMessage", || async {
            Err::<(), _>(transient())
        })
        .await;
        assert!(out.is_err_and(|e| abandoned(&e, &abandon)));
    }

    #[tokio::test]
    async fn environment_errors_are_retried_and_mark_the_service_failing() {
        let metrics = Metrics::new();
        let calls = AtomicU32::new(0);
        let seen_failing = std::sync::atomic::AtomicBool::new(false);
        let out = with_backoff(
            &metrics,
            &CancellationToken::new(),
            "dynamodb",
            "PutItem",
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 1 {
                    Err(Error::Aws {
                        operation: "p",
                        class: ErrorClass::Environment,
                        code: Some("AccessDeniedException".into()),
                        message: "IAM is propagating".into(),
                    })
                } else {
                    seen_failing.store(metrics.environment_failing("dynamodb"), Ordering::SeqCst);
                    Ok(1)
                }
            },
        )
        .await;
        assert_eq!(out.ok(), Some(1));
        assert!(
            seen_failing.load(Ordering::SeqCst),
            "marked failing while it lasted"
        );
        assert!(!metrics.any_environment_failing(), "cleared by the success");
        assert_eq!(metrics.report().environment_errors, 1);
    }
}
