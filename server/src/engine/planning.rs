//! Planning a statement: SQL text to a logical plan (within the limits),
//! then to the physical plan a result streams from, recording the run on
//! the way. Statements with side effects run here, when submitted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{ParamValues, TableReference};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;

use super::access;
use super::admin::{AdminNode, AdminStatement};
use super::erasure::{VacuumNode, VacuumStatement};
use super::error::{EngineError, EngineResult};
use super::execution::{affected_rows, has_side_effects};
use super::grants::{GrantNode, PrivilegeStatement};
use super::policies::{PolicyNode, PolicyStatement};
use super::prepared::{PreparedStatementId, PreparedStatementInfo};
use super::privileges::{Access, Privilege};
use super::session::Session;
use super::settings::SystemSettingNode;
use super::{
    DEFAULT_CATALOG, DEFAULT_SCHEMA, Engine, PlannedQuery, placeholders, refresh, runs, statement,
    writes,
};
use crate::catalog::system::{ADMIN_ONLY_TABLES, SYSTEM_SCHEMA};
use crate::identity::Principal;

impl Engine {
    /// `SHOW TABLES` when the lake serves no table: the reason, instead of
    /// a list of system tables only.
    pub(super) fn refuse_to_show_an_empty_lake(&self, statement: &DFStatement) -> EngineResult<()> {
        let show_tables = matches!(statement, DFStatement::Statement(inner)
            if matches!(inner.as_ref(), datafusion::sql::sqlparser::ast::Statement::ShowTables { .. }));
        if !show_tables {
            return Ok(());
        }
        let has_tables = self
            .ctx
            .catalog(DEFAULT_CATALOG)
            .and_then(|c| c.schema(DEFAULT_SCHEMA))
            .is_some_and(|schema| !schema.table_names().is_empty());
        let notes = self
            .empty_stores
            .read()
            .map(|notes| notes.clone())
            .unwrap_or_default();
        if has_tables || notes.is_empty() {
            return Ok(());
        }
        Err(EngineError::EmptyLake(notes.join("; ")))
    }

