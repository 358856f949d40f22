use super::*;
use base64::Engine;

fn b64(n: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
}

#[test]
fn client_text_and_audio_are_measured() {
    let mut m = Media::default();
    measure_client(
        br#"{"client_content":{"turns":[{"role":"user","parts":[{"text":"Hello! How are you?"}]}],"turn_complete":true}}"#,
        &mut m,
    );
    assert_eq!(m.input_characters, 19);
    // 2 s of 16 kHz 16-bit mono = 64000 bytes.
    let frame = format!(
        r#"{{"realtimeInput":{{"audio":{{"mimeType":"audio/pcm;rate=16000","data":"{}"}}}}}}"#,
        b64(64_000)
    );
    measure_client(frame.as_bytes(), &mut m);
    assert!((m.input_audio_seconds - 2.0).abs() < 1e-9);
    // LiteLLM's documented form: media_chunks without a rate → 16 kHz.
    let frame = format!(
        r#"{{"realtime_input":{{"media_chunks":[{{"data":"{}","mime_type":"audio/pcm"}}]}}}}"#,
        b64(8_000)
    );
    measure_client(frame.as_bytes(), &mut m);
    assert!((m.input_audio_seconds - 2.25).abs() < 1e-9);
    // 8 kHz
    let frame = format!(
        r#"{{"realtimeInput":{{"audio":{{"mimeType":"audio/pcm;rate=8000","data":"{}"}}}}}}"#,
        b64(16_001)
    );
    measure_client(frame.as_bytes(), &mut m);
    assert!((m.input_audio_seconds - (2.25 + 16_001.0 / 2.0 / 8000.0)).abs() < 1e-9);
}

#[test]
fn client_video_frames_and_images_are_counted() {
    let mut m = Media::default();
    let jpeg = b64(300);
    let frame =
        format!(r#"{{"realtimeInput":{{"video":{{"mimeType":"image/jpeg","data":"{jpeg}"}}}}}}"#);
    measure_client(frame.as_bytes(), &mut m);
    measure_client(frame.as_bytes(), &mut m);
    let frame = format!(
        r#"{{"clientContent":{{"turns":[{{"parts":[{{"inlineData":{{"mimeType":"image/png","data":"{jpeg}"}}}},{{"text":"what is this?"}}]}}],"turnComplete":true}}}}"#
    );
    measure_client(frame.as_bytes(), &mut m);
    assert_eq!(
        (m.input_video_frames, m.input_images, m.input_characters),
        (2, 1, 13)
    );
    let wire = m.take();
    assert_eq!(wire.input_video_seconds, 2.0);
    assert!(m.is_empty());
}

#[test]
fn non_json_and_unrelated_frames_add_nothing() {
    let mut m = Media::default();
    measure_client(b"\xff\x00 not json", &mut m);
    measure_client(
        br#"{"toolResponse":{"functionResponses":[{"id":"1","name":"f","response":{}}]}}"#,
        &mut m,
    );
    measure_client(br#"{"realtimeInput": 5}"#, &mut m);
    assert!(m.is_empty());
    assert_eq!(
        inspect_server(b"{\"setupComplete\":{}}", &mut m),
        ServerFrame::default()
    );
    assert_eq!(
        inspect_server(b"\x00\x01usageMetadata", &mut m),
        ServerFrame::default()
    );
}

#[test]
fn vertex_usage_is_normalised() {
    let mut m = Media::default();
    let f = inspect_server(
        br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":30,"totalTokenCount":42,"promptTokensDetails":[{"modality":"TEXT","tokenCount":10},{"modality":"AUDIO","tokenCount":2}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":30}]}}"#,
        &mut m,
    );
    assert!(f.turn_complete);
    let u = f.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.response_tokens, u.total_tokens),
        (12, 30, 42)
    );
    assert_eq!(u.prompt_details.len(), 2);
    assert_eq!(u.prompt_details[1].modality, Modality::Audio as i32);
    assert_eq!(u.response_details[0].token_count, 30);
}

