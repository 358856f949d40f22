//! Minimal HTTP/1.1 plumbing on loopback: a one-shot client (ClickHouse's HTTP interface,
//! readiness probes) and a tiny server for the Google stand-ins.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Sends one request on a fresh connection and returns the status and the whole body.
pub(crate) async fn send(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    // The connection future must be polled for the request to make progress; it ends when
    // `sender` is dropped at the end of this function.
    let conn = tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(body))
        .context("building request")?;
    let response = sender
        .send_request(request)
        .await
        .context("sending request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading response body")?
        .to_bytes();
    drop(sender);
    conn.abort();
    Ok((status, body))
}

/// A request handler for [`Server`]: gets the request with its whole body.
pub(crate) type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP/1.1 server on `127.0.0.1:<ephemeral>`, running as a task on the current tokio
/// runtime and aborted (with all its connections) on drop.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds and starts serving. The socket is bound before this returns, so clients can
    /// connect at once.
    pub(crate) async fn start(handler: Handler) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        // Detached on purpose: the handle aborts it on drop, and dropping the JoinSet inside
        // aborts every connection task with it.
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _peer)) = listener.accept().await else {
                    // Usually EMFILE: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = match body.collect().await {
                                Ok(b) => b.to_bytes(),
                                Err(_) => Bytes::new(),
                            };
                            Ok::<_, Infallible>(handler(Request::from_parts(parts, body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with a status, a content type and a body.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}
