//! The JetStream stream that carries every usage and session event (DESIGN.md, "Bus
//! contract"), created on demand by whichever service gets there first.
//!
//! Both the gateway (before publishing) and metering (before consuming) call
//! [`ensure_usage_stream`], so neither depends on the other having started first. The call is
//! idempotent and safe to race: JetStream accepts a create whose configuration equals the
//! existing stream's, and an existing stream is only ever *widened* (a duplicate window
//! shorter than [`DUPLICATE_WINDOW`] is raised, fewer replicas than [`StreamLayout::replicas`]
//! are raised, an unbounded or smaller byte limit is raised to [`StreamLayout::max_bytes`]),
//! never narrowed or recreated.
//!
//! [`StreamLayout`] is read once from the environment with the NATS settings
//! (`LIVEGATE_STREAM_REPLICAS`, `LIVEGATE_STREAM_MAX_BYTES`) and applies to the usage stream,
//! the dead-letter stream and every KV bucket ([`crate::kv::open_bucket`]), so a 3-node NATS
//! cluster gets R3 everywhere without a manual step.
//!
//! ```
//! use livegate_common::stream::{StreamLayout, usage_stream_config};
//! use livegate_common::subjects;
//! let config = usage_stream_config(subjects::STREAM, &StreamLayout::default());
//! assert_eq!(config.subjects, vec![subjects::STREAM_SUBJECTS.to_string()]);
//! assert!(config.duplicate_window >= subjects::DUPLICATE_WINDOW);
//! assert_eq!(config.num_replicas, 1);
//! ```
//!
//! With a server at hand:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let layout = livegate_common::stream::StreamLayout::default();
//! let stream = livegate_common::stream::ensure_usage_stream(&js, "LIVEGATE_USAGE", &layout).await?;
//! assert_eq!(stream.cached_info().config.name, "LIVEGATE_USAGE");
//! # Ok(()) }
//! ```

use crate::env::{Env, EnvError, EnvExt};
use crate::subjects::{DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT, DUPLICATE_WINDOW, STREAM_SUBJECTS};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long events are kept once written, consumed or not (unless the stream reaches
/// [`StreamLayout::max_bytes`] first): long enough to ride out a metering or ClickHouse
/// outage of several days. Consumed events stay too, so an operator can replay them into a
/// fresh consumer.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Replicas of the usage stream, the dead-letter stream and every KV bucket: 1 on a single
/// server, 3 on a 3-node cluster (a node can then be lost without losing anything).
pub const LIVEGATE_STREAM_REPLICAS: &str = "LIVEGATE_STREAM_REPLICAS";
/// Disk the usage stream may use on each node holding a replica, in bytes. At the limit the
/// oldest events are dropped (consumed ones, unless metering is that far behind: see
/// [`StreamFill`]).
pub const LIVEGATE_STREAM_MAX_BYTES: &str = "LIVEGATE_STREAM_MAX_BYTES";
/// Default for [`LIVEGATE_STREAM_MAX_BYTES`]: 1 GiB. Small on purpose: JetStream reserves a
/// stream's byte limit on every server holding a replica and refuses a stream that does not
/// fit its store (by default 75 % of the free disk), so a default must fit a laptop.
/// Production sets it from the sizing in the README ("Capacity").
pub const DEFAULT_STREAM_MAX_BYTES: i64 = 1 << 30;
/// Fewest bytes [`LIVEGATE_STREAM_MAX_BYTES`] accepts (1 MiB): less holds no useful backlog.
pub const MIN_STREAM_MAX_BYTES: i64 = 1 << 20;
/// The most replicas JetStream allows.
pub const MAX_REPLICAS: usize = 5;
/// Share of [`StreamLayout::max_bytes`] held by events metering has not consumed yet at which
/// `/readyz` and `livegate doctor` warn: past the limit the oldest unconsumed events would be
/// dropped unbilled.
pub const FULL_WARNING_RATIO: f64 = 0.8;

/// How livegate's streams and buckets are laid out on the NATS servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    /// Replicas of every stream and bucket ([`LIVEGATE_STREAM_REPLICAS`]).
    pub replicas: usize,
    /// The usage stream's byte limit ([`LIVEGATE_STREAM_MAX_BYTES`]).
    pub max_bytes: i64,
}

