//! The Live API protocol state machine of one session, free of I/O so it is unit-testable.
//!
//! [`Session::on_message`] takes one client frame (bytes of a text or binary WebSocket
//! message) and returns a [`Step`]: frames to send now, frames that answer a turn (sent after
//! the configured response delay), and maybe a close. The socket loop in `connection.rs`
//! carries the step out.
//!
//! Turn rules:
//! - `clientContent` is answered when `turnComplete` is true;
//! - `realtimeInput` is answered on `text`, `activityEnd` or `audioStreamEnd`, if any input
//!   (text, audio, video, image) arrived since the previous answer;
//! - a text turn that mentions a declared function name as a whole word gets a `toolCall`
//!   instead of an answer; the next `toolResponse` is answered with a normal turn.
//!
//! A frame that begins a new user turn (`clientContent` with `turnComplete`, `realtimeInput`
//! `text` or `activityStart`, or the first audio of a spoken turn under automatic activity
//! detection) sets [`Step::barge_in`]: the socket loop interrupts a reply still being
//! generated (see `replies.rs`), unless the setup's `activityHandling` is `NO_INTERRUPTION`.
//! Gemini 3.8 Live models speak the additions in `session/live38.rs`.

mod live38;

use crate::behaviour::UsageNames;
use crate::replies::Cut;
use crate::usage::{self, Input, TokenCounts};
use crate::wire::{self, field, str_field};
use serde_json::{Value, json};

/// Google's reason text for malformed requests.
pub(crate) const INVALID_ARGUMENT: &str = "Request contains an invalid argument.";

/// What the socket loop needs from the outside world.
pub(crate) trait SessionEnv {
    /// Output-usage names to write now.
    fn usage_names(&self) -> UsageNames;
    /// A new session (not a resume) starts on this connection.
    fn open(&self, session: &str);
    /// Claims the session a resumption handle belongs to for this connection: its id and the
    /// state the handle restores, or the close that refuses the resume (unknown or expired
    /// handle, or the session still open on another connection).
    fn resume(&self, handle: &str) -> Result<(String, Snapshot), Close>;
    /// Issues a new handle of `session` that restores `snapshot`; returns it.
    fn issue_handle(&self, session: &str, snapshot: Snapshot) -> String;
    /// Notes that `session` consumed client message `index` (of this connection, setup = 0)
    /// of kind `kind` with these bytes.
    fn consumed(&self, session: &str, index: u64, kind: &str, data: &[u8]);
}

/// The session state a resumption handle restores: the input not yet answered and the
/// function-call counter (so call ids stay unique across connections).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub pending: Input,
    pub calls: u64,
    /// What `contextUpdate`s changed (3.8 Live): the instruction and the tools, if updated.
    pub instruction: Option<String>,
    pub functions: Option<Vec<String>>,
}

/// Google's refusal of a resume while the session's previous connection is still open.
pub(crate) const STILL_OPEN: &str =
    "Session resumption failed: the session is still active on another connection";
/// The refusal of an unknown or expired handle.
pub(crate) const BAD_HANDLE: &str = "Session resumption handle is invalid or expired";

/// A close the session asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    pub code: u16,
    pub reason: String,
}

/// The result of one client frame.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Frames to send at once (`setupComplete`).
    pub immediate: Vec<Value>,
    /// Frames answering a turn (sent after the response delay).
    pub reply: Vec<Value>,
    /// Close the session after sending `immediate`.
    pub close: Option<Close>,
    /// This frame completed the setup (start the go-away / close timers).
    pub started: bool,
    /// The setup resumed a previous session.
    pub resumed: bool,
    /// How to report `reply` if an interruption cuts it short (model turns only).
    pub cut: Option<Cut>,
    /// This frame begins a new user turn: interrupt a reply still being generated.
    pub barge_in: bool,
}

impl Step {
    fn close(code: u16, reason: impl AsRef<str>) -> Self {
        Self {
            close: Some(Close {
                code,
                reason: wire::close_reason(reason.as_ref()),
            }),
            ..Self::default()
        }
    }
}

