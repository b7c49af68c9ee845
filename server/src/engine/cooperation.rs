//! Joins that yield: a physical optimizer rule that puts DataFusion's
//! `CooperativeExec` above every join.
//!
//! DataFusion yields to the Tokio scheduler at its scans: each batch a scan
//! produces spends some of the task's budget. A join can produce many
//! batches from one batch of input (a cross join, a many-to-many hash join),
//! and an aggregate above it then polls it for a long time without any scan
//! being polled, so the task never yields: on a CPU runtime of two threads,
//! two such queries stop every other statement (even `SELECT 1`) and their
//! stream drivers never see that their clients left. Budgeting each batch a
//! join emits bounds how long any task runs between yields.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};

/// Wraps every join in a `CooperativeExec`.
#[derive(Debug, Default)]
pub(crate) struct YieldingJoins;

fn is_join(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<CrossJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<HashJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
}

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !is_join(node.as_ref()) {
                return Ok(Transformed::no(node));
            }
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        })
        .map(|done| done.data)
    }

    fn name(&self) -> &str {
        "YieldingJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn every_join_is_wrapped_once() {
        let ctx = SessionContext::new();
        let sql = "SELECT count(*) FROM (VALUES (1), (2)) a(x) CROSS JOIN (VALUES (1)) b(y) JOIN (VALUES (1)) c(z) ON c.z = b.y";
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let optimized = YieldingJoins
            .optimize(plan, &ConfigOptions::default())
            .unwrap();
        let shown = datafusion::physical_plan::displayable(optimized.as_ref())
            .indent(false)
            .to_string();
        let joins = shown.matches("JoinExec").count();
        assert!(joins >= 2, "{shown}");
        assert_eq!(shown.matches("CooperativeExec").count(), joins, "{shown}");
    }
}
