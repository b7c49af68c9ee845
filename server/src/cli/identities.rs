//! `tarn user ...` and `tarn token ...`: managing who may connect, on the
//! state folder itself, for operators (also while no server runs: the
//! first admin, a forgotten password). A running server holds the state
//! folder; then the same changes are SQL statements (`CREATE USER`, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::fail;
use crate::auth::{AuthOptions, Authenticator};
use crate::catalog::{
    AuditLog, AuditRecord, CatalogOptions, IdentityChange, IdentityStore, SqliteCatalog,
};
use crate::config;
use crate::identity::ADMIN_ROLE;

/// The state folder the command works on.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The server's state folder [default: LAKE/.tarn]
    #[arg(long, env = "TARN_STATE_DIR", value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// The lake whose default state folder to use
    #[arg(long, env = "TARN_LAKE", value_name = "DIR", default_value = config::DEFAULT_LAKE, global = true)]
    pub lake: String,
}

/// `tarn user`
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password comes from TARN_PASSWORD or is asked for twice
    Create {
        /// The user name
        name: String,
        /// Make the user a member of the role 'admin'
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password (TARN_PASSWORD, or asked for twice)
    Password {
        /// The user name
        name: String,
    },
    /// Drop a user (its tokens stop working)
    Drop {
        /// The user name
        name: String,
    },
    /// List the users and their roles
    List,
}

/// `tarn token`
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make an API token for a user and print its secret (shown once, never stored)
    Create {
        /// The token's name
        name: String,
        /// The user it acts as
        #[arg(long, value_name = "NAME")]
        user: String,
        /// How long it works, e.g. 30d, 12h [default: until revoked]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Revoke a token: it stops working at once
    Revoke {
        /// The token's name
        name: String,
    },
    /// List the tokens (never their secrets)
    List,
}

/// Runs `tarn user`.
pub fn run_user(args: UserArgs) -> ExitCode {
    with_identities(&args.state, |auth, catalog| async move {
        match args.command {
            UserCommand::Create { name, admin } => {
                let password = new_password(&name)?;
                expect_done(auth.create_user(&name, &password).await, &name)?;
                if admin {
                    expect_done(auth.grant_role(ADMIN_ROLE, &name).await, &name)?;
                }
                Ok(format!("created user {name}{}", if admin { " (admin)" } else { "" }))
            }
            UserCommand::Password { name } => {
                let password = new_password(&name)?;
                expect_done(auth.set_password(&name, &password).await, &name)?;
                Ok(format!("changed the password of {name}"))
            }
            UserCommand::Drop { name } => {
                expect_done(auth.drop_user(&name).await, &name)?;
                Ok(format!("dropped user {name}"))
            }
            UserCommand::List => list(
                &catalog,
                "SELECT name, coalesce((SELECT group_concat(role, ',') FROM role_members WHERE member = u.name), ''), created_at FROM users u ORDER BY name",
                &["user", "roles", "created"],
            )
            .await,
        }
    })
}

/// Runs `tarn token`.
pub fn run_token(args: TokenArgs) -> ExitCode {
    with_identities(&args.state, |auth, catalog| async move {
        match args.command {
            TokenCommand::Create {
                name,
                user,
                expires_in,
            } => {
                let made = auth
                    .create_token(&name, &user, expires_in)
                    .await
                    .map_err(|e| e.to_string())?;
                match made {
                    Ok(token) => {
                        let expiry = token.expires_at.map_or("never".to_string(), |t| t.to_rfc3339());
                        // The secret alone on stdout, so scripts can capture it.
                        println!("{}", token.secret);
                        Ok(format!("token {name} for {user} (expires: {expiry}); the secret above is shown once"))
                    }
                    Err(change) => Err(explain(change, &user, &name)),
                }
            }
            TokenCommand::Revoke { name } => {
                expect_done(auth.revoke_token(&name).await, &name)?;
                Ok(format!("revoked token {name}"))
            }
            TokenCommand::List => list(
                &catalog,
                "SELECT name, user_name, created_at, coalesce(expires_at, 'never'), CASE WHEN revoked_at IS NULL THEN 'live' ELSE 'revoked' END FROM tokens ORDER BY name, id",
                &["token", "user", "created", "expires", "state"],
            )
            .await,
        }
    })
}

