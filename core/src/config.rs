//! Settings read from `[vars]` (and `--var` overrides), parsed once per
//! request path into typed values so a typo fails loudly instead of silently
//! running with a default.

use crate::auth::RoomPatterns;
use crate::client_frame::FrameLimits;
use crate::region::Region;

/// Herald's tunables. Every field has a documented `[vars]` entry in
/// `wrangler.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HERALD_DEFAULT_REGION`: where clients land when `cf` says nothing.
    pub default_region: Region,
    /// `HERALD_TRUST_REGION_PARAM`: honour `?region=` (local dev and tests).
    pub trust_region_param: bool,
    /// `HERALD_MAX_FRAME_BYTES`: the largest client frame or HTTP body.
    pub max_frame_bytes: usize,
    /// `HERALD_MAX_DEPTH`: the deepest nesting allowed in `data`.
    pub max_depth: usize,
    /// `HERALD_HISTORY_MAX`: most messages a room keeps.
    pub history_max: u64,
    /// `HERALD_HISTORY_TTL_S`: how long a room keeps a message, in seconds.
    pub history_ttl_s: u64,
    /// `HERALD_DEDUP_WINDOW_S`: how long a `mid` is remembered, in seconds.
    pub dedup_window_s: u64,
    /// `HERALD_SSE_HEARTBEAT_S`: seconds between heartbeat comments on SSE.
    pub sse_heartbeat_s: u64,
    /// `HERALD_SSE_MAX_BUFFER_BYTES`: how far (in bytes not yet taken) an
    /// SSE stream may fall behind before the relay ends it.
    pub sse_max_buffer_bytes: usize,
    /// `HERALD_WS_MAX_BUFFER_BYTES`: the most a socket's `bufferedAmount`
    /// may reach before the relay closes it with 4002.
    pub ws_max_buffer_bytes: usize,
    /// `HERALD_CLOCK_SKEW_S`: clock difference allowed on token times.
    pub clock_skew_s: u64,
    /// `HERALD_PUBLIC_ROOMS`: rooms anyone may subscribe to without a token.
    pub public_rooms: RoomPatterns,
    /// `HERALD_DEMO_ROOMS`: rooms `GET /v1/demo/token` hands guest tokens
    /// for; empty (the default, and production) turns the endpoint off.
    /// Even when set it answers loopback hosts only (see
    /// [`crate::auth::demo`]).
    pub demo_rooms: RoomPatterns,
    /// `HERALD_PUB_RATE`: publishes per second per connection.
    pub pub_rate: u32,
    /// `HERALD_PUB_BURST`: publishes a connection may send at once.
    pub pub_burst: u32,
    /// `HERALD_HISTORY_RATE`: history reads per second, per connection
    /// (`history` frames) and per user and room (HTTP). A read costs the
    /// Room a storage query of up to 1000 rows, far more than a publish.
    pub history_rate: u32,
    /// `HERALD_HISTORY_BURST`: history reads allowed at once (a client
    /// paging back through a full history on connect).
    pub history_burst: u32,
    /// `HERALD_MAX_CONNECTIONS_PER_RELAY`: past it, connects get 503.
    pub max_connections_per_relay: u32,
    /// `HERALD_MAX_CONNECTIONS_PER_USER`: the most connections one user
    /// (`sub`, or one IP for anonymous readers) may hold on one relay;
    /// past it, connects get 429.
    pub max_connections_per_user: u32,
    /// `HERALD_PRESENCE_EVENTS_MAX`, `HERALD_PRESENCE_INTERVAL_MS`,
    /// `HERALD_PRESENCE_GRACE_MS`: see [`crate::presence::PresenceConfig`].
    pub presence: crate::presence::PresenceConfig,
    /// `HERALD_MAX_BATCH`: most messages per client batch frame.
    pub max_batch: usize,
    /// `HERALD_BATCH_MAX_ROOMS`: most rooms one batch publish
    /// (`POST /v1/publish`) names.
    pub batch_max_rooms: usize,
    /// `HERALD_BATCH_MAX_BYTES`: the largest batch publish body.
    pub batch_max_bytes: usize,
    /// `HERALD_FAULT_*`: fault injection, honoured only together with
    /// `HERALD_TRUST_REGION_PARAM=1` (all off otherwise).
    pub faults: crate::faults::FaultConfig,
    /// `HERALD_WEBHOOK_URL`, `HERALD_WEBHOOK_SECRET`,
    /// `HERALD_WEBHOOK_VACATE_MS`, `HERALD_WEBHOOK_RETRY_S`: `None` (off)
    /// unless the URL is set. See [`crate::webhook::WebhookConfig`].
    pub webhook: Option<crate::webhook::WebhookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_region: Region::Enam,
            trust_region_param: false,
            max_frame_bytes: 65_536,
            max_depth: 32,
            history_max: 1000,
            history_ttl_s: 86_400,
            dedup_window_s: 300,
            sse_heartbeat_s: 15,
            sse_max_buffer_bytes: 4 << 20,
            ws_max_buffer_bytes: 4 << 20,
            clock_skew_s: 2,
            public_rooms: RoomPatterns::default(),
            demo_rooms: RoomPatterns::default(),
            pub_rate: 20,
            pub_burst: 40,
            history_rate: 5,
            history_burst: 20,
            max_connections_per_relay: 10_000,
            max_connections_per_user: 100,
            max_batch: crate::room::MAX_BATCH_MESSAGES,
            batch_max_rooms: crate::batch::DEFAULT_MAX_ROOMS,
            batch_max_bytes: crate::batch::DEFAULT_MAX_BYTES,
            presence: crate::presence::PresenceConfig::default(),
            faults: crate::faults::FaultConfig::default(),
            webhook: None,
        }
    }
}

