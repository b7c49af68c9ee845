//! An object store behind a gate: every path is checked before the call
//! goes through, listings show only what the gate lets through, and the store
//! shows itself only by name.
//!
//! Two gates use it: the fence around local files ([`super::fence`]), and
//! the open gate of a bucket, which only hides credentials: libraries log
//! the stores they are given with `{:?}` (deltalake does at debug level), and
//! `object_store`'s S3 client prints its access key id there.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// What a [`GatedStore`] lets through.
pub trait Gate: fmt::Debug + Send + Sync + 'static {
    /// Refuses a call on `location` (`PermissionDenied`), or lets it through.
    fn check(&self, location: &ObjectPath) -> object_store::Result<()>;

    /// Whether a listed entry may be shown.
    fn listable(&self, location: &ObjectPath) -> bool;
}

/// Lets everything through: a store that only hides its credentials.
#[derive(Debug)]
pub struct Open;

impl Gate for Open {
    fn check(&self, _location: &ObjectPath) -> object_store::Result<()> {
        Ok(())
    }

    fn listable(&self, _location: &ObjectPath) -> bool {
        true
    }
}

/// `inner` behind `gate`, shown only as `name`.
pub struct GatedStore<G> {
    inner: Arc<dyn ObjectStore>,
    gate: Arc<G>,
    name: String,
}

impl<G: Gate> GatedStore<G> {
    /// `inner` behind `gate`; it shows as `name` (which must hold no secret).
    pub fn new(inner: Arc<dyn ObjectStore>, gate: G, name: String) -> Self {
        Self {
            inner,
            gate: Arc::new(gate),
            name,
        }
    }

    /// The gate.
    pub fn gate(&self) -> &G {
        &self.gate
    }
}

impl<G: Gate> GatedStore<G> {
    /// The listing `list` makes of `prefix`, if the gate lets the prefix
    /// through, with only the entries it lets through.
    fn gated_listing(
        &self,
        prefix: Option<&ObjectPath>,
        list: impl FnOnce(&dyn ObjectStore) -> BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Some(prefix) = prefix
            && let Err(denied) = self.gate.check(prefix)
        {
            return futures::stream::once(async { Err(denied) }).boxed();
        }
        let gate = Arc::clone(&self.gate);
        crate::telemetry::store_request(&self.name, "list");
        let name = self.name.clone();
        list(self.inner.as_ref())
            .inspect_err(move |e| {
                if is_failure(e) {
                    crate::telemetry::store_failed(&name, "list");
                }
            })
            .try_filter(move |meta| futures::future::ready(gate.listable(&meta.location)))
            .boxed()
    }

    /// Counts a request to the store when it is made (so one given up on
    /// still counts), and its failure (an answer such as "not found" or
    /// "already exists" is not one).
    async fn counted<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        crate::telemetry::store_request(&self.name, operation);
        let outcome = request.await;
        if outcome.as_ref().err().is_some_and(is_failure) {
            crate::telemetry::store_failed(&self.name, operation);
        }
        outcome
    }
}

/// Whether `error` is a failure of the store, not an answer about the object.
fn is_failure(error: &object_store::Error) -> bool {
    !matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
    )
}

impl<G> fmt::Debug for GatedStore<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectStore({}, credentials hidden)", self.name)
    }
}

impl<G> fmt::Display for GatedStore<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[async_trait::async_trait]
impl<G: Gate> ObjectStore for GatedStore<G> {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.gate.check(location)?;
        self.counted("put", self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.gate.check(location)?;
        self.counted(
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gate.check(location)?;
        self.counted("get", self.inner.get_opts(location, options))
            .await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gate.check(location)?;
        self.counted("get_ranges", self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let gate = Arc::clone(&self.gate);
        let checked = locations
            .and_then(move |location| {
                futures::future::ready(gate.check(&location).map(|()| location))
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.gated_listing(prefix, |inner| inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.gated_listing(prefix, |inner| inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        if let Some(prefix) = prefix {
            self.gate.check(prefix)?;
        }
        let mut listed = self
            .counted("list", self.inner.list_with_delimiter(prefix))
            .await?;
        listed
            .objects
            .retain(|meta| self.gate.listable(&meta.location));
        listed
            .common_prefixes
            .retain(|folder| self.gate.listable(folder));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.gate.check(from)?;
        self.gate.check(to)?;
        self.counted("copy", self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.gate.check(from)?;
        self.gate.check(to)?;
        self.counted("rename", self.inner.rename_opts(from, to, options))
            .await
    }
}
