//! Dead letters: a message metering cannot use (a subject it does not know, as a newer gateway
//! may publish during a rolling upgrade, a payload that does not decode, or usage whose cost is
//! too large to store: absurd counts or an absurd price) is copied to the
//! dead-letter stream with its reason before it is acknowledged, so nothing leaves the bus
//! unaccounted for. If the copy fails, the message stays unacknowledged and comes back.

use super::Pipeline;
use super::batch::Item;
use crate::events::{DecodeError, Event};
use crate::metrics::KindLabel;
use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use livegate_common::subjects::{
    DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SUBJECT, DEAD_LETTER_SUBJECT_HEADER,
};

/// The dead-letter metric's label and the reason header's text for `item`, or `None` when it
/// is a message metering uses.
fn why(item: &Item) -> Option<(&'static str, String)> {
    match &item.event {
        Ok(Event::Ignored) => Some((
            "unknown_subject",
            format!(
                "no handler for subject {} (a newer event kind?)",
                item.msg.subject
            ),
        )),
        Err(e @ DecodeError::Unbillable { .. }) => Some(("unbillable", e.to_string())),
        Err(e) => Some(("undecodable", e.to_string())),
        Ok(_) => None,
    }
}

impl Pipeline {
    /// Copies every unusable message of `items` to the dead-letter stream and marks the ones
    /// JetStream confirmed; the ack policy acknowledges only those.
    pub(super) async fn dead_letter(&self, items: &mut [Item]) {
        let js = async_nats::jetstream::new(self.client.clone());
        for item in items.iter_mut() {
            let Some((kind, reason)) = why(item) else {
                continue;
            };
            let info = item.msg.info().ok();
            let stream_seq = info.as_ref().map(|i| i.stream_sequence).unwrap_or_default();
            let stream = info.as_ref().map(|i| i.stream).unwrap_or_default();
            let mut headers = HeaderMap::new();
            // One dead letter per stored message, however often it is redelivered.
            headers.insert(NATS_MESSAGE_ID, format!("{stream}:{stream_seq}").as_str());
            headers.insert(DEAD_LETTER_SUBJECT_HEADER, item.msg.subject.as_str());
            headers.insert(DEAD_LETTER_REASON_HEADER, reason.as_str());
            let published = match js
                .publish_with_headers(DEAD_LETTER_SUBJECT, headers, item.msg.payload.clone())
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match published {
                Ok(()) => {
                    item.dead_lettered = true;
                    self.metrics
                        .dead_lettered
                        .get_or_create(&KindLabel { kind })
                        .inc();
                    tracing::warn!(
                        subject = %item.msg.subject,
                        stream.seq = stream_seq,
                        reason = %reason,
                        "bus message set aside in the dead-letter stream"
                    );
                }
                Err(e) => {
                    tracing::error!(
                        subject = %item.msg.subject,
                        stream.seq = stream_seq,
                        error.message = %e,
                        "cannot write a dead letter; the message stays unacknowledged"
                    );
                }
            }
        }
    }
}
