//! Per-turn predictive budgets. Context is re-billed every turn, so the next turn costs at
//! least the last usage report's prompt at the model's input price. Before the client frame
//! that ends a turn is forwarded, [`TurnBudget::admit`] checks that this floor still fits in
//! the key's remaining budget and in its team's: budget − (spend mirrored from
//! `livegate_spend` + what this replica has priced but the mirror does not show yet). Every
//! usage report of a session with a key or team budget is priced here with
//! `livegate_common::pricing` (metering's rules and table) and counted in flight, for the key
//! and its team, until the mirror catches up ([`Spend`]). How exact this is across replicas:
//! README, "Budgets".

use super::close::{self, Close};
use crate::mirrors::{Committed, Spend};
use crate::records::Limits;
use crate::state::App;
use livegate_common::pricing::{ByModality, Pricing, Usage};
use livegate_common::subjects::{spend_key_for_key, spend_key_for_team};
use livegate_proto::auth::KeyInfo;
use livegate_proto::usage::{MediaMeasurements, Modality, ModalityTokens, TokenUsage};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// Whose budget: the API key's own, or its team's (auth's team record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    Team,
}

impl Scope {
    /// `budget.scope` in the notice.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Team => "team",
        }
    }

    /// Whose budget, in words for the client.
    fn whose(self) -> &'static str {
        match self {
            Self::Key => "this API key",
            Self::Team => "this API key's team",
        }
    }
}

/// A session's budgets: the key's `max_budget_usd` and its team's `team_max_budget_usd`
/// (empty, or not a number, is no budget), as auth reported them at its start ([`Budgets::of`])
/// and then as the key's and team's records say ([`Limits`]: an operator's change applies from
/// the session's next check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    pub key: Option<Decimal>,
    pub team: Option<Decimal>,
}

impl Budgets {
    /// The budgets of `key`.
    pub fn of(key: &KeyInfo) -> Self {
        Self {
            key: parse_budget(&key.max_budget_usd),
            team: if key.team_id.is_empty() {
                None
            } else {
                parse_budget(&key.team_max_budget_usd)
            },
        }
    }

    fn any(&self) -> bool {
        self.key.is_some() || self.team.is_some()
    }
}

/// One session's budget state, shared by both relay directions.
pub struct TurnBudget {
    spend: Spend,
    pricing: Arc<Pricing>,
    model: String,
    /// `key.{id}`, and `team.{id}` when the key has a team: where in-flight spend is counted
    /// (both, whichever of the two has a budget, so every session of a team with a budget
    /// counts towards it).
    spend_keys: Vec<String>,
    /// The key's and team's budgets now (read at every check).
    limits: Limits,
    /// The last report's prompt: the least the next turn is billed again. Priced when the
    /// turn is checked, so prices reloaded on SIGHUP apply from the next turn.
    next_prompt: Mutex<Option<Usage>>,
}

/// Why a turn was refused: the numbers the client is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    pub budget: Decimal,
    pub committed: Committed,
    pub next_turn: Decimal,
}

impl Refusal {
    /// The close the client gets: 4402, preceded by a JSON text frame (shape in the README,
    /// "Budgets"):
    /// `{"error":{"code":4402,"status":"BUDGET_EXCEEDED","message":…,"budget":{…}}}`, with
    /// `budget.scope` `key` or `team`.
    pub fn close(&self) -> Close {
        let whose = self.scope.whose();
        let notice = serde_json::json!({
            "error": {
                "code": close::BUDGET_SPENT,
                "status": "BUDGET_EXCEEDED",
                "message": format!("turn refused before reaching the model: its predicted cost exceeds the remaining budget of {whose}"),
                "budget": {
                    "scope": self.scope.as_str(),
                    "limitUsd": self.budget.normalize().to_string(),
                    "spentUsd": self.committed.mirrored.normalize().to_string(),
                    "inFlightUsd": self.committed.in_flight.normalize().to_string(),
                    "nextTurnUsd": self.next_turn.normalize().to_string(),
                },
            }
        });
        Close::new(
            close::BUDGET_SPENT,
            format!("turn refused: its predicted cost exceeds the remaining budget of {whose}"),
        )
        .with_notice(notice.to_string())
    }
}

