//! Per-room ordering of messages arriving from several nodes. Pure state: the broker feeds it
//! every message it sees for a room (its own node's and the others'), in whatever order Redis
//! and the nodes' commits produce, and it hands back runs to deliver in seq order, each seq once.
//!
//! Seqs are gap-free per room, so a seq ahead of the next expected one means a message is on its
//! way (another node committed earlier but published later) or was lost (Redis dropped the
//! connection, a publish queue was full). It waits for it a short while; then the
//! broker reads the missing seqs from the database and hands them in with [`RoomSeq::filled`].
//! The wait is the broker's `GAP_WAIT`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Messages held back for a gap beyond this many bytes: read the gap now rather than hold more.
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// One room's cursor.
#[derive(Debug)]
pub struct RoomSeq {
    /// The highest seq delivered (or known to be in every local subscriber's snapshot).
    delivered: u64,
    /// Seqs above `delivered + 1` that arrived early.
    pending: BTreeMap<u64, Utf8Bytes>,
    pending_bytes: usize,
    /// Since when the oldest gap is open.
    gap_since: Option<Instant>,
}

/// A range the database must fill: seqs `after + 1 ..= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub after: u64,
    pub upto: u64,
}

impl RoomSeq {
    /// A cursor that has everything up to `delivered`.
    pub fn new(delivered: u64) -> Self {
        Self {
            delivered,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            gap_since: None,
        }
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A message seen: returns the run now deliverable (possibly empty).
    pub fn offer(&mut self, seq: u64, frame: Utf8Bytes, now: Instant) -> Vec<(u64, Utf8Bytes)> {
        if seq <= self.delivered || self.pending.contains_key(&seq) {
            return Vec::new();
        }
        if seq == self.delivered + 1 {
            self.delivered = seq;
            let mut run = vec![(seq, frame)];
            self.release(&mut run);
            return run;
        }
        self.pending_bytes += frame.len();
        self.pending.insert(seq, frame);
        self.gap_since.get_or_insert(now);
        Vec::new()
    }

    /// Moves what became contiguous from `pending` onto `run`.
    fn release(&mut self, run: &mut Vec<(u64, Utf8Bytes)>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            let (seq, frame) = entry.remove_entry();
            self.pending_bytes -= frame.len();
            self.delivered = seq;
            run.push((seq, frame));
        }
        if self.pending.is_empty() {
            self.gap_since = None;
        }
    }

    /// The gap to read from the database, once it has been open for `wait` (or what waits
    /// behind it is too big to hold).
    pub fn due_gap(&self, now: Instant, wait: Duration) -> Option<Gap> {
        let since = self.gap_since?;
        let first = *self.pending.keys().next()?;
        let overdue = now.saturating_duration_since(since) >= wait;
        (overdue || self.pending_bytes > MAX_PENDING_BYTES).then_some(Gap {
            after: self.delivered,
            upto: first - 1,
        })
    }

    /// Messages read from the database for seqs after `after` (ascending; may be fewer than
    /// asked: a page). Returns the run now deliverable. If the database had nothing at all past
    /// `after` up to `upto`, those seqs cannot arrive (a deleted room, a restore): the cursor
    /// skips them rather than wait for ever.
    pub fn filled(
        &mut self,
        after: u64,
        upto: u64,
        messages: Vec<(u64, Utf8Bytes)>,
        now: Instant,
    ) -> Vec<(u64, Utf8Bytes)> {
        let mut run = Vec::new();
        let empty = messages.is_empty();
        for (seq, frame) in messages {
            if seq == self.delivered + 1 {
                self.delivered = seq;
                run.push((seq, frame));
                self.release(&mut run);
            }
        }
        if empty && self.delivered <= upto && self.delivered == after {
            self.delivered = upto;
            self.release(&mut run);
        }
        if !self.pending.is_empty() && run.is_empty() {
            // Still a gap (a page short): wait again before the next read.
            self.gap_since = Some(now);
        } else if !self.pending.is_empty() {
            self.gap_since.get_or_insert(now);
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(seq: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("m{seq}"))
    }

    fn seqs(run: &[(u64, Utf8Bytes)]) -> Vec<u64> {
        run.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn in_order_goes_straight_through_and_repeats_are_dropped() {
        let mut r = RoomSeq::new(4);
        let t = Instant::now();
        assert_eq!(seqs(&r.offer(5, f(5), t)), [5]);
        assert!(r.offer(5, f(5), t).is_empty());
        assert!(r.offer(3, f(3), t).is_empty());
        assert_eq!(seqs(&r.offer(6, f(6), t)), [6]);
    }

    #[test]
    fn an_early_seq_waits_for_the_one_before_it() {
        let mut r = RoomSeq::new(0);
        let t = Instant::now();
        let wait = Duration::from_millis(100);
        assert!(r.offer(2, f(2), t).is_empty());
        assert!(r.offer(3, f(3), t).is_empty());
        assert_eq!(r.due_gap(t, wait), None, "not yet");
        assert_eq!(seqs(&r.offer(1, f(1), t)), [1, 2, 3]);
        assert_eq!(r.due_gap(t + wait, wait), None, "no gap left");
    }

    #[test]
    fn a_gap_that_stays_open_is_read_from_the_database() {
        let mut r = RoomSeq::new(10);
        let t = Instant::now();
        let wait = Duration::from_millis(100);
        r.offer(13, f(13), t);
        let gap = r.due_gap(t + wait, wait).expect("due");
        assert_eq!(
            gap,
            Gap {
                after: 10,
                upto: 12
            }
        );
        let run = r.filled(10, 12, vec![(11, f(11)), (12, f(12))], t + wait);
        assert_eq!(seqs(&run), [11, 12, 13]);
        // The late copy of 11 from Redis is not delivered again.
        assert!(r.offer(11, f(11), t + wait).is_empty());
    }

    #[test]
    fn seqs_the_database_does_not_have_are_skipped() {
        let mut r = RoomSeq::new(1);
        let t = Instant::now();
        r.offer(5, f(5), t);
        assert_eq!(seqs(&r.filled(1, 4, Vec::new(), t)), [5]);
    }

    #[test]
    fn a_short_page_waits_and_reads_again() {
        let mut r = RoomSeq::new(0);
        let t = Instant::now();
        let wait = Duration::from_millis(100);
        r.offer(4, f(4), t);
        let run = r.filled(0, 3, vec![(1, f(1))], t + wait);
        assert_eq!(seqs(&run), [1]);
        assert_eq!(
            r.due_gap(t + wait + wait, wait),
            Some(Gap { after: 1, upto: 3 })
        );
    }

    #[test]
    fn too_much_held_back_reads_the_gap_at_once() {
        let mut r = RoomSeq::new(0);
        let t = Instant::now();
        let big = Utf8Bytes::from("x".repeat(MAX_PENDING_BYTES + 1));
        r.offer(2, big, t);
        assert!(r.due_gap(t, Duration::from_secs(60)).is_some());
    }
}
