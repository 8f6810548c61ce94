//! The relay's persisted position (epoch, cursor, ack): one row in the
//! relay's own SQLite, written after each change, read once when the object
//! is constructed. A relay that hibernated with its sockets thus knows
//! exactly what its clients have been sent.

use herald_core::relay::Saved;
use crate::edge::sql_row::first;
use worker::{Result, SqlStorage};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS position (k INTEGER PRIMARY KEY, v TEXT NOT NULL)";

pub fn load(sql: &SqlStorage) -> Result<Option<Saved>> {
    sql.exec(SCHEMA, None)?;
    match first(sql.exec("SELECT v FROM position WHERE k = 1", None)?)? {
        Some(mut row) => Ok(Some(serde_json::from_str(&row.text(0)?)?)),
        None => Ok(None),
    }
}

/// Saves the position; [`load`] has created the table.
pub fn save(sql: &SqlStorage, saved: &Saved) -> Result<()> {
    sql.exec(
        "INSERT INTO position (k, v) VALUES (1, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        vec![serde_json::to_string(saved)?.into()],
    )?;
    Ok(())
}
