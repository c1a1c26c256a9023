//! The room log on SQLite: applying changes (on the writer thread, each in its savepoint),
//! folded history, replays, and read state. See `store/log.rs` for the row layout.

use chat_proto::limits::{UNREAD_COUNT_MAX, mentions};
use chat_proto::{EventKind, HistoryMessage, Reaction, ReadState, RoomEvent};
use rusqlite::{Connection, OptionalExtension, params};

use super::moderation::{self as rules, banned_ids, role_ids, room_facts};
use super::{Writer, room_id, user_id};
use crate::clock::now_ms;
use crate::moderation::{self, Refusal};
use crate::store::log::{self, Row};
use crate::store::{Applied, Change, MessageInfo, NewEvent, StoreError, Viewer};

/// The columns [`row`] reads, from `messages m JOIN users u`.
pub(super) const ROW_COLUMNS: &str =
    "m.seq, m.ts, u.name, m.kind, m.client_id, m.body, m.target, m.reply_to, m.subject";

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        ts: r.get(1)?,
        from: r.get(2)?,
        kind: r.get(3)?,
        client_id: r.get(4)?,
        body: r.get(5)?,
        target: r.get(6)?,
        reply_to: r.get(7)?,
        subject: r.get(8)?,
    })
}

/// Records who `body` mentions (existing users only), for mention counts.
pub(super) fn store_mentions(
    w: &mut Writer,
    rid: i64,
    seq: i64,
    body: &str,
) -> Result<(), StoreError> {
    if !body.contains('@') {
        return Ok(());
    }
    for name in mentions(body) {
        let uid = match w.user_id(name) {
            Ok(id) => id,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        w.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO mentions (room_id, user_id, seq) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![rid, uid, seq])?;
    }
    Ok(())
}

/// The target message's author, kind and deleted flag.
fn target(conn: &Connection, rid: i64, seq: u64) -> Result<(i64, i16, bool), StoreError> {
    conn.prepare_cached(
        "SELECT user_id, kind, deleted FROM messages WHERE room_id = ?1 AND seq = ?2",
    )?
    .query_row(params![rid, seq as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0))
    })
    .optional()?
    .filter(|t| t.1 == log::MESSAGE)
    .ok_or(StoreError::NoSuchMessage)
}

/// Applies one change and records its event; runs in the job's savepoint, so a failure undoes
/// it whole. Validity is checked here, against what is committed before it, so no event is
/// stored (and no seq taken) for a change that cannot happen.
pub(super) fn apply_one(w: &mut Writer, ev: &NewEvent) -> Result<Applied, StoreError> {
    let uid = w.user_id(&ev.from)?;
    let (rid, last) = w.room_seq(&ev.room)?;
    let what = match &ev.change {
        Change::Edit { target: t, body } => {
            let (author, _, deleted) = target(&w.conn, rid, *t)?;
            if deleted {
                return Err(StoreError::NoSuchMessage);
            }
            if author != uid {
                return Err(StoreError::NotAllowed);
            }
            EventKind::Edit {
                target: *t,
                body: body.clone(),
            }
        }
        Change::Delete { target: t } => {
            let (author, _, deleted) = target(&w.conn, rid, *t)?;
            if author != uid {
                let (kind, _) = room_facts(&w.conn, rid)?;
                if !moderation::may_delete_others(kind, role_ids(&w.conn, rid, uid)?) {
                    return Err(StoreError::NotAllowed);
                }
            }
            if deleted {
                return Ok(nothing(ev));
            }
            EventKind::Delete { target: *t }
        }
        Change::React { target: t, emoji } => {
            let (_, _, deleted) = target(&w.conn, rid, *t)?;
            if deleted {
                return Err(StoreError::NoSuchMessage);
            }
            let had = reaction_of(&w.conn, rid, *t, uid)?;
            if had.as_deref() == Some(emoji.as_str()) {
                return Ok(nothing(ev));
            }
            EventKind::React {
                target: *t,
                emoji: emoji.clone(),
                replaces: had,
            }
        }
        Change::Unreact { target: t, emoji } => {
            target(&w.conn, rid, *t)?;
            if reaction_of(&w.conn, rid, *t, uid)?.as_deref() != Some(emoji.as_str()) {
                return Ok(nothing(ev));
            }
            EventKind::Unreact {
                target: *t,
                emoji: emoji.clone(),
            }
        }
        Change::Topic { topic } => {
            let (kind, settings) = room_facts(&w.conn, rid)?;
            moderation::may_set_topic(kind, settings, role_ids(&w.conn, rid, uid)?)
                .map_err(StoreError::Refused)?;
            EventKind::Topic {
                topic: topic.clone(),
            }
        }
        Change::Kick { .. }
        | Change::Ban { .. }
        | Change::Unban { .. }
        | Change::SetRole { .. } => match rules::decide(w, rid, uid, &ev.from, &ev.change)? {
            Some(what) => what,
            None => return Ok(nothing(ev)),
        },
        Change::Join => {
            let member: bool = w
                .conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row(params![rid, uid], |r| r.get(0))?;
            if member {
                return Ok(nothing(ev));
            }
            if banned_ids(&w.conn, rid, uid)? {
                return Err(StoreError::Refused(Refusal::Banned));
            }
            EventKind::Join
        }
        Change::Leave => {
            let member: bool = w
                .conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row(params![rid, uid], |r| r.get(0))?;
            // An invite does not outlive the membership it led to (nor a leave without one).
            w.conn
                .prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![rid, uid])?;
            if !member {
                return Ok(nothing(ev));
            }
            EventKind::Leave
        }
    };
    let seq = last + 1;
    let ts = now_ms();
    let (kind, tgt, body, subject) = log::columns(&what);
    w.conn
        .prepare_cached(
            "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, kind, target, subject)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            rid,
            seq,
            uid,
            log::event_client_id(rid, seq),
            body,
            ts,
            kind,
            tgt,
            subject
        ])?;
    effects(w, rid, uid, seq, ts, &what)?;
    w.rooms.insert(ev.room.clone(), (rid, seq));
    Ok(Applied {
        room: ev.room.clone(),
        event: Some(RoomEvent {
            seq: seq as u64,
            ts,
            from: ev.from.clone(),
            what,
        }),
    })
}

