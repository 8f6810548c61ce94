//! HS256 JSON Web Tokens: the one algorithm Herald accepts.
//!
//! Verification order matters: the header's `alg` is checked first (so
//! `none` and every other algorithm fail before any crypto), then the
//! signature in constant time, and only then is the payload parsed.

use super::capability::RoomGrants;
use crate::error::{ErrorCode, Rejection};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Largest `info` claim, in bytes of JSON.
pub const MAX_INFO_BYTES: usize = 1024;

/// Why a token was refused. Every case answers `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Not three base64url parts of JSON, too long, or claims of the wrong shape.
    Malformed(String),
    /// `alg` is not `HS256` (including `none`).
    Algorithm(String),
    /// The signature does not match the secret.
    BadSignature,
    /// The header names a `kid` the server does not hold.
    UnknownKey(String),
    /// `exp` has passed (beyond the skew allowance).
    Expired,
    /// `nbf` (or `iat`) is in the future (beyond the skew allowance).
    NotYetValid,
}

impl AuthError {
    pub fn rejection(self) -> Rejection {
        let message = match self {
            AuthError::Malformed(why) => format!("malformed token: {why}"),
            AuthError::Algorithm(alg) => format!("token algorithm {alg:?} is not accepted; use HS256"),
            AuthError::BadSignature => "token signature does not verify".to_owned(),
            AuthError::UnknownKey(kid) => format!("token key id {kid:?} is not known to this server"),
            AuthError::Expired => "token expired".to_owned(),
            AuthError::NotYetValid => "token not yet valid".to_owned(),
        };
        Rejection::new(ErrorCode::Unauthorized, message)
    }
}

/// The claims Herald reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub rooms: RoomGrants,
    /// The `info` object as JSON text.
    pub info: Option<String>,
}

#[derive(Deserialize)]
struct WireClaims<'a> {
    sub: String,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    #[serde(default)]
    rooms: RoomGrants,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
}

fn malformed(why: &str) -> AuthError {
    AuthError::Malformed(why.to_owned())
}

fn mac(secret: &[u8]) -> Result<Hmac<Sha256>, AuthError> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| malformed("unusable secret"))
}

/// Verifies `token` at `now_s` (seconds since the Unix epoch), allowing
/// `skew_s` of clock difference on `exp`, `nbf` and `iat`.
pub fn verify_hs256(token: &str, secret: &[u8], now_s: u64, skew_s: u64) -> Result<Claims, AuthError> {
    verify_with(token, |_| vec![secret], now_s, skew_s)
}

/// Verifies `token` against the keys its header's `kid` selects
/// ([`crate::auth::Keys::candidates`]).
pub fn verify_with_keys(token: &str, keys: &crate::auth::Keys, now_s: u64, skew_s: u64) -> Result<Claims, AuthError> {
    verify_with(token, |kid| keys.candidates(kid), now_s, skew_s)
}

fn verify_with<'k>(
    token: &str,
    candidates: impl FnOnce(Option<&str>) -> Vec<&'k [u8]>,
    now_s: u64,
    skew_s: u64,
) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a token has three dot-separated parts"));
    };
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed("header is not base64url"))?;
    // Parsed as `str`, as every other JSON is: `from_slice` would add a
    // second copy of the parser to the `.wasm`.
    let head: Header = std::str::from_utf8(&header_json)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| malformed("header is not a JSON object with alg"))?;
    if head.alg != "HS256" {
        return Err(AuthError::Algorithm(head.alg.chars().take(16).collect()));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed("signature is not base64url"))?;
    let secrets = candidates(head.kid.as_deref());
    if secrets.is_empty() {
        return Err(AuthError::UnknownKey(head.kid.unwrap_or_default().chars().take(64).collect()));
    }
    let signed_by_one = secrets.into_iter().any(|secret| {
        mac(secret).is_ok_and(|mut m| {
            m.update(header.as_bytes());
            m.update(b".");
            m.update(payload.as_bytes());
            m.verify_slice(&signature).is_ok()
        })
    });
    if !signed_by_one {
        return Err(AuthError::BadSignature);
    }

    let payload_json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed("payload is not base64url"))?;
    let payload_text = std::str::from_utf8(&payload_json).map_err(|_| malformed("claims are not UTF-8"))?;
    let wire: WireClaims<'_> =
        serde_json::from_str(payload_text).map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
    if wire.sub.is_empty() || wire.sub.len() > 128 {
        return Err(malformed("sub must be 1 to 128 characters"));
    }
    let info = match wire.info {
        None => None,
        Some(raw) if raw.get().starts_with('{') && raw.get().len() <= MAX_INFO_BYTES => Some(raw.get().to_owned()),
        Some(_) => return Err(malformed("info must be a JSON object of at most 1 KiB")),
    };
    if wire.exp.is_some_and(|exp| now_s > exp.saturating_add(skew_s)) {
        return Err(AuthError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now_s.saturating_add(skew_s));
    if future(wire.nbf) || future(wire.iat) {
        return Err(AuthError::NotYetValid);
    }
    Ok(Claims { sub: wire.sub, exp: wire.exp, nbf: wire.nbf, iat: wire.iat, rooms: wire.rooms, info })
}

