//! Audio, image and video token counts; audio replies and transcriptions.

use crate::helpers::*;
use base64::Engine as _;
use livegate_emulator::EmulatorConfig;
use serde_json::{Value, json};

fn audio_msg(bytes: usize) -> Value {
    json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": pcm_b64(bytes)}}})
}

#[tokio::test]
async fn two_seconds_of_16k_audio_is_64_prompt_tokens() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    // 2.0 s = 64,000 bytes, sent as 20 chunks of 100 ms.
    for _ in 0..20 {
        send(&mut ws, audio_msg(3_200)).await;
    }
    send(&mut ws, json!({"realtimeInput": {"audioStreamEnd": true}})).await;
    let frames = read_turn(&mut ws).await;
    let usage = &usages(&frames)[0];
    assert_eq!(usage["promptTokenCount"], 64);
    assert_eq!(
        usage["promptTokensDetails"],
        json!([{"modality": "AUDIO", "tokenCount": 64}])
    );
    // Text reply: "I received 2.00 seconds of audio." = 33 chars → 9.
    assert_eq!(usage["candidatesTokenCount"], 9);
}

#[tokio::test]
async fn deprecated_media_chunks_and_activity_end() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    // 1 s at 24 kHz (48,000 bytes) + 0.5 s at 16 kHz (16,000 bytes) = 1.5 s → 48 tokens.
    send(
        &mut ws,
        json!({"realtimeInput": {"mediaChunks": [
            {"mimeType": "audio/pcm;rate=24000", "data": pcm_b64(48_000)},
            {"mimeType": "audio/pcm", "data": pcm_b64(16_000)}]}}),
    )
    .await;
    send(&mut ws, json!({"realtimeInput": {"activityStart": {}}})).await;
    send(&mut ws, json!({"realtimeInput": {"activityEnd": {}}})).await;
    let usage = usages(&read_turn(&mut ws).await).remove(0);
    assert_eq!(
        usage["promptTokensDetails"],
        json!([{"modality": "AUDIO", "tokenCount": 48}])
    );
}

#[tokio::test]
async fn audio_modality_replies_with_24k_pcm_and_audio_tokens() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    setup(
        &mut ws,
        json!({"model": MODEL, "generationConfig": {"responseModalities": ["AUDIO"]},
               "inputAudioTranscription": {}, "outputAudioTranscription": {}}),
    )
    .await;
    send(&mut ws, audio_msg(64_000)).await;
    send(&mut ws, json!({"realtimeInput": {"audioStreamEnd": true}})).await;
    let frames = read_turn(&mut ws).await;

    let input_tx: Vec<&Value> = frames
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/inputTranscription/text"))
        .collect();
    assert_eq!(input_tx, vec![&json!("[2.00 seconds of audio]")]);
    let mut pcm_bytes = 0;
    for f in &frames {
        if let Some(blob) = f
            .json
            .pointer("/serverContent/modelTurn/parts/0/inlineData")
        {
            assert_eq!(blob["mimeType"], "audio/pcm;rate=24000");
            let data = base64::engine::general_purpose::STANDARD
                .decode(blob["data"].as_str().unwrap())
                .unwrap();
            pcm_bytes += data.len();
        }
    }
    assert_eq!(pcm_bytes, 48_000, "one second of 24 kHz 16-bit audio");
    let out_tx: String = frames
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/outputTranscription/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(out_tx, "I received 2.00 seconds of audio.");

    let usage = &usages(&frames)[0];
    assert_eq!(
        usage,
        &json!({"promptTokenCount": 64, "candidatesTokenCount": 32, "totalTokenCount": 96,
                "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 64}],
                "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 32}]})
    );
}

#[tokio::test]
async fn image_is_258_tokens() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let jpeg = base64::engine::general_purpose::STANDARD.encode([0xff, 0xd8, 0xff, 0xd9]);
    send(
        &mut ws,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [
            {"text": "Describe"},
            {"inlineData": {"mimeType": "image/jpeg", "data": jpeg}},
            {"inline_data": {"mime_type": "image/png", "data": jpeg}}]}],
            "turnComplete": true}}),
    )
    .await;
    let usage = usages(&read_turn(&mut ws).await).remove(0);
    assert_eq!(
        usage["promptTokensDetails"],
        json!([{"modality": "TEXT", "tokenCount": 2}, {"modality": "IMAGE", "tokenCount": 516}])
    );
    assert_eq!(usage["promptTokenCount"], 518);
}

#[tokio::test]
async fn video_is_263_tokens_per_frame_second() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let jpeg = base64::engine::general_purpose::STANDARD.encode([0xff, 0xd8, 0xff, 0xd9]);
    for _ in 0..3 {
        send(
            &mut ws,
            json!({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": jpeg}}}),
        )
        .await;
    }
    send(&mut ws, audio_msg(32_000)).await;
    send(
        &mut ws,
        json!({"realtimeInput": {"text": "what do you see?"}}),
    )
    .await;
    let usage = usages(&read_turn(&mut ws).await).remove(0);
    // 3 frames → 789 VIDEO; 1 s audio → 32 AUDIO; 16 chars → 4 TEXT.
    assert_eq!(
        usage["promptTokensDetails"],
        json!([{"modality": "TEXT", "tokenCount": 4}, {"modality": "VIDEO", "tokenCount": 789},
               {"modality": "AUDIO", "tokenCount": 32}])
    );
    assert_eq!(usage["promptTokenCount"], 825);
}
