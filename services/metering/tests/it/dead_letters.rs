//! Nothing is dropped: a message metering cannot use (a subject it does not know, a payload
//! that does not decode) lands in the dead-letter stream with its reason and is then
//! acknowledged, while the usable events around it are written as usual.

use crate::helpers::*;
use async_nats::jetstream::consumer::PullConsumer;
use livegate_common::subjects;
use livegate_proto::prost::Message as _;

#[tokio::test]
async fn unknown_kinds_and_undecodable_payloads_are_set_aside_with_their_reason() {
    let w = World::new().await;
    // A newer gateway's event kind (inside the stream's subjects), garbage on a known subject,
    // and one good report between them.
    w.publish(
        "livegate.usage.v2.turn",
        "new-kind-1",
        b"future event".to_vec(),
    )
    .await;
    w.publish(subjects::USAGE_REPORT, "garbage-1", vec![0xff, 0x01, 0x02])
        .await;
    let ctx = context("dl", "kdl", "tdl", "gemini-live-2.5-flash");
    w.publish(
        subjects::USAGE_REPORT,
        "dl:1",
        text_report(&ctx, 1, 100, 50).encode_to_vec(),
    )
    .await;

    let m = spawn_metering(w.config()).await;
    w.wait_usage_rows(1).await;

    // Both unusable messages are in the dead-letter stream, payload untouched, with the
    // subject they came on and why.
    let letters = eventually("two dead letters", || async {
        let mut stream = w.js.get_stream(subjects::DEAD_LETTER_STREAM).await.ok()?;
        let n = stream.info().await.ok()?.state.messages;
        (n == 2).then_some(stream)
    })
    .await;
    let mut seen = Vec::new();
    for seq in 1..=2 {
        let msg = letters.get_raw_message(seq).await.unwrap();
        let headers = msg.headers;
        let subject = headers
            .get(subjects::DEAD_LETTER_SUBJECT_HEADER)
            .unwrap()
            .to_string();
        let reason = headers
            .get(subjects::DEAD_LETTER_REASON_HEADER)
            .unwrap()
            .to_string();
        seen.push((subject, reason, msg.payload.to_vec()));
    }
    seen.sort();
    assert_eq!(seen[0].0, "livegate.usage.v1.report");
    assert!(seen[0].1.contains("UsageReport"), "{}", seen[0].1);
    assert_eq!(seen[0].2, vec![0xff, 0x01, 0x02]);
    assert_eq!(seen[1].0, "livegate.usage.v2.turn");
    assert!(
        seen[1].1.contains("livegate.usage.v2.turn"),
        "{}",
        seen[1].1
    );
    assert_eq!(seen[1].2, b"future event".to_vec());

    // Acknowledged once set aside: the consumer has nothing pending or outstanding.
    eventually("all three messages acknowledged", || async {
        let mut consumer: PullConsumer =
            w.js.get_stream(&w.stream)
                .await
                .ok()?
                .get_consumer(&w.consumer)
                .await
                .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    let (_, body) = m.get("/metrics").await;
    for kind in ["unknown_subject", "undecodable"] {
        let line = format!("livegate_metering_dead_lettered_total{{kind=\"{kind}\"}} 1");
        assert!(body.contains(&line), "{line} missing from:\n{body}");
    }

    // The good event was priced and stored as usual.
    assert_eq!(
        w.scalar("SELECT count() FROM {db}.usage_events FINAL WHERE session_id = 'dl'")
            .await,
        "1"
    );
    m.stop().await;
}

#[tokio::test]
async fn usage_too_costly_to_store_is_set_aside_and_the_rest_is_billed() {
    // A price table with a typo (a million dollars a token) and an upstream that reports
    // u64::MAX tokens: about 1.8e25 USD per count. Before, the row was stored and every spend
    // sum over the key carried it (or, a little larger, metering panicked on each delivery).
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(
        &prices,
        r#"{"typo-model": {"input_cost_per_token": "1000000", "output_cost_per_token": "1000000"}}"#,
    )
    .unwrap();
    let w = World::new().await;
    let ctx = context("ub", "kub", "tub", "typo-model");
    let absurd = report(
        &ctx,
        1,
        livegate_proto::usage::TokenUsage {
            prompt_tokens: u64::MAX,
            response_tokens: u64::MAX,
            ..Default::default()
        },
        Default::default(),
    );
    w.publish_report(&absurd).await;
    // One token at the typo'd price: a million dollars, billed as the table says.
    w.publish_report(&text_report(&ctx, 2, 1, 0)).await;

    let mut config = w.config();
    config.pricing_file = Some(prices);
    let m = spawn_metering(config).await;
    w.wait_usage_rows(1).await;
    w.wait_spend("key.kub", "1000000").await;

    let letters = eventually("one dead letter", || async {
        let mut stream = w.js.get_stream(subjects::DEAD_LETTER_STREAM).await.ok()?;
        let n = stream.info().await.ok()?.state.messages;
        (n == 1).then_some(stream)
    })
    .await;
    let msg = letters.get_raw_message(1).await.unwrap();
    let reason = msg
        .headers
        .get(subjects::DEAD_LETTER_REASON_HEADER)
        .unwrap()
        .to_string();
    assert!(
        reason.contains("ub:1") && reason.contains("typo-model"),
        "{reason}"
    );
    assert_eq!(msg.payload.to_vec(), absurd.encode_to_vec());
    let (_, body) = m.get("/metrics").await;
    let line = "livegate_metering_dead_lettered_total{kind=\"unbillable\"} 1";
    assert!(body.contains(line), "{line} missing from:\n{body}");
    assert_eq!(
        w.scalar(
            "SELECT toString(sum(cost_usd)) FROM {db}.usage_events FINAL WHERE session_id = 'ub'"
        )
        .await,
        "1000000.000000000000"
    );
    m.stop().await;
}
