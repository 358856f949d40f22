//! The line logged for every written session, in LiteLLM's wording (existing log searches keep
//! working), with its money in dollars to six places.

use crate::store::{SessionRow, from_usd};
use rust_decimal::{Decimal, RoundingStrategy};

/// The line logged for every ended session (LiteLLM's wording, so existing log searches keep
/// working): `Vertex AI Live WebSocket session cost: $0.001234 (input: $0.000800, output:
/// $0.000434) tokens: 150, characters: 1200, duration: 45.2s`.
pub(crate) fn cost_line(row: &SessionRow) -> String {
    format!(
        "Vertex AI Live WebSocket session cost: ${} (input: ${}, output: ${}) tokens: {}, characters: {}, duration: {:.1}s",
        dollars(row.cost_usd),
        dollars(row.input_cost_usd),
        dollars(row.output_cost_usd),
        row.total_tokens,
        row.input_characters.saturating_add(row.output_characters),
        row.duration_s,
    )
}

/// 1e-12 USD units as dollars with exactly six decimals.
fn dollars(units: i128) -> String {
    let mut d: Decimal =
        from_usd(units).round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(6);
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::sessions::session_row;
    use crate::store::{SessionTotals, usd};
    use livegate_proto::prost_types::Timestamp;
    use livegate_proto::usage::{SessionContext, SessionEnded};

    #[test]
    fn the_cost_line_has_the_exact_wording() {
        let e = SessionEnded {
            context: Some(SessionContext {
                session_id: "s".into(),
                ..SessionContext::default()
            }),
            started_at: Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            ended_at: Some(Timestamp {
                seconds: 1_800_000_045,
                nanos: 0,
            }),
            duration_seconds: 45.2,
            ..SessionEnded::default()
        };
        let t = SessionTotals {
            session_id: "s".into(),
            events: 2,
            reports: 2,
            total_tokens: 150,
            input_characters: 1000,
            output_characters: 200,
            input_cost_usd: "0.0008".into(),
            output_cost_usd: "0.0004335".into(),
            cost_usd: "0.0012335".into(),
            ..SessionTotals::default()
        };
        let row = session_row(&e, &t);
        assert_eq!(row.version, 3);
        assert_eq!(
            cost_line(&row),
            "Vertex AI Live WebSocket session cost: $0.001234 (input: $0.000800, output: $0.000434) tokens: 150, characters: 1200, duration: 45.2s"
        );
    }

    #[test]
    fn dollars_pad_and_round_half_away_from_zero() {
        assert_eq!(dollars(0), "0.000000");
        assert_eq!(dollars(usd(Decimal::new(5, 7))), "0.000001"); // 0.0000005
        assert_eq!(dollars(usd(Decimal::new(123, 0))), "123.000000");
    }
}
