//! Reading just enough of Live API frames to meter them.
//!
//! Client frames are measured (text characters, PCM audio seconds, video frames, images) and
//! told apart when they end a turn (the budget check and turn timing need that, from the same
//! parse); server frames are measured (output characters, output audio seconds) and their
//! `usageMetadata` is extracted. One multi-pattern scan (Aho-Corasick, stopping at the first
//! hit) decides first whether a frame can carry anything of interest, so frames that cannot
//! (e.g. `setupComplete`, `goAway`, tool calls) are never parsed and allocate nothing. When
//! parsing is needed, borrowed `serde` structs skip everything else, strings are borrowed
//! from the frame, and base64 payloads are measured by length, never decoded. A parsed frame
//! still allocates: the lists of turns, parts and media chunks, a lower-cased copy of each
//! blob's MIME type, a copy of any string holding JSON escapes, and for `usageMetadata` the
//! normalised [`TokenUsage`] with its per-modality lists.
//!
//! Gemini 3.8 Live's additions are relayed untouched and read as follows: `contextUpdate`
//! (client) is neither media nor a turn end; `voiceActivity`, `voiceActivityDetectionSignal`
//! and `serverContent.interimInputTranscription` / `inputTranscription` /
//! `interactionStatus` / `turnCompleteReason` are neither model content, nor a turn end,
//! nor usage; a `modelTurn` with several parts is measured part by part; thought parts
//! (`thought: true`) are not output text (Google bills them as `thoughtsTokenCount`); output
//! video frames (`inlineData` `video/*`) are counted in [`ServerFrame::video_frames`].

use aho_corasick::AhoCorasick;
use livegate_proto::usage::{MediaMeasurements, Modality, ModalityTokens, TokenUsage};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Keys of the client messages worth parsing (camelCase and snake_case, first letter cut so
/// either case of it matches): `clientContent` and `realtimeInput` (media, turn ends) and
/// `toolResponse` (a turn end).
static CLIENT_KEYS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::new([
        "lientContent",
        "lient_content",
        "ealtimeInput",
        "ealtime_input",
        "oolResponse",
        "ool_response",
    ])
    .ok()
});

/// Keys of server messages worth parsing: `usageMetadata`, `modelTurn`, `turnComplete`,
/// `goAway`, `sessionResumptionUpdate`, `interrupted`.
static SERVER_KEYS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::new([
        "sageMetadata",
        "sage_metadata",
        "odelTurn",
        "odel_turn",
        "urnComplete",
        "urn_complete",
        "oAway",
        "o_away",
        "essionResumptionUpdate",
        "ession_resumption_update",
        "nterrupted",
    ])
    .ok()
});

/// Whether `frame` mentions one of `keys` (true if the matcher could not be built: then every
/// frame is parsed, which is slower but measures the same).
fn mentions(keys: &LazyLock<Option<AhoCorasick>>, frame: &[u8]) -> bool {
    keys.as_ref().is_none_or(|k| k.is_match(frame))
}

/// Sample rate assumed for `audio/pcm` without a `rate=` parameter (Google's input default).
pub const DEFAULT_INPUT_RATE: u32 = 16_000;
/// Sample rate assumed for output `audio/pcm` without a `rate=` parameter.
pub const DEFAULT_OUTPUT_RATE: u32 = 24_000;
/// Seconds one video frame stands for: Live API clients send JPEG frames at 1 fps.
pub const SECONDS_PER_VIDEO_FRAME: f64 = 1.0;

/// Gateway-side measurements accumulated between two usage reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Media {
    pub input_characters: u64,
    pub input_audio_seconds: f64,
    pub input_video_frames: u64,
    pub input_images: u64,
    pub output_characters: u64,
    pub output_audio_seconds: f64,
}

impl Media {
    /// The wire form, leaving `self` empty for the next interval.
    pub fn take(&mut self) -> MediaMeasurements {
        let m = std::mem::take(self);
        MediaMeasurements {
            input_characters: m.input_characters,
            input_audio_seconds: m.input_audio_seconds,
            input_video_seconds: m.input_video_frames as f64 * SECONDS_PER_VIDEO_FRAME,
            input_video_frames: m.input_video_frames,
            input_images: m.input_images,
            output_characters: m.output_characters,
            output_audio_seconds: m.output_audio_seconds,
        }
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: Media) {
        self.input_characters += other.input_characters;
        self.input_audio_seconds += other.input_audio_seconds;
        self.input_video_frames += other.input_video_frames;
        self.input_images += other.input_images;
        self.output_characters += other.output_characters;
        self.output_audio_seconds += other.output_audio_seconds;
    }

