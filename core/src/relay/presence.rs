//! The relay's side of presence: its members ([`LocalPresence`]), the
//! presence calls that carry their deltas to the Room one at a time, and
//! presence frames from the Room out to presence subscribers only.
//!
//! After construction the relay knows nothing until the glue hands it the
//! members of its open sockets ([`RelayCore::presence_rebuilt`]); the first
//! call then carries them whole. Calls are single-flight: changes made
//! while one is out ride in the next.

use super::{Frame, RelayCore};
use crate::link::{PresenceAck, PresenceCall};
use crate::presence::LocalPresence;

/// Whether a presence call is out, and whether another is wanted after it.
#[derive(Debug, Default)]
pub(super) struct PresenceCalls {
    pub local: Option<LocalPresence>,
    in_flight: bool,
    /// A failed call: the next one goes after a backoff, whatever changes.
    failures: u32,
}

impl<F: Frame> RelayCore<F> {
    /// The members of the sockets this object woke with, as (user, info).
    /// Until this is called, presence changes are not tracked.
    pub fn presence_rebuilt(&mut self, connections: Vec<(String, Option<String>)>) {
        self.presence.local = Some(LocalPresence::rebuilt(connections));
    }

    /// Whether [`RelayCore::presence_rebuilt`] has run since construction.
    pub fn presence_ready(&self) -> bool {
        self.presence.local.is_some()
    }

    /// A connection of `user` (with the token's `info`) is open.
    pub fn member_connected(&mut self, user: &str, info: Option<&str>) {
        if let Some(local) = self.presence.local.as_mut() {
            local.connected(user, info);
        }
    }

    /// A connection of `user` closed, cleanly or not.
    pub fn member_left(&mut self, user: &str) {
        if let Some(local) = self.presence.local.as_mut() {
            local.disconnected(user);
        }
    }

    /// The presence call to make now, if any: none while one is out (its
    /// answer brings the next), or when the Room is owed nothing.
    pub fn presence_call(&mut self) -> Option<PresenceCall> {
        if self.presence.in_flight {
            return None;
        }
        let local = self.presence.local.as_mut()?;
        if !local.owes() {
            return None;
        }
        self.presence.in_flight = true;
        Some(PresenceCall { region: self.region, inc: self.incarnation, report: local.report() })
    }

    /// The answer to the call in flight (`None`: it failed). Returns how
    /// many calls in a row have made no progress (failed, or taken nothing),
    /// for the glue's backoff before it asks for the next call.
    pub fn presence_answered(&mut self, ack: Option<PresenceAck>) -> u32 {
        self.presence.in_flight = false;
        let progress = match (ack, self.presence.local.as_mut()) {
            (Some(ack), Some(local)) => {
                if ack.need_full {
                    local.owe_full();
                }
                local.acked(ack.full, ack.next) || ack.need_full
            }
            _ => false,
        };
        self.presence.failures = if progress { 0 } else { self.presence.failures.saturating_add(1) };
        self.presence.failures
    }
}

#[cfg(test)]
mod tests {
    use super::super::RelayCore;
    use crate::link::PresenceAck;
    use crate::presence::Delta;
    use crate::region::Region;

    #[test]
    fn calls_are_single_flight_and_carry_what_changed_meanwhile() {
        let mut r: RelayCore<String> = RelayCore::new("room", Region::Weur, 1, "n".into(), 5);
        r.member_connected("early", None);
        assert_eq!(r.presence_call(), None, "not tracking before the rebuild");
        r.presence_rebuilt(vec![("ana".into(), None)]);
        let first = r.presence_call().expect("the whole membership is owed");
        assert_eq!((first.region, first.inc, first.report.full.as_ref().map(Vec::len)), (Region::Weur, 5, Some(1)));
        r.member_connected("bo", Some("{}"));
        assert_eq!(r.presence_call(), None, "one call at a time");
        assert_eq!(r.presence_answered(Some(PresenceAck { full: true, next: first.report.first, need_full: false })), 0);
        let next = r.presence_call().expect("bo's join");
        assert_eq!(next.report.deltas, vec![Delta::Join { user: "bo".into(), info: Some("{}".into()) }]);
        assert_eq!(r.presence_answered(None), 1, "a failure");
        let again = r.presence_call().expect("sent again");
        assert_eq!(again.report, next.report);
        assert_eq!(r.presence_answered(Some(PresenceAck { full: false, next: again.report.first, need_full: false })), 2, "no progress counts as a failure");
        let again = r.presence_call().expect("sent again");
        r.presence_answered(Some(PresenceAck { full: false, next: again.report.first + 1, need_full: false }));
        assert_eq!(r.presence_call(), None, "nothing owed");
        r.member_left("bo");
        let leave = r.presence_call().expect("bo's leave");
        assert_eq!(leave.report.deltas, vec![Delta::Leave { user: "bo".into() }]);
        // The Room lost this incarnation: it asks for the members whole.
        assert_eq!(r.presence_answered(Some(PresenceAck { full: false, next: leave.report.first, need_full: true })), 0);
        let full = r.presence_call().expect("the whole membership");
        assert_eq!(full.report.full, Some(vec![("ana".to_string(), None)]));
    }
}
