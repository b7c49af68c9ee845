//! The result cache: the answers of queries that read only files, kept in
//! memory and served again to an identical query on unchanged files.
//!
//! A dashboard sends the same statements again and again; most of them read
//! tables nobody changed since. The key of an answer is a SHA-256 digest of
//! everything that decides it: the user (masks and row filters are theirs),
//! the session's settings, the optimized physical plan as displayed (every
//! expression, literal, projection, limit and predicate), and the version of
//! every file the plan reads (path, size, modification time, e-tag, byte
//! range, partition values). A new Delta commit, a `REFRESH TABLE` or a
//! replaced file changes the plan's files, so the key changes with it: a
//! cached answer is never served for a table version it was not computed on,
//! and an entry nobody can hit again ages out by LRU.
//!
//! Only plans whose every leaf is a file scan (or produces no input at all)
//! and whose expressions are not volatile (`random()`) are cached; an answer
//! over `max_entry` bytes is not kept, and the entries together stay within
//! `budget` bytes.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use sha2::{Digest, Sha256};

use crate::telemetry::CacheStats;

/// How the result cache is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCacheOptions {
    /// Whether answers are cached at all (`TARN_RESULT_CACHE=off`).
    pub enabled: bool,
    /// The bytes all cached answers may take together.
    pub budget: u64,
    /// The largest answer kept, in bytes.
    pub max_entry: u64,
}

impl Default for ResultCacheOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            budget: 256 * 1024 * 1024,
            max_entry: 16 * 1024 * 1024,
        }
    }
}

/// Which answer a query's is: see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ResultKey([u8; 32]);

/// A cached answer: the batches as they were streamed.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) batches: Vec<RecordBatch>,
    bytes: u64,
}

