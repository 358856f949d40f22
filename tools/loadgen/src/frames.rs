//! Client frames, built once per run and shared by every session (cloning a
//! [`Message::Text`] only bumps a reference count), and a cheap reader for the only things the
//! load generator needs from server frames: `setupComplete`, `turnComplete`, `goAway`.

use base64::Engine as _;
use memchr::memmem;
use tokio_tungstenite::tungstenite::Message;

/// Input audio format: 16-bit little-endian mono PCM at 16 kHz (what the Live API expects).
pub const INPUT_RATE: u32 = 16_000;
/// One audio chunk covers this long: 100 ms, as the Live API samples stream it.
pub const CHUNK_MS: u64 = 100;
/// PCM bytes in one chunk.
pub const CHUNK_BYTES: usize = (INPUT_RATE as usize / 1000) * CHUNK_MS as usize * 2;

/// What a session sends.
#[derive(Debug, Clone)]
pub struct Frames {
    pub setup: Message,
    pub text_turn: Message,
    pub audio_chunk: Message,
    pub audio_end: Message,
}

impl Frames {
    /// Builds the frames: `setup` for `model` answering in `modality` (`TEXT` or `AUDIO`), a
    /// text turn carrying `text`, a 100 ms audio chunk and `audioStreamEnd`.
    pub fn new(model: &str, modality: &str, text: &str) -> Self {
        let setup = serde_json::json!({
            "setup": {"model": model, "generationConfig": {"responseModalities": [modality]}}
        });
        let turn = serde_json::json!({
            "clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}
        });
        let chunk = serde_json::json!({
            "realtimeInput": {"audio": {
                "mimeType": format!("audio/pcm;rate={INPUT_RATE}"),
                "data": base64::engine::general_purpose::STANDARD.encode(sine_chunk()),
            }}
        });
        Self {
            setup: Message::text(setup.to_string()),
            text_turn: Message::text(turn.to_string()),
            audio_chunk: Message::text(chunk.to_string()),
            audio_end: Message::text(r#"{"realtimeInput":{"audioStreamEnd":true}}"#),
        }
    }
}

/// 100 ms of a 440 Hz sine at 16 kHz: 44 whole periods, so chunks join without a click.
pub fn sine_chunk() -> Vec<u8> {
    let samples = CHUNK_BYTES / 2;
    let mut out = Vec::with_capacity(CHUNK_BYTES);
    for n in 0..samples {
        let t = n as f64 / f64::from(INPUT_RATE);
        let v = (f64::sin(2.0 * std::f64::consts::PI * 440.0 * t) * 8000.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// What the load generator reads from a server frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerFrame {
    pub setup_complete: bool,
    pub turn_complete: bool,
    pub go_away: bool,
}

/// True when `"key"` is followed (after optional whitespace and a colon) by `true`.
fn key_is_true(json: &[u8], key: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = memmem::find(&json[from..], key) {
        let mut rest = json[from + at + key.len()..].iter().copied().peekable();
        let ws = |r: &mut std::iter::Peekable<_>| {
            while r.next_if(|b: &u8| b.is_ascii_whitespace()).is_some() {}
        };
        ws(&mut rest);
        if rest.next() == Some(b':') {
            ws(&mut rest);
            if rest.take(4).eq(b"true".iter().copied()) {
                return true;
            }
        }
        from += at + key.len();
    }
    false
}

/// Classifies a server frame by substring scans, without parsing it. A key inside a JSON
/// string would be escaped (`\"turnComplete\"`), so text the model says cannot fool it.
pub fn classify(payload: &[u8]) -> ServerFrame {
    ServerFrame {
        setup_complete: memmem::find(payload, br#""setupComplete""#).is_some(),
        turn_complete: key_is_true(payload, br#""turnComplete""#),
        go_away: memmem::find(payload, br#""goAway""#).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_are_classified() {
        assert!(classify(br#"{"setupComplete":{}}"#).setup_complete);
        let done =
            br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"totalTokenCount":19}}"#;
        assert_eq!(
            classify(done),
            ServerFrame {
                turn_complete: true,
                ..ServerFrame::default()
            }
        );
        assert!(classify(br#"{"serverContent": {"turnComplete" : true}}"#).turn_complete);
        assert!(!classify(br#"{"serverContent":{"turnComplete":false}}"#).turn_complete);
        assert!(!classify(br#"{"serverContent":{"generationComplete":true}}"#).turn_complete);
        // The model repeating the key inside its text is escaped, so not a match.
        let text =
            br#"{"serverContent":{"modelTurn":{"parts":[{"text":"\"turnComplete\":true"}]}}}"#;
        assert!(!classify(text).turn_complete);
        assert!(classify(br#"{"goAway":{"timeLeft":"10s"}}"#).go_away);
    }

    #[test]
    fn client_frames_are_valid_json() {
        let f = Frames::new(
            "projects/p/locations/l/publishers/google/models/m",
            "TEXT",
            "hi \"you\"",
        );
        for m in [&f.setup, &f.text_turn, &f.audio_chunk, &f.audio_end] {
            let Message::Text(t) = m else {
                panic!("expected a text frame")
            };
            let _: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        }
        let Message::Text(t) = &f.audio_chunk else {
            panic!("expected a text frame")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        let data = v["realtimeInput"]["audio"]["data"].as_str().unwrap();
        let pcm = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(pcm.len(), 3200);
    }
}
