//! The front door before trust (issue 14, holes 2 and 3): connections that never finish the
//! TLS handshake, the request head or a request body are closed after their (short, set
//! here) timeouts while real sessions keep working; an oversized request head is refused;
//! connections beyond the caps are refused and counted; an over-limit message is closed with
//! 1009 from its header, before the gateway buffers it.
//!
//! Every wait is bounded by [`DEADLINE`], far above the timeouts configured: these tests say
//! that a close happens, never how fast.

use futures_util::SinkExt;
use livegate_system_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The longest any single close may take to arrive in these tests.
const DEADLINE: Duration = Duration::from_secs(20);
/// The pre-auth timeouts the gateways here run with.
const SHORT: Duration = Duration::from_millis(500);

/// Reads from `s` until the gateway closes it (EOF or a reset), bounded by [`DEADLINE`];
/// returns what was read. Panics if the connection is still open at the deadline.
async fn closed_by_gateway(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "{what}: still open after {DEADLINE:?} (read so far: {:?})",
        String::from_utf8_lossy(&out)
    );
    out
}

/// A TCP connection to `addr` from the loopback address `from` (the per-IP cap sees it).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// `GET /metrics` on an already open connection (one the caps have admitted).
async fn metrics_over(mut s: TcpStream) -> String {
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = closed_by_gateway(&mut s, "metrics request").await;
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample `name` in a metrics text (0 when absent).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A sample from `GET /metrics` once it is at least `min` (polled, bounded): the counters
/// move when a connection's task ends, just after the client saw the close.
async fn sample_at_least(addr: SocketAddr, name: &str, min: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _, body) = http(addr, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200);
        let v = sample(&body, name);
        if v >= min || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_and_half_sent_requests_are_closed_while_a_session_keeps_working() {
    let stack = Stack::start_with_gateway(|g| g.header_timeout = SHORT).await;
    let addr = stack.gateway.addr;
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;

    // Silent connections, half a request head, and a keep-alive connection gone quiet after
    // its first request.
    let mut silent = Vec::new();
    let mut half = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/vertex-ai/live HTTP/1.1\r\nHost: gw\r\nUpgrade: webs")
            .await
            .unwrap();
        half.push(s);
    }
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();

    // The session relays while those wait.
    ws.send(litellm_text_turn("while they wait")).await.unwrap();
    assert_eq!(
        turn_text(&read_turn(&mut ws).await),
        "You said: while they wait"
    );

    for s in &mut silent {
        let got = closed_by_gateway(s, "silent connection").await;
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{got:?}"
        );
    }
    for s in &mut half {
        closed_by_gateway(s, "half-sent request head").await;
    }
    let got = closed_by_gateway(&mut kept_alive, "idle keep-alive connection").await;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");

    // The session, idle far longer than the header timeout meanwhile, is untouched.
    ws.send(litellm_text_turn("still here")).await.unwrap();
    assert_eq!(turn_text(&read_turn(&mut ws).await), "You said: still here");
    let timeouts = sample_at_least(
        addr,
        "livegate_gateway_preauth_timeouts_total{phase=\"request_head\"}",
        41.0,
    )
    .await;
    assert!(timeouts >= 41.0, "counted {timeouts} head timeouts");
}

