use super::*;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
struct TestEnv {
    names: UsageNames,
    handles: RefCell<HashMap<String, (String, Snapshot)>>,
    consumed: RefCell<Vec<(String, u64, String)>>,
}

impl SessionEnv for TestEnv {
    fn usage_names(&self) -> UsageNames {
        self.names
    }
    fn open(&self, _session: &str) {}
    fn resume(&self, handle: &str) -> Result<(String, Snapshot), Close> {
        self.handles.borrow().get(handle).cloned().ok_or(Close {
            code: 1008,
            reason: BAD_HANDLE.into(),
        })
    }
    fn issue_handle(&self, session: &str, snapshot: Snapshot) -> String {
        let mut h = self.handles.borrow_mut();
        let handle = format!("{session}.h{}", h.len() + 1);
        h.insert(handle.clone(), (session.to_string(), snapshot));
        handle
    }
    fn consumed(&self, session: &str, index: u64, kind: &str, _data: &[u8]) {
        self.consumed
            .borrow_mut()
            .push((session.to_string(), index, kind.to_string()));
    }
}

const MODEL: &str =
    "projects/p/locations/us-central1/publishers/google/models/gemini-live-2.5-flash";

fn send(s: &mut Session, env: &TestEnv, v: Value) -> Step {
    s.on_message(v.to_string().as_bytes(), env)
}

fn started(env: &TestEnv, setup: Value) -> Session {
    let mut s = Session::new("s1".into());
    let step = send(&mut s, env, json!({ "setup": setup }));
    assert!(step.started, "{:?}", step.close);
    assert_eq!(
        step.immediate[0],
        json!({"setupComplete": {"sessionId": "s1"}})
    );
    s
}

fn last_usage(step: &Step) -> &Value {
    step.reply
        .iter()
        .rev()
        .find_map(|f| f.get("usageMetadata"))
        .unwrap()
}

fn texts(step: &Step) -> String {
    step.reply
        .iter()
        .filter_map(|f| f.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn first_frame_rules() {
    let env = TestEnv::default();
    let mut s = Session::new("s".into());
    let c = s.on_message(b"not json", &env).close.unwrap();
    assert_eq!((c.code, c.reason.as_str()), (1007, INVALID_ARGUMENT));
    let mut s = Session::new("s".into());
    let c = send(&mut s, &env, json!({"clientContent": {}}))
        .close
        .unwrap();
    assert_eq!(c.code, 1008);
    let mut s = Session::new("s".into());
    let c = send(
        &mut s,
        &env,
        json!({"setup": {"model": "gemini-live-2.5-flash"}}),
    )
    .close
    .unwrap();
    assert_eq!(c.code, 1008);
    assert!(c.reason.contains("gemini-live-2.5-flash"));
    let mut s = Session::new("s".into());
    let c = send(&mut s, &env, json!({"setup": {}})).close.unwrap();
    assert_eq!(c.code, 1007);
}

#[test]
fn second_setup_and_unknown_messages_close_1007() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL}));
    let c = send(&mut s, &env, json!({"setup": {"model": MODEL}}))
        .close
        .unwrap();
    assert_eq!(c.code, 1007);
    let mut s = started(&env, json!({"model": MODEL}));
    let c = send(&mut s, &env, json!({"bogus": {}})).close.unwrap();
    assert_eq!(c.code, 1007);
    assert!(c.reason.contains("bogus"));
}

#[test]
fn text_turn_snake_case() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL}));
    let step = send(
        &mut s,
        &env,
        json!({"client_content": {"turns": [{"role": "user", "parts": [{"text": "Hello there"}]}], "turn_complete": true}}),
    );
    assert_eq!(texts(&step), "You said: Hello there");
    let chunks = step
        .reply
        .iter()
        .filter(|f| f.pointer("/serverContent/modelTurn").is_some())
        .count();
    assert_eq!(chunks, 3);
    // "Hello there" = 11 chars → 3; "You said: Hello there" = 21 chars → 6.
    assert_eq!(
        last_usage(&step),
        &json!({"promptTokenCount": 3, "candidatesTokenCount": 6, "totalTokenCount": 9,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
                "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 6}]})
    );
    let last = step.reply.last().unwrap();
    assert_eq!(
        last.pointer("/serverContent/turnComplete"),
        Some(&json!(true))
    );
}

#[test]
fn incomplete_turns_accumulate() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL}));
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "abcd"}]}]}}),
    );
    assert!(step.reply.is_empty());
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "efgh"}]}], "turnComplete": true}}),
    );
    assert_eq!(last_usage(&step)["promptTokenCount"], 2);
    assert_eq!(texts(&step), "You said: abcd efgh");
}

