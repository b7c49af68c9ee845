//! Statistics the catalog knows (from `ANALYZE` and Tarn's writes), given
//! to DataFusion's planner as the statistics of the scans that read them.
//!
//! Parquet footers tell DataFusion a file's rows, nulls and smallest and
//! largest values, but not how many distinct values a column has; CSV and
//! JSON files tell it nothing. Without distinct counts, DataFusion guesses
//! that a `GROUP BY` returns as many rows as it reads, and picks build sides
//! and join modes on that guess. [`CatalogStatistics`], a physical optimizer
//! rule that runs before join selection, finds the table each file scan
//! reads (the location its files start with) and gives the scan:
//!
//! - distinct counts (always estimates, `Inexact`), for any version of the
//!   table: a table's distinct values change slowly;
//! - rows and null counts (`Exact`) and smallest and largest values
//!   (`Inexact`: they went through text) only where DataFusion has none and
//!   the scan reads exactly the files that were analysed (the same digest).
//!
//! Nothing here changes an answer: statistics only steer the plan.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfigBuilder;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use super::proven::rewrite_bottom_up;
use super::{file_versions, scanned};
use crate::catalog::TableStatisticsRecord;

/// The newest statistics of each analysed table, by table name.
#[derive(Debug, Default)]
pub(crate) struct KnownStatistics {
    tables: RwLock<HashMap<String, Arc<TableStatisticsRecord>>>,
}

impl KnownStatistics {
    /// Makes `record` the statistics of its table.
    pub(crate) fn install(&self, record: TableStatisticsRecord) {
        if let Ok(mut tables) = self.tables.write() {
            tables.insert(record.table.clone(), Arc::new(record));
        }
    }

    /// Forgets the statistics of `table` (dropped).
    pub(crate) fn forget(&self, table: &str) {
        if let Ok(mut tables) = self.tables.write() {
            tables.remove(table);
        }
    }

    /// The statistics of the table whose files are `files` (the longest
    /// location they all start with), and whether they are its files
    /// exactly.
    fn for_files(
        &self,
        files: &[file_versions::FileVersion],
    ) -> Option<(Arc<TableStatisticsRecord>, bool)> {
        if files.is_empty() {
            return None;
        }
        let tables = self.tables.read().ok()?;
        let known = tables
            .values()
            .filter(|t| files.iter().all(|f| f.url.starts_with(&t.location)))
            .max_by_key(|t| t.location.len())?;
        let exact = known.files_digest == file_versions::digest(files);
        Some((Arc::clone(known), exact))
    }
}

/// Gives file scans the statistics the catalog knows of their tables (see
/// the module's documentation).
#[derive(Debug)]
pub(crate) struct CatalogStatistics {
    known: Arc<KnownStatistics>,
}

impl CatalogStatistics {
    pub(crate) fn new(known: Arc<KnownStatistics>) -> Self {
        Self { known }
    }
}

