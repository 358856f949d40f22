//! The Gemini Developer API upstream: with `GATEWAY_GEMINI_API_KEY` set, Developer-API-shaped
//! client paths reach the Developer API (here the emulator's `generativelanguage` paths, which
//! check the key as Google does) in the client's version, with the operator's key in
//! `x-goog-api-key` and no OAuth token or project; their usage is priced at the `gemini/…`
//! entries. Without the key the same request reaches Vertex as before, and Vertex-shaped
//! requests reach Vertex either way.

use futures_util::SinkExt;
use livegate_emulator::{Behaviour, ConnectionAge, Handshake, LIVE_PATHS, LiveApi};
use livegate_system_tests::*;
use livegate_test_support::live::closed;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::json;
use std::str::FromStr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The operator's Developer API key (the emulator accepts only this one).
const DEV_KEY: &str = "AIzaSy-devapi-test-0c4f";
const DEV_MODEL: &str = "gemini-3.8-live";

fn dev_path(version: &str, method: &str) -> String {
    format!("/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}")
}

/// Options for a stack whose gateway has the Developer API key `gateway_key` (pointed at the
/// emulator) and whose emulator accepts only [`DEV_KEY`] there.
fn with_developer_api(gateway_key: &'static str, metering: bool) -> Options {
    Options {
        metering,
        gateway: Box::new(move |g| {
            let vertex = g.vertex_live_url.clone().unwrap();
            let base = &vertex[..vertex.find("/ws/").unwrap()];
            g.gemini_api_url = Some(base.to_string());
            g.gemini_api_key = Some(SecretString::from(gateway_key));
        }),
        emulator: Box::new(|e| e.developer_api_keys = vec![DEV_KEY.to_string()]),
        ..Options::default()
    }
}

