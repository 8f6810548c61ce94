//! Fault injection for tests on the real runtime (`HERALD_FAULT_*`).
//!
//! The knobs are honoured only when `HERALD_TRUST_REGION_PARAM=1` (local
//! dev and tests; production must not set it), and every fault that fires
//! is counted, so a test can tell that the fault it asked for took effect.
//! They live in the core because whether a delivery is dropped is a
//! decision: the glue only asks.

use serde::Serialize;

/// Every k-th event of each kind fails; 0 turns a kind off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultConfig {
    /// `HERALD_FAULT_DROP_FORWARD_EVERY`: the Room drops every k-th delivery
    /// (calls and deliveries in publish answers alike) as if it had arrived.
    pub drop_forward_every: u64,
    /// `HERALD_FAULT_FAIL_PUBLISH_ANSWER_EVERY`: the Room stores every k-th
    /// publish batch from a relay, then answers it with an error, as if the
    /// answer had been lost.
    pub fail_publish_answer_every: u64,
    /// `HERALD_FAULT_FAIL_RANGE_EVERY`: every k-th range read the Room
    /// serves (gap repair or resume) answers an error.
    pub fail_range_every: u64,
}

/// Faults that fired, in the Room's `stats` as `faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FaultStats {
    pub dropped_deliveries: u64,
    pub failed_publish_answers: u64,
    pub failed_ranges: u64,
}

/// The knobs and their counters.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    config: FaultConfig,
    seen: [u64; 3],
    pub fired: FaultStats,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults { config, ..Faults::default() }
    }

    fn every(&mut self, kind: usize, k: u64) -> bool {
        if k == 0 {
            return false;
        }
        self.seen[kind] += 1;
        self.seen[kind].is_multiple_of(k)
    }

    /// Whether the delivery about to leave is dropped.
    pub fn drop_delivery(&mut self) -> bool {
        let fire = self.every(0, self.config.drop_forward_every);
        self.fired.dropped_deliveries += u64::from(fire);
        fire
    }

    /// Whether the answer to the publish batch just stored fails.
    pub fn fail_publish_answer(&mut self) -> bool {
        let fire = self.every(1, self.config.fail_publish_answer_every);
        self.fired.failed_publish_answers += u64::from(fire);
        fire
    }

    /// Whether the range read being served fails.
    pub fn fail_range(&mut self) -> bool {
        let fire = self.every(2, self.config.fail_range_every);
        self.fired.failed_ranges += u64::from(fire);
        fire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kth_fires_and_is_counted() {
        let mut f = Faults::new(FaultConfig { drop_forward_every: 3, ..FaultConfig::default() });
        let fired: Vec<bool> = (0..6).map(|_| f.drop_delivery()).collect();
        assert_eq!(fired, [false, false, true, false, false, true]);
        assert_eq!(f.fired.dropped_deliveries, 2);
        assert!(!f.fail_range() && !f.fail_publish_answer(), "off kinds never fire");
        assert_eq!(f.fired.failed_ranges, 0);
    }
}
