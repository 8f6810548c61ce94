//! Deliveries from the Room and the core's actions: fan-out to every socket
//! and stream, gap repairs read from the Room, the persisted position, and
//! the answers to `deliver` calls. The core decides each of these; this
//! file only carries them out.

use super::{position, queued_bytes, JsFrame, RelayInner, DEFAULT_WS_BUFFER_BOUND};
use crate::edge::http::json;
use crate::edge::js;
use crate::edge::link_client::delivery_head;
use herald_core::relay::{user_tag, RelayAction};
use super::attachment::attachment;
use super::admission::{TAG_PRESENCE, TAG_PRESENCE_COUNTS};
use herald_core::presence::Audience;
use herald_core::{sse, CloseCode};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{console_error, Request, Response, Result};

impl RelayInner {
    /// A `deliver` call from the Room: hand it to the core, carry out what
    /// follows, and answer once the core says the delivery is done (applied,
    /// or given back unapplied) with the report whose ack says which.
    pub(super) async fn deliver(self: Rc<Self>, req: Request) -> Result<Response> {
        self.ensure_core(Some(&req))?;
        let head = delivery_head(&req)?;
        // The body stays a JS string: it is sent to every socket as is.
        let body = JsFuture::from(req.inner().text().map_err(worker::Error::from)?).await.map_err(worker::Error::from)?;
        // Its length is read in JS: copying the frame into Rust just to see
        // whether it is empty (a sync carries none) would cost a copy per
        // delivery.
        let empty = body.dyn_ref::<js_sys::JsString>().is_none_or(|s| s.length() == 0);
        let frame = (!empty).then_some(JsFrame(body));
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        let (done, answered) = futures::channel::oneshot::channel();
        self.answers.borrow_mut().push((token, done));
        self.with_core(|c| c.handle_delivery(Some(token), head, frame))?;
        self.pump();
        // A dropped sender (the object failing meanwhile) answers too: the
        // report then acknowledges only what was applied.
        let _ = answered.await;
        let open = self.open_connections();
        json(&self.with_core(|c| c.report(open))?)
    }

    /// Carries out the core's actions until it has none. Reads run as tasks
    /// that feed their answer back and pump again.
    pub(super) fn pump(self: &Rc<Self>) {
        loop {
            let action = match self.with_core(|c| c.poll_action()) {
                Ok(Some(action)) => action,
                Ok(None) => return,
                Err(e) => {
                    console_error!("relay: {e}");
                    return;
                }
            };
            match action {
                RelayAction::FanOut(JsFrame(frame)) => self.fan_out(&frame),
                RelayAction::FanOutPresence(JsFrame(frame), audience) => self.fan_out_presence(&frame, audience),
                RelayAction::SendToUser { user, frame: JsFrame(frame) } => self.send_to_user(&user, &frame),
                RelayAction::SavePosition(saved) => {
                    if let Err(e) = position::save(&self.state.storage().sql(), &saved) {
                        console_error!("relay: saving the position: {e}");
                    }
                }
                RelayAction::Answer { token } => {
                    let mut answers = self.answers.borrow_mut();
                    if let Some(at) = answers.iter().position(|(t, _)| *t == token) {
                        let (_, done) = answers.swap_remove(at);
                        drop(answers);
                        let _ = done.send(());
                    }
                }
                RelayAction::ReadRange { after, upto } => {
                    let this = Rc::clone(self);
                    wasm_bindgen_futures::spawn_local(async move {
                        let read = async { this.room_link()?.range(after, upto, None).await }.await;
                        let fed = match read {
                            Ok((head, frame)) => this.with_core(|c| c.handle_range(head, frame.map(JsFrame))),
                            Err(e) => {
                                console_error!("relay: repair {after}..{upto} failed: {e}");
                                this.with_core(|c| c.handle_range_failed())
                            }
                        };
                        if fed.is_ok() {
                            this.pump();
                        }
                    });
                }
            }
        }
    }

