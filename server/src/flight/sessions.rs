//! Flight sessions on the wire: which session a request belongs to, and
//! the `SetSessionOptions`, `GetSessionOptions` and `CloseSession` actions.
//!
//! A request's session is the one its `arrow_flight_session_id` cookie
//! names (clients with cookie support: the JDBC driver, ADBC with
//! `with_cookie_middleware`), else the one of its login (the bearer session
//! token a Handshake handed out), else the one of its connection (clients
//! that send an API token, or none, on one HTTP/2 connection). The session
//! actions hand the cookie back, so a client that keeps cookies stays in
//! its session on every connection.

use arrow_flight::sql::Any;
use prost::Message;
use tarn_proto::flight_session::{
    CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest,
    SetSessionOptionsResult, close_session_result, session_option_value,
    set_session_options_result,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::audit::Call;
use super::service::FlightSqlEndpoint;
use super::status::malformed;
use crate::auth::Authenticated;
use crate::engine::{OptionValue, Session, SessionOptionError};

pub(super) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
pub(super) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
pub(super) const CLOSE_SESSION: &str = "CloseSession";

/// The cookie that names a Flight session (the name Flight suggests).
const SESSION_COOKIE: &str = "arrow_flight_session_id";

impl FlightSqlEndpoint {
    /// The session `request` belongs to (see the module's notes), and
    /// whether it named by cookie a session that has ended.
    pub(super) fn session_for<T>(
        &self,
        request: &Request<T>,
        who: &Authenticated,
    ) -> (Session, bool) {
        let cookie = session_cookie(request.metadata());
        let key = match (&who.login, request.remote_addr()) {
            (Some(login), _) => format!("login:{login}"),
            (None, Some(peer)) => format!("connection:{peer}"),
            (None, None) => "connection:local".to_string(),
        };
        let session = self
            .engine
            .open_session(&who.principal, cookie.as_deref(), &key)
            .reading_view_types(reads_view_types(request.metadata()));
        let ended = cookie.is_some_and(|id| id != session.id());
        (session, ended)
    }

    /// Serves one of the session actions.
    pub(super) fn session_action(
        &self,
        action: &str,
        body: &[u8],
        call: &Call,
    ) -> Result<arrow_flight::Result, Status> {
        let body = match action {
            SET_SESSION_OPTIONS => {
                let request: SetSessionOptionsRequest = unpack(body, action)?;
                call.give_cookie();
                self.set_options(request, call).encode_to_vec()
            }
            GET_SESSION_OPTIONS => {
                refuse_an_ended_session(call)?;
                call.give_cookie();
                let session_options = self
                    .engine
                    .session_options(&call.session)
                    .into_iter()
                    .map(|(name, value)| (name, wire_value(value)))
                    .collect();
                GetSessionOptionsResult { session_options }.encode_to_vec()
            }
            _ => {
                refuse_an_ended_session(call)?;
                self.engine.close_session(&call.session);
                CloseSessionResult {
                    status: close_session_result::Status::Closed.into(),
                }
                .encode_to_vec()
            }
        };
        Ok(arrow_flight::Result { body: body.into() })
    }

    fn set_options(
        &self,
        request: SetSessionOptionsRequest,
        call: &Call,
    ) -> SetSessionOptionsResult {
        use set_session_options_result::{Error, ErrorValue};
        let mut errors = std::collections::HashMap::new();
        for (name, value) in request.session_options {
            let outcome =
                self.engine
                    .set_session_option(&call.session, &name, &option_value(value));
            let Err(err) = outcome else { continue };
            tracing::debug!("session option {name} not set: {err}");
            let value = match err {
                SessionOptionError::InvalidName(_) => ErrorValue::InvalidName,
                SessionOptionError::InvalidValue(_) => ErrorValue::InvalidValue,
                SessionOptionError::Refused(_) => ErrorValue::Error,
            };
            errors.insert(
                name,
                Error {
                    value: value.into(),
                },
            );
        }
        SetSessionOptionsResult { errors }
    }
}

/// GetSessionOptions and CloseSession on a session that has ended are
/// NOT_FOUND, as Flight asks.
fn refuse_an_ended_session(call: &Call) -> Result<(), Status> {
    if call.names_an_ended_session() {
        return Err(Status::not_found(
            "this session has ended (closed, or idle for too long); its settings are gone. Drop the arrow_flight_session_id cookie to start a new one",
        ));
    }
    Ok(())
}

/// A session request body: the message itself (as the C++ and Java clients
/// send it) or packed in an `Any`.
fn unpack<M: Message + Default>(body: &[u8], action: &str) -> Result<M, Status> {
    if let Ok(any) = Any::decode(body)
        && any.type_url.ends_with(&format!("{action}Request"))
    {
        return M::decode(any.value).map_err(|e| malformed(action, e));
    }
    M::decode(body).map_err(|e| malformed(action, e))
}

/// The id in the request's session cookie, if it has one that could be an id.
/// Whether the request says its client reads view types
/// ([`tarn_proto::VIEW_TYPES_HEADER`]`: true`).
fn reads_view_types(metadata: &MetadataMap) -> bool {
    metadata
        .get(tarn_proto::VIEW_TYPES_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

fn session_cookie(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, id)| id.trim_matches('"').to_string())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
}

/// Puts the session cookie in the response headers.
pub(super) fn give_cookie<T>(response: &mut Response<T>, session: &Session) -> Result<(), Status> {
    let value = format!("{SESSION_COOKIE}={}", session.id())
        .parse()
        .map_err(|_| Status::internal("a session id is not a valid header value"))?;
    response.metadata_mut().insert("set-cookie", value);
    Ok(())
}

fn option_value(value: SessionOptionValue) -> OptionValue {
    use session_option_value::OptionValue as Wire;
    match value.option_value {
        Some(Wire::StringValue(text)) => OptionValue::Text(text),
        Some(Wire::BoolValue(b)) => OptionValue::Bool(b),
        Some(Wire::Int64Value(i)) => OptionValue::Int(i),
        Some(Wire::DoubleValue(f)) => OptionValue::Float(f),
        Some(Wire::StringListValue(list)) => OptionValue::List(list.values),
        None => OptionValue::Unset,
    }
}

fn wire_value(value: OptionValue) -> SessionOptionValue {
    use session_option_value::{OptionValue as Wire, StringListValue};
    let option_value = match value {
        OptionValue::Text(text) => Some(Wire::StringValue(text)),
        OptionValue::Bool(b) => Some(Wire::BoolValue(b)),
        OptionValue::Int(i) => Some(Wire::Int64Value(i)),
        OptionValue::Float(f) => Some(Wire::DoubleValue(f)),
        OptionValue::List(values) => Some(Wire::StringListValue(StringListValue { values })),
        OptionValue::Unset => None,
    };
    SessionOptionValue { option_value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_checked() {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "cookie",
            "a=1; arrow_flight_session_id=0190-abc".parse().unwrap(),
        );
        assert_eq!(session_cookie(&metadata).as_deref(), Some("0190-abc"));
        let mut hostile = MetadataMap::new();
        hostile.insert("cookie", "arrow_flight_session_id=../../x".parse().unwrap());
        assert_eq!(session_cookie(&hostile), None);
        assert_eq!(session_cookie(&MetadataMap::new()), None);
    }
}
