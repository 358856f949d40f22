use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use livegate_test_support::{NatsServer, unique};

const WAIT: Duration = Duration::from_secs(30);

fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

#[tokio::test]
async fn jetstream_dedupes_by_msg_id_and_serves_a_durable_pull_consumer() {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    let name = unique("usage");
    let mut stream = js.create_stream(stream_config(&name)).await.unwrap();
    let subject = format!("{name}.report");

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "session-1:1");
    let first = js
        .publish_with_headers(subject.clone(), headers.clone(), "report".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let second = js
        .publish_with_headers(subject.clone(), headers, "report".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate, "same Nats-Msg-Id must be deduplicated");
    assert_eq!(first.sequence, second.sequence);
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    let durable = unique("metering");
    let mut consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(msg) = tokio::time::timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        got.push(msg.payload.clone());
        msg.double_ack().await.unwrap();
    }
    assert_eq!(got, vec![bytes::Bytes::from("report")]);

    let info = consumer.info().await.unwrap();
    assert_eq!(info.name, durable);
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
}

#[tokio::test]
async fn restart_keeps_stream_data_on_the_same_port() {
    let mut nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    // This client lives across the restart, as a gateway's would.
    let js = jetstream::new(nats.client().await.unwrap());
    let name = unique("restart");
    js.create_stream(stream_config(&name)).await.unwrap();
    let subject = format!("{name}.report");
    js.publish(subject.clone(), "before".into())
        .await
        .unwrap()
        .await
        .unwrap();

    nats.stop().await.unwrap();
    assert!(!nats.is_running());
    nats.restart().await.unwrap();
    assert!(nats.is_running());
    assert_eq!(nats.url(), url);

    let fresh = jetstream::new(nats.client().await.unwrap());
    let stream = fresh.get_stream(&name).await.unwrap();
    let msg = stream.get_raw_message(1).await.unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("before"));

    // The old client reconnects by itself and can publish again.
    let ack = tokio::time::timeout(WAIT, async {
        loop {
            match js.publish(subject.clone(), "after".into()).await {
                Ok(pending) => match pending.await {
                    Ok(ack) => break ack,
                    Err(_) => continue,
                },
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("old client did not get a publish through after the restart");
    assert_eq!(ack.sequence, 2);
}