impl Default for StreamLayout {
    /// One replica, [`DEFAULT_STREAM_MAX_BYTES`].
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: DEFAULT_STREAM_MAX_BYTES,
        }
    }
}

impl StreamLayout {
    /// [`LIVEGATE_STREAM_REPLICAS`] (1 to [`MAX_REPLICAS`]) and [`LIVEGATE_STREAM_MAX_BYTES`]
    /// (at least [`MIN_STREAM_MAX_BYTES`]), defaults for what is unset.
    ///
    /// # Errors
    /// [`EnvError`] for a value that is not a number or out of range.
    pub fn from_env(env: &(impl Env + ?Sized)) -> Result<Self, EnvError> {
        let mut layout = Self::default();
        if let Some(replicas) = env.parse::<usize>(LIVEGATE_STREAM_REPLICAS)? {
            if !(1..=MAX_REPLICAS).contains(&replicas) {
                return Err(EnvError {
                    name: LIVEGATE_STREAM_REPLICAS.to_string(),
                    value: replicas.to_string(),
                    reason: format!("must be between 1 and {MAX_REPLICAS}"),
                });
            }
            layout.replicas = replicas;
        }
        if let Some(max_bytes) = env.parse::<i64>(LIVEGATE_STREAM_MAX_BYTES)? {
            if max_bytes < MIN_STREAM_MAX_BYTES {
                return Err(EnvError {
                    name: LIVEGATE_STREAM_MAX_BYTES.to_string(),
                    value: max_bytes.to_string(),
                    reason: format!("must be at least {MIN_STREAM_MAX_BYTES} bytes"),
                });
            }
            layout.max_bytes = max_bytes;
        }
        Ok(layout)
    }

    /// This layout with `replicas` replicas.
    #[must_use]
    pub fn with_replicas(self, replicas: usize) -> Self {
        Self { replicas, ..self }
    }
}

/// Why the usage stream could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Creating (or looking up) the stream failed: NATS or JetStream is unreachable, or the
    /// server refused the configuration.
    #[error("cannot create or look up JetStream stream {stream}: {source}")]
    Create {
        /// The stream name.
        stream: String,
        /// What the server or client said.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// The stream exists with a smaller configuration than wanted (duplicate window, replicas,
    /// byte limit), and raising it failed (logged by `ensure_*`, which go on with the stream
    /// as it is).
    #[error("cannot widen JetStream stream {stream}: {source}")]
    Update {
        /// The stream name.
        stream: String,
        /// What the server or client said.
        #[source]
        source: jetstream::context::UpdateStreamError,
    },
}

