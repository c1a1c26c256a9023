//! The Redis broker: what one node publishes reaches the nodes that have connections for it.
//!
//! - Channels: one per room (`{prefix}r:{room}`), subscribed only while this node has a
//!   connection in the room; one per user (`{prefix}u:{user}`) while the user has a connection
//!   here; `{prefix}all` (token revocations, nodes stopping) and this node's own
//!   (`{prefix}n:{node}`, for the `/readyz` and watchdog pings).
//! - Publishing happens after COMMIT (the store's completion calls [`Broker::publish`]): the
//!   event is delivered to this node's connections at once, through the same ordering as
//!   everything else, and queued for Redis by one publisher task (bounded in bytes).
//! - Receiving: every message of a room passes one [`sequencer::RoomSeq`], so each room is
//!   delivered in seq order, each seq once; a gap waits [`GAP_WAIT`], then is read from the
//!   database. A Redis reconnect is a gap for every room: each is caught up from the database
//!   from the last seq this node delivered.
//! - Presence: each node writes its own users' entries (`{prefix}ph:{room}` hash of
//!   `user\nnode` -> status, `{prefix}pz:{room}` sorted set of the same members scored by expiry),
//!   renews them every third of [`crate::config::PRESENCE_TTL`], and publishes changes and
//!   periodic snapshots on the room's channel. Other nodes keep those entries with the same
//!   expiry, so a node killed with -9 leaves nobody online for longer than the TTL; a graceful
//!   stop removes its entries and says so at once.

mod link;
mod presence;
pub mod sequencer;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::broker::{Announce, Announcer, Broker, Event};
use crate::hub::Hub;
use crate::metrics::BrokerCounters;
use crate::store::Store;
use sequencer::RoomSeq;
use wire::{Envelope, Wire};

/// How long a seq that arrived ahead of a missing one waits before the gap is read from the
/// database: a little more than the time between two nodes' commits of one room reaching Redis.
pub const GAP_WAIT: Duration = Duration::from_millis(150);
/// Bytes queued for Redis at most; past it events are dropped and counted (other nodes recover
/// the messages among them from the database, through their gap fills).
const OUT_QUEUE_BYTES: usize = 64 << 20;
/// A room no connection here listens to is unsubscribed this long after it was last watched.
const IDLE_GRACE: Duration = Duration::from_secs(10);
/// Messages read from the database per gap-fill query.
const FILL_PAGE: u32 = 500;

/// What the broker needs to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    pub node: String,
    pub prefix: String,
}

/// Redis key and channel names.
struct Keys {
    prefix: String,
    node: Arc<str>,
}

impl Keys {
    fn room(&self, room: &str) -> String {
        format!("{}r:{room}", self.prefix)
    }
    fn user(&self, user: &str) -> String {
        format!("{}u:{user}", self.prefix)
    }
    fn all(&self) -> String {
        format!("{}all", self.prefix)
    }
    fn own(&self) -> String {
        format!("{}n:{}", self.prefix, self.node)
    }
    fn presence_hash(&self, room: &str) -> String {
        format!("{}ph:{room}", self.prefix)
    }
    fn presence_expiry(&self, room: &str) -> String {
        format!("{}pz:{room}", self.prefix)
    }
    fn member(&self, user: &str) -> String {
        format!("{user}\n{}", self.node)
    }
}

/// Something for the ordering core.
enum Input {
    Local(Event),
    Remote(Envelope),
    /// Messages read from the database for a gap `after..=upto` of `room`.
    Filled {
        room: Arc<str>,
        after: u64,
        upto: u64,
        items: Vec<(u64, Utf8Bytes)>,
    },
}

/// One command for Redis.
enum Out {
    Publish { channel: String, payload: String },
    Cmd(redis::Cmd),
}

#[derive(Default)]
struct OutQueue {
    items: VecDeque<(Out, usize, Instant)>,
    bytes: usize,
}

/// Which channels this node wants, and since when for rooms.
#[derive(Default)]
struct Want {
    rooms: HashMap<Arc<str>, Instant>,
    users: HashSet<Arc<str>>,
}

