//! `tarn lineage TABLE[.COLUMN]`: where data comes from, or what it feeds,
//! printed as a tree. It asks the server's `lineage_upstream` /
//! `lineage_downstream` table functions over Flight SQL.

use std::collections::BTreeMap;
use std::process::ExitCode;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use clap::Args;

use super::fail;

/// `tarn lineage`
#[derive(Debug, Args)]
pub struct LineageArgs {
    /// A table (`b`) or a column (`b.revenue`)
    #[arg(value_name = "TABLE[.COLUMN]")]
    pub start: String,
    /// Show where it comes from (the default)
    #[arg(long, conflicts_with = "downstream")]
    pub upstream: bool,
    /// Show what is derived from it
    #[arg(long)]
    pub downstream: bool,
    /// How many steps to follow
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub depth: i64,
    #[command(flatten)]
    pub server: super::HostArg,
}

/// One edge, as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    target: String,
    source: String,
    how: String,
}

/// Runs `tarn lineage`.
pub fn run(args: LineageArgs) -> ExitCode {
    let server = args.server.clone();
    super::with_client(&server, move |mut client| async move {
        let function = if args.downstream {
            "lineage_downstream"
        } else {
            "lineage_upstream"
        };
        let sql = format!(
            "SELECT target_table, target_column, source_table, source_column, kind, subtype FROM {function}('{}', {})",
            args.start.replace('\'', "''"),
            args.depth
        );
        let batches = match client.query(&sql).await {
            Ok(result) => match result.collect().await {
                Ok(batches) => batches,
                Err(e) => return fail(&e.to_string()),
            },
            Err(e) => return fail(&e.to_string()),
        };
        let by_column = args.start.contains('.');
        let edges = edges(&batches, by_column, args.downstream);
        print!("{}", tree(&args.start, &edges));
        if edges.is_empty() {
            eprintln!(
                "no recorded lineage {} {}: it is written by no recorded statement, or the name is misspelt (see SELECT * FROM system.tables)",
                if args.downstream { "from" } else { "into" },
                args.start
            );
        }
        ExitCode::SUCCESS
    })
}

/// Edges keyed the way the tree walks them: columns for a column, tables
/// (with the kinds of edge between them) for a table.
fn edges(batches: &[RecordBatch], by_column: bool, downstream: bool) -> Vec<Edge> {
    let mut merged: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for batch in batches {
        // Plain strings whatever the server sent (Utf8View with --view-types).
        let texts: Option<Vec<StringArray>> = (0..6)
            .map(|i| {
                let column = batch.columns().get(i)?;
                let plain = arrow::compute::cast(column, &DataType::Utf8).ok()?;
                Some(plain.as_string::<i32>().clone())
            })
            .collect();
        let Some([tt, tc, st, sc, kind, subtype]) = texts.and_then(|t| <[_; 6]>::try_from(t).ok())
        else {
            continue;
        };
        for row in 0..batch.num_rows() {
            if tt.is_null(row) || st.is_null(row) {
                continue;
            }
            let (target, source) = if by_column {
                (
                    format!("{}.{}", tt.value(row), tc.value(row)),
                    format!("{}.{}", st.value(row), sc.value(row)),
                )
            } else {
                (tt.value(row).to_string(), st.value(row).to_string())
            };
            let how = format!("{}/{}", kind.value(row), subtype.value(row));
            let (near, far) = if downstream {
                (source, target)
            } else {
                (target, source)
            };
            let hows = merged.entry((near, far)).or_default();
            if !hows.contains(&how) {
                hows.push(how);
            }
        }
    }
    merged
        .into_iter()
        .map(|((target, source), mut hows)| {
            hows.sort();
            Edge {
                target,
                source,
                how: hows.join(", "),
            }
        })
        .collect()
}

/// The tree under `root`, one line per node, each edge labelled.
fn tree(root: &str, edges: &[Edge]) -> String {
    let mut out = format!("{root}\n");
    let mut path = vec![root.to_string()];
    branch(root, edges, "", &mut path, &mut out);
    out
}

fn branch(node: &str, edges: &[Edge], prefix: &str, path: &mut Vec<String>, out: &mut String) {
    let children: Vec<&Edge> = edges.iter().filter(|e| e.target == node).collect();
    for (i, edge) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (joint, indent) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let cycle = path.contains(&edge.source);
        out.push_str(&format!(
            "{prefix}{joint}{}  ({}){}\n",
            edge.source,
            edge.how,
            if cycle { "  [cycle]" } else { "" }
        ));
        if !cycle {
            path.push(edge.source.clone());
            branch(&edge.source, edges, &format!("{prefix}{indent}"), path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_print_as_a_tree() {
        let edge = |t: &str, s: &str, how: &str| Edge {
            target: t.into(),
            source: s.into(),
            how: how.into(),
        };
        let edges = [
            edge("b.x", "v.x", "DIRECT/IDENTITY"),
            edge("v.x", "a.r", "DIRECT/TRANSFORMATION"),
            edge("a.r", "lineitem.p", "DIRECT/AGGREGATION"),
            edge("a.r", "orders.t", "DIRECT/AGGREGATION"),
        ];
        assert_eq!(
            tree("b.x", &edges),
            "b.x\n\
             └── v.x  (DIRECT/IDENTITY)\n\
             \x20   └── a.r  (DIRECT/TRANSFORMATION)\n\
             \x20       ├── lineitem.p  (DIRECT/AGGREGATION)\n\
             \x20       └── orders.t  (DIRECT/AGGREGATION)\n"
        );
    }
}