fn nothing(ev: &NewEvent) -> Applied {
    Applied {
        room: ev.room.clone(),
        event: None,
    }
}

fn reaction_of(
    conn: &Connection,
    rid: i64,
    seq: u64,
    uid: i64,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT emoji FROM reactions WHERE room_id = ?1 AND seq = ?2 AND user_id = ?3",
        )?
        .query_row(params![rid, seq as i64, uid], |r| r.get(0))
        .optional()?)
}

/// What an event changes besides its own row.
fn effects(
    w: &mut Writer,
    rid: i64,
    uid: i64,
    seq: i64,
    ts: i64,
    what: &EventKind,
) -> Result<(), StoreError> {
    let c = &w.conn;
    match what {
        EventKind::Edit { target, body } => {
            c.prepare_cached(
                "UPDATE messages SET body = ?3, edited_ts = ?4 WHERE room_id = ?1 AND seq = ?2",
            )?
            .execute(params![rid, *target as i64, body, ts])?;
            c.prepare_cached("DELETE FROM mentions WHERE room_id = ?1 AND seq = ?2")?
                .execute(params![rid, *target as i64])?;
            let body = body.clone();
            store_mentions(w, rid, *target as i64, &body)?;
        }
        EventKind::Delete { target } => {
            let t = *target as i64;
            // The body goes from storage, with every edit's copy of it.
            c.prepare_cached(
                "UPDATE messages SET body = '', deleted = 1 WHERE room_id = ?1 AND seq = ?2",
            )?
            .execute(params![rid, t])?;
            c.prepare_cached(
                "UPDATE messages SET body = '' WHERE room_id = ?1 AND target = ?2 AND kind = ?3",
            )?
            .execute(params![rid, t, log::EDIT])?;
            c.prepare_cached("DELETE FROM reactions WHERE room_id = ?1 AND seq = ?2")?
                .execute(params![rid, t])?;
            c.prepare_cached("DELETE FROM mentions WHERE room_id = ?1 AND seq = ?2")?
                .execute(params![rid, t])?;
        }
        EventKind::React { target, emoji, .. } => {
            c.prepare_cached(
                "INSERT INTO reactions (room_id, seq, user_id, emoji) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (room_id, seq, user_id) DO UPDATE SET emoji = excluded.emoji",
            )?
            .execute(params![rid, *target as i64, uid, emoji])?;
        }
        EventKind::Unreact { target, .. } => {
            c.prepare_cached(
                "DELETE FROM reactions WHERE room_id = ?1 AND seq = ?2 AND user_id = ?3",
            )?
            .execute(params![rid, *target as i64, uid])?;
        }
        EventKind::Topic { topic } => {
            c.prepare_cached("UPDATE rooms SET topic = ?2 WHERE id = ?1")?
                .execute(params![rid, topic])?;
        }
        EventKind::Join => {
            // The invite is used up by the join it allowed; what was said before the join is
            // not unread for the newcomer.
            c.prepare_cached("DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![rid, uid])?;
            c.prepare_cached("INSERT OR IGNORE INTO members (room_id, user_id) VALUES (?1, ?2)")?
                .execute(params![rid, uid])?;
            c.prepare_cached(
                "INSERT INTO read_state (user_id, room_id, read_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, room_id) DO UPDATE SET read_seq = MAX(read_seq, excluded.read_seq)",
            )?
            .execute(params![uid, rid, seq])?;
        }
        EventKind::Leave => {
            c.prepare_cached("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")?
                .execute(params![rid, uid])?;
        }
        EventKind::Kick { .. }
        | EventKind::Ban { .. }
        | EventKind::Unban { .. }
        | EventKind::Role { .. } => rules::effects(w, rid, uid, ts, what)?,
        EventKind::Message { .. } => {}
    }
    Ok(())
}

/// Folded messages from a query over `messages m JOIN users u` selecting [`MSG_COLUMNS`].
pub(super) const MSG_COLUMNS: &str =
    "m.seq, m.client_id, u.name, m.body, m.ts, m.reply_to, m.edited_ts, m.deleted";

pub(super) fn folded_rows(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(HistoryMessage {
            seq: r.get::<_, i64>(0)? as u64,
            id: r.get(1)?,
            from: r.get(2)?,
            body: r.get(3)?,
            ts: r.get(4)?,
            reply_to: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
            edited: r.get(6)?,
            deleted: r.get::<_, i64>(7)? != 0,
            reactions: Vec::new(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Fills in the reaction counts of `page` (ascending seqs) as `viewer` sees them.
pub(super) fn add_reactions(
    conn: &Connection,
    rid: i64,
    page: &mut [HistoryMessage],
    viewer: &str,
) -> Result<(), StoreError> {
    let (Some(lo), Some(hi)) = (page.first().map(|m| m.seq), page.last().map(|m| m.seq)) else {
        return Ok(());
    };
    let me = user_id(conn, viewer).unwrap_or(-1);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, emoji, COUNT(*), MAX(user_id = ?4) FROM reactions
         WHERE room_id = ?1 AND seq >= ?2 AND seq <= ?3 GROUP BY seq, emoji",
    )?;
    let rows = stmt.query_map(params![rid, lo as i64, hi as i64, me], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            Reaction {
                emoji: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
                me: r.get::<_, i64>(3)? != 0,
            },
        ))
    })?;
    for row in rows {
        let (seq, reaction) = row?;
        if let Ok(i) = page.binary_search_by_key(&seq, |m| m.seq) {
            page[i].reactions.push(reaction);
        }
    }
    for m in page.iter_mut() {
        chat_proto::events::sort_reactions(&mut m.reactions);
    }
    Ok(())
}

pub(super) fn history_before(
    conn: &Connection,
    room: &str,
    before: Option<u64>,
    limit: u32,
    viewer: Viewer<'_>,
) -> Result<(Vec<HistoryMessage>, bool), StoreError> {
    let rid = room_id(conn, room)?;
    let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
    // One extra row tells whether older messages remain.
    let mut rows = folded_rows(
        conn,
        &format!(
            "SELECT {MSG_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = ?1 AND m.seq < ?2 AND m.kind = 0 AND (m.deleted = 0 OR ?4)
             ORDER BY m.seq DESC LIMIT ?3"
        ),
        params![rid, before, i64::from(limit) + 1, viewer.tombstones],
    )?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    rows.reverse();
    add_reactions(conn, rid, &mut rows, viewer.user)?;
    Ok((rows, has_more))
}

pub(super) fn messages_at(
    conn: &Connection,
    room: &str,
    seqs: &[u64],
    viewer: Viewer<'_>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let rid = room_id(conn, room)?;
    let mut out = Vec::new();
    let mut sorted: Vec<u64> = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for seq in sorted
        .into_iter()
        .take(chat_proto::limits::HISTORY_PAGE_MAX as usize)
    {
        let mut one = folded_rows(
            conn,
            &format!(
                "SELECT {MSG_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 AND m.seq = ?2 AND m.kind = 0 AND (m.deleted = 0 OR ?3)"
            ),
            params![rid, seq.min(i64::MAX as u64) as i64, viewer.tombstones],
        )?;
        add_reactions(conn, rid, &mut one, viewer.user)?;
        out.extend(one);
    }
    Ok(out)
}

pub(super) fn messages_between(
    conn: &Connection,
    room: &str,
    after: u64,
    upto: u64,
    limit: u32,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let rid = room_id(conn, room)?;
    folded_rows(
        conn,
        &format!(
            "SELECT {MSG_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = ?1 AND m.seq > ?2 AND m.seq <= ?3 AND m.kind = 0 AND m.deleted = 0
             ORDER BY m.seq LIMIT ?4"
        ),
        params![
            rid,
            after.min(i64::MAX as u64) as i64,
            upto.min(i64::MAX as u64) as i64,
            limit
        ],
    )
}

pub(super) fn events_between(
    conn: &Connection,
    room: &str,
    after: u64,
    upto: u64,
    limit: u32,
) -> Result<Vec<RoomEvent>, StoreError> {
    let rid = room_id(conn, room)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
         WHERE m.room_id = ?1 AND m.seq > ?2 AND m.seq <= ?3 ORDER BY m.seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            rid,
            after.min(i64::MAX as u64) as i64,
            upto.min(i64::MAX as u64) as i64,
            limit
        ],
        row,
    )?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(e) = r?.into_event() {
            out.push(e);
        }
    }
    Ok(out)
}

