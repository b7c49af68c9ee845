//! How every write commits: Tarn's file settings, writers to one table
//! taking turns inside the process, and retries with backoff while other
//! processes win the commit races, up to a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::operations::write::WriteBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use url::Url;

use super::DeltaError;

/// How long a write keeps retrying while other processes win every commit.
pub const BUSY_DEADLINE: Duration = Duration::from_secs(30);

/// Commit attempts deltalake makes for one write before it gives up (each
/// attempt after a lost race reads the newer commits and takes the next
/// version; appends never conflict with each other).
const COMMIT_ATTEMPTS: usize = 50;

/// First and longest pause between whole attempts of a write that lost
/// every commit race.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

const LONGEST_BACKOFF: Duration = Duration::from_secs(2);

pub(super) fn write_error(location: &Url, err: DeltaTableError) -> DeltaError {
    match err {
        DeltaTableError::Transaction {
            source: TransactionError::VersionAlreadyExists(0),
        } => DeltaError::AlreadyExists {
            location: location.to_string(),
        },
        other => DeltaError::table(location, other),
    }
}

/// Whether `err` is a lost race with another writer (worth another try).
fn lost_commit_race(err: &DeltaTableError) -> bool {
    matches!(
        err,
        DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(_)
                | TransactionError::CommitConflict(_)
                | TransactionError::VersionAlreadyExists(1..),
        }
    )
}

/// The lock writers to the table at `location` take turns on, in this process.
pub(super) fn write_turn(location: &Url) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: std::sync::LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Arc::clone(turns.entry(location.to_string()).or_default())
}

/// Runs `write` (one whole write: data files, then a commit) until it
/// commits, retrying with growing pauses while it loses commit races to
/// other processes, for up to `deadline` ([`BUSY_DEADLINE`]).
pub(super) async fn retry_while_busy<F, Fut, T>(
    location: &Url,
    deadline: Duration,
    mut write: F,
) -> Result<T, DeltaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DeltaTableError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_BACKOFF;
    loop {
        match write().await {
            Ok(table) => return Ok(table),
            Err(err) if lost_commit_race(&err) => {
                if started.elapsed() + pause > deadline {
                    return Err(DeltaError::Busy {
                        location: location.to_string(),
                        waited_secs: started.elapsed().as_secs(),
                    });
                }
                tracing::debug!(%location, "a commit lost to other writers; trying again: {err}");
                // Jitter keeps writers that lost together from retrying together.
                let jitter = (uuid::Uuid::new_v4().as_u128() % pause.as_millis().max(1)) as u64;
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause = (pause * 2).min(LONGEST_BACKOFF);
            }
            Err(err) => return Err(write_error(location, err)),
        }
    }
}

/// A write of the rows of `input`, with the file settings and commit
/// attempts of every write Tarn makes.
pub(super) fn with_tarn_settings(
    builder: WriteBuilder,
    input: LogicalPlan,
    session: Arc<SessionState>,
) -> WriteBuilder {
    builder
        .with_input_plan(input)
        .with_session_state(session)
        .with_writer_properties(writer_properties())
        .with_commit_properties(commit_properties())
}

/// Commit attempts of every write Tarn makes.
pub(super) fn commit_properties() -> CommitProperties {
    CommitProperties::default().with_max_retries(COMMIT_ATTEMPTS)
}

/// Parquet settings for every file Tarn writes.
pub(super) fn writer_properties() -> WriterProperties {
    let zstd = ZstdLevel::try_new(3).map_or(Compression::SNAPPY, Compression::ZSTD);
    WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// Rows per Parquet row group: large enough for good compression and
/// statistics, small enough that a filtered scan skips most of a file.
const ROW_GROUP_ROWS: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::DeltaTable;

    /// How a write that always fails with `err` ends, and after how many attempts.
    async fn keep_failing(deadline: Duration, err: fn() -> TransactionError) -> (DeltaError, u32) {
        let location = Url::parse("file:///lake/t/").unwrap();
        let mut attempts = 0;
        let outcome = retry_while_busy(&location, deadline, || {
            attempts += 1;
            async move { Err::<DeltaTable, _>(DeltaTableError::Transaction { source: err() }) }
        })
        .await;
        (outcome.err().unwrap(), attempts)
    }

    #[tokio::test]
    async fn a_write_that_keeps_losing_commit_races_is_busy_after_the_deadline() {
        let (err, attempts) = keep_failing(Duration::from_millis(300), || {
            TransactionError::MaxCommitAttempts(50)
        })
        .await;
        assert!(matches!(err, DeltaError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("busy"), "{err}");
        assert!(attempts > 1, "it retried ({attempts} attempts)");
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let (err, attempts) = keep_failing(Duration::from_secs(5), || {
            TransactionError::VersionAlreadyExists(0)
        })
        .await;
        assert!(matches!(err, DeltaError::AlreadyExists { .. }), "{err}");
        assert_eq!(attempts, 1);
    }
}
