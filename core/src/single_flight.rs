//! At most one call in flight, with everything that arrives meanwhile
//! gathered for the next one. This is how Herald batches under load without
//! a timer: the busier the link, the larger each batch, and an idle link
//! sends at once.
//!
//! Bounded by count and by bytes: a count alone lets a queue of maximal
//! items grow to count × item size (4096 publishes of 64 KiB is 256 MiB).

use std::collections::VecDeque;

/// A queue drained by one sender at a time.
#[derive(Debug)]
pub struct SingleFlight<T> {
    /// Items with the bytes each was pushed with.
    queue: VecDeque<(T, usize)>,
    in_flight: bool,
    capacity: usize,
    max_bytes: usize,
    /// Bytes queued plus those of the batch the sender holds: it holds a
    /// batch from one `take` to the next, so the bound covers what is in
    /// flight too, not only what waits.
    bytes: usize,
    /// Of `bytes`, the batch the sender took last.
    taken: usize,
}

/// What `push` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, and nobody is sending: the caller must start a sender.
    StartSender,
    /// Queued behind the call in flight.
    Queued,
    /// The queue is full (by count or by bytes); the item was not taken.
    Full,
}

impl<T> SingleFlight<T> {
    /// At most `capacity` items waiting, and `max_bytes` waiting or in
    /// flight together.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        SingleFlight { queue: VecDeque::new(), in_flight: false, capacity, max_bytes, bytes: 0, taken: 0 }
    }

    /// Queues `item`, which weighs `bytes`. An item is refused for bytes
    /// only when something else is held, so one larger than the bound still
    /// goes (alone) instead of never.
    pub fn push(&mut self, item: T, bytes: usize) -> Pushed {
        if self.queue.len() >= self.capacity || (self.bytes > 0 && self.bytes + bytes > self.max_bytes) {
            return Pushed::Full;
        }
        self.queue.push_back((item, bytes));
        self.bytes += bytes;
        if self.in_flight {
            Pushed::Queued
        } else {
            self.in_flight = true;
            Pushed::StartSender
        }
    }

    /// The sender is done with its last batch and takes up to `max` items,
    /// and up to `max_bytes` of them (at least one), for its next call; an
    /// empty result means it is done and the flight is over.
    pub fn take(&mut self, max: usize, max_bytes: usize) -> Vec<T> {
        self.bytes -= self.taken;
        self.taken = 0;
        let mut batch = Vec::new();
        while let Some((_, bytes)) = self.queue.front() {
            let fits = batch.is_empty() || (batch.len() < max && self.taken + bytes <= max_bytes);
            if !fits {
                break;
            }
            self.taken += bytes;
            if let Some((item, _)) = self.queue.pop_front() {
                batch.push(item);
            }
        }
        if batch.is_empty() {
            self.in_flight = false;
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes waiting or in the sender's batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sender_batches_the_rest() {
        let mut q = SingleFlight::new(10, 100);
        assert_eq!(q.push(1, 1), Pushed::StartSender);
        assert_eq!(q.take(8, 100), vec![1]);
        assert_eq!(q.push(2, 1), Pushed::Queued);
        assert_eq!(q.push(3, 1), Pushed::Queued);
        assert_eq!(q.take(8, 100), vec![2, 3]);
        assert_eq!(q.take(8, 100), Vec::<i32>::new());
        assert_eq!(q.push(4, 1), Pushed::StartSender);
    }

    #[test]
    fn bounded() {
        let mut q = SingleFlight::new(1, 100);
        assert_eq!(q.push(1, 1), Pushed::StartSender);
        assert_eq!(q.push(2, 1), Pushed::Full);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn bounded_by_bytes_in_flight_included() {
        let mut q = SingleFlight::new(4096, 100);
        assert_eq!(q.push("a", 60), Pushed::StartSender);
        assert_eq!(q.push("b", 50), Pushed::Full, "60 + 50 bytes pass the bound though the count is far from it");
        assert_eq!(q.push("c", 40), Pushed::Queued);
        assert_eq!((q.len(), q.bytes()), (2, 100));
        assert_eq!(q.take(256, 1000), vec!["a", "c"]);
        assert_eq!(q.push("d", 1), Pushed::Full, "the batch in flight still counts");
        assert_eq!(q.take(256, 1000), Vec::<&str>::new(), "done with it: released");
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.push("big", 500), Pushed::StartSender, "alone, an item over the bound still goes");
        assert_eq!(q.push("e", 1), Pushed::Full);
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_but_never_empty() {
        let mut q = SingleFlight::new(100, 1000);
        for (item, bytes) in [("a", 30), ("b", 30), ("c", 50), ("d", 10)] {
            q.push(item, bytes);
        }
        assert_eq!(q.take(10, 60), vec!["a", "b"]);
        assert_eq!(q.take(10, 20), vec!["c"], "one item over the batch bound goes alone");
        assert_eq!(q.take(10, 20), vec!["d"]);
        assert_eq!((q.take(10, 20), q.bytes()), (vec![], 0));
    }
}
