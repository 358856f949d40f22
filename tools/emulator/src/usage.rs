//! The emulator's token-counting formulas (all deterministic, documented in the README).
//!
//! Prompt (input) tokens, per answered turn, over the input received since the previous answer:
//! - TEXT: `ceil(chars / 4)`, chars = Unicode scalar values of all text in the turn;
//! - AUDIO: `ceil(seconds × 32)`, seconds = PCM bytes / 2 / sample rate;
//! - IMAGE: 258 per image; VIDEO: 263 per video frame (one frame = one second at 1 fps).
//!
//! Response (output) tokens, over the model-turn parts actually sent: TEXT `ceil(chars / 4)`
//! of the non-thought text parts, AUDIO 32 per second of reply audio, VIDEO
//! [`OUTPUT_VIDEO_TOKENS_PER_FRAME`] per output video frame (Gemini 3.8 Live avatars).

use crate::behaviour::UsageNames;
use serde_json::{Map, Value, json};

/// Characters per text token.
pub const CHARS_PER_TEXT_TOKEN: u64 = 4;
/// Audio tokens per second (input and output).
pub const AUDIO_TOKENS_PER_SECOND: u64 = 32;
/// Tokens per image.
pub const IMAGE_TOKENS: u64 = 258;
/// Tokens per second of video (one JPEG frame = one second at 1 fps).
pub const VIDEO_TOKENS_PER_SECOND: u64 = 263;
/// Sample rate assumed when an input audio mime type names none.
pub const DEFAULT_INPUT_RATE: u32 = 16_000;
/// Sample rate of reply audio.
pub const OUTPUT_RATE: u32 = 24_000;
/// VIDEO tokens per output video frame. live-api.md gives no rate for video *output*; the
/// emulator counts a frame like an image (258 tokens), the input rate per frame.
pub const OUTPUT_VIDEO_TOKENS_PER_FRAME: u64 = 258;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Input gathered for one turn.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Input {
    /// Text parts, in order.
    pub text: Vec<String>,
    /// Extra text characters that count as prompt but are not "said" (tool responses).
    pub extra_chars: u64,
    /// Audio duration in nanoseconds (exact for the usual rates).
    pub audio_nanos: u128,
    pub images: u64,
    pub video_frames: u64,
}

impl Input {
    pub(crate) fn is_empty(&self) -> bool {
        self.text.iter().all(String::is_empty)
            && self.extra_chars == 0
            && self.audio_nanos == 0
            && self.images == 0
            && self.video_frames == 0
    }

    pub(crate) fn add_audio(&mut self, bytes: usize, rate: u32) {
        self.audio_nanos = self.audio_nanos.saturating_add(audio_nanos(bytes, rate));
    }

    pub(crate) fn audio_seconds(&self) -> f64 {
        // Precision loss is irrelevant at display precision.
        self.audio_nanos as f64 / 1e9
    }

    pub(crate) fn text_chars(&self) -> u64 {
        let said: usize = self.text.iter().map(|t| t.chars().count()).sum();
        (said as u64).saturating_add(self.extra_chars)
    }

    /// All text parts joined by a space.
    pub(crate) fn joined_text(&self) -> String {
        self.text
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Nanoseconds of 16-bit mono PCM: `bytes / 2 / rate` seconds.
pub(crate) fn audio_nanos(bytes: usize, rate: u32) -> u128 {
    let rate = if rate == 0 { DEFAULT_INPUT_RATE } else { rate };
    (bytes as u128 / 2) * NANOS_PER_SECOND / u128::from(rate)
}

/// `ceil(n / d)`.
pub(crate) fn ceil_div(n: u64, d: u64) -> u64 {
    n.div_ceil(d)
}

/// Token counts per modality.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounts {
    /// TEXT tokens.
    pub text: u64,
    /// IMAGE tokens.
    pub image: u64,
    /// VIDEO tokens.
    pub video: u64,
    /// AUDIO tokens.
    pub audio: u64,
}

impl TokenCounts {
    /// Sum over modalities.
    pub fn total(&self) -> u64 {
        self.text + self.image + self.video + self.audio
    }

