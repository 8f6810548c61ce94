//! What a relay does with one frame from a client socket: every decision
//! (token expiry, parsing, capabilities, the publish rate, strikes against
//! a client that keeps sending bad frames) in one place, as a verdict the
//! glue carries out.

use super::{Frame, RelayCore};
use crate::auth::{Capability, Grant};
use crate::client_frame::{parse_client_frame, ClientFrame, FrameLimits};
use crate::close_code::CloseCode;
use crate::error::{ErrorCode, Rejection};
use crate::link::{LinkPub, ReadCall};
use serde_json::value::RawValue;

/// Open connections from which a relay lets one turn of the event loop
/// pass before it forwards a publish that found no call in flight.
///
/// Why: a fan-out to N sockets runs without a break (about 35 µs a socket
/// locally), and publishes that arrive meanwhile wait in the runtime's
/// queue, not in the relay's. Without the pause the first of them went to
/// the Room alone and only the rest shared the next call, so under load
/// every other frame carried one message. With it, they all join one call,
/// the Room answers them as one batch frame, and each socket gets one send
/// for all of them. Below the threshold a fan-out is short, nothing has
/// piled up, and the pause would only add latency.
pub const GATHER_FROM_CONNECTIONS: u32 = 100;

/// Whether to let the event loop turn before forwarding publishes, given
/// the relay's open connections (see [`GATHER_FROM_CONNECTIONS`]).
pub fn gather_before_forwarding(open_connections: u32) -> bool {
    open_connections >= GATHER_FROM_CONNECTIONS
}