/// The state of the connection to Redis.
#[derive(Default)]
struct LinkState {
    up: bool,
    last_error: String,
    /// Channels whose SUBSCRIBE Redis confirmed on the current connection.
    subscribed: HashSet<String>,
}

struct Inner {
    node: Arc<str>,
    keys: Keys,
    url: String,
    client: redis::Client,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    counters: BrokerCounters,
    /// The ordering core: inputs wait here for [`Inner::drain`].
    inbox: Mutex<Vec<Input>>,
    /// Held while draining, so two drainers never reorder each other.
    dispatching: Mutex<()>,
    wake: Notify,
    /// Per room this node listens to: the last seq delivered and what waits for a gap.
    rooms: Mutex<HashMap<Arc<str>, RoomSeq>>,
    /// The epoch each room had when its cursor started: a room deleted and made again while
    /// the link was down has a new one, and its old cursor must not swallow the new seqs.
    epochs: Mutex<HashMap<Arc<str>, String>>,
    out: Mutex<OutQueue>,
    out_wake: Notify,
    want: Mutex<Want>,
    want_changed: Notify,
    link: Mutex<LinkState>,
    /// Woken whenever a SUBSCRIBE is confirmed or the link goes down.
    link_changed: Notify,
    /// The command connection while the link is up (cheap to clone: multiplexed).
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    pings: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_nonce: AtomicU64,
    /// Woken by the link after each (re)connect: every room is caught up from the database.
    resync: Notify,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

fn status_name(s: chat_proto::Status) -> &'static str {
    match s {
        chat_proto::Status::Online => "online",
        chat_proto::Status::Away => "away",
        chat_proto::Status::Offline => "offline",
    }
}

fn parse_status(s: &str) -> Option<chat_proto::Status> {
    match s {
        "online" => Some(chat_proto::Status::Online),
        "away" => Some(chat_proto::Status::Away),
        "offline" => Some(chat_proto::Status::Offline),
        _ => None,
    }
}

/// The cross-node broker. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl RedisBroker {
    /// Starts the broker's tasks on the current runtime. An unreachable Redis is not an error
    /// here: the node serves its own clients, `/readyz` says why it is not ready, and the link
    /// keeps trying. A URL that does not parse is.
    pub fn start(
        config: ClusterConfig,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        counters: BrokerCounters,
    ) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("--broker {}: {e}", config.url))?;
        let node: Arc<str> = Arc::from(config.node.as_str());
        let inner = Arc::new(Inner {
            keys: Keys {
                prefix: config.prefix,
                node: node.clone(),
            },
            node,
            url: config.url,
            client,
            hub,
            store,
            counters,
            inbox: Mutex::new(Vec::new()),
            dispatching: Mutex::new(()),
            wake: Notify::new(),
            rooms: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
            out: Mutex::new(OutQueue::default()),
            out_wake: Notify::new(),
            want: Mutex::new(Want::default()),
            want_changed: Notify::new(),
            link: Mutex::new(LinkState {
                last_error: "not connected yet".into(),
                ..LinkState::default()
            }),
            link_changed: Notify::new(),
            conn: Mutex::new(None),
            pings: Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(1),
            resync: Notify::new(),
            stop: CancellationToken::new(),
        });
        let i = inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = i.stop.cancelled() => return,
                    _ = i.wake.notified() => i.drain(None),
                }
            }
        });
        tokio::spawn(link::run(inner.clone()));
        tokio::spawn(publisher(inner.clone()));
        tokio::spawn(gap_filler(inner.clone()));
        tokio::spawn(resyncer(inner.clone()));
        tokio::spawn(presence::refresher(inner.clone()));
        Ok(Self { inner })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