/// Connects as the Developer-API SDK does: the (livegate) key in `x-goog-api-key`.
async fn connect_with_api_key(stack: &Stack, path: &str, key: &str) -> Ws {
    let mut req = stack.url(path).into_client_request().unwrap();
    req.headers_mut()
        .insert("x-goog-api-key", key.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("gateway handshake")
        .0
}

/// One text turn in a session already open.
async fn text_round(ws: &mut Ws, words: &str) {
    ws.send(text_turn(words)).await.unwrap();
    assert_eq!(
        turn_text(&read_turn(ws).await),
        format!("You said: {words}")
    );
}

fn last_handshake(stack: &Stack) -> Handshake {
    stack
        .emulator
        .handshakes()
        .pop()
        .expect("the emulator saw a handshake")
}

fn assert_vertex(h: &Handshake, path: &str) {
    assert_eq!(h.api, LiveApi::Vertex, "{h:?}");
    assert_eq!(h.path, path);
    assert_eq!(h.authorization.as_deref(), Some("Bearer"), "an OAuth token");
    assert_eq!(h.user_project.as_deref(), Some(PROJECT));
    assert!(!h.api_key_header && !h.api_key_query, "{h:?}");
    assert!(h.accepted);
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// What the emulator's reports for `session` cost at Gemini 3.8 Live's Developer API prices
/// (0.75 / 3.00 / 1.00 / 1.00 in, 4.50 / 12.00 out per 1M tokens), from the Developer API's
/// own field names (`responseTokensDetails`).
fn expected_dev_cost(stack: &Stack, session: &str) -> Decimal {
    let input = |m: &str| match m {
        "AUDIO" => d("0.000003"),
        "IMAGE" | "VIDEO" => d("0.000001"),
        _ => d("0.00000075"),
    };
    let output = |m: &str| match m {
        "AUDIO" => d("0.000012"),
        _ => d("0.0000045"),
    };
    let mut total = Decimal::ZERO;
    for rec in stack
        .emulator
        .recorded_usage()
        .iter()
        .filter(|r| r.session_id == session)
    {
        let u = &rec.usage;
        assert!(
            u.get("candidatesTokenCount").is_none(),
            "the Developer API's names: {u}"
        );
        let mut detailed = 0;
        for item in u["promptTokensDetails"].as_array().into_iter().flatten() {
            let n = item["tokenCount"].as_u64().unwrap();
            detailed += n;
            total += Decimal::from(n) * input(item["modality"].as_str().unwrap());
        }
        let prompt = u["promptTokenCount"].as_u64().unwrap_or(0);
        total += Decimal::from(prompt - detailed) * input("TEXT");
        total += Decimal::from(u["thoughtsTokenCount"].as_u64().unwrap_or(0)) * output("TEXT");
        for item in u["responseTokensDetails"].as_array().into_iter().flatten() {
            let n = Decimal::from(item["tokenCount"].as_u64().unwrap());
            total += n * output(item["modality"].as_str().unwrap());
        }
    }
    total
}

#[tokio::test]
async fn with_the_key_a_developer_api_request_reaches_the_developer_api_and_is_priced() {
    let stack = Stack::start_with(with_developer_api(DEV_KEY, true)).await;
    // Connections end after a second: the session is resumed, on the same upstream.
    stack.emulator.set_behaviour(Behaviour {
        connection_age: Some(ConnectionAge::new(
            Duration::from_millis(1000),
            Duration::from_millis(300),
        )),
        ..Behaviour::default()
    });
    let key = stack.key().await;
    let path = dev_path("v1beta", "BidiGenerateContent");
    let mut ws = connect_with_api_key(&stack, &path, &key).await;
    let setup = json!({"setup": {"model": format!("models/{DEV_MODEL}"),
        "generationConfig": {"responseModalities": ["TEXT"]},
        "sessionResumption": {"transparent": true}}});
    open_session(&mut ws, Message::text(setup.to_string())).await;
    for i in 1..=6 {
        text_round(&mut ws, &format!("developer turn {i}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ws.close(None).await.unwrap();
    closed(&mut ws).await;

    let handshakes = stack.emulator.handshakes();
    assert!(
        handshakes.len() >= 2,
        "the session was resumed at least once: {handshakes:?}"
    );
    for h in &handshakes {
        assert_eq!(h.api, LiveApi::Developer, "{h:?}");
        assert_eq!(h.path, path, "the client's version, the plain method");
        assert!(h.api_key_header, "the operator's key in x-goog-api-key");
        assert!(!h.api_key_query, "never in the URL");
        assert_eq!(h.authorization, None, "no OAuth token");
        assert_eq!(h.user_project, None, "no project");
        assert!(h.accepted, "the emulator accepted the operator's key");
    }

    let events = stack
        .events_until(Duration::from_secs(10), |e| !e.ended().is_empty())
        .await;
    let started = events.started();
    assert_eq!(started.len(), 1);
    let ctx = started[0].context.clone().unwrap();
    assert_eq!(ctx.model, format!("gemini/{DEV_MODEL}"));
    assert_eq!((ctx.project.as_str(), ctx.location.as_str()), ("", ""));

    let ids = stack.emulator.session_ids();
    assert_eq!(ids.len(), 1, "one emulator session across the connections");
    let expected = expected_dev_cost(&stack, &ids[0]);
    assert!(expected > Decimal::ZERO);
    let sid = &ctx.session_id;
    let row = stack
        .sql_until(
            Duration::from_secs(20),
            &format!(
                "SELECT toString(cost_usd) FROM {{db}}.sessions FINAL WHERE session_id = '{sid}'"
            ),
        )
        .await;
    assert_eq!(d(row.trim()), expected, "the session is priced exactly");
    let entries = stack
        .sql(&format!(
            "SELECT groupUniqArray(pricing_entry), min(priced), any(model), any(project) \
             FROM {{db}}.usage_events FINAL WHERE session_id = '{sid}'"
        ))
        .await;
    assert_eq!(
        entries.trim_end_matches('\n'),
        format!("['gemini/{DEV_MODEL}']\t1\tgemini/{DEV_MODEL}\t"),
        "priced at the Developer API entry, no project"
    );
}

#[tokio::test]
async fn with_the_key_every_developer_version_and_the_constrained_method_reach_the_developer_api() {
    let stack = Stack::start_with(with_developer_api(DEV_KEY, false)).await;
    let key = stack.key().await;
    for (version, method) in [
        ("v1", "BidiGenerateContent"),
        ("v1alpha", "BidiGenerateContentConstrained"),
        // google-genai 3.6 with a base URL ending in `/`.
        ("v1beta", "BidiGenerateContent/"),
    ] {
        let path = format!("/{}", dev_path(version, method));
        let mut ws = stack.connect(&path, Some(&key)).await;
        // A bare id becomes `models/{id}` (the emulator refuses anything else there).
        open_session(&mut ws, setup(MODEL)).await;
        text_round(&mut ws, "hello").await;
        ws.close(None).await.unwrap();
        closed(&mut ws).await;
        let h = last_handshake(&stack);
        assert_eq!(h.api, LiveApi::Developer);
        assert_eq!(h.path, dev_path(version, "BidiGenerateContent"), "{path}");
        assert!(h.api_key_header && h.authorization.is_none(), "{h:?}");
    }
    // Vertex-shaped requests are unchanged with the key configured.
    for path in ["/v1/vertex-ai/live", LIVE_PATHS[1]] {
        let mut ws = stack.connect(path, Some(&key)).await;
        open_session(&mut ws, setup(MODEL)).await;
        text_round(&mut ws, "still Vertex").await;
        ws.close(None).await.unwrap();
        closed(&mut ws).await;
        // The stack's VERTEX_LIVE_URL (the emulator's v1 path) is used verbatim.
        assert_vertex(&last_handshake(&stack), LIVE_PATHS[0]);
    }
    let events = stack
        .events_until(Duration::from_secs(10), |e| e.started().len() == 5)
        .await;
    let models: Vec<(String, String)> = events
        .started()
        .into_iter()
        .map(|s| {
            let c = s.context.unwrap();
            (c.model, c.project)
        })
        .collect();
    let dev = (format!("gemini/{MODEL}"), String::new());
    let vertex = (MODEL.to_string(), PROJECT.to_string());
    assert_eq!(
        models,
        [dev.clone(), dev.clone(), dev, vertex.clone(), vertex]
    );
}

#[tokio::test]
async fn without_the_key_a_developer_api_request_is_served_by_vertex() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    let mut ws = connect_with_api_key(&stack, &dev_path("v1", "BidiGenerateContent"), &key).await;
    open_session(&mut ws, setup(&format!("models/{MODEL}"))).await;
    text_round(&mut ws, "to Vertex").await;
    ws.close(None).await.unwrap();
    closed(&mut ws).await;
    assert_vertex(&last_handshake(&stack), LIVE_PATHS[0]);
    let events = stack
        .events_until(Duration::from_secs(10), |e| !e.started().is_empty())
        .await;
    let ctx = events.started()[0].context.clone().unwrap();
    assert_eq!((ctx.model.as_str(), ctx.project.as_str()), (MODEL, PROJECT));
}

#[tokio::test]
async fn a_wrong_operator_key_is_refused_at_the_upstream_handshake() {
    let stack = Stack::start_with(with_developer_api("AIzaSy-not-the-right-key", false)).await;
    let key = stack.key().await;
    let mut ws = stack
        .connect(&dev_path("v1beta", "BidiGenerateContent"), Some(&key))
        .await;
    ws.send(setup(MODEL)).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("HTTP 400"), "{reason}");
    let h = last_handshake(&stack);
    assert_eq!(h.api, LiveApi::Developer);
    assert!(!h.accepted, "the emulator refused the key");
}
