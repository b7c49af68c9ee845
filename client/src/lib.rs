//! A Rust client for Tarn, and for any Arrow Flight SQL server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tarn_client::ClientError> {
//! use futures::TryStreamExt;
//!
//! let mut client = tarn_client::Client::connect("grpc://127.0.0.1:50051").await?;
//!
//! // Results stream batch by batch.
//! let result = client.query("SELECT count(*) AS n FROM lineitem").await?;
//! let batches: Vec<_> = result.into_stream().try_collect().await?;
//!
//! // Statements that change something return the number of affected rows.
//! client.execute_update("CREATE VIEW big AS SELECT * FROM orders WHERE o_totalprice > 1000").await?;
//!
//! // Prepared statements take parameters as a record batch, one row per execution.
//! let mut statement = client.prepare("SELECT * FROM nation WHERE n_nationkey = $1").await?;
//! let params = arrow::record_batch::RecordBatch::try_from_iter([(
//!     "$1",
//!     std::sync::Arc::new(arrow::array::Int64Array::from(vec![7])) as arrow::array::ArrayRef,
//! )])?;
//! statement.bind(params)?;
//! let rows: Vec<_> = statement.query().await?.into_stream().try_collect().await?;
//! statement.close().await?;
//! # Ok(()) }
//! ```

mod poll;

use std::pin::Pin;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightInfo;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};

pub use poll::{Polled, QueryProgress};

/// HTTP/2 flow-control window per stream, bytes.
const HTTP2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window per connection, bytes.
const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Largest HTTP/2 frame the server may send us, bytes (default 16 KiB).
const HTTP2_MAX_FRAME: u32 = 1024 * 1024;

/// The header credentials travel in.
const AUTHORIZATION: &str = "authorization";

/// The largest message the client accepts.
const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URI is not a Flight address.
    #[error(
        "invalid server address '{uri}': {reason} (expected grpc://HOST:PORT or grpc+tls://HOST:PORT)"
    )]
    InvalidUri {
        /// The address as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server cannot be reached.
    #[error("cannot connect to {uri}: {message}; is `tarn serve` running there?")]
    Connect {
        /// The address.
        uri: String,
        /// The cause.
        message: String,
    },
    /// The server answered with an error.
    #[error("{}", status_text(.0))]
    Server(Box<tonic::Status>),
    /// Data could not be decoded.
    #[error("invalid data from the server: {0}")]
    Arrow(#[from] ArrowError),
}

impl ClientError {
    /// The gRPC status, when the server returned one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Server(status) => Some(status),
            _ => None,
        }
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!("{} ({:?})", status.message(), status.code())
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Server(Box::new(status))
    }
}

impl From<FlightError> for ClientError {
    fn from(err: FlightError) -> Self {
        match err {
            FlightError::Tonic(status) => ClientError::Server(status),
            FlightError::Arrow(e) => ClientError::Arrow(e),
            other => ClientError::Arrow(ArrowError::ExternalError(Box::new(other))),
        }
    }
}

/// Results of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A stream of record batches.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// A result being streamed from the server.
pub struct QueryResult {
    schema: SchemaRef,
    batches: BatchStream,
}

impl QueryResult {
    /// The schema of every batch (known before the first batch arrives).
    pub fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.schema)
    }

    /// The batches, as they arrive.
    pub fn into_stream(self) -> BatchStream {
        self.batches
    }

    /// Waits for every batch. Prefer [`QueryResult::into_stream`] for large results.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        self.batches.try_collect().await
    }
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryResult")
            .field("schema", &self.schema)
            .finish()
    }
}

/// How a client proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: for a server without authentication.
    #[default]
    None,
    /// A user name and password, exchanged at connect for a session token
    /// (a Flight `Handshake` with `authorization: Basic ...`).
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// An API token (from `CREATE TOKEN`), sent as `authorization: Bearer ...`.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Password { user, .. } => write!(f, "Password({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// How to connect: who the client is, and for `grpc+tls://` whom to trust.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Who the client is.
    pub credentials: Credentials,
    /// A CA certificate (PEM) to trust besides the system's roots.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), for mutual TLS.
    pub tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Ask for results in Arrow view types (`Utf8View`, `BinaryView`) and
    /// dictionaries where the engine produced them, instead of plain
    /// `Utf8`/`Binary`: the server then skips a cast of every string column.
    /// Off by default, so that code reading `StringArray`s keeps working.
    pub view_types: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("credentials", &self.credentials)
            .field("tls_ca_pem", &self.tls_ca_pem.is_some())
            .field("tls_identity_pem", &self.tls_identity_pem.is_some())
            .field("view_types", &self.view_types)
            .finish()
    }
}

/// A connection to a Flight SQL server.
#[derive(Debug, Clone)]
pub struct Client {
    inner: FlightSqlServiceClient<Channel>,
    /// Every request says the client reads view types.
    view_types: bool,
}

impl Client {
    /// Connects to `uri` (`grpc://host:port`; `http://` is accepted too).
    pub async fn connect(uri: &str) -> Result<Self> {
        Self::connect_with(uri, Credentials::None).await
    }

