//! NATS KV buckets: [`open_bucket`], the one place livegate opens (or creates) a bucket (auth
//! and the gateway to mirror one, metering to write spend) with the replicas of the
//! [`StreamLayout`], and mirroring a bucket into memory:
//! load every current value, then apply changes from a watch that re-subscribes by itself after
//! errors such as a NATS restart. Auth mirrors `livegate_keys` and `livegate_spend` this way;
//! the gateway mirrors `livegate_spend` (budgets) and watches `livegate_keys` (cache
//! invalidation).

use crate::stream::StreamLayout;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A KV operation failed.
#[derive(Debug, thiserror::Error)]
#[error("NATS KV {op} on bucket {bucket} failed: {source}")]
pub struct KvError {
    /// What we were doing.
    pub op: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The client's error (each KV operation has its own error type in async-nats, hence the
    /// box).
    #[source]
    pub source: async_nats::Error,
}

fn err(
    op: &'static str,
    bucket: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> KvError {
    KvError {
        op,
        bucket: bucket.to_string(),
        source: Box::new(e),
    }
}

/// Gets a bucket, creating it (file storage, `history` revisions per key, the layout's
/// replicas) if missing. An existing bucket with fewer replicas than the layout's is widened
/// (its stream `KV_<bucket>` updated), never narrowed, like the usage stream; a refused
/// widening (no permission) is logged and the bucket used as it is.
///
/// # Errors
/// [`KvError`] when JetStream is unreachable or refuses (e.g. more replicas than servers).
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    layout: &StreamLayout,
) -> Result<kv::Store, KvError> {
    match js.get_key_value(bucket).await {
        Ok(store) => {
            widen(js, &store, layout).await?;
            Ok(store)
        }
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history,
                storage: jetstream::stream::StorageType::File,
                num_replicas: layout.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| err("create bucket", bucket, e)),
    }
}

/// Raises the replicas of `store`'s stream to the layout's.
async fn widen(
    js: &jetstream::Context,
    store: &kv::Store,
    layout: &StreamLayout,
) -> Result<(), KvError> {
    let mut stream = js
        .get_stream(&store.stream_name)
        .await
        .map_err(|e| err("read bucket stream", &store.name, e))?;
    let existing = stream
        .info()
        .await
        .map_err(|e| err("read bucket stream", &store.name, e))?
        .config
        .clone();
    if existing.num_replicas.max(1) >= layout.replicas {
        return Ok(());
    }
    let replicas = layout.replicas;
    match js
        .update_stream(jetstream::stream::Config {
            num_replicas: replicas,
            ..existing
        })
        .await
    {
        Ok(_) => tracing::info!(bucket = %store.name, replicas, "raised the KV bucket's replicas"),
        // Not fatal: the bucket works as it is, and the bucket's owner (which may edit it)
        // widens it when it starts.
        Err(e) => tracing::warn!(
            error.message = %err("widen bucket", &store.name, e),
            "using the KV bucket as it is"
        ),
    }
    Ok(())
}

/// Applies every current entry of `bucket` to `apply`, synchronously.
///
/// # Errors
/// [`KvError`] when the bucket cannot be listed or read.
pub async fn load(
    bucket: &kv::Store,
    apply: &(impl Fn(kv::Entry) + ?Sized),
) -> Result<(), KvError> {
    let mut keys = bucket
        .keys()
        .await
        .map_err(|e| err("list keys", &bucket.name, e))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(|e| err("list keys", &bucket.name, e))?);
    }
    for name in names {
        if let Some(entry) = bucket
            .entry(name)
            .await
            .map_err(|e| err("get", &bucket.name, e))?
        {
            apply(entry);
        }
    }
    Ok(())
}

/// Loads `bucket` into `apply`, then keeps applying changes until `stop` is cancelled. The
/// watch replays current values on every (re)subscription, so `apply` must be idempotent and
/// should ignore entries older than what it holds (compare `Entry::revision`).
///
/// # Errors
/// [`KvError`] when the initial load fails; later failures are retried in the background.
pub async fn mirror<F>(bucket: kv::Store, apply: F, stop: CancellationToken) -> Result<(), KvError>
where
    F: Fn(kv::Entry) + Send + Sync + 'static,
{
    load(&bucket, &apply).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "detached on purpose: the watch ends when the caller cancels `stop`"
    )]
    tokio::spawn(watch(bucket, apply, stop));
    Ok(())
}

async fn watch<F>(bucket: kv::Store, apply: F, stop: CancellationToken)
where
    F: Fn(kv::Entry) + Send + Sync + 'static,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let watcher = tokio::select! {
            () = stop.cancelled() => return,
            w = bucket.watch_with_history(">") => w,
        };
        match watcher {
            Ok(mut w) => loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    next = w.next() => match next {
                        Some(Ok(entry)) => {
                            backoff = Duration::from_millis(100);
                            apply(entry);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(bucket = %bucket.name, error.message = %e, "KV watch failed; re-subscribing");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(e) => {
                tracing::warn!(bucket = %bucket.name, error.message = %e, "cannot watch KV bucket; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kv_error_keeps_its_cause_and_says_it() {
        let e = err(
            "get",
            "livegate_spend",
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        );
        assert_eq!(
            e.to_string(),
            "NATS KV get on bucket livegate_spend failed: timed out"
        );
        let cause = e.source().expect("a source");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }
}
