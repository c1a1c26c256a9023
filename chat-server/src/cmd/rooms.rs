//! list_rooms, create_room, join, leave, set_topic, invite, open_dm.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::limits::{HISTORY_PAGE_MAX, check_room_name, check_topic, check_username};
use chat_proto::{
    CatchUp, ErrorCode, Member, RoomInfo, RoomKind, ServerFrame, Status, Visibility, encode,
};

use crate::broker::Event;
use crate::reply::{self, Keep};
use crate::session::{Fail, Outcome, Session};
use crate::store::{RoomRecord, StoreError};

fn no_such_room(room: &str) -> Fail {
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
    async fn room_record(&self, room: &str) -> Result<RoomRecord, Fail> {
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

    pub(crate) async fn require_member(&self, room: &str) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        self.room_record(room).await?;
        if self.ctx.store.is_member(room, &user).await? {
            Ok(())
        } else {
            Err(not_member(room))
        }
    }

    pub(crate) async fn list_rooms(&mut self) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        let rooms = self.ctx.store.rooms_for(&user).await?;
        self.reply(&ServerFrame::RoomList { rooms });
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
        let rec = self.room_record(&room).await?;
        let store = &self.ctx.store;
        if !store.is_member(&room, &user).await? {
            if rec.visibility == Visibility::Private && !store.is_invited(&room, &user).await? {
                return Err(Fail::new(
                    ErrorCode::NotInvited,
                    "this room is private: you need an invite",
                )
                .in_room(&room));
            }
            store.add_member(&room, &user).await?;
        }
        let authed = self.authed()?;
        let (statuses, again) = self.ctx.hub.subscribe(&room, &authed.reg);
        match self.join_snapshot(&rec, since, statuses).await {
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
        let members = member_list(store.members(room).await?, statuses);
        let (catch_up, messages, mut after) =
            match plan(since, &rec.epoch, latest, self.ctx.config.max_replay) {
                Plan::Recent(catch_up) => {
                    let (mut messages, _) = store
                        .history_before(room, Some(latest + 1), self.ctx.config.history_on_join)
                        .await?;
                    reply::cap(&mut messages, Keep::Newest);
                    (catch_up, messages, latest)
                }
                Plan::Replay(seq) => {
                    let mut page = store
                        .messages_between(room, seq, latest, HISTORY_PAGE_MAX)
                        .await?;
                    reply::cap(&mut page, Keep::Oldest);
                    let last = page.last().map_or(seq, |m| m.seq);
                    (CatchUp::Replay, page, last)
                }
            };
        let joined = ServerFrame::Joined {
            room: room.to_owned(),
            epoch: rec.epoch.clone(),
            latest_seq: latest,
            topic: rec.topic.clone(),
            visibility: rec.visibility,
            members,
            catch_up,
            messages,
            complete: after >= latest,
        };
        self.reply_reserved(&joined, room_for_it);
        // Each page waits for room after the one before: a joiner that reads slowly slows its
        // own replay down instead of the server queueing every page at once.
        while after < latest {
            let room_for_it = self.reserve_reply().await?;
            let mut page = store
                .messages_between(room, after, latest, HISTORY_PAGE_MAX)
                .await?;
            reply::cap(&mut page, Keep::Oldest);
            let Some(last) = page.last().map(|m| m.seq) else {
                break;
            };
            after = last;
            self.outbox.push_reserved(
                encode(
                    &ServerFrame::Replay {
                        room: room.to_owned(),
                        messages: page,
                        complete: after >= latest,
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
        let (user, conn) = {
            let a = self.authed()?;
            (a.reg.user.clone(), a.reg.id)
        };
        self.room_record(&room).await?;
        if !self.ctx.store.remove_member(&room, &user).await? {
            return Err(not_member(&room));
        }
        self.ctx.broker.publish(Event::Left {
            room: room.as_str().into(),
            user,
            except: Some(conn),
        });
        self.reply(&ServerFrame::Left { room });
        Ok(())
    }

    pub(crate) async fn set_topic(&mut self, room: String, topic: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        check_topic(&topic).map_err(|m| Fail::new(ErrorCode::InvalidTopic, m).in_room(&room))?;
        self.require_member(&room).await?;
        self.ctx.store.set_topic(&room, &topic).await?;
        let frame = encode(
            &ServerFrame::Topic {
                room: room.clone(),
                topic,
                by: user.to_string(),
            },
            None,
        );
        self.ctx.broker.publish(Event::Room {
            room: room.as_str().into(),
            seq: None,
            frame: frame.into(),
        });
        self.reply(&ServerFrame::Ok);
        Ok(())
    }

    pub(crate) async fn invite(&mut self, room: String, invitee: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        let rec = self.room_record(&room).await?;
        if rec.kind == RoomKind::Dm {
            return Err(
                Fail::new(ErrorCode::Forbidden, "direct-message rooms take no invites")
                    .in_room(&room),
            );
        }
        self.require_member(&room).await?;
        if !self.ctx.store.user_exists(&invitee).await? {
            return Err(Fail::new(
                ErrorCode::NoSuchUser,
                format!("there is no user `{invitee}`"),
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
        });
        self.reply(&ServerFrame::DmOpened {
            room: rec.name,
            user: other,
        });
        Ok(())
    }
}

/// The room's members (sorted by name, from the store) with the statuses of those present;
/// a present user the store did not list (a race with `leave`) is added in order. Linear in the
/// room's size: a join storm makes this run once per joiner over thousands of members.
fn member_list(stored: Vec<String>, mut statuses: HashMap<Arc<str>, Status>) -> Vec<Member> {
    let mut members: Vec<Member> = stored
        .into_iter()
        .map(|user| Member {
            status: statuses.remove(user.as_str()).unwrap_or(Status::Offline),
            user,
        })
        .collect();
    if !statuses.is_empty() {
        members.extend(statuses.into_iter().map(|(user, status)| Member {
            user: user.to_string(),
            status,
        }));
        members.sort_by(|a, b| a.user.cmp(&b.user));
    }
    members
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

    #[test]
    fn member_list_keeps_store_order_and_adds_present_users_it_missed() {
        let statuses: HashMap<Arc<str>, Status> = [
            (Arc::from("bob"), Status::Away),
            (Arc::from("carl"), Status::Online),
        ]
        .into();
        let got: Vec<(String, Status)> =
            member_list(vec!["alice".into(), "bob".into(), "dora".into()], statuses)
                .into_iter()
                .map(|m| (m.user, m.status))
                .collect();
        assert_eq!(
            got,
            [
                ("alice".into(), Status::Offline),
                ("bob".into(), Status::Away),
                ("carl".into(), Status::Online),
                ("dora".into(), Status::Offline),
            ]
        );
    }
}
