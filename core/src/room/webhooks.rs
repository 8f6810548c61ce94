//! The Room's side of webhooks: the roster's member changes into the
//! [`Webhooks`] machine, its actions out through [`RoomAction::Webhook`],
//! its deadline into the Room's one alarm.

use super::{RoomAction, RoomCore};
use crate::webhook::{Outcome, SavedWebhooks, WebhookConfig, WebhookStats, Webhooks};

impl RoomCore {
    /// Turns webhooks on (`HERALD_WEBHOOK_URL` set) with what storage held
    /// for them, at `now_ms`. Call after [`RoomCore::set_presence_config`]:
    /// the machine starts from the roster's members. `fresh_prefix` names
    /// this room's event ids if it never had webhooks.
    pub fn set_webhooks(&mut self, now_ms: u64, config: WebhookConfig, saved: Option<SavedWebhooks>, fresh_prefix: String) {
        self.now = self.now.max(now_ms);
        let members = self.roster.count();
        self.webhooks = Some(Webhooks::new(config, self.room.clone(), saved, fresh_prefix, members, now_ms, self.inc));
        self.schedule_alarm(0);
    }

    /// The answer to a [`crate::webhook::WebhookAction::Send`].
    pub fn webhook_sent(&mut self, now_ms: u64, request: u64, outcome: Outcome) {
        self.now = now_ms;
        if let Some(w) = self.webhooks.as_mut() {
            w.sent(now_ms, request, outcome);
        }
        self.schedule_alarm(0);
    }

    /// `stats.webhooks`: `None` when webhooks are off.
    pub fn webhook_stats(&self) -> Option<WebhookStats> {
        self.webhooks.as_ref().map(Webhooks::stats)
    }

    /// Hands the roster's member changes to the machine (and drops them
    /// when webhooks are off).
    pub(super) fn webhooks_observe(&mut self) {
        let changes: Vec<_> = std::iter::from_fn(|| self.roster.poll_membership()).collect();
        let members = self.roster.count();
        if let Some(w) = self.webhooks.as_mut() {
            w.observe(self.now, changes, members);
        }
    }

    pub(super) fn webhook_deadline(&self) -> Option<u64> {
        self.webhooks.as_ref().and_then(Webhooks::next_deadline)
    }

    /// The machine's next action, if any (part of the drain).
    pub(super) fn poll_webhook(&mut self) -> Option<RoomAction> {
        let action = self.webhooks.as_mut()?.poll(self.now)?;
        Some(RoomAction::Webhook(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retention;
    use crate::link::{PresenceCall, RelayReport};
    use crate::presence::{Delta, PresenceConfig, PresenceReport};
    use crate::region::Region;
    use crate::webhook::{WebhookAction, WebhookSecret};

    fn room() -> RoomCore {
        let mut core = RoomCore::new("r", None, "e".into(), Retention::default(), 7);
        core.set_presence_config(PresenceConfig { events_max: 1, interval_ms: 1000, grace_ms: 500 });
        let config = WebhookConfig { url: "http://h".into(), secret: WebhookSecret::new(vec![7; 32]), vacate_ms: 2_000, retry_ms: 300_000 };
        core.set_webhooks(0, config, None, "p".into());
        core.report(0, RelayReport { connections: 1, ..RelayReport::new(Region::Weur) });
        std::iter::from_fn(|| core.poll_action()).for_each(drop);
        core
    }

    fn sends(core: &mut RoomCore) -> Vec<String> {
        let mut types = Vec::new();
        while let Some(a) = core.poll_action() {
            if let RoomAction::Webhook(WebhookAction::Send(r)) = a {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                for e in v["events"].as_array().into_iter().flatten() {
                    types.push(format!("{}{}", e["type"].as_str().unwrap_or(""), e["user"].as_str().map_or(String::new(), |u| format!(":{u}"))));
                }
                core.webhook_sent(core.now, r.id, Outcome::Status(200));
            }
        }
        types
    }

    fn call(first: u64, deltas: Vec<Delta>) -> PresenceCall {
        let full = (first == 0).then(Vec::new);
        PresenceCall { region: Region::Weur, inc: 1, report: PresenceReport { full, first, deltas } }
    }

    #[test]
    fn presence_drives_member_and_occupancy_events_through_the_alarm() {
        let mut core = room();
        let join = |u: &str| Delta::Join { user: u.into(), info: None };
        core.presence_call(10, call(0, vec![join("ana"), join("bo")]));
        assert_eq!(sends(&mut core), ["room_occupied", "member_added:ana", "member_added:bo"], "per member even past events_max");
        core.presence_call(20, call(2, vec![Delta::Leave { user: "ana".into() }, Delta::Leave { user: "bo".into() }]));
        assert!(sends(&mut core).is_empty(), "in grace");
        core.alarm(520);
        assert_eq!(sends(&mut core), ["member_removed:ana", "member_removed:bo"]);
        assert_eq!(core.webhook_deadline(), Some(2_520), "the debounce starts where the grace ends");
        let alarm = core.alarm_at;
        assert!(alarm.is_some_and(|t| t <= 2_520), "the Room's alarm covers it: {alarm:?}");
        core.alarm(2_520);
        assert_eq!(sends(&mut core), ["room_vacated"]);
        let stats = core.stats(0);
        assert_eq!(stats.webhooks.map(|w| (w.sent, w.queued)), Some((6, 0)));
    }

    #[test]
    fn a_failed_request_is_retried_by_the_alarm() {
        let mut core = room();
        core.presence_call(10, call(0, vec![Delta::Join { user: "ana".into(), info: None }]));
        let mut sent = 0;
        while let Some(a) = core.poll_action() {
            if let RoomAction::Webhook(WebhookAction::Send(r)) = a {
                sent += 1;
                core.webhook_sent(11, r.id, Outcome::Status(500));
            }
        }
        assert_eq!(sent, 1);
        let due = core.webhook_deadline().unwrap_or(0);
        assert!(core.alarm_at.is_some_and(|t| t <= due), "{:?} vs {due}", core.alarm_at);
        core.alarm(due);
        assert_eq!(sends(&mut core), ["room_occupied", "member_added:ana"]);
        assert_eq!(core.stats(0).webhooks.map(|w| w.failed_attempts), Some(1));
    }
}
