//! The internal link between a Relay and its Room.
//!
//! Both directions are Durable Object stub `fetch` calls, never a held
//! WebSocket, so neither side is kept awake by the link (see
//! `docs/ARCHITECTURE.md`). These are the bodies and headers of those calls.

use crate::region::Region;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Header carrying the room name on Worker → DO calls.
pub const HDR_ROOM: &str = "x-herald-room";
/// Header carrying the verified [`crate::auth::Grant`] (JSON) from the
/// Worker to the Relay on a client connect.
pub const HDR_GRANT: &str = "x-herald-grant";
/// Header carrying the verified user on an HTTP publish to the Room.
pub const HDR_USER: &str = "x-herald-user";
/// Header carrying the region on Worker → Relay and Room → Relay calls.
pub const HDR_REGION: &str = "x-herald-region";
/// Header carrying the room's epoch on a delivery.
pub const HDR_EPOCH: &str = "x-herald-epoch";
/// First stored seq in a delivery (absent when it holds only ephemeral messages).
pub const HDR_FIRST: &str = "x-herald-first";
/// Last stored seq in a delivery.
pub const HDR_LAST: &str = "x-herald-last";
/// The Room's stamp (ms) on the first stored message in a delivery.
pub const HDR_FIRST_TS: &str = "x-herald-first-ts";
/// On a range read: `1` when the range is complete (the client can be
/// told `recovered: true`), `0` when the epoch differs or retention lost it.
pub const HDR_RECOVERED: &str = "x-herald-recovered";

/// Internal paths. The `/_herald/` prefix never collides with public routes
/// because DO stubs are unreachable from the internet anyway; it makes logs
/// readable.
pub mod path {
    pub const CONNECT: &str = "/_herald/connect";
    pub const EVENTS: &str = "/_herald/events";
    pub const REPORT: &str = "/_herald/report";
    pub const PUBLISH: &str = "/_herald/publish";
    pub const HTTP_PUBLISH: &str = "/_herald/http-publish";
    pub const DELIVER: &str = "/_herald/deliver";
    pub const RANGE: &str = "/_herald/range";
    pub const STATS: &str = "/_herald/stats";
    pub const HISTORY: &str = "/_herald/history";
    pub const ERASE: &str = "/_herald/erase";
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Region::parse(&s).map_err(|r| serde::de::Error::custom(r.message))
    }
}

/// What a Relay tells its Room about itself. It rides on every Relay → Room
/// call and every delivery reply, so the Room's stats are "as last reported"
/// without extra calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReport {
    pub region: Region,
    /// Open client sockets on the relay.
    pub connections: u32,
    /// Frames the relay has sent to clients since it was constructed.
    pub relay_sends: u64,
    /// How many times the relay object was constructed in its isolate.
    pub wakeups: u64,
    /// Resumes served from the relay's own recent window.
    #[serde(default)]
    pub recovered_from_relay: u64,
    /// Resumes that needed a read from the Room's storage.
    #[serde(default)]
    pub recovered_from_room: u64,
    /// Resumes refused (`recovered: false`): stale epoch or past retention.
    #[serde(default)]
    pub not_recovered: u64,
}

impl RelayReport {
    /// A report with every counter at zero.
    pub fn new(region: Region) -> Self {
        RelayReport {
            region,
            connections: 0,
            relay_sends: 0,
            wakeups: 0,
            recovered_from_relay: 0,
            recovered_from_room: 0,
            not_recovered: 0,
        }
    }
}

/// One publish forwarded by a Relay (or made over HTTP).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkPub {
    #[serde(default)]
    pub from: Option<String>,
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eph: bool,
}

impl PartialEq for LinkPub {
    fn eq(&self, o: &Self) -> bool {
        (&self.from, self.data.get(), &self.mid, self.eph) == (&o.from, o.data.get(), &o.mid, o.eph)
    }
}

/// Relay → Room: publishes that arrived together, in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishBatch {
    pub report: RelayReport,
    pub pubs: Vec<LinkPub>,
}

/// The Room's verdict on one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubOutcome {
    /// `None` for an ephemeral message.
    pub seq: Option<u64>,
    pub ts: u64,
}

/// Room → Relay: the outcomes, in the order of the batch, and the relay's
/// next delivery when one was due, riding in the answer instead of a call of
/// its own (see [`crate::room::RoomCore::reply_delivery`]).
///
/// On the wire the answer is this JSON on one line; with a delivery, a
/// newline and the client frame follow, unescaped, so the relay can hand it
/// to its sockets without decoding it (serde_json never writes a raw newline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReply {
    pub epoch: String,
    pub outcomes: Vec<PubOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<ReplyDelivery>,
}

/// A delivery inside a [`PublishReply`]: what the `deliver` call carries in
/// its headers (its frame follows the JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyDelivery {
    pub epoch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
    #[serde(default)]
    pub first_ts: u64,
}

/// Room → Relay: the answer to a report, which is also how a relay joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub epoch: String,
    /// The room's last assigned seq.
    pub seq: u64,
    /// The last seq the Room knows this relay received: everything after it
    /// is in flight or queued for the relay. A relay that woke with sockets
    /// but no memory resumes from here, so its clients miss nothing.
    pub delivered: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip_and_bad_region() {
        let r = RelayReport { connections: 2, relay_sends: 9, wakeups: 1, ..RelayReport::new(Region::Apac) };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"apac\""));
        assert_eq!(serde_json::from_str::<RelayReport>(&s).unwrap(), r);
        assert!(serde_json::from_str::<RelayReport>(&s.replace("apac", "moon")).is_err());
    }
}
