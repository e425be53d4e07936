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

    /// The finalizer wrapper around apply/cleanup (adding/removing the finalizer or a branch).
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// A cluster object with a child's name that this pipeline does not control; it is
    /// never taken over.
    #[error("{resource} already exists and is not controlled by this pipeline")]
    ChildConflict { resource: String },

    /// A status write was refused because the pipeline changed since the pass read it
    /// (the watch cache lagged): the pass stops and starts again from the newer copy.
    #[error("the status of {0} changed since this pass read it")]
    StaleStatus(String),

    /// This replica lost the leader-election Lease; it must stop reconciling.
    #[error("lost the leader-election Lease {0}")]
    LeaseLost(String),

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

    /// A resource named in `spec.adopt` cannot be taken over as it is (a key schema that
    /// cannot change in place, a resource that does not exist); nothing was touched.
    #[error("{resource} cannot be adopted: {attribute}: {message}")]
    AdoptionRefused {
        resource: String,
        attribute: String,
        message: String,
    },

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

impl Error {
    /// The `error` label of `controller_runtime_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(_) => "kube",
            Error::Serialization(_) | Error::Yaml(_) => "serialization",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Io(_) => "io",
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::LeaseLost(_) => "lease",
            Error::StaleStatus(_) => "stale",
            Error::ChildConflict { .. } => "conflict",
            Error::Aws { .. } | Error::AwsUnexpected { .. } | Error::AwsDependency { .. } => "aws",
            Error::AwsConflict { .. } | Error::AdoptionRefused { .. } => "conflict",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
