//! Concurrent sessions per key.
//!
//! Counted per gateway replica: a key allowed N sessions may hold N on each replica. Exact
//! cross-replica counting would put a NATS round trip (and a failure mode) in front of every
//! session start; per-replica counting is exact, free, and keeps sessions starting while
//! NATS is down. Operators who need a global cap divide it by the replica count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Live session counts by key id.
#[derive(Clone, Default)]
pub struct Sessions {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

/// Holds one slot; releases it when dropped.
pub struct Slot {
    sessions: Sessions,
    key_id: String,
}

impl Sessions {
    /// Takes a slot unless the key already holds `max` (0 = unlimited).
    pub fn acquire(&self, key_id: &str, max: u32) -> Option<Slot> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = counts.entry(key_id.to_string()).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            sessions: self.clone(),
            key_id: key_id.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .sessions
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_released() {
        let s = Sessions::default();
        let a = s.acquire("k", 2).unwrap();
        let _b = s.acquire("k", 2).unwrap();
        assert!(s.acquire("k", 2).is_none());
        assert!(s.acquire("other", 2).is_some());
        drop(a);
        assert!(s.acquire("k", 2).is_some());
        let _many: Vec<_> = (0..100).map(|_| s.acquire("u", 0).unwrap()).collect();
    }
}
