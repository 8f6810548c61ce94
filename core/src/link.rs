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
/// Header carrying the verified [`crate::auth::Grant`] from the Worker to
/// the Relay on a client connect, as base64url JSON ([`encode_grant`]):
/// headers carry Latin-1 only, and a `sub` or `info` may hold any text.
pub const HDR_GRANT: &str = "x-herald-grant";
/// Header carrying the verified user on an HTTP publish to the Room.
pub const HDR_USER: &str = "x-herald-user";
/// Present on an HTTP publish whose token holds `admin` on the room: a
/// backend, not limited by the per-user publish rate.
pub const HDR_RATE_EXEMPT: &str = "x-herald-rate-exempt";
/// The key an HTTP history read is rate limited under at the Room
/// ([`crate::rate::http_rate_key`]: the user, or the IP of an anonymous
/// reader). A read without it (a socket's, from its relay, already limited
/// per connection there) carries [`HDR_RATE_EXEMPT`] instead.
pub const HDR_RATE_KEY: &str = "x-herald-rate-key";
/// Header carrying the region on Worker → Relay and Room → Relay calls.
pub const HDR_REGION: &str = "x-herald-region";
/// A delivery's [`DeliveryHead`], as JSON.
pub const HDR_DELIVERY: &str = "x-herald-delivery";
/// A range read's [`RangeHead`], as JSON.
pub const HDR_RANGE: &str = "x-herald-range";

/// Internal paths. The `/_herald/` prefix never collides with public routes
/// because DO stubs are unreachable from the internet anyway; it makes logs
/// readable.
pub mod path {
    pub const CONNECT: &str = "/_herald/connect";
    pub const EVENTS: &str = "/_herald/events";
    pub const REPORT: &str = "/_herald/report";
    pub const HTTP_PUBLISH: &str = "/_herald/http-publish";
    pub const DELIVER: &str = "/_herald/deliver";
    pub const RANGE: &str = "/_herald/range";
    pub const STATS: &str = "/_herald/stats";
    pub const HISTORY: &str = "/_herald/history";
    pub const ERASE: &str = "/_herald/erase";
    /// Relay → Room: a [`super::PresenceCall`], answered [`super::PresenceAck`].
    pub const PRESENCE: &str = "/_herald/presence";
    /// A page of the members: `?cursor=&limit=`.
    pub const PRESENCE_SNAPSHOT: &str = "/_herald/presence-snapshot";
    /// Relay → Room: a user's `read` frame, a [`super::ReadCall`],
    /// answered [`super::ReadReply`].
    pub const READ: &str = "/_herald/read";
    /// A user's read mark and unread count: `?user=U`, answered
    /// `{"user":U,"read":N,"unread":K}` (the admin endpoint); with
    /// `&upto=C` (a relay welcoming the user) answered with an
    /// `Option<`[`super::UnreadCount`]`>`, `null` when the room has no read
    /// marks.
    pub const UNREAD: &str = "/_herald/unread";
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

/// A position in one relay link's stream of items: the Room incarnation
/// (`inc`, increasing across incarnations: the time it was constructed),
/// the link (numbered within the incarnation each time the Room starts
/// holding items for a relay), and the link sequence number of an item.
/// Numbers restart with every link, so acks compare by `(inc, link)` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAck {
    pub inc: u64,
    pub link: u64,
    pub lsn: u64,
}

impl LinkAck {
    /// Which numbering the ack belongs to; a larger key is a newer one.
    pub fn key(&self) -> (u64, u64) {
        (self.inc, self.link)
    }
}

/// Where a relay stands in the room's stream: everything up to `cursor` in
/// erasure generation `gen` has been fanned out to its clients, and `ack`
/// is the last item up to which it applied every item of its link. Persisted by the relay, so it
/// survives hibernation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPosition {
    pub gen: u64,
    pub cursor: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<LinkAck>,
}

