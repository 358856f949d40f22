//! The client's first frame: validating `setup` and rewriting its model into the full Vertex
//! resource path `projects/{p}/locations/{l}/publishers/google/models/{id}`.
//!
//! A model naming a LiteLLM `model_list` alias (`model_name`, as written or after a `models/`
//! style prefix) is sent as its deployment's model, to the deployment's project and location
//! when it sets them (they win over the query, the key and the gateway defaults), and with a
//! token from its credential set. Several deployments under one name: the first is used.
//!
//! The frame is never parsed into a `serde_json::Value` tree (several times the frame's size
//! in memory, and the frame may be `GATEWAY_MAX_FRAME_BYTES` of system instruction): borrowed
//! structs take `setup` and `setup.model` as raw slices of the frame and skip everything else
//! (still checking it is valid JSON), and the rewritten model is spliced into the original
//! bytes, so everything but the model reaches upstream byte for byte.
//!
//! On the Gemini Developer API upstream (`developer_api`: a Developer-API-shaped path with
//! `GATEWAY_GEMINI_API_KEY` set) the model stays `models/{id}` (a bare id, `gemini/{id}` or
//! another accepted form becomes that; an alias becomes its deployment's model id), there is no
//! project or location (the operator's key pays), and the session's model is recorded as
//! `gemini/{id}`, the name LiteLLM prices Developer API models under.
//!
//! Duplicate keys: a `setup` with two `model` keys, or a frame with two `setup` keys (however
//! spelled, escapes included), is refused with 1007. JSON parsers disagree on which duplicate
//! wins, so the model the gateway checks could otherwise differ from the one upstream uses.

use super::close::{self, Close};
use livegate_common::config::Deployment;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::ops::Range;

/// Where the session's project and location come from, by precedence.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// From the query (`project_id` / `vertex_project`).
    pub query_project: Option<String>,
    /// From the query (`location` / `vertex_location`).
    pub query_location: Option<String>,
    /// The key's defaults.
    pub key_project: String,
    pub key_location: String,
    /// Gateway configuration defaults.
    pub config_project: Option<String>,
    pub config_location: String,
    /// LiteLLM `model_list` deployments (aliases).
    pub model_list: std::sync::Arc<[Deployment]>,
    /// The session goes to the Gemini Developer API (no Vertex rewrite, no project).
    pub developer_api: bool,
}

/// What a Developer API session's model is recorded as: `gemini/{id}`.
pub const DEVELOPER_MODEL_PREFIX: &str = "gemini/";

/// The setup after rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The frame to send upstream.
    pub frame: Vec<u8>,
    pub project: String,
    pub location: String,
    /// The bare model id (`gemini-live-2.5-flash`); on the Developer API `gemini/{id}`.
    pub model_id: String,
    /// The `model_list` alias the client named, if it named one.
    pub alias: Option<String>,
    /// The alias deployment's credential set (`credentials_id`); `None`: the default.
    pub credentials: Option<String>,
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

impl Placement {
    fn project(&self) -> Option<String> {
        self.query_project
            .as_deref()
            .and_then(non_empty)
            .or_else(|| non_empty(&self.key_project))
            .or_else(|| self.config_project.as_deref().and_then(non_empty))
            .map(str::to_string)
    }

