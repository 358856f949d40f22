//! Spend feedback from per-day totals: budgets follow every key-day exactly (a redelivery adds
//! nothing, a later day adds its own row), and a session closed as lost and ended again late on
//! another day counts once in `spend_daily`.

use crate::helpers::*;
use livegate_common::subjects;
use livegate_proto::prost::Message as _;
use livegate_proto::usage::MediaMeasurements;

const MODEL: &str = "gemini-live-2.5-flash";
const DAY: i64 = 86_400;

#[tokio::test]
async fn budgets_follow_per_day_totals_exactly() {
    let w = World::new().await;
    let m = spawn_metering(w.config()).await;
    let a = context("sp-a", "ks1", "ts", MODEL);
    let b = context("sp-b", "ks2", "ts", MODEL);
    // 100 in + 50 out = 0.00015 USD; 10 + 10 = 0.000025 USD.
    let mut yesterday = text_report(&a, 1, 100, 50);
    yesterday.occurred_at = ts(T0 - DAY);
    w.publish_report(&yesterday).await;
    w.publish_report(&text_report(&a, 2, 100, 50)).await;
    w.publish_report(&text_report(&b, 1, 10, 10)).await;
    w.wait_spend("key.ks1", "0.0003").await;
    w.wait_spend("key.ks2", "0.000025").await;
    w.wait_spend("team.ts", "0.000325").await;
    let per_day = |rows: Vec<String>| -> Vec<(String, String, rust_decimal::Decimal)> {
        rows.iter()
            .map(|r| {
                let f: Vec<&str> = r.split('\t').collect();
                (f[0].to_string(), f[1].to_string(), ch_dec(f[2]))
            })
            .collect()
    };
    let sql = "SELECT key_id, toString(day), toString(cost_usd) FROM {db}.spend_totals FINAL \
               ORDER BY key_id, day";
    assert_eq!(
        per_day(w.rows(sql).await),
        [
            ("ks1".into(), "2027-01-14".into(), dec("0.00015")),
            ("ks1".into(), "2027-01-15".into(), dec("0.00015")),
            ("ks2".into(), "2027-01-15".into(), dec("0.000025")),
        ]
    );

    // Yesterday's report again under another Nats-Msg-Id (JetStream cannot dedupe it), then a
    // new one today: only the new one counts.
    w.publish(
        subjects::USAGE_REPORT,
        "sp-a:1#again",
        yesterday.encode_to_vec(),
    )
    .await;
    w.publish_report(&text_report(&a, 3, 100, 50)).await;
    w.wait_spend("key.ks1", "0.00045").await;
    w.wait_spend("team.ts", "0.000475").await;
    assert_eq!(
        per_day(w.rows(sql).await)[..2],
        [
            ("ks1".into(), "2027-01-14".into(), dec("0.00015")),
            ("ks1".into(), "2027-01-15".into(), dec("0.0003")),
        ]
    );
    assert!(
        m.metric("livegate_metering_spend_refresh_seconds_count")
            .await
            >= 2.0
    );
    m.stop().await;
}

#[tokio::test]
async fn a_lost_session_ended_late_on_another_day_counts_once() {
    let w = World::new().await;
    let m = spawn_metering(w.config()).await;
    let s = context("late", "kl", "tl", MODEL);
    w.publish_report(&text_report(&s, 1, 100, 50)).await;
    w.wait_usage_rows(1).await;
    // What the lease reconciler writes for a session whose gateway's lease expired (version
    // 0, closed_by 'lost'), here on the day after the session started.
    w.rows(&format!(
        "INSERT INTO {{db}}.sessions (session_id, key_id, team_id, model, started_at, ended_at, \
         close_code, closed_by, version) VALUES ('late', 'kl', 'tl', '{MODEL}', \
         toDateTime({T0}, 'UTC'), toDateTime({}, 'UTC'), 1006, 'lost', 0)",
        T0 + DAY
    ))
    .await;
    // The gateway was only partitioned: its own end arrives, the session ended on its first day.
    w.publish_session(&ended(&s, 1, 30.0, MediaMeasurements::default()))
        .await;
    eventually("the gateway's own row", || async {
        (w.scalar("SELECT closed_by FROM {db}.sessions FINAL WHERE session_id = 'late'")
            .await
            == "client")
            .then_some(())
    })
    .await;
    assert_eq!(
        w.scalar("SELECT sum(sessions) FROM {db}.spend_daily FINAL WHERE key_id = 'kl'")
            .await,
        "1"
    );
    m.stop().await;
}
