//! Arbitrary bytes and arbitrary JSON into the frame parsers: every input
//! gets `Ok` or a documented error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use herald_core::{parse_client_frame, parse_http_publish, ClientFrame, ErrorCode, FrameLimits};
use proptest::prelude::*;
use serde_json::{json, Value};

const MAX: usize = 4096;
const LIMITS: FrameLimits = FrameLimits { max_bytes: MAX, max_depth: 32 };

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("t".to_string()), Just("data".to_string()), Just("id".to_string()),
                            Just("mid".to_string()), Just("ephemeral".to_string()),
                            Just("since".to_string()), Just("limit".to_string()), Just("seq".to_string()), ".{0,8}"],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check(text: &str) {
    match parse_client_frame(text, LIMITS) {
        Ok(ClientFrame::Ping) => assert_eq!(text, "ping"),
        Ok(ClientFrame::Pub(p)) => {
            assert!(text.len() <= MAX);
            // What was accepted is valid JSON that re-parses.
            serde_json::from_str::<Value>(p.data.get()).unwrap();
        }
        Ok(ClientFrame::History(h)) => {
            assert!(h.limit >= 1 && h.limit <= herald_core::client_frame::MAX_HISTORY_LIMIT);
        }
        Ok(ClientFrame::Presence(p)) => {
            assert!(p.limit >= 1 && p.limit <= herald_core::presence::MAX_SNAPSHOT_LIMIT);
            assert!(p.cursor.is_none_or(|c| c.chars().count() <= herald_core::client_frame::MAX_CURSOR_CHARS));
        }
        Ok(ClientFrame::Read(r)) => assert!(r.seq <= herald_core::client_frame::MAX_SEQ),
        Err(e) => {
            assert!(matches!(e.rejection.code, ErrorCode::BadFrame | ErrorCode::TooLarge));
            assert!(!e.rejection.message.is_empty());
        }
    }
    let _ = parse_http_publish(text, LIMITS);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json(v in arb_json()) {
        check(&v.to_string());
    }

    #[test]
    fn pub_shaped_json(data in arb_json(), id in arb_json(), mid in arb_json(), eph in arb_json()) {
        let frame = json!({"t": "pub", "data": data, "id": id, "mid": mid, "ephemeral": eph});
        check(&frame.to_string());
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let text = format!(r#"{{"t":"pub","data":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let e = parse_client_frame(&text, FrameLimits { max_bytes: usize::MAX, max_depth: 32 }).unwrap_err();
    assert_eq!(e.rejection.code, ErrorCode::BadFrame);
}
