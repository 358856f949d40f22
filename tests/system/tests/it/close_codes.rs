//! Every close code in DESIGN.md's table, provoked.

use futures_util::SinkExt;
use livegate_emulator::Behaviour;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn refused(
    stack: &Stack,
    path: &str,
    key: Option<&str>,
    first: Option<Message>,
) -> (u16, String) {
    let mut ws = stack.connect(path, key).await;
    if let Some(m) = first {
        let _ = ws.send(m).await;
    }
    close_of(&mut ws).await
}

#[tokio::test]
async fn bad_keys_get_4401() {
    let stack = Stack::start().await;
    let (code, reason) = refused(&stack, "/v1/vertex-ai/live", None, None).await;
    assert_eq!((code, reason.as_str()), (4401, "missing API key"));
    let (code, _) = refused(
        &stack,
        "/v1/vertex-ai/live",
        Some("lg-wrong"),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(code, 4401);
}

#[tokio::test]
async fn setup_errors_get_1007_1008_and_1009() {
    let stack = Stack::start_with_gateway(|g| {
        g.setup_timeout = Duration::from_millis(300);
        g.max_frame_bytes = 64 * 1024;
    })
    .await;
    let key = stack.key().await;
    let p = "/v1/vertex-ai/live";
    assert_eq!(
        refused(&stack, p, Some(&key), Some(Message::text("not json")))
            .await
            .0,
        1007
    );
    let (code, reason) = refused(&stack, p, Some(&key), Some(litellm_text_turn("hi"))).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "first message must be setup")
    );
    let (code, reason) = refused(&stack, p, Some(&key), None).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "setup not received in time")
    );
    // Oversized frame mid-session.
    let mut ws = stack.connect(p, Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(Message::binary(vec![b' '; 64 * 1024 + 1]))
        .await
        .unwrap();
    assert_eq!(close_of(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn forbidden_models_and_projects_get_4403() {
    let stack = Stack::start().await;
    let (key, _) = stack
        .create_key(KeySettings {
            allowed_models: vec![MODEL.into()],
            allowed_projects: vec!["test-project".into()],
            ..KeySettings::default()
        })
        .await;
    let p = "/v1/vertex-ai/live";
    let (code, reason) = refused(
        &stack,
        p,
        Some(&key),
        Some(litellm_setup("gemini-3.8-live", "TEXT")),
    )
    .await;
    assert_eq!(code, 4403, "{reason}");
    let (code, reason) = refused(
        &stack,
        "/v1/vertex-ai/live?project_id=other",
        Some(&key),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(code, 4403, "{reason}");
    // The same key within its grant works.
    let mut ws = stack.connect(p, Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
}

#[tokio::test]
async fn no_project_gets_4002_and_no_credentials_4001() {
    let stack = Stack::start_with(Options {
        gateway: Box::new(|g| g.default_project = None),
        no_google_credentials: true,
        ..Options::default()
    })
    .await;
    let key = stack.key().await;
    let (code, reason) = refused(
        &stack,
        "/v1/vertex-ai/live",
        Some(&key),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(code, 4002, "{reason}");
    let (code, reason) = refused(
        &stack,
        "/v1/vertex-ai/live?project_id=p",
        Some(&key),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "Vertex AI credentials not configured")
    );
}

#[tokio::test]
async fn session_limit_gets_4429() {
    let stack = Stack::start().await;
    let (key, _) = stack
        .create_key(KeySettings {
            max_concurrent_sessions: 1,
            ..KeySettings::default()
        })
        .await;
    let mut first = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut first, litellm_setup(MODEL, "TEXT")).await;
    let (code, _) = refused(
        &stack,
        "/v1/vertex-ai/live",
        Some(&key),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(code, 4429);
    first.close(None).await.unwrap();
    let _ = close_of(&mut first).await;
    // The slot is released when the session ends.
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
            ws.send(litellm_setup(MODEL, "TEXT")).await.unwrap();
            if let Message::Binary(_) | Message::Text(_) = next_frame(&mut ws).await {
                return;
            }
        }
    })
    .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn spent_budget_gets_4402_at_start_and_after_the_turn() {
    let stack = Stack::start().await;
    let (key, key_id) = stack
        .create_key(KeySettings {
            max_budget_usd: "1".into(),
            ..KeySettings::default()
        })
        .await;
    let mut running = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut running, litellm_setup(MODEL, "TEXT")).await;
    // Metering reports the budget spent.
    let spend = stack.spend_bucket().await;
    spend
        .put(
            livegate_common::subjects::spend_key_for_key(&key_id),
            "1.5".into(),
        )
        .await
        .unwrap();
    // The running session is closed with 4402: after its turn when the gateway learns of the
    // spend while the turn runs, or, once it knows, before the next turn reaches the upstream
    // (a notice frame, then the close; issue 16's per-turn budget).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        running.send(litellm_text_turn("one more")).await.unwrap();
        let first = next_frame(&mut running).await;
        if json_of(&first)["error"]["status"] == "BUDGET_EXCEEDED" {
            break close_of(&mut running).await.0;
        }
        if json_of(&first)["serverContent"]["turnComplete"] != true {
            let turn = read_turn(&mut running).await;
            assert!(!turn.is_empty());
        }
        let next = tokio::time::timeout(Duration::from_millis(500), close_of(&mut running)).await;
        if let Ok((code, _)) = next {
            break code;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never closed for budget"
        );
    };
    assert_eq!(code, 4402);
    // New sessions are refused once the gateway's spend view has caught up (and auth's cache).
    let refused_ok = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (code, _) = refused(
                &stack,
                "/v1/vertex-ai/live",
                Some(&key),
                Some(litellm_setup(MODEL, "TEXT")),
            )
            .await;
            if code == 4402 {
                return;
            }
        }
    })
    .await;
    assert!(refused_ok.is_ok());
}

