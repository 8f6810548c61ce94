//! Rows read from SQLite as arrays, in the `SELECT`'s column order, and
//! their values taken by position.
//!
//! `worker`'s typed reads (`to_array::<T>()`) go through
//! `serde_wasm_bindgen`: a `Deserialize` instance per row type, each
//! walking a JS object by key. Reading the runtime's raw arrays instead
//! keeps that deserializer out of the `.wasm` (docs/BENCHMARKS.md, *What
//! the .wasm holds*), and a query's columns are named once, in its text.

use worker::{Error, Result, SqlCursor, SqlStorageValue};

/// One row: its values in column order.
pub struct Row(Vec<SqlStorageValue>);

/// Every row of a query.
pub fn rows(cursor: SqlCursor) -> Result<Vec<Row>> {
    cursor.raw().map(|values| values.map(Row)).collect()
}

/// The first row of a query, if it has one.
pub fn first(cursor: SqlCursor) -> Result<Option<Row>> {
    cursor.raw().next().transpose().map(|values| values.map(Row))
}

impl Row {
    fn value(&self, column: usize) -> Result<&SqlStorageValue> {
        self.0.get(column).ok_or_else(|| Error::RustError(format!("a row without column {column}")))
    }

    /// A whole number, negative ones read as 0 (the tables hold seqs,
    /// counts and times, never below 0).
    pub fn int(&self, column: usize) -> Result<u64> {
        self.opt_int(column)?.ok_or_else(|| type_error(column, "an integer", &SqlStorageValue::Null))
    }

    /// [`Self::int`], or `None` for `NULL`.
    pub fn opt_int(&self, column: usize) -> Result<Option<u64>> {
        match self.value(column)? {
            SqlStorageValue::Null => Ok(None),
            SqlStorageValue::Integer(n) => Ok(Some(u64::try_from(*n).unwrap_or(0))),
            // Past 2^53 the runtime's number is not a safe integer; the
            // cast saturates, as reading it into an `f64` field did.
            SqlStorageValue::Float(f) => Ok(Some(f.max(0.0) as u64)),
            other => Err(type_error(column, "an integer", other)),
        }
    }

    /// A text value, moved out of the row.
    pub fn text(&mut self, column: usize) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| type_error(column, "text", &SqlStorageValue::Null))
    }

    /// [`Self::text`], or `None` for `NULL`.
    pub fn opt_text(&mut self, column: usize) -> Result<Option<String>> {
        match self.0.get_mut(column) {
            Some(SqlStorageValue::Null) => Ok(None),
            Some(SqlStorageValue::String(s)) => Ok(Some(std::mem::take(s))),
            Some(other) => Err(type_error(column, "text", other)),
            None => Err(Error::RustError(format!("a row without column {column}"))),
        }
    }
}

fn type_error(column: usize, wanted: &str, got: &SqlStorageValue) -> Error {
    let got = match got {
        SqlStorageValue::Null => "NULL",
        SqlStorageValue::Boolean(_) => "a boolean",
        SqlStorageValue::Integer(_) | SqlStorageValue::Float(_) => "a number",
        SqlStorageValue::String(_) => "text",
        SqlStorageValue::Blob(_) => "a blob",
    };
    Error::RustError(format!("column {column}: expected {wanted}, found {got}"))
}
