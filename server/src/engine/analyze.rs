//! `ANALYZE [TABLE] name`: the column statistics of a table's current
//! version (rows, nulls, smallest and largest values, an estimate of
//! distinct values), computed by one scan, stored in the catalog
//! (`system.column_statistics`) and given to the planner
//! ([`super::known_statistics`]) when the session sets
//! `tarn.column_statistics = true`. Tarn's own writes analyse the version they
//! commit in the background, so tables Tarn writes need no `ANALYZE`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::{DFSchema, DFSchemaRef, ScalarValue, TableReference};
use datafusion::datasource::listing::ListingTable;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::keywords::Keyword;

use super::error::{EngineError, EngineResult};
use super::known_statistics::KnownStatistics;
use super::statement_node::{leaf_statement_node, node_of};
use super::{file_versions, scanned};
use crate::catalog::{CatalogStore, ColumnStatisticsRecord, TableStatisticsRecord};
use crate::delta::DeltaLakeTable;

/// What analysing a table needs: the engine's own context (the raw table,
/// no user's masks), where statistics are stored and where the planner
/// finds them.
#[derive(Clone)]
pub(crate) struct Analyzer {
    pub(crate) ctx: SessionContext,
    pub(crate) catalog: Option<Arc<dyn CatalogStore>>,
    pub(crate) known: Arc<KnownStatistics>,
    /// Tables whose statistics are being computed after a write, so that
    /// writes in quick succession start one scan each at most.
    pub(crate) pending: Arc<Mutex<HashSet<String>>>,
}

impl super::Engine {
    /// Gives the planner the column statistics stored in the catalog (at
    /// start, before serving).
    pub async fn load_statistics(&self) -> EngineResult<()> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        let stored = catalog.latest_statistics().await.map_err(|e| {
            EngineError::Internal(format!("cannot read the stored column statistics: {e}"))
        })?;
        for table in stored {
            self.analyzer.known.install(table);
        }
        Ok(())
    }
}

impl Analyzer {
    /// Computes, stores and installs the statistics of `name` (as a
    /// statement names it) at its current version.
    pub(crate) async fn analyze(&self, name: &str) -> EngineResult<TableStatisticsRecord> {
        let reference = TableReference::parse_str(name);
        let table = crate::names::table_name(&reference);
        let ctx = without_data_cache(&self.ctx);
        if !matches!(ctx.table_exist(reference.clone()), Ok(true)) {
            return Err(EngineError::TableNotFound {
                name: name.to_string(),
            });
        }
        let provider = ctx
            .table_provider(reference.clone())
            .await
            .map_err(EngineError::from_planning)?;
        // The version analysed: the files a scan of the whole table reads now.
        let scan = ctx
            .table(reference.clone())
            .await
            .map_err(EngineError::from_planning)?
            .create_physical_plan()
            .await
            .map_err(EngineError::from_planning)?;
        let mut files = Vec::new();
        let only_files = scanned::visit_file_scans(&scan, &mut |config| {
            files.extend(file_versions::files_of(config))
        });
        if !only_files || files.is_empty() {
            return Err(EngineError::Plan(format!(
                "ANALYZE reads tables of files, and {table} is not one (a view, a system table or an empty table)"
            )));
        }
        let single_file = provider
            .downcast_ref::<ListingTable>()
            .and_then(|listing| listing.table_paths().first())
            .is_some_and(|path| !path.as_str().ends_with('/'));
        let digest = file_versions::digest(&files);
        let version = match provider
            .downcast_ref::<DeltaLakeTable>()
            .and_then(DeltaLakeTable::version_stats)
        {
            Some(stats) => stats.version.to_string(),
            None => format!("files:{digest}"),
        };
        let schema = provider.schema();
        let summary = ctx
            .sql(&summary_sql(name, &schema))
            .await
            .map_err(EngineError::from_planning)?
            .collect()
            .await
            .map_err(EngineError::from_execution)?;
        let record = TableStatisticsRecord {
            table,
            version,
            files_digest: digest,
            location: location(&files, single_file),
            rows: 0,
            columns: Vec::new(),
        };
        let record = read_summary(record, &schema, &summary)?;
        if let Some(catalog) = &self.catalog {
            catalog
                .record_statistics(record.clone())
                .await
                .map_err(|e| {
                    EngineError::Internal(format!(
                        "the statistics were computed, but the catalog could not store them: {e}"
                    ))
                })?;
        }
        self.known.install(record.clone());
        Ok(record)
    }

