//! What Gemini 3.8 Live adds to the protocol (live-api.md, "Changes seen by 2026-12"), spoken
//! when the setup's model is a 3.8 model (`gemini-3.8-live`, …):
//!
//! - client `contextUpdate`: replaces the system instruction and/or the tools mid-session;
//! - server `voiceActivity` (`voiceActivityType` `ACTIVITY_START` / `ACTIVITY_END`) around a
//!   spoken turn under automatic activity detection, plus `voiceActivityDetectionSignal`
//!   (`vadSignalType` `VAD_SIGNAL_TYPE_SOS` / `VAD_SIGNAL_TYPE_EOS`) when the setup asks for
//!   `explicitVadSignal: true`;
//! - `serverContent.interimInputTranscription` (cumulative) before the final
//!   `inputTranscription`;
//! - `serverContent.interactionStatus` (`IN_PROGRESS` while answering, `REQUIRES_ACTION`
//!   before a tool call);
//! - several parts per `modelTurn` event (thought + text, audio + video frame) and the output
//!   transcription in the same event as its audio;
//! - thought parts (`thought: true`) when `thinkingConfig.includeThoughts` is set;
//! - video output frames (`inlineData` `video/*`) when `responseModalities` has `VIDEO` or an
//!   `avatarConfig` is set, billed as VIDEO output tokens.
//!
//! live-api.md names these messages and fields but not all of their shapes. Where it is silent
//! the emulator follows the field names the google-genai SDKs use (`voiceActivityType`,
//! `vadSignalType`) and otherwise assumes, as marked at each place below.

use crate::wire::{self, field, str_field};
use serde_json::{Value, json};

/// Whether a model resource or id is a Gemini 3.8 Live model.
pub(crate) fn is_live38(model: &str) -> bool {
    let id = model.rsplit('/').next().unwrap_or(model);
    id.starts_with("gemini-3.8")
}

/// What a 3.8 setup asked for beyond the classic fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Live38 {
    /// `explicitVadSignal: true`: send `voiceActivityDetectionSignal` too.
    pub explicit_vad: bool,
    /// `VIDEO` in `responseModalities`, or an `avatarConfig`.
    pub video_out: bool,
    /// `thinkingConfig.includeThoughts: true` (in `generationConfig` or, as live-api.md lists
    /// it among the setup fields, in the setup itself).
    pub include_thoughts: bool,
    /// The system instruction of the last `contextUpdate`, reflected in the answers after it.
    pub instruction: Option<String>,
}

impl Live38 {
    pub(crate) fn from_setup(s: &Value) -> Self {
        let generation = field(s, "generationConfig");
        let video = |v: &Value| v.as_str().is_some_and(|m| m.eq_ignore_ascii_case("VIDEO"));
        let video_modality = match generation.and_then(|g| field(g, "responseModalities")) {
            Some(Value::Array(a)) => a.iter().any(video),
            Some(other) => video(other),
            None => false,
        };
        let thinking = generation
            .and_then(|g| field(g, "thinkingConfig"))
            .or_else(|| field(s, "thinkingConfig"));
        Self {
            explicit_vad: field(s, "explicitVadSignal").and_then(Value::as_bool) == Some(true),
            video_out: video_modality || field(s, "avatarConfig").is_some_and(|v| !v.is_null()),
            include_thoughts: thinking
                .and_then(|t| field(t, "includeThoughts"))
                .and_then(Value::as_bool)
                == Some(true),
            instruction: None,
        }
    }

    /// The frames that say the user started (`start`) or stopped speaking.
    pub(crate) fn voice_activity(&self, start: bool) -> Vec<Value> {
        let (activity, signal) = if start {
            ("ACTIVITY_START", "VAD_SIGNAL_TYPE_SOS")
        } else {
            ("ACTIVITY_END", "VAD_SIGNAL_TYPE_EOS")
        };
        let mut frames = vec![json!({"voiceActivity": {"voiceActivityType": activity}})];
        if self.explicit_vad {
            frames.push(json!({"voiceActivityDetectionSignal": {"vadSignalType": signal}}));
        }
        frames
    }
}

