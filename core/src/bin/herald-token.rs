//! Mints an HS256 token for local use: `scripts/token --sub alice --room 'chat:*=sub,pub'`.
//!
//! The secret comes from `HERALD_SECRET`, else from `.dev.vars` in the
//! current directory (which `scripts/dev` writes). The token goes to stdout.

use herald_core::auth::{mint_hs256_kid, Keys};
use serde_json::{json, Map, Value};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: herald-token [--sub USER] [--room PATTERN=CAP,CAP]... [--ttl SECONDS] [--info JSON]
  --sub   the user id (default: dev)
  --room  a room name or a prefix ending in *, with capabilities among
          sub pub presence history admin (default: *=sub,pub,presence,history);
          {sub} in it stands for the user: 'user:{sub}=sub,history'
  --ttl   seconds until the token expires (default: 3600)
  --info  a JSON object carried into presence (at most 1 KiB)
  --kid   which key of HERALD_SECRET's kid=secret pairs signs (default: the first)
The secret is HERALD_SECRET, or HERALD_SECRET in ./.dev.vars.";

fn secret() -> Option<String> {
    if let Ok(s) = std::env::var("HERALD_SECRET") {
        if !s.is_empty() {
            return Some(s);
        }
    }
    let vars = std::fs::read_to_string(".dev.vars").ok()?;
    vars.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "HERALD_SECRET")
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
}

fn run() -> Result<String, String> {
    let mut sub = String::from("dev");
    let mut rooms = Map::new();
    let mut ttl: u64 = 3600;
    let mut info: Option<Value> = None;
    let mut kid: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--sub" => sub = value()?,
            "--room" => {
                let spec = value()?;
                let (pattern, caps) = spec.split_once('=').ok_or(format!("--room {spec}: expected PATTERN=CAP,CAP"))?;
                let caps: Vec<&str> = caps.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
                rooms.insert(pattern.to_owned(), json!(caps));
            }
            "--ttl" => ttl = value()?.parse().map_err(|_| "--ttl takes whole seconds".to_owned())?,
            "--info" => info = Some(serde_json::from_str(&value()?).map_err(|e| format!("--info: {e}"))?),
            "--kid" => kid = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if rooms.is_empty() {
        rooms.insert("*".into(), json!(["sub", "pub", "presence", "history"]));
    }
    let secret = secret().ok_or("no secret: set HERALD_SECRET or run scripts/dev once to write .dev.vars")?;
    let keys = Keys::parse(&secret)?.ok_or("HERALD_SECRET is empty")?;
    let (kid, key) = keys.signing(kid.as_deref()).ok_or("no such --kid in HERALD_SECRET")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let mut claims = json!({"sub": sub, "iat": now, "exp": now + ttl, "rooms": rooms});
    if let (Some(info), Some(obj)) = (info, claims.as_object_mut()) {
        obj.insert("info".into(), info);
    }
    Ok(mint_hs256_kid(&claims, kid, key))
}

fn main() -> ExitCode {
    match run() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
