//! The fence around local files: every path Tarn opens on the local disk
//! through `object_store` must lie inside a declared store, and never inside
//! a folder Tarn keeps for itself (the state folder with the catalog).
//!
//! The check acts on the path the file system will actually open: the
//! object-store path is turned into a file path exactly as `LocalFileSystem`
//! does (percent-decoded), and symbolic links are resolved, so neither
//! encodings nor links lead out. [`FencedFileSystem`] applies it to every
//! call, reads, writes, deletes and listings alike; SQL-level checks
//! (`LocationPolicy`) use the same [`Fence`] to refuse a statement before it
//! runs.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

use super::gated::{Gate, GatedStore};

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The path leads outside every store.
    #[error("it resolves to {resolved}, which is outside every store")]
    Outside {
        /// Where it leads, links resolved.
        resolved: PathBuf,
    },
    /// The path leads into a folder Tarn keeps for itself.
    #[error("it resolves to {resolved}, inside Tarn's own state folder {reserved}")]
    Reserved {
        /// Where it leads, links resolved.
        resolved: PathBuf,
        /// The folder.
        reserved: PathBuf,
    },
    /// The path is relative or names a parent folder.
    #[error("'{0}' is not a plain absolute path")]
    NotPlain(PathBuf),
}

/// The folders local paths must lie in, and the folders they must not.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    roots: Vec<PathBuf>,
    reserved: Vec<PathBuf>,
}

impl Fence {
    /// Admits paths inside `roots` that are not inside `reserved`. Both are
    /// resolved (links followed) once, here.
    pub fn new(
        roots: impl IntoIterator<Item = PathBuf>,
        reserved: impl IntoIterator<Item = PathBuf>,
    ) -> Self {
        Self {
            roots: roots.into_iter().map(|p| resolve(&p)).collect(),
            reserved: reserved.into_iter().map(|p| resolve(&p)).collect(),
        }
    }

    /// The folders paths must lie in, resolved.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves `path` (an absolute file path; the part that does not exist
    /// yet, such as a file about to be written, is taken as it is) and
    /// checks it. Returns the resolved path.
    pub fn admit(&self, path: &Path) -> Result<PathBuf, FenceError> {
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain {
            return Err(FenceError::NotPlain(path.to_path_buf()));
        }
        let resolved = resolve(path);
        if let Some(reserved) = self.reserved.iter().find(|r| resolved.starts_with(r)) {
            return Err(FenceError::Reserved {
                resolved,
                reserved: reserved.clone(),
            });
        }
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(resolved)
        } else {
            Err(FenceError::Outside { resolved })
        }
    }

    /// Whether `folder` holds a reserved folder (listing it whole would
    /// reach into Tarn's own files).
    pub fn contains_reserved(&self, folder: &Path) -> bool {
        let folder = resolve(folder);
        self.reserved.iter().any(|r| r.starts_with(&folder))
    }
}

/// Resolves symbolic links in the longest prefix of `path` that exists; the
/// rest (like a file about to be written) is appended unchanged.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(canonical, |acc, part: &std::ffi::OsString| acc.join(part));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The local file system behind a [`Fence`]: what `file://` URLs reach.
pub type FencedFileSystem = GatedStore<Guard>;

/// The local file system, admitting only what `fence` admits.
pub fn fenced_file_system(fence: Arc<Fence>) -> FencedFileSystem {
    let guard = Guard {
        paths: LocalFileSystem::new(),
        fence,
        reported: Mutex::new(HashSet::new()),
    };
    GatedStore::new(
        Arc::new(LocalFileSystem::new()),
        guard,
        "local files".into(),
    )
}

/// Applies the fence to object-store paths.
#[derive(Debug)]
pub struct Guard {
    paths: LocalFileSystem,
    fence: Arc<Fence>,
    /// Paths already reported as skipped in listings (reported once each).
    reported: Mutex<HashSet<PathBuf>>,
}

impl Guard {
    /// The fence it applies.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }
}

