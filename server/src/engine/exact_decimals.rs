//! Decimal sums, differences and products that cannot overflow, computed
//! without overflow checks.
//!
//! Arrow adds, subtracts and multiplies `Decimal128` values with a checked
//! operation per row (`mul_checked`, a call on x86-64 for 128-bit
//! products), through a closure that may fail, so the loop does not
//! vectorise. TPC-H computes `l_extendedprice * (1 - l_discount)` over
//! every lineitem row in most of its queries, and Q1 does it four times.
//! Yet when the operands' precisions bound the result below 10^38, no row
//! can overflow: `Decimal(15, 2) * Decimal(16, 2)` is below 10^31.
//!
//! [`ExactDecimals`], a logical optimizer rule that runs after
//! DataFusion's, replaces each such `+`, `-` or `*` in projections,
//! filters and aggregates by a function that computes the same values of
//! the same type with wrapping 128-bit arithmetic, which cannot wrap for
//! these operands. Column names are kept (the new expression is aliased
//! to the old name). Operations that could overflow keep Arrow's checked
//! kernels and their error. `SET tarn.exact_decimals = false` turns the rule
//! off for a session.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, new_null_array};
use arrow::compute::kernels::arity::{binary, unary};
use arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::tarn_settings::TarnSettings;

/// The rule (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct ExactDecimals;

impl OptimizerRule for ExactDecimals {
    fn name(&self) -> &str {
        "exact_decimals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !TarnSettings::of(&config.options()).exact_decimals {
            return Ok(Transformed::no(plan));
        }
        if !matches!(
            plan,
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::Aggregate(_)
        ) {
            return Ok(Transformed::no(plan));
        }
        let [input] = plan.inputs()[..] else {
            return Ok(Transformed::no(plan));
        };
        let schema = Arc::clone(input.schema());
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|expr| exact(expr, &schema))?;
            Ok(rewritten.update_data(|expr| name.restore(expr)))
        })
    }
}

/// `expr` as an exact operation if it is a decimal `+`, `-` or `*` that
/// cannot overflow.
fn exact(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let Some(operation) = Operation::of(*op) else {
        return Ok(Transformed::no(expr));
    };
    let (Ok(left_type), Ok(right_type), Ok(result_type)) = (
        left.get_type(schema),
        right.get_type(schema),
        expr.get_type(schema),
    ) else {
        return Ok(Transformed::no(expr));
    };
    match operation.result_type(&left_type, &right_type) {
        Some(exact_type) if exact_type == result_type => {}
        _ => return Ok(Transformed::no(expr)),
    }
    let function = ScalarUDF::new_from_impl(ExactDecimal::new(operation));
    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(function), args),
    )))
}

/// The operations computed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Operation {
    Add,
    Subtract,
    Multiply,
}

impl Operation {
    fn of(op: Operator) -> Option<Self> {
        match op {
            Operator::Plus => Some(Self::Add),
            Operator::Minus => Some(Self::Subtract),
            Operator::Multiply => Some(Self::Multiply),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Add => "exact_decimal_add",
            Self::Subtract => "exact_decimal_subtract",
            Self::Multiply => "exact_decimal_multiply",
        }
    }

    /// The type Arrow gives the result, when no value of the operands can
    /// make it overflow 128 bits; `None` otherwise.
    fn result_type(self, left: &DataType, right: &DataType) -> Option<DataType> {
        let (&DataType::Decimal128(p1, s1), &DataType::Decimal128(p2, s2)) = (left, right) else {
            return None;
        };
        let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
        if s1 < 0 || s2 < 0 {
            return None;
        }
        // The digits the exact result can have: below 10^38 < 2^127.
        let (digits, scale) = match self {
            Self::Add | Self::Subtract => {
                let scale = s1.max(s2);
                ((p1 - s1).max(p2 - s2) + scale + 1, scale)
            }
            Self::Multiply => (p1 + p2, s1 + s2),
        };
        if digits > 38 || scale > 38 {
            return None;
        }
        let precision = match self {
            Self::Add | Self::Subtract => digits,
            Self::Multiply => (digits + 1).min(38),
        };
        Some(DataType::Decimal128(
            u8::try_from(precision).ok()?,
            i8::try_from(scale).ok()?,
        ))
    }
}

/// A decimal operation that cannot overflow, as a function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactDecimal {
    operation: Operation,
    signature: Signature,
}

