//! The one reading of a client's credential out of the places clients put it, shared by the
//! gateway (upgrade and token endpoint) and auth (every call that takes a credential), so a
//! spelling accepted in one place is accepted, or refused, everywhere.
//!
//! A credential (API key `lg-…` or browser token `lgb-…`) is 1 to [`MAX_LEN`] RFC 6455 token
//! characters: visible ASCII except the separators `()<>@,;:\"/[]?={}`, space and tab. Its
//! places, in the order the first present one wins:
//!
//! | place | spelling |
//! |---|---|
//! | `Authorization` | `Bearer <cred>` or `Token <cred>` (the ephemeral-token SDKs' scheme; either in any case, 1+ spaces or tabs), or a bare `<cred>` |
//! | `x-goog-api-key`, `api-key` | `<cred>` |
//! | `Sec-WebSocket-Protocol` | a list element `livegate-key.<cred>` |
//! | query | `?key=<cred>`, `?access_token=<cred>` (percent-decoded) |
//!
//! Only the whitespace HTTP itself allows is skipped: around a header value, around a list
//! element, between the scheme and the credential. Nothing inside a credential, after the
//! `livegate-key.` prefix or in a decoded query value is ever trimmed: such a value is
//! [`Refused::Malformed`], as is a place given twice with different values
//! ([`Refused::Ambiguous`]). One malformed place refuses the request even when an earlier place
//! holds a good credential, so no spelling slips through behind another.
//!
//! ```
//! use livegate_common::credential::{presented, Place, Refused};
//! let mut h = http::HeaderMap::new();
//! h.insert("sec-websocket-protocol", "json, livegate-key.lg-abc".parse().unwrap());
//! let c = presented(&h, None).unwrap().unwrap();
//! assert_eq!((c.value.expose(), c.place), ("lg-abc", Place::Subprotocol));
//! h.insert("sec-websocket-protocol", "livegate-key. lg-abc".parse().unwrap());
//! assert_eq!(presented(&h, None), Err(Refused::Malformed { place: Place::Subprotocol }));
//! ```

use http::HeaderMap;

/// Longest credential accepted; anything longer is refused before it is looked at.
pub const MAX_LEN: usize = 512;

/// Subprotocol prefix browsers use to carry a key or browser token.
pub const KEY_SUBPROTOCOL_PREFIX: &str = "livegate-key.";

/// Where a credential was found (for logs and errors; never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Authorization,
    GoogApiKey,
    ApiKey,
    Subprotocol,
    QueryKey,
    QueryAccessToken,
}

impl Place {
    /// The name logs and error messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorization => "authorization",
            Self::GoogApiKey => "x-goog-api-key",
            Self::ApiKey => "api-key",
            Self::Subprotocol => "livegate-key subprotocol",
            Self::QueryKey => "query key",
            Self::QueryAccessToken => "query access_token",
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential's text. `Debug` never shows it, so a derived `Debug` of a struct holding one
/// cannot leak it into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// The credential itself: for auth's lookup only, never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value(<{} bytes redacted>)", self.0.len())
    }
}

/// A well-formed credential and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub value: Value,
    pub place: Place,
}

/// Why the request's credential is refused. The messages name the place, never the value,
/// and fit a WebSocket close reason (≤ 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Characters outside the RFC 6455 token set, empty where a value is required, or too long.
    #[error("malformed credential in {place}")]
    Malformed { place: Place },
    /// The same place given more than once with different values.
    #[error("more than one credential in {place}")]
    Ambiguous { place: Place },
}

/// True for a byte RFC 6455 (after RFC 2616) allows in a token.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// Checks a credential as given, without trimming anything: 1 to [`MAX_LEN`] token
/// characters.
///
/// ```
/// use livegate_common::credential::is_well_formed;
/// assert!(is_well_formed("lgb-eyJr.abc_-"));
/// assert!(!is_well_formed(" lg-abc") && !is_well_formed("lg-a b") && !is_well_formed(""));
/// ```
pub fn is_well_formed(value: &str) -> bool {
    (1..=MAX_LEN).contains(&value.len()) && value.bytes().all(is_token_byte)
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &b[s..=e],
        _ => &[],
    }
}

fn well_formed(raw: &[u8], place: Place) -> Result<Value, Refused> {
    std::str::from_utf8(raw)
        .ok()
        .filter(|s| is_well_formed(s))
        .map(|s| Value(s.to_string()))
        .ok_or(Refused::Malformed { place })
}