/// A budget as auth sends it: empty (or not a number) is no budget.
fn parse_budget(text: &str) -> Option<Decimal> {
    Decimal::from_str(text.trim()).ok()
}

impl TurnBudget {
    /// The budget state of a session of `key_id` (in `team_id`, may be empty) on `model`.
    pub fn new(app: &App, key_id: &str, team_id: &str, limits: Limits, model: &str) -> Self {
        Self::with(
            app.spend.clone(),
            app.pricing.clone(),
            key_id,
            team_id,
            limits,
            model,
        )
    }

    fn with(
        spend: Spend,
        pricing: Arc<Pricing>,
        key_id: &str,
        team_id: &str,
        limits: Limits,
        model: &str,
    ) -> Self {
        let mut spend_keys = vec![spend_key_for_key(key_id)];
        if !team_id.is_empty() {
            spend_keys.push(spend_key_for_team(team_id));
        }
        Self {
            spend,
            pricing,
            model: model.to_string(),
            spend_keys,
            limits,
            next_prompt: Mutex::new(None),
        }
    }

    /// Keeps a usage report's prompt as the floor of the next turn and, when the key or its
    /// team has a budget, prices the report as metering will and counts it in flight.
    /// Without a budget nothing is priced (metering's mirror has the spend when a budget is
    /// set later), but the prompt is kept: a budget set mid-session predicts its next turn.
    pub fn priced(&self, tokens: &TokenUsage, media: &MediaMeasurements) {
        let usage = usage_of(tokens, media);
        *self
            .next_prompt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(prompt_only(&usage));
        if !self.budgets().any() {
            return;
        }
        let cost = self.pricing.price(&self.model, &usage).cost.total();
        let keys: Vec<&str> = self.spend_keys.iter().map(String::as_str).collect();
        self.spend.add_in_flight(&keys, cost);
    }

    /// The key's and team's budgets now, as their records last said.
    fn budgets(&self) -> Budgets {
        Budgets {
            key: self.limits.key_budget(),
            team: self.limits.team_budget(),
        }
    }

    /// The key's and team's current limits (the session also watches them for revocation
    /// and expiry).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Each budget this session has, with its committed spend (mirrored + in flight): the
    /// key's first, then the team's.
    fn committed(&self) -> Vec<(Scope, Decimal, Committed)> {
        let mut out = Vec::with_capacity(2);
        let budgets = self.budgets();
        if let (Some(budget), Some(key)) = (budgets.key, self.spend_keys.first()) {
            out.push((Scope::Key, budget, self.spend.committed(key)));
        }
        if let (Some(budget), Some(team)) = (budgets.team, self.spend_keys.get(1)) {
            out.push((Scope::Team, budget, self.spend.committed(team)));
        }
        out
    }

    /// Whether the next turn fits: for the key's budget and the team's, committed spend plus
    /// the next turn's floor within the budget (and, with no floor yet, committed spend below
    /// it).
    ///
    /// # Errors
    /// [`Refusal`] naming the first budget (key, then team) it does not fit in.
    pub fn admit(&self) -> Result<(), Refusal> {
        let committed = self.committed();
        if committed.is_empty() {
            // No budget: nothing to price.
            return Ok(());
        }
        let prompt = self
            .next_prompt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let next_turn = prompt.map_or(Decimal::ZERO, |prompt| {
            self.pricing.price(&self.model, &prompt).cost.input()
        });
        for (scope, budget, committed) in committed {
            let total = committed.total();
            if total >= budget || total.saturating_add(next_turn) > budget {
                return Err(Refusal {
                    scope,
                    budget,
                    committed,
                    next_turn,
                });
            }
        }
        Ok(())
    }

