//! Team budgets end to end: a team record set with `livegate teams set` gives every key of
//! the team a budget, enforced like a key's: a new session is refused (4402) once the team's
//! spend reached it, a turn that would overspend it is refused before the upstream sees it
//! (`budget.scope` = "team", while the key itself has no budget), and a session is closed after
//! the turn that reached it. Every session of the team counts towards it, whichever key.

use crate::budgets::{long_turn, one_turn_costs};
use clap::Parser;
use futures_util::SinkExt;
use livegate_proto::auth::{KeySettings, SetTeamRequest, TeamSettings};
use livegate_system_tests::*;
use rust_decimal::Decimal;
use std::time::Duration;

pub(crate) async fn cli(stack: &Stack, args: &[&str]) -> String {
    let auth = format!("http://{}", stack.auth.addr);
    let all = ["livegate", "--auth-url", &auth, "--master-key", MASTER]
        .into_iter()
        .chain(args.iter().copied());
    let args = livegate::Args::try_parse_from(all).unwrap();
    let mut out = Vec::new();
    livegate::run(args, &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn set_team_budget(stack: &Stack, team: &str, budget: Decimal) {
    let mut req = tonic::Request::new(SetTeamRequest {
        team_id: team.into(),
        settings: Some(TeamSettings {
            max_budget_usd: budget.normalize().to_string(),
        }),
        update_mask: vec![],
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    stack.auth_client().await.set_team(req).await.unwrap();
}

async fn key_in_team(stack: &Stack, team: &str) -> (String, String) {
    stack
        .create_key(KeySettings {
            team_id: team.into(),
            ..KeySettings::default()
        })
        .await
}

/// The close a new session of `key` gets, or `None` when its setup is answered.
async fn outcome(stack: &Stack, key: &str) -> Option<(u16, String)> {
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(key)).await;
    let _ = ws.send(setup(MODEL)).await;
    match next_frame(&mut ws).await {
        tokio_tungstenite::tungstenite::Message::Close(f) => {
            Some(f.map_or((1005, String::new()), |f| {
                (u16::from(f.code), f.reason.to_string())
            }))
        }
        _ => {
            let _ = ws.close(None).await;
            None
        }
    }
}

/// Polls new sessions of `key` until their outcome is `want` (bounded: 5 s, less than the
/// test gateway's key-check cache TTL, so only the KV watch can make it in time).
async fn until_outcome(stack: &Stack, key: &str, want: Option<(u16, &str)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = outcome(stack, key).await;
        if got.as_ref().map(|(c, r)| (*c, r.as_str())) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new sessions still get {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_spent_team_budget_refuses_new_sessions_of_every_key_of_the_team() {
    // A long key-check cache: a team change must reach cached checks through the KV watch.
    let stack = Stack::start_with_gateway(|g| g.auth_cache_ttl = Duration::from_secs(120)).await;
    let (a, a_id) = key_in_team(&stack, "growth").await;
    let (b, _) = key_in_team(&stack, "growth").await;
    let (other, _) = key_in_team(&stack, "ops").await;
    // Metering has billed the team 1.5 (written as metering writes it).
    let spend = stack.spend_bucket().await;
    spend
        .put(
            livegate_common::subjects::spend_key_for_team("growth"),
            "1.5".into(),
        )
        .await
        .unwrap();
    // No team budget yet: the team's keys work (and their checks are cached now).
    assert_eq!(outcome(&stack, &a).await, None);
    assert_eq!(outcome(&stack, &b).await, None);

    let out = cli(&stack, &["teams", "set", "growth", "--max-budget-usd", "1"]).await;
    assert_eq!(out.trim(), "set team growth: budget $1");
    let refused = Some((4402, "budget spent for this API key's team"));
    until_outcome(&stack, &a, refused).await;
    until_outcome(&stack, &b, refused).await;
    assert_eq!(
        outcome(&stack, &other).await,
        None,
        "another team is not affected"
    );

    // The team as operators see it, and its budget in each key's info.
    let shown: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["teams", "show", "growth", "--json"]).await).unwrap();
    assert_eq!(
        (
            &shown["max_budget_usd"],
            &shown["spend_usd"],
            &shown["keys"]
        ),
        (
            &serde_json::json!("1"),
            &serde_json::json!("1.5"),
            &serde_json::json!(2)
        ),
        "{shown}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["teams", "list", "--json"]).await).unwrap();
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["team_id"].as_str().unwrap(),
                t["has_record"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("growth", true), ("ops", false)]);
    let keys: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["keys", "list", "--json"]).await).unwrap();
    let a_info = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == a_id.as_str())
        .unwrap();
    assert_eq!(a_info["team_max_budget_usd"], "1");
    assert_eq!(
        a_info["max_budget_usd"], "",
        "the key has no budget of its own"
    );
    // The key's resumption bounds through the CLI: set, shown, cleared back to the gateway's.
    let updated: serde_json::Value = serde_json::from_str(
        &cli(
            &stack,
            &[
                "keys",
                "update",
                &a_id,
                "--max-resumption-duration",
                "30m",
                "--max-resumptions",
                "3",
                "--json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        (
            &updated["max_resumption_seconds"],
            &updated["max_resumptions"]
        ),
        (&serde_json::json!(1800), &serde_json::json!(3)),
        "{updated}"
    );
    let cleared: serde_json::Value = serde_json::from_str(
        &cli(
            &stack,
            &[
                "keys",
                "update",
                &a_id,
                "--max-resumption-duration",
                "",
                "--json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(cleared["max_resumption_seconds"], serde_json::Value::Null);
    assert_eq!(cleared["max_resumptions"], 3, "only the flags given change");

    // Raising the budget, then clearing the record, lets the team in again.
    cli(&stack, &["teams", "set", "growth", "--max-budget-usd", "2"]).await;
    until_outcome(&stack, &a, None).await;
    cli(
        &stack,
        &["teams", "set", "growth", "--max-budget-usd", "1.5"],
    )
    .await;
    until_outcome(&stack, &b, refused).await;
    let out = cli(&stack, &["teams", "clear", "growth"]).await;
    assert_eq!(out.trim(), "cleared team growth (no team budget now)");
    until_outcome(&stack, &b, None).await;
    let shown: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["teams", "show", "growth", "--json"]).await).unwrap();
    assert_eq!(shown["has_record"], false);
    assert_eq!(shown["max_budget_usd"], "");
}

#[tokio::test]
async fn a_turn_over_the_team_budget_is_refused_with_scope_team_while_the_key_has_none() {
    let stack = Stack::start().await;
    let (first, next) = one_turn_costs(&stack).await;
    // The first turn fits; after it, the second's floor is a hair over what the team has left.
    set_team_budget(&stack, "growth", first + next - Decimal::new(1, 12)).await;
    let (key, _) = key_in_team(&stack, "growth").await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;
    let upstream_frames = stack.emulator.stats().frames_in;

    ws.send(long_turn()).await.unwrap();
    let notice = json_of(&next_frame(&mut ws).await);
    assert_eq!(notice["error"]["status"], "BUDGET_EXCEEDED", "{notice}");
    let b = &notice["error"]["budget"];
    let usd = |k: &str| b[k].as_str().unwrap().parse::<Decimal>().unwrap();
    assert_eq!(b["scope"], "team", "{notice}");
    assert_eq!(usd("limitUsd"), first + next - Decimal::new(1, 12));
    assert_eq!(usd("nextTurnUsd"), next);
    assert_eq!(
        usd("inFlightUsd"),
        first,
        "the first turn is in flight for the team although the key has no budget: {notice}"
    );
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 4402, "{reason}");
    assert!(reason.ends_with("of this API key's team"), "{reason}");
    assert_eq!(
        stack.emulator.stats().frames_in,
        upstream_frames,
        "the refused turn reached the upstream"
    );
}

#[tokio::test]
async fn every_session_of_the_team_counts_towards_its_budget() {
    let stack = Stack::start().await;
    let (first, _) = one_turn_costs(&stack).await;
    // Room for one and a half turns, for the whole team.
    set_team_budget(&stack, "growth", first + first / Decimal::TWO).await;
    let (a, _) = key_in_team(&stack, "growth").await;
    let (b, _) = key_in_team(&stack, "growth").await;
    let mut wa = stack.connect("/v1/vertex-ai/live", Some(&a)).await;
    open_session(&mut wa, setup(MODEL)).await;
    wa.send(long_turn()).await.unwrap();
    read_turn(&mut wa).await;
    // Key b's session: its first turn fits (half a turn left), and b's spend on top of a's
    // reaches the team budget: the session is closed after that turn.
    let mut wb = stack.connect("/v1/vertex-ai/live", Some(&b)).await;
    open_session(&mut wb, setup(MODEL)).await;
    wb.send(long_turn()).await.unwrap();
    let turn = read_turn(&mut wb).await;
    assert!(
        json_of(turn.last().unwrap())["usageMetadata"].is_object(),
        "{turn:?}"
    );
    let (code, reason) = close_of(&mut wb).await;
    assert_eq!(
        (code, reason.as_str()),
        (4402, "budget spent for this API key or its team")
    );
    // And a's next turn is refused before the upstream sees it, for the team.
    wa.send(long_turn()).await.unwrap();
    let notice = json_of(&next_frame(&mut wa).await);
    assert_eq!(notice["error"]["budget"]["scope"], "team", "{notice}");
    assert_eq!(close_of(&mut wa).await.0, 4402);
}
