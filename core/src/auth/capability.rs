//! Capabilities and the room patterns that grant them.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

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
///
/// Kept sorted by pattern, a later duplicate replacing an earlier one, as
/// in the `BTreeMap` this was: a `Vec` because a token names a few
/// patterns, and each `BTreeMap` type costs the `.wasm` its own tree code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomGrants(Vec<(String, CapabilitySet)>);

impl<'de> Deserialize<'de> for RoomGrants {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Grants;
        impl<'de> Visitor<'de> for Grants {
            type Value = RoomGrants;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of room pattern to capability names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RoomGrants, A::Error> {
                let mut grants: Vec<(String, CapabilitySet)> = Vec::new();
                while let Some((pattern, caps)) = map.next_entry::<String, Vec<Capability>>()? {
                    let set = caps.into_iter().fold(CapabilitySet::default(), CapabilitySet::with);
                    match grants.binary_search_by(|(p, _)| p.as_str().cmp(&pattern)) {
                        Ok(at) => grants[at].1 = set,
                        Err(at) => grants.insert(at, (pattern, set)),
                    }
                }
                Ok(RoomGrants(grants))
            }
        }
        d.deserialize_map(Grants)
    }
}

impl RoomGrants {
    /// The union of the capabilities of every pattern matching `room` for
    /// the user `sub` (whose `{sub}` patterns are expanded with it).
    pub fn caps_for(&self, room: &str, sub: &str) -> CapabilitySet {
        self.0
            .iter()
            .filter(|(p, _)| match expand_sub(p, sub) {
                Some(expanded) => pattern_matches(&expanded, room),
                None => false,
            })
            .fold(CapabilitySet::default(), |acc, (_, set)| CapabilitySet(acc.0 | set.0))
    }
}

/// What a token's room pattern writes for the token's own `sub`.
pub const SUB_PLACEHOLDER: &str = "{sub}";

