use clickhouse::Row;
use livegate_test_support::ClickHouseServer;
use serde::{Deserialize, Serialize};

/// Column types the storage contract uses. In RowBinary, `DateTime` is seconds as `u32` and
/// `Decimal(38, 12)` is the scaled value as `i128`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct UsageRow {
    occurred_at: u32,
    cost_usd: i128,
    model: String,
    tokens: u64,
}

const SCALE: i128 = 1_000_000_000_000;

const CREATE: &str = "CREATE TABLE {db}.usage (
    occurred_at DateTime('UTC'),
    cost_usd Decimal(38, 12),
    model String,
    tokens UInt64
) ENGINE = MergeTree ORDER BY (occurred_at, model)";

fn rows() -> Vec<UsageRow> {
    vec![
        UsageRow {
            occurred_at: 1_767_225_600,          // 2026-01-01 00:00:00 UTC
            cost_usd: 1_234 * SCALE / 1_000_000, // 0.001234
            model: "gemini-live-2.5-flash".into(),
            tokens: 150,
        },
        UsageRow {
            occurred_at: 1_767_225_601,
            cost_usd: 123_456_789_012 * SCALE + 345_678_901_234, // 123456789012.345678901234
            model: "gemini-2.0-flash-live-001".into(),
            tokens: u64::MAX,
        },
    ]
}

async fn insert_rows(ch: &ClickHouseServer, db: &str) {
    let client = ch.client(db);
    let mut insert = client.insert::<UsageRow>("usage").await.unwrap();
    for row in rows() {
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();
}

async fn select_rows(ch: &ClickHouseServer, db: &str) -> Vec<UsageRow> {
    ch.client(db)
        .query("SELECT occurred_at, cost_usd, model, tokens FROM usage ORDER BY occurred_at")
        .fetch_all::<UsageRow>()
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_round_trip_through_the_shared_server() {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = ch.create_database("roundtrip").await.unwrap();
    assert!(db.starts_with("t_roundtrip_"), "{db}");
    ch.query(&CREATE.replace("{db}", &db)).await.unwrap();

    insert_rows(ch, &db).await;
    assert_eq!(select_rows(ch, &db).await, rows());

    // The same data seen as text, as an operator would.
    let text = ch
        .query(&format!(
            "SELECT occurred_at, cost_usd FROM {db}.usage ORDER BY occurred_at FORMAT TabSeparated"
        ))
        .await
        .unwrap();
    assert_eq!(
        text,
        "2026-01-01 00:00:00\t0.001234000000\n2026-01-01 00:00:01\t123456789012.345678901234\n"
    );
}

#[tokio::test]
async fn parallel_tests_share_one_server_and_isolate_by_database() {
    let ch = ClickHouseServer::shared().await.unwrap();
    let other = ClickHouseServer::shared().await.unwrap();
    assert!(std::ptr::eq(ch, other));
    let a = ch.create_database("iso").await.unwrap();
    let b = ch.create_database("iso").await.unwrap();
    assert_ne!(a, b);
    for db in [&a, &b] {
        ch.query(&CREATE.replace("{db}", db)).await.unwrap();
    }
    insert_rows(ch, &a).await;
    assert_eq!(select_rows(ch, &a).await.len(), 2);
    assert!(select_rows(ch, &b).await.is_empty());

    let err = ch.query("SELECT * FROM no_such_db.t").await.unwrap_err();
    assert!(err.to_string().contains("no_such_db"), "{err:#}");
}

#[tokio::test]
async fn private_server_restart_keeps_data_and_ports() {
    let mut ch = ClickHouseServer::start().await.unwrap();
    let (http, tcp) = (ch.http_port(), ch.tcp_port());
    assert_ne!(http, tcp);
    let db = ch.create_database("restart").await.unwrap();
    ch.query(&CREATE.replace("{db}", &db)).await.unwrap();
    insert_rows(&ch, &db).await;

    ch.stop().await.unwrap();
    assert!(!ch.is_running());
    assert!(ch.query("SELECT 1").await.is_err());
    ch.restart().await.unwrap();
    assert_eq!((ch.http_port(), ch.tcp_port()), (http, tcp));
    assert_eq!(select_rows(&ch, &db).await, rows());
}
