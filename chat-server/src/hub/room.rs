//! One room's live state on this node: its subscribers (with what a joining one holds back)
//! and its presence and typing, all under the room's one lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chat_proto::{ServerFrame, Status, encode};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{ConnId, HubConfig, shrink};
use crate::broker::Announce;
use crate::outbox::Outbox;
use crate::presence::{Batch, Change, RoomPresence};
use crate::typing::Typing;

/// A run of a room's log: (seq, frame), ascending.
type Run = Vec<(u64, Utf8Bytes)>;

/// A frame a joining connection receives only after its `joined`.
pub(super) struct Held {
    pub(super) seq: Option<u64>,
    pub(super) frame: Utf8Bytes,
}

pub(super) struct Sub {
    pub(super) user: Arc<str>,
    /// The protocol version of the connection: which frames it takes (`audience`).
    pub(super) version: u32,
    pub(super) outbox: Arc<Outbox>,
    /// `Some` while the connection is joining: live frames wait here until its history snapshot
    /// has been queued, so it gets every message once and in order.
    pub(super) held: Option<Vec<Held>>,
    /// Bytes of the frames in `held`, bounded like an outbox's unsent bytes.
    pub(super) held_bytes: usize,
    /// The highest seq this connection already has (from its snapshot or live). A message at or
    /// below it is dropped: a message the snapshot read as committed may be *published* only
    /// after the join went live, and rooms publish in seq order, so this drops exactly the
    /// copies the client already holds.
    pub(super) floor: u64,
}

#[derive(Default)]
pub(super) struct Room {
    pub(super) subs: HashMap<ConnId, Sub>,
    /// Who is here, on this node and (with a cluster broker) on the others.
    pub(super) presence: RoomPresence,
    /// Presence changes waiting for the room's next presence frame.
    pub(super) batch: Batch,
    pub(super) typing: Typing,
    /// What this node must tell the other nodes, collected under the lock and handed to the
    /// announcer after it is released (the announcer may take other locks).
    pub(super) out: Vec<Announce>,
}

pub(super) fn frame(f: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(encode(f, None))
}

pub(super) fn presence_frame<'a>(
    room: &str,
    changes: impl IntoIterator<Item = (&'a str, Status)>,
) -> Utf8Bytes {
    frame(&ServerFrame::Presence {
        room: room.to_owned(),
        changes: changes
            .into_iter()
            .map(|(user, status)| chat_proto::Member {
                role: None,
                user: user.to_owned(),
                status,
            })
            .collect(),
    })
}

