//! The decoded-data cache: columns of Parquet files kept in memory as Arrow
//! arrays, so that a scan whose columns are all held decodes nothing.
//!
//! An entry is one column of one file version (URL, size, modification
//! time, e-tag, version: [`FileVersion`]), the whole column as compact
//! chunks of 8,192 rows ([`super::column_chunks`]).
//! A rewritten file, a new Delta commit (new files) or a `REFRESH TABLE`
//! that finds a changed file makes scans name other versions, so a held
//! column is never served for data it was not decoded from; entries nobody
//! can hit again age out by LRU.
//!
//! What is loaded: a column a scan needed a second time ([`HOT_AFTER`]), in
//! the background on the scan runtime; every column of a table whose cache
//! policy is `memory` (`ALTER TABLE t SET (cache = 'memory')`), pinned: it
//! is never evicted to make room for unpinned columns. A table set to
//! `none` is never cached. The entries together stay within the budget;
//! a load that does not fit once everything unpinned is evicted is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow::array::ArrayRef;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::column_chunks::{Chunks, chunked};
use super::file_versions::FileVersion;
use crate::telemetry::CacheStats;

/// Scans of a column before it is loaded (unless its table is pinned).
pub(crate) const HOT_AFTER: u32 = 2;

/// File versions whose scans are counted at most; beyond it the counts
/// start again (a lake of many files scanned once each must not grow it).
const MAX_COUNTED: usize = 100_000;

/// How the decoded-data cache is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCacheOptions {
    /// Whether columns are cached at all (`TARN_DATA_CACHE=off`).
    pub enabled: bool,
    /// The bytes all held columns may take together.
    pub budget: u64,
}

impl Default for DataCacheOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            budget: 1024 * 1024 * 1024,
        }
    }
}

/// What a table's columns may do in the cache (`ALTER TABLE t SET (cache = ...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachePolicy {
    /// Loaded once hot, evicted when room is needed (the default).
    Auto,
    /// Every column loaded at once and kept (pinned).
    Memory,
    /// Never cached.
    None,
}

impl CachePolicy {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "auto" | "default" => Some(Self::Auto),
            "memory" => Some(Self::Memory),
            "none" | "off" => Some(Self::None),
            _ => None,
        }
    }
}

/// One column of one file version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ColumnKey {
    pub(crate) file: FileVersion,
    pub(crate) column: String,
}

#[derive(Debug)]
struct Entry {
    chunks: Chunks,
    bytes: u64,
    pinned: bool,
}

#[derive(Debug)]
struct Held {
    columns: lru::LruCache<ColumnKey, Entry>,
    bytes: u64,
}

/// Where loads run and what they execute with.
#[derive(Debug)]
struct Loader {
    runtime: tokio::runtime::Handle,
    task: Arc<TaskContext>,
}

