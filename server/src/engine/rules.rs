//! The physical optimizer rules every plan goes through, in order.

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;

use super::cached_scan::HeldColumns;
use super::data_cache::DataCache;
use super::known_statistics::{CatalogStatistics, KnownStatistics};
use super::{cooperation, join_filters, proven, shared_subplans};

/// The catalog's statistics reach scans before DataFusion's rules choose
/// join modes and build sides from them; Tarn's own rules run last, on the
/// finished plan, and scans whose columns are held become scans of memory
/// once their predicates are final. An aggregate that the plan computes in
/// several places is computed once ([`shared_subplans`]), decided before
/// DataFusion pushes join filters into scans.
pub(crate) fn physical_rules(
    known: &Arc<KnownStatistics>,
    data_cache: &Arc<DataCache>,
) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> =
        vec![Arc::new(CatalogStatistics::new(Arc::clone(known)))];
    let mut defaults = PhysicalOptimizer::new().rules;
    // Before the joins' dynamic filters are pushed into scans, the places
    // that read one aggregate are still equal; afterwards each carries a
    // different join's filter.
    let before_dynamic_filters = defaults
        .iter()
        .position(|rule| rule.name() == "FilterPushdown(Post)")
        .unwrap_or(defaults.len());
    defaults.insert(
        before_dynamic_filters,
        Arc::new(shared_subplans::SharedSubplans),
    );
    rules.extend(defaults);
    rules.push(Arc::new(cooperation::YieldingJoins));
    rules.push(Arc::new(proven::ProvenConjuncts));
    rules.push(Arc::new(join_filters::JoinFiltersInScans));
    rules.push(Arc::new(HeldColumns::new(Arc::clone(data_cache))));
    rules
}
