//! livegate on clustered engines, all on loopback: a 3-node NATS cluster (JetStream, R3
//! streams and buckets) and a 2-replica ClickHouse 18.16 cluster with ZooKeeper. The stream
//! layout is applied at creation and widened on start; the schema migrates in cluster mode
//! from both replicas at once; and under steady sessions one NATS node, then each ClickHouse
//! replica, is killed (SIGKILL) and brought back while every service keeps running: every
//! usage event the emulator emitted ends up in ClickHouse exactly once, on both replicas, and
//! the session limit and budgets still work.

use futures_util::SinkExt as _;
use livegate_common::nats::NatsOptions;
use livegate_common::stream::{
    DEFAULT_STREAM_MAX_BYTES, StreamLayout, ensure_dead_letter_stream, ensure_usage_stream,
};
use livegate_common::subjects;
use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_proto::auth::auth_client::AuthClient;
use livegate_proto::auth::{CreateKeyRequest, KeySettings};
use livegate_system_tests::{
    GatewayConfig, INTERNAL, MASTER, MODEL, PROJECT, Service, Ws, close_of, litellm_setup,
    litellm_text_turn, next_frame, open_session, read_turn,
};
use livegate_test_support::google::TestServiceAccount;
use livegate_test_support::{ClickHouseCluster, ClickHouseServer, NatsCluster, names};
use secrecy::SecretString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Replicas of every stream and bucket on the 3-node cluster.
const R3: StreamLayout = StreamLayout {
    replicas: 3,
    max_bytes: 64 << 20,
};

async fn replicas_of(js: &async_nats::jetstream::Context, stream: &str) -> (usize, i64) {
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap();
    (info.config.num_replicas, info.config.max_bytes)
}

#[tokio::test]
async fn streams_and_buckets_get_the_layouts_replicas_at_creation_and_on_start() {
    livegate_test_support::init_tracing();
    let nats = NatsCluster::start(3).await.unwrap();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());

    // What an older livegate left behind: one replica, no byte limit.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: subjects::STREAM.into(),
        subjects: vec![subjects::STREAM_SUBJECTS.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    livegate_common::kv::open_bucket(
        &js,
        subjects::KEYS_BUCKET,
        subjects::KEYS_HISTORY,
        &StreamLayout::default(),
    )
    .await
    .unwrap();
    assert_eq!(replicas_of(&js, subjects::STREAM).await, (1, -1));
    assert_eq!(replicas_of(&js, "KV_livegate_keys").await.0, 1);

    // A start with LIVEGATE_STREAM_REPLICAS=3 widens both, and creates what is missing at R3.
    let layout = StreamLayout::default().with_replicas(3);
    ensure_usage_stream(&js, subjects::STREAM, &layout)
        .await
        .unwrap();
    ensure_dead_letter_stream(&js, &layout).await.unwrap();
    livegate_common::kv::open_bucket(&js, subjects::KEYS_BUCKET, subjects::KEYS_HISTORY, &layout)
        .await
        .unwrap();
    livegate_common::leases::open_with(&js, &layout)
        .await
        .unwrap();
    assert_eq!(
        replicas_of(&js, subjects::STREAM).await,
        (3, DEFAULT_STREAM_MAX_BYTES)
    );
    assert_eq!(replicas_of(&js, subjects::DEAD_LETTER_STREAM).await.0, 3);
    assert_eq!(replicas_of(&js, "KV_livegate_keys").await.0, 3);
    assert_eq!(replicas_of(&js, "KV_livegate_leases").await.0, 3);

    // A later start with one replica configured narrows nothing.
    ensure_usage_stream(&js, subjects::STREAM, &StreamLayout::default())
        .await
        .unwrap();
    livegate_common::leases::open(&js).await.unwrap();
    assert_eq!(replicas_of(&js, subjects::STREAM).await.0, 3);
    assert_eq!(replicas_of(&js, "KV_livegate_leases").await.0, 3);
}

