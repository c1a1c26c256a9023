//! Roles, bans and room settings on SQLite: the checks and effects of the moderation changes
//! (run on the writer thread, in the change's savepoint) and the reads beside them.

use std::collections::HashMap;

use chat_proto::{BanInfo, EventKind, Role, RoomKind, RoomSettings};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Writer, room_id, user_id};
use crate::moderation::{self, Act, Refusal};
use crate::store::log::{parse_role, role_str};
use crate::store::{Change, StoreError};

/// A member's role: the room's owner is `owner`, the rest as `members.role` says.
const ROLE_SQL: &str = "SELECT CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
     FROM members m JOIN rooms r ON r.id = m.room_id WHERE m.room_id = ?1 AND m.user_id = ?2";

pub(super) fn role_ids(conn: &Connection, rid: i64, uid: i64) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .prepare_cached(ROLE_SQL)?
        .query_row(params![rid, uid], |r| r.get(0))
        .optional()?;
    Ok(role
        .as_deref()
        .map(|r| parse_role(r).unwrap_or(Role::Member)))
}

/// The room's kind and settings.
pub(super) fn room_facts(
    conn: &Connection,
    rid: i64,
) -> Result<(RoomKind, RoomSettings), StoreError> {
    Ok(conn
        .prepare_cached("SELECT kind, members_set_topic, members_invite FROM rooms WHERE id = ?1")?
        .query_row([rid], |r| {
            let kind: String = r.get(0)?;
            Ok((
                if kind == "dm" {
                    RoomKind::Dm
                } else {
                    RoomKind::Room
                },
                RoomSettings {
                    members_set_topic: r.get(1)?,
                    members_invite: r.get(2)?,
                },
            ))
        })?)
}

pub(super) fn banned_ids(conn: &Connection, rid: i64, uid: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM bans WHERE room_id = ?1 AND user_id = ?2)")?
        .query_row(params![rid, uid], |r| r.get(0))?)
}

