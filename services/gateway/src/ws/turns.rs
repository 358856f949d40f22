//! Per-turn predictive budgets. Context is re-billed every turn, so the next turn costs at
//! least the last usage report's prompt at the model's input price. Before the client frame
//! that ends a turn is forwarded, [`TurnBudget::admit`] checks that this floor still fits in
//! the key's remaining budget: budget − (spend mirrored from `livegate_spend` + what this
//! replica has priced but the mirror does not show yet). Every usage report is priced here
//! with `livegate_common::pricing` (metering's rules and table) and counted as in flight
//! until the mirror catches up ([`Spend`]). How exact this is across replicas: README,
//! "Budgets".

use super::close::{self, Close};
use crate::mirrors::{Committed, Spend};
use crate::state::App;
use livegate_common::pricing::{ByModality, Pricing, Usage};
use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
use livegate_proto::usage::{MediaMeasurements, Modality, ModalityTokens, TokenUsage};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// One session's budget state, shared by both relay directions.
pub struct TurnBudget {
    spend: Spend,
    pricing: Arc<Pricing>,
    model: String,
    /// `key.{id}`, and `team.{id}` when the key has a team: where in-flight spend is counted.
    spend_keys: Vec<String>,
    /// The key's budget, if it has one. (Auth's `KeyInfo` carries no team budget; team spend
    /// is mirrored, and counted in flight for the sessions of keys with a budget.)
    key_budget: Option<Decimal>,
    /// The least the next turn costs: the last report's prompt at the input price.
    next_turn: Mutex<Decimal>,
}

/// Why a turn was refused: the numbers the client is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub budget: Decimal,
    pub committed: Committed,
    pub next_turn: Decimal,
}

impl Refusal {
    /// The close the client gets: 4402, preceded by a JSON text frame (shape in the README,
    /// "Budgets"):
    /// `{"error":{"code":4402,"status":"BUDGET_EXCEEDED","message":…,"budget":{…}}}`.
    pub fn close(&self) -> Close {
        let notice = serde_json::json!({
            "error": {
                "code": close::BUDGET_SPENT,
                "status": "BUDGET_EXCEEDED",
                "message": "turn refused before reaching the model: its predicted cost exceeds the remaining budget of this API key",
                "budget": {
                    "scope": "key",
                    "limitUsd": self.budget.normalize().to_string(),
                    "spentUsd": self.committed.mirrored.normalize().to_string(),
                    "inFlightUsd": self.committed.in_flight.normalize().to_string(),
                    "nextTurnUsd": self.next_turn.normalize().to_string(),
                },
            }
        });
        Close::new(
            close::BUDGET_SPENT,
            "turn refused: its predicted cost exceeds the remaining budget of this API key",
        )
        .with_notice(notice.to_string())
    }
}

/// `max_budget_usd` as auth sends it: empty (or not a number) is no budget.
fn parse_budget(text: &str) -> Option<Decimal> {
    Decimal::from_str(text.trim()).ok()
}

impl TurnBudget {
    /// The budget state of a session of `key_id` (in `team_id`, may be empty) on `model`.
    pub fn new(app: &App, key_id: &str, team_id: &str, max_budget_usd: &str, model: &str) -> Self {
        let mut spend_keys = vec![spend_key_for_key(key_id)];
        if !team_id.is_empty() {
            spend_keys.push(spend_key_for_team(team_id));
        }
        Self {
            spend: app.spend.clone(),
            pricing: app.pricing.clone(),
            model: model.to_string(),
            spend_keys,
            key_budget: parse_budget(max_budget_usd),
            next_turn: Mutex::new(Decimal::ZERO),
        }
    }

    /// Prices a usage report as metering will, counts it in flight, and keeps its prompt's
    /// price as the floor of the next turn.
    /// Without a budget there is nothing to check: nothing is priced or kept.
    pub fn priced(&self, tokens: &TokenUsage, media: &MediaMeasurements) {
        if self.key_budget.is_none() {
            return;
        }
        let usage = usage_of(tokens, media);
        let cost = self.pricing.price(&self.model, &usage).cost.total();
        let keys: Vec<&str> = self.spend_keys.iter().map(String::as_str).collect();
        self.spend.add_in_flight(&keys, cost);
        let next = self.pricing.price(&self.model, &prompt_only(&usage)).cost;
        *self
            .next_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next.input();
    }

    /// The key's committed spend (mirrored + in flight), or `None` without a budget.
    fn committed(&self) -> Option<(Decimal, Committed)> {
        let budget = self.key_budget?;
        let key = self.spend_keys.first()?;
        Some((budget, self.spend.committed(key)))
    }

    /// Whether the next turn fits: committed spend plus the next turn's floor within the
    /// budget (and, with no floor yet, committed spend below it).
    ///
    /// # Errors
    /// [`Refusal`] when it does not.
    pub fn admit(&self) -> Result<(), Refusal> {
        let Some((budget, committed)) = self.committed() else {
            return Ok(());
        };
        let next_turn = *self
            .next_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let total = committed.total();
        if total >= budget || total + next_turn > budget {
            return Err(Refusal {
                budget,
                committed,
                next_turn,
            });
        }
        Ok(())
    }

    /// Whether the budget is spent (mirrored + in flight reached it): checked after each
    /// model turn.
    pub fn spent(&self) -> bool {
        self.committed()
            .is_some_and(|(budget, committed)| committed.total() >= budget)
    }
}

/// Google's per-modality list, summed per bucket (DOCUMENT and unspecified count as TEXT),
/// as metering sums it.
fn by_modality(details: &[ModalityTokens]) -> ByModality {
    let mut b = ByModality::default();
    for d in details {
        let slot = match d.modality() {
            Modality::Audio => &mut b.audio,
            Modality::Image => &mut b.image,
            Modality::Video => &mut b.video,
            Modality::Text | Modality::Document | Modality::Unspecified => &mut b.text,
        };
        *slot = slot.saturating_add(d.token_count);
    }
    b
}

