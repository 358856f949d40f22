//! livegate's metering service (`livegate-metering`): a durable JetStream consumer that prices
//! every usage event and writes it to ClickHouse exactly once, then feeds spend back to NATS KV
//! for budgets. See `README.md` beside this crate for the schema, the queries to run and the
//! pricing rules.
//!
//! - [`config`]: [`Config`], loaded once by `main`.
//! - [`pricing`]: the LiteLLM-format price table and the per-modality cost rules.
//! - `store`: everything in ClickHouse, one file per concern: the migrations
//!   ([`schema_statements`] renders them), the rows and their inserts, the reads that keep
//!   writes idempotent, session totals and spend totals.
//! - `events`: bus protobufs → priced rows.
//! - `consumer`: the durable pull consumer and the batch pipeline (ack only after the insert),
//!   one file per step.
//! - `spend`: per key / team spend totals into the `livegate_spend` KV bucket.
//! - `leases`: the reconciler closing, as lost, the sessions of gateway processes whose lease
//!   on the bus expired, and completing recent session rows written short when their late
//!   reports land.
//! - `metrics`, `http`: `/metrics`, `/healthz`, `/readyz`.
//! - `stream_fill`: how full the usage stream is (gauges, the `/readyz` warning).
//! - [`run`]: wires it together and serves until the shutdown future resolves.

pub mod config;

mod consumer;
mod events;
mod http;
mod leases;
mod metrics;
mod spend;
mod store;
mod stream_fill;

pub use config::Config;
pub use store::{KeyDay, SessionRow, SessionTotals, Store, StoreError, UsageRow};

use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest pause between attempts to reach ClickHouse at start-up.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(5);
/// Bound on each step after the consumer stopped (background tasks, the final NATS flush).
const SHUTDOWN_TAIL: Duration = Duration::from_secs(5);

/// Every statement metering runs to create its ClickHouse schema in `database`, in order: the
/// `CREATE DATABASE`, the `schema_migrations` table, then each migration's statements, rendered
/// exactly as [`Store::migrate`] renders them. Each can run twice except an `ALTER TABLE … ADD
/// COLUMN` (ClickHouse 18.16 has no `IF NOT EXISTS` for it): `Store::migrate` skips those when
/// the column exists; by hand, run them once. For operators who review or apply the DDL
/// themselves (`livegate-metering --print-schema`).
///
/// # Errors
/// When `database` is not a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`), which is all
/// `CLICKHOUSE_DATABASE` accepts.
pub fn schema_statements(database: &str) -> anyhow::Result<Vec<String>> {
    check_database(database)?;
    Ok(store::migrations::statements(database))
}

/// [`schema_statements`] as one script: each statement followed by `;`, separated by a blank
/// line (what `livegate-metering --print-schema` prints; `clickhouse-client --multiquery`
/// reads it).
///
/// # Errors
/// As [`schema_statements`].
pub fn schema_script(database: &str) -> anyhow::Result<String> {
    check_database(database)?;
    Ok(store::migrations::script(database))
}

/// [`schema_script`] as metering runs it with `CLICKHOUSE_CLUSTER=cluster` (`ON CLUSTER`,
/// replicated tables behind `Distributed` ones), or for one server when `cluster` is `None`.
///
/// # Errors
/// As [`schema_statements`]; also when `cluster` is not a plain identifier.
pub fn schema_script_for(database: &str, cluster: Option<&str>) -> anyhow::Result<String> {
    check_database(database)?;
    let layout = match cluster {
        None => store::migrations::Layout::Single,
        Some(c) => {
            anyhow::ensure!(
                config::is_identifier(c),
                "invalid cluster name {c:?}: must be letters, digits and underscores, not \
                 starting with a digit"
            );
            store::migrations::Layout::Cluster(c.to_string())
        }
    };
    Ok(store::migrations::script_for(database, &layout))
}

