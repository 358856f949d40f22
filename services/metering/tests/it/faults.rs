//! Faults: metering killed mid-stream, ClickHouse down while events arrive. Afterwards every
//! event is in ClickHouse exactly once and the spend is exact.

use crate::helpers::*;
use livegate_proto::usage::*;

/// Each text report of these tests: 10 × 0.0000005 + 5 × 0.000002 = 0.000015 USD.
const REPORT_COST: &str = "0.000015";

fn cost_of(n: u64) -> rust_decimal::Decimal {
    dec(REPORT_COST) * rust_decimal::Decimal::from(n)
}

async fn assert_exactly_once(w: &World, reports: u64) {
    assert_eq!(
        w.scalar("SELECT count() FROM {db}.usage_events FINAL")
            .await,
        reports.to_string()
    );
    assert_eq!(
        w.scalar("SELECT uniqExact(event_id) FROM {db}.usage_events")
            .await,
        reports.to_string()
    );
    assert_eq!(
        ch_dec(
            &w.scalar("SELECT toString(sum(cost_usd)) FROM {db}.usage_events FINAL")
                .await
        ),
        cost_of(reports)
    );
    assert_eq!(
        ch_dec(
            &w.scalar("SELECT toString(sum(cost_usd)) FROM {db}.spend_daily FINAL")
                .await
        ),
        cost_of(reports)
    );
    // Physical copies are legitimate: e.g. ClickHouse killed after committing `usage_events`
    // but before the `spend_daily` view's part, so the retry writes the batch again; `FINAL`
    // above shows them counted once.
    let raw = w.scalar("SELECT count() FROM {db}.usage_events").await;
    eprintln!("usage_events: {reports} events, {raw} physical rows before merges");
}

#[tokio::test]
async fn killed_mid_stream_then_restarted_loses_nothing_and_counts_nothing_twice() {
    let w = World::new().await;
    let sessions: Vec<SessionContext> = (0..8)
        .map(|i| {
            context(
                &format!("r{i}"),
                &format!("kr{}", i % 2),
                "tr",
                "gemini-live-2.5-flash",
            )
        })
        .collect();

    let first = spawn_metering(w.config()).await;
    for seq in 1..=6 {
        for s in &sessions {
            w.publish_report(&text_report(s, seq, 10, 5)).await;
        }
    }
    eventually("some rows inserted", || async {
        (first
            .metric("livegate_metering_events_inserted_total")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // Like SIGKILL: whatever batch is in hand is neither finished nor acknowledged.
    first.abort().await;

    for seq in 7..=12 {
        for s in &sessions {
            w.publish_report(&text_report(s, seq, 10, 5)).await;
        }
    }
    for s in &sessions {
        w.publish_session(&ended(s, 12, 30.0, MediaMeasurements::default()))
            .await;
    }

    let second = spawn_metering(w.config()).await;
    w.wait_sessions(8).await;
    assert_exactly_once(&w, 96).await;
    eprintln!(
        "after the restart: {} redelivered, {} duplicates skipped",
        second
            .metric("livegate_metering_events_redelivered_total")
            .await,
        second
            .metric("livegate_metering_duplicates_skipped_total")
            .await
    );
    let per_session = w
        .rows("SELECT events_counted, toString(cost_usd) FROM {db}.sessions FINAL")
        .await;
    for row in per_session {
        let (n, cost) = row.split_once('\t').unwrap();
        assert_eq!(n, "12");
        assert_eq!(ch_dec(cost), cost_of(12));
    }
    assert_eq!(
        w.scalar("SELECT sum(sessions) FROM {db}.spend_daily FINAL")
            .await,
        "8"
    );
    w.wait_spend("team.tr", &cost_of(96).to_string()).await;
    w.wait_spend("key.kr0", &cost_of(48).to_string()).await;
    w.wait_spend("key.kr1", &cost_of(48).to_string()).await;

    // A graceful stop acknowledges everything it took.
    second.stop().await;
    let stream = w.js.get_stream(&w.stream).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&w.consumer).await.unwrap();
    let info = consumer.get_info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
}

#[tokio::test]
async fn clickhouse_down_then_back_loses_nothing_and_counts_nothing_twice() {
    let mut w = World::with_own_clickhouse().await;
    let m = spawn_metering(w.config()).await;
    let s = context("outage", "ko", "to", "gemini-live-2.5-flash");
    for seq in 1..=10 {
        w.publish_report(&text_report(&s, seq, 10, 5)).await;
    }
    w.wait_usage_rows(10).await;

    w.ch_mut().stop().await.unwrap();
    eventually("readyz to fail", || async {
        (m.get("/readyz").await.0 == 503).then_some(())
    })
    .await;
    for seq in 11..=25 {
        w.publish_report(&text_report(&s, seq, 10, 5)).await;
    }
    w.publish_session(&ended(&s, 25, 60.0, MediaMeasurements::default()))
        .await;
    eventually("failed inserts", || async {
        (m.metric("livegate_metering_insert_failures_total").await >= 2.0).then_some(())
    })
    .await;

    w.ch_mut().restart().await.unwrap();
    w.wait_sessions(1).await;
    assert_exactly_once(&w, 25).await;
    assert_eq!(
        w.scalar("SELECT events_counted FROM {db}.sessions FINAL")
            .await,
        "25"
    );
    w.wait_spend("key.ko", &cost_of(25).to_string()).await;
    eventually("readyz back", || async {
        (m.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    m.stop().await;
}
