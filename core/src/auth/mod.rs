//! Who may do what: HS256 tokens, room patterns and capabilities.
//!
//! The Worker verifies a token before any Durable Object is touched, so a
//! bad token costs the origin nothing; the relay then checks the resolved
//! capabilities on every frame.

mod capability;
pub mod demo;
mod keys;
mod token;

pub use capability::{Capability, CapabilitySet, RoomPatterns};
pub use keys::{Keys, MIN_SECRET_BYTES};
pub use token::{mint_hs256, mint_hs256_kid, verify_hs256, verify_with_keys, AuthError, Claims, MAX_INFO_BYTES, MAX_TOKEN_BYTES};

use crate::error::{ErrorCode, Rejection};

/// What a connection or request is allowed in one room. The Worker hands
/// it to the relay, which keeps it in the socket's attachment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The user (`sub`), or `None` for an anonymous reader of a public room.
    pub user: Option<String>,
    pub caps: CapabilitySet,
    /// When the token stops being valid, in seconds since the Unix epoch.
    pub expires_s: Option<u64>,
    /// The token's `info`, carried into presence.
    pub info: Option<String>,
}

impl Grant {
    /// Refuses `cap` with the documented error.
    pub fn require(&self, cap: Capability) -> Result<(), Rejection> {
        if self.caps.has(cap) {
            return Ok(());
        }
        Err(match self.user {
            None => Rejection::new(ErrorCode::Unauthorized, format!("a token with {cap} is required")),
            Some(_) => Rejection::new(ErrorCode::Forbidden, format!("the token does not grant {cap} on this room")),
        })
    }

    /// Whether the grant has run out at `now_s` (with the skew allowance).
    pub fn expired(&self, now_s: u64, skew_s: u64) -> bool {
        self.expires_s.is_some_and(|exp| now_s > exp.saturating_add(skew_s))
    }

    /// When, in ms since the Unix epoch, a socket holding this grant must be
    /// closed: the first second past `exp` plus the skew. `None` for no
    /// expiry, or one past the latest time a JavaScript `Date` (and so an
    /// alarm) can hold, which is "never" for any socket alive today.
    pub fn expiry_deadline_ms(&self, skew_s: u64) -> Option<u64> {
        /// `Date`'s range ends at 8.64e15 ms (year 275760).
        const LATEST_DATE_MS: u64 = 8_640_000_000_000_000;
        let exp = self.expires_s?;
        let ms = exp.saturating_add(skew_s).saturating_add(1).saturating_mul(1000);
        (ms <= LATEST_DATE_MS).then_some(ms)
    }
}

/// Resolves the grant for `room`: a token if one was presented (a bad one is
/// refused even on a public room, so a client learns its token is broken),
/// else anonymous `sub` on public rooms only.
pub fn authorize(
    token: Option<&str>,
    room: &str,
    keys: Option<&Keys>,
    public_rooms: &RoomPatterns,
    now_s: u64,
    skew_s: u64,
) -> Result<Grant, Rejection> {
    match token {
        Some(token) => Ok(verify_token(Some(token), keys, now_s, skew_s)?.grant(room)),
        None if public_rooms.matches(room) => Ok(Grant {
            user: None,
            caps: CapabilitySet::only(Capability::Sub),
            expires_s: None,
            info: None,
        }),
        None => verify_token(None, keys, now_s, skew_s).map(|claims| claims.grant(room)),
    }
}

/// Verifies a presented token (`None`: none was, which is refused) and
/// returns its claims, for a request that names its rooms only in its
/// body (batch publish): verified once, then [`Claims::grant`] per room.
pub fn verify_token(token: Option<&str>, keys: Option<&Keys>, now_s: u64, skew_s: u64) -> Result<Claims, Rejection> {
    let token = token.ok_or_else(|| Rejection::new(ErrorCode::Unauthorized, "a token is required: ?token= or Authorization: Bearer"))?;
    let keys = keys
        .ok_or_else(|| Rejection::new(ErrorCode::Unauthorized, "this server accepts no tokens (HERALD_SECRET is not set)"))?;
    verify_with_keys(token, keys, now_s, skew_s).map_err(AuthError::rejection)
}