    fn location(&self) -> String {
        self.query_location
            .as_deref()
            .and_then(non_empty)
            .or_else(|| non_empty(&self.key_location))
            .or_else(|| non_empty(&self.config_location))
            .unwrap_or("us-central1")
            .to_string()
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Locations end up in the upstream host name, so only `[a-z0-9-]` is accepted.
fn valid_location(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A model reference as the client wrote it.
#[derive(Debug, PartialEq, Eq)]
enum ModelRef<'a> {
    Full {
        project: &'a str,
        location: &'a str,
        id: &'a str,
    },
    Bare(&'a str),
}

fn parse_model(model: &str) -> Option<ModelRef<'_>> {
    let m = model.trim();
    let segments: Vec<&str> = m.split('/').collect();
    let r = match segments.as_slice() {
        [
            "projects",
            p,
            "locations",
            l,
            "publishers",
            "google",
            "models",
            id,
        ] => ModelRef::Full {
            project: p,
            location: l,
            id,
        },
        ["publishers", "google", "models", id] | ["models", id] | ["vertex_ai", id] | [id] => {
            ModelRef::Bare(id)
        }
        _ => return None,
    };
    let ok = match &r {
        ModelRef::Full {
            project,
            location,
            id,
        } => valid_segment(project) && valid_segment(location) && valid_segment(id),
        ModelRef::Bare(id) => valid_segment(id),
    };
    ok.then_some(r)
}

/// The first frame's top level: only `setup`, as its raw text; other keys are skipped.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    setup: Option<&'a RawValue>,
}

/// The `setup` object: only `model`, as its raw text; other keys are skipped.
#[derive(Deserialize)]
struct SetupFields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
}

fn not_json() -> Close {
    Close::new(
        close::INVALID_PAYLOAD,
        "first message is not valid JSON; expected a setup message",
    )
}

fn not_setup() -> Close {
    Close::new(close::POLICY, "first message must be setup")
}

/// The first byte that is not JSON whitespace.
fn first_token(s: &str) -> Option<u8> {
    s.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Where `inner`, a slice borrowed from `outer`, sits in it; `None` if it is not a slice of it.
fn span(outer: &str, inner: &str) -> Option<Range<usize>> {
    let start = inner.as_ptr().addr().checked_sub(outer.as_ptr().addr())?;
    let end = start.checked_add(inner.len())?;
    // Two live slices cannot overlap unless one lies in the other: inside the bounds is enough.
    (end <= outer.len()).then_some(start..end)
}

/// The model as the client wrote it (escapes decoded) and where its JSON string sits in
/// `text`.
///
/// # Errors
/// The close for a frame that is not JSON (1007), not a setup (1008), has duplicate `setup`
/// or `model` keys (1007), or no string `setup.model` (1007).
fn find_model(text: &str) -> Result<(String, Range<usize>), Close> {
    // serde reads a struct from a JSON array too (fields by position): only an object is a
    // setup message. Anything else is 1008 if it is JSON at all.
    if first_token(text) != Some(b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => not_setup(),
            Err(_) => not_json(),
        });
    }
    let frame: Frame<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Close::new(
                close::INVALID_PAYLOAD,
                "first message has more than one setup key",
            )
        } else {
            not_json()
        }
    })?;
    let setup = frame.setup.ok_or_else(not_setup)?;
    if first_token(setup.get()) != Some(b'{') {
        return Err(not_setup());
    }
    let fields: SetupFields<'_> = serde_json::from_str(setup.get()).map_err(|e| {
        if e.is_data() {
            Close::new(close::INVALID_PAYLOAD, "setup has more than one model key")
        } else {
            not_json()
        }
    })?;
    let missing = || Close::new(close::INVALID_PAYLOAD, "setup.model is missing");
    let raw = fields.model.ok_or_else(missing)?;
    let model: String = match first_token(raw.get()) {
        Some(b'"') => serde_json::from_str(raw.get()).map_err(|_| missing())?,
        _ => return Err(missing()),
    };
    let at = span(text, raw.get())
        .ok_or_else(|| Close::new(close::INTERNAL, "cannot locate setup.model in the frame"))?;
    Ok((model, at))
}

