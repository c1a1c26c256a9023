//! This node's live state: who is connected, which connection listens to which room, presence
//! and typing. Nothing here is durable; everything here is rebuilt by clients reconnecting.
//!
//! Locks: a std `Mutex` for the connection registry, one for the room map, and one per room, each
//! held for a short synchronous section and never across `.await`. Lock order: registry before
//! room map before a room; a room's lock is never held while taking another lock. Delivery to a
//! connection is a non-blocking `try_send` on its bounded [`Outbox`].

use std::collections::{HashMap, HashSet, hash_map::Entry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chat_proto::{ServerFrame, Status, encode};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::broker::Event;
use crate::outbox::Outbox;
use crate::rate::TokenBucket;

/// A connection's id on this node.
pub type ConnId = u64;

/// Per-user state shared by all of that user's connections on this node.
pub struct UserState {
    /// Set with `set_status away`; the user shows as away in every room they are present in.
    pub away: AtomicBool,
    /// The per-user rate limit: shared, so opening more connections buys no more throughput.
    pub bucket: Mutex<TokenBucket>,
}

struct ConnEntry {
    user: Arc<str>,
    token_hash: Option<[u8; 32]>,
    outbox: Arc<Outbox>,
    rooms: HashSet<Arc<str>>,
}

struct UserEntry {
    conns: Vec<ConnId>,
    state: Arc<UserState>,
}

#[derive(Default)]
struct Registry {
    next_id: ConnId,
    conns: HashMap<ConnId, ConnEntry>,
    users: HashMap<Arc<str>, UserEntry>,
}

/// A frame a joining connection receives only after its `joined`.
struct Held {
    seq: Option<u64>,
    frame: Utf8Bytes,
}

struct Sub {
    user: Arc<str>,
    outbox: Arc<Outbox>,
    /// `Some` while the connection is joining: live frames wait here until its history snapshot
    /// has been queued, so it gets every message once and in order.
    held: Option<Vec<Held>>,
    /// Bytes of the frames in `held`, bounded like an outbox's unsent bytes.
    held_bytes: usize,
    /// The highest seq this connection already has (from its snapshot or live). A message at or
    /// below it is dropped: a message the snapshot read as committed may be *published* only
    /// after the join went live, and rooms publish in seq order, so this drops exactly the
    /// copies the client already holds.
    floor: u64,
}

/// A user with at least one connection subscribed to a room.
struct Present {
    /// Their connections here: presence changes on 0 -> 1 and 1 -> 0 only.
    conns: usize,
    state: Arc<UserState>,
}

#[derive(Default)]
struct Room {
    subs: HashMap<ConnId, Sub>,
    present: HashMap<Arc<str>, Present>,
    /// Users typing, and when their indicator expires.
    typing: HashMap<Arc<str>, Instant>,
    /// Presence changes waiting for the next presence frame, one per user (latest wins), in
    /// the order users first changed.
    pending: Vec<(Arc<str>, Status)>,
    pending_at: HashMap<Arc<str>, usize>,
    /// When this room last sent a presence frame. Changes within `presence_interval` of it
    /// wait and go out together: a join storm of n users costs each member about
    /// duration/interval frames instead of n (n² in all).
    last_presence: Option<Instant>,
}

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A typing indicator not refreshed for this long is cleared.
    pub typing_timeout: Duration,
    /// Most frames held for one joining connection; past it the connection is a slow consumer.
    pub max_held: usize,
    /// Most bytes held for one joining connection, the same way.
    pub max_held_bytes: usize,
    /// Most authenticated connections of one user.
    pub max_connections_per_user: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// At most one presence frame per room per interval; zero sends each change at once.
    pub presence_interval: Duration,
}

/// The node's live state. See the module docs for the locking rules.
pub struct Hub {
    config: HubConfig,
    registry: Mutex<Registry>,
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<Room>>>>,
}

