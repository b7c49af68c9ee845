//! Which version of each file a scan reads: what answers, statistics and
//! held columns are keyed by.

use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfig;
use sha2::{Digest, Sha256};

/// One file of a scan, named in full (store URL and path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileVersion {
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) modified_nanos: i64,
    pub(crate) e_tag: String,
    pub(crate) version: String,
}

/// The files `config` reads, each once (a file split into byte ranges
/// appears in several groups).
pub(crate) fn files_of(config: &FileScanConfig) -> Vec<FileVersion> {
    let store = store_of(config);
    let mut files: Vec<FileVersion> = config
        .file_groups
        .iter()
        .flat_map(|group| group.files())
        .map(|file| version_of_file(store, file))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The version of `file`, one of the files `config` reads.
pub(crate) fn version_of(config: &FileScanConfig, file: &PartitionedFile) -> FileVersion {
    version_of_file(store_of(config), file)
}

fn store_of(config: &FileScanConfig) -> &str {
    config.object_store_url.as_str().trim_end_matches('/')
}

fn version_of_file(store: &str, file: &PartitionedFile) -> FileVersion {
    let meta = &file.object_meta;
    FileVersion {
        url: format!("{store}/{}", meta.location),
        size: meta.size,
        modified_nanos: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
        e_tag: meta.e_tag.clone().unwrap_or_default(),
        version: meta.version.clone().unwrap_or_default(),
    }
}

/// A digest of a set of file versions: equal for the same files, changed
/// by any file added, removed or rewritten.
pub(crate) fn digest(files: &[FileVersion]) -> String {
    let mut sorted: Vec<&FileVersion> = files.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for file in sorted {
        for part in [
            file.url.as_bytes(),
            &file.size.to_le_bytes(),
            &file.modified_nanos.to_le_bytes(),
            file.e_tag.as_bytes(),
            file.version.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