/// What a Relay tells its Room about itself. It rides on every Relay → Room
/// call and every delivery reply, so the Room's stats are "as last reported"
/// without extra calls, and every call acknowledges what the relay applied.
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
    /// `reset` frames the relay sent because a gap was no longer stored.
    #[serde(default)]
    pub resets: u64,
    /// Sockets and streams closed because their client fell further behind
    /// than the buffer bound.
    #[serde(default)]
    pub slow_closes: u64,
    /// The most bytes one client's buffer held in the live fan-out (a
    /// socket's `bufferedAmount` after a send, or what an SSE stream had not
    /// taken), as the relay saw it. A replay paces itself separately.
    #[serde(default)]
    pub buffer_peak: u64,
    /// What the relay has fanned out; `None` for a relay that has never
    /// joined and will adopt the Room's position from the join reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<RelayPosition>,
    /// Orders reports, which ride on independent calls that can arrive in
    /// any order: the relay incarnation (its construction time), then a
    /// counter. The Room ignores a report older than one it applied.
    #[serde(default)]
    pub incarnation: u64,
    #[serde(default)]
    pub report_seq: u64,
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
            resets: 0,
            slow_closes: 0,
            buffer_peak: 0,
            position: None,
            incarnation: 0,
            report_seq: 0,
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

impl LinkPub {
    /// The bytes it holds beyond its fixed size (`data`, `mid`, `from`),
    /// for bounding what waits in memory by bytes and not only by count.
    pub fn payload_bytes(&self) -> usize {
        self.data.get().len() + self.mid.as_ref().map_or(0, String::len) + self.from.as_ref().map_or(0, String::len)
    }
}

impl PartialEq for LinkPub {
    fn eq(&self, o: &Self) -> bool {
        (&self.from, self.data.get(), &self.mid, self.eph) == (&o.from, o.data.get(), &o.mid, o.eph)
    }
}

/// Relay → Room: publishes that arrived together, in arrival order. `id`
/// is unique per relay incarnation and call: a retry of a call whose answer
/// was lost carries the same id, and the Room answers it with the outcomes
/// it already stored instead of storing the messages again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishBatch {
    #[serde(default)]
    pub id: String,
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
    pub delivery: Option<DeliveryHead>,
}

/// Everything about a delivery but its frame: the `x-herald-delivery`
/// header of a `deliver` call, or the `delivery` of a [`PublishReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryHead {
    /// The epoch of every item in it (a delivery never spans an erasure).
    pub epoch: String,
    /// Erasures before this epoch: epochs are ordered by it.
    #[serde(default)]
    pub gen: u64,
    /// The room's seq when this epoch began: a relay that crosses into it
    /// without having seen the `reset` tells its clients the next is this + 1.
    #[serde(default)]
    pub epoch_start: u64,
    /// The link (see [`LinkAck`]) and the sequence numbers of the first and
    /// last item in it.
    pub inc: u64,
    pub link: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    /// First and last stored seq in the frame; `None` when it carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
    /// The stamp of the first stored message, for the relay's window.
    #[serde(default)]
    pub first_ts: u64,
    /// "Be level with this seq": the relay repairs up to it from storage.
    /// Sent when the Room no longer knows what the relay has (after the Room
    /// restarted, or gave up on the relay's queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_to: Option<u64>,
    /// The frame starts with this epoch's `reset`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// A presence frame (never with messages), and who it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<crate::presence::Audience>,
    /// The frame is read marks ([`MarkItem`]s, never with anything else):
    /// the relay tells each user's connections their new mark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_marks: bool,
    /// The room has read marks, so a relay asks for a user's unread count
    /// when it welcomes them (see [`JoinReply::reads`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reads: bool,
}

/// One item of a read-marks delivery: `user`'s mark moved to `seq`. Not a
/// client frame: the relay renders `{"t":"read","seq":N}` for the user's
/// connections (a user id may hold any text, which a header could not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkItem {
    pub user: String,
    pub seq: u64,
}

/// Relay → Room: a user's `read` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCall {
    pub user: String,
    pub seq: u64,
}

/// Room → Relay: the user's read mark after a [`ReadCall`], and whether
/// the call moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    pub read: u64,
    pub moved: bool,
}

/// A user's read mark (0 when they have none) and how many stored messages
/// after it, up to the seq asked, others published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadCount {
    pub read: u64,
    pub unread: u64,
}

/// Relay → Room: presence news ([`crate::presence::PresenceReport`]) from
/// one incarnation of a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCall {
    pub region: Region,
    /// The relay's incarnation: a new one starts with its whole membership.
    pub inc: u64,
    pub report: crate::presence::PresenceReport,
}

