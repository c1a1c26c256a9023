//! list_rooms, create_room, join, leave, set_topic, invite, open_dm.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::limits::{
    HISTORY_PAGE_MAX, ROOM_PAGE_MAX, check_room_name, check_topic, check_username,
};
use chat_proto::{CatchUp, ErrorCode, RoomInfo, RoomKind, ServerFrame, Status, Visibility, encode};

use crate::broker::Event;
use crate::reply::{self, Keep};
use crate::session::{Fail, Outcome, Session};
use crate::store::{Change, RoomRecord, StoreError, Viewer};

pub(super) fn no_such_room(room: &str) -> Fail {
    Fail::new(ErrorCode::NoSuchRoom, format!("there is no room `{room}`")).in_room(room)
}

fn not_member(room: &str) -> Fail {
    Fail::new(
        ErrorCode::NotMember,
        "you are not a member of this room: join it first",
    )
    .in_room(room)
}

/// What a join answers with, decided from the client's `since_seq` and `epoch`.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// The latest `history_on_join` messages.
    Recent(CatchUp),
    /// Every message after this seq, paged.
    Replay(u64),
}

fn plan(since: Option<(u64, String)>, room_epoch: &str, latest: u64, max_replay: u64) -> Plan {
    match since {
        None => Plan::Recent(CatchUp::Recent),
        Some((seq, epoch))
            if epoch == room_epoch && seq <= latest && latest - seq <= max_replay =>
        {
            Plan::Replay(seq)
        }
        Some(_) => Plan::Recent(CatchUp::Reload),
    }
}

impl Session {
    pub(crate) async fn room_record(&self, room: &str) -> Result<RoomRecord, Fail> {
        // Room names are checked only on creation: DM names (`dm:a:b`) are valid here too.
        if room.len() > 128 {
            return Err(Fail::new(ErrorCode::InvalidName, "room name too long"));
        }
        self.ctx
            .store
            .room(room)
            .await?
            .ok_or_else(|| no_such_room(room))
    }

    /// The room, if this user may know it exists: public rooms, and private ones (direct
    /// messages included) they are a member of, invited to, or own (an owner who left may come
    /// back). Any other private room is `no_such_room`, exactly like a name nobody uses
    /// (docs/security.md).
    pub(crate) async fn visible_room(&self, room: &str) -> Result<RoomRecord, Fail> {
        let rec = self.room_record(room).await?;
        let user = self.authed()?.reg.user.clone();
        if rec.visibility == Visibility::Public || rec.owner.as_deref() == Some(&*user) {
            return Ok(rec);
        }
        let store = &self.ctx.store;
        if store.is_member(room, &user).await? || store.is_invited(room, &user).await? {
            Ok(rec)
        } else {
            Err(no_such_room(room))
        }
    }

