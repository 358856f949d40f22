//! Migrations: idempotent when run again, and when run by two replicas at once.

use crate::helpers::*;
use livegate_metering::Store;
use livegate_metering::config::ClickHouseConfig;
use livegate_test_support::{ClickHouseServer, names};
use secrecy::SecretString;

fn store(ch: &ClickHouseServer, db: &str) -> Store {
    Store::new(&ClickHouseConfig {
        url: ch.http_url(),
        database: db.to_string(),
        user: "default".into(),
        password: SecretString::from(String::new()),
        cluster: None,
    })
}

#[tokio::test]
async fn migrations_run_twice_and_concurrently_without_error() {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = names::unique("t_migrate");
    let s = store(ch, &db);
    assert_eq!(s.migrate().await.unwrap(), vec![1, 2, 3]);
    assert_eq!(s.migrate().await.unwrap(), Vec::<u32>::new());
    for t in [
        "schema_migrations",
        "usage_events",
        "sessions",
        "spend_daily",
        "spend_daily_usage_mv",
        "spend_daily_sessions_mv",
        "session_starts",
        "usage_receipts",
    ] {
        let exists = ch.query(&format!("EXISTS TABLE {db}.{t}")).await.unwrap();
        assert_eq!(exists.trim(), "1", "{t}");
    }
    let versions = ch
        .query(&format!(
            "SELECT version FROM {db}.schema_migrations FINAL ORDER BY version"
        ))
        .await
        .unwrap();
    assert_eq!(versions.trim(), "1\n2\n3");

    // Two replicas starting together on a fresh database.
    let db2 = names::unique("t_migrate");
    let (s1, s2) = (store(ch, &db2), store(ch, &db2));
    let (a, b) = tokio::join!(s1.migrate(), s2.migrate());
    a.unwrap();
    b.unwrap();
    assert_eq!(store(ch, &db2).migrate().await.unwrap(), Vec::<u32>::new());
    let versions = ch
        .query(&format!(
            "SELECT version FROM {db2}.schema_migrations FINAL ORDER BY version"
        ))
        .await
        .unwrap();
    assert_eq!(versions.trim(), "1\n2\n3");
}

#[tokio::test]
async fn metering_starts_twice_on_the_same_database() {
    let w = World::new().await;
    let first = spawn_metering(w.config()).await;
    eventually("first ready", || async {
        (first.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    first.stop().await;
    let m = spawn_metering(w.config()).await;
    eventually("ready", || async {
        (m.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    m.stop().await;
}
