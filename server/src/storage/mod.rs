//! Storage: named stores, each a local folder or an S3-compatible bucket
//! prefix, reached through `object_store`.
//!
//! ```toml
//! [stores.warehouse]
//! url = "s3://analytics/tpch"            # or "/srv/lake", "file:///srv/lake"
//! endpoint = "http://127.0.0.1:9000"     # MinIO, Ceph, Garage, R2, moto_server ...; omit for AWS
//! region = "us-east-1"
//! path_style = true                      # bucket in the path, not the host name
//! allow_http = true                      # plain HTTP, for servers on a trusted network
//! access_key_id = "..."                  # omit to use AWS_* variables or the standard AWS chain
//! secret_access_key = "..."
//! ```
//!
//! Secrets are never printed: `Debug` shows them as `***`.
//!
//! Every local store is reached through one [`fence::FencedFileSystem`],
//! which admits only paths inside the local stores and never Tarn's own
//! state folder.

pub mod fence;
mod gated;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

use fence::{Fence, FencedFileSystem, fenced_file_system};
use serde::Deserialize;
use url::Url;

/// A credential that must never reach a log.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the store client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One `[stores.NAME]` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A local folder, `file://` URL or `s3://bucket/prefix` URL.
    pub url: String,
    /// S3 endpoint for non-AWS servers.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: true when an endpoint is set.
    pub path_style: Option<bool>,
    /// Allow plain HTTP to the endpoint.
    pub allow_http: Option<bool>,
    /// Access key id (else from the environment).
    pub access_key_id: Option<Secret>,
    /// Secret access key (else from the environment).
    pub secret_access_key: Option<Secret>,
    /// Session token (else from the environment).
    pub session_token: Option<Secret>,
}

/// Why a store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not a folder or a supported URL.
    #[error("store '{name}': invalid location '{url}': {reason}")]
    InvalidUrl {
        /// Store name.
        name: String,
        /// The URL as configured.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The client for the store could not be built.
    #[error("store '{name}': {message}")]
    Client {
        /// Store name.
        name: String,
        /// The cause.
        message: String,
    },
}

/// A store ready for use.
#[derive(Clone)]
pub struct Store {
    /// The name from the configuration.
    pub name: String,
    /// The URL of the store's root (`s3://bucket`, `file:///`), as DataFusion resolves it.
    pub root_url: Url,
    /// The prefix inside the root where the store's tables live.
    pub prefix: ObjectPath,
    /// The client.
    pub object_store: Arc<dyn ObjectStore>,
    /// For local stores, the folder.
    pub local_path: Option<PathBuf>,
    /// For buckets, how they are reached.
    pub addressing: Option<Addressing>,
}

/// How a bucket is reached: the endpoint in effect (from the config or the
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT` environment) and the addressing style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    /// A custom endpoint (MinIO, Ceph, moto, R2, ...), `None` for AWS.
    pub endpoint: Option<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name.
    pub path_style: bool,
    /// Whether plain HTTP is allowed, when decided here.
    pub allow_http: Option<bool>,
}

impl Addressing {
    /// Path-style addressing whenever a custom endpoint is in effect, from
    /// any source, unless `path_style` (or `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`)
    /// says otherwise: S3-compatible servers on a custom endpoint rarely
    /// resolve bucket host names. An `http://` endpoint allows plain HTTP
    /// unless `allow_http` (or `AWS_ALLOW_HTTP`) says otherwise.
    fn of(config: &StoreConfig, from_env: &AmazonS3Builder) -> Self {
        use object_store::aws::AmazonS3ConfigKey;
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| from_env.get_config_value(&AmazonS3ConfigKey::Endpoint));
        let virtual_hosted_from_env = std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .is_some()
            .then(|| from_env.get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest))
            .flatten()
            .map(|v| v.eq_ignore_ascii_case("true"));
        let path_style = config
            .path_style
            .or(virtual_hosted_from_env.map(|virtual_hosted| !virtual_hosted))
            .unwrap_or(endpoint.is_some());
        let http_from_env = std::env::var_os("AWS_ALLOW_HTTP").is_some();
        let allow_http = config.allow_http.or_else(|| {
            let plain = endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            (plain && !http_from_env).then_some(true)
        });
        Self {
            endpoint,
            path_style,
            allow_http,
        }
    }

    /// "endpoint http://127.0.0.1:9000, path-style addressing", for messages.
    pub fn describe(&self) -> String {
        let style = if self.path_style {
            "path-style"
        } else {
            "virtual-hosted-style"
        };
        match &self.endpoint {
            Some(endpoint) => format!("endpoint {endpoint}, {style} addressing"),
            None => format!("AWS S3, {style} addressing"),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({} at {})", self.name, self.display_url())
    }
}

/// The stores of a server, and the fenced file system its local stores share.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Every store, in the order configured.
    pub stores: Vec<Store>,
    /// What `file://` URLs reach: the local stores, and nothing else.
    pub local_files: Arc<FencedFileSystem>,
}

/// Opens the stores `configs`; local paths are fenced into the local stores
/// and kept out of the `reserved` folders (the state folder). Called on the
/// runtime that serves the network: buckets make their requests there.
pub fn open_all(
    configs: &[(String, StoreConfig)],
    reserved: &[PathBuf],
) -> Result<Stores, StoreError> {
    let mut roots = Vec::new();
    for (name, config) in configs {
        if let Some(folder) = local_folder(name, config)? {
            roots.push(folder);
        }
    }
    let fence = Fence::new(roots, reserved.iter().cloned());
    let local_files = Arc::new(fenced_file_system(Arc::new(fence)));
    let stores = configs
        .iter()
        .map(|(name, config)| Store::open(name, config, &local_files))
        .collect::<Result<_, _>>()?;
    Ok(Stores {
        stores,
        local_files,
    })
}

