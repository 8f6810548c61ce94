//! WebSocket close codes, in one table with reconnect and terminal ranges
//! (the shape of centrifuge's `disconnect.go`): a client decides whether to
//! reconnect from the code alone, without parsing the reason.

/// A close code Herald sends, and whether a client should reconnect after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal closure, answering a client's own close.
    Normal,
    /// 1001: the server is going away (deploy, restart). Reconnect.
    GoingAway,
    /// 1008: repeated invalid frames. Do not reconnect without a fix.
    PolicyViolation,
    /// 1009: repeated oversized frames. Do not reconnect without a fix.
    MessageTooBig,
    /// 1011: an internal error. Reconnect with backoff.
    InternalError,
    /// 4001: the connection's token expired. Refresh the token, reconnect.
    TokenExpired,
    /// 4002: the client fell further behind than the relay buffers for one
    /// connection (`HERALD_WS_MAX_BUFFER_BYTES`). Reconnect and resume.
    TooSlow,
}

impl CloseCode {
    pub const ALL: [CloseCode; 7] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::TokenExpired,
        CloseCode::TooSlow,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TokenExpired => 4001,
            CloseCode::TooSlow => 4002,
        }
    }

    /// The short reason string sent with the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going away",
            CloseCode::PolicyViolation => "too many bad frames",
            CloseCode::MessageTooBig => "too many oversized frames",
            CloseCode::InternalError => "internal error",
            CloseCode::TokenExpired => "token expired; refresh it and reconnect",
            CloseCode::TooSlow => "fell too far behind; reconnect and resume",
        }
    }

    /// Whether a client should reconnect (with backoff) after this code.
    /// Codes 3000–3499 and 4000–4499 are reserved as transient, 3500–3999
    /// and 4500–4999 as terminal, for the codes later protocol versions add.
    pub fn reconnect(code: u16) -> bool {
        matches!(code, 1000 | 1001 | 1006 | 1011..=1014 | 3000..=3499 | 4000..=4499)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_and_transient_codes() {
        assert!(CloseCode::reconnect(CloseCode::GoingAway.code()));
        assert!(CloseCode::reconnect(CloseCode::InternalError.code()));
        assert!(!CloseCode::reconnect(CloseCode::PolicyViolation.code()));
        assert!(!CloseCode::reconnect(CloseCode::MessageTooBig.code()));
        assert!(CloseCode::reconnect(CloseCode::TokenExpired.code()));
        assert!(CloseCode::reconnect(CloseCode::TooSlow.code()));
        assert!(!CloseCode::reconnect(4501));
        for c in CloseCode::ALL {
            assert!(c.reason().len() < 123, "close reasons must fit a control frame");
        }
    }
}
