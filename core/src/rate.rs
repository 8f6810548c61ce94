//! Publish rates: a token bucket, refilled continuously, per connection at
//! the relay and per user at the Room (HTTP publishes).

use std::collections::HashMap;

/// `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(burst: u32, now_ms: u64) -> Self {
        TokenBucket { tokens: f64::from(burst), last_ms: now_ms }
    }

    /// Takes one token at `now_ms`; false when the sender is over its rate.
    pub fn take(&mut self, now_ms: u64, rate_per_s: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * f64::from(rate_per_s)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl TokenBucket {
    /// How long until the bucket holds a token again at `rate_per_s`.
    pub fn retry_after_ms(&self, rate_per_s: u32) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        (missing * 1000.0 / f64::from(rate_per_s.max(1))).ceil() as u64
    }
}

/// Buckets by key (a user), bounded: past [`MAX_BUCKETS`] the full ones
/// (idle users) are dropped first, and if every one is still in use the
/// table starts over, so a flood of distinct users costs memory once and
/// never grows it.
#[derive(Debug, Default)]
pub struct Buckets {
    map: HashMap<String, TokenBucket>,
}

/// Most buckets one table holds.
pub const MAX_BUCKETS: usize = 10_000;

/// The key connections and rate limits are counted under, per user: the token's `sub`, or
/// for an anonymous reader its IP address (`None` when the runtime gives
/// none, as locally: all anonymous readers then share one key).
pub fn user_key(sub: Option<&str>, ip: Option<&str>) -> String {
    match sub {
        Some(sub) => format!("u:{sub}"),
        None => format!("ip:{}", ip.unwrap_or("?")),
    }
}

/// The bucket key for a request over HTTP: the token's `sub`, or for an
/// anonymous request its IP (`cf-connecting-ip`), as
/// [`user_key`] counts connections. Hashed (SHA-256,
/// base64url), so it fits a header whatever script the `sub` is in, and a
/// table of [`MAX_BUCKETS`] keys costs the same however long the `sub`s are.
pub fn http_rate_key(sub: Option<&str>, ip: Option<&str>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user_key(sub, ip).as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

impl Buckets {
    /// Takes one token for `key` at `now_ms`; `Err(ms)` says when to retry.
    pub fn take(&mut self, key: &str, now_ms: u64, rate_per_s: u32, burst: u32) -> Result<(), u64> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_BUCKETS {
            self.map.retain(|_, b| {
                let mut probe = *b;
                // A bucket that would be full again is an idle user's.
                probe.tokens = (probe.tokens + now_ms.saturating_sub(probe.last_ms) as f64 / 1000.0 * f64::from(rate_per_s)).min(f64::from(burst));
                probe.tokens < f64::from(burst)
            });
            if self.map.len() >= MAX_BUCKETS {
                self.map.clear();
            }
        }
        let bucket = self.map.entry(key.to_owned()).or_insert_with(|| TokenBucket::full(burst, now_ms));
        if bucket.take(now_ms, rate_per_s, burst) {
            Ok(())
        } else {
            Err(bucket.retry_after_ms(rate_per_s))
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_with_retry_after_and_bounded() {
        let mut t = Buckets::default();
        assert!(t.take("a", 0, 2, 2).is_ok() && t.take("a", 0, 2, 2).is_ok());
        assert_eq!(t.take("a", 0, 2, 2), Err(500), "one token every 500 ms at 2/s");
        assert!(t.take("b", 0, 2, 2).is_ok(), "another user has its own bucket");
        assert!(t.take("a", 500, 2, 2).is_ok());
        for i in 0..MAX_BUCKETS + 5 {
            let _ = t.take(&format!("u{i}"), 1_000_000, 2, 2);
        }
        assert!(t.len() <= MAX_BUCKETS, "{}", t.len());
    }

    #[test]
    fn http_rate_keys_are_short_header_safe_and_distinct() {
        let long = "東".repeat(3000);
        let keys = [http_rate_key(Some("ana"), None), http_rate_key(None, Some("ana")), http_rate_key(Some(&long), None), http_rate_key(None, None)];
        for k in &keys {
            assert!(k.len() == 43 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{k}");
        }
        assert_ne!(keys[0], keys[1], "a user and an IP that happen to read alike");
        assert_eq!(http_rate_key(Some("ana"), Some("10.0.0.1")), keys[0], "a user is one key from any address");
    }

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::full(40, 0);
        assert_eq!((0..50).filter(|_| b.take(0, 20, 40)).count(), 40, "the burst");
        assert!(!b.take(10, 20, 40));
        assert!(b.take(50, 20, 40), "one token per 50 ms at 20/s");
        assert!(!b.take(60, 20, 40));
        assert_eq!((0..100).filter(|_| b.take(100_000, 20, 40)).count(), 40, "never more than the burst");
        assert!(!b.take(50, 20, 40), "a clock going back refills nothing");
    }
}
