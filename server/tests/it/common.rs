//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use parquet::file::reader::{FileReader, SerializedFileReader};
use tarn::config::ServeConfig;
use tarn::{Server, demo};
use tarn_client::{Client, ClientError};
use tonic::Code;

/// The demo lake at scale factor 0.01, generated once per test run.
pub fn demo_lake() -> &'static Path {
    static LAKE: OnceLock<tempfile::TempDir> = OnceLock::new();
    LAKE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        demo::generate(dir.path(), 0.01).expect("the demo lake is generated");
        dir
    })
    .path()
}

/// A lake of its own holding copies of the demo `tables`, for tests that
/// write (the shared demo lake is never written).
pub fn scratch_lake(tables: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for table in tables {
        let file = format!("{table}.parquet");
        std::fs::copy(demo_lake().join(&file), dir.path().join(&file))
            .expect("a demo table copies");
    }
    dir
}

/// A running server and a client connected to it.
pub struct TestServer {
    pub server: Server,
    pub client: Client,
    _state: tempfile::TempDir,
}

impl TestServer {
    pub fn uri(&self) -> String {
        format!("grpc://{}", self.server.local_addr())
    }
}

/// Starts a server on the demo lake.
pub async fn start() -> TestServer {
    start_with(ServeConfig::for_lake(demo_lake())).await
}

/// Starts a server with `config`. Servers on the shared demo lake each get
/// a catalog of their own (many run at once; the demo lake is never
/// written), unless the test chose a state folder.
pub async fn start_with(mut config: ServeConfig) -> TestServer {
    let state = tempfile::tempdir().expect("a temporary folder");
    let default_state = tarn::config::default_state_dir(&config.lake);
    if Path::new(&config.lake) == demo_lake() && config.state_dir == default_state {
        config.state_dir = state.path().to_path_buf();
    }
    let server = Server::start(config).await.expect("the server starts");
    let client = Client::connect(&format!("grpc://{}", server.local_addr()))
        .await
        .expect("the client connects");
    TestServer {
        server,
        client,
        _state: state,
    }
}

/// Rows of a Parquet file, read from its footer with the parquet crate (not DataFusion).
pub fn parquet_rows(path: &Path) -> i64 {
    let file = std::fs::File::open(path).expect("the file opens");
    let reader = SerializedFileReader::new(file).expect("the file is Parquet");
    reader.metadata().file_metadata().num_rows()
}

/// All record batches of a Parquet file, read with the parquet crate.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("the file opens");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("the file is Parquet")
        .build()
        .expect("a reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("the file decodes")
}

pub fn table_file(name: &str) -> PathBuf {
    demo_lake().join(format!("{name}.parquet"))
}

pub fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Runs a query and collects its batches.
pub async fn query(client: &mut Client, sql: &str) -> Vec<RecordBatch> {
    client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `err` is a gRPC status with `expected` code whose message contains `text`.
pub fn assert_status(err: &ClientError, expected: Code, text: &str) {
    assert_eq!(code(err), expected, "{err}");
    assert!(err.to_string().contains(text), "{err}");
}

/// The gRPC code of `err`.
pub fn code(err: &ClientError) -> Code {
    err.status()
        .map(|s| s.code())
        .unwrap_or_else(|| panic!("not a status: {err}"))
}
