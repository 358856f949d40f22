//! Issue 15, session leases: a gateway process that dies without ending its sessions (here
//! SIGKILL) leaves them to metering's lease reconciler, which writes each a `sessions` row with
//! the usage stored for it, `closed_by = 'lost'` and close code 1006, priced exactly like its
//! events; and a gateway that was only cut off (here SIGSTOP, long enough for its lease to run
//! out, then SIGCONT) ends its session for real afterwards, which replaces the lost row instead
//! of adding a second.
//!
//! The gateway runs as its own process (the binary `cargo build --workspace --bins` builds) so
//! it can be killed or frozen for real; auth, the emulator, NATS and ClickHouse as in every
//! system test, and metering in this process with a short `METERING_LEASE`.

use clap::Parser as _;
use futures_util::SinkExt;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::process::Binary;
use livegate_system_tests::*;
use livegate_test_support::clickhouse::ClickHouseServer;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Generous: the lease bound here is 2 s (metering's lease), plus a pass every 2/3 s.
const DEADLINE: Duration = Duration::from_secs(60);

/// The gateway binary with a 1 s lease on the stack's NATS, auth and emulator.
fn spawn_gateway(stack: &Stack, dir: &std::path::Path) -> Binary {
    let mut env = stack.gateway_env("gw-lease-test");
    env.push(("GATEWAY_LEASE", "1s".into()));
    Binary::spawn("livegate-gateway", dir, &[], &env)
}

/// Metering in this process on the stack's NATS and a fresh ClickHouse database, with a 2 s
/// lease (the reconciler looks every 2/3 s). Runs until the returned sender is dropped.
async fn metering(
    stack: &Stack,
    name: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    &'static ClickHouseServer,
    String,
    std::net::SocketAddr,
) {
    let ch = ClickHouseServer::shared().await.unwrap();
    let db = ch.create_database(name).await.unwrap();
    let mut cfg =
        livegate_metering::Config::for_servers(stack.nats.url(), ch.http_url(), db.clone());
    cfg.flush_interval = Duration::from_millis(100);
    cfg.lease = Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(livegate_metering::run(cfg, listener, async {
        let _ = rx.await;
    }));
    (tx, task, ch, db, addr)
}

async fn sql(ch: &ClickHouseServer, db: &str, q: &str) -> String {
    ch.query(&q.replace("{db}", db))
        .await
        .unwrap()
        .trim()
        .to_string()
}

/// Polls `q` until `done` holds for its answer (bounded by [`DEADLINE`]); returns the answer.
async fn sql_until(
    ch: &ClickHouseServer,
    db: &str,
    q: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let out = sql(ch, db, q).await;
        if done(&out) || tokio::time::Instant::now() >= deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens a session on the gateway at `addr` and runs `turns` text turns.
async fn session(addr: &str, key: &str, turns: usize) -> Ws {
    let mut req = format!("ws://{addr}/v1/vertex-ai/live")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    for i in 0..turns {
        ws.send(litellm_text_turn(&format!("turn {i}: name a river")))
            .await
            .unwrap();
        read_turn(&mut ws).await;
    }
    ws
}

#[tokio::test]
async fn a_killed_gateways_session_is_closed_as_lost_and_priced_like_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start().await;
    let (_stop, _metering, ch, db, metering_addr) = metering(&stack, "leases_killed").await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let mut gw = spawn_gateway(&stack, dir.path());
    let addr = gw.addr().await;

    let _ws = session(&addr, &key, 3).await;
    // The three reports are stored before the crash (what the issue saw survive).
    let events = sql_until(
        ch,
        &db,
        &format!("SELECT count() FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}'"),
        |o| o == "3",
    )
    .await;
    assert_eq!(events, "3", "usage events before the kill");

    gw.signal("-KILL").await;
    gw.wait().await;

    let row = sql_until(
        ch,
        &db,
        &format!(
            "SELECT closed_by, close_code, reports, events_counted, toString(cost_usd) \
             FROM {{db}}.sessions FINAL WHERE key_id = '{key_id}'"
        ),
        |o| !o.is_empty(),
    )
    .await;
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!(
        cols.get(..4),
        Some(&["lost", "1006", "3", "3"][..]),
        "the session row of a killed gateway: {row:?}\n{}",
        gw.output()
    );
    let events_cost = sql(
        ch,
        &db,
        &format!(
            "SELECT toString(sum(cost_usd)) FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}'"
        ),
    )
    .await;
    let session_cost: rust_decimal::Decimal = cols[4].parse().unwrap();
    let events_cost: rust_decimal::Decimal = events_cost.parse().unwrap();
    assert!(session_cost > rust_decimal::Decimal::ZERO, "{row}");
    assert!(
        (session_cost - events_cost).abs() <= rust_decimal::Decimal::new(1, 9),
        "session {session_cost} vs events {events_cost}"
    );

    // Counted in metering's metrics, and `livegate doctor` warns about it.
    let (_, _, metrics) = http(metering_addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("livegate_metering_sessions_lost_total 1"),
        "{metrics}"
    );
    let url = ch.http_url();
    let args = livegate::Args::try_parse_from([
        "livegate",
        "doctor",
        "--nats-url",
        &stack.nats.url(),
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        &db,
    ])
    .unwrap();
    let mut out = Vec::new();
    let _ = livegate::run(args, &mut out).await;
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("warn  sessions               0 open, 1 lost in the last 24 h"),
        "{out}"
    );

    // A report of the dead gateway that was still queued when the session was closed (metering
    // behind) is taken into the lost row when it lands.
    let session_id = sql(
        ch,
        &db,
        &format!("SELECT session_id FROM {{db}}.sessions FINAL WHERE key_id = '{key_id}'"),
    )
    .await;
    let late = livegate_proto::usage::UsageReport {
        event_id: format!("{session_id}:4"),
        context: Some(livegate_proto::usage::SessionContext {
            session_id: session_id.clone(),
            key_id: key_id.clone(),
            model: MODEL.into(),
            gateway_id: "gw-lease-test".into(),
            ..Default::default()
        }),
        seq: 4,
        occurred_at: Some(std::time::SystemTime::now().into()),
        tokens: Some(livegate_proto::usage::TokenUsage {
            prompt_tokens: 1000,
            response_tokens: 500,
            total_tokens: 1500,
            ..Default::default()
        }),
        media: None,
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", late.event_id.as_str());
    stack
        .jetstream()
        .await
        .publish_with_headers(
            livegate_common::subjects::USAGE_REPORT,
            headers,
            prost::Message::encode_to_vec(&late).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let refreshed = sql_until(
        ch,
        &db,
        &format!(
            "SELECT closed_by, events_counted, toString(cost_usd) FROM {{db}}.sessions FINAL \
             WHERE key_id = '{key_id}'"
        ),
        |o| o.split('\t').nth(1) == Some("4"),
    )
    .await;
    let cols: Vec<&str> = refreshed.split('\t').collect();
    assert_eq!(cols.get(..2), Some(&["lost", "4"][..]), "{refreshed}");
    let events_cost: rust_decimal::Decimal = sql(
        ch,
        &db,
        &format!(
            "SELECT toString(sum(cost_usd)) FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}'"
        ),
    )
    .await
    .parse()
    .unwrap();
    let session_cost: rust_decimal::Decimal = cols[2].parse().unwrap();
    assert!(session_cost > rust_decimal::Decimal::ZERO);
    assert!(
        (session_cost - events_cost).abs() <= rust_decimal::Decimal::new(1, 9),
        "refreshed session {session_cost} vs events {events_cost}"
    );
}

#[tokio::test]
async fn a_partitioned_gateways_late_end_replaces_the_lost_row() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start().await;
    let (_stop, _metering, ch, db, _) = metering(&stack, "leases_partitioned").await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let mut gw = spawn_gateway(&stack, dir.path());
    let addr = gw.addr().await;

    let mut ws = session(&addr, &key, 2).await;
    sql_until(
        ch,
        &db,
        &format!("SELECT count() FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}'"),
        |o| o == "2",
    )
    .await;

    // Frozen: no heartbeats, no events, until metering gives the session up as lost.
    gw.signal("-STOP").await;
    let q = format!("SELECT closed_by FROM {{db}}.sessions FINAL WHERE key_id = '{key_id}'");
    let lost = sql_until(ch, &db, &q, |o| !o.is_empty()).await;
    gw.signal("-CONT").await;
    assert_eq!(lost, "lost", "while the gateway was frozen");

    // Back: the client ends the session, and the gateway's own end arrives late.
    ws.close(None).await.unwrap();
    let _ = close_of(&mut ws).await;
    let real = sql_until(ch, &db, &q, |o| o == "client").await;
    assert_eq!(real, "client", "the late real end wins:\n{}", gw.output());

    // One row, not two, once ClickHouse has merged (and the real one).
    sql(ch, &db, "OPTIMIZE TABLE {db}.sessions FINAL").await;
    let rows = sql(
        ch,
        &db,
        &format!("SELECT closed_by, reports FROM {{db}}.sessions WHERE key_id = '{key_id}'"),
    )
    .await;
    assert_eq!(rows, "client\t2", "rows after the merge");
}

/// A client connected as `user` and the server errors it receives.
async fn connect_as(
    nats: &livegate_test_support::nats::NatsServer,
    user: &str,
    role: livegate_common::nats::Role,
) -> (
    async_nats::jetstream::Context,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let base = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        });
    let client = nats
        .options_for(user)
        .unwrap()
        .connect(base, role, "lease-test")
        .await
        .unwrap();
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    (js, rx)
}

