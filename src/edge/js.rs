//! Small JavaScript bindings the `worker` crate does not offer without
//! copying strings or unwrapping.

use js_sys::{Math, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::WebSocket;

#[wasm_bindgen]
extern "C" {
    /// A socket seen only through its `send`, so one JS string can be handed
    /// to every socket without crossing back into wasm memory.
    type SendTarget;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_value(this: &SendTarget, data: &JsValue) -> Result<(), JsValue>;

    #[wasm_bindgen(method, getter, js_name = bufferedAmount)]
    fn buffered_amount_value(this: &SendTarget) -> JsValue;

    #[wasm_bindgen(method, catch, js_name = serializeAttachment)]
    fn serialize_attachment_value(this: &SendTarget, value: &JsValue) -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = deserializeAttachment)]
    fn deserialize_attachment_value(this: &SendTarget) -> Result<JsValue, JsValue>;
}

/// Stores a string as the socket's attachment. `worker`'s own
/// `serialize_attachment` takes any `Serialize` value through
/// `serde_wasm_bindgen`; a string needs none of that.
pub fn set_attachment_text(ws: &WebSocket, text: &str) -> Result<(), JsValue> {
    let raw: &web_sys_socket::Socket = ws.as_ref();
    raw.unchecked_ref::<SendTarget>().serialize_attachment_value(&JsValue::from_str(text))
}

/// The socket's attachment, when it is a string.
pub fn attachment_text(ws: &WebSocket) -> Option<String> {
    let raw: &web_sys_socket::Socket = ws.as_ref();
    raw.unchecked_ref::<SendTarget>().deserialize_attachment_value().ok()?.as_string()
}

/// Sends one JS string to a socket. A socket that is closing throws; that is
/// not an error for the others, so the result is only reported.
pub fn send_shared(ws: &WebSocket, frame: &JsValue) -> bool {
    let raw: &web_sys_socket::Socket = ws.as_ref();
    raw.unchecked_ref::<SendTarget>().send_value(frame).is_ok()
}

/// Bytes queued on a socket and not yet handed to the network (0 where the
/// runtime does not say).
pub fn buffered_amount(ws: &WebSocket) -> usize {
    let raw: &web_sys_socket::Socket = ws.as_ref();
    raw.unchecked_ref::<SendTarget>().buffered_amount_value().as_f64().map_or(0, |n| n.max(0.0) as usize)
}

/// Whether two handles name the same socket.
pub fn same_socket(a: &WebSocket, b: &WebSocket) -> bool {
    let (a, b): (&web_sys_socket::Socket, &web_sys_socket::Socket) = (a.as_ref(), b.as_ref());
    js_sys::Object::is(a, b)
}

/// `web_sys::WebSocket` as the `worker` crate re-exports it.
mod web_sys_socket {
    pub use worker::worker_sys::web_sys::WebSocket as Socket;
}

/// `readyState == OPEN`, read without the `web_sys` feature flag.
pub fn is_open(ws: &WebSocket) -> bool {
    let raw: &web_sys_socket::Socket = ws.as_ref();
    Reflect::get(raw, &JsValue::from_str("readyState"))
        .ok()
        .and_then(|v| v.as_f64())
        .is_some_and(|state| state == 1.0)
}

/// A short random tag, for connection ids and epochs. `Math.random` is
/// enough: these only need to differ, not to be secret.
pub fn random_tag(chars: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..chars)
        .map(|_| {
            let i = (Math::random() * ALPHABET.len() as f64) as usize;
            char::from(ALPHABET[i.min(ALPHABET.len() - 1)])
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

/// Reads `request.cf.{continent,country,longitude}` defensively: the
/// `worker` crate's `Cf` accessors unwrap, and `cf` is absent locally.
pub fn cf_location(req: &worker::Request) -> (Option<String>, Option<String>, Option<f64>) {
    let cf = Reflect::get(req.inner(), &JsValue::from_str("cf")).unwrap_or(JsValue::UNDEFINED);
    if !cf.is_object() {
        return (None, None, None);
    }
    let field = |name: &str| Reflect::get(&cf, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    let longitude = {
        let v = field("longitude");
        v.as_f64().or_else(|| v.as_string().and_then(|s| s.parse().ok()))
    };
    (field("continent").as_string(), field("country").as_string(), longitude)
}

/// Percent-encodes a query value (epochs are plain, but never trust that).
pub fn url_encode(s: &str) -> String {
    js_sys::encode_uri_component(s).as_string().unwrap_or_default()
}
