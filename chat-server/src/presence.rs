//! Who is in a room and how they show, for one room on this node: this node's own connections,
//! plus what other nodes said about theirs. Pure state, no I/O: the hub calls it under the room's
//! lock (which keeps a room's diffs in order), and both brokers feed it: the in-process one only
//! local changes, the Redis one also other nodes' changes and snapshots.
//!
//! A user's status in the room is the best of every node's view (online > away > offline): a
//! user is online while any of their connections on any node is. Another node's entries carry
//! an expiry that its periodic snapshot renews; a node killed with -9 stops renewing, and its
//! entries lapse at the expiry instead of staying online for good.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_proto::Status;

use crate::hub::UserState;

/// A user with at least one connection of this node subscribed to the room.
struct Local {
    /// Their connections here: the local status changes on 0 -> 1 and 1 -> 0 only.
    conns: usize,
    state: Arc<UserState>,
}

/// What another node said about one of its users in this room.
struct Remote {
    node: Arc<str>,
    status: Status,
    /// When this entry lapses unless the node renews it.
    until: Instant,
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Offline => 0,
        Status::Away => 1,
        Status::Online => 2,
    }
}

fn best(a: Status, b: Status) -> Status {
    if rank(a) >= rank(b) { a } else { b }
}

/// A changed effective status: the user and how they show now.
pub type Change = (Arc<str>, Status);

/// One room's presence on this node.
#[derive(Default)]
pub struct RoomPresence {
    local: HashMap<Arc<str>, Local>,
    remote: HashMap<Arc<str>, Vec<Remote>>,
}

impl RoomPresence {
    /// How `user` shows in the room, over every node.
    pub fn status_of(&self, user: &str) -> Status {
        let mut s = self.local_status(user);
        if let Some(entries) = self.remote.get(user) {
            for e in entries {
                s = best(s, e.status);
            }
        }
        s
    }

    /// How `user` shows through this node's connections only (what this node tells the others).
    pub fn local_status(&self, user: &str) -> Status {
        match self.local.get(user) {
            Some(p) if p.state.away.load(Ordering::Relaxed) => Status::Away,
            Some(_) => Status::Online,
            None => Status::Offline,
        }
    }

    /// Whether `user` has a connection here.
    pub fn is_local(&self, user: &str) -> bool {
        self.local.contains_key(user)
    }

    /// The key this room already holds for `user`, to share rather than allocate.
    pub fn key(&self, user: &str) -> Option<Arc<str>> {
        self.local
            .get_key_value(user)
            .map(|(k, _)| k.clone())
            .or_else(|| self.remote.get_key_value(user).map(|(k, _)| k.clone()))
    }

    /// Every user who shows as present, with their status.
    pub fn present(&self) -> HashMap<Arc<str>, Status> {
        let mut all = HashMap::with_capacity(self.local.len() + self.remote.len());
        for u in self.local.keys().chain(self.remote.keys()) {
            let s = self.status_of(u);
            if s != Status::Offline {
                all.insert(u.clone(), s);
            }
        }
        all
    }

    /// Runs `f` and reports `user`'s effective status if it changed.
    fn watch(&mut self, user: &Arc<str>, f: impl FnOnce(&mut Self)) -> Option<Change> {
        let before = self.status_of(user);
        f(self);
        let after = self.status_of(user);
        (before != after).then(|| (user.clone(), after))
    }

    /// A connection of `user` here joined. Returns whether it is their first here (the local
    /// status changed) and the effective change, if any.
    pub fn join_local(
        &mut self,
        user: &Arc<str>,
        state: &Arc<UserState>,
    ) -> (bool, Option<Change>) {
        let mut first = false;
        let change = self.watch(user, |p| {
            let l = p.local.entry(user.clone()).or_insert(Local {
                conns: 0,
                state: state.clone(),
            });
            l.conns += 1;
            first = l.conns == 1;
        });
        (first, change)
    }

    /// A connection of `user` here left. Returns whether it was their last here and the
    /// effective change, if any.
    pub fn leave_local(&mut self, user: &Arc<str>) -> (bool, Option<Change>) {
        let mut last = false;
        let change = self.watch(user, |p| match p.local.get_mut(user) {
            Some(l) if l.conns > 1 => l.conns -= 1,
            Some(_) => {
                p.local.remove(user);
                crate::hub::shrink(&mut p.local);
                last = true;
            }
            None => {}
        });
        (last, change)
    }