#[tokio::test]
async fn the_deployed_permissions_let_gateways_write_leases_and_metering_read_and_purge_them() {
    use livegate_common::leases;
    use livegate_common::nats::Role;
    let nats = livegate_test_support::nats::NatsServer::start_secured()
        .await
        .unwrap();
    let instance = leases::new_instance_id();

    // The gateway creates the bucket and renews and deletes its lease…
    let (gw, mut gw_errors) = connect_as(&nats, "gateway", Role::Gateway).await;
    let bucket = leases::open(&gw)
        .await
        .expect("gateway opens the leases bucket");
    bucket
        .put(&instance, "{\"gateway_id\":\"g\",\"lease_ms\":3000}".into())
        .await
        .expect("gateway writes its lease");
    // …but cannot read anyone's lease, nor write a spend total through its KV rights.
    let _ = bucket.entry(&instance).await;
    let denied = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = gw_errors.recv().await {
            if e.to_lowercase().contains("permissions violation")
                && e.contains("KV_livegate_leases")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        denied,
        Ok(true),
        "a gateway reading a lease must be refused"
    );

    // Metering reads the lease and purges it.
    let (m, _m_errors) = connect_as(&nats, "metering", Role::Metering).await;
    let mb = leases::open(&m)
        .await
        .expect("metering opens the leases bucket");
    let entry = mb
        .entry(&instance)
        .await
        .unwrap()
        .expect("metering reads the lease");
    let lease: leases::Lease = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(lease.lease(), Duration::from_secs(3));
    mb.purge(&instance)
        .await
        .expect("metering purges an expired lease");
    let after = mb.entry(&instance).await.unwrap();
    assert!(
        after.is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put),
        "purged"
    );

    // The gateway may delete its own key at shutdown.
    bucket
        .put(&instance, "{\"gateway_id\":\"g\",\"lease_ms\":3000}".into())
        .await
        .unwrap();
    bucket
        .delete(&instance)
        .await
        .expect("gateway deletes its lease");
}