/// The credential in an `Authorization` value (already trimmed): after a `Bearer` or `Token`
/// scheme (google-genai's ephemeral-token clients send `Token <token>`), or the whole value
/// when it names no scheme; `None` for a bare scheme.
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    for scheme in [b"bearer".as_slice(), b"token".as_slice()] {
        match value.get(..scheme.len()) {
            Some(s) if s.eq_ignore_ascii_case(scheme) => match value.get(scheme.len()) {
                None => return None,
                Some(b' ' | b'\t') => return Some(trim_ows(&value[scheme.len()..])),
                Some(_) => {}
            },
            _ => {}
        }
    }
    Some(value)
}

/// One place's values, each already checked: the place's credential when every non-empty
/// value is the same.
fn one_of(
    place: Place,
    values: impl Iterator<Item = Result<Value, Refused>>,
) -> Result<Option<Credential>, Refused> {
    let mut found: Option<Value> = None;
    for v in values {
        let v = v?;
        match &found {
            Some(f) if *f != v => return Err(Refused::Ambiguous { place }),
            Some(_) => {}
            None => found = Some(v),
        }
    }
    Ok(found.map(|value| Credential { value, place }))
}

fn header_place(
    headers: &HeaderMap,
    name: &str,
    place: Place,
) -> Result<Option<Credential>, Refused> {
    let values = headers.get_all(name).iter().filter_map(|v| {
        let v = trim_ows(v.as_bytes());
        let v = if place == Place::Authorization {
            strip_bearer(v)?
        } else {
            v
        };
        (!v.is_empty()).then(|| well_formed(v, place))
    });
    one_of(place, values)
}

fn subprotocol_offers(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(trim_ows)
        .filter(|e| e.starts_with(KEY_SUBPROTOCOL_PREFIX.as_bytes()))
}

fn query_place(
    query: Option<&str>,
    name: &str,
    place: Place,
) -> Result<Option<Credential>, Refused> {
    let values = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| well_formed(v.as_bytes(), place));
    one_of(place, values)
}

/// The request's credential (see the module docs): `Ok(None)` when it presents none.
///
/// # Errors
/// [`Refused`] when any place holds a malformed credential or two different ones.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Credential>, Refused> {
    let subprotocol = one_of(
        Place::Subprotocol,
        subprotocol_offers(headers)
            .map(|e| well_formed(&e[KEY_SUBPROTOCOL_PREFIX.len()..], Place::Subprotocol)),
    );
    let places = [
        header_place(headers, "authorization", Place::Authorization),
        header_place(headers, "x-goog-api-key", Place::GoogApiKey),
        header_place(headers, "api-key", Place::ApiKey),
        subprotocol,
        query_place(query, "key", Place::QueryKey),
        query_place(query, "access_token", Place::QueryAccessToken),
    ];
    let mut first = None;
    for p in places {
        if let Some(c) = p? {
            first.get_or_insert(c);
        }
    }
    Ok(first)
}

/// The `livegate-key.…` subprotocol element the client offered, exactly as offered, for the
/// handshake response to echo (browsers fail a handshake whose answer names no subprotocol they
/// offered). Echoed even when malformed, so that the browser sees the 4401 close that follows
/// rather than a failed handshake.
pub fn subprotocol_to_echo(headers: &HeaderMap) -> Option<&[u8]> {
    subprotocol_offers(headers).next()
}

