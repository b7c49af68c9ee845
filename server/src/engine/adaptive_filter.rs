//! A hash join's dynamic filter that stops filtering rows when it does not
//! pay for itself.
//!
//! Applied while decoding a probe-side scan, a join's dynamic filter skips
//! decoding and joining the rows whose keys the build side lacks (Q17: the
//! 204 parts of one brand keep 3% of lineitem). But it costs a lookup per
//! row, and a join that partitions both sides routes each row to its
//! partition's table with a `CASE` over the row's hash: the join's own work
//! done twice. When the filter keeps most rows, that work buys nothing (Q21
//! ran 1.6x slower with every join filter applied row by row, Q5 1.4x).
//!
//! [`AdaptiveJoinFilter`] wraps such a filter in a scan's predicate. Once
//! the join has finished its filter, the first [`SAMPLE_ROWS`] rows that
//! meet it decide whether it keeps filtering or answers `true` without
//! evaluating from then on. The bar depends on the join
//! ([`FilterCost`]): the filter of a join that collects its build side once
//! is one lookup per row and keeps filtering if it removes half the rows;
//! the routed filter of a partitioned join only if it removes 90% (a year
//! of orders removes 86% of lineitem, and Q5 and Q8 ran 1.4x slower for
//! filtering it; Q17's brand and Q18's large orders remove over 97%). The
//! verdict is shared by every partition of the scan, so one decision serves
//! the whole query; a new query plans a new one.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;

/// Rows a filter is measured on before its verdict.
pub(crate) const SAMPLE_ROWS: u64 = 65_536;

/// What evaluating a join's filter on a row costs, which sets how many
/// rows it must remove to be worth it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FilterCost {
    /// One lookup in the join's one table (`CollectLeft`).
    Lookup,
    /// The row's hash routed to its partition's table (`Partitioned`).
    Routed,
}

impl FilterCost {
    /// The largest share of the rows the filter may keep and still filter.
    fn keep_at_most(self) -> f64 {
        match self {
            Self::Lookup => 0.5,
            Self::Routed => 0.1,
        }
    }
}

const MEASURING: u8 = 0;
const FILTERING: u8 = 1;
const SKIPPING: u8 = 2;

/// What the sample showed, shared by every copy of one wrapped filter.
#[derive(Debug, Default)]
struct Verdict {
    seen: AtomicU64,
    kept: AtomicU64,
    state: AtomicU8,
}

impl Verdict {
    /// Counts a measured batch; decides once the sample is complete.
    fn count(&self, rows: u64, kept: u64, cost: FilterCost) {
        let kept = self.kept.fetch_add(kept, Ordering::Relaxed) + kept;
        let seen = self.seen.fetch_add(rows, Ordering::Relaxed) + rows;
        if seen >= SAMPLE_ROWS {
            let state = match (kept as f64) <= cost.keep_at_most() * seen as f64 {
                true => FILTERING,
                false => SKIPPING,
            };
            let _ =
                self.state
                    .compare_exchange(MEASURING, state, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }
}

/// A join's dynamic filter that is applied only while it removes enough
/// rows (see the module's documentation).
#[derive(Debug, Clone)]
pub(crate) struct AdaptiveJoinFilter {
    /// The join's filter, its columns those of the scan.
    filter: Arc<dyn PhysicalExpr>,
    cost: FilterCost,
    verdict: Arc<Verdict>,
}

impl AdaptiveJoinFilter {
    pub(crate) fn wrap(filter: Arc<dyn PhysicalExpr>, cost: FilterCost) -> Arc<dyn PhysicalExpr> {
        Arc::new(Self {
            filter,
            cost,
            verdict: Arc::default(),
        })
    }

    /// Whether the join has finished its filter, so that what it keeps
    /// now is what it will keep: a hash join replaces its filter once, when
    /// every partition of its build side is in (generation 1 to 2).
    fn is_final(&self) -> bool {
        self.filter
            .downcast_ref::<DynamicFilterPhysicalExpr>()
            .is_none()
            || self.filter.snapshot_generation() > 1
    }
}

impl PhysicalExpr for AdaptiveJoinFilter {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.filter.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.verdict.state() {
            SKIPPING => return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))),
            FILTERING => return self.filter.evaluate(batch),
            _ => {}
        }
        let result = self.filter.evaluate(batch)?;
        if self.is_final() && batch.num_rows() > 0 {
            let kept = match &result {
                ColumnarValue::Array(array) => array
                    .as_boolean_opt()
                    .map_or(array.len(), |mask| mask.true_count()),
                ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => batch.num_rows(),
                ColumnarValue::Scalar(_) => 0,
            };
            self.verdict
                .count(batch.num_rows() as u64, kept as u64, self.cost);
        }
        Ok(result)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.filter]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [filter] = <[_; 1]>::try_from(children).map_err(|children| {
            datafusion::error::DataFusionError::Internal(format!(
                "an adaptive join filter has one child, not {}",
                children.len()
            ))
        })?;
        // The copy a file's reader makes (its columns rewritten) shares the
        // verdict: one decision per scan.
        Ok(Arc::new(Self {
            filter,
            cost: self.cost,
            verdict: Arc::clone(&self.verdict),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.filter.fmt_sql(f)
    }
}

impl fmt::Display for AdaptiveJoinFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.verdict.state() {
            FILTERING => "filtering",
            SKIPPING => "skipped",
            _ => "measuring",
        };
        write!(f, "AdaptiveJoinFilter({state}) [ {} ]", self.filter)
    }
}