/// Decides a moderation change by `uid` (named `actor`) against what is committed: the event to
/// record, `None` when there is nothing to change, or the refusal.
pub(super) fn decide(
    w: &mut Writer,
    rid: i64,
    uid: i64,
    actor: &str,
    change: &Change,
) -> Result<Option<EventKind>, StoreError> {
    let (target, act) = match change {
        Change::Kick { user, .. } => (user, Act::Kick),
        Change::Ban { user, .. } => (user, Act::Ban),
        Change::Unban { user } => (user, Act::Unban),
        Change::SetRole { user, role } => (user, Act::SetRole(*role)),
        _ => unreachable!("decide is for moderation changes"),
    };
    let (kind, _) = room_facts(&w.conn, rid)?;
    let tuid = match w.user_id(target) {
        Ok(id) => Some(id),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let actor_role = role_ids(&w.conn, rid, uid)?;
    let target_role = match tuid {
        Some(t) => role_ids(&w.conn, rid, t)?,
        None => None,
    };
    moderation::may(kind, act, actor, actor_role, target, target_role)
        .map_err(StoreError::Refused)?;
    let Some(tuid) = tuid else {
        return Err(StoreError::Refused(Refusal::NoSuchUser(target.clone())));
    };
    let user = target.clone();
    Ok(match change {
        Change::Kick { reason, .. } => Some(EventKind::Kick {
            user,
            reason: reason.clone(),
        }),
        Change::Ban { reason, .. } => (!banned_ids(&w.conn, rid, tuid)?).then(|| EventKind::Ban {
            user,
            reason: reason.clone(),
        }),
        Change::Unban { .. } => {
            banned_ids(&w.conn, rid, tuid)?.then_some(EventKind::Unban { user })
        }
        Change::SetRole { role, .. } => {
            (target_role != Some(*role)).then_some(EventKind::Role { user, role: *role })
        }
        _ => None,
    })
}

/// What a moderation event changes besides its own row; `uid` is the moderator's id.
pub(super) fn effects(
    w: &mut Writer,
    rid: i64,
    uid: i64,
    ts: i64,
    what: &EventKind,
) -> Result<(), StoreError> {
    let (user, remove) = match what {
        EventKind::Kick { user, .. } => (user, true),
        EventKind::Ban { user, reason } => {
            let tuid = w.user_id(user)?;
            w.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO bans (room_id, user_id, by_id, ts, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![rid, tuid, uid, ts, reason])?;
            (user, true)
        }
        EventKind::Unban { user } => {
            let tuid = w.user_id(user)?;
            w.conn
                .prepare_cached("DELETE FROM bans WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![rid, tuid])?;
            (user, false)
        }
        EventKind::Role { user, role } => {
            let tuid = w.user_id(user)?;
            let c = &w.conn;
            if *role == Role::Owner {
                // The owner before stays on as a moderator.
                c.prepare_cached(
                    "UPDATE members SET role = 'moderator' WHERE room_id = ?1 AND user_id = ?2",
                )?
                .execute(params![rid, uid])?;
                c.prepare_cached("UPDATE rooms SET owner_id = ?2 WHERE id = ?1")?
                    .execute(params![rid, tuid])?;
            }
            c.prepare_cached("UPDATE members SET role = ?3 WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![rid, tuid, role_str(*role)])?;
            (user, false)
        }
        _ => return Ok(()),
    };
    if remove {
        let tuid = w.user_id(user)?;
        for sql in [
            "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2",
            "DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2",
        ] {
            w.conn.prepare_cached(sql)?.execute(params![rid, tuid])?;
        }
    }
    Ok(())
}

pub(super) fn role(conn: &Connection, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
    let rid = room_id(conn, room)?;
    match user_id(conn, user) {
        Ok(uid) => role_ids(conn, rid, uid),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn roles_of(
    conn: &Connection,
    room: &str,
    users: &[String],
) -> Result<HashMap<String, Role>, StoreError> {
    let rid = room_id(conn, room)?;
    let mut stmt = conn.prepare_cached(
        "SELECT CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
         FROM members m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = m.user_id
         WHERE m.room_id = ?1 AND u.name = ?2",
    )?;
    let mut out = HashMap::new();
    for user in users {
        let role: Option<String> = stmt
            .query_row(params![rid, user], |r| r.get(0))
            .optional()?;
        if let Some(role) = role {
            out.insert(user.clone(), parse_role(&role).unwrap_or(Role::Member));
        }
    }
    Ok(out)
}

pub(super) fn is_banned(conn: &Connection, room: &str, user: &str) -> Result<bool, StoreError> {
    let rid = room_id(conn, room)?;
    match user_id(conn, user) {
        Ok(uid) => banned_ids(conn, rid, uid),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn bans(
    conn: &Connection,
    room: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<BanInfo>, StoreError> {
    let rid = room_id(conn, room)?;
    let mut stmt = conn.prepare_cached(
        "SELECT u.name, b.name, x.ts, x.reason FROM bans x
         JOIN users u ON u.id = x.user_id JOIN users b ON b.id = x.by_id
         WHERE x.room_id = ?1 AND u.name > ?2 ORDER BY u.name LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![rid, after, limit], |r| {
        Ok(BanInfo {
            user: r.get(0)?,
            by: r.get(1)?,
            ts: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn configure_room(
    conn: &Connection,
    room: &str,
    user: &str,
    members_set_topic: Option<bool>,
    members_invite: Option<bool>,
) -> Result<RoomSettings, StoreError> {
    let rid = room_id(conn, room)?;
    let uid = user_id(conn, user)?;
    let (kind, before) = room_facts(conn, rid)?;
    if kind == RoomKind::Dm {
        return Err(StoreError::Refused(Refusal::DirectMessage));
    }
    let owner: Option<i64> =
        conn.query_row("SELECT owner_id FROM rooms WHERE id = ?1", [rid], |r| {
            r.get(0)
        })?;
    if owner != Some(uid) || role_ids(conn, rid, uid)?.is_none() {
        return Err(StoreError::Refused(Refusal::NotOwner));
    }
    let after = RoomSettings {
        members_set_topic: members_set_topic.unwrap_or(before.members_set_topic),
        members_invite: members_invite.unwrap_or(before.members_invite),
    };
    conn.execute(
        "UPDATE rooms SET members_set_topic = ?2, members_invite = ?3 WHERE id = ?1",
        params![rid, after.members_set_topic, after.members_invite],
    )?;
    Ok(after)
}