#[test]
fn realtime_audio_answered_on_audio_stream_end_with_audio_reply() {
    let env = TestEnv::default();
    let setup = json!({"model": MODEL, "generationConfig": {"responseModalities": ["AUDIO"]},
                       "inputAudioTranscription": {}, "outputAudioTranscription": {}});
    let mut s = started(&env, setup);
    let exact = "AAAA".repeat(32_000 / 3) + "AAA="; // 31,998 + 2 = 32,000 bytes
    assert_eq!(crate::usage::base64_decoded_len(&exact), Some(32_000));
    for _ in 0..2 {
        let step = send(
            &mut s,
            &env,
            json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": exact}}}),
        );
        assert!(step.reply.is_empty());
    }
    let step = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"audioStreamEnd": true}}),
    );
    let usage = last_usage(&step);
    assert_eq!(
        usage["promptTokensDetails"],
        json!([{"modality": "AUDIO", "tokenCount": 64}])
    );
    assert_eq!(
        usage["candidatesTokensDetails"],
        json!([{"modality": "AUDIO", "tokenCount": 32}])
    );
    let input_tx = step.reply[0].pointer("/serverContent/inputTranscription/text");
    assert_eq!(input_tx, Some(&json!("[2.00 seconds of audio]")));
    let audio: Vec<&Value> = step
        .reply
        .iter()
        .filter_map(|f| f.pointer("/serverContent/modelTurn/parts/0/inlineData"))
        .collect();
    assert_eq!(audio.len(), 4);
    assert_eq!(audio[0]["mimeType"], "audio/pcm;rate=24000");
    let out_tx: String = step
        .reply
        .iter()
        .filter_map(|f| f.pointer("/serverContent/outputTranscription/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(out_tx, "I received 2.00 seconds of audio.");
    // Nothing pending: audioStreamEnd alone is not a turn.
    let step = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"audioStreamEnd": true}}),
    );
    assert!(step.reply.is_empty());
}

#[test]
fn images_and_video_frames() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL}));
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [
            {"text": "what"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}],
            "turnComplete": true}}),
    );
    assert_eq!(
        last_usage(&step)["promptTokensDetails"],
        json!([{"modality": "TEXT", "tokenCount": 1}, {"modality": "IMAGE", "tokenCount": 258}])
    );
    for _ in 0..2 {
        send(
            &mut s,
            &env,
            json!({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": "AAAA"}}}),
        );
    }
    send(
        &mut s,
        &env,
        json!({"realtimeInput": {"mediaChunks": [{"mimeType": "image/jpeg", "data": "AAAA"}]}}),
    );
    let step = send(&mut s, &env, json!({"realtimeInput": {"activityEnd": {}}}));
    assert_eq!(
        last_usage(&step)["promptTokensDetails"],
        json!([{"modality": "VIDEO", "tokenCount": 789}])
    );
    assert_eq!(texts(&step), "I received 3 seconds of video.");
}

#[test]
fn bad_base64_closes_1007() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL}));
    let c = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm", "data": "!!"}}}),
    )
    .close
    .unwrap();
    assert_eq!(c.code, 1007);
}

#[test]
fn tool_call_then_response() {
    let env = TestEnv::default();
    let setup = json!({"model": MODEL, "tools": [{"functionDeclarations": [{"name": "get_weather"}, {"name": "get"}]}]});
    let mut s = started(&env, setup);
    let step = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"text": "please call get_weather now"}}),
    );
    assert_eq!(step.reply.len(), 1);
    let call = &step.reply[0];
    assert_eq!(
        call.pointer("/toolCall/functionCalls/0/name"),
        Some(&json!("get_weather"))
    );
    assert_eq!(
        call.pointer("/toolCall/functionCalls/0/id"),
        Some(&json!("s1-call-1"))
    );
    assert!(call.pointer("/toolCall/functionCalls/1").is_none());
    // "get_weather" = 11 chars → 3 response tokens.
    assert_eq!(call["usageMetadata"]["candidatesTokenCount"], 3);
    let resp = json!([{"id": "s1-call-1", "name": "get_weather", "response": {"t": 20}}]);
    let step = send(
        &mut s,
        &env,
        json!({"toolResponse": {"functionResponses": resp}}),
    );
    assert_eq!(
        texts(&step),
        "Tool results: get_weather returned {\"t\":20}"
    );
    let chars = resp.to_string().chars().count() as u64;
    assert_eq!(
        last_usage(&step)["promptTokenCount"],
        json!(chars.div_ceil(4))
    );
}

