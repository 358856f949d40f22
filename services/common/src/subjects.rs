//! Names on the bus (DESIGN.md, "Bus contract"). Every service uses these constants, never
//! string literals, so a rename is one edit.
//!
//! ```
//! use livegate_common::subjects;
//! assert!(subjects::USAGE_REPORT.starts_with("livegate.usage."));
//! assert_eq!(subjects::STREAM_SUBJECTS, "livegate.usage.>");
//! ```

/// The JetStream stream that holds every usage and session event.
pub const STREAM: &str = "LIVEGATE_USAGE";
/// The subjects [`STREAM`] captures.
pub const STREAM_SUBJECTS: &str = "livegate.usage.>";
/// One `UsageReport` per upstream frame that carried `usageMetadata`.
pub const USAGE_REPORT: &str = "livegate.usage.v1.report";
/// `SessionEvent` (started / ended).
pub const SESSION_EVENT: &str = "livegate.usage.v1.session";
/// JetStream stream holding what metering could not use (an unknown subject, an undecodable
/// payload), each with the reason: set aside, never dropped.
pub const DEAD_LETTER_STREAM: &str = "LIVEGATE_DEADLETTER";
/// The subject [`DEAD_LETTER_STREAM`] captures; metering publishes to it.
pub const DEAD_LETTER_SUBJECT: &str = "livegate.deadletter.v1";
/// Header on a dead letter: the subject the message was published to.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "Livegate-Original-Subject";
/// Header on a dead letter: why metering could not use it.
pub const DEAD_LETTER_REASON_HEADER: &str = "Livegate-Reason";
/// Durable pull consumer shared by all metering replicas.
pub const METERING_CONSUMER: &str = "livegate-metering";
/// KV bucket: key records by key hash.
pub const KEYS_BUCKET: &str = "livegate_keys";
/// History kept per key in [`KEYS_BUCKET`]: a few past records, so an operator can see what a
/// key looked like before its last change.
pub const KEYS_HISTORY: i64 = 5;
/// KV bucket: running spend per key and per team, written by metering.
pub const SPEND_BUCKET: &str = "livegate_spend";
/// History kept per key in [`SPEND_BUCKET`]: only the newest total matters.
pub const SPEND_HISTORY: i64 = 1;
/// Minimum JetStream duplicate window for `Nats-Msg-Id` dedupe.
pub const DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// The `livegate_spend` KV key holding a key's running spend (decimal USD as text).
pub fn spend_key_for_key(key_id: &str) -> String {
    format!("key.{key_id}")
}

/// The `livegate_spend` KV key holding a team's running spend (decimal USD as text).
pub fn spend_key_for_team(team_id: &str) -> String {
    format!("team.{team_id}")
}