/// What a connection is after authenticating.
pub struct Registered {
    pub id: ConnId,
    pub user: Arc<str>,
    pub state: Arc<UserState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data, never a broken invariant that
    // matters more than keeping the server up; recover the guard.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives a map's memory back once it has emptied to a quarter of its capacity: maps never
/// shrink by themselves, and a server that once held 19,000 connections would keep their
/// buckets for good. Amortized O(1): a shrink follows at least capacity/2 removals.
fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

fn frame(f: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(encode(f, None))
}

fn presence_frame<'a>(
    room: &str,
    changes: impl IntoIterator<Item = (&'a str, Status)>,
) -> Utf8Bytes {
    frame(&ServerFrame::Presence {
        room: room.to_owned(),
        changes: changes
            .into_iter()
            .map(|(user, status)| chat_proto::Member {
                user: user.to_owned(),
                status,
            })
            .collect(),
    })
}

/// Holds a live frame for a joining connection, or closes it (4008) when it already holds as
/// many frames or bytes as an outbox may: a joiner that reads nothing cannot make the server
/// hold more for it than a connection that is live. The held frames are dropped with the kick.
fn hold(
    held: &mut Vec<Held>,
    held_bytes: &mut usize,
    outbox: &Outbox,
    seq: Option<u64>,
    frame: &Utf8Bytes,
    cfg: &HubConfig,
) -> bool {
    if outbox.is_kicked() {
        return false;
    }
    if held.len() >= cfg.max_held || *held_bytes + frame.len() > cfg.max_held_bytes {
        outbox.kick(
            chat_proto::close::SLOW_CONSUMER,
            "too much traffic while joining",
        );
        *held = Vec::new();
        *held_bytes = 0;
        return false;
    }
    *held_bytes += frame.len();
    held.push(Held {
        seq,
        frame: frame.clone(),
    });
    true
}

impl Room {
    fn status_of(&self, user: &str) -> Status {
        match self.present.get(user) {
            Some(p) if p.state.away.load(Ordering::Relaxed) => Status::Away,
            Some(_) => Status::Online,
            None => Status::Offline,
        }
    }

    /// Sends to every subscriber but those of `except_user` and the connection `except_conn`.
    fn deliver(
        &mut self,
        seq: Option<u64>,
        frame: &Utf8Bytes,
        except_user: Option<&str>,
        except_conn: Option<ConnId>,
        cfg: &HubConfig,
    ) {
        for (id, sub) in self.subs.iter_mut() {
            if Some(*id) == except_conn || except_user.is_some_and(|u| u == &*sub.user) {
                continue;
            }
            if let Some(s) = seq {
                if s <= sub.floor {
                    continue;
                }
                if sub.held.is_none() {
                    sub.floor = s;
                }
            }
            match &mut sub.held {
                Some(held) => {
                    hold(held, &mut sub.held_bytes, &sub.outbox, seq, frame, cfg);
                }
                None => {
                    sub.outbox.push(frame.clone());
                }
            }
        }
    }

    /// Delivers a run of messages (ascending seqs): to a live subscriber as one shared item,
    /// trimmed by its seq floor; to a joining one into its held frames.
    fn deliver_messages(
        &mut self,
        items: &[(u64, Utf8Bytes)],
        all: &Arc<[Utf8Bytes]>,
        cfg: &HubConfig,
    ) {
        let (Some(first), Some(last)) = (items.first().map(|i| i.0), items.last().map(|i| i.0))
        else {
            return;
        };
        for sub in self.subs.values_mut() {
            if last <= sub.floor {
                continue;
            }
            if let Some(held) = &mut sub.held {
                for (seq, frame) in items.iter().filter(|(s, _)| *s > sub.floor) {
                    if !hold(
                        held,
                        &mut sub.held_bytes,
                        &sub.outbox,
                        Some(*seq),
                        frame,
                        cfg,
                    ) {
                        break;
                    }
                }
                continue;
            }
            if first > sub.floor {
                sub.outbox.push_many(all.clone());
            } else {
                let rest: Arc<[Utf8Bytes]> = items
                    .iter()
                    .filter(|(s, _)| *s > sub.floor)
                    .map(|(_, f)| f.clone())
                    .collect();
                sub.outbox.push_many(rest);
            }
            sub.floor = last;
        }
    }

