//! This node's live state: who is connected, which connection listens to which room, presence
//! and typing. Nothing here is durable; everything here is rebuilt by clients reconnecting.
//!
//! Locks: a std `Mutex` for the connection registry, one for the room map, and one per room, each
//! held for a short synchronous section and never across `.await`. Lock order: registry before
//! room map before a room; a room's lock is never held while taking another lock. Delivery to a
//! connection is a non-blocking `try_send` on its bounded [`Outbox`].

use std::collections::{HashMap, HashSet, hash_map::Entry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chat_proto::{ServerFrame, Status};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::broker::{Announce, Announcer, Event};
use crate::outbox::Outbox;
use crate::rate::TokenBucket;

mod room;

use crate::presence::Change;
use room::{Room, Sub, frame};

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
    /// The protocol version the connection speaks: which frames it takes (`audience`).
    version: u32,
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
    /// How long another node's presence entry holds without being renewed (a node killed
    /// with -9 takes its users' presence with it within this bound).
    pub presence_ttl: Duration,
}

/// The node's live state. See the module docs for the locking rules.
pub struct Hub {
    config: HubConfig,
    registry: Mutex<Registry>,
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<Room>>>>,
    /// The cluster broker, told of this node's presence and typing changes; unset with the
    /// in-process broker, which needs no telling.
    announcer: OnceLock<Arc<dyn Announcer>>,
}

