//! What a room's members and owner do beyond talking: page through the members, delete the
//! room, turn an invite down. Also the member list a `joined` carries.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::limits::MEMBER_PAGE_MAX;
use chat_proto::{ErrorCode, Member, RoomKind, ServerFrame, Status};

use crate::broker::Event;
use crate::session::{Fail, Outcome, Session};
use crate::store::{RoomRecord, Store, StoreError};

impl Session {
    pub(crate) async fn members_page(
        &mut self,
        room: String,
        after: Option<String>,
        limit: Option<u64>,
    ) -> Outcome {
        self.require_member(&room).await?;
        let limit = super::page_limit(limit, MEMBER_PAGE_MAX, MEMBER_PAGE_MAX);
        let room_for_it = self.reserve_reply().await.map_err(|f| f.in_room(&room))?;
        let mut users = self
            .ctx
            .store
            .members(&room, after.as_deref(), limit + 1)
            .await?;
        let next = super::cut_page(&mut users, limit, String::clone);
        let statuses = self.ctx.hub.statuses(&room, &users);
        let mut members: Vec<Member> = users
            .into_iter()
            .zip(statuses)
            .map(|(user, status)| Member {
                user,
                status,
                role: None,
            })
            .collect();
        if self.version >= 2 {
            fill_roles(self.ctx.store.as_ref(), &room, &mut members).await?;
        }
        self.reply_reserved(
            &ServerFrame::MemberList {
                room,
                members,
                next,
            },
            room_for_it,
        );
        Ok(())
    }

    pub(crate) async fn delete_room(&mut self, room: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        let rec = self.visible_room(&room).await?;
        if rec.kind == RoomKind::Dm {
            return Err(Fail::new(
                ErrorCode::Forbidden,
                "direct-message rooms cannot be deleted",
            )
            .in_room(&room));
        }
        if rec.owner.as_deref() != Some(&*user) {
            return Err(
                Fail::new(ErrorCode::Forbidden, "only the room's owner may delete it")
                    .in_room(&room),
            );
        }
        if !self.ctx.store.delete_room(&room).await? {
            return Err(super::rooms::no_such_room(&room));
        }
        tracing::info!(room = %room, by = %user, "room deleted");
        self.ctx.broker.publish(Event::RoomDeleted {
            room: room.as_str().into(),
        });
        self.reply(&ServerFrame::Ok);
        Ok(())
    }

    pub(crate) async fn decline(&mut self, room: String) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        match self.ctx.store.decline_invite(&room, &user).await {
            Ok(true) => {
                self.reply(&ServerFrame::Ok);
                Ok(())
            }
            // No invite, or no such room: the same answer, so a decline tells nothing about
            // rooms the user was never invited to.
            Ok(false) | Err(StoreError::NotFound) => Err(Fail::new(
                ErrorCode::NotInvited,
                "you have no invite to this room",
            )
            .in_room(&room)),
            Err(e) => Err(e.into()),
        }
    }
}

/// The members a `joined` carries, and whether that is all of them: every member (sorted by
/// name) up to [`MEMBER_PAGE_MAX`]; in a larger room those present first, then others by name,
/// and the client pages through the rest with `members`.
pub(crate) async fn joined_members(
    store: &dyn Store,
    rec: &RoomRecord,
    statuses: HashMap<Arc<str>, Status>,
) -> Result<(Vec<Member>, u64, bool), StoreError> {
    let page = MEMBER_PAGE_MAX as usize;
    let stored = store.members(&rec.name, None, MEMBER_PAGE_MAX + 1).await?;
    if stored.len() <= page && statuses.len() <= page {
        let members = member_list(stored, statuses);
        let n = members.len() as u64;
        return Ok((members, n, true));
    }
    let count = store.member_count(&rec.name).await?;
    let mut present: Vec<Member> = statuses
        .into_iter()
        .map(|(user, status)| Member {
            user: user.to_string(),
            status,
            role: None,
        })
        .collect();
    present.sort_by(|a, b| a.user.cmp(&b.user));
    present.truncate(page);
    let known: std::collections::HashSet<String> = present.iter().map(|m| m.user.clone()).collect();
    let room_left = page - present.len();
    present.extend(
        stored
            .into_iter()
            .filter(|u| !known.contains(u))
            .take(room_left)
            .map(|user| Member {
                user,
                status: Status::Offline,
                role: None,
            }),
    );
    Ok((present, count, false))
}

/// Protocol 2: each listed member's role (a page of them: one lookup per name). A user listed
/// as present who is no longer a member (a race with `leave`) shows as a member.
pub(crate) async fn fill_roles(
    store: &dyn Store,
    room: &str,
    members: &mut [Member],
) -> Result<(), StoreError> {
    let names: Vec<String> = members.iter().map(|m| m.user.clone()).collect();
    let roles = store.roles_of(room, &names).await?;
    for m in members {
        m.role = Some(
            roles
                .get(&m.user)
                .copied()
                .unwrap_or(chat_proto::Role::Member),
        );
    }
    Ok(())
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
            role: None,
        })
        .collect();
    if !statuses.is_empty() {
        members.extend(statuses.into_iter().map(|(user, status)| Member {
            user: user.to_string(),
            status,
            role: None,
        }));
        members.sort_by(|a, b| a.user.cmp(&b.user));
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

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
