//! The same event delivered twice is counted once, in every table and in KV.

use crate::helpers::*;
use async_nats::jetstream::{AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use livegate_common::subjects;
use livegate_proto::prost::Message as _;
use livegate_proto::usage::*;
use std::time::Duration;

/// What every exact read must show for the session "dup" whatever copies exist.
async fn assert_counted_once(w: &World) {
    assert_eq!(
        w.scalar("SELECT count() FROM {db}.usage_events FINAL")
            .await,
        "2"
    );
    assert_eq!(
        ch_dec(
            &w.scalar("SELECT toString(sum(cost_usd)) FROM {db}.usage_events FINAL")
                .await
        ),
        dec("0.000175")
    );
    assert_eq!(
        w.scalar("SELECT count() FROM {db}.sessions FINAL").await,
        "1"
    );
    assert_eq!(
        ch_dec(
            &w.scalar("SELECT toString(cost_usd) FROM {db}.sessions FINAL")
                .await
        ),
        dec("0.000175")
    );
    let daily = w
        .scalar(
            "SELECT concat(toString(sum(sessions)), ' ', toString(sum(prompt_tokens)), ' ', \
             toString(sum(response_tokens)), ' ', toString(sum(cost_usd))) \
             FROM {db}.spend_daily FINAL WHERE key_id = 'kd'",
        )
        .await;
    let f: Vec<&str> = daily.split(' ').collect();
    assert_eq!(&f[..3], ["1", "110", "60"], "{daily}");
    assert_eq!(ch_dec(f[3]), dec("0.000175"));
}

#[tokio::test]
async fn a_duplicate_delivery_is_counted_once_everywhere() {
    let w = World::new().await;
    let m = spawn_metering(w.config()).await;
    let s = context("dup", "kd", "td", "gemini-live-2.5-flash");
    let r1 = text_report(&s, 1, 100, 50); // 0.00015
    let r2 = text_report(&s, 2, 10, 10); // 0.000025
    let end = ended(&s, 2, 4.0, MediaMeasurements::default());

    w.publish_report(&r1).await;
    // The same report again under another Nats-Msg-Id: JetStream cannot dedupe it.
    w.publish(subjects::USAGE_REPORT, "dup:1#again", r1.encode_to_vec())
        .await;
    w.publish_report(&r2).await;
    // A gateway retry with the same Nats-Msg-Id: JetStream drops it within its window.
    w.publish_report(&r2).await;
    w.publish_session(&end).await;
    w.publish(
        subjects::SESSION_EVENT,
        "dup:end#again",
        end.encode_to_vec(),
    )
    .await;

    eventually("all six deliveries processed", || async {
        let reports = m
            .metric("livegate_metering_events_consumed_total{kind=\"report\"}")
            .await;
        let ends = m
            .metric("livegate_metering_events_consumed_total{kind=\"session_ended\"}")
            .await;
        // ClickHouse shows a table's rows a moment before its views' rows: wait for both.
        let sessions = w
            .try_scalar("SELECT count() FROM {db}.sessions FINAL")
            .await;
        let daily = w
            .try_scalar("SELECT sum(sessions) FROM {db}.spend_daily FINAL")
            .await;
        (reports == 3.0
            && ends == 2.0
            && sessions.as_deref() == Some("1")
            && daily.as_deref() == Some("1"))
        .then_some(())
    })
    .await;
    // A copy in the same batch is collapsed before the insert; one in a later batch is a first
    // delivery (nothing looks it up) and lands as a physical copy that `FINAL` reads once.
    assert_counted_once(&w).await;
    w.wait_spend("key.kd", "0.000175").await;
    w.wait_spend("team.td", "0.000175").await;

    // Now force physical duplicates past the pre-insert check, as two replicas racing with
    // copies of one event would: re-insert stored rows (the materialized views fire again).
    // Merges are stopped so the copies stay until the exact reads have seen them.
    for t in ["usage_events", "sessions", "spend_daily"] {
        w.ch.query(&format!("SYSTEM STOP MERGES {}.{t}", w.db))
            .await
            .unwrap();
    }
    let raw = |t: &'static str| {
        let w = &w;
        async move {
            w.scalar(&format!("SELECT count() FROM {{db}}.{t}"))
                .await
                .parse::<u64>()
                .unwrap()
        }
    };
    let (sessions_before, daily_before) = (raw("sessions").await, raw("spend_daily").await);
    w.ch.query(&format!(
        "INSERT INTO {0}.usage_events SELECT * FROM {0}.usage_events WHERE event_id = 'dup:1'",
        w.db
    ))
    .await
    .unwrap();
    w.ch.query(&format!(
        "INSERT INTO {0}.sessions SELECT * FROM {0}.sessions FINAL",
        w.db
    ))
    .await
    .unwrap();
    assert_eq!(raw("usage_events").await, 3);
    assert_eq!(raw("sessions").await, sessions_before + 1);
    // One copy from each view.
    assert_eq!(raw("spend_daily").await, daily_before + 2);
    assert_counted_once(&w).await;

    // A third copy after that (a first delivery, so written as it is): still once, and the KV
    // total does not move.
    let usage_before = raw("usage_events").await;
    w.publish(subjects::USAGE_REPORT, "dup:1#third", r1.encode_to_vec())
        .await;
    eventually("the third copy written", || async {
        (raw("usage_events").await == usage_before + 1).then_some(())
    })
    .await;
    assert_counted_once(&w).await;
    m.stop().await;
    assert_eq!(w.spend("key.kd").await, Some(dec("0.000175")));
}

