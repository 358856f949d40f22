//! The Live WebSocket paths every current client sends, normalised once and mapped to what the
//! gateway does with them (README, "Paths").
//!
//! Normalisation: runs of `/` collapse to one (google-genai 3.6 with a base URL ending in `/`
//! sends `//ws/…`) and one trailing `/` is ignored. The query string is not part of the path.
//!
//! | shape | who sends it | served as |
//! |---|---|---|
//! | `/v1/vertex-ai/live`, `/vertex-ai/live`, `/vertex_ai/live` | LiteLLM clients, browsers | Vertex v1 |
//! | `/ws/google.cloud.aiplatform.{v1,v1beta1}.LlmBidiService/BidiGenerateContent` | google-genai with `vertexai=True` and a gateway base URL | Vertex, same version |
//! | `/ws/google.ai.generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContent` | Gemini Developer API clients (Python v1, JS v1beta) | with `GATEWAY_GEMINI_API_KEY`: the Developer API, same version, the operator's key, `models/{id}` kept; without: Vertex v1 (the setup's `models/{id}` is rewritten as for every client) |
//! | `/ws/google.ai.generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContentConstrained` | Developer API clients with an ephemeral token | same as above; on the Developer API through the plain `BidiGenerateContent` method (the gateway authenticated the client itself and uses the operator's key, not an ephemeral token) |

use crate::ws::upstream::{ApiVersion, DeveloperVersion};

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivePath {
    /// livegate's own and LiteLLM's paths.
    Gateway,
    /// Vertex AI's `LlmBidiService` path, in this API version.
    Vertex(ApiVersion),
    /// The Gemini Developer API's `GenerativeService` path in this version (`constrained`: the
    /// ephemeral-token variant).
    DeveloperApi {
        version: DeveloperVersion,
        /// `BidiGenerateContentConstrained`.
        constrained: bool,
    },
}

impl LivePath {
    /// The upstream API and version a session on this path uses: Developer API paths reach
    /// the Developer API (same version) when the operator configured a key for it
    /// (`developer_api`), else Vertex v1 like livegate's own paths.
    pub fn upstream(self, developer_api: bool) -> ApiVersion {
        match self {
            Self::Vertex(v) => v,
            Self::DeveloperApi { version, .. } if developer_api => ApiVersion::Developer(version),
            Self::Gateway | Self::DeveloperApi { .. } => ApiVersion::V1,
        }
    }
}

const GATEWAY_PATHS: [&str; 3] = ["/v1/vertex-ai/live", "/vertex-ai/live", "/vertex_ai/live"];
const VERTEX_V1: &str = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent";
const VERTEX_V1BETA1: &str =
    "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent";
const DEVELOPER_PREFIX: &str = "/ws/google.ai.generativelanguage.";
const DEVELOPER_METHOD: &str = ".GenerativeService.BidiGenerateContent";
const CONSTRAINED: &str = "Constrained";

/// Longest path worth normalising: every Live path is under 100 bytes.
const MAX_PATH: usize = 256;

/// `path` with runs of `/` collapsed and one trailing `/` dropped; `None` when it is too long
/// to be a Live path.
fn normalise(path: &str) -> Option<String> {
    if path.len() > MAX_PATH {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    Some(out)
}

/// What `path` (a request URI's path, without the query) asks for; `None` for anything else.
pub fn classify(path: &str) -> Option<LivePath> {
    let path = normalise(path)?;
    if GATEWAY_PATHS.contains(&path.as_str()) {
        return Some(LivePath::Gateway);
    }
    if path == VERTEX_V1 {
        return Some(LivePath::Vertex(ApiVersion::V1));
    }
    if path == VERTEX_V1BETA1 {
        return Some(LivePath::Vertex(ApiVersion::V1Beta1));
    }
    let rest = path.strip_prefix(DEVELOPER_PREFIX)?;
    let (version, method) = rest.split_at(rest.find('.')?);
    let version = DeveloperVersion::parse(version)?;
    let tail = method.strip_prefix(DEVELOPER_METHOD)?;
    match tail {
        "" => Some(LivePath::DeveloperApi {
            version,
            constrained: false,
        }),
        CONSTRAINED => Some(LivePath::DeveloperApi {
            version,
            constrained: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_current_client_path_is_recognised() {
        let cases = [
            ("/v1/vertex-ai/live", LivePath::Gateway),
            ("/vertex-ai/live", LivePath::Gateway),
            ("/vertex_ai/live", LivePath::Gateway),
            ("/vertex_ai/live/", LivePath::Gateway),
            (VERTEX_V1, LivePath::Vertex(ApiVersion::V1)),
            (VERTEX_V1BETA1, LivePath::Vertex(ApiVersion::V1Beta1)),
            // google-genai 3.6 with a base URL ending in `/`.
            (
                "//ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent",
                LivePath::Vertex(ApiVersion::V1Beta1),
            ),
            (
                "///ws/google.cloud.aiplatform.v1.LlmBidiService//BidiGenerateContent/",
                LivePath::Vertex(ApiVersion::V1),
            ),
            (
                "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
                LivePath::DeveloperApi {
                    version: DeveloperVersion::V1,
                    constrained: false,
                },
            ),
            (
                "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
                LivePath::DeveloperApi {
                    version: DeveloperVersion::V1Beta,
                    constrained: false,
                },
            ),
            (
                "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained",
                LivePath::DeveloperApi {
                    version: DeveloperVersion::V1Alpha,
                    constrained: true,
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(classify(path), Some(want), "{path}");
        }
    }

    #[test]
    fn other_paths_are_not_live_paths() {
        for path in [
            "/",
            "",
            "/healthz",
            "/v1/vertex-ai",
            "/v1/vertex-ai/live/extra",
            "/ws/google.cloud.aiplatform.v2.LlmBidiService/BidiGenerateContent",
            "/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent",
            "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContentX",
            "/ws/google.ai.generativelanguage.v1.GenerativeService.GenerateContent",
            "/ws/google.ai.generativelanguage.",
            "/ws/google.ai.generativelanguage.v1",
        ] {
            assert_eq!(classify(path), None, "{path}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert_eq!(classify(&long), None);
    }

    #[test]
    fn without_a_developer_key_every_shape_reaches_vertex() {
        assert_eq!(LivePath::Gateway.upstream(false), ApiVersion::V1);
        assert_eq!(
            LivePath::DeveloperApi {
                version: DeveloperVersion::V1Beta,
                constrained: true
            }
            .upstream(false),
            ApiVersion::V1
        );
        assert_eq!(
            LivePath::Vertex(ApiVersion::V1Beta1).upstream(false),
            ApiVersion::V1Beta1
        );
    }

    #[test]
    fn with_a_developer_key_only_developer_shapes_reach_the_developer_api() {
        let dev = |path: &str| classify(path).unwrap().upstream(true);
        assert_eq!(
            dev("/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"),
            ApiVersion::Developer(DeveloperVersion::V1)
        );
        assert_eq!(
            dev("//ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent/"),
            ApiVersion::Developer(DeveloperVersion::V1Beta)
        );
        // Ephemeral-token clients: served on the same upstream, in their version.
        assert_eq!(
            dev(
                "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
            ),
            ApiVersion::Developer(DeveloperVersion::V1Alpha)
        );
        assert_eq!(dev(VERTEX_V1), ApiVersion::V1);
        assert_eq!(dev(VERTEX_V1BETA1), ApiVersion::V1Beta1);
        assert_eq!(dev("/vertex_ai/live"), ApiVersion::V1);
    }
}
