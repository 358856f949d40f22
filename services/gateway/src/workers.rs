//! Relay threads: each runs its own single-threaded tokio runtime and owns the connections
//! handed to it, both sockets of every session on it and all their frames.
//!
//! Why not the work-stealing runtime: a relayed frame is a few microseconds of work between
//! two socket wake-ups. On a multi-threaded runtime each such wake-up may also wake a parked
//! sibling worker to look for work, and a task may be stolen to another thread, so a turn
//! crosses threads (futex calls and, on a VM, an inter-processor interrupt to an idle vCPU)
//! that the frame itself never needed. On a relay thread a session's frames are read,
//! inspected and written on the thread whose epoll saw them. The accept loop hands each new
//! connection to the relay thread running the fewest tasks (a connection's HTTP phase and
//! then its session: sessions last minutes, so balance by what is running, not round-robin).
//!
//! Opt-in (`GATEWAY_RELAY_THREADS`): measured with scripts/bench.sh on 2 cores they cut the
//! text turn's added p50 latency (+0.14 -> +0.09 ms) and the gateway's CPU per turn (-6 %) at
//! 1,000 turns/s, but added latency to 100 low-rate audio streams (p50 +0.19/+0.27 -> +0.52/
//! +0.35 ms) and cost 15 % of set-up throughput per CPU-second (the socket changes reactor).

use std::future::Future;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long a stopping relay thread waits for its blocking tasks.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fixed set of relay threads.
pub struct Workers {
    workers: Vec<Worker>,
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

    /// Runs `fut` on the relay thread running the fewest tasks; sockets it creates or adopts
    /// (`TcpStream::from_std`) register with that thread's reactor, and tasks it spawns (the
    /// session, after the upgrade) run there too and count for that thread.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A task counts from the moment it is spawned, so a burst of accepts spreads too.
        if let Some(w) = self
            .workers
            .iter()
            .min_by_key(|w| w.handle.metrics().num_alive_tasks())
        {
            w.handle.spawn(fut);
        }
    }

    /// Tasks (connections and sessions) running on each relay thread.
    #[cfg(test)]
    pub fn tasks(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.handle.metrics().num_alive_tasks())
            .collect()
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
#[expect(clippy::disallowed_methods, reason = "tests own their tasks")]
mod tests {
    use super::*;

    #[test]
    fn spreads_tasks_over_relay_threads_counting_the_ones_they_spawn() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, held) = tokio::sync::watch::channel(false);
        // Like a connection: its own future ends soon, the session it spawns stays.
        let connection = |tx: std::sync::mpsc::Sender<_>,
                          mut held: tokio::sync::watch::Receiver<bool>| async move {
            tokio::spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
                let _ = held.wait_for(|r| *r).await;
            });
        };
        workers.spawn(connection(tx.clone(), held.clone()));
        assert_eq!(rx.recv().unwrap().as_deref(), Some("relay-0"));
        workers.spawn(connection(tx.clone(), held.clone()));
        assert_eq!(rx.recv().unwrap().as_deref(), Some("relay-1"));
        for _ in 0..2 {
            workers.spawn(connection(tx.clone(), held.clone()));
        }
        let mut names: Vec<_> = (0..2).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["relay-0", "relay-1"]);
        assert_eq!(
            workers.tasks(),
            [2, 2],
            "one session each, the connections ended"
        );
        release.send_replace(true);
        drop(workers);
    }
}