    /// `user`'s away flag changed to `away` (it lives in their shared state, already set):
    /// the effective change, if any. Away is the user's, not a node's, so their entries from
    /// other nodes take the new status now too (those nodes confirm it with their own news):
    /// the room sees the change at once, not when the last node has heard of it.
    pub fn away_changed(&mut self, user: &Arc<str>, away: bool) -> Option<Change> {
        let (old, new) = if away {
            (Status::Online, Status::Away)
        } else {
            (Status::Away, Status::Online)
        };
        let mut before = Status::Offline;
        if self.local.contains_key(user) {
            before = old;
        }
        if let Some(entries) = self.remote.get_mut(user) {
            for e in entries.iter_mut() {
                before = best(before, e.status);
                e.status = new;
            }
        }
        let now = self.status_of(user);
        (before != now).then(|| (user.clone(), now))
    }

    /// Another node says how `user` shows through its connections; `Offline` removes its entry.
    pub fn set_remote(
        &mut self,
        node: &Arc<str>,
        user: &Arc<str>,
        status: Status,
        until: Instant,
    ) -> Option<Change> {
        self.watch(user, |p| {
            let entries = p.remote.entry(user.clone()).or_default();
            entries.retain(|e| e.node != *node);
            if status != Status::Offline {
                entries.push(Remote {
                    node: node.clone(),
                    status,
                    until,
                });
            }
            if entries.is_empty() {
                p.remote.remove(user);
            }
        })
    }

    /// Another node's whole view of the room: its entries become exactly these.
    pub fn replace_node(
        &mut self,
        node: &Arc<str>,
        entries: &[(Arc<str>, Status)],
        until: Instant,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let gone: Vec<Arc<str>> = self
            .remote
            .iter()
            .filter(|(u, es)| {
                es.iter().any(|e| e.node == *node) && !entries.iter().any(|(n, _)| n == *u)
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in gone {
            changes.extend(self.set_remote(node, &u, Status::Offline, until));
        }
        for (u, s) in entries {
            changes.extend(self.set_remote(node, u, *s, until));
        }
        changes
    }

    /// Forgets what other nodes said about `user`, without a change to tell: they stopped being
    /// a member (left, kicked, banned), which the room hears of as such, and the offline news
    /// their nodes send after it then changes nothing.
    pub fn forget_remote(&mut self, user: &str) {
        self.remote.remove(user);
    }

    /// Forgets everything `node` said (it stopped, or its entries lapsed).
    pub fn drop_node(&mut self, node: &str, now: Option<Instant>) -> Vec<Change> {
        let users: Vec<Arc<str>> = self
            .remote
            .iter()
            .filter(|(_, es)| {
                es.iter()
                    .any(|e| e.node.as_ref() == node || now.is_some_and(|t| e.until <= t))
            })
            .map(|(u, _)| u.clone())
            .collect();
        let mut changes = Vec::new();
        for u in users {
            changes.extend(self.watch(&u, |p| {
                if let Some(es) = p.remote.get_mut(&u) {
                    es.retain(|e| e.node.as_ref() != node && now.is_none_or(|t| e.until > t));
                    if es.is_empty() {
                        p.remote.remove(&u);
                    }
                }
            }));
        }
        changes
    }

    /// Drops the entries of other nodes that were not renewed by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        // An empty node name matches no entry: only the expiry test applies.
        self.drop_node("\0", Some(now))
    }

    /// Whether nothing is tracked (the room may be dropped).
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// Map capacities, for the test that memory is given back.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.local.capacity().max(self.remote.capacity())
    }

    /// This node's users and their local statuses (its snapshot for the other nodes).
    pub fn local_entries(&self) -> Vec<(Arc<str>, Status)> {
        self.local
            .keys()
            .map(|u| (u.clone(), self.local_status(u)))
            .collect()
    }
}

/// Presence changes waiting for the room's next presence frame: at most one frame per room per
/// interval, so a join storm of n users costs each member about duration/interval frames
/// instead of n (n² in all).
#[derive(Default)]
pub struct Batch {
    /// One entry per user (latest wins), in the order users first changed.
    pending: Vec<Change>,
    pending_at: HashMap<Arc<str>, usize>,
    /// When the room last sent a presence frame.
    last: Option<Instant>,
}

impl Batch {
    /// A change to announce: `true` when it goes out at once (nothing waits and the room was
    /// quiet for the interval), `false` when it waits for [`Batch::due`].
    pub fn offer(&mut self, change: Change, now: Instant, interval: Duration) -> bool {
        let quiet = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if self.pending.is_empty() && quiet {
            self.last = Some(now);
            return true;
        }
        match self.pending_at.get(&change.0) {
            Some(&i) => self.pending[i].1 = change.1,
            None => {
                self.pending_at.insert(change.0.clone(), self.pending.len());
                self.pending.push(change);
            }
        }
        false
    }

