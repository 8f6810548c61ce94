//! HTTP plumbing shared by the router and the objects: JSON responses,
//! error bodies, and the internal stub calls of the Relay ↔ Room link.

use herald_core::{ErrorCode, Rejection};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};
use worker::{Headers, Method, Request, Response, Result, Stub};

/// A JSON response with `status`.
pub fn json_text(body: String, status: u16) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(body)?.with_status(status).with_headers(headers))
}

/// Serializes `value` as a 200 JSON response.
pub fn json<T: Serialize>(value: &T) -> Result<Response> {
    json_text(serde_json::to_string(value)?, 200)
}

/// The documented error response: `{"error":CODE,"message":TEXT}` with the
/// code's status.
pub fn reject(rejection: &Rejection) -> Result<Response> {
    json_text(rejection.http_body(), rejection.code.http_status())
}

pub fn reject_with(code: ErrorCode, message: impl Into<String>) -> Result<Response> {
    reject(&Rejection::new(code, message))
}

/// Internal calls carry a placeholder host: a stub routes by object, not URL.
pub fn internal_url(path: &str) -> String {
    format!("https://herald.internal{path}")
}

/// Builds an internal request with a body (a JS string) and headers.
pub fn internal_request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<JsValue>,
) -> Result<Request> {
    let h = Headers::new();
    for (k, v) in headers {
        h.set(k, v)?;
    }
    new_request(method, &internal_url(path), &h, body.as_ref())
}

/// A request, built on the runtime's own `RequestInit`. `worker`'s
/// `RequestInit` carries `cf` options (image resizing and the rest), whose
/// conversion code then sits in the `.wasm` though no request of ours sets
/// one.
pub fn new_request(method: Method, url: &str, headers: &Headers, body: Option<&JsValue>) -> Result<Request> {
    let init = worker::web_sys::RequestInit::new();
    init.set_method(method.as_ref());
    init.set_headers(headers.as_ref());
    if let Some(body) = body {
        init.set_body(body);
    }
    let req = worker::web_sys::Request::new_with_str_and_init(url, &init)
        .map_err(|e| worker::Error::JsError(e.as_string().unwrap_or_else(|| format!("invalid request for {url}"))))?;
    Ok(Request::from(req))
}

/// POSTs `body` as JSON to a stub and decodes the JSON answer; a non-2xx
/// answer is an error carrying its body.
pub async fn call_json<B: Serialize, T: DeserializeOwned>(
    stub: &Stub,
    path: &str,
    headers: &[(&str, &str)],
    body: &B,
) -> Result<T> {
    let answer = post_for_js_text(stub, path, headers, serde_json::to_string(body)?).await?;
    Ok(serde_json::from_str(&String::from(answer))?)
}

/// POSTs `text` (JSON) and returns the answer as a JS string, not yet
/// copied into Rust: a caller that passes part of it on (a frame for the
/// sockets) takes out only what it must read.
pub async fn post_for_js_text(stub: &Stub, path: &str, headers: &[(&str, &str)], text: String) -> Result<js_sys::JsString> {
    let req = internal_request(Method::Post, path, headers, Some(JsValue::from_str(&text)))?;
    let resp = stub.fetch_with_request(req).await?;
    let status = resp.status_code();
    let answer = js_text(&resp).await?;
    if !(200..300).contains(&status) {
        return Err(worker::Error::RustError(format!("{path} answered {status}: {}", String::from(answer))));
    }
    Ok(answer)
}

/// A fetch answer's body as a JS string, read in JS: text that is only
/// passed on (frames for sockets) never crosses into Rust, and there is
/// one body reader for every internal call. (worker's own conversion to a
/// `web_sys::Response` unwraps.)
pub async fn js_text(resp: &Response) -> Result<js_sys::JsString> {
    match resp.body() {
        worker::ResponseBody::Stream(stream) => {
            let js = worker::web_sys::Response::new_with_opt_readable_stream(Some(stream)).map_err(worker::Error::from)?;
            let text = wasm_bindgen_futures::JsFuture::from(js.text().map_err(worker::Error::from)?)
                .await
                .map_err(worker::Error::from)?;
            Ok(js_sys::JsString::from(text))
        }
        // A fetch's body is a stream or nothing.
        _ => Ok(js_sys::JsString::from("")),
    }
}

/// Decodes a JSON request body with serde_json. (`Request::json` goes through
/// `serde_wasm_bindgen`, which cannot produce the `RawValue` payloads.)
pub async fn read_json<T: DeserializeOwned>(req: &mut Request) -> Result<T> {
    let text = req.text().await?;
    Ok(serde_json::from_str(&text)?)
}

/// A request body from outside, read as a stream and bounded by `max`
/// bytes (`herald_core::body`): a declared `Content-Length` over `max` is
/// refused before anything is read, and any other body is read chunk by
/// chunk and refused as soon as more than `max` bytes have arrived, so a
/// body without a length (chunked) is never held past the limit. On a
/// refusal the stream is cancelled: the rest is not read, and the runtime
/// knows it never will be (`wrangler dev` otherwise drains an untouched
/// body before it lets the answer out). `Ok(Err(_))` is the refusal to
/// answer with [`reject`]; `Err` is the runtime failing. Every route that
/// reads a client's body reads it here.
pub async fn read_body_bounded(req: &Request, max: usize) -> Result<std::result::Result<String, Rejection>> {
    let declared = req.headers().get("content-length")?;
    let stream = req.inner().body();
    if let Err(r) = herald_core::body::check_declared_length(declared.as_deref(), max) {
        if let Some(stream) = stream {
            // A cancel that fails changes nothing for the answer.
            let _ = wasm_bindgen_futures::JsFuture::from(stream.cancel()).await;
        }
        return Ok(Err(r));
    }
    let mut body = herald_core::body::BoundedBody::new(max);
    let Some(stream) = stream else {
        return Ok(Ok(body.into_text()));
    };
    let reader = worker::web_sys::ReadableStreamDefaultReader::new(&stream)?;
    loop {
        let step = wasm_bindgen_futures::JsFuture::from(reader.read()).await?;
        if js_sys::Reflect::get(&step, &JsValue::from_str("done"))?.is_truthy() {
            return Ok(Ok(body.into_text()));
        }
        let chunk: js_sys::Uint8Array = js_sys::Reflect::get(&step, &JsValue::from_str("value"))?
            .dyn_into()
            .map_err(|_| worker::Error::RustError("a request body chunk is not bytes".into()))?;
        // `fill` gets a slice of exactly `chunk.length()` bytes.
        if let Err(r) = body.push_with(chunk.length() as usize, |dst| chunk.copy_to(dst)) {
            let _ = wasm_bindgen_futures::JsFuture::from(reader.cancel()).await;
            return Ok(Err(r));
        }
    }
}

/// A request header as a string, or an internal error naming it.
pub fn header(req: &Request, name: &str) -> Result<String> {
    req.headers()
        .get(name)?
        .ok_or_else(|| worker::Error::RustError(format!("missing header {name}")))
}
