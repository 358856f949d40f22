//! Gemini 3.8 Live through the whole system: every new message relayed untouched (the same
//! conversation straight to the emulator and through the gateway yields the same frames),
//! the usage priced exactly into ClickHouse, and an interruption that reaches the client
//! and the gateway's `/metrics`.

use futures_util::SinkExt;
use livegate_emulator::Behaviour;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const MODEL_38: &str =
    "projects/test-project/locations/us-central1/publishers/google/models/gemini-3.8-live";

/// gemini-3.8-live per token (USD), LiteLLM's table: input, output by modality.
const INPUT: [(&str, &str); 4] = [
    ("TEXT", "0.00000075"),
    ("AUDIO", "0.000003"),
    ("IMAGE", "0.000001"),
    ("VIDEO", "0.000001"),
];
const OUTPUT: [(&str, &str); 3] = [
    ("TEXT", "0.0000045"),
    ("AUDIO", "0.000012"),
    ("VIDEO", "0.000001"),
];

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn price(list: &[(&str, &str)], modality: &str) -> Decimal {
    d(list.iter().find(|(m, _)| *m == modality).unwrap().1)
}

/// The cost of one usageMetadata: details by modality, prompt tokens no detail covers as
/// TEXT, thoughts as output TEXT.
fn cost_of(u: &Value) -> Decimal {
    let mut total = Decimal::ZERO;
    let mut detailed = 0;
    for item in u["promptTokensDetails"].as_array().into_iter().flatten() {
        let n = item["tokenCount"].as_u64().unwrap();
        detailed += n;
        total += Decimal::from(n) * price(&INPUT, item["modality"].as_str().unwrap());
    }
    let prompt = u["promptTokenCount"].as_u64().unwrap_or(0);
    total += Decimal::from(prompt - detailed) * price(&INPUT, "TEXT");
    let thoughts = u["thoughtsTokenCount"].as_u64().unwrap_or(0);
    total += Decimal::from(thoughts) * price(&OUTPUT, "TEXT");
    for item in u["candidatesTokensDetails"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let n = Decimal::from(item["tokenCount"].as_u64().unwrap());
        total += n * price(&OUTPUT, item["modality"].as_str().unwrap());
    }
    total
}

fn b64(bytes: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![3u8; bytes])
}

fn msg(v: &Value) -> Message {
    Message::text(v.to_string())
}

/// Sends the setup and reads `setupComplete`.
async fn start(ws: &mut Ws, setup: &Value) {
    open_session(ws, msg(&json!({ "setup": setup }))).await;
}

