//! Strikes against a connection that keeps sending bad frames.
//!
//! One bad frame gets an `err` and nothing else; only a sustained stream of
//! them closes the socket, so a buggy client sees its errors before it is cut
//! off and a hostile one cannot make the relay parse garbage forever.

use crate::close_code::CloseCode;
use crate::error::ErrorCode;

/// Bad frames tolerated within one window before the socket is closed.
pub const MAX_STRIKES: u32 = 10;
/// The window, in milliseconds.
pub const STRIKE_WINDOW_MS: u64 = 10_000;

/// A connection's recent bad frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strikes {
    window_start_ms: u64,
    count: u32,
}

impl Strikes {
    /// Records one bad frame at `now_ms`. Returns the close code when this
    /// one goes over the limit: 1009 when it was oversized, else 1008.
    pub fn strike(&mut self, now_ms: u64, code: ErrorCode) -> Option<CloseCode> {
        if now_ms.saturating_sub(self.window_start_ms) >= STRIKE_WINDOW_MS || self.count == 0 {
            self.window_start_ms = now_ms;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > MAX_STRIKES {
            Some(if code == ErrorCode::TooLarge {
                CloseCode::MessageTooBig
            } else {
                CloseCode::PolicyViolation
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_only_after_sustained_abuse() {
        let mut s = Strikes::default();
        for i in 0..MAX_STRIKES {
            assert_eq!(s.strike(1_000 + u64::from(i), ErrorCode::BadFrame), None);
        }
        assert_eq!(s.strike(1_100, ErrorCode::BadFrame), Some(CloseCode::PolicyViolation));
        assert_eq!(s.strike(1_101, ErrorCode::TooLarge), Some(CloseCode::MessageTooBig));
    }

    #[test]
    fn window_resets() {
        let mut s = Strikes::default();
        for i in 0..MAX_STRIKES {
            assert_eq!(s.strike(u64::from(i), ErrorCode::BadFrame), None);
        }
        assert_eq!(s.strike(STRIKE_WINDOW_MS + 5, ErrorCode::BadFrame), None);
    }
}
