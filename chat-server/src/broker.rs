//! The fan-out seam. Whatever must reach every connection interested in a room or a user, on
//! any node, is published here; the in-process [`LocalBroker`] hands it straight to this node's
//! [`Hub`]. The Redis broker ([`crate::cluster`]) also publishes it to the other nodes and hands
//! what they publish to this node's hub the same way. Presence and typing are computed by the
//! hub under the room's lock (which keeps their diffs in order); the hub tells a cluster broker
//! of its own users' changes through [`Announcer`], and the broker feeds the other nodes' back
//! as [`Event::Presence`] and [`Event::Typing`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::{ConnId, Hub};

/// Something to deliver. Frames are encoded once by the publisher and shared by every recipient.
#[derive(Debug, Clone)]
pub enum Event {
    /// A frame for every connection subscribed to `room`. `seq` is set for messages: a joining
    /// connection uses it to drop what its history snapshot already holds.
    Room {
        room: Arc<str>,
        seq: Option<u64>,
        frame: Utf8Bytes,
    },
    /// A run of messages of one room, ascending seqs: each live recipient gets the run as one
    /// queue item (one wakeup, one write), minus what its seq floor says it has.
    Messages {
        room: Arc<str>,
        items: Vec<(u64, Utf8Bytes)>,
    },
    /// A frame for every connection of `user` (but `except`, on this node: the one that asked,
    /// which has its answer already).
    User {
        user: Arc<str>,
        frame: Utf8Bytes,
        except: Option<ConnId>,
    },
    /// `user` stopped being a member of `room`: unsubscribe all their connections (telling each
    /// but `except` with `left`, carrying `removed` when a moderator did it), then tell the
    /// room with `member_left`.
    Left {
        room: Arc<str>,
        user: Arc<str>,
        except: Option<ConnId>,
        removed: Option<chat_proto::Removal>,
    },
    /// A token was revoked: close every connection authenticated with it (4003).
    TokenRevoked { hash: [u8; 32] },
    /// The room was deleted: tell every connection subscribed to it (`room_deleted`) and drop
    /// the subscriptions.
    RoomDeleted { room: Arc<str> },
    /// Another node's news about how its users show in `room`; with `replace`, its whole view
    /// of the room (its periodic snapshot), else changes only.
    Presence {
        room: Arc<str>,
        node: Arc<str>,
        changes: Vec<(Arc<str>, chat_proto::Status)>,
        replace: bool,
    },
    /// A user on another node started or stopped typing in `room`.
    Typing {
        room: Arc<str>,
        user: Arc<str>,
        active: bool,
    },
    /// Another node stopped: forget every presence entry it gave.
    NodeGone { node: Arc<str> },
    /// `user` went away or came back on another node.
    Away { user: Arc<str>, away: bool },
}

/// What a node's hub tells the other nodes: its own users' presence and typing, and which
/// rooms and users it has connections for (so the broker listens only where it must).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// How `user` shows through this node's connections in `room` now (offline: none left).
    Presence {
        room: Arc<str>,
        user: Arc<str>,
        status: chat_proto::Status,
    },
    Typing {
        room: Arc<str>,
        user: Arc<str>,
        active: bool,
    },
    /// `user` went away or came back (on this node): their other nodes follow.
    Away { user: Arc<str>, away: bool },
    /// The first connection of `user` on this node.
    UserHere(Arc<str>),
    /// The last connection of `user` on this node went.
    UserGone(Arc<str>),
    /// No connection of this node listens to `room` any more.
    RoomIdle(Arc<str>),
}

/// Hears a hub's announcements. Called right after the hub released its locks; must not block.
pub trait Announcer: Send + Sync + 'static {
    fn announce(&self, news: Vec<Announce>);
}

/// Delivers events to every node. `publish` must not block: it is called from the store's
/// writer thread in commit order, and must keep that order per room.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + 'static {
    fn publish(&self, event: Event);

    /// Called before a connection of this node subscribes to `room`: returns once events of the
    /// room published from now on reach this node (a cluster broker's subscription is
    /// confirmed). The in-process broker has nothing to wait for.
    async fn watch(&self, _room: &str) {}

    /// `Ok` when events published now reach this node (for `/readyz`); a one-line reason
    /// otherwise.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// A graceful stop: tell the other nodes this node's users are gone.
    async fn shutdown(&self) {}
}

