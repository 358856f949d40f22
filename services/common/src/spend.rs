//! The value format of the `livegate_spend` KV bucket: a key's or team's running spend in
//! USD as decimal text. Metering writes it, the gateway and auth read it; all three use
//! these two functions so the format has one definition.
//!
//! ```
//! use livegate_common::spend::{format_usd, parse_usd};
//! use rust_decimal::Decimal;
//! let v = Decimal::new(12_500, 4); // 1.2500
//! assert_eq!(format_usd(v), "1.25");
//! assert_eq!(parse_usd(b" 1.25\n").unwrap(), v);
//! ```

use rust_decimal::Decimal;
use std::str::FromStr;

/// The stored text of a spend amount (normalised: no trailing zeros).
pub fn format_usd(usd: Decimal) -> String {
    usd.normalize().to_string()
}

/// Parses a stored spend value (surrounding whitespace allowed).
///
/// # Errors
/// When the bytes are not a decimal number.
pub fn parse_usd(value: &[u8]) -> Result<Decimal, rust_decimal::Error> {
    let text = std::str::from_utf8(value)
        .map_err(|_| rust_decimal::Error::ConversionTo("spend value is not UTF-8".into()))?;
    Decimal::from_str(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let v = Decimal::from_str("0.000000000123").unwrap_or_default();
        assert_eq!(parse_usd(format_usd(v).as_bytes()).ok(), Some(v));
        assert!(parse_usd(b"abc").is_err());
        assert!(parse_usd(&[0xff, 0xfe]).is_err());
    }
}
