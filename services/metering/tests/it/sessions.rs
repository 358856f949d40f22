//! Session rows written short: the end event stops waiting for a report that is late, and the
//! lease reconciler completes the row once the report lands.

use crate::helpers::*;
use livegate_proto::usage::MediaMeasurements;
use std::time::Duration;

/// One `sessions FINAL` row of session `id` as
/// `events_counted reports_stored reports close_code closed_by version cost_usd`.
async fn session(w: &World, id: &str) -> Option<String> {
    w.try_scalar(&format!(
        "SELECT concat(toString(events_counted), ' ', toString(reports_stored), ' ', \
         toString(reports), ' ', toString(close_code), ' ', closed_by, ' ', \
         toString(version), ' ', toString(cost_usd)) \
         FROM {{db}}.sessions FINAL WHERE session_id = '{id}'"
    ))
    .await
    .filter(|r| !r.is_empty())
}

#[tokio::test]
async fn a_session_row_written_short_is_completed_when_its_late_report_lands() {
    let w = World::new().await;
    let mut c = w.config();
    // The end waits two deliveries (a second apart) instead of ten, and the reconciler
    // passes every second.
    c.session_waits = 2;
    c.lease = Duration::from_secs(3);
    let m = spawn_metering(c).await;
    let s = context("short", "ks", "ts", "gemini-live-2.5-flash");
    w.publish_report(&text_report(&s, 1, 100, 50)).await; // 0.00015
    // The gateway published two reports; the second is stuck (another replica, an outage).
    w.publish_session(&ended(&s, 2, 5.0, MediaMeasurements::default()))
        .await;
    let short = eventually("the session row written short", || async {
        session(&w, "short").await
    })
    .await;
    let f: Vec<&str> = short.split(' ').collect();
    assert_eq!(f[..6], ["1", "1", "2", "1000", "client", "2"], "{short}");
    assert_eq!(ch_dec(f[6]), dec("0.00015"));
    w.wait_spend("key.ks", "0.00015").await;

    // The late report lands: spend counts it at once, and the row is completed.
    w.publish_report(&text_report(&s, 2, 10, 10)).await; // 0.000005 + 0.00002
    w.wait_spend("key.ks", "0.000175").await;
    let done = eventually("the session row completed", || async {
        session(&w, "short").await.filter(|r| r.starts_with("2 "))
    })
    .await;
    let f: Vec<&str> = done.split(' ').collect();
    // Both reports, still the gateway's close, a version above the short row's.
    assert_eq!(f[..6], ["2", "2", "2", "1000", "client", "3"], "{done}");
    assert_eq!(ch_dec(f[6]), dec("0.000175"));
    assert_eq!(
        w.scalar(
            "SELECT concat(close_reason, ' ', toString(frames_in), ' ', \
             toString(upstream_connections)) FROM {db}.sessions FINAL"
        )
        .await,
        "bye 10 3"
    );
    // Still one session in the per-day spend.
    w.wait_sessions(1).await;
    m.stop().await;
}
