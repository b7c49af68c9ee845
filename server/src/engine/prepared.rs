//! Prepared statements: a plan with placeholders, and the parameter rows
//! bound to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;

use super::error::{EngineError, EngineResult};
use super::wire::WireTypes;

super::ids::random_id!(
    /// An unguessable name for a prepared statement.
    PreparedStatementId
);

/// What a client learns when it prepares a statement.
#[derive(Debug, Clone)]
pub struct PreparedStatementInfo {
    /// The handle to execute, bind and close it with.
    pub id: PreparedStatementId,
    /// The schema of its result (empty for statements that return no rows).
    pub dataset_schema: SchemaRef,
    /// One field per placeholder, in order (`$1`, `$2`, ...).
    pub parameter_schema: SchemaRef,
}

struct Prepared {
    sql: String,
    plan: LogicalPlan,
    dataset_schema: SchemaRef,
    parameters: Vec<String>,
    /// The type each placeholder was inferred to have (`Null` when unknown).
    parameter_types: Vec<DataType>,
    bound: Vec<ParamValues>,
    last_used: Instant,
    /// The user who prepared it: nobody else may use it.
    owner: String,
    /// The session that prepared it (what its cap counts).
    session: String,
}

pub(super) struct PreparedStatements {
    ttl: Duration,
    statements: Mutex<HashMap<PreparedStatementId, Prepared>>,
}

impl std::fmt::Debug for PreparedStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedStatements")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PreparedStatements {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            statements: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn insert(
        &self,
        sql: &str,
        plan: LogicalPlan,
        dataset_schema: SchemaRef,
        wire: WireTypes,
        session: &super::Session,
        cap: usize,
    ) -> EngineResult<PreparedStatementInfo> {
        let fields = plan
            .get_parameter_fields()
            .map_err(|e| EngineError::Plan(e.strip_backtrace()))?;
        let mut parameters: Vec<(String, DataType)> = fields
            .into_iter()
            .map(|(name, field)| {
                let data_type = field.map_or(DataType::Null, |f| f.data_type().clone());
                (name, data_type)
            })
            .collect();
        parameters.sort_by_key(|(name, _)| placeholder_order(name));
        let parameter_schema = Arc::new(Schema::new(
            parameters
                .iter()
                .map(|(name, data_type)| Field::new(name, wire.wire_type(data_type), true))
                .collect::<Vec<_>>(),
        ));
        let id = PreparedStatementId::random();
        let now = Instant::now();
        let mut statements = self.lock();
        statements.retain(|_, s| now.duration_since(s.last_used) < self.ttl);
        let open = statements
            .values()
            .filter(|s| s.session == session.id())
            .count();
        if open >= cap {
            return Err(EngineError::ResourcesExhausted(format!(
                "this session already holds {open} open prepared statements, the most [engine] max_prepared_statements allows; close the ones it no longer needs (ClosePreparedStatement: close the statement or cursor in the driver), or raise the setting"
            )));
        }
        statements.insert(
            id,
            Prepared {
                sql: sql.to_string(),
                plan,
                dataset_schema: Arc::clone(&dataset_schema),
                parameter_types: parameters.iter().map(|(_, t)| t.clone()).collect(),
                parameters: parameters.into_iter().map(|(name, _)| name).collect(),
                bound: Vec::new(),
                last_used: now,
                owner: session.principal().name().to_string(),
                session: session.id().to_string(),
            },
        );
        Ok(PreparedStatementInfo {
            id,
            dataset_schema,
            parameter_schema,
        })
    }

    pub(super) fn bind(
        &self,
        id: &PreparedStatementId,
        batches: &[RecordBatch],
        owner: &str,
    ) -> EngineResult<()> {
        let mut statements = self.lock();
        let statement = owned(&mut statements, id, owner)?;
        statement.last_used = Instant::now();
        let mut rows = Vec::new();
        for batch in batches {
            if batch.num_columns() != statement.parameters.len() {
                return Err(EngineError::InvalidParameters(format!(
                    "the statement has {} parameter(s) ({}) but {} column(s) were bound",
                    statement.parameters.len(),
                    statement.parameters.join(", "),
                    batch.num_columns()
                )));
            }
            for row in 0..batch.num_rows() {
                let values = batch
                    .columns()
                    .iter()
                    .zip(&statement.parameter_types)
                    .map(|(column, declared)| parameter_value(column, row, declared))
                    .collect::<EngineResult<Vec<_>>>()?;
                rows.push(param_values(&statement.parameters, values));
            }
        }
        statement.bound = rows;
        Ok(())
    }

    /// The plan, its bound rows and its dataset schema, ready to execute.
    pub(super) fn instantiate(
        &self,
        id: &PreparedStatementId,
        owner: &str,
    ) -> EngineResult<(LogicalPlan, Vec<ParamValues>, SchemaRef)> {
        let mut statements = self.lock();
        let statement = owned(&mut statements, id, owner)?;
        statement.last_used = Instant::now();
        if !statement.parameters.is_empty() && statement.bound.is_empty() {
            return Err(EngineError::InvalidParameters(format!(
                "the statement has {} parameter(s) ({}); bind values with DoPut before executing it",
                statement.parameters.len(),
                statement.parameters.join(", ")
            )));
        }
        let rows = if statement.parameters.is_empty() {
            Vec::new()
        } else {
            statement.bound.clone()
        };
        Ok((
            statement.plan.clone(),
            rows,
            Arc::clone(&statement.dataset_schema),
        ))
    }

    /// The statement's SQL text.
    pub(super) fn sql(&self, id: &PreparedStatementId) -> EngineResult<String> {
        self.lock()
            .get(id)
            .map(|s| s.sql.clone())
            .ok_or(EngineError::PreparedStatementNotFound)
    }

    pub(super) fn dataset_schema(
        &self,
        id: &PreparedStatementId,
        owner: &str,
    ) -> EngineResult<SchemaRef> {
        let mut statements = self.lock();
        owned(&mut statements, id, owner).map(|s| Arc::clone(&s.dataset_schema))
    }

    pub(super) fn remove(&self, id: &PreparedStatementId, owner: &str) -> EngineResult<()> {
        let mut statements = self.lock();
        owned(&mut statements, id, owner)?;
        statements.remove(id);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PreparedStatementId, Prepared>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The statement `id` if `owner` prepared it: another user's handle is as
/// unknown as a closed one (NOT_FOUND), so handles reveal nothing.
fn owned<'a>(
    statements: &'a mut HashMap<PreparedStatementId, Prepared>,
    id: &PreparedStatementId,
    owner: &str,
) -> EngineResult<&'a mut Prepared> {
    statements
        .get_mut(id)
        .filter(|s| s.owner == owner)
        .ok_or(EngineError::PreparedStatementNotFound)
}