/// Parses and rewrites the client's first frame.
///
/// # Errors
/// The close to send: 1007 for non-JSON, duplicate `setup` / `model` keys or a malformed
/// model, 1008 when the frame is not a setup, 4002 when no project can be resolved.
pub fn rewrite(frame: &[u8], placement: &Placement) -> Result<Setup, Close> {
    let text = std::str::from_utf8(frame).map_err(|_| not_json())?;
    let (model, at) = find_model(text)?;
    if placement.developer_api {
        return rewrite_developer(frame, at, &model, placement);
    }
    if let Some(d) = alias(&model, &placement.model_list) {
        return rewrite_alias(frame, at, d, placement);
    }
    let parsed = parse_model(&model).ok_or_else(|| {
        Close::new(
            close::INVALID_PAYLOAD,
            "setup.model is not a valid Live model name",
        )
    })?;
    let (project, location, id) = match parsed {
        ModelRef::Full {
            project,
            location,
            id,
        } => (project.to_string(), location.to_string(), id),
        ModelRef::Bare(id) => {
            let project = placement.project().ok_or_else(|| {
                Close::new(
                    close::NO_PROJECT,
                    "project id not provided: pass ?project_id=, set a key default or DEFAULT_VERTEXAI_PROJECT",
                )
            })?;
            (project, placement.location(), id)
        }
    };
    if !valid_location(&location) {
        return Err(Close::new(
            close::INVALID_PAYLOAD,
            "location is not a valid Google Cloud location",
        ));
    }
    let full = format!("projects/{project}/locations/{location}/publishers/google/models/{id}");
    let model_id = id.to_string();
    let frame = if full == model {
        frame.to_vec()
    } else {
        // Every segment of `full` passed `valid_segment`/`valid_location`: nothing in it
        // needs escaping, but the JSON encoder decides that, not this code.
        splice(frame, at, &full)?
    };
    Ok(Setup {
        frame,
        project,
        location,
        model_id,
        alias: None,
        credentials: None,
    })
}

/// `frame` with the JSON string at `at` replaced by `value`.
fn splice(frame: &[u8], at: Range<usize>, value: &str) -> Result<Vec<u8>, Close> {
    let encoded = serde_json::to_string(value)
        .map_err(|_| Close::new(close::INTERNAL, "cannot encode setup"))?;
    let mut out = Vec::with_capacity(frame.len() - at.len() + encoded.len());
    out.extend_from_slice(&frame[..at.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&frame[at.end..]);
    Ok(out)
}

/// The setup for the Developer API: `models/{id}` (byte for byte when the client sent
/// that), no project or location, recorded as `gemini/{id}`.
fn rewrite_developer(
    frame: &[u8],
    at: Range<usize>,
    model: &str,
    placement: &Placement,
) -> Result<Setup, Close> {
    let invalid = || {
        Close::new(
            close::INVALID_PAYLOAD,
            "setup.model is not a valid Live model name",
        )
    };
    let (id, alias) = match alias(model, &placement.model_list) {
        Some(d) => match parse_model(&d.model) {
            Some(ModelRef::Bare(id)) => (id.to_string(), Some(d.model_name.clone())),
            _ => {
                return Err(Close::new(
                    close::INTERNAL,
                    format!("model_list entry {:?} has no usable model", d.model_name),
                ));
            }
        },
        None => {
            let trimmed = model.trim();
            let named = trimmed
                .strip_prefix(DEVELOPER_MODEL_PREFIX)
                .unwrap_or(trimmed);
            match parse_model(named).ok_or_else(invalid)? {
                ModelRef::Bare(id) | ModelRef::Full { id, .. } => (id.to_string(), None),
            }
        }
    };
    let wanted = format!("models/{id}");
    let frame = if wanted == model {
        frame.to_vec()
    } else {
        splice(frame, at, &wanted)?
    };
    Ok(Setup {
        frame,
        project: String::new(),
        location: String::new(),
        model_id: format!("{DEVELOPER_MODEL_PREFIX}{id}"),
        alias,
        credentials: None,
    })
}

/// The deployment `model` names: its `model_name` as written, or after a `models/`-style
/// prefix (SDKs add one).
fn alias<'a>(model: &str, list: &'a [Deployment]) -> Option<&'a Deployment> {
    let model = model.trim();
    let find = |name: &str| list.iter().find(|d| d.model_name == name);
    find(model).or_else(|| match parse_model(model)? {
        ModelRef::Bare(id) => find(id),
        ModelRef::Full { .. } => None,
    })
}

