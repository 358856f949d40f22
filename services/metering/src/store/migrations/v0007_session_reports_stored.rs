//! Migration 7: `sessions.reports_stored`, the usage reports the row's totals include (not the
//! `{session}:end` row, which `events_counted` also counts). A row with `reports_stored <
//! reports` was written short: the end event stopped waiting before every report the gateway
//! published was stored. The lease reconciler rewrites such a recent row once its late reports
//! land (`crate::leases`), and finds it by this column alone.
//!
//! Rows written before this migration read `least(reports, events_counted)`: short exactly when
//! fewer usage rows than published reports were summed (then certainly short, since every
//! stored report is a usage row), and complete otherwise (an old row cannot tell a missing
//! report from its `:end` row, so it is not refreshed rather than looked at forever). An
//! expression default works on ClickHouse 18.16: parts written before the column existed
//! compute it on read. (`ADD COLUMN`: the runner skips it when the column exists.)

use super::Migration;

/// Shipped: never edit (add a migration instead).
pub(super) const MIGRATION: Migration = Migration {
    version: 7,
    name: "sessions reports_stored",
    statements: &[
        "ALTER TABLE {db}.sessions ADD COLUMN reports_stored UInt64 DEFAULT least(reports, events_counted) AFTER reports",
    ],
};
