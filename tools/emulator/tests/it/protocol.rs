//! Text turns, frame types, first-frame rules, tools, resumption, usage names, recording.

use crate::helpers::*;
use futures_util::SinkExt as _;
use livegate_emulator::{Behaviour, EmulatorConfig, LIVE_PATHS, UsageNames};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn text_turn_streams_chunks_then_turn_complete_with_usage() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    let done = text_setup(&mut ws).await;
    let session_id = done["setupComplete"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();

    send(&mut ws, user_text("What is the weather like today?")).await;
    let frames = read_turn(&mut ws).await;
    let chunks: Vec<&str> = frames
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    let reply: String = chunks.concat();
    assert_eq!(reply, "You said: What is the weather like today?");
    // Google's framing: binary frames holding UTF-8 JSON.
    assert!(frames.iter().all(|f| f.binary));

    // prompt: 31 chars → ceil(31/4) = 8; reply: 41 chars → 11.
    let last = frames.last().unwrap();
    assert_eq!(
        last.json["usageMetadata"],
        json!({
            "promptTokenCount": 8, "candidatesTokenCount": 11, "totalTokenCount": 19,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 11}],
        })
    );

    // A second turn: usage is for that turn only.
    send(&mut ws, user_text("ok")).await;
    let frames2 = read_turn(&mut ws).await;
    assert_eq!(usages(&frames2)[0]["promptTokenCount"], 1);

    // What the emulator recorded is exactly what the client received.
    let recorded = emu.recorded_usage();
    let received: Vec<Value> = usages(&frames)
        .into_iter()
        .chain(usages(&frames2))
        .collect();
    assert_eq!(recorded.len(), 2);
    for (i, (r, u)) in recorded.iter().zip(&received).enumerate() {
        assert_eq!(&r.usage, u);
        assert_eq!(r.session_id, session_id);
        assert_eq!(r.seq, i as u64 + 1);
    }
    let stats = emu.stats();
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.frames_in, 3);
    let sent = 1 + frames.len() + frames2.len();
    assert_eq!(stats.frames_out, sent as u64);
    drop(ws);
    emu.shutdown().await;
}

#[tokio::test]
async fn text_frames_option_and_snake_case_binary_client_frames() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            text_frames: true,
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    // Client frames may be binary too, and snake_case.
    let setup =
        json!({"setup": {"model": MODEL, "generation_config": {"response_modalities": ["TEXT"]}}});
    ws.send(Message::binary(setup.to_string().into_bytes()))
        .await
        .unwrap();
    let f = next_frame(&mut ws).await;
    assert!(!f.binary);
    assert!(f.json.get("setupComplete").is_some());
    let turn =
        json!({"client_content": {"turns": [{"parts": [{"text": "hi"}]}], "turn_complete": true}});
    ws.send(Message::binary(turn.to_string().into_bytes()))
        .await
        .unwrap();
    let frames = read_turn(&mut ws).await;
    assert!(frames.iter().all(|f| !f.binary));

    // Switched at run time: the next reply comes in binary frames.
    emu.set_behaviour(Behaviour::default());
    send(&mut ws, user_text("again")).await;
    assert!(read_turn(&mut ws).await.iter().all(|f| f.binary));
}

#[tokio::test]
async fn non_setup_first_frame_closes_1008() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    send(&mut ws, user_text("hello")).await;
    let (close, seen) = read_close(&mut ws).await;
    let close = close.unwrap();
    assert!(seen.is_empty());
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("setup"), "{}", close.reason);
}

#[tokio::test]
async fn non_json_first_frame_closes_1007() {
    let emu = spawn(EmulatorConfig::default()).await;
    for msg in [
        Message::text("{not json"),
        Message::binary(vec![0xff, 0xfe]),
    ] {
        let mut ws = connect(&emu).await;
        ws.send(msg).await.unwrap();
        let close = read_close(&mut ws).await.0.unwrap();
        assert_eq!(u16::from(close.code), 1007);
        assert_eq!(
            close.reason.as_str(),
            "Request contains an invalid argument."
        );
    }
}

#[tokio::test]
async fn bad_model_and_second_setup_close() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    send(
        &mut ws,
        json!({"setup": {"model": "gemini-live-2.5-flash"}}),
    )
    .await;
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        close.reason.contains("gemini-live-2.5-flash"),
        "{}",
        close.reason
    );

    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    send(&mut ws, json!({"setup": {"model": MODEL}})).await;
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1007);
}

