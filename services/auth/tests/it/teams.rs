//! Team records across replicas: a team budget set on one replica reaches every key of the
//! team in `CheckKey` on another; teams are listed, shown and cleared; bad input and missing
//! master keys are refused.

use crate::helpers::*;
use livegate_proto::auth::*;
use livegate_test_support::nats::NatsServer;
use std::time::Duration;
use tonic::Code;

fn set(team: &str, budget: &str) -> SetTeamRequest {
    SetTeamRequest {
        team_id: team.into(),
        settings: Some(TeamSettings {
            max_budget_usd: budget.into(),
        }),
        update_mask: vec!["max_budget_usd".into()],
    }
}

#[tokio::test]
async fn a_team_budget_set_on_one_replica_reaches_check_key_on_another() {
    let nats = NatsServer::start().await.unwrap();
    let a = spawn_auth(config(&nats.url())).await;
    let b = spawn_auth(config(&nats.url())).await;
    let (mut ca, cb) = (a.client().await, b.client().await);
    let (key, _) = create_key(
        &mut ca,
        KeySettings {
            team_id: "growth".into(),
            max_resumptions: Some(2),
            ..Default::default()
        },
    )
    .await;
    create_key(
        &mut ca,
        KeySettings {
            team_id: "ops".into(),
            ..Default::default()
        },
    )
    .await;

    let info = ca
        .set_team(admin(set("growth", "100.50")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            info.team_id.as_str(),
            info.max_budget_usd.as_str(),
            info.keys,
            info.has_record
        ),
        ("growth", "100.50", 1, true)
    );
    let team_budget_on_b = || {
        let mut cb = cb.clone();
        let key = key.clone();
        async move {
            cb.check_key(CheckKeyRequest { credential: key })
                .await
                .map(|r| r.into_inner().key.unwrap())
                .ok()
        }
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            team_budget_on_b()
                .await
                .is_some_and(|k| k.team_max_budget_usd == "100.50")
        })
        .await,
        "replica B never saw the team budget"
    );
    let k = team_budget_on_b().await.unwrap();
    assert_eq!(k.max_resumptions, Some(2));
    assert_eq!(k.max_resumption_seconds, None);

    let teams = cb
        .clone()
        .list_teams(admin(ListTeamsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let listed: Vec<_> = teams
        .iter()
        .map(|t| (t.team_id.as_str(), t.max_budget_usd.as_str(), t.has_record))
        .collect();
    assert_eq!(listed, [("growth", "100.50", true), ("ops", "", false)]);

    let cleared = ca
        .clear_team(admin(ClearTeamRequest {
            team_id: "growth".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.cleared);
    assert!(
        eventually(Duration::from_secs(2), || async {
            team_budget_on_b()
                .await
                .is_some_and(|k| k.team_max_budget_usd.is_empty())
        })
        .await,
        "replica B still sees a cleared team budget"
    );
    let again = ca
        .clear_team(admin(ClearTeamRequest {
            team_id: "growth".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.cleared);
    // A team only its keys name is shown without a record; an unknown one is not found.
    let shown = ca
        .get_team(admin(GetTeamRequest {
            team_id: "growth".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!shown.has_record && shown.keys == 1);
    let err = ca
        .get_team(admin(GetTeamRequest {
            team_id: "nobody".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn team_calls_refuse_bad_input_and_callers_without_the_master_key() {
    let nats = NatsServer::start().await.unwrap();
    let a = spawn_auth(config(&nats.url())).await;
    let mut c = a.client().await;
    for (team, budget) in [
        ("a..b", "1"),
        ("", "1"),
        ("growth", "-1"),
        ("growth", "lots"),
    ] {
        let err = c.set_team(admin(set(team, budget))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{team:?} {budget:?}");
    }
    let mut bad_mask = set("growth", "1");
    bad_mask.update_mask = vec!["alias".into()];
    let err = c.set_team(admin(bad_mask)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .set_team(tonic::Request::new(set("growth", "1")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_teams(tonic::Request::new(ListTeamsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    a.stop().await;
}
