//! `?` placeholders, as JDBC, ODBC and ADBC clients write them.
//!
//! DataFusion numbers placeholders (`$1`, `$2`); a bare `?` would be one
//! parameter named "?" however often it appears. Each `?` is renumbered in
//! the order it appears, so `a = ? AND b = ?` means `a = $1 AND b = $2`.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};

/// Renumbers every `?` in `statement` as `$1`, `$2`, ...
pub fn number_question_marks(statement: &mut Statement) {
    let Statement::Statement(inner) = statement else {
        return;
    };
    let mut next = 0;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let Expr::Value(value) = expr
            && let Value::Placeholder(name) = &mut value.value
            && name == "?"
        {
            next += 1;
            *name = format!("${next}");
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    #[test]
    fn question_marks_are_numbered_in_order() {
        let mut statements =
            DFParser::parse_sql("SELECT * FROM t WHERE a = ? AND b IN (?, $7) LIMIT ?").unwrap();
        let mut statement = statements.pop_front().unwrap();
        number_question_marks(&mut statement);
        assert_eq!(
            statement.to_string(),
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, $7) LIMIT $3"
        );
    }
}
