//! Retry delays: exponential with jitter, and the small random source the
//! state machines draw it from (seeded by the glue, or by a test, so a
//! simulation replays exactly).

/// Exponential backoff with "equal jitter": the delay for attempt `n` is
/// uniform in `[d/2, d]`, where `d = min(cap, base · 2ⁿ)`. Half the delay is
/// kept so a retry never comes at once, half is random so relays that
/// failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Backoff {
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> u64 {
        let full = self.base_ms.saturating_mul(1u64 << attempt.min(32)).min(self.cap_ms);
        let half = full / 2;
        half + rng.below(full - half + 1)
    }
}

/// xorshift64*: small, fast, and plenty for jitter. Not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_within_their_jitter() {
        let b = Backoff { base_ms: 100, cap_ms: 1_000 };
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let d0 = b.delay(0, &mut rng);
            assert!((50..=100).contains(&d0), "{d0}");
            let d3 = b.delay(3, &mut rng);
            assert!((400..=800).contains(&d3), "{d3}");
            let big = b.delay(60, &mut rng);
            assert!((500..=1_000).contains(&big), "{big}");
        }
        let spread: std::collections::BTreeSet<u64> = (0..50).map(|_| b.delay(2, &mut rng)).collect();
        assert!(spread.len() > 10, "jittered, not constant");
    }
}
