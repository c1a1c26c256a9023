//! One room as the client holds it: messages by seq (so a duplicate is a no-op), the pending
//! queue of messages typed but not yet acknowledged, gap detection, members, typing, unread.
//! Pure: strings arrive here already sanitized.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_proto::Status;

/// A stored message, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    pub id: String,
    pub from: String,
    /// The body as sanitized lines (a `/me ` prefix already removed when `action`).
    pub lines: Vec<String>,
    pub ts: i64,
    pub action: bool,
}

/// Where a message typed by this user stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    /// Typed while offline or not yet answered: sent (again) with the same id on reconnect.
    Waiting,
    /// The server refused it; the reason is shown and it is not resent.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    /// What the user typed, sent as is.
    pub body: String,
    pub state: PendingState,
}

/// A range of seqs to fetch with `history`: messages with seq below `before`, `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub before: u64,
    pub limit: u32,
}

impl Fetch {
    pub fn new(before: u64, limit: u32) -> Self {
        Self { before, limit }
    }
}

/// Wrapped rows per message seq, with the width they were wrapped at.
pub type WrapCache =
    std::cell::RefCell<std::collections::HashMap<u64, (usize, std::rc::Rc<Vec<String>>)>>;

/// How long a typing indicator shows without a refresh (the server's is ~6 s).
pub const TYPING_SHOWN: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Default)]
pub struct Room {
    pub name: String,
    pub epoch: Option<String>,
    pub topic: String,
    pub messages: BTreeMap<u64, Message>,
    pub pending: Vec<Pending>,
    pub members: BTreeMap<String, Status>,
    /// Who is typing, until when.
    pub typing: BTreeMap<String, Instant>,
    /// Every seq from the start of the current snapshot up to this one is held.
    pub contiguous: u64,
    /// The highest seq the user has seen with the room on screen.
    pub last_read: u64,
    pub unread: u32,
    pub mention: bool,
    /// Subscribed on the current connection (joined answered and every replay page in).
    pub live: bool,
    /// A history request to fill a gap is on its way.
    pub fetching: bool,
    /// The gap that request asks for, to tell from its answer which seqs are no messages.
    pub fetch: Option<Fetch>,
    /// The `latest_seq` of the current `joined`: once its replay is complete, every message up
    /// to it is held.
    pub joined_latest: u64,
    /// Where the "new since you last read" line goes: the read position when the room was last
    /// brought on screen.
    pub marker: Option<u64>,
    /// Wrapped body rows per message, for the width they were wrapped at: only visible messages
    /// are ever wrapped, each once per width, so drawing does not grow with history.
    pub wrapped: WrapCache,
    /// Bumped when a message lands anywhere but after the newest (or history is dropped): the
    /// view's row index (`view::RowIndex`) extends itself on appends and rebuilds otherwise.
    pub reshaped: u64,
    pub row_index: std::cell::RefCell<crate::view::RowIndex>,
}

/// Whether `body` mentions `me`: `@me`, or `me` as a whole word (case-insensitive).
pub fn mentions(body: &str, me: &str) -> bool {
    let lower = body.to_lowercase();
    let me = me.to_lowercase();
    lower.match_indices(&me).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + me.len()..].chars().next();
        let word =
            |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'));
        (word(before) || before == Some('@')) && word(after)
    })
}

impl Room {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub fn latest_seq(&self) -> u64 {
        self.messages.keys().next_back().copied().unwrap_or(0)
    }

    /// A snapshot from `joined`: on `reload` (or another epoch) what we held is dropped.
    pub fn snapshot(&mut self, epoch: &str, drop_held: bool, messages: Vec<Message>, latest: u64) {
        if drop_held || self.epoch.as_deref() != Some(epoch) {
            self.messages.clear();
            self.reshaped += 1;
            self.contiguous = 0;
            // Nothing of the old history is comparable: count nothing before now as unread.
            self.last_read = self.last_read.min(latest);
        }
        self.epoch = Some(epoch.to_owned());
        if self.messages.is_empty() {
            // The snapshot starts the contiguous run wherever it starts.
            self.contiguous = messages.first().map_or(latest, |m| m.seq.saturating_sub(1));
        }
        for m in messages {
            self.insert(m);
        }
        if self.contiguous < latest && self.messages.is_empty() {
            self.contiguous = latest;
        }
    }