    /// Announces `user`'s new status: at once if the room sent no presence frame within the
    /// interval (then not to `except_conn`, the joiner, whose `joined` shows it), otherwise
    /// with the next batch.
    fn presence(
        &mut self,
        room: &str,
        user: &Arc<str>,
        status: Status,
        except_conn: Option<ConnId>,
        cfg: &HubConfig,
    ) {
        let now = Instant::now();
        let quiet = self
            .last_presence
            .is_none_or(|t| now.saturating_duration_since(t) >= cfg.presence_interval);
        if self.pending.is_empty() && quiet {
            self.last_presence = Some(now);
            let f = presence_frame(room, [(&**user, status)]);
            self.deliver(None, &f, None, except_conn, cfg);
            return;
        }
        match self.pending_at.entry(user.clone()) {
            Entry::Occupied(e) => self.pending[*e.get()].1 = status,
            Entry::Vacant(e) => {
                e.insert(self.pending.len());
                self.pending.push((user.clone(), status));
            }
        }
    }

    /// Sends the waiting presence changes as one frame once the interval has passed.
    fn flush_presence(&mut self, room: &str, now: Instant, cfg: &HubConfig) {
        if self.pending.is_empty()
            || self
                .last_presence
                .is_some_and(|t| now.saturating_duration_since(t) < cfg.presence_interval)
        {
            return;
        }
        self.last_presence = Some(now);
        self.pending_at.clear();
        let pending = std::mem::take(&mut self.pending);
        let f = presence_frame(room, pending.iter().map(|(u, s)| (&**u, *s)));
        self.deliver(None, &f, None, None, cfg);
    }

    fn stop_typing(&mut self, room: &str, user: &str, cfg: &HubConfig) {
        if self.typing.remove(user).is_some() {
            let f = frame(&ServerFrame::Typing {
                room: room.to_owned(),
                user: user.to_owned(),
                active: false,
            });
            self.deliver(None, &f, Some(user), None, cfg);
        }
    }

    /// Removes a subscription; on the user's last connection here, they go offline and stop
    /// typing.
    fn remove_sub(&mut self, room: &str, id: ConnId, announce: bool, cfg: &HubConfig) -> bool {
        let Some(sub) = self.subs.remove(&id) else {
            return false;
        };
        shrink(&mut self.subs);
        let last = match self.present.get_mut(&sub.user) {
            Some(p) if p.conns > 1 => {
                p.conns -= 1;
                false
            }
            _ => {
                self.present.remove(&sub.user);
                shrink(&mut self.present);
                true
            }
        };
        if last {
            self.stop_typing(room, &sub.user, cfg);
            if announce {
                self.presence(room, &sub.user, Status::Offline, None, cfg);
            }
        }
        true
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            registry: Mutex::new(Registry::default()),
            rooms: Mutex::new(HashMap::new()),
        }
    }

    fn room(&self, name: &str) -> Option<Arc<Mutex<Room>>> {
        lock(&self.rooms).get(name).cloned()
    }

    fn room_or_create(&self, name: &Arc<str>) -> Arc<Mutex<Room>> {
        lock(&self.rooms).entry(name.clone()).or_default().clone()
    }

    /// Drops a room's entry once nobody listens to it.
    fn gc_room(&self, name: &str) {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(name)
            && Arc::strong_count(room) == 1
            && lock(room).subs.is_empty()
        {
            rooms.remove(name);
            shrink(&mut rooms);
        }
    }

    /// Connections `user` has on this node.
    pub fn user_connections(&self, user: &str) -> usize {
        lock(&self.registry)
            .users
            .get(user)
            .map_or(0, |u| u.conns.len())
    }

    /// Adds an authenticated connection; `None` when the user already has
    /// `max_connections_per_user` of them.
    pub fn register(
        &self,
        user: &str,
        token_hash: Option<[u8; 32]>,
        outbox: Arc<Outbox>,
    ) -> Option<Registered> {
        let mut reg = lock(&self.registry);
        if reg
            .users
            .get(user)
            .is_some_and(|u| u.conns.len() >= self.config.max_connections_per_user)
        {
            return None;
        }
        reg.next_id += 1;
        let id = reg.next_id;
        let (user, state) = match reg.users.get_key_value(user) {
            Some((k, e)) => (k.clone(), e.state.clone()),
            None => (
                Arc::<str>::from(user),
                Arc::new(UserState {
                    away: AtomicBool::new(false),
                    bucket: Mutex::new(TokenBucket::new(
                        self.config.rate_per_sec,
                        self.config.rate_burst,
                        Instant::now(),
                    )),
                }),
            ),
        };
        reg.users
            .entry(user.clone())
            .or_insert_with(|| UserEntry {
                conns: Vec::new(),
                state: state.clone(),
            })
            .conns
            .push(id);
        reg.conns.insert(
            id,
            ConnEntry {
                user: user.clone(),
                token_hash,
                outbox,
                rooms: HashSet::new(),
            },
        );
        Some(Registered { id, user, state })
    }

