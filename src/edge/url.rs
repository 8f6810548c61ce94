//! A request's URL, read with the runtime's own WHATWG `URL` parser.
//!
//! Why not `worker::Request::url()`: it parses with the `url` crate, which
//! brings `idna` and ICU's normalisation tables into the `.wasm` (about
//! 60 KB of code plus their data; docs/BENCHMARKS.md, "What the .wasm
//! holds"). The runtime already holds a parser that follows the same
//! standard, so the path, the host and `URLSearchParams.get` (the first
//! value of a name, `+` read as a space, as `url`'s `query_pairs` did) come
//! from it, with no table in the module.

use wasm_bindgen::prelude::*;
use worker::{Error, Request, Result};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = URL)]
    type JsUrl;

    #[wasm_bindgen(constructor, catch, js_class = "URL")]
    fn new(url: &str) -> std::result::Result<JsUrl, JsValue>;

    #[wasm_bindgen(method, getter)]
    fn pathname(this: &JsUrl) -> String;

    #[wasm_bindgen(method, getter)]
    fn hostname(this: &JsUrl) -> String;

    #[wasm_bindgen(method, getter, js_name = searchParams)]
    fn search_params(this: &JsUrl) -> SearchParams;

    type SearchParams;

    #[wasm_bindgen(method)]
    fn get(this: &SearchParams, name: &str) -> Option<String>;
}

/// A parsed request URL.
pub struct Url {
    url: JsUrl,
    params: SearchParams,
}

impl Url {
    /// The URL of `req`. The runtime hands every request an absolute URL,
    /// so a failure here is the runtime's, not the client's.
    pub fn of(req: &Request) -> Result<Url> {
        let url = JsUrl::new(&req.inner().url()).map_err(Error::from)?;
        let params = url.search_params();
        Ok(Url { url, params })
    }

    /// The path, percent-encoded as it came.
    pub fn path(&self) -> String {
        self.url.pathname()
    }

    /// The host name, without the port (`[::1]` for IPv6).
    pub fn host(&self) -> String {
        self.url.hostname()
    }

    /// The first value of the query parameter `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params.get(name)
    }

    /// A parameter an internal caller must send, as a number: its absence
    /// is a bug in the caller, reported with the name.
    pub fn required_u64(&self, name: &str) -> Result<u64> {
        self.param(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::RustError(format!("query parameter {name} missing or not a number")))
    }

    /// An optional numeric parameter; present but not a number is an error.
    pub fn optional_u64(&self, name: &str) -> Result<Option<u64>> {
        self.param(name)
            .map(|v| v.parse().map_err(|_| Error::RustError(format!("query parameter {name} is not a number"))))
            .transpose()
    }
}
