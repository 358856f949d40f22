//! Doctor's cluster checks: whether every replica of each JetStream stream and bucket is up and
//! current (from the stream info's RAFT group), and, with `CLICKHOUSE_CLUSTER`, whether the
//! replicated tables on the ClickHouse server doctor reaches are writable, fully replicated and
//! caught up (`system.replicas`) and the cluster is defined (`system.clusters`).
//!
//! The classification is pure ([`stream_replicas`], [`replica_health`]) so unit tests feed it
//! replica lists; the fetching around it is thin.

use super::{Outcome, Report, timed};
use async_nats::jetstream::stream::ClusterInfo;
use livegate_common::subjects;
use std::fmt::Write as _;

/// Past this many seconds behind, a replicated table's data is stale enough to warn: metering
/// inserts every few seconds, and a healthy replica fetches new parts within seconds.
pub(super) const MAX_DELAY_SECS: u64 = 60;

/// Past this many entries in a table's replication queue (fetches, merges, mutations waiting),
/// the replica is not keeping up; a healthy one holds a handful.
pub(super) const MAX_QUEUE: u64 = 100;

/// How many tables or servers one line names before "and N more".
const NAMED: usize = 4;

/// The streams doctor reads the replica state of: the usage and dead-letter streams and the
/// streams behind the `livegate_keys`, `livegate_spend` and `livegate_leases` buckets (all at
/// `LIVEGATE_STREAM_REPLICAS`). `livegate_auth` is left out: the `cli` user may not read it.
fn replicated_streams() -> [String; 5] {
    [
        subjects::STREAM.to_string(),
        subjects::DEAD_LETTER_STREAM.to_string(),
        format!("KV_{}", subjects::KEYS_BUCKET),
        format!("KV_{}", subjects::SPEND_BUCKET),
        format!("KV_{}", livegate_common::leases::LEASES_BUCKET),
    ]
}

/// One `replicas <stream>` line (or several, one per problem) for each stream that exists.
/// A missing stream is skipped: the lines above already say so.
pub(super) async fn check_stream_replicas(
    js: &async_nats::jetstream::Context,
    wanted: usize,
    r: &mut Report<'_>,
) -> anyhow::Result<()> {
    for stream in replicated_streams() {
        let name = format!("replicas {stream}");
        let Ok(mut s) = timed(js.get_stream(&stream)).await else {
            continue;
        };
        match timed(s.info()).await {
            Ok(i) => {
                for outcome in stream_replicas(i.config.num_replicas, wanted, i.cluster.as_ref()) {
                    r.line(&name, outcome)?;
                }
            }
            // The stream was there a moment ago: most likely it lost its leader in between.
            Err(e) => r.line(
                &name,
                Outcome::Fail(
                    e,
                    "no leader answered: start the NATS servers that are down until a majority of the stream's replicas runs",
                ),
            )?,
        }
    }
    Ok(())
}

/// What a stream's RAFT group says, against `LIVEGATE_STREAM_REPLICAS` (`wanted`). Empty for a
/// single-node setup (one replica configured and wanted, no followers): doctor prints what it
/// printed before clusters. Otherwise one `Ok`, or one `Warn` per problem.
///
/// `cluster.replicas` lists the followers only; the leader is `cluster.leader`.
pub(super) fn stream_replicas(
    configured: usize,
    wanted: usize,
    cluster: Option<&ClusterInfo>,
) -> Vec<Outcome> {
    let configured = configured.max(1);
    let followers = cluster.map_or(&[][..], |c| c.replicas.as_slice());
    if configured <= 1 && wanted <= 1 && followers.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if configured < wanted {
        out.push(Outcome::Warn(
            format!("{configured} replica(s) configured, LIVEGATE_STREAM_REPLICAS={wanted}"),
            "restart metering and auth: at start they raise their streams and buckets to LIVEGATE_STREAM_REPLICAS (never lower)",
        ));
    }
    let leader = cluster
        .and_then(|c| c.leader.as_deref())
        .filter(|l| !l.is_empty());
    let Some(leader) = leader else {
        out.push(Outcome::Warn(
            format!("no leader ({configured} replica(s) configured)"),
            "no majority of its replicas is up: start the NATS servers that are down; until then writes to it fail",
        ));
        return out;
    };
    let lagging: Vec<String> = followers
        .iter()
        .filter(|p| p.offline || !p.current)
        .map(|p| {
            let state = if p.offline { "offline" } else { "not current" };
            let mut s = format!("{} {state}", p.name);
            if let Some(lag) = p.lag.filter(|l| *l > 0) {
                let _ = write!(s, ", {lag} operation(s) behind");
            }
            // Zero: this leader has not heard from it since it was elected.
            if !p.active.is_zero() {
                let _ = write!(s, ", last seen {} s ago", p.active.as_secs());
            }
            s
        })
        .collect();
    // A replica the group does not list at all (never joined) is as absent as an offline one.
    let total = configured.max(followers.len() + 1);
    let current = 1 + followers.iter().filter(|p| p.current && !p.offline).count();
    if lagging.is_empty() && current == total {
        if out.is_empty() {
            out.push(Outcome::Ok(format!(
                "leader {leader}, {current}/{total} replicas current"
            )));
        }
    } else {
        let mut detail = format!("leader {leader}, {current}/{total} replicas current");
        if !lagging.is_empty() {
            let _ = write!(detail, ": {}", named(&lagging));
        }
        out.push(Outcome::Warn(
            detail,
            "start the NATS server named (it catches up from the leader); the stream keeps working while a majority of its replicas runs, but one more loss stops it",
        ));
    }
    out
}

/// `a, b, c, d and 3 more`.
fn named(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        let _ = write!(s, " and {} more", items.len() - NAMED);
    }
    s
}

