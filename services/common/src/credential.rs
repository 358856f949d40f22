//! Reading credentials out of the places clients put them. Every service that accepts a
//! credential (the gateway's upgrade and token endpoint, auth's admin calls) goes through
//! these functions, so a spelling accepted in one place is accepted, or refused, everywhere.
//!
//! ```
//! use livegate_common::credential::bearer;
//! assert_eq!(bearer("Bearer lg-abc"), "lg-abc");
//! assert_eq!(bearer("bearer  lg-abc "), "lg-abc");
//! assert_eq!(bearer("lg-abc"), "lg-abc");
//! ```

/// The token in an `Authorization` value: the text after a `Bearer` scheme (any case),
/// or the whole value when it names no scheme, trimmed of surrounding whitespace.
pub fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_strips_the_scheme_in_any_case_and_trims() {
        assert_eq!(bearer("Bearer a"), "a");
        assert_eq!(bearer("BEARER\ta"), "a");
        assert_eq!(bearer("  a  "), "a");
        assert_eq!(bearer("Bearer "), "");
        assert_eq!(bearer("Basic a"), "Basic a");
    }
}
