//! A key record's change reaches the sessions already open on it: revoking a key (CLI or
//! gRPC) closes every live session of the key on every gateway replica with 4401 at once,
//! billed like any close; so does a browser token's session of that key, and a key whose
//! expiry passes mid-session. Lowering a key's or a team's budget applies to live sessions
//! from their next budget check.

use crate::budgets::{long_turn, one_turn_costs};
use crate::budgets_teams::cli;
use futures_util::SinkExt;
use livegate_proto::auth::{KeySettings, MintBrowserTokenRequest, RevokeKeyRequest};
use livegate_system_tests::*;
use rust_decimal::Decimal;
use std::time::{Duration, Instant};

/// How long a live session may take to close after its key's record changed: the KV watch
/// delivers within milliseconds (about 3 ms after a gRPC revoke, 8 ms after the CLI's, on a
/// dev machine); a second leaves room for a loaded CI machine.
const PROMPT: Duration = Duration::from_secs(1);

/// A session of `key` on the gateway at `addr` that has had one turn answered (so it has
/// usage to bill).
async fn session_with_a_turn(addr: std::net::SocketAddr, key: &str) -> Ws {
    let mut ws = connect_at(addr, "/v1/vertex-ai/live", Some(key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(text_turn("Hello")).await.unwrap();
    read_turn(&mut ws).await;
    ws
}

/// The close `ws` gets, and how long after `since` it came.
async fn closed_after(ws: &mut Ws, since: Instant) -> (u16, String, Duration) {
    let (code, reason) = close_of(ws).await;
    (code, reason, since.elapsed())
}

/// `name{labels} value` from the gateway at `addr`'s `/metrics`, if present.
async fn metric(addr: std::net::SocketAddr, sample: &str) -> bool {
    scrape(addr).await.lines().any(|l| l == sample)
}

#[tokio::test]
async fn revoking_a_key_closes_its_sessions_on_every_gateway_at_once_and_bills_them() {
    let stack = Stack::start_with(Options {
        metering: true,
        // A long key-check cache: only the KV watch can reach the live sessions in time.
        gateway: Box::new(|g| g.auth_cache_ttl = Duration::from_secs(120)),
        ..Options::default()
    })
    .await;
    let second = stack.another_gateway("gw-second").await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let other = stack.key().await;
    let mut a = session_with_a_turn(stack.gateway.addr, &key).await;
    let mut b = session_with_a_turn(second.addr, &key).await;
    let mut bystander = session_with_a_turn(stack.gateway.addr, &other).await;

    // Timed from the revoke call: auth writes the record, every gateway's watch sees it.
    let revoked_at = Instant::now();
    let out = cli(&stack, &["keys", "revoke", &key_id]).await;
    assert!(out.starts_with("revoked key_"), "{out}");
    for (ws, gateway) in [(&mut a, "first"), (&mut b, "second")] {
        let (code, reason, after) = closed_after(ws, revoked_at).await;
        assert_eq!(
            (code, reason.as_str()),
            (4401, "API key revoked"),
            "{gateway} gateway"
        );
        assert!(
            after < PROMPT,
            "the {gateway} gateway closed the session {after:?} after the revocation"
        );
    }
    // Another key's session goes on.
    bystander.send(text_turn("Still there?")).await.unwrap();
    read_turn(&mut bystander).await;
    let _ = bystander.close(None).await;

    // Both sessions are billed and recorded as closed by the gateway with 4401.
    let sessions = stack
        .sql_until(
            Duration::from_secs(30),
            &format!(
                "SELECT count() FROM {{db}}.sessions FINAL WHERE key_id = '{key_id}' \
                 AND close_code = 4401 AND closed_by = 'gateway' HAVING count() = 2"
            ),
        )
        .await;
    assert_eq!(
        sessions.trim(),
        "2",
        "both sessions' ends are in ClickHouse"
    );
    let billed = stack
        .sql_until(
            Duration::from_secs(30),
            &format!(
                "SELECT count() FROM {{db}}.usage_events FINAL WHERE key_id = '{key_id}' \
                 AND cost_usd > 0 HAVING count() >= 2"
            ),
        )
        .await;
    assert!(
        billed.trim().parse::<u64>().unwrap_or(0) >= 2,
        "each session's turn is billed: {billed:?}"
    );
    for addr in [stack.gateway.addr, second.addr] {
        assert!(
            metric(
                addr,
                "livegate_gateway_sessions_key_ended_total{reason=\"revoked\"} 1"
            )
            .await,
            "counted under its reason"
        );
        assert!(metric(addr, "livegate_gateway_sessions_total{code=\"4401\"} 1").await);
    }
}

#[tokio::test]
async fn a_browser_token_session_ends_when_its_key_is_revoked() {
    let stack = Stack::start_with_gateway(|g| g.auth_cache_ttl = Duration::from_secs(120)).await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let token = stack
        .auth_client()
        .await
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key,
            ttl_seconds: 600,
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut ws = session_with_a_turn(stack.gateway.addr, &token).await;

    let mut req = tonic::Request::new(RevokeKeyRequest { key: key_id });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    let revoked_at = Instant::now();
    stack.auth_client().await.revoke_key(req).await.unwrap();
    let (code, reason, after) = closed_after(&mut ws, revoked_at).await;
    assert_eq!((code, reason.as_str()), (4401, "API key revoked"));
    assert!(after < PROMPT, "closed {after:?} after the revocation");
}

#[tokio::test]
async fn a_key_that_expires_mid_session_ends_the_session_at_its_expiry() {
    let stack = Stack::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = i64::try_from(now).unwrap() + 3;
    let (key, _) = stack
        .create_key(KeySettings {
            expires_at: Some(livegate_proto::prost_types::Timestamp {
                seconds: expires_at,
                nanos: 0,
            }),
            ..KeySettings::default()
        })
        .await;
    let mut ws = session_with_a_turn(stack.gateway.addr, &key).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4401, "API key expired"));
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let expiry = Duration::from_secs(u64::try_from(expires_at).unwrap());
    assert!(ended >= expiry, "not before the expiry");
    assert!(
        ended < expiry + PROMPT,
        "{:?} after the expiry",
        ended - expiry
    );
}

