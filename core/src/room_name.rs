//! Room names: the one place that decides what a valid room is.

use crate::error::{ErrorCode, Rejection};

/// Longest room name, in bytes (1 leading + 127 more).
pub const MAX_ROOM_NAME: usize = 128;

/// Checks `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$` without a regex engine, which
/// would cost wasm size for one pattern.
pub fn validate_room(name: &str) -> Result<(), Rejection> {
    let bytes = name.as_bytes();
    let ok = match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            bytes.len() <= MAX_ROOM_NAME
                && first.is_ascii_alphanumeric()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            ErrorCode::BadRoom,
            "room names are 1-128 characters of A-Z a-z 0-9 . _ : - and start with a letter or digit",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for good in ["a", "Z9", "chat:lobby", "a.b_c-d:e", &"x".repeat(128)] {
            assert!(validate_room(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(129), "a%20"] {
            assert_eq!(validate_room(bad).unwrap_err().code, ErrorCode::BadRoom, "{bad}");
        }
    }
}
