//! Arbitrary input into the token verifier and the auth decision: every
//! input gets a grant or a documented refusal, never a panic, and nothing
//! unsigned ever yields a grant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use herald_core::auth::{authorize, mint_hs256, verify_hs256, Keys, RoomPatterns};
use herald_core::ErrorCode;
use proptest::prelude::*;
use serde_json::json;

const SECRET: &[u8] = b"fuzz-secret-of-at-least-thirty-two-bytes";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_strings(token in ".{0,300}", room in "[a-z:*]{0,12}", now in any::<u64>()) {
        let keys = Keys::parse(std::str::from_utf8(SECRET).unwrap()).unwrap().unwrap();
        if let Err(r) = authorize(Some(&token), &room, Some(&keys), &RoomPatterns::parse("*"), now, 2) {
            prop_assert_eq!(r.code, ErrorCode::Unauthorized);
        } else {
            panic!("an unsigned string was accepted: {token:?}");
        }
    }

    #[test]
    fn three_part_garbage(a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,60}", c in "[A-Za-z0-9_-]{0,60}") {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(verify_hs256(&token, SECRET, 0, 2).is_err());
    }

    #[test]
    fn signed_arbitrary_claims(sub in ".{0,20}", exp in any::<Option<u32>>(), caps in prop::collection::vec("[a-z]{0,8}", 0..4), now in 0u64..5_000_000_000) {
        let claims = json!({"sub": sub, "exp": exp, "rooms": {"r*": caps}});
        let t = mint_hs256(&claims, SECRET);
        match verify_hs256(&t, SECRET, now, 2) {
            Ok(c) => {
                prop_assert_eq!(c.sub, sub);
                prop_assert!(exp.is_none_or(|e| now <= u64::from(e) + 2));
            }
            Err(e) => prop_assert_eq!(e.rejection().code, ErrorCode::Unauthorized),
        }
        // The same claims under another secret never verify.
        prop_assert!(verify_hs256(&mint_hs256(&claims, b"other"), SECRET, now, 2).is_err());
    }
}
