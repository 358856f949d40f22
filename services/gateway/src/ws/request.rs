//! What the gateway reads from the upgrade request before upgrading: the client's credential
//! (through [`livegate_common::credential`], the one parser gateway and auth share), the
//! project/location query parameters, and the subprotocol to echo back.

use http::HeaderMap;

pub use livegate_common::credential::{Credential, Refused};

/// The query parameters the gateway understands besides credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub project: Option<String>,
    pub location: Option<String>,
}

/// Parses the query string (`project_id`/`vertex_project`, `location`/`vertex_location`);
/// the first occurrence of each wins, unknown ones are ignored. (`key` and `access_token` are
/// the credential parser's.)
pub fn parse_query(query: Option<&str>) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            "project_id" | "vertex_project" => &mut q.project,
            "location" | "vertex_location" => &mut q.location,
            _ => continue,
        };
        if slot.is_none() && !v.trim().is_empty() {
            *slot = Some(v.trim().to_string());
        }
    }
    q
}

/// What the client presented: a credential, none (`Ok(None)`), or a malformed or ambiguous
/// one (refused with 4401 / HTTP 401, whatever else the request holds).
pub type Presented = Result<Option<Credential>, Refused>;

/// The client's credential, first place wins: `Authorization: Bearer`, `x-goog-api-key`,
/// `api-key`, subprotocol `livegate-key.<key>`, `?key=`, `?access_token=`.
pub fn credential(headers: &HeaderMap, query: Option<&str>) -> Presented {
    livegate_common::credential::presented(headers, query)
}

/// The `livegate-key.` subprotocol to echo in the `101` answer, as the client offered it.
pub fn subprotocol(headers: &HeaderMap) -> Option<http::HeaderValue> {
    livegate_common::credential::subprotocol_to_echo(headers)
        .and_then(|p| http::HeaderValue::from_bytes(p).ok())
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
    fn credentials_come_from_the_shared_parser_and_the_offer_is_echoed() {
        let h = headers(&[("sec-websocket-protocol", "json, livegate-key.s1")]);
        let c = credential(&h, Some("key=q1")).unwrap().unwrap();
        assert_eq!(c.value.expose(), "s1");
        assert_eq!(subprotocol(&h).unwrap(), "livegate-key.s1");
        let h = headers(&[("sec-websocket-protocol", "livegate-key. s1")]);
        assert!(credential(&h, None).is_err());
        assert_eq!(subprotocol(&h).unwrap(), "livegate-key. s1");
        assert_eq!(
            credential(&HeaderMap::new(), Some("project_id=p")),
            Ok(None)
        );
        assert_eq!(subprotocol(&HeaderMap::new()), None);
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
