//! Unique names for streams, consumers, KV buckets and databases, so tests that share one
//! server can run in parallel without seeing each other's data.

use rand::Rng;

/// `<prefix>_<12 random hex digits>`, with every character of `prefix` outside
/// `[A-Za-z0-9_]` replaced by `_`.
///
/// The result is valid as a JetStream stream, consumer or KV bucket name and as an unquoted
/// ClickHouse identifier (a prefix starting with a digit gets a leading `t`).
pub fn unique(prefix: &str) -> String {
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, 't');
    }
    let suffix: u64 = rand::thread_rng().r#gen::<u64>() & 0xffff_ffff_ffff;
    format!("{name}_{suffix:012x}")
}

#[cfg(test)]
mod tests {
    use super::unique;

    #[test]
    fn sanitises_and_differs() {
        let a = unique("usage.v1 test");
        let b = unique("usage.v1 test");
        assert!(a.starts_with("usage_v1_test_"), "{a}");
        assert_eq!(a.len(), "usage_v1_test_".len() + 12);
        assert_ne!(a, b);
        assert!(unique("1x").starts_with("t1x_"));
        assert!(unique("").starts_with("t_"));
    }
}