fn check_database(database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        config::is_identifier(database),
        "invalid database name {database:?}: must be letters, digits and underscores, not \
         starting with a digit"
    );
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener`, applies the ClickHouse
/// migrations (retrying until ClickHouse answers), and consumes usage events until `shutdown`
/// resolves. Then it stops fetching, finishes the batch in hand (bounded by
/// `config.shutdown_timeout`), refreshes the spend of what that batch touched, and returns.
///
/// Every task it starts lives in a `JoinSet` owned by this future: dropping the future (an
/// aborted task in a test, like a crash) stops them all, leaving unacknowledged events to
/// JetStream's redelivery.
///
/// # Errors
/// When the pricing file is invalid, NATS is unreachable at start-up, or JetStream refuses the
/// stream, consumer or bucket.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let pricing = Arc::new(
        livegate_common::pricing::Pricing::load(config.pricing_file.as_deref())
            .context("loading PRICING_FILE")?,
    );
    let metrics = metrics::Metrics::new();
    let store = Store::new(&config.clickhouse);
    let state = Arc::new(http::State {
        metrics: metrics.clone(),
        store: store.clone(),
        nats: std::sync::OnceLock::new(),
        migrated: std::sync::atomic::AtomicBool::new(false),
        stream_warning: std::sync::Mutex::new(None),
    });

    let mut tasks = JoinSet::new();
    let stop_http = CancellationToken::new();
    tasks.spawn(http::serve(listener, state.clone(), stop_http.clone()));
    // From the start: a SIGHUP while ClickHouse is still being waited for must not end the
    // process (SIGHUP's default action).
    let reloads = metrics.pricing_reloads.clone();
    tasks.spawn(livegate_common::pricing::reload_on_sighup(
        pricing.clone(),
        stop_http.clone(),
        move |outcome| {
            reloads
                .get_or_create(&metrics::OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .inc();
        },
    ));
    tracing::info!(%addr, "livegate-metering listening on {addr}");

    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(None),
        r = start(&config, &store, &state) => r.map(Some),
    };
    let (client, consumer, bucket) = match result {
        Ok(Some(parts)) => parts,
        Ok(None) => {
            stop_http.cancel();
            while tasks.join_next().await.is_some() {}
            tracing::info!("livegate-metering stopped before it started consuming");
            return Ok(());
        }
        Err(e) => {
            stop_http.cancel();
            while tasks.join_next().await.is_some() {}
            return Err(e);
        }
    };

    let spend_feed = Arc::new(spend::SpendFeed::default());
    let stop_spend = CancellationToken::new();
    tasks.spawn(spend::run(
        spend_feed.clone(),
        store.clone(),
        bucket,
        metrics.clone(),
        stop_spend.clone(),
    ));

    tasks.spawn(leases::run(
        async_nats::jetstream::new(client.clone()),
        store.clone(),
        metrics.clone(),
        config.lease,
        *config.nats.layout(),
        stop_spend.clone(),
    ));

    tasks.spawn(stream_fill::run(
        async_nats::jetstream::new(client.clone()),
        config.stream.clone(),
        config.consumer.clone(),
        state.clone(),
        stop_spend.clone(),
    ));

    let stop_consumer = CancellationToken::new();
    let pipeline = consumer::Pipeline {
        client: client.clone(),
        consumer,
        store: store.clone(),
        pricing,
        metrics,
        spend: spend_feed,
        batch_size: config.batch_size,
        flush_interval: config.flush_interval,
        insert_retries: config.insert_retries,
        session_waits: config.session_waits.max(1),
        verify_first_deliveries: config.verify_first_deliveries,
    };
    // Its own task, so a panic in it ends this future with an error instead of unwinding it;
    // aborted with this future, like the JoinSet's tasks.
    #[expect(
        clippy::disallowed_methods,
        reason = "owned by this future: awaited below and aborted on drop (AbortOnDrop)"
    )]
    let mut consuming = tokio::spawn(pipeline.run(stop_consumer.clone()));
    let _abort_consumer = AbortOnDrop(consuming.abort_handle());
    tracing::info!(
        stream = %config.stream,
        consumer = %config.consumer,
        clickhouse.database = %config.clickhouse.database,
        "consuming usage events"
    );

    // The loop only returns on stop: ending before that is a bug (a panic), and the process
    // should exit non-zero so that it is restarted and noticed.
    let crashed = tokio::select! {
        () = &mut shutdown => None,
        r = &mut consuming => Some(format!("{r:?}")),
    };
    if crashed.is_none() {
        tracing::info!("draining: no more fetches, finishing the batch in hand");
    }
    stop_consumer.cancel();
    if !consuming.is_finished()
        && tokio::time::timeout(config.shutdown_timeout, &mut consuming)
            .await
            .is_err()
    {
        consuming.abort();
        tracing::warn!(
            timeout = ?config.shutdown_timeout,
            "the batch in hand did not finish in time; JetStream will redeliver it"
        );
    }
    stop_spend.cancel();
    stop_http.cancel();
    // Both waits are bounded: with NATS or ClickHouse already gone (everything stopped at
    // once), an unbounded flush or spend refresh would keep the process alive forever.
    if tokio::time::timeout(SHUTDOWN_TAIL, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
        tracing::warn!("background tasks did not stop in time; aborted");
    }
    if tokio::time::timeout(SHUTDOWN_TAIL, client.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS unreachable at shutdown; acks still in flight will be redelivered");
    }
    if let Some(why) = crashed {
        anyhow::bail!("the consumer loop ended unexpectedly: {why}");
    }
    tracing::info!("livegate-metering stopped");
    Ok(())
}

/// Connects to NATS, applies the migrations (retrying while ClickHouse is unreachable), and
/// sets up the stream, the durable consumer and the spend bucket.
async fn start(
    config: &Config,
    store: &Store,
    state: &http::State,
) -> anyhow::Result<(
    async_nats::Client,
    async_nats::jetstream::consumer::PullConsumer,
    async_nats::jetstream::kv::Store,
)> {
    let client = config
        .nats
        .connect(
            async_nats::ConnectOptions::new(),
            livegate_common::nats::Role::Metering,
            "",
        )
        .await?;
    let _ = state.nats.set(client.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.migrate().await {
            Ok(applied) => {
                tracing::info!(
                    clickhouse.database = store.database(),
                    ?applied,
                    "ClickHouse schema is current"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(error.message = %e, "cannot apply ClickHouse migrations yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_STARTUP_BACKOFF);
            }
        }
    }
    state.migrated.store(true, Ordering::Release);
    let js = async_nats::jetstream::new(client.clone());
    let consumer = consumer::setup(&js, config)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| {
            format!(
                "creating stream {} and consumer {}",
                config.stream, config.consumer
            )
        })?;
    // History 1: only the latest total of a key matters (auth and the gateway open the bucket
    // with the same setting).
    let bucket = livegate_common::kv::open_bucket(
        &js,
        &config.spend_bucket,
        livegate_common::subjects::SPEND_HISTORY,
        config.nats.layout(),
    )
    .await
    .with_context(|| format!("opening KV bucket {}", config.spend_bucket))?;
    Ok((client, consumer, bucket))
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_statements_are_what_migrate_runs() {
        let got = schema_statements("livegate").unwrap();
        assert_eq!(got, store::migrations::statements("livegate"));
        assert_eq!(got[0], "CREATE DATABASE IF NOT EXISTS livegate");
        assert!(got[1].contains("livegate.schema_migrations"));
        assert!(
            got.iter()
                .any(|s| s.contains("livegate.spend_daily_sessions_mv"))
        );
        assert_eq!(
            schema_script("x_1").unwrap(),
            store::migrations::script("x_1")
        );
    }

    #[test]
    fn schema_statements_refuse_a_database_name_that_is_not_an_identifier() {
        for bad in ["", "1db", "live-gate", "db; DROP TABLE x", "a.b", "`x`"] {
            let e = schema_statements(bad).unwrap_err().to_string();
            assert!(e.contains("invalid database name"), "{bad}: {e}");
            assert!(schema_script(bad).is_err(), "{bad}");
        }
    }
}
