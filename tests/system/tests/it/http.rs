//! The gateway's HTTP side: health, readiness, metrics, browser tokens, subprotocol auth, TLS.

use futures_util::SinkExt;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let stack = Stack::start().await;
    let (status, _, body) = http(stack.gateway.addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let ready = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let (status, _, body) = http(stack.gateway.addr, "GET", "/readyz", &[], "").await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("gateway never became ready");
    assert!(ready.contains(r#""ready":true"#), "{ready}");
    assert!(ready.contains(r#""nats_publisher":true"#), "{ready}");
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("metrics")).await.unwrap();
    read_turn(&mut ws).await;
    ws.close(None).await.unwrap();
    let _ = stack
        .events_until(std::time::Duration::from_secs(10), |e| {
            !e.ended().is_empty()
        })
        .await;
    let (status, _, metrics) = http(stack.gateway.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    for needle in [
        "livegate_gateway_sessions_total{code=\"1005\"} 1",
        "livegate_gateway_frames_total{direction=\"upstream_to_client\"}",
        "livegate_gateway_bytes_total{direction=\"client_to_upstream\"}",
        "livegate_gateway_upstream_connect_seconds_count 1",
        "livegate_gateway_auth_cache_total{result=\"miss\"} 1",
        "livegate_gateway_bus_published_total",
        "livegate_gateway_bus_dropped_total 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (status, _, _) = http(stack.gateway.addr, "GET", "/v1/vertex-ai/live", &[], "").await;
    assert_eq!(
        status, 426,
        "a plain GET on a WebSocket path asks for an upgrade"
    );
    let (status, _, _) = http(stack.gateway.addr, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn browser_tokens_and_subprotocol_auth() {
    let stack = Stack::start().await;
    let (key, _) = stack
        .create_key(KeySettings {
            allowed_models: vec![MODEL.into(), "gemini-3.8-live".into()],
            ..KeySettings::default()
        })
        .await;
    let auth = format!("Bearer {key}");
    let (status, _, body) = http(
        stack.gateway.addr,
        "POST",
        "/v1/live/tokens",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &format!(r#"{{"ttl_seconds": 120, "model": "{MODEL}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(!token.contains(&key));
    // ?access_token= works for the bound model...
    let mut ws = stack
        .connect(&format!("/v1/vertex-ai/live?access_token={token}"), None)
        .await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    // ...and not for another one.
    let mut ws = stack
        .connect(&format!("/v1/vertex-ai/live?access_token={token}"), None)
        .await;
    ws.send(litellm_setup("gemini-3.8-live", "TEXT"))
        .await
        .unwrap();
    assert_eq!(close_of(&mut ws).await.0, 4403);
    // Bad requests get clear HTTP errors.
    let (status, _, _) = http(stack.gateway.addr, "POST", "/v1/live/tokens", &[], "").await;
    assert_eq!(status, 401);
    let (status, _, body) = http(
        stack.gateway.addr,
        "POST",
        "/v1/live/tokens",
        &[("authorization", &auth)],
        "{nope",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = http(
        stack.gateway.addr,
        "POST",
        "/v1/live/tokens",
        &[("authorization", &auth)],
        r#"{"ttl_seconds": 99999}"#,
    )
    .await;
    assert_eq!(status, 400);

    // Browsers put the key (or token) in a subprotocol; the gateway echoes it.
    let mut req = stack
        .url("/v1/vertex-ai/live")
        .into_client_request()
        .unwrap();
    let proto = format!("livegate-key.{token}");
    req.headers_mut()
        .insert("sec-websocket-protocol", proto.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        proto.as_str()
    );
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
}

#[tokio::test]
async fn tls_serves_wss() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed_tls(dir.path());
    let tls = Some((cert.cert_path, cert.key_path));
    let stack = Stack::start_with_gateway(move |g| g.tls = tls).await;
    let key = stack.key().await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut req = format!(
        "wss://localhost:{}/v1/vertex-ai/live",
        stack.gateway.addr.port()
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(stack.gateway.addr)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        req,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(client))),
    )
    .await
    .unwrap();
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("over TLS")).await.unwrap();
    assert_eq!(turn_text(&read_turn(&mut ws).await), "You said: over TLS");
}

#[tokio::test]
async fn a_full_gateway_refuses_upgrades_with_503() {
    let stack = Stack::start_with_gateway(|g| g.max_sessions = 1).await;
    let key = stack.key().await;
    let mut first = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut first, litellm_setup(MODEL, "TEXT")).await;
    let mut req = stack
        .url("/v1/vertex-ai/live")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
}