/// The result cache (see the module's documentation).
#[derive(Debug)]
pub(crate) struct ResultCache {
    options: ResultCacheOptions,
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Held {
    answers: lru::LruCache<ResultKey, Arc<Answer>>,
    bytes: u64,
}

impl ResultCache {
    pub(crate) fn new(options: ResultCacheOptions) -> Self {
        Self {
            options,
            held: Mutex::new(Held {
                answers: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Whether the answer of `logical`, planned with the session settings
    /// `settings`, may be cached at all: the cache is on for the server and
    /// the session, and nothing in the plan is volatile. Asked before the
    /// plan is handed to the physical planner, so that it need not be kept.
    pub(crate) fn may_cache(
        &self,
        settings: &datafusion::config::ConfigOptions,
        logical: &LogicalPlan,
    ) -> bool {
        self.options.enabled
            && super::tarn_settings::TarnSettings::of(settings).result_cache
            && !is_volatile(logical)
    }

    /// The key of the answer of `physical` (of a plan [`Self::may_cache`]
    /// allowed) for `user` with the session settings `settings`, or `None`
    /// when it reads something other than files.
    pub(crate) fn key_of(
        &self,
        user: &str,
        settings: &datafusion::config::ConfigOptions,
        physical: &Arc<dyn ExecutionPlan>,
    ) -> Option<ResultKey> {
        let mut digest = Sha256::new();
        let mut field = |bytes: &[u8]| {
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        // Files first: a plan that reads none (`SELECT 1`, system tables)
        // is refused before its text is rendered.
        let mut files = 0;
        if !fingerprint_files(physical, &mut field, &mut files) || files == 0 {
            return None;
        }
        field(user.as_bytes());
        for entry in settings.entries() {
            field(entry.key.as_bytes());
            field(entry.value.as_deref().unwrap_or("\u{0}").as_bytes());
        }
        // The plan as it reads files, whether or not the data cache holds
        // their columns now: the answer is the same either way.
        let as_read = super::cached_scan::as_file_scans(physical);
        field(
            displayable(as_read.as_ref())
                .indent(true)
                .to_string()
                .as_bytes(),
        );
        Some(ResultKey(digest.finalize().into()))
    }

    /// The answer kept under `key`, counting a hit or a miss.
    pub(crate) fn get(&self, key: &ResultKey) -> Option<Arc<Answer>> {
        let found = self
            .held
            .lock()
            .ok()
            .and_then(|mut held| held.answers.get(key).cloned());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Collects the batches of an answer being streamed, to keep under `key`.
    pub(crate) fn capture(self: &Arc<Self>, key: ResultKey) -> Capture {
        Capture {
            cache: Arc::clone(self),
            key,
            batches: Some(Vec::new()),
            bytes: 0,
        }
    }

    /// Keeps `batches` under `key`, dropping the least recently used answers
    /// until they all fit within the budget.
    fn insert(&self, key: ResultKey, batches: Vec<RecordBatch>, bytes: u64) {
        if bytes > self.options.max_entry || bytes > self.options.budget {
            return;
        }
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if let Some(old) = held.answers.pop(&key) {
            held.bytes -= old.bytes;
        }
        while held.bytes + bytes > self.options.budget {
            let Some((_, evicted)) = held.answers.pop_lru() else {
                break;
            };
            held.bytes -= evicted.bytes;
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        held.bytes += bytes;
        held.answers.put(key, Arc::new(Answer { batches, bytes }));
    }

    /// What the cache holds and has done.
    pub(crate) fn stats(&self) -> CacheStats {
        let (entries, bytes) = self
            .held
            .lock()
            .map(|held| (held.answers.len() as u64, held.bytes))
            .unwrap_or_default();
        CacheStats {
            name: "result",
            enabled: self.options.enabled,
            entries,
            bytes,
            budget: self.options.budget,
            hits: self.hits.load(Ordering::Relaxed),
            misses: Some(self.misses.load(Ordering::Relaxed)),
            evictions: Some(self.evictions.load(Ordering::Relaxed)),
        }
    }
}

/// The batches of one answer on their way to the client; kept once the
/// stream has ended well ([`Capture::keep`]), forgotten otherwise.
#[derive(Debug)]
pub(crate) struct Capture {
    cache: Arc<ResultCache>,
    key: ResultKey,
    /// `None` once the answer outgrew the largest entry.
    batches: Option<Vec<RecordBatch>>,
    bytes: u64,
}

impl Capture {
    /// Adds one streamed batch (its arrays are shared, not copied).
    pub(crate) fn push(&mut self, batch: &RecordBatch) {
        let Some(batches) = &mut self.batches else {
            return;
        };
        self.bytes += batch.get_array_memory_size() as u64;
        if self.bytes > self.cache.options.max_entry {
            self.batches = None;
            return;
        }
        batches.push(batch.clone());
    }

    /// Keeps the whole answer, now that every batch was sent.
    pub(crate) fn keep(self) {
        if let Some(batches) = self.batches {
            self.cache.insert(self.key, batches, self.bytes);
        }
    }
}

/// Whether `plan` (or a subquery of it) has an expression whose value may
/// differ between two runs on the same data (`random()`, `uuid()`).
fn is_volatile(plan: &LogicalPlan) -> bool {
    let mut volatile = false;
    let _ = plan.apply_with_subqueries(|node| {
        volatile = node.expressions().iter().any(|e| e.is_volatile());
        Ok(match volatile {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    volatile
}

/// Feeds the version of every file `plan` reads to `field`, counting them in
/// `files`; `false` when a leaf reads something other than files (a table in
/// memory, a system table), whose versions are unknown.
fn fingerprint_files(
    plan: &Arc<dyn ExecutionPlan>,
    field: &mut impl FnMut(&[u8]),
    files: &mut usize,
) -> bool {
    super::scanned::visit_file_scans(plan, &mut |config| {
        field(config.object_store_url.as_str().as_bytes());
        for group in &config.file_groups {
            for file in group.files() {
                let meta = &file.object_meta;
                field(meta.location.as_ref().as_bytes());
                field(&meta.size.to_le_bytes());
                field(
                    &meta
                        .last_modified
                        .timestamp_nanos_opt()
                        .unwrap_or(0)
                        .to_le_bytes(),
                );
                field(meta.e_tag.as_deref().unwrap_or("").as_bytes());
                field(meta.version.as_deref().unwrap_or("").as_bytes());
                field(format!("{:?} {:?}", file.range, file.partition_values).as_bytes());
                *files += 1;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap()
    }

    fn key(n: u8) -> ResultKey {
        ResultKey([n; 32])
    }

    #[test]
    fn the_least_recently_used_answers_leave_to_keep_the_budget() {
        let size = batch(1000).get_array_memory_size() as u64;
        let cache = Arc::new(ResultCache::new(ResultCacheOptions {
            enabled: true,
            budget: size * 2,
            max_entry: size,
        }));
        for n in 0..3 {
            let mut capture = cache.capture(key(n));
            capture.push(&batch(1000));
            capture.keep();
            if n == 1 {
                assert!(cache.get(&key(0)).is_some(), "0 becomes the most recent");
            }
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (2, Some(1)));
        assert!(stats.bytes <= stats.budget);
        assert!(
            cache.get(&key(1)).is_none(),
            "1 was the least recently used"
        );
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(2)).is_some());
    }

    #[test]
    fn an_answer_over_the_largest_entry_is_not_kept() {
        let size = batch(1000).get_array_memory_size() as u64;
        let cache = Arc::new(ResultCache::new(ResultCacheOptions {
            enabled: true,
            budget: size * 10,
            max_entry: size + size / 2,
        }));
        let mut capture = cache.capture(key(1));
        capture.push(&batch(1000));
        capture.push(&batch(1000));
        capture.keep();
        assert_eq!(cache.stats().entries, 0);
        assert!(cache.get(&key(1)).is_none());
        assert_eq!(cache.stats().misses, Some(1));
    }
}
