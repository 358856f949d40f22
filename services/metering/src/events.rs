//! Bus messages → priced rows: decodes `UsageReport` / `SessionEvent` protobufs and prices
//! their usage.
//!
//! A `SessionEnded` may carry `trailing_media` (measurements after the session's last
//! report). When it carries any, it becomes a usage row of its own, `{session_id}:end` with
//! `seq` = 0, so that `usage_events` alone holds every priced unit and session totals are
//! plain sums over it.

use crate::store::{PricedEvent, ReceiptRow, UsageRow, usd};
use livegate_common::pricing::{ByModality, Priced, Pricing, Usage};
use livegate_common::subjects;
use livegate_proto::prost::Message as _;
use livegate_proto::prost_types::Timestamp;
use livegate_proto::usage::{
    MediaMeasurements, Modality, ModalityTokens, SessionContext, SessionEnded, SessionEvent,
    SessionStarted, UsageReport, session_event,
};

/// A decoded bus message.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A priced usage report, with its receipt.
    Report(Box<PricedEvent>),
    /// A session started: recorded in `session_starts` (open sessions, for leases).
    Started(Box<SessionStarted>),
    /// A session ended.
    Ended(Box<Ended>),
    /// A subject metering does not know (a newer contract): acknowledged and ignored.
    Ignored,
}

/// A `SessionEnded`, with its trailing usage priced.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// The event as published.
    pub(crate) event: SessionEnded,
    /// The `{session_id}:end` usage row, when the trailing measurements are not all zero.
    pub(crate) trailing: Option<PricedEvent>,
}

impl Ended {
    /// The session's context (never missing: checked at decode).
    pub(crate) fn context(&self) -> &SessionContext {
        self.event.context.as_ref().unwrap_or(&EMPTY_CONTEXT)
    }
}

static EMPTY_CONTEXT: SessionContext = SessionContext {
    session_id: String::new(),
    key_id: String::new(),
    team_id: String::new(),
    user_id: String::new(),
    project: String::new(),
    location: String::new(),
    model: String::new(),
    gateway_id: String::new(),
};

/// Why a message cannot be used (it is terminated, never retried: retrying cannot fix it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not a valid protobuf of the subject's type.
    #[error("not a valid {kind} protobuf: {source}")]
    Protobuf {
        kind: &'static str,
        #[source]
        source: livegate_proto::prost::DecodeError,
    },
    /// A required field is missing.
    #[error("{0}")]
    Missing(&'static str),
    /// The event's cost is beyond [`MAX_EVENT_USD`]: absurd token counts or measurements,
    /// or an absurd price in the table. Storing it would overflow the money columns or the
    /// sums over them (a key's all-time spend), so it is set aside for a person to look at.
    #[error(
        "event {event_id} (model {model:?}) would cost {cost} USD, more than the \
         {MAX_EVENT_USD} USD one usage row may carry: check its token counts and the price table"
    )]
    Unbillable {
        event_id: String,
        model: String,
        cost: rust_decimal::Decimal,
    },
}

/// The most one usage row may cost, in USD. Far above any real bill (10^20 USD), and far
/// below what a `Decimal(38, 12)` column holds (< 10^26 USD), so that even a million such rows
/// still sum exactly in a key's spend.
pub(crate) const MAX_EVENT_USD: i128 = 100_000_000_000_000_000_000;

/// Refuses a cost beyond [`MAX_EVENT_USD`]. Prices and counts are never negative, so the total
/// bounds every component.
fn billable(event_id: &str, model: &str, priced: &Priced) -> Result<(), DecodeError> {
    let cost = priced.cost.total();
    if cost < rust_decimal::Decimal::from_i128_with_scale(MAX_EVENT_USD, 0) {
        Ok(())
    } else {
        Err(DecodeError::Unbillable {
            event_id: event_id.to_owned(),
            model: model.to_owned(),
            cost,
        })
    }
}