pub(super) fn message_info(
    conn: &Connection,
    room: &str,
    seq: u64,
) -> Result<Option<MessageInfo>, StoreError> {
    let rid = room_id(conn, room)?;
    Ok(conn
        .prepare_cached(
            "SELECT u.name, m.deleted FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = ?1 AND m.seq = ?2 AND m.kind = 0",
        )?
        .query_row(params![rid, seq.min(i64::MAX as u64) as i64], |r| {
            Ok(MessageInfo {
                from: r.get(0)?,
                deleted: r.get::<_, i64>(1)? != 0,
            })
        })
        .optional()?)
}

/// The read state of user `uid` in room `rid`: counting stops at [`UNREAD_COUNT_MAX`] rows, so
/// a long-unread room costs a bounded scan.
pub(super) fn read_state_ids(
    conn: &Connection,
    uid: i64,
    rid: i64,
) -> Result<ReadState, StoreError> {
    let read_seq: i64 = conn
        .prepare_cached("SELECT read_seq FROM read_state WHERE user_id = ?1 AND room_id = ?2")?
        .query_row(params![uid, rid], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let cap = UNREAD_COUNT_MAX as i64;
    let unread: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE room_id = ?1 AND seq > ?2
             AND kind = 0 AND deleted = 0 AND user_id <> ?3 LIMIT ?4)",
        )?
        .query_row(params![rid, read_seq, uid, cap], |r| r.get(0))?;
    let mentioned: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM mentions x JOIN messages m
             ON m.room_id = x.room_id AND m.seq = x.seq
             WHERE x.room_id = ?1 AND x.user_id = ?3 AND x.seq > ?2 AND m.deleted = 0
             AND m.user_id <> ?3 LIMIT ?4)",
        )?
        .query_row(params![rid, read_seq, uid, cap], |r| r.get(0))?;
    Ok(ReadState {
        read_seq: read_seq as u64,
        unread: unread as u64,
        mentions: mentioned as u64,
    })
}

pub(super) fn read_state(
    conn: &Connection,
    user: &str,
    room: &str,
) -> Result<ReadState, StoreError> {
    read_state_ids(conn, user_id(conn, user)?, room_id(conn, room)?)
}

/// Moves the read position up (never back), clamped to the room's latest seq.
pub(super) fn mark_read(
    w: &mut Writer,
    user: &str,
    room: &str,
    seq: u64,
) -> Result<ReadState, StoreError> {
    let uid = w.user_id(user)?;
    let (rid, last) = w.room_seq(room)?;
    let seq = (seq.min(i64::MAX as u64) as i64).min(last);
    w.conn
        .prepare_cached(
            "INSERT INTO read_state (user_id, room_id, read_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, room_id) DO UPDATE SET read_seq = MAX(read_seq, excluded.read_seq)",
        )?
        .execute(params![uid, rid, seq])?;
    read_state_ids(&w.conn, uid, rid)
}
