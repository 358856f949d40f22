//! The fetch loop: [`Pipeline::run`] pulls a batch (up to `batch_size` messages, or what
//! arrived within `flush_interval`), hands it to the batch write, and repeats until stopped,
//! pausing with exponential backoff while JetStream or ClickHouse fails; it also refreshes the
//! consumer-lag gauges.

use super::{FIRST_BACKOFF, MAX_BACKOFF, Pipeline};
use async_nats::jetstream;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the consumer-lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Runs batches until `stop`; the batch in hand when `stop` fires is finished (written
    /// and acknowledged, or handed back) before returning.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut last_lag = Instant::now()
            .checked_sub(LAG_INTERVAL)
            .unwrap_or_else(Instant::now);
        let mut pause = FIRST_BACKOFF;
        while !stop.is_cancelled() {
            let batch = match self.fetch(&stop).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot fetch from JetStream; retrying");
                    if sleep_or_stop(&stop, pause).await {
                        break;
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if !batch.is_empty() {
                if self.process(batch).await {
                    pause = FIRST_BACKOFF;
                } else {
                    // ClickHouse is down: let it breathe before the next batch.
                    if sleep_or_stop(&stop, pause).await {
                        break;
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
            if last_lag.elapsed() >= LAG_INTERVAL {
                last_lag = Instant::now();
                if let Ok(info) = self.consumer.get_info().await {
                    self.metrics
                        .pending
                        .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                    self.metrics
                        .ack_pending
                        .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                }
            }
        }
    }

    /// Up to `batch_size` messages, or what arrived within `flush_interval`; stops early (with
    /// what it has) on `stop`.
    async fn fetch(
        &self,
        stop: &CancellationToken,
    ) -> Result<Vec<jetstream::Message>, async_nats::Error> {
        let mut messages = self
            .consumer
            .batch()
            .max_messages(self.batch_size)
            .expires(self.flush_interval)
            .messages()
            .await?;
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) if batch.is_empty() => return Err(e),
                    Some(Err(e)) => {
                        tracing::debug!(error.message = %e, "pull request ended early");
                        break;
                    }
                    None => break,
                },
            }
        }
        Ok(batch)
    }
}

/// Sleeps `d`; true if `stop` fired first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