#[test]
fn resumption_handles() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL, "sessionResumption": {}}));
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "hi"}]}], "turnComplete": true}}),
    );
    let update = step.reply.last().unwrap();
    let handle = update
        .pointer("/sessionResumptionUpdate/newHandle")
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(
        update.pointer("/sessionResumptionUpdate/resumable"),
        Some(&json!(true))
    );
    let mut s2 = Session::new("s2".into());
    let step = send(
        &mut s2,
        &env,
        json!({"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}}),
    );
    assert!(step.started && step.resumed);
    // The resumed connection continues session s1.
    assert_eq!(s2.id(), "s1");
    assert_eq!(
        step.immediate[0],
        json!({"setupComplete": {"sessionId": "s1"}})
    );
    let mut s3 = Session::new("s3".into());
    let c = send(
        &mut s3,
        &env,
        json!({"setup": {"model": MODEL, "sessionResumption": {"handle": "nope"}}}),
    )
    .close
    .unwrap();
    assert_eq!(c.code, 1008);
}

#[test]
fn developer_names() {
    let env = TestEnv {
        names: UsageNames::Developer,
        ..TestEnv::default()
    };
    let mut s = started(&env, json!({"model": MODEL}));
    let step = send(&mut s, &env, json!({"realtimeInput": {"text": "abc"}}));
    let u = last_usage(&step);
    assert_eq!(u["responseTokenCount"], 4); // "You said: abc" = 13 chars
    assert!(u.get("responseTokensDetails").is_some());
    assert!(u.get("candidatesTokenCount").is_none());
}

#[test]
fn helpers() {
    assert!(is_model_resource(MODEL));
    assert!(!is_model_resource("publishers/google/models/x"));
    assert!(!is_model_resource(
        "projects//locations/l/publishers/google/models/x"
    ));
    assert!(mentions("call get_weather.", "get_weather"));
    assert!(!mentions("forget it", "get"));
    assert!(mentions("get", "get"));
}

const MODEL_38: &str = "projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live";

#[test]
fn live38_speaks_voice_activity_interim_transcription_parts_and_video() {
    let env = TestEnv::default();
    let mut s = started(
        &env,
        json!({"model": MODEL_38, "explicitVadSignal": true, "inputAudioTranscription": {},
               "outputAudioTranscription": {}, "avatarConfig": {"avatarName": "a"},
               "generationConfig": {"responseModalities": ["AUDIO"],
                                    "thinkingConfig": {"includeThoughts": true}}}),
    );
    let audio = json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": format!("{}=", "A".repeat(42_667))}}});
    let first = send(&mut s, &env, audio.clone());
    assert!(first.barge_in && first.reply.is_empty());
    assert_eq!(
        first.immediate[0],
        json!({"voiceActivity": {"voiceActivityType": "ACTIVITY_START"}})
    );
    assert_eq!(
        first.immediate[1],
        json!({"voiceActivityDetectionSignal": {"vadSignalType": "VAD_SIGNAL_TYPE_SOS"}})
    );
    assert!(
        first.immediate[2]
            .pointer("/serverContent/interimInputTranscription/text")
            .is_some()
    );
    // Still speaking: no new start, another interim.
    let second = send(&mut s, &env, audio);
    assert!(!second.barge_in);
    assert_eq!(second.immediate.len(), 1);
    let end = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"audioStreamEnd": true}}),
    );
    assert_eq!(
        end.reply[0],
        json!({"voiceActivity": {"voiceActivityType": "ACTIVITY_END"}})
    );
    assert_eq!(
        end.reply[1],
        json!({"voiceActivityDetectionSignal": {"vadSignalType": "VAD_SIGNAL_TYPE_EOS"}})
    );
    assert_eq!(
        end.reply[2],
        json!({"serverContent": {"inputTranscription": {"text": "[2.00 seconds of audio]"}}})
    );
    // Four events: audio + video frame each, the transcript alongside; thoughts first.
    let events: Vec<&Value> = end
        .reply
        .iter()
        .filter(|f| f.pointer("/serverContent/modelTurn").is_some())
        .collect();
    assert_eq!(events.len(), 4);
    let parts = events[0]["serverContent"]["modelTurn"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(parts[0]["thought"], true);
    assert_eq!(parts[1]["inlineData"]["mimeType"], "audio/pcm;rate=24000");
    assert_eq!(parts[2]["inlineData"]["mimeType"], "video/mp4");
    assert_eq!(
        events[0]["serverContent"]["interactionStatus"],
        "IN_PROGRESS"
    );
    assert!(events[1]["serverContent"]["outputTranscription"]["text"].is_string());
    let u = last_usage(&end);
    assert_eq!(u["promptTokenCount"], 64 + 25);
    assert_eq!(
        u["candidatesTokensDetails"],
        json!([{"modality": "VIDEO", "tokenCount": 4 * 258}, {"modality": "AUDIO", "tokenCount": 32}])
    );
    assert_eq!(u["candidatesTokenCount"], 4 * 258 + 32);
    assert_eq!(u["trafficType"], "ON_DEMAND");
    assert!(end.cut.is_some());
}

