//! Credential spellings and what a browser token may grow into: every way of presenting a
//! browser token to `POST /v1/live/tokens` is refused with 401 (no token renews itself), a
//! credential the parser does not accept verbatim (a space, tab, comma, quote or non-ASCII
//! byte after `livegate-key.`, or two different values in one place) is refused with 4401 on
//! the WebSocket path and 401 on the token endpoint, and a minted token never outlives or
//! widens the key that minted it.

use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKENS: &str = "/v1/live/tokens";
const LIVE: &str = "/v1/vertex-ai/live";

/// Writes `head` (request line and headers, raw bytes: non-ASCII allowed) plus an empty line
/// and `body`; returns the connection and everything read up to the end of the response head.
async fn send_raw(addr: SocketAddr, head: &[u8], body: &str) -> (TcpStream, u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!(
            "Host: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    s.write_all(&req).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response head");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response head within 10 s");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (s, status, head, buf[end..].to_vec())
}

/// `POST /v1/live/tokens{query}` with `headers` (raw bytes); returns status and body.
async fn mint(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &[u8])],
    body: &str,
) -> (u16, String) {
    let mut head = format!("POST {TOKENS}{query} HTTP/1.1\r\nConnection: close\r\n").into_bytes();
    for (k, v) in headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    let (mut s, status, _, mut rest) = send_raw(addr, &head, body).await;
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("response body within 10 s")
        .unwrap();
    (status, String::from_utf8_lossy(&rest).into_owned())
}