    /// True when nothing was measured.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Bytes a base64 string decodes to, computed from its length and padding.
fn base64_len(data: &str) -> u64 {
    let trimmed = data.trim_end_matches('=');
    (trimmed.len() as u64 * 3) / 4
}

/// The `rate=` parameter of a mime type like `audio/pcm;rate=16000`.
fn pcm_rate(mime: &str, default: u32) -> u32 {
    mime.split(';')
        .skip(1)
        .filter_map(|p| p.trim().strip_prefix("rate="))
        .find_map(|r| r.trim().parse::<u32>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(default)
}

/// Seconds of 16-bit mono PCM in a base64 payload.
fn pcm_seconds(mime: &str, data: &str, default_rate: u32) -> f64 {
    base64_len(data) as f64 / 2.0 / f64::from(pcm_rate(mime, default_rate))
}

/// Whether `mime` (leading whitespace ignored) starts with the lower-case ASCII `prefix`,
/// in any case. Compares bytes in place: measured on every media part of every frame, so no
/// lower-cased copy is made; a prefix ending inside a multi-byte character simply differs.
fn mime_starts_with(mime: &str, prefix: &str) -> bool {
    mime.trim_start()
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn is_pcm(mime: &str) -> bool {
    mime_starts_with(mime, "audio/pcm")
}

fn is_image(mime: &str) -> bool {
    mime_starts_with(mime, "image/")
}

fn is_video(mime: &str) -> bool {
    mime_starts_with(mime, "video/")
}

#[derive(Deserialize)]
struct Blob<'a> {
    #[serde(rename = "mimeType", alias = "mime_type", borrow, default)]
    mime_type: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    /// A thought summary (Gemini 3.x `thinkingConfig.includeThoughts`), not the answer.
    #[serde(default)]
    thought: bool,
    #[serde(rename = "inlineData", alias = "inline_data", borrow, default)]
    inline_data: Option<Blob<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct ClientContent<'a> {
    #[serde(borrow, default)]
    turns: Vec<Content<'a>>,
    #[serde(rename = "turnComplete", alias = "turn_complete", default)]
    turn_complete: bool,
}

#[derive(Deserialize)]
struct RealtimeInput<'a> {
    #[serde(borrow, default)]
    audio: Option<Blob<'a>>,
    #[serde(borrow, default)]
    video: Option<Blob<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(rename = "mediaChunks", alias = "media_chunks", borrow, default)]
    media_chunks: Vec<Blob<'a>>,
    /// Manual activity detection: the user stopped speaking (an empty object).
    #[serde(rename = "activityEnd", alias = "activity_end", default)]
    activity_end: Option<serde::de::IgnoredAny>,
    #[serde(rename = "audioStreamEnd", alias = "audio_stream_end", default)]
    audio_stream_end: bool,
}

#[derive(Deserialize)]
struct ClientMessage<'a> {
    #[serde(rename = "clientContent", alias = "client_content", borrow, default)]
    client_content: Option<ClientContent<'a>>,
    #[serde(rename = "realtimeInput", alias = "realtime_input", borrow, default)]
    realtime_input: Option<RealtimeInput<'a>>,
    /// Skipped, not kept: only its presence matters.
    #[serde(rename = "toolResponse", alias = "tool_response", default)]
    tool_response: Option<serde::de::IgnoredAny>,
}

/// What the relay needs to know about a client frame besides its media.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientFrame {
    /// The frame asks the model to answer now: `clientContent.turnComplete: true`,
    /// `realtimeInput.activityEnd`, `realtimeInput.audioStreamEnd: true`, or a
    /// `toolResponse`. (With automatic activity detection the server decides where a spoken
    /// turn ends; no client frame says so.)
    pub turn_end: bool,
}

