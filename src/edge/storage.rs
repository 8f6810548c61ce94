//! The Room's SQLite tables. Synchronous, so a message is written before the
//! publish that caused it is answered, and the runtime's output gate holds
//! the answer until the write is durable.

use herald_core::history::Prune;
use herald_core::link::PubOutcome;
use herald_core::page;
use herald_core::presence::Member;
use herald_core::room::{CountPlan, Meta, PresenceLink, PresenceRow, Restored, SavedRelay};
use herald_core::server_frame::Message;
use herald_core::Region;
use super::sql_row::{first, rows, Row};
use serde_json::value::RawValue;
use worker::{Result, SqlStorage, SqlStorageValue};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, sender TEXT, mid TEXT, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS relays (region TEXT PRIMARY KEY, connections INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mids (mid TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, outcomes TEXT NOT NULL, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS presence (user TEXT PRIMARY KEY, info TEXT, region TEXT NOT NULL, relays TEXT NOT NULL, grace_until INTEGER)",
    "CREATE TABLE IF NOT EXISTS presence_links (region TEXT PRIMARY KEY, inc INTEGER NOT NULL, next INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reads (user TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
];

/// Columns added after a table first shipped: added where missing.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("relays", "incarnation INTEGER NOT NULL DEFAULT 0"),
    ("relays", "report_seq INTEGER NOT NULL DEFAULT 0"),
];

/// Creates the tables if needed and reads back what the room had.
pub fn load(sql: &SqlStorage) -> Result<Option<Restored>> {
    for stmt in SCHEMA {
        sql.exec(stmt, None)?;
    }
    for (table, column) in ADDED_COLUMNS {
        let name = column.split(' ').next().unwrap_or_default();
        let mut have = Vec::new();
        for mut row in rows(sql.exec(&format!("SELECT name FROM pragma_table_info('{table}')"), None)?)? {
            have.push(row.text(0)?);
        }
        if !have.iter().any(|c| c == name) {
            sql.exec(&format!("ALTER TABLE {table} ADD COLUMN {column}"), None)?;
        }
    }
    let meta = meta_entries(sql, "")?;
    let get = |key: &str| meta.get(key).cloned();
    let (Some(epoch), Some(seq)) = (get("epoch"), get("seq")) else {
        return Ok(None);
    };
    let number = |key: &str, text: Option<String>| -> Result<u64> {
        // Rooms stored before erasure generations existed have none: 0.
        let text = text.unwrap_or_else(|| "0".into());
        text.parse::<u64>()
            .map_err(|_| worker::Error::RustError(format!("stored {key} {text:?} is not a number")))
    };
    let meta = Meta {
        epoch,
        seq: number("seq", Some(seq))?,
        gen: number("gen", get("gen"))?,
        epoch_start: number("epoch_start", get("epoch_start"))?,
    };
    let mut relays = Vec::new();
    for mut r in rows(sql.exec("SELECT region, connections, incarnation, report_seq FROM relays", None)?)? {
        // A region no longer known is left out.
        if let Ok(region) = Region::parse(&r.text(0)?) {
            let connections = u32::try_from(r.int(1)?).unwrap_or(u32::MAX);
            relays.push(SavedRelay { region, connections, order: (r.int(2)?, r.int(3)?) });
        }
    }
    let mut index = Vec::new();
    for r in rows(sql.exec("SELECT seq, ts FROM messages ORDER BY seq", None)?)? {
        index.push((r.int(0)?, r.int(1)?));
    }
    let mut mids = Vec::new();
    for mut r in rows(sql.exec("SELECT mid, seq, ts FROM mids", None)?)? {
        mids.push((r.text(0)?, r.int(1)?, r.int(2)?));
    }
    let limit = int(herald_core::room::REMEMBERED_BATCHES as u64)?;
    let batch_rows = rows(sql.exec("SELECT id, outcomes FROM batches ORDER BY ts DESC, rowid DESC LIMIT ?", vec![limit])?)?;
    let mut batches = Vec::with_capacity(batch_rows.len());
    for mut row in batch_rows.into_iter().rev() {
        batches.push((row.text(0)?, serde_json::from_str(&row.text(1)?)?));
    }
    let (presence, presence_links) = load_presence(sql)?;
    Ok(Some(Restored { meta, relays, index, mids, batches, presence, presence_links }))
}

