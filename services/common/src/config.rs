//! The optional YAML config file (`--config PATH` or `LIVEGATE_CONFIG`).
//!
//! It accepts LiteLLM's keys so that a LiteLLM user's `config.yaml` works unchanged:
//!
//! ```yaml
//! litellm_settings:
//!   default_vertex_config:
//!     vertex_project: "your-project-id"
//!     vertex_location: "us-central1"
//!     vertex_credentials: "os.environ/GOOGLE_APPLICATION_CREDENTIALS"
//! general_settings:
//!   master_key: "os.environ/LIVEGATE_MASTER_KEY"
//! ```
//!
//! LiteLLM's `model_list` is read for its Vertex AI deployments ([`Deployment`]): a client's
//! setup model naming a `model_name` (an alias) is sent as that deployment's model, to its
//! `vertex_project` and `vertex_location`, with a Google token minted from its
//! `vertex_credentials`. Deployments of other providers are skipped.
//!
//! ```yaml
//! model_list:
//!   - model_name: live-team-a
//!     litellm_params:
//!       model: vertex_ai/gemini-live-2.5-flash
//!       vertex_project: team-a-project
//!       vertex_location: us-central1
//!       vertex_credentials: os.environ/TEAM_A_CREDENTIALS
//! ```
//!
//! Other top-level sections (`router_settings`, …) and keys are ignored on purpose: rejecting
//! them would break exactly the files we promise to accept. Inside the sections we read,
//! values of the form `os.environ/NAME` are replaced by the variable `NAME`.
//!
//! ```
//! use std::collections::HashMap;
//! use livegate_common::config::FileConfig;
//! let env = HashMap::from([("MK".to_string(), "sk-master".to_string())]);
//! let yaml = "general_settings:\n  master_key: os.environ/MK\nlitellm_settings:\n  default_vertex_config:\n    vertex_project: p1\n";
//! let cfg = FileConfig::parse(yaml, &env).unwrap();
//! assert_eq!(cfg.master_key.as_deref(), Some("sk-master"));
//! assert_eq!(cfg.vertex_project.as_deref(), Some("p1"));
//! assert_eq!(cfg.vertex_location, None);
//! ```

use crate::env::{Env, EnvExt, LIVEGATE_CONFIG};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Prefix that makes a value an environment variable reference.
pub const ENV_REF_PREFIX: &str = "os.environ/";

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("config file is not valid: {0}")]
    Parse(#[from] serde_norway::Error),
    /// An `os.environ/NAME` reference names a variable that is not set.
    #[error("config value {field} refers to environment variable {name}, which is not set")]
    MissingEnv {
        /// Which setting.
        field: &'static str,
        /// The variable it names.
        name: String,
    },
}

/// The settings livegate reads from the file, with `os.environ/` references resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `litellm_settings.default_vertex_config.vertex_project`
    pub vertex_project: Option<String>,
    /// `litellm_settings.default_vertex_config.vertex_location`
    pub vertex_location: Option<String>,
    /// `litellm_settings.default_vertex_config.vertex_credentials`: a path to a credentials
    /// JSON file, or the JSON itself.
    pub vertex_credentials: Option<String>,
    /// `general_settings.master_key`
    pub master_key: Option<String>,
    /// `model_list`: its Vertex AI deployments, in file order.
    pub model_list: Vec<Deployment>,
}

/// LiteLLM's provider prefixes for Vertex AI models in `litellm_params.model`.
const VERTEX_PREFIXES: [&str; 2] = ["vertex_ai/", "vertex_ai_beta/"];

/// One Vertex AI deployment of LiteLLM's `model_list`, `os.environ/` references resolved.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    /// `model_name`: the alias clients put in their setup.
    pub model_name: String,
    /// `litellm_params.model` without its provider prefix (`gemini-live-2.5-flash`).
    pub model: String,
    /// `litellm_params.vertex_project`
    pub vertex_project: Option<String>,
    /// `litellm_params.vertex_location`
    pub vertex_location: Option<String>,
    /// `litellm_params.vertex_credentials`: a path to a credentials JSON file, or the JSON
    /// itself (a secret: never logged, see the `Debug` impl).
    pub vertex_credentials: Option<String>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("model_name", &self.model_name)
            .field("model", &self.model)
            .field("vertex_project", &self.vertex_project)
            .field("vertex_location", &self.vertex_location)
            .field("credentials_id", &self.credentials_id())
            .finish()
    }
}

impl Deployment {
    /// The name gateway and auth both give this deployment's credential set:
    /// [`credentials_id`] of its `vertex_credentials`; `None` when it has none (the default
    /// credentials are used).
    pub fn credentials_id(&self) -> Option<String> {
        self.vertex_credentials.as_deref().map(credentials_id)
    }
}