#[tokio::test]
async fn a_gateway_names_its_lease_in_session_started_and_deletes_it_on_a_clean_stop() {
    use livegate_common::leases;
    let mut stack = Stack::start_with_gateway(|c| c.lease = Duration::from_secs(3)).await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let events = stack
        .events_until(DEADLINE, |e| !e.started().is_empty())
        .await;
    let instance = events.started()[0].gateway_instance.clone();
    assert!(leases::is_instance_id(&instance), "{instance:?}");

    let bucket = leases::open(&stack.jetstream().await).await.unwrap();
    let entry = bucket
        .entry(&instance)
        .await
        .unwrap()
        .expect("the lease is held");
    let lease: leases::Lease = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(
        (lease.gateway_id.as_str(), lease.lease()),
        ("gw-test", Duration::from_secs(3))
    );
    // Renewed while the gateway runs (bounded wait: a beat every second).
    let mut renewed = false;
    for _ in 0..100 {
        let now = bucket.entry(&instance).await.unwrap().unwrap();
        if now.revision > entry.revision {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the lease is renewed");

    ws.close(None).await.unwrap();
    let _ = close_of(&mut ws).await;
    stack.gateway.stop().await;
    let after = bucket.entry(&instance).await.unwrap();
    assert!(
        after.is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put),
        "a cleanly stopped gateway leaves no lease behind"
    );
}
