//! Roles, bans and room settings on PostgreSQL: the checks and effects of the moderation changes
//! (inside the change's transaction, after the room row is locked, so they see every change
//! committed before from any node) and the reads beside them.

use std::collections::HashMap;

use chat_proto::{BanInfo, EventKind, Role, RoomKind, RoomSettings};
use deadpool_postgres::{GenericClient, Transaction};

use super::log::ApplyError;
use super::queries::{room_id, user_id};
use super::{PgStore, db_err, deadline};
use crate::moderation::{self, Act, Refusal};
use crate::store::log::{parse_role, role_str};
use crate::store::{Change, StoreError};

/// A member's role: the room's owner is `owner`, the rest as `members.role` says.
const ROLE_SQL: &str = "SELECT CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
     FROM members m JOIN rooms r ON r.id = m.room_id WHERE m.room_id = $1 AND m.user_id = $2";

pub(super) async fn role_ids(
    c: &impl GenericClient,
    rid: i64,
    uid: i64,
) -> Result<Option<Role>, tokio_postgres::Error> {
    let row = c.query_opt(ROLE_SQL, &[&rid, &uid]).await?;
    Ok(row.map(|r| parse_role(r.get(0)).unwrap_or(Role::Member)))
}

/// The room's kind and settings.
pub(super) async fn room_facts(
    c: &impl GenericClient,
    rid: i64,
) -> Result<(RoomKind, RoomSettings), tokio_postgres::Error> {
    let r = c
        .query_one(
            "SELECT kind, members_set_topic, members_invite FROM rooms WHERE id = $1",
            &[&rid],
        )
        .await?;
    let kind: &str = r.get(0);
    Ok((
        if kind == "dm" {
            RoomKind::Dm
        } else {
            RoomKind::Room
        },
        RoomSettings {
            members_set_topic: r.get(1),
            members_invite: r.get(2),
        },
    ))
}

pub(super) async fn banned_ids(
    c: &impl GenericClient,
    rid: i64,
    uid: i64,
) -> Result<bool, tokio_postgres::Error> {
    let r = c
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM bans WHERE room_id = $1 AND user_id = $2)",
            &[&rid, &uid],
        )
        .await?;
    Ok(r.get(0))
}

async fn uid_of(c: &impl GenericClient, name: &str) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(
        c.query_opt("SELECT id FROM users WHERE name = $1", &[&name])
            .await?
            .map(|r| r.get(0)),
    )
}

/// Decides a moderation change by `uid` (named `actor`): the event to record, `None` when there
/// is nothing to change, or the refusal.
pub(super) async fn decide(
    tx: &Transaction<'_>,
    rid: i64,
    uid: i64,
    actor: &str,
    change: &Change,
) -> Result<Option<EventKind>, ApplyError> {
    let (target, act) = match change {
        Change::Kick { user, .. } => (user, Act::Kick),
        Change::Ban { user, .. } => (user, Act::Ban),
        Change::Unban { user } => (user, Act::Unban),
        Change::SetRole { user, role } => (user, Act::SetRole(*role)),
        _ => unreachable!("decide is for moderation changes"),
    };
    let (kind, _) = room_facts(tx, rid).await?;
    let tuid = uid_of(tx, target).await?;
    let actor_role = role_ids(tx, rid, uid).await?;
    let target_role = match tuid {
        Some(t) => role_ids(tx, rid, t).await?,
        None => None,
    };
    moderation::may(kind, act, actor, actor_role, target, target_role)
        .map_err(|r| ApplyError::Refused(StoreError::Refused(r)))?;
    let Some(tuid) = tuid else {
        return Err(ApplyError::Refused(StoreError::Refused(
            Refusal::NoSuchUser(target.clone()),
        )));
    };
    let user = target.clone();
    Ok(match change {
        Change::Kick { reason, .. } => Some(EventKind::Kick {
            user,
            reason: reason.clone(),
        }),
        Change::Ban { reason, .. } => (!banned_ids(tx, rid, tuid).await?).then(|| EventKind::Ban {
            user,
            reason: reason.clone(),
        }),
        Change::Unban { .. } => banned_ids(tx, rid, tuid)
            .await?
            .then_some(EventKind::Unban { user }),
        Change::SetRole { role, .. } => {
            (target_role != Some(*role)).then_some(EventKind::Role { user, role: *role })
        }
        _ => None,
    })
}

