//! Watches how full the usage stream is ([`livegate_common::stream::stream_fill`]) every
//! [`EVERY`]: sets the `livegate_metering_stream_*` gauges and keeps the warning `/readyz`
//! shows while unconsumed events fill most of the stream's byte limit (past it the oldest
//! would be dropped unbilled).

use crate::http::State;
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the stream is looked at.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// Looks at `stream` and `consumer` now and every [`EVERY`] until `stop`.
pub(crate) async fn run(
    js: jetstream::Context,
    stream: String,
    consumer: String,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let look = tokio::time::timeout(
            EVERY,
            livegate_common::stream::stream_fill(&js, &stream, &consumer),
        );
        let seen = tokio::select! {
            () = stop.cancelled() => return,
            r = look => r,
        };
        match seen {
            Ok(Ok(fill)) => {
                let m = &state.metrics;
                m.stream_bytes
                    .set(i64::try_from(fill.bytes).unwrap_or(i64::MAX));
                m.stream_max_bytes.set(fill.max_bytes);
                m.stream_unconsumed_ratio.set(fill.unconsumed_ratio());
                let warning = fill.warning();
                if let Some(w) = &warning {
                    tracing::warn!("{w}");
                }
                state.set_stream_warning(warning);
            }
            Ok(Err(e)) => {
                tracing::debug!(error.message = %e, "cannot read the usage stream's fill")
            }
            Err(_) => tracing::debug!("reading the usage stream's fill timed out"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