    /// Whether the key's or the team's budget is spent (mirrored + in flight reached it):
    /// checked after each model turn.
    pub fn spent(&self) -> bool {
        self.committed()
            .iter()
            .any(|(_, budget, committed)| committed.total() >= *budget)
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

    fn fixed(key: Option<Decimal>, team: Option<Decimal>) -> Limits {
        Limits::fixed(
            crate::records::KeyLimits {
                max_budget_usd: key,
                ..Default::default()
            },
            team,
        )
    }

    fn budgets(spend: &Spend, key: &str, team: &str) -> TurnBudget {
        let table = PriceTable::parse(
            r#"{"m": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002,
                      "input_cost_per_audio_token": 0.01}}"#,
        )
        .unwrap();
        TurnBudget::with(
            spend.clone(),
            Arc::new(Pricing::with_tables(table, PriceTable::default())),
            "k",
            "t",
            fixed(parse_budget(key), parse_budget(team)),
            "m",
        )
    }

    fn budget(spend: &Spend, max: &str) -> TurnBudget {
        budgets(spend, max, "")
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
        assert_eq!(notice["error"]["budget"]["scope"], "key");
        assert!(b.spent());
    }

    #[test]
    fn a_team_budget_refuses_like_a_key_budget_and_counts_every_session_of_the_team() {
        let spend = Spend::default();
        // Two keys of team t, neither with a budget of its own; the team has 1.
        let a = budgets(&spend, "", "1");
        let b = TurnBudget::with(
            spend.clone(),
            a.pricing.clone(),
            "k2",
            "t",
            fixed(None, Some(usd("1"))),
            "m",
        );
        // 0.5 in flight on team t from a, and on key k (priced for the team's sake).
        a.priced(&tokens(300, 100), &MediaMeasurements::default());
        assert_eq!(spend.committed("team.t").in_flight, usd("0.5"));
        // b has no floor of its own yet: 0.5 < 1, admitted.
        assert!(b.admit().is_ok());
        b.priced(&tokens(300, 100), &MediaMeasurements::default());
        // Team: 1.0 in flight ≥ 1: both sessions refused, scope team, and spent.
        for s in [&a, &b] {
            let r = s.admit().unwrap_err();
            assert_eq!((r.scope, r.budget), (Scope::Team, usd("1")));
            assert_eq!(r.committed.total(), usd("1.0"));
            let close = r.close();
            assert!(
                close.reason.ends_with("of this API key's team"),
                "{}",
                close.reason
            );
            let notice: serde_json::Value =
                serde_json::from_str(close.notice.as_deref().unwrap()).unwrap();
            assert_eq!(notice["error"]["budget"]["scope"], "team");
            assert_eq!(notice["error"]["budget"]["limitUsd"], "1");
            assert!(s.spent());
        }
    }

    #[test]
    fn the_key_budget_is_named_first_and_the_team_refuses_what_the_key_admits() {
        let spend = Spend::default();
        let b = budgets(&spend, "10", "0.6");
        b.priced(&tokens(300, 100), &MediaMeasurements::default());
        // Key: 0.5 + 0.3 ≤ 10; team: 0.5 + 0.3 > 0.6.
        assert_eq!(b.admit().unwrap_err().scope, Scope::Team);
        assert!(!b.spent());
        let b = budgets(&spend, "0.5", "0.6");
        assert_eq!(
            b.admit().unwrap_err().scope,
            Scope::Key,
            "both refuse: key named"
        );
        // A team budget without a team (no team id) does not exist.
        let key = KeyInfo {
            team_max_budget_usd: "5".into(),
            max_budget_usd: "2".into(),
            ..KeyInfo::default()
        };
        assert_eq!(
            Budgets::of(&key),
            Budgets {
                key: Some(usd("2")),
                team: None
            }
        );
        let key = KeyInfo {
            team_id: "t".into(),
            ..key
        };
        assert_eq!(Budgets::of(&key).team, Some(usd("5")));
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
    fn prices_reloaded_between_turns_price_the_next_turn() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.json");
        std::fs::write(&file, r#"{"m": {"input_cost_per_token": 0.001}}"#).unwrap();
        let pricing = Arc::new(Pricing::load(Some(&file)).unwrap());
        let spend = Spend::default();
        let b = TurnBudget::with(
            spend.clone(),
            pricing.clone(),
            "k",
            "",
            fixed(Some(usd("1")), None),
            "m",
        );
        // 300 prompt tokens: 0.3 in flight, 0.3 predicted: admitted.
        b.priced(&tokens(300, 0), &MediaMeasurements::default());
        assert!(b.admit().is_ok());
        // Ten times the price (SIGHUP): the same prompt now predicts 3, refused at once,
        // before another report is priced.
        std::fs::write(&file, r#"{"m": {"input_cost_per_token": 0.01}}"#).unwrap();
        pricing.reload().unwrap();
        let r = b.admit().unwrap_err();
        assert_eq!(r.next_turn, usd("3"));
        assert_eq!(r.committed.total(), usd("0.3"), "spent at the old price");
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

    #[test]
    fn budgets_changed_by_the_operator_apply_from_the_next_check() {
        use crate::records::{Change, KeyLimits, Records};
        let spend = Spend::default();
        let records = Records::default();
        let pricing = budgets(&spend, "", "").pricing.clone();
        let granted = KeyLimits {
            max_budget_usd: Some(usd("10")),
            ..KeyLimits::default()
        };
        let b = TurnBudget::with(
            spend.clone(),
            pricing,
            "k",
            "t",
            records.subscribe("k", "t", granted, Some(usd("100"))),
            "m",
        );
        // 0.3 + 0.2 in flight; 0.3 predicted: fits both budgets.
        b.priced(&tokens(300, 100), &MediaMeasurements::default());
        assert!(b.admit().is_ok() && !b.spent());
        // The operator lowers the key's budget to 0.6: the next turn no longer fits.
        let lowered = KeyLimits {
            max_budget_usd: Some(usd("0.6")),
            ..KeyLimits::default()
        };
        records.apply(
            1,
            Change::Key {
                hash: "h".into(),
                key_id: "k".into(),
                limits: lowered,
            },
        );
        let r = b.admit().unwrap_err();
        assert_eq!((r.scope, r.budget), (Scope::Key, usd("0.6")));
        assert!(!b.spent());
        // Lowered to what is spent: the session ends after its turn.
        records.apply(
            2,
            Change::Key {
                hash: "h".into(),
                key_id: "k".into(),
                limits: KeyLimits {
                    max_budget_usd: Some(usd("0.5")),
                    ..KeyLimits::default()
                },
            },
        );
        assert!(b.spent());
        // Removing the key's budget and lowering the team's: the team's applies.
        records.apply(
            3,
            Change::Key {
                hash: "h".into(),
                key_id: "k".into(),
                limits: KeyLimits::default(),
            },
        );
        assert!(b.admit().is_ok() && !b.spent());
        records.apply(
            4,
            Change::Team {
                team_id: "t".into(),
                budget: Some(usd("0.5")),
            },
        );
        assert_eq!(b.admit().unwrap_err().scope, Scope::Team);
        assert!(b.spent());
    }

    #[test]
    fn a_budget_set_mid_session_predicts_the_next_turn_from_the_last_report() {
        use crate::records::{Change, KeyLimits, Records};
        let spend = Spend::default();
        let records = Records::default();
        let pricing = budgets(&spend, "", "").pricing.clone();
        let b = TurnBudget::with(
            spend.clone(),
            pricing,
            "k",
            "",
            records.subscribe("k", "", KeyLimits::default(), None),
            "m",
        );
        // No budget yet: a 300-token prompt goes by (nothing to check, nothing in flight).
        b.priced(&tokens(300, 0), &MediaMeasurements::default());
        assert!(b.admit().is_ok());
        assert_eq!(spend.committed("key.k").total(), Decimal::ZERO);
        // The operator sets a budget below the next turn's floor (300 x 0.001 = 0.3): the
        // next turn is refused, as it would be had the budget been there from the start.
        records.apply(
            1,
            Change::Key {
                hash: "h".into(),
                key_id: "k".into(),
                limits: KeyLimits {
                    max_budget_usd: Some(usd("0.2")),
                    ..KeyLimits::default()
                },
            },
        );
        let r = b.admit().unwrap_err();
        assert_eq!((r.scope, r.next_turn), (Scope::Key, usd("0.3")));
    }
}
