//! Relay threads: each runs its own single-threaded tokio runtime and owns the connections
//! handed to it, both sockets of every session on it and all their frames.
//!
//! Why not the work-stealing runtime: a relayed frame is a few microseconds of work between
//! two socket wake-ups. On a multi-threaded runtime each such wake-up may also wake a parked
//! sibling worker to look for work, and a task may be stolen to another thread, so a turn
//! crosses threads (futex calls and, on a VM, an inter-processor interrupt to an idle vCPU)
//! that the frame itself never needed. On a relay thread a session's frames are read,
//! inspected and written on the thread whose epoll saw them. The accept loop hands each new
//! connection to the relay thread with the fewest live connections (sessions last minutes,
//! so balance by count, not round-robin).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long a stopping relay thread waits for its blocking tasks.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

struct Worker {
    handle: Handle,
    /// Connections currently running on this thread.
    live: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fixed set of relay threads.
pub struct Workers {
    workers: Vec<Worker>,
}

/// Decrements a worker's live count when its connection's future ends or is dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` relay threads (at least one).
    ///
    /// # Errors
    /// A runtime or thread could not be created; threads already started are stopped.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || {
                    // Runs the thread's connections until told to stop (or the sender is
                    // dropped), then cancels whatever is left; a blocking task (a DNS lookup
                    // for an upstream connect) gets a moment, not forever.
                    let _ = rt.block_on(stopped);
                    rt.shutdown_timeout(SHUTDOWN_TIMEOUT);
                })?;
            workers.push(Worker {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// How many relay threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `fut` on the relay thread with the fewest live connections; sockets it creates
    /// or adopts (`TcpStream::from_std`) register with that thread's reactor.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(w) = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
        else {
            return;
        };
        w.live.fetch_add(1, Ordering::Relaxed);
        let live = Live(w.live.clone());
        w.handle.spawn(async move {
            let _live = live;
            fut.await;
        });
    }
}

impl Drop for Workers {
    /// Stops every relay thread (their remaining tasks are dropped) and waits for them.
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_connections_by_live_count_and_runs_them_on_relay_threads() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, held) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut held = held.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
                let _ = held.wait_for(|r| *r).await;
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["relay-0", "relay-0", "relay-1", "relay-1"]);
        let live: Vec<_> = workers
            .workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .collect();
        assert_eq!(live, [2, 2]);
        release.send_replace(true);
        drop(workers);
    }
}