/// A WebSocket handshake on `path` with `headers` (raw bytes), then the first close frame the
/// gateway sends (it never gets a setup frame). Returns the HTTP status, the echoed
/// subprotocol, and the close code and reason.
async fn ws_close(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &[u8])],
) -> (u16, Option<String>, Option<(u16, String)>) {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    .into_bytes();
    for (k, v) in headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    let (mut s, status, resp_head, mut buf) = send_raw(addr, &head, "").await;
    let echoed = resp_head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("sec-websocket-protocol:")
            .then(|| l.split_once(':').unwrap().1.trim().to_string())
    });
    if status != 101 {
        return (status, echoed, None);
    }
    // Server frames are unmasked: FIN+opcode, length (7 bits, or 16 bits after 126), payload.
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 4096];
        loop {
            if buf.len() >= 2 {
                let opcode = buf[0] & 0x0f;
                let (len, start) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                    126 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && buf.len() >= start + len {
                    let payload = buf[start..start + len].to_vec();
                    buf.drain(..start + len);
                    if opcode == 0x8 {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                    }
                    continue;
                }
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed without a close frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a close frame within 15 s");
    (status, echoed, Some(close))
}

async fn token_for(stack: &Stack, key: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {key}");
    let (status, body) = mint(
        stack.gateway.addr,
        "",
        &[("authorization", auth.as_bytes())],
        body,
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// A query string and at most one header (name, raw value).
type Spelling = (String, Option<(&'static str, Vec<u8>)>);

/// Every place and spelling a credential can take, for the token endpoint.
fn spellings(cred: &str) -> Vec<Spelling> {
    let h = |name, v: String| (String::new(), Some((name, v.into_bytes())));
    vec![
        h("authorization", format!("Bearer {cred}")),
        h("authorization", format!("bearer\t{cred}")),
        h("authorization", format!("BEARER   {cred}  ")),
        h("authorization", cred.to_string()),
        h("x-goog-api-key", cred.to_string()),
        h("api-key", format!(" {cred} ")),
        h("sec-websocket-protocol", format!("livegate-key.{cred}")),
        h(
            "sec-websocket-protocol",
            format!("json, livegate-key.{cred}"),
        ),
        h("sec-websocket-protocol", format!("livegate-key. {cred}")),
        h("sec-websocket-protocol", format!("livegate-key.\t{cred}")),
        h(
            "sec-websocket-protocol",
            format!("json,livegate-key.  {cred} "),
        ),
        (format!("?key={cred}"), None),
        (format!("?key=%20{cred}"), None),
        (format!("?key=%09{cred}%20"), None),
        (format!("?access_token={cred}"), None),
        (format!("?access_token=+{cred}"), None),
    ]
}

#[tokio::test]
async fn a_browser_token_cannot_mint_another_in_any_spelling() {
    let stack = Stack::start().await;
    let (key, _) = stack
        .create_key(KeySettings {
            allowed_models: vec![MODEL.into()],
            ..KeySettings::default()
        })
        .await;
    let (status, v) = token_for(
        &stack,
        &key,
        &format!(r#"{{"ttl_seconds": 60, "model": "{MODEL}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    for (query, header) in spellings(&token) {
        let headers: Vec<(&str, &[u8])> = header
            .as_ref()
            .map(|(k, v)| vec![(*k, v.as_slice())])
            .unwrap_or_default();
        let (status, body) = mint(stack.gateway.addr, &query, &headers, "{}").await;
        assert_eq!(
            status,
            401,
            "a browser token minted another via {query}{:?}: {body}",
            header.map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        );
        assert!(!body.contains("lgb-"), "{body}");
    }
}

#[tokio::test]
async fn malformed_spellings_of_a_valid_key_are_refused_not_trimmed() {
    let stack = Stack::start().await;
    let key = stack.key().await;
    let addr = stack.gateway.addr;
    // The canonical spellings of the key mint.
    for (query, header) in [
        (String::new(), Some(("x-goog-api-key", key.clone()))),
        (
            String::new(),
            Some((
                "sec-websocket-protocol",
                format!("json, livegate-key.{key}"),
            )),
        ),
        (format!("?key={key}"), None),
    ] {
        let headers: Vec<(&str, &[u8])> = header
            .as_ref()
            .map(|(k, v)| vec![(*k, v.as_bytes())])
            .unwrap_or_default();
        let (status, body) = mint(addr, &query, &headers, "").await;
        assert_eq!(status, 200, "{query} {header:?}: {body}");
    }
    // Anything else in a subprotocol, or a decoded query value with whitespace, is refused.
    let subprotocols: Vec<Vec<u8>> = vec![
        format!("livegate-key. {key}").into_bytes(),
        format!("livegate-key.\t{key}").into_bytes(),
        format!("livegate-key.{key} x").into_bytes(),
        format!("livegate-key.\"{key}\"").into_bytes(),
        format!("livegate-key.{key}/").into_bytes(),
        [format!("livegate-key.{key}").as_bytes(), "é".as_bytes()].concat(),
        b"livegate-key.".to_vec(),
        format!("livegate-key.{key}, livegate-key.lg-other").into_bytes(),
    ];
    for p in &subprotocols {
        let shown = String::from_utf8_lossy(p);
        let (status, body) = mint(addr, "", &[("sec-websocket-protocol", p)], "").await;
        assert_eq!(status, 401, "token endpoint took {shown:?}: {body}");
        let (status, _, close) = ws_close(addr, LIVE, &[("sec-websocket-protocol", p)]).await;
        assert_eq!(status, 101, "{shown:?}");
        let (code, reason) = close.unwrap();
        assert_eq!(code, 4401, "WebSocket took {shown:?}: {reason}");
    }
    for (query, header) in [
        (format!("?key=%20{key}"), None),
        (format!("?key={key}&key=lg-other"), None),
        (
            String::new(),
            Some(("authorization", format!("Bearer {key} x"))),
        ),
        (
            String::new(),
            Some(("authorization", format!("Basic {key}"))),
        ),
    ] {
        let headers: Vec<(&str, &[u8])> = header
            .as_ref()
            .map(|(k, v)| vec![(*k, v.as_bytes())])
            .unwrap_or_default();
        let (status, body) = mint(addr, &query, &headers, "").await;
        assert_eq!(status, 401, "{query} {header:?}: {body}");
        let path = format!("{LIVE}{query}");
        let (_, _, close) = ws_close(addr, &path, &headers).await;
        assert_eq!(close.unwrap().0, 4401, "{query} {header:?}");
    }
    // Two different Authorization headers are ambiguous.
    let auth = format!("Bearer {key}");
    let (status, _) = mint(
        addr,
        "",
        &[
            ("authorization", auth.as_bytes()),
            ("authorization", b"Bearer lg-other"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_well_formed_subprotocol_is_echoed_and_opens_a_session() {
    let stack = Stack::start_with_gateway(|g| g.setup_timeout = Duration::from_millis(300)).await;
    let key = stack.key().await;
    let offered = format!("json, livegate-key.{key}");
    let (status, echoed, close) = ws_close(
        stack.gateway.addr,
        LIVE,
        &[("sec-websocket-protocol", offered.as_bytes())],
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(echoed, Some(format!("livegate-key.{key}")));
    // Accepted: the gateway waits for setup (and, sent none, closes for that reason).
    assert_eq!(close.unwrap().0, 1008);
}

#[tokio::test]
async fn a_minted_token_never_outlives_or_widens_its_key() {
    let stack = Stack::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key_expiry = i64::try_from(now + 120).unwrap();
    let (key, _) = stack
        .create_key(KeySettings {
            allowed_models: vec![MODEL.into()],
            expires_at: Some(prost_types_timestamp(key_expiry)),
            ..KeySettings::default()
        })
        .await;
    // The key expires in 2 minutes: a 15-minute token expires with it.
    let (status, v) = token_for(&stack, &key, r#"{"ttl_seconds": 900}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["expires_at"].as_i64(), Some(key_expiry), "{v}");
    // A model outside the key's allowed models is refused, with a clear error.
    let (status, v) = token_for(&stack, &key, r#"{"model": "gemini-3.8-live"}"#).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not allowed for this key"),
        "{v}"
    );
    // An unbound token carries the key's own limits: another model is still refused.
    let (status, v) = token_for(&stack, &key, "").await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().unwrap();
    let mut ws = stack
        .connect(&format!("{LIVE}?access_token={token}"), None)
        .await;
    futures_util::SinkExt::send(&mut ws, litellm_setup("gemini-3.8-live", "TEXT"))
        .await
        .unwrap();
    assert_eq!(close_of(&mut ws).await.0, 4403);
    // A bound token, presented in every spelling, never mints an unbound (or longer) one.
    let (status, v) = token_for(
        &stack,
        &key,
        &format!(r#"{{"ttl_seconds": 30, "model": "{MODEL}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let bound = v["token"].as_str().unwrap().to_string();
    let (status, body) = mint(
        stack.gateway.addr,
        "",
        &[(
            "sec-websocket-protocol",
            format!("livegate-key. {bound}").as_bytes(),
        )],
        r#"{"ttl_seconds": 900}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

fn prost_types_timestamp(seconds: i64) -> livegate_proto::prost_types::Timestamp {
    livegate_proto::prost_types::Timestamp { seconds, nanos: 0 }
}