/// Adds what a client frame carries to `media` and says whether it ends a turn. Frames that
/// are not JSON (or not one of the messages above) add nothing and end nothing; they are still
/// relayed and upstream judges them.
pub fn measure_client(frame: &[u8], media: &mut Media) -> ClientFrame {
    // Only clientContent and realtimeInput carry media; toolResponse only ends a turn.
    if !mentions(&CLIENT_KEYS, frame) {
        return ClientFrame::default();
    }
    let Ok(msg) = serde_json::from_slice::<ClientMessage<'_>>(frame) else {
        return ClientFrame::default();
    };
    let mut out = ClientFrame {
        turn_end: msg.tool_response.is_some(),
    };
    if let Some(cc) = msg.client_content {
        out.turn_end |= cc.turn_complete;
        for part in cc.turns.iter().flat_map(|t| &t.parts) {
            if let Some(t) = &part.text {
                media.input_characters += t.chars().count() as u64;
            }
            if let Some(b) = &part.inline_data {
                if is_image(&b.mime_type) {
                    media.input_images += 1;
                } else if is_pcm(&b.mime_type) {
                    media.input_audio_seconds +=
                        pcm_seconds(&b.mime_type, &b.data, DEFAULT_INPUT_RATE);
                }
            }
        }
    }
    if let Some(ri) = msg.realtime_input {
        out.turn_end |= ri.activity_end.is_some() || ri.audio_stream_end;
        if let Some(t) = &ri.text {
            media.input_characters += t.chars().count() as u64;
        }
        let blobs = ri
            .audio
            .iter()
            .chain(ri.video.iter())
            .chain(ri.media_chunks.iter());
        for b in blobs {
            if is_pcm(&b.mime_type) {
                media.input_audio_seconds += pcm_seconds(&b.mime_type, &b.data, DEFAULT_INPUT_RATE);
            } else if is_image(&b.mime_type) || is_video(&b.mime_type) {
                media.input_video_frames += 1;
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct ModalityCount<'a> {
    #[serde(borrow, default)]
    modality: Cow<'a, str>,
    #[serde(rename = "tokenCount", alias = "token_count", default)]
    token_count: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageMetadata<'a> {
    #[serde(rename = "promptTokenCount", alias = "prompt_token_count")]
    prompt: u64,
    #[serde(rename = "candidatesTokenCount", alias = "candidates_token_count")]
    candidates: Option<u64>,
    #[serde(rename = "responseTokenCount", alias = "response_token_count")]
    response: Option<u64>,
    #[serde(
        rename = "cachedContentTokenCount",
        alias = "cached_content_token_count"
    )]
    cached: u64,
    #[serde(
        rename = "toolUsePromptTokenCount",
        alias = "tool_use_prompt_token_count"
    )]
    tool_use: u64,
    #[serde(rename = "thoughtsTokenCount", alias = "thoughts_token_count")]
    thoughts: u64,
    #[serde(rename = "totalTokenCount", alias = "total_token_count")]
    total: u64,
    #[serde(
        rename = "promptTokensDetails",
        alias = "prompt_tokens_details",
        borrow
    )]
    prompt_details: Vec<ModalityCount<'a>>,
    #[serde(
        rename = "candidatesTokensDetails",
        alias = "candidates_tokens_details",
        borrow
    )]
    candidates_details: Option<Vec<ModalityCount<'a>>>,
    #[serde(
        rename = "responseTokensDetails",
        alias = "response_tokens_details",
        borrow
    )]
    response_details: Option<Vec<ModalityCount<'a>>>,
    #[serde(rename = "cacheTokensDetails", alias = "cache_tokens_details", borrow)]
    cache_details: Vec<ModalityCount<'a>>,
    #[serde(
        rename = "toolUsePromptTokensDetails",
        alias = "tool_use_prompt_tokens_details",
        borrow
    )]
    tool_use_details: Vec<ModalityCount<'a>>,
    #[serde(
        rename = "trafficType",
        alias = "traffic_type",
        alias = "serviceTier",
        alias = "service_tier",
        borrow
    )]
    traffic_type: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServerContent<'a> {
    #[serde(rename = "modelTurn", alias = "model_turn", borrow)]
    model_turn: Option<Content<'a>>,
    #[serde(rename = "turnComplete", alias = "turn_complete")]
    turn_complete: bool,
    interrupted: bool,
    #[serde(rename = "generationComplete", alias = "generation_complete")]
    generation_complete: bool,
    #[serde(rename = "outputTranscription", alias = "output_transcription")]
    output_transcription: Option<serde::de::IgnoredAny>,
    // Input-side and status fields: present, they make a frame "not model content".
    #[serde(rename = "inputTranscription", alias = "input_transcription")]
    input_transcription: Option<serde::de::IgnoredAny>,
    #[serde(
        rename = "interimInputTranscription",
        alias = "interim_input_transcription"
    )]
    interim_input_transcription: Option<serde::de::IgnoredAny>,
    #[serde(rename = "interactionStatus", alias = "interaction_status")]
    interaction_status: Option<serde::de::IgnoredAny>,
    #[serde(rename = "waitingForInput", alias = "waiting_for_input")]
    waiting_for_input: Option<serde::de::IgnoredAny>,
    #[serde(rename = "turnCompleteReason", alias = "turn_complete_reason")]
    turn_complete_reason: Option<serde::de::IgnoredAny>,
}