fn store(ch: &ClickHouseServer, db: &str, cluster: &str) -> livegate_metering::Store {
    livegate_metering::Store::new(&livegate_metering::config::ClickHouseConfig {
        url: ch.http_url(),
        database: db.to_string(),
        user: "default".into(),
        password: SecretString::from(String::new()),
        cluster: Some(cluster.to_string()),
    })
}

#[tokio::test]
async fn the_schema_migrates_on_a_clickhouse_cluster_twice_and_from_both_replicas() {
    livegate_test_support::init_tracing();
    let mut ch = ClickHouseCluster::start(2).await.unwrap();
    let db = names::unique("t_cluster");
    let (a, b) = (
        store(&ch.replicas()[0], &db, ch.name()),
        store(&ch.replicas()[1], &db, ch.name()),
    );
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(!ra.is_empty() || !rb.is_empty(), "nothing applied");
    assert_eq!(a.migrate().await.unwrap(), Vec::<u32>::new());
    assert_eq!(b.migrate().await.unwrap(), Vec::<u32>::new());
    for r in 0..2 {
        let engines = ch
            .replica(r)
            .query(&format!(
                "SELECT name, engine FROM system.tables WHERE database = '{db}' ORDER BY name"
            ))
            .await
            .unwrap();
        assert!(
            engines.contains("usage_events\tDistributed")
                && engines.contains("usage_events_local\tReplicatedReplacingMergeTree")
                && engines.contains("spend_daily_usage_mv\tMaterializedView"),
            "replica {r}:\n{engines}"
        );
    }
    // A row written twice through replica 0 (a redelivery), and a view's output, read exactly
    // through replica 1 with FINAL.
    let q = |sql: String| {
        let server = &ch.replicas()[0];
        let sql = sql.replace("{db}", &db);
        async move { server.query(&sql).await.unwrap() }
    };
    for _ in 0..2 {
        q("INSERT INTO {db}.usage_events (event_id, session_id, seq, ts, key_id, team_id, cost_usd) \
           VALUES ('e1', 's1', 1, now(), 'k1', 't1', toDecimal128('0.5', 12))"
            .into())
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = ch
            .replica(1)
            .query(&format!(
                "SELECT count(), toString(sum(cost_usd)) FROM {db}.usage_events_local FINAL"
            ))
            .await
            .unwrap();
        let spend = ch
            .replica(1)
            .query(&format!(
                "SELECT toString(sum(cost_usd)) FROM {db}.spend_daily FINAL WHERE key_id = 'k1'"
            ))
            .await
            .unwrap();
        if got.trim() == "1\t0.500000000000" && spend.trim() == "0.500000000000" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica 1 has {got:?} / spend {spend:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Auth, the gateway and metering, each in this process, on the clusters.
struct ClusterStack {
    nats: NatsCluster,
    ch: ClickHouseCluster,
    db: String,
    emulator: Emulator,
    auth: Service,
    gateway: Service,
    metering: Service,
    _account: TestServiceAccount,
    _dir: tempfile::TempDir,
}

impl ClusterStack {
    async fn start() -> Self {
        livegate_test_support::init_crypto();
        livegate_test_support::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (nats, ch) = tokio::join!(NatsCluster::start(3), ClickHouseCluster::start(2));
        let (nats, ch) = (nats.unwrap(), ch.unwrap());
        let options = || NatsOptions::from(nats.url()).with_layout(R3);
        let account = TestServiceAccount::generate(dir.path()).unwrap();
        let emulator = Emulator::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            EmulatorConfig {
                service_account_keys: vec![account.emulator_key()],
                ..EmulatorConfig::default()
            },
        )
        .await;

        let mut auth_cfg = livegate_auth::Config::for_nats(options());
        auth_cfg.master_key = Some(SecretString::from(MASTER));
        auth_cfg.internal_token = Some(SecretString::from(INTERNAL));
        auth_cfg.google.application_credentials = Some(account.path.to_string_lossy().into_owned());
        let auth = Service::spawn(|l, rx| {
            livegate_auth::run(auth_cfg, l, async {
                let _ = rx.await;
            })
        })
        .await;
        wait_for_auth(auth.addr).await;

        // Metering writes through replica 0, as through a load balancer's choice.
        let db = names::unique("t_cluster");
        let metering = spawn_metering(&nats, &ch, 0, &db).await;
        // Metering alone creates the leases bucket with the configured replicas (the gateway,
        // which would also create it, is not running yet), once it has migrated the schema.
        let js = async_nats::jetstream::new(nats.client().await.unwrap());
        let mut replicas = None;
        for _ in 0..600 {
            if let Ok(mut kv) = js.get_stream("KV_livegate_leases").await {
                replicas = Some(kv.info().await.unwrap().config.num_replicas);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(replicas, Some(3), "metering's leases bucket");

        let mut gw = GatewayConfig::defaults(options());
        gw.auth_url = format!("http://{}", auth.addr);
        gw.internal_token = Some(SecretString::from(INTERNAL));
        gw.vertex_live_url = Some(emulator.url());
        gw.default_project = Some(PROJECT.to_string());
        gw.drain_grace = Duration::from_secs(1);
        gw.gateway_id = "gw-cluster".into();
        let gateway = Service::spawn(|l, rx| {
            livegate_gateway::run(gw, l, async {
                let _ = rx.await;
            })
        })
        .await;

        Self {
            nats,
            ch,
            db,
            emulator,
            auth,
            gateway,
            metering,
            _account: account,
            _dir: dir,
        }
    }

    async fn create_key(&self, settings: KeySettings) -> (String, String) {
        let mut req = tonic::Request::new(CreateKeyRequest {
            settings: Some(settings),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
        let resp = AuthClient::connect(format!("http://{}", self.auth.addr))
            .await
            .unwrap()
            .create_key(req)
            .await
            .unwrap()
            .into_inner();
        (resp.key, resp.info.unwrap().key_id)
    }

    async fn connect(&self, key: &str) -> Ws {
        connect(self.gateway.addr, key).await
    }

    /// The first number of `sql` (`{db}` = the database) on replica `r`.
    async fn count(&mut self, r: usize, sql: &str) -> u64 {
        let sql = sql.replace("{db}", &self.db);
        let out = self.ch.replica(r).query(&sql).await.unwrap();
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: {out}"))
    }

    /// Waits (bounded) until metering is ready: schema migrated on the cluster, consuming.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _, body) =
                livegate_system_tests::http(self.metering.addr, "GET", "/readyz", &[], "").await;
            if status == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metering not ready within 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails the test when a service has ended (none may need a restart).
    async fn assert_running(&mut self) {
        for (name, s) in [
            ("auth", &mut self.auth),
            ("gateway", &mut self.gateway),
            ("metering", &mut self.metering),
        ] {
            if let Some(how) = s.ended().await {
                panic!("{name} ended: {how}");
            }
        }
    }
}

/// A metering on the clusters that enters ClickHouse through replica `r`.
async fn spawn_metering(nats: &NatsCluster, ch: &ClickHouseCluster, r: usize, db: &str) -> Service {
    let mut m = livegate_metering::Config::for_servers(
        NatsOptions::from(nats.url()).with_layout(R3),
        ch.replicas()[r].http_url(),
        db.to_string(),
    );
    m.clickhouse.cluster = Some(ch.name().to_string());
    m.flush_interval = Duration::from_millis(100);
    // Short enough that a batch lost with a killed server is redelivered within the test.
    m.ack_wait = Duration::from_secs(5);
    m.insert_retries = 2;
    Service::spawn(|l, rx| {
        livegate_metering::run(m, l, async {
            let _ = rx.await;
        })
    })
    .await
}

async fn connect(addr: std::net::SocketAddr, key: &str) -> Ws {
    livegate_system_tests::connect_at(addr, "/v1/vertex-ai/live", Some(key)).await
}

/// Waits until auth answers an admin call, at most 30 s.
async fn wait_for_auth(addr: std::net::SocketAddr) {
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(mut c) = AuthClient::connect(format!("http://{addr}")).await {
                let mut req = tonic::Request::new(livegate_proto::auth::ListKeysRequest::default());
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
                if c.list_keys(req).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "auth did not become ready within 30 s");
}

/// Steady load: `clients` loops, each opening a session, taking 4 text turns 50 ms apart and
/// closing, until `stop`; counts the turns completed. Any failure panics the loop's task.
fn steady_sessions(
    addr: std::net::SocketAddr,
    key: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    turns: Arc<AtomicU64>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (key, stop, turns) = (key.clone(), stop.clone(), turns.clone());
        set.spawn(async move {
            // Bounded: at most 10,000 sessions per client whatever happens.
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut ws = connect(addr, &key).await;
                open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
                for t in 0..4 {
                    ws.send(litellm_text_turn(&format!("client {c} turn {t}")))
                        .await
                        .unwrap();
                    let turn = read_turn(&mut ws).await;
                    assert!(!turn.is_empty());
                    turns.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ws.close(None).await.unwrap();
                let _ = close_of(&mut ws).await;
            }
        });
    }
    set
}

/// Lets the load run for `phase` and until it completed `at_least` more turns (bounded by
/// `limit`), so each phase of a fault sees traffic.
async fn under_load(turns: &AtomicU64, at_least: u64, limit: Duration) {
    let phase = Duration::from_secs(3);
    let start = turns.load(Ordering::Relaxed);
    let began = tokio::time::Instant::now();
    let deadline = began + limit;
    while turns.load(Ordering::Relaxed) < start + at_least || began.elapsed() < phase {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load completed only {} turns in {limit:?}",
            turns.load(Ordering::Relaxed) - start
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The close code a new session with `key` gets after its setup, or `None` if it opened.
async fn setup_outcome(addr: std::net::SocketAddr, key: &str) -> Option<u16> {
    let mut ws = connect(addr, key).await;
    ws.send(litellm_setup(MODEL, "TEXT")).await.unwrap();
    match next_frame(&mut ws).await {
        Message::Close(frame) => Some(frame.map_or(1005, |f| u16::from(f.code))),
        _ => {
            let _ = ws.close(None).await;
            None
        }
    }
}

#[tokio::test]
async fn killing_a_nats_node_and_clickhouse_replicas_loses_and_duplicates_no_usage() {
    let mut stack = ClusterStack::start().await;
    stack.wait_ready().await;
    let (key, _) = stack.create_key(KeySettings::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let mut load = steady_sessions(stack.gateway.addr, key, 4, stop.clone(), turns.clone());
    under_load(&turns, 20, Duration::from_secs(30)).await;

    // 1. A NATS node dies; JetStream (R3) keeps a quorum, clients move to the other nodes.
    stack.nats.node(0).stop().await.unwrap();
    under_load(&turns, 40, Duration::from_secs(60)).await;
    stack.nats.node(0).restart().await.unwrap();
    under_load(&turns, 20, Duration::from_secs(30)).await;

    // 2. The replica metering does not write through dies, then comes back and catches up.
    stack.ch.replica(1).stop().await.unwrap();
    under_load(&turns, 40, Duration::from_secs(60)).await;
    stack.ch.replica(1).restart().await.unwrap();
    under_load(&turns, 20, Duration::from_secs(30)).await;

    // 3. The replica metering writes through dies: its inserts fail and are retried.
    stack.ch.replica(0).stop().await.unwrap();
    under_load(&turns, 40, Duration::from_secs(60)).await;
    stack.ch.replica(0).restart().await.unwrap();
    under_load(&turns, 20, Duration::from_secs(30)).await;

    stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = load.join_next().await {
            r.expect("a session failed during the faults");
        }
    })
    .await;
    assert!(drained.is_ok(), "the load did not stop within 60 s");
    stack.assert_running().await;

    // Every usage report the emulator emitted is in ClickHouse exactly once, on each replica.
    let emitted = stack.emulator.recorded_usage().len() as u64;
    assert!(emitted >= 200, "only {emitted} usage reports emitted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (stored, on_r1) = loop {
        let stored = stack
            .count(
                0,
                "SELECT count() FROM {db}.usage_events FINAL WHERE seq > 0",
            )
            .await;
        let on_r1 = stack
            .count(
                1,
                "SELECT count() FROM {db}.usage_events_local FINAL WHERE seq > 0",
            )
            .await;
        if (stored >= emitted && on_r1 >= emitted) || tokio::time::Instant::now() >= deadline {
            break (stored, on_r1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let distinct = stack
        .count(
            0,
            "SELECT uniqExact(event_id) FROM {db}.usage_events FINAL WHERE seq > 0",
        )
        .await;
    let copies = stack
        .count(0, "SELECT count() FROM {db}.usage_events WHERE seq > 0")
        .await;
    let on_r0 = stack
        .count(
            0,
            "SELECT count() FROM {db}.usage_events_local FINAL WHERE seq > 0",
        )
        .await;
    println!(
        "cluster faults: turns {} | usage events emitted {emitted}, stored {stored} (replica 0: \
         {on_r0}, replica 1: {on_r1}), duplicates {} (copies on disk before merges: {})",
        turns.load(Ordering::Relaxed),
        stored - distinct,
        copies.saturating_sub(distinct),
    );
    // Disk per event, for the README's capacity figures (printed, not asserted).
    let js = async_nats::jetstream::new(stack.nats.client().await.unwrap());
    let usage = js
        .get_stream(subjects::STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone();
    let ch_bytes = stack
        .count(
            0,
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = '{db}'",
        )
        .await;
    println!(
        "cluster disk: usage stream {} bytes for {} messages ({} per message, per replica); \
         ClickHouse {} bytes for {} usage rows and their sessions, receipts, spend ({} per \
         usage row, per replica)",
        usage.bytes,
        usage.messages,
        usage.bytes / usage.messages.max(1),
        ch_bytes,
        stored,
        ch_bytes / stored.max(1)
    );
    assert_eq!(stored, emitted, "stored ≠ emitted");
    assert_eq!(distinct, stored, "duplicates after FINAL");
    assert_eq!((on_r0, on_r1), (emitted, emitted), "replicas differ");

    // The session limit still holds, and budgets still close sessions, with nothing restarted.
    let (limited, _) = stack
        .create_key(KeySettings {
            max_concurrent_sessions: 1,
            ..KeySettings::default()
        })
        .await;
    let mut first = stack.connect(&limited).await;
    open_session(&mut first, litellm_setup(MODEL, "TEXT")).await;
    assert_eq!(
        setup_outcome(stack.gateway.addr, &limited).await,
        Some(4429)
    );
    first.close(None).await.unwrap();
    let _ = close_of(&mut first).await;

    let (capped, capped_id) = stack
        .create_key(KeySettings {
            max_budget_usd: "0.000000001".into(),
            ..KeySettings::default()
        })
        .await;
    let mut spender = stack.connect(&capped).await;
    open_session(&mut spender, litellm_setup(MODEL, "TEXT")).await;
    spender.send(litellm_text_turn("spend it")).await.unwrap();
    let _ = read_turn(&mut spender).await;
    let _ = spender.close(None).await;
    // Metering prices the turn, writes the spend (R3 bucket), the gateway's mirror sees it.
    // Usually within a second; the bound is generous for a fully loaded CI machine (one run
    // in dozens once missed 30 s there; the failure message says where the spend stopped).
    let spent_at = std::time::Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if setup_outcome(stack.gateway.addr, &capped).await == Some(4402) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    println!(
        "cluster faults: a spent budget refused the next session {:?} after the turn",
        spent_at.elapsed()
    );
    if refused.is_err() {
        let js = async_nats::jetstream::new(stack.nats.client().await.unwrap());
        let kv = js.get_key_value(subjects::SPEND_BUCKET).await.unwrap();
        let spent = kv.get(subjects::spend_key_for_key(&capped_id)).await;
        // Where the spend stopped, replica by replica (for the failure message).
        let mut seen = Vec::new();
        for r in 0..2 {
            for table in [
                "usage_events_local",
                "spend_daily_local",
                "spend_totals_local",
            ] {
                let sql = format!(
                    "SELECT count() FROM {{db}}.{table} FINAL WHERE key_id = '{capped_id}'"
                );
                let sql = sql.replace("{db}", &stack.db);
                let out = stack.ch.replica(r).query(&sql).await;
                seen.push(format!("replica {r} {table}: {out:?}"));
            }
        }
        let (_, _, metrics) =
            livegate_system_tests::http(stack.metering.addr, "GET", "/metrics", &[], "").await;
        seen.extend(
            metrics
                .lines()
                .filter(|l| l.contains("spend") && !l.starts_with('#'))
                .map(str::to_string),
        );
        panic!(
            "the spent budget was never enforced; livegate_spend holds {spent:?}; {}",
            seen.join("; ")
        );
    }
    stack.assert_running().await;
}

/// One session with one text turn on `key`, closed.
async fn one_turn(stack: &ClusterStack, key: &str) {
    let mut ws = stack.connect(key).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("spend a little")).await.unwrap();
    let _ = read_turn(&mut ws).await;
    let _ = ws.close(None).await;
}

/// What `livegate_spend` holds for `key_id`, as a number (zero when absent).
async fn spend_in_kv(stack: &ClusterStack, key_id: &str) -> rust_decimal::Decimal {
    let js = async_nats::jetstream::new(stack.nats.client().await.unwrap());
    let kv = js.get_key_value(subjects::SPEND_BUCKET).await.unwrap();
    kv.get(subjects::spend_key_for_key(key_id))
        .await
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).parse().unwrap())
        .unwrap_or_default()
}

/// Two metering replicas enter ClickHouse through different replicas (as behind a load
/// balancer). The second refreshes a key's spend on a replica that has not fetched the
/// first's rows yet (its fetches stopped, as while it catches up after an outage): its total
/// is short, and with no further usage nothing would mark that key-day again. Settling
/// refreshes it once the replica has caught up, so the stored spend ends exact.
#[tokio::test]
async fn a_spend_read_short_on_a_lagging_replica_settles_without_new_usage() {
    let mut stack = ClusterStack::start().await;
    stack.wait_ready().await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let db = stack.db.clone();

    // Replica 1 stops fetching; turn 1 is metered through replica 0.
    stack
        .ch
        .replica(1)
        .query("SYSTEM STOP FETCHES")
        .await
        .unwrap();
    one_turn(&stack, &key).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        let spent = spend_in_kv(&stack, &key_id).await;
        if spent > rust_decimal::Decimal::ZERO {
            break spent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "turn 1 never reached livegate_spend"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stack.metering.stop().await;

    // A metering entering through replica 1 meters turn 2.
    stack.metering = spawn_metering(&stack.nats, &stack.ch, 1, &db).await;
    stack.wait_ready().await;
    one_turn(&stack, &key).await;
    let rows_of_key =
        format!("SELECT count() FROM {{db}}.usage_events_local FINAL WHERE key_id = '{key_id}'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stack.count(1, &rows_of_key).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "turn 2 never stored on replica 1"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its refresh (within a refresh gap) reads replica 1, which lacks turn 1.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let short = spend_in_kv(&stack, &key_id).await;

    // Replica 1 catches up; no more usage arrives.
    stack
        .ch
        .replica(1)
        .query("SYSTEM START FETCHES")
        .await
        .unwrap();
    let total_sql = format!(
        "SELECT toString(sum(cost_usd)) FROM {db}.usage_events_local FINAL WHERE key_id = '{key_id}'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let total: rust_decimal::Decimal = stack
            .ch
            .replica(0)
            .query(&total_sql)
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let spent = spend_in_kv(&stack, &key_id).await;
        if total > first && spent == total {
            println!("spend: turn 1 {first}, read short {short}, settled {spent}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "livegate_spend holds {spent} after turn 1 ({first}) and a short read ({short}); \
             ClickHouse holds {total}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stack.assert_running().await;
}
