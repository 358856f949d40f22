//! Team records: a team's settings (today its budget), stored by auth in `livegate_keys` under
//! `t.<team_id>` as JSON next to the key records, so the same KV watch mirrors them into every
//! auth replica and every gateway sees their changes (and drops cached key checks of the team).
//!
//! A team exists for spend as soon as a key names it (metering totals `team.<id>`); a record
//! is only needed to give it a budget. Clearing the record removes the team budget.

use crate::keys::{SettingsError, now_unix, parse_budget, valid_name};
use livegate_proto::auth::{TeamInfo, TeamSettings};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// KV key prefix of team records in `livegate_keys`.
pub const TEAM_PREFIX: &str = "t.";

/// The `TeamSettings` fields `SetTeam` accepts in its mask.
pub const TEAM_FIELDS: &[&str] = &["max_budget_usd"];

/// What is stored under `t.<team_id>`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub team_id: String,
    /// USD; `None` = no team budget.
    #[serde(default)]
    pub max_budget_usd: Option<Decimal>,
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

/// A team id that can be a record's KV key: a key's team name (`valid_name`) whose
/// dot-separated parts are all non-empty (NATS KV keys have no empty tokens).
pub fn valid_team_id(team_id: &str) -> bool {
    valid_name(team_id) && team_id.split('.').all(|part| !part.is_empty())
}

/// Checks a team id given to a team call.
///
/// # Errors
/// [`SettingsError::BadName`] for an empty or unusable id.
pub fn check_team_id(team_id: &str) -> Result<(), SettingsError> {
    if valid_team_id(team_id) {
        Ok(())
    } else {
        Err(SettingsError::BadName { field: "team_id" })
    }
}

impl TeamRecord {
    /// An empty record for `team_id` (no budget yet).
    pub fn new(team_id: &str) -> Self {
        let now = now_unix();
        Self {
            team_id: team_id.to_string(),
            max_budget_usd: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The KV key of this record.
    pub fn kv_key(&self) -> String {
        format!("{TEAM_PREFIX}{}", self.team_id)
    }

    /// Applies the named fields of `s` (all of [`TEAM_FIELDS`] when `fields` is empty).
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid value or an unknown field; the record is unchanged then.
    pub fn apply(&mut self, s: &TeamSettings, fields: &[&str]) -> Result<(), SettingsError> {
        let fields = if fields.is_empty() {
            TEAM_FIELDS
        } else {
            fields
        };
        let mut next = self.clone();
        for field in fields {
            match *field {
                "max_budget_usd" => next.max_budget_usd = parse_budget(&s.max_budget_usd)?,
                other => return Err(SettingsError::UnknownField(other.to_string())),
            }
        }
        next.updated_at = now_unix();
        *self = next;
        Ok(())
    }
}

/// The public view of a team: its record (if any), spend and number of live keys.
pub fn info(team_id: &str, record: Option<&TeamRecord>, spend: Decimal, keys: usize) -> TeamInfo {
    let ts = |s: i64| prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    };
    TeamInfo {
        team_id: team_id.to_string(),
        max_budget_usd: record
            .and_then(|r| r.max_budget_usd)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        spend_usd: spend.to_string(),
        keys: u32::try_from(keys).unwrap_or(u32::MAX),
        has_record: record.is_some(),
        created_at: record.map(|r| ts(r.created_at)),
        updated_at: record.map(|r| ts(r.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_ids_must_make_kv_keys() {
        for ok in ["growth", "team-1", "a.b", "A_b.c-d"] {
            assert!(valid_team_id(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(!valid_team_id(bad), "{bad:?}");
        }
        assert_eq!(
            check_team_id("a..b"),
            Err(SettingsError::BadName { field: "team_id" })
        );
    }

    #[test]
    fn settings_apply_by_mask_and_validate() {
        let mut r = TeamRecord::new("growth");
        assert_eq!(r.kv_key(), "t.growth");
        r.apply(
            &TeamSettings {
                max_budget_usd: "100.50".into(),
            },
            &[],
        )
        .unwrap();
        assert_eq!(r.max_budget_usd, Some("100.5".parse().unwrap()));
        let before = r.clone();
        assert!(matches!(
            r.apply(
                &TeamSettings {
                    max_budget_usd: "-3".into()
                },
                &["max_budget_usd"]
            ),
            Err(SettingsError::BadBudget(_))
        ));
        assert_eq!(
            r.apply(&TeamSettings::default(), &["alias"]),
            Err(SettingsError::UnknownField("alias".into()))
        );
        assert_eq!(r, before, "a refused change changes nothing");
        // An empty budget removes it.
        r.apply(&TeamSettings::default(), &["max_budget_usd"])
            .unwrap();
        assert_eq!(r.max_budget_usd, None);
    }

    #[test]
    fn info_shows_the_record_spend_and_keys() {
        let mut r = TeamRecord::new("growth");
        r.max_budget_usd = Some(Decimal::from(100));
        let i = info("growth", Some(&r), "12.5".parse().unwrap(), 3);
        assert_eq!(
            (i.max_budget_usd.as_str(), i.spend_usd.as_str(), i.keys),
            ("100", "12.5", 3)
        );
        assert!(i.has_record && i.created_at.is_some());
        let bare = info("other", None, Decimal::ZERO, 1);
        assert!(!bare.has_record && bare.max_budget_usd.is_empty() && bare.created_at.is_none());
    }
}