#[test]
fn developer_api_names_are_read_and_never_added_to_vertex_names() {
    let mut m = Media::default();
    let dev = inspect_server(
        br#"{"usageMetadata":{"promptTokenCount":1,"responseTokenCount":5,"responseTokensDetails":[{"modality":"TEXT","tokenCount":5}]}}"#,
        &mut m,
    )
    .usage
    .unwrap();
    assert_eq!(dev.response_tokens, 5);
    assert_eq!(dev.response_details[0].token_count, 5);
    let both = inspect_server(
        br#"{"usageMetadata":{"candidatesTokenCount":7,"responseTokenCount":7}}"#,
        &mut m,
    )
    .usage
    .unwrap();
    assert_eq!(both.response_tokens, 7);
}

#[test]
fn output_text_and_audio_are_measured() {
    let mut m = Media::default();
    inspect_server(
        br#"{"serverContent":{"modelTurn":{"parts":[{"text":"h\u00e9llo"}]}}}"#,
        &mut m,
    );
    assert_eq!(m.output_characters, 5);
    // 0.5 s at 24 kHz = 24000 bytes
    let frame = format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"inlineData":{{"mimeType":"audio/pcm;rate=24000","data":"{}"}}}}]}}}}}}"#,
        b64(24_000)
    );
    inspect_server(frame.as_bytes(), &mut m);
    assert!((m.output_audio_seconds - 0.5).abs() < 1e-9);
}

#[test]
fn go_away_and_resumption_updates_are_read() {
    let mut m = Media::default();
    let f = inspect_server(br#"{"goAway":{"timeLeft":"1.5s"}}"#, &mut m);
    assert_eq!(f.go_away, Some(std::time::Duration::from_millis(1500)));
    let f = inspect_server(br#"{"go_away":{}}"#, &mut m);
    assert_eq!(f.go_away, Some(std::time::Duration::ZERO));
    let f = inspect_server(
        br#"{"sessionResumptionUpdate":{"newHandle":"h7","resumable":true,"lastConsumedClientMessageIndex":"12"}}"#,
        &mut m,
    );
    assert_eq!(
        f.resumption,
        Some(ResumptionUpdate {
            handle: Some("h7".into()),
            last_consumed: Some(12)
        })
    );
    // Not resumable right now: no handle to keep.
    let f = inspect_server(
        br#"{"session_resumption_update":{"new_handle":"h8","last_consumed_client_message_index":3}}"#,
        &mut m,
    );
    assert_eq!(
        f.resumption,
        Some(ResumptionUpdate {
            handle: None,
            last_consumed: Some(3)
        })
    );
    assert!(m.is_empty());
}

#[test]
fn turn_ends_are_told_from_the_same_parse() {
    let mut m = Media::default();
    let ends = [
        r#"{"clientContent":{"turns":[{"parts":[{"text":"hi"}]}],"turnComplete":true}}"#,
        r#"{"client_content":{"turns":[],"turn_complete":true}}"#,
        r#"{"realtimeInput":{"activityEnd":{}}}"#,
        r#"{"realtime_input":{"activity_end":{}}}"#,
        r#"{"realtimeInput":{"audioStreamEnd":true}}"#,
        r#"{"toolResponse":{"functionResponses":[{"id":"1","name":"f","response":{"x":[1,2]}}]}}"#,
        r#"{"tool_response":{"function_responses":[]}}"#,
    ];
    for f in ends {
        assert!(measure_client(f.as_bytes(), &mut m).turn_end, "{f}");
    }
    let not_ends = [
        r#"{"clientContent":{"turns":[{"parts":[{"text":"more to come"}]}]}}"#,
        r#"{"clientContent":{"turns":[],"turnComplete":false}}"#,
        r#"{"realtimeInput":{"activityStart":{}}}"#,
        r#"{"realtimeInput":{"activityEnd":null}}"#,
        r#"{"realtimeInput":{"audioStreamEnd":false}}"#,
        r#"{"realtimeInput":{"text":"the word toolResponse in text"}}"#,
        r#"{"setup":{"model":"m"}}"#,
        "toolResponse but not JSON",
    ];
    for f in not_ends {
        assert!(!measure_client(f.as_bytes(), &mut m).turn_end, "{f}");
    }
    // The turn end does not stop the frame's media being measured.
    let mut m = Media::default();
    measure_client(ends[0].as_bytes(), &mut m);
    assert_eq!(m.input_characters, 2);
}

#[test]
fn interruptions_and_audio_are_flagged() {
    let mut m = Media::default();
    let f = inspect_server(br#"{"serverContent":{"interrupted":true}}"#, &mut m);
    assert!(f.interrupted && !f.audio && !f.turn_complete);
    let frame = format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"inlineData":{{"mimeType":"audio/pcm;rate=24000","data":"{}"}}}}]}}}}}}"#,
        b64(480)
    );
    assert!(inspect_server(frame.as_bytes(), &mut m).audio);
    assert!(
        !inspect_server(
            br#"{"serverContent":{"modelTurn":{"parts":[{"text":"x"}]}}}"#,
            &mut m
        )
        .audio
    );
}

