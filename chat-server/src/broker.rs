//! The fan-out seam. Whatever must reach every connection interested in a room or a user, on
//! any node, is published here; the in-process [`LocalBroker`] hands it straight to this node's
//! [`Hub`]. A Redis implementation will publish to the other nodes and hand what it receives to
//! their hubs the same way. Presence and typing stay node-local in the hub for now: they are
//! computed under the room's lock, which is what keeps their diffs in order.

use std::sync::Arc;

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
    /// A frame for every connection of `user`.
    User { user: Arc<str>, frame: Utf8Bytes },
    /// `user` stopped being a member of `room`: unsubscribe all their connections (telling each
    /// but `except` with `left`), then tell the room with `member_left`.
    Left {
        room: Arc<str>,
        user: Arc<str>,
        except: Option<ConnId>,
    },
    /// A token was revoked: close every connection authenticated with it (4003).
    TokenRevoked { hash: [u8; 32] },
}

/// Delivers events to every node. `publish` must not block: it is called from the store's
/// writer thread in commit order, and must keep that order per room.
pub trait Broker: Send + Sync + 'static {
    fn publish(&self, event: Event);
}

/// The single-node broker: delivery is a direct call into the hub.
pub struct LocalBroker {
    hub: Arc<Hub>,
}

impl LocalBroker {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, event: Event) {
        self.hub.dispatch(event);
    }
}