/// What a moderation event changes besides its own row; `uid` is the moderator's id.
pub(super) async fn effects(
    tx: &Transaction<'_>,
    rid: i64,
    uid: i64,
    ts: i64,
    what: &EventKind,
) -> Result<(), tokio_postgres::Error> {
    let target = |user: &str| {
        let user = user.to_owned();
        async move {
            let r = tx
                .query_one("SELECT id FROM users WHERE name = $1", &[&user])
                .await?;
            Ok::<i64, tokio_postgres::Error>(r.get(0))
        }
    };
    let (tuid, remove) = match what {
        EventKind::Kick { user, .. } => (target(user).await?, true),
        EventKind::Ban { user, reason } => {
            let tuid = target(user).await?;
            tx.execute(
                "INSERT INTO bans (room_id, user_id, by_id, ts, reason) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&rid, &tuid, &uid, &ts, reason],
            )
            .await?;
            (tuid, true)
        }
        EventKind::Unban { user } => {
            let tuid = target(user).await?;
            tx.execute(
                "DELETE FROM bans WHERE room_id = $1 AND user_id = $2",
                &[&rid, &tuid],
            )
            .await?;
            (tuid, false)
        }
        EventKind::Role { user, role } => {
            let tuid = target(user).await?;
            if *role == Role::Owner {
                // The owner before stays on as a moderator.
                tx.execute(
                    "UPDATE members SET role = 'moderator' WHERE room_id = $1 AND user_id = $2",
                    &[&rid, &uid],
                )
                .await?;
                tx.execute(
                    "UPDATE rooms SET owner_id = $2 WHERE id = $1",
                    &[&rid, &tuid],
                )
                .await?;
            }
            tx.execute(
                "UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2",
                &[&rid, &tuid, &role_str(*role)],
            )
            .await?;
            (tuid, false)
        }
        _ => return Ok(()),
    };
    if remove {
        for table in ["members", "invites"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE room_id = $1 AND user_id = $2"),
                &[&rid, &tuid],
            )
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn role(s: &PgStore, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
    deadline(async {
        let c = s.conn().await?;
        let rid = room_id(&c, room).await?;
        match uid_of(&c, user).await.map_err(db_err)? {
            Some(uid) => role_ids(&c, rid, uid).await.map_err(db_err),
            None => Ok(None),
        }
    })
    .await
}

pub(super) async fn roles_of(
    s: &PgStore,
    room: &str,
    users: &[String],
) -> Result<HashMap<String, Role>, StoreError> {
    deadline(async {
        let c = s.conn().await?;
        let rid = room_id(&c, room).await?;
        let rows = c
            .query(
                "SELECT u.name, CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
                 FROM members m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = $1 AND u.name = ANY($2)",
                &[&rid, &users],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    parse_role(r.get(1)).unwrap_or(Role::Member),
                )
            })
            .collect())
    })
    .await
}

pub(super) async fn is_banned(s: &PgStore, room: &str, user: &str) -> Result<bool, StoreError> {
    deadline(async {
        let c = s.conn().await?;
        let rid = room_id(&c, room).await?;
        match uid_of(&c, user).await.map_err(db_err)? {
            Some(uid) => banned_ids(&c, rid, uid).await.map_err(db_err),
            None => Ok(false),
        }
    })
    .await
}

pub(super) async fn bans(
    s: &PgStore,
    room: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<BanInfo>, StoreError> {
    deadline(async {
        let c = s.conn().await?;
        let rid = room_id(&c, room).await?;
        let rows = c
            .query(
                "SELECT u.name, b.name, x.ts, x.reason FROM bans x
                 JOIN users u ON u.id = x.user_id JOIN users b ON b.id = x.by_id
                 WHERE x.room_id = $1 AND u.name > $2 ORDER BY u.name LIMIT $3",
                &[&rid, &after.unwrap_or(""), &i64::from(limit)],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| BanInfo {
                user: r.get(0),
                by: r.get(1),
                ts: r.get(2),
                reason: r.get(3),
            })
            .collect())
    })
    .await
}

pub(super) async fn configure_room(
    s: &PgStore,
    room: &str,
    user: &str,
    members_set_topic: Option<bool>,
    members_invite: Option<bool>,
) -> Result<RoomSettings, StoreError> {
    deadline(async {
        let c = s.conn().await?;
        let rid = room_id(&c, room).await?;
        let uid = user_id(&c, user).await?;
        let (kind, _) = room_facts(&c, rid).await.map_err(db_err)?;
        if kind == RoomKind::Dm {
            return Err(StoreError::Refused(Refusal::DirectMessage));
        }
        // One statement: the owner check and the change cannot be split by a transfer.
        let row = c
            .query_opt(
                "UPDATE rooms SET members_set_topic = COALESCE($3, members_set_topic),
                    members_invite = COALESCE($4, members_invite)
                 WHERE id = $1 AND owner_id = $2
                    AND EXISTS(SELECT 1 FROM members m WHERE m.room_id = $1 AND m.user_id = $2)
                 RETURNING members_set_topic, members_invite",
                &[&rid, &uid, &members_set_topic, &members_invite],
            )
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => Ok(RoomSettings {
                members_set_topic: r.get(0),
                members_invite: r.get(1),
            }),
            None => Err(StoreError::Refused(Refusal::NotOwner)),
        }
    })
    .await
}
