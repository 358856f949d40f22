//! Consumer set-up: the usage and dead-letter streams (created if missing) and the durable
//! pull consumer every metering replica shares.

use async_nats::jetstream::{self, consumer::PullConsumer};

/// Creates (or updates to this configuration) the durable pull consumer on the usage stream,
/// creating the stream first if needed.
///
/// # Errors
/// When JetStream refuses.
pub(crate) async fn setup(
    js: &jetstream::Context,
    config: &crate::Config,
) -> Result<PullConsumer, async_nats::Error> {
    let layout = config.nats.layout();
    let stream = livegate_common::stream::ensure_usage_stream(js, &config.stream, layout).await?;
    livegate_common::stream::ensure_dead_letter_stream(js, layout).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(config.consumer.clone()),
            description: Some("livegate-metering: usage events into ClickHouse".to_string()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: config.max_ack_pending,
            // Never give up on a message: an event is only done once it is in ClickHouse.
            max_deliver: -1,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}