    pub(crate) async fn require_member(&self, room: &str) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        self.visible_room(room).await?;
        if self.ctx.store.is_member(room, &user).await? {
            Ok(())
        } else {
            Err(not_member(room))
        }
    }

    pub(crate) async fn list_rooms(
        &mut self,
        after: Option<String>,
        limit: Option<u64>,
    ) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        let limit = super::page_limit(limit, ROOM_PAGE_MAX, ROOM_PAGE_MAX);
        let room_for_it = self.reserve_reply().await?;
        let mut rooms = self
            .ctx
            .store
            .rooms_for(&user, after.as_deref(), limit + 1)
            .await?;
        let next = super::cut_page(&mut rooms, limit, |r| r.room.clone());
        if self.version < 2 {
            rooms.iter_mut().for_each(|r| r.role = None);
        }
        self.reply_reserved(&ServerFrame::RoomList { rooms, next }, room_for_it);
        Ok(())
    }

    pub(crate) async fn create_room(
        &mut self,
        room: String,
        visibility: Visibility,
        topic: String,
    ) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        check_room_name(&room).map_err(|m| Fail::new(ErrorCode::InvalidName, m))?;
        check_topic(&topic).map_err(|m| Fail::new(ErrorCode::InvalidTopic, m))?;
        let cap = self.ctx.config.max_rooms_per_user;
        if cap > 0 && self.ctx.store.rooms_owned(&user).await? >= u64::from(cap) {
            return Err(Fail::new(
                ErrorCode::LimitReached,
                format!(
                    "you own {cap} rooms, the most this server allows; delete one (delete_room) first"
                ),
            )
            .in_room(&room));
        }
        let rec = match self
            .ctx
            .store
            .create_room(&room, visibility, &topic, &user)
            .await
        {
            Err(StoreError::Conflict) => {
                return Err(
                    Fail::new(ErrorCode::RoomExists, "a room by that name exists").in_room(&room),
                );
            }
            other => other?,
        };
        self.reply(&ServerFrame::RoomCreated {
            room: RoomInfo {
                room: rec.name,
                kind: rec.kind,
                visibility: rec.visibility,
                topic: rec.topic,
                members: 1,
                joined: true,
                read: Some(chat_proto::ReadState::default()),
                role: (self.version >= 2).then_some(chat_proto::Role::Owner),
            },
        });
        Ok(())
    }

    /// Membership, then subscription, then the snapshot: see `join_snapshot` for why this order
    /// delivers every message exactly once.
    pub(crate) async fn join(
        &mut self,
        room: String,
        since_seq: Option<u64>,
        epoch: Option<String>,
    ) -> Outcome {
        let (user, conn) = {
            let a = self.authed()?;
            (a.reg.user.clone(), a.reg.id)
        };
        let since = match (since_seq, epoch) {
            (Some(s), Some(e)) => Some((s, e)),
            (None, None) => None,
            _ => {
                return Err(Fail::new(
                    ErrorCode::BadFrame,
                    "since_seq and epoch must be given together",
                )
                .in_room(&room));
            }
        };
        // A private room the user is not a member of and not invited to: `no_such_room`.
        let rec = self.visible_room(&room).await?;
        if !self.ctx.store.is_member(&room, &user).await? {
            // Recorded in the room's log (`join`), committed before the snapshot below.
            self.change(&room, Change::Join, false).await?;
        }
        // With the Redis broker: listening to the room's channel before subscribing here, so
        // what another node commits after the snapshot below reaches this connection.
        self.ctx.broker.watch(&room).await;
        let authed = self.authed()?;
        let (statuses, again) = self.ctx.hub.subscribe(&room, &authed.reg);
        // A kick or ban committed between the join above and the subscription found no
        // subscription to end: it is in the store, and read here, after subscribing. One that
        // commits later ends the subscription itself.
        let still = match self.ctx.store.is_member(&room, &user).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Fail::new(
                ErrorCode::NotMember,
                "you were removed from the room as you joined it",
            )),
            Err(e) => Err(Fail::from(e)),
        };
        let snapshot = match still {
            Ok(()) => self.join_snapshot(&rec, since, statuses).await,
            Err(f) => Err(f),
        };
        match snapshot {
            Ok(latest) => {
                self.ctx.hub.go_live(&room, conn, latest);
                Ok(())
            }
            Err(fail) => {
                if again {
                    // The earlier subscription goes on as it was: release everything held.
                    self.ctx.hub.go_live(&room, conn, 0);
                } else {
                    self.ctx.hub.unsubscribe(&room, conn);
                }
                Err(fail.in_room(&room))
            }
        }
    }

    /// Reads the room's state *after* subscribing: a message committed after the read is
    /// published after the subscription, so it reaches this connection (held until `go_live`,
    /// then live). A message committed before the read is in the snapshot (seq <= latest); its
    /// publication may still be on the way, even after `go_live`, and the subscription's seq
    /// floor drops it. So each message arrives once: in the snapshot or live.
    async fn join_snapshot(
        &self,
        rec: &RoomRecord,
        since: Option<(u64, String)>,
        statuses: HashMap<Arc<str>, Status>,
    ) -> Result<u64, Fail> {
        let store = &self.ctx.store;
        let room = rec.name.as_str();
        let room_for_it = self.reserve_reply().await?;
        let latest = store.latest_seq(room).await?;
        let user = self.authed()?.reg.user.clone();
        let v2 = self.version >= 2;
        let viewer = Viewer {
            user: &user,
            tombstones: v2,
        };
        let read = Some(store.read_state(&user, room).await?);
        let (mut members, member_count, members_complete) =
            super::room_admin::joined_members(store.as_ref(), rec, statuses).await?;
        let (role, settings) = if v2 {
            super::room_admin::fill_roles(store.as_ref(), room, &mut members).await?;
            let role = members
                .iter()
                .find(|m| m.user == *user)
                .and_then(|m| m.role);
            let role = match role {
                Some(r) => Some(r),
                None => store.role(room, &user).await?,
            };
            (role, (rec.kind != RoomKind::Dm).then_some(rec.settings))
        } else {
            (None, None)
        };
        let (catch_up, messages, events, mut after) =
            match plan(since, &rec.epoch, latest, self.ctx.config.max_replay) {
                Plan::Recent(catch_up) => {
                    let (mut messages, _) = store
                        .history_before(
                            room,
                            Some(latest + 1),
                            self.ctx.config.history_on_join,
                            viewer,
                        )
                        .await?;
                    reply::cap(&mut messages, Keep::Newest);
                    (catch_up, messages, Vec::new(), latest)
                }
                // Protocol 2 replays every event; protocol 1 the messages among them, and
                // since a page may hold no message, it pages by seq rather than by count.
                Plan::Replay(seq) if v2 => {
                    let mut page = store
                        .events_between(room, seq, latest, HISTORY_PAGE_MAX)
                        .await?;
                    reply::cap(&mut page, Keep::Oldest);
                    let last = page.last().map_or(latest, |m| m.seq);
                    (CatchUp::Replay, Vec::new(), page, last)
                }
                Plan::Replay(seq) => {
                    let mut page = store
                        .messages_between(room, seq, latest, HISTORY_PAGE_MAX)
                        .await?;
                    let cut = reply::cap(&mut page, Keep::Oldest);
                    let last = if cut {
                        page.last().map_or(seq, |m| m.seq)
                    } else if page.len() < HISTORY_PAGE_MAX as usize {
                        latest
                    } else {
                        page.last().map_or(latest, |m| m.seq)
                    };
                    (CatchUp::Replay, page, Vec::new(), last)
                }
            };
        let joined = ServerFrame::Joined {
            room: room.to_owned(),
            epoch: rec.epoch.clone(),
            latest_seq: latest,
            topic: rec.topic.clone(),
            visibility: rec.visibility,
            members,
            member_count,
            members_complete,
            catch_up,
            messages,
            complete: after >= latest,
            events,
            read,
            role,
            settings,
        };
        self.reply_reserved(&joined, room_for_it);
        // Each page waits for room after the one before: a joiner that reads slowly slows its
        // own replay down instead of the server queueing every page at once.
        while after < latest {
            let room_for_it = self.reserve_reply().await?;
            let (messages, events) = if v2 {
                let mut page = store
                    .events_between(room, after, latest, HISTORY_PAGE_MAX)
                    .await?;
                reply::cap(&mut page, Keep::Oldest);
                after = page.last().map_or(latest, |m| m.seq);
                (Vec::new(), page)
            } else {
                let mut page = store
                    .messages_between(room, after, latest, HISTORY_PAGE_MAX)
                    .await?;
                let cut = reply::cap(&mut page, Keep::Oldest);
                after = if !cut && page.len() < HISTORY_PAGE_MAX as usize {
                    latest
                } else {
                    page.last().map_or(latest, |m| m.seq)
                };
                (page, Vec::new())
            };
            self.outbox.push_reserved(
                encode(
                    &ServerFrame::Replay {
                        room: room.to_owned(),
                        messages,
                        complete: after >= latest,
                        events,
                    },
                    None,
                )
                .into(),
                room_for_it,
            );
        }
        Ok(latest)
    }

    pub(crate) async fn leave(&mut self, room: String) -> Outcome {
        self.authed()?;
        self.visible_room(&room).await?;
        // The completion unsubscribes every connection of the user, telling each but this one
        // with `left`; this one is answered here.
        if self.change(&room, Change::Leave, false).await?.is_none() {
            return Err(not_member(&room));
        }
        self.reply(&ServerFrame::Left {
            room,
            removed: None,
        });
        Ok(())
    }

    pub(crate) async fn set_topic(&mut self, room: String, topic: String) -> Outcome {
        self.authed()?;
        check_topic(&topic).map_err(|m| Fail::new(ErrorCode::InvalidTopic, m).in_room(&room))?;
        self.require_member(&room).await?;
        // The event goes to protocol 2, `topic` to protocol 1, from the store's completion.
        self.change(&room, Change::Topic { topic }, false).await?;
        self.reply(&ServerFrame::Ok);
        Ok(())
    }

    pub(crate) async fn invite(&mut self, room: String, invitee: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        let rec = self.visible_room(&room).await?;
        if rec.kind == RoomKind::Dm {
            return Err(
                Fail::new(ErrorCode::Forbidden, "direct-message rooms take no invites")
                    .in_room(&room),
            );
        }
        self.require_member(&room).await?;
        let role = self.ctx.store.role(&room, &user).await?;
        crate::moderation::may_invite(rec.settings, role)
            .map_err(|r| Fail::new(r.code(), r.to_string()).in_room(&room))?;
        if !self.ctx.store.user_exists(&invitee).await? {
            return Err(Fail::new(
                ErrorCode::NoSuchUser,
                format!("there is no user `{invitee}`"),
            )
            .in_room(&room));
        }
        if self.ctx.store.is_banned(&room, &invitee).await? {
            let r = crate::moderation::Refusal::TargetBanned(invitee);
            return Err(Fail::new(r.code(), r.to_string()).in_room(&room));
        }
        if !self.ctx.invites.take(&user, std::time::Instant::now()) {
            return Err(Fail::new(
                ErrorCode::LimitReached,
                format!(
                    "you sent {} invites in the last hour, the most this server allows",
                    self.ctx.config.max_invites_per_hour
                ),
            )
            .in_room(&room));
        }
        self.ctx.store.invite(&room, &invitee).await?;
        let frame = encode(
            &ServerFrame::Invited {
                room,
                by: user.to_string(),
            },
            None,
        );
        self.ctx.broker.publish(Event::User {
            user: invitee.as_str().into(),
            frame: frame.into(),
            except: None,
        });
        self.reply(&ServerFrame::Ok);
        Ok(())
    }

    pub(crate) async fn open_dm(&mut self, other: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        if check_username(&other).is_err() || !self.ctx.store.user_exists(&other).await? {
            return Err(Fail::new(
                ErrorCode::NoSuchUser,
                format!("there is no user `{other}`"),
            ));
        }
        if *user == *other {
            return Err(Fail::new(
                ErrorCode::Forbidden,
                "a direct message needs another user",
            ));
        }
        let rec = self.ctx.store.open_dm(&user, &other).await?;
        let frame = encode(
            &ServerFrame::Invited {
                room: rec.name.clone(),
                by: user.to_string(),
            },
            None,
        );
        self.ctx.broker.publish(Event::User {
            user: other.as_str().into(),
            frame: frame.into(),
            except: None,
        });
        self.reply(&ServerFrame::DmOpened {
            room: rec.name,
            user: other,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_plans() {
        let e = "ep".to_string();
        assert_eq!(plan(None, "ep", 10, 100), Plan::Recent(CatchUp::Recent));
        assert_eq!(plan(Some((7, e.clone())), "ep", 10, 100), Plan::Replay(7));
        assert_eq!(
            plan(Some((10, e.clone())), "ep", 10, 100),
            Plan::Replay(10),
            "nothing missed"
        );
        assert_eq!(
            plan(Some((0, e.clone())), "ep", 100, 100),
            Plan::Replay(0),
            "exactly the limit"
        );
        assert_eq!(
            plan(Some((0, e.clone())), "ep", 101, 100),
            Plan::Recent(CatchUp::Reload),
            "gap too large"
        );
        assert_eq!(
            plan(Some((11, e.clone())), "ep", 10, 100),
            Plan::Recent(CatchUp::Reload),
            "ahead of the room"
        );
        assert_eq!(
            plan(Some((7, "old".into())), "ep", 10, 100),
            Plan::Recent(CatchUp::Reload),
            "other epoch"
        );
    }
}
