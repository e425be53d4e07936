//! Classifying AWS errors into the crate's error: the AWS error code for the condition
//! message, whether a retry can help, whether the resource is missing or someone else's.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes AWS uses for throttling across the services we call.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "LimitExceededException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
    "EC2ThrottledException",
    // SQS refuses a queue name for 60 s after its deletion; waiting is the fix.
    "AWS.SimpleQueueService.QueueDeletedRecently",
    "QueueDeletedRecently",
    // IAM and DynamoDB answer this while a previous change is still applying.
    "ConcurrentModification",
    "ConcurrentModificationException",
    "ResourceInUseException",
];

/// Error codes that no retry fixes: missing permissions or credentials, a request AWS
/// refuses, an account quota. A part failing with one stalls the pipeline (`Stalled=True`)
/// until a person acts. The Argo CD health check (`gitops/argocd/.../health.lua`) keeps the
/// same list, checked by `tests/health_lua.rs`. `LimitExceededException` is not here: DynamoDB
/// and KMS use it for request rates, which pass.
pub const TERMINAL_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "AuthorizationErrorException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "KMSAccessDeniedException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidParameterException",
    "ValidationException",
    "ValidationError",
    "LimitExceeded",
    "OverLimit",
];

/// Error codes that mean "this resource does not exist" across the services we call.
const NOT_FOUND_CODES: &[&str] = &[
    "NotFoundException",
    "ResourceNotFoundException",
    "ResourceNotFound",
    "NotFound",
    "NoSuchEntity",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "TableNotFoundException",
];

pub use crate::error::Error;

/// Builds an [`Error::Aws`] from any SDK error, classifying it once.
pub fn api<E>(
    service: &'static str,
    operation: &'static str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    move |err| {
        let code = err.code().map(str::to_string);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let message = err
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| describe_chain(&err));
        let transport = matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        );
        let retryable = transport
            || status.is_some_and(|s| s >= 500 || s == 429)
            || code
                .as_deref()
                .is_some_and(|c| THROTTLING_CODES.contains(&c));
        Error::Aws {
            service,
            operation,
            code,
            message,
            status,
            retryable,
        }
    }
}

pub(crate) fn unexpected(service: &'static str, message: impl Into<String>) -> Error {
    Error::AwsUnexpected {
        service,
        message: message.into(),
    }
}

impl Error {
    /// The AWS error code, for condition messages and metrics.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Throttling, 5xx and connection failures: back off and try again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Aws {
                retryable: true,
                ..
            }
        )
    }

    /// AWS asked us to wait: a request quota, DynamoDB's limit on tables being created at
    /// once (`LimitExceededException`), a change still applying, a queue name not free yet.
    /// Nothing is wrong with the pipeline; the pass is tried again after a backoff, and no
    /// Warning is raised, since at 1,000 pipelines some are always waiting on a quota.
    pub fn asks_to_wait(&self) -> bool {
        self.aws_code()
            .is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// AWS refused in a way no retry fixes (see [`TERMINAL_CODES`]).
    pub fn is_terminal(&self) -> bool {
        self.aws_code().is_some_and(|c| TERMINAL_CODES.contains(&c))
    }

    /// A resource owned by someone else; retrying cannot fix it, a human must.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::AwsConflict { .. })
    }

    /// AWS says the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.aws_code()
            .is_some_and(|c| NOT_FOUND_CODES.contains(&c))
    }
}

/// Connection errors hide their cause a few levels down; show it all.
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    fn api(code: Option<&str>, status: Option<u16>, retryable: bool) -> Error {
        Error::Aws {
            service: "sqs",
            operation: "GetQueueUrl",
            code: code.map(str::to_string),
            message: "m".into(),
            status,
            retryable,
        }
    }

    #[test]
    fn classification() {
        let nf = api(
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            Some(400),
            false,
        );
        assert!(nf.is_not_found());
        assert!(!nf.is_retryable());
        assert_eq!(
            nf.aws_code(),
            Some("AWS.SimpleQueueService.NonExistentQueue")
        );
        let conflict = Error::AwsConflict {
            resource: "SQS queue q".into(),
            reason: "owned by x".into(),
        };
        assert!(conflict.is_conflict());
        assert!(conflict.to_string().contains("SQS queue q"));
        assert!(api(None, Some(503), true).is_retryable());
    }

    fn classify(status: u16, code: Option<&str>) -> Error {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let mut meta = ErrorMetadata::builder().message("m");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let response = HttpResponse::new(
            StatusCode::try_from(status).expect("status"),
            SdkBody::empty(),
        );
        let err: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::service_error(meta.build(), response);
        super::api("SQS", "GetQueueUrl")(err)
    }

    #[test]
    fn sdk_errors_are_classified() {
        assert!(classify(503, Some("ServiceUnavailable")).is_retryable());
        assert!(classify(500, None).is_retryable());
        let throttled = classify(400, Some("ThrottlingException"));
        assert!(throttled.is_retryable());
        assert_eq!(throttled.aws_code(), Some("ThrottlingException"));
        let denied = classify(400, Some("AccessDenied"));
        assert!(!denied.is_retryable() && !denied.is_not_found() && !denied.is_conflict());
        assert!(classify(400, Some("AWS.SimpleQueueService.NonExistentQueue")).is_not_found());
        let timeout: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::timeout_error("attempt timed out");
        assert!(super::api("SQS", "GetQueueUrl")(timeout).is_retryable());
    }
}
