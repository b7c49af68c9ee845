//! `ALTER TABLE name SET (cache = 'memory' | 'auto' | 'none')`: a table's
//! policy in the decoded-data cache ([`super::data_cache`]). `memory` loads
//! every column of the table now and keeps it (pinned); `none` never caches
//! it; `auto` (the default) caches the columns scans use again. Recorded as
//! a setting, so it is applied again at start.

use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::data_cache::CachePolicy;
use super::error::{EngineError, EngineResult};
use super::file_versions::files_of;
use super::scanned::visit_file_scans;
use super::statement_node::{leaf_statement_node, node_of};

/// The statement as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TableCacheNode {
    /// The table, as the statement names it.
    pub(crate) name: String,
    /// The policy as written.
    pub(crate) policy: String,
    schema: DFSchemaRef,
}

impl TableCacheNode {
    /// The table and policy of `sql` if it is `ALTER TABLE name SET (cache
    /// = 'value')` (with an optional `;`), read with the SQL tokenizer.
    pub(crate) fn parse(sql: &str) -> Option<(String, String)> {
        let tokens = crate::sql_text::tokens(sql)?;
        let mut significant: Vec<_> = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        if significant
            .last()
            .is_some_and(|t| t.token == Token::SemiColon)
        {
            significant.pop();
        }
        let keyword = |i: usize, word: Keyword| matches!(significant.get(i).map(|t| &t.token), Some(Token::Word(w)) if w.keyword == word);
        if !keyword(0, Keyword::ALTER) || !keyword(1, Keyword::TABLE) {
            return None;
        }
        let set = (2..significant.len()).find(|&i| keyword(i, Keyword::SET))?;
        let name = crate::sql_text::table_name(sql, &significant[2..set])?;
        let rest: Vec<&Token> = significant[set + 1..].iter().map(|t| &t.token).collect();
        match rest.as_slice() {
            [
                Token::LParen,
                Token::Word(option),
                Token::Eq,
                Token::SingleQuotedString(value),
                Token::RParen,
            ] if option.value.eq_ignore_ascii_case("cache") => Some((name, value.clone())),
            _ => None,
        }
    }

    pub(crate) fn plan(name: String, policy: String) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                name,
                policy,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    pub(crate) fn of(plan: &LogicalPlan) -> Option<&Self> {
        node_of::<Self>(plan)
    }

    /// The policy, or an error naming the values there are.
    pub(crate) fn policy(&self) -> EngineResult<CachePolicy> {
        CachePolicy::parse(&self.policy).ok_or_else(|| {
            EngineError::Plan(format!(
                "cache = '{}' is not a cache policy; use 'memory' (load the table and keep it), \
                 'auto' (cache what is scanned again) or 'none'",
                self.policy
            ))
        })
    }

    /// The key the statement is recorded under, as a setting.
    pub(crate) fn setting_key(&self) -> String {
        setting_key_of(&crate::names::table_name(&TableReference::parse_str(
            &self.name,
        )))
    }
}

/// The setting a table's cache policy is remembered as (forgotten when the
/// table is dropped).
pub(crate) fn setting_key_of(table: &str) -> String {
    format!("table_cache.{table}")
}

leaf_statement_node!(TableCacheNode, "TableCache", name, |node| format!(
    "{} cache = '{}'",
    node.name, node.policy
));

impl super::Engine {
    /// Applies `ALTER TABLE name SET (cache = ...)`: every file of the
    /// table now gets the policy; with `memory` its columns start loading.
    pub(super) async fn set_table_cache(&self, node: &TableCacheNode) -> EngineResult<()> {
        let policy = node.policy()?;
        let reference = TableReference::parse_str(&node.name);
        if !matches!(self.ctx.table_exist(reference.clone()), Ok(true)) {
            return Err(EngineError::TableNotFound {
                name: node.name.clone(),
            });
        }
        let scan = self
            .ctx
            .table(reference)
            .await
            .map_err(EngineError::from_planning)?
            .create_physical_plan()
            .await
            .map_err(EngineError::from_planning)?;
        let mut scans = Vec::new();
        let only_files = visit_file_scans(&scan, &mut |config| scans.push(config.clone()));
        if !only_files {
            return Err(EngineError::Plan(format!(
                "only tables of files are cached, and {} is not one (a view or a system table)",
                node.name
            )));
        }
        let cache = &self.data_cache;
        let files: Vec<_> = scans.iter().flat_map(files_of).collect();
        let location = super::analyze::location(&files, files.len() == 1);
        if location.is_empty() {
            // An empty table: nothing to hold until it has files.
            return Ok(());
        }
        cache.set_policy(&location, policy);
        if policy == CachePolicy::Memory && cache.enabled() {
            for config in &scans {
                let columns: Vec<String> = config
                    .file_source
                    .table_schema()
                    .file_schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                for file in files_of(config) {
                    cache.load_soon(&file, columns.clone(), config);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_statements_are_recognised_by_their_tokens() {
        let parse = TableCacheNode::parse;
        assert_eq!(
            parse("ALTER TABLE lineitem SET (cache = 'memory')"),
            Some(("lineitem".into(), "memory".into()))
        );
        assert_eq!(
            parse("alter table public.\"Big One\" set ( CACHE='none' );"),
            Some(("public.\"Big One\"".into(), "none".into()))
        );
        for other in [
            "ALTER TABLE t SET (cache = memory)",
            "ALTER TABLE t SET (retention = '1 day')",
            "ALTER TABLE t ADD COLUMN c INT",
            "ALTER USER u SET statement_timeout = '1s'",
            "ALTER TABLE SET (cache = 'memory')",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
