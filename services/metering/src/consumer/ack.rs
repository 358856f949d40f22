//! The ack policy: what JetStream is told about each message of a batch. Nothing is
//! acknowledged before its rows are in ClickHouse: after the write, events are acked, an end
//! event still waiting for its reports is NAKed with a delay, and an unusable message is acked
//! once it is in the dead-letter stream (NAKed for another try when that copy failed); while a
//! failed write is retried the batch is marked in progress (`+WPI`); when the batch is given up
//! it is NAKed back with the last backoff.

use super::Pipeline;
use super::batch::Item;
use super::sessions::{SESSION_WAIT_DELAY, SessionStep};
use crate::events::Event;
use async_nats::jetstream::AckKind;
use std::collections::HashMap;
use std::time::Duration;

/// When an unusable message comes back after its dead letter could not be written.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

/// `+WPI` for every message: the batch is still ours, so JetStream does not redeliver it while
/// a failed write is retried.
pub(super) async fn in_progress(items: &[Item]) {
    for item in items {
        let _ = item.msg.ack_with(AckKind::Progress).await;
    }
}

impl Pipeline {
    /// After the last failed attempt: every message back to JetStream (`NAK` after `backoff`),
    /// except the ones already in the dead-letter stream (acked), then the answers flushed.
    pub(super) async fn hand_back(&self, items: &[Item], backoff: Duration) {
        for item in items {
            let kind = if item.dead_lettered {
                AckKind::Ack
            } else {
                AckKind::Nak(Some(backoff))
            };
            if let Err(e) = item.msg.ack_with(kind).await {
                tracing::debug!(error.message = %e, "cannot hand message back; it will time out instead");
            }
        }
        let _ = self.client.flush().await;
    }

    /// After a successful write: every message acknowledged, except an end event whose session
    /// waits for reports (`NAK` after [`SESSION_WAIT_DELAY`]) and an unusable message whose
    /// dead letter could not be written (`NAK`, to try again), then the answers flushed.
    pub(super) async fn acknowledge(
        &self,
        items: &[Item],
        sessions: &HashMap<String, SessionStep>,
    ) {
        for item in items {
            let kind = match &item.event {
                Err(_) | Ok(Event::Ignored) if !item.dead_lettered => {
                    AckKind::Nak(Some(DEAD_LETTER_RETRY))
                }
                Err(_) => AckKind::Ack,
                Ok(Event::Ended(e)) => match sessions.get(&e.context().session_id) {
                    Some(SessionStep::Wait) => AckKind::Nak(Some(SESSION_WAIT_DELAY)),
                    _ => AckKind::Ack,
                },
                Ok(_) => AckKind::Ack,
            };
            if let Err(e) = item.msg.ack_with(kind).await {
                // The write is done and idempotent: a redelivery costs a lookup, nothing more.
                tracing::debug!(error.message = %e, "ack failed; the event will be redelivered");
            }
        }
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error.message = %e, "flushing acks failed; events will be redelivered");
        }
    }
}
