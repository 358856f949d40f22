//! The invariants the fuzz targets check on the gateway's parsers of untrusted bytes, one
//! function per target. Each runs one input through the parser and returns `Err` naming the
//! first broken invariant: the libFuzzer targets in `fuzz_targets/` panic with it (so
//! libFuzzer keeps the input), and the corpus replay in the gateway's
//! `tests/it/fuzz_corpus.rs` (which includes this file by path, so `cargo test` checks the
//! same things without building libFuzzer) asserts it. A panic inside a parser is a failure
//! either way.

use livegate_common::credential::{
    KEY_SUBPROTOCOL_PREFIX, Place, bearer, is_well_formed, subprotocol_to_echo,
};
use livegate_gateway::untrusted::{
    Media, Placement, Setup, close, credential, inspect_server, measure_client, parse_query,
    rewrite,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// A broken invariant, said in words.
pub type Violation = String;

/// The placements every setup input is rewritten under: a configured project, key defaults,
/// nothing at all (bare models have no project), and a query location that must be refused.
fn placements() -> [Placement; 4] {
    [
        Placement {
            config_project: Some("cfg-proj".into()),
            config_location: "us-central1".into(),
            ..Placement::default()
        },
        Placement {
            key_project: "key-proj".into(),
            key_location: "europe-west4".into(),
            config_location: "us-central1".into(),
            ..Placement::default()
        },
        Placement::default(),
        Placement {
            query_project: Some(" q-proj ".into()),
            query_location: Some("x.evil.example/".into()),
            ..Placement::default()
        },
    ]
}

/// `setup.model` of a frame, read without building a DOM (a DOM refuses numbers beyond
/// `f64`, which the gateway relays untouched).
#[derive(Deserialize)]
struct Probe {
    setup: ProbeSetup,
}

#[derive(Deserialize)]
struct ProbeSetup {
    model: String,
}

fn model_of(frame: &[u8]) -> Result<String, Violation> {
    serde_json::from_slice::<Probe>(frame)
        .map(|p| p.setup.model)
        .map_err(|e| format!("cannot read setup.model: {e}"))
}

/// The setup rewrite: never panics; refuses only with its documented codes; when it accepts,
/// the input was JSON, the output is JSON, the output is the input with exactly the JSON
/// string of `setup.model` replaced, and the model it reports is the one in the output.
///
/// # Errors
/// The first broken invariant.
pub fn setup_rewrite(data: &[u8]) -> Result<(), Violation> {
    for placement in placements() {
        match rewrite(data, &placement) {
            Err(c) => {
                if !matches!(
                    c.code,
                    close::INVALID_PAYLOAD | close::POLICY | close::NO_PROJECT
                ) {
                    return Err(format!("undocumented close for a setup frame: {c:?}"));
                }
            }
            Ok(setup) => accepted_setup(data, &setup)?,
        }
    }
    Ok(())
}

fn accepted_setup(input: &[u8], s: &Setup) -> Result<(), Violation> {
    let out = &s.frame;
    if serde_json::from_slice::<IgnoredAny>(input).is_err() {
        return Err("accepted a frame that is not JSON".into());
    }
    if serde_json::from_slice::<IgnoredAny>(out).is_err() {
        return Err("the rewritten frame is not JSON".into());
    }
    let full = format!(
        "projects/{}/locations/{}/publishers/google/models/{}",
        s.project, s.location, s.model_id
    );
    let out_model = model_of(out)?;
    if out_model != full {
        return Err(format!(
            "reported {full:?}, but setup.model in the output is {out_model:?}"
        ));
    }
    let in_model = model_of(input)?;
    let id_ok =
        in_model.trim() == s.model_id || in_model.trim().ends_with(&format!("/{}", s.model_id));
    if !id_ok {
        return Err(format!(
            "model id {:?} is not the one the client named ({in_model:?})",
            s.model_id
        ));
    }
    if !s
        .location
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("location {:?} is not [a-z0-9-]", s.location));
    }
    if out == input {
        return if in_model == full {
            Ok(())
        } else {
            Err("the model was not rewritten".into())
        };
    }
    // The output must be `A + Y + B` for an input `A + X + B`, Y the encoded model and X a JSON
    // string holding the client's model: A can be no longer than the common prefix, B no
    // longer than the common suffix.
    let encoded = serde_json::to_string(&full).map_err(|e| e.to_string())?;
    let y = encoded.as_bytes();
    let prefix = input.iter().zip(out).take_while(|(a, b)| a == b).count();
    let max_suffix = input.len().min(out.len());
    let suffix = input
        .iter()
        .rev()
        .zip(out.iter().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    let Some(last_start) = out.len().checked_sub(y.len()) else {
        return Err("output shorter than the model it holds".into());
    };
    let first_start = last_start.saturating_sub(suffix);
    for start in first_start..=prefix.min(last_start) {
        let tail = out.len() - start - y.len();
        if out.get(start..start + y.len()) != Some(y) || tail > input.len() - start {
            continue;
        }
        let Some(replaced) = input.get(start..input.len() - tail) else {
            continue;
        };
        // Exactly the string: serde would also read it with whitespace around it.
        let quoted = replaced.len() >= 2
            && replaced.first() == Some(&b'"')
            && replaced.last() == Some(&b'"');
        if quoted && serde_json::from_slice::<String>(replaced).is_ok_and(|m| m == in_model) {
            return Ok(());
        }
    }
    Err("the output differs from the input outside the JSON string of setup.model".into())
}

