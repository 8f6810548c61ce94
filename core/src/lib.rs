//! Herald's pure core: wire frames, validation, and the Room and Relay state
//! machines. Nothing here performs I/O or reads a clock; the Durable Object
//! glue in the `herald` crate feeds events in and carries actions out. That
//! keeps every decision testable natively, and keeps `worker` out of this
//! crate so host `cargo test` never calls into JavaScript.

pub mod abuse;
pub mod auth;
pub mod backoff;
pub mod batch;
pub mod body;
pub mod client_frame;
pub mod close_code;
pub mod config;
pub mod error;
pub mod faults;
pub mod history;
pub mod link;
pub mod outbox;
pub mod presence;
pub mod page;
pub mod region;
pub mod region_map;
pub mod relay;
pub mod room;
pub mod room_name;
pub mod server_frame;
pub mod rate;
pub mod single_flight;
pub mod sse;
pub mod webhook;

pub use client_frame::{
    parse_client_frame, parse_history_bounds, parse_http_publish, parse_presence_bounds, ClientFrame, FrameError, FrameLimits, HistoryQuery,
    Publish,
};
pub use close_code::CloseCode;
pub use config::{Config, ConfigError};
pub use error::{ErrorCode, Rejection};
pub use region::Region;
pub use room_name::validate_room;
