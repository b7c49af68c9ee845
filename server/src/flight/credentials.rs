//! Credentials on the wire: the `authorization` header of every call, the
//! Handshake that turns a password into a session token, and the session
//! token handed back in response headers.

use arrow_flight::HandshakeRequest;
use arrow_flight::HandshakeResponse;
use tonic::{Request, Response, Status, Streaming};

use super::audit::Call;
use super::service::{BoxedStream, FlightSqlEndpoint, once};
use super::sessions::give_cookie;
use super::status::bounded;
use crate::auth::{AuthError, Authenticated, Credential};

impl FlightSqlEndpoint {
    /// Who sent `request`, from its `authorization` header and peer address.
    pub(super) async fn authenticate<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Authenticated, Status> {
        let credential = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(Credential::parse);
        let peer = request.remote_addr().map(|addr| addr.ip());
        self.auth
            .authenticate(credential, peer)
            .await
            .map_err(unauthenticated)
    }

    /// The Handshake: a Basic credential logs in and the session token goes
    /// back as `authorization: Bearer ...` in the response headers (what
    /// the JDBC, ADBC and pyarrow clients read); a Bearer credential is
    /// checked and echoed (the JDBC driver's `token=` path).
    pub(super) async fn handshake_with(
        &self,
        request: &Request<Streaming<HandshakeRequest>>,
    ) -> Result<(Response<BoxedStream<HandshakeResponse>>, Authenticated), Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let credential = header.and_then(Credential::parse);
        let peer = request.remote_addr().map(|addr| addr.ip());
        let (bearer, who) = match credential {
            Some(Credential::Basic { user, password }) if self.auth.is_enabled() => {
                let mut login = self
                    .auth
                    .login(&user, &password, peer)
                    .await
                    .map_err(unauthenticated)?;
                let bearer = login
                    .session_token
                    .take()
                    .map(|token| Credential::Bearer(token).header());
                (bearer, login)
            }
            credential => {
                let echoed = header.filter(|_| matches!(credential, Some(Credential::Bearer(_))));
                let who = self
                    .auth
                    .authenticate(credential, peer)
                    .await
                    .map_err(unauthenticated)?;
                (echoed.map(str::to_string), who)
            }
        };
        let mut response = Response::new(once(HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        }));
        if let Some(bearer) = bearer {
            give_back(&mut response, &bearer)?;
        }
        Ok((response, who))
    }
}

/// The header credentials come in, and session tokens go back in.
const AUTHORIZATION: &str = "authorization";

/// A refused credential: UNAUTHENTICATED, saying what to do.
fn unauthenticated(err: AuthError) -> Status {
    match err {
        AuthError::Missing | AuthError::Rejected { .. } => Status::unauthenticated(err.to_string()),
        AuthError::Catalog(_) => Status::unavailable(err.to_string()),
        AuthError::Internal(_) => Status::internal(err.to_string()),
    }
}

/// Puts `authorization: <value>` in the response headers.
pub(super) fn give_back<T>(response: &mut Response<T>, value: &str) -> Result<(), Status> {
    let value = value
        .parse()
        .map_err(|_| Status::internal("a session token is not a valid header value"))?;
    response.metadata_mut().insert(AUTHORIZATION, value);
    Ok(())
}

/// A call's answer; when the call logged in (a Basic credential on an
/// ordinary call), the new session's bearer token rides along in the
/// response headers, so clients that keep the last `authorization` they
/// were given switch to it.
pub(super) fn respond<T>(
    answer: Result<T, Status>,
    who: &Authenticated,
    call: &Call,
) -> Result<Response<T>, Status> {
    let mut response = Response::new(answer.map_err(bounded)?);
    if let Some(token) = &who.session_token {
        give_back(&mut response, &Credential::Bearer(token.clone()).header())?;
    }
    if call.gives_cookie() {
        give_cookie(&mut response, &call.session)?;
    }
    Ok(response)
}

/// The user name a request tries to log in as (for the audit log of a
/// refused login; never the password).
pub(super) fn attempted_user<T>(request: &Request<T>) -> Option<String> {
    match request
        .metadata()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(Credential::parse)
    {
        Some(Credential::Basic { user, .. }) => Some(user),
        _ => None,
    }
}
