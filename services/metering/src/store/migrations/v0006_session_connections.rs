//! Migration 6: `sessions.upstream_connections` and `sessions.resumptions`, from the gateway's
//! `SessionEnded` since transparent upstream resumption: how many Live API connections one
//! client session used and how many resumptions succeeded. Rows of older gateways, and sessions
//! closed as lost, read 0 in both. (`ADD COLUMN`s: the runner skips one whose column exists.)

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 6,
    name: "sessions upstream connections and resumptions",
    statements: &[
        "ALTER TABLE {db}.sessions ADD COLUMN upstream_connections UInt32 DEFAULT 0 AFTER bytes_out",
        "ALTER TABLE {db}.sessions ADD COLUMN resumptions UInt32 DEFAULT 0 AFTER upstream_connections",
    ],
};