/// The conversation: a context update, a text turn, then audio with a video frame.
async fn converse(ws: &mut Ws) -> Vec<Vec<Message>> {
    let mut turns = Vec::new();
    ws.send(msg(&json!({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Answer as a pirate."}]}}})))
        .await
        .unwrap();
    ws.send(text_turn("Where is the treasure?")).await.unwrap();
    turns.push(read_turn(ws).await);
    for _ in 0..2 {
        let audio = json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": b64(32_000)}}});
        ws.send(msg(&audio)).await.unwrap();
    }
    let video = json!({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": b64(1_500)}}});
    ws.send(msg(&video)).await.unwrap();
    ws.send(msg(&json!({"realtimeInput": {"audioStreamEnd": true}})))
        .await
        .unwrap();
    turns.push(read_turn(ws).await);
    turns
}

#[tokio::test]
async fn a_gemini_38_live_session_relays_untouched_and_is_priced_exactly() {
    let stack = Stack::start_with(Options {
        metering: true,
        ..Options::default()
    })
    .await;
    let (key, _) = stack.create_key(KeySettings::default()).await;
    let setup = json!({
        "model": MODEL_38,
        "generationConfig": {"responseModalities": ["AUDIO"], "thinkingConfig": {"includeThoughts": true}},
        "avatarConfig": {"avatarName": "Kai"},
        "explicitVadSignal": true,
        "historyConfig": {"initialHistoryInClientContent": false},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "realtimeInputConfig": {"automaticActivityDetection": {}},
    });

    // Straight to the emulator, with a Google-style bearer.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        stack.emulator.url(),
    )
    .unwrap();
    let jwt =
        livegate_test_support::google::bearer_token(&stack.service_account.credentials().unwrap())
            .await
            .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    let (mut direct, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    start(&mut direct, &setup).await;
    let expected = converse(&mut direct).await;
    direct.close(None).await.unwrap();

    // Through the gateway: the same frames, byte for byte and binary.
    let mut via = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    start(&mut via, &setup).await;
    let got = converse(&mut via).await;
    via.close(None).await.unwrap();
    assert_eq!(got, expected, "the gateway changes no 3.8 frame");
    assert!(
        got.iter()
            .flatten()
            .all(|m| matches!(m, Message::Binary(_)))
    );

    // The frames have the 3.8 shapes.
    let jsons: Vec<Value> = got.iter().flatten().map(json_of).collect();
    let has = |p: &str, v: Value| jsons.iter().any(|j| j.pointer(p) == Some(&v));
    assert!(has(
        "/voiceActivity/voiceActivityType",
        json!("ACTIVITY_START")
    ));
    assert!(has(
        "/voiceActivity/voiceActivityType",
        json!("ACTIVITY_END")
    ));
    assert!(has(
        "/voiceActivityDetectionSignal/vadSignalType",
        json!("VAD_SIGNAL_TYPE_EOS")
    ));
    assert!(has(
        "/serverContent/interactionStatus",
        json!("IN_PROGRESS")
    ));
    assert!(has("/serverContent/modelTurn/parts/0/thought", json!(true)));
    assert!(has(
        "/serverContent/modelTurn/parts/1/inlineData/mimeType",
        json!("audio/pcm;rate=24000")
    ));
    assert!(has(
        "/serverContent/modelTurn/parts/2/inlineData/mimeType",
        json!("video/mp4")
    ));
    let interim = jsons
        .iter()
        .position(|j| {
            j.pointer("/serverContent/interimInputTranscription")
                .is_some()
        })
        .unwrap();
    let fin = jsons
        .iter()
        .position(|j| j.pointer("/serverContent/inputTranscription").is_some())
        .unwrap();
    assert!(interim < fin, "interim transcription before the final one");
    // The context update took effect: the answer's transcript follows it.
    let transcript: String = got[0]
        .iter()
        .map(json_of)
        .filter_map(|j| {
            j.pointer("/serverContent/outputTranscription/text")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        transcript,
        "[Answer as a pirate.] You said: Where is the treasure?"
    );

    // Priced exactly: Google's counts (VIDEO output, thoughts outside the total, residual
    // prompt tokens) at gemini-3.8-live's prices.
    let events = stack
        .events_until(Duration::from_secs(10), |e| e.ended().len() == 1)
        .await;
    let sid = events.started()[0]
        .context
        .as_ref()
        .unwrap()
        .session_id
        .clone();
    // The emulator's sessions are numbered in connection order: the gateway's is the second.
    let records = stack.emulator.recorded_usage();
    let emu_session = &records.last().unwrap().session_id;
    assert_ne!(&records[0].session_id, emu_session);
    let sent: Vec<Value> = records
        .iter()
        .filter(|r| &r.session_id == emu_session)
        .map(|r| r.usage.clone())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|u| {
        u["candidatesTokensDetails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["modality"] == "VIDEO")
    }));
    let expected: Decimal = sent.iter().map(cost_of).sum();
    let (usage, session, _) = crate::metering::session_cost(&stack, &sid).await;
    let tolerance = d("0.000000001");
    assert!(
        (usage - expected).abs() < tolerance,
        "usage_events {usage} vs the emulator's reports {expected}"
    );
    assert!(
        (session - expected).abs() < tolerance,
        "sessions row {session} vs {expected}"
    );
}

/// The series `name{…}` whose labels mention `label`, if any.
fn metric_with(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next())
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn an_interruption_reaches_the_client_and_the_metrics() {
    let stack = Stack::start().await;
    // A slow generation: a new turn arrives while the answer is still being sent.
    stack.emulator.set_behaviour(Behaviour {
        frame_interval: Duration::from_millis(300),
        ..Behaviour::default()
    });
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup("gemini-3.8-live", "TEXT")).await;
    ws.send(text_turn("Tell me a very long story"))
        .await
        .unwrap();
    // The first event of the answer, then the user cuts in.
    let first = json_of(&next_frame(&mut ws).await);
    assert!(
        first.pointer("/serverContent/modelTurn").is_some(),
        "{first}"
    );
    ws.send(text_turn("Stop, please")).await.unwrap();
    let cut = read_turn(&mut ws).await;
    assert_eq!(
        json_of(&cut[0]),
        json!({"serverContent": {"interrupted": true}})
    );
    assert!(json_of(cut.last().unwrap())["usageMetadata"].is_object());
    let next = read_turn(&mut ws).await;
    assert!(turn_text(&next).ends_with("You said: Stop, please"));
    ws.close(None).await.unwrap();

    let mut seen = None;
    for _ in 0..100 {
        let (status, _, body) = http(stack.gateway.addr, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200);
        seen = metric_with(
            &body,
            "livegate_gateway_interruptions_total",
            "gemini-3.8-live",
        );
        if seen == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        Some(1.0),
        "one interruption counted for gemini-3.8-live"
    );
}
