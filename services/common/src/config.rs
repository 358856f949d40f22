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
//! Unknown top-level sections (LiteLLM's `model_list`, `router_settings`, …) are ignored on
//! purpose: rejecting them would break exactly the files we promise to accept. Inside the
//! sections we read, values of the form `os.environ/NAME` are replaced by the variable `NAME`.
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
}

#[derive(Debug, Default, Deserialize)]
struct RawFile {
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
        let credentials = match vertex.vertex_credentials {
            None | Some(serde_norway::Value::Null) => None,
            Some(serde_norway::Value::String(s)) => Some(s),
            // LiteLLM also allows the service-account JSON inline as a mapping.
            Some(other) => Some(serde_json::to_string(&other).map_err(|e| {
                ConfigError::Parse(serde_norway::Error::custom_message(e.to_string()))
            })?),
        };
        Ok(Self {
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
            }
        );
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