/// What the setup message asked for.
#[derive(Debug, Default)]
struct Setup {
    audio_out: bool,
    input_transcription: bool,
    output_transcription: bool,
    functions: Vec<String>,
    /// `functions` come from a `contextUpdate` (a resume restores them).
    functions_updated: bool,
    /// `Some(transparent)` when session resumption is on.
    resumption: Option<bool>,
    /// The usage shape of the model family (Gemini 3.x reports differently).
    shape: usage::UsageShape,
    /// `realtimeInputConfig.automaticActivityDetection.disabled` is not true.
    automatic_vad: bool,
    /// `realtimeInputConfig.activityHandling: NO_INTERRUPTION`.
    no_interruption: bool,
    /// A Gemini 3.8 Live model: what it adds.
    live38: Option<live38::Live38>,
}

/// One session's protocol state. Small on purpose: idle sessions cost little.
#[derive(Debug)]
pub(crate) struct Session {
    id: String,
    setup: Option<Setup>,
    pending: Input,
    /// Client messages received on this connection (setup included).
    client_messages: u64,
    /// Function calls issued.
    calls: u64,
    /// A spoken turn is in progress (audio arrived under automatic activity detection and
    /// has not been answered yet).
    speaking: bool,
    /// An interim transcription went out for the pending input.
    interim_sent: bool,
}

/// A turn's outcome kind.
enum Answer {
    /// Describe the input (or maybe call a tool).
    Input,
    /// Answer a tool response with this text.
    Fixed(String),
}

