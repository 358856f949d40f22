//! Google's `usageMetadata` JSON back into a [`Usage`]: what `usage_receipts.usage_json` keeps
//! exactly as Google sent it, read again to reprice stored usage with another table
//! (`livegate spend --reprice`). Field names are Google's camelCase or the SDKs' snake_case;
//! `candidates*` and `response*` are the same counts under the names the Live API has used.

use super::{ByModality, Usage};
use serde::Deserialize;

#[derive(Deserialize)]
struct ModalityCount {
    #[serde(default)]
    modality: String,
    #[serde(rename = "tokenCount", alias = "token_count", default)]
    token_count: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    #[serde(rename = "promptTokenCount", alias = "prompt_token_count")]
    prompt: u64,
    #[serde(rename = "candidatesTokenCount", alias = "candidates_token_count")]
    candidates: Option<u64>,
    #[serde(rename = "responseTokenCount", alias = "response_token_count")]
    response: Option<u64>,
    #[serde(
        rename = "cachedContentTokenCount",
        alias = "cached_content_token_count"
    )]
    cached: u64,
    #[serde(
        rename = "toolUsePromptTokenCount",
        alias = "tool_use_prompt_token_count"
    )]
    tool_use: u64,
    #[serde(rename = "thoughtsTokenCount", alias = "thoughts_token_count")]
    thoughts: u64,
    #[serde(rename = "promptTokensDetails", alias = "prompt_tokens_details")]
    prompt_details: Vec<ModalityCount>,
    #[serde(
        rename = "candidatesTokensDetails",
        alias = "candidates_tokens_details"
    )]
    candidates_details: Option<Vec<ModalityCount>>,
    #[serde(rename = "responseTokensDetails", alias = "response_tokens_details")]
    response_details: Option<Vec<ModalityCount>>,
    #[serde(rename = "cacheTokensDetails", alias = "cache_tokens_details")]
    cache_details: Vec<ModalityCount>,
    #[serde(
        rename = "toolUsePromptTokensDetails",
        alias = "tool_use_prompt_tokens_details"
    )]
    tool_use_details: Vec<ModalityCount>,
    #[serde(
        rename = "trafficType",
        alias = "traffic_type",
        alias = "serviceTier",
        alias = "service_tier"
    )]
    traffic_type: String,
}

fn by_modality(list: &[ModalityCount]) -> ByModality {
    let mut b = ByModality::default();
    for d in list {
        let slot = match d.modality.as_str() {
            "AUDIO" => &mut b.audio,
            "IMAGE" => &mut b.image,
            "VIDEO" => &mut b.video,
            // TEXT, DOCUMENT, MODALITY_UNSPECIFIED and anything newer price as text.
            _ => &mut b.text,
        };
        *slot = slot.saturating_add(d.token_count);
    }
    b
}

/// The token counts and traffic type of `json` (a `usageMetadata` object); the measurements
/// (characters, seconds, images) are the gateway's and not in it: they stay 0.
///
/// # Errors
/// When `json` is not a JSON object with fields of the types Google sends.
pub fn usage_from_metadata(json: &str) -> Result<Usage, serde_json::Error> {
    let m: Metadata = serde_json::from_str(json)?;
    Ok(Usage {
        prompt_tokens: m.prompt,
        prompt: by_modality(&m.prompt_details),
        response_tokens: m.candidates.or(m.response).unwrap_or_default(),
        response: by_modality(
            m.candidates_details
                .as_deref()
                .or(m.response_details.as_deref())
                .unwrap_or_default(),
        ),
        cached_tokens: m.cached,
        cached: by_modality(&m.cache_details),
        tool_use_tokens: m.tool_use,
        tool_use: by_modality(&m.tool_use_details),
        thoughts_tokens: m.thoughts,
        traffic_type: m.traffic_type,
        ..Usage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gemini_3_8_receipt_reads_back() {
        let u = usage_from_metadata(
            r#"{"promptTokenCount":125,"candidatesTokenCount":300,"totalTokenCount":425,
                "thoughtsTokenCount":40,"trafficType":"ON_DEMAND",
                "promptTokensDetails":[{"modality":"AUDIO","tokenCount":100}],
                "candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":100},
                                           {"modality":"VIDEO","tokenCount":200}]}"#,
        )
        .unwrap();
        assert_eq!(u.prompt_tokens, 125);
        assert_eq!(
            u.prompt,
            ByModality {
                audio: 100,
                ..ByModality::default()
            }
        );
        assert_eq!(u.response_tokens, 300);
        assert_eq!(
            u.response,
            ByModality {
                audio: 100,
                video: 200,
                ..ByModality::default()
            }
        );
        assert_eq!(u.thoughts_tokens, 40);
        assert_eq!(u.traffic_type, "ON_DEMAND");
    }

    #[test]
    fn snake_case_and_response_names_read_too() {
        let u = usage_from_metadata(
            r#"{"prompt_token_count":7,"response_token_count":3,
                "response_tokens_details":[{"modality":"TEXT","token_count":3}],
                "cached_content_token_count":2,"tool_use_prompt_token_count":1}"#,
        )
        .unwrap();
        assert_eq!((u.prompt_tokens, u.response_tokens), (7, 3));
        assert_eq!(u.response.text, 3);
        assert_eq!((u.cached_tokens, u.tool_use_tokens), (2, 1));
        assert!(usage_from_metadata(r#"{"promptTokenCount":"x"}"#).is_err());
    }
}