    /// `[{modality, tokenCount}]`, zero entries left out (as proto-JSON does).
    fn details(&self) -> Vec<Value> {
        [
            ("TEXT", self.text),
            ("IMAGE", self.image),
            ("VIDEO", self.video),
            ("AUDIO", self.audio),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(m, n)| json!({"modality": m, "tokenCount": n}))
        .collect()
    }
}

/// Prompt tokens of a turn's input.
pub(crate) fn prompt_tokens(input: &Input) -> TokenCounts {
    let audio_units = input
        .audio_nanos
        .saturating_mul(u128::from(AUDIO_TOKENS_PER_SECOND));
    let audio = audio_units.div_ceil(NANOS_PER_SECOND);
    TokenCounts {
        text: ceil_div(input.text_chars(), CHARS_PER_TEXT_TOKEN),
        image: input.images.saturating_mul(IMAGE_TOKENS),
        video: input.video_frames.saturating_mul(VIDEO_TOKENS_PER_SECOND),
        audio: u64::try_from(audio).unwrap_or(u64::MAX),
    }
}

/// Response tokens of the model-turn parts in `frames` (what the model actually sent, so a
/// reply cut short by an interruption is billed for what went out): non-thought text parts
/// `ceil(chars / 4)`, PCM audio `ceil(seconds × 32)`, video/* parts
/// [`OUTPUT_VIDEO_TOKENS_PER_FRAME`] each. Thought parts are reported as
/// `thoughtsTokenCount` instead, transcriptions are not output.
pub(crate) fn response_tokens_of<'a>(frames: impl IntoIterator<Item = &'a Value>) -> TokenCounts {
    let mut chars = 0u64;
    let mut nanos = 0u128;
    let mut video_frames = 0u64;
    let parts = frames
        .into_iter()
        .filter_map(|f| f.pointer("/serverContent/modelTurn/parts"))
        .filter_map(Value::as_array)
        .flatten();
    for part in parts {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            chars += t.chars().count() as u64;
        }
        if let Some(blob) = part.get("inlineData") {
            let mime = blob.get("mimeType").and_then(Value::as_str).unwrap_or("");
            let len = blob
                .get("data")
                .and_then(Value::as_str)
                .and_then(base64_decoded_len)
                .unwrap_or(0);
            if mime.starts_with("audio/") {
                let rate = if mime.contains("rate=") {
                    rate_from_mime(mime)
                } else {
                    OUTPUT_RATE
                };
                nanos = nanos.saturating_add(audio_nanos(len, rate));
            } else if mime.starts_with("video/") {
                video_frames += 1;
            }
        }
    }
    let audio = nanos
        .saturating_mul(u128::from(AUDIO_TOKENS_PER_SECOND))
        .div_ceil(NANOS_PER_SECOND);
    TokenCounts {
        text: ceil_div(chars, CHARS_PER_TEXT_TOKEN),
        video: video_frames.saturating_mul(OUTPUT_VIDEO_TOKENS_PER_FRAME),
        audio: u64::try_from(audio).unwrap_or(u64::MAX),
        ..TokenCounts::default()
    }
}

/// How a model family reports usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsageShape {
    /// Gemini 2.x: details add up to the counts, the total is their sum.
    #[default]
    Classic,
    /// Gemini 3.x Live, as field captures show it: [`GEMINI3_RESIDUAL_PROMPT_TOKENS`] prompt
    /// tokens with no modality in the details, thinking tokens (a quarter of the response,
    /// at least one) reported *outside* `totalTokenCount`, and `trafficType: ON_DEMAND`.
    Gemini3,
}

/// Prompt tokens per report a Gemini 3.x model counts without a modality (25 to 51 seen).
pub const GEMINI3_RESIDUAL_PROMPT_TOKENS: u64 = 25;

impl UsageShape {
    /// The shape for a model resource or id: Gemini 3.x models report the 3.x way.
    pub(crate) fn of_model(model: &str) -> Self {
        let id = model.rsplit('/').next().unwrap_or(model);
        if id.starts_with("gemini-3") {
            Self::Gemini3
        } else {
            Self::Classic
        }
    }
}

/// The `usageMetadata` object. Zero counts and empty lists are left out, as Google's
/// proto-JSON encoder does.
pub(crate) fn usage_metadata(
    prompt: TokenCounts,
    response: TokenCounts,
    names: UsageNames,
    shape: UsageShape,
) -> Value {
    let (out_count, out_details) = names.output_fields();
    let mut m = Map::new();
    let mut put = |k: &str, n: u64| {
        if n > 0 {
            m.insert(k.to_string(), json!(n));
        }
    };
    let (residual, thoughts) = match shape {
        UsageShape::Classic => (0, 0),
        UsageShape::Gemini3 => (
            GEMINI3_RESIDUAL_PROMPT_TOKENS,
            ceil_div(response.total(), 4).max(1),
        ),
    };
    put("promptTokenCount", prompt.total() + residual);
    put(out_count, response.total());
    put("thoughtsTokenCount", thoughts);
    // Thoughts stay outside the total, as Gemini 3.x reports it.
    put(
        "totalTokenCount",
        prompt.total() + residual + response.total(),
    );
    let pd = prompt.details();
    if !pd.is_empty() {
        m.insert("promptTokensDetails".into(), Value::Array(pd));
    }
    let rd = response.details();
    if !rd.is_empty() {
        m.insert(out_details.into(), Value::Array(rd));
    }
    if shape == UsageShape::Gemini3 {
        m.insert("trafficType".into(), json!("ON_DEMAND"));
    }
    Value::Object(m)
}

/// Decoded length of a base64 string (standard or URL-safe alphabet, padding optional),
/// or `None` when it is not base64. Counting is all the emulator needs, so it never decodes.
pub(crate) fn base64_decoded_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let unpadded = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    let valid = unpadded
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'));
    let n = unpadded.len();
    if !valid || n % 4 == 1 {
        return None;
    }
    Some(n * 3 / 4)
}

