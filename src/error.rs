//! The operator's one error type.

/// Everything that can go wrong in the operator process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),

    #[error("YAML error: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    // AWS variants: built and classified in src/aws/error.rs (`aws_code`, `is_retryable`,
    // `is_conflict`, `is_not_found` are implemented there).
    /// An AWS API call failed.
    #[error("{service} {operation} failed: {}: {message}", code.as_deref().unwrap_or("no error code"))]
    Aws {
        service: &'static str,
        operation: &'static str,
        code: Option<String>,
        message: String,
        status: Option<u16>,
        /// Throttling, 5xx, timeouts and connection failures.
        retryable: bool,
    },

    /// An AWS resource with our name belongs to someone else; it is never taken over.
    #[error("{resource} already exists and is not owned by this pipeline: {reason}")]
    AwsConflict { resource: String, reason: String },

    /// An AWS part needs an identifier an earlier part has not produced yet.
    #[error("{part} needs {missing}, which is not known yet")]
    AwsDependency {
        part: &'static str,
        missing: &'static str,
    },

    /// AWS answered with something we cannot interpret (e.g. an unparsable policy).
    #[error("unexpected answer from {service}: {message}")]
    AwsUnexpected {
        service: &'static str,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
