//! `time_travel(table, version | timestamp)`: an earlier version of a Delta
//! table, as a table function.
//!
//! ```sql
//! SELECT count(*) FROM time_travel('sales', 0);                        -- version 0
//! SELECT * FROM time_travel('sales', '2026-11-22T07:00:00Z');          -- as of a time (UTC)
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::catalog::{
    CatalogProviderList, Session, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{ScalarValue, TableReference, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use super::{DEFAULT_CATALOG, DEFAULT_SCHEMA};
use crate::delta::{DeltaLakeTable, TableVersion};

const USAGE: &str = "time_travel takes a table name and a version number or a UTC time: time_travel('sales', 3) or time_travel('sales', '2026-11-22 07:00:00')";

/// The `time_travel` table function.
#[derive(Debug)]
pub(crate) struct TimeTravel {
    catalogs: Arc<dyn CatalogProviderList>,
}

impl TimeTravel {
    pub(crate) fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self { catalogs }
    }

    fn table(&self, name: &str) -> DataFusionResult<Arc<dyn TableProvider>> {
        let reference = TableReference::parse_str(name);
        let catalog = reference.catalog().unwrap_or(DEFAULT_CATALOG);
        let schema = reference.schema().unwrap_or(DEFAULT_SCHEMA);
        let not_found =
            || DataFusionError::Plan(format!("time_travel: there is no table '{name}'"));
        let schema = self
            .catalogs
            .catalog(catalog)
            .and_then(|c| c.schema(schema))
            .ok_or_else(not_found)?;
        // Registered tables are held in memory: this lookup does no I/O.
        futures::executor::block_on(schema.table(reference.table()))?.ok_or_else(not_found)
    }
}

impl TableFunctionImpl for TimeTravel {
    fn call_with_args(&self, args: TableFunctionArgs) -> DataFusionResult<Arc<dyn TableProvider>> {
        let [name, when] = args.exprs() else {
            return plan_err!("{USAGE}");
        };
        let Expr::Literal(ScalarValue::Utf8(Some(name)), _) = name else {
            return plan_err!("{USAGE}");
        };
        let version = match when {
            Expr::Literal(value, _) => version_of(value)?,
            _ => return plan_err!("{USAGE}"),
        };
        let table = self.table(name)?;
        if table.downcast_ref::<DeltaLakeTable>().is_none() {
            return plan_err!(
                "'{name}' is not a Delta table: only tables written by Tarn (or other Delta writers) keep earlier versions"
            );
        }
        Ok(Arc::new(PastVersion { table, version }))
    }
}

fn version_of(value: &ScalarValue) -> DataFusionResult<TableVersion> {
    let number = |n: i64| {
        u64::try_from(n)
            .map(TableVersion::Number)
            .map_err(|_| DataFusionError::Plan(format!("version {n}: versions start at 0")))
    };
    match value {
        ScalarValue::Int64(Some(n)) => number(*n),
        ScalarValue::Int32(Some(n)) => number(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => Ok(TableVersion::Number(*n)),
        ScalarValue::Utf8(Some(text)) => parse_time(text).map(TableVersion::AsOf),
        ScalarValue::TimestampNanosecond(Some(ns), _) => {
            Ok(TableVersion::AsOf(DateTime::from_timestamp_nanos(*ns)))
        }
        _ => plan_err!("{USAGE}"),
    }
}

/// RFC 3339 (`2026-11-22T07:00:00Z`), `2026-11-22 07:00:00[.fff]` (UTC) or a date.
fn parse_time(text: &str) -> DataFusionResult<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    plan_err!("cannot read '{text}' as a time; {USAGE}")
}

/// One earlier version of a Delta table.
#[derive(Debug)]
struct PastVersion {
    table: Arc<dyn TableProvider>,
    version: TableVersion,
}

#[async_trait::async_trait]
impl TableProvider for PastVersion {
    /// The current schema; a version with another schema fails at scan time
    /// rather than being read with the wrong columns.
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        let Some(delta) = self.table.downcast_ref::<DeltaLakeTable>() else {
            return plan_err!("not a Delta table");
        };
        let past = delta.at(self.version).await.map_err(|e| match e {
            // Kept whole: the files being gone is not a mistake in the statement.
            crate::delta::DeltaError::FilesGone { .. } => DataFusionError::External(Box::new(e)),
            other => DataFusionError::Plan(other.to_string()),
        })?;
        let columns = |schema: SchemaRef| -> Vec<(String, arrow::datatypes::DataType)> {
            schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        if columns(past.schema()) != columns(self.schema()) {
            return plan_err!(
                "{} of {} has other columns than the table has now; time travel reads versions with the current columns only",
                self.version,
                delta.location()
            );
        }
        past.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_times_are_read() {
        assert_eq!(
            version_of(&ScalarValue::Int64(Some(3))).unwrap(),
            TableVersion::Number(3)
        );
        assert!(version_of(&ScalarValue::Int64(Some(-1))).is_err());
        let noon = parse_time("2026-11-22 12:00:00").unwrap();
        assert_eq!(noon, parse_time("2026-11-22T12:00:00Z").unwrap());
        assert_eq!(noon.timestamp(), 1_795_348_800);
        assert!(parse_time("yesterday").is_err());
    }
}
