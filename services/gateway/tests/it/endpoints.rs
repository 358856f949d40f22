//! The gateway's plain HTTP endpoints and routing.

use crate::helpers::*;
use tonic_health::ServingStatus;

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let app = spawn_app().await;
    let (status, head, body) = app.http("GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "{head}");
    app.stop().await;
}

/// `/readyz` polled until it answers 200 (the NATS connections come up in the background).
async fn ready_body(app: &TestApp) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, _, body) = app.http("GET", "/readyz", &[], "").await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("gateway ready within the wait")
}

#[tokio::test]
async fn readyz_needs_nats_and_a_serving_auth() {
    let app = spawn_app().await;
    let body: serde_json::Value = serde_json::from_str(&ready_body(&app).await).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "nats": true, "nats_publisher": true, "auth": true, "draining": false})
    );

    app.auth.set_health(ServingStatus::NotServing).await;
    let (status, _, body) = app.http("GET", "/readyz", &[], "").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (body["ready"].clone(), body["auth"].clone()),
        (false.into(), false.into())
    );

    app.auth.set_health(ServingStatus::Serving).await;
    ready_body(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let app = spawn_app().await;
    let (status, head, body) = app.http("GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    for needle in [
        "livegate_gateway_sessions_active 0",
        "# TYPE livegate_gateway_bus_dropped counter",
        "# HELP livegate_gateway_bus_dropped Usage and session events lost",
        "livegate_gateway_bus_dropped_total 0",
        "livegate_gateway_bus_buffered_events 0",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
    app.stop().await;
}

/// `POST /v1/live/tokens` with `credential` as bearer; the status and the JSON answer.
async fn post_token(
    app: &TestApp,
    credential: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let header = credential.map(|c| format!("Bearer {c}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("authorization", h)])
        .unwrap_or_default();
    let (status, _, body) = app.http("POST", "/v1/live/tokens", &headers, body).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn token_endpoint_answers_with_auths_verdict() {
    let app = spawn_app().await;
    app.add_key("lg-good", key("key-tokens"));
    let (status, body) = post_token(&app, Some("lg-unknown"), "").await;
    assert_eq!((status, body["error"].as_str()), (401, Some(REJECTED)));
    let (status, body) = post_token(&app, None, "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing API key"))
    );
    let (status, _) = post_token(&app, Some("lg-good"), "{not json").await;
    assert_eq!(status, 400);
    let (status, body) = post_token(&app, Some("lg-good"), r#"{"ttl_seconds": 60}"#).await;
    assert_eq!(
        (status, body["token"].as_str()),
        (200, Some("lgb-it")),
        "{body}"
    );
    assert!(body["expires_at"].as_i64().is_some(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn websocket_paths_want_an_upgrade_and_others_are_not_found() {
    let app = spawn_app().await;
    let (status, head, _) = app.http("GET", "/v1/vertex-ai/live", &[], "").await;
    assert_eq!(status, 426, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    let (status, _, _) = app.http("GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
    app.stop().await;
}