#[tokio::test]
async fn a_token_request_body_that_never_completes_gets_408() {
    let stack = Stack::start_with_gateway(|g| g.body_timeout = SHORT).await;
    let key = stack.key().await;
    let mut s = TcpStream::connect(stack.gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/live/tokens HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"ttl_seconds\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = String::from_utf8(closed_by_gateway(&mut s, "trickled body").await).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request body not received in time"), "{got}");
    // A complete body is still answered.
    let (status, _, body) = http(
        stack.gateway.addr,
        "POST",
        "/v1/live/tokens",
        &[("authorization", &format!("Bearer {key}"))],
        "{\"ttl_seconds\": 60}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let timeouts = sample_at_least(
        stack.gateway.addr,
        "livegate_gateway_preauth_timeouts_total{phase=\"request_body\"}",
        1.0,
    )
    .await;
    assert_eq!(timeouts, 1.0);
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let stack = Stack::start().await;
    let mut s = TcpStream::connect(stack.gateway.addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Padding: {}\r\n\r\n",
        // Over the gateway's 64 KiB head buffer plus one read; under hyper's default 400 KiB.
        "a".repeat(200 * 1024)
    );
    // The gateway may answer and close before it has read all of it.
    let _ = s.write_all(head.as_bytes()).await;
    let got = closed_by_gateway(&mut s, "oversized head").await;
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_closed_while_wss_works() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed_tls(dir.path());
    let tls = Some((cert.cert_path, cert.key_path));
    let stack = Stack::start_with_gateway(move |g| {
        g.tls = tls;
        g.tls_handshake_timeout = SHORT;
    })
    .await;
    let addr = stack.gateway.addr;
    let key = stack.key().await;

    // Silent, and the first bytes of a ClientHello (a handshake record header) only.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut req = format!("wss://localhost:{}/v1/vertex-ai/live", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        req,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(client))),
    )
    .await
    .unwrap();
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;

    closed_by_gateway(&mut silent, "silent TLS connection").await;
    closed_by_gateway(&mut partial, "partial ClientHello").await;
    ws.send(litellm_text_turn("over TLS")).await.unwrap();
    assert_eq!(turn_text(&read_turn(&mut ws).await), "You said: over TLS");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_counted() {
    // Long head timeout: the idle connections here must stay open on their own.
    let stack = Stack::start_with_gateway(|g| {
        g.max_connections = 3;
        g.header_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = stack.gateway.addr;
    let key = stack.key().await;
    // An upgraded session keeps its connection counted.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let idle_b = TcpStream::connect(addr).await.unwrap();
    // Accepted in order, so this fourth one finds the three above admitted.
    let mut over = TcpStream::connect(addr).await.unwrap();
    // It may have sent a request before it learns; no answer comes.
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let got = closed_by_gateway(&mut over, "connection over the cap").await;
    assert!(got.is_empty(), "refused without an answer: {got:?}");

    let metrics = metrics_over(idle_a).await;
    assert_eq!(
        sample(
            &metrics,
            "livegate_gateway_connections_refused_total{reason=\"max_connections\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "livegate_gateway_connections_open"),
        3.0,
        "{metrics}"
    );
    // The session was not disturbed.
    ws.send(litellm_text_turn("at the cap")).await.unwrap();
    assert_eq!(turn_text(&read_turn(&mut ws).await), "You said: at the cap");

    // Closing the session gives its place back: a new connection gets in (polled, bounded:
    // the place is released when the gateway has dropped the socket).
    ws.close(None).await.unwrap();
    drop(ws);
    drop(idle_b);
    let mut admitted = false;
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        if closed_by_gateway(&mut s, "probe")
            .await
            .starts_with(b"HTTP/1.1 200")
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "no connection admitted after the others closed");
}

#[tokio::test]
async fn the_per_ip_cap_refuses_one_address_and_not_another() {
    let stack = Stack::start_with_gateway(|g| {
        g.max_connections_per_ip = 2;
        g.header_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = stack.gateway.addr;
    let first = connect_from("127.0.0.1", addr).await;
    let _second = connect_from("127.0.0.1", addr).await;
    let mut third = connect_from("127.0.0.1", addr).await;
    let got = closed_by_gateway(&mut third, "third connection from one address").await;
    assert!(got.is_empty(), "{got:?}");
    // Another peer address is admitted.
    let other = connect_from("127.0.0.2", addr).await;
    let metrics = metrics_over(other).await;
    assert_eq!(
        sample(
            &metrics,
            "livegate_gateway_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0,
        "{metrics}"
    );
    drop(first);
}

/// A client data frame header (FIN as given, masked with a zero key, so the payload goes as
/// is) for a payload of `len` bytes.
fn frame_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xFFFF => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Writes raw bytes under the WebSocket (plain `ws://` only).
async fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.write_all(bytes).await.unwrap(),
        _ => panic!("plain connection expected"),
    }
}

const LIMIT: usize = 64 * 1024;

#[tokio::test]
async fn an_over_limit_message_is_closed_with_1009_before_it_is_buffered() {
    let stack = Stack::start_with_gateway(|g| g.max_frame_bytes = LIMIT).await;
    let key = stack.key().await;
    let path = "/v1/vertex-ai/live";

    // A frame announcing twice the limit, of which only 1 KiB is ever sent: refused from its
    // header (a gateway waiting to buffer it all would never answer).
    let mut ws = stack.connect(path, Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let mut bytes = frame_header(0x2, true, 2 * LIMIT as u64);
    bytes.extend_from_slice(&[b' '; 1024]);
    write_raw(&mut ws, &bytes).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(
        reason.contains(&format!("larger than {LIMIT} bytes")),
        "{reason}"
    );

    // A message in fragments each under the limit, together over it, never finished.
    let mut ws = stack.connect(path, Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    let part = vec![b' '; LIMIT / 2 + 1];
    let mut bytes = frame_header(0x2, false, part.len() as u64);
    bytes.extend_from_slice(&part);
    bytes.extend(frame_header(0x0, false, part.len() as u64));
    bytes.extend_from_slice(&part);
    write_raw(&mut ws, &bytes).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");

    // The setup frame itself, announced over the limit.
    let mut ws = stack.connect(path, Some(&key)).await;
    let mut bytes = frame_header(0x1, true, 2 * LIMIT as u64);
    bytes.extend_from_slice(b"{\"setup\":{\"model\":\"");
    write_raw(&mut ws, &bytes).await;
    assert_eq!(close_of(&mut ws).await.0, 1009);

    // A session under the limit still works on the same gateway.
    let mut ws = stack.connect(path, Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    ws.send(litellm_text_turn("small")).await.unwrap();
    assert_eq!(turn_text(&read_turn(&mut ws).await), "You said: small");
}