    /// Analyses `name` again soon (after a write committed a new version of
    /// it), unless that is already under way.
    pub(crate) fn analyze_soon(&self, runtime: &crate::runtime::CpuRuntime, name: String) {
        let newly_pending = self
            .pending
            .lock()
            .map(|mut pending| pending.insert(name.clone()))
            .unwrap_or(false);
        if !newly_pending {
            return;
        }
        let analyzer = self.clone();
        runtime.spawn(async move {
            // A write that commits while this runs finds `name` pending and
            // leaves it; the scan below starts after this point, so it
            // reads that write's version or a newer one.
            if let Ok(mut pending) = analyzer.pending.lock() {
                pending.remove(&name);
            }
            if let Err(err) = analyzer.analyze(&name).await {
                tracing::warn!(target: "tarn::statistics", table = %name, "statistics after a write: {err}");
            }
        });
    }
}

/// The prefix every file of the table starts with: the file itself for a
/// table of one file, else the folder all its files are in.
pub(crate) fn location(files: &[file_versions::FileVersion], single_file: bool) -> String {
    let first = files.first().map(|f| f.url.as_str()).unwrap_or_default();
    if single_file {
        return first.to_string();
    }
    let mut prefix = first;
    for file in files {
        let common = prefix
            .char_indices()
            .zip(file.url.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, c), _)| i + c.len_utf8());
        prefix = &prefix[..common];
    }
    match prefix.rfind('/') {
        Some(slash) => prefix[..=slash].to_string(),
        None => prefix.to_string(),
    }
}

/// Which summaries a column of `data_type` gets: smallest and largest
/// values, and a distinct-count estimate.
fn summaries(data_type: &DataType) -> (bool, bool) {
    use DataType::*;
    match data_type {
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Date32
        | Date64
        | Time32(_)
        | Time64(_)
        | Timestamp(_, _)
        | Decimal32(_, _)
        | Decimal64(_, _)
        | Decimal128(_, _)
        | Decimal256(_, _)
        | Utf8
        | LargeUtf8
        | Utf8View => (true, true),
        Float16 | Float32 | Float64 => (true, false),
        Boolean => (true, true),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => (false, true),
        _ => (false, false),
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One aggregate over the whole table: `count(*)`, then per column its
/// non-null count and the summaries its type has.
/// `ctx` for a maintenance read: its scans neither read held columns nor
/// count towards making them hot (else every write, analysed after its
/// commit, would load the whole new version into the data cache).
fn without_data_cache(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    if let Err(e) = state
        .config_mut()
        .options_mut()
        .set("tarn.data_cache", "false")
    {
        tracing::warn!("ANALYZE scans through the data cache: {e}");
    }
    SessionContext::new_with_state(state)
}

fn summary_sql(table: &str, schema: &Schema) -> String {
    let mut select = vec!["count(*)".to_string()];
    for field in schema.fields() {
        let column = quoted(field.name());
        select.push(format!("count({column})"));
        let (min_max, distinct) = summaries(field.data_type());
        if min_max {
            select.push(format!("min({column})"));
            select.push(format!("max({column})"));
        }
        if distinct {
            select.push(format!("approx_distinct({column})"));
        }
    }
    format!("SELECT {} FROM {table}", select.join(", "))
}

/// `record` with the rows and columns of the one-row answer of [`summary_sql`].
fn read_summary(
    mut record: TableStatisticsRecord,
    schema: &Schema,
    summary: &[RecordBatch],
) -> EngineResult<TableStatisticsRecord> {
    let row = summary
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| EngineError::Internal("ANALYZE's summary returned no row".into()))?;
    let mut next = 0;
    let mut value = || -> EngineResult<ScalarValue> {
        let column = row
            .columns()
            .get(next)
            .ok_or_else(|| EngineError::Internal("ANALYZE's summary is short".into()))?;
        next += 1;
        ScalarValue::try_from_array(column.as_ref(), 0).map_err(EngineError::from_execution)
    };
    let count = |v: ScalarValue| match v {
        ScalarValue::Int64(Some(n)) => u64::try_from(n).ok(),
        ScalarValue::UInt64(Some(n)) => Some(n),
        _ => None,
    };
    let text = |v: ScalarValue| (!v.is_null()).then(|| v.to_string());
    record.rows = count(value()?).unwrap_or(0);
    for field in schema.fields() {
        let non_null = count(value()?).unwrap_or(0);
        let (min_max, distinct) = summaries(field.data_type());
        let (min, max) = match min_max {
            true => (text(value()?), text(value()?)),
            false => (None, None),
        };
        let distinct_count = match distinct {
            true => count(value()?).map(|n| n.min(non_null)),
            false => None,
        };
        record.columns.push(ColumnStatisticsRecord {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            null_count: Some(record.rows.saturating_sub(non_null)),
            distinct_count,
            min,
            max,
        });
    }
    Ok(record)
}

/// `ANALYZE [TABLE] name` as a plan node: planned, recorded as a run and
/// run like any other statement (DataFusion has no such statement).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AnalyzeTableNode {
    /// The table, as the statement names it.
    name: String,
    schema: DFSchemaRef,
}