/// A credential set's name: `vc-` and the first 16 hex digits of the SHA-256 of the
/// `vertex_credentials` value (a path, or the JSON). Not a secret (a hash), and the same in
/// every process that reads the same file, so the gateway can ask auth for a token minted
/// from one set without the set itself crossing the wire.
pub fn credentials_id(vertex_credentials: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(vertex_credentials.trim().as_bytes());
    format!("vc-{}", hex::encode(&digest[..8]))
}

#[derive(Debug, Default, Deserialize)]
struct RawFile {
    #[serde(default)]
    model_list: Option<Vec<RawDeployment>>,
    #[serde(default)]
    litellm_settings: Option<RawLitellmSettings>,
    #[serde(default)]
    general_settings: Option<RawGeneralSettings>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLitellmSettings {
    #[serde(default)]
    default_vertex_config: Option<RawVertexConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct RawVertexConfig {
    vertex_project: Option<String>,
    vertex_location: Option<String>,
    vertex_credentials: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDeployment {
    model_name: Option<String>,
    #[serde(default)]
    litellm_params: Option<RawLitellmParams>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLitellmParams {
    model: Option<String>,
    vertex_project: Option<String>,
    vertex_location: Option<String>,
    vertex_credentials: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGeneralSettings {
    master_key: Option<String>,
}

impl FileConfig {
    /// Parses YAML text, resolving `os.environ/NAME` references from `env`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad YAML, [`ConfigError::MissingEnv`] for a reference to an
    /// unset variable.
    pub fn parse(text: &str, env: &impl Env) -> Result<Self, ConfigError> {
        let raw: Option<RawFile> = serde_norway::from_str(text)?;
        let raw = raw.unwrap_or_default();
        let vertex = raw
            .litellm_settings
            .and_then(|s| s.default_vertex_config)
            .unwrap_or_default();
        let credentials = credentials_text(vertex.vertex_credentials)?;
        let mut model_list = Vec::new();
        for d in raw.model_list.unwrap_or_default() {
            let params = d.litellm_params.unwrap_or_default();
            let Some(model) = resolve("model_list.litellm_params.model", params.model, env)? else {
                continue;
            };
            let Some(model) = VERTEX_PREFIXES
                .iter()
                .find_map(|p| model.trim().strip_prefix(p))
            else {
                // Another provider's deployment: not ours to serve.
                continue;
            };
            let Some(model_name) = d.model_name.filter(|n| !n.trim().is_empty()) else {
                continue;
            };
            model_list.push(Deployment {
                model_name: model_name.trim().to_string(),
                model: model.to_string(),
                vertex_project: resolve(
                    "model_list.litellm_params.vertex_project",
                    params.vertex_project,
                    env,
                )?,
                vertex_location: resolve(
                    "model_list.litellm_params.vertex_location",
                    params.vertex_location,
                    env,
                )?,
                vertex_credentials: resolve(
                    "model_list.litellm_params.vertex_credentials",
                    credentials_text(params.vertex_credentials)?,
                    env,
                )?,
            });
        }
        Ok(Self {
            model_list,
            vertex_project: resolve("vertex_project", vertex.vertex_project, env)?,
            vertex_location: resolve("vertex_location", vertex.vertex_location, env)?,
            vertex_credentials: resolve("vertex_credentials", credentials, env)?,
            master_key: resolve(
                "master_key",
                raw.general_settings.and_then(|g| g.master_key),
                env,
            )?,
        })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// See [`FileConfig::parse`]; [`ConfigError::Read`] when the file cannot be read.
    pub fn load(path: &Path, env: &impl Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Loads the file named by `explicit` (a `--config` flag) or `LIVEGATE_CONFIG`; an empty
    /// config when neither is given.
    ///
    /// # Errors
    /// See [`FileConfig::load`].
    pub fn discover(explicit: Option<&Path>, env: &impl Env) -> Result<Self, ConfigError> {
        match explicit
            .map(Path::to_path_buf)
            .or_else(|| env.var(LIVEGATE_CONFIG).map(PathBuf::from))
        {
            Some(path) => Self::load(&path, env),
            None => Ok(Self::default()),
        }
    }
}

/// A `vertex_credentials` value as text: a string as is, and the inline mapping LiteLLM also
/// allows (the service-account JSON written as YAML) as JSON.
fn credentials_text(value: Option<serde_norway::Value>) -> Result<Option<String>, ConfigError> {
    Ok(match value {
        None | Some(serde_norway::Value::Null) => None,
        Some(serde_norway::Value::String(s)) => Some(s),
        Some(other) => {
            Some(serde_json::to_string(&other).map_err(|e| {
                ConfigError::Parse(serde_norway::Error::custom_message(e.to_string()))
            })?)
        }
    })
}

/// Resolves one `os.environ/NAME` reference; other values pass through.
///
/// # Errors
/// [`ConfigError::MissingEnv`] when the named variable is unset or empty.
pub fn resolve(
    field: &'static str,
    value: Option<String>,
    env: &impl Env,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) => match v.trim().strip_prefix(ENV_REF_PREFIX) {
            Some(name) => env
                .var(name)
                .map(Some)
                .ok_or_else(|| ConfigError::MissingEnv {
                    field,
                    name: name.to_string(),
                }),
            None if v.trim().is_empty() => Ok(None),
            None => Ok(Some(v)),
        },
        None => Ok(None),
    }
}

trait CustomMessage {
    fn custom_message(msg: String) -> Self;
}

impl CustomMessage for serde_norway::Error {
    fn custom_message(msg: String) -> Self {
        <serde_norway::Error as serde::de::Error>::custom(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn litellm_file_with_extra_sections_parses() {
        let env = HashMap::from([("GAC".to_string(), "/sa.json".to_string())]);
        let yaml = r#"
model_list:
  - model_name: gemini
    litellm_params: {model: vertex_ai/gemini-2.0-flash}
litellm_settings:
  drop_params: true
  default_vertex_config:
    vertex_project: "proj"
    vertex_location: "europe-west4"
    vertex_credentials: "os.environ/GAC"
general_settings:
  master_key: sk-1234
"#;
        let cfg = FileConfig::parse(yaml, &env).unwrap();
        assert_eq!(
            cfg,
            FileConfig {
                vertex_project: Some("proj".into()),
                vertex_location: Some("europe-west4".into()),
                vertex_credentials: Some("/sa.json".into()),
                master_key: Some("sk-1234".into()),
                model_list: vec![Deployment {
                    model_name: "gemini".into(),
                    model: "gemini-2.0-flash".into(),
                    ..Deployment::default()
                }],
            }
        );
    }

    #[test]
    fn model_list_deployments_with_their_own_project_location_and_credentials() {
        let env = HashMap::from([
            ("B_CREDS".to_string(), "/secrets/b.json".to_string()),
            ("B_PROJECT".to_string(), "project-b".to_string()),
        ]);
        let yaml = r#"
model_list:
  - model_name: live-a
    litellm_params:
      model: vertex_ai/gemini-live-2.5-flash
      vertex_project: project-a
      vertex_location: europe-west4
      vertex_credentials: {type: service_account, project_id: project-a}
  - model_name: live-b
    litellm_params:
      model: vertex_ai/gemini-2.0-flash-live-preview-04-09
      vertex_project: os.environ/B_PROJECT
      vertex_credentials: os.environ/B_CREDS
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o}
  - model_name: no-params
"#;
        let cfg = FileConfig::parse(yaml, &env).unwrap();
        assert_eq!(cfg.model_list.len(), 2, "{:?}", cfg.model_list);
        let a = &cfg.model_list[0];
        assert_eq!(
            (a.model_name.as_str(), a.model.as_str()),
            ("live-a", "gemini-live-2.5-flash")
        );
        assert_eq!(a.vertex_project.as_deref(), Some("project-a"));
        assert_eq!(a.vertex_location.as_deref(), Some("europe-west4"));
        assert_eq!(
            a.vertex_credentials.as_deref(),
            Some(r#"{"type":"service_account","project_id":"project-a"}"#)
        );
        let b = &cfg.model_list[1];
        assert_eq!(b.model, "gemini-2.0-flash-live-preview-04-09");
        assert_eq!(b.vertex_project.as_deref(), Some("project-b"));
        assert_eq!(b.vertex_location, None);
        assert_eq!(b.vertex_credentials.as_deref(), Some("/secrets/b.json"));
        assert_eq!(b.credentials_id(), Some(credentials_id("/secrets/b.json")));
        assert_ne!(a.credentials_id(), b.credentials_id());
        let shown = format!("{a:?}");
        assert!(!shown.contains("service_account"), "{shown}");
        assert!(shown.contains(&credentials_id(a.vertex_credentials.as_deref().unwrap())));

        let missing = "model_list:\n  - model_name: x\n    litellm_params:\n      model: vertex_ai/m\n      vertex_project: os.environ/NOPE\n";
        let err = FileConfig::parse(missing, &env).unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn missing_env_reference_is_an_error() {
        let env: HashMap<String, String> = HashMap::new();
        let err = FileConfig::parse("general_settings:\n  master_key: os.environ/NOPE\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn empty_file_is_empty_config() {
        let env: HashMap<String, String> = HashMap::new();
        assert_eq!(FileConfig::parse("", &env).unwrap(), FileConfig::default());
    }

    #[test]
    fn inline_credentials_mapping_becomes_json() {
        let env: HashMap<String, String> = HashMap::new();
        let yaml = "litellm_settings:\n  default_vertex_config:\n    vertex_credentials:\n      type: service_account\n";
        let cfg = FileConfig::parse(yaml, &env).unwrap();
        assert_eq!(
            cfg.vertex_credentials.as_deref(),
            Some(r#"{"type":"service_account"}"#)
        );
    }
}