/// Decodes and prices one message.
///
/// # Errors
/// [`DecodeError`] for a payload that is not the subject's protobuf or lacks its session.
pub(crate) fn decode(
    subject: &str,
    payload: &[u8],
    pricing: &Pricing,
) -> Result<Event, DecodeError> {
    match subject {
        subjects::USAGE_REPORT => {
            let report = UsageReport::decode(payload).map_err(|source| DecodeError::Protobuf {
                kind: "UsageReport",
                source,
            })?;
            report_row(&report, pricing).map(|r| Event::Report(Box::new(r)))
        }
        subjects::SESSION_EVENT => {
            let event = SessionEvent::decode(payload).map_err(|source| DecodeError::Protobuf {
                kind: "SessionEvent",
                source,
            })?;
            match event.event {
                Some(session_event::Event::Started(started)) => {
                    Ok(Event::Started(Box::new(started)))
                }
                Some(session_event::Event::Ended(ended)) => {
                    let ctx = ended
                        .context
                        .as_ref()
                        .filter(|c| !c.session_id.is_empty())
                        .ok_or(DecodeError::Missing("SessionEnded without a session id"))?;
                    let media = ended.trailing_media.unwrap_or_default();
                    let trailing = has_media(&media).then(|| {
                        let usage = media_usage(&media);
                        let priced = pricing.price(&ctx.model, &usage);
                        let version = priced.version.clone();
                        let event_id = format!("{}:end", ctx.session_id);
                        billable(&event_id, &ctx.model, &priced)?;
                        Ok(row(
                            event_id,
                            ctx,
                            0,
                            seconds_of(ended.ended_at.as_ref()),
                            &usage,
                            &media,
                            Billed {
                                priced,
                                usage_json: String::new(),
                                pricing_version: &version,
                            },
                        ))
                    });
                    let trailing = trailing.transpose()?;
                    Ok(Event::Ended(Box::new(Ended {
                        event: ended,
                        trailing,
                    })))
                }
                None => Err(DecodeError::Missing(
                    "SessionEvent with neither started nor ended",
                )),
            }
        }
        _ => Ok(Event::Ignored),
    }
}

fn report_row(report: &UsageReport, pricing: &Pricing) -> Result<PricedEvent, DecodeError> {
    let ctx = report
        .context
        .as_ref()
        .filter(|c| !c.session_id.is_empty())
        .ok_or(DecodeError::Missing("UsageReport without a session id"))?;
    let event_id = if report.event_id.is_empty() {
        format!("{}:{}", ctx.session_id, report.seq)
    } else {
        report.event_id.clone()
    };
    let media = report.media.unwrap_or_default();
    let mut usage = media_usage(&media);
    if let Some(t) = &report.tokens {
        usage.prompt_tokens = t.prompt_tokens;
        usage.prompt = by_modality(&t.prompt_details);
        usage.response_tokens = t.response_tokens;
        usage.response = by_modality(&t.response_details);
        usage.cached_tokens = t.cached_tokens;
        usage.cached = by_modality(&t.cache_details);
        usage.tool_use_tokens = t.tool_use_prompt_tokens;
        usage.tool_use = by_modality(&t.tool_use_prompt_details);
        usage.thoughts_tokens = t.thoughts_tokens;
        usage.traffic_type.clone_from(&t.traffic_type);
    }
    let priced = pricing.price(&ctx.model, &usage);
    let version = priced.version.clone();
    billable(&event_id, &ctx.model, &priced)?;
    let mut row = row(
        event_id,
        ctx,
        report.seq,
        seconds_of(report.occurred_at.as_ref()),
        &usage,
        &media,
        Billed {
            priced,
            usage_json: report
                .tokens
                .as_ref()
                .map(|t| t.raw_json.clone())
                .unwrap_or_default(),
            pricing_version: &version,
        },
    );
    // Google's own total when it sent one. (Gemini 3.x may count thoughts outside it, so it
    // is stored as sent, never used to price.)
    match &report.tokens {
        Some(t) if t.total_tokens > 0 => row.usage.total_tokens = t.total_tokens,
        _ => {}
    }
    Ok(row)
}

/// How an event was priced, and what its receipt carries besides its usage.
struct Billed<'a> {
    priced: Priced,
    usage_json: String,
    pricing_version: &'a str,
}