    /// Removes a connection from every room (announcing presence) and from the registry.
    pub fn unregister(&self, id: ConnId) {
        let entry = {
            let mut reg = lock(&self.registry);
            let Some(entry) = reg.conns.remove(&id) else {
                return;
            };
            shrink(&mut reg.conns);
            if let Some(u) = reg.users.get_mut(&entry.user) {
                u.conns.retain(|c| *c != id);
                if u.conns.is_empty() {
                    reg.users.remove(&entry.user);
                    shrink(&mut reg.users);
                }
            }
            entry
        };
        for room in &entry.rooms {
            if let Some(r) = self.room(room) {
                lock(&r).remove_sub(room, id, true, &self.config);
            }
            self.gc_room(room);
        }
    }

    /// Subscribes a connection to a room in the joining state and returns the statuses of the
    /// users present (the joiner included), and whether it was subscribed already (a re-join).
    /// Live frames are held until [`Hub::go_live`].
    pub fn subscribe(
        &self,
        room_name: &str,
        reg: &Registered,
    ) -> (HashMap<Arc<str>, Status>, bool) {
        let outbox = {
            let mut registry = lock(&self.registry);
            let Some(entry) = registry.conns.get_mut(&reg.id) else {
                return (HashMap::new(), false);
            };
            entry.rooms.insert(Arc::from(room_name));
            entry.outbox.clone()
        };
        let name: Arc<str> = Arc::from(room_name);
        let room = self.room_or_create(&name);
        let mut room = lock(&room);
        let again = room.subs.contains_key(&reg.id);
        match room.subs.entry(reg.id) {
            // A second join on the same connection: a fresh snapshot follows, hold until then.
            Entry::Occupied(mut e) => {
                e.get_mut().held.get_or_insert_with(Vec::new);
            }
            Entry::Vacant(e) => {
                e.insert(Sub {
                    user: reg.user.clone(),
                    outbox,
                    held: Some(Vec::new()),
                    held_bytes: 0,
                    floor: 0,
                });
                let p = room.present.entry(reg.user.clone()).or_insert(Present {
                    conns: 0,
                    state: reg.state.clone(),
                });
                p.conns += 1;
                if p.conns == 1 {
                    let status = room.status_of(&reg.user);
                    room.presence(room_name, &reg.user, status, Some(reg.id), &self.config);
                }
            }
        }
        let mut statuses = HashMap::with_capacity(room.present.len());
        statuses.extend(room.present.keys().map(|u| (u.clone(), room.status_of(u))));
        (statuses, again)
    }

    /// Ends the joining state: the connection now has every message up to `upto` (its snapshot);
    /// releases the held frames minus those messages, then delivers live.
    pub fn go_live(&self, room_name: &str, id: ConnId, upto: u64) {
        let Some(room) = self.room(room_name) else {
            return;
        };
        let mut room = lock(&room);
        let Some(sub) = room.subs.get_mut(&id) else {
            return;
        };
        sub.floor = sub.floor.max(upto);
        sub.held_bytes = 0;
        for held in sub.held.take().unwrap_or_default() {
            if let Some(s) = held.seq {
                if s <= sub.floor {
                    continue;
                }
                sub.floor = s;
            }
            if !sub.outbox.push(held.frame) {
                break;
            }
        }
    }

    /// Removes one connection from one room (a join that failed half-way).
    pub fn unsubscribe(&self, room_name: &str, id: ConnId) {
        if let Some(e) = lock(&self.registry).conns.get_mut(&id) {
            e.rooms.remove(room_name);
        }
        if let Some(room) = self.room(room_name) {
            lock(&room).remove_sub(room_name, id, true, &self.config);
        }
        self.gc_room(room_name);
    }

    /// Whether the connection is subscribed to the room.
    pub fn is_subscribed(&self, room_name: &str, id: ConnId) -> bool {
        self.room(room_name)
            .is_some_and(|r| lock(&r).subs.contains_key(&id))
    }