/// A usage report in the pricing engine's terms, as metering builds it from the same report.
pub fn usage_of(t: &TokenUsage, m: &MediaMeasurements) -> Usage {
    Usage {
        prompt_tokens: t.prompt_tokens,
        prompt: by_modality(&t.prompt_details),
        response_tokens: t.response_tokens,
        response: by_modality(&t.response_details),
        cached_tokens: t.cached_tokens,
        cached: by_modality(&t.cache_details),
        tool_use_tokens: t.tool_use_prompt_tokens,
        tool_use: by_modality(&t.tool_use_prompt_details),
        thoughts_tokens: t.thoughts_tokens,
        input_characters: m.input_characters,
        input_audio_seconds: m.input_audio_seconds,
        input_video_seconds: m.input_video_seconds,
        input_images: m.input_images,
        output_characters: m.output_characters,
        output_audio_seconds: m.output_audio_seconds,
        traffic_type: t.traffic_type.clone(),
    }
}

/// The prompt of `u` alone (cached part included, so a cache price still applies): what the
/// next turn is billed again at least.
fn prompt_only(u: &Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        prompt: u.prompt,
        cached_tokens: u.cached_tokens,
        cached: u.cached,
        traffic_type: u.traffic_type.clone(),
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livegate_common::pricing::PriceTable;

    fn budget(spend: &Spend, max: &str) -> TurnBudget {
        let table = PriceTable::parse(
            r#"{"m": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002,
                      "input_cost_per_audio_token": 0.01}}"#,
        )
        .unwrap();
        TurnBudget {
            spend: spend.clone(),
            pricing: Arc::new(Pricing::with_tables(table, PriceTable::default())),
            model: "m".into(),
            spend_keys: vec!["key.k".into(), "team.t".into()],
            key_budget: parse_budget(max),
            next_turn: Mutex::new(Decimal::ZERO),
        }
    }

    fn tokens(prompt: u64, response: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            response_tokens: response,
            ..TokenUsage::default()
        }
    }

    fn usd(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_turn_must_fit_with_the_last_prompt_at_the_input_price() {
        let spend = Spend::default();
        let b = budget(&spend, "1");
        assert!(b.admit().is_ok(), "nothing spent, nothing predicted");
        // 300 prompt tokens (0.3) + 100 response tokens (0.2) = 0.5 in flight.
        b.priced(&tokens(300, 100), &MediaMeasurements::default());
        assert_eq!(spend.committed("key.k").in_flight, usd("0.5"));
        assert_eq!(spend.committed("team.t").in_flight, usd("0.5"));
        // 0.5 + 0.3 ≤ 1: admitted.
        assert!(b.admit().is_ok());
        // Another 0.3 + 0.2: 1.0 spent, 0.3 predicted: refused, with the numbers.
        b.priced(&tokens(300, 100), &MediaMeasurements::default());
        let r = b.admit().unwrap_err();
        assert_eq!(r.budget, usd("1"));
        assert_eq!(r.committed.total(), usd("1.0"));
        assert_eq!(r.next_turn, usd("0.3"));
        let close = r.close();
        assert_eq!(close.code, 4402);
        let notice: serde_json::Value =
            serde_json::from_str(close.notice.as_deref().unwrap()).unwrap();
        assert_eq!(notice["error"]["status"], "BUDGET_EXCEEDED");
        assert_eq!(notice["error"]["budget"]["nextTurnUsd"], "0.3");
        assert_eq!(notice["error"]["budget"]["inFlightUsd"], "1");
        assert!(b.spent());
    }

    #[test]
    fn the_prediction_prices_the_prompt_by_modality_and_refuses_what_only_just_overflows() {
        let spend = Spend::default();
        let b = budget(&spend, "0.5");
        // 10 AUDIO prompt tokens at 0.01 = 0.1 predicted; 0.1 + 0.02 output = 0.12 spent.
        let mut t = tokens(10, 10);
        t.prompt_details = vec![ModalityTokens {
            modality: Modality::Audio as i32,
            token_count: 10,
        }];
        b.priced(&t, &MediaMeasurements::default());
        assert!(b.admit().is_ok());
        // A second session of the same key sees the first one's spend in flight too.
        let b2 = budget(&spend, "0.48");
        b2.priced(&t, &MediaMeasurements::default());
        // 0.12 + 0.12 in flight + 0.1 predicted = 0.34 ≤ 0.48.
        assert!(b2.admit().is_ok());
        b2.priced(&t, &MediaMeasurements::default());
        // 0.36 + 0.1 = 0.46 ≤ 0.48; one more report: 0.48 + 0.1 > 0.48.
        assert!(b2.admit().is_ok());
        b2.priced(&t, &MediaMeasurements::default());
        assert!(b2.admit().is_err());
    }

    #[test]
    fn no_budget_admits_everything_and_prepaid_costs_nothing() {
        let spend = Spend::default();
        let b = budget(&spend, "");
        b.priced(&tokens(1_000_000, 0), &MediaMeasurements::default());
        assert!(b.admit().is_ok() && !b.spent());
        assert_eq!(spend.committed("key.k").total(), Decimal::ZERO);
        let spend = Spend::default();
        let b = budget(&spend, "0.01");
        let mut t = tokens(1_000_000, 1_000_000);
        t.traffic_type = livegate_common::pricing::PREPAID_TRAFFIC.into();
        b.priced(&t, &MediaMeasurements::default());
        assert!(b.admit().is_ok());
        assert_eq!(spend.committed("key.k").total(), Decimal::ZERO);
    }
}
