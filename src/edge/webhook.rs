//! Webhook glue: the POST itself (with a timeout, off the fan-out path) and
//! the Room's `webhook_events` table. What to send and when is decided by
//! `herald_core::webhook`.

use futures::future::{select, Either};
use herald_core::webhook::{
    Event, Outcome, SavedWebhooks, WebhookRequest, WebhookState, MAX_QUEUE_EVENTS, OCCUPANCY_RESERVE, REQUEST_TIMEOUT_MS,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use super::sql_row::rows;
use wasm_bindgen::JsValue;
use worker::{AbortController, Fetch, Headers, Method, Result, SqlStorage, SqlStorageValue};

/// POSTs one batch. Never fails: an error or the timeout is an
/// [`Outcome::Failed`], and the core retries.
pub async fn send(req: &WebhookRequest) -> Outcome {
    let controller = AbortController::default();
    let signal = controller.signal();
    let attempt = async {
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        headers.set("user-agent", "herald-webhooks/1")?;
        headers.set(SIGNATURE_HEADER, &req.signature)?;
        headers.set(TIMESTAMP_HEADER, &req.timestamp.to_string())?;
        let body = JsValue::from_str(&req.body);
        let request = super::http::new_request(Method::Post, &req.url, &headers, Some(&body))?;
        let resp = Fetch::Request(request).send_with_signal(&signal).await?;
        Ok::<u16, worker::Error>(resp.status_code())
    };
    let timeout = worker::Delay::from(std::time::Duration::from_millis(REQUEST_TIMEOUT_MS));
    futures::pin_mut!(attempt);
    futures::pin_mut!(timeout);
    match select(attempt, timeout).await {
        Either::Left((Ok(status), _)) => Outcome::Status(status),
        Either::Left((Err(e), _)) => Outcome::Failed(e.to_string()),
        Either::Right(_) => {
            controller.abort();
            Outcome::Failed(format!("no answer within {} s", REQUEST_TIMEOUT_MS / 1000))
        }
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS webhook_events (n INTEGER PRIMARY KEY, ts INTEGER NOT NULL, event TEXT NOT NULL)";

fn int(n: u64) -> Result<SqlStorageValue> {
    let n = i64::try_from(n).map_err(|_| worker::Error::RustError("integer out of range".into()))?;
    SqlStorageValue::try_from_i64(n)
}

fn put_meta(sql: &SqlStorage, key: &str, value: String) -> Result<()> {
    sql.exec(
        "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        vec![key.into(), SqlStorageValue::String(value)],
    )?;
    Ok(())
}

/// What the room held for webhooks: `None` when it never had them. Call
/// after `storage::load` (which creates `meta`).
pub fn load(sql: &SqlStorage) -> Result<Option<SavedWebhooks>> {
    sql.exec(SCHEMA, None)?;
    let meta = super::storage::meta_entries(sql, "webhook_")?;
    let get = |key: &str| meta.get(key).map(String::as_str);
    let Some(prefix) = get("webhook_prefix") else { return Ok(None) };
    let number = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok());
    let state = WebhookState {
        prefix: prefix.to_owned(),
        next: number("webhook_next").unwrap_or(1),
        occupied: get("webhook_occupied") == Some("1"),
        vacate_at: number("webhook_vacate_at"),
    };
    let limit = int((MAX_QUEUE_EVENTS + OCCUPANCY_RESERVE) as u64)?;
    let mut events = Vec::new();
    for mut r in rows(sql.exec("SELECT n, ts, event FROM webhook_events ORDER BY n LIMIT ?", vec![limit])?)? {
        events.push(Event { n: r.int(0)?, ts: r.int(1)?, json: r.text(2)? });
    }
    Ok(Some(SavedWebhooks { state, events }))
}

/// Stores new events and the machine's state.
pub fn save(sql: &SqlStorage, events: &[Event], state: &WebhookState) -> Result<()> {
    sql.exec(SCHEMA, None)?;
    for e in events {
        sql.exec(
            "INSERT OR REPLACE INTO webhook_events (n, ts, event) VALUES (?, ?, ?)",
            vec![int(e.n)?, int(e.ts)?, e.json.as_str().into()],
        )?;
    }
    put_meta(sql, "webhook_prefix", state.prefix.clone())?;
    put_meta(sql, "webhook_next", state.next.to_string())?;
    put_meta(sql, "webhook_occupied", String::from(if state.occupied { "1" } else { "0" }))?;
    put_meta(sql, "webhook_vacate_at", state.vacate_at.map_or(String::new(), |t| t.to_string()))
}

/// Deletes the events delivered or dropped.
pub fn forget(sql: &SqlStorage, upto: u64) -> Result<()> {
    sql.exec("DELETE FROM webhook_events WHERE n <= ?", vec![int(upto)?])?;
    Ok(())
}
