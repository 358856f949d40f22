//! The process-wide stop signal: SIGTERM (what Kubernetes and docker send) or SIGINT (Ctrl-C).

/// Resolves when the process receives SIGTERM or SIGINT.
///
/// If a handler cannot be installed (which only happens in unusual sandboxes), that signal is
/// ignored and the other still works; the failure is logged.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error.message = %e, "cannot install SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    let int = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error.message = %e, "cannot install SIGINT handler");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received, shutting down"),
        () = int => tracing::info!("SIGINT received, shutting down"),
    }
}