/// The single-node broker. Publishing appends to one FIFO and wakes a dispatcher task, which
/// takes everything queued and hands it to the hub, runs of messages of a room as one event.
/// That batching is what holds a big room at high rates: at 1,000 messages/s into 1,000 members,
/// one wakeup and one write per connection per message kept both cores busy (measured), while
/// a run costs one per run. It also keeps fan-out off the SQLite writer thread. Per room, order
/// is the order of publication.
pub struct LocalBroker {
    inner: Arc<Queue>,
}

struct Queue {
    /// std Mutex: held to push or to take the whole queue, never across `.await`. Not bounded
    /// by itself: publishers are the store's completions (bounded by the store's queue) and
    /// the dispatcher only does non-blocking `try_send`s, so it keeps up.
    events: Mutex<Vec<Event>>,
    /// Held while taking and delivering a batch, so two deliverers never reorder each other.
    dispatching: Mutex<()>,
    hub: Arc<Hub>,
    wake: Notify,
}

impl Queue {
    /// Takes everything queued (plus `then`) and delivers it, in order.
    fn drain(&self, then: Option<Event>) {
        let _one_at_a_time = self.dispatching.lock().unwrap_or_else(|p| p.into_inner());
        let mut events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        events.extend(then);
        dispatch_all(&self.hub, events);
    }
}

impl LocalBroker {
    /// Starts the dispatcher on the current tokio runtime.
    pub fn new(hub: Arc<Hub>) -> Self {
        let inner = Arc::new(Queue {
            events: Mutex::new(Vec::new()),
            dispatching: Mutex::new(()),
            hub,
            wake: Notify::new(),
        });
        let queue = inner.clone();
        tokio::spawn(async move {
            loop {
                queue.wake.notified().await;
                queue.drain(None);
            }
        });
        Self { inner }
    }
}

/// Whether a frame of a room's log is a `message` (the bulk of the traffic) rather than an event.
pub fn is_message(frame: &str) -> bool {
    chat_proto::encoded_type(frame) == Some("message")
}

/// Delivers `events` in order, merging consecutive messages of a room into one run.
fn dispatch_all(hub: &Hub, events: Vec<Event>) {
    let mut runs: HashMap<Arc<str>, Vec<(u64, Utf8Bytes)>> = HashMap::new();
    for event in events {
        match event {
            Event::Room {
                room,
                seq: Some(seq),
                frame,
            } => runs.entry(room).or_default().push((seq, frame)),
            other => {
                // Anything else about a room goes out after the messages published before it.
                let room = match &other {
                    Event::Room { room, .. }
                    | Event::Left { room, .. }
                    | Event::RoomDeleted { room }
                    | Event::Presence { room, .. }
                    | Event::Typing { room, .. }
                    | Event::Messages { room, .. } => Some(room.clone()),
                    _ => None,
                };
                if let Some(items) = room.and_then(|r| runs.remove_entry(&r)) {
                    hub.dispatch(Event::Messages {
                        room: items.0,
                        items: items.1,
                    });
                }
                hub.dispatch(other);
            }
        }
    }
    for (room, items) in runs {
        hub.dispatch(Event::Messages { room, items });
    }
}

#[async_trait::async_trait]
impl Broker for LocalBroker {
    fn publish(&self, event: Event) {
        match event {
            // Messages wait for the dispatcher, which batches them. Other events of the log
            // (edits, joins) are rare, and what follows them (a joiner's presence) must not
            // overtake them: they go now, after what is queued.
            Event::Room {
                seq: Some(_),
                ref frame,
                ..
            } if is_message(frame) => {
                self.inner
                    .events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(event);
                self.inner.wake.notify_one();
            }
            // Anything else is rare and answered right after (a topic before its `ok`): deliver
            // it now, after what is queued.
            other => self.inner.drain(Some(other)),
        }
    }
}
