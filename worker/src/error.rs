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
    /// Anything else (access denied, missing table, validation): retrying at once will not
    /// help; the message goes back to the queue with a visibility backoff.
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
        matches!(
            self,
            Error::Aws {
                class: ErrorClass::Transient,
                ..
            }
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

pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Transient
        }
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let throttled = err
                .code()
                .is_some_and(|c| TRANSIENT_CODES.iter().any(|t| c.ends_with(t)));
            if throttled || status >= 500 || status == 429 {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            }
        }
        _ => ErrorClass::Permanent,
    }
}

/// True when the failure is throttling specifically (counted apart from errors).
pub fn is_throttle_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.contains("Throttl") || c.contains("ThroughputExceeded") || c.contains("LimitExceeded")
    })
}