/// The configuration [`ensure_usage_stream`] creates: subjects `livegate.usage.>`, file
/// storage, limits retention with a [`RETENTION`] max age and the layout's byte limit (the
/// oldest events go first), the layout's replicas, and a [`DUPLICATE_WINDOW`] for
/// `Nats-Msg-Id` dedupe.
pub fn usage_stream_config(stream_name: &str, layout: &StreamLayout) -> stream::Config {
    stream::Config {
        name: stream_name.to_string(),
        subjects: vec![STREAM_SUBJECTS.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: RETENTION,
        max_bytes: layout.max_bytes,
        discard: stream::DiscardPolicy::Old,
        num_replicas: layout.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("livegate usage and session events (gateway -> metering)".to_string()),
        ..Default::default()
    }
}

/// What an existing stream's configuration must become to be at least `wanted`: a longer
/// duplicate window, more replicas, a byte limit (raised, or set where there was none). `None`
/// when it already is. Only what `wanted` sets is compared; nothing is ever narrowed.
pub fn widened(existing: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let mut out = existing.clone();
    if wanted.duplicate_window > out.duplicate_window {
        out.duplicate_window = wanted.duplicate_window;
    }
    if wanted.num_replicas > out.num_replicas.max(1) {
        out.num_replicas = wanted.num_replicas;
    }
    if wanted.max_bytes > 0 && (out.max_bytes <= 0 || out.max_bytes < wanted.max_bytes) {
        out.max_bytes = wanted.max_bytes;
    }
    (out.duplicate_window != existing.duplicate_window
        || out.num_replicas != existing.num_replicas
        || out.max_bytes != existing.max_bytes)
        .then_some(out)
}

/// Creates `config`'s stream if missing, else widens it to `config` ([`widened`]) when this
/// connection may (a refused widening is logged, not fatal), and returns it.
async fn ensure(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<jetstream::stream::Stream, BusError> {
    let name = config.name.clone();
    let mut stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|source| BusError::Create {
            stream: name.clone(),
            source,
        })?;
    let existing = stream.cached_info().config.clone();
    if let Some(wider) = widened(&existing, &config) {
        match js.update_stream(wider.clone()).await {
            Ok(_) => {
                tracing::info!(
                    stream = %name,
                    duplicate_window = ?wider.duplicate_window,
                    replicas = wider.num_replicas,
                    max_bytes = wider.max_bytes,
                    "widened the stream's configuration"
                );
                // Refresh the cached info so callers see the new configuration.
                let _ = stream.info().await;
            }
            // Not fatal: the stream works as it is, and a service without the permission to
            // edit it (the gateway) leaves widening to the one that has it (metering).
            Err(source) => tracing::warn!(
                error.message = %BusError::Update { stream: name.clone(), source },
                "using the stream as it is"
            ),
        }
    }
    Ok(stream)
}

/// Creates the usage stream `stream_name` with `layout` if it does not exist, and returns it.
///
/// An existing stream is used as it is, except that it is widened to the contract and the
/// layout ([`widened`]): a duplicate window shorter than [`DUPLICATE_WINDOW`], fewer replicas
/// or a smaller (or no) byte limit is raised. A stream whose subjects do not include
/// `livegate.usage.>` is used anyway (an operator may have split subjects deliberately) but
/// logged as a warning, since events published to other subjects would then bypass it.
///
/// # Errors
/// [`BusError::Create`] when JetStream is unreachable or refuses to create the stream (e.g.
/// more replicas than the cluster has servers).
pub async fn ensure_usage_stream(
    js: &jetstream::Context,
    stream_name: &str,
    layout: &StreamLayout,
) -> Result<jetstream::stream::Stream, BusError> {
    let stream = ensure(js, usage_stream_config(stream_name, layout)).await?;
    let subjects = &stream.cached_info().config.subjects;
    if !subjects.iter().any(|s| s == STREAM_SUBJECTS) {
        tracing::warn!(
            stream = stream_name,
            ?subjects,
            "usage stream exists without subject {STREAM_SUBJECTS}"
        );
    }
    Ok(stream)
}

/// How long a dead letter is kept: time for an operator to notice (`livegate doctor`, the
/// metric) and replay or discard it.
pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Disk the dead-letter stream may use. When full, new dead letters are refused (not old ones
/// dropped), and metering leaves the message unacknowledged in the usage stream instead.
pub const DEAD_LETTER_MAX_BYTES: i64 = 1 << 30;

/// The dead-letter stream's configuration: [`DEAD_LETTER_SUBJECT`], file storage, kept for
/// [`DEAD_LETTER_RETENTION`] up to [`DEAD_LETTER_MAX_BYTES`], refusing new messages when full,
/// with the layout's replicas.
pub fn dead_letter_stream_config(layout: &StreamLayout) -> stream::Config {
    stream::Config {
        name: DEAD_LETTER_STREAM.to_string(),
        subjects: vec![DEAD_LETTER_SUBJECT.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: DEAD_LETTER_RETENTION,
        max_bytes: DEAD_LETTER_MAX_BYTES,
        discard: stream::DiscardPolicy::New,
        num_replicas: layout.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some(
            "livegate: bus messages metering could not use, with the reason".to_string(),
        ),
        ..Default::default()
    }
}

/// Creates the dead-letter stream if it does not exist; an existing one gets at least the
/// layout's replicas ([`widened`]; its byte limit is its own).
///
/// # Errors
/// [`BusError`] when JetStream is unreachable or refuses the stream.
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
    layout: &StreamLayout,
) -> Result<jetstream::stream::Stream, BusError> {
    ensure(js, dead_letter_stream_config(layout)).await
}

/// How full the usage stream is, and how much of it metering has yet to consume: the figures
/// behind metering's `livegate_metering_stream_*` metrics and the warning of `/readyz` and
/// `livegate doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFill {
    /// Bytes the stream holds (per replica).
    pub bytes: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Its byte limit (-1: none).
    pub max_bytes: i64,
    /// Messages the consumer has not acknowledged yet (pending delivery or acknowledgement).
    pub unconsumed_messages: u64,
}

impl StreamFill {
    /// Bytes held by unconsumed messages, estimated at the stream's average message size.
    pub fn unconsumed_bytes(&self) -> u64 {
        if self.messages == 0 {
            return 0;
        }
        let share = u128::from(self.unconsumed_messages.min(self.messages));
        u64::try_from(u128::from(self.bytes) * share / u128::from(self.messages))
            .unwrap_or(u64::MAX)
    }

    /// [`unconsumed_bytes`](Self::unconsumed_bytes) over the byte limit (0 without a limit).
    pub fn unconsumed_ratio(&self) -> f64 {
        if self.max_bytes <= 0 {
            return 0.0;
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "a ratio for a warning and a gauge: f64's 52 bits are plenty"
        )]
        let ratio = self.unconsumed_bytes() as f64 / self.max_bytes as f64;
        ratio
    }

    /// A warning when unconsumed events fill [`FULL_WARNING_RATIO`] of the byte limit or more:
    /// at the limit the stream drops its oldest events, which would then never be billed.
    pub fn warning(&self) -> Option<String> {
        let ratio = self.unconsumed_ratio();
        (ratio >= FULL_WARNING_RATIO).then(|| {
            format!(
                "usage stream nearly full: events metering has not consumed yet take {:.0} % of \
                 its {} byte limit ({} events); past the limit the oldest are dropped unbilled: \
                 fix metering or ClickHouse, or raise {LIVEGATE_STREAM_MAX_BYTES}",
                ratio * 100.0,
                self.max_bytes,
                self.unconsumed_messages,
            )
        })
    }
}