fn with_identities<F, Fut>(state: &StateArgs, work: F) -> ExitCode
where
    F: FnOnce(Arc<Authenticator>, Arc<SqliteCatalog>) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let folder = state
        .state_dir
        .clone()
        .unwrap_or_else(|| config::default_state_dir(&state.lake));
    let catalog = match SqliteCatalog::open(&folder, CatalogOptions::default()) {
        Ok(catalog) => Arc::new(catalog),
        Err(e) => {
            return fail(&format!(
                "{e}\n(while a server runs, manage users with SQL instead: CREATE USER, ALTER USER, CREATE TOKEN, DROP TOKEN)"
            ));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let identities: Arc<dyn IdentityStore> = Arc::clone(&catalog) as _;
        let auth = Arc::new(Authenticator::new(identities, AuthOptions::default()));
        let started = std::time::Instant::now();
        let at = chrono::Utc::now();
        let outcome = work(auth, Arc::clone(&catalog)).await;
        // The change is audited like a call (a listing too: who looked).
        catalog.audit_soon(AuditRecord {
            at,
            principal: std::env::var("USER").ok(),
            peer: None,
            method: "cli".to_string(),
            command: Some(command_line()),
            sql: None,
            code: if outcome.is_ok() {
                "OK"
            } else {
                "FAILED_PRECONDITION"
            }
            .to_string(),
            detail: Some(match &outcome {
                Ok(done) => done.clone(),
                Err(e) => e.clone(),
            }),
            rows: None,
            bytes: None,
            duration: started.elapsed(),
        });
        catalog.close().await;
        match outcome {
            Ok(done) => {
                eprintln!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        }
    })
}

/// The command as typed (its arguments hold no secret: passwords come from
/// the environment or a prompt, token secrets are only printed).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("tarn {}", args.join(" "))
}

/// A new password: TARN_PASSWORD, or typed twice without echo.
fn new_password(user: &str) -> Result<String, String> {
    if let Ok(password) = std::env::var("TARN_PASSWORD")
        && !password.is_empty()
    {
        return check_length(password);
    }
    let read = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map_err(|e| format!("cannot read the password ({e}); set TARN_PASSWORD instead"))
    };
    let first = read(format!("New password for {user}: "))?;
    let second = read("Again: ".to_string())?;
    if first != second {
        return Err("the two passwords differ; nothing changed".to_string());
    }
    check_length(first)
}

fn check_length(password: String) -> Result<String, String> {
    match password.chars().count() {
        8.. => Ok(password),
        _ => Err("a password needs at least 8 characters".to_string()),
    }
}

fn expect_done(
    change: Result<IdentityChange, crate::auth::AuthError>,
    name: &str,
) -> Result<(), String> {
    match change.map_err(|e| e.to_string())? {
        IdentityChange::Done => Ok(()),
        other => Err(explain(other, name, name)),
    }
}

fn explain(change: IdentityChange, user: &str, object: &str) -> String {
    match change {
        IdentityChange::Done => "done".to_string(),
        IdentityChange::UserExists => {
            format!("user {user} exists; change its password with `tarn user password {user}`")
        }
        IdentityChange::NoSuchUser => {
            format!("user {user} does not exist; `tarn user list` lists them")
        }
        IdentityChange::TokenExists => {
            format!("a live token named {object} exists; pick another name or revoke it first")
        }
        IdentityChange::NoSuchToken => {
            format!("no live token named {object}; `tarn token list` lists them")
        }
        IdentityChange::LastAdmin => format!(
            "{user} is the last admin; make another admin first (`tarn user create NAME --admin`)"
        ),
        other => format!("nothing changed: {other:?}"),
    }
}

async fn list(
    catalog: &SqliteCatalog,
    sql: &'static str,
    header: &[&str],
) -> Result<String, String> {
    let width = header.len();
    let rows = catalog
        .call(move |c| {
            let mut statement = c.prepare(sql)?;
            let rows = statement.query_map([], |row| {
                (0..width)
                    .map(|i| row.get::<_, String>(i))
                    .collect::<rusqlite::Result<Vec<String>>>()
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    let count = rows.len();
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
    Ok(format!("{count} row(s)"))
}
