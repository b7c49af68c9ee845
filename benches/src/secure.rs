//! What authentication and TLS cost: the same build served with `--auth`
//! (every call carries a bearer session token) against the plain server,
//! side by side (TPC-H and `SELECT 1`), and result streaming over TLS.

use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use tarn_client::{Client, ConnectOptions, Credentials};

use crate::{baseline, probes};

/// A server with `--auth`, and how to log in to it.
pub struct Authenticated {
    pub uri: String,
    pub user: String,
    pub password: String,
}

/// A server with TLS, and the CA its certificate is signed by.
pub struct Tls {
    pub uri: String,
    pub ca_pem: Vec<u8>,
}

/// Measures what is given; `Null` for what is not.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    ctx: &SessionContext,
    plain: &mut Client,
    authenticated: Option<Authenticated>,
    tls: Option<Tls>,
    queries: &std::path::Path,
    warmup: usize,
    runs: usize,
    latency_calls: usize,
) -> Result<Value, String> {
    let with_bearer = match authenticated {
        Some(server) => {
            let credentials = Credentials::Password {
                user: server.user,
                password: server.password,
            };
            let mut client = Client::connect_with(&server.uri, credentials)
                .await
                .map_err(|e| format!("the --auth server: {e}"))?;
            eprintln!("==> authenticated (bearer) against plain, side by side");
            baseline::compare(&mut client, plain, queries, warmup, runs, latency_calls).await?
        }
        None => Value::Null,
    };
    let tls_streaming = match tls {
        Some(server) => {
            let options = ConnectOptions {
                tls_ca_pem: Some(server.ca_pem),
                ..Default::default()
            };
            let mut client = Client::connect_with_options(&server.uri, options)
                .await
                .map_err(|e| format!("the TLS server: {e}"))?;
            eprintln!("==> streaming over TLS");
            probes::streaming(ctx, &mut client, runs.max(3)).await?
        }
        None => Value::Null,
    };
    Ok(json!({ "authenticated": with_bearer, "tls_streaming": tls_streaming }))
}