// Gemini 3.8 Live: new client and server messages are relayed untouched; the inspector must
// read none of them as media, usage, model content or a turn end, unless they are.

#[test]
fn context_update_is_neither_media_nor_a_turn_end() {
    let mut m = Media::default();
    for f in [
        r#"{"contextUpdate":{"systemInstruction":{"parts":[{"text":"Answer in French; turnComplete"}]},"tools":[{"functionDeclarations":[{"name":"toolResponse"}]}]}}"#,
        r#"{"context_update":{"system_instruction":{"parts":[{"text":"be brief"}]}}}"#,
    ] {
        assert_eq!(
            measure_client(f.as_bytes(), &mut m),
            ClientFrame::default(),
            "{f}"
        );
    }
    assert!(m.is_empty());
}

#[test]
fn voice_activity_and_vad_signals_are_not_content_turn_ends_or_usage() {
    let mut m = Media::default();
    for f in [
        r#"{"voiceActivity":{"voiceActivityType":"ACTIVITY_START"}}"#,
        r#"{"voiceActivity":{"voiceActivityType":"ACTIVITY_END","audioOffset":"1.5s"}}"#,
        r#"{"voiceActivityDetectionSignal":{"vadSignalType":"VAD_SIGNAL_TYPE_SOS"}}"#,
        r#"{"voice_activity_detection_signal":{"vad_signal_type":"VAD_SIGNAL_TYPE_EOS"}}"#,
    ] {
        assert_eq!(
            inspect_server(f.as_bytes(), &mut m),
            ServerFrame::default(),
            "{f}"
        );
    }
    assert!(m.is_empty());
}

#[test]
fn transcriptions_and_interaction_status_are_not_model_content() {
    let mut m = Media::default();
    // Words that the key scan looks for inside the transcript force a parse: the parse
    // must still read these frames as input-side.
    for f in [
        r#"{"serverContent":{"interimInputTranscription":{"text":"was the turnComplete"}}}"#,
        r#"{"serverContent":{"inputTranscription":{"text":"interrupted modelTurn usageMetadata"}}}"#,
        r#"{"server_content":{"interim_input_transcription":{"text":"turn_complete"}}}"#,
        r#"{"serverContent":{"interactionStatus":"IN_PROGRESS","turnCompleteReason":"x"}}"#,
        r#"{"serverContent":{"interactionStatus":"REQUIRES_ACTION","waitingForInput":true,"inputTranscription":{"text":"goAway"}}}"#,
    ] {
        let frame = inspect_server(f.as_bytes(), &mut m);
        assert!(
            !frame.content && !frame.turn_complete && !frame.interrupted && frame.usage.is_none(),
            "{f}: {frame:?}"
        );
        assert!(frame.go_away.is_none() && frame.resumption.is_none(), "{f}");
    }
    assert!(m.is_empty());
    // A turn's end with its reason is a turn end, not content.
    let f = inspect_server(
        br#"{"serverContent":{"turnComplete":true,"turnCompleteReason":"NEED_MORE_INPUT"}}"#,
        &mut m,
    );
    assert!(f.turn_complete && !f.content);
    // Output transcription and generationComplete are the model's turn.
    for f in [
        r#"{"serverContent":{"outputTranscription":{"text":"turnComplete"}}}"#,
        r#"{"serverContent":{"generationComplete":true,"interactionStatus":"IN_PROGRESS","outputTranscription":{"text":"usageMetadata"}}}"#,
    ] {
        assert!(inspect_server(f.as_bytes(), &mut m).content, "{f}");
    }
}

