//! Per-turn predictive budgets: a turn whose predicted cost (the last report's prompt at the
//! input price) does not fit in the key's remaining budget (minus what this gateway has in
//! flight) is refused with a notice and close 4402 before the upstream sees it; a turn that
//! fits is answered.

use futures_util::SinkExt;
use livegate_common::pricing::{ByModality, Pricing, Usage};
use livegate_proto::auth::KeySettings;
use livegate_system_tests::{
    MODEL, Stack, close_of, json_of, next_frame, open_session, read_turn, setup, text_turn,
};
use rust_decimal::Decimal;
use tokio_tungstenite::tungstenite::Message;

/// A long prompt: 1,000 TEXT tokens by the emulator's count, so the next turn's floor is
/// well above rounding.
pub(crate) fn long_turn() -> Message {
    text_turn(&"word ".repeat(800))
}

/// The cost of a turn's usage (from its `turnComplete` frame) and of its prompt alone, with
/// the gateway's own price table.
fn priced(turn: &[Message]) -> (Decimal, Decimal) {
    let last = json_of(turn.last().unwrap());
    let u = &last["usageMetadata"];
    let prompt = u["promptTokenCount"].as_u64().unwrap();
    let response = u["candidatesTokenCount"].as_u64().unwrap();
    let usage = Usage {
        prompt_tokens: prompt,
        prompt: ByModality {
            text: prompt,
            ..ByModality::default()
        },
        response_tokens: response,
        response: ByModality {
            text: response,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let pricing = Pricing::load(None).unwrap();
    let all = pricing.price(MODEL, &usage).cost.total();
    let prompt_only = Usage {
        response_tokens: 0,
        response: ByModality::default(),
        ..usage
    };
    let floor = pricing.price(MODEL, &prompt_only).cost.input();
    assert!(all > Decimal::ZERO && floor > Decimal::ZERO, "{u}");
    (all, floor)
}

async fn key_with_budget(stack: &Stack, budget: Decimal) -> String {
    stack
        .create_key(KeySettings {
            max_budget_usd: budget.normalize().to_string(),
            ..KeySettings::default()
        })
        .await
        .0
}

/// What one long turn costs and what the next is predicted to cost, from a session of a
/// key without a budget (the emulator answers the same turn the same way every time).
pub(crate) async fn one_turn_costs(stack: &Stack) -> (Decimal, Decimal) {
    let key = stack.key().await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    let turn = read_turn(&mut ws).await;
    ws.close(None).await.unwrap();
    priced(&turn)
}

#[tokio::test]
async fn the_turn_that_would_overspend_is_refused_before_the_upstream_sees_it() {
    let stack = Stack::start().await;
    let (first, next) = one_turn_costs(&stack).await;
    // The first turn fits; after it, the second's floor is a hair over what is left.
    let key = key_with_budget(&stack, first + next - Decimal::new(1, 12)).await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;
    let upstream_frames = stack.emulator.stats().frames_in;

    ws.send(long_turn()).await.unwrap();
    let notice = next_frame(&mut ws).await;
    let notice = json_of(&notice);
    assert_eq!(notice["error"]["code"], 4402, "{notice}");
    assert_eq!(notice["error"]["status"], "BUDGET_EXCEEDED", "{notice}");
    let b = &notice["error"]["budget"];
    assert_eq!(
        b["nextTurnUsd"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        next
    );
    assert_eq!(
        b["inFlightUsd"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        first,
        "the first turn is in flight (no metering runs, the mirror shows nothing): {notice}"
    );
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 4402, "{reason}");
    assert!(reason.contains("turn refused"), "{reason}");
    assert_eq!(
        stack.emulator.stats().frames_in,
        upstream_frames,
        "the refused turn reached the upstream"
    );
}

#[tokio::test]
async fn the_turn_that_fits_is_answered() {
    let stack = Stack::start().await;
    let (first, next) = one_turn_costs(&stack).await;
    // Exactly enough for the first turn and the second's floor.
    let key = key_with_budget(&stack, first + next).await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;
    ws.send(long_turn()).await.unwrap();
    let second = read_turn(&mut ws).await;
    assert!(
        json_of(second.last().unwrap())["usageMetadata"].is_object(),
        "the second turn was answered: {second:?}"
    );
    // Its output overspends the budget: the session ends after it, as before.
    let (code, _) = close_of(&mut ws).await;
    assert_eq!(code, 4402);
}

/// With metering running, the turn's spend lands in the mirror and leaves the in-flight
/// amount: counted once, never twice, whichever view holds it when the next turn is checked.
#[tokio::test]
async fn metered_spend_is_counted_once_between_the_mirror_and_in_flight() {
    let stack = Stack::start_with(livegate_system_tests::Options {
        metering: true,
        ..livegate_system_tests::Options::default()
    })
    .await;
    let (first, next) = one_turn_costs(&stack).await;
    let (key, key_id) = stack
        .create_key(KeySettings {
            max_budget_usd: (first + next - Decimal::new(1, 12)).normalize().to_string(),
            ..KeySettings::default()
        })
        .await;
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    ws.send(long_turn()).await.unwrap();
    read_turn(&mut ws).await;
    // Metering bills the turn and writes the key's spend (bounded wait).
    let bucket = stack.spend_bucket().await;
    let spend_key = livegate_common::subjects::spend_key_for_key(&key_id);
    let mut mirrored = Decimal::ZERO;
    for _ in 0..200 {
        if let Ok(Some(v)) = bucket.get(&spend_key).await {
            mirrored = livegate_common::spend::parse_usd(&v).unwrap();
            if mirrored > Decimal::ZERO {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(mirrored, first, "metering bills what the gateway predicted");
    // Let the gateway's watch see it too (it sees it within milliseconds; either way the
    // total below is the same).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    ws.send(long_turn()).await.unwrap();
    let notice = json_of(&next_frame(&mut ws).await);
    let b = &notice["error"]["budget"];
    let usd = |k: &str| b[k].as_str().unwrap().parse::<Decimal>().unwrap();
    assert_eq!(
        usd("spentUsd") + usd("inFlightUsd"),
        first,
        "the first turn counted once: {notice}"
    );
    assert_eq!(
        usd("spentUsd"),
        first,
        "the mirror holds it by now: {notice}"
    );
    assert_eq!(close_of(&mut ws).await.0, 4402);
}