/// The verdict on one client frame.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// Answer `pong`.
    Pong,
    /// Read `history` for the client (it holds the capability).
    History { id: Option<&'a RawValue>, since: u64, limit: u64 },
    /// Read a page of the members for the client (it holds `presence`).
    Presence { id: Option<&'a RawValue>, cursor: Option<String>, limit: u64 },
    /// Forward the publish to the Room; the `ack` goes to `id`.
    Publish { id: Option<&'a RawValue>, publish: LinkPub },
    /// Forward `user`'s read mark to the Room; with an `id`, the `ack`
    /// carries the mark after it.
    Read { id: Option<&'a RawValue>, read: ReadCall },
    /// Send `err` with the rejection, then close with `close` if set (the
    /// client has sent too many bad frames lately).
    Refuse { id: Option<&'a RawValue>, rejection: Rejection, close: Option<CloseCode> },
    /// Close the socket: its token ran out.
    Close(CloseCode),
}

impl<F: Frame> RelayCore<F> {
    /// The refusal of a read (`history` or `presence` frame) past the
    /// connection's read bucket, if it is.
    fn limit_read<'a>(&mut self, now_ms: u64, conn: &str, id: Option<&'a RawValue>) -> Option<Inbound<'a>> {
        if self.allow_history(conn, now_ms) {
            return None;
        }
        let (rate, burst) = self.history_rate;
        let message = format!("over {rate} history reads/s (burst {burst}); slow down");
        Some(self.refusal(now_ms, conn, id, Rejection::new(ErrorCode::RateLimited, message)))
    }

    /// Decides what to do with `text` from connection `conn`, holding
    /// `grant`, at `now_ms`.
    pub fn handle_client_frame<'a>(
        &mut self,
        now_ms: u64,
        conn: &str,
        grant: &Grant,
        text: &'a str,
        limits: FrameLimits,
        skew_s: u64,
    ) -> Inbound<'a> {
        if grant.expired(now_ms / 1000, skew_s) {
            return Inbound::Close(CloseCode::TokenExpired);
        }
        match parse_client_frame(text, limits) {
            Ok(ClientFrame::Ping) => Inbound::Pong,
            Ok(ClientFrame::History(q)) => {
                if let Err(r) = grant.require(Capability::History) {
                    return self.refusal(now_ms, conn, q.id, r);
                }
                if let Some(refused) = self.limit_read(now_ms, conn, q.id) {
                    return refused;
                }
                Inbound::History { id: q.id, since: q.since, limit: q.limit }
            }
            Ok(ClientFrame::Presence(q)) => {
                if let Err(r) = grant.require(Capability::Presence) {
                    return self.refusal(now_ms, conn, q.id, r);
                }
                // A snapshot is a read at the Room like history: same bucket.
                if let Some(refused) = self.limit_read(now_ms, conn, q.id) {
                    return refused;
                }
                Inbound::Presence { id: q.id, cursor: q.cursor, limit: q.limit }
            }
            Ok(ClientFrame::Pub(p)) => {
                if let Err(r) = grant.require(Capability::Pub) {
                    return self.refusal(now_ms, conn, p.id, r);
                }
                if !self.allow_publish(conn, now_ms) {
                    let (rate, burst) = self.publish_rate;
                    let message = format!("over {rate} publishes/s (burst {burst}); slow down");
                    return self.refusal(now_ms, conn, p.id, Rejection::new(ErrorCode::RateLimited, message));
                }
                let publish = LinkPub { from: grant.user.clone(), data: p.data.to_owned(), mid: p.mid, eph: p.ephemeral };
                Inbound::Publish { id: p.id, publish }
            }
            Ok(ClientFrame::Read(r)) => {
                // A mark is the user's, shared by all their connections: an
                // anonymous reader has none to move.
                let Some(user) = grant.user.clone() else {
                    let message = "a read mark belongs to a user: connect with a token whose sub names one";
                    return self.refusal(now_ms, conn, r.id, Rejection::new(ErrorCode::Unauthorized, message));
                };
                // A read is a write at the Room that goes to every relay, as
                // a publish is: it draws on the publish bucket.
                if !self.allow_publish(conn, now_ms) {
                    let (rate, burst) = self.publish_rate;
                    let message = format!("over {rate} publishes and reads/s (burst {burst}); slow down");
                    return self.refusal(now_ms, conn, r.id, Rejection::new(ErrorCode::RateLimited, message));
                }
                Inbound::Read { id: r.id, read: ReadCall { user, seq: r.seq } }
            }
            Err(e) => self.refusal(now_ms, conn, e.id, e.rejection),
        }
    }

    /// An `err` for `conn`, and a close when it is the client's fault and it
    /// has gone over its allowance of bad frames. Server-side refusals
    /// (overloaded, internal) are never the client's strike.
    pub fn refusal<'a>(&mut self, now_ms: u64, conn: &str, id: Option<&'a RawValue>, rejection: Rejection) -> Inbound<'a> {
        let client_fault = matches!(rejection.code, ErrorCode::BadFrame | ErrorCode::TooLarge);
        let close = if client_fault { self.bad_frame(conn, now_ms, rejection.code) } else { None };
        Inbound::Refuse { id, rejection, close }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_relay_gathers_publishes_only_behind_a_large_fan_out() {
        assert!(!super::gather_before_forwarding(0));
        assert!(!super::gather_before_forwarding(super::GATHER_FROM_CONNECTIONS - 1));
        assert!(super::gather_before_forwarding(super::GATHER_FROM_CONNECTIONS));
        assert!(super::gather_before_forwarding(u32::MAX));
    }

    use super::*;
    use crate::auth::CapabilitySet;
    use crate::region::Region;

    fn relay() -> RelayCore<String> {
        RelayCore::new("room", Region::Weur, 1, "n".into(), 1)
    }

    fn grant(caps: &[Capability], exp: Option<u64>) -> Grant {
        let caps = caps.iter().fold(CapabilitySet::default(), |set, c| set.with(*c));
        Grant { user: Some("ana".into()), caps, expires_s: exp, info: None }
    }

    const LIMITS: FrameLimits = FrameLimits { max_bytes: 1024, max_depth: 8 };

    #[test]
    fn verdicts() {
        let mut r = relay();
        let all = grant(&[Capability::Sub, Capability::Pub, Capability::History], None);
        assert!(matches!(r.handle_client_frame(0, "c", &all, "ping", LIMITS, 2), Inbound::Pong));
        let h = r.handle_client_frame(0, "c", &all, r#"{"t":"history","id":1,"since":3}"#, LIMITS, 2);
        assert!(matches!(h, Inbound::History { since: 3, .. }), "{h:?}");
        match r.handle_client_frame(0, "c", &all, r#"{"t":"pub","id":"a","data":{"x":1}}"#, LIMITS, 2) {
            Inbound::Publish { id, publish } => {
                assert_eq!(id.map(RawValue::get), Some(r#""a""#));
                assert_eq!((publish.from.as_deref(), publish.data.get()), (Some("ana"), r#"{"x":1}"#));
            }
            other => panic!("{other:?}"),
        }
        let reader = grant(&[Capability::Sub], None);
        let refused = r.handle_client_frame(0, "c", &reader, r#"{"t":"pub","data":1}"#, LIMITS, 2);
        assert!(matches!(refused, Inbound::Refuse { close: None, ref rejection, .. } if rejection.code == ErrorCode::Forbidden), "{refused:?}");
        let expired = grant(&[Capability::Sub], Some(10));
        assert!(matches!(r.handle_client_frame(13_000, "c", &expired, "ping", LIMITS, 2), Inbound::Close(CloseCode::TokenExpired)));
        let far = grant(&[Capability::Sub], Some(u64::MAX));
        assert!(matches!(r.handle_client_frame(13_000, "c", &far, "ping", LIMITS, 2), Inbound::Pong), "exp = u64::MAX is the far future");
    }

    #[test]
    fn history_reads_are_limited_per_connection_with_the_id() {
        let mut r = relay();
        r.set_history_rate(1, 2);
        let all = grant(&[Capability::Sub, Capability::History], None);
        let ask = |r: &mut RelayCore<String>, conn: &str, now: u64| match r.handle_client_frame(now, conn, &all, r#"{"t":"history","id":"q"}"#, LIMITS, 2) {
            Inbound::History { .. } => Ok(()),
            Inbound::Refuse { id, rejection, close } => Err((id.map(|i| i.get().to_owned()), rejection.code, close)),
            other => panic!("{other:?}"),
        };
        assert_eq!((ask(&mut r, "c", 0), ask(&mut r, "c", 0)), (Ok(()), Ok(())), "the burst");
        assert_eq!(ask(&mut r, "c", 0), Err((Some(r#""q""#.to_owned()), ErrorCode::RateLimited, None)), "refused with its id, socket kept");
        assert!((0..20).all(|i| ask(&mut r, "c", i).is_err()), "refusals are not strikes: never closed, never admitted");
        assert_eq!(ask(&mut r, "d", 0), Ok(()), "another connection has its own bucket");
        assert_eq!(ask(&mut r, "c", 1_000), Ok(()), "one read a second");
        let publisher = grant(&[Capability::Pub], None);
        assert!(matches!(r.handle_client_frame(1_000, "c", &publisher, r#"{"t":"pub","data":1}"#, LIMITS, 2), Inbound::Publish { .. }), "publishes have their own bucket");
        r.closed("c");
        assert_eq!((ask(&mut r, "c", 1_000), ask(&mut r, "c", 1_000)), (Ok(()), Ok(())), "a new connection starts full");
    }

    #[test]
    fn reads_need_a_user_and_share_the_publish_bucket() {
        let mut r = relay();
        r.set_publish_rate(1, 2);
        let ana = grant(&[Capability::Sub], None);
        match r.handle_client_frame(0, "c", &ana, r#"{"t":"read","id":1,"seq":3}"#, LIMITS, 2) {
            Inbound::Read { id, read } => assert_eq!((id.map(RawValue::get), read), (Some("1"), ReadCall { user: "ana".into(), seq: 3 })),
            other => panic!("{other:?}"),
        }
        let anon = Grant { user: None, ..ana.clone() };
        let refused = r.handle_client_frame(0, "d", &anon, r#"{"t":"read","id":2,"seq":3}"#, LIMITS, 2);
        assert!(
            matches!(refused, Inbound::Refuse { close: None, ref rejection, id: Some(id) } if rejection.code == ErrorCode::Unauthorized && id.get() == "2"),
            "{refused:?}"
        );
        let publisher = grant(&[Capability::Sub, Capability::Pub], None);
        assert!(matches!(r.handle_client_frame(0, "c", &publisher, r#"{"t":"pub","data":1}"#, LIMITS, 2), Inbound::Publish { .. }));
        let limited = r.handle_client_frame(0, "c", &ana, r#"{"t":"read","seq":4}"#, LIMITS, 2);
        assert!(matches!(limited, Inbound::Refuse { ref rejection, .. } if rejection.code == ErrorCode::RateLimited), "{limited:?}");
        let bad = r.handle_client_frame(0, "c", &ana, r#"{"t":"read","seq":-4}"#, LIMITS, 2);
        assert!(matches!(bad, Inbound::Refuse { ref rejection, .. } if rejection.code == ErrorCode::BadFrame), "{bad:?}");
    }

    #[test]
    fn sustained_bad_frames_close_and_rate_is_limited() {
        let mut r = relay();
        r.set_publish_rate(1, 1);
        let all = grant(&[Capability::Sub, Capability::Pub], None);
        assert!(matches!(r.handle_client_frame(0, "c", &all, r#"{"t":"pub","data":1}"#, LIMITS, 2), Inbound::Publish { .. }));
        let limited = r.handle_client_frame(0, "c", &all, r#"{"t":"pub","data":1}"#, LIMITS, 2);
        assert!(matches!(limited, Inbound::Refuse { close: None, ref rejection, .. } if rejection.code == ErrorCode::RateLimited), "{limited:?}");
        let verdicts: Vec<Option<CloseCode>> = (0..=crate::abuse::MAX_STRIKES)
            .map(|i| match r.handle_client_frame(u64::from(i), "c", &all, "{nope", LIMITS, 2) {
                Inbound::Refuse { close, .. } => close,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(verdicts[..verdicts.len() - 1].iter().all(Option::is_none));
        assert_eq!(verdicts.last(), Some(&Some(CloseCode::PolicyViolation)));
        let overloaded = r.refusal(20, "c", None, Rejection::new(ErrorCode::Overloaded, "busy"));
        assert!(matches!(overloaded, Inbound::Refuse { close: None, .. }), "not the client's strike");
    }
}
