//! Per-connection publish rate: a token bucket, refilled continuously.

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

#[cfg(test)]
mod tests {
    use super::*;

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
