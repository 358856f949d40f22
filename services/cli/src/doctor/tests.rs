//! The cluster classifications: replica lists in, lines out.

use super::Outcome;
use super::cluster::{MAX_DELAY_SECS, ReplicaRow, replica_health, stream_replicas};
use async_nats::jetstream::stream::{ClusterInfo, PeerInfo};
use std::time::Duration;

fn peer(name: &str, current: bool, offline: bool, lag: Option<u64>) -> PeerInfo {
    PeerInfo {
        name: name.into(),
        current,
        active: Duration::from_secs(12),
        offline,
        lag,
    }
}

fn group(leader: Option<&str>, replicas: Vec<PeerInfo>) -> ClusterInfo {
    ClusterInfo {
        name: Some("lg".into()),
        leader: leader.map(Into::into),
        replicas,
        ..Default::default()
    }
}

fn warn(o: &Outcome) -> &str {
    match o {
        Outcome::Warn(d, _) => d,
        other => panic!("not a warning: {other:?}"),
    }
}

#[test]
fn a_single_node_stream_adds_no_line() {
    // What a lone nats-server reports: itself as leader, no followers.
    let lone = group(Some("n0"), vec![]);
    assert_eq!(stream_replicas(1, 1, Some(&lone)), vec![]);
    assert_eq!(stream_replicas(1, 1, None), vec![]);
}

#[test]
fn every_replica_current_is_ok_with_the_leader() {
    let g = group(
        Some("n0"),
        vec![
            peer("n1", true, false, None),
            peer("n2", true, false, Some(0)),
        ],
    );
    assert_eq!(
        stream_replicas(3, 3, Some(&g)),
        vec![Outcome::Ok("leader n0, 3/3 replicas current".into())]
    );
}

#[test]
fn an_offline_or_lagging_replica_is_named_with_its_lag() {
    let g = group(
        Some("n0"),
        vec![
            peer("n1", true, false, None),
            peer("n2", false, true, Some(40)),
        ],
    );
    let out = stream_replicas(3, 3, Some(&g));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        warn(&out[0]),
        "leader n0, 2/3 replicas current: n2 offline, 40 operation(s) behind, last seen 12 s ago"
    );

    // Never heard from since this leader was elected: no "last seen".
    let mut unseen = peer("n1", false, false, Some(7));
    unseen.active = Duration::ZERO;
    let out = stream_replicas(2, 2, Some(&group(Some("n0"), vec![unseen])));
    assert_eq!(
        warn(&out[0]),
        "leader n0, 1/2 replicas current: n1 not current, 7 operation(s) behind"
    );
}

#[test]
fn a_replica_the_group_does_not_list_counts_as_missing() {
    let g = group(Some("n0"), vec![peer("n1", true, false, None)]);
    let out = stream_replicas(3, 3, Some(&g));
    assert_eq!(warn(&out[0]), "leader n0, 2/3 replicas current");
}

#[test]
fn no_leader_is_a_warning() {
    let g = group(None, vec![peer("n1", false, true, None)]);
    let out = stream_replicas(3, 3, Some(&g));
    assert_eq!(warn(&out[0]), "no leader (3 replica(s) configured)");
    assert_eq!(out.len(), 1);
}

#[test]
fn fewer_replicas_than_the_layout_wants_is_a_warning_even_when_healthy() {
    let lone = group(Some("n0"), vec![]);
    let out = stream_replicas(1, 3, Some(&lone));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        warn(&out[0]),
        "1 replica(s) configured, LIVEGATE_STREAM_REPLICAS=3"
    );
    // More than wanted is fine (replicas are never lowered).
    let g = group(
        Some("n0"),
        vec![peer("n1", true, false, None), peer("n2", true, false, None)],
    );
    assert!(matches!(
        stream_replicas(3, 1, Some(&g))[..],
        [Outcome::Ok(_)]
    ));
}

fn row(table: &str) -> ReplicaRow {
    ReplicaRow {
        table: table.into(),
        replica_name: "r1".into(),
        is_readonly: 0,
        absolute_delay: 0,
        queue_size: 0,
        total_replicas: 2,
        active_replicas: 2,
    }
}

#[test]
fn healthy_replicated_tables_are_ok() {
    let out = replica_health(
        "livegate",
        &[row("sessions_local"), row("usage_events_local")],
    );
    assert_eq!(
        out,
        vec![Outcome::Ok(
            "replica r1: 2 tables, 2/2 replicas active, at most 0 s behind".into()
        )]
    );
}

#[test]
fn each_kind_of_replica_problem_gets_its_line() {
    let mut down = row("sessions_local");
    down.active_replicas = 1;
    let mut readonly = row("usage_events_local");
    readonly.is_readonly = 1;
    let mut behind = row("spend_daily_local");
    behind.absolute_delay = MAX_DELAY_SECS + 1;
    let out = replica_health("livegate", &[down, readonly, behind, row("ok_local")]);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(warn(&out[0]), "read-only on replica r1: usage_events_local");
    assert_eq!(
        warn(&out[1]),
        "a replica is down (seen from r1): sessions_local 1/2 active"
    );
    assert_eq!(
        warn(&out[2]),
        "replica r1 is behind: spend_daily_local 61 s behind, queue 0"
    );
}

#[test]
fn long_table_lists_are_cut() {
    let rows: Vec<ReplicaRow> = (0..7)
        .map(|i| {
            let mut r = row(&format!("t{i}"));
            r.active_replicas = 1;
            r
        })
        .collect();
    let out = replica_health("livegate", &rows);
    assert!(
        warn(&out[0]).ends_with("t3 1/2 active and 3 more"),
        "{out:?}"
    );
}

#[test]
fn no_replicated_tables_is_a_warning() {
    let out = replica_health("livegate", &[]);
    assert_eq!(warn(&out[0]), "no replicated tables in database livegate");
}