#[tokio::test]
async fn upstream_refusal_gets_1013_with_the_status() {
    let stack = Stack::start_with_gateway(|g| {
        // An upstream that answers every handshake with 404.
        g.vertex_live_url = g.vertex_live_url.as_ref().map(|u| format!("{u}/nope"));
    })
    .await;
    let key = stack.key().await;
    let (code, reason) = refused(
        &stack,
        "/v1/vertex-ai/live",
        Some(&key),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!(code, 1013);
    assert!(reason.contains("HTTP 404"), "{reason}");
}

#[tokio::test]
async fn upstream_closes_are_relayed_with_code_and_reason() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    stack.emulator.set_behaviour(Behaviour {
        close_after: Some((Duration::from_millis(200), 4000, "quota exceeded".into())),
        ..Behaviour::default()
    });
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    assert_eq!(
        close_of(&mut ws).await,
        (4000, "quota exceeded".to_string())
    );
    stack.emulator.set_behaviour(Behaviour {
        close_after: Some((Duration::from_millis(200), 1000, "done".into())),
        ..Behaviour::default()
    });
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    assert_eq!(close_of(&mut ws).await, (1000, "done".to_string()));
}

#[tokio::test]
async fn auth_outage_gets_1011() {
    let mut stack = Stack::start().await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    // Auth down: a new session cannot be checked (fresh key, so no cache) → 1011.
    let key2 = stack.key().await;
    stack.auth.stop().await;
    let (code, reason) = refused(
        &stack,
        "/v1/vertex-ai/live",
        Some(&key2),
        Some(litellm_setup(MODEL, "TEXT")),
    )
    .await;
    assert_eq!((code, reason.as_str()), (1011, "auth service unavailable"));
}

#[tokio::test]
async fn drain_sends_go_away_then_1012() {
    drain_sends_go_away_then_1012_with(Stack::start().await).await;
}

/// The same drain with sessions on relay threads: they are stopped only after their sessions
/// ended and were published.
#[tokio::test]
async fn drain_on_relay_threads_sends_go_away_then_1012() {
    let stack = Stack::start_with_gateway(|gw| gw.relay_threads = 2).await;
    drain_sends_go_away_then_1012_with(stack).await;
}

async fn drain_sends_go_away_then_1012_with(mut stack: Stack) {
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let stop = async { stack.gateway.stop().await };
    let client = async {
        let go_away = next_frame(&mut ws).await;
        assert_eq!(json_of(&go_away)["goAway"]["timeLeft"], "1s");
        close_of(&mut ws).await
    };
    let ((), (code, _)) = tokio::join!(stop, client);
    assert_eq!(code, 1012);
    // The session's end was published before the gateway returned.
    let events = stack
        .events_until(Duration::from_secs(1), |e| !e.ended().is_empty())
        .await;
    let ended = events.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].close_code, 1012);
}
