//! What a relay holds for one slow reader: the chunks written to a stream
//! and not yet taken by it, bounded in bytes.
//!
//! Chunks are shared (`Rc<[u8]>` in the glue), so a delivery written to a
//! thousand streams is one buffer, not a thousand copies; what an outbox
//! accounts is the bytes its reader has not taken yet. A reader that falls
//! further behind than the bound is cut off: the outbox drops what it held
//! at once (so the memory is freed even if the reader never reads again)
//! and ends, and the client reconnects with `Last-Event-ID` and resumes.

use std::collections::VecDeque;

/// What became of a chunk handed to [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The reader was past the bound: everything held is dropped and the
    /// outbox is closed. Happens once per outbox.
    Overflowed,
    /// Closed earlier; the chunk was dropped.
    Closed,
}

#[derive(Debug)]
pub struct Outbox<C> {
    chunks: VecDeque<C>,
    unsent: usize,
    peak: usize,
    closed: bool,
}

impl<C> Default for Outbox<C> {
    fn default() -> Self {
        Outbox { chunks: VecDeque::new(), unsent: 0, peak: 0, closed: false }
    }
}

impl<C: AsRef<[u8]>> Outbox<C> {
    /// Queues a chunk unless the reader would then be more than `bound`
    /// bytes behind. One chunk larger than the bound still goes to a reader
    /// that is level, so no single message is undeliverable.
    pub fn push(&mut self, chunk: C, bound: usize) -> Pushed {
        if self.closed {
            return Pushed::Closed;
        }
        let len = chunk.as_ref().len();
        if self.unsent > 0 && self.unsent.saturating_add(len) > bound {
            self.chunks.clear();
            self.unsent = 0;
            self.closed = true;
            return Pushed::Overflowed;
        }
        self.unsent = self.unsent.saturating_add(len);
        self.peak = self.peak.max(self.unsent);
        self.chunks.push_back(chunk);
        Pushed::Queued
    }

    /// The next chunk for the reader.
    pub fn pop(&mut self) -> Option<C> {
        let chunk = self.chunks.pop_front()?;
        self.unsent = self.unsent.saturating_sub(chunk.as_ref().len());
        Some(chunk)
    }

    /// Ends the stream after what is queued (the client left, or its token
    /// expired).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Nothing more will come: closed, and everything queued was taken.
    pub fn finished(&self) -> bool {
        self.closed && self.chunks.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes queued and not yet taken.
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// The most bytes this outbox ever held.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_past_the_bound_is_cut_off_and_its_bytes_freed() {
        let mut o: Outbox<Vec<u8>> = Outbox::default();
        assert_eq!(o.push(vec![0; 60], 100), Pushed::Queued);
        assert_eq!(o.push(vec![0; 40], 100), Pushed::Queued, "exactly at the bound");
        assert_eq!(o.unsent(), 100);
        assert_eq!(o.pop().map(|c| c.len()), Some(60));
        assert_eq!(o.push(vec![0; 60], 100), Pushed::Queued);
        assert_eq!(o.push(vec![0; 1], 100), Pushed::Overflowed);
        assert_eq!((o.unsent(), o.pop(), o.finished()), (0, None, true), "dropped at once");
        assert_eq!(o.push(vec![0; 1], 100), Pushed::Closed);
        assert_eq!(o.peak(), 100);
    }

    #[test]
    fn one_large_chunk_goes_to_a_level_reader() {
        let mut o: Outbox<Vec<u8>> = Outbox::default();
        assert_eq!(o.push(vec![0; 500], 100), Pushed::Queued);
        assert_eq!(o.push(vec![0; 1], 100), Pushed::Overflowed, "but nothing after it");
    }

    #[test]
    fn close_lets_the_reader_finish() {
        let mut o: Outbox<Vec<u8>> = Outbox::default();
        o.push(vec![1], 100);
        o.close();
        assert!(!o.finished());
        assert_eq!(o.pop(), Some(vec![1]));
        assert!(o.finished());
    }
}
