//! Shared test helpers: start an emulator, connect, read frames with timeouts.

use futures_util::{SinkExt as _, StreamExt as _};
use livegate_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const MODEL: &str =
    "projects/test-project/locations/us-central1/publishers/google/models/gemini-live-2.5-flash";
/// Upper bound for any single wait; never hit unless something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn spawn(config: EmulatorConfig) -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(listener, config).await
}

/// Connects with an optional bearer; returns the handshake error as is.
pub async fn try_connect(url: &str, bearer: Option<&str>) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    if let Some(b) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {b}").parse().unwrap());
    }
    let (ws, _resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")?;
    Ok(ws)
}

pub async fn connect(emu: &Emulator) -> Ws {
    try_connect(&emu.url(), None).await.unwrap()
}

/// The HTTP status of a refused handshake.
pub async fn refused_status(url: &str, bearer: Option<&str>) -> (u16, Value) {
    match try_connect(url, bearer).await {
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("handshake unexpectedly accepted"),
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// A server frame: its JSON and whether it came as a binary frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub json: Value,
    pub binary: bool,
}

/// The next data frame (pings skipped). Panics on close or timeout.
pub async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Text(t) => {
                return Frame {
                    json: serde_json::from_str(&t).unwrap(),
                    binary: false,
                };
            }
            Message::Binary(b) => {
                return Frame {
                    json: serde_json::from_slice(&b).unwrap(),
                    binary: true,
                };
            }
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => {}
        }
    }
}

pub async fn next_json(ws: &mut Ws) -> Value {
    next_frame(ws).await.json
}

/// Sends `setup` and returns the `setupComplete` frame.
pub async fn setup(ws: &mut Ws, setup: Value) -> Value {
    send(ws, json!({ "setup": setup })).await;
    let f = next_json(ws).await;
    assert!(
        f.get("setupComplete").is_some(),
        "expected setupComplete, got {f}"
    );
    f
}

pub async fn text_setup(ws: &mut Ws) -> Value {
    setup(ws, json!({"model": MODEL})).await
}

/// Reads frames up to and including the one with `serverContent.turnComplete` (bounded).
pub async fn read_turn(ws: &mut Ws) -> Vec<Frame> {
    let mut frames = Vec::new();
    for _ in 0..1000 {
        let f = next_frame(ws).await;
        let done = f.json.pointer("/serverContent/turnComplete") == Some(&json!(true));
        frames.push(f);
        if done {
            return frames;
        }
    }
    panic!("no turnComplete within 1000 frames");
}

/// Reads until a close frame; returns it (data frames before it are returned too).
pub async fn read_close(ws: &mut Ws) -> (Option<CloseFrame>, Vec<Value>) {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for close");
        match msg {
            Some(Ok(Message::Close(c))) => return (c, seen),
            Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Binary(b))) => seen.push(serde_json::from_slice(&b).unwrap()),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("error before close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
    panic!("no close within 1000 frames");
}

/// All `usageMetadata` values in frames, in order.
pub fn usages(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| f.json.get("usageMetadata").cloned())
        .collect()
}

pub fn user_text(text: &str) -> Value {
    json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}})
}

/// `bytes` of silence-ish PCM, base64.
pub fn pcm_b64(bytes: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; bytes])
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}