fn row(
    event_id: String,
    ctx: &SessionContext,
    seq: u64,
    ts: u32,
    usage: &Usage,
    media: &MediaMeasurements,
    billed: Billed<'_>,
) -> PricedEvent {
    let Billed {
        priced,
        usage_json,
        pricing_version,
    } = billed;
    let prompt = usage.prompt.with_total(usage.prompt_tokens);
    let response = usage.response.with_total(usage.response_tokens);
    let c = priced.cost;
    let receipt = ReceiptRow {
        event_id: event_id.clone(),
        session_id: ctx.session_id.clone(),
        ts,
        key_id: ctx.key_id.clone(),
        team_id: ctx.team_id.clone(),
        model: ctx.model.clone(),
        traffic_type: usage.traffic_type.clone(),
        prepaid: u8::from(priced.prepaid),
        input_residual_tokens: usage.prompt_tokens.saturating_sub(usage.prompt.sum()),
        output_video_tokens: response.video,
        usage_json,
        pricing_entry: priced.entry.clone().unwrap_or_default(),
        pricing_version: pricing_version.to_owned(),
    };
    let usage = UsageRow {
        event_id,
        session_id: ctx.session_id.clone(),
        seq,
        ts,
        key_id: ctx.key_id.clone(),
        team_id: ctx.team_id.clone(),
        user_id: ctx.user_id.clone(),
        project: ctx.project.clone(),
        location: ctx.location.clone(),
        model: ctx.model.clone(),
        gateway_id: ctx.gateway_id.clone(),
        prompt_tokens: usage.prompt_tokens,
        response_tokens: usage.response_tokens,
        cached_tokens: usage.cached_tokens,
        tool_use_tokens: usage.tool_use_tokens,
        thoughts_tokens: usage.thoughts_tokens,
        total_tokens: usage
            .prompt_tokens
            .saturating_add(usage.response_tokens)
            .saturating_add(usage.tool_use_tokens)
            .saturating_add(usage.thoughts_tokens),
        input_text_tokens: prompt.text,
        input_audio_tokens: prompt.audio,
        input_video_tokens: prompt.video,
        input_image_tokens: prompt.image,
        output_text_tokens: response.text.saturating_add(response.image),
        output_audio_tokens: response.audio,
        output_video_tokens: response.video,
        input_characters: media.input_characters,
        input_audio_seconds: finite(media.input_audio_seconds),
        input_video_seconds: finite(media.input_video_seconds),
        input_video_frames: media.input_video_frames,
        input_images: media.input_images,
        output_characters: media.output_characters,
        output_audio_seconds: finite(media.output_audio_seconds),
        input_text_cost_usd: usd(c.input_text),
        input_audio_cost_usd: usd(c.input_audio),
        input_image_cost_usd: usd(c.input_image),
        input_video_cost_usd: usd(c.input_video),
        cached_cost_usd: usd(c.cached),
        tool_use_cost_usd: usd(c.tool_use),
        output_text_cost_usd: usd(c.output_text),
        output_audio_cost_usd: usd(c.output_audio),
        output_video_cost_usd: usd(c.output_video),
        thoughts_cost_usd: usd(c.thoughts),
        input_cost_usd: usd(c.input()),
        output_cost_usd: usd(c.output()),
        cost_usd: usd(c.total()),
        priced: u8::from(priced.entry.is_some()),
        pricing_entry: priced.entry.unwrap_or_default(),
    };
    PricedEvent { usage, receipt }
}

fn media_usage(m: &MediaMeasurements) -> Usage {
    Usage {
        input_characters: m.input_characters,
        input_audio_seconds: m.input_audio_seconds,
        input_video_seconds: m.input_video_seconds,
        input_images: m.input_images,
        output_characters: m.output_characters,
        output_audio_seconds: m.output_audio_seconds,
        ..Usage::default()
    }
}

fn has_media(m: &MediaMeasurements) -> bool {
    m.input_characters > 0
        || m.input_audio_seconds > 0.0
        || m.input_video_seconds > 0.0
        || m.input_video_frames > 0
        || m.input_images > 0
        || m.output_characters > 0
        || m.output_audio_seconds > 0.0
}

