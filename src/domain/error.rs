//! The one application error type. Every layer returns it; each transport maps
//! it exactly once (gRPC `Status`, HTTP JSON body, WebSocket error frame).

/// A failure with one of a small fixed set of kinds. The message of every kind
/// but `Internal` is written for the person who made the request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A key (a tool call id, an idempotency key) already names something else.
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A resume cursor older than the oldest event kept (retention removed
    /// the events after it): the client must resync without a cursor.
    #[error(
        "cursor {after} has expired: events up to seq {} were removed from the log; the oldest kept is {oldest_seq}. Resubscribe without a cursor",
        oldest_seq - 1
    )]
    CursorExpired { after: u64, oldest_seq: u64 },
    /// Unexpected: logged with its cause chain, shown to clients as "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::FailedPrecondition(msg.into())
    }
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// A stable snake_case code for JSON clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::AlreadyExists(_) => "already_exists",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::ResourceExhausted(_) => "resource_exhausted",
            Self::Unavailable(_) => "unavailable",
            Self::CursorExpired { .. } => "cursor_expired",
            Self::Internal(_) => "internal",
        }
    }

    /// The message a client may see; internal causes stay in the log.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    /// Logs an internal error with its whole cause chain; other kinds are the
    /// client's business and are not logged as errors.
    pub fn log_if_internal(&self) {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "internal error");
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
