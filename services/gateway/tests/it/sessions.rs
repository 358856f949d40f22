//! WebSocket sessions: refusals before the relay, a relayed session and the events it
//! publishes, and the drain.

use crate::helpers::*;
use futures_util::{SinkExt, StreamExt};
use livegate_proto::auth::KeyInfo;
use livegate_proto::usage::{ClosedBy, session_event};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn a_missing_or_rejected_credential_is_closed_with_4401() {
    let app = spawn_app().await;
    let mut ws = app.connect(None).await;
    assert_eq!(
        close_of(&mut ws).await,
        (4401, "missing API key".to_string())
    );
    let mut ws = app.connect(Some("lg-unknown")).await;
    assert_eq!(close_of(&mut ws).await, (4401, REJECTED.to_string()));
    let metrics = app.metrics().await;
    for needle in [
        "# HELP livegate_gateway_sessions WebSocket sessions ended (refused before relaying included)",
        "livegate_gateway_sessions_total{code=\"4401\"} 2",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert_eq!(app.emulator.stats().sessions, 0, "upstream never contacted");
    app.stop().await;
}

#[tokio::test]
async fn auth_out_of_reach_closes_with_1011() {
    let app = spawn_app_with(|c| c.auth_url = "http://127.0.0.1:1".to_string()).await;
    let mut ws = app.connect(Some("lg-any")).await;
    assert_eq!(
        close_of(&mut ws).await,
        (1011, "auth service unavailable".to_string())
    );
    app.stop().await;
}

/// Connects with `credential`, sends setup for `model` if given, and returns the close
/// (code, reason). Refusals that come before setup get no setup: the gateway closes at once,
/// and a frame it never reads could turn its close into a reset.
async fn refusal(app: &TestApp, credential: &str, setup_model: Option<&str>) -> (u16, String) {
    let mut ws = app.connect(Some(credential)).await;
    if let Some(model) = setup_model {
        ws.send(setup(model)).await.unwrap();
    }
    close_of(&mut ws).await
}

#[tokio::test]
async fn the_keys_limits_are_enforced_before_relaying() {
    let app = spawn_app().await;
    app.add_key(
        "lg-models",
        KeyInfo {
            allowed_models: vec!["gemini-other".into()],
            ..key("key-models")
        },
    );
    app.add_key(
        "lg-projects",
        KeyInfo {
            allowed_projects: vec!["elsewhere".into()],
            ..key("key-projects")
        },
    );
    app.add_key(
        "lg-spent",
        KeyInfo {
            max_budget_usd: "1.50".into(),
            spend_usd: "1.5".into(),
            ..key("key-spent")
        },
    );
    app.add_key(
        "lg-single",
        KeyInfo {
            max_concurrent_sessions: 1,
            ..key("key-single")
        },
    );
    assert_eq!(
        refusal(&app, "lg-models", Some(MODEL)).await,
        (
            4403,
            format!("model {MODEL} is not allowed for this API key")
        )
    );
    assert_eq!(
        refusal(&app, "lg-projects", Some(MODEL)).await,
        (
            4403,
            format!("project {PROJECT} is not allowed for this API key")
        )
    );
    assert_eq!(
        refusal(&app, "lg-spent", None).await,
        (4402, "budget spent for this API key".to_string())
    );
    assert_eq!(app.emulator.stats().sessions, 0, "upstream never contacted");

    let mut first = app.connect(Some("lg-single")).await;
    open_session(&mut first, setup(MODEL)).await;
    assert_eq!(
        refusal(&app, "lg-single", None).await,
        (
            4429,
            "concurrent session limit (1) reached for this API key".to_string()
        )
    );
    first.close(None).await.unwrap();
    closed(&mut first).await;
    // The slot is released as the first session's task ends, a moment after its close.
    let mut again = tokio::time::timeout(WAIT, async {
        loop {
            let mut ws = app.connect(Some("lg-single")).await;
            let _ = ws.send(setup(MODEL)).await;
            if let Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) = ws.next().await {
                assert!(json_of(&m).get("setupComplete").is_some(), "{m:?}");
                return ws;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slot freed within the wait");
    again.close(None).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_relayed_session_publishes_started_usage_and_ended() {
    let app = spawn_app().await;
    app.add_key("lg-good", key("key-relay"));
    let mut tap = app.events().await;

    let mut ws = app.connect(Some("lg-good")).await;
    open_session(&mut ws, setup(MODEL)).await;
    let text = "hello through the gateway";
    ws.send(text_turn(text)).await.unwrap();
    let turn = read_turn(&mut ws).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    closed(&mut ws).await;

    let events = tap.until_ended().await;
    let Some(Event::Session(start_id, started)) = events.first() else {
        panic!("first event is not a session event: {events:?}");
    };
    let Some(session_event::Event::Started(started)) = &started.event else {
        panic!("first event is not SessionStarted: {events:?}");
    };
    let context = started.context.clone().unwrap();
    let sid = context.session_id.clone();
    assert_eq!(start_id, &format!("{sid}:start"));
    assert_eq!(
        (
            context.key_id.as_str(),
            context.team_id.as_str(),
            context.user_id.as_str(),
            context.model.as_str(),
            context.project.as_str(),
            context.location.as_str(),
            context.gateway_id.as_str(),
        ),
        (
            "key-relay",
            "team-it",
            "user-it",
            MODEL,
            PROJECT,
            "us-central1",
            "gw-it"
        )
    );

    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Report(id, r) => Some((id.clone(), r.clone())),
            Event::Session(..) => None,
        })
        .collect();
    let recorded = app.emulator.recorded_usage();
    assert_eq!(
        reports.len(),
        recorded.len(),
        "one report per usageMetadata"
    );
    let (id, first) = reports.first().expect("at least one usage report");
    assert_eq!((id.as_str(), first.seq), (format!("{sid}:1").as_str(), 1));
    let tokens = first.tokens.clone().unwrap();
    assert_eq!(
        serde_json::json!(tokens.prompt_tokens),
        recorded[0].usage["promptTokenCount"],
        "Google's counts passed on"
    );
    assert!(tokens.total_tokens > 0, "{tokens:?}");
    let media = first.media.unwrap();
    assert_eq!(media.input_characters, text.chars().count() as u64);
    assert!(media.output_characters > 0, "{media:?}");

    let Some(Event::Session(end_id, ended)) = events.last() else {
        panic!("no SessionEnded: {events:?}");
    };
    let Some(session_event::Event::Ended(ended)) = &ended.event else {
        panic!("last event is not SessionEnded: {events:?}");
    };
    assert_eq!(end_id, &format!("{sid}:end"));
    assert_eq!(
        (
            ended.close_code,
            ended.close_reason.as_str(),
            ended.closed_by
        ),
        (1000, "bye", ClosedBy::Client as i32)
    );
    let upstream = app.emulator.stats();
    assert_eq!(
        (ended.frames_in, ended.frames_out),
        (upstream.frames_in, upstream.frames_out),
        "frames counted as upstream counted them"
    );
    assert_eq!(ended.frames_in, 2, "setup and the turn");
    assert!(
        ended.frames_out > turn.len() as u64,
        "setupComplete and the turn"
    );
    assert_eq!(ended.reports, reports.len() as u64);
    assert_eq!(
        ended.context.as_ref().map(|c| c.session_id.as_str()),
        Some(sid.as_str())
    );

    let published = events.len() as u64;
    assert_eq!(
        stream_holds(&app.nats, published).await,
        published,
        "JetStream stored every event once"
    );
    assert_eq!(
        *app.auth.state.access_token_calls.lock().unwrap(),
        vec![Some(INTERNAL_TOKEN.to_string())],
        "one Google token, asked for with the internal token"
    );
    let metrics = app.metrics().await;
    for needle in [
        "livegate_gateway_sessions_total{code=\"1000\"} 1",
        "livegate_gateway_sessions_active 0",
        "livegate_gateway_upstream_connect_seconds_count 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_sends_go_away_then_closes_with_1012() {
    let app = spawn_app().await;
    app.add_key("lg-good", key("key-drain"));
    let addr = app.addr;
    let mut ws = app.connect(Some("lg-good")).await;
    open_session(&mut ws, setup(MODEL)).await;

    let stopping = tokio::spawn(app.stop());
    let go_away = next_frame(&mut ws).await;
    assert!(json_of(&go_away).get("goAway").is_some(), "{go_away:?}");
    assert_eq!(
        close_of(&mut ws).await,
        (1012, "gateway restarting; reconnect".to_string())
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("run returned within the wait")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed once run has returned"
    );
}