fn finite_non_negative(name: &str, v: f64) -> Result<(), Violation> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} is {v}"))
    }
}

fn check_media(m: &Media) -> Result<(), Violation> {
    finite_non_negative("input_audio_seconds", m.input_audio_seconds)?;
    finite_non_negative("output_audio_seconds", m.output_audio_seconds)?;
    let wire = m.clone().take();
    finite_non_negative("input_video_seconds", wire.input_video_seconds)
}

/// The usage-frame inspector: the frame read as a client frame and as a server frame never
/// panics, every measurement is finite and non-negative, and measuring the same frame again
/// adds exactly as much again (nothing carries over between frames).
///
/// # Errors
/// The first broken invariant.
pub fn inspect_frames(data: &[u8]) -> Result<(), Violation> {
    let mut once = Media::default();
    measure_client(data, &mut once);
    let server = inspect_server(data, &mut once);
    check_media(&once)?;
    let mut twice = once.clone();
    measure_client(data, &mut twice);
    if inspect_server(data, &mut twice) != server {
        return Err("the same server frame read twice gave different results".into());
    }
    check_media(&twice)?;
    // Seconds are sums of floats, so measuring again may round differently: compare within a
    // relative 1e-9; counts exactly.
    let close_to_double =
        |again: f64, first: f64| (again - 2.0 * first).abs() <= 1e-9 * (2.0 * first).max(1.0);
    let counts = |m: &Media| {
        [
            m.input_characters,
            m.input_video_frames,
            m.input_images,
            m.output_characters,
        ]
    };
    if counts(&twice) != counts(&once).map(|c| c * 2)
        || !close_to_double(twice.input_audio_seconds, once.input_audio_seconds)
        || !close_to_double(twice.output_audio_seconds, once.output_audio_seconds)
    {
        return Err(format!(
            "measuring a frame twice gave {twice:?}, not twice {once:?}"
        ));
    }
    Ok(())
}

/// The request's credential and query: the input's first line is the query string, every
/// further line a `name: value` header (lines that are not valid headers are skipped). The
/// parsers never panic; query values are non-empty and trimmed; a credential the parser
/// accepts is well formed as given (1 to 512 RFC 6455 token characters: nothing was trimmed
/// into validity, issue 14); a subprotocol credential comes with the offer to echo; `bearer`
/// returns a trimmed part of its input.
///
/// # Errors
/// The first broken invariant.
pub fn request_credential(data: &[u8]) -> Result<(), Violation> {
    let mut lines = data.split(|b| *b == b'\n');
    let query = lines.next().map(String::from_utf8_lossy);
    let q = parse_query(query.as_deref());
    for (name, v) in [("project", &q.project), ("location", &q.location)] {
        if let Some(v) = v
            && (v.is_empty() || v.trim() != v)
        {
            return Err(format!("query {name} {v:?} is empty or untrimmed"));
        }
    }
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim_ascii()),
            http::HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        if let Ok(text) = value.to_str() {
            let token = bearer(text);
            let inside = text.as_bytes().as_ptr_range();
            if !token.is_empty() && (!inside.contains(&token.as_ptr()) || token.trim() != token) {
                return Err(format!("bearer({text:?}) gave {token:?}"));
            }
        }
        headers.append(name, value);
    }
    let c = match credential(&headers, query.as_deref()) {
        Ok(Some(c)) => c,
        // Refused (4401 / HTTP 401) or none: nothing more to check.
        Ok(None) | Err(_) => return Ok(()),
    };
    let value = c.value.expose();
    if !is_well_formed(value) {
        return Err(format!(
            "accepted a malformed credential ({} bytes) from {}",
            value.len(),
            c.place
        ));
    }
    if c.place == Place::Subprotocol {
        let echo = subprotocol_to_echo(&headers).unwrap_or_default();
        if !echo.starts_with(KEY_SUBPROTOCOL_PREFIX.as_bytes()) {
            return Err("a subprotocol credential without a livegate-key offer to echo".into());
        }
    }
    Ok(())
}