/// The sample rate named by a mime type like `audio/pcm;rate=16000`, or the default.
pub(crate) fn rate_from_mime(mime: &str) -> u32 {
    mime.split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("rate"))
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        .filter(|r| *r > 0)
        .unwrap_or(DEFAULT_INPUT_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_seconds_of_16k_audio_is_64_tokens() {
        let mut i = Input::default();
        i.add_audio(64_000, 16_000);
        assert_eq!(prompt_tokens(&i).audio, 64);
        let mut i = Input::default();
        i.add_audio(1, 16_000);
        i.add_audio(2, 16_000); // one sample = 1/16000 s → ceil → 1 token
        assert_eq!(prompt_tokens(&i).audio, 1);
    }

    #[test]
    fn text_is_ceil_chars_over_four() {
        let i = Input {
            text: vec!["hello".into(), "wörld".into()],
            ..Input::default()
        };
        assert_eq!(prompt_tokens(&i).text, 3);
        let turn = |t: &str| json!({"serverContent": {"modelTurn": {"parts": [{"text": t}]}}});
        assert_eq!(response_tokens_of(&[turn("abcd")]).text, 1);
        // Over the whole reply, not per chunk.
        assert_eq!(
            response_tokens_of(&[turn("ab"), turn("cd"), turn("e")]).text,
            2
        );
    }

    #[test]
    fn output_is_counted_from_the_parts_sent() {
        // Half a second of 24 kHz audio, a thought, a video frame, a transcription.
        let frame = json!({"serverContent": {"modelTurn": {"parts": [
            {"text": "thinking hard", "thought": true},
            {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "A".repeat(32_000)}},
            {"inlineData": {"mimeType": "video/mp4", "data": "AAAA"}},
            {"text": "abcde"}
        ]}, "outputTranscription": {"text": "not output"}}});
        let r = response_tokens_of(&[frame]);
        assert_eq!(
            (r.text, r.audio, r.video),
            (2, 16, OUTPUT_VIDEO_TOKENS_PER_FRAME)
        );
    }

    #[test]
    fn images_and_video() {
        let i = Input {
            images: 2,
            video_frames: 3,
            ..Input::default()
        };
        let p = prompt_tokens(&i);
        assert_eq!((p.image, p.video, p.total()), (516, 789, 1305));
    }

    #[test]
    fn usage_json_uses_requested_names_and_omits_zeros() {
        let p = TokenCounts {
            text: 3,
            ..TokenCounts::default()
        };
        let r = TokenCounts {
            audio: 32,
            ..TokenCounts::default()
        };
        let v = usage_metadata(p, r, UsageNames::Vertex, UsageShape::Classic);
        assert_eq!(
            v,
            json!({"promptTokenCount":3,"candidatesTokenCount":32,"totalTokenCount":35,
                   "promptTokensDetails":[{"modality":"TEXT","tokenCount":3}],
                   "candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":32}]})
        );
        let v = usage_metadata(p, r, UsageNames::Developer, UsageShape::Classic);
        assert_eq!(v["responseTokenCount"], 32);
        assert!(v.get("candidatesTokenCount").is_none());
    }

    #[test]
    fn gemini_3_reports_residual_prompt_tokens_thoughts_outside_the_total_and_traffic_type() {
        assert_eq!(
            UsageShape::of_model("projects/p/locations/l/publishers/google/models/gemini-3.8-live"),
            UsageShape::Gemini3
        );
        assert_eq!(
            UsageShape::of_model("gemini-live-2.5-flash"),
            UsageShape::Classic
        );
        let p = TokenCounts {
            audio: 64,
            ..TokenCounts::default()
        };
        let r = TokenCounts {
            text: 10,
            ..TokenCounts::default()
        };
        let v = usage_metadata(p, r, UsageNames::Vertex, UsageShape::Gemini3);
        assert_eq!(
            v,
            json!({"promptTokenCount":89,"candidatesTokenCount":10,"thoughtsTokenCount":3,
                   "totalTokenCount":99,
                   "promptTokensDetails":[{"modality":"AUDIO","tokenCount":64}],
                   "candidatesTokensDetails":[{"modality":"TEXT","tokenCount":10}],
                   "trafficType":"ON_DEMAND"})
        );
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_decoded_len(""), Some(0));
        assert_eq!(base64_decoded_len("QQ=="), Some(1));
        assert_eq!(base64_decoded_len("QUI="), Some(2));
        assert_eq!(base64_decoded_len("QUJD"), Some(3));
        assert_eq!(base64_decoded_len("QUJ"), Some(2));
        assert_eq!(base64_decoded_len("Q"), None);
        assert_eq!(base64_decoded_len("QU!D"), None);
    }

    #[test]
    fn rates() {
        assert_eq!(rate_from_mime("audio/pcm;rate=24000"), 24_000);
        assert_eq!(rate_from_mime("audio/pcm; Rate = 8000"), 8_000);
        assert_eq!(rate_from_mime("audio/pcm"), 16_000);
        assert_eq!(rate_from_mime("audio/pcm;rate=0"), 16_000);
    }
}
