//! Tarn's own statements as leaf plan nodes (`REFRESH TABLE`, identity
//! statements, `ALTER SYSTEM`): planned, prepared, recorded and run like
//! any statement. They have no inputs and no expressions; each carries the
//! schema of its result in a field named `schema`.

use datafusion::logical_expr::LogicalPlan;

/// The node of type `T` that `plan` is, if it is one.
pub(crate) fn node_of<T: 'static>(plan: &LogicalPlan) -> Option<&T> {
    match plan {
        LogicalPlan::Extension(ext) => ext.node.as_any().downcast_ref::<T>(),
        _ => None,
    }
}

/// Implements `UserDefinedLogicalNodeCore` (and the `PartialOrd` it needs,
/// by `$key`) for a leaf statement node named `$name`, shown in EXPLAIN as
/// `$name: ` followed by `$shown`.
macro_rules! leaf_statement_node {
    ($node:ty, $name:literal, $key:ident, |$this:ident| $shown:expr) => {
        impl PartialOrd for $node {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                self.$key.partial_cmp(&other.$key)
            }
        }

        impl datafusion::logical_expr::UserDefinedLogicalNodeCore for $node {
            fn name(&self) -> &str {
                $name
            }

            fn inputs(&self) -> Vec<&datafusion::logical_expr::LogicalPlan> {
                vec![]
            }

            fn schema(&self) -> &datafusion::common::DFSchemaRef {
                &self.schema
            }

            fn expressions(&self) -> Vec<datafusion::logical_expr::Expr> {
                vec![]
            }

            fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                let $this = self;
                write!(f, "{}: {}", $name, $shown)
            }

            fn with_exprs_and_inputs(
                &self,
                _exprs: Vec<datafusion::logical_expr::Expr>,
                _inputs: Vec<datafusion::logical_expr::LogicalPlan>,
            ) -> datafusion::error::Result<Self> {
                Ok(self.clone())
            }
        }
    };
}

pub(crate) use leaf_statement_node;