/// Room → Relay: what of a [`PresenceCall`] the Room has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceAck {
    /// The whole membership in the call was taken.
    pub full: bool,
    /// The next delta number the Room expects.
    pub next: u64,
    /// The Room does not know this incarnation's members: send them whole.
    #[serde(default)]
    pub need_full: bool,
}

/// Room → Relay: the answer to a report, which is also how a relay joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub epoch: String,
    pub gen: u64,
    pub epoch_start: u64,
    /// The room's last assigned seq.
    pub seq: u64,
    /// The link's last item when the join was answered: a relay that adopts
    /// the answer (it had no clients) is level with `seq` and with this.
    pub ack: LinkAck,
    /// The room has read marks (a user has sent a `read`): welcomes carry
    /// the user's unread count, which the relay asks the Room for. Rooms
    /// that never use read marks cost nothing more per connect.
    #[serde(default)]
    pub reads: bool,
}

/// The answer to a range read (gap repair or resume), in the
/// `x-herald-range` header; the frame of the messages is the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeHead {
    pub epoch: String,
    pub gen: u64,
    pub epoch_start: u64,
    /// The read starts after this seq: above the asked `after` when older
    /// messages are no longer kept.
    pub from: u64,
    /// The last seq in the body (`from` when it is empty).
    pub last: u64,
    /// For a resume (the read named the client's epoch): whether the client
    /// can be given exactly the messages after its `since`.
    pub recovered: bool,
}

/// A grant as a header value: base64url (no padding) of its JSON.
pub fn encode_grant(grant: &crate::auth::Grant) -> Result<String, serde_json::Error> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant)?))
}

/// The inverse of [`encode_grant`]; `None` for anything else.
pub fn decode_grant(value: &str) -> Option<crate::auth::Grant> {
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
    serde_json::from_str(std::str::from_utf8(&json).ok()?).ok()
}

/// The relay's object name: region first, because room names cannot
/// contain `/` and regions cannot either, so the split is unambiguous.
pub fn relay_name(room: &str, region: Region) -> String {
    format!("{region}/{room}")
}

/// The inverse of [`relay_name`].
pub fn parse_relay_name(name: &str) -> Option<(String, Region)> {
    let (region, room) = name.split_once('/')?;
    Some((room.to_owned(), Region::parse(region).ok()?))
}

/// Splits a publish answer: the JSON line, and the delivery frame after the
/// first newline, if any. serde_json never writes a raw newline, so the
/// first one is the seam.
pub fn split_answer(answer: &str) -> (&str, Option<&str>) {
    match answer.split_once('\n') {
        Some((head, frame)) => (head, Some(frame)),
        None => (answer, None),
    }
}

/// Joins a publish answer's JSON line and its delivery frame.
pub fn join_answer(reply: &PublishReply, frame: Option<&str>) -> Result<String, serde_json::Error> {
    let mut body = serde_json::to_string(reply)?;
    if let Some(frame) = frame {
        body.push('\n');
        body.push_str(frame);
    }
    Ok(body)
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

    #[test]
    fn a_grant_with_any_text_fits_a_header() {
        let grant = crate::auth::Grant {
            user: Some("ana 🦀 東京".into()),
            caps: crate::auth::CapabilitySet::only(crate::auth::Capability::Sub),
            expires_s: Some(u64::MAX),
            info: Some(r#"{"name":"Zoë 🎉 北京"}"#.into()),
        };
        let header = encode_grant(&grant).unwrap();
        assert!(header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{header}");
        assert_eq!(decode_grant(&header), Some(grant));
        assert_eq!(decode_grant("not base64 json"), None);
    }

    #[test]
    fn answer_and_names_round_trip() {
        let reply = PublishReply { epoch: "e".into(), outcomes: vec![PubOutcome { seq: Some(1), ts: 2 }], delivery: None };
        let body = join_answer(&reply, Some("[{\"a\":\"x\\ny\"}]")).unwrap();
        let (head, frame) = split_answer(&body);
        assert_eq!(serde_json::from_str::<PublishReply>(head).unwrap(), reply);
        assert_eq!(frame, Some("[{\"a\":\"x\\ny\"}]"));
        assert_eq!(split_answer("{}"), ("{}", None));
        let name = relay_name("team:1", Region::Weur);
        assert_eq!(parse_relay_name(&name), Some(("team:1".to_owned(), Region::Weur)));
        assert_eq!(parse_relay_name("moon/x"), None);
    }
}