/// One row of `system.replicas` (columns present from ClickHouse 18.16 on; cast so the
/// binary row types are the same on every version).
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
pub(super) struct ReplicaRow {
    pub table: String,
    pub replica_name: String,
    pub is_readonly: u8,
    pub absolute_delay: u64,
    pub queue_size: u64,
    pub total_replicas: u64,
    pub active_replicas: u64,
}

/// `system.clusters` for the configured cluster.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ClusterRow {
    shards: u64,
    replicas: u64,
}

/// `ClickHouse cluster` and `ClickHouse replicas` lines, for `CLICKHOUSE_CLUSTER=cluster` on
/// the server `client` reaches.
pub(super) async fn check_clickhouse_cluster(
    client: &clickhouse::Client,
    db: &str,
    cluster: &str,
    r: &mut Report<'_>,
) -> anyhow::Result<()> {
    let name = "ClickHouse cluster";
    if !livegate_common::clickhouse::is_identifier(cluster) {
        r.line(
            name,
            Outcome::Fail(
                format!("{cluster:?}"),
                "CLICKHOUSE_CLUSTER must be a plain identifier (a cluster of remote_servers)",
            ),
        )?;
        return Ok(());
    }
    let sql = "SELECT toUInt64(uniqExact(shard_num)) AS shards, toUInt64(count()) AS replicas \
               FROM system.clusters WHERE cluster = ?";
    match timed(client.query(sql).bind(cluster).fetch_one::<ClusterRow>()).await {
        Ok(c) if c.replicas == 0 => r.line(
            name,
            Outcome::Fail(
                format!("{cluster} is not in this server's system.clusters"),
                "define it under remote_servers on every replica, or set CLICKHOUSE_CLUSTER to one listed in system.clusters",
            ),
        )?,
        Ok(c) => r.line(
            name,
            Outcome::Ok(format!(
                "{cluster}: {} shard(s), {} replica(s)",
                c.shards, c.replicas
            )),
        )?,
        Err(e) => r.line(
            name,
            Outcome::Fail(e, "check the ClickHouse user may read system.clusters"),
        )?,
    }
    // `database` is compared as a bound value; the casts keep the row types fixed across
    // versions (18.16 has UInt8 replica counts, UInt32 queue sizes).
    let sql = "SELECT table, replica_name, toUInt8(is_readonly) AS is_readonly, \
               toUInt64(absolute_delay) AS absolute_delay, toUInt64(queue_size) AS queue_size, \
               toUInt64(total_replicas) AS total_replicas, \
               toUInt64(active_replicas) AS active_replicas \
               FROM system.replicas WHERE database = ? ORDER BY table";
    let name = "ClickHouse replicas";
    match timed(client.query(sql).bind(db).fetch_all::<ReplicaRow>()).await {
        Ok(rows) => {
            for outcome in replica_health(db, &rows) {
                r.line(name, outcome)?;
            }
        }
        Err(e) => r.line(
            name,
            Outcome::Fail(
                e,
                "check the ClickHouse user may read system.replicas, and ZooKeeper",
            ),
        )?,
    }
    Ok(())
}

/// What `system.replicas` for `db` says: one `Ok`, or one `Warn` per kind of problem (read-only
/// tables, replicas down, replication behind), each naming its tables.
pub(super) fn replica_health(db: &str, rows: &[ReplicaRow]) -> Vec<Outcome> {
    let Some(first) = rows.first() else {
        return vec![Outcome::Warn(
            format!("no replicated tables in database {db}"),
            "the schema was not migrated in cluster mode: run metering with this CLICKHOUSE_CLUSTER on an empty database",
        )];
    };
    let replica = &first.replica_name;
    let mut out = Vec::new();
    let readonly: Vec<String> = rows
        .iter()
        .filter(|t| t.is_readonly != 0)
        .map(|t| t.table.clone())
        .collect();
    if !readonly.is_empty() {
        out.push(Outcome::Warn(
            format!("read-only on replica {replica}: {}", named(&readonly)),
            "this server lost ZooKeeper (or the table's metadata in it): inserts here fail; check the ZooKeeper ensemble and this server's <zookeeper> config",
        ));
    }
    let down: Vec<String> = rows
        .iter()
        .filter(|t| t.active_replicas < t.total_replicas)
        .map(|t| {
            format!(
                "{} {}/{} active",
                t.table, t.active_replicas, t.total_replicas
            )
        })
        .collect();
    if !down.is_empty() {
        out.push(Outcome::Warn(
            format!("a replica is down (seen from {replica}): {}", named(&down)),
            "start the missing ClickHouse replica (system.replicas on it, or its log, says why it stopped); it fetches what it missed from the others",
        ));
    }
    let behind: Vec<String> = rows
        .iter()
        .filter(|t| t.absolute_delay > MAX_DELAY_SECS || t.queue_size > MAX_QUEUE)
        .map(|t| {
            format!(
                "{} {} s behind, queue {}",
                t.table, t.absolute_delay, t.queue_size
            )
        })
        .collect();
    if !behind.is_empty() {
        out.push(Outcome::Warn(
            format!("replica {replica} is behind: {}", named(&behind)),
            "replication is not keeping up: read last_exception in system.replication_queue, and check disk, network and merges",
        ));
    }
    if out.is_empty() {
        let total = rows.iter().map(|t| t.total_replicas).max().unwrap_or(0);
        let delay = rows.iter().map(|t| t.absolute_delay).max().unwrap_or(0);
        out.push(Outcome::Ok(format!(
            "replica {replica}: {} tables, {total}/{total} replicas active, at most {delay} s behind",
            rows.len()
        )));
    }
    out
}
