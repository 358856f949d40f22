//! Admission limits: concurrent sessions per key ([`Sessions`]) and open client connections,
//! in total and per peer IP ([`Connections`]).
//!
//! Sessions per key are counted per gateway replica: a key allowed N sessions may hold N on each replica. Exact
//! cross-replica counting would put a NATS round trip (and a failure mode) in front of every
//! session start; per-replica counting is exact, free, and keeps sessions starting while
//! NATS is down. Operators who need a global cap divide it by the replica count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Open client connections of this replica, from accept until the socket is closed, in total
/// and per peer IP address. The count lives in a [`Connection`] guard that travels with the
/// socket (through the WebSocket upgrade into the session), so it counts file descriptors,
/// not HTTP requests.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<ConnectionsInner>,
}

struct ConnectionsInner {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Why a connection was refused (the `reason` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `GATEWAY_MAX_CONNECTIONS` reached.
    Total,
    /// `GATEWAY_MAX_CONNECTIONS_PER_IP` reached for the peer's address.
    PerIp,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerIp => "max_connections_per_ip",
        }
    }
}

/// One open connection; released when dropped.
pub struct Connection {
    inner: Arc<ConnectionsInner>,
    /// Set when the per-IP cap is on.
    ip: Option<IpAddr>,
}

impl Connections {
    /// Limits of `max` connections in all and `max_per_ip` per peer address (0 = no limit),
    /// with the open count mirrored in `gauge`.
    pub fn new(
        max: usize,
        max_per_ip: usize,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        Self {
            inner: Arc::new(ConnectionsInner {
                max,
                max_per_ip,
                open: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                gauge,
            }),
        }
    }

    /// Counts a new connection from `peer`, or says which cap refuses it.
    pub fn admit(&self, peer: IpAddr) -> Result<Connection, Refused> {
        let inner = &self.inner;
        let admitted = inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (inner.max == 0 || n < inner.max).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Refused::Total);
        }
        // Built now, so an early return below gives the total slot back through `Drop`.
        let mut conn = Connection {
            inner: inner.clone(),
            ip: None,
        };
        inner.gauge.inc();
        if inner.max_per_ip > 0 {
            // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d: one address.
            let ip = peer.to_canonical();
            let mut per_ip = inner
                .per_ip
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= inner.max_per_ip {
                return Err(Refused::PerIp);
            }
            *n += 1;
            conn.ip = Some(ip);
        }
        Ok(conn)
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .inner
                .per_ip
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
        self.inner.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_ip_and_released() {
        let gauge = prometheus_client::metrics::gauge::Gauge::default();
        let c = Connections::new(3, 2, gauge.clone());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(mapped).unwrap();
        assert_eq!(
            c.admit(a).err(),
            Some(Refused::PerIp),
            "mapped IPv4 is the same peer"
        );
        assert_eq!(c.open(), 2, "a per-IP refusal gives its total slot back");
        let _b1 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).err(), Some(Refused::Total));
        assert_eq!(gauge.get(), 3);
        drop(a1);
        assert_eq!(gauge.get(), 2);
        let _a3 = c.admit(a).unwrap();
        let unlimited = Connections::new(0, 0, Default::default());
        let _many: Vec<_> = (0..100).map(|_| unlimited.admit(a).unwrap()).collect();
        assert_eq!(unlimited.open(), 100);
    }

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
