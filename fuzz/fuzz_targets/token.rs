//! Any bytes as a token: the verifier answers, never panics, and never
//! grants anything to what it did not sign.
#![no_main]

use herald_core::auth::{authorize, RoomPatterns};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let granted = authorize(Some(token), "room", Some(b"fuzz"), &RoomPatterns::parse("*"), 1_700_000_000, 2);
        assert!(granted.is_err(), "an unsigned token was accepted");
    }
});
