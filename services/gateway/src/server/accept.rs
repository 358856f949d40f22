//! The accept loop: takes TCP connections until shutdown, admits each against the connection
//! caps, terminates TLS (time-boxed) when it is on, and serves each connection in a task of
//! its own, on the main runtime or on a relay thread.

use crate::limits::{Connection, Connections};
use crate::metrics::{PhaseLabel, ReasonLabel};
use crate::state::App;
use crate::workers::Workers;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// First back-off after a failed accept; doubled on each failure in a row up to
/// [`ACCEPT_BACKOFF_MAX`], reset by the next accepted connection.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors about the one connection being accepted (it was reset or aborted while queued):
/// the next accept may well succeed at once. Every other error (out of file descriptors,
/// `EMFILE`/`ENFILE`, or out of memory) repeats until something is released, so the loop
/// backs off instead of spinning on it.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Accepts on `listener` until `shutdown` resolves, then returns, closing the listener (new
/// connections are refused from then on; connections already accepted keep running).
///
/// A connection beyond `GATEWAY_MAX_CONNECTIONS` (or `GATEWAY_MAX_CONNECTIONS_PER_IP`) is
/// accepted and closed at once with a reset, and counted. The alternative, to stop accepting
/// while at the cap, would leave new connections in the kernel's accept queue: clients hang
/// there (the handshake completed, nobody answers) until the queue overflows and SYNs are
/// dropped, health checks and `/metrics` queue behind them, and nothing is counted. Accepting
/// and closing costs one descriptor for a moment, keeps the queue drained and the descriptor
/// count at the cap, and tells the client at once to go to another replica. The reset (zero
/// linger) leaves no `TIME_WAIT` state behind on this side.
pub async fn accept_until(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    workers: Option<&Workers>,
    app: &App,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(
        app.config.max_connections,
        app.config.max_connections_per_ip,
        app.metrics.connections_open.clone(),
    );
    // Connection tasks on the main runtime. Not the app's tracker: that one holds the
    // sessions (its length is the session count `GATEWAY_MAX_SESSIONS` caps, and the drain
    // waits on it), and a connection's HTTP phase is neither; an upgraded connection's
    // socket moves into a session task there. Dropping this one leaves the tasks running.
    let tasks = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error.message = %e, "accept failed for one connection");
                    continue;
                }
                Err(e) => {
                    app.metrics.accept_errors.inc();
                    // Logged once per run of failures, not once per retry.
                    if backoff == ACCEPT_BACKOFF_MIN {
                        tracing::error!(error.message = %e, "accept failed; backing off");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let conn = match connections.admit(peer.ip()) {
            Ok(c) => c,
            Err(why) => {
                app.metrics
                    .connections_refused
                    .get_or_create(&ReasonLabel {
                        reason: why.label(),
                    })
                    .inc();
                tracing::debug!(%peer, cap = why.label(), "connection refused: at the cap");
                let _ = tcp.set_zero_linger();
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let serve = move |tcp: TcpStream| serve_accepted(app, tls, tcp, peer, conn);
        let Some(workers) = workers else {
            tasks.spawn(serve(tcp));
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
    tasks.close();
}

/// Serves one admitted connection: the TLS handshake first (within
/// `GATEWAY_TLS_HANDSHAKE_TIMEOUT`) when TLS is on, then HTTP. `conn` holds its place under
/// the caps until the socket is closed.
async fn serve_accepted(
    app: App,
    tls: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
    conn: Connection,
) {
    let Some(acceptor) = tls else {
        return super::serve_connection(app, tcp, peer, conn).await;
    };
    match tokio::time::timeout(app.config.tls_handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => super::serve_connection(app, stream, peer, conn).await,
        Ok(Err(e)) => tracing::debug!(%peer, error.message = %e, "TLS handshake failed"),
        Err(_) => {
            app.metrics
                .preauth_timeouts
                .get_or_create(&PhaseLabel {
                    phase: "tls_handshake",
                })
                .inc();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_backs_off_and_a_reset_peer_does_not() {
        // EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux numbers): the loop must sleep on these.
        for errno in [24, 23, 105, 12] {
            assert!(
                !is_connection_error(&io::Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
        ] {
            assert!(is_connection_error(&io::Error::from(kind)));
        }
    }
}