impl ServerContent<'_> {
    /// The model is producing (or was cut short while producing) its turn: model parts,
    /// their transcription, the end of generation, an interruption. Input transcriptions
    /// (interim or final) and status fields are not; any other `serverContent` without
    /// `turnComplete` still counts, as before 3.8 (e.g. `groundingMetadata`).
    fn is_model_content(&self) -> bool {
        if self.model_turn.is_some()
            || self.output_transcription.is_some()
            || self.interrupted
            || self.generation_complete
        {
            return true;
        }
        let side_fields = self.input_transcription.is_some()
            || self.interim_input_transcription.is_some()
            || self.interaction_status.is_some()
            || self.waiting_for_input.is_some()
            || self.turn_complete_reason.is_some();
        !self.turn_complete && !side_fields
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GoAway<'a> {
    #[serde(rename = "timeLeft", alias = "time_left", borrow)]
    time_left: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResumptionUpdateMessage<'a> {
    #[serde(rename = "newHandle", alias = "new_handle", borrow)]
    new_handle: Option<Cow<'a, str>>,
    resumable: bool,
    /// int64: a string in proto-JSON, a number from some encoders.
    #[serde(
        rename = "lastConsumedClientMessageIndex",
        alias = "last_consumed_client_message_index"
    )]
    last_consumed: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServerMessage<'a> {
    #[serde(rename = "serverContent", alias = "server_content", borrow)]
    server_content: Option<ServerContent<'a>>,
    #[serde(rename = "goAway", alias = "go_away", borrow)]
    go_away: Option<GoAway<'a>>,
    #[serde(
        rename = "sessionResumptionUpdate",
        alias = "session_resumption_update",
        borrow
    )]
    resumption: Option<ResumptionUpdateMessage<'a>>,
    /// Kept as the upstream's bytes: the receipt carries them as sent.
    #[serde(rename = "usageMetadata", alias = "usage_metadata", borrow)]
    usage_metadata: Option<&'a serde_json::value::RawValue>,
}

/// What the relay needs to know about a server frame.
#[derive(Debug, Default, PartialEq)]
pub struct ServerFrame {
    /// The frame's `usageMetadata`, normalised.
    pub usage: Option<TokenUsage>,
    /// The frame ends a model turn (`serverContent.turnComplete: true`).
    pub turn_complete: bool,
    /// The frame carries model content or other `serverContent` (not a turn's end alone).
    pub content: bool,
    /// A `goAway`, with its `timeLeft` (zero when absent or unreadable).
    pub go_away: Option<std::time::Duration>,
    /// A `sessionResumptionUpdate`.
    pub resumption: Option<ResumptionUpdate>,
    /// The client's speech cut the model's turn short (`serverContent.interrupted: true`).
    pub interrupted: bool,
    /// The frame carries model audio (a PCM `inlineData` part).
    pub audio: bool,
    /// Output video frames in the frame (`inlineData` `video/*` parts: Gemini 3.8 Live
    /// avatars). Google bills them as VIDEO output tokens; the count is the gateway's own.
    pub video_frames: u32,
}

