//! The physical optimizer rules every plan goes through, in order.

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;

use super::cached_scan::HeldColumns;
use super::data_cache::DataCache;
use super::known_statistics::{CatalogStatistics, KnownStatistics};
use super::{cooperation, join_filters, proven};

/// The catalog's statistics reach scans before DataFusion's rules choose
/// join modes and build sides from them; Tarn's own rules run last, on the
/// finished plan, and scans whose columns are held become scans of memory
/// once their predicates are final.
pub(crate) fn physical_rules(
    known: &Arc<KnownStatistics>,
    data_cache: &Arc<DataCache>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> =
        vec![Arc::new(CatalogStatistics::new(Arc::clone(known)))];
    rules.extend(PhysicalOptimizer::new().rules);
    rules.push(Arc::new(cooperation::YieldingJoins));
    rules.push(Arc::new(proven::ProvenConjuncts));
    rules.push(Arc::new(join_filters::JoinFiltersInScans));
    rules.push(Arc::new(HeldColumns::new(Arc::clone(data_cache))));
    rules
}
