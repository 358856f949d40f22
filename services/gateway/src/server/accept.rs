//! The accept loop: takes TCP connections until shutdown, terminates TLS when it is on, and
//! serves each connection in a task of its own, on the main runtime or on a relay thread.

use crate::state::App;
use crate::workers::Workers;
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Accepts on `listener` until `shutdown` resolves, then returns, closing the listener (new
/// connections are refused from then on; connections already accepted keep running).
pub async fn accept_until(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    workers: Option<&Workers>,
    app: &App,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error.message = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let serve = async move |tcp: TcpStream| match tls {
            None => super::serve_connection(app, tcp, peer).await,
            Some(acceptor) => match acceptor.accept(tcp).await {
                Ok(stream) => super::serve_connection(app, stream, peer).await,
                Err(e) => tracing::debug!(%peer, error.message = %e, "TLS handshake failed"),
            },
        };
        let Some(workers) = workers else {
            #[expect(
                clippy::disallowed_methods,
                reason = "a connection task ends with its connection; sessions are tracked"
            )]
            tokio::spawn(serve(tcp));
            continue;
        };
        // Move the socket to a relay thread: it leaves this runtime's reactor here and joins
        // the relay thread's there.
        let tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%peer, error.message = %e, "could not hand a connection to a relay thread");
                continue;
            }
        };
        workers.spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!(%peer, error.message = %e, "could not register a connection on a relay thread"),
            }
        });
    }
}
