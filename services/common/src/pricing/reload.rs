//! Re-reading `PRICING_FILE` on SIGHUP, the one way every service that prices usage (metering
//! for the bill, the gateway for per-turn budgets) picks up new prices without a restart, so
//! one signal to each process applies a price change everywhere.

use super::Pricing;
use futures_util::{Stream, StreamExt as _};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What one reload did: the `outcome` label of each service's
/// `livegate_<service>_pricing_reloads_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadOutcome {
    /// The file was read and parsed; its prices are in force.
    Ok,
    /// The file could not be read or parsed; the previous prices stay in force.
    Error,
}

impl ReloadOutcome {
    /// The label value: `ok` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// Reloads `pricing`'s file on every SIGHUP until `stop` is cancelled, telling `on_reload`
/// how each reload went (a service counts it in its metrics). A file that cannot be read or
/// parsed is logged at error and the previous prices stay in force.
///
/// The handler is installed whether or not there is a file: SIGHUP's default action ends the
/// process, and one `kill -HUP` sent to every livegate process must not stop the ones that
/// run on the built-in prices alone. Without a file a SIGHUP is logged and not counted.
///
/// Spawn it once per process, on a runtime that lives as long as the service.
///
/// ```no_run
/// # async fn serve() -> Result<(), livegate_common::pricing::PricingError> {
/// use livegate_common::pricing::{Pricing, reload_on_sighup};
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
///
/// let pricing = Arc::new(Pricing::load(Some("prices.json".as_ref()))?);
/// let stop = CancellationToken::new();
/// let reloads = tokio::spawn(reload_on_sighup(pricing.clone(), stop.clone(), |outcome| {
///     tracing::info!(outcome = outcome.as_str(), "a service counts this in its metrics");
/// }));
/// // … serve, pricing every event with `pricing.price(…)`: the table in force each time …
/// stop.cancel();
/// let _ = reloads.await;
/// # Ok(())
/// # }
/// ```
pub async fn reload_on_sighup(
    pricing: Arc<Pricing>,
    stop: CancellationToken,
    on_reload: impl FnMut(ReloadOutcome) + Send,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error.message = %e, "cannot install SIGHUP handler; pricing reload disabled");
            return;
        }
    };
    match pricing.file() {
        Some(path) => tracing::info!(
            pricing.file = %path.display(),
            pricing.version = %pricing.version(),
            "pricing file loaded; SIGHUP reloads it"
        ),
        None => tracing::info!("no PRICING_FILE: built-in prices only (SIGHUP reloads nothing)"),
    }
    let hups = futures_util::stream::poll_fn(move |cx| hup.poll_recv(cx));
    reload_on(pricing, hups, stop, on_reload).await;
}

/// [`reload_on_sighup`]'s loop, with the signals as a stream (a test sends its own).
async fn reload_on(
    pricing: Arc<Pricing>,
    hups: impl Stream<Item = ()>,
    stop: CancellationToken,
    mut on_reload: impl FnMut(ReloadOutcome),
) {
    let mut hups = std::pin::pin!(hups);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            got = hups.next() => if got.is_none() { return },
        }
        if pricing.file().is_none() {
            tracing::info!("SIGHUP: no PRICING_FILE, nothing to reload");
            continue;
        }
        on_reload(reload_once(&pricing));
    }
}

/// One reload, logged.
fn reload_once(pricing: &Pricing) -> ReloadOutcome {
    match pricing.reload() {
        Ok(r) => {
            tracing::info!(
                entries = r.entries,
                pricing.version = %pricing.version(),
                "pricing file reloaded"
            );
            if !r.unpriced.is_empty() {
                // A removed entry makes its model free, for the bill and for budgets: almost
                // never what an operator meant (stop a model in allowed_models instead).
                tracing::warn!(
                    entries = ?r.unpriced,
                    "pricing file reload removed the only price of these entries: their models are now unknown, billed at cost 0 (priced = 0) and free for budget checks"
                );
            }
            ReloadOutcome::Ok
        }
        Err(e) => {
            tracing::error!(
                error.message = %e,
                pricing.version = %pricing.version(),
                "pricing file reload failed; keeping the previous prices"
            );
            ReloadOutcome::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Usage;
    use rust_decimal::Decimal;
    use std::sync::Mutex;

    fn thousand_prompt_tokens() -> Usage {
        Usage {
            prompt_tokens: 1000,
            ..Usage::default()
        }
    }

    fn cost(p: &Pricing) -> Decimal {
        p.price("test-model", &thousand_prompt_tokens())
            .cost
            .total()
    }

    #[tokio::test]
    async fn each_hangup_reloads_and_a_broken_file_keeps_the_previous_prices() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.json");
        std::fs::write(&file, r#"{"test-model": {"input_cost_per_token": 1e-06}}"#).unwrap();
        let pricing = Arc::new(Pricing::load(Some(&file)).unwrap());
        assert_eq!(cost(&pricing), Decimal::new(1, 3));

        let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        let hups =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
            );
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let mut task = tokio::task::JoinSet::new();
        task.spawn(reload_on(pricing.clone(), hups, stop.clone(), move |o| {
            let _ = seen_tx.send(o);
        }));

        std::fs::write(&file, r#"{"test-model": {"input_cost_per_token": 2e-06}}"#).unwrap();
        tx.send(()).await.unwrap();
        assert_eq!(seen.recv().await, Some(ReloadOutcome::Ok));
        assert_eq!(cost(&pricing), Decimal::new(2, 3));

        for broken in [
            "{not json",
            r#"{"test-model": {"input_cost_per_token": -1}}"#,
        ] {
            std::fs::write(&file, broken).unwrap();
            tx.send(()).await.unwrap();
            assert_eq!(seen.recv().await, Some(ReloadOutcome::Error), "{broken}");
            assert_eq!(cost(&pricing), Decimal::new(2, 3), "{broken}");
        }
        std::fs::remove_file(&file).unwrap();
        tx.send(()).await.unwrap();
        assert_eq!(
            seen.recv().await,
            Some(ReloadOutcome::Error),
            "missing file"
        );
        assert_eq!(cost(&pricing), Decimal::new(2, 3));

        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task.join_next())
            .await
            .expect("the loop stops on the token")
            .expect("the loop was spawned")
            .unwrap();
    }

    #[tokio::test]
    async fn without_a_file_a_hangup_is_not_counted() {
        let pricing = Arc::new(Pricing::load(None).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        // Two hangups, then the stream ends, which ends the loop.
        reload_on(
            pricing,
            futures_util::stream::iter([(), ()]),
            CancellationToken::new(),
            move |o| s.lock().unwrap().push(o),
        )
        .await;
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn outcomes_are_the_documented_label_values() {
        assert_eq!(ReloadOutcome::Ok.as_str(), "ok");
        assert_eq!(ReloadOutcome::Error.as_str(), "error");
    }
}