/// `contextUpdate`: live-api.md says only that it "replaces system instruction / tools
/// mid-session"; its fields are assumed to be the setup's (`systemInstruction`, `tools`).
/// Returns the instruction's text (parts joined by a space; a bare string accepted), if any.
pub(crate) fn instruction_text(update: &Value) -> Option<String> {
    let si = field(update, "systemInstruction")?;
    let text = match si {
        Value::String(s) => s.trim().to_string(),
        other => match field(other, "parts") {
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| str_field(p, "text"))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        },
    };
    Some(text)
}

/// An interim (cumulative) input transcription.
pub(crate) fn interim_transcription(text: &str) -> Value {
    json!({"serverContent": {"interimInputTranscription": {"text": text}}})
}

/// Bytes of one output video frame (a placeholder payload; the emulator does not encode video).
const VIDEO_FRAME_BYTES: usize = 1_200;
/// Mime type of output video frames. live-api.md says 3.8 Live can output VIDEO (avatars)
/// but not in what container; the emulator sends `video/mp4` parts.
pub(crate) const VIDEO_MIME: &str = "video/mp4";

fn video_part() -> Value {
    use base64::Engine as _;
    static FRAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let data = FRAME.get_or_init(|| {
        let bytes: Vec<u8> = (0..VIDEO_FRAME_BYTES).map(|i| (i % 251) as u8).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    json!({"inlineData": {"mimeType": VIDEO_MIME, "data": data}})
}

/// The model-turn events of a 3.8 reply: several parts per event. Audio replies: per chunk,
/// `[audio, video frame?]` with its output transcription in the same event; text replies: per
/// chunk `[text, video frame?]`. The first event starts with a thought part when thoughts were
/// asked for and carries `interactionStatus: IN_PROGRESS` (live-api.md names
/// `interactionStatus` without its place or values; the emulator sends it in `serverContent`
/// with the SDKs' values `IN_PROGRESS` / `REQUIRES_ACTION`).
pub(crate) fn model_events(
    reply: &str,
    live: &Live38,
    audio_out: bool,
    output_transcription: bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    if audio_out {
        let texts = wire::split_chunks(reply, wire::REPLY_AUDIO_CHUNKS);
        for (i, chunk) in wire::reply_audio_chunks().iter().enumerate() {
            let mut parts =
                vec![json!({"inlineData": {"mimeType": wire::REPLY_AUDIO_MIME, "data": chunk}})];
            if live.video_out {
                parts.push(video_part());
            }
            let mut content = json!({"modelTurn": {"parts": parts}});
            if output_transcription && let Some(t) = texts.get(i) {
                content["outputTranscription"] = json!({"text": t});
            }
            events.push(content);
        }
    } else {
        for chunk in wire::split_chunks(reply, 3) {
            let mut parts = vec![json!({"text": chunk})];
            if live.video_out {
                parts.push(video_part());
            }
            events.push(json!({"modelTurn": {"parts": parts}}));
        }
    }
    if let Some(first) = events.first_mut() {
        if live.include_thoughts
            && let Some(Value::Array(parts)) = first.pointer_mut("/modelTurn/parts")
        {
            parts.insert(
                0,
                json!({"text": format!("Thinking about how to answer: {reply}"), "thought": true}),
            );
        }
        first["interactionStatus"] = json!("IN_PROGRESS");
    }
    events
        .into_iter()
        .map(|content| json!({ "serverContent": content }))
        .collect()
}

/// The frame before a tool call: the model waits for the client's action.
pub(crate) fn requires_action() -> Value {
    json!({"serverContent": {"interactionStatus": "REQUIRES_ACTION"}})
}