/// The setup for an alias: the deployment's model, project and location (else the usual
/// placement), spliced into the frame in place of the alias.
fn rewrite_alias(
    frame: &[u8],
    at: Range<usize>,
    d: &Deployment,
    placement: &Placement,
) -> Result<Setup, Close> {
    let bad = || {
        Close::new(
            close::INTERNAL,
            format!(
                "model_list entry {:?} is not a valid Vertex AI deployment",
                d.model_name
            ),
        )
    };
    let id = match parse_model(&d.model).ok_or_else(bad)? {
        ModelRef::Bare(id) => id,
        ModelRef::Full { .. } => return Err(bad()),
    };
    let project = d
        .vertex_project
        .as_deref()
        .and_then(non_empty)
        .map(str::to_string)
        .or_else(|| placement.project())
        .ok_or_else(|| {
            Close::new(
                close::NO_PROJECT,
                "project id not provided: set the model_list entry's vertex_project, pass ?project_id=, set a key default or DEFAULT_VERTEXAI_PROJECT",
            )
        })?;
    let location = d
        .vertex_location
        .as_deref()
        .and_then(non_empty)
        .map_or_else(|| placement.location(), str::to_string);
    if !valid_segment(&project) || !valid_location(&location) {
        return Err(bad());
    }
    let full = format!("projects/{project}/locations/{location}/publishers/google/models/{id}");
    Ok(Setup {
        frame: splice(frame, at, &full)?,
        project,
        location,
        model_id: id.to_string(),
        alias: Some(d.model_name.clone()),
        credentials: d.credentials_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            config_project: Some("cfg-proj".into()),
            config_location: "us-central1".into(),
            ..Placement::default()
        }
    }

    fn developer() -> Placement {
        Placement {
            developer_api: true,
            ..placement()
        }
    }

    #[test]
    fn the_developer_api_keeps_models_id_and_has_no_project() {
        let frame = br#"{"setup":{"model":"models/gemini-3.8-live","generationConfig":{}}}"#;
        let s = rewrite(frame, &developer()).unwrap();
        assert_eq!(s.frame, frame.to_vec(), "byte for byte");
        assert_eq!(s.model_id, "gemini/gemini-3.8-live");
        assert_eq!((s.project.as_str(), s.location.as_str()), ("", ""));
        assert_eq!(s.credentials, None);
        for m in [
            "gemini-3.8-live",
            "gemini/gemini-3.8-live",
            "publishers/google/models/gemini-3.8-live",
            "projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live",
        ] {
            let frame = format!(r#"{{"setup":{{"model":"{m}"}}}}"#);
            let s = rewrite(frame.as_bytes(), &developer()).unwrap();
            assert_eq!(model_of(&s), "models/gemini-3.8-live", "{m}");
            assert_eq!(s.model_id, "gemini/gemini-3.8-live");
            assert_eq!(s.project, "");
        }
        // No project needed anywhere.
        let none = Placement {
            developer_api: true,
            ..Placement::default()
        };
        assert!(rewrite(br#"{"setup":{"model":"models/m1"}}"#, &none).is_ok());
        assert_eq!(
            rewrite(br#"{"setup":{"model":"models/a/b"}}"#, &none)
                .unwrap_err()
                .code,
            close::INVALID_PAYLOAD
        );
        // The same frame on Vertex is rewritten into the resource path.
        let s = rewrite(
            br#"{"setup":{"model":"models/gemini-3.8-live"}}"#,
            &placement(),
        )
        .unwrap();
        assert!(model_of(&s).starts_with("projects/cfg-proj/"));
        assert_eq!(s.model_id, "gemini-3.8-live");
    }

    #[test]
    fn an_alias_on_the_developer_api_is_its_model_id() {
        let p = Placement {
            model_list: std::sync::Arc::from([Deployment {
                model_name: "live".into(),
                model: "vertex_ai/gemini-3.8-live".into(),
                vertex_project: Some("dep-proj".into()),
                ..Deployment::default()
            }]),
            ..developer()
        };
        let s = rewrite(br#"{"setup":{"model":"models/live"}}"#, &p).unwrap();
        assert_eq!(model_of(&s), "models/gemini-3.8-live");
        assert_eq!(s.model_id, "gemini/gemini-3.8-live");
        assert_eq!(s.alias.as_deref(), Some("live"));
        assert_eq!(
            s.project, "",
            "the deployment's Vertex project does not apply"
        );
    }

    fn model_of(s: &Setup) -> String {
        let v: serde_json::Value = serde_json::from_slice(&s.frame).unwrap();
        v["setup"]["model"].as_str().unwrap().to_string()
    }

    #[test]
    fn bare_forms_are_expanded() {
        for m in [
            "gemini-live-2.5-flash",
            "models/gemini-live-2.5-flash",
            "vertex_ai/gemini-live-2.5-flash",
            "publishers/google/models/gemini-live-2.5-flash",
        ] {
            let frame = format!(
                r#"{{"setup":{{"model":"{m}","generation_config":{{"response_modalities":["TEXT"]}}}}}}"#
            );
            let s = rewrite(frame.as_bytes(), &placement()).unwrap();
            assert_eq!(
                model_of(&s),
                "projects/cfg-proj/locations/us-central1/publishers/google/models/gemini-live-2.5-flash"
            );
            assert_eq!(s.model_id, "gemini-live-2.5-flash");
            let v: serde_json::Value = serde_json::from_slice(&s.frame).unwrap();
            assert_eq!(
                v["setup"]["generation_config"]["response_modalities"][0],
                "TEXT"
            );
        }
    }

    #[test]
    fn full_paths_pass_unchanged_and_set_placement() {
        let frame = br#"{"setup":{"model":"projects/p9/locations/europe-west4/publishers/google/models/gemini-2.0-flash-live-preview-04-09"}}"#;
        let s = rewrite(frame, &placement()).unwrap();
        assert_eq!(
            s.frame,
            frame.to_vec(),
            "byte-for-byte when nothing changes"
        );
        assert_eq!(
            (s.project.as_str(), s.location.as_str()),
            ("p9", "europe-west4")
        );
    }

    #[test]
    fn precedence_is_query_then_key_then_config() {
        let mut p = placement();
        p.key_project = "key-proj".into();
        p.key_location = "asia-east1".into();
        let frame = br#"{"setup":{"model":"gemini-live-2.5-flash"}}"#;
        let s = rewrite(frame, &p).unwrap();
        assert_eq!(
            (s.project.as_str(), s.location.as_str()),
            ("key-proj", "asia-east1")
        );
        p.query_project = Some("q-proj".into());
        p.query_location = Some("global".into());
        let s = rewrite(frame, &p).unwrap();
        assert_eq!(
            (s.project.as_str(), s.location.as_str()),
            ("q-proj", "global")
        );
    }

    #[test]
    fn errors_have_the_documented_codes() {
        let p = placement();
        assert_eq!(
            rewrite(b"not json", &p).unwrap_err().code,
            close::INVALID_PAYLOAD
        );
        assert_eq!(
            rewrite(br#"{"clientContent":{}}"#, &p).unwrap_err().code,
            close::POLICY
        );
        assert_eq!(
            rewrite(br#"{"setup":{}}"#, &p).unwrap_err().code,
            close::INVALID_PAYLOAD
        );
        assert_eq!(
            rewrite(br#"{"setup":{"model":"projects/x/models/y"}}"#, &p)
                .unwrap_err()
                .code,
            close::INVALID_PAYLOAD
        );
        assert_eq!(
            rewrite(br#"{"setup":{"model":"a b"}}"#, &p)
                .unwrap_err()
                .code,
            close::INVALID_PAYLOAD
        );
        let mut evil = placement();
        evil.query_location = Some("x.evil.example/".into());
        assert_eq!(
            rewrite(br#"{"setup":{"model":"m"}}"#, &evil)
                .unwrap_err()
                .code,
            close::INVALID_PAYLOAD
        );
        let none = Placement::default();
        assert_eq!(
            rewrite(br#"{"setup":{"model":"gemini-live-2.5-flash"}}"#, &none)
                .unwrap_err()
                .code,
            close::NO_PROJECT
        );
    }

    fn with_aliases() -> Placement {
        let mut p = placement();
        p.query_project = Some("q-proj".into());
        p.model_list = vec![
            Deployment {
                model_name: "live-a".into(),
                model: "gemini-live-2.5-flash".into(),
                vertex_project: Some("project-a".into()),
                vertex_location: Some("europe-west4".into()),
                vertex_credentials: Some("/a.json".into()),
            },
            Deployment {
                model_name: "team/live-b".into(),
                model: "gemini-2.0-flash-live-preview-04-09".into(),
                ..Deployment::default()
            },
        ]
        .into();
        p
    }

    #[test]
    fn model_list_aliases_are_sent_as_their_deployment() {
        let p = with_aliases();
        for m in ["live-a", "models/live-a", " live-a "] {
            let frame = format!(r#"{{"setup":{{"model":"{m}","x":1}}}}"#);
            let s = rewrite(frame.as_bytes(), &p).unwrap();
            assert_eq!(
                model_of(&s),
                "projects/project-a/locations/europe-west4/publishers/google/models/gemini-live-2.5-flash",
                "{m}"
            );
            assert_eq!(
                (s.project.as_str(), s.location.as_str(), s.model_id.as_str()),
                ("project-a", "europe-west4", "gemini-live-2.5-flash")
            );
            assert_eq!(s.alias.as_deref(), Some("live-a"));
            assert_eq!(
                s.credentials,
                Some(livegate_common::config::credentials_id("/a.json"))
            );
        }
        // Without its own project and location, the usual placement applies.
        let s = rewrite(br#"{"setup":{"model":"team/live-b"}}"#, &p).unwrap();
        assert_eq!(
            (s.project.as_str(), s.location.as_str(), s.model_id.as_str()),
            (
                "q-proj",
                "us-central1",
                "gemini-2.0-flash-live-preview-04-09"
            )
        );
        assert_eq!(
            (s.alias.as_deref(), s.credentials),
            (Some("team/live-b"), None)
        );
        // A model that is no alias is unchanged in meaning.
        let s = rewrite(br#"{"setup":{"model":"gemini-live-2.5-flash"}}"#, &p).unwrap();
        assert_eq!((s.project.as_str(), s.alias), ("q-proj", None));
    }

    const FULL: &str =
        "projects/cfg-proj/locations/us-central1/publishers/google/models/gemini-live-2.5-flash";

    /// `frame` rewritten; the result must be `frame` with only the model's JSON string
    /// (`old_model`, as written) replaced: every other byte kept.
    fn assert_spliced(frame: &str, old_model: &str) {
        let s = rewrite(frame.as_bytes(), &placement()).unwrap();
        assert_eq!(s.model_id, "gemini-live-2.5-flash");
        assert_eq!(
            frame.matches(old_model).count(),
            1,
            "test frame is ambiguous"
        );
        let expected = frame.replace(old_model, &format!("\"{FULL}\""));
        assert_eq!(String::from_utf8(s.frame).unwrap(), expected);
    }

    #[test]
    fn the_model_is_spliced_into_the_original_bytes() {
        // Whitespace, key order, number spellings and other keys stay as the client wrote them.
        assert_spliced(
            "{ \"setup\" : {\n  \"generation_config\": {\"temperature\": 1.0e0, \"n\": [1, 2.50]},\n  \"model\" :\t\"gemini-live-2.5-flash\"  }\n}",
            "\"gemini-live-2.5-flash\"",
        );
        // setup not first, model not first or last in setup.
        assert_spliced(
            r#"{"x":1,"setup":{"a":{},"model":"models/gemini-live-2.5-flash","b":[]}}"#,
            r#""models/gemini-live-2.5-flash""#,
        );
    }

    #[test]
    fn escaped_strings_are_decoded_and_strings_that_look_like_keys_are_data() {
        // The model spelled with escapes is decoded before it is checked and replaced whole.
        assert_spliced(
            r#"{"setup":{"model":"gemini\u002dlive-2.5-flash"}}"#,
            r#""gemini\u002dlive-2.5-flash""#,
        );
        // An escaped key name is still `model`.
        let s = rewrite(
            br#"{"setup":{"m\u006fdel":"gemini-live-2.5-flash"}}"#,
            &placement(),
        )
        .unwrap();
        assert_eq!(model_of(&s), FULL);
        // Text that contains `"model":"..."` inside a string value is not a key.
        assert_spliced(
            r#"{"setup":{"system_instruction":{"parts":[{"text":"say \"model\":\"evil\" and \\"}]},"model":"gemini-live-2.5-flash"}}"#,
            r#""gemini-live-2.5-flash""#,
        );
    }

    #[test]
    fn model_keys_in_other_objects_are_left_alone() {
        assert_spliced(
            r#"{"model":"top-level","setup":{"tools":[{"model":"in-a-tool"}],"generation_config":{"model":{"model":"deep"}},"model":"gemini-live-2.5-flash"},"other":{"setup":{"model":"nested-setup"}}}"#,
            r#""gemini-live-2.5-flash""#,
        );
        // Only setup.model counts: a model elsewhere does not stand in for a missing one.
        assert_eq!(
            rewrite(
                br#"{"model":"m","setup":{"tools":[{"model":"m"}]}}"#,
                &placement()
            )
            .unwrap_err(),
            Close::new(close::INVALID_PAYLOAD, "setup.model is missing")
        );
    }

    #[test]
    fn duplicate_setup_or_model_keys_are_refused() {
        let p = placement();
        for frame in [
            r#"{"setup":{"model":"gemini-other","model":"gemini-live-2.5-flash"}}"#,
            r#"{"setup":{"model":"gemini-other","m\u006fdel":"gemini-live-2.5-flash"}}"#,
        ] {
            assert_eq!(
                rewrite(frame.as_bytes(), &p).unwrap_err(),
                Close::new(close::INVALID_PAYLOAD, "setup has more than one model key"),
                "{frame}"
            );
        }
        for frame in [
            r#"{"setup":{"model":"gemini-other"},"setup":{"model":"gemini-live-2.5-flash"}}"#,
            r#"{"setup":{"model":"gemini-other"},"s\u0065tup":{}}"#,
        ] {
            assert_eq!(
                rewrite(frame.as_bytes(), &p).unwrap_err(),
                Close::new(
                    close::INVALID_PAYLOAD,
                    "first message has more than one setup key"
                ),
                "{frame}"
            );
        }
        // Duplicates the gateway does not read are relayed as they are.
        let frame = r#"{"setup":{"tools":[],"tools":[],"model":"gemini-live-2.5-flash"}}"#;
        assert_spliced(frame, r#""gemini-live-2.5-flash""#);
    }

    #[test]
    fn only_an_object_with_a_setup_object_and_a_string_model_is_a_setup() {
        let p = placement();
        let code = |f: &str| rewrite(f.as_bytes(), &p).map(|_| ()).unwrap_err().code;
        // JSON, but not a setup message: 1008 (an array is not read field by field).
        for f in [
            r#"[{"setup":{"model":"m"}}]"#,
            r#"[{"model":"m"}]"#,
            r#""setup""#,
            "null",
            r#"{"setup":null}"#,
            r#"{"setup":["m"]}"#,
            r#"{"setup":"m"}"#,
        ] {
            assert_eq!(code(f), close::POLICY, "{f}");
        }
        // Not JSON, or a model that is not a string: 1007.
        for f in [
            "",
            r#"{"setup":{"model":"m"}"#,
            r#"{"setup":{"model":"m"}} trailing"#,
            r#"{"setup":{"model":"m","x":[1,}}"#,
            r#"{"setup":{"model":5}}"#,
            r#"{"setup":{"model":null}}"#,
            r#"{"setup":{"model":["m"]}}"#,
        ] {
            assert_eq!(code(f), close::INVALID_PAYLOAD, "{f}");
        }
        assert_eq!(
            rewrite(b"{\"setup\":{\"model\":\"\xff\"}}", &p)
                .unwrap_err()
                .code,
            close::INVALID_PAYLOAD,
            "invalid UTF-8"
        );
    }
}
