//! What authentication, access control and TLS cost: the same build served
//! with `--auth` (every call carries a bearer session token) against the
//! plain server, side by side (TPC-H and `SELECT 1`); on that server, a user
//! who reads through grants, a column mask and a row filter on every table
//! against the admin, side by side, with the answers compared; and result
//! streaming over TLS.

use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use tarn_client::{Client, ConnectOptions, Credentials};

use crate::{answers, baseline, probes};

/// The policies of the enforced run, per TPC-H table: the masked column, the
/// mask, and the row filter's predicate. Each is on a column no query
/// reads where the table has one; `customer` and `supplier` have none, so
/// theirs mask a comment with a mask that reveals every character (the
/// answers stay the same, and the mask is still computed for Q2, Q10, Q16).
/// Every predicate holds for every row.
const POLICIES: &[(&str, &str, &str, &str)] = &[
    (
        "lineitem",
        "l_comment",
        "mask_redact(l_comment)",
        "l_linenumber > 0",
    ),
    (
        "orders",
        "o_clerk",
        "mask_redact(o_clerk)",
        "o_clerk IS NOT NULL",
    ),
    (
        "part",
        "p_comment",
        "mask_redact(p_comment)",
        "p_retailprice > 0",
    ),
    (
        "partsupp",
        "ps_comment",
        "mask_redact(ps_comment)",
        "ps_comment IS NOT NULL",
    ),
    (
        "nation",
        "n_comment",
        "mask_redact(n_comment)",
        "n_comment IS NOT NULL",
    ),
    (
        "region",
        "r_comment",
        "mask_redact(r_comment)",
        "r_comment IS NOT NULL",
    ),
    (
        "customer",
        "c_comment",
        "mask_partial(c_comment, 1000)",
        "c_comment IS NOT NULL",
    ),
    (
        "supplier",
        "s_comment",
        "mask_partial(s_comment, 1000)",
        "s_comment IS NOT NULL",
    ),
];

/// The user (and role) the enforced run reads as.
const READER: &str = "bench_reader";
const READERS: &str = "bench_readers";

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
    let (with_bearer, enforced) = match authenticated {
        Some(server) => {
            let credentials = Credentials::Password {
                user: server.user.clone(),
                password: server.password.clone(),
            };
            let mut client = Client::connect_with(&server.uri, credentials)
                .await
                .map_err(|e| format!("the --auth server: {e}"))?;
            eprintln!("==> authenticated (bearer) against plain, side by side");
            let bearer =
                baseline::compare(&mut client, plain, queries, warmup, runs, latency_calls).await?;
            let password = format!("{}-reader", server.password);
            set_up_policies(&mut client, &password).await?;
            let reader = Credentials::Password {
                user: READER.into(),
                password,
            };
            let mut reader = Client::connect_with(&server.uri, reader)
                .await
                .map_err(|e| format!("the --auth server, as {READER}: {e}"))?;
            eprintln!(
                "==> {READER} (grants, a mask and a row filter on each table) against the admin, side by side"
            );
            let mut enforced = baseline::compare(
                &mut reader,
                &mut client,
                queries,
                warmup,
                runs,
                latency_calls,
            )
            .await?;
            enforced["answers_differ"] =
                json!(differing_answers(&mut reader, &mut client, queries).await?);
            enforced["policies"] = json!(
                POLICIES
                    .iter()
                    .map(|(table, column, mask, filter)| json!({
                        "table": table, "column": column, "mask": mask, "row_filter": filter
                    }))
                    .collect::<Vec<_>>()
            );
            (bearer, enforced)
        }
        None => (Value::Null, Value::Null),
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
    Ok(json!({
        "authenticated": with_bearer,
        "enforced": enforced,
        "tls_streaming": tls_streaming,
    }))
}

/// As the admin: the reader, its role's grants, and the policies.
async fn set_up_policies(admin: &mut Client, password: &str) -> Result<(), String> {
    let mut statements = vec![
        format!("CREATE USER {READER} WITH PASSWORD '{password}'"),
        format!("CREATE ROLE {READERS}"),
        format!("GRANT {READERS} TO {READER}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READERS}"),
    ];
    for (table, column, mask, filter) in POLICIES {
        statements.push(format!(
            "CREATE MASK bench_{table} ON {table} ({column}) USING ({mask})"
        ));
        statements.push(format!(
            "CREATE ROW FILTER bench_{table} ON {table} FOR {READERS} USING ({filter})"
        ));
    }
    for sql in statements {
        let result = admin.query(&sql).await;
        result
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    Ok(())
}

/// The TPC-H queries whose answers differ between `a` and `b` (rows
/// compared in order, floats to 9 significant digits, since partial sums
/// may be added in another order).
async fn differing_answers(
    a: &mut Client,
    b: &mut Client,
    queries: &std::path::Path,
) -> Result<Vec<String>, String> {
    let mut differ = Vec::new();
    for number in 1..=22 {
        let path = queries.join(format!("q{number}.sql"));
        let sql = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let answer = async |client: &mut Client| -> Result<Value, String> {
            let batches = client
                .query(&sql)
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(rounded(answers::rows(&batches)))
        };
        if answer(a).await? != answer(b).await? {
            differ.push(format!("q{number}"));
        }
    }
    Ok(differ)
}

fn rounded(value: Value) -> Value {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => n
            .as_f64()
            .map_or(Value::Number(n), |f| json!(format!("{f:.8e}"))),
        Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
        Value::Object(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, rounded(v))).collect())
        }
        other => other,
    }
}
