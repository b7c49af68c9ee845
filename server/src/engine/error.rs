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

    /// The lake serves no tables (asked for with `SHOW TABLES`), and why.
    #[error(
        "the lake serves no tables: {0}. Check the location, the endpoint and the credentials (the server's log has the details), then restart the server"
    )]
    EmptyLake(String),

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

    /// A user, role or token the statement names does not exist.
    #[error("{0}")]
    NoSuchObject(String),

    /// The statement is refused in the server's current state (it would
    /// remove the last admin, ...).
    #[error("{0}")]
    Refused(String),

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

    /// The query was cancelled: by whom, or why.
    #[error("{0}")]
    Cancelled(String),

    /// The statement ran longer than its timeout.
    #[error("{0}")]
    TimedOut(String),

    /// The statement failed on the data it met (a cast, a parse, a function
    /// argument): the statement, not the server, needs changing.
    #[error("execution failed: {0}")]
    Execution(String),

    /// Arithmetic left its range: division by zero, overflow.
    #[error("out of range: {0}")]
    OutOfRange(String),

    /// A store could not be reached, read or written; trying again may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),

    /// The server is shutting down; the statement may work against it
    /// once it is back, or against another server.
    #[error("{0}")]
    ShuttingDown(String),

    /// A file is corrupt (or a reader crashed on it).
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// A bug in Tarn, or a failure it cannot classify.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::runtime::TaskFailure> for EngineError {
    fn from(failure: crate::runtime::TaskFailure) -> Self {
        match failure {
            crate::runtime::TaskFailure::Cancelled => {
                Self::Cancelled("the statement was cancelled: the server is stopping".into())
            }
            crate::runtime::TaskFailure::Panicked(message) => Self::Corrupt(format!(
                "the engine failed while running the statement ({message}); a file it reads is probably corrupt"
            )),
        }
    }
}

impl EngineError {
    /// Classifies a DataFusion error raised while planning a statement.
    pub fn from_planning(err: DataFusionError) -> Self {
        if let Some(delta) = find::<crate::delta::DeltaError>(&err) {
            return Self::of_delta(delta);
        }
        match err.find_root() {
            DataFusionError::SQL(parse, _) => Self::Syntax(parse.to_string()),
            DataFusionError::Plan(msg) => Self::Plan(msg.clone()),
            DataFusionError::SchemaError(e, _) => Self::Plan(e.to_string()),
            DataFusionError::NotImplemented(msg) => Self::NotSupported(msg.clone()),
            DataFusionError::Configuration(msg) => Self::Plan(msg.clone()),
            // Planning works on the statement's own text and literals
            // (constant folding compiles a regex, casts a literal): a failure
            // there that no type explains, and that DataFusion does not call
            // its own bug, is the statement's.
            DataFusionError::Internal(_) => Self::from_execution(err),
            _ if Cause::of(&err) == Cause::Unknown => {
                Self::Plan(err.strip_backtrace().trim().to_string())
            }
            _ => Self::from_execution(err),
        }
    }

    /// Classifies a DataFusion error raised while executing a statement, by
    /// the types in its chain of causes (never by its words).
    pub fn from_execution(err: DataFusionError) -> Self {
        if let Some(why) = find::<super::live::Interruption>(&err) {
            return why.error();
        }
        if let Some(refusal) = find::<super::admission::Refusal>(&err) {
            return Self::ResourcesExhausted(refusal.to_string());
        }
        if let Some(exhausted) = find::<super::memory::MemoryExhausted>(&err) {
            return Self::ResourcesExhausted(exhausted.to_string());
        }
        if let Some(named) = find::<super::corruption::CorruptFiles>(&err) {
            return Self::Corrupt(named.0.clone());
        }
        // Keep the whole chain in the message: context such as the file
        // name sits in the outer layers.
        let message = err.strip_backtrace().trim().to_string();
        match err.find_root() {
            DataFusionError::ResourcesExhausted(msg) => {
                return Self::ResourcesExhausted(msg.clone());
            }
            DataFusionError::NotImplemented(msg) => return Self::NotSupported(msg.clone()),
            DataFusionError::SQL(parse, _) => return Self::Syntax(parse.to_string()),
            DataFusionError::Plan(msg) => return Self::Plan(msg.clone()),
            DataFusionError::SchemaError(e, _) => return Self::Plan(e.to_string()),
            DataFusionError::Internal(msg) => return Self::Internal(msg.clone()),
            _ => {}
        }
        Self::of_cause(Cause::of(&err), message)
    }

    /// The error for a failure of `cause`, with `message`.
    fn of_cause(cause: Cause, message: String) -> Self {
        match cause {
            Cause::Data => Self::Execution(message),
            Cause::Range => Self::OutOfRange(message),
            Cause::Storage => Self::Unavailable(message),
            Cause::Denied => Self::PermissionDenied(message),
            Cause::Corrupt => Self::Corrupt(message),
            Cause::Busy => Self::Conflict(message),
            Cause::Unknown => Self::Internal(message),
        }
    }

    /// Whether the failure may come from a corrupt file (so that naming the
    /// file is worth a look at the footers of what the statement read).
    pub(crate) fn may_be_a_corrupt_file(&self) -> bool {
        matches!(self, Self::Corrupt(_))
    }
}

impl From<crate::delta::DeltaError> for EngineError {
    fn from(err: crate::delta::DeltaError) -> Self {
        Self::of_delta(&err)
    }
}

