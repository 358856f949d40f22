//! The upstream Live API endpoint and the connection to it.

/// Which API version the client asked for (by path); forwarded upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
}

impl ApiVersion {
    fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1Beta1 => "v1beta1",
        }
    }
}

/// The Vertex AI Live URL for a location: `{loc}-aiplatform.googleapis.com`, `global` →
/// `aiplatform.googleapis.com`, multi-regions without a dash (`us`, `eu`) →
/// `aiplatform.{loc}.rep.googleapis.com`. `configured` (`VERTEX_LIVE_URL`) wins.
pub fn url(configured: Option<&str>, location: &str, version: ApiVersion) -> String {
    if let Some(u) = configured {
        return u.to_string();
    }
    let host = if location == "global" {
        "aiplatform.googleapis.com".to_string()
    } else if location.contains('-') {
        format!("{location}-aiplatform.googleapis.com")
    } else {
        format!("aiplatform.{location}.rep.googleapis.com")
    };
    format!(
        "wss://{host}/ws/google.cloud.aiplatform.{}.LlmBidiService/BidiGenerateContent",
        version.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_location() {
        assert_eq!(
            url(None, "us-central1", ApiVersion::V1),
            "wss://us-central1-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
        );
        assert!(
            url(None, "global", ApiVersion::V1Beta1)
                .starts_with("wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.")
        );
        assert!(
            url(None, "eu", ApiVersion::V1).starts_with("wss://aiplatform.eu.rep.googleapis.com/")
        );
        assert_eq!(
            url(Some("ws://127.0.0.1:1/x"), "eu", ApiVersion::V1),
            "ws://127.0.0.1:1/x"
        );
    }
}