/// A `[vars]` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {:?}: expected {}", self.var, self.value, self.expected)
    }
}

impl Config {
    /// Builds the config from a variable lookup (the Worker's `env.var`).
    /// Missing variables take their defaults; present but malformed ones are
    /// errors.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let d = Config::default();
        let int = |var: &'static str, range: std::ops::RangeInclusive<u64>, expected: &'static str, default: u64| {
            match lookup(var) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => Err(ConfigError { var, value: v, expected }),
                },
            }
        };
        let default_region = match lookup("HERALD_DEFAULT_REGION") {
            None => d.default_region,
            Some(v) => Region::parse(v.trim()).map_err(|_| ConfigError {
                var: "HERALD_DEFAULT_REGION",
                value: v.clone(),
                expected: "a location hint: wnam enam sam weur eeur apac oc afr me",
            })?,
        };
        let trust_region_param = match lookup("HERALD_TRUST_REGION_PARAM") {
            None => d.trust_region_param,
            Some(v) => match v.trim() {
                "1" | "true" => true,
                "0" | "false" | "" => false,
                _ => {
                    return Err(ConfigError { var: "HERALD_TRUST_REGION_PARAM", value: v, expected: "0 or 1" })
                }
            },
        };
        let fault = |var| int(var, 0..=1_000_000, "0 (off) or k: every k-th fails", 0);
        let faults = crate::faults::FaultConfig {
            drop_forward_every: fault("HERALD_FAULT_DROP_FORWARD_EVERY")?,
            fail_publish_answer_every: fault("HERALD_FAULT_FAIL_PUBLISH_ANSWER_EVERY")?,
            fail_range_every: fault("HERALD_FAULT_FAIL_RANGE_EVERY")?,
        };
        // Test-only knobs never take effect where regions are not trusted
        // (production): a stray variable cannot break a live room.
        let faults = if trust_region_param { faults } else { crate::faults::FaultConfig::default() };
        let webhook = crate::webhook::WebhookConfig::from_vars(&lookup)?;
        Ok(Config {
            webhook,
            default_region,
            faults,
            trust_region_param,
            max_frame_bytes: int(
                "HERALD_MAX_FRAME_BYTES",
                64..=1_048_576,
                "an integer from 64 to 1048576 (the runtime's own frame limit)",
                d.max_frame_bytes as u64,
            )? as usize,
            max_depth: int("HERALD_MAX_DEPTH", 1..=1000, "an integer from 1 to 1000", d.max_depth as u64)? as usize,
            history_max: int("HERALD_HISTORY_MAX", 1..=1_000_000, "an integer from 1 to 1000000", d.history_max)?,
            history_ttl_s: int("HERALD_HISTORY_TTL_S", 1..=31_536_000, "seconds, from 1 to 31536000", d.history_ttl_s)?,
            dedup_window_s: int("HERALD_DEDUP_WINDOW_S", 0..=86_400, "seconds, from 0 to 86400", d.dedup_window_s)?,
            sse_heartbeat_s: int("HERALD_SSE_HEARTBEAT_S", 1..=300, "seconds, from 1 to 300", d.sse_heartbeat_s)?,
            sse_max_buffer_bytes: int(
                "HERALD_SSE_MAX_BUFFER_BYTES",
                65_536..=268_435_456,
                "bytes, from 65536 to 268435456",
                d.sse_max_buffer_bytes as u64,
            )? as usize,
            ws_max_buffer_bytes: int(
                "HERALD_WS_MAX_BUFFER_BYTES",
                65_536..=268_435_456,
                "bytes, from 65536 to 268435456",
                d.ws_max_buffer_bytes as u64,
            )? as usize,
            clock_skew_s: int("HERALD_CLOCK_SKEW_S", 0..=300, "seconds, from 0 to 300", d.clock_skew_s)?,
            public_rooms: lookup("HERALD_PUBLIC_ROOMS").map_or(d.public_rooms, |v| RoomPatterns::parse(&v)),
            demo_rooms: lookup("HERALD_DEMO_ROOMS").map_or(d.demo_rooms, |v| RoomPatterns::parse(&v)),
            pub_rate: int("HERALD_PUB_RATE", 1..=100_000, "publishes per second, from 1 to 100000", d.pub_rate.into())? as u32,
            pub_burst: int("HERALD_PUB_BURST", 1..=100_000, "publishes, from 1 to 100000", d.pub_burst.into())? as u32,
            history_rate: int("HERALD_HISTORY_RATE", 1..=100_000, "reads per second, from 1 to 100000", d.history_rate.into())? as u32,
            history_burst: int("HERALD_HISTORY_BURST", 1..=100_000, "reads, from 1 to 100000", d.history_burst.into())? as u32,
            max_connections_per_relay: int(
                "HERALD_MAX_CONNECTIONS_PER_RELAY",
                1..=1_000_000,
                "an integer from 1 to 1000000",
                d.max_connections_per_relay.into(),
            )? as u32,
            max_connections_per_user: int(
                "HERALD_MAX_CONNECTIONS_PER_USER",
                1..=1_000_000,
                "an integer from 1 to 1000000",
                d.max_connections_per_user.into(),
            )? as u32,
            presence: crate::presence::PresenceConfig {
                events_max: int("HERALD_PRESENCE_EVENTS_MAX", 0..=100_000, "members, from 0 to 100000", d.presence.events_max)?,
                interval_ms: int(
                    "HERALD_PRESENCE_INTERVAL_MS",
                    100..=60_000,
                    "milliseconds, from 100 to 60000",
                    d.presence.interval_ms,
                )?,
                grace_ms: int("HERALD_PRESENCE_GRACE_MS", 0..=60_000, "milliseconds, from 0 to 60000", d.presence.grace_ms)?,
            },
            max_batch: int("HERALD_MAX_BATCH", 1..=1000, "an integer from 1 to 1000", d.max_batch as u64)? as usize,
            batch_max_rooms: int("HERALD_BATCH_MAX_ROOMS", 1..=10_000, "rooms, from 1 to 10000", d.batch_max_rooms as u64)? as usize,
            batch_max_bytes: int(
                "HERALD_BATCH_MAX_BYTES",
                1024..=33_554_432,
                "bytes, from 1024 to 33554432",
                d.batch_max_bytes as u64,
            )? as usize,
        })
    }

    /// The limits client frames are parsed with.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits { max_bytes: self.max_frame_bytes, max_depth: self.max_depth }
    }

    /// The bounds of a batch publish.
    pub fn batch_limits(&self) -> crate::batch::BatchLimits {
        crate::batch::BatchLimits { max_rooms: self.batch_max_rooms, max_bytes: self.batch_max_bytes, frame: self.frame_limits() }
    }

    /// What the Room keeps and for how long.
    pub fn retention(&self) -> Retention {
        Retention {
            max_messages: self.history_max,
            ttl_ms: self.history_ttl_s * 1000,
            dedup_window_ms: self.dedup_window_s * 1000,
        }
    }
}