/// A token's pattern with every `{sub}` replaced by `sub`, or `None` when
/// the pattern then matches nothing:
///
/// - the expanded name (without a prefix's trailing `*`) must itself be a
///   valid room name, so a `sub` with a character no room name holds
///   (`a/b`, `*`, an e-mail address) grants nothing rather than something
///   unintended (`*` would otherwise turn `user:{sub}` into a prefix);
/// - the `sub` must not contain the character that follows `{sub}` in the
///   pattern: with `user:{sub}:*`, user `ana` owns `user:ana:…`, and a user
///   named `ana:x` would otherwise own part of it (`user:ana:x:…`). The
///   character after `{sub}` ends the `sub`, so two users' rooms never meet.
///
/// Only token patterns are expanded; `HERALD_PUBLIC_ROOMS` has no user.
fn expand_sub<'a>(pattern: &'a str, sub: &str) -> Option<std::borrow::Cow<'a, str>> {
    if !pattern.contains(SUB_PLACEHOLDER) {
        return Some(std::borrow::Cow::Borrowed(pattern));
    }
    let (body, star) = match pattern.strip_suffix('*') {
        Some(body) => (body, "*"),
        None => (pattern, ""),
    };
    let mut pieces = body.split(SUB_PLACEHOLDER).peekable();
    let mut expanded = String::with_capacity(body.len() + sub.len());
    while let Some(piece) = pieces.next() {
        expanded.push_str(piece);
        if pieces.peek().is_some() {
            // The piece after this `{sub}` starts with the character that
            // ends the user's part of the name.
            let next = pieces.peek().and_then(|p| p.chars().next());
            if next.is_some_and(|c| sub.contains(c)) {
                return None;
            }
            expanded.push_str(sub);
        }
    }
    crate::room_name::validate_room(&expanded).ok()?;
    expanded.push_str(star);
    Some(std::borrow::Cow::Owned(expanded))
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
        let caps = g.caps_for("ab", "u");
        assert!(caps.has(Capability::Sub) && caps.has(Capability::Pub) && caps.has(Capability::Admin));
        assert!(!caps.has(Capability::History));
        assert_eq!(g.caps_for("b", "u"), CapabilitySet::default());
        assert!(serde_json::from_str::<RoomGrants>(r#"{"a":["fly"]}"#).is_err());
    }

    #[test]
    fn a_repeated_pattern_keeps_its_last_grant_and_order_does_not_matter() {
        let g: RoomGrants = serde_json::from_str(r#"{"a":["pub"],"b":["sub"],"a":["sub"]}"#).unwrap();
        assert!(!g.caps_for("a", "u").has(Capability::Pub), "the later grant replaces the earlier");
        assert!(g.caps_for("a", "u").has(Capability::Sub));
        let reordered: RoomGrants = serde_json::from_str(r#"{"b":["sub"],"a":["sub"]}"#).unwrap();
        assert_eq!(g, reordered);
        assert!(serde_json::from_str::<RoomGrants>(r#"["a"]"#).is_err(), "an object, not a list");
    }

    fn grants(json: &str) -> RoomGrants {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sub_patterns_expand_to_the_users_own_rooms() {
        let g = grants(r#"{"user:{sub}":["sub","history"],"inbox:{sub}:*":["pub"]}"#);
        let alice = g.caps_for("user:alice", "alice");
        assert!(alice.has(Capability::Sub) && alice.has(Capability::History) && !alice.has(Capability::Pub));
        assert_eq!(g.caps_for("user:bob", "alice"), CapabilitySet::default());
        assert_eq!(g.caps_for("user:{sub}", "alice"), CapabilitySet::default(), "the placeholder is no room");
        assert!(g.caps_for("inbox:alice:2024", "alice").has(Capability::Pub));
        assert!(g.caps_for("inbox:alice:", "alice").has(Capability::Pub));
        assert_eq!(g.caps_for("inbox:alicex:1", "alice"), CapabilitySet::default());
        let two = grants(r#"{"{sub}.to.{sub}":["sub"]}"#);
        assert!(two.caps_for("al.to.al", "al").has(Capability::Sub));
        assert_eq!(two.caps_for("al.to.bo", "al"), CapabilitySet::default());
    }

    #[test]
    fn a_sub_that_cannot_name_a_room_matches_nothing() {
        let g = grants(r#"{"user:{sub}":["sub"],"inbox:{sub}:*":["sub"],"{sub}":["sub"]}"#);
        for (sub, room) in [
            ("a/b", "user:a/b"),
            ("*", "user:*"),
            ("*", "user:x"),
            ("*", "inbox:x:1"),
            ("ana@example.com", "user:ana@example.com"),
            ("é", "user:é"),
            ("-ana", "-ana"),
            (&"x".repeat(128), &format!("user:{}", "x".repeat(128))),
        ] {
            assert_eq!(g.caps_for(room, sub), CapabilitySet::default(), "{sub:?} {room:?}");
        }
        assert!(g.caps_for("-ana:1", "-ana").0 == 0, "inbox:-ana: is valid, -ana is not");
        assert!(g.caps_for("user:-ana", "-ana").has(Capability::Sub), "inside a name, any room character");
        assert!(g.caps_for(&"x".repeat(128), &"x".repeat(128)).has(Capability::Sub));
    }

    #[test]
    fn a_sub_holding_the_separator_after_it_matches_nothing() {
        let g = grants(r#"{"inbox:{sub}:*":["sub"],"user:{sub}":["sub"]}"#);
        assert_eq!(g.caps_for("inbox:ana:x:1", "ana:x"), CapabilitySet::default(), "would reach into ana's rooms");
        assert!(g.caps_for("inbox:ana:x:1", "ana").has(Capability::Sub));
        assert!(g.caps_for("user:ana:x", "ana:x").has(Capability::Sub), "an exact name ends the sub by itself");
        assert!(g.caps_for("inbox:a.b:1", "a.b").has(Capability::Sub), "only the character after {{sub}} is taken");
    }

    #[test]
    fn public_patterns_are_not_expanded() {
        assert!(!RoomPatterns::parse("user:{sub}").matches("user:alice"));
        assert!(RoomPatterns::parse("user:{sub}").matches("user:{sub}"), "text, as any other pattern");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn sub() -> impl Strategy<Value = String> {
            proptest::string::string_regex("[a-c:._/*-]{1,6}").unwrap()
        }

        proptest! {
            /// A `{sub}` pattern grants a room to at most one user, only
            /// valid room names, and each plain user their own room.
            #[test]
            fn one_owner_per_room(a in sub(), b in sub(), tail in "[a-c:]{0,4}") {
                let g = grants(r#"{"user:{sub}":["sub"],"inbox:{sub}:*":["sub"]}"#);
                for room in [format!("user:{a}{tail}"), format!("inbox:{a}{tail}"), format!("inbox:{a}:{tail}")] {
                    let (for_a, for_b) = (g.caps_for(&room, &a), g.caps_for(&room, &b));
                    if a != b {
                        prop_assert!(for_a.0 == 0 || for_b.0 == 0, "{room} granted to {a} and {b}");
                    }
                    if for_a.0 != 0 {
                        prop_assert!(crate::room_name::validate_room(&room).is_ok(), "{room}");
                    }
                }
                if a.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
                    let (own, inbox) = (format!("user:{a}"), format!("inbox:{a}:{tail}"));
                    prop_assert!(g.caps_for(&own, &a).has(Capability::Sub), "{}", own);
                    prop_assert!(g.caps_for(&inbox, &a).has(Capability::Sub), "{}", inbox);
                }
            }
        }
    }
}
