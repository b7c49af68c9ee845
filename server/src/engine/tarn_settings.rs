//! Tarn's own session settings, changed like DataFusion's with
//! `SET tarn.<name> = value` (and `SHOW tarn.<name>`), per session:
//!
//! - `tarn.statement_timeout`: the longest a statement may run, e.g. `'30s'`
//!   or `'5m'`; `'0'` for no limit; empty for the server's default
//!   (`[engine] statement_timeout`).
//! - `tarn.vacuum_retention_check`: whether `VACUUM` refuses a retention
//!   below the table's minimum (`delta.deletedFileRetentionDuration`).
//! - `tarn.result_cache`: whether this session's queries are answered from,
//!   and kept in, the server's result cache (when the server has one).
//! - `tarn.data_cache`: whether this session's scans read held columns from,
//!   and count towards, the server's decoded-data cache (when it has one).
//! - `tarn.column_statistics`: whether the planner is given the column
//!   statistics `ANALYZE` stored (off by default: DataFusion 55 turns the
//!   distinct counts into worse join choices for TPC-H Q17 and Q21, see
//!   `benches/results/README.md`).
//! - `tarn.shared_subplans`: whether an aggregate that a query reads in
//!   several places (a CTE or view read twice, as in TPC-H Q15) is computed
//!   once and its result shared.
//! - `tarn.exact_decimals`: whether decimal `+`, `-` and `*` that cannot
//!   overflow skip Arrow's per-row overflow checks.

use std::time::Duration;

use datafusion::config::{ConfigExtension, ConfigOptions};

datafusion::common::extensions_options! {
    /// Tarn's own session settings.
    pub struct TarnSettings {
        /// The longest a statement may run (`'30s'`, `'0'` for no limit;
        /// empty for the server's default).
        pub statement_timeout: String, default = String::new()
        /// Whether `VACUUM` refuses a retention below the table's minimum.
        pub vacuum_retention_check: bool, default = true
        /// Whether queries use the server's result cache.
        pub result_cache: bool, default = true
        /// Whether scans use (and heat) the server's decoded-data cache.
        pub data_cache: bool, default = true
        /// Whether the planner is given the stored column statistics.
        pub column_statistics: bool, default = false
        /// Whether an aggregate read in several places is computed once.
        pub shared_subplans: bool, default = true
        /// Whether decimal arithmetic that cannot overflow skips overflow checks.
        pub exact_decimals: bool, default = true
    }
}

impl ConfigExtension for TarnSettings {
    const PREFIX: &'static str = "tarn";
}

impl TarnSettings {
    /// The settings of `context`'s session, read in place (no copy of its state).
    pub(crate) fn of_session(context: &datafusion::prelude::SessionContext) -> Self {
        Self::of(context.state_ref().read().config_options())
    }

    /// The settings in `options` (the defaults when absent).
    pub(crate) fn of(options: &ConfigOptions) -> Self {
        options
            .extensions
            .get::<Self>()
            .cloned()
            .unwrap_or_default()
    }

    /// The session's statement timeout: `server_default` unless it set one
    /// (`None`: no limit).
    pub(crate) fn statement_timeout(&self, server_default: Option<Duration>) -> Option<Duration> {
        match self.statement_timeout.trim() {
            "" => server_default,
            text => parse_timeout(text).ok().flatten(),
        }
    }
}

/// A timeout as written in settings: a duration (`'30s'`, `'5m'`, `'1h 30m'`)
/// or `0` for none.
pub(crate) fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim().trim_matches('\'');
    if text == "0" {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "'{text}' is not a duration ({e}); write e.g. '30s', '5m' or '0' for no limit"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_durations_with_zero_for_none() {
        assert_eq!(parse_timeout("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_timeout("'1m 30s'"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(parse_timeout("0s"), Ok(None));
        assert!(parse_timeout("soon").unwrap_err().contains("'30s'"));
        let mut settings = TarnSettings::default();
        let server = Some(Duration::from_secs(600));
        assert_eq!(settings.statement_timeout(server), server);
        settings.statement_timeout = "2s".into();
        assert_eq!(
            settings.statement_timeout(server),
            Some(Duration::from_secs(2))
        );
        settings.statement_timeout = "0".into();
        assert_eq!(settings.statement_timeout(server), None);
    }
}