/// Signs `claims` (any JSON object) as an HS256 token, for `scripts/token`
/// and tests. An unusable secret yields an empty string, which never verifies.
pub fn mint_hs256(claims: &impl serde::Serialize, secret: &[u8]) -> String {
    mint_hs256_kid(claims, None, secret)
}

/// [`mint_hs256`] with a `kid` in the header, naming the key.
/// Claims that do not serialize (a map with non-string keys) yield an empty
/// string too.
pub fn mint_hs256_kid(claims: &impl serde::Serialize, kid: Option<&str>, secret: &[u8]) -> String {
    let head = match kid.map(serde_json::to_string) {
        Some(Ok(kid)) => format!(r#"{{"alg":"HS256","typ":"JWT","kid":{kid}}}"#),
        Some(Err(_)) => return String::new(),
        None => r#"{"alg":"HS256","typ":"JWT"}"#.to_owned(),
    };
    let Ok(claims) = serde_json::to_string(claims) else { return String::new() };
    let header = URL_SAFE_NO_PAD.encode(head);
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let Ok(mut m) = mac(secret) else { return String::new() };
    m.update(header.as_bytes());
    m.update(b".");
    m.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &[u8] = b"secret";

    fn forge(header: &str, payload: &serde_json::Value, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(payload.to_string());
        let mut m = mac(secret).unwrap();
        m.update(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    }

    #[test]
    fn round_trip() {
        let t = mint_hs256(&json!({"sub":"u1","exp":200,"iat":90,"rooms":{"a":["sub"]},"info":{"name":"U"}}), S);
        let c = verify_hs256(&t, S, 100, 2).unwrap();
        assert_eq!((c.sub.as_str(), c.exp, c.info.as_deref()), ("u1", Some(200), Some(r#"{"name":"U"}"#)));
    }

    #[test]
    fn refusals() {
        let claims = json!({"sub":"u","exp":200});
        assert_eq!(verify_hs256(&mint_hs256(&claims, b"other"), S, 100, 2), Err(AuthError::BadSignature));
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert_eq!(verify_hs256(&none, S, 100, 2), Err(AuthError::Algorithm("none".into())));
        let hs512 = forge(r#"{"alg":"HS512"}"#, &claims, S);
        assert_eq!(verify_hs256(&hs512, S, 100, 2), Err(AuthError::Algorithm("HS512".into())));
        assert_eq!(verify_hs256(&mint_hs256(&claims, S), S, 203, 2), Err(AuthError::Expired));
        assert!(verify_hs256(&mint_hs256(&claims, S), S, 202, 2).is_ok(), "within the skew");
        let nbf = json!({"sub":"u","nbf":110});
        assert_eq!(verify_hs256(&mint_hs256(&nbf, S), S, 100, 2), Err(AuthError::NotYetValid));
        let iat = json!({"sub":"u","iat":110});
        assert_eq!(verify_hs256(&mint_hs256(&iat, S), S, 100, 2), Err(AuthError::NotYetValid));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(matches!(verify_hs256(bad, S, 100, 2), Err(AuthError::Malformed(_))), "{bad:.20}");
        }
        for claims in [json!({"exp":200}), json!({"sub":""}), json!({"sub":"u","rooms":{"a":["fly"]}}),
                       json!({"sub":"u","info":"str"}), json!({"sub":"u","info":{"x":"y".repeat(1100)}})] {
            assert!(matches!(verify_hs256(&mint_hs256(&claims, S), S, 100, 2), Err(AuthError::Malformed(_))), "{claims}");
        }
        // A tampered payload fails the signature before it is parsed.
        let t = mint_hs256(&claims, S);
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(json!({"sub":"admin","rooms":{"*":["admin"]}}).to_string());
        parts[1] = &evil;
        assert_eq!(verify_hs256(&parts.join("."), S, 100, 2), Err(AuthError::BadSignature));
    }
}
