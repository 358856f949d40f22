//! The client's first frame: validating `setup` and rewriting its model into the full Vertex
//! resource path `projects/{p}/locations/{l}/publishers/google/models/{id}`.

use super::close::{self, Close};

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
}

/// The setup after rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The frame to send upstream.
    pub frame: Vec<u8>,
    pub project: String,
    pub location: String,
    /// The bare model id (`gemini-live-2.5-flash`).
    pub model_id: String,
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

/// Parses and rewrites the client's first frame.
///
/// # Errors
/// The close to send: 1007 for non-JSON or a malformed model, 1008 when the frame is not a
/// setup, 4002 when no project can be resolved.
pub fn rewrite(frame: &[u8], placement: &Placement) -> Result<Setup, Close> {
    let mut msg: serde_json::Value = serde_json::from_slice(frame).map_err(|_| {
        Close::new(
            close::INVALID_PAYLOAD,
            "first message is not valid JSON; expected a setup message",
        )
    })?;
    let Some(setup) = msg.get_mut("setup").and_then(|s| s.as_object_mut()) else {
        return Err(Close::new(close::POLICY, "first message must be setup"));
    };
    let Some(model) = setup.get("model").and_then(|m| m.as_str()) else {
        return Err(Close::new(close::INVALID_PAYLOAD, "setup.model is missing"));
    };
    let parsed = parse_model(model).ok_or_else(|| {
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
        setup.insert("model".to_string(), serde_json::Value::String(full));
        serde_json::to_vec(&msg).map_err(|_| Close::new(close::INTERNAL, "cannot encode setup"))?
    };
    Ok(Setup {
        frame,
        project,
        location,
        model_id,
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
}
