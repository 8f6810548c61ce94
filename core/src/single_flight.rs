//! At most one call in flight, with everything that arrives meanwhile
//! gathered for the next one. This is how Herald batches under load without
//! a timer: the busier the link, the larger each batch, and an idle link
//! sends at once.

use std::collections::VecDeque;

/// A queue drained by one sender at a time.
#[derive(Debug)]
pub struct SingleFlight<T> {
    queue: VecDeque<T>,
    in_flight: bool,
    capacity: usize,
}

/// What `push` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, and nobody is sending: the caller must start a sender.
    StartSender,
    /// Queued behind the call in flight.
    Queued,
    /// The queue is full; the item was not taken.
    Full,
}

impl<T> SingleFlight<T> {
    pub fn new(capacity: usize) -> Self {
        SingleFlight { queue: VecDeque::new(), in_flight: false, capacity }
    }

    pub fn push(&mut self, item: T) -> Pushed {
        if self.queue.len() >= self.capacity {
            return Pushed::Full;
        }
        self.queue.push_back(item);
        if self.in_flight {
            Pushed::Queued
        } else {
            self.in_flight = true;
            Pushed::StartSender
        }
    }

    /// The sender takes up to `max` items for its next call; an empty result
    /// means it is done and the flight is over.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        let n = self.queue.len().min(max);
        let batch: Vec<T> = self.queue.drain(..n).collect();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sender_batches_the_rest() {
        let mut q = SingleFlight::new(10);
        assert_eq!(q.push(1), Pushed::StartSender);
        assert_eq!(q.take(8), vec![1]);
        assert_eq!(q.push(2), Pushed::Queued);
        assert_eq!(q.push(3), Pushed::Queued);
        assert_eq!(q.take(8), vec![2, 3]);
        assert_eq!(q.take(8), Vec::<i32>::new());
        assert_eq!(q.push(4), Pushed::StartSender);
    }

    #[test]
    fn bounded() {
        let mut q = SingleFlight::new(1);
        assert_eq!(q.push(1), Pushed::StartSender);
        assert_eq!(q.push(2), Pushed::Full);
        assert_eq!(q.len(), 1);
    }
}
