//! State shared by the accept loop, every session task and the [`crate::Emulator`] handle:
//! credentials, the current behaviour, counters, recorded usage and issued resumption handles.

use crate::behaviour::Behaviour;
use crate::jwt::KeySet;
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Recorded usage entries kept in memory (the oldest are dropped beyond this, so long
/// benchmarks stay bounded).
pub const MAX_RECORDED_USAGE: usize = 100_000;
/// Resumption handles remembered (oldest forgotten first).
const MAX_HANDLES: usize = 200_000;

/// One emitted `usageMetadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedUsage {
    /// The emulator's session id (also sent as `setupComplete.sessionId`).
    pub session_id: String,
    /// 1-based position among the usage reports of that session.
    pub seq: u64,
    /// The exact `usageMetadata` value sent.
    pub usage: Value,
    /// When it was sent.
    pub at: SystemTime,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// WebSocket handshakes accepted (101 sent).
    pub sessions: u64,
    /// Sessions open right now.
    pub active_sessions: u64,
    /// Sessions whose setup resumed an earlier session with a handle.
    pub resumed_sessions: u64,
    /// Handshakes refused (401, 400).
    pub rejected_handshakes: u64,
    /// Accepted handshakes authenticated by a service-account JWT.
    pub jwt_handshakes: u64,
    /// Data frames (text or binary) received from clients.
    pub frames_in: u64,
    /// Data frames sent to clients (close frames not counted).
    pub frames_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sessions: AtomicU64,
    pub active_sessions: AtomicU64,
    pub resumed_sessions: AtomicU64,
    pub rejected_handshakes: AtomicU64,
    pub jwt_handshakes: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Default)]
struct Handles {
    set: HashSet<String>,
    order: VecDeque<String>,
}

/// Everything sessions share. Locks are std mutexes: they are held for a push or a lookup,
/// never across an await.
#[derive(Debug)]
pub(crate) struct Shared {
    pub tokens: Vec<String>,
    pub keys: KeySet,
    pub auth_required: bool,
    pub counters: Counters,
    behaviour: RwLock<Arc<Behaviour>>,
    id_prefix: String,
    next_session: AtomicU64,
    usage: Mutex<VecDeque<RecordedUsage>>,
    handles: Mutex<Handles>,
    record_file: Mutex<Option<std::sync::mpsc::Sender<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        tokens: Vec<String>,
        keys: KeySet,
        auth_required: bool,
        behaviour: Behaviour,
    ) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        Self {
            tokens,
            keys,
            auth_required,
            counters: Counters::default(),
            behaviour: RwLock::new(Arc::new(behaviour)),
            id_prefix: format!("emu-{:06x}", nanos & 0x00ff_ffff),
            next_session: AtomicU64::new(1),
            usage: Mutex::new(VecDeque::new()),
            handles: Mutex::new(Handles::default()),
            record_file: Mutex::new(None),
        }
    }

    pub(crate) fn behaviour(&self) -> Arc<Behaviour> {
        self.behaviour
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        *self
            .behaviour
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(b);
    }

    pub(crate) fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            sessions: get(&c.sessions),
            active_sessions: get(&c.active_sessions),
            resumed_sessions: get(&c.resumed_sessions),
            rejected_handshakes: get(&c.rejected_handshakes),
            jwt_handshakes: get(&c.jwt_handshakes),
            frames_in: get(&c.frames_in),
            frames_out: get(&c.frames_out),
        }
    }

    pub(crate) fn record_usage(&self, session_id: &str, seq: u64, usage: &Value) {
        let rec = RecordedUsage {
            session_id: session_id.to_string(),
            seq,
            usage: usage.clone(),
            at: SystemTime::now(),
        };
        if let Some(tx) = lock(&self.record_file).as_ref() {
            let millis = rec
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let line = json!({"session_id": rec.session_id, "seq": seq, "at_ms": millis, "usage": rec.usage});
            // The writer thread only goes away with the emulator.
            let _ = tx.send(line.to_string());
        }
        let mut usage = lock(&self.usage);
        if usage.len() >= MAX_RECORDED_USAGE {
            usage.pop_front();
        }
        usage.push_back(rec);
    }

    pub(crate) fn recorded_usage(&self) -> Vec<RecordedUsage> {
        lock(&self.usage).iter().cloned().collect()
    }

    pub(crate) fn register_handle(&self, handle: &str) {
        let mut h = lock(&self.handles);
        if h.set.insert(handle.to_string()) {
            h.order.push_back(handle.to_string());
            if h.order.len() > MAX_HANDLES
                && let Some(old) = h.order.pop_front()
            {
                h.set.remove(&old);
            }
        }
    }

    pub(crate) fn handle_known(&self, handle: &str) -> bool {
        lock(&self.handles).set.contains(handle)
    }

    /// Starts appending every recorded usage as one JSON line to `path`, on one writer thread
    /// (so sessions never block on the disk).
    pub(crate) fn record_to_file(&self, path: &Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("usage-record".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut write = |l: &str| writeln!(out, "{l}");
                    let mut ok = write(&line).is_ok();
                    while let Ok(more) = rx.try_recv() {
                        ok &= write(&more).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        tracing::error!("cannot write the usage record file");
                    }
                }
            })?;
        *lock(&self.record_file) = Some(tx);
        Ok(())
    }
}