/// Why [`stream_fill`] could not read the stream or its consumer.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} of JetStream stream {stream}: {source}")]
pub struct FillError {
    /// `stream info` or `consumer info`.
    pub what: &'static str,
    /// The stream.
    pub stream: String,
    /// The client's error.
    #[source]
    pub source: async_nats::Error,
}

/// Reads how full `stream_name` is and how far `consumer` is behind.
///
/// # Errors
/// [`FillError`] when the stream or the consumer cannot be read.
pub async fn stream_fill(
    js: &jetstream::Context,
    stream_name: &str,
    consumer: &str,
) -> Result<StreamFill, FillError> {
    let fail = |what: &'static str| {
        move |e: async_nats::Error| FillError {
            what,
            stream: stream_name.to_string(),
            source: e,
        }
    };
    let mut stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| fail("stream info")(Box::new(e)))?;
    let info = stream
        .info()
        .await
        .map_err(|e| fail("stream info")(Box::new(e)))?
        .clone();
    let consumer_info = stream
        .consumer_info(consumer)
        .await
        .map_err(|e| fail("consumer info")(Box::new(e)))?;
    Ok(StreamFill {
        bytes: info.state.bytes,
        messages: info.state.messages,
        max_bytes: info.config.max_bytes,
        unconsumed_messages: consumer_info.num_pending
            + u64::try_from(consumer_info.num_ack_pending).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn layout_reads_replicas_and_max_bytes_and_refuses_nonsense() {
        assert_eq!(
            StreamLayout::from_env(&env(&[])).unwrap(),
            StreamLayout::default()
        );
        let l = StreamLayout::from_env(&env(&[
            (LIVEGATE_STREAM_REPLICAS, "3"),
            (LIVEGATE_STREAM_MAX_BYTES, "1073741824"),
        ]))
        .unwrap();
        assert_eq!((l.replicas, l.max_bytes), (3, 1 << 30));
        for (name, value) in [
            (LIVEGATE_STREAM_REPLICAS, "0"),
            (LIVEGATE_STREAM_REPLICAS, "6"),
            (LIVEGATE_STREAM_REPLICAS, "three"),
            (LIVEGATE_STREAM_MAX_BYTES, "1000"),
            (LIVEGATE_STREAM_MAX_BYTES, "-1"),
        ] {
            let e = StreamLayout::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(e.name, name, "{e}");
        }
    }

    #[test]
    fn configs_carry_the_layout() {
        let layout = StreamLayout {
            replicas: 3,
            max_bytes: 5 << 20,
        };
        let usage = usage_stream_config("S", &layout);
        assert_eq!((usage.num_replicas, usage.max_bytes), (3, 5 << 20));
        assert_eq!(usage.discard, stream::DiscardPolicy::Old);
        let dead = dead_letter_stream_config(&layout);
        assert_eq!(
            (dead.num_replicas, dead.max_bytes),
            (3, DEAD_LETTER_MAX_BYTES)
        );
    }

    #[test]
    fn widening_raises_and_never_narrows() {
        let wanted = usage_stream_config("S", &StreamLayout::default().with_replicas(3));
        // An old stream: one replica, no byte limit, a short duplicate window.
        let old = stream::Config {
            num_replicas: 1,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(10),
            ..wanted.clone()
        };
        let w = widened(&old, &wanted).expect("widened");
        assert_eq!(w.num_replicas, 3);
        assert_eq!(w.max_bytes, DEFAULT_STREAM_MAX_BYTES);
        assert_eq!(w.duplicate_window, DUPLICATE_WINDOW);
        assert_eq!(widened(&w, &wanted), None);
        // An operator's larger settings stay.
        let bigger = stream::Config {
            num_replicas: 5,
            max_bytes: DEFAULT_STREAM_MAX_BYTES * 2,
            ..wanted.clone()
        };
        assert_eq!(widened(&bigger, &wanted), None);
        // A server reporting 0 replicas means 1.
        let zero = stream::Config {
            num_replicas: 0,
            ..wanted.clone()
        };
        assert_eq!(
            widened(&zero, &usage_stream_config("S", &StreamLayout::default())),
            None
        );
    }

    #[test]
    fn fill_warns_on_the_unconsumed_share_only() {
        let full_but_consumed = StreamFill {
            bytes: 100 << 20,
            messages: 1000,
            max_bytes: 100 << 20,
            unconsumed_messages: 10,
        };
        assert_eq!(full_but_consumed.unconsumed_bytes(), 1 << 20);
        assert_eq!(full_but_consumed.warning(), None);
        let behind = StreamFill {
            unconsumed_messages: 850,
            ..full_but_consumed
        };
        let w = behind.warning().expect("a warning");
        assert!(
            w.contains("85 %") && w.contains(LIVEGATE_STREAM_MAX_BYTES),
            "{w}"
        );
        let unlimited = StreamFill {
            max_bytes: -1,
            ..behind
        };
        assert_eq!(unlimited.warning(), None);
        let empty = StreamFill {
            bytes: 0,
            messages: 0,
            max_bytes: 1 << 20,
            unconsumed_messages: 0,
        };
        assert_eq!(empty.unconsumed_ratio(), 0.0);
    }
}
