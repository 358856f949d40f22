//! The client side of a Live API session, for tests: frame builders (the camelCase form the
//! Google SDKs send and the snake_case form LiteLLM's clients send) and bounded readers over a
//! client WebSocket. Every wait ends within [`WAIT`]; a failure panics with what was seen.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "assertions for tests: a failure panics with what was seen"
)]

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket to the gateway.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single wait for a frame or a close may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// `{"setup":{"model": model}}` as a text frame (the SDKs' camelCase form).
pub fn setup(model: &str) -> Message {
    Message::text(serde_json::json!({"setup": {"model": model}}).to_string())
}

/// A setup asking for one response modality, in LiteLLM's snake_case form.
pub fn litellm_setup(model: &str, modality: &str) -> Message {
    Message::text(
        serde_json::json!({"setup": {"model": model, "generation_config": {"response_modalities": [modality]}}})
            .to_string(),
    )
}

/// A complete text turn (camelCase).
pub fn text_turn(text: &str) -> Message {
    Message::text(
        serde_json::json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}})
            .to_string(),
    )
}

/// A complete text turn in LiteLLM's snake_case form.
pub fn litellm_text_turn(text: &str) -> Message {
    Message::text(
        serde_json::json!({"client_content": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turn_complete": true}})
            .to_string(),
    )
}

/// The JSON of a text or binary frame.
///
/// # Panics
/// On a control frame or a frame that is not JSON.
pub fn json_of(msg: &Message) -> serde_json::Value {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("a JSON text frame"),
        Message::Binary(b) => serde_json::from_slice(b).expect("a JSON binary frame"),
        other => panic!("expected a data frame, got {other:?}"),
    }
}

/// The next data frame (pings and pongs skipped), within [`WAIT`].
///
/// # Panics
/// On a WebSocket error, the end of the stream, or no frame within [`WAIT`].
pub async fn next_frame(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(m)) => return m,
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => panic!("websocket ended"),
            }
        }
    })
    .await
    .expect("a frame within the wait")
}

/// Sends `setup` and expects `setupComplete` as the first frame back.
///
/// # Panics
/// When the send fails or the first frame is something else.
pub async fn open_session(ws: &mut Ws, setup: Message) {
    ws.send(setup).await.expect("setup sent");
    let first = next_frame(ws).await;
    assert!(
        json_of(&first).get("setupComplete").is_some(),
        "expected setupComplete, got {first:?}"
    );
}

/// Frames up to and with the one carrying `serverContent.turnComplete` (at most 1,000).
///
/// # Panics
/// When no turn ends within 1,000 frames or a wait runs out.
pub async fn read_turn(ws: &mut Ws) -> Vec<Message> {
    let mut frames = Vec::new();
    for _ in 0..1000 {
        let m = next_frame(ws).await;
        let done = matches!(&m, Message::Text(_) | Message::Binary(_))
            && json_of(&m)["serverContent"]["turnComplete"] == true;
        frames.push(m);
        if done {
            return frames;
        }
    }
    panic!("no turnComplete in 1,000 frames");
}

/// The model text of a turn, chunks concatenated.
pub fn turn_text(turn: &[Message]) -> String {
    turn.iter()
        .filter_map(|m| {
            json_of(m)["serverContent"]["modelTurn"]["parts"][0]["text"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The close frame's (code, reason), within [`WAIT`]; a close without a status is 1005.
///
/// # Panics
/// When the connection ends without a close frame or none comes within [`WAIT`].
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection ended without a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    })
    .await
    .expect("a close frame within the wait")
}

/// Reads until the connection ends (close handshake or not), within [`WAIT`].
///
/// # Panics
/// When the connection is still open after [`WAIT`].
pub async fn closed(ws: &mut Ws) {
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("connection ended within the wait");
}
