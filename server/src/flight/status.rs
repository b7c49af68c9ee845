//! Engine errors as gRPC statuses: the code says what kind of failure, the
//! message says what to do about it.

use tonic::Status;

use crate::engine::EngineError;

/// The status a client receives for `err`.
pub fn to_status(err: EngineError) -> Status {
    let message = err.to_string();
    match err {
        EngineError::Syntax(_)
        | EngineError::Plan(_)
        | EngineError::InvalidParameters(_)
        | EngineError::WrongStatementKind(_)
        | EngineError::LimitExceeded(_) => Status::invalid_argument(message),
        EngineError::TableNotFound { .. }
        | EngineError::ResultNotFound { .. }
        | EngineError::PreparedStatementNotFound => Status::not_found(message),
        EngineError::NotSupported(_) => Status::unimplemented(message),
        EngineError::PermissionDenied(_) => Status::permission_denied(message),
        EngineError::AlreadyExists(_) => Status::already_exists(message),
        EngineError::Conflict(_) => Status::aborted(message),
        EngineError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        EngineError::Cancelled => Status::cancelled(message),
        EngineError::Execution(_) | EngineError::Internal(_) => Status::internal(message),
    }
}

/// A malformed request: the client sent bytes Tarn cannot decode.
pub fn malformed(what: &str, detail: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed {what}: {detail}"))
}
