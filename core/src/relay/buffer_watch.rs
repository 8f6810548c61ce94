//! When a fan-out must read each socket's `bufferedAmount`.
//!
//! A socket whose client stops reading is closed (4002) once more than the
//! bound is queued on it, so a relay's memory stays bounded. Reading
//! `bufferedAmount` is one runtime call per socket; on every fan-out that
//! is as many calls as sends, for sockets that almost always hold nothing.
//!
//! A socket's queue only grows by what the relay sends it. So after a
//! fan-out that read every socket, no socket holds more than the `peak`
//! read then, plus every byte sent since: each fan-out frame once (every
//! socket gets it once) and every frame sent to a single socket (acks,
//! replies, replays) in full. While that sum stays within the bound, no
//! socket can be over it and the reads are skipped; the first fan-out that
//! could take one over reads them all again, right after its sends, as
//! every fan-out did before. A relay that just woke knows no peak, so its
//! first fan-out reads.
//!
//! Sizes are what a frame can queue at most, in bytes: the glue counts a
//! JS string as 3 bytes per UTF-16 unit (read without a copy), the most
//! UTF-8 needs. Pongs the runtime answers by itself are not counted: 4
//! bytes each, on the pinging client's own socket.

/// The decision state: one per relay incarnation.
#[derive(Debug, Clone)]
pub struct BufferWatch {
    bound: usize,
    /// The most any open socket held at the last full read; `None` until
    /// one has happened in this incarnation.
    peak: Option<usize>,
    /// Bytes any one socket may have been sent since that read, at most.
    sent_since: usize,
}

impl BufferWatch {
    pub fn new(bound: usize) -> Self {
        BufferWatch { bound, peak: None, sent_since: 0 }
    }

    /// Before fanning out a frame of `frame_size`: whether this fan-out
    /// must read every socket's buffer after its send.
    pub fn must_read(&self, frame_size: usize) -> bool {
        match self.peak {
            None => true,
            Some(peak) => peak.saturating_add(self.sent_since).saturating_add(frame_size) > self.bound,
        }
    }

    /// A fan-out that did not read: every socket may hold `frame_size` more.
    pub fn fanned_out(&mut self, frame_size: usize) {
        self.sent_since = self.sent_since.saturating_add(frame_size);
    }

    /// A frame sent to one socket outside a fan-out.
    pub fn sent_one(&mut self, size: usize) {
        self.sent_since = self.sent_since.saturating_add(size);
    }

    /// A fan-out that read every socket it sent to: `peak` is the most one
    /// still open holds (those over the bound were closed).
    pub fn read_all(&mut self, peak: usize) {
        self.peak = Some(peak);
        self.sent_since = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_relay_reads_on_its_first_fan_out() {
        let w = BufferWatch::new(1000);
        assert!(w.must_read(1));
    }

    #[test]
    fn idle_sockets_are_read_again_only_once_the_bound_could_be_reached() {
        let mut w = BufferWatch::new(1000);
        w.read_all(0);
        for _ in 0..9 {
            assert!(!w.must_read(100));
            w.fanned_out(100);
        }
        assert!(!w.must_read(100), "900 + 100 is not over 1000");
        w.fanned_out(100);
        assert!(w.must_read(1), "1000 + 1 could be");
        w.read_all(0);
        assert!(!w.must_read(100));
    }

    #[test]
    fn a_full_socket_is_read_on_every_fan_out() {
        let mut w = BufferWatch::new(1000);
        w.read_all(995);
        assert!(w.must_read(10));
        assert!(!w.must_read(5));
    }

    #[test]
    fn sends_to_one_socket_count_too() {
        let mut w = BufferWatch::new(1000);
        w.read_all(0);
        w.sent_one(950);
        assert!(w.must_read(100));
    }

    /// A model of the sockets: whatever the sends, the drains and the
    /// reads, no socket ever holds more than the bound after a fan-out
    /// that did not read, so skipping the read never misses one.
    #[derive(Debug, Clone)]
    enum Op {
        FanOut(usize),
        SendOne(usize, usize),
        Drain(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..400).prop_map(Op::FanOut),
            (0usize..4, 1usize..600).prop_map(|(s, n)| Op::SendOne(s, n)),
            (0usize..4, 0usize..800).prop_map(|(s, n)| Op::Drain(s, n)),
        ]
    }

    proptest! {
        #[test]
        fn a_skipped_read_never_misses_a_socket_over_the_bound(ops in proptest::collection::vec(op(), 1..200)) {
            const BOUND: usize = 1000;
            let mut w = BufferWatch::new(BOUND);
            let mut held = [0usize; 4];
            let mut open = [true; 4];
            for op in ops {
                match op {
                    Op::FanOut(size) => {
                        let read = w.must_read(size);
                        for s in 0..4 {
                            if open[s] {
                                held[s] += size;
                            }
                        }
                        if read {
                            let mut peak = 0;
                            for s in 0..4 {
                                if open[s] && held[s] > BOUND {
                                    open[s] = false;
                                } else if open[s] {
                                    peak = peak.max(held[s]);
                                }
                            }
                            w.read_all(peak);
                        } else {
                            w.fanned_out(size);
                            for s in 0..4 {
                                prop_assert!(!open[s] || held[s] <= BOUND, "socket {s} holds {} unseen", held[s]);
                            }
                        }
                    }
                    Op::SendOne(s, size) => {
                        if open[s] {
                            held[s] += size;
                        }
                        w.sent_one(size);
                    }
                    Op::Drain(s, n) => held[s] = held[s].saturating_sub(n),
                }
            }
        }
    }
}
