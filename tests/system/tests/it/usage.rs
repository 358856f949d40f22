//! Usage capture: what the gateway publishes equals what upstream reported, frame for frame.

use base64::Engine;
use futures_util::SinkExt;
use livegate_proto::usage::{ClosedBy, Modality};
use livegate_system_tests::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn audio(seconds: f64) -> Message {
    let bytes = (seconds * 16_000.0) as usize * 2;
    let data = base64::engine::general_purpose::STANDARD.encode(vec![0u8; bytes]);
    Message::text(serde_json::json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": data}}}).to_string())
}

#[tokio::test]
async fn reports_equal_the_emulators_usage_frame_for_frame() {
    let stack = Stack::start().await;
    let (key, key_id) = stack
        .create_key(livegate_proto::auth::KeySettings {
            team_id: "team-a".into(),
            ..Default::default()
        })
        .await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("first turn")).await.unwrap();
    read_turn(&mut ws).await;
    ws.send(audio(2.0)).await.unwrap();
    ws.send(Message::text(
        r#"{"realtimeInput":{"audioStreamEnd":true}}"#,
    ))
    .await
    .unwrap();
    read_turn(&mut ws).await;
    ws.send(litellm_text_turn("third")).await.unwrap();
    read_turn(&mut ws).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();

    let events = stack
        .events_until(Duration::from_secs(10), |e| !e.ended().is_empty())
        .await;
    let recorded = stack.emulator.recorded_usage();
    assert_eq!(recorded.len(), 3);
    assert_eq!(events.reports.len(), 3);
    let session_id = events.started()[0]
        .context
        .as_ref()
        .unwrap()
        .session_id
        .clone();
    for (i, ((msg_id, report), rec)) in events.reports.iter().zip(&recorded).enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(report.seq, seq);
        assert_eq!(report.event_id, format!("{session_id}:{seq}"));
        assert_eq!(msg_id, &report.event_id, "Nats-Msg-Id is the event id");
        let ctx = report.context.as_ref().unwrap();
        assert_eq!(
            (
                ctx.key_id.as_str(),
                ctx.team_id.as_str(),
                ctx.model.as_str()
            ),
            (key_id.as_str(), "team-a", MODEL)
        );
        assert_eq!(ctx.project, PROJECT);
        let t = report.tokens.as_ref().unwrap();
        let u = &rec.usage;
        assert_eq!(t.prompt_tokens, u["promptTokenCount"].as_u64().unwrap_or(0));
        assert_eq!(
            t.response_tokens,
            u["candidatesTokenCount"].as_u64().unwrap_or(0)
        );
        assert_eq!(t.total_tokens, u["totalTokenCount"].as_u64().unwrap_or(0));
        let details: u64 = t.prompt_details.iter().map(|d| d.token_count).sum();
        assert_eq!(details, t.prompt_tokens);
    }
    // The audio turn: 64 AUDIO tokens, 2.0 s measured by the gateway.
    let audio_report = &events.reports[1].1;
    let d = &audio_report.tokens.as_ref().unwrap().prompt_details;
    assert!(
        d.iter()
            .any(|m| m.modality == Modality::Audio as i32 && m.token_count == 64)
    );
    assert!((audio_report.media.as_ref().unwrap().input_audio_seconds - 2.0).abs() < 1e-9);
    // Client text characters are attributed to the report that followed them.
    assert_eq!(
        events.reports[0].1.media.as_ref().unwrap().input_characters,
        "first turn".len() as u64
    );
    assert_eq!(
        events.reports[0]
            .1
            .media
            .as_ref()
            .unwrap()
            .output_characters,
        "You said: first turn".len() as u64
    );
    let ended = &events.ended()[0];
    assert_eq!(ended.reports, 3);
    assert_eq!(ended.closed_by, ClosedBy::Client as i32);
    assert_eq!(
        (ended.close_code, ended.close_reason.as_str()),
        (1000, "bye")
    );
}

#[tokio::test]
async fn an_abrupt_disconnect_still_ends_the_session_with_the_remainder() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    // Audio that was never answered, then the TCP connection just goes away.
    ws.send(audio(1.5)).await.unwrap();
    ws.send(Message::text(r#"{"clientContent":{"turns":[{"role":"user","parts":[{"text":"unanswered"}]}],"turnComplete":false}}"#))
        .await
        .unwrap();
    ws.flush().await.unwrap();
    // Wait until the gateway has relayed both frames (the emulator saw them) before dropping.
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while stack.emulator.stats().frames_in < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(seen.is_ok());
    drop(ws);
    let events = stack
        .events_until(Duration::from_secs(10), |e| !e.ended().is_empty())
        .await;
    let ended = &events.ended()[0];
    assert_eq!(ended.closed_by, ClosedBy::Client as i32);
    assert_eq!(ended.close_code, 1006);
    assert_eq!(ended.reports, 0);
    let media = ended.trailing_media.as_ref().unwrap();
    assert!((media.input_audio_seconds - 1.5).abs() < 1e-9);
    assert_eq!(media.input_characters, "unanswered".len() as u64);
}

#[tokio::test]
async fn nats_restart_mid_session_loses_and_duplicates_nothing() {
    let mut stack = Stack::start().await;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("before")).await.unwrap();
    read_turn(&mut ws).await;
    let _ = stack
        .events_until(Duration::from_secs(10), |e| e.reports.len() == 1)
        .await;
    stack.nats.stop().await.unwrap();
    // The session keeps running while NATS is down.
    for i in 0..3 {
        ws.send(litellm_text_turn(&format!("during {i}")))
            .await
            .unwrap();
        read_turn(&mut ws).await;
    }
    stack.nats.restart().await.unwrap();
    ws.send(litellm_text_turn("after")).await.unwrap();
    read_turn(&mut ws).await;
    ws.close(None).await.unwrap();
    let events = stack
        .events_until(Duration::from_secs(30), |e| {
            !e.ended().is_empty() && e.reports.len() >= 5
        })
        .await;
    let mut ids: Vec<&str> = events.reports.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no duplicates");
    let seqs: Vec<u64> = events.reports.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "in order");
    assert_eq!(events.ended().len(), 1);
}
