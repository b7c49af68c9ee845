//! `HeldColumns`, the last physical optimizer rule: a Parquet scan whose
//! needed columns of every file are held in the decoded-data cache
//! ([`super::data_cache`]) becomes a `CachedScanExec`, which sends their
//! chunks as batches (no copy), applies the scan's row filter where the
//! scan would have, and projects them as the scan would have. It decodes
//! nothing.
//!
//! Scans keep their own shape: the same output schema and number of
//! partitions; partition columns are the file's values. Scans that promise
//! an order or are not Parquet are left alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::projection::{ProjectionExprs, Projector};
use datafusion::physical_expr::utils::reassign_expr_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use super::column_chunks::Chunks;
use super::data_cache::DataCache;
use super::file_versions::{FileVersion, version_of};
use super::scanned::file_scan;

/// The rule (see the module's documentation).
#[derive(Debug)]
pub(crate) struct HeldColumns {
    cache: Arc<DataCache>,
}

impl HeldColumns {
    pub(crate) fn new(cache: Arc<DataCache>) -> Self {
        Self { cache }
    }
}

impl PhysicalOptimizerRule for HeldColumns {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !self.cache.enabled() || !super::tarn_settings::TarnSettings::of(config).data_cache {
            return Ok(plan);
        }
        super::proven::rewrite_bottom_up(plan, |node| {
            Ok(held_scan(&self.cache, node)?.map(|scan| scan as _))
        })
    }

    fn name(&self) -> &str {
        "HeldColumns"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each scan of held columns shown as the file scan it stands
/// for (what the result cache keys answers by).
pub(crate) fn as_file_scans(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let rewritten = super::proven::rewrite_bottom_up(Arc::clone(plan), |node| {
        Ok(node
            .downcast_ref::<CachedScanExec>()
            .map(|held| Arc::clone(&held.scan) as _))
    });
    rewritten.unwrap_or_else(|_| Arc::clone(plan))
}

/// A Parquet source reading the table's columns as `template` does (its
/// options and reader), with no projection, predicate or row filter.
pub(crate) fn plain_source(template: &FileScanConfig) -> Option<Arc<dyn FileSource>> {
    let parquet = template.file_source.downcast_ref::<ParquetSource>()?;
    let mut plain = ParquetSource::new(template.file_source.table_schema().clone())
        .with_table_parquet_options(parquet.table_parquet_options().clone())
        .with_pushdown_filters(false);
    if let Some(reader) = parquet.parquet_file_reader_factory() {
        plain = plain.with_parquet_file_reader_factory(Arc::clone(reader));
    }
    Some(Arc::new(plain))
}

/// The scan `node` as a scan of held columns, when they are all held.
fn held_scan(
    cache: &Arc<DataCache>,
    node: &dyn ExecutionPlan,
) -> Result<Option<Arc<CachedScanExec>>> {
    let Some(config) = file_scan(node) else {
        return Ok(None);
    };
    if node.is::<CachedScanExec>() || !config.output_ordering.is_empty() {
        return Ok(None);
    }
    let Some(parquet) = config.file_source.downcast_ref::<ParquetSource>() else {
        return Ok(None);
    };
    let table = Arc::clone(config.file_source.table_schema().table_schema());
    let projection = match config.file_source.projection() {
        Some(projection) => projection.clone(),
        None => {
            ProjectionExprs::from_indices(&(0..table.fields().len()).collect::<Vec<_>>(), &table)
        }
    };
    // The decoder applies the predicate row by row only with pushdown on;
    // otherwise it only prunes, and a filter above does the rest.
    let filter = config
        .file_source
        .filter()
        .filter(|_| parquet.table_parquet_options().global.pushdown_filters);
    let mut needed = projection.column_indices();
    if let Some(filter) = &filter {
        needed.extend(
            datafusion::physical_expr::utils::collect_columns(filter)
                .iter()
                .map(|c| c.index()),
        );
    }
    needed.sort_unstable();
    needed.dedup();
    // Partition columns (Hive folders, Delta's file ids) are constants per
    // file; the rest are held. `count(*)` needs no column: the footers
    // already answer it fast.
    let file_columns = config.file_schema().fields().len();
    let held: Vec<String> = needed
        .iter()
        .filter(|&&i| i < file_columns)
        .map(|&i| table.field(i).name().clone())
        .collect();
    if held.is_empty() {
        return Ok(None);
    }
    let narrow = Arc::new(table.project(&needed)?);
    let mut partition_values = BTreeMap::new();
    for file in config.file_groups.iter().flat_map(|group| group.files()) {
        partition_values.insert(version_of(config, file), file.partition_values.clone());
    }
    let files: Vec<FileVersion> = partition_values.keys().cloned().collect();
    let Some(arrays) = cache.lookup(&files, &held, config) else {
        return Ok(None);
    };
    let files = files
        .iter()
        .zip(arrays)
        .map(|(file, held)| {
            let chunk_rows = held
                .first()
                .map(|chunks| chunks.iter().map(|chunk| chunk.len()).collect())
                .unwrap_or_default();
            let mut held = held.into_iter();
            let values = &partition_values[file];
            let columns = needed
                .iter()
                .map(|&i| match i.checked_sub(file_columns) {
                    None => held.next().map(HeldColumn::Chunks),
                    Some(p) => values.get(p).cloned().map(HeldColumn::Constant),
                })
                .collect::<Option<Vec<_>>>();
            columns.map(|columns| HeldFile {
                chunk_rows,
                columns,
            })
        })
        .collect::<Option<Vec<_>>>();
    let Some(files) = files else {
        return Ok(None);
    };
    let filter = filter
        .map(|filter| reassign_expr_columns(filter, &narrow))
        .transpose()?;
    let projection = projection.try_map_exprs(|expr| reassign_expr_columns(expr, &narrow))?;
    let projector = projection.make_projector(&narrow)?;
    let schema = Arc::clone(projector.output_schema());
    let partitions = config.file_groups.len().max(1);
    let properties = PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(&schema)),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    );
    Ok(Some(Arc::new(CachedScanExec {
        config: config.clone(),
        scan: DataSourceExec::from_data_source(config.clone()),
        held: Arc::new(Held {
            narrow,
            files,
            filter,
            projector,
        }),
        limit: config.limit,
        properties: Arc::new(properties),
        metrics: ExecutionPlanMetricsSet::new(),
    })))
}