impl EngineError {
    /// The error a Delta table operation's failure is, wherever it was raised.
    fn of_delta(err: &crate::delta::DeltaError) -> Self {
        use crate::delta::DeltaError;
        let message = err.to_string();
        match err {
            DeltaError::AlreadyExists { .. } | DeltaError::NotEmpty { .. } => {
                Self::AlreadyExists(message)
            }
            DeltaError::NoCommit { .. } | DeltaError::NoSuchVersion { .. } => Self::Plan(message),
            DeltaError::Busy { .. } => Self::Conflict(message),
            DeltaError::RetentionTooShort { .. } | DeltaError::FilesGone { .. } => {
                Self::Refused(message)
            }
            DeltaError::Table { .. } => Self::of_cause(Cause::of(err), message),
        }
    }
}

/// Whether a DataFusion failure may come from a corrupt file.
pub(crate) fn may_be_a_corrupt_file(err: &DataFusionError) -> bool {
    Cause::of(err) == Cause::Corrupt
}

/// The first error of type `T` in `err`'s chain of causes.
pub(crate) fn find<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut level = Some(err);
    while let Some(current) = level {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        level = current.source();
    }
    None
}

/// What kind of failure an error chain holds, from the most specific typed
/// error found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The data the statement met (casts, parses, arguments).
    Data,
    /// Arithmetic out of range.
    Range,
    /// A store or file system failed.
    Storage,
    /// The fence refused a path.
    Denied,
    /// A file is corrupt.
    Corrupt,
    /// Other writers won every commit.
    Busy,
    /// Nothing recognisable.
    Unknown,
}

impl Cause {
    /// The deepest cause in `err`'s chain that has a known type.
    fn of(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Self::of_one(err);
        let mut level: &dyn std::error::Error = err;
        while let Some(source) = level.source() {
            level = source;
            let found = Self::of_one(level);
            if found != Self::Unknown {
                cause = found;
            }
        }
        cause
    }

    fn of_datafusion(err: &DataFusionError) -> Self {
        match err {
            DataFusionError::ParquetError(_) => Self::Corrupt,
            DataFusionError::ObjectStore(e) => Self::of_store(e),
            DataFusionError::IoError(_) => Self::Storage,
            // DataFusion raises its own bugs as Internal; Execution is what
            // running met in the data.
            DataFusionError::Execution(_) => Self::Data,
            // A task that panicked: a reader crashing on a corrupt file.
            DataFusionError::ExecutionJoin(_) => Self::Corrupt,
            DataFusionError::ArrowError(e, _) => Self::of_arrow(e),
            _ => Self::Unknown,
        }
    }

    fn of_one(err: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(e) = err.downcast_ref::<DataFusionError>() {
            return Self::of_datafusion(e);
        }
        if let Some(e) = err.downcast_ref::<arrow::error::ArrowError>() {
            return Self::of_arrow(e);
        }
        if err
            .downcast_ref::<parquet::errors::ParquetError>()
            .is_some()
        {
            return Self::Corrupt;
        }
        if let Some(e) = err.downcast_ref::<object_store::Error>() {
            return Self::of_store(e);
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return Self::Storage;
        }
        if let Some(crate::delta::DeltaError::Busy { .. }) =
            err.downcast_ref::<crate::delta::DeltaError>()
        {
            return Self::Busy;
        }
        Self::Unknown
    }

    fn of_arrow(err: &arrow::error::ArrowError) -> Self {
        use arrow::error::ArrowError;
        match err {
            ArrowError::DivideByZero | ArrowError::ArithmeticOverflow(_) => Self::Range,
            ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ComputeError(_)
            | ArrowError::SchemaError(_)
            | ArrowError::CsvError(_)
            | ArrowError::JsonError(_) => Self::Data,
            ArrowError::ParquetError(_) | ArrowError::IpcError(_) => Self::Corrupt,
            ArrowError::IoError(..) => Self::Storage,
            _ => Self::Unknown,
        }
    }

    fn of_store(err: &object_store::Error) -> Self {
        match err {
            object_store::Error::PermissionDenied { .. } => Self::Denied,
            _ => Self::Storage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::error::ArrowError;

    #[test]
    fn errors_are_classified_by_their_types() {
        let arrow = |e| DataFusionError::ArrowError(Box::new(e), None);
        assert!(matches!(
            EngineError::from_execution(arrow(ArrowError::DivideByZero)),
            EngineError::OutOfRange(_)
        ));
        assert!(matches!(
            EngineError::from_execution(arrow(ArrowError::CastError("abc".into()))),
            EngineError::Execution(_)
        ));
        let store = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        let wrapped = DataFusionError::ObjectStore(Box::new(store)).context("reading t");
        assert!(matches!(
            EngineError::from_execution(wrapped),
            EngineError::Unavailable(m) if m.contains("reading t")
        ));
        let parquet = DataFusionError::ParquetError(Box::new(
            parquet::errors::ParquetError::General("bad footer".into()),
        ));
        assert!(EngineError::from_execution(parquet).may_be_a_corrupt_file());
        // A message that merely mentions parquet is not a corrupt file.
        let denied = DataFusionError::External(Box::new(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "cannot write x.parquet",
        )));
        let classified = EngineError::from_execution(denied);
        assert!(!classified.may_be_a_corrupt_file(), "{classified:?}");
        assert!(matches!(
            EngineError::from_execution(DataFusionError::Internal("bug".into())),
            EngineError::Internal(_)
        ));
    }
}
