//! How much one read of stored messages may hold: the byte bound that keeps
//! a long replay from being one huge allocation.
//!
//! **The rule** (`docs/PROTOCOL.md`, "Size of what Herald sends"): no
//! WebSocket frame, SSE write or HTTP body Herald sends is larger than
//! max([`PAGE_BYTES`], the largest message frame in it + [`ENVELOPE_BYTES`]).
//! Range reads, history pages and resume replays are cut to honour it; the
//! cursor they already carry (`more`, the range head's `last`) says where
//! the next page starts.
//!
//! Cutting happens twice. Before rows are read, [`cut`] picks how many fit
//! by the sizes SQLite reports ([`estimate`]), so a read never loads more
//! than about one page into memory. After the rows are rendered, [`fit`]
//! checks the exact frame lengths (escaping can make a frame longer than
//! its estimate) and drops whatever does not fit.

/// The most bytes one page of messages may take, envelope included.
pub const PAGE_BYTES: usize = 1 << 20;
/// Room kept for what wraps the message frames: a history frame's head
/// (`id` is at most 64 characters, the epoch at most 64 bytes), the batch
/// brackets, an SSE event's `id:` lines.
pub const ENVELOPE_BYTES: usize = 4096;
/// The bytes of message frames (and the commas between them) one page holds.
pub const PAGE_FRAME_BYTES: usize = PAGE_BYTES - ENVELOPE_BYTES;

/// A message frame's fixed part: `{"t":"msg","seq":N,"ts":N,"data":,"from":"","mid":""}`
/// with 20-digit numbers.
const FRAME_FIXED_BYTES: usize = 96;

/// A stored message's frame size as SQLite can tell it without reading the
/// row into JavaScript: the lengths of its text columns plus the fixed part.
pub fn estimate(data: usize, sender: usize, mid: usize) -> usize {
    data.saturating_add(sender).saturating_add(mid).saturating_add(FRAME_FIXED_BYTES)
}

/// How many of the frames with these lengths, in order, fit in `budget`
/// bytes joined by commas. Always at least one when there is one: a single
/// message larger than the budget goes alone.
pub fn fit(lengths: impl IntoIterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0usize;
    for len in lengths {
        let add = len.saturating_add(usize::from(n > 0));
        if n > 0 && total.saturating_add(add) > budget {
            break;
        }
        total = total.saturating_add(add);
        n += 1;
    }
    n
}

/// Where a page read stops, given `(seq, estimated size)` of the next rows
/// in seq order (at most `limit + 1` of them, so it can tell whether more
/// follow): the last seq of the page, and whether rows remain after it.
/// `None` when there are no rows.
pub fn cut(sizes: &[(u64, usize)], limit: usize) -> Option<(u64, bool)> {
    let within = &sizes[..sizes.len().min(limit.max(1))];
    let n = fit(within.iter().map(|(_, size)| *size), PAGE_FRAME_BYTES);
    let (last, _) = within.get(n.checked_sub(1)?)?;
    Some((*last, n < sizes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_by_bytes_and_takes_at_least_one() {
        assert_eq!(fit([], 10), 0);
        assert_eq!(fit([100], 10), 1, "a single large frame goes alone");
        assert_eq!(fit([4, 4, 4], 9), 2, "4 + 1 + 4 = 9, a third needs 5 more");
        assert_eq!(fit([4, 4, 4], 14), 3);
        assert_eq!(fit([4, 100, 4], 50), 1);
    }

    #[test]
    fn a_page_of_64_kib_messages_stays_under_a_mebibyte() {
        let big = estimate(64 * 1024, 10, 10);
        let sizes: Vec<(u64, usize)> = (1..=1000).map(|seq| (seq, big)).collect();
        let (last, more) = cut(&sizes, 1000).expect("rows");
        assert!(more);
        assert_eq!(last, 15, "15 frames of ~64 KiB fit in 1 MiB − 4 KiB");
        assert!(last as usize * (big + 1) <= PAGE_FRAME_BYTES);
        assert!((last as usize + 1) * (big + 1) > PAGE_FRAME_BYTES);
    }

    #[test]
    fn the_count_limit_still_applies() {
        let sizes: Vec<(u64, usize)> = (1..=11).map(|seq| (seq, 10)).collect();
        assert_eq!(cut(&sizes, 10), Some((10, true)));
        assert_eq!(cut(&sizes[..10], 10), Some((10, false)));
        assert_eq!(cut(&[], 10), None);
        assert_eq!(cut(&[(7, PAGE_BYTES * 2), (8, 1)], 10), Some((7, true)), "one oversized row alone");
    }
}
