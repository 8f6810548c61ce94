//! Capabilities and the room patterns that grant them.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One thing a token may allow on a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Connect and receive messages.
    Sub,
    /// Publish.
    Pub,
    /// See and join presence.
    Presence,
    /// Read history (and resume, which replays history).
    History,
    /// Stats and erasure.
    Admin,
}

impl Capability {
    fn bit(self) -> u8 {
        match self {
            Capability::Sub => 1,
            Capability::Pub => 2,
            Capability::Presence => 4,
            Capability::History => 8,
            Capability::Admin => 16,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Sub => "sub",
            Capability::Pub => "pub",
            Capability::Presence => "presence",
            Capability::History => "history",
            Capability::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities, small enough to ride in a socket attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CapabilitySet(pub u8);

impl CapabilitySet {
    pub fn only(cap: Capability) -> Self {
        CapabilitySet(cap.bit())
    }

    pub fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    pub fn with(self, cap: Capability) -> Self {
        CapabilitySet(self.0 | cap.bit())
    }
}

/// Room patterns: an exact name, or a prefix ending in `*` (`*` alone is
/// every room). The prefix is plain text, not a segment: `team1*` matches
/// `team10` too, so a prefix meant as a namespace ends with its separator
/// (`team1:*`), as `docs/PROTOCOL.md` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPatterns(Vec<String>);

fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

impl RoomPatterns {
    /// A comma- or space-separated list, as in `HERALD_PUBLIC_ROOMS`.
    pub fn parse(list: &str) -> Self {
        RoomPatterns(
            list.split([',', ' '])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, room))
    }

    /// No patterns at all: nothing matches (a feature keyed on a list is off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as given, for claims built from them.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// The `rooms` claim: pattern → capabilities. Unknown capability names make
/// the token invalid rather than silently granting less.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomGrants(BTreeMap<String, CapabilitySet>);

impl<'de> Deserialize<'de> for RoomGrants {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: BTreeMap<String, Vec<Capability>> = BTreeMap::deserialize(d)?;
        Ok(RoomGrants(
            raw.into_iter()
                .map(|(pattern, caps)| {
                    let set = caps.into_iter().fold(CapabilitySet::default(), CapabilitySet::with);
                    (pattern, set)
                })
                .collect(),
        ))
    }
}

impl RoomGrants {
    /// The union of the capabilities of every pattern matching `room`.
    pub fn caps_for(&self, room: &str) -> CapabilitySet {
        self.0
            .iter()
            .filter(|(p, _)| pattern_matches(p, room))
            .fold(CapabilitySet::default(), |acc, (_, set)| CapabilitySet(acc.0 | set.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_plain_text_so_namespaces_end_with_their_separator() {
        assert!(pattern_matches("team1*", "team10"), "the documented rule");
        assert!(pattern_matches("team1:*", "team1:chat"));
        assert!(!pattern_matches("team1:*", "team10:chat"));
        assert!(!pattern_matches("team1", "team10"), "an exact name is exact");
    }

    #[test]
    fn patterns() {
        let p = RoomPatterns::parse("news:*, lobby  ,,");
        assert!(p.matches("news:eu") && p.matches("news:") && p.matches("lobby"));
        assert!(!p.matches("lobby2") && !p.matches("new"));
        assert!(RoomPatterns::parse("*").matches("anything"));
        assert!(!RoomPatterns::parse("").matches("x"));
    }

    #[test]
    fn grants_union_and_reject_unknown_caps() {
        let g: RoomGrants = serde_json::from_str(r#"{"a*":["sub"],"ab":["pub","admin"]}"#).unwrap();
        let caps = g.caps_for("ab");
        assert!(caps.has(Capability::Sub) && caps.has(Capability::Pub) && caps.has(Capability::Admin));
        assert!(!caps.has(Capability::History));
        assert_eq!(g.caps_for("b"), CapabilitySet::default());
        assert!(serde_json::from_str::<RoomGrants>(r#"{"a":["fly"]}"#).is_err());
    }
}