    /// Starts, refreshes or stops `user`'s typing indicator; the room's other users hear of it.
    pub fn typing(&self, room_name: &str, user: &str, active: bool) {
        let Some(room) = self.room(room_name) else {
            return;
        };
        let mut room = lock(&room);
        if !active {
            room.stop_typing(room_name, user, &self.config);
            return;
        }
        let Some(key) = room.present.get_key_value(user).map(|(k, _)| k.clone()) else {
            return;
        };
        room.typing
            .insert(key, Instant::now() + self.config.typing_timeout);
        let f = frame(&ServerFrame::Typing {
            room: room_name.to_owned(),
            user: user.to_owned(),
            active: true,
        });
        room.deliver(None, &f, Some(user), None, &self.config);
    }

    /// Timer work, for every room: clears typing indicators that were not refreshed in time and
    /// sends presence changes that waited for their interval.
    pub fn tick(&self, now: Instant) {
        let rooms: Vec<(Arc<str>, Arc<Mutex<Room>>)> = lock(&self.rooms)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, room) in rooms {
            let mut room = lock(&room);
            room.flush_presence(&name, now, &self.config);
            let expired: Vec<Arc<str>> = room
                .typing
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(u, _)| u.clone())
                .collect();
            for user in expired {
                room.stop_typing(&name, &user, &self.config);
            }
        }
    }

    /// Marks `user` away or back, and tells every room they are present in.
    pub fn set_away(&self, reg: &Registered, away: bool) {
        if reg.state.away.swap(away, Ordering::Relaxed) == away {
            return;
        }
        let rooms: Vec<Arc<str>> = {
            let registry = lock(&self.registry);
            let mut rooms = HashSet::new();
            if let Some(u) = registry.users.get(&reg.user) {
                for c in &u.conns {
                    if let Some(e) = registry.conns.get(c) {
                        rooms.extend(e.rooms.iter().cloned());
                    }
                }
            }
            rooms.into_iter().collect()
        };
        let status = if away { Status::Away } else { Status::Online };
        for name in rooms {
            if let Some(room) = self.room(&name) {
                lock(&room).presence(&name, &reg.user, status, None, &self.config);
            }
        }
    }

    /// Delivers a brokered event to this node's connections.
    pub fn dispatch(&self, event: Event) {
        match event {
            Event::Room { room, seq, frame } => {
                if let Some(r) = self.room(&room) {
                    lock(&r).deliver(seq, &frame, None, None, &self.config);
                }
            }
            Event::Messages { room, items } => {
                if let Some(r) = self.room(&room) {
                    let all: Arc<[Utf8Bytes]> = items.iter().map(|(_, f)| f.clone()).collect();
                    lock(&r).deliver_messages(&items, &all, &self.config);
                }
            }
            Event::User { user, frame } => {
                for outbox in self.outboxes_of(&user) {
                    outbox.push(frame.clone());
                }
            }
            Event::Left { room, user, except } => self.user_left(&room, &user, except),
            Event::RoomDeleted { room } => self.room_deleted(&room),
            Event::TokenRevoked { hash } => {
                let registry = lock(&self.registry);
                for e in registry.conns.values() {
                    if e.token_hash == Some(hash) {
                        e.outbox
                            .kick(chat_proto::close::AUTH_FAILED, "token revoked");
                    }
                }
            }
        }
    }

    fn room_deleted(&self, room_name: &str) {
        let Some(r) = self.room(room_name) else {
            return;
        };
        // The room's lock, then the registry's, never both at once.
        let subs: Vec<(ConnId, Arc<Outbox>)> = {
            let mut room = lock(&r);
            let subs = room.subs.drain().map(|(id, s)| (id, s.outbox)).collect();
            *room = Room::default();
            subs
        };
        {
            let mut registry = lock(&self.registry);
            for (id, _) in &subs {
                if let Some(e) = registry.conns.get_mut(id) {
                    e.rooms.remove(room_name);
                }
            }
        }
        let gone = frame(&ServerFrame::RoomDeleted {
            room: room_name.to_owned(),
        });
        for (_, outbox) in subs {
            outbox.push(gone.clone());
        }
        drop(r);
        self.gc_room(room_name);
    }

    /// The statuses of `users` in `room` (offline for those not present).
    pub fn statuses(&self, room_name: &str, users: &[String]) -> Vec<Status> {
        match self.room(room_name) {
            Some(r) => {
                let room = lock(&r);
                users.iter().map(|u| room.status_of(u)).collect()
            }
            None => vec![Status::Offline; users.len()],
        }
    }

    fn outboxes_of(&self, user: &str) -> Vec<Arc<Outbox>> {
        let registry = lock(&self.registry);
        registry
            .users
            .get(user)
            .map(|u| {
                u.conns
                    .iter()
                    .filter_map(|c| registry.conns.get(c).map(|e| e.outbox.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn user_left(&self, room_name: &str, user: &str, except: Option<ConnId>) {
        let conns: Vec<(ConnId, Arc<Outbox>)> = {
            let mut registry = lock(&self.registry);
            let ids = registry
                .users
                .get(user)
                .map(|u| u.conns.clone())
                .unwrap_or_default();
            ids.into_iter()
                .filter_map(|id| {
                    let e = registry.conns.get_mut(&id)?;
                    e.rooms.remove(room_name).then(|| (id, e.outbox.clone()))
                })
                .collect()
        };
        let left = frame(&ServerFrame::Left {
            room: room_name.to_owned(),
        });
        if let Some(room) = self.room(room_name) {
            let mut room = lock(&room);
            for (id, outbox) in &conns {
                room.remove_sub(room_name, *id, false, &self.config);
                if Some(*id) != except {
                    outbox.push(left.clone());
                }
            }
            let f = frame(&ServerFrame::MemberLeft {
                room: room_name.to_owned(),
                user: user.to_owned(),
            });
            room.deliver(None, &f, None, None, &self.config);
        }
        self.gc_room(room_name);
    }

    /// How many connections this node holds (for logs and tests).
    pub fn connection_count(&self) -> usize {
        lock(&self.registry).conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxReceiver;

    fn hub() -> Hub {
        Hub::new(HubConfig {
            typing_timeout: Duration::from_millis(50),
            max_held: 8,
            max_held_bytes: 1 << 20,
            max_connections_per_user: 1000,
            rate_per_sec: 0,
            rate_burst: 1,
            presence_interval: Duration::ZERO,
        })
    }

    fn conn(h: &Hub, user: &str) -> (Registered, OutboxReceiver) {
        let (out, rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
        (h.register(user, None, out).expect("under the cap"), rx)
    }

    fn drain(rx: &mut OutboxReceiver) -> Vec<serde_json::Value> {
        let mut v = Vec::new();
        while let Some(out) = rx.try_recv() {
            for f in out.frames() {
                v.push(serde_json::from_str(f).expect("json"));
            }
        }
        v
    }

    fn msg(seq: u64) -> Event {
        Event::Room {
            room: "r".into(),
            seq: Some(seq),
            frame: format!(r#"{{"type":"message","seq":{seq}}}"#).into(),
        }
    }

    #[test]
    fn joining_holds_live_frames_and_drops_snapshot_ones() {
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        h.subscribe("r", &a);
        h.dispatch(msg(1));
        h.dispatch(msg(2));
        h.dispatch(msg(3));
        assert!(drain(&mut arx).is_empty(), "nothing before go_live");
        h.go_live("r", a.id, 2);
        let got: Vec<_> = drain(&mut arx).iter().map(|v| v["seq"].as_u64()).collect();
        assert_eq!(got, vec![Some(3)]);
        h.dispatch(msg(4));
        assert_eq!(drain(&mut arx)[0]["seq"], 4);
    }

    #[test]
    fn a_message_published_after_going_live_but_in_the_snapshot_is_not_sent_again() {
        // The snapshot read seq 5 as committed, but its publication comes after go_live.
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        h.subscribe("r", &a);
        h.go_live("r", a.id, 5);
        h.dispatch(msg(5));
        assert!(drain(&mut arx).is_empty(), "seq 5 was in the snapshot");
        h.dispatch(msg(6));
        h.dispatch(msg(6));
        let got: Vec<_> = drain(&mut arx).iter().map(|v| v["seq"].as_u64()).collect();
        assert_eq!(
            got,
            vec![Some(6)],
            "and each seq once, even if published twice"
        );
    }

    fn run(seqs: std::ops::RangeInclusive<u64>) -> Event {
        Event::Messages {
            room: "r".into(),
            items: seqs
                .map(|s| (s, format!(r#"{{"type":"message","seq":{s}}}"#).into()))
                .collect(),
        }
    }

    #[test]
    fn a_run_of_messages_is_one_item_trimmed_by_each_floor() {
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        h.subscribe("r", &a);
        h.go_live("r", a.id, 3);
        let (b, mut brx) = conn(&h, "bob");
        h.subscribe("r", &b);
        drain(&mut arx);
        h.dispatch(run(2..=6));
        // alice had up to 3: she gets 4..=6 as one queue item.
        let item = arx.try_recv().expect("one item");
        let seqs: Vec<u64> = item
            .frames()
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            })
            .collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert!(arx.try_recv().is_none(), "one wakeup for the run");
        // bob is joining: held, then released above his snapshot.
        assert!(drain(&mut brx).is_empty());
        h.go_live("r", b.id, 4);
        let got: Vec<_> = drain(&mut brx).iter().map(|v| v["seq"].as_u64()).collect();
        assert_eq!(got, vec![Some(5), Some(6)]);
        // A run already delivered is not delivered again.
        h.dispatch(run(5..=6));
        assert!(drain(&mut arx).is_empty() && drain(&mut brx).is_empty());
    }

    #[test]
    fn presence_changes_once_per_user_not_per_connection() {
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        h.subscribe("r", &a);
        h.go_live("r", a.id, 0);
        let (b1, _b1rx) = conn(&h, "bob");
        let (b2, _b2rx) = conn(&h, "bob");
        let (statuses, _) = h.subscribe("r", &b1);
        assert_eq!(statuses.get("bob"), Some(&Status::Online));
        assert_eq!(statuses.get("alice"), Some(&Status::Online));
        h.subscribe("r", &b2);
        let seen = drain(&mut arx);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["changes"][0]["status"], "online");
        h.unregister(b1.id);
        assert!(drain(&mut arx).is_empty(), "bob still has a connection");
        h.set_away(&b2, true);
        assert_eq!(drain(&mut arx)[0]["changes"][0]["status"], "away");
        h.unregister(b2.id);
        assert_eq!(drain(&mut arx)[0]["changes"][0]["status"], "offline");
    }

    #[test]
    fn presence_changes_within_the_interval_go_out_as_one_diff() {
        let h = Hub::new(HubConfig {
            presence_interval: Duration::from_secs(3600),
            ..hub().config
        });
        let (a, mut arx) = conn(&h, "alice");
        h.subscribe("r", &a);
        h.go_live("r", a.id, 0);
        let mut joiners = Vec::new();
        for u in ["u1", "u2", "u3", "u4"] {
            let (r, rx) = conn(&h, u);
            h.subscribe("r", &r);
            h.go_live("r", r.id, 0);
            joiners.push((r, rx));
        }
        // alice's own join was the room's presence change for this interval (sent at once, to
        // nobody else); u1..u4 wait for the next.
        assert!(drain(&mut arx).is_empty());
        h.unregister(joiners[1].0.id);
        h.tick(Instant::now());
        assert!(drain(&mut arx).is_empty(), "the interval has not passed");
        h.tick(Instant::now() + Duration::from_secs(3601));
        let seen = drain(&mut arx);
        assert_eq!(seen.len(), 1, "one frame for the batch: {seen:?}");
        let changes: Vec<(String, String)> = seen[0]["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| (c["user"].to_string(), c["status"].to_string()))
            .collect();
        assert_eq!(
            changes,
            [
                (r#""u1""#.into(), r#""online""#.into()),
                (r#""u2""#.into(), r#""offline""#.into()),
                (r#""u3""#.into(), r#""online""#.into()),
                (r#""u4""#.into(), r#""online""#.into()),
            ],
            "one entry per user, their latest status, in first-change order"
        );
        // Every member, joiners included, gets the same diff: the statuses are absolute, so
        // one a joiner already had from `joined` changes nothing.
        let u4 = drain(&mut joiners[3].1);
        assert_eq!(
            u4.last().expect("diff")["changes"].as_array().map(Vec::len),
            Some(4)
        );
        h.tick(Instant::now() + Duration::from_secs(7300));
        assert!(drain(&mut arx).is_empty(), "nothing pending, nothing sent");
    }

    #[test]
    fn typing_reaches_others_and_expires() {
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        let (b, mut brx) = conn(&h, "bob");
        for r in [&a, &b] {
            h.subscribe("r", r);
            h.go_live("r", r.id, 0);
        }
        drain(&mut arx);
        h.typing("r", "bob", true);
        assert_eq!(drain(&mut arx)[0]["active"], true);
        assert!(drain(&mut brx).is_empty(), "not echoed to the typist");
        h.tick(Instant::now());
        assert!(drain(&mut arx).is_empty(), "not expired yet");
        h.tick(Instant::now() + Duration::from_millis(60));
        let seen = drain(&mut arx);
        assert_eq!(
            (seen[0]["type"].as_str(), &seen[0]["active"]),
            (Some("typing"), &false.into())
        );
        h.typing("r", "bob", true);
        drain(&mut arx);
        h.unregister(b.id);
        let seen = drain(&mut arx);
        assert_eq!(
            seen[0]["active"], false,
            "disconnect clears typing: {seen:?}"
        );
        assert_eq!(seen[1]["changes"][0]["status"], "offline");
    }

    #[test]
    fn too_much_held_while_joining_is_a_slow_consumer() {
        let h = hub();
        let (out, _rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
        let a = h
            .register("alice", None, out.clone())
            .expect("under the cap");
        h.subscribe("r", &a);
        for s in 1..=9 {
            h.dispatch(msg(s));
        }
        assert_eq!(
            out.close_reason().map(|c| c.0),
            Some(chat_proto::close::SLOW_CONSUMER)
        );
    }

    #[test]
    fn leaving_unsubscribes_every_connection_of_the_user() {
        let h = hub();
        let (a, mut arx) = conn(&h, "alice");
        let (b1, mut b1rx) = conn(&h, "bob");
        let (b2, mut b2rx) = conn(&h, "bob");
        for r in [&a, &b1, &b2] {
            h.subscribe("r", r);
            h.go_live("r", r.id, 0);
        }
        drain(&mut arx);
        drain(&mut b1rx);
        h.dispatch(Event::Left {
            room: "r".into(),
            user: "bob".into(),
            except: Some(b1.id),
        });
        assert!(
            drain(&mut b1rx).is_empty(),
            "the requester gets its own reply"
        );
        assert_eq!(drain(&mut b2rx).last().expect("left")["type"], "left");
        assert_eq!(drain(&mut arx)[0]["type"], "member_left");
        assert!(!h.is_subscribed("r", b2.id));
        h.dispatch(msg(1));
        assert!(drain(&mut b2rx).is_empty());
    }

    #[test]
    fn maps_give_their_memory_back_when_connections_go() {
        let h = hub();
        let conns: Vec<_> = (0..2000).map(|i| conn(&h, &format!("u{i}"))).collect();
        for (r, _) in &conns {
            h.subscribe("r", r);
        }
        let peak = lock(&h.registry).conns.capacity();
        assert!(peak >= 2000);
        for (r, _) in &conns[..1990] {
            h.unregister(r.id);
        }
        let reg = lock(&h.registry);
        assert!(
            reg.conns.capacity() <= 64,
            "{} slots kept",
            reg.conns.capacity()
        );
        assert!(reg.users.capacity() <= 64);
        let room = h.room("r").expect("room");
        let room = lock(&room);
        assert!(room.subs.capacity() <= 64 && room.present.capacity() <= 64);
    }

    #[test]
    fn revoking_a_token_kicks_its_connections_only() {
        let h = hub();
        let (o1, _r1) = Outbox::new(4, 1 << 30, crate::outbox::Budget::new(1 << 30));
        let (o2, _r2) = Outbox::new(4, 1 << 30, crate::outbox::Budget::new(1 << 30));
        h.register("alice", Some([1; 32]), o1.clone())
            .expect("under the cap");
        h.register("alice", Some([2; 32]), o2.clone())
            .expect("under the cap");
        h.dispatch(Event::TokenRevoked { hash: [1; 32] });
        assert_eq!(
            o1.close_reason().map(|c| c.0),
            Some(chat_proto::close::AUTH_FAILED)
        );
        assert!(!o2.is_kicked());
    }
}
