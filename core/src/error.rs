//! The one table of error codes Herald speaks, on sockets and over HTTP.
//!
//! Every rejection a client can see maps to exactly one [`ErrorCode`]; the
//! wire string and the HTTP status live here so the socket path and the HTTP
//! path can never disagree. `docs/PROTOCOL.md` mirrors this table.

use serde::Serialize;

/// Why a request or frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, an unknown `t`, a missing or mistyped field.
    BadFrame,
    /// The frame or body is larger than `HERALD_MAX_FRAME_BYTES`.
    TooLarge,
    /// The room name does not match `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`.
    BadRoom,
    /// `?region=` named no known location hint.
    BadRegion,
    /// The sender is over its publish rate.
    RateLimited,
    /// No valid credentials were presented.
    Unauthorized,
    /// The credentials do not allow this operation.
    Forbidden,
    /// The server is at capacity; retry later.
    Overloaded,
    /// A plain GET reached the WebSocket endpoint.
    UpgradeRequired,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// Herald failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadFrame,
        ErrorCode::TooLarge,
        ErrorCode::BadRoom,
        ErrorCode::BadRegion,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Overloaded,
        ErrorCode::UpgradeRequired,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Internal,
    ];

    /// The string on the wire (`code` in `err` frames, `error` in HTTP bodies).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadRegion => "bad_region",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadFrame | ErrorCode::BadRoom | ErrorCode::BadRegion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Overloaded => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal with the human-readable reason that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// The HTTP body for this refusal: `{"error":CODE,"message":TEXT}`.
    pub fn http_body(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'static str,
            message: &'a str,
        }
        to_json(&Body {
            error: self.code.as_str(),
            message: &self.message,
        })
    }
}

/// Serializes a value whose shape cannot fail to serialize (plain structs of
/// strings, numbers and already-valid raw JSON). Falls back to `null` rather
/// than panicking, because a panic would take down a whole Durable Object.
pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialize_as_their_wire_string() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn issue_mandated_http_statuses() {
        use ErrorCode::*;
        let want = [
            (BadFrame, 400),
            (TooLarge, 413),
            (BadRoom, 400),
            (RateLimited, 429),
            (Unauthorized, 401),
            (Forbidden, 403),
            (Overloaded, 503),
            (Internal, 500),
        ];
        for (code, status) in want {
            assert_eq!(code.http_status(), status, "{code}");
        }
    }

    #[test]
    fn http_body_shape() {
        let body = Rejection::new(ErrorCode::BadRoom, "room \"x\" is bad").http_body();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "bad_room");
        assert_eq!(v["message"], "room \"x\" is bad");
    }
}