impl AnalyzeTableNode {
    /// The table of `sql` if it is `ANALYZE [TABLE] name` (with an
    /// optional `;`), read with the SQL tokenizer.
    pub(crate) fn parse(sql: &str) -> Option<String> {
        crate::sql_text::table_after(sql, &[Keyword::ANALYZE], Some(Keyword::TABLE))
    }

    /// The plan of `ANALYZE TABLE name`.
    pub(crate) fn plan(name: String) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                name,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    /// The table `plan` analyses, if it is an `ANALYZE`.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&str> {
        node_of::<Self>(plan).map(|node| node.name.as_str())
    }
}

leaf_statement_node!(AnalyzeTableNode, "AnalyzeTable", name, |node| node.name);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn analyze_statements_are_recognised_by_their_tokens() {
        let parse = AnalyzeTableNode::parse;
        assert_eq!(parse("ANALYZE TABLE events").as_deref(), Some("events"));
        assert_eq!(parse("analyze events;").as_deref(), Some("events"));
        assert_eq!(
            parse("ANALYZE TABLE public.\"My Events\"").as_deref(),
            Some("public.\"My Events\"")
        );
        for other in [
            "ANALYZE",
            "ANALYZE TABLE a b",
            "SELECT 'ANALYZE x'",
            "EXPLAIN ANALYZE SELECT 1",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    fn file(url: &str) -> file_versions::FileVersion {
        file_versions::FileVersion {
            url: url.into(),
            size: 1,
            modified_nanos: 0,
            e_tag: String::new(),
            version: String::new(),
        }
    }

    #[test]
    fn a_tables_location_is_the_folder_its_files_share_or_its_one_file() {
        let files = [
            file("file:///lake/sales/region=EU/part-0.parquet"),
            file("file:///lake/sales/region=US/part-0.parquet"),
        ];
        assert_eq!(location(&files, false), "file:///lake/sales/");
        let one = [file("file:///lake/lineitem.parquet")];
        assert_eq!(location(&one, true), "file:///lake/lineitem.parquet");
        assert_eq!(location(&one, false), "file:///lake/");
    }

    #[test]
    fn each_column_is_summarised_as_its_type_allows() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Float64, true),
            Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
            Field::new("we\"ird", DataType::Utf8, true),
        ]);
        assert_eq!(
            summary_sql("t", &schema),
            "SELECT count(*), count(\"id\"), min(\"id\"), max(\"id\"), approx_distinct(\"id\"), \
             count(\"price\"), min(\"price\"), max(\"price\"), count(\"tags\"), \
             count(\"we\"\"ird\"), min(\"we\"\"ird\"), max(\"we\"\"ird\"), approx_distinct(\"we\"\"ird\") FROM t"
        );
    }
}