impl Inner {
    /// Takes every queued input (plus `then`) and delivers it in order: messages through each
    /// room's sequencer, runs of a room merged into one event.
    fn drain(&self, then: Option<Input>) {
        let _one_at_a_time = lock(&self.dispatching);
        let mut inputs = std::mem::take(&mut *lock(&self.inbox));
        inputs.extend(then);
        if inputs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut events: Vec<Event> = Vec::with_capacity(inputs.len());
        let push_run = |events: &mut Vec<Event>, room: &Arc<str>, run: Vec<(u64, Utf8Bytes)>| {
            if run.is_empty() {
                return;
            }
            if let Some(Event::Messages { room: r, items }) = events.last_mut()
                && r == room
            {
                items.extend(run);
                return;
            }
            events.push(Event::Messages {
                room: room.clone(),
                items: run,
            });
        };
        {
            let mut rooms = lock(&self.rooms);
            for input in inputs {
                match input {
                    Input::Local(Event::Room {
                        room,
                        seq: Some(seq),
                        frame,
                    }) => {
                        if let Some(cursor) = rooms.get_mut(&room) {
                            let run = cursor.offer(seq, frame, now);
                            push_run(&mut events, &room, run);
                        }
                    }
                    Input::Local(event) => {
                        if let Event::RoomDeleted { room } = &event {
                            rooms.remove(room);
                            lock(&self.epochs).remove(room);
                        }
                        events.push(event);
                    }
                    Input::Filled {
                        room,
                        after,
                        upto,
                        items,
                    } => {
                        if let Some(cursor) = rooms.get_mut(&room) {
                            let n = items.len();
                            let run = cursor.filled(after, upto, items, now);
                            tracing::debug!(room = %room, after, upto, read = n, delivered = run.len(), "gap filled");
                            push_run(&mut events, &room, run);
                        }
                    }
                    Input::Remote(env) => {
                        let origin: Arc<str> = Arc::from(env.origin.as_str());
                        match env.what {
                            Wire::Msg { room, seq, frame } => {
                                let room: Arc<str> = Arc::from(room.as_str());
                                if let Some(cursor) = rooms.get_mut(&room) {
                                    let run = cursor.offer(seq, Utf8Bytes::from(frame), now);
                                    push_run(&mut events, &room, run);
                                }
                            }
                            Wire::Deleted { room } => {
                                let room: Arc<str> = Arc::from(room.as_str());
                                rooms.remove(&room);
                                lock(&self.epochs).remove(&room);
                                events.push(Event::RoomDeleted { room });
                            }
                            other => events.extend(remote_event(origin, other)),
                        }
                    }
                }
            }
        }
        for event in events {
            self.hub.dispatch(event);
        }
    }

    /// Queues a command for Redis; false (and counted) when the queue is at its bound.
    fn send(&self, out: Out) -> bool {
        let size = match &out {
            Out::Publish { channel, payload } => channel.len() + payload.len(),
            Out::Cmd(_) => 128,
        };
        {
            let mut q = lock(&self.out);
            if q.bytes + size > OUT_QUEUE_BYTES {
                drop(q);
                self.counters.dropped.inc();
                return false;
            }
            q.bytes += size;
            q.items.push_back((out, size, Instant::now()));
        }
        self.out_wake.notify_one();
        true
    }

    fn publish_wire(&self, channel: String, what: Wire) {
        let payload = Envelope {
            origin: self.node.to_string(),
            sent_ms: now_ms(),
            what,
        }
        .encode();
        self.send(Out::Publish { channel, payload });
    }

    fn want_room(&self, room: &str) {
        let mut want = lock(&self.want);
        want.rooms.insert(Arc::from(room), Instant::now());
        drop(want);
        self.want_changed.notify_one();
    }

    fn is_up(&self) -> bool {
        lock(&self.link).up
    }

    fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        lock(&self.conn).clone()
    }

    /// Reads `room`'s events after `after` up to `upto` from the database, as frames.
    async fn read_gap(&self, room: &str, after: u64, upto: u64) -> Option<Vec<(u64, Utf8Bytes)>> {
        match self
            .store
            .events_between(room, after, upto, FILL_PAGE)
            .await
        {
            Ok(events) => Some(
                events
                    .into_iter()
                    .map(|e| (e.seq, crate::event_frames::frame(room, e)))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(room, error = %e, "gap fill: reading the database failed; retrying");
                None
            }
        }
    }

    /// Catches `room` up from the database to its latest committed seq (after a reconnect),
    /// or starts its cursor there if it has none.
    async fn catch_up(&self, room: &Arc<str>) {
        let (latest, record) = match (
            self.store.latest_seq(room).await,
            self.store.room(room).await,
        ) {
            (Ok(l), Ok(r)) => (l, r),
            // The room is gone: no seqs to read, and the check below deletes it here.
            (Err(crate::store::StoreError::NotFound), Ok(None)) => (0, None),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(room = %room, error = %e, "catch-up: reading the database failed");
                return;
            }
        };
        let known = lock(&self.epochs).get(room).cloned();
        let recreated = match (&record, &known) {
            (None, _) => lock(&self.rooms).contains_key(room),
            (Some(r), Some(e)) => r.epoch != *e,
            (Some(_), None) => false,
        };
        if recreated {
            // Deleted (and maybe made again) while the link was down: what this node's
            // connections hold of it is gone, as on the node that deleted it.
            tracing::info!(room = %room, "room deleted while redis was unreachable");
            lock(&self.epochs).remove(room);
            self.drain(Some(Input::Local(Event::RoomDeleted {
                room: room.clone(),
            })));
            return;
        }
        if let Some(r) = &record {
            lock(&self.epochs).insert(room.clone(), r.epoch.clone());
        }
        let mut after = {
            let mut rooms = lock(&self.rooms);
            match rooms.get(room) {
                Some(c) => c.delivered(),
                None => {
                    rooms.insert(room.clone(), RoomSeq::new(latest));
                    return;
                }
            }
        };
        tracing::debug!(room = %room, after, latest, "catching up from the database");
        while after < latest {
            let Some(items) = self.read_gap(room, after, latest).await else {
                return;
            };
            let last = items.last().map_or(latest, |i| i.0);
            self.counters.gap_fills.inc();
            self.counters.gap_filled_messages.inc_by(items.len() as u64);
            self.drain(Some(Input::Filled {
                room: room.clone(),
                after,
                upto: latest,
                items,
            }));
            after = last;
        }
    }
}

