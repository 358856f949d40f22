//! Small helpers for the JSON wire format: field lookup that accepts camelCase or snake_case
//! keys (as the proto-JSON mapping does), and the reply audio.

use base64::Engine as _;
use serde_json::Value;
use std::sync::OnceLock;

/// Looks up `camel` in an object, falling back to its snake_case spelling.
pub(crate) fn field<'a>(v: &'a Value, camel: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    if let Some(x) = obj.get(camel) {
        return Some(x);
    }
    if !camel.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    obj.get(&camel_to_snake(camel))
}

/// A string field.
pub(crate) fn str_field<'a>(v: &'a Value, camel: &str) -> Option<&'a str> {
    field(v, camel).and_then(Value::as_str)
}

/// `generationConfig` → `generation_config`.
pub(crate) fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sample count of the reply audio: one second at 24 kHz.
pub(crate) const REPLY_AUDIO_SECONDS: u64 = 1;
/// Number of `inlineData` chunks the reply audio is sent in.
pub(crate) const REPLY_AUDIO_CHUNKS: usize = 4;
/// Mime type of reply audio.
pub(crate) const REPLY_AUDIO_MIME: &str = "audio/pcm;rate=24000";

/// The reply audio, base64, in [`REPLY_AUDIO_CHUNKS`] chunks: one second of a 440 Hz sine at
/// 24 kHz, 16-bit little-endian mono (48,000 bytes, 12,000 per chunk). Computed once.
pub(crate) fn reply_audio_chunks() -> &'static [String] {
    static CHUNKS: OnceLock<Vec<String>> = OnceLock::new();
    CHUNKS.get_or_init(|| {
        let samples = crate::usage::OUTPUT_RATE as usize * REPLY_AUDIO_SECONDS as usize;
        let mut pcm = Vec::with_capacity(samples * 2);
        for i in 0..samples {
            let t = i as f64 / f64::from(crate::usage::OUTPUT_RATE);
            let s = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 6000.0;
            // |s| ≤ 6000, always in range.
            let s = s.round() as i16;
            pcm.extend_from_slice(&s.to_le_bytes());
        }
        pcm.chunks(pcm.len() / REPLY_AUDIO_CHUNKS)
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
            .collect()
    })
}

/// Cuts `text` into at most `n` pieces of near-equal character counts (never splitting a
/// character, never returning empty pieces).
pub(crate) fn split_chunks(text: &str, n: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let chars = bounds.len();
    if chars == 0 || n == 0 {
        return Vec::new();
    }
    let n = n.min(chars);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        let end = if k == n {
            text.len()
        } else {
            bounds[k * chars / n]
        };
        out.push(&text[start..end]);
        start = end;
    }
    out
}

/// Truncates a close reason to the 123 bytes a close frame can carry (on a char boundary).
pub(crate) fn close_reason(reason: &str) -> String {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason.to_string();
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_in_either_case() {
        let v = json!({"generation_config": 1, "turnComplete": true});
        assert_eq!(field(&v, "generationConfig"), Some(&json!(1)));
        assert_eq!(field(&v, "turnComplete"), Some(&json!(true)));
        assert_eq!(field(&v, "model"), None);
    }

    #[test]
    fn chunks() {
        assert_eq!(split_chunks("abcdefg", 3), vec!["ab", "cd", "efg"]);
        assert_eq!(split_chunks("ab", 3), vec!["a", "b"]);
        assert_eq!(split_chunks("äöü", 2), vec!["ä", "öü"]);
        assert!(split_chunks("", 3).is_empty());
    }

    #[test]
    fn reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= 123);
        assert_eq!(r.len(), 122);
    }

    #[test]
    fn reply_audio_is_one_second_at_24k() {
        let total: usize = reply_audio_chunks()
            .iter()
            .map(|c| crate::usage::base64_decoded_len(c).unwrap_or(0))
            .sum();
        assert_eq!(reply_audio_chunks().len(), REPLY_AUDIO_CHUNKS);
        assert_eq!(total, 48_000);
    }
}