impl Gate for Guard {
    /// Refuses `location` unless the fence admits the file it names.
    fn check(&self, location: &ObjectPath) -> object_store::Result<()> {
        // Exactly the conversion `LocalFileSystem` makes before it opens a file.
        let path = self.paths.path_to_filesystem(location)?;
        self.fence.admit(&path).map(|_| ()).map_err(|denied| {
            object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: Box::new(denied),
            }
        })
    }

    /// Entries in reserved folders are left out silently, links that lead
    /// out of every store with a warning (once per path).
    fn listable(&self, location: &ObjectPath) -> bool {
        let Ok(path) = self.paths.path_to_filesystem(location) else {
            return false;
        };
        match self.fence.admit(&path) {
            Ok(_) => true,
            Err(FenceError::Reserved { .. }) => false,
            Err(denied) => {
                let first = self
                    .reported
                    .lock()
                    .map(|mut seen| seen.insert(path.clone()))
                    .unwrap_or(false);
                if first {
                    tracing::warn!(
                        path = %path.display(),
                        "skipping {}: {denied}; symbolic links out of the stores are never followed",
                        path.display()
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};

    struct Layout {
        _dir: tempfile::TempDir,
        lake: PathBuf,
        state: PathBuf,
        outside: PathBuf,
    }

    fn layout() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let state = lake.join(".tarn");
        let outside = dir.path().join("outside");
        for folder in [&lake, &state, &outside] {
            std::fs::create_dir_all(folder).unwrap();
        }
        std::fs::write(outside.join("secret.csv"), "s\n1\n").unwrap();
        std::fs::write(state.join("catalog.sqlite"), "db").unwrap();
        std::fs::write(lake.join("t.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink(&outside, lake.join("out")).unwrap();
        std::os::unix::fs::symlink(&state, lake.join("state")).unwrap();
        Layout {
            lake: lake.canonicalize().unwrap(),
            state: state.canonicalize().unwrap(),
            outside: outside.canonicalize().unwrap(),
            _dir: dir,
        }
    }

    fn store(layout: &Layout) -> FencedFileSystem {
        let fence = Fence::new([layout.lake.clone()], [layout.state.clone()]);
        fenced_file_system(Arc::new(fence))
    }

    fn object(path: &Path) -> ObjectPath {
        ObjectPath::from_absolute_path(path).unwrap()
    }

    #[test]
    fn the_fence_resolves_links_and_refuses_parent_segments() {
        let layout = layout();
        let fence = Fence::new([layout.lake.clone()], [layout.state.clone()]);
        assert!(fence.admit(&layout.lake.join("t.csv")).is_ok());
        assert!(fence.admit(&layout.lake.join("new/file.csv")).is_ok());
        assert!(matches!(
            fence.admit(&layout.lake.join("out/secret.csv")),
            Err(FenceError::Outside { .. })
        ));
        assert!(matches!(
            fence.admit(&layout.lake.join("state/catalog.sqlite")),
            Err(FenceError::Reserved { .. })
        ));
        assert!(matches!(
            fence.admit(&layout.lake.join("../outside/secret.csv")),
            Err(FenceError::NotPlain(_))
        ));
        assert!(fence.contains_reserved(&layout.lake));
        assert!(!fence.contains_reserved(&layout.outside));
    }

    #[tokio::test]
    async fn every_call_is_fenced() {
        let layout = layout();
        let store = store(&layout);
        let denied = |result: object_store::Result<()>| {
            matches!(result, Err(object_store::Error::PermissionDenied { .. }))
        };
        assert!(store.get(&object(&layout.lake.join("t.csv"))).await.is_ok());
        let secret = object(&layout.outside.join("secret.csv"));
        assert!(denied(store.get(&secret).await.map(|_| ())));
        let through_link = ObjectPath::from(format!("{}/out/secret.csv", object(&layout.lake)));
        assert!(denied(store.get(&through_link).await.map(|_| ())));
        let wal = object(&layout.state.join("catalog.sqlite-wal"));
        assert!(denied(store.put(&wal, "garbage".into()).await.map(|_| ())));
        assert!(!layout.state.join("catalog.sqlite-wal").exists());
        assert!(denied(
            store
                .delete(&object(&layout.state.join("catalog.sqlite")))
                .await
        ));
        let copy_out = object(&layout.outside.join("copy.csv"));
        assert!(denied(
            store
                .copy(&object(&layout.lake.join("t.csv")), &copy_out)
                .await
        ));
        assert!(!layout.outside.join("copy.csv").exists());
    }

    #[tokio::test]
    async fn listings_skip_links_out_and_reserved_folders() {
        let layout = layout();
        let store = store(&layout);
        let lake = object(&layout.lake);
        let all: Vec<String> = store
            .list(Some(&lake))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all, [format!("{lake}/t.csv")]);
        let top = store.list_with_delimiter(Some(&lake)).await.unwrap();
        assert!(top.common_prefixes.is_empty(), "{:?}", top.common_prefixes);
        assert_eq!(top.objects.len(), 1);
    }
}