    /// A presence frame to the sockets that subscribed to it.
    fn fan_out_presence(&self, frame: &wasm_bindgen::JsValue, audience: Audience) {
        let tags: &[&str] = match audience {
            Audience::Full => &[TAG_PRESENCE],
            Audience::CountsOnly => &[TAG_PRESENCE_COUNTS],
            Audience::All => &[TAG_PRESENCE, TAG_PRESENCE_COUNTS],
        };
        // Sockets still replaying history get presence too: it is not part
        // of the message stream, and a snapshot they asked for meanwhile is
        // answered at once, so the events after it must not be held back.
        // Each socket gets it once at most: counted once for the watch.
        self.buffer_watch.borrow_mut().sent_one(queued_bytes(frame));
        for tag in tags {
            for ws in self.state.get_websockets_with_tag(tag) {
                js::send_shared(&ws, frame);
            }
        }
    }

    /// A frame for one user's sockets (found by their tag, without walking
    /// the others) and live SSE streams: their read mark moved.
    fn send_to_user(self: &Rc<Self>, user: &str, frame: &wasm_bindgen::JsValue) {
        let mut sent = 0u64;
        self.buffer_watch.borrow_mut().sent_one(queued_bytes(frame));
        for ws in self.state.get_websockets_with_tag(&user_tag(user)) {
            // The tag is a hash: the attachment says whose socket it is.
            if attachment(&ws).is_some_and(|a| a.from.as_deref() == Some(user)) && js::send_shared(&ws, frame) {
                sent += 1;
            }
        }
        let _ = self.with_core(|c| c.sent(sent));
        let has_stream = self.sse.borrow().iter().any(|c| c.user.as_deref() == Some(user));
        if has_stream {
            if let Some(text) = frame.as_string() {
                self.write_sse_for(&sse::event("read", &text), Some(user));
            }
        }
    }

    /// One JS string to every socket, and its events to every SSE stream.
    /// A socket that is closing throws on `send`, so the sockets reached are
    /// the open count `open_connections` would find (plus those still
    /// catching up, which are passed by). A socket whose client has left
    /// more than `HERALD_WS_MAX_BUFFER_BYTES` unread is closed with 4002:
    /// its client reconnects and resumes, and the relay's memory stays
    /// bounded. The sockets' buffers are read only when the buffer watch
    /// says one could be over the bound (one runtime call per socket
    /// saved on every other fan-out).
    fn fan_out(self: &Rc<Self>, frame: &wasm_bindgen::JsValue) {
        let bound = self.config().map_or(DEFAULT_WS_BUFFER_BOUND, |c| c.ws_max_buffer_bytes);
        let size = queued_bytes(frame);
        let read = self.buffer_watch.borrow().must_read(size);
        let catching = self.catching_up.borrow();
        let mut sent = 0u32;
        // The most an open socket holds (for the watch), and the most any
        // held, those just closed included (for stats).
        let (mut peak, mut seen) = (0, 0);
        let mut slow = 0u64;
        for ws in self.state.get_websockets() {
            if !catching.is_empty() && catching.iter().any(|c| js::same_socket(c, &ws)) {
                continue;
            }
            if !js::send_shared(&ws, frame) {
                continue;
            }
            sent += 1;
            if !read {
                continue;
            }
            let buffered = js::buffered_amount(&ws);
            seen = seen.max(buffered);
            if buffered > bound {
                let code = CloseCode::TooSlow;
                let _ = ws.close(Some(code.code()), Some(code.reason()));
                slow += 1;
            } else {
                peak = peak.max(buffered);
            }
        }
        let open = sent.saturating_add(u32::try_from(catching.len()).unwrap_or(u32::MAX));
        drop(catching);
        let mut watch = self.buffer_watch.borrow_mut();
        if read {
            watch.read_all(peak);
        } else {
            watch.fanned_out(size);
        }
        drop(watch);
        let _ = self.with_core(|c| {
            c.sent(u64::from(sent));
            if read {
                c.saw_buffer(seen);
            }
            (0..slow).for_each(|_| c.slow_closed());
        });
        self.open_sockets.set(Some(open));
        if !self.sse.borrow().is_empty() {
            let epoch = self.with_core(|c| c.epoch().unwrap_or_default().to_owned()).unwrap_or_default();
            if let Some(text) = frame.as_string() {
                self.write_sse(&sse::delivery_events(&text, &epoch));
            }
        }
    }
}
