//! Gateway process leases on the bus: the `livegate_leases` KV bucket, one key per gateway
//! *process* (its instance id, fresh at every start), rewritten every lease/3 while the
//! process lives. Metering closes the sessions of a process whose key stopped changing for a
//! full lease (see metering's `leases` module).

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The KV bucket holding one lease per gateway process.
pub const LEASES_BUCKET: &str = "livegate_leases";
/// Only the newest heartbeat of a process matters.
pub const LEASES_HISTORY: i64 = 1;
/// Default lease (`GATEWAY_LEASE`, `METERING_LEASE`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Shortest lease accepted: heartbeats every lease/3 must stay far apart.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease accepted: a lost session must be closed within minutes, not hours.
pub const MAX_LEASE: Duration = Duration::from_secs(600);

/// The value of a lease key (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The process's `GATEWAY_ID` (for operators; the key is the instance id).
    pub gateway_id: String,
    /// The process's lease in milliseconds: it heartbeats every third of it.
    pub lease_ms: u64,
}

impl Lease {
    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// A fresh instance id for this process: 32 hex digits, a valid KV key on its own.
pub fn new_instance_id() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `key` is an instance id as [`new_instance_id`] makes them (so a value read from
/// ClickHouse is never used as an arbitrary KV key).
pub fn is_instance_id(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Opens (or creates) the leases bucket with one replica (an existing bucket is used as it
/// is): see [`open_with`] for a cluster.
///
/// # Errors
/// As [`crate::kv::open_bucket`].
pub async fn open(js: &jetstream::Context) -> Result<kv::Store, crate::kv::KvError> {
    open_with(js, &crate::stream::StreamLayout::default()).await
}

/// Opens (or creates) the leases bucket with `layout`'s replicas, widening an existing one.
///
/// # Errors
/// As [`crate::kv::open_bucket`].
pub async fn open_with(
    js: &jetstream::Context,
    layout: &crate::stream::StreamLayout,
) -> Result<kv::Store, crate::kv::KvError> {
    crate::kv::open_bucket(js, LEASES_BUCKET, LEASES_HISTORY, layout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_fresh_and_valid_keys() {
        let a = new_instance_id();
        let b = new_instance_id();
        assert_ne!(a, b);
        assert!(is_instance_id(&a) && is_instance_id(&b), "{a} {b}");
        assert!(!is_instance_id("gw-1"));
        assert!(!is_instance_id(&format!("{}>", &a[..31])));
    }

    #[test]
    fn lease_value_round_trips() {
        let l = Lease {
            gateway_id: "gw".into(),
            lease_ms: 15_000,
        };
        let json = serde_json::to_vec(&l).unwrap();
        assert_eq!(serde_json::from_slice::<Lease>(&json).unwrap(), l);
        assert_eq!(l.lease(), Duration::from_secs(15));
    }
}