    /// Plans `sql` into a logical plan, without executing anything.
    pub(super) async fn logical_plan(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<LogicalPlan> {
        // Tarn's own statements: DataFusion does not parse them.
        if let Some(statement) = super::user_limits::LimitStatement::parse(sql) {
            return Ok(super::user_limits::LimitNode::plan(statement?));
        }
        if let Some(statement) = AdminStatement::parse(sql) {
            return AdminNode::plan(statement?);
        }
        if let Some(statement) = PrivilegeStatement::parse(sql) {
            return Ok(GrantNode::plan(statement?));
        }
        if let Some(statement) = PolicyStatement::parse(sql) {
            return Ok(PolicyNode::plan(statement?));
        }
        if let Some(cancel) = super::cancel::CancelQueryNode::parse(sql) {
            return cancel;
        }
        if let Some(statement) = VacuumStatement::parse(sql) {
            let statement = statement?;
            let principal = session.principal();
            if self
                .privileges
                .access(principal, Privilege::Delete, &statement.table)
                != Access::Whole
            {
                return Err(access::denied(
                    principal,
                    Privilege::Delete,
                    &statement.table,
                ));
            }
            return VacuumNode::plan(statement);
        }
        if let Some(name) = super::analyze::AnalyzeTableNode::parse(sql) {
            let table = crate::names::table_name(&TableReference::parse_str(&name));
            let principal = session.principal();
            if self.privileges.access(principal, Privilege::Select, &table) == Access::Denied {
                return Err(access::denied(principal, Privilege::Select, &table));
            }
            return Ok(super::analyze::AnalyzeTableNode::plan(name));
        }
        if let Some((name, policy)) = super::table_cache::TableCacheNode::parse(sql) {
            // A policy spends the server's memory: as DROP, owners and admins.
            let table = crate::names::table_name(&TableReference::parse_str(&name));
            let principal = session.principal();
            if self.privileges.access(principal, Privilege::Drop, &table) != Access::Whole {
                return Err(access::denied(principal, Privilege::Drop, &table));
            }
            return Ok(super::table_cache::TableCacheNode::plan(name, policy));
        }
        if let Some(name) = refresh::RefreshTableNode::parse(sql) {
            let table = crate::names::table_name(&TableReference::parse_str(&name));
            let principal = session.principal();
            if self.privileges.access(principal, Privilege::Select, &table) == Access::Denied {
                return Err(access::denied(principal, Privilege::Select, &table));
            }
            return Ok(refresh::RefreshTableNode::plan(name));
        }
        let state = session.context().state();
        if let Some(setting) = SystemSettingNode::parse(sql) {
            let statement = statement::parse(&state, setting, self.options.limits)?;
            let plan = state
                .statement_to_plan(statement)
                .await
                .map_err(EngineError::from_planning)?;
            return SystemSettingNode::plan(plan);
        }
        let mut statement = statement::parse(&state, sql, self.options.limits)?;
        self.refuse_to_show_an_empty_lake(&statement)?;
        placeholders::number_question_marks(&mut statement);
        let clauses = writes::take_clauses(&mut statement)?;
        // Known before planning consumes the statement, to name a missing table.
        let references = state
            .resolve_table_references(&statement)
            .unwrap_or_default();
        refuse_admin_tables(&references, session.principal())?;
        access::check(
            &self.privileges,
            session.context(),
            &state,
            &statement,
            &references,
            session.principal(),
        )
        .await?;
        match state.statement_to_plan(statement).await {
            Ok(plan) => writes::rewrite_plan(plan, clauses),
            Err(err) => Err(self.explain_planning_error(session, references, err).await),
        }
    }

    /// Turns a planning failure into the most useful error: a missing table
    /// is named as the statement wrote it; a column left out of a user's
    /// column grant is refused naming the columns they may read.
    async fn explain_planning_error(
        &self,
        session: &Session,
        references: Vec<TableReference>,
        err: datafusion::error::DataFusionError,
    ) -> EngineError {
        use datafusion::error::DataFusionError;
        if let DataFusionError::SchemaError(schema_error, _) = err.find_root()
            && let datafusion::common::SchemaError::FieldNotFound { field, .. } =
                schema_error.as_ref()
            && let Some(denied) = self
                .column_not_granted(session, &references, &field.name)
                .await
        {
            return denied;
        }
        // A plan that cannot be made while a table it reads does not exist
        // fails because of that table: name it as the statement wrote it.
        if !matches!(err.find_root(), DataFusionError::Plan(_)) {
            return EngineError::from_planning(err);
        }
        let context = session.context();
        let state = context.state();
        for reference in references {
            // Table functions (`generate_series(...)`) are references too.
            let function = reference.schema().is_none()
                && state.table_functions().contains_key(reference.table());
            if !function && !matches!(context.table_exist(reference.clone()), Ok(true)) {
                return EngineError::TableNotFound {
                    name: reference.to_string(),
                };
            }
        }
        EngineError::from_planning(err)
    }

    /// The refusal of `column` if it is a column of one of `references`
    /// that the session's user may read only some columns of.
    async fn column_not_granted(
        &self,
        session: &Session,
        references: &[TableReference],
        column: &str,
    ) -> Option<EngineError> {
        let principal = session.principal();
        for reference in references {
            let name = crate::names::table_name(reference);
            let Access::Columns(granted) =
                self.privileges.access(principal, Privilege::Select, &name)
            else {
                continue;
            };
            let schema = self.ctx.state().schema_for_ref(reference.clone()).ok()?;
            let table = schema.table(reference.table()).await.ok()??;
            if table.schema().field_with_name(column).is_ok() && !granted.contains(column) {
                let granted: Vec<&str> = granted.iter().map(String::as_str).collect();
                return Some(EngineError::PermissionDenied(format!(
                    "{user} may read only the columns {cols} of table {name}, not {column}; an admin or the table's owner can GRANT SELECT ({column}) ON {name} TO {user}",
                    user = principal.name(),
                    cols = granted.join(", "),
                )));
            }
        }
        None
    }

    /// Plans a statement that is executed directly (not prepared): it must
    /// not have placeholders, since nothing can bind them.
    pub(super) async fn direct_plan(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<LogicalPlan> {
        let plan = self.logical_plan(sql, session).await?;
        let mut names: Vec<String> = plan
            .get_parameter_names()
            .map_err(EngineError::from_planning)?
            .into_iter()
            .collect();
        if !names.is_empty() {
            names.sort();
            return Err(EngineError::InvalidParameters(format!(
                "the statement has placeholders ({}); prepare it and bind values, or write the values inline",
                names.join(", ")
            )));
        }
        Ok(plan)
    }

    /// The schema `sql` would return, without running it.
    pub(super) async fn schema_of_on_cpu(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<SchemaRef> {
        let plan = self.logical_plan(sql, session).await?;
        Ok(self
            .wire_types(session)
            .wire_schema(plan.schema().as_arrow()))
    }

    /// Plans a statement for streaming. Statements with side effects run now;
    /// their (small) outcome is what the result streams.
    pub(super) async fn plan_query_on_cpu(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<PlannedQuery> {
        let plan = self.direct_plan(sql, session).await?;
        let replan = self.replan_of(&plan, session);
        let cacheable = self.may_cache(&plan, session);
        let (physical, run) = self.plan_and_record(sql, plan, session).await?;
        let cached = cacheable
            .then(|| self.result_key(&physical, session))
            .flatten();
        Ok(PlannedQuery {
            schema: physical.schema(),
            plans: vec![physical],
            task_ctx: session.context().task_ctx(),
            runs: run.into_iter().collect(),
            sql: super::admin::recorded_sql(sql),
            owner: session.principal().name().to_string(),
            session: session.id().to_string(),
            live: None,
            replan,
            cached,
        })
    }

    /// Whether the answer of `plan`, planned in `session`, may be cached:
    /// a query without side effects the result cache accepts.
    fn may_cache(&self, plan: &LogicalPlan, session: &Session) -> bool {
        if has_side_effects(plan) {
            return false;
        }
        let state = session.context().state_ref();
        let state = state.read();
        self.result_cache.may_cache(state.config_options(), plan)
    }

    /// The result cache's key for `physical`, planned in `session`.
    fn result_key(
        &self,
        physical: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        session: &Session,
    ) -> Option<super::result_cache::ResultKey> {
        let state = session.context().state_ref();
        let state = state.read();
        self.result_cache
            .key_of(session.principal().name(), state.config_options(), physical)
    }

    /// How to plan `plan` again with sort-merge joins, if it is a query with
    /// joins (whose hash-join build sides cannot spill).
    fn replan_of(&self, plan: &LogicalPlan, session: &Session) -> Option<super::execution::Replan> {
        use datafusion::common::tree_node::TreeNode;
        let joins = plan
            .exists(|node| Ok(matches!(node, LogicalPlan::Join(_))))
            .unwrap_or(false);
        if !joins || has_side_effects(plan) {
            return None;
        }
        Some(super::execution::Replan {
            plan: plan.clone(),
            wire_types: self.wire_types(session),
            context: session.context().clone(),
        })
    }

    /// Runs a statement that changes something and returns the number of rows
    /// it affected (0 for DDL).
    pub(super) async fn execute_update_on_cpu(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<u64> {
        let plan = self.direct_plan(sql, session).await?;
        self.run_update(sql, plan, session).await
    }

    /// Runs `sql` as it was recorded earlier (views, settings restored at
    /// start), without recording it again.
    pub(super) async fn replay_on_cpu(&self, sql: &str) -> EngineResult<()> {
        let system = self.system_session();
        let plan = self.direct_plan(sql, &system).await?;
        self.plan_physical(plan, &system).await.map(|_| ())
    }

    pub(super) async fn run_update(
        &self,
        sql: &str,
        plan: LogicalPlan,
        session: &Session,
    ) -> EngineResult<u64> {
        if !has_side_effects(&plan) {
            return Err(EngineError::WrongStatementKind(
                "this statement returns rows: execute it as a query, not as an update".into(),
            ));
        }
        let (physical, _) = self.plan_and_record(sql, plan, session).await?;
        let batches = self.collect(physical, session).await?;
        Ok(affected_rows(&batches))
    }

    /// Logical plan to physical plan, running side effects on the way, and
    /// recording the run (and a write's lineage) in the catalog.
    pub(super) async fn plan_and_record(
        &self,
        sql: &str,
        plan: LogicalPlan,
        session: &Session,
    ) -> EngineResult<(Arc<dyn ExecutionPlan>, Option<Arc<runs::StreamingRun>>)> {
        let Some(catalog) = self.catalog.clone() else {
            return super::live::guarded(self.plan_physical(plan, session))
                .await
                .map(|(exec, _)| (exec, None));
        };
        let views = self.views_in(&plan).await;
        // A password never reaches the catalog.
        let recorded = AdminNode::of(&plan).map(AdminStatement::recorded_text);
        let sql = recorded.as_deref().unwrap_or(sql);
        let run = runs::Run::describe(
            sql,
            &plan,
            &views,
            self.options.tables_location.as_deref(),
            session.principal().name(),
        );
        run.start(catalog.as_ref()).await?;
        // A write stopped here (cancelled, timed out) commits nothing, and
        // its run ends with the reason.
        let outcome = super::live::guarded(self.plan_physical(plan, session)).await;
        if run.is_query()
            && let Ok((exec, _)) = outcome
        {
            // A query's run ends when its result has been streamed.
            let streaming = runs::StreamingRun::new(run.id.clone(), catalog);
            return Ok((exec, Some(Arc::new(streaming))));
        }
        let stats = outcome.as_ref().ok().and_then(|(_, stats)| *stats);
        let error = outcome.as_ref().err().map(|e| e.to_string());
        // The table first, so the run's COMPLETE event knows its location.
        if outcome.is_ok() {
            self.record_effect(catalog.as_ref(), &run).await?;
        }
        run.end(catalog.as_ref(), stats, error).await?;
        outcome.map(|(exec, _)| (exec, None))
    }

    /// The views `plan` reads (DataFusion expands them in place), by name.
    pub(super) async fn views_in(&self, plan: &LogicalPlan) -> HashMap<String, LogicalPlan> {
        let mut aliases = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::SubqueryAlias(alias) = node {
                aliases.push(alias.alias.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let mut views = HashMap::new();
        for alias in aliases {
            if let Ok(provider) = self.ctx.table_provider(alias.clone()).await
                && let Some(view) = provider.downcast_ref::<datafusion::catalog::view::ViewTable>()
            {
                views.insert(
                    crate::names::table_name(&alias),
                    view.logical_plan().clone(),
                );
            }
        }
        views
    }

    /// Prepares `sql`: plans it with its placeholders, runs nothing.
    pub(super) async fn prepare_on_cpu(
        &self,
        sql: &str,
        session: &Session,
    ) -> EngineResult<PreparedStatementInfo> {
        let plan = self.logical_plan(sql, session).await?;
        let dataset_schema = if AdminNode::of(&plan).is_some() {
            Arc::new(plan.schema().as_arrow().clone())
        } else if has_side_effects(&plan) {
            Arc::new(Schema::empty())
        } else {
            self.wire_types(session)
                .wire_schema(plan.schema().as_arrow())
        };
        self.prepared.insert(
            sql,
            plan,
            dataset_schema,
            self.wire_types(session),
            session,
            self.options.sessions.max_prepared_statements,
        )
    }

    /// Plans a prepared query with its bound parameters.
    pub(super) async fn plan_prepared_query_on_cpu(
        &self,
        id: &PreparedStatementId,
        session: &Session,
    ) -> EngineResult<PlannedQuery> {
        let sql = self.prepared.sql(id)?;
        let (plan, rows, schema) = self.prepared.instantiate(id, session.principal().name())?;
        let mut plans = Vec::with_capacity(rows.len().max(1));
        let mut runs: Vec<Arc<runs::StreamingRun>> = Vec::new();
        let bound = bind_rows(plan, rows)?;
        let (replan, cacheable) = match bound.as_slice() {
            [only] => (self.replan_of(only, session), self.may_cache(only, session)),
            _ => (None, false),
        };
        for plan in bound {
            match self.plan_and_record(&sql, plan, session).await {
                Ok((physical, run)) => {
                    plans.push(physical);
                    runs.extend(run);
                }
                Err(err) => {
                    // The rows planned before will not be streamed either.
                    for run in &runs {
                        run.abort(&format!("another parameter row failed: {err}"));
                    }
                    return Err(err);
                }
            }
        }
        let schema = plans.first().map_or(schema, |p| p.schema());
        let cached = match (cacheable, plans.as_slice()) {
            (true, [physical]) => self.result_key(physical, session),
            _ => None,
        };
        Ok(PlannedQuery {
            schema,
            plans,
            task_ctx: session.context().task_ctx(),
            runs,
            sql: super::admin::recorded_sql(&sql),
            owner: session.principal().name().to_string(),
            session: session.id().to_string(),
            live: None,
            replan,
            cached,
        })
    }

    /// Runs a prepared update once per bound parameter row; returns the total
    /// number of affected rows.
    pub(super) async fn execute_prepared_update_on_cpu(
        &self,
        id: &PreparedStatementId,
        session: &Session,
    ) -> EngineResult<u64> {
        let sql = self.prepared.sql(id)?;
        let (plan, rows, _) = self.prepared.instantiate(id, session.principal().name())?;
        let mut total = 0;
        for plan in bind_rows(plan, rows)? {
            total += self.run_update(&sql, plan, session).await?;
        }
        Ok(total)
    }
}

/// Who may read the system tables that list users, roles and tokens:
/// admins only. Checked on the statement's references, before planning.
fn refuse_admin_tables(references: &[TableReference], principal: &Principal) -> EngineResult<()> {
    if principal.is_admin() {
        return Ok(());
    }
    for reference in references {
        let system = reference.schema() == Some(SYSTEM_SCHEMA);
        if system && ADMIN_ONLY_TABLES.contains(&reference.table()) {
            return Err(EngineError::PermissionDenied(format!(
                "only members of the role 'admin' may read {reference}"
            )));
        }
    }
    Ok(())
}

/// Substitutes each bound parameter row into `plan`.
fn bind_rows(plan: LogicalPlan, rows: Vec<ParamValues>) -> EngineResult<Vec<LogicalPlan>> {
    if rows.is_empty() {
        return Ok(vec![plan]);
    }
    rows.into_iter()
        .map(|row| {
            plan.clone()
                .with_param_values(row)
                .map_err(|e| EngineError::InvalidParameters(e.strip_backtrace()))
        })
        .collect()
}