    /// The waiting changes, once the interval since the last frame has passed.
    pub fn due(&mut self, now: Instant, interval: Duration) -> Option<Vec<Change>> {
        if self.pending.is_empty()
            || self
                .last
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return None;
        }
        self.last = Some(now);
        self.pending_at.clear();
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    fn state() -> Arc<UserState> {
        Arc::new(UserState {
            away: AtomicBool::new(false),
            bucket: Mutex::new(crate::rate::TokenBucket::new(0, 1, Instant::now())),
        })
    }

    #[test]
    fn online_while_any_node_has_a_connection() {
        let mut p = RoomPresence::default();
        let (ann, b, t) = (
            Arc::<str>::from("ann"),
            Arc::<str>::from("b"),
            Instant::now(),
        );
        let s = state();
        assert_eq!(
            p.join_local(&ann, &s),
            (true, Some((ann.clone(), Status::Online)))
        );
        // Another node has her too: no change in the room's view.
        let until = t + Duration::from_secs(30);
        assert_eq!(p.set_remote(&b, &ann, Status::Online, until), None);
        // Her last connection here goes: still online through node b.
        assert_eq!(p.leave_local(&ann), (true, None));
        assert_eq!(p.status_of("ann"), Status::Online);
        // Node b stops: offline.
        assert_eq!(p.drop_node("b", None), vec![(ann.clone(), Status::Offline)]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_departed_member_is_forgotten_without_a_change() {
        let mut p = RoomPresence::default();
        let (cat, n, t) = (
            Arc::<str>::from("cat"),
            Arc::<str>::from("n2"),
            Instant::now(),
        );
        let until = t + Duration::from_secs(30);
        p.set_remote(&n, &cat, Status::Online, until);
        p.forget_remote("cat");
        assert_eq!(p.status_of("cat"), Status::Offline);
        // Her node's own news of it, arriving after, changes nothing.
        assert_eq!(p.set_remote(&n, &cat, Status::Offline, until), None);
        assert!(p.is_empty());
    }

    #[test]
    fn a_node_that_stops_renewing_lapses() {
        let mut p = RoomPresence::default();
        let (bob, n, t) = (
            Arc::<str>::from("bob"),
            Arc::<str>::from("n2"),
            Instant::now(),
        );
        p.set_remote(&n, &bob, Status::Away, t + Duration::from_secs(30));
        assert_eq!(p.status_of("bob"), Status::Away);
        assert!(p.expire(t + Duration::from_secs(29)).is_empty());
        assert_eq!(
            p.expire(t + Duration::from_secs(30)),
            vec![(bob, Status::Offline)]
        );
    }

    #[test]
    fn a_snapshot_replaces_what_the_node_said_before() {
        let mut p = RoomPresence::default();
        let (a, b, n, t) = (
            Arc::<str>::from("a"),
            Arc::<str>::from("b"),
            Arc::<str>::from("n"),
            Instant::now(),
        );
        p.set_remote(&n, &a, Status::Online, t);
        let mut changes = p.replace_node(&n, &[(b.clone(), Status::Away)], t);
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(changes, vec![(a, Status::Offline), (b, Status::Away)]);
    }

    #[test]
    fn away_is_the_users_on_every_node() {
        let mut p = RoomPresence::default();
        let (ann, n, t) = (
            Arc::<str>::from("ann"),
            Arc::<str>::from("n"),
            Instant::now(),
        );
        let s = state();
        p.join_local(&ann, &s);
        s.away.store(true, Ordering::Relaxed);
        assert_eq!(
            p.away_changed(&ann, true),
            Some((ann.clone(), Status::Away))
        );
        // Her other node still says online: away is hers, so the room shows away at once.
        p.set_remote(&n, &ann, Status::Online, t + Duration::from_secs(9));
        assert_eq!(p.status_of("ann"), Status::Online);
        s.away.store(true, Ordering::Relaxed);
        assert_eq!(
            p.away_changed(&ann, true),
            Some((ann.clone(), Status::Away))
        );
        s.away.store(false, Ordering::Relaxed);
        assert_eq!(
            p.away_changed(&ann, false),
            Some((ann.clone(), Status::Online))
        );
    }

    #[test]
    fn changes_within_the_interval_wait_and_the_latest_wins() {
        let mut b = Batch::default();
        let (t, i) = (Instant::now(), Duration::from_millis(100));
        let u = |s: &str| Arc::<str>::from(s);
        assert!(b.offer((u("a"), Status::Online), t, i));
        assert!(!b.offer((u("b"), Status::Online), t, i));
        assert!(!b.offer((u("b"), Status::Offline), t, i));
        assert_eq!(b.due(t + Duration::from_millis(50), i), None);
        assert_eq!(b.due(t + i, i), Some(vec![(u("b"), Status::Offline)]));
    }
}