/// The token in an `Authorization` value: the text after a `Bearer` scheme (any case),
/// or the whole value when it names no scheme, trimmed of surrounding whitespace. For the
/// admin master key, an operator's string that need not be a token; client credentials go
/// through [`presented`].
///
/// ```
/// use livegate_common::credential::bearer;
/// assert_eq!(bearer("Bearer lg-abc"), "lg-abc");
/// assert_eq!(bearer("bearer  lg-abc "), "lg-abc");
/// assert_eq!(bearer("lg-abc"), "lg-abc");
/// ```
pub fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const KEY: &str = "lg-Ab0_-xyz";
    const TOKEN: &str = "lgb-eyJrIjoia2V5In0.c2ln_-";

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn got(h: &HeaderMap, q: Option<&str>) -> Result<Option<(String, Place)>, Refused> {
        presented(h, q).map(|c| c.map(|c| (c.value.expose().to_string(), c.place)))
    }

    /// Every accepted spelling of `cred`, with the place it must be reported from.
    fn good_spellings(cred: &str) -> Vec<(HeaderMap, Option<String>, Place)> {
        let b = |s: String| s.into_bytes();
        let mut v = Vec::new();
        for auth in [
            format!("Bearer {cred}"),
            format!("bearer {cred}"),
            format!("BEARER\t{cred}"),
            format!("BeArEr \t {cred} "),
            format!("  {cred}"),
            cred.to_string(),
        ] {
            v.push((
                headers(&[("authorization", &b(auth))]),
                None,
                Place::Authorization,
            ));
        }
        // Repeated headers carrying the same credential (proxies duplicate them) are one.
        let bearer = b(format!("Bearer {cred}"));
        v.push((
            headers(&[
                ("authorization", &bearer),
                ("authorization", &b(cred.to_string())),
            ]),
            None,
            Place::Authorization,
        ));
        v.push((
            headers(&[
                ("api-key", cred.as_bytes()),
                ("api-key", b""),
                ("api-key", cred.as_bytes()),
            ]),
            None,
            Place::ApiKey,
        ));
        for (name, place) in [
            ("x-goog-api-key", Place::GoogApiKey),
            ("api-key", Place::ApiKey),
        ] {
            for value in [cred.to_string(), format!(" {cred}\t")] {
                v.push((headers(&[(name, &b(value))]), None, place));
            }
        }
        for proto in [
            format!("livegate-key.{cred}"),
            format!("json, livegate-key.{cred}"),
            format!("json,livegate-key.{cred} ,x"),
            format!("\tlivegate-key.{cred}\t, livegate-key.{cred}"),
        ] {
            v.push((
                headers(&[("sec-websocket-protocol", &b(proto))]),
                None,
                Place::Subprotocol,
            ));
        }
        v.push((
            headers(&[
                ("sec-websocket-protocol", b"json"),
                ("sec-websocket-protocol", &b(format!("livegate-key.{cred}"))),
            ]),
            None,
            Place::Subprotocol,
        ));
        for (q, place) in [
            (format!("key={cred}"), Place::QueryKey),
            (format!("x=1&key={cred}&key={cred}"), Place::QueryKey),
            (format!("key=&access_token={cred}"), Place::QueryAccessToken),
        ] {
            v.push((HeaderMap::new(), Some(q), place));
        }
        v
    }

    /// Every refused spelling of `cred`: whitespace, separators, control and non-ASCII bytes
    /// anywhere inside, an empty subprotocol credential, and two different values in one place.
    fn bad_spellings(cred: &str) -> Vec<(HeaderMap, Option<String>, Refused)> {
        let mut v = Vec::new();
        let malformed = |place| Refused::Malformed { place };
        let mut inserts: Vec<Vec<u8>> = (0..=u8::MAX)
            .filter(|b| !is_token_byte(*b))
            .map(|b| vec![b])
            .collect();
        inserts.push("é".as_bytes().to_vec());
        let mid = cred.len() / 2;
        for ins in &inserts {
            let ins = ins.as_slice();
            let inside = [&cred.as_bytes()[..mid], ins, &cred.as_bytes()[mid..]].concat();
            let after = [b"livegate-key.".as_slice(), ins, cred.as_bytes()].concat();
            let trailing = [b"livegate-key.".as_slice(), cred.as_bytes(), ins, b"x"].concat();
            let encoded: String = inside.iter().map(|b| format!("%{b:02X}")).collect();
            v.push((
                HeaderMap::new(),
                Some(format!("key={encoded}")),
                malformed(Place::QueryKey),
            ));
            v.push((
                HeaderMap::new(),
                Some(format!("access_token={encoded}")),
                malformed(Place::QueryAccessToken),
            ));
            if HeaderValue::from_bytes(&inside).is_err() {
                // Bytes HTTP cannot carry in a header never reach the parser.
                continue;
            }
            if ins != b"," {
                // A comma splits the list: `livegate-key.lg-a,b` is `lg-a` plus another offer.
                let proto = [b"livegate-key.".as_slice(), &inside].concat();
                v.push((
                    headers(&[("sec-websocket-protocol", &proto)]),
                    None,
                    malformed(Place::Subprotocol),
                ));
                v.push((
                    headers(&[("sec-websocket-protocol", &trailing)]),
                    None,
                    malformed(Place::Subprotocol),
                ));
            }
            if ins != b"," && HeaderValue::from_bytes(&after).is_ok() {
                // Surrounding whitespace of a list element is HTTP's; after the prefix it is not.
                let offered = [b"json, ".as_slice(), &after].concat();
                v.push((
                    headers(&[("sec-websocket-protocol", &offered)]),
                    None,
                    malformed(Place::Subprotocol),
                ));
            }
            v.push((
                headers(&[("x-goog-api-key", &inside)]),
                None,
                malformed(Place::GoogApiKey),
            ));
            v.push((
                headers(&[("api-key", &inside)]),
                None,
                malformed(Place::ApiKey),
            ));
            let auth = [b"Bearer ".as_slice(), &inside].concat();
            v.push((
                headers(&[("authorization", &auth)]),
                None,
                malformed(Place::Authorization),
            ));
        }
        for ws in [" ", "\t", "  "] {
            let proto = format!("livegate-key.{ws}{cred}");
            v.push((
                headers(&[("sec-websocket-protocol", proto.as_bytes())]),
                None,
                Refused::Malformed {
                    place: Place::Subprotocol,
                },
            ));
        }
        v.push((
            HeaderMap::new(),
            Some(format!("key=+{cred}")),
            malformed(Place::QueryKey),
        ));
        v.push((
            headers(&[("sec-websocket-protocol", b"json, livegate-key.")]),
            None,
            Refused::Malformed {
                place: Place::Subprotocol,
            },
        ));
        v.push((
            headers(&[("authorization", format!("Basic {cred}").as_bytes())]),
            None,
            Refused::Malformed {
                place: Place::Authorization,
            },
        ));
        v.push((
            headers(&[
                ("authorization", b"Bearer lg-a"),
                ("authorization", b"Bearer lg-b"),
            ]),
            None,
            Refused::Ambiguous {
                place: Place::Authorization,
            },
        ));
        v.push((
            headers(&[(
                "sec-websocket-protocol",
                b"livegate-key.lg-a, livegate-key.lg-b",
            )]),
            None,
            Refused::Ambiguous {
                place: Place::Subprotocol,
            },
        ));
        v.push((
            HeaderMap::new(),
            Some("key=lg-a&key=lg-b".into()),
            Refused::Ambiguous {
                place: Place::QueryKey,
            },
        ));
        v.push((
            HeaderMap::new(),
            Some(format!("key={}", "a".repeat(MAX_LEN + 1))),
            Refused::Malformed {
                place: Place::QueryKey,
            },
        ));
        v
    }

    #[test]
    fn every_accepted_spelling_yields_the_exact_credential() {
        for cred in [KEY, TOKEN, "x", &"a".repeat(MAX_LEN)] {
            for (h, q, place) in good_spellings(cred) {
                assert_eq!(
                    got(&h, q.as_deref()),
                    Ok(Some((cred.to_string(), place))),
                    "{h:?} {q:?}"
                );
            }
        }
    }

    #[test]
    fn every_token_character_is_accepted_in_every_place() {
        for b in (0..=u8::MAX).filter(|b| is_token_byte(*b)) {
            let cred = format!("lg-{}x", char::from(b));
            for (h, q, place) in good_spellings(&cred) {
                let q = q.map(|q| q.replace(&cred, &format!("lg-%{b:02X}x")));
                assert_eq!(
                    got(&h, q.as_deref()),
                    Ok(Some((cred.clone(), place))),
                    "{h:?} {q:?}"
                );
            }
        }
    }

    #[test]
    fn every_malformed_spelling_is_refused_never_trimmed() {
        for cred in [KEY, TOKEN] {
            for (h, q, refused) in bad_spellings(cred) {
                assert_eq!(got(&h, q.as_deref()), Err(refused), "{h:?} {q:?}");
                // Behind a good credential in an earlier place, it still refuses.
                let mut with_good = h.clone();
                if !with_good.contains_key("authorization") {
                    with_good.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
                    assert_eq!(got(&with_good, q.as_deref()), Err(refused), "{h:?} {q:?}");
                }
            }
        }
    }

    #[test]
    fn order_is_authorization_goog_api_key_subprotocol_then_query() {
        let q = Some("key=q1&access_token=q2");
        let all = headers(&[
            ("authorization", b"Bearer a1"),
            ("x-goog-api-key", b"g1"),
            ("api-key", b"k1"),
            ("sec-websocket-protocol", b"json, livegate-key.s1"),
        ]);
        assert_eq!(got(&all, q), Ok(Some(("a1".into(), Place::Authorization))));
        let h = headers(&[("x-goog-api-key", b"g1"), ("api-key", b"k1")]);
        assert_eq!(got(&h, q), Ok(Some(("g1".into(), Place::GoogApiKey))));
        let h = headers(&[
            ("api-key", b"k1"),
            ("sec-websocket-protocol", b"livegate-key.s1"),
        ]);
        assert_eq!(got(&h, q), Ok(Some(("k1".into(), Place::ApiKey))));
        let h = headers(&[("sec-websocket-protocol", b"livegate-key.s1")]);
        assert_eq!(got(&h, q), Ok(Some(("s1".into(), Place::Subprotocol))));
        assert_eq!(
            got(&HeaderMap::new(), q),
            Ok(Some(("q1".into(), Place::QueryKey)))
        );
        assert_eq!(
            got(&HeaderMap::new(), Some("access_token=q2")),
            Ok(Some(("q2".into(), Place::QueryAccessToken)))
        );
    }

    #[test]
    fn the_token_scheme_carries_a_credential_like_bearer() {
        for v in [
            format!("Token {TOKEN}"),
            format!("token \t{TOKEN}"),
            format!("TOKEN {TOKEN}"),
        ] {
            let h = headers(&[("authorization", v.as_bytes())]);
            assert_eq!(
                got(&h, None),
                Ok(Some((TOKEN.to_string(), Place::Authorization))),
                "{v}"
            );
        }
        // A credential that merely starts with the letters is not a scheme.
        let h = headers(&[("authorization", b"tokenish-lg-abc")]);
        assert_eq!(
            got(&h, None),
            Ok(Some(("tokenish-lg-abc".to_string(), Place::Authorization)))
        );
        // Still one credential: nothing after it, nothing trimmed inside.
        let h = headers(&[("authorization", b"Token lgb-a lgb-b")]);
        assert_eq!(
            got(&h, None),
            Err(Refused::Malformed {
                place: Place::Authorization
            })
        );
        assert_eq!(
            got(&headers(&[("authorization", b"Token")]), None),
            Ok(None)
        );
    }

    #[test]
    fn empty_places_are_absent() {
        for h in [
            HeaderMap::new(),
            headers(&[("authorization", b"")]),
            headers(&[("authorization", b"  ")]),
            headers(&[("authorization", b"Bearer")]),
            headers(&[("authorization", b"bearer \t ")]),
            headers(&[("x-goog-api-key", b" "), ("api-key", b"")]),
            headers(&[(
                "sec-websocket-protocol",
                b"json, livegate-keyx, LIVEGATE-KEY.a",
            )]),
        ] {
            assert_eq!(
                got(&h, Some("key=&access_token=&project_id=p")),
                Ok(None),
                "{h:?}"
            );
        }
        // A scheme-less value that merely starts with "bearer" is the credential itself.
        let h = headers(&[("authorization", b"bearerish")]);
        assert_eq!(
            got(&h, None),
            Ok(Some(("bearerish".into(), Place::Authorization)))
        );
    }

    #[test]
    fn the_subprotocol_is_echoed_as_offered() {
        let h = headers(&[("sec-websocket-protocol", b"json,  livegate-key. lg-a , x")]);
        assert_eq!(
            subprotocol_to_echo(&h),
            Some(b"livegate-key. lg-a".as_slice())
        );
        let h = headers(&[("sec-websocket-protocol", b"json")]);
        assert_eq!(subprotocol_to_echo(&h), None);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let c = presented(&headers(&[("api-key", KEY.as_bytes())]), None)
            .unwrap()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(KEY) && shown.contains("redacted"),
            "{shown}"
        );
        assert_eq!(
            Refused::Malformed {
                place: Place::Subprotocol
            }
            .to_string(),
            "malformed credential in livegate-key subprotocol"
        );
    }

    #[test]
    fn bearer_strips_the_scheme_in_any_case_and_trims() {
        assert_eq!(bearer("Bearer a"), "a");
        assert_eq!(bearer("BEARER\ta"), "a");
        assert_eq!(bearer("  a  "), "a");
        assert_eq!(bearer("Bearer "), "");
        assert_eq!(bearer("Basic a"), "Basic a");
    }
}
