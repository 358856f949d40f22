//! `livegate doctor` (the binary, as an operator runs it) on a 3-node NATS cluster with R3
//! streams and buckets and a 2-replica ClickHouse cluster migrated in cluster mode: all replica
//! lines are ok while healthy; with one NATS node and one ClickHouse replica killed it names
//! the offline NATS replica of each R3 stream and says a ClickHouse replica is down; once both
//! are back it is ok again.

use livegate_common::stream::{StreamLayout, ensure_dead_letter_stream, ensure_usage_stream};
use livegate_common::subjects;
use livegate_test_support::{ClickHouseCluster, NatsCluster, names};
use secrecy::SecretString;
use std::time::Duration;

/// Every stream doctor reads the replica state of.
const STREAMS: [&str; 5] = [
    "LIVEGATE_USAGE",
    "LIVEGATE_DEADLETTER",
    "KV_livegate_keys",
    "KV_livegate_spend",
    "KV_livegate_leases",
];

/// Runs `livegate doctor` against `nats_url` and the ClickHouse at `ch_url`, as an operator
/// of the cluster would (`LIVEGATE_STREAM_REPLICAS=3`, `CLICKHOUSE_CLUSTER`), and returns its
/// stdout. No auth runs here, so the auth lines fail; this test reads the cluster lines.
async fn doctor(nats_url: &str, ch_url: &str, db: &str, cluster: &str) -> String {
    let bin = livegate_test_support::workspace::workspace_bin("livegate").unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .args(["--auth-url", "http://127.0.0.1:1", "doctor"])
            .env("NATS_URL", nats_url)
            .env("LIVEGATE_STREAM_REPLICAS", "3")
            .env("CLICKHOUSE_URL", ch_url)
            .env("CLICKHOUSE_DATABASE", db)
            .env("CLICKHOUSE_CLUSTER", cluster)
            .env("LIVEGATE_LOG", "error")
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .env_remove("NATS_CREDS")
            .env_remove("NATS_NKEY")
            .env_remove("NATS_TLS_CA")
            .env_remove("LIVEGATE_INTERNAL_TOKEN")
            .env_remove("LIVEGATE_MASTER_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("doctor finishes within 60 s")
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of check `name` (the first, if it has several).
fn line<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| {
        l.get(6..)
            .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
    })
}

/// Whether every cluster line is ok: each stream's replicas current, the ClickHouse cluster
/// defined with two replicas, and every replicated table fully active.
fn healthy(out: &str) -> bool {
    STREAMS.iter().all(|s| {
        line(out, &format!("replicas {s}"))
            .is_some_and(|l| l.starts_with("ok ") && l.contains("3/3 replicas current"))
    }) && line(out, "ClickHouse cluster")
        .is_some_and(|l| l.starts_with("ok ") && l.contains("1 shard(s), 2 replica(s)"))
        && line(out, "ClickHouse replicas")
            .is_some_and(|l| l.starts_with("ok ") && l.contains("2/2 replicas active"))
        && !out.lines().any(|l| {
            l.contains("replicas ") && !l.starts_with("ok ") && !l.contains("ClickHouse replicas")
        })
}

/// Whether doctor warns about node `node` being out of every R3 stream, and about a ClickHouse
/// replica being down.
fn degraded(out: &str, node: &str) -> bool {
    STREAMS.iter().all(|s| {
        line(out, &format!("replicas {s}")).is_some_and(|l| {
            l.starts_with("warn ") && l.contains("2/3 replicas current") && l.contains(node)
        })
    }) && line(out, "ClickHouse replicas").is_some_and(|l| {
        l.starts_with("warn ") && l.contains("a replica is down") && l.contains("1/2 active")
    })
}

/// Runs doctor until `done` holds for its output, for at most `limit`; the last output.
async fn doctor_until(
    limit: Duration,
    args: (&str, &str, &str, &str),
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let out = doctor(args.0, args.1, args.2, args.3).await;
        if done(&out) {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}; last output:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn doctor_names_the_offline_nats_node_and_the_clickhouse_replica_down_and_clears() {
    livegate_test_support::init_tracing();
    let (nats, ch) = tokio::join!(NatsCluster::start(3), ClickHouseCluster::start(2));
    let (mut nats, mut ch) = (nats.unwrap(), ch.unwrap());

    // The layout an R3 deployment's services create.
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let layout = StreamLayout::default().with_replicas(3);
    ensure_usage_stream(&js, subjects::STREAM, &layout)
        .await
        .unwrap();
    ensure_dead_letter_stream(&js, &layout).await.unwrap();
    for (bucket, history) in [
        (subjects::KEYS_BUCKET, subjects::KEYS_HISTORY),
        (subjects::SPEND_BUCKET, subjects::SPEND_HISTORY),
    ] {
        livegate_common::kv::open_bucket(&js, bucket, history, &layout)
            .await
            .unwrap();
    }
    livegate_common::leases::open_with(&js, &layout)
        .await
        .unwrap();
    drop(js);

    let db = names::unique("t_doctor");
    let store = livegate_metering::Store::new(&livegate_metering::config::ClickHouseConfig {
        url: ch.replicas()[0].http_url(),
        database: db.clone(),
        user: "default".into(),
        password: SecretString::from(String::new()),
        cluster: Some(ch.name().to_string()),
    });
    assert!(!store.migrate().await.unwrap().is_empty());

    // Doctor reads ClickHouse through replica 0, the one that stays up.
    let nats_url = nats.url();
    let ch_url = ch.replicas()[0].http_url();
    let args = (nats_url.as_str(), ch_url.as_str(), db.as_str(), ch.name());

    // Healthy (followers catch up within moments of creation).
    let out = doctor_until(Duration::from_secs(30), args, healthy).await;
    println!("healthy:\n{out}");

    // One NATS node and one ClickHouse replica die. The RAFT groups mark the node not current
    // within seconds; ZooKeeper drops the replica's session after its 10 s timeout.
    nats.node(2).stop().await.unwrap();
    ch.replica(1).stop().await.unwrap();
    let out = doctor_until(Duration::from_secs(90), args, |o| degraded(o, "n2")).await;
    println!("degraded:\n{out}");
    let usage = line(&out, "replicas LIVEGATE_USAGE").unwrap();
    assert!(usage.contains("— start the NATS server named"), "{usage}");

    // Both back: ok again.
    nats.node(2).restart().await.unwrap();
    ch.replica(1).restart().await.unwrap();
    let out = doctor_until(Duration::from_secs(90), args, healthy).await;
    println!("recovered:\n{out}");
}
