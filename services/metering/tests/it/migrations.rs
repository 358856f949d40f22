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
    assert_eq!(s.migrate().await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(s.migrate().await.unwrap(), Vec::<u32>::new());
    for t in [
        "schema_migrations",
        "usage_events",
        "sessions",
        "spend_daily",
        "spend_daily_usage_mv",
        "spend_daily_sessions_by_start_mv",
        "session_starts",
        "usage_receipts",
        "spend_totals",
        "spend_totals_by_team",
        "spend_totals_by_team_mv",
        "spend_team_days",
    ] {
        let exists = ch.query(&format!("EXISTS TABLE {db}.{t}")).await.unwrap();
        assert_eq!(exists.trim(), "1", "{t}");
    }
    // Replaced by the view counting sessions on their start day (migration 4).
    let old = ch
        .query(&format!("EXISTS TABLE {db}.spend_daily_sessions_mv"))
        .await
        .unwrap();
    assert_eq!(old.trim(), "0");
    let versions = ch
        .query(&format!(
            "SELECT version FROM {db}.schema_migrations FINAL ORDER BY version"
        ))
        .await
        .unwrap();
    assert_eq!(versions.trim(), "1\n2\n3\n4\n5\n6\n7");

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
    assert_eq!(versions.trim(), "1\n2\n3\n4\n5\n6\n7");
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

#[tokio::test]
async fn the_per_day_totals_are_backfilled_from_the_history_already_stored() {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = names::unique("t_backfill");
    // The schema as migrations 1-3 left it, with history in spend_daily.
    let v4 = |s: &str| {
        s.contains("spend_totals")
            || s.contains("spend_team_days")
            || s.contains("sessions_by_start")
            || s.starts_with("DROP")
    };
    for s in livegate_metering::schema_statements(&db).unwrap() {
        if !v4(&s) {
            ch.query(&s).await.unwrap();
        }
    }
    ch.query(&format!(
        "INSERT INTO {db}.schema_migrations (version, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"
    ))
    .await
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {db}.spend_daily (day, key_id, team_id, model, event_id, sessions, cost_usd) \
         VALUES ('2026-11-30', 'k1', 't1', 'm', 'e1', 0, '0.25'), \
                ('2026-11-30', 'k1', 't1', 'm', 'e2', 0, '0.5'), \
                ('2026-11-30', 'k1', 't1', 'm', 'e2', 0, '0.5'), \
                ('2026-12-01', 'k1', 't1', 'm', 'e3', 0, '1.000000000001'), \
                ('2026-12-01', 'k2', 't1', 'm', 'e4', 0, '2'), \
                ('2026-12-01', 'k2', 't1', 'm', 's:session', 1, '0')"
    ))
    .await
    .unwrap();

    // Migrations 5 to 7's columns came with the statements above; the runner skips them.
    assert_eq!(store(ch, &db).migrate().await.unwrap(), vec![4, 5, 6, 7]);
    let rows = ch
        .query(&format!(
            "SELECT key_id, toString(day), team_id, toString(cost_usd), events \
             FROM {db}.spend_totals FINAL ORDER BY key_id, day"
        ))
        .await
        .unwrap();
    // The copy of e2 counts once (spend_daily is read with FINAL). ClickHouse 18.16 prints
    // decimals with trailing zeros, current releases without: compare the values.
    let rows: Vec<(String, String, String, rust_decimal::Decimal, String)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].into(),
                f[1].into(),
                f[2].into(),
                ch_dec(f[3]),
                f[4].into(),
            )
        })
        .collect();
    let row = |k: &str, d: &str, usd: &str, n: &str| {
        (
            k.to_string(),
            d.to_string(),
            "t1".to_string(),
            dec(usd),
            n.to_string(),
        )
    };
    assert_eq!(
        rows,
        [
            row("k1", "2026-11-30", "0.75", "2"),
            row("k1", "2026-12-01", "1.000000000001", "1"),
            row("k2", "2026-12-01", "2", "2"),
        ]
    );
    let teams = ch
        .query(&format!(
            "SELECT team_id, toString(day), toString(cost_usd), events FROM {db}.spend_team_days FINAL ORDER BY day"
        ))
        .await
        .unwrap();
    let teams: Vec<(String, String, rust_decimal::Decimal, String)> = teams
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[1].into(), ch_dec(f[2]), f[3].into())
        })
        .collect();
    assert_eq!(
        teams,
        [
            ("t1".into(), "2026-11-30".into(), dec("0.75"), "2".into()),
            (
                "t1".into(),
                "2026-12-01".into(),
                dec("3.000000000001"),
                "3".into()
            ),
        ]
    );
    ch.query(&format!("DROP DATABASE {db}")).await.unwrap();
}

#[tokio::test]
async fn session_rows_written_before_reports_stored_existed_are_short_only_when_certainly_short() {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = names::unique("t_stored");
    // The schema as migrations 1-6 left it, with three session rows: complete, complete with
    // its `:end` row, and certainly short (fewer usage rows than published reports).
    let v7 = |s: &str| s.contains("reports_stored");
    for s in livegate_metering::schema_statements(&db).unwrap() {
        if !v7(&s) {
            ch.query(&s).await.unwrap();
        }
    }
    ch.query(&format!(
        "INSERT INTO {db}.schema_migrations (version, name) VALUES \
         (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')"
    ))
    .await
    .unwrap();
    ch.query(&format!(
        "INSERT INTO {db}.sessions (session_id, ended_at, reports, events_counted, version) \
         VALUES ('full', now(), 2, 2, 3), ('end', now(), 2, 3, 4), ('short', now(), 3, 1, 2)"
    ))
    .await
    .unwrap();
    assert_eq!(store(ch, &db).migrate().await.unwrap(), vec![7]);
    let rows = ch
        .query(&format!(
            "SELECT session_id, reports_stored FROM {db}.sessions FINAL ORDER BY session_id"
        ))
        .await
        .unwrap();
    assert_eq!(rows.trim(), "end\t2\nfull\t2\nshort\t1");
    // Merged into new parts, the old rows keep the same values.
    ch.query(&format!("OPTIMIZE TABLE {db}.sessions FINAL"))
        .await
        .unwrap();
    let rows = ch
        .query(&format!(
            "SELECT session_id, reports_stored FROM {db}.sessions FINAL ORDER BY session_id"
        ))
        .await
        .unwrap();
    assert_eq!(rows.trim(), "end\t2\nfull\t2\nshort\t1");
}
