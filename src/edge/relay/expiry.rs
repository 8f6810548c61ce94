//! Token expiry: a socket whose token runs out is closed with 4001, on its
//! next frame or, if it stays silent, by the relay's alarm.

use super::attachment::attachment;
use super::RelayInner;
use crate::edge::js;
use herald_core::auth::Grant;
use herald_core::close_code::CloseCode;
use wasm_bindgen::JsValue;
use worker::console_error;

impl RelayInner {
    /// Sets the alarm for this grant's expiry if it is earlier than the one
    /// set. The deadline is the core's (saturating: an `exp` in the far
    /// future needs no alarm).
    pub(super) async fn schedule_expiry(&self, grant: &Grant) {
        let Ok(skew) = self.config().map(|c| c.clock_skew_s) else { return };
        let Some(at_ms) = grant.expiry_deadline_ms(skew) else { return };
        let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
        if self.alarm_at.get().is_some_and(|set| set <= at_ms) {
            return;
        }
        let storage = self.state.storage();
        let current = storage.get_alarm().await.ok().flatten();
        if current.is_none_or(|c| at_ms < c) {
            let when = worker::ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at_ms as f64)));
            match storage.set_alarm(when).await {
                Ok(()) => self.alarm_at.set(Some(at_ms)),
                Err(e) => console_error!("relay: set alarm: {e}"),
            }
        } else {
            self.alarm_at.set(current);
        }
    }

    /// The alarm: close sockets whose tokens expired, then set the alarm for
    /// the next expiry.
    pub(super) async fn expire_silent(&self) {
        let now_s = js::now_ms() / 1000;
        let Ok(skew) = self.config().map(|c| c.clock_skew_s) else { return };
        let mut next: Option<Grant> = None;
        for ws in self.state.get_websockets() {
            let Some(grant) = attachment(&ws).map(|a| a.grant()) else { continue };
            if grant.expired(now_s, skew) {
                let close = CloseCode::TokenExpired;
                let _ = ws.close(Some(close.code()), Some(close.reason()));
            } else if grant.expires_s.is_some() && next.as_ref().is_none_or(|n| grant.expires_s < n.expires_s) {
                next = Some(grant);
            }
        }
        if let Some(grant) = next {
            self.schedule_expiry(&grant).await;
        }
    }
}