#[test]
fn several_parts_per_event_are_measured_part_by_part() {
    let mut m = Media::default();
    // Thought + text + audio + video frame + the audio's transcript, in one event.
    let frame = format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"text":"thinking it over","thought":true}},{{"text":"héllo"}},{{"inlineData":{{"mimeType":"audio/pcm;rate=24000","data":"{}"}}}},{{"inlineData":{{"mimeType":"video/mp4","data":"{}"}}}},{{"inlineData":{{"mimeType":"video/mp4","data":"{}"}}}}]}},"outputTranscription":{{"text":"hello there"}},"interactionStatus":"IN_PROGRESS"}}}}"#,
        b64(12_000),
        b64(900),
        b64(900)
    );
    let f = inspect_server(frame.as_bytes(), &mut m);
    assert!(f.content && f.audio && !f.turn_complete);
    assert_eq!(f.video_frames, 2);
    // Thoughts and transcripts are not output text; the audio is 0.25 s.
    assert_eq!(m.output_characters, 5);
    assert!((m.output_audio_seconds - 0.25).abs() < 1e-9);
    // Video alone: counted, not audio.
    let frame = format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"inlineData":{{"mime_type":"Video/MP4","data":"{}"}}}}]}}}}}}"#,
        b64(300)
    );
    let f = inspect_server(frame.as_bytes(), &mut m);
    assert!(!f.audio && f.video_frames == 1);
}

#[test]
fn gemini_38_usage_keeps_thoughts_video_output_residual_prompt_and_traffic_type() {
    let mut m = Media::default();
    let raw = r#"{"promptTokenCount":89,"candidatesTokenCount":290,"thoughtsTokenCount":73,"totalTokenCount":379,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":64}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":32},{"modality":"VIDEO","tokenCount":258}],"trafficType":"ON_DEMAND"}"#;
    let f = inspect_server(
        format!(r#"{{"serverContent":{{"turnComplete":true}},"usageMetadata":{raw}}}"#).as_bytes(),
        &mut m,
    );
    assert!(f.turn_complete && !f.content);
    let u = f.usage.unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.response_tokens,
            u.thoughts_tokens,
            u.total_tokens
        ),
        (89, 290, 73, 379)
    );
    assert_eq!(u.response_details[1].modality, Modality::Video as i32);
    assert_eq!(u.response_details[1].token_count, 258);
    assert_eq!(u.traffic_type, "ON_DEMAND");
    assert_eq!(u.raw_json, raw);
}

#[test]
fn an_interruption_then_its_turn_end() {
    let mut m = Media::default();
    let f = inspect_server(br#"{"serverContent":{"interrupted":true}}"#, &mut m);
    assert!(f.interrupted && f.content && !f.turn_complete && f.usage.is_none());
    let f = inspect_server(
        br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":4}}"#,
        &mut m,
    );
    assert!(f.turn_complete && !f.interrupted);
    assert_eq!(f.usage.unwrap().prompt_tokens, 4);
}

#[test]
fn mime_types_match_their_prefix_in_any_case_without_panicking_on_multibyte_text() {
    for m in ["image/jpeg", "IMAGE/PNG", "Image/WebP", "  iMaGe/jpeg"] {
        assert!(is_image(m), "{m}");
        assert!(!is_video(m) && !is_pcm(m), "{m}");
    }
    for m in ["video/mp4", "VIDEO/MP4", "Video/webm", "\tvIdEo/x"] {
        assert!(is_video(m), "{m}");
        assert!(!is_image(m), "{m}");
    }
    for m in ["audio/pcm", "AUDIO/PCM;rate=24000", "Audio/Pcm;rate=16000"] {
        assert!(is_pcm(m), "{m}");
    }
    // Too short, another type, or a multi-byte character across the prefix's end.
    for m in [
        "",
        "image",
        "imag/",
        "images/x",
        "audio/pc",
        "audio/mpeg",
        "imagé/x",
        "vidéo/",
        "ímage/",
    ] {
        assert!(!is_image(m) && !is_video(m) && !is_pcm(m), "{m}");
    }
    // Measured the same whatever the case: one image part and one video frame.
    let mut m = Media::default();
    let frame = format!(
        r#"{{"realtimeInput":{{"video":{{"mimeType":"IMAGE/JPEG","data":"{}"}}}}}}"#,
        b64(30)
    );
    measure_client(frame.as_bytes(), &mut m);
    let lower = {
        let mut l = Media::default();
        measure_client(frame.replace("IMAGE/JPEG", "image/jpeg").as_bytes(), &mut l);
        l
    };
    assert_eq!(m.input_video_frames, 1);
    assert_eq!(m, lower);
}