/// What a connection is after authenticating.
pub struct Registered {
    pub id: ConnId,
    pub user: Arc<str>,
    pub state: Arc<UserState>,
    pub version: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data, never a broken invariant that
    // matters more than keeping the server up; recover the guard.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives a map's memory back once it has emptied to a quarter of its capacity: maps never
/// shrink by themselves, and a server that once held 19,000 connections would keep their
/// buckets for good. Amortized O(1): a shrink follows at least capacity/2 removals.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            registry: Mutex::new(Registry::default()),
            rooms: Mutex::new(HashMap::new()),
            announcer: OnceLock::new(),
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
            && let Some((key, _)) = rooms.remove_entry(name)
        {
            shrink(&mut rooms);
            drop(rooms);
            self.emit(vec![Announce::RoomIdle(key)]);
        }
    }

    /// Another node's presence in a room a connection of this node is about to join: the room
    /// is made here if it is not yet, so the joiner's `joined` shows who is present elsewhere.
    pub fn prime(&self, room_name: &Arc<str>, event: Event) {
        if let Event::Presence {
            node,
            changes,
            replace,
            ..
        } = event
        {
            let room = self.room_or_create(room_name);
            lock(&room).remote_presence(room_name, &node, &changes, replace, &self.config);
        }
    }

    /// Whether any connection of this node listens to `room`.
    pub fn has_room(&self, room: &str) -> bool {
        lock(&self.rooms).contains_key(room)
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
        version: u32,
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
        let first = !reg.users.contains_key(user);
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
                version,
                token_hash,
                outbox,
                rooms: HashSet::new(),
            },
        );
        drop(reg);
        if first {
            self.emit(vec![Announce::UserHere(user.clone())]);
        }
        Some(Registered {
            id,
            user,
            state,
            version,
        })
    }

    /// The version `welcome` chose, for a connection that authenticated (with its header)
    /// before `hello`: it joins no room before then.
    pub fn set_version(&self, id: ConnId, version: u32) {
        if let Some(e) = lock(&self.registry).conns.get_mut(&id) {
            e.version = version;
        }
    }

    /// Removes a connection from every room (announcing presence) and from the registry.
    pub fn unregister(&self, id: ConnId) {
        let mut gone = false;
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
                    gone = true;
                }
            }
            entry
        };
        if gone {
            self.emit(vec![Announce::UserGone(entry.user.clone())]);
        }
        for room in &entry.rooms {
            self.leave_room(room, id);
        }
    }

    /// Takes one connection out of one room (announcing presence), tells the other nodes, and
    /// drops the room's entry if it was the last.
    fn leave_room(&self, room_name: &str, id: ConnId) {
        if let Some(room) = self.room(room_name) {
            let out = {
                let mut r = lock(&room);
                r.remove_sub(room_name, id, true, &self.config);
                std::mem::take(&mut r.out)
            };
            self.emit(out);
        }
        self.gc_room(room_name);
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
                    version: reg.version,
                    outbox,
                    held: Some(Vec::new()),
                    held_bytes: 0,
                    floor: 0,
                });
                let (first, change) = room.presence.join_local(&reg.user, &reg.state);
                if first {
                    room.announce_local(room_name, &reg.user);
                }
                if let Some(change) = change {
                    room.presence(room_name, change, Some(reg.id), &self.config);
                }
            }
        }
        let statuses = room.presence.present();
        let out = std::mem::take(&mut room.out);
        drop(room);
        self.emit(out);
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
        self.leave_room(room_name, id);
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
        let Some(key) = room
            .presence
            .key(user)
            .filter(|_| room.presence.is_local(user))
        else {
            return;
        };
        if !active {
            if room.typing.is_on(user) {
                room.stop_typing(room_name, user, &self.config);
                drop(room);
                self.emit(vec![Announce::Typing {
                    room: Arc::from(room_name),
                    user: key,
                    active: false,
                }]);
            }
            return;
        }
        room.start_typing(room_name, &key, &self.config);
        drop(room);
        self.emit(vec![Announce::Typing {
            room: Arc::from(room_name),
            user: key,
            active: true,
        }]);
    }

    /// Another node's user started or stopped typing: this node's connections hear of it, and
    /// the indicator runs out here by itself if that node goes quiet.
    fn remote_typing(&self, room_name: &str, user: Arc<str>, active: bool) {
        let Some(room) = self.room(room_name) else {
            return;
        };
        let mut room = lock(&room);
        if !active {
            room.stop_typing(room_name, &user, &self.config);
            return;
        }
        room.start_typing(room_name, &user, &self.config);
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
            for change in room.presence.expire(now) {
                room.presence(&name, change, None, &self.config);
            }
            room.flush_presence(&name, now, &self.config);
            for user in room.typing.expired(now) {
                let f = frame(&ServerFrame::Typing {
                    room: name.to_string(),
                    user: user.to_string(),
                    active: false,
                });
                room.deliver(None, &f, Some(&user), None, &self.config);
            }
        }
    }

    /// This node's users in every room it holds, with their local statuses: its presence
    /// snapshot for the other nodes.
    pub fn local_presence(&self) -> Vec<(Arc<str>, Vec<Change>)> {
        let rooms: Vec<(Arc<str>, Arc<Mutex<Room>>)> = lock(&self.rooms)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rooms
            .into_iter()
            .map(|(name, room)| {
                let entries = lock(&room).presence.local_entries();
                (name, entries)
            })
            .filter(|(_, e)| !e.is_empty())
            .collect()
    }

    /// Rooms this node has connections in.
    pub fn room_names(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).keys().cloned().collect()
    }

    /// Users with a connection on this node.
    pub fn user_names(&self) -> Vec<Arc<str>> {
        lock(&self.registry).users.keys().cloned().collect()
    }

    /// Hands what the other nodes must hear to the announcer (none with the local broker).
    fn emit(&self, out: Vec<Announce>) {
        if out.is_empty() {
            return;
        }
        if let Some(a) = self.announcer.get() {
            a.announce(out);
        }
    }

    /// Sets who hears this node's presence and typing changes (the cluster broker); once.
    pub fn set_announcer(&self, announcer: Arc<dyn Announcer>) {
        let _ = self.announcer.set(announcer);
    }

    /// Marks `user` away or back, and tells every room they are present in.
    pub fn set_away(&self, reg: &Registered, away: bool) {
        if reg.state.away.swap(away, Ordering::Relaxed) == away {
            return;
        }
        // Away is the user's, not one connection's: the user's other nodes follow.
        self.emit(vec![Announce::Away {
            user: reg.user.clone(),
            away,
        }]);
        self.away_changed(&reg.user, away);
    }

    /// Another node says `user` went away or came back: their connections here follow.
    fn remote_away(&self, user: &str, away: bool) {
        let found = lock(&self.registry)
            .users
            .get_key_value(user)
            .map(|(k, e)| (k.clone(), e.state.clone()));
        if let Some((user, state)) = found
            && state.away.swap(away, Ordering::Relaxed) != away
        {
            self.away_changed(&user, away);
        }
    }

    /// Tells every room `user` is in here that their away flag (already set) changed.
    fn away_changed(&self, user: &Arc<str>, away: bool) {
        let rooms: Vec<Arc<str>> = {
            let registry = lock(&self.registry);
            let mut rooms = HashSet::new();
            if let Some(u) = registry.users.get(user) {
                for c in &u.conns {
                    if let Some(e) = registry.conns.get(c) {
                        rooms.extend(e.rooms.iter().cloned());
                    }
                }
            }
            rooms.into_iter().collect()
        };
        for name in rooms {
            if let Some(room) = self.room(&name) {
                let mut room = lock(&room);
                room.announce_local(&name, user);
                if let Some(change) = room.presence.away_changed(user, away) {
                    room.presence(&name, change, None, &self.config);
                }
                let out = std::mem::take(&mut room.out);
                drop(room);
                self.emit(out);
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
            Event::User {
                user,
                frame,
                except,
            } => {
                for (id, version, outbox) in self.outboxes_of(&user) {
                    if Some(id) != except && crate::audience::sees(version, &frame) {
                        outbox.push(frame.clone());
                    }
                }
            }
            Event::Left {
                room,
                user,
                except,
                removed,
            } => self.user_left(&room, &user, except, removed),
            Event::Presence {
                room,
                node,
                changes,
                replace,
            } => {
                if let Some(r) = self.room(&room) {
                    lock(&r).remote_presence(&room, &node, &changes, replace, &self.config);
                }
            }
            Event::Typing { room, user, active } => self.remote_typing(&room, user, active),
            Event::Away { user, away } => self.remote_away(&user, away),
            Event::NodeGone { node } => {
                let rooms: Vec<(Arc<str>, Arc<Mutex<Room>>)> = lock(&self.rooms)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (name, room) in rooms {
                    let mut room = lock(&room);
                    for change in room.presence.drop_node(&node, None) {
                        room.presence(&name, change, None, &self.config);
                    }
                }
            }
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

    fn outboxes_of(&self, user: &str) -> Vec<(ConnId, u32, Arc<Outbox>)> {
        let registry = lock(&self.registry);
        registry
            .users
            .get(user)
            .map(|u| {
                u.conns
                    .iter()
                    .filter_map(|c| {
                        registry
                            .conns
                            .get(c)
                            .map(|e| (*c, e.version, e.outbox.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn user_left(
        &self,
        room_name: &str,
        user: &str,
        except: Option<ConnId>,
        removed: Option<chat_proto::Removal>,
    ) {
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
            removed,
        });
        if let Some(room) = self.room(room_name) {
            let mut room = lock(&room);
            room.presence.forget_remote(user);
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
            let out = std::mem::take(&mut room.out);
            drop(room);
            self.emit(out);
        }
        self.gc_room(room_name);
    }

    /// How many connections this node holds (for logs and tests).
    pub fn connection_count(&self) -> usize {
        lock(&self.registry).conns.len()
    }

    /// How many distinct users have an authenticated connection on this node.
    pub fn user_count(&self) -> usize {
        lock(&self.registry).users.len()
    }

    /// How many rooms a connection of this node listens to (an entry lives while it has
    /// subscribers).
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }
}

#[cfg(test)]
mod tests;
