//! Protocol 2's moderation frames: kick, ban, unban, set_role, configure_room and bans. Who may
//! is decided by the store inside the change's transaction (`crate::moderation`); here are the
//! frames' own checks and the answers.

use chat_proto::limits::{MEMBER_PAGE_MAX, check_reason, check_username};
use chat_proto::{ErrorCode, Role, ServerFrame};

use crate::moderation::Refusal;
use crate::session::{Fail, Outcome, Session};
use crate::store::{Change, StoreError};

/// A reason as the log stores it: checked, and blank is none.
fn reason(room: &str, reason: Option<String>) -> Result<Option<String>, Fail> {
    let Some(r) = reason.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    check_reason(&r).map_err(|m| Fail::new(ErrorCode::InvalidReason, m).in_room(room))?;
    Ok(Some(r))
}

/// A target name that cannot be a user is no user (rather than an invalid frame).
fn target(room: &str, user: &str) -> Outcome {
    check_username(user).map_err(|_| {
        Fail::new(ErrorCode::NoSuchUser, format!("there is no user `{user}`")).in_room(room)
    })
}

impl Session {
    /// Kick or ban: the event is in the room's log, and its completion makes every connection
    /// of the user leave the room (with `left` saying why), on every node.
    pub(crate) async fn remove(
        &mut self,
        room: String,
        user: String,
        why: Option<String>,
        ban: bool,
    ) -> Outcome {
        self.authed()?;
        let why = reason(&room, why)?;
        target(&room, &user)?;
        self.visible_room(&room).await?;
        let change = if ban {
            Change::Ban { user, reason: why }
        } else {
            Change::Kick { user, reason: why }
        };
        self.change(&room, change, true).await.map(drop)
    }

    pub(crate) async fn unban(&mut self, room: String, user: String) -> Outcome {
        self.authed()?;
        target(&room, &user)?;
        self.visible_room(&room).await?;
        self.change(&room, Change::Unban { user }, true)
            .await
            .map(drop)
    }

    pub(crate) async fn set_role(&mut self, room: String, user: String, role: Role) -> Outcome {
        self.authed()?;
        target(&room, &user)?;
        self.visible_room(&room).await?;
        self.change(&room, Change::SetRole { user, role }, true)
            .await
            .map(drop)
    }

    pub(crate) async fn configure_room(
        &mut self,
        room: String,
        members_set_topic: Option<bool>,
        members_invite: Option<bool>,
    ) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        self.visible_room(&room).await?;
        match self
            .ctx
            .store
            .configure_room(&room, &user, members_set_topic, members_invite)
            .await
        {
            Ok(_) => {
                self.reply(&ServerFrame::Ok);
                Ok(())
            }
            Err(StoreError::Refused(r)) => Err(Fail::new(r.code(), r.to_string()).in_room(&room)),
            Err(StoreError::NotFound) => Err(super::rooms::no_such_room(&room)),
            Err(e) => Err(Fail::from(e).in_room(&room)),
        }
    }

    /// A page of the room's bans, for its moderators.
    pub(crate) async fn bans(
        &mut self,
        room: String,
        after: Option<String>,
        limit: Option<u64>,
    ) -> Outcome {
        let user = self.authed()?.reg.user.clone();
        self.visible_room(&room).await?;
        if !crate::moderation::moderates(self.ctx.store.role(&room, &user).await?) {
            let r = Refusal::NotModerator;
            return Err(Fail::new(r.code(), r.to_string()).in_room(&room));
        }
        let limit = super::page_limit(limit, MEMBER_PAGE_MAX, MEMBER_PAGE_MAX);
        let room_for_it = self.reserve_reply().await.map_err(|f| f.in_room(&room))?;
        let mut bans = self
            .ctx
            .store
            .bans(&room, after.as_deref(), limit + 1)
            .await?;
        let next = super::cut_page(&mut bans, limit, |b| b.user.clone());
        self.reply_reserved(&ServerFrame::BanList { room, bans, next }, room_for_it);
        Ok(())
    }
}