impl PartialEq for AdaptiveJoinFilter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.verdict, &other.verdict)
            && self.cost == other.cost
            && self.filter.as_ref() == other.filter.as_ref()
    }
}

impl Eq for AdaptiveJoinFilter {}

impl Hash for AdaptiveJoinFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.verdict).hash(state);
        self.filter.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};

    fn batch(values: impl IntoIterator<Item = i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let values: Int64Array = values.into_iter().collect();
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    /// `k < limit` as a finished dynamic filter over the column `k`.
    fn finished_filter(limit: i64) -> Arc<dyn PhysicalExpr> {
        let schema = batch([]).schema();
        let k = col("k", &schema).unwrap();
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![Arc::clone(&k)],
            lit(true),
        ));
        dynamic
            .update(Arc::new(BinaryExpr::new(k, Operator::Lt, lit(limit))))
            .unwrap();
        dynamic
    }

    fn kept(filter: &Arc<dyn PhysicalExpr>, rows: &RecordBatch) -> usize {
        let result = filter
            .evaluate(rows)
            .unwrap()
            .into_array(rows.num_rows())
            .unwrap();
        result.as_boolean().true_count()
    }

    #[test]
    fn a_filter_that_removes_most_rows_keeps_filtering() {
        let filter = AdaptiveJoinFilter::wrap(finished_filter(10), FilterCost::Routed);
        let rows = batch(0..SAMPLE_ROWS as i64);
        assert_eq!(kept(&filter, &rows), 10);
        assert_eq!(kept(&filter, &rows), 10, "still filtering after the sample");
        assert!(filter.to_string().contains("filtering"), "{filter}");
    }

    #[test]
    fn a_filter_that_keeps_most_rows_is_skipped_after_the_sample() {
        let filter =
            AdaptiveJoinFilter::wrap(finished_filter(SAMPLE_ROWS as i64 - 10), FilterCost::Lookup);
        let rows = batch(0..SAMPLE_ROWS as i64);
        assert_eq!(kept(&filter, &rows), SAMPLE_ROWS as usize - 10, "measured");
        assert_eq!(kept(&filter, &rows), SAMPLE_ROWS as usize, "skipped");
        assert!(filter.to_string().contains("skipped"), "{filter}");
    }

    #[test]
    fn a_routed_filter_must_remove_more_rows_than_a_lookup() {
        let removes_80_percent = || finished_filter(SAMPLE_ROWS as i64 / 5);
        let rows = batch(0..SAMPLE_ROWS as i64);
        let lookup = AdaptiveJoinFilter::wrap(removes_80_percent(), FilterCost::Lookup);
        let routed = AdaptiveJoinFilter::wrap(removes_80_percent(), FilterCost::Routed);
        kept(&lookup, &rows);
        kept(&routed, &rows);
        assert!(lookup.to_string().contains("filtering"), "{lookup}");
        assert!(routed.to_string().contains("skipped"), "{routed}");
    }

    #[test]
    fn a_copy_with_new_columns_shares_the_verdict() {
        let filter =
            AdaptiveJoinFilter::wrap(finished_filter(SAMPLE_ROWS as i64 - 10), FilterCost::Lookup);
        let copy = Arc::clone(&filter)
            .with_new_children(vec![finished_filter(SAMPLE_ROWS as i64 - 10)])
            .unwrap();
        kept(&filter, &batch(0..SAMPLE_ROWS as i64));
        assert!(copy.to_string().contains("skipped"), "{copy}");
    }

    #[test]
    fn rows_seen_before_the_join_finished_its_filter_decide_nothing() {
        let schema = batch([]).schema();
        let k = col("k", &schema).unwrap();
        let unfinished: Arc<dyn PhysicalExpr> =
            Arc::new(DynamicFilterPhysicalExpr::new(vec![k], lit(true)));
        let filter = AdaptiveJoinFilter::wrap(unfinished, FilterCost::Lookup);
        let rows = batch(0..SAMPLE_ROWS as i64);
        assert_eq!(kept(&filter, &rows), SAMPLE_ROWS as usize);
        assert!(filter.to_string().contains("measuring"), "{filter}");
    }
}
