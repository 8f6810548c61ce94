//! Herald: edge pub/sub on Cloudflare Durable Objects.
#[cfg(target_arch = "wasm32")]
mod edge;