/// Another node's event as this node's hub takes it (messages and deletions are handled by the
/// sequencer before this).
fn remote_event(origin: Arc<str>, what: Wire) -> Option<Event> {
    Some(match what {
        Wire::Room { room, frame } => Event::Room {
            room: room.into(),
            seq: None,
            frame: frame.into(),
        },
        Wire::User { user, frame } => Event::User {
            user: user.into(),
            frame: frame.into(),
            except: None,
        },
        Wire::Left {
            room,
            user,
            removed,
        } => Event::Left {
            room: room.into(),
            user: user.into(),
            except: None,
            removed,
        },
        Wire::Revoked { hash } => {
            let bytes = hex::decode(hash).ok()?;
            Event::TokenRevoked {
                hash: bytes.try_into().ok()?,
            }
        }
        Wire::Presence {
            room,
            changes,
            replace,
        } => Event::Presence {
            room: room.into(),
            node: origin,
            changes: changes
                .into_iter()
                .map(|(u, s)| (Arc::from(u.as_str()), s))
                .collect(),
            replace,
        },
        Wire::Typing { room, user, active } => Event::Typing {
            room: room.into(),
            user: user.into(),
            active,
        },
        Wire::Gone => Event::NodeGone { node: origin },
        Wire::Away { user, away } => Event::Away {
            user: user.into(),
            away,
        },
        Wire::Msg { .. } | Wire::Deleted { .. } | Wire::Ping { .. } => return None,
    })
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    fn publish(&self, event: Event) {
        let i = &self.inner;
        let keys = &i.keys;
        match &event {
            Event::Room {
                room,
                seq: Some(seq),
                frame,
            } => i.publish_wire(
                keys.room(room),
                Wire::Msg {
                    room: room.to_string(),
                    seq: *seq,
                    frame: frame.to_string(),
                },
            ),
            Event::Room {
                room,
                seq: None,
                frame,
            } => i.publish_wire(
                keys.room(room),
                Wire::Room {
                    room: room.to_string(),
                    frame: frame.to_string(),
                },
            ),
            Event::User { user, frame, .. } => i.publish_wire(
                keys.user(user),
                Wire::User {
                    user: user.to_string(),
                    frame: frame.to_string(),
                },
            ),
            Event::Left {
                room,
                user,
                removed,
                ..
            } => i.publish_wire(
                keys.room(room),
                Wire::Left {
                    room: room.to_string(),
                    user: user.to_string(),
                    removed: removed.clone(),
                },
            ),
            Event::TokenRevoked { hash } => i.publish_wire(
                keys.all(),
                Wire::Revoked {
                    hash: hex::encode(hash),
                },
            ),
            Event::RoomDeleted { room } => i.publish_wire(
                keys.room(room),
                Wire::Deleted {
                    room: room.to_string(),
                },
            ),
            // Local-only shapes (runs are made by the receivers) and other nodes' news.
            Event::Messages { .. }
            | Event::Presence { .. }
            | Event::Typing { .. }
            | Event::NodeGone { .. }
            | Event::Away { .. } => {}
        }
        match event {
            // Messages wait for the core task, which batches them; other events of the log go
            // now, after what is queued (see `LocalBroker::publish`).
            Event::Room {
                seq: Some(_),
                ref frame,
                ..
            } if crate::broker::is_message(frame) => {
                lock(&i.inbox).push(Input::Local(event));
                i.wake.notify_one();
            }
            // Anything else is rare and answered right after (a topic before its `ok`):
            // deliver it here now, after what is queued.
            other => i.drain(Some(Input::Local(other))),
        }
    }

    async fn watch(&self, room: &str) {
        let i = &self.inner;
        let channel = i.keys.room(room);
        i.want_room(room);
        // Wait until Redis confirmed the subscription: from then on, whatever another node
        // commits is published after this point and reaches this node.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let changed = i.link_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let link = lock(&i.link);
                if !link.up || link.subscribed.contains(&channel) {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                tracing::warn!(room, "redis did not confirm a subscription within 5 s");
                break;
            }
        }
        let room: Arc<str> = Arc::from(room);
        if !lock(&i.rooms).contains_key(&room) {
            // Everything up to the latest commit is in the joiner's snapshot (read after this);
            // the cursor starts there. A message committed meanwhile is above it and arrives.
            if let Ok(Some(record)) = i.store.room(&room).await {
                lock(&i.epochs).insert(room.clone(), record.epoch);
            }
            match i.store.latest_seq(&room).await {
                Ok(latest) => {
                    lock(&i.rooms)
                        .entry(room.clone())
                        .or_insert(RoomSeq::new(latest));
                }
                Err(e) => {
                    tracing::warn!(room = %room, error = %e, "watch: reading the latest seq failed")
                }
            }
        }
        if i.is_up() {
            presence::bootstrap(i, &room).await;
        }
    }

    async fn ready(&self) -> Result<(), String> {
        let i = &self.inner;
        {
            let link = lock(&i.link);
            if !link.up {
                return Err(format!(
                    "broker: not connected to Redis ({})",
                    link.last_error
                ));
            }
        }
        let nonce = i.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&i.pings).insert(nonce, tx);
        i.publish_wire(i.keys.own(), Wire::Ping { nonce });
        let back = tokio::time::timeout(Duration::from_secs(2), rx).await;
        lock(&i.pings).remove(&nonce);
        match back {
            Ok(Ok(())) => Ok(()),
            _ => Err(
                "broker: a message published on this node's Redis channel did not come back within 2 s"
                    .into(),
            ),
        }
    }

    async fn shutdown(&self) {
        presence::withdraw(&self.inner).await;
        self.inner.stop.cancel();
    }
}

