//! One client connection: TCP (optionally from one of several loopback source addresses), the
//! WebSocket handshake with an optional bearer, reading server frames, closing; and
//! [`Failure`], the error kinds a report counts.

use crate::frames::{self, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A client socket.
pub type Ws = WebSocketStream<TcpStream>;

/// Longest wait for the server's answer to our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session (or one attempt in `setup` mode) failed. [`Failure::kind`] is the key the
/// report counts by; [`Failure::detail`] is one example shown next to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// TCP connect failed (refused, too many open files, no free port…).
    #[error("connect: {0}")]
    Connect(String),
    /// The server answered the upgrade with an HTTP status.
    #[error("handshake: HTTP {0}")]
    HandshakeStatus(u16),
    /// The handshake failed otherwise.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The server closed the session (before we did).
    #[error("close {code}: {reason}")]
    Closed { code: u16, reason: String },
    /// The connection ended without a close frame, or a read/write failed.
    #[error("connection lost: {0}")]
    Lost(String),
    /// Something did not happen in time (`what`: setup, turn, close, run).
    #[error("timeout: {0}")]
    Timeout(&'static str),
    /// The server sent something the session did not expect at that point.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl Failure {
    /// The counting key: close codes and HTTP statuses stay distinct, free text does not.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(e) => format!("connect: {e}"),
            Self::HandshakeStatus(s) => format!("handshake: HTTP {s}"),
            Self::Handshake(_) => "handshake: failed".into(),
            Self::Closed { code, .. } => format!("close {code}"),
            Self::Lost(_) => "connection lost".into(),
            Self::Timeout(what) => format!("timeout: {what}"),
            Self::Unexpected(_) => "unexpected frame".into(),
        }
    }

    /// An example message for the kind (the close reason, the error text).
    pub fn detail(&self) -> String {
        match self {
            Self::Closed { reason, .. } => reason.clone(),
            Self::Handshake(e) | Self::Lost(e) | Self::Unexpected(e) => e.clone(),
            Self::Connect(_) | Self::HandshakeStatus(_) | Self::Timeout(_) => String::new(),
        }
    }
}

fn lost(e: &WsError) -> Failure {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Failure::Lost("connection closed".into())
        }
        WsError::Io(io) => Failure::Lost(io.kind().to_string()),
        other => Failure::Lost(other.to_string()),
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub bearer: Option<String>,
    /// Source addresses, used round-robin by connection number (empty: the kernel picks).
    pub bind_ips: Vec<IpAddr>,
    pub connect_timeout: Duration,
}

impl Target {
    /// Resolves the URL's host once.
    ///
    /// # Errors
    /// An unparsable URL, a `wss://` URL (not supported), or a host that does not resolve.
    pub async fn new(
        url: &str,
        bearer: Option<String>,
        bind_ips: Vec<IpAddr>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse()?;
        anyhow::ensure!(
            uri.scheme_str() == Some("ws"),
            "only ws:// URLs are supported (the load generator measures the relay, not TLS)"
        );
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        Ok(Self {
            url: url.to_string(),
            addr,
            bearer,
            bind_ips,
            connect_timeout,
        })
    }

    /// The client WebSocket settings: a small read buffer, since 20,000 sockets × the default
    /// 128 KiB would make the load generator the biggest process on the machine.
    fn ws_config() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
    }

    async fn tcp(&self, n: u64) -> std::io::Result<TcpStream> {
        let stream = if self.bind_ips.is_empty() {
            TcpStream::connect(self.addr).await?
        } else {
            let ip = self.bind_ips[(n % self.bind_ips.len() as u64) as usize];
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(self.addr).await?
        };
        // Latency is the point: never let Nagle hold a small frame back.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects (connection number `n` picks the source address) and completes the handshake.
    ///
    /// # Errors
    /// [`Failure::Connect`], [`Failure::HandshakeStatus`], [`Failure::Handshake`].
    pub async fn connect(&self, n: u64) -> Result<Ws, Failure> {
        let stream = self
            .tcp(n)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Failure::Handshake(e.to_string()))?;
        if let Some(b) = &self.bearer {
            let v = format!("Bearer {b}")
                .parse()
                .map_err(|_| Failure::Handshake("the key is not a valid header value".into()))?;
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
        match tokio_tungstenite::client_async_with_config(req, stream, Some(Self::ws_config()))
            .await
        {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => Err(Failure::HandshakeStatus(resp.status().as_u16())),
            Err(e) => Err(Failure::Handshake(e.to_string())),
        }
    }

    /// Connects, sends `setup` and waits for `setupComplete`, all within the connect timeout.
    ///
    /// # Errors
    /// Any [`Failure`] on the way; [`Failure::Timeout`] (`setup`) when it takes too long.
    pub async fn open(&self, n: u64, setup: &Message) -> Result<Ws, Failure> {
        tokio::time::timeout(self.connect_timeout, async {
            let mut ws = self.connect(n).await?;
            ws.send(setup.clone()).await.map_err(|e| lost(&e))?;
            let first = next_frame(&mut ws).await?;
            if first.setup_complete {
                Ok(ws)
            } else {
                Err(Failure::Unexpected(
                    "first server frame is not setupComplete".into(),
                ))
            }
        })
        .await
        .map_err(|_| Failure::Timeout("setup"))?
    }
}

/// Sends a frame.
///
/// # Errors
/// [`Failure::Lost`].
pub async fn send(ws: &mut Ws, msg: Message) -> Result<(), Failure> {
    ws.send(msg).await.map_err(|e| lost(&e))
}

/// Reads the next data frame (pings are answered by tungstenite and skipped).
///
/// # Errors
/// [`Failure::Closed`] when the server closes, [`Failure::Lost`] when the connection ends.
pub async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(frames::classify(t.as_bytes())),
            Some(Ok(Message::Binary(b))) => return Ok(frames::classify(&b)),
            Some(Ok(Message::Close(f))) => {
                return Err(match f {
                    Some(f) => Failure::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    },
                    None => Failure::Closed {
                        code: 1005,
                        reason: String::new(),
                    },
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(lost(&e)),
            None => return Err(Failure::Lost("ended without a close frame".into())),
        }
    }
}

/// Closes with 1000 and waits (bounded) for the server's close frame.
///
/// # Errors
/// [`Failure::Timeout`] (`close`) when the server does not answer in time; a lost connection
/// after our close frame is not an error.
pub async fn close(mut ws: Ws) -> Result<(), Failure> {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "load generator done".into(),
    };
    tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read until the server's close arrives and the stream ends.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .map_err(|_| Failure::Timeout("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_group_by_code_not_text() {
        let a = Failure::Closed {
            code: 4401,
            reason: "invalid API key".into(),
        };
        assert_eq!(a.kind(), "close 4401");
        assert_eq!(a.detail(), "invalid API key");
        assert_eq!(Failure::HandshakeStatus(401).kind(), "handshake: HTTP 401");
        assert_eq!(Failure::Timeout("turn").kind(), "timeout: turn");
        assert_eq!(
            Failure::Lost("x".into()).kind(),
            Failure::Lost("y".into()).kind()
        );
    }
}