impl Session {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            setup: None,
            pending: Input::default(),
            client_messages: 0,
            calls: 0,
            speaking: false,
            interim_sent: false,
        }
    }

    /// The emulator's id for this session (sent as `setupComplete.sessionId`).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Handles one client frame.
    pub(crate) fn on_message(&mut self, data: &[u8], env: &impl SessionEnv) -> Step {
        self.client_messages += 1;
        let msg: Value = match serde_json::from_slice(data) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Step::close(1007, INVALID_ARGUMENT),
        };
        if self.setup.is_none() {
            return match field(&msg, "setup") {
                Some(s) => self.on_setup(s, env),
                None => Step::close(1008, "setup must be the first message"),
            };
        }
        if field(&msg, "setup").is_some() {
            return Step::close(
                1007,
                format!("{INVALID_ARGUMENT} setup was already received"),
            );
        }
        let kind = msg
            .as_object()
            .and_then(|o| o.keys().next())
            .map_or("", String::as_str);
        env.consumed(&self.id, self.client_messages - 1, kind, data);
        if let Some(c) = field(&msg, "clientContent") {
            self.on_client_content(c, env)
        } else if let Some(r) = field(&msg, "realtimeInput") {
            self.on_realtime_input(r, env)
        } else if let Some(t) = field(&msg, "toolResponse") {
            self.on_tool_response(t, env)
        } else if let Some(u) = field(&msg, "contextUpdate")
            && self.setup.as_ref().is_some_and(|s| s.live38.is_some())
        {
            self.on_context_update(u)
        } else {
            let name = msg
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            Step::close(
                1007,
                format!(
                    "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
                ),
            )
        }
    }

    fn on_setup(&mut self, s: &Value, env: &impl SessionEnv) -> Step {
        if !s.is_object() {
            return Step::close(1007, INVALID_ARGUMENT);
        }
        let Some(model) = str_field(s, "model").filter(|m| !m.is_empty()) else {
            return Step::close(1007, format!("{INVALID_ARGUMENT} setup.model is required"));
        };
        if !is_model_resource(model) {
            return Step::close(1008, format!("Publisher Model `{model}` was not found"));
        }
        let mut setup = Setup {
            shape: usage::UsageShape::of_model(model),
            live38: live38::is_live38(model).then(|| live38::Live38::from_setup(s)),
            ..Setup::default()
        };
        let realtime = field(s, "realtimeInputConfig");
        setup.automatic_vad = realtime
            .and_then(|r| field(r, "automaticActivityDetection"))
            .and_then(|a| field(a, "disabled"))
            .and_then(Value::as_bool)
            != Some(true);
        setup.no_interruption = realtime
            .and_then(|r| str_field(r, "activityHandling"))
            .is_some_and(|h| h.eq_ignore_ascii_case("NO_INTERRUPTION"));
        if let Some(modalities) =
            field(s, "generationConfig").and_then(|g| field(g, "responseModalities"))
        {
            let audio = |v: &Value| v.as_str().is_some_and(|m| m.eq_ignore_ascii_case("AUDIO"));
            setup.audio_out = match modalities {
                Value::Array(a) => a.iter().any(audio),
                other => audio(other),
            };
        }
        let on = |name| field(s, name).is_some_and(|v| !v.is_null());
        setup.input_transcription = on("inputAudioTranscription");
        setup.output_transcription = on("outputAudioTranscription");
        setup.functions = function_names(s);
        let mut resumed = false;
        if let Some(r @ Value::Object(_)) = field(s, "sessionResumption") {
            if let Some(handle) = str_field(r, "handle").filter(|h| !h.is_empty()) {
                let (id, snapshot) = match env.resume(handle) {
                    Ok(claimed) => claimed,
                    Err(close) => {
                        return Self::refuse(close);
                    }
                };
                self.id = id;
                self.pending = snapshot.pending;
                self.calls = snapshot.calls;
                if let Some(l) = setup.live38.as_mut() {
                    l.instruction = snapshot.instruction;
                }
                if let Some(f) = snapshot.functions {
                    setup.functions = f;
                    setup.functions_updated = true;
                }
                resumed = true;
            }
            setup.resumption = Some(field(r, "transparent").and_then(Value::as_bool) == Some(true));
        }
        if !resumed {
            env.open(&self.id);
        }
        self.setup = Some(setup);
        let mut immediate = vec![json!({"setupComplete": {"sessionId": self.id}})];
        // A first handle at once, so a connection that ends before any turn can be resumed.
        self.push_resumption_update(&mut immediate, env);
        Step {
            immediate,
            started: true,
            resumed,
            ..Step::default()
        }
    }

    fn refuse(close: Close) -> Step {
        Step {
            close: Some(close),
            ..Step::default()
        }
    }

    fn on_client_content(&mut self, c: &Value, env: &impl SessionEnv) -> Step {
        let turns: &[Value] = match field(c, "turns") {
            Some(Value::Array(a)) => a,
            Some(v @ Value::Object(_)) => std::slice::from_ref(v),
            _ => &[],
        };
        for content in turns {
            let Some(Value::Array(parts)) = field(content, "parts") else {
                continue;
            };
            for part in parts {
                if let Some(text) = str_field(part, "text") {
                    self.pending.text.push(text.to_string());
                }
                if let Some(blob) = field(part, "inlineData")
                    && let Err(step) = self.add_blob(blob, BlobKind::Content)
                {
                    return *step;
                }
            }
        }
        if field(c, "turnComplete").and_then(Value::as_bool) == Some(true) {
            let mut step = self.answer(Answer::Input, env);
            step.barge_in = self.may_interrupt();
            return step;
        }
        Step::default()
    }

    /// Whether a new user turn interrupts the model (not with `NO_INTERRUPTION`).
    fn may_interrupt(&self) -> bool {
        self.setup.as_ref().is_some_and(|s| !s.no_interruption)
    }

    /// `contextUpdate` (3.8 Live): replaces the system instruction and/or the tools. The new
    /// instruction counts as prompt text of the next turn (live-api.md does not say how an
    /// update is billed; the setup's own instruction is billed per session) and shows in the
    /// answers after it, so a client can see it took effect.
    fn on_context_update(&mut self, u: &Value) -> Step {
        let Some(setup) = self.setup.as_mut() else {
            return Step::default();
        };
        if field(u, "tools").is_some() {
            setup.functions = function_names(u);
            setup.functions_updated = true;
        }
        if let Some(text) = live38::instruction_text(u)
            && let Some(l) = setup.live38.as_mut()
        {
            self.pending.extra_chars += text.chars().count() as u64;
            l.instruction = Some(text).filter(|t| !t.is_empty());
        }
        Step::default()
    }

    fn on_realtime_input(&mut self, r: &Value, env: &impl SessionEnv) -> Step {
        let audio_before = self.pending.audio_nanos;
        let blobs = [
            (field(r, "audio"), BlobKind::Audio),
            (field(r, "video"), BlobKind::Video),
        ];
        for (blob, kind) in blobs {
            if let Some(b) = blob
                && let Err(step) = self.add_blob(b, kind)
            {
                return *step;
            }
        }
        if let Some(Value::Array(chunks)) = field(r, "mediaChunks") {
            for b in chunks {
                if let Err(step) = self.add_blob(b, BlobKind::MediaChunk) {
                    return *step;
                }
            }
        }
        let (automatic_vad, input_tx) = self
            .setup
            .as_ref()
            .map_or((false, false), |s| (s.automatic_vad, s.input_transcription));
        let mut immediate = Vec::new();
        let mut barge_in = field(r, "activityStart").is_some_and(|v| !v.is_null());
        let spoke = self.pending.audio_nanos > audio_before;
        if spoke && automatic_vad && !self.speaking {
            // Automatic activity detection hears the user start speaking.
            self.speaking = true;
            barge_in = true;
            if let Some(l) = self.live38() {
                immediate.extend(l.voice_activity(true));
            }
        }
        if spoke && input_tx && self.live38().is_some() {
            immediate.push(live38::interim_transcription(&audio_transcript(
                &self.pending,
            )));
            self.interim_sent = true;
        }
        let mut trigger = false;
        if let Some(text) = str_field(r, "text").filter(|t| !t.is_empty()) {
            self.pending.text.push(text.to_string());
            trigger = true;
            barge_in = true;
        }
        trigger |= field(r, "activityEnd").is_some_and(|v| !v.is_null());
        trigger |= field(r, "audioStreamEnd").and_then(Value::as_bool) == Some(true);
        let mut step = Step::default();
        if trigger && !self.pending.is_empty() {
            let ended_speech = std::mem::take(&mut self.speaking);
            step = self.answer(Answer::Input, env);
            if ended_speech && let Some(l) = self.live38() {
                let end = l.voice_activity(false);
                step.reply.splice(0..0, end);
            }
        }
        immediate.append(&mut step.immediate);
        step.immediate = immediate;
        step.barge_in = barge_in && self.may_interrupt();
        step
    }

    fn live38(&self) -> Option<&live38::Live38> {
        self.setup.as_ref().and_then(|s| s.live38.as_ref())
    }

    fn on_tool_response(&mut self, t: &Value, env: &impl SessionEnv) -> Step {
        let Some(Value::Array(responses)) = field(t, "functionResponses") else {
            return Step::close(
                1007,
                format!("{INVALID_ARGUMENT} toolResponse.functionResponses is required"),
            );
        };
        if responses.is_empty() {
            return Step::default();
        }
        let described: Vec<String> = responses
            .iter()
            .map(|r| {
                let name = str_field(r, "name").unwrap_or("function");
                let result =
                    field(r, "response").map_or_else(|| "null".to_string(), Value::to_string);
                format!("{name} returned {result}")
            })
            .collect();
        let serialized = Value::Array(responses.clone()).to_string();
        self.pending.extra_chars += serialized.chars().count() as u64;
        self.answer(
            Answer::Fixed(format!("Tool results: {}", described.join("; "))),
            env,
        )
    }

    /// Adds a `{mimeType, data}` blob to the pending input.
    fn add_blob(&mut self, blob: &Value, kind: BlobKind) -> Result<(), Box<Step>> {
        let mime = str_field(blob, "mimeType").unwrap_or_default();
        let data = str_field(blob, "data").unwrap_or_default();
        let Some(len) = usage::base64_decoded_len(data) else {
            return Err(Box::new(Step::close(
                1007,
                format!(
                    "Invalid value at '{}.data' (TYPE_BYTES), Base64 decoding failed",
                    kind.path()
                ),
            )));
        };
        let major = mime
            .split('/')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match (kind, major.as_str()) {
            (BlobKind::Audio | BlobKind::MediaChunk | BlobKind::Content, "audio") => {
                self.pending.add_audio(len, usage::rate_from_mime(mime));
            }
            (BlobKind::Audio, _) => self.pending.add_audio(len, usage::rate_from_mime(mime)),
            (BlobKind::Content, "image") => self.pending.images += 1,
            (BlobKind::Video, _) | (BlobKind::MediaChunk, "image" | "video") => {
                self.pending.video_frames += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers the pending input: a tool call, or a model turn ending in `turnComplete`.
    fn answer(&mut self, answer: Answer, env: &impl SessionEnv) -> Step {
        let Some(setup) = self.setup.as_ref() else {
            return Step::default();
        };
        let (audio_out, input_tx, output_tx, shape) = (
            setup.audio_out,
            setup.input_transcription,
            setup.output_transcription,
            setup.shape,
        );
        let live = setup.live38.clone();
        let input = std::mem::take(&mut self.pending);
        let interim_sent = std::mem::take(&mut self.interim_sent);
        let said = input.joined_text();
        let called: Vec<String> = match answer {
            Answer::Input => setup
                .functions
                .iter()
                .filter(|f| mentions(&said, f))
                .cloned()
                .collect(),
            Answer::Fixed(_) => Vec::new(),
        };
        let prompt = usage::prompt_tokens(&input);
        let names = env.usage_names();
        let mut frames = Vec::new();
        if input_tx && input.audio_nanos > 0 {
            let text = audio_transcript(&input);
            if live.is_some() && !interim_sent {
                frames.push(live38::interim_transcription(&text));
            }
            frames.push(json!({"serverContent": {"inputTranscription": {"text": text}}}));
        }
        if !called.is_empty() {
            let mut calls = Vec::with_capacity(called.len());
            let mut name_chars = 0u64;
            for name in called {
                self.calls += 1;
                name_chars += name.chars().count() as u64;
                calls.push(json!({"id": format!("{}-call-{}", self.id, self.calls), "name": name, "args": {}}));
            }
            let response = TokenCounts {
                text: usage::ceil_div(name_chars, usage::CHARS_PER_TEXT_TOKEN),
                ..TokenCounts::default()
            };
            if live.is_some() {
                frames.push(live38::requires_action());
            }
            frames.push(json!({
                "toolCall": {"functionCalls": calls},
                "usageMetadata": usage::usage_metadata(prompt, response, names, shape),
            }));
            self.push_resumption_update(&mut frames, env);
            return Step {
                reply: frames,
                ..Step::default()
            };
        }
        let mut reply = match answer {
            Answer::Fixed(text) => text,
            Answer::Input => describe(&input, &said),
        };
        let start = frames.len();
        if let Some(l) = &live {
            if let Some(instruction) = &l.instruction {
                reply = format!("[{instruction}] {reply}");
            }
            frames.extend(live38::model_events(&reply, l, audio_out, output_tx));
        } else if audio_out {
            let texts = wire::split_chunks(&reply, wire::REPLY_AUDIO_CHUNKS);
            for (i, chunk) in wire::reply_audio_chunks().iter().enumerate() {
                frames.push(json!({"serverContent": {"modelTurn": {"parts": [
                    {"inlineData": {"mimeType": wire::REPLY_AUDIO_MIME, "data": chunk}}
                ]}}}));
                if output_tx && let Some(t) = texts.get(i) {
                    frames.push(json!({"serverContent": {"outputTranscription": {"text": t}}}));
                }
            }
        } else {
            for chunk in wire::split_chunks(&reply, 3) {
                frames.push(json!({"serverContent": {"modelTurn": {"parts": [{"text": chunk}]}}}));
            }
        }
        let response = usage::response_tokens_of(&frames[start..]);
        frames.push(json!({"serverContent": {"generationComplete": true}}));
        frames.push(json!({
            "serverContent": {"turnComplete": true},
            "usageMetadata": usage::usage_metadata(prompt, response, names, shape),
        }));
        self.push_resumption_update(&mut frames, env);
        Step {
            reply: frames,
            cut: Some(Cut {
                prompt,
                names,
                shape,
            }),
            ..Step::default()
        }
    }

    fn push_resumption_update(&mut self, frames: &mut Vec<Value>, env: &impl SessionEnv) {
        let Some(transparent) = self.setup.as_ref().and_then(|s| s.resumption) else {
            return;
        };
        let setup = self.setup.as_ref();
        let snapshot = Snapshot {
            pending: self.pending.clone(),
            calls: self.calls,
            instruction: setup
                .and_then(|s| s.live38.as_ref())
                .and_then(|l| l.instruction.clone()),
            functions: setup
                .filter(|s| s.functions_updated)
                .map(|s| s.functions.clone()),
        };
        let handle = env.issue_handle(&self.id, snapshot);
        let mut update = json!({"newHandle": handle, "resumable": true});
        if transparent {
            // int64 → string in proto-JSON; index of the last client message, setup = 0.
            update["lastConsumedClientMessageIndex"] =
                json!(self.client_messages.saturating_sub(1).to_string());
        }
        frames.push(json!({"sessionResumptionUpdate": update}));
    }
}

/// Where a blob came from (decides how its mime type counts).
#[derive(Debug, Clone, Copy)]
enum BlobKind {
    /// `realtimeInput.audio`: always audio.
    Audio,
    /// `realtimeInput.video`: always one video frame.
    Video,
    /// `realtimeInput.mediaChunks[]`: audio/* is audio, image/* and video/* a video frame.
    MediaChunk,
    /// `clientContent` `inlineData`: audio/* is audio, image/* an image.
    Content,
}

impl BlobKind {
    fn path(self) -> &'static str {
        match self {
            Self::Audio => "realtime_input.audio",
            Self::Video => "realtime_input.video",
            Self::MediaChunk => "realtime_input.media_chunks",
            Self::Content => "client_content.turns.parts.inline_data",
        }
    }
}

/// The function names declared in `tools[].functionDeclarations[]` of a setup (or a
/// `contextUpdate`).
fn function_names(s: &Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(Value::Array(tools)) = field(s, "tools") {
        for tool in tools {
            if let Some(Value::Array(decls)) = field(tool, "functionDeclarations") {
                names.extend(
                    decls
                        .iter()
                        .filter_map(|d| str_field(d, "name"))
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                );
            }
        }
    }
    names
}

/// The emulator's transcript of the pending audio: `[2.00 seconds of audio]`.
fn audio_transcript(input: &Input) -> String {
    format!("[{:.2} seconds of audio]", input.audio_seconds())
}

/// `projects/*/locations/*/publishers/google/models/*`, each `*` one non-empty segment.
pub(crate) fn is_model_resource(model: &str) -> bool {
    let parts: Vec<&str> = model.split('/').collect();
    matches!(
        parts.as_slice(),
        ["projects", p, "locations", l, "publishers", "google", "models", m]
            if !p.is_empty() && !l.is_empty() && !m.is_empty()
    )
}

/// Whether `text` mentions `name` as a whole word (identifier characters `[A-Za-z0-9_]`).
pub(crate) fn mentions(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The reply text for an input: `You said: <text>` when the turn has text, otherwise a list
/// of what arrived (`I received 2.00 seconds of audio, 1 image.`).
pub(crate) fn describe(input: &Input, said: &str) -> String {
    if !said.is_empty() {
        return format!("You said: {said}");
    }
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut items = Vec::new();
    if input.audio_nanos > 0 {
        items.push(format!("{:.2} seconds of audio", input.audio_seconds()));
    }
    if input.images > 0 {
        items.push(plural(input.images, "image", "images"));
    }
    if input.video_frames > 0 {
        items.push(plural(
            input.video_frames,
            "second of video",
            "seconds of video",
        ));
    }
    if items.is_empty() {
        "I received nothing.".to_string()
    } else {
        format!("I received {}.", items.join(", "))
    }
}

#[cfg(test)]
mod tests;