/// A `sessionResumptionUpdate`, as the gateway's resumption needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumptionUpdate {
    /// The handle to resume with, when the update carries one and says `resumable`.
    pub handle: Option<String>,
    /// `lastConsumedClientMessageIndex` (transparent mode): the index, on this connection, of
    /// the last client message the handle's state includes (setup is 0).
    pub last_consumed: Option<u64>,
}

/// A proto-JSON duration (`"10s"`, `"1.5s"`); `None` when unreadable.
pub fn proto_duration(s: &str) -> Option<std::time::Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    std::time::Duration::try_from_secs_f64(secs).ok()
}

fn modality(name: &str) -> Modality {
    match name {
        "TEXT" => Modality::Text,
        "IMAGE" => Modality::Image,
        "VIDEO" => Modality::Video,
        "AUDIO" => Modality::Audio,
        "DOCUMENT" => Modality::Document,
        _ => Modality::Unspecified,
    }
}

fn details(list: &[ModalityCount<'_>]) -> Vec<ModalityTokens> {
    list.iter()
        .map(|m| ModalityTokens {
            modality: modality(&m.modality) as i32,
            token_count: m.token_count,
        })
        .collect()
}

impl UsageMetadata<'_> {
    fn normalise(&self, raw: &serde_json::value::RawValue) -> TokenUsage {
        // Vertex says candidates*, the Developer API response*; never add the two up.
        let response = self.candidates.or(self.response).unwrap_or(0);
        let response_details = self
            .candidates_details
            .as_deref()
            .or(self.response_details.as_deref())
            .unwrap_or(&[]);
        TokenUsage {
            prompt_tokens: self.prompt,
            response_tokens: response,
            cached_tokens: self.cached,
            tool_use_prompt_tokens: self.tool_use,
            thoughts_tokens: self.thoughts,
            total_tokens: self.total,
            prompt_details: details(&self.prompt_details),
            response_details: details(response_details),
            cache_details: details(&self.cache_details),
            tool_use_prompt_details: details(&self.tool_use_details),
            traffic_type: self.traffic_type.to_string(),
            raw_json: raw.get().to_owned(),
        }
    }
}

/// Measures a server frame into `media` and extracts its usage and turn boundary.
pub fn inspect_server(frame: &[u8], media: &mut Media) -> ServerFrame {
    if !mentions(&SERVER_KEYS, frame) {
        return ServerFrame::default();
    }
    let Ok(msg) = serde_json::from_slice::<ServerMessage<'_>>(frame) else {
        return ServerFrame::default();
    };
    // A usageMetadata that is not an object of the expected shape reads as all zeros, as
    // the whole message did before: the frame is relayed either way, and the receipt keeps
    // what was sent.
    let usage = msg.usage_metadata.map(|raw| {
        serde_json::from_str::<UsageMetadata<'_>>(raw.get())
            .unwrap_or_default()
            .normalise(raw)
    });
    let mut out = ServerFrame {
        usage,
        go_away: msg.go_away.map(|g| {
            g.time_left
                .as_deref()
                .and_then(proto_duration)
                .unwrap_or_default()
        }),
        resumption: msg.resumption.map(|r| ResumptionUpdate {
            handle: r
                .new_handle
                .filter(|h| r.resumable && !h.is_empty())
                .map(Cow::into_owned),
            last_consumed: r.last_consumed.and_then(|v| match v {
                serde_json::Value::String(s) => s.trim().parse().ok(),
                other => other.as_u64(),
            }),
        }),
        ..ServerFrame::default()
    };
    if let Some(sc) = msg.server_content {
        out.turn_complete = sc.turn_complete;
        out.content = sc.is_model_content();
        out.interrupted = sc.interrupted;
        for part in sc.model_turn.iter().flat_map(|t| &t.parts) {
            if let Some(t) = &part.text
                && !part.thought
            {
                media.output_characters += t.chars().count() as u64;
            }
            if let Some(b) = &part.inline_data {
                if is_pcm(&b.mime_type) {
                    out.audio = true;
                    media.output_audio_seconds +=
                        pcm_seconds(&b.mime_type, &b.data, DEFAULT_OUTPUT_RATE);
                } else if is_video(&b.mime_type) {
                    out.video_frames = out.video_frames.saturating_add(1);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
