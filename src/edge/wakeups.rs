//! Counts constructions of each Durable Object in this isolate.
//!
//! An object that hibernates is constructed anew when it wakes, while the
//! isolate (and this module's memory) lives on; so a count that rises after
//! an idle spell proves the object slept. Tests read it from `stats`.

use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static CONSTRUCTIONS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// Records one construction of the object `id`; returns its count so far.
pub fn constructed(id: &str) -> u64 {
    CONSTRUCTIONS.with(|c| {
        let mut map = c.borrow_mut();
        let n = map.entry(id.to_owned()).or_insert(0);
        *n += 1;
        *n
    })
}