/// The decoded-data cache (see the module's documentation).
#[derive(Debug)]
pub(crate) struct DataCache {
    options: DataCacheOptions,
    held: Mutex<Held>,
    /// Table locations (a file, or a folder ending in `/`) and their policy.
    policies: RwLock<Vec<(String, CachePolicy)>>,
    scans: Mutex<HashMap<ColumnKey, u32>>,
    loading: Mutex<HashSet<ColumnKey>>,
    loader: OnceLock<Loader>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl DataCache {
    pub(crate) fn new(options: DataCacheOptions) -> Self {
        Self {
            options,
            held: Mutex::new(Held {
                columns: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            policies: RwLock::default(),
            scans: Mutex::default(),
            loading: Mutex::default(),
            loader: OnceLock::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.options.enabled
    }

    /// Lets the cache load columns: on `runtime`, executing with `task`.
    pub(crate) fn start_loading(&self, runtime: tokio::runtime::Handle, task: Arc<TaskContext>) {
        let _ = self.loader.set(Loader { runtime, task });
    }

    /// The policy of the table whose location `url` starts with (the
    /// longest such location), `Auto` for any other file.
    pub(crate) fn policy_of(&self, url: &str) -> CachePolicy {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies
            .iter()
            .filter(|(location, _)| url.starts_with(location.as_str()))
            .max_by_key(|(location, _)| location.len())
            .map_or(CachePolicy::Auto, |(_, policy)| *policy)
    }

    /// Sets the policy of the table at `location`; its held columns follow
    /// (pinned, unpinned or dropped).
    pub(crate) fn set_policy(&self, location: &str, policy: CachePolicy) {
        {
            let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
            policies.retain(|(held, _)| held != location);
            if policy != CachePolicy::Auto {
                policies.push((location.to_string(), policy));
            }
        }
        let mut held = self.lock();
        let keys: Vec<ColumnKey> = held
            .columns
            .iter()
            .filter(|(key, _)| key.file.url.starts_with(location))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            match policy {
                CachePolicy::None => {
                    if let Some(entry) = held.columns.pop(&key) {
                        held.bytes -= entry.bytes;
                    }
                }
                _ => {
                    if let Some(entry) = held.columns.peek_mut(&key) {
                        entry.pinned = policy == CachePolicy::Memory;
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The arrays of `columns` of every file in `files`, when all are held
    /// (a hit); otherwise `None` (a miss), and the columns that are now hot
    /// start loading, from the files as `template` scans them.
    pub(crate) fn lookup(
        self: &Arc<Self>,
        files: &[FileVersion],
        columns: &[String],
        template: &FileScanConfig,
    ) -> Option<Vec<Vec<Chunks>>> {
        if !self.options.enabled || files.is_empty() {
            return None;
        }
        if files
            .iter()
            .any(|file| self.policy_of(&file.url) == CachePolicy::None)
        {
            return None;
        }
        let found = {
            let mut held = self.lock();
            files
                .iter()
                .map(|file| {
                    columns
                        .iter()
                        .map(|column| {
                            let key = ColumnKey {
                                file: file.clone(),
                                column: column.clone(),
                            };
                            held.columns.get(&key).map(|e| Arc::clone(&e.chunks))
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .collect::<Option<Vec<_>>>()
        };
        match found {
            Some(found) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(found)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                for file in files {
                    let pinned = self.policy_of(&file.url) == CachePolicy::Memory;
                    let hot: Vec<String> = columns
                        .iter()
                        .filter(|column| pinned || self.scanned_again(file, column))
                        .cloned()
                        .collect();
                    self.load_soon(file, hot, template);
                }
                None
            }
        }
    }

    /// Counts a scan of `column` of `file`; whether it is now hot.
    fn scanned_again(&self, file: &FileVersion, column: &str) -> bool {
        let mut scans = self.scans.lock().unwrap_or_else(|e| e.into_inner());
        if scans.len() >= MAX_COUNTED {
            scans.clear();
        }
        let count = scans
            .entry(ColumnKey {
                file: file.clone(),
                column: column.to_string(),
            })
            .or_default();
        *count += 1;
        *count >= HOT_AFTER
    }

    fn is_held(&self, key: &ColumnKey) -> bool {
        self.lock().columns.contains(key)
    }

    /// Loads `columns` of `file` in the background (those not held or
    /// already loading), decoding them as `template` does.
    pub(crate) fn load_soon(
        self: &Arc<Self>,
        file: &FileVersion,
        columns: Vec<String>,
        template: &FileScanConfig,
    ) {
        let Some(loader) = self.loader.get() else {
            return;
        };
        let columns: Vec<String> = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            columns
                .into_iter()
                .filter(|column| {
                    let key = ColumnKey {
                        file: file.clone(),
                        column: column.clone(),
                    };
                    !self.is_held(&key) && loading.insert(key)
                })
                .collect()
        };
        if columns.is_empty() {
            return;
        }
        let Some(scan) = single_file_scan(template, file, &columns) else {
            self.done_loading(file, &columns);
            return;
        };
        let task = Arc::clone(&loader.task);
        let file = file.clone();
        let cache = Arc::clone(self);
        loader.runtime.spawn(async move {
            match collect(scan, task).await {
                Ok(batches) => {
                    for (index, column) in columns.iter().enumerate() {
                        let parts: Vec<ArrayRef> = batches
                            .iter()
                            .map(|b| Arc::clone(b.column(index)))
                            .collect();
                        let chunks = match chunked(&parts) {
                            Ok(chunks) => chunks,
                            Err(err) => {
                                tracing::debug!(target: "tarn::cache", file = %file.url, column, "not cached: {err}");
                                continue;
                            }
                        };
                        cache.insert(
                            ColumnKey {
                                file: file.clone(),
                                column: column.clone(),
                            },
                            chunks,
                        );
                    }
                }
                Err(err) => {
                    tracing::debug!(target: "tarn::cache", file = %file.url, "not cached: {err}");
                }
            }
            cache.done_loading(&file, &columns);
        });
    }

    fn done_loading(&self, file: &FileVersion, columns: &[String]) {
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        for column in columns {
            loading.remove(&ColumnKey {
                file: file.clone(),
                column: column.clone(),
            });
        }
    }

    /// Holds `chunks` as `key`, evicting the least recently used unpinned
    /// columns to make room; drops them when they cannot fit.
    pub(crate) fn insert(&self, key: ColumnKey, chunks: Vec<ArrayRef>) -> bool {
        let bytes = chunks
            .iter()
            .map(|chunk| chunk.get_array_memory_size() as u64)
            .sum::<u64>();
        let pinned = self.policy_of(&key.file.url) == CachePolicy::Memory;
        if self.policy_of(&key.file.url) == CachePolicy::None || bytes > self.options.budget {
            return false;
        }
        let mut held = self.lock();
        if let Some(old) = held.columns.pop(&key) {
            held.bytes -= old.bytes;
        }
        while held.bytes + bytes > self.options.budget {
            let victim = held
                .columns
                .iter()
                .rev()
                .find(|(_, entry)| !entry.pinned)
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else {
                tracing::warn!(target: "tarn::cache", column = %key.column, file = %key.file.url,
                    "the data cache is full of pinned columns; raise --data-cache-size to hold this one");
                return false;
            };
            if let Some(entry) = held.columns.pop(&victim) {
                held.bytes -= entry.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        held.bytes += bytes;
        held.columns.put(
            key,
            Entry {
                chunks: Arc::new(chunks),
                bytes,
                pinned,
            },
        );
        true
    }

    /// What the cache holds and has done.
    pub(crate) fn stats(&self) -> CacheStats {
        let held = self.lock();
        CacheStats {
            name: "data",
            enabled: self.options.enabled,
            entries: held.columns.len() as u64,
            bytes: held.bytes,
            budget: self.options.budget,
            hits: self.hits.load(Ordering::Relaxed),
            misses: Some(self.misses.load(Ordering::Relaxed)),
            evictions: Some(self.evictions.load(Ordering::Relaxed)),
        }
    }
}

/// A scan of `columns` of `file` alone, decoded as `template` decodes it
/// (its table schema, adapters and reader) but with no predicate, limit or
/// other projection.
fn single_file_scan(
    template: &FileScanConfig,
    file: &FileVersion,
    columns: &[String],
) -> Option<Arc<dyn ExecutionPlan>> {
    let partitioned = template
        .file_groups
        .iter()
        .flat_map(|group| group.files())
        .find(|candidate| super::file_versions::version_of(template, candidate) == *file)?;
    let whole = datafusion::datasource::listing::PartitionedFile {
        range: None,
        ..partitioned.clone()
    };
    let schema = template.file_source.table_schema().table_schema();
    let indices = columns
        .iter()
        .map(|column| schema.index_of(column).ok())
        .collect::<Option<Vec<usize>>>()?;
    let source = super::cached_scan::plain_source(template)?;
    let config = FileScanConfigBuilder::from(template.clone())
        .with_source(source)
        .with_file_groups(vec![FileGroup::new(vec![whole])])
        .with_limit(None)
        .with_output_ordering(vec![])
        .with_projection_indices(Some(indices))
        .ok()?
        .build();
    Some(DataSourceExec::from_data_source(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn key(url: &str, column: &str) -> ColumnKey {
        ColumnKey {
            file: FileVersion {
                url: url.into(),
                size: 1,
                modified_nanos: 0,
                e_tag: String::new(),
                version: String::new(),
            },
            column: column.into(),
        }
    }

    fn column(rows: i64) -> Vec<ArrayRef> {
        chunked(&[Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap()
    }

    #[test]
    fn unpinned_columns_leave_least_recently_used_first_and_pinned_ones_stay() {
        let size = column(1000)[0].get_array_memory_size() as u64;
        let cache = DataCache::new(DataCacheOptions {
            enabled: true,
            budget: size * 3,
        });
        cache.set_policy("file:///lake/pinned/", CachePolicy::Memory);
        assert!(cache.insert(key("file:///lake/pinned/a.parquet", "x"), column(1000)));
        assert!(cache.insert(key("file:///lake/t.parquet", "a"), column(1000)));
        assert!(cache.insert(key("file:///lake/t.parquet", "b"), column(1000)));
        assert!(cache.insert(key("file:///lake/t.parquet", "c"), column(1000)));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (3, Some(1)));
        assert!(stats.bytes <= stats.budget);
        assert!(cache.is_held(&key("file:///lake/pinned/a.parquet", "x")));
        assert!(!cache.is_held(&key("file:///lake/t.parquet", "a")));
        // Only pinned columns left to evict: a new pinned one does not fit.
        assert!(cache.insert(key("file:///lake/pinned/b.parquet", "x"), column(1000)));
        assert!(cache.insert(key("file:///lake/pinned/c.parquet", "x"), column(1000)));
        assert!(!cache.insert(key("file:///lake/pinned/d.parquet", "x"), column(1000)));
        assert!(cache.stats().bytes <= size * 3);
    }

    #[test]
    fn a_table_set_to_none_loses_its_columns_and_takes_no_more() {
        let cache = DataCache::new(DataCacheOptions::default());
        assert!(cache.insert(key("file:///lake/t/1.parquet", "a"), column(10)));
        assert!(cache.insert(key("file:///lake/u.parquet", "a"), column(10)));
        cache.set_policy("file:///lake/t/", CachePolicy::None);
        assert!(!cache.is_held(&key("file:///lake/t/1.parquet", "a")));
        assert!(!cache.insert(key("file:///lake/t/2.parquet", "a"), column(10)));
        assert!(cache.is_held(&key("file:///lake/u.parquet", "a")));
        assert_eq!(
            cache.policy_of("file:///lake/t/3.parquet"),
            CachePolicy::None
        );
        cache.set_policy("file:///lake/t/", CachePolicy::Auto);
        assert_eq!(
            cache.policy_of("file:///lake/t/3.parquet"),
            CachePolicy::Auto
        );
    }

    #[test]
    fn a_column_is_hot_on_its_second_scan() {
        let cache = DataCache::new(DataCacheOptions::default());
        let file = key("file:///lake/t.parquet", "a").file;
        assert!(!cache.scanned_again(&file, "a"));
        assert!(cache.scanned_again(&file, "a"));
        assert!(!cache.scanned_again(&file, "b"));
    }
}