impl PhysicalOptimizerRule for CatalogStatistics {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::tarn_settings::TarnSettings::of(config).column_statistics {
            return Ok(plan);
        }
        rewrite_bottom_up(plan, |node| Ok(self.with_known_statistics(node)))
    }

    fn name(&self) -> &str {
        "CatalogStatistics"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl CatalogStatistics {
    /// `node` again with the statistics of its table, if it is a file scan
    /// of an analysed table.
    fn with_known_statistics(&self, node: &dyn ExecutionPlan) -> Option<Arc<dyn ExecutionPlan>> {
        let scan = node.downcast_ref::<DataSourceExec>()?;
        let config = scanned::file_scan(node)?;
        let (known, exact) = self.known.for_files(&file_versions::files_of(config))?;
        let table_schema = Arc::clone(config.file_source().table_schema().table_schema());
        let statistics = merged(config.statistics(), &table_schema, &known, exact);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_statistics(statistics)
            .build();
        Some(Arc::new(scan.clone().with_data_source(Arc::new(config))))
    }
}

/// `current` (the table-wide statistics DataFusion has for a scan) with
/// what `known` adds: distinct counts always, the rest only where `current`
/// has nothing and the scan reads exactly the analysed files.
fn merged(
    mut current: Statistics,
    schema: &arrow::datatypes::Schema,
    known: &TableStatisticsRecord,
    exact: bool,
) -> Statistics {
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if exact && current.num_rows.get_value().is_none() {
        current.num_rows = Precision::Exact(to_usize(known.rows));
    }
    let rows = current.num_rows.get_value().copied();
    for (field, column) in schema
        .fields()
        .iter()
        .zip(current.column_statistics.iter_mut())
    {
        let Some(stats) = known.columns.iter().find(|c| c.name == *field.name()) else {
            continue;
        };
        if let Some(distinct) = stats.distinct_count {
            // Never more distinct values than the scan has rows.
            let distinct = rows.map_or(to_usize(distinct), |r| to_usize(distinct).min(r));
            column.distinct_count = Precision::Inexact(distinct);
        }
        if !exact {
            continue;
        }
        if column.null_count.get_value().is_none()
            && let Some(nulls) = stats.null_count
        {
            column.null_count = Precision::Exact(to_usize(nulls));
        }
        let parse = |text: &Option<String>| {
            text.as_ref()
                .and_then(|t| ScalarValue::try_from_string(t.clone(), field.data_type()).ok())
        };
        if column.min_value.get_value().is_none()
            && let Some(min) = parse(&stats.min)
        {
            column.min_value = Precision::Inexact(min);
        }
        if column.max_value.get_value().is_none()
            && let Some(max) = parse(&stats.max)
        {
            column.max_value = Precision::Inexact(max);
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnStatisticsRecord;
    use arrow::datatypes::{DataType, Field, Schema};

    fn known(digest: &str) -> TableStatisticsRecord {
        TableStatisticsRecord {
            table: "t".into(),
            version: "1".into(),
            files_digest: digest.into(),
            location: "file:///lake/t/".into(),
            rows: 100,
            columns: vec![ColumnStatisticsRecord {
                name: "k".into(),
                data_type: "Int64".into(),
                null_count: Some(2),
                distinct_count: Some(40),
                min: Some("-5".into()),
                max: Some("90".into()),
            }],
        }
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("other", DataType::Utf8, true),
        ])
    }

    #[test]
    fn the_analysed_files_get_every_statistic_datafusion_lacks() {
        let schema = schema();
        let stats = merged(Statistics::new_unknown(&schema), &schema, &known("d"), true);
        assert_eq!(stats.num_rows, Precision::Exact(100));
        let k = &stats.column_statistics[0];
        assert_eq!(k.distinct_count, Precision::Inexact(40));
        assert_eq!(k.null_count, Precision::Exact(2));
        assert_eq!(
            k.min_value,
            Precision::Inexact(ScalarValue::Int64(Some(-5)))
        );
        assert_eq!(
            k.max_value,
            Precision::Inexact(ScalarValue::Int64(Some(90)))
        );
        assert_eq!(stats.column_statistics[1].distinct_count, Precision::Absent);
    }

    #[test]
    fn other_files_of_the_table_get_distinct_counts_only_within_their_rows() {
        let schema = schema();
        let mut current = Statistics::new_unknown(&schema);
        current.num_rows = Precision::Exact(30);
        let stats = merged(current, &schema, &known("d"), false);
        assert_eq!(stats.num_rows, Precision::Exact(30));
        let k = &stats.column_statistics[0];
        assert_eq!(k.distinct_count, Precision::Inexact(30));
        assert_eq!(k.null_count, Precision::Absent);
        assert_eq!(k.min_value, Precision::Absent);
    }

    #[test]
    fn what_datafusion_knows_from_the_files_is_kept() {
        let schema = schema();
        let mut current = Statistics::new_unknown(&schema);
        current.num_rows = Precision::Exact(100);
        current.column_statistics[0].min_value = Precision::Exact(ScalarValue::Int64(Some(-7)));
        let stats = merged(current, &schema, &known("d"), true);
        let k = &stats.column_statistics[0];
        assert_eq!(k.min_value, Precision::Exact(ScalarValue::Int64(Some(-7))));
        assert_eq!(k.distinct_count, Precision::Inexact(40));
    }

    #[test]
    fn a_scan_belongs_to_the_table_whose_location_its_files_start_with() {
        let book = KnownStatistics::default();
        book.install(known("digest"));
        let mut other = known("x");
        other.table = "t_archive".into();
        other.location = "file:///lake/t_archive/".into();
        book.install(other);
        let file = |url: &str| file_versions::FileVersion {
            url: url.into(),
            size: 1,
            modified_nanos: 0,
            e_tag: String::new(),
            version: String::new(),
        };
        let (found, exact) = book.for_files(&[file("file:///lake/t/a.parquet")]).unwrap();
        assert_eq!((found.table.as_str(), exact), ("t", false));
        let (found, _) = book
            .for_files(&[file("file:///lake/t_archive/b.parquet")])
            .unwrap();
        assert_eq!(found.table, "t_archive");
        assert!(
            book.for_files(&[file("file:///lake/u/c.parquet")])
                .is_none()
        );
        book.forget("t");
        assert!(
            book.for_files(&[file("file:///lake/t/a.parquet")])
                .is_none()
        );
    }
}
