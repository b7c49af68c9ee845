//! Auditing every call: who, from where, which method and command, the SQL
//! (passwords left out), the outcome, rows and bytes returned, and time.
//! A record is queued when the call ends; a DoGet's when its stream ends
//! (or its client goes away), so that it carries the rows it sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use arrow_flight::FlightData;
use futures::Stream;
use tonic::{Code, Request, Status};

use super::service::BoxedStream;
use crate::catalog::{AuditLog, AuditRecord};
use crate::engine::{Session, recorded_sql};
use crate::identity::Principal;

/// One call being served: its session (and so its principal), and what the
/// audit log will say about it (filled in by the handler once it has decoded
/// the request).
#[derive(Debug)]
pub(super) struct Call {
    pub(super) session: Session,
    note: Mutex<Note>,
    /// Whether the answer hands the client its session cookie.
    gives_cookie: AtomicBool,
    /// Whether the request's cookie named a session that has ended.
    ended_session: bool,
}

#[derive(Debug, Default, Clone)]
struct Note {
    command: Option<String>,
    sql: Option<String>,
}

impl Call {
    /// A call in `session`; `ended_session` when the request's cookie named
    /// a session that has ended.
    pub(super) fn new(session: Session, ended_session: bool) -> Self {
        Self {
            session,
            note: Mutex::new(Note::default()),
            gives_cookie: AtomicBool::new(false),
            ended_session,
        }
    }

    /// Whether the request's cookie named a session that has ended.
    pub(super) fn names_an_ended_session(&self) -> bool {
        self.ended_session
    }

    /// Who the call runs as.
    pub(super) fn principal(&self) -> &Principal {
        self.session.principal()
    }

    /// Asks for the session cookie to go back with the answer.
    pub(super) fn give_cookie(&self) {
        self.gives_cookie.store(true, Ordering::Relaxed);
    }

    /// Whether the answer carries the session cookie.
    pub(super) fn gives_cookie(&self) -> bool {
        self.gives_cookie.load(Ordering::Relaxed)
    }

    /// Records the command (and its SQL text) the call carries.
    pub(super) fn note(&self, command: &str, sql: Option<&str>) {
        let mut note = self.note.lock().unwrap_or_else(|p| p.into_inner());
        note.command = Some(command.to_string());
        if let Some(sql) = sql {
            note.sql = Some(recorded_sql(sql));
        }
    }

    fn noted(&self) -> Note {
        self.note.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A call's audit record in the making.
pub(super) struct Audit {
    log: Arc<dyn AuditLog>,
    record: AuditRecord,
    started: Instant,
}

impl Audit {
    /// Starts the record of a `method` call.
    pub(super) fn begin<T>(log: &Arc<dyn AuditLog>, request: &Request<T>, method: &str) -> Self {
        Self {
            log: Arc::clone(log),
            record: AuditRecord {
                at: chrono::Utc::now(),
                principal: None,
                peer: request.remote_addr().map(|a| a.to_string()),
                method: method.to_string(),
                command: None,
                sql: None,
                code: String::new(),
                detail: None,
                rows: None,
                bytes: None,
                duration: Default::default(),
            },
            started: Instant::now(),
        }
    }

    /// Says more (a login's user name).
    pub(super) fn detail(mut self, detail: Option<String>) -> Self {
        self.record.detail = detail;
        self
    }

    /// Ends the record of a call that `call` served with `outcome`.
    pub(super) fn end(self, call: Option<&Call>, outcome: Result<(), &Status>) {
        self.end_with(call, outcome, None, None);
    }

    fn end_with(
        mut self,
        call: Option<&Call>,
        outcome: Result<(), &Status>,
        rows: Option<u64>,
        bytes: Option<u64>,
    ) {
        if let Some(call) = call {
            let note = call.noted();
            self.record.principal = Some(call.principal().name().to_string());
            self.record.command = note.command;
            self.record.sql = note.sql;
        }
        let code = outcome.map_or_else(|s| s.code(), |()| Code::Ok);
        self.record.code = code_name(code).to_string();
        if let Err(status) = outcome
            && self.record.detail.is_none()
        {
            self.record.detail = Some(first_line(status.message()));
        }
        self.record.rows = rows;
        self.record.bytes = bytes;
        self.record.duration = self.started.elapsed();
        crate::telemetry::request_ended(
            &self.record.method,
            self.record.command.as_deref(),
            &self.record.code,
            self.record.duration,
            rows,
            bytes,
        );
        self.log.audit_soon(self.record);
    }

    /// The result stream of a DoGet, audited when it ends: rows and bytes
    /// sent, and how it ended (an error, or the client going away).
    pub(super) fn stream(
        self,
        call: Arc<Call>,
        inner: BoxedStream<FlightData>,
    ) -> BoxedStream<FlightData> {
        Box::pin(AuditedStream {
            inner,
            audit: Some(self),
            call,
            rows: 0,
            bytes: 0,
        })
    }
}

struct AuditedStream {
    inner: BoxedStream<FlightData>,
    audit: Option<Audit>,
    call: Arc<Call>,
    rows: u64,
    bytes: u64,
}

impl AuditedStream {
    fn finish(&mut self, outcome: Result<(), &Status>) {
        if let Some(audit) = self.audit.take() {
            audit.end_with(Some(&self.call), outcome, Some(self.rows), Some(self.bytes));
        }
    }
}

impl Stream for AuditedStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(data))) => {
                self.bytes += (data.data_header.len() + data.data_body.len()) as u64;
                self.rows += rows_in(data);
            }
            Poll::Ready(Some(Err(status))) => self.finish(Err(status)),
            Poll::Ready(None) => self.finish(Ok(())),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for AuditedStream {
    /// A stream dropped before its end: the client went away. Only a
    /// queue send happens here (the catalog thread writes it).
    fn drop(&mut self) {
        self.finish(Err(&Status::cancelled(
            "the client went away before the end of the result",
        )));
    }
}

/// Rows in a Flight data message: the length of its record batch header.
fn rows_in(data: &FlightData) -> u64 {
    arrow::ipc::root_as_message(&data.data_header)
        .ok()
        .and_then(|m| m.header_as_record_batch())
        .map_or(0, |b| u64::try_from(b.length()).unwrap_or(0))
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.chars().take(500).collect()
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