/// The presence roster's rows and the relays' presence positions. A row
/// that does not read back (a region no longer known) is left out.
fn load_presence(sql: &SqlStorage) -> Result<(Vec<PresenceRow>, Vec<PresenceLink>)> {
    let mut members = Vec::new();
    for mut r in rows(sql.exec("SELECT user, info, region, relays, grace_until FROM presence", None)?)? {
        let Ok(region) = Region::parse(&r.text(2)?) else { continue };
        let relays = r.text(3)?.split(',').filter_map(|g| Region::parse(g).ok()).collect();
        let member = Member { user: r.text(0)?, info: r.opt_text(1)?, region };
        members.push((member, relays, r.opt_int(4)?));
    }
    let mut links = Vec::new();
    for mut l in rows(sql.exec("SELECT region, inc, next FROM presence_links", None)?)? {
        if let Ok(region) = Region::parse(&l.text(0)?) {
            links.push((region, l.int(1)?, l.int(2)?));
        }
    }
    Ok((members, links))
}

/// Writes the presence rows that changed, and the relays' positions.
pub fn save_presence(sql: &SqlStorage, changed: &[(String, Option<PresenceRow>)], links: &[PresenceLink]) -> Result<()> {
    for (user, row) in changed {
        match row {
            None => {
                sql.exec("DELETE FROM presence WHERE user = ?", vec![user.as_str().into()])?;
            }
            Some((m, relays, grace_until)) => {
                let relays: Vec<&str> = relays.iter().map(|r| r.as_str()).collect();
                let grace = match grace_until {
                    Some(t) => int(*t)?,
                    None => SqlStorageValue::Null,
                };
                sql.exec(
                    "INSERT OR REPLACE INTO presence (user, info, region, relays, grace_until) VALUES (?, ?, ?, ?, ?)",
                    vec![m.user.as_str().into(), opt_text(&m.info), m.region.as_str().into(), relays.join(",").into(), grace],
                )?;
            }
        }
    }
    sql.exec("DELETE FROM presence_links", None)?;
    for (region, inc, next) in links {
        sql.exec(
            "INSERT INTO presence_links (region, inc, next) VALUES (?, ?, ?)",
            vec![region.as_str().into(), int(*inc)?, int(*next)?],
        )?;
    }
    Ok(())
}

/// The `meta` rows whose key starts with `prefix` ("" for all of them):
/// a handful of rows, looked up by key with [`MetaEntries::get`].
pub fn meta_entries(sql: &SqlStorage, prefix: &str) -> Result<MetaEntries> {
    let mut entries = Vec::new();
    for mut kv in rows(sql.exec("SELECT k, v FROM meta WHERE substr(k, 1, length(?1)) = ?1", vec![prefix.into()])?)? {
        entries.push((kv.text(0)?, kv.text(1)?));
    }
    Ok(MetaEntries(entries))
}

/// `meta` rows, key and value (the key is the table's primary key).
pub struct MetaEntries(Vec<(String, String)>);

