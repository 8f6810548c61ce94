//! Presence: who is in a room, and how many in each region.
//!
//! The work is split the way the fan-out is. Each relay tracks its own
//! members ([`LocalPresence`]): a user's first connection on the relay is a
//! `join` delta, its last disconnection a `leave` delta, and only deltas go
//! upstream, numbered so a lost or repeated report changes nothing. The
//! Room aggregates them ([`Roster`]), decides what clients see (per-member
//! events, or coalesced counts past `HERALD_PRESENCE_EVENTS_MAX`), and sends
//! each presence frame once per relay, like a message.
//!
//! A member is a user: the token's `sub`, or the connection id of an
//! anonymous reader. Several connections, in any regions, count once, in
//! the region of the connection that made the user join, so the per-region
//! counts always sum to the total. A user whose last connection closes is
//! still a member for `HERALD_PRESENCE_GRACE_MS`, and a reconnect within it,
//! in any region, is no leave and join.

mod local;
mod roster;

pub use local::{LocalPresence, PresenceReport};
pub use roster::{Audience, MemberChange, Out, PresenceConfig, PresenceRow, Roster, SnapshotPage};

use crate::region::Region;
use serde::{Deserialize, Serialize};
use crate::region_map::RegionMap;

/// Members in one snapshot page when the request names no limit.
pub const DEFAULT_SNAPSHOT_LIMIT: u64 = 100;
/// Most members in one snapshot page.
pub const MAX_SNAPSHOT_LIMIT: u64 = 1000;

/// A change in one relay's members, as it tells the Room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Delta {
    /// The user's first connection on this relay. `info` is the token's
    /// `info` object as JSON text.
    Join { user: String, info: Option<String> },
    /// The user's last connection on this relay closed.
    Leave { user: String },
}

/// One member as a snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    /// JSON text of the token's `info`.
    pub info: Option<String>,
    pub region: Region,
}

/// Members in all, and by the region they joined from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub count: u64,
    pub regions: RegionMap<u64>,
}

fn info_json(info: Option<&str>) -> &str {
    info.filter(|i| serde_json::from_str::<serde::de::IgnoredAny>(i).is_ok()).unwrap_or("null")
}

fn string_json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

fn regions_json(regions: &RegionMap<u64>) -> String {
    let parts: Vec<String> = regions.iter().map(|(r, n)| format!("\"{}\":{n}", r.as_str())).collect();
    format!("{{{}}}", parts.join(","))
}

/// `{"t":"join","user":U,"info":I,"region":G}`
pub fn join_frame(m: &Member) -> String {
    format!(
        r#"{{"t":"join","user":{},"info":{},"region":"{}"}}"#,
        string_json(&m.user),
        info_json(m.info.as_deref()),
        m.region.as_str()
    )
}

/// `{"t":"leave","user":U,"region":G}`
pub fn leave_frame(user: &str, region: Region) -> String {
    format!(r#"{{"t":"leave","user":{},"region":"{}"}}"#, string_json(user), region.as_str())
}

/// `{"t":"presence_counts","count":N,"regions":{…}}`
pub fn counts_frame(c: &Counts) -> String {
    format!(r#"{{"t":"presence_counts","count":{},"regions":{}}}"#, c.count, regions_json(&c.regions))
}

/// A snapshot page: `{"count":N,"regions":{…},"members":[…],"more":B,"cursor":S|null}`,
/// with `"t":"presence","id":I` first when it answers a socket frame
/// (`id` is the request's id as JSON text).
pub fn snapshot_frame(id: Option<&str>, page: &SnapshotPage) -> String {
    let members: Vec<String> = page
        .members
        .iter()
        .map(|m| {
            format!(
                r#"{{"user":{},"info":{},"region":"{}"}}"#,
                string_json(&m.user),
                info_json(m.info.as_deref()),
                m.region.as_str()
            )
        })
        .collect();
    let head = id.map_or(String::from("{"), |id| format!(r#"{{"t":"presence","id":{id},"#));
    let cursor = page.cursor.as_deref().map_or(String::from("null"), string_json);
    format!(
        r#"{head}"count":{},"regions":{},"members":[{}],"more":{},"cursor":{cursor}}}"#,
        page.counts.count,
        regions_json(&page.counts.regions),
        members.join(","),
        page.more
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn frames_are_json_with_escaped_users_and_raw_info() {
        let m = Member { user: "a\"b".into(), info: Some(r#"{"name":"Ana"}"#.into()), region: Region::Weur };
        assert_eq!(parse(&join_frame(&m)), json!({"t":"join","user":"a\"b","info":{"name":"Ana"},"region":"weur"}));
        assert_eq!(parse(&leave_frame("u", Region::Apac)), json!({"t":"leave","user":"u","region":"apac"}));
        let bad = Member { info: Some("{not json".into()), ..m };
        assert_eq!(parse(&join_frame(&bad))["info"], Value::Null, "unreadable info is null, never broken JSON");
        let mut c = Counts { count: 3, ..Counts::default() };
        c.regions.insert(Region::Weur, 2);
        c.regions.insert(Region::Apac, 1);
        assert_eq!(parse(&counts_frame(&c)), json!({"t":"presence_counts","count":3,"regions":{"weur":2,"apac":1}}));
        let page = SnapshotPage { counts: c, members: vec![], more: true, cursor: Some("k".into()) };
        assert_eq!(parse(&snapshot_frame(Some("7"), &page))["cursor"], "k");
        assert_eq!(parse(&snapshot_frame(None, &page)).get("t"), None);
    }
}
