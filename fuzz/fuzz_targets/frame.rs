//! Any bytes as a socket frame, an HTTP publish body or a batch publish
//! body: parsed or refused with a documented error, never a panic.
#![no_main]

use herald_core::{parse_client_frame, parse_http_publish, FrameLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let limits = FrameLimits::default();
    let _ = parse_client_frame(&text, limits);
    let _ = parse_http_publish(&text, limits);
    let _ = herald_core::batch::parse_batch(&text, herald_core::batch::BatchLimits::default());
});