/// Sends a long turn and expects it answered, then the session closed with 4402 after it.
async fn answered_then_closed_for_budget(ws: &mut Ws) -> String {
    ws.send(long_turn()).await.unwrap();
    let turn = read_turn(ws).await;
    assert!(
        json_of(turn.last().unwrap())["usageMetadata"].is_object(),
        "the turn within the new budget was answered: {turn:?}"
    );
    let (code, reason) = close_of(ws).await;
    assert_eq!(code, 4402, "{reason}");
    reason
}

#[tokio::test]
async fn a_key_budget_lowered_mid_session_closes_the_session_after_its_next_turn() {
    let stack = Stack::start().await;
    let (first, next) = one_turn_costs(&stack).await;
    let (key, key_id) = stack
        .create_key(KeySettings {
            max_budget_usd: "100".into(),
            ..KeySettings::default()
        })
        .await;
    let mut ws = connect_at(stack.gateway.addr, "/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;

    // Exactly enough for the next turn's floor: it is admitted, and its output spends the rest.
    let lowered = (first + next).normalize().to_string();
    cli(
        &stack,
        &["keys", "update", &key_id, "--max-budget", &lowered],
    )
    .await;
    // The KV watch delivers within milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = answered_then_closed_for_budget(&mut ws).await;
    assert!(reason.contains("budget spent"), "{reason}");
}

#[tokio::test]
async fn a_team_budget_lowered_mid_session_applies_to_the_next_turn_check() {
    let stack = Stack::start().await;
    let (first, next) = one_turn_costs(&stack).await;
    cli(
        &stack,
        &["teams", "set", "growth", "--max-budget-usd", "100"],
    )
    .await;
    let (key, _) = stack
        .create_key(KeySettings {
            team_id: "growth".into(),
            ..KeySettings::default()
        })
        .await;
    let mut ws = connect_at(stack.gateway.addr, "/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;

    // The next turn's floor no longer fits: refused before the upstream sees it, scope team.
    let lowered = (first + next - Decimal::new(1, 12)).normalize().to_string();
    cli(
        &stack,
        &["teams", "set", "growth", "--max-budget-usd", &lowered],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let upstream_frames = stack.emulator.stats().frames_in;
    ws.send(long_turn()).await.unwrap();
    let notice = json_of(&next_frame(&mut ws).await);
    assert_eq!(notice["error"]["budget"]["scope"], "team", "{notice}");
    assert_eq!(
        notice["error"]["budget"]["limitUsd"].as_str(),
        Some(lowered.as_str()),
        "{notice}"
    );
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 4402, "{reason}");
    assert_eq!(stack.emulator.stats().frames_in, upstream_frames);
}

/// Revokes `key_id` through auth's gRPC API (as the CLI does).
async fn revoke(stack: &Stack, key_id: &str) {
    let mut req = tonic::Request::new(RevokeKeyRequest {
        key: key_id.to_string(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    stack.auth_client().await.revoke_key(req).await.unwrap();
}

/// Upstream connections that end after `age` (`goAway` 300 ms before), so the gateway
/// resumes its sessions on new ones.
fn aging(age: Duration) -> livegate_emulator::Behaviour {
    livegate_emulator::Behaviour {
        connection_age: Some(livegate_emulator::ConnectionAge::new(
            age,
            Duration::from_millis(300),
        )),
        ..livegate_emulator::Behaviour::default()
    }
}

/// A stack whose upstream connections age out after 600 ms, and a session on a new key that
/// asks for resumption (so the gateway resumes it transparently): the stack, the key id, the
/// client socket.
async fn resumable_session() -> (Stack, String, Ws) {
    let stack = Stack::start().await;
    stack
        .emulator
        .set_behaviour(aging(Duration::from_millis(600)));
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let mut ws = connect_at(stack.gateway.addr, "/v1/vertex-ai/live", Some(&key)).await;
    let setup = serde_json::json!({"setup": {"model": MODEL, "sessionResumption": {}}});
    open_session(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text(setup.to_string()),
    )
    .await;
    (stack, key_id, ws)
}

#[tokio::test]
async fn a_key_revoked_while_the_gateway_resumes_its_session_closes_it_at_once() {
    let (stack, key_id, mut ws) = resumable_session().await;
    // The next upstream connection answers its setup late: the gateway waits in its resume,
    // where the relay (and its watch of the key) does not run.
    stack.emulator.set_behaviour(livegate_emulator::Behaviour {
        setup_delay: Duration::from_secs(5),
        ..aging(Duration::from_millis(600))
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while stack.emulator.stats().sessions < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gateway opens a second upstream connection to resume");

    let revoked_at = Instant::now();
    revoke(&stack, &key_id).await;
    let (code, reason, after) = closed_after(&mut ws, revoked_at).await;
    assert_eq!((code, reason.as_str()), (4401, "API key revoked"));
    assert!(
        after < PROMPT,
        "closed {after:?} after the revocation: the resume was waited for"
    );
    assert_eq!(
        stack.emulator.stats().sessions,
        2,
        "no further upstream connection for the revoked key"
    );
    // Recorded once, as the gateway's 4401, with the resume that did not complete.
    let events = stack
        .events_until(Duration::from_secs(10), |e| !e.ended().is_empty())
        .await;
    let ended = events.ended();
    assert_eq!((events.started().len(), ended.len()), (1, 1));
    assert_eq!(
        (ended[0].close_code, ended[0].closed_by()),
        (4401, livegate_proto::usage::ClosedBy::Gateway)
    );
    assert_eq!(
        (ended[0].upstream_connections, ended[0].resumptions),
        (2, 0)
    );
    assert!(
        metric(
            stack.gateway.addr,
            "livegate_gateway_sessions_key_ended_total{reason=\"revoked\"} 1"
        )
        .await
    );
    assert!(
        metric(
            stack.gateway.addr,
            "livegate_gateway_sessions_total{code=\"4401\"} 1"
        )
        .await
    );
}

#[tokio::test]
async fn a_cached_check_of_a_key_that_expired_since_opens_no_upstream_connection() {
    // A long key-check cache: the second session is let in by the cached answer.
    let stack = Stack::start_with_gateway(|g| g.auth_cache_ttl = Duration::from_secs(120)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (key, _) = stack
        .create_key(KeySettings {
            expires_at: Some(livegate_proto::prost_types::Timestamp {
                seconds: i64::try_from(now).unwrap() + 2,
                nanos: 0,
            }),
            ..KeySettings::default()
        })
        .await;
    // The key's creation reaches the gateway's KV watch within milliseconds and drops cached
    // checks of the key: let it arrive before the check that is to stay cached.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut first = connect_at(stack.gateway.addr, "/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut first, setup(MODEL)).await;
    assert_eq!(close_of(&mut first).await.1, "API key expired");
    let upstream = stack.emulator.stats().sessions;

    let mut late = connect_at(stack.gateway.addr, "/v1/vertex-ai/live", Some(&key)).await;
    late.send(setup(MODEL)).await.unwrap();
    let (code, reason) = close_of(&mut late).await;
    assert_eq!((code, reason.as_str()), (4401, "API key expired"));
    assert_eq!(
        stack.emulator.stats().sessions,
        upstream,
        "no upstream connection for an expired key"
    );
    assert!(
        metric(
            stack.gateway.addr,
            "livegate_gateway_auth_cache_total{result=\"hit\"} 1"
        )
        .await,
        "the second check was the cached one"
    );
}

#[tokio::test]
async fn an_expired_browser_token_starts_no_session_from_the_gateways_cache() {
    // A long key-check cache: without the token's own expiry it would serve the token's
    // answer for two minutes.
    let stack = Stack::start_with_gateway(|g| g.auth_cache_ttl = Duration::from_secs(120)).await;
    let (key, _) = stack.create_key(KeySettings::default()).await;
    let minted = stack
        .auth_client()
        .await
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key,
            ttl_seconds: 2,
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let expires_at = minted.expires_at.unwrap().seconds;
    // Let the key's creation reach the gateway's KV watch first (it drops cached checks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = connect_at(
        stack.gateway.addr,
        "/v1/vertex-ai/live",
        Some(&minted.token),
    )
    .await;
    open_session(&mut ws, setup(MODEL)).await;
    let _ = ws.close(None).await;

    // Past the token's expiry (whole seconds: one more to be sure).
    let expiry =
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_at).unwrap() + 1);
    if let Ok(wait) = expiry.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let upstream = stack.emulator.stats().sessions;
    let mut late = connect_at(
        stack.gateway.addr,
        "/v1/vertex-ai/live",
        Some(&minted.token),
    )
    .await;
    late.send(setup(MODEL)).await.unwrap();
    let (code, reason) = close_of(&mut late).await;
    assert_eq!(
        (code, reason.as_str()),
        (4401, "invalid, expired or revoked API key"),
        "auth was asked again"
    );
    assert_eq!(stack.emulator.stats().sessions, upstream);
}

#[tokio::test]
async fn a_key_revoked_after_its_session_resumed_still_closes_it_at_once() {
    let (stack, key_id, mut ws) = resumable_session().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while stack.emulator.stats().resumed_sessions < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gateway resumes the session twice");
    // Still the one session: a turn is answered on the resumed connection.
    ws.send(text_turn("Hello")).await.unwrap();
    read_turn(&mut ws).await;

    let revoked_at = Instant::now();
    revoke(&stack, &key_id).await;
    let (code, reason, after) = closed_after(&mut ws, revoked_at).await;
    assert_eq!((code, reason.as_str()), (4401, "API key revoked"));
    assert!(after < PROMPT, "closed {after:?} after the revocation");
}