/// Checks that every local store in `configs` is an existing folder.
pub fn check_local_folders(configs: &[(String, StoreConfig)]) -> Result<(), StoreError> {
    for (name, config) in configs {
        local_folder(name, config)?;
    }
    Ok(())
}

/// The folder of a local store (`None` for a bucket), resolved.
fn local_folder(name: &str, config: &StoreConfig) -> Result<Option<PathBuf>, StoreError> {
    if config.url.starts_with("s3://") || config.url.starts_with("s3a://") {
        return Ok(None);
    }
    let invalid = |reason: &str| StoreError::InvalidUrl {
        name: name.to_string(),
        url: config.url.clone(),
        reason: reason.to_string(),
    };
    let path = match config.url.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None if config.url.contains("://") => {
            return Err(invalid("supported: a folder, file:// or s3:// URLs"));
        }
        None => PathBuf::from(&config.url),
    };
    let absolute = std::path::absolute(&path).map_err(|e| invalid(&e.to_string()))?;
    if !absolute.is_dir() {
        return Err(invalid("no such folder; pass an existing folder"));
    }
    Ok(Some(absolute.canonicalize().unwrap_or(absolute)))
}

impl Store {
    /// Opens the store `name` described by `config`; a local store is
    /// reached through `local_files`.
    pub fn open(
        name: &str,
        config: &StoreConfig,
        local_files: &Arc<FencedFileSystem>,
    ) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            name: name.to_string(),
            url: config.url.clone(),
            reason: reason.to_string(),
        };
        if config.url.starts_with("s3://") || config.url.starts_with("s3a://") {
            let url = Url::parse(&config.url).map_err(|e| invalid(&e.to_string()))?;
            let bucket = url
                .host_str()
                .ok_or_else(|| invalid("no bucket name"))?
                .to_string();
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.with_region(region);
            }
            let addressing = Addressing::of(config, &builder);
            builder = builder.with_virtual_hosted_style_request(!addressing.path_style);
            if let Some(allow) = addressing.allow_http {
                builder = builder.with_allow_http(allow);
            }
            if let Some(key) = &config.access_key_id {
                builder = builder.with_access_key_id(key.expose());
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.with_secret_access_key(secret.expose());
            }
            if let Some(token) = &config.session_token {
                builder = builder.with_token(token.expose());
            }
            // Requests run on the runtime that serves the network, never on
            // the threads that run queries: a slow bucket keeps a scan
            // waiting, not a CPU thread busy.
            if let Ok(io) = tokio::runtime::Handle::try_current() {
                builder = builder
                    .with_http_connector(object_store::client::SpawnedReqwestConnector::new(io));
            }
            let client = builder.build().map_err(|e| StoreError::Client {
                name: name.to_string(),
                message: e.to_string(),
            })?;
            let root_url =
                Url::parse(&format!("s3://{bucket}")).map_err(|e| invalid(&e.to_string()))?;
            let shown = format!("s3://{bucket}");
            return Ok(Self {
                name: name.to_string(),
                root_url,
                prefix: ObjectPath::from(url.path().trim_matches('/')),
                object_store: Arc::new(gated::GatedStore::new(
                    Arc::new(client),
                    gated::Open,
                    shown,
                )),
                local_path: None,
                addressing: Some(addressing),
            });
        }
        let folder = local_folder(name, config)?
            .ok_or_else(|| invalid("supported: a folder, file:// or s3:// URLs"))?;
        let prefix =
            ObjectPath::from_filesystem_path(&folder).map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            root_url: Url::parse("file:///").map_err(|e| invalid(&e.to_string()))?,
            prefix,
            object_store: Arc::clone(local_files) as Arc<dyn ObjectStore>,
            local_path: Some(folder),
            addressing: None,
        })
    }

    /// Opens one store on its own, its local files fenced into itself.
    pub fn open_alone(name: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        let mut opened = open_all(&[(name.to_string(), config.clone())], &[])?;
        opened.stores.pop().ok_or_else(|| StoreError::Client {
            name: name.to_string(),
            message: "the store did not open".into(),
        })
    }

    /// The URL of `path` in this store, as DataFusion reads it.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        let root = self.root_url.as_str();
        if root.ends_with('/') {
            format!("{root}{path}")
        } else {
            format!("{root}/{path}")
        }
    }

    /// The store's own URL, for messages (never contains credentials).
    pub fn display_url(&self) -> String {
        self.url_of(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config: StoreConfig = toml::from_str(
            "url = \"s3://bucket/p\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI\"\n",
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("AKIDEXAMPLE") && !printed.contains("wJalrXUtnFEMI"),
            "{printed}"
        );
        let store = Store::open_alone("s", &config).unwrap();
        assert_eq!(store.display_url(), "s3://bucket/p");
        assert!(!format!("{store:?}").contains("wJalr"));
        // Libraries print the object store itself (deltalake does, at debug level).
        let shown = format!("{:?} {}", store.object_store, store.object_store);
        assert!(
            !shown.contains("AKIDEXAMPLE") && !shown.contains("wJalr"),
            "{shown}"
        );
    }

    #[test]
    fn local_folders_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            url: dir.path().display().to_string(),
            ..Default::default()
        };
        let store = Store::open_alone("lake", &config).unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        assert_eq!(
            store.display_url(),
            format!("file://{}", canonical.display())
        );
    }
}