    /// Connects to `uri` and authenticates with `credentials`: a password is
    /// exchanged for a session token, a token is checked; both by a
    /// `Handshake`, so wrong credentials fail here, as UNAUTHENTICATED.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tarn_client::ClientError> {
    /// use tarn_client::{Client, Credentials};
    /// let credentials = Credentials::Password { user: "alice".into(), password: "s3cret-pass".into() };
    /// let mut client = Client::connect_with("grpc://127.0.0.1:50051", credentials).await?;
    /// client.query("SELECT 1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(uri: &str, credentials: Credentials) -> Result<Self> {
        Self::connect_with_options(
            uri,
            ConnectOptions {
                credentials,
                ..Default::default()
            },
        )
        .await
    }

    /// Connects with every option: credentials, and for `grpc+tls://` the
    /// CA to trust and a client certificate (mutual TLS).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tarn_client::ClientError> {
    /// use tarn_client::{Client, ConnectOptions, Credentials};
    /// let options = ConnectOptions {
    ///     credentials: Credentials::Token("tarn_t_...".into()),
    ///     tls_ca_pem: Some(std::fs::read("ca.pem").unwrap()),
    ///     ..Default::default()
    /// };
    /// let mut client = Client::connect_with_options("grpc+tls://db.example:50051", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_options(uri: &str, options: ConnectOptions) -> Result<Self> {
        let mut client = Self::open(uri, &options).await?;
        client.authenticate(options.credentials).await?;
        Ok(client)
    }

    async fn authenticate(&mut self, credentials: Credentials) -> Result<()> {
        use base64::Engine as _;
        let header = match &credentials {
            Credentials::None => return Ok(()),
            Credentials::Password { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Credentials::Token(token) => format!("Bearer {token}"),
        };
        let value = header.parse().map_err(|_| {
            ClientError::Server(Box::new(tonic::Status::invalid_argument(
                "the credentials contain characters that cannot travel in a header",
            )))
        })?;
        let hello = arrow_flight::HandshakeRequest {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut request = tonic::Request::new(futures::stream::iter(vec![hello]));
        request.metadata_mut().insert(AUTHORIZATION, value);
        let response = self.inner.inner_mut().handshake(request).await?;
        let bearer = response
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let token = match (bearer, credentials) {
            (Some(token), _) => token,
            (None, Credentials::Token(token)) => token,
            (None, _) => {
                return Err(ClientError::Server(Box::new(
                    tonic::Status::unauthenticated(
                        "the server accepted the password but sent no session token; is it a Flight SQL server with authentication?",
                    ),
                )));
            }
        };
        self.inner.set_token(token);
        Ok(())
    }

    async fn open(uri: &str, options: &ConnectOptions) -> Result<Self> {
        let endpoint = endpoint(uri, options)?;
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            uri: uri.to_string(),
            message: source_chain(&e),
        })?;
        let flight = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let mut inner = FlightSqlServiceClient::new_from_inner(flight);
        if options.view_types {
            inner.set_header(tarn_proto::VIEW_TYPES_HEADER, "true");
        }
        Ok(Self {
            inner,
            view_types: options.view_types,
        })
    }

    /// Runs a query and streams its result.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult> {
        let info = self.inner.execute(sql.to_string(), None).await?;
        self.fetch(info).await
    }

    /// Runs a statement that changes something (DDL, INSERT, SET, ...) and
    /// returns the number of rows it affected.
    pub async fn execute_update(&mut self, sql: &str) -> Result<i64> {
        Ok(self.inner.execute_update(sql.to_string(), None).await?)
    }

    /// Prepares a statement with `$1`, `$2`, ... placeholders.
    pub async fn prepare(&mut self, sql: &str) -> Result<PreparedStatement> {
        let inner = self.inner.prepare(sql.to_string(), None).await?;
        Ok(PreparedStatement {
            inner,
            client: self.clone(),
        })
    }

    /// Fetches every endpoint of `info`, in order, as one stream.
    pub async fn fetch(&mut self, info: FlightInfo) -> Result<QueryResult> {
        let schema = SchemaRef::new(info.clone().try_decode_schema()?);
        let client = self.inner.clone();
        let tickets: Vec<_> = info.endpoint.into_iter().filter_map(|e| e.ticket).collect();
        let batches = futures::stream::iter(tickets)
            .then(move |ticket| {
                let mut client = client.clone();
                async move { client.do_get(ticket).await }
            })
            .map_ok(|stream| stream.map_err(ClientError::from))
            .map_err(ClientError::from)
            .try_flatten();
        Ok(QueryResult {
            schema,
            batches: Box::pin(batches),
        })
    }

    /// Catalog names.
    pub async fn catalogs(&mut self) -> Result<QueryResult> {
        let info = self.inner.get_catalogs().await?;
        self.fetch(info).await
    }

    /// Schemas, optionally of one catalog and matching a LIKE pattern.
    pub async fn db_schemas(
        &mut self,
        catalog: Option<&str>,
        pattern: Option<&str>,
    ) -> Result<QueryResult> {
        let request = CommandGetDbSchemas {
            catalog: catalog.map(str::to_string),
            db_schema_filter_pattern: pattern.map(str::to_string),
        };
        let info = self.inner.get_db_schemas(request).await?;
        self.fetch(info).await
    }

    /// Tables matching `filter`.
    pub async fn tables(&mut self, filter: TableFilter) -> Result<QueryResult> {
        let request = CommandGetTables {
            catalog: filter.catalog,
            db_schema_filter_pattern: filter.schema_pattern,
            table_name_filter_pattern: filter.table_pattern,
            table_types: filter.table_types,
            include_schema: filter.include_schema,
        };
        let info = self.inner.get_tables(request).await?;
        self.fetch(info).await
    }

    /// Table types (`TABLE`, `VIEW`, ...).
    pub async fn table_types(&mut self) -> Result<QueryResult> {
        let info = self.inner.get_table_types().await?;
        self.fetch(info).await
    }

    /// Server facts; an empty list asks for all of them.
    pub async fn sql_info(&mut self, keys: Vec<SqlInfo>) -> Result<QueryResult> {
        let info = self.inner.get_sql_info(keys).await?;
        self.fetch(info).await
    }

    /// The SQL types the server can return, optionally of one XDBC type code.
    pub async fn xdbc_type_info(&mut self, data_type: Option<i32>) -> Result<QueryResult> {
        let request = arrow_flight::sql::CommandGetXdbcTypeInfo { data_type };
        let info = self.inner.get_xdbc_type_info(request).await?;
        self.fetch(info).await
    }

    /// The underlying arrow-flight client, for calls this crate does not wrap.
    pub fn flight_sql_client(&mut self) -> &mut FlightSqlServiceClient<Channel> {
        &mut self.inner
    }
}