#[tokio::test]
async fn v1beta1_path_healthz_and_404() {
    let emu = spawn(EmulatorConfig::default()).await;
    let url = format!("ws://{}{}", emu.addr(), LIVE_PATHS[1]);
    let mut ws = try_connect(&url, None).await.unwrap();
    text_setup(&mut ws).await;

    assert_eq!(http_get(emu.addr(), "/healthz").await.0, 200);
    let (status, body) = http_get(emu.addr(), "/nope").await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    let (status, _) = refused_status(&format!("ws://{}/ws/other", emu.addr()), None).await;
    assert_eq!(status, 404);
    // A plain GET on the Live path is not an upgrade.
    assert_eq!(http_get(emu.addr(), LIVE_PATHS[0]).await.0, 400);
}

#[tokio::test]
async fn tool_call_waits_for_tool_response() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    setup(
        &mut ws,
        json!({"model": MODEL, "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "weather", "parameters": {"type": "OBJECT"}},
            {"name": "book_table"}]}]}),
    )
    .await;
    send(&mut ws, user_text("Use get_weather for Paris")).await;
    let call = next_json(&mut ws).await;
    let calls = call["toolCall"]["functionCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["args"], json!({}));
    let id = calls[0]["id"].as_str().unwrap().to_string();
    // "Use get_weather for Paris" = 25 chars → 7; "get_weather" = 11 chars → 3.
    assert_eq!(
        call["usageMetadata"],
        json!({"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}],
               "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 3}]})
    );

    let responses = json!([{"id": id, "name": "get_weather", "response": {"temp_c": 21}}]);
    send(
        &mut ws,
        json!({"toolResponse": {"functionResponses": responses}}),
    )
    .await;
    let frames = read_turn(&mut ws).await;
    let text: String = frames
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "Tool results: get_weather returned {\"temp_c\":21}");
    let prompt = (responses.to_string().chars().count() as u64).div_ceil(4);
    assert_eq!(usages(&frames)[0]["promptTokenCount"], json!(prompt));
    assert_eq!(emu.recorded_usage().len(), 2);
}

#[tokio::test]
async fn session_resumption_handles_resume_and_unknown_handles_fail() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    setup(&mut ws, json!({"model": MODEL, "sessionResumption": {}})).await;
    send(&mut ws, user_text("remember me")).await;
    read_turn(&mut ws).await;
    let update = next_json(&mut ws).await;
    let update = &update["sessionResumptionUpdate"];
    assert_eq!(update["resumable"], true);
    let handle = update["newHandle"].as_str().unwrap().to_string();
    ws.close(None).await.unwrap();

    let mut ws = connect(&emu).await;
    setup(
        &mut ws,
        json!({"model": MODEL, "session_resumption": {"handle": handle}}),
    )
    .await;
    send(&mut ws, user_text("back again")).await;
    read_turn(&mut ws).await;
    assert!(
        next_json(&mut ws)
            .await
            .get("sessionResumptionUpdate")
            .is_some()
    );
    assert_eq!(emu.stats().resumed_sessions, 1);

    let mut ws = connect(&emu).await;
    send(
        &mut ws,
        json!({"setup": {"model": MODEL, "sessionResumption": {"handle": "forged"}}}),
    )
    .await;
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test]
async fn developer_usage_names() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            usage_names: UsageNames::Developer,
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    send(&mut ws, user_text("abcd")).await;
    let usage = usages(&read_turn(&mut ws).await).remove(0);
    // "You said: abcd" = 14 chars → 4.
    assert_eq!(
        usage,
        json!({"promptTokenCount": 1, "responseTokenCount": 4, "totalTokenCount": 5,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1}],
               "responseTokensDetails": [{"modality": "TEXT", "tokenCount": 4}]})
    );
    assert_eq!(emu.recorded_usage()[0].usage, usage);
}

#[tokio::test]
async fn delayed_replies_keep_order() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            response_delay: std::time::Duration::from_millis(20),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    send(&mut ws, user_text("first")).await;
    send(&mut ws, user_text("second")).await;
    let t1 = read_turn(&mut ws).await;
    let t2 = read_turn(&mut ws).await;
    let text = |frames: &[Frame]| -> String {
        frames
            .iter()
            .filter_map(|f| f.json.pointer("/serverContent/modelTurn/parts/0/text"))
            .filter_map(Value::as_str)
            .collect()
    };
    assert_eq!(text(&t1), "You said: first");
    assert_eq!(text(&t2), "You said: second");
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let big = "x".repeat(livegate_emulator::MAX_MESSAGE_BYTES + 1);
    ws.send(Message::text(big)).await.unwrap();
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1009);
}
