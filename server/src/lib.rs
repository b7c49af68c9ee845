//! Tarn: an embedded OLAP analytics server.
//!
//! DataFusion runs SQL over a lake of Parquet, CSV and JSON files; results
//! stream to clients over Arrow Flight SQL. See `ARCHITECTURE.md` for the
//! codemap.

pub mod allocator;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod delta;
pub mod demo;
pub mod engine;
pub mod flight;
pub mod footers;
pub mod identity;
pub mod lake;
pub mod lineage;
pub mod names;
pub mod runtime;
pub mod server;
pub mod sql_text;
pub mod storage;
pub mod telemetry;
pub mod traces;

pub use config::ServeConfig;
pub use server::Server;