impl MetaEntries {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

fn put_meta(sql: &SqlStorage, key: &str, value: String) -> Result<()> {
    sql.exec(
        "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        vec![key.into(), SqlStorageValue::String(value)],
    )?;
    Ok(())
}

pub fn save_meta(sql: &SqlStorage, meta: &Meta) -> Result<()> {
    put_meta(sql, "epoch", meta.epoch.clone())?;
    put_meta(sql, "gen", meta.gen.to_string())?;
    put_meta(sql, "epoch_start", meta.epoch_start.to_string())?;
    put_meta(sql, "seq", meta.seq.to_string())
}

fn int(n: u64) -> Result<SqlStorageValue> {
    let n = i64::try_from(n).map_err(|_| worker::Error::RustError("integer out of range".into()))?;
    SqlStorageValue::try_from_i64(n)
}

fn opt_text(s: &Option<String>) -> SqlStorageValue {
    s.clone().map_or(SqlStorageValue::Null, SqlStorageValue::String)
}

/// Stores a message and advances the persisted seq to it.
pub fn store_message(sql: &SqlStorage, m: &Message) -> Result<()> {
    let Some(seq) = m.seq else { return Ok(()) };
    sql.exec(
        "INSERT OR REPLACE INTO messages (seq, ts, sender, mid, data) VALUES (?, ?, ?, ?, ?)",
        vec![int(seq)?, int(m.ts)?, opt_text(&m.from), opt_text(&m.mid), m.data.get().into()],
    )?;
    if let Some(mid) = &m.mid {
        // Keyed as the core remembers it: (publisher, mid).
        let key = herald_core::history::mid_key(m.from.as_deref(), mid);
        sql.exec(
            "INSERT OR REPLACE INTO mids (mid, seq, ts) VALUES (?, ?, ?)",
            vec![key.into(), int(seq)?, int(m.ts)?],
        )?;
    }
    put_meta(sql, "seq", seq.to_string())
}

/// Deletes what retention no longer allows.
pub fn prune(sql: &SqlStorage, p: &Prune) -> Result<()> {
    sql.exec("DELETE FROM messages WHERE seq <= ?", vec![int(p.upto_seq)?])?;
    sql.exec("DELETE FROM mids WHERE ts < ?", vec![int(p.mids_before_ts)?])?;
    sql.exec("DELETE FROM batches WHERE ts < ?", vec![int(p.mids_before_ts)?])?;
    Ok(())
}

/// Remembers a relay's publish batch, so a retry that reaches the next
/// incarnation is still answered with the stored outcomes.
pub fn remember_batch(sql: &SqlStorage, id: &str, outcomes: &[PubOutcome], ts: u64) -> Result<()> {
    sql.exec(
        "INSERT OR REPLACE INTO batches (id, outcomes, ts) VALUES (?, ?, ?)",
        vec![id.into(), serde_json::to_string(outcomes)?.into(), int(ts)?],
    )?;
    Ok(())
}

/// Whether any user has a read mark ([`load`] has created the table).
pub fn reads_used(sql: &SqlStorage) -> Result<bool> {
    let row = first(sql.exec("SELECT EXISTS (SELECT 1 FROM reads) AS used", None)?)?;
    Ok(row.map(|r| r.int(0)).transpose()?.is_some_and(|used| used > 0))
}

/// `user`'s read mark, 0 when they have none.
pub fn read_mark(sql: &SqlStorage, user: &str) -> Result<u64> {
    let row = first(sql.exec("SELECT seq FROM reads WHERE user = ?", vec![user.into()])?)?;
    Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0))
}

/// Saves `user`'s read mark; a stored higher one is kept (the core only
/// ever moves a mark forward, this holds storage to it too).
pub fn save_read(sql: &SqlStorage, user: &str, seq: u64) -> Result<()> {
    sql.exec(
        "INSERT INTO reads (user, seq) VALUES (?, ?) ON CONFLICT(user) DO UPDATE SET seq = max(seq, excluded.seq)",
        vec![user.into(), int(seq)?],
    )?;
    Ok(())
}

/// Stored messages with `plan.after < seq <= plan.upto` that `user` did not
/// publish (a message with no sender counts). One range scan of the
/// primary key, at most `HERALD_HISTORY_MAX` rows.
pub fn count_unread(sql: &SqlStorage, plan: CountPlan, user: &str) -> Result<u64> {
    if plan.is_empty() {
        return Ok(0);
    }
    let row = first(sql.exec(
        "SELECT COUNT(*) AS n FROM messages WHERE seq > ? AND seq <= ? AND sender IS NOT ?",
        vec![int(plan.after)?, int(plan.upto)?, user.into()],
    )?)?;
    Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0))
}

