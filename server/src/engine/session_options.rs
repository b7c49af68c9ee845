//! Session options as Flight's `SetSessionOptions` / `GetSessionOptions`
//! name them: `catalog` and `schema` (what the JDBC driver's `catalog=`
//! sends), and any setting `SET` may change, by its DataFusion key.

use datafusion::config::ConfigOptions;

use super::error::EngineError;
use super::session::Session;
use super::{Engine, settings};

/// The option that names the session's default catalog.
const CATALOG: &str = "catalog";
/// The option that names the session's default schema.
const SCHEMA: &str = "schema";

/// A session option's value, as Flight carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A list of strings.
    List(Vec<String>),
    /// No value: go back to the server's default.
    Unset,
}

impl OptionValue {
    /// The value as DataFusion's settings take it.
    fn as_setting(&self) -> Option<String> {
        match self {
            Self::Text(text) => Some(text.clone()),
            Self::Bool(b) => Some(b.to_string()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(f) => Some(f.to_string()),
            Self::List(values) => Some(values.join(",")),
            Self::Unset => None,
        }
    }
}

/// Why one option was not set (Flight's `SetSessionOptionsResult.Error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionOptionError {
    /// There is no such option.
    #[error("{0}")]
    InvalidName(String),
    /// The value does not fit the option.
    #[error("{0}")]
    InvalidValue(String),
    /// The option exists but may not be changed by a client.
    #[error("{0}")]
    Refused(String),
}

impl Engine {
    /// Sets one option of `session`.
    pub fn set_session_option(
        &self,
        session: &Session,
        name: &str,
        value: &OptionValue,
    ) -> Result<(), SessionOptionError> {
        let context = session.context();
        match name {
            CATALOG | SCHEMA => {
                let Some(wanted) = value.as_setting() else {
                    return self.restore_default(session, name);
                };
                let exists = match name {
                    CATALOG => context.catalog(&wanted).is_some(),
                    _ => {
                        let state = context.state();
                        let catalog = &state.config_options().catalog.default_catalog;
                        context
                            .catalog(catalog)
                            .is_some_and(|c| c.schema(&wanted).is_some())
                    }
                };
                if !exists {
                    return Err(SessionOptionError::InvalidValue(format!(
                        "there is no {name} '{wanted}'; GetCatalogs and GetDbSchemas list them"
                    )));
                }
                let state = context.state_ref();
                let mut state = state.write();
                let options = &mut state.config_mut().options_mut().catalog;
                match name {
                    CATALOG => options.default_catalog = wanted,
                    _ => options.default_schema = wanted,
                }
                Ok(())
            }
            key => {
                let Some(wanted) = value.as_setting() else {
                    settings::check(key, None).map_err(|e| refusal(key, e))?;
                    return self.restore_default(session, key);
                };
                settings::check(key, Some(&wanted)).map_err(|e| refusal(key, e))?;
                let state = context.state_ref();
                let mut state = state.write();
                state
                    .config_mut()
                    .options_mut()
                    .set(key, &wanted)
                    .map_err(|e| SessionOptionError::InvalidValue(e.strip_backtrace()))
            }
        }
    }

    /// Sets option `name` of `session` back to the server's default.
    fn restore_default(&self, session: &Session, name: &str) -> Result<(), SessionOptionError> {
        let defaults = self.ctx.state();
        let defaults = defaults.config_options();
        let state = session.context().state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        match name {
            CATALOG => options.catalog.default_catalog = defaults.catalog.default_catalog.clone(),
            SCHEMA => options.catalog.default_schema = defaults.catalog.default_schema.clone(),
            key => {
                let value = setting(defaults, key).unwrap_or_default();
                options
                    .set(key, &value)
                    .map_err(|e| SessionOptionError::InvalidValue(e.strip_backtrace()))?;
            }
        }
        Ok(())
    }

    /// The options of `session`: its catalog and schema, and every setting
    /// it changed from the server's defaults.
    pub fn session_options(&self, session: &Session) -> Vec<(String, OptionValue)> {
        let state = session.context().state();
        let options = state.config_options();
        let mut answer = vec![
            (
                CATALOG.to_string(),
                OptionValue::Text(options.catalog.default_catalog.clone()),
            ),
            (
                SCHEMA.to_string(),
                OptionValue::Text(options.catalog.default_schema.clone()),
            ),
        ];
        let defaults = self.ctx.state();
        let defaults = defaults.config_options();
        for entry in options.entries() {
            if entry.key.starts_with("datafusion.catalog.") {
                continue;
            }
            let value = entry.value.unwrap_or_default();
            if setting(defaults, &entry.key).unwrap_or_default() != value {
                answer.push((entry.key, OptionValue::Text(value)));
            }
        }
        answer
    }
}

/// The value of setting `key` in `options`.
fn setting(options: &ConfigOptions, key: &str) -> Option<String> {
    options
        .entries()
        .into_iter()
        .find(|entry| entry.key == key)
        .and_then(|entry| entry.value)
}

/// The session option error for a setting `check` refused.
fn refusal(key: &str, err: EngineError) -> SessionOptionError {
    let known = key.starts_with("datafusion.runtime.")
        || ConfigOptions::new().entries().iter().any(|e| e.key == key);
    match err {
        EngineError::PermissionDenied(message) => SessionOptionError::Refused(message),
        other if known => SessionOptionError::InvalidValue(other.to_string()),
        other => SessionOptionError::InvalidName(other.to_string()),
    }
}