/// The Room's history bounds, in the units the core works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most stored messages kept (`HERALD_HISTORY_MAX`).
    pub max_messages: u64,
    /// Oldest message kept, by age (`HERALD_HISTORY_TTL_S`).
    pub ttl_ms: u64,
    /// How long a `mid` is remembered for idempotent publish
    /// (`HERALD_DEDUP_WINDOW_S`).
    pub dedup_window_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Config::default().retention()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(Config::from_vars(vars(&[])).unwrap(), Config::default());
    }

    #[test]
    fn parses_and_rejects() {
        let c = Config::from_vars(vars(&[
            ("HERALD_DEFAULT_REGION", "weur"),
            ("HERALD_TRUST_REGION_PARAM", "1"),
            ("HERALD_MAX_FRAME_BYTES", "1024"),
        ]))
        .unwrap();
        assert_eq!(c.default_region, Region::Weur);
        assert!(c.trust_region_param);
        assert_eq!(c.max_frame_bytes, 1024);
        let b = Config::from_vars(vars(&[("HERALD_SSE_MAX_BUFFER_BYTES", "65536")])).unwrap();
        assert_eq!((b.sse_max_buffer_bytes, b.ws_max_buffer_bytes), (65_536, 4 << 20));
        let r = Config::from_vars(vars(&[("HERALD_HISTORY_MAX", "5"), ("HERALD_HISTORY_TTL_S", "2")]))
            .unwrap()
            .retention();
        assert_eq!((r.max_messages, r.ttl_ms, r.dedup_window_ms), (5, 2000, 300_000));
        let batch = Config::from_vars(vars(&[("HERALD_BATCH_MAX_ROOMS", "5"), ("HERALD_BATCH_MAX_BYTES", "4096")])).unwrap();
        assert_eq!((batch.batch_limits().max_rooms, batch.batch_limits().max_bytes), (5, 4096));
        assert_eq!((Config::default().batch_max_rooms, Config::default().batch_max_bytes), (1000, 1 << 20));
        let demo = Config::from_vars(vars(&[("HERALD_DEMO_ROOMS", "demo:*, lobby")])).unwrap().demo_rooms;
        assert_eq!(demo.patterns(), ["demo:*", "lobby"]);
        assert!(Config::default().demo_rooms.is_empty(), "demo tokens are off unless configured");

        for (k, v) in [
            ("HERALD_DEFAULT_REGION", "mars"),
            ("HERALD_TRUST_REGION_PARAM", "yes"),
            ("HERALD_MAX_FRAME_BYTES", "lots"),
            ("HERALD_MAX_FRAME_BYTES", "10"),
            ("HERALD_MAX_DEPTH", "0"),
            ("HERALD_HISTORY_MAX", "0"),
            ("HERALD_HISTORY_TTL_S", "-5"),
            ("HERALD_DEDUP_WINDOW_S", "1d"),
            ("HERALD_PUB_RATE", "0"),
            ("HERALD_HISTORY_RATE", "0"),
            ("HERALD_HISTORY_BURST", "many"),
            ("HERALD_SSE_MAX_BUFFER_BYTES", "1000"),
            ("HERALD_PRESENCE_INTERVAL_MS", "10"),
            ("HERALD_PRESENCE_GRACE_MS", "soon"),
            ("HERALD_WS_MAX_BUFFER_BYTES", "4MiB"),
            ("HERALD_MAX_CONNECTIONS_PER_RELAY", "many"),
            ("HERALD_WEBHOOK_URL", "example.com/hook"),
            ("HERALD_WEBHOOK_VACATE_MS", "2s"),
            ("HERALD_BATCH_MAX_ROOMS", "0"),
            ("HERALD_BATCH_MAX_ROOMS", "10001"),
            ("HERALD_BATCH_MAX_BYTES", "1MiB"),
        ] {
            let err = Config::from_vars(vars(&[(k, v)])).unwrap_err();
            assert_eq!(err.var, k);
        }
    }
}
