//! Engine errors: what went wrong, in words a person can act on.
//!
//! The engine knows nothing of gRPC; the transport maps each variant to a
//! status code (see `flight::status`).

use datafusion::error::DataFusionError;

/// The result type of every engine call.
pub type EngineResult<T> = Result<T, EngineError>;

/// Everything that can go wrong between a SQL string and its result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL text does not parse.
    #[error("SQL syntax error: {0}")]
    Syntax(String),

    /// The statement parses but cannot be planned (unknown column, type mismatch, ...).
    #[error("cannot plan the statement: {0}")]
    Plan(String),

    /// A table the statement names does not exist.
    #[error("table '{name}' not found; list the tables with `\\d` (tarn sql) or `SHOW TABLES`")]
    TableNotFound {
        /// The name as written in the statement.
        name: String,
    },

    /// A ticket names a result that was already fetched, cancelled or expired.
    #[error(
        "no pending result with this ticket: it was already fetched, cancelled, or expired after {ttl_secs}s; run the query again"
    )]
    ResultNotFound {
        /// How long an unfetched result is kept.
        ttl_secs: u64,
    },

    /// A prepared statement handle is unknown (closed, expired, or from another server).
    #[error(
        "no prepared statement with this handle: it was closed, expired, or created on another server; prepare it again"
    )]
    PreparedStatementNotFound,

    /// Bound parameters do not fit the statement.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),

    /// A statement was sent down the wrong path (a query as an update, ...).
    #[error("{0}")]
    WrongStatementKind(String),

    /// The statement uses a feature Tarn does not support.
    #[error("not supported: {0}")]
    NotSupported(String),

    /// The statement would create something that already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),

    /// Other writers kept the statement from committing; trying again may work.
    #[error("{0}")]
    Conflict(String),

    /// The statement names a location outside every declared store.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The statement is larger or more deeply nested than the server accepts.
    #[error("statement too large: {0}")]
    LimitExceeded(String),

    /// The query ran out of a resource (memory, disk).
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),

    /// The query was cancelled.
    #[error("the query was cancelled")]
    Cancelled,

    /// Reading the data failed (unreadable or corrupt file, I/O error, ...).
    #[error("execution failed: {0}")]
    Execution(String),

    /// A bug in Tarn.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::runtime::TaskFailure> for EngineError {
    fn from(failure: crate::runtime::TaskFailure) -> Self {
        match failure {
            crate::runtime::TaskFailure::Cancelled => Self::Cancelled,
            crate::runtime::TaskFailure::Panicked(message) => Self::Execution(format!(
                "the engine failed while running the statement ({message}); a file it reads is probably corrupt"
            )),
        }
    }
}

impl EngineError {
    /// Classifies a DataFusion error raised while planning a statement.
    pub fn from_planning(err: DataFusionError) -> Self {
        match err.find_root() {
            DataFusionError::SQL(parse, _) => Self::Syntax(parse.to_string()),
            DataFusionError::Plan(msg) => Self::Plan(msg.clone()),
            DataFusionError::SchemaError(e, _) => Self::Plan(e.to_string()),
            DataFusionError::NotImplemented(msg) => Self::NotSupported(msg.clone()),
            DataFusionError::Configuration(msg) => Self::Plan(msg.clone()),
            _ => Self::from_execution(err),
        }
    }

    /// Classifies a DataFusion error raised while executing a statement.
    pub fn from_execution(err: DataFusionError) -> Self {
        let root = err.find_root();
        match root {
            DataFusionError::ResourcesExhausted(msg) => Self::ResourcesExhausted(msg.clone()),
            DataFusionError::NotImplemented(msg) => Self::NotSupported(msg.clone()),
            DataFusionError::SQL(parse, _) => Self::Syntax(parse.to_string()),
            DataFusionError::Plan(msg) => Self::Plan(msg.clone()),
            DataFusionError::SchemaError(e, _) => Self::Plan(e.to_string()),
            DataFusionError::Internal(msg) => Self::Internal(msg.clone()),
            // Keep the whole chain: context such as the file name sits in the outer layers.
            _ => Self::Execution(strip_prefix(&err.to_string())),
        }
    }
}

/// DataFusion's messages end in a "This issue was likely caused by a bug in
/// DataFusion's code" footer for internal errors only; other prefixes are
/// informative, so only whitespace is normalised.
fn strip_prefix(msg: &str) -> String {
    msg.trim().to_string()
}