/// A scan answered from held columns (see the module's documentation).
#[derive(Debug)]
pub(crate) struct CachedScanExec {
    /// The scan it stands for: its files (for the result cache and the
    /// catalog's statistics) and its statistics (for EXPLAIN).
    scan: Arc<DataSourceExec>,
    config: FileScanConfig,
    held: Arc<Held>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CachedScanExec {
    /// The file scan this one stands for.
    pub(crate) fn scan(&self) -> &FileScanConfig {
        &self.config
    }
}

/// The arrays a `CachedScanExec` sends and how it cuts, filters and
/// projects them.
#[derive(Debug)]
struct Held {
    /// The columns held, in table order.
    narrow: SchemaRef,
    /// Per file, the `narrow` columns.
    files: Vec<HeldFile>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    projector: Projector,
}

/// The columns of one file a scan needs.
#[derive(Debug)]
struct HeldFile {
    /// The rows of each chunk (the same in every held column of a file).
    chunk_rows: Vec<usize>,
    columns: Vec<HeldColumn>,
}

#[derive(Debug)]
enum HeldColumn {
    /// A column of the file, decoded.
    Chunks(Chunks),
    /// A partition column: one value for the whole file.
    Constant(ScalarValue),
}

impl Held {
    /// The chunks partition `partition` of `partitions` sends, as (file,
    /// chunk): every `partitions`-th chunk of the files, in turn.
    fn slices(&self, partition: usize, partitions: usize) -> Vec<(usize, usize)> {
        self.files
            .iter()
            .enumerate()
            .flat_map(|(file, held)| (0..held.chunk_rows.len()).map(move |chunk| (file, chunk)))
            .enumerate()
            .filter(|(index, _)| index % partitions == partition)
            .map(|(_, slice)| slice)
            .collect()
    }

    fn batch(&self, (file, chunk): (usize, usize)) -> Result<RecordBatch> {
        let held = &self.files[file];
        let rows = held.chunk_rows[chunk];
        let columns = held
            .columns
            .iter()
            .map(|column| match column {
                HeldColumn::Chunks(chunks) => Ok(Arc::clone(&chunks[chunk])),
                HeldColumn::Constant(value) => value.to_array_of_size(rows),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut batch = RecordBatch::try_new(Arc::clone(&self.narrow), columns)?;
        if let Some(filter) = &self.filter {
            let keep = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
            let keep = arrow::array::as_boolean_array(&keep);
            batch = filter_record_batch(&batch, keep)?;
        }
        self.projector.project_batch(&batch)
    }
}

impl DisplayAs for CachedScanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let held = &self.held;
        let columns: Vec<&str> = held
            .narrow
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "CachedScanExec: files={}, columns=[{}]",
            held.files.len(),
            columns.join(", ")
        )?;
        if let Some(filter) = &held.filter {
            write!(f, ", predicate={filter}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CachedScanExec {
    fn name(&self) -> &str {
        "CachedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.held.filter {
            Some(filter) => f(filter),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        let slices = self.held.slices(partition, partitions);
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let held = Arc::clone(&self.held);
        let mut left = self.limit.unwrap_or(usize::MAX);
        let batches = slices.into_iter().map_while(move |slice| {
            if left == 0 {
                return None;
            }
            let timer = metrics.elapsed_compute().timer();
            let batch = held.batch(slice).map(|batch| {
                let batch = if batch.num_rows() > left {
                    batch.slice(0, left)
                } else {
                    batch
                };
                left -= batch.num_rows();
                batch
            });
            timer.done();
            if let Ok(batch) = &batch {
                metrics.record_output(batch.num_rows());
            }
            Some(batch)
        });
        let batches = batches.filter(|batch| batch.as_ref().map_or(true, |b| b.num_rows() > 0));
        let stream = RecordBatchStreamAdapter::new(
            Arc::clone(self.held.projector.output_schema()),
            futures::stream::iter(batches),
        );
        Ok(datafusion::physical_plan::coop::make_cooperative(Box::pin(
            stream,
        )))
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.scan.statistics_from_inputs(input_stats, args)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
