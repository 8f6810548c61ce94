//! What a socket carries through hibernation. Versioned and namespaced so a
//! later layout can read an older one.
//!
//! It is stored as JSON text: one string for the runtime to clone, and read
//! back with the same `serde_json` code as every frame, rather than an object
//! walked key by key through `serde_wasm_bindgen`.

use herald_core::auth::{CapabilitySet, Grant};
use serde::{Deserialize, Serialize};
use worker::WebSocket;

pub const ATTACHMENT_VERSION: u8 = 1;
/// The runtime's limit on a serialized attachment, less a margin for its
/// own encoding.
const MAX_ATTACHMENT_BYTES: usize = 1900;

#[derive(Serialize, Deserialize)]
pub struct Attachment {
    pub herald: u8,
    pub conn: String,
    /// The user (`sub`), `None` for an anonymous reader.
    pub from: Option<String>,
    pub caps: CapabilitySet,
    /// Token expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// The key its connection counts under (`herald_core::relay::user_key`).
    #[serde(default)]
    pub key: Option<String>,
    /// The token's `info` (JSON text), for presence after a wake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

impl Attachment {
    pub fn new(conn: String, grant: &Grant, key: String) -> Self {
        Attachment {
            herald: ATTACHMENT_VERSION,
            conn,
            from: grant.user.clone(),
            caps: grant.caps,
            exp: grant.expires_s,
            key: Some(key),
            info: grant.info.clone(),
        }
    }

    /// Who this connection is in presence: its user, or for an anonymous
    /// reader the connection itself.
    pub fn member(&self) -> &str {
        self.from.as_deref().unwrap_or(&self.conn)
    }

    /// The user key, for attachments written before it was stored too.
    pub fn user_key(&self) -> String {
        self.key.clone().unwrap_or_else(|| herald_core::relay::user_key(self.from.as_deref(), None))
    }

    pub fn grant(&self) -> Grant {
        Grant { user: self.from.clone(), caps: self.caps, expires_s: self.exp, info: None }
    }
}

/// The socket's attachment, if it is one this version wrote.
pub fn attachment(ws: &WebSocket) -> Option<Attachment> {
    let text = crate::edge::js::attachment_text(ws)?;
    serde_json::from_str::<Attachment>(&text).ok().filter(|a| a.herald == ATTACHMENT_VERSION)
}

/// Stores the attachment on its socket, serialized once (twice only when
/// it is too large).
pub fn attach(ws: &WebSocket, mut attachment: Attachment) -> worker::Result<()> {
    let mut text = serde_json::to_string(&attachment)?;
    // The runtime holds at most 2,048 bytes per attachment. The `info` is
    // what gives way: past the limit, presence after a wake shows the
    // member with `info: null` rather than the connect failing.
    if text.len() > MAX_ATTACHMENT_BYTES {
        attachment.info = None;
        text = serde_json::to_string(&attachment)?;
    }
    crate::edge::js::set_attachment_text(ws, &text).map_err(worker::Error::from)
}
