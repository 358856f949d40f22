//! What the gateway reads from the upgrade request before upgrading: the client's credential
//! (in the documented order), the project/location query parameters, and the subprotocol to
//! echo back.

use http::HeaderMap;

/// Subprotocol prefix browsers use to carry a key or browser token.
pub const KEY_SUBPROTOCOL_PREFIX: &str = "livegate-key.";

/// A credential and where it came from (for logs and metrics; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub value: String,
    pub source: &'static str,
    /// The subprotocol to echo in the handshake response, when it came from there.
    pub subprotocol: Option<String>,
}

/// The query parameters the gateway understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub project: Option<String>,
    pub location: Option<String>,
    pub key: Option<String>,
    pub access_token: Option<String>,
}

/// Parses the query string (`project_id`/`vertex_project`, `location`/`vertex_location`,
/// `key`, `access_token`); the first occurrence of each wins, unknown ones are ignored.
pub fn parse_query(query: Option<&str>) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            "project_id" | "vertex_project" => &mut q.project,
            "location" | "vertex_location" => &mut q.location,
            "key" => &mut q.key,
            "access_token" => &mut q.access_token,
            _ => continue,
        };
        if slot.is_none() && !v.trim().is_empty() {
            *slot = Some(v.trim().to_string());
        }
    }
    q
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The client's credential, first match wins: `Authorization: Bearer`, `x-goog-api-key`,
/// `api-key`, subprotocol `livegate-key.<key>`, `?key=`, `?access_token=`.
pub fn credential(headers: &HeaderMap, query: &Query) -> Option<Credential> {
    let plain = |value: &str, source| {
        Some(Credential {
            value: value.to_string(),
            source,
            subprotocol: None,
        })
    };
    if let Some(auth) = header(headers, "authorization") {
        let token = livegate_common::credential::bearer(auth);
        if !token.is_empty() {
            return plain(token, "authorization");
        }
    }
    if let Some(k) = header(headers, "x-goog-api-key") {
        return plain(k, "x-goog-api-key");
    }
    if let Some(k) = header(headers, "api-key") {
        return plain(k, "api-key");
    }
    for value in headers.get_all("sec-websocket-protocol") {
        let Ok(value) = value.to_str() else { continue };
        for proto in value.split(',').map(str::trim) {
            if let Some(k) = proto.strip_prefix(KEY_SUBPROTOCOL_PREFIX)
                && !k.is_empty()
            {
                return Some(Credential {
                    value: k.to_string(),
                    source: "subprotocol",
                    subprotocol: Some(proto.to_string()),
                });
            }
        }
    }
    if let Some(k) = &query.key {
        return plain(k, "query key");
    }
    if let Some(k) = &query.access_token {
        return plain(k, "query access_token");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn order_is_header_then_goog_then_api_key_then_subprotocol_then_query() {
        let q = parse_query(Some("key=q1&access_token=q2"));
        let all = headers(&[
            ("authorization", "Bearer a1"),
            ("x-goog-api-key", "g1"),
            ("api-key", "k1"),
            ("sec-websocket-protocol", "json, livegate-key.s1"),
        ]);
        assert_eq!(credential(&all, &q).unwrap().value, "a1");
        let h = headers(&[("x-goog-api-key", "g1"), ("api-key", "k1")]);
        assert_eq!(credential(&h, &q).unwrap().source, "x-goog-api-key");
        let h = headers(&[("api-key", "k1")]);
        assert_eq!(credential(&h, &q).unwrap().value, "k1");
        let h = headers(&[("sec-websocket-protocol", "json, livegate-key.s1")]);
        let c = credential(&h, &q).unwrap();
        assert_eq!(
            (c.value.as_str(), c.subprotocol.as_deref()),
            ("s1", Some("livegate-key.s1"))
        );
        assert_eq!(credential(&HeaderMap::new(), &q).unwrap().value, "q1");
        let q = parse_query(Some("access_token=q2"));
        assert_eq!(
            credential(&HeaderMap::new(), &q).unwrap().source,
            "query access_token"
        );
        assert_eq!(credential(&HeaderMap::new(), &Query::default()), None);
    }

    #[test]
    fn query_aliases_and_encoding() {
        let q = parse_query(Some(
            "vertex_project=p%201&vertex_location=eu&project_id=ignored&x=1",
        ));
        assert_eq!(q.project.as_deref(), Some("p 1"));
        assert_eq!(q.location.as_deref(), Some("eu"));
        assert_eq!(parse_query(None), Query::default());
    }
}
