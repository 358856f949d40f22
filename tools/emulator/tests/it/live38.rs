//! Gemini 3.8 Live over a real socket, and interruptions at a generation pace.

use crate::helpers::*;
use livegate_emulator::{Behaviour, EmulatorConfig};
use serde_json::{Value, json};
use std::time::Duration;

const MODEL_38: &str =
    "projects/test-project/locations/us-central1/publishers/google/models/gemini-3.8-live";

fn paced(ms: u64) -> EmulatorConfig {
    EmulatorConfig {
        behaviour: Behaviour {
            frame_interval: Duration::from_millis(ms),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    }
}

#[tokio::test]
async fn a_new_turn_interrupts_the_reply_being_generated() {
    let emu = spawn(paced(200)).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    send(&mut ws, user_text("tell me a long story")).await;
    // The first chunk arrives; the rest is still being generated.
    let first = next_json(&mut ws).await;
    assert!(
        first.pointer("/serverContent/modelTurn").is_some(),
        "{first}"
    );
    send(&mut ws, user_text("stop")).await;
    let cut = read_turn(&mut ws).await;
    let jsons: Vec<&Value> = cut.iter().map(|f| &f.json).collect();
    assert_eq!(
        jsons[0],
        &json!({"serverContent": {"interrupted": true}}),
        "{jsons:?}"
    );
    // The interrupted turn bills its prompt and the one chunk that went out.
    let usage = &jsons[1]["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], 5); // "tell me a long story" = 20 chars
    let chunk = first
        .pointer("/serverContent/modelTurn/parts/0/text")
        .and_then(Value::as_str)
        .unwrap();
    assert_eq!(
        usage["candidatesTokenCount"],
        (chunk.chars().count() as u64).div_ceil(4)
    );
    // Then the new turn is answered in full.
    let next = read_turn(&mut ws).await;
    let text: String = next
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "You said: stop");
    assert_eq!(emu.recorded_usage().len(), 2);
}

#[tokio::test]
async fn speech_interrupts_but_not_with_no_interruption() {
    let emu = spawn(paced(200)).await;
    for (handling, interrupted) in [
        ("START_OF_ACTIVITY_INTERRUPTS", true),
        ("NO_INTERRUPTION", false),
    ] {
        let mut ws = connect(&emu).await;
        setup(
            &mut ws,
            json!({"model": MODEL_38, "realtimeInputConfig": {"activityHandling": handling}}),
        )
        .await;
        send(&mut ws, user_text("hello")).await;
        let first = next_json(&mut ws).await;
        assert!(
            first.pointer("/serverContent/modelTurn").is_some(),
            "{first}"
        );
        let audio = json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": pcm_b64(3_200)}}});
        send(&mut ws, audio).await;
        // Interrupted: `interrupted`, the cut turn's end, then the speech start; otherwise
        // the speech start, then the rest of the answer.
        let mut seen = Vec::new();
        for _ in 0..50 {
            let f = next_json(&mut ws).await;
            let done = f.get("voiceActivity").is_some()
                && seen
                    .iter()
                    .any(|j: &Value| j.pointer("/serverContent/turnComplete").is_some())
                || f.get("voiceActivity").is_some() && !interrupted;
            seen.push(f);
            if done {
                break;
            }
        }
        let seen_interrupted = seen
            .iter()
            .any(|j| j.pointer("/serverContent/interrupted") == Some(&json!(true)));
        assert_eq!(seen_interrupted, interrupted, "{handling}: {seen:?}");
        assert_eq!(
            seen.last().unwrap()["voiceActivity"]["voiceActivityType"],
            "ACTIVITY_START",
            "{handling}"
        );
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn live38_session_over_the_socket() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    setup(
        &mut ws,
        json!({"model": MODEL_38, "generationConfig": {"responseModalities": ["TEXT", "VIDEO"]},
               "historyConfig": {"initialHistoryInClientContent": true}}),
    )
    .await;
    send(
        &mut ws,
        json!({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Speak softly."}]}}}),
    )
    .await;
    send(&mut ws, user_text("hi")).await;
    let turn = read_turn(&mut ws).await;
    let events: Vec<&Value> = turn
        .iter()
        .map(|f| &f.json)
        .filter(|j| j.pointer("/serverContent/modelTurn").is_some())
        .collect();
    let text: String = events
        .iter()
        .filter_map(|j| j.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "[Speak softly.] You said: hi");
    assert!(events.iter().all(
        |j| j.pointer("/serverContent/modelTurn/parts/1/inlineData/mimeType")
            == Some(&json!("video/mp4"))
    ));
    let usage = usages(&turn).remove(0);
    assert_eq!(usage["candidatesTokensDetails"][1]["modality"], "VIDEO");
}
