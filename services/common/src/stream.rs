//! The JetStream stream that carries every usage and session event (DESIGN.md, "Bus
//! contract"), created on demand by whichever service gets there first.
//!
//! Both the gateway (before publishing) and metering (before consuming) call
//! [`ensure_usage_stream`], so neither depends on the other having started first. The call is
//! idempotent and safe to race: JetStream accepts a create whose configuration equals the
//! existing stream's, and an existing stream is only ever *widened* (a duplicate window
//! shorter than [`DUPLICATE_WINDOW`] is raised), never narrowed or recreated.
//!
//! ```
//! use livegate_common::stream::usage_stream_config;
//! use livegate_common::subjects;
//! let config = usage_stream_config(subjects::STREAM);
//! assert_eq!(config.subjects, vec![subjects::STREAM_SUBJECTS.to_string()]);
//! assert!(config.duplicate_window >= subjects::DUPLICATE_WINDOW);
//! ```
//!
//! With a server at hand:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let stream = livegate_common::stream::ensure_usage_stream(&js, "LIVEGATE_USAGE").await?;
//! assert_eq!(stream.cached_info().config.name, "LIVEGATE_USAGE");
//! # Ok(()) }
//! ```

use crate::subjects::{DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT, DUPLICATE_WINDOW, STREAM_SUBJECTS};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long events are kept once written, consumed or not: long enough to ride out a
/// metering or ClickHouse outage of several days, short enough that the stream's disk use is
/// bounded. Consumed events stay too, so an operator can replay them into a fresh consumer.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// The stream exists with a duplicate window shorter than the contract's, and raising it
    /// failed.
    #[error("cannot raise the duplicate window of JetStream stream {stream}: {source}")]
    Update {
        /// The stream name.
        stream: String,
        /// What the server or client said.
        #[source]
        source: jetstream::context::UpdateStreamError,
    },
}

/// The configuration [`ensure_usage_stream`] creates: subjects `livegate.usage.>`, file
/// storage, limits retention with a [`RETENTION`] max age, and a [`DUPLICATE_WINDOW`] for
/// `Nats-Msg-Id` dedupe.
pub fn usage_stream_config(stream_name: &str) -> stream::Config {
    stream::Config {
        name: stream_name.to_string(),
        subjects: vec![STREAM_SUBJECTS.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: RETENTION,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("livegate usage and session events (gateway -> metering)".to_string()),
        ..Default::default()
    }
}

/// Creates the usage stream `stream_name` if it does not exist, and returns it.
///
/// An existing stream is used as it is, except that a duplicate window shorter than
/// [`DUPLICATE_WINDOW`] is raised to it. A stream whose subjects do not include
/// `livegate.usage.>` is used anyway (an operator may have split subjects deliberately) but
/// logged as a warning, since events published to other subjects would then bypass it.
///
/// # Errors
/// [`BusError`] when JetStream is unreachable or refuses the stream.
pub async fn ensure_usage_stream(
    js: &jetstream::Context,
    stream_name: &str,
) -> Result<jetstream::stream::Stream, BusError> {
    let config = usage_stream_config(stream_name);
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|source| BusError::Create {
            stream: stream_name.to_string(),
            source,
        })?;
    let existing = stream.cached_info().config.clone();
    if !existing.subjects.iter().any(|s| s == STREAM_SUBJECTS) {
        tracing::warn!(
            stream = stream_name,
            subjects = ?existing.subjects,
            "usage stream exists without subject {STREAM_SUBJECTS}"
        );
    }
    if existing.duplicate_window < DUPLICATE_WINDOW {
        let widened = stream::Config {
            duplicate_window: DUPLICATE_WINDOW,
            ..existing
        };
        js.update_stream(widened)
            .await
            .map_err(|source| BusError::Update {
                stream: stream_name.to_string(),
                source,
            })?;
        tracing::info!(
            stream = stream_name,
            "raised the usage stream's duplicate window to {DUPLICATE_WINDOW:?}"
        );
        // Refresh the cached info so callers see the new window.
        let _ = stream.info().await;
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
/// [`DEAD_LETTER_RETENTION`] up to [`DEAD_LETTER_MAX_BYTES`], refusing new messages when full.
pub fn dead_letter_stream_config() -> stream::Config {
    stream::Config {
        name: DEAD_LETTER_STREAM.to_string(),
        subjects: vec![DEAD_LETTER_SUBJECT.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: DEAD_LETTER_RETENTION,
        max_bytes: DEAD_LETTER_MAX_BYTES,
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some(
            "livegate: bus messages metering could not use, with the reason".to_string(),
        ),
        ..Default::default()
    }
}

/// Creates the dead-letter stream if it does not exist (an existing one is used as it is).
///
/// # Errors
/// [`BusError::Create`] when JetStream is unreachable or refuses the stream.
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
) -> Result<jetstream::stream::Stream, BusError> {
    js.get_or_create_stream(dead_letter_stream_config())
        .await
        .map_err(|source| BusError::Create {
            stream: DEAD_LETTER_STREAM.to_string(),
            source,
        })
}
