//! Token keys from `HERALD_SECRET`, so keys can rotate with no window in
//! which valid tokens fail.
//!
//! The value is either one secret, or `kid=secret` pairs separated by
//! commas (`2026-11=…,2026-12=…`). A token whose header names a `kid` is
//! checked with that key only; a token without one is tried against each
//! key. To rotate: add the new key, switch the token issuer to it (with its
//! `kid`), and remove the old key once its tokens have expired. Every secret
//! must be at least [`MIN_SECRET_BYTES`] bytes: a short HMAC key is one an
//! attacker can guess, so a short one is refused as a configuration error
//! rather than used.

/// The shortest secret accepted (256 bits, the size of HS256's hash).
pub const MIN_SECRET_BYTES: usize = 32;
/// Most keys at once: enough for any rotation, and a bound on the work a
/// token without a `kid` can cause.
pub const MAX_KEYS: usize = 8;

/// The keys tokens are checked with.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys(Vec<(Option<String>, Vec<u8>)>);

impl std::fmt::Debug for Keys {
    /// Key ids only: a secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(kid, _)| kid)).finish()
    }
}

fn is_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Keys {
    /// Reads `HERALD_SECRET`. `Ok(None)` when it is empty (no tokens are
    /// accepted); `Err` names what is wrong, never a secret.
    pub fn parse(value: &str) -> Result<Option<Keys>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let pairs: Option<Vec<(String, Vec<u8>)>> = value
            .split(',')
            .map(|item| {
                let (kid, secret) = item.trim().split_once('=')?;
                let secret = secret.trim();
                (is_kid(kid.trim()) && secret.len() >= MIN_SECRET_BYTES)
                    .then(|| (kid.trim().to_owned(), secret.as_bytes().to_vec()))
            })
            .collect();
        let keys: Vec<(Option<String>, Vec<u8>)> = match pairs {
            Some(pairs) if !pairs.is_empty() => pairs.into_iter().map(|(k, s)| (Some(k), s)).collect(),
            _ => {
                if value.contains(',') && value.contains('=') {
                    return Err(format!(
                        "HERALD_SECRET looks like kid=secret pairs, but each needs a kid of letters, digits, - _ . \
                         and a secret of at least {MIN_SECRET_BYTES} bytes"
                    ));
                }
                vec![(None, value.as_bytes().to_vec())]
            }
        };
        if let Some((kid, secret)) = keys.iter().find(|(_, s)| s.len() < MIN_SECRET_BYTES) {
            let which = kid.as_deref().map_or(String::new(), |k| format!(" (kid {k})"));
            return Err(format!(
                "HERALD_SECRET{which} is {} bytes; at least {MIN_SECRET_BYTES} are required (e.g. 32 random bytes, hex-encoded)",
                secret.len()
            ));
        }
        if keys.len() > MAX_KEYS {
            return Err(format!("HERALD_SECRET holds {} keys; at most {MAX_KEYS}", keys.len()));
        }
        let mut kids: Vec<&str> = keys.iter().filter_map(|(k, _)| k.as_deref()).collect();
        kids.sort_unstable();
        if kids.windows(2).any(|w| w[0] == w[1]) {
            return Err("HERALD_SECRET names a kid twice".to_owned());
        }
        Ok(Some(Keys(keys)))
    }

    /// The secrets a token with header `kid` may be signed with: the named
    /// key when there are named keys and the token names one, else every
    /// key. Empty for an unknown `kid`.
    pub fn candidates(&self, kid: Option<&str>) -> Vec<&[u8]> {
        let named = self.0.iter().any(|(k, _)| k.is_some());
        self.0
            .iter()
            .filter(|(k, _)| !named || kid.is_none() || k.as_deref() == kid)
            .map(|(_, s)| s.as_slice())
            .collect()
    }

    /// The key to sign with: `kid`'s, or the first one.
    pub fn signing(&self, kid: Option<&str>) -> Option<(Option<&str>, &[u8])> {
        let (k, s) = match kid {
            Some(kid) => self.0.iter().find(|(k, _)| k.as_deref() == Some(kid))?,
            None => self.0.first()?,
        };
        Some((k.as_deref(), s.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-of-at-least-thirty-two-bytes-0001";
    const B: &str = "b-secret-of-at-least-thirty-two-bytes-0002";

    #[test]
    fn one_secret_or_named_pairs() {
        assert_eq!(Keys::parse("  ").unwrap(), None);
        let one = Keys::parse(A).unwrap().unwrap();
        assert_eq!(one.candidates(None), vec![A.as_bytes()]);
        assert_eq!(one.candidates(Some("any")), vec![A.as_bytes()], "one unnamed secret ignores kid");
        let two = Keys::parse(&format!("old={A}, new={B}")).unwrap().unwrap();
        assert_eq!(two.candidates(Some("new")), vec![B.as_bytes()]);
        assert_eq!(two.candidates(None), vec![A.as_bytes(), B.as_bytes()], "no kid: try each");
        assert!(two.candidates(Some("gone")).is_empty());
        assert_eq!(two.signing(None), Some((Some("old"), A.as_bytes())));
        assert_eq!(two.signing(Some("new")), Some((Some("new"), B.as_bytes())));
        let padded = format!("{A}==");
        assert_eq!(Keys::parse(&padded).unwrap().unwrap().candidates(None), vec![padded.as_bytes()], "base64 padding is not a pair");
    }

    #[test]
    fn short_or_bad_secrets_are_refused_without_showing_them() {
        let e = Keys::parse("s3cret").unwrap_err();
        assert!(e.contains("6 bytes") && e.contains("32") && !e.contains("s3cret"), "{e}");
        let e = Keys::parse(&format!("old={A},new=short")).unwrap_err();
        assert!(e.contains("kid=secret") && !e.contains(A), "{e}");
        assert!(Keys::parse(&format!("k={A},k={B}")).unwrap_err().contains("twice"));
        assert!(!format!("{:?}", Keys::parse(A).unwrap().unwrap()).contains(A), "Debug shows no secret");
    }
}
