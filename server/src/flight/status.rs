//! Engine errors as gRPC statuses: the code says what kind of failure, the
//! message says what to do about it.

use tonic::{Code, Status};

use crate::engine::EngineError;

/// The longest status message sent, in bytes. A message travels in an HTTP/2
/// header: one that quotes a 10 MB identifier would exceed the client's
/// header limit and arrive as RESOURCE_EXHAUSTED instead of the error.
const MAX_MESSAGE: usize = 4096;

/// The status a client receives for `err`.
pub fn to_status(err: EngineError) -> Status {
    let message = err.to_string();
    let code = match err {
        EngineError::Syntax(_)
        | EngineError::Plan(_)
        | EngineError::InvalidParameters(_)
        | EngineError::WrongStatementKind(_)
        | EngineError::LimitExceeded(_)
        | EngineError::Execution(_) => Code::InvalidArgument,
        EngineError::TableNotFound { .. }
        | EngineError::ResultNotFound { .. }
        | EngineError::PreparedStatementNotFound
        | EngineError::NoSuchObject(_) => Code::NotFound,
        EngineError::Refused(_) => Code::FailedPrecondition,
        EngineError::NotSupported(_) => Code::Unimplemented,
        EngineError::PermissionDenied(_) => Code::PermissionDenied,
        EngineError::AlreadyExists(_) => Code::AlreadyExists,
        EngineError::Conflict(_) => Code::Aborted,
        EngineError::EmptyLake(_) => Code::FailedPrecondition,
        EngineError::ResourcesExhausted(_) => Code::ResourceExhausted,
        EngineError::Cancelled(_) => Code::Cancelled,
        EngineError::TimedOut(_) => Code::DeadlineExceeded,
        EngineError::OutOfRange(_) => Code::OutOfRange,
        EngineError::Unavailable(_) | EngineError::ShuttingDown(_) => Code::Unavailable,
        EngineError::Corrupt(_) => Code::DataLoss,
        EngineError::Internal(_) => Code::Internal,
    };
    bounded(Status::new(code, message))
}

/// A malformed request: the client sent bytes Tarn cannot decode.
pub fn malformed(what: &str, detail: impl std::fmt::Display) -> Status {
    bounded(Status::invalid_argument(format!(
        "malformed {what}: {detail}"
    )))
}

/// An error while reading a client's request stream: the stream's messages
/// did not decode (tonic reports that as INTERNAL), or the transport failed.
pub fn from_request_stream(status: Status) -> Status {
    match status.code() {
        Code::Internal => malformed("request message", status.message()),
        _ => bounded(status),
    }
}

/// tonic's own answer to a request whose message does not decode, in the
/// headers of a trailers-only response, made INVALID_ARGUMENT.
pub(super) fn undecodable_request_as_invalid_argument(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // The message is percent-encoded on the wire; this is prost's wording.
    const DECODE_FAILURE: &str = "failed%20to%20decode%20Protobuf%20message";
    let headers = response.headers_mut();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"13");
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .filter(|m| m.starts_with(DECODE_FAILURE))
        .map(str::to_string);
    if let (true, Some(message)) = (internal, message) {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        if let Ok(value) =
            http::HeaderValue::from_str(&format!("malformed%20request%20message%3A%20{message}"))
        {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// `status` with its message cut to [`MAX_MESSAGE`] bytes (at a character
/// boundary), saying how much was cut.
pub fn bounded(status: Status) -> Status {
    let message = status.message();
    if message.len() <= MAX_MESSAGE {
        return status;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Status::new(
        status.code(),
        format!(
            "{}… (the message was cut: it had {} bytes, mostly quoting the request)",
            &message[..end],
            message.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = format!("table '{}' not found", "é".repeat(10_000));
        let status = bounded(Status::not_found(long));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < MAX_MESSAGE + 200);
        assert!(status.message().contains("was cut"));
        let short = bounded(Status::not_found("table 'x' not found"));
        assert_eq!(short.message(), "table 'x' not found");
    }
}
