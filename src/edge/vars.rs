//! Reading `[vars]` and secrets for [`Config::from_vars`].

use herald_core::{Config, ConfigError};
use worker::Env;

/// Variables that are secrets in production (`wrangler secret put`), read
/// as secrets first and as plain vars after (`.dev.vars`, `--var`).
const SECRETS: &[&str] = &["HERALD_WEBHOOK_SECRET"];

/// The config from the environment.
pub fn config(env: &Env) -> Result<Config, ConfigError> {
    Config::from_vars(|k| {
        let secret = SECRETS.contains(&k).then(|| env.secret(k).ok().map(|s| s.to_string())).flatten();
        secret.or_else(|| env.var(k).ok().map(|v| v.to_string()))
    })
}