/// Which tables [`Client::tables`] lists. The default lists all of them.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    /// Only this catalog.
    pub catalog: Option<String>,
    /// Schemas matching this LIKE pattern.
    pub schema_pattern: Option<String>,
    /// Tables matching this LIKE pattern.
    pub table_pattern: Option<String>,
    /// Only these types (`TABLE`, `VIEW`); empty means all.
    pub table_types: Vec<String>,
    /// Return each table's Arrow schema too.
    pub include_schema: bool,
}

/// A statement planned once on the server and executed any number of times.
pub struct PreparedStatement {
    inner: arrow_flight::sql::client::PreparedStatement<Channel>,
    client: Client,
}

impl PreparedStatement {
    /// The schema the statement's result will have.
    pub fn dataset_schema(&self) -> Result<&Schema> {
        Ok(self.inner.dataset_schema()?)
    }

    /// One field per placeholder.
    pub fn parameter_schema(&self) -> Result<&Schema> {
        Ok(self.inner.parameter_schema()?)
    }

    /// Binds parameters: one column per placeholder, one row per execution.
    pub fn bind(&mut self, parameters: RecordBatch) -> Result<()> {
        Ok(self.inner.set_parameters(parameters)?)
    }

    /// Executes the statement as a query.
    pub async fn query(&mut self) -> Result<QueryResult> {
        let info = self.inner.execute().await?;
        self.client.fetch(info).await
    }

    /// Executes the statement as an update; returns the affected row count.
    pub async fn execute_update(&mut self) -> Result<i64> {
        Ok(self.inner.execute_update().await?)
    }

    /// Releases the statement on the server.
    pub async fn close(self) -> Result<()> {
        Ok(self.inner.close().await?)
    }
}

fn endpoint(uri: &str, options: &ConnectOptions) -> Result<Endpoint> {
    let invalid = |reason: &str| ClientError::InvalidUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let (http, tls) = if let Some(rest) = uri
        .strip_prefix("grpc://")
        .or_else(|| uri.strip_prefix("grpc+tcp://"))
    {
        (format!("http://{rest}"), false)
    } else if uri.starts_with("http://") {
        (uri.to_string(), false)
    } else if let Some(rest) = uri.strip_prefix("grpc+tls://") {
        (format!("https://{rest}"), true)
    } else if uri.starts_with("https://") {
        (uri.to_string(), true)
    } else if !uri.contains("://") {
        (format!("http://{uri}"), false)
    } else {
        return Err(invalid("unknown scheme"));
    };
    if !tls && (options.tls_ca_pem.is_some() || options.tls_identity_pem.is_some()) {
        return Err(invalid(
            "TLS options were given for a plain-text address; use grpc+tls://",
        ));
    }
    let mut endpoint = Endpoint::from_shared(http).map_err(|e| invalid(&e.to_string()))?;
    if tls {
        let mut config = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &options.tls_ca_pem {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &options.tls_identity_pem {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| invalid(&source_chain(&e)))?;
    }
    Ok(endpoint).map(|e| {
        // Results arrive in ~2 MiB messages: HTTP/2's default 64 KiB
        // window would make the server wait for a WINDOW_UPDATE many
        // times per message.
        e.connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
            .max_frame_size(Some(HTTP2_MAX_FRAME))
    })
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