#[test]
fn live38_context_update_takes_effect_and_others_refuse_it() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL_38}));
    let update = json!({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Be a pirate."}]},
                        "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}});
    let step = send(&mut s, &env, update.clone());
    assert!(step.close.is_none() && step.reply.is_empty());
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "hi"}]}], "turnComplete": true}}),
    );
    assert!(step.barge_in);
    assert_eq!(texts(&step), "[Be a pirate.] You said: hi");
    // "Be a pirate." (12 chars) + "hi" (2) = 14 chars → 4 text tokens, plus 25 residual.
    assert_eq!(last_usage(&step)["promptTokenCount"], 4 + 25);
    // The new tool is called.
    let step = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"text": "use get_weather"}}),
    );
    assert_eq!(
        step.reply[0],
        json!({"serverContent": {"interactionStatus": "REQUIRES_ACTION"}})
    );
    assert!(step.reply[1].get("toolCall").is_some());
    // A 2.x model does not know the message.
    let mut s = started(&env, json!({"model": MODEL}));
    assert_eq!(send(&mut s, &env, update).close.unwrap().code, 1007);
}

#[test]
fn no_interruption_and_manual_activity_detection() {
    let env = TestEnv::default();
    let mut s = started(
        &env,
        json!({"model": MODEL, "realtimeInputConfig": {"activityHandling": "NO_INTERRUPTION"}}),
    );
    let step = send(&mut s, &env, json!({"realtimeInput": {"text": "hi"}}));
    assert!(!step.barge_in);
    let mut s = started(
        &env,
        json!({"model": MODEL_38, "realtimeInputConfig": {"automaticActivityDetection": {"disabled": true}}}),
    );
    let step = send(
        &mut s,
        &env,
        json!({"realtimeInput": {"activityStart": {}}}),
    );
    assert!(step.barge_in);
    let audio = json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm", "data": "AAAA"}}});
    let step = send(&mut s, &env, audio);
    // Manual detection: the client says when speech starts; no voiceActivity from the server.
    assert!(!step.barge_in && step.immediate.is_empty());
}

#[test]
fn live38_context_updates_survive_a_resume() {
    let env = TestEnv::default();
    let mut s = started(&env, json!({"model": MODEL_38, "sessionResumption": {}}));
    send(
        &mut s,
        &env,
        json!({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Be terse."}]},
               "tools": [{"functionDeclarations": [{"name": "lookup"}]}]}}),
    );
    let step = send(
        &mut s,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "hi"}]}], "turnComplete": true}}),
    );
    let handle = step
        .reply
        .last()
        .and_then(|u| u.pointer("/sessionResumptionUpdate/newHandle"))
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    let mut s2 = Session::new("s2".into());
    let step = send(
        &mut s2,
        &env,
        json!({"setup": {"model": MODEL_38, "sessionResumption": {"handle": handle}}}),
    );
    assert!(step.resumed);
    let step = send(
        &mut s2,
        &env,
        json!({"clientContent": {"turns": [{"parts": [{"text": "again"}]}], "turnComplete": true}}),
    );
    assert_eq!(texts(&step), "[Be terse.] You said: again");
    let step = send(
        &mut s2,
        &env,
        json!({"realtimeInput": {"text": "lookup now"}}),
    );
    assert!(step.reply.iter().any(|f| f.get("toolCall").is_some()));
}