fn finite(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

/// Google's per-modality list, summed per bucket (DOCUMENT and unspecified count as TEXT).
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

/// Seconds since the epoch for a DateTime column; the current time when the event has none.
pub(crate) fn seconds_of(ts: Option<&Timestamp>) -> u32 {
    match ts {
        Some(t) if t.seconds > 0 => u32::try_from(t.seconds).unwrap_or(u32::MAX),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livegate_common::pricing::PriceTable;
    use livegate_proto::usage::TokenUsage;

    fn pricing() -> Pricing {
        Pricing::with_tables(PriceTable::builtin(), PriceTable::default())
    }

    fn ctx(model: &str) -> SessionContext {
        SessionContext {
            session_id: "s1".into(),
            key_id: "k1".into(),
            team_id: "t1".into(),
            model: model.into(),
            ..SessionContext::default()
        }
    }

    #[test]
    fn a_report_becomes_a_priced_row() {
        let report = UsageReport {
            event_id: "s1:3".into(),
            context: Some(ctx("gemini-live-2.5-flash")),
            seq: 3,
            occurred_at: Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 5,
            }),
            tokens: Some(TokenUsage {
                prompt_tokens: 100,
                response_tokens: 50,
                prompt_details: vec![
                    ModalityTokens {
                        modality: Modality::Audio as i32,
                        token_count: 60,
                    },
                    ModalityTokens {
                        modality: Modality::Document as i32,
                        token_count: 10,
                    },
                ],
                response_details: vec![ModalityTokens {
                    modality: Modality::Audio as i32,
                    token_count: 50,
                }],
                ..TokenUsage::default()
            }),
            media: Some(MediaMeasurements {
                input_characters: 12,
                ..MediaMeasurements::default()
            }),
        };
        let Event::Report(priced) =
            decode(subjects::USAGE_REPORT, &report.encode_to_vec(), &pricing()).unwrap()
        else {
            panic!("not a report")
        };
        let row = &priced.usage;
        assert_eq!(priced.receipt.input_residual_tokens, 30);
        assert_eq!(priced.receipt.prepaid, 0);
        assert_eq!(priced.receipt.pricing_version, pricing().version().as_ref());
        assert_eq!(row.event_id, "s1:3");
        assert_eq!(row.ts, 1_800_000_000);
        assert_eq!(row.input_text_tokens, 40); // 10 DOCUMENT + 30 beyond the details
        assert_eq!(row.input_audio_tokens, 60);
        assert_eq!(row.output_audio_tokens, 50);
        assert_eq!(row.total_tokens, 150);
        assert_eq!(row.input_characters, 12);
        assert_eq!(row.priced, 1);
        assert_eq!(row.pricing_entry, "gemini-live-2.5-flash");
        // 40 × 0.0000005 + 60 × 0.000003 = 0.0002; 50 × 0.000012 = 0.0006 (in 1e-12 units).
        assert_eq!(row.input_cost_usd, 200_000_000);
        assert_eq!(row.output_cost_usd, 600_000_000);
        assert_eq!(row.cost_usd, 800_000_000);
    }

    #[test]
    fn a_gemini_3_8_report_keeps_its_receipt_and_prepaid_traffic_costs_nothing() {
        // Thoughts outside totalTokenCount, 25 prompt tokens without a modality, VIDEO output,
        // and provisioned throughput.
        let raw = r#"{"promptTokenCount":125,"candidatesTokenCount":300,"thoughtsTokenCount":40,"totalTokenCount":425,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":100}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":100},{"modality":"VIDEO","tokenCount":200}],"trafficType":"PROVISIONED_THROUGHPUT"}"#;
        let tokens = TokenUsage {
            prompt_tokens: 125,
            response_tokens: 300,
            thoughts_tokens: 40,
            total_tokens: 425,
            prompt_details: vec![ModalityTokens {
                modality: Modality::Audio as i32,
                token_count: 100,
            }],
            response_details: vec![
                ModalityTokens {
                    modality: Modality::Audio as i32,
                    token_count: 100,
                },
                ModalityTokens {
                    modality: Modality::Video as i32,
                    token_count: 200,
                },
            ],
            traffic_type: "PROVISIONED_THROUGHPUT".into(),
            raw_json: raw.into(),
            ..TokenUsage::default()
        };
        let mut report = UsageReport {
            event_id: "s1:1".into(),
            context: Some(ctx("gemini-3.8-live")),
            seq: 1,
            tokens: Some(tokens),
            ..UsageReport::default()
        };
        let decode_report =
            |r: &UsageReport| match decode(subjects::USAGE_REPORT, &r.encode_to_vec(), &pricing())
                .unwrap()
            {
                Event::Report(p) => *p,
                _ => panic!("not a report"),
            };
        let prepaid = decode_report(&report);
        assert_eq!(prepaid.receipt.prepaid, 1);
        assert_eq!(prepaid.receipt.traffic_type, "PROVISIONED_THROUGHPUT");
        assert_eq!(prepaid.receipt.usage_json, raw);
        assert_eq!(prepaid.receipt.input_residual_tokens, 25);
        assert_eq!(prepaid.receipt.output_video_tokens, 200);
        assert_eq!(prepaid.usage.cost_usd, 0, "prepaid: cost 0");
        assert_eq!(prepaid.usage.priced, 1);
        assert_eq!(prepaid.usage.prompt_tokens, 125, "tokens kept");
        assert_eq!(prepaid.usage.total_tokens, 425, "Google's total as sent");

        // The same usage on demand: 25 residual TEXT × 0.00000075 + 100 AUDIO × 0.000003 =
        // 0.00031875 in; 100 AUDIO × 0.000012 + 200 VIDEO × 0.000001 + 40 thoughts ×
        // 0.0000045 = 0.00158 out.
        report.tokens.as_mut().unwrap().traffic_type = "ON_DEMAND".into();
        let on_demand = decode_report(&report);
        assert_eq!(on_demand.receipt.prepaid, 0);
        assert_eq!(on_demand.usage.input_cost_usd, 318_750_000);
        assert_eq!(on_demand.usage.output_cost_usd, 1_580_000_000);
        assert_eq!(on_demand.usage.output_video_tokens, 200);
        assert_eq!(on_demand.usage.output_video_cost_usd, 200_000_000);
        assert_eq!(on_demand.usage.output_text_tokens, 0);
    }

    #[test]
    fn trailing_media_becomes_an_end_row() {
        let ended = SessionEnded {
            event_id: "s1:end".into(),
            context: Some(ctx("nobody-knows-me")),
            trailing_media: Some(MediaMeasurements {
                output_characters: 7,
                ..MediaMeasurements::default()
            }),
            ..SessionEnded::default()
        };
        let msg = SessionEvent {
            event: Some(session_event::Event::Ended(ended)),
        };
        let Event::Ended(e) =
            decode(subjects::SESSION_EVENT, &msg.encode_to_vec(), &pricing()).unwrap()
        else {
            panic!("not an end")
        };
        let row = e.trailing.unwrap().usage;
        assert_eq!(row.event_id, "s1:end");
        assert_eq!(row.seq, 0);
        assert_eq!(row.output_characters, 7);
        assert_eq!(row.priced, 0);
    }

    #[test]
    fn component_columns_sum_to_the_totals_to_the_last_digit() {
        // Prices with more decimals than the columns keep: every component is rounded once,
        // at 12 places (half away from zero), and the totals are sums of the rounded
        // components, so the stored columns add up exactly, and to what the gateway predicts
        // and `--reprice` computes (`Cost::total` of the same table).
        let table = PriceTable::parse(
            r#"{"m": {"input_cost_per_token": "0.000000333333333333333",
                      "input_cost_per_audio_token": "0.0000017777777777777777",
                      "input_cost_per_image_token": "0.00000055555555555555",
                      "input_cost_per_video_token": "0.0000009999999999999995",
                      "cache_read_input_token_cost": "0.00000003333333333333335",
                      "output_cost_per_token": "0.0000013333333333333335",
                      "output_cost_per_audio_token": "0.0000071111111111111115",
                      "output_cost_per_video_token": "0.0000004444444444444445",
                      "output_cost_per_reasoning_token": "0.0000029999999999999995"}}"#,
        )
        .unwrap();
        let pricing = Pricing::with_tables(PriceTable::builtin(), table);
        let report = UsageReport {
            event_id: "s1:1".into(),
            context: Some(ctx("m")),
            seq: 1,
            tokens: Some(TokenUsage {
                prompt_tokens: 1_234_567,
                prompt_details: vec![
                    ModalityTokens {
                        modality: Modality::Audio as i32,
                        token_count: 333_333,
                    },
                    ModalityTokens {
                        modality: Modality::Image as i32,
                        token_count: 77_777,
                    },
                    ModalityTokens {
                        modality: Modality::Video as i32,
                        token_count: 55_555,
                    },
                ],
                cached_tokens: 99_999,
                tool_use_prompt_tokens: 12_345,
                response_tokens: 765_431,
                response_details: vec![
                    ModalityTokens {
                        modality: Modality::Audio as i32,
                        token_count: 400_001,
                    },
                    ModalityTokens {
                        modality: Modality::Video as i32,
                        token_count: 300_003,
                    },
                ],
                thoughts_tokens: 4_321,
                ..TokenUsage::default()
            }),
            ..UsageReport::default()
        };
        let Event::Report(p) =
            decode(subjects::USAGE_REPORT, &report.encode_to_vec(), &pricing).unwrap()
        else {
            panic!("not a report")
        };
        let r = &p.usage;
        let input = r.input_text_cost_usd
            + r.input_audio_cost_usd
            + r.input_image_cost_usd
            + r.input_video_cost_usd
            + r.cached_cost_usd
            + r.tool_use_cost_usd;
        let output = r.output_text_cost_usd
            + r.output_audio_cost_usd
            + r.output_video_cost_usd
            + r.thoughts_cost_usd;
        assert_eq!(input, r.input_cost_usd);
        assert_eq!(output, r.output_cost_usd);
        assert_eq!(input + output, r.cost_usd);
        let mut usage = Usage {
            prompt_tokens: 1_234_567,
            ..Usage::default()
        };
        usage.prompt.audio = 333_333;
        usage.prompt.image = 77_777;
        usage.prompt.video = 55_555;
        usage.cached_tokens = 99_999;
        usage.tool_use_tokens = 12_345;
        usage.response_tokens = 765_431;
        usage.response.audio = 400_001;
        usage.response.video = 300_003;
        usage.thoughts_tokens = 4_321;
        assert_eq!(usd(pricing.price("m", &usage).cost.total()), r.cost_usd);
        // Each component is a whole number of 1e-12 USD, none of them zero here.
        assert!(r.input_text_cost_usd > 0 && r.thoughts_cost_usd > 0 && r.cached_cost_usd > 0);
    }

    #[test]
    fn a_cost_too_large_to_store_is_refused_with_a_reason() {
        // A typo in PRICING_FILE (a million dollars a token) meets counts a buggy upstream
        // sent: u64::MAX tokens cost about 1.8e25 USD (a column holds < 1e26, but a key's
        // all-time sum would not), and with a price 10^4 times larger the cost no longer fits
        // i128 at all. Neither may panic, be wrapped or be stored: the report is refused with
        // a reason, which sends it to the dead-letter stream.
        for price in ["1000000", "10000000000"] {
            let table = PriceTable::parse(&format!(
                r#"{{"m": {{"input_cost_per_token": "{price}", "output_cost_per_token": "{price}"}}}}"#
            ))
            .unwrap();
            let pricing = Pricing::with_tables(PriceTable::builtin(), table);
            let report = UsageReport {
                event_id: "s1:1".into(),
                context: Some(ctx("m")),
                seq: 1,
                tokens: Some(TokenUsage {
                    prompt_tokens: u64::MAX,
                    response_tokens: u64::MAX,
                    thoughts_tokens: u64::MAX,
                    ..TokenUsage::default()
                }),
                ..UsageReport::default()
            };
            let err = decode(subjects::USAGE_REPORT, &report.encode_to_vec(), &pricing)
                .expect_err("an unstorable cost was accepted");
            assert!(matches!(err, DecodeError::Unbillable { .. }), "{err}");
            assert!(err.to_string().contains("s1:1"), "{err}");

            // The same for a session's trailing measurements.
            let ended = SessionEnded {
                context: Some(ctx("m")),
                trailing_media: Some(MediaMeasurements {
                    input_characters: u64::MAX,
                    ..MediaMeasurements::default()
                }),
                ..SessionEnded::default()
            };
            let table = PriceTable::parse(&format!(
                r#"{{"m": {{"input_cost_per_character": "{price}"}}}}"#
            ))
            .unwrap();
            let pricing = Pricing::with_tables(PriceTable::builtin(), table);
            let msg = SessionEvent {
                event: Some(session_event::Event::Ended(ended)),
            };
            let err = decode(subjects::SESSION_EVENT, &msg.encode_to_vec(), &pricing)
                .expect_err("an unstorable trailing cost was accepted");
            assert!(matches!(err, DecodeError::Unbillable { .. }), "{err}");
        }
    }

    #[test]
    fn garbage_is_an_error_and_unknown_subjects_are_ignored() {
        assert!(decode(subjects::USAGE_REPORT, b"\xff\xff\xff", &pricing()).is_err());
        assert!(decode(subjects::USAGE_REPORT, b"", &pricing()).is_err()); // no session id
        assert!(matches!(
            decode("livegate.usage.v2.report", b"", &pricing()),
            Ok(Event::Ignored)
        ));
    }
}