/// The value of one bound parameter, cast to the type the plan inferred for
/// it (clients bind `Utf8` where the plan wants `Utf8View`, `Int64` where it
/// wants `Int32`, ...).
fn parameter_value(
    column: &arrow::array::ArrayRef,
    row: usize,
    declared: &DataType,
) -> EngineResult<ScalarValue> {
    let value = ScalarValue::try_from_array(column, row)
        .map_err(|e| EngineError::InvalidParameters(e.strip_backtrace()))?;
    if declared == &DataType::Null || &value.data_type() == declared {
        return Ok(value);
    }
    value.cast_to(declared).map_err(|e| {
        EngineError::InvalidParameters(format!(
            "cannot use a {} value where the statement expects {declared}: {}",
            column.data_type(),
            e.strip_backtrace()
        ))
    })
}

/// `$1 < $2 < $10 < $name`: positional placeholders by number, then named ones.
fn placeholder_order(name: &str) -> (u64, String) {
    let number = name.strip_prefix('$').and_then(|n| n.parse::<u64>().ok());
    (number.unwrap_or(u64::MAX), name.to_string())
}

fn param_values(names: &[String], values: Vec<ScalarValue>) -> ParamValues {
    let positional = names.iter().all(|n| {
        n.strip_prefix('$')
            .is_some_and(|d| d.parse::<u64>().is_ok())
    });
    if positional {
        ParamValues::from(values)
    } else {
        let map = names
            .iter()
            .map(|n| n.trim_start_matches('$').to_string())
            .zip(values.into_iter().map(Into::into))
            .collect::<HashMap<_, _>>();
        ParamValues::Map(map)
    }
}
