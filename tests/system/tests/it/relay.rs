//! The relay itself: the LiteLLM client flow on every path, byte-for-byte frames, big streams.

use base64::Engine;
use futures_util::SinkExt;
use livegate_system_tests::*;
use tokio_tungstenite::tungstenite::Message;

const FULL_MODEL: &str = "projects/test-project/locations/us-central1/publishers/google/models/gemini-2.0-flash-live-preview-04-09";

#[tokio::test]
async fn litellm_client_flow_works_on_every_path() {
    litellm_client_flow(Stack::start().await).await;
}

/// With `GATEWAY_RELAY_THREADS` connections run on relay threads instead of the main runtime;
/// with more threads than cores several sessions still each get theirs.
#[tokio::test]
async fn litellm_client_flow_works_on_relay_threads() {
    let stack = Stack::start_with_gateway(|gw| gw.relay_threads = 3).await;
    litellm_client_flow(stack).await;
}

/// The LiteLLM seed client's flow on every path, the sessions open side by side so they land
/// on different relay threads.
async fn litellm_client_flow(stack: Stack) {
    let key = stack.key().await;
    let mut open = Vec::new();
    for path in [
        "/v1/vertex-ai/live?project_id=test-project",
        "/vertex-ai/live",
        "/vertex_ai/live?vertex_project=test-project&vertex_location=us-central1",
        "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
        "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
    ] {
        let mut ws = stack.connect(path, Some(&key)).await;
        open_session(&mut ws, litellm_setup(FULL_MODEL, "TEXT")).await;
        ws.send(litellm_text_turn("Hello!")).await.unwrap();
        let turn = read_turn(&mut ws).await;
        assert!(
            turn.len() >= 3,
            "{path}: chunks then turnComplete, got {}",
            turn.len()
        );
        assert_eq!(turn_text(&turn), "You said: Hello!", "{path}");
        open.push(ws);
    }
    for mut ws in open {
        ws.send(litellm_text_turn("Still there?")).await.unwrap();
        assert_eq!(
            turn_text(&read_turn(&mut ws).await),
            "You said: Still there?"
        );
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn frames_relay_byte_for_byte_and_stay_binary() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    // The same conversation straight to the emulator and through the gateway.
    let direct_url = stack.emulator.url();
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(direct_url)
            .unwrap();
    let jwt =
        livegate_test_support::google::bearer_token(&stack.service_account.credentials().unwrap())
            .await
            .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    let (mut direct, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut via = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    for ws in [&mut direct, &mut via] {
        open_session(ws, litellm_setup(FULL_MODEL, "TEXT")).await;
        ws.send(litellm_text_turn("byte for byte, ünïcödé"))
            .await
            .unwrap();
    }
    let a = read_turn(&mut direct).await;
    let b = read_turn(&mut via).await;
    assert!(
        b.iter().all(|m| matches!(m, Message::Binary(_))),
        "Google's binary frames stay binary"
    );
    assert_eq!(a, b, "the gateway changes nothing after setup");
    // A text frame from the client also arrives (the emulator accepts both).
    via.send(Message::binary(
        serde_json::to_vec(&serde_json::json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "as binary"}]}], "turnComplete": true}})).unwrap(),
    ))
    .await
    .unwrap();
    let turn = read_turn(&mut via).await;
    assert_eq!(turn_text(&turn), "You said: as binary");
}

#[tokio::test]
async fn a_one_mebibyte_audio_stream_relays_in_order() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup("gemini-live-2.5-flash", "TEXT")).await;
    // 1 MiB of 16 kHz PCM in 32 KiB chunks = 32.768 s → ceil(32.768 × 32) = 1049 AUDIO tokens.
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0x11u8; 32 * 1024]);
    for _ in 0..32 {
        let frame = serde_json::json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": chunk}}});
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    ws.send(Message::text(
        r#"{"realtimeInput":{"audioStreamEnd":true}}"#,
    ))
    .await
    .unwrap();
    let turn = read_turn(&mut ws).await;
    let usage = &json_of(turn.last().unwrap())["usageMetadata"];
    assert_eq!(usage["promptTokensDetails"][0]["modality"], "AUDIO");
    assert_eq!(usage["promptTokensDetails"][0]["tokenCount"], 1049);
    ws.close(None).await.unwrap();
    let events = stack
        .events_until(std::time::Duration::from_secs(10), |e| {
            !e.ended().is_empty()
        })
        .await;
    let report = &events.reports[0].1;
    let media = report.media.as_ref().unwrap();
    assert!(
        (media.input_audio_seconds - 32.768).abs() < 1e-9,
        "{}",
        media.input_audio_seconds
    );
    assert_eq!(events.ended()[0].frames_in, 1 + 32 + 1);
}
