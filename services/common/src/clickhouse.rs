//! Connecting to ClickHouse the same way everywhere (metering writes, the CLI reads): one
//! client constructor and one rule for the database name, which is spliced into SQL
//! unquoted and so must be a plain identifier.
//!
//! ```
//! use livegate_common::clickhouse::is_identifier;
//! assert!(is_identifier("livegate_2"));
//! assert!(!is_identifier("2livegate"));
//! assert!(!is_identifier("live-gate"));
//! ```

/// A lazily connecting client. Row validation is off: ClickHouse 18.16 lacks the
/// `RowBinaryWithNamesAndTypes` format the crate's check uses. An empty password sends none.
pub fn client(url: &str, user: &str, password: &str) -> ::clickhouse::Client {
    let client = ::clickhouse::Client::default()
        .with_url(url)
        .with_user(user)
        .with_validation(false);
    if password.is_empty() {
        client
    } else {
        client.with_password(password)
    }
}

/// Whether `s` can be used unquoted as a ClickHouse database name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