impl Claims {
    /// What these (verified) claims allow in `room`: the capabilities of
    /// every pattern matching it, `{sub}` patterns expanded with `sub`.
    pub fn grant(&self, room: &str) -> Grant {
        Grant {
            caps: self.rooms.caps_for(room, &self.sub),
            user: Some(self.sub.clone()),
            expires_s: self.exp,
            info: self.info.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

    fn keys() -> Keys {
        Keys::parse(std::str::from_utf8(SECRET).unwrap()).unwrap().unwrap()
    }

    fn token(rooms: serde_json::Value, exp: u64) -> String {
        mint_hs256(&json!({"sub":"ana","exp":exp,"rooms":rooms}), SECRET)
    }

    #[test]
    fn rotated_keys_verify_by_kid() {
        let (old, new) = ("old-secret-of-at-least-thirty-two-bytes", "new-secret-of-at-least-thirty-two-bytes");
        let keys = Keys::parse(&format!("old={old},new={new}")).unwrap().unwrap();
        let claims = json!({"sub":"ana","rooms":{"r":["sub"]}});
        let public = RoomPatterns::default();
        for t in [
            mint_hs256_kid(&claims, Some("new"), new.as_bytes()),
            mint_hs256_kid(&claims, Some("old"), old.as_bytes()),
            mint_hs256(&claims, old.as_bytes()),
        ] {
            assert!(authorize(Some(&t), "r", Some(&keys), &public, 0, 2).is_ok(), "{t}");
        }
        let unknown = mint_hs256_kid(&claims, Some("gone"), old.as_bytes());
        let e = authorize(Some(&unknown), "r", Some(&keys), &public, 0, 2).unwrap_err();
        assert!(e.message.contains("gone"), "{}", e.message);
        let crossed = mint_hs256_kid(&claims, Some("new"), old.as_bytes());
        assert!(authorize(Some(&crossed), "r", Some(&keys), &public, 0, 2).is_err(), "a kid selects its key only");
    }

    #[test]
    fn far_future_expiry_saturates() {
        let grant = |exp| Grant { user: None, caps: CapabilitySet::default(), expires_s: Some(exp), info: None };
        for exp in [u64::MAX, i64::MAX as u64, u64::MAX - 1] {
            assert!(!grant(exp).expired(1_800_000_000, 2), "{exp} is the far future");
            assert_eq!(grant(exp).expiry_deadline_ms(2), None, "{exp}: no alarm needed");
        }
        assert_eq!(grant(1_000).expiry_deadline_ms(2), Some(1_003_000));
        assert!(grant(1_000).expired(1_003, 2) && !grant(1_000).expired(1_002, 2));
    }

    #[test]
    fn grants_by_pattern_and_public_rooms() {
        let public = RoomPatterns::parse("news:*, lobby");
        let t = token(json!({"chat:*":["sub","pub"],"chat:vip":["history"]}), 1000);
        let g = authorize(Some(&t), "chat:vip", Some(&keys()), &public, 100, 2).unwrap();
        assert_eq!(g.user.as_deref(), Some("ana"));
        assert!(g.require(Capability::Pub).is_ok() && g.require(Capability::History).is_ok());
        assert_eq!(g.require(Capability::Admin).unwrap_err().code, ErrorCode::Forbidden);
        let other = authorize(Some(&t), "other", Some(&keys()), &public, 100, 2).unwrap();
        assert_eq!(other.require(Capability::Sub).unwrap_err().code, ErrorCode::Forbidden);

        let anon = authorize(None, "news:eu", None, &public, 100, 2).unwrap();
        assert!(anon.require(Capability::Sub).is_ok());
        assert_eq!(anon.require(Capability::Pub).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(authorize(None, "chat:x", None, &public, 100, 2).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(
            authorize(Some("garbage"), "lobby", Some(&keys()), &public, 100, 2).unwrap_err().code,
            ErrorCode::Unauthorized,
            "a broken token is refused even on a public room"
        );
        assert_eq!(authorize(Some(&t), "chat:a", None, &public, 100, 2).unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn sub_patterns_through_authorize() {
        let public = RoomPatterns::parse("user:{sub}");
        let t = |sub: &str| mint_hs256(&json!({"sub":sub,"rooms":{"user:{sub}":["sub","history"]}}), SECRET);
        let g = authorize(Some(&t("alice")), "user:alice", Some(&keys()), &public, 0, 2).unwrap();
        assert!(g.require(Capability::Sub).is_ok() && g.require(Capability::History).is_ok());
        assert_eq!(g.require(Capability::Pub).unwrap_err().code, ErrorCode::Forbidden);
        let bob = authorize(Some(&t("alice")), "user:bob", Some(&keys()), &public, 0, 2).unwrap();
        assert_eq!(bob.require(Capability::Sub).unwrap_err().code, ErrorCode::Forbidden);
        let slash = authorize(Some(&t("a/b")), "user:a", Some(&keys()), &public, 0, 2).unwrap();
        assert_eq!(slash.caps, CapabilitySet::default());
        assert_eq!(
            authorize(None, "user:alice", Some(&keys()), &public, 0, 2).unwrap_err().code,
            ErrorCode::Unauthorized,
            "public patterns hold no user to expand"
        );
    }

    #[test]
    fn verify_once_then_grant_per_room() {
        assert_eq!(verify_token(None, Some(&keys()), 0, 2).unwrap_err().code, ErrorCode::Unauthorized);
        let t = token(json!({"a":["pub"],"b":["pub","admin"]}), 1000);
        assert_eq!(verify_token(Some(&t), None, 0, 2).unwrap_err().code, ErrorCode::Unauthorized);
        let claims = verify_token(Some(&t), Some(&keys()), 100, 2).unwrap();
        assert!(claims.grant("a").require(Capability::Pub).is_ok());
        assert!(claims.grant("a").require(Capability::Admin).is_err() && claims.grant("b").require(Capability::Admin).is_ok());
        assert_eq!(claims.grant("c").require(Capability::Pub).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn expiry() {
        let g = Grant { user: Some("u".into()), caps: CapabilitySet::default(), expires_s: Some(10), info: None };
        assert!(!g.expired(12, 2));
        assert!(g.expired(13, 2));
    }
}
