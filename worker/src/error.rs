//! The worker's one error type, and the classification of AWS errors that drives retries.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::contract::SettingsError;

/// How the worker reacts to a failed AWS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, refused connections: the backend is slow or briefly down,
    /// so retry in-process with backoff; never a reason to dead-letter a message.
    Transient,
    /// The environment refuses the call: access denied (normal for minutes while IAM
    /// propagates), a missing queue or table, KMS key problems, expired or invalid credentials,
    /// clock skew. Not the message's fault: keep it under its heartbeat and retry with a longer
    /// backoff, stop receiving, report not-ready; never dead-letter it.
    Environment,
    /// Anything else (validation of one request): retrying at once will not help; the
    /// message goes back to the queue with a visibility backoff.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{operation} failed ({class:?}): {message}")]
    Aws {
        operation: &'static str,
        class: ErrorClass,
        /// The service's error code, when it answered with one (e.g. `ThrottlingException`).
        code: Option<String>,
        message: String,
    },
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error("worker task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an SDK error, classifying it for the retry logic.
    pub fn aws<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Error::Aws {
            operation,
            class: classify(&err),
            code: err.code().map(str::to_string),
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == Some(ErrorClass::Transient)
    }

    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Error::Aws { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// Transient or environment: retried in-process, never a reason to give up on a message.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.class(),
            Some(ErrorClass::Transient | ErrorClass::Environment)
        )
    }

    /// A low-cardinality label for the failure metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Settings(_) => "settings",
            Error::Aws {
                class: ErrorClass::Transient,
                ..
            } => "aws_transient",
            Error::Aws {
                class: ErrorClass::Environment,
                ..
            } => "aws_environment",
            Error::Aws { .. } => "aws_permanent",
            Error::Http { .. } => "http",
            Error::Task(_) => "task",
        }
    }
}

/// Error codes that mean "slow down" or "try again" on SQS and DynamoDB.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "LimitExceededException",
    "TransactionConflictException",
    "ServiceUnavailable",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "KmsThrottled",
    "KMS.ThrottlingException",
];

/// Error codes (SQS, DynamoDB, STS, KMS as they surface through both) that mean the
/// environment, not the request, is at fault.
const ENVIRONMENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "RequestTimeTooSkewed",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "ResourceNotFoundException",
    "QueueDoesNotExist",
    "NonExistentQueue",
    "AWS.SimpleQueueService.NonExistentQueue",
    "TableNotFoundException",
    "ResourceInUseException",
    "OptInRequired",
];

pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Transient
        }
        // No credentials could be resolved, or the request could not be signed: the
        // environment's fault, whatever the message.
        SdkError::ConstructionFailure(_) => ErrorClass::Environment,
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            classify_code(err.code(), err.message(), status)
        }
        _ => ErrorClass::Permanent,
    }
}

/// The classification of a service's answer, from its code, message and HTTP status.
pub fn classify_code(code: Option<&str>, message: Option<&str>, status: u16) -> ErrorClass {
    let code = code.unwrap_or_default();
    if TRANSIENT_CODES.iter().any(|t| code.ends_with(t)) || status >= 500 || status == 429 {
        return ErrorClass::Transient;
    }
    // KMS errors reach SQS as `KMS.*` codes and DynamoDB as `KMS*`/`Kms*` codes, or as a
    // validation error naming the key.
    let kms = code.starts_with("KMS") || code.starts_with("Kms");
    let kms_message = message.is_some_and(|m| m.contains("KMS") || m.contains("kms:"));
    if kms
        || ENVIRONMENT_CODES.contains(&code)
        || (code == "ValidationException" && kms_message)
        || status == 401
        || status == 403
    {
        return ErrorClass::Environment;
    }
    ErrorClass::Permanent
}

/// True when the failure is throttling specifically (counted apart from errors).
pub fn is_throttle_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.contains("Throttl") || c.contains("ThroughputExceeded") || c.contains("LimitExceeded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    /// An SDK error as the SDK builds it from a service's answer (mocked: error paths only).
    fn answer(status: u16, code: &str, message: &str) -> SdkError<PutItemError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(
            StatusCode::try_from(status).expect("status"),
            SdkBody::empty(),
        );
        SdkError::service_error(PutItemError::generic(meta), raw)
    }

    #[test]
    fn environment_errors_are_never_permanent() {
        for (status, code, message) in [
            (
                400,
                "AccessDeniedException",
                "not authorized to perform: dynamodb:PutItem",
            ),
            (403, "AccessDenied", "Access to the resource is denied"),
            (
                400,
                "ResourceNotFoundException",
                "Requested resource not found",
            ),
            (
                400,
                "AWS.SimpleQueueService.NonExistentQueue",
                "queue does not exist",
            ),
            (400, "KMS.DisabledException", "key is disabled"),
            (400, "KMSAccessDeniedException", "kms:Decrypt denied"),
            (400, "KmsAccessDenied", "x"),
            (400, "ValidationException", "KMS key access denied error"),
            (
                400,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ),
            (403, "InvalidClientTokenId", "x"),
            (400, "UnrecognizedClientException", "x"),
            (
                400,
                "InvalidSignatureException",
                "Signature expired: 20261120T000000Z is now earlier than ...",
            ),
            (403, "RequestTimeTooSkewed", "x"),
            (403, "SomethingNew", "x"),
        ] {
            assert_eq!(
                classify(&answer(status, code, message)),
                ErrorClass::Environment,
                "{code}"
            );
        }
    }

    #[test]
    fn throttling_and_5xx_are_transient_and_validation_permanent() {
        for (status, code) in [
            (400, "ThrottlingException"),
            (400, "ProvisionedThroughputExceededException"),
            (400, "TransactionConflictException"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (429, "x"),
        ] {
            assert_eq!(
                classify(&answer(status, code, "")),
                ErrorClass::Transient,
                "{code}"
            );
        }
        assert_eq!(
            classify(&answer(
                400,
                "ValidationException",
                "Item size has exceeded the maximum allowed size"
            )),
            ErrorClass::Permanent
        );
    }
}