/// Holds a live frame for a joining connection, or closes it (4008) when it already holds as
/// many frames or bytes as an outbox may: a joiner that reads nothing cannot make the server
/// hold more for it than a connection that is live. The held frames are dropped with the kick.
pub(super) fn hold(
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
    pub(super) fn status_of(&self, user: &str) -> Status {
        self.presence.status_of(user)
    }

    /// Sends to every subscriber but those of `except_user` and the connection `except_conn`.
    pub(super) fn deliver(
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
            if !crate::audience::sees(sub.version, frame) {
                continue;
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
    pub(super) fn deliver_messages(
        &mut self,
        items: &[(u64, Utf8Bytes)],
        all: &Arc<[Utf8Bytes]>,
        cfg: &HubConfig,
    ) {
        let Some(last) = items.last().map(|i| i.0) else {
            return;
        };
        // Runs are ascending, except when a resend acked as a duplicate is offered again (its
        // seq is older than what was published since): then each connection takes, in order,
        // only the seqs above what it has, never an older one after a newer.
        let ascending = items.windows(2).all(|w| w[0].0 < w[1].0);
        let top = items.iter().map(|i| i.0).max().unwrap_or(last);
        // What a version-1 connection takes of the run: computed once, when first needed.
        let mut v1_run: Option<(Run, Arc<[Utf8Bytes]>)> = None;
        for sub in self.subs.values_mut() {
            if top <= sub.floor {
                continue;
            }
            let (items, all) = if sub.version >= 2 {
                (items, all)
            } else {
                let (i, a) = v1_run.get_or_insert_with(|| {
                    let kept: Run = items
                        .iter()
                        .filter(|(_, f)| crate::audience::sees(1, f))
                        .cloned()
                        .collect();
                    let frames = kept.iter().map(|(_, f)| f.clone()).collect();
                    (kept, frames)
                });
                (&i[..], &*a)
            };
            if items.is_empty() {
                // Nothing of the run is for it; it has it all the same.
                if sub.held.is_none() {
                    sub.floor = sub.floor.max(top);
                }
                continue;
            }
            let first = items[0].0;
            if let Some(held) = &mut sub.held {
                // go_live releases held frames in order above the snapshot, so any order is
                // safe here.
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
            if ascending && first > sub.floor {
                sub.outbox.push_many(all.clone());
                sub.floor = top;
                continue;
            }
            let mut floor = sub.floor;
            let rest: Arc<[Utf8Bytes]> = items
                .iter()
                .filter(|(s, _)| {
                    let above = *s > floor;
                    if above {
                        floor = *s;
                    }
                    above
                })
                .map(|(_, f)| f.clone())
                .collect();
            sub.outbox.push_many(rest);
            sub.floor = floor;
        }
    }

    /// Announces a change of how a user shows: at once if the room sent no presence frame
    /// within the interval (then not to `except_conn`, the joiner, whose `joined` shows it),
    /// otherwise with the next batch. A user who went offline stops typing too.
    pub(super) fn presence(
        &mut self,
        room: &str,
        change: Change,
        except_conn: Option<ConnId>,
        cfg: &HubConfig,
    ) {
        if change.1 == Status::Offline {
            self.stop_typing(room, &change.0, cfg);
        }
        let (user, status) = (change.0.clone(), change.1);
        if self
            .batch
            .offer(change, Instant::now(), cfg.presence_interval)
        {
            let f = presence_frame(room, [(&*user, status)]);
            self.deliver(None, &f, None, except_conn, cfg);
        }
    }

    /// Sends the waiting presence changes as one frame once the interval has passed.
    pub(super) fn flush_presence(&mut self, room: &str, now: Instant, cfg: &HubConfig) {
        if let Some(pending) = self.batch.due(now, cfg.presence_interval) {
            let f = presence_frame(room, pending.iter().map(|(u, s)| (&**u, *s)));
            self.deliver(None, &f, None, None, cfg);
        }
    }

    /// Starts or refreshes `user`'s indicator (this node's user or another node's) and tells
    /// the room's other users.
    pub(super) fn start_typing(&mut self, room: &str, user: &Arc<str>, cfg: &HubConfig) {
        self.typing
            .start(user.clone(), Instant::now() + cfg.typing_timeout);
        let f = frame(&ServerFrame::Typing {
            room: room.to_owned(),
            user: user.to_string(),
            active: true,
        });
        self.deliver(None, &f, Some(user), None, cfg);
    }

    pub(super) fn stop_typing(&mut self, room: &str, user: &str, cfg: &HubConfig) {
        if self.typing.stop(user) {
            let f = frame(&ServerFrame::Typing {
                room: room.to_owned(),
                user: user.to_owned(),
                active: false,
            });
            self.deliver(None, &f, Some(user), None, cfg);
        }
    }

    /// Tells the other nodes how `user` shows through this node's connections now.
    pub(super) fn announce_local(&mut self, room: &str, user: &Arc<str>) {
        let status = self.presence.local_status(user);
        self.out.push(Announce::Presence {
            room: Arc::from(room),
            user: user.clone(),
            status,
        });
    }

    /// Removes a subscription; on the user's last connection here, they go offline (unless
    /// another node has them) and stop typing.
    pub(super) fn remove_sub(
        &mut self,
        room: &str,
        id: ConnId,
        announce: bool,
        cfg: &HubConfig,
    ) -> bool {
        let Some(sub) = self.subs.remove(&id) else {
            return false;
        };
        shrink(&mut self.subs);
        let (last, change) = self.presence.leave_local(&sub.user);
        if last {
            if self.typing.is_on(&sub.user) {
                self.stop_typing(room, &sub.user, cfg);
                self.out.push(Announce::Typing {
                    room: Arc::from(room),
                    user: sub.user.clone(),
                    active: false,
                });
            }
            self.announce_local(room, &sub.user);
        }
        if let Some(change) = change
            && announce
        {
            self.presence(room, change, None, cfg);
        }
        true
    }

    /// Applies another node's presence news; `replace` makes it that node's whole view.
    pub(super) fn remote_presence(
        &mut self,
        room: &str,
        node: &Arc<str>,
        changes: &[(Arc<str>, Status)],
        replace: bool,
        cfg: &HubConfig,
    ) {
        let until = Instant::now() + cfg.presence_ttl;
        let moved = if replace {
            self.presence.replace_node(node, changes, until)
        } else {
            let mut moved = Vec::new();
            for (user, status) in changes {
                moved.extend(self.presence.set_remote(node, user, *status, until));
            }
            moved
        };
        for change in moved {
            self.presence(room, change, None, cfg);
        }
    }
}