impl ExactDecimal {
    fn new(operation: Operation) -> Self {
        Self {
            operation,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// An operand: a column, or one value for every row.
enum Operand<'a> {
    Column(&'a Decimal128Array),
    Value(Option<i128>),
}

impl ScalarUDFImpl for ExactDecimal {
    fn name(&self) -> &str {
        self.operation.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [left, right] => self.operation.result_type(left, right).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{} cannot be computed exactly for {left} and {right}",
                    self.name()
                ))
            }),
            _ => Err(DataFusionError::Plan(format!(
                "{} takes two arguments",
                self.name()
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let result_type = args.return_type().clone();
        let DataType::Decimal128(precision, scale) = result_type else {
            return Err(DataFusionError::Internal(format!(
                "{} returns decimals, not {result_type}",
                self.name()
            )));
        };
        let ([left, right], [left_field, right_field]) = (&args.args[..], &args.arg_fields[..])
        else {
            return Err(DataFusionError::Internal(format!(
                "{} takes two arguments",
                self.name()
            )));
        };
        let (&DataType::Decimal128(_, s1), &DataType::Decimal128(_, s2)) =
            (left_field.data_type(), right_field.data_type())
        else {
            return Err(DataFusionError::Internal(format!(
                "{} takes decimals",
                self.name()
            )));
        };
        // Both operands at the result's scale (for a product, as they are).
        let (left_factor, right_factor) = match self.operation {
            Operation::Multiply => (1, 1),
            Operation::Add | Operation::Subtract => (
                10_i128.pow(u32::from((scale - s1).unsigned_abs())),
                10_i128.pow(u32::from((scale - s2).unsigned_abs())),
            ),
        };
        let operation = self.operation;
        let apply = move |a: i128, b: i128| match operation {
            Operation::Add => a
                .wrapping_mul(left_factor)
                .wrapping_add(b.wrapping_mul(right_factor)),
            Operation::Subtract => a
                .wrapping_mul(left_factor)
                .wrapping_sub(b.wrapping_mul(right_factor)),
            Operation::Multiply => a.wrapping_mul(b),
        };
        let values: Decimal128Array = match (operand(left)?, operand(right)?) {
            (Operand::Value(a), Operand::Value(b)) => {
                let value = a.zip(b).map(|(a, b)| apply(a, b));
                return Ok(ColumnarValue::Scalar(ScalarValue::Decimal128(
                    value, precision, scale,
                )));
            }
            (Operand::Column(a), Operand::Column(b)) => binary(a, b, apply)?,
            (Operand::Column(a), Operand::Value(Some(b))) => unary(a, |a| apply(a, b)),
            (Operand::Value(Some(a)), Operand::Column(b)) => unary(b, |b| apply(a, b)),
            (Operand::Column(column), Operand::Value(None))
            | (Operand::Value(None), Operand::Column(column)) => {
                return Ok(ColumnarValue::Array(new_null_array(
                    &result_type,
                    column.len(),
                )));
            }
        };
        let values: ArrayRef = Arc::new(
            values
                .with_precision_and_scale(precision, scale)
                .map_err(DataFusionError::from)?,
        );
        Ok(ColumnarValue::Array(values))
    }
}

fn operand(value: &ColumnarValue) -> Result<Operand<'_>> {
    match value {
        ColumnarValue::Array(array) => array
            .as_primitive_opt::<Decimal128Type>()
            .map(Operand::Column)
            .ok_or_else(|| {
                DataFusionError::Internal(format!("expected decimals, got {}", array.data_type()))
            }),
        ColumnarValue::Scalar(ScalarValue::Decimal128(value, _, _)) => Ok(Operand::Value(*value)),
        ColumnarValue::Scalar(other) => Err(DataFusionError::Internal(format!(
            "expected a decimal, got {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use arrow::compute::kernels::numeric;
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn decimals(values: &[Option<i128>], precision: u8, scale: i8) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .copied()
                .collect::<Decimal128Array>()
                .with_precision_and_scale(precision, scale)
                .unwrap(),
        )
    }

    fn invoke(operation: Operation, left: ColumnarValue, right: ColumnarValue) -> ArrayRef {
        let field = |value: &ColumnarValue| {
            Arc::new(arrow::datatypes::Field::new("x", value.data_type(), true))
        };
        let function = ExactDecimal::new(operation);
        let result_type = function
            .return_type(&[left.data_type(), right.data_type()])
            .unwrap();
        let args = ScalarFunctionArgs {
            arg_fields: vec![field(&left), field(&right)],
            args: vec![left, right],
            number_rows: 4,
            return_field: Arc::new(arrow::datatypes::Field::new("r", result_type, true)),
            config_options: Arc::default(),
        };
        function
            .invoke_with_args(args)
            .unwrap()
            .into_array(4)
            .unwrap()
    }

    #[test]
    fn values_and_types_are_arrows_for_columns_and_constants() {
        let price = decimals(
            &[Some(9_999_999_999_999), Some(-12_345), None, Some(1)],
            15,
            2,
        );
        let discount = decimals(&[Some(10), None, Some(5), Some(-99)], 15, 2);
        let one = ScalarValue::Decimal128(Some(1), 20, 0);
        let one_array = one.to_array_of_size(4).unwrap();
        let cases: [(Operation, ColumnarValue, ColumnarValue, ArrayRef, ArrayRef); 4] = [
            (
                Operation::Multiply,
                ColumnarValue::Array(Arc::clone(&price)),
                ColumnarValue::Array(Arc::clone(&discount)),
                Arc::clone(&price),
                Arc::clone(&discount),
            ),
            (
                Operation::Subtract,
                ColumnarValue::Scalar(one.clone()),
                ColumnarValue::Array(Arc::clone(&discount)),
                Arc::clone(&one_array),
                Arc::clone(&discount),
            ),
            (
                Operation::Add,
                ColumnarValue::Array(Arc::clone(&price)),
                ColumnarValue::Scalar(one.clone()),
                Arc::clone(&price),
                Arc::clone(&one_array),
            ),
            (
                Operation::Multiply,
                ColumnarValue::Array(Arc::clone(&price)),
                ColumnarValue::Scalar(ScalarValue::Decimal128(None, 3, 1)),
                Arc::clone(&price),
                ScalarValue::Decimal128(None, 3, 1)
                    .to_array_of_size(4)
                    .unwrap(),
            ),
        ];
        for (operation, left, right, left_array, right_array) in cases {
            let expected = match operation {
                Operation::Add => numeric::add(&left_array, &right_array),
                Operation::Subtract => numeric::sub(&left_array, &right_array),
                Operation::Multiply => numeric::mul(&left_array, &right_array),
            }
            .unwrap();
            let exact = invoke(operation, left, right);
            assert_eq!(exact.data_type(), expected.data_type(), "{operation:?}");
            assert_eq!(exact.to_data(), expected.to_data(), "{operation:?}");
        }
    }

    #[test]
    fn only_operands_that_cannot_overflow_are_taken() {
        let d = DataType::Decimal128;
        assert_eq!(
            Operation::Multiply.result_type(&d(15, 2), &d(16, 2)),
            Some(d(32, 4))
        );
        assert_eq!(
            Operation::Multiply.result_type(&d(19, 0), &d(19, 0)),
            Some(d(38, 0))
        );
        assert_eq!(Operation::Multiply.result_type(&d(20, 0), &d(19, 0)), None);
        assert_eq!(
            Operation::Subtract.result_type(&d(20, 0), &d(15, 2)),
            Some(d(23, 2))
        );
        assert_eq!(Operation::Add.result_type(&d(38, 0), &d(1, 0)), None);
        assert_eq!(Operation::Add.result_type(&DataType::Int64, &d(1, 0)), None);
        assert_eq!(Operation::Add.result_type(&d(10, -2), &d(1, 0)), None);
    }

    async fn run(exact: bool, sql: &str) -> (String, Result<Vec<RecordBatch>>) {
        let mut config = SessionConfig::new();
        config.options_mut().extensions.insert(TarnSettings {
            exact_decimals: exact,
            ..TarnSettings::default()
        });
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rule(Arc::new(ExactDecimals))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame
            .clone()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        (plan, frame.collect().await)
    }

    #[tokio::test]
    async fn queries_keep_their_names_and_answers() {
        let sql = "SELECT k, sum(price * (1 - discount)) AS revenue, sum(price * (1 - discount) * (1 + tax)), min(price - tax) \
             FROM (SELECT column1 AS k, arrow_cast(column2, 'Decimal128(15, 2)') AS price, \
                          arrow_cast(column3, 'Decimal128(15, 2)') AS discount, arrow_cast(column4, 'Decimal128(15, 2)') AS tax \
                   FROM (VALUES (1, 901.5, 0.05, 0.02), (1, 17.25, 0.1, 0.0), (2, 99999.99, 0.0, 0.08), (2, NULL, 0.01, 0.01))) \
             WHERE price * discount > 0 OR discount = 0 GROUP BY k ORDER BY k";
        let (exact_plan, exact) = run(true, sql).await;
        let (checked_plan, checked) = run(false, sql).await;
        assert!(
            exact_plan.contains("exact_decimal_multiply"),
            "{exact_plan}"
        );
        assert!(
            exact_plan.contains("exact_decimal_subtract"),
            "{exact_plan}"
        );
        assert!(!checked_plan.contains("exact_decimal"), "{checked_plan}");
        let exact = exact.unwrap();
        let checked = checked.unwrap();
        assert_eq!(exact[0].schema(), checked[0].schema());
        assert_eq!(
            pretty_format_batches(&exact).unwrap().to_string(),
            pretty_format_batches(&checked).unwrap().to_string()
        );
    }

    #[tokio::test]
    async fn operands_that_can_overflow_keep_the_overflow_error() {
        let sql = "SELECT arrow_cast(column1, 'Decimal128(38, 0)') * arrow_cast(column1, 'Decimal128(38, 0)') \
             FROM (VALUES (99999999999999999999999)) ";
        let (plan, answer) = run(true, sql).await;
        assert!(!plan.contains("exact_decimal"), "{plan}");
        assert!(answer.unwrap_err().to_string().contains("Overflow"));
    }
}