    /// The snapshot (and its replay) is complete: every message up to `latest` is held. The
    /// seqs among them that are no message (a join, an edit, a reaction: the server numbers every
    /// event of the room, and protocol 1 sees only the messages) are no gap.
    pub fn caught_up(&mut self, latest: u64) {
        self.contiguous = self.contiguous.max(latest);
        while self.messages.contains_key(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }

    /// The answer to the gap request `f`: `history` gives the newest messages below
    /// `f.before`, so when the oldest of them is at or below the contiguous run (or no older
    /// ones remain), every seq of the gap that did not come is no message, and the run closes
    /// over it. Otherwise the next request asks for what is below them.
    pub fn gap_filled(&mut self, f: &Fetch, seqs: &[u64], has_more: bool) {
        let lowest = seqs.iter().min().copied();
        let covered = !has_more || lowest.is_some_and(|l| l <= self.contiguous + 1);
        if covered && f.before > self.contiguous + 1 {
            self.contiguous = f.before - 1;
        }
        while self.messages.contains_key(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }

    /// Stores a message; false if it was already there (never shown twice). A pending message
    /// with the same id is the same message: it leaves the queue.
    pub fn insert(&mut self, m: Message) -> bool {
        self.pending.retain(|p| p.id != m.id);
        if self.messages.contains_key(&m.seq) {
            return false;
        }
        if m.seq < self.latest_seq() {
            self.reshaped += 1;
        }
        self.messages.insert(m.seq, m);
        while self.messages.contains_key(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        true
    }

    /// The next range to fetch when seqs are missing between the contiguous run and the newest
    /// message (a jump in the live stream).
    pub fn gap(&self) -> Option<Fetch> {
        let next_held = self
            .messages
            .range(self.contiguous + 1..)
            .next()
            .map(|(s, _)| *s)?;
        let missing = next_held - self.contiguous - 1;
        Some(Fetch {
            before: next_held,
            limit: missing.min(u64::from(chat_proto::limits::HISTORY_PAGE_MAX)) as u32,
        })
    }

    /// Where a rejoin resumes.
    pub fn since(&self) -> Option<(u64, String)> {
        self.epoch.clone().map(|e| (self.contiguous, e))
    }

    pub fn queue(&mut self, id: String, body: String) {
        self.pending.push(Pending {
            id,
            body,
            state: PendingState::Waiting,
        });
    }

    /// An ack: the message is stored. It shows once its `message` (or replay) arrives.
    pub fn acked(&mut self, id: &str) {
        self.pending.retain(|p| p.id != id);
    }

    pub fn failed(&mut self, id: &str, reason: &str) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
            p.state = PendingState::Failed(reason.to_owned());
        }
    }

    /// Pending messages to (re)send on a fresh connection.
    pub fn to_resend(&self) -> impl Iterator<Item = &Pending> {
        self.pending
            .iter()
            .filter(|p| p.state == PendingState::Waiting)
    }

    /// Counts a new message for unread and mentions unless the room is on screen.
    pub fn count_unread(&mut self, m: &Message, me: &str, focused: bool) {
        if focused {
            self.last_read = self.last_read.max(m.seq);
            return;
        }
        if m.from != me && m.seq > self.last_read {
            self.unread += 1;
            if m.lines.iter().any(|l| mentions(l, me)) {
                self.mention = true;
            }
        }
    }

    /// The room came on screen: everything in it is read (the marker remembers where the new
    /// part started).
    pub fn mark_read(&mut self) {
        self.marker = (self.latest_seq() > self.last_read).then_some(self.last_read);
        self.last_read = self.last_read.max(self.latest_seq());
        self.unread = 0;
        self.mention = false;
    }

    /// The first message after the read position, for the "new since you last read" line.
    pub fn first_unread(&self) -> Option<u64> {
        self.messages
            .range(self.last_read + 1..)
            .next()
            .map(|(s, _)| *s)
    }

    pub fn set_typing(&mut self, user: &str, active: bool, now: Instant) {
        if active {
            self.typing.insert(user.to_owned(), now + TYPING_SHOWN);
        } else {
            self.typing.remove(user);
        }
    }

    /// Drops expired typing indicators; true if any went.
    pub fn expire_typing(&mut self, now: Instant) -> bool {
        let before = self.typing.len();
        self.typing.retain(|_, until| *until > now);
        before != self.typing.len()
    }

    /// "alice is typing…", "alice and bob are typing…", "several people are typing…".
    pub fn typing_line(&self) -> Option<String> {
        let names: Vec<&str> = self.typing.keys().map(String::as_str).collect();
        match names.as_slice() {
            [] => None,
            [a] => Some(format!("{a} is typing…")),
            [a, b] => Some(format!("{a} and {b} are typing…")),
            _ => Some("several people are typing…".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, id: &str) -> Message {
        Message {
            seq,
            id: id.into(),
            from: "bob".into(),
            lines: vec![format!("message {seq}")],
            ts: 0,
            action: false,
        }
    }

    #[test]
    fn a_message_is_stored_once() {
        let mut r = Room::new("r");
        r.snapshot("e", false, vec![m(1, "a"), m(2, "b")], 2);
        assert!(!r.insert(m(2, "b")));
        assert!(r.insert(m(3, "c")));
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.contiguous, 3);
    }

    #[test]
    fn a_jump_in_seq_is_a_gap_to_fetch_and_filling_it_closes_it() {
        let mut r = Room::new("r");
        r.snapshot("e", false, vec![m(1, "a"), m(2, "b")], 2);
        assert_eq!(r.gap(), None);
        r.insert(m(6, "f"));
        assert_eq!(
            r.gap(),
            Some(Fetch {
                before: 6,
                limit: 3
            })
        );
        assert_eq!(
            r.since(),
            Some((2, "e".into())),
            "rejoin from the contiguous run"
        );
        for s in 3..=5 {
            r.insert(m(s, "x"));
        }
        assert_eq!(r.gap(), None);
        assert_eq!(r.contiguous, 6);
        // A huge gap is fetched a page at a time.
        r.insert(m(1000, "z"));
        assert_eq!(
            r.gap(),
            Some(Fetch {
                before: 1000,
                limit: 200
            })
        );
    }

    #[test]
    fn a_snapshot_that_starts_late_is_not_a_gap() {
        let mut r = Room::new("r");
        r.snapshot("e", false, vec![m(50, "a"), m(51, "b")], 51);
        assert_eq!(r.contiguous, 51);
        assert_eq!(r.gap(), None);
        let mut empty = Room::new("q");
        empty.snapshot("e", false, vec![], 0);
        assert_eq!((empty.contiguous, empty.gap()), (0, None));
    }

    #[test]
    fn reload_and_a_new_epoch_drop_what_was_held() {
        let mut r = Room::new("r");
        r.snapshot("e1", false, vec![m(1, "a"), m(2, "b")], 2);
        r.snapshot("e2", false, vec![m(1, "x")], 1);
        assert_eq!(r.messages.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.messages[&1].id, "x");
        r.snapshot("e2", true, vec![m(7, "y")], 7);
        assert_eq!(r.messages.keys().copied().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn pending_messages_show_once_whichever_comes_first() {
        let mut r = Room::new("r");
        r.snapshot("e", false, vec![], 0);
        r.queue("p1".into(), "hello".into());
        r.queue("p2".into(), "again".into());
        assert_eq!(r.to_resend().count(), 2);
        // Ack first, then the broadcast.
        r.acked("p1");
        assert_eq!(r.pending.len(), 1);
        r.insert(m(1, "p1"));
        // The broadcast (or a replay after a reconnect) first: it replaces the pending line.
        r.insert(m(2, "p2"));
        assert!(r.pending.is_empty());
        r.acked("p2");
        assert_eq!(r.messages.len(), 2);
        r.queue("p3".into(), "bad".into());
        r.failed("p3", "invalid_body");
        assert_eq!(r.to_resend().count(), 0, "a refused message is not resent");
    }

    #[test]
    fn unread_and_mentions() {
        let mut r = Room::new("r");
        let said = |seq, from: &str, text: &str| Message {
            from: from.into(),
            lines: vec![text.into()],
            ..m(seq, "x")
        };
        r.count_unread(&said(1, "bob", "hi all"), "alice", false);
        r.count_unread(&said(2, "bob", "hey @alice look"), "alice", false);
        r.count_unread(&said(3, "alice", "my own"), "alice", false);
        assert_eq!((r.unread, r.mention), (2, true));
        r.messages.insert(3, m(3, "c"));
        r.mark_read();
        assert_eq!((r.unread, r.mention, r.last_read), (0, false, 3));
        r.count_unread(&said(4, "bob", "x"), "alice", true);
        assert_eq!(
            (r.unread, r.last_read),
            (0, 4),
            "a focused room reads as it goes"
        );
        assert!(mentions("Alice: ping", "alice"));
        assert!(mentions("ok alice.", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("alicex", "alice"));
    }

    #[test]
    fn typing_lines_and_expiry() {
        let t0 = Instant::now();
        let mut r = Room::new("r");
        assert_eq!(r.typing_line(), None);
        r.set_typing("alice", true, t0);
        assert_eq!(r.typing_line().as_deref(), Some("alice is typing…"));
        r.set_typing("bob", true, t0 + Duration::from_secs(5));
        assert_eq!(
            r.typing_line().as_deref(),
            Some("alice and bob are typing…")
        );
        r.set_typing("carol", true, t0);
        assert_eq!(
            r.typing_line().as_deref(),
            Some("several people are typing…")
        );
        assert!(r.expire_typing(t0 + TYPING_SHOWN + Duration::from_millis(1)));
        assert_eq!(r.typing_line().as_deref(), Some("bob is typing…"));
        r.set_typing("bob", false, t0);
        assert_eq!(r.typing_line(), None);
    }

    #[test]
    fn seqs_that_are_no_messages_are_not_a_gap_to_fetch_forever() {
        let mut r = Room::new("r");
        // A replay up to seq 8 whose seqs 6 and 8 are a join and an edit.
        r.snapshot("e", false, vec![m(5, "a"), m(7, "b")], 8);
        r.caught_up(8);
        assert_eq!((r.contiguous, r.gap()), (8, None));
        // Live: seq 9 was a reaction, 10 a message.
        r.insert(m(10, "c"));
        let f = r.gap().expect("a jump");
        assert_eq!((f.before, f.limit), (10, 1));
        // The answer is the newest message below 10: seq 7, older than the gap.
        r.gap_filled(&f, &[7], true);
        assert_eq!(
            (r.contiguous, r.gap()),
            (10, None),
            "closed, not asked again"
        );
        // A gap whose answer stops above the run (cut by bytes): the rest is asked next.
        r.insert(m(20, "d"));
        let f = r.gap().expect("a jump");
        r.insert(m(18, "e"));
        r.insert(m(19, "f"));
        r.gap_filled(&f, &[18, 19], true);
        assert_eq!(r.contiguous, 10);
        let next = r.gap().expect("the rest");
        assert_eq!(next.before, 18);
        r.gap_filled(&next, &[], false);
        assert_eq!((r.contiguous, r.gap()), (20, None));
    }
}