impl Announcer for RedisBroker {
    fn announce(&self, news: Vec<Announce>) {
        let i = &self.inner;
        for a in news {
            match a {
                Announce::Presence { room, user, status } => {
                    presence::write(i, &room, &user, status);
                    i.publish_wire(
                        i.keys.room(&room),
                        Wire::Presence {
                            room: room.to_string(),
                            changes: vec![(user.to_string(), status)],
                            replace: false,
                        },
                    );
                }
                Announce::Typing { room, user, active } => i.publish_wire(
                    i.keys.room(&room),
                    Wire::Typing {
                        room: room.to_string(),
                        user: user.to_string(),
                        active,
                    },
                ),
                Announce::Away { user, away } => i.publish_wire(
                    i.keys.user(&user),
                    Wire::Away {
                        user: user.to_string(),
                        away,
                    },
                ),
                Announce::UserHere(user) => {
                    lock(&i.want).users.insert(user);
                    i.want_changed.notify_one();
                }
                Announce::UserGone(user) => {
                    lock(&i.want).users.remove(&user);
                    i.want_changed.notify_one();
                }
                // Unsubscribed by the refresher after a grace: a join may be on its way.
                Announce::RoomIdle(_) => {}
            }
        }
    }
}

/// Sends what is queued for Redis, pipelined, in order.
async fn publisher(i: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = i.stop.cancelled() => return,
            _ = i.out_wake.notified() => {}
        }
        loop {
            let Some(mut conn) = i.connection() else {
                // Down: keep the queue (bounded) for the reconnect; the link wakes us.
                break;
            };
            let batch: Vec<(Out, usize, Instant)> = {
                let mut q = lock(&i.out);
                let n = q.items.len().min(512);
                let batch: Vec<_> = q.items.drain(..n).collect();
                q.bytes -= batch.iter().map(|b| b.1).sum::<usize>();
                batch
            };
            if batch.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (out, _, _) in &batch {
                match out {
                    Out::Publish { channel, payload } => {
                        pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                    }
                    Out::Cmd(c) => {
                        pipe.add_command(c.clone()).ignore();
                    }
                }
            }
            match pipe.exec_async(&mut conn).await {
                Ok(()) => {
                    let now = Instant::now();
                    for (_, _, at) in &batch {
                        i.counters
                            .publish_seconds
                            .observe(now.saturating_duration_since(*at).as_secs_f64());
                    }
                }
                Err(e) => {
                    // Lost with the connection: the link reconnects, and the other nodes catch
                    // the messages among them up from the database.
                    i.counters.dropped.inc_by(batch.len() as u64);
                    tracing::warn!(error = %e, events = batch.len(), "redis publish failed");
                    link::failed(&i, format!("publish failed: {e}"));
                    break;
                }
            }
        }
    }
}

/// Reads the gaps that stayed open past [`GAP_WAIT`] from the database.
async fn gap_filler(i: Arc<Inner>) {
    let mut tick = tokio::time::interval(GAP_WAIT / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = i.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let due: Vec<(Arc<str>, sequencer::Gap)> = lock(&i.rooms)
            .iter()
            .filter_map(|(r, c)| c.due_gap(now, GAP_WAIT).map(|g| (r.clone(), g)))
            .collect();
        for (room, gap) in due {
            let Some(items) = i.read_gap(&room, gap.after, gap.upto).await else {
                continue;
            };
            i.counters.gap_fills.inc();
            i.counters.gap_filled_messages.inc_by(items.len() as u64);
            tracing::debug!(room = %room, after = gap.after, upto = gap.upto, "gap filled from the database");
            i.drain(Some(Input::Filled {
                room,
                after: gap.after,
                upto: gap.upto,
                items,
            }));
        }
    }
}

/// After each (re)connect: every room this node listens to is caught up from the database
/// (what was published while the link was down never arrives), and presence is re-read.
async fn resyncer(i: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = i.stop.cancelled() => return,
            _ = i.resync.notified() => {}
        }
        let rooms: Vec<Arc<str>> = lock(&i.want).rooms.keys().cloned().collect();
        for room in &rooms {
            i.catch_up(room).await;
            presence::bootstrap(&i, room).await;
        }
        presence::refresh(&i).await;
        tracing::info!(
            rooms = rooms.len(),
            "redis: rooms caught up after (re)connecting"
        );
    }
}
