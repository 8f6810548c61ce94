//! Settings read from `[vars]` (and `--var` overrides), parsed once per
//! request path into typed values so a typo fails loudly instead of silently
//! running with a default.

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_region: Region::Enam,
            trust_region_param: false,
            max_frame_bytes: 65_536,
            max_depth: 32,
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
        let mut config = Config::default();
        if let Some(v) = lookup("HERALD_DEFAULT_REGION") {
            config.default_region = Region::parse(v.trim()).map_err(|_| ConfigError {
                var: "HERALD_DEFAULT_REGION",
                value: v.clone(),
                expected: "a location hint: wnam enam sam weur eeur apac oc afr me",
            })?;
        }
        if let Some(v) = lookup("HERALD_TRUST_REGION_PARAM") {
            config.trust_region_param = match v.trim() {
                "1" | "true" => true,
                "0" | "false" | "" => false,
                _ => {
                    return Err(ConfigError {
                        var: "HERALD_TRUST_REGION_PARAM",
                        value: v,
                        expected: "0 or 1",
                    })
                }
            };
        }
        if let Some(v) = lookup("HERALD_MAX_FRAME_BYTES") {
            config.max_frame_bytes = match v.trim().parse::<usize>() {
                Ok(n) if (64..=1_048_576).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        var: "HERALD_MAX_FRAME_BYTES",
                        value: v,
                        expected: "an integer from 64 to 1048576 (the runtime's own frame limit)",
                    })
                }
            };
        }
        if let Some(v) = lookup("HERALD_MAX_DEPTH") {
            config.max_depth = match v.trim().parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        var: "HERALD_MAX_DEPTH",
                        value: v,
                        expected: "an integer from 1 to 1000",
                    })
                }
            };
        }
        Ok(config)
    }

    /// The limits client frames are parsed with.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits { max_bytes: self.max_frame_bytes, max_depth: self.max_depth }
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

        for (k, v) in [
            ("HERALD_DEFAULT_REGION", "mars"),
            ("HERALD_TRUST_REGION_PARAM", "yes"),
            ("HERALD_MAX_FRAME_BYTES", "lots"),
            ("HERALD_MAX_FRAME_BYTES", "10"),
            ("HERALD_MAX_DEPTH", "0"),
        ] {
            let err = Config::from_vars(vars(&[(k, v)])).unwrap_err();
            assert_eq!(err.var, k);
        }
    }
}