/// Erasure: every stored message and remembered mid. Read marks stay: seqs
/// are never reused, so a mark keeps its meaning in the new epoch.
pub fn erase_all(sql: &SqlStorage) -> Result<()> {
    sql.exec("DELETE FROM messages", None)?;
    sql.exec("DELETE FROM mids", None)?;
    sql.exec("DELETE FROM batches", None)?;
    Ok(())
}

pub fn save_relays(sql: &SqlStorage, table: &[SavedRelay]) -> Result<()> {
    sql.exec("DELETE FROM relays", None)?;
    for r in table {
        sql.exec(
            "INSERT INTO relays (region, connections, incarnation, report_seq) VALUES (?, ?, ?, ?)",
            vec![r.region.as_str().into(), int(u64::from(r.connections))?, int(r.order.0)?, int(r.order.1)?],
        )?;
    }
    Ok(())
}

/// One page of stored messages, rendered: at most `limit` of those with
/// `after < seq <= upto`, in order, and no more bytes than a page holds
/// (`herald_core::page`). Only the rows of the page are read into memory:
/// their sizes are asked first.
pub struct Page {
    /// The messages' frames, in seq order.
    pub frames: Vec<String>,
    /// The seq of the last frame, if any.
    pub last: Option<u64>,
    /// Stored messages in range follow the page.
    pub more: bool,
}

pub fn read_page(sql: &SqlStorage, after: u64, upto: u64, limit: u64) -> Result<Page> {
    let empty = Page { frames: Vec::new(), last: None, more: false };
    if limit == 0 || upto <= after {
        return Ok(empty);
    }
    // `octet_length` reads a text's size from the record header, without
    // loading the value.
    let size_rows = rows(sql.exec(
        "SELECT seq, octet_length(data) AS d, ifnull(octet_length(sender), 0) AS s, \
         ifnull(octet_length(mid), 0) AS m FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        vec![int(after)?, int(upto)?, int(limit.saturating_add(1))?],
    )?)?;
    let bytes = |r: &Row, column| r.int(column).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut sizes: Vec<(u64, usize)> = Vec::with_capacity(size_rows.len());
    for r in &size_rows {
        sizes.push((r.int(0)?, page::estimate(bytes(r, 1)?, bytes(r, 2)?, bytes(r, 3)?)));
    }
    let Some((last, mut more)) = page::cut(&sizes, usize::try_from(limit).unwrap_or(usize::MAX)) else {
        return Ok(empty);
    };
    let messages = range(sql, after, last, limit)?;
    let mut frames: Vec<String> = messages.iter().map(Message::to_frame).collect();
    let n = page::fit(frames.iter().map(String::len), page::PAGE_FRAME_BYTES);
    if n < frames.len() {
        frames.truncate(n);
        more = true;
    }
    let last = messages.get(n.wrapping_sub(1)).and_then(|m| m.seq);
    Ok(Page { frames, last, more })
}

/// Stored messages with `after < seq <= upto`, in order, at most `limit`.
fn range(sql: &SqlStorage, after: u64, upto: u64, limit: u64) -> Result<Vec<Message>> {
    let found = rows(sql.exec(
        "SELECT seq, ts, sender, mid, data FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        vec![int(after)?, int(upto)?, int(limit)?],
    )?)?;
    let mut messages = Vec::with_capacity(found.len());
    for mut r in found {
        messages.push(Message {
            seq: Some(r.int(0)?),
            ts: r.int(1)?,
            from: r.opt_text(2)?,
            mid: r.opt_text(3)?,
            data: RawValue::from_string(r.text(4)?)?,
        });
    }
    Ok(messages)
}
