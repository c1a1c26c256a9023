//! What a soak client keeps: the messages it sent (by index, with their ack), and per room a
//! digest of what it was shown, by seq. A digest, not the messages: 1,000 clients in 2 rooms of
//! 15,000 messages each would hold 30 million copies otherwise. The check folds the stored
//! history the same way and compares.

use std::hash::{Hash, Hasher};

use super::rng::{Rng, mix};

/// Which kind of client sent a message: the first character of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Reads everything, resends what was not acknowledged, keeps a view.
    Steady,
    /// Sends flat out, ignoring `rate_limited`, until closed with 4009.
    Flood,
    /// Stops reading until closed with 4008.
    Stall,
}

impl Kind {
    fn tag(self) -> char {
        match self {
            Kind::Steady => 'w',
            Kind::Flood => 'f',
            Kind::Stall => 't',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Steady => "steady",
            Kind::Flood => "flood",
            Kind::Stall => "stall",
        }
    }
}

/// The id of message `n` of client `k`: unique per user, as the protocol wants, and it says
/// who sent it, so a stored message leads back to its entry in the sender's ledger.
pub fn msg_id(kind: Kind, k: usize, n: usize) -> String {
    format!("{}{k}-{n}", kind.tag())
}

pub fn parse_id(id: &str) -> Option<(Kind, usize, usize)> {
    let kind = match id.chars().next()? {
        'w' => Kind::Steady,
        'f' => Kind::Flood,
        't' => Kind::Stall,
        _ => return None,
    };
    let (k, n) = id[1..].split_once('-')?;
    Some((kind, k.parse().ok()?, n.parse().ok()?))
}

/// The body of message `n` of client `k`: derived, so the ledger need not keep it. Varied in
/// length, with multi-byte characters, tabs and newlines, never only whitespace.
pub fn body(seed: u64, kind: Kind, k: usize, n: usize) -> String {
    const WORDS: &[&str] = &[
        "soak",
        "kill",
        "seq",
        "ack",
        "résumé",
        "日本語",
        "🦀",
        "gap",
        "free",
        "once",
        "\t",
        "\n",
        "reconnect",
        "replay",
    ];
    let mut rng = Rng::new(
        seed,
        ((k as u64) << 24) ^ n as u64 ^ ((kind.tag() as u64) << 56),
    );
    let most = if rng.below(20) == 0 { 300 } else { 12 };
    let words = 1 + rng.below(most) as usize;
    let mut s = format!("{}{k}.{n}", kind.tag());
    for _ in 0..words {
        s.push(' ');
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// A message's contribution to a view digest.
pub fn msg_hash(seq: u64, from: &str, id: &str, body: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (seq, from, id, body).hash(&mut h);
    h.finish()
}

/// Order matters: the digest of seqs 1, 2 is not that of 2, 1.
pub fn chain(digest: u64, h: u64) -> u64 {
    mix(digest.rotate_left(17) ^ h)
}

/// What happened to a message in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent (perhaps several times, always with the same id), no ack yet.
    Pending { room: u16 },
    /// The server said it is stored, at this seq.
    Acked { room: u16, seq: u64 },
}

impl Sent {
    pub fn room(self) -> usize {
        match self {
            Sent::Pending { room } | Sent::Acked { room, .. } => room as usize,
        }
    }
}

/// Seqs `start..=end` shown, contiguously, folded into `digest`; empty when `end < start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub digest: u64,
}

/// Where a shown message fell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Right after the last one: as it must be.
    Next,
    /// A seq already shown: the same message twice.
    Twice,
    /// Seqs were skipped: a hole in the view.
    Gap,
}

/// One room as one client saw it. Exact catch-up keeps it one segment from seq 1; a reload or a
/// gap starts another (and is counted where it happens).
#[derive(Debug, Clone)]
pub struct View {
    pub segments: Vec<Segment>,
}

impl Default for View {
    fn default() -> Self {
        Self {
            segments: vec![Segment {
                start: 1,
                end: 0,
                digest: 0,
            }],
        }
    }
}

impl View {
    /// The highest seq held with everything before it (in the current segment).
    pub fn high(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.end)
    }

    pub fn show(&mut self, seq: u64, from: &str, id: &str, body: &str) -> Shown {
        let h = msg_hash(seq, from, id, body);
        let Some(seg) = self.segments.last_mut() else {
            return Shown::Gap;
        };
        if seq == seg.end + 1 {
            seg.end = seq;
            seg.digest = chain(seg.digest, h);
            Shown::Next
        } else if seq <= seg.end {
            Shown::Twice
        } else {
            self.segments.push(Segment {
                start: seq,
                end: seq,
                digest: chain(0, h),
            });
            Shown::Gap
        }
    }

    /// A reload: what was held stays checked, and the view continues from `seq`.
    /// A view of a room whose first message will have seq `first` (the seqs before it are the
    /// members' joins, events a protocol 1 client does not see).
    pub fn starting_at(first: u64) -> Self {
        let mut v = Self::default();
        v.restart_at(first.max(1));
        v
    }

    pub fn restart_at(&mut self, seq: u64) {
        if self.segments.last().is_some_and(|s| s.end < s.start) {
            self.segments.pop();
        }
        self.segments.push(Segment {
            start: seq,
            end: seq - 1,
            digest: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_back_to_their_sender() {
        let id = msg_id(Kind::Flood, 12, 345);
        assert_eq!(parse_id(&id), Some((Kind::Flood, 12, 345)));
        assert!(id.len() <= 64);
        assert_eq!(parse_id("x1-2"), None);
    }

    #[test]
    fn bodies_are_valid_and_reproducible() {
        for n in 0..500 {
            let b = body(3, Kind::Steady, 7, n);
            assert_eq!(b, body(3, Kind::Steady, 7, n));
            assert!(b.len() <= 16384 && !b.trim().is_empty());
            assert!(b.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'));
        }
    }

    #[test]
    fn a_view_counts_twice_and_gaps_and_digests_in_order() {
        let mut v = View::default();
        assert_eq!(v.show(1, "a", "w0-0", "x"), Shown::Next);
        assert_eq!(v.show(2, "a", "w0-1", "y"), Shown::Next);
        assert_eq!(v.show(2, "a", "w0-1", "y"), Shown::Twice);
        assert_eq!(v.high(), 2);
        let mut w = View::default();
        w.show(1, "a", "w0-0", "x");
        w.show(2, "a", "w0-1", "y");
        assert_eq!(v.segments, w.segments);
        assert_eq!(v.show(4, "a", "w0-3", "z"), Shown::Gap);
        assert_eq!(v.segments.len(), 2);
        v.restart_at(10);
        assert_eq!(v.high(), 9);
        assert_eq!(v.show(10, "a", "w0-9", "q"), Shown::Next);
    }
}
