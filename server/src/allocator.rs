//! How the allocator of the `tarn` binary (mimalloc) gives memory back.
//!
//! By default mimalloc decommits the pages it purges: the kernel unmaps
//! them, and the next query that needs memory faults them in again, each
//! one zeroed by the kernel first. A profile of the server over the 22
//! TPC-H queries at SF1 spent 13% of its CPU in that zeroing
//! (`clear_page_erms`). Purging with `MADV_FREE` instead lets the kernel
//! take the pages back only when memory is short; until then the next
//! allocation reuses them without a fault. Measured side by side
//! (`bash benches/compare-config --env MIMALLOC_PURGE_DECOMMITS=0`): 0.964
//! of the time in total, Q12 0.857, Q15 0.867. Freed pages still count in
//! the process's RSS until the kernel reclaims them (`LazyFree` in
//! `/proc/PID/smaps`).

/// `mi_option_purge_decommits` in mimalloc 2's `mi_option_t` (the `-sys`
/// crate names no constant for it).
const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Makes mimalloc purge without decommitting by default; the operator's
/// `MIMALLOC_PURGE_DECOMMITS=1` still wins. Call once, first thing.
pub fn purge_lazily() {
    // SAFETY: sets the default of a global option before its first use;
    // mimalloc reads the environment over it when it first reads it.
    unsafe { libmimalloc_sys::mi_option_set_default(PURGE_DECOMMITS, 0) };
}
