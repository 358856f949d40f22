//! State shared by the accept loop, every session task and the [`crate::Emulator`] handle:
//! credentials, the current behaviour, counters, recorded usage and issued resumption handles.

use crate::behaviour::Behaviour;
use crate::jwt::KeySet;
use crate::session::{BAD_HANDLE, Close, STILL_OPEN, Snapshot};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Recorded usage entries kept in memory (the oldest are dropped beyond this, so long
/// benchmarks stay bounded).
pub const MAX_RECORDED_USAGE: usize = 100_000;
/// Resumption handles remembered (oldest forgotten first).
const MAX_HANDLES: usize = 200_000;
/// Sessions whose resumption state is remembered (oldest forgotten first).
const MAX_SESSIONS: usize = 100_000;
/// Consumed client messages recorded per session (the oldest are dropped beyond this).
pub const MAX_CONSUMED: usize = 100_000;
/// How long a handle stays valid after its session's last connection ended, unless
/// [`Behaviour::handle_ttl`] says otherwise: about 2 h, as Google.
pub const DEFAULT_HANDLE_TTL: Duration = Duration::from_secs(2 * 3600);

/// A client message a session consumed (recorded when [`Behaviour::record_consumed`] is on).
/// A resume from a handle forgets the messages consumed after that handle was issued, as
/// the model's state does: the list is what the session's state is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// 1-based connection of the session (a resume opens the next).
    pub connection: u32,
    /// Index on that connection, setup = 0 (what `lastConsumedClientMessageIndex` counts).
    pub index: u64,
    /// The message kind (its top-level key: `clientContent`, `realtimeInput`, …).
    pub kind: String,
    /// SHA-256 of the message's bytes as received, lower-case hex.
    pub sha256: String,
}

/// What the emulator remembers of one session across its connections.
#[derive(Debug, Default)]
struct SessionState {
    /// A connection of the session is open.
    active: bool,
    /// When its last connection ended.
    ended_at: Option<Instant>,
    /// Connections opened (the first plus resumes).
    connections: u32,
    /// Handles issued.
    handles: u64,
    /// Usage reports sent (the last `seq`).
    usage_seq: u64,
    consumed: VecDeque<ConsumedMessage>,
}

#[derive(Debug)]
struct HandleEntry {
    session: String,
    snapshot: Snapshot,
    /// Length of the session's consumed record when the handle was issued.
    consumed_len: usize,
}

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
    map: HashMap<String, HandleEntry>,
    order: VecDeque<String>,
    sessions: HashMap<String, SessionState>,
    session_order: VecDeque<String>,
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

    /// A new session's first connection starts.
    pub(crate) fn open_session(&self, id: &str) {
        let mut h = lock(&self.handles);
        if !h.sessions.contains_key(id) {
            h.session_order.push_back(id.to_string());
            if h.session_order.len() > MAX_SESSIONS
                && let Some(old) = h.session_order.pop_front()
            {
                h.sessions.remove(&old);
            }
        }
        let s = h.sessions.entry(id.to_string()).or_default();
        s.active = true;
        s.connections += 1;
    }

    /// A session's connection ended after sending `usage_seq` usage reports in all.
    pub(crate) fn close_session(&self, id: &str, usage_seq: u64) {
        if let Some(s) = lock(&self.handles).sessions.get_mut(id) {
            s.active = false;
            s.ended_at = Some(Instant::now());
            s.usage_seq = usage_seq;
        }
    }

    /// The usage reports a session has sent so far over its ended connections.
    pub(crate) fn usage_seq(&self, id: &str) -> u64 {
        lock(&self.handles)
            .sessions
            .get(id)
            .map_or(0, |s| s.usage_seq)
    }

    pub(crate) fn issue_handle(&self, session: &str, snapshot: Snapshot) -> String {
        let mut h = lock(&self.handles);
        let Some(s) = h.sessions.get_mut(session) else {
            // Forgotten already (over MAX_SESSIONS): a handle nobody can resume.
            return format!("{session}.expired");
        };
        s.handles += 1;
        // Names its connection too, so a client (the load generator) can tell a new one.
        let handle = format!("{session}.c{}.h{}", s.connections, s.handles);
        let consumed_len = s.consumed.len();
        h.map.insert(
            handle.clone(),
            HandleEntry {
                session: session.to_string(),
                snapshot,
                consumed_len,
            },
        );
        h.order.push_back(handle.clone());
        if h.order.len() > MAX_HANDLES
            && let Some(old) = h.order.pop_front()
        {
            h.map.remove(&old);
        }
        handle
    }

    /// Claims the session of `handle` for a new connection (see [`crate::session::SessionEnv::resume`]).
    pub(crate) fn resume(&self, handle: &str, ttl: Duration) -> Result<(String, Snapshot), Close> {
        let refuse = |code, reason: &str| Close {
            code,
            reason: reason.to_string(),
        };
        let mut guard = lock(&self.handles);
        let h = &mut *guard;
        let entry = h.map.get(handle).ok_or_else(|| refuse(1008, BAD_HANDLE))?;
        let s = h
            .sessions
            .get_mut(&entry.session)
            .ok_or_else(|| refuse(1008, BAD_HANDLE))?;
        if s.active {
            return Err(refuse(1011, STILL_OPEN));
        }
        if s.ended_at.is_some_and(|at| at.elapsed() > ttl) {
            return Err(refuse(1008, BAD_HANDLE));
        }
        s.active = true;
        s.connections += 1;
        // What was consumed after the handle is not part of the state it restores.
        s.consumed.truncate(entry.consumed_len);
        Ok((entry.session.clone(), entry.snapshot.clone()))
    }

    pub(crate) fn record_consumed(&self, session: &str, index: u64, kind: &str, data: &[u8]) {
        let sha256 = hex::encode(Sha256::digest(data));
        let mut h = lock(&self.handles);
        if let Some(s) = h.sessions.get_mut(session) {
            if s.consumed.len() >= MAX_CONSUMED {
                s.consumed.pop_front();
            }
            s.consumed.push_back(ConsumedMessage {
                connection: s.connections,
                index,
                kind: kind.to_string(),
                sha256,
            });
        }
    }

    pub(crate) fn consumed(&self, session: &str) -> Vec<ConsumedMessage> {
        lock(&self.handles)
            .sessions
            .get(session)
            .map(|s| s.consumed.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of the sessions remembered, oldest first.
    pub(crate) fn session_ids(&self) -> Vec<String> {
        lock(&self.handles).session_order.iter().cloned().collect()
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