#[tokio::test]
async fn a_redelivered_event_already_stored_is_not_written_again() {
    let w = World::new().await;
    let s = context("redo", "kr", "tr", "gemini-live-2.5-flash");
    let r1 = text_report(&s, 1, 100, 50);
    // The first delivery is written and acknowledged.
    let m = spawn_metering(w.config()).await;
    w.publish_report(&r1).await;
    w.wait_usage_rows(1).await;
    m.stop().await;

    // A copy comes back as a redelivery, as after a lost ack: it is taken once from the shared
    // durable consumer and handed back unacknowledged.
    w.publish(subjects::USAGE_REPORT, "redo:1#again", r1.encode_to_vec())
        .await;
    let consumer: PullConsumer =
        w.js.get_stream(&w.stream)
            .await
            .unwrap()
            .get_consumer(&w.consumer)
            .await
            .unwrap();
    // The stopped metering's connection may still be closing and take this delivery into
    // its pull request; then it comes back after the ack wait (3 s), so ask for up to 10 s.
    let mut msg = None;
    for _ in 0..10 {
        let mut fetched = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        if let Some(m) = fetched.next().await {
            msg = Some(m.unwrap());
            break;
        }
    }
    let msg = msg.expect("the copy delivered to this test's fetch within 10 s");
    msg.ack_with(AckKind::Nak(None)).await.unwrap();

    let m = spawn_metering(w.config()).await;
    eventually("the redelivered copy looked up and skipped", || async {
        (m.metric("livegate_metering_duplicates_skipped_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        m.metric("livegate_metering_events_redelivered_total").await,
        1.0
    );
    assert_eq!(
        m.metric("livegate_metering_events_inserted_total").await,
        0.0
    );
    assert_eq!(w.scalar("SELECT count() FROM {db}.usage_events").await, "1");
    assert_eq!(w.scalar("SELECT count() FROM {db}.spend_daily").await, "1");
    m.stop().await;
}

#[tokio::test]
async fn an_event_id_published_again_with_other_content_is_billed_once_as_first_stored() {
    // A buggy or replaying gateway publishes an event id that is already stored, under another
    // Nats-Msg-Id (JetStream cannot dedupe it) and not as a redelivery, with other content:
    // 20× the tokens and a time on the next day. The stored event stands; the copy is skipped,
    // never billed on a second day (spend_daily's key holds the day, so it would not merge).
    // Needs METERING_VERIFY_FIRST_DELIVERIES (off by default, a throughput choice: see the
    // metering README's "Exactly once"); without it the copy is inserted.
    let w = World::new().await;
    let mut config = w.config();
    config.verify_first_deliveries = true;
    let m = spawn_metering(config).await;
    let s = context("replay", "krp", "trp", "gemini-live-2.5-flash");
    let r1 = text_report(&s, 1, 100, 50); // 0.00015
    w.publish_report(&r1).await;
    w.wait_usage_rows(1).await;

    let mut forged = text_report(&s, 1, 2000, 1000);
    forged.occurred_at = ts(T0 + 86_400);
    w.publish(
        subjects::USAGE_REPORT,
        "replay:1#forged",
        forged.encode_to_vec(),
    )
    .await;
    eventually("the copy consumed and its batch done", || async {
        let done = m.metric("livegate_metering_events_inserted_total").await
            + m.metric("livegate_metering_duplicates_skipped_total").await;
        (done == 2.0).then_some(())
    })
    .await;

    assert_eq!(
        m.metric("livegate_metering_duplicates_skipped_total").await,
        1.0
    );
    assert_eq!(
        w.scalar(
            "SELECT concat(toString(count()), ' ', toString(sum(prompt_tokens)), ' ', \
             toString(sum(cost_usd))) FROM {db}.usage_events FINAL"
        )
        .await,
        "1 100 0.000150000000"
    );
    assert_eq!(
        w.scalar(
            "SELECT concat(toString(count()), ' ', toString(sum(cost_usd))) \
             FROM {db}.spend_daily FINAL WHERE key_id = 'krp'"
        )
        .await,
        "1 0.000150000000"
    );
    assert_eq!(
        w.scalar("SELECT count() FROM {db}.usage_receipts").await,
        "1"
    );
    w.wait_spend("key.krp", "0.00015").await;
    m.stop().await;
}
