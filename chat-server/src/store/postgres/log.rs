//! The room log on PostgreSQL: applying a change (one transaction, run by the writer task in
//! queue order with the message batches), folded history, replays, and read state. See
//! `store/log.rs` for the row layout.

use chat_proto::limits::{UNREAD_COUNT_MAX, mentions};
use chat_proto::{EventKind, HistoryMessage, Reaction, ReadState, RoomEvent};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::moderation::{self as rules, banned_ids, role_ids, room_facts};
use crate::clock::now_ms;
use crate::moderation::{self, Refusal};
use crate::store::log::{self, Row as LogRow};
use crate::store::{Applied, Change, MessageInfo, NewEvent, StoreError, Viewer};

/// A seq from the protocol, clamped into PostgreSQL's BIGINT.
fn seq_arg(s: u64) -> i64 {
    s.min(i64::MAX as u64) as i64
}

/// Why one change did not apply: a refusal (its own result) or a database failure (retry or
/// fail the attempt).
pub(super) enum ApplyError {
    Refused(StoreError),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// Applies one change in its own transaction. The room's counter row is locked first, so the
/// checks below see every change committed before this one, from any node.
pub(super) async fn apply_one(
    client: &mut deadpool_postgres::Object,
    ev: &NewEvent,
) -> Result<Applied, ApplyError> {
    let tx = client.transaction().await?;
    let refused = |e| Err(ApplyError::Refused(e));
    let Some(room) = tx
        .query_opt(
            "SELECT id, last_seq FROM rooms WHERE name = $1 FOR UPDATE",
            &[&ev.room],
        )
        .await?
    else {
        return refused(StoreError::NotFound);
    };
    let (rid, last): (i64, i64) = (room.get(0), room.get(1));
    let Some(user) = tx
        .query_opt("SELECT id FROM users WHERE name = $1", &[&ev.from])
        .await?
    else {
        return refused(StoreError::NotFound);
    };
    let uid: i64 = user.get(0);
    let nothing = || Applied {
        room: ev.room.clone(),
        event: None,
    };
    let target = |t: u64| {
        let tx = &tx;
        async move {
            let row = tx
                .query_opt(
                    "SELECT user_id, deleted FROM messages WHERE room_id = $1 AND seq = $2 AND kind = 0",
                    &[&rid, &seq_arg(t)],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(row.map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1))))
        }
    };
    let reaction_of = |t: u64| {
        let tx = &tx;
        async move {
            let row = tx
                .query_opt(
                    "SELECT emoji FROM reactions WHERE room_id = $1 AND seq = $2 AND user_id = $3",
                    &[&rid, &seq_arg(t), &uid],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(row.map(|r| r.get::<_, String>(0)))
        }
    };
    let is_member = || {
        let tx = &tx;
        async move {
            let row = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2)",
                    &[&rid, &uid],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(row.get::<_, bool>(0))
        }
    };
    let what = match &ev.change {
        Change::Edit { target: t, body } => match target(*t).await? {
            None | Some((_, true)) => return refused(StoreError::NoSuchMessage),
            Some((author, _)) if author != uid => return refused(StoreError::NotAllowed),
            Some(_) => EventKind::Edit {
                target: *t,
                body: body.clone(),
            },
        },
        Change::Delete { target: t } => match target(*t).await? {
            None => return refused(StoreError::NoSuchMessage),
            Some((author, deleted)) => {
                if author != uid {
                    let (kind, _) = room_facts(&tx, rid).await?;
                    if !moderation::may_delete_others(kind, role_ids(&tx, rid, uid).await?) {
                        return refused(StoreError::NotAllowed);
                    }
                }
                if deleted {
                    return Ok(nothing());
                }
                EventKind::Delete { target: *t }
            }
        },
        Change::React { target: t, emoji } => match target(*t).await? {
            None | Some((_, true)) => return refused(StoreError::NoSuchMessage),
            Some(_) => {
                let had = reaction_of(*t).await?;
                if had.as_deref() == Some(emoji.as_str()) {
                    return Ok(nothing());
                }
                EventKind::React {
                    target: *t,
                    emoji: emoji.clone(),
                    replaces: had,
                }
            }
        },
        Change::Unreact { target: t, emoji } => {
            if target(*t).await?.is_none() {
                return refused(StoreError::NoSuchMessage);
            }
            if reaction_of(*t).await?.as_deref() != Some(emoji.as_str()) {
                return Ok(nothing());
            }
            EventKind::Unreact {
                target: *t,
                emoji: emoji.clone(),
            }
        }
        Change::Topic { topic } => {
            let (kind, settings) = room_facts(&tx, rid).await?;
            if let Err(r) =
                moderation::may_set_topic(kind, settings, role_ids(&tx, rid, uid).await?)
            {
                return refused(StoreError::Refused(r));
            }
            EventKind::Topic {
                topic: topic.clone(),
            }
        }
        Change::Kick { .. }
        | Change::Ban { .. }
        | Change::Unban { .. }
        | Change::SetRole { .. } => {
            match rules::decide(&tx, rid, uid, &ev.from, &ev.change).await? {
                Some(what) => what,
                None => return Ok(nothing()),
            }
        }
        Change::Join => {
            if is_member().await? {
                return Ok(nothing());
            }
            if banned_ids(&tx, rid, uid).await? {
                return refused(StoreError::Refused(Refusal::Banned));
            }
            EventKind::Join
        }
        Change::Leave => {
            let member = is_member().await?;
            // An invite does not outlive the membership it led to (nor a leave without one).
            tx.execute(
                "DELETE FROM invites WHERE room_id = $1 AND user_id = $2",
                &[&rid, &uid],
            )
            .await?;
            if !member {
                tx.commit().await?;
                return Ok(nothing());
            }
            EventKind::Leave
        }
    };
    let seq = last + 1;
    let ts = now_ms();
    let (kind, tgt, body, subject) = log::columns(&what);
    tx.execute(
        "UPDATE rooms SET last_seq = $2 WHERE id = $1",
        &[&rid, &seq],
    )
    .await?;
    tx.execute(
        "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, kind, target, subject)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &rid,
            &seq,
            &uid,
            &log::event_client_id(rid, seq),
            &body,
            &ts,
            &kind,
            &tgt,
            &subject,
        ],
    )
    .await?;
    effects(&tx, rid, uid, seq, ts, &what).await?;
    tx.commit().await?;
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

/// Records who `body` (message `seq` of room `rid`) mentions, existing users only.
pub(super) async fn store_mentions(
    c: &impl GenericClient,
    rooms: &[i64],
    seqs: &[i64],
    names: &[&str],
) -> Result<(), tokio_postgres::Error> {
    if rooms.is_empty() {
        return Ok(());
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO mentions (room_id, user_id, seq)
             SELECT t.r, u.id, t.s FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS t(r, s, n)
             JOIN users u ON u.name = t.n ON CONFLICT DO NOTHING",
        )
        .await?;
    c.execute(&stmt, &[&rooms, &seqs, &names]).await?;
    Ok(())
}

/// The mentions of one body as the columns [`store_mentions`] takes.
pub(super) fn mention_rows<'a>(
    rid: i64,
    seq: i64,
    body: &'a str,
    out: &mut (Vec<i64>, Vec<i64>, Vec<&'a str>),
) {
    if body.contains('@') {
        for name in mentions(body) {
            out.0.push(rid);
            out.1.push(seq);
            out.2.push(name);
        }
    }
}

async fn effects(
    tx: &deadpool_postgres::Transaction<'_>,
    rid: i64,
    uid: i64,
    seq: i64,
    ts: i64,
    what: &EventKind,
) -> Result<(), tokio_postgres::Error> {
    match what {
        EventKind::Edit { target, body } => {
            let t = seq_arg(*target);
            tx.execute(
                "UPDATE messages SET body = $3, edited_ts = $4 WHERE room_id = $1 AND seq = $2",
                &[&rid, &t, body, &ts],
            )
            .await?;
            tx.execute(
                "DELETE FROM mentions WHERE room_id = $1 AND seq = $2",
                &[&rid, &t],
            )
            .await?;
            let mut m = (Vec::new(), Vec::new(), Vec::new());
            mention_rows(rid, t, body, &mut m);
            store_mentions(tx, &m.0, &m.1, &m.2).await?;
        }
        EventKind::Delete { target } => {
            let t = seq_arg(*target);
            // The body goes from storage, with every edit's copy of it.
            tx.execute(
                "UPDATE messages SET body = '', deleted = TRUE WHERE room_id = $1 AND seq = $2",
                &[&rid, &t],
            )
            .await?;
            tx.execute(
                "UPDATE messages SET body = '' WHERE room_id = $1 AND target = $2 AND kind = $3",
                &[&rid, &t, &log::EDIT],
            )
            .await?;
            for table in ["reactions", "mentions"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE room_id = $1 AND seq = $2"),
                    &[&rid, &t],
                )
                .await?;
            }
        }
        EventKind::React { target, emoji, .. } => {
            tx.execute(
                "INSERT INTO reactions (room_id, seq, user_id, emoji) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (room_id, seq, user_id) DO UPDATE SET emoji = EXCLUDED.emoji",
                &[&rid, &seq_arg(*target), &uid, emoji],
            )
            .await?;
        }
        EventKind::Unreact { target, .. } => {
            tx.execute(
                "DELETE FROM reactions WHERE room_id = $1 AND seq = $2 AND user_id = $3",
                &[&rid, &seq_arg(*target), &uid],
            )
            .await?;
        }
        EventKind::Topic { topic } => {
            tx.execute("UPDATE rooms SET topic = $2 WHERE id = $1", &[&rid, topic])
                .await?;
        }
        EventKind::Join => {
            // The invite is used up by the join it allowed; what was said before the join is
            // not unread for the newcomer.
            tx.execute(
                "DELETE FROM invites WHERE room_id = $1 AND user_id = $2",
                &[&rid, &uid],
            )
            .await?;
            tx.execute(
                "INSERT INTO members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&rid, &uid],
            )
            .await?;
            tx.execute(
                "INSERT INTO read_state (user_id, room_id, read_seq) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, room_id)
                 DO UPDATE SET read_seq = GREATEST(read_state.read_seq, EXCLUDED.read_seq)",
                &[&uid, &rid, &seq],
            )
            .await?;
        }
        EventKind::Leave => {
            tx.execute(
                "DELETE FROM members WHERE room_id = $1 AND user_id = $2",
                &[&rid, &uid],
            )
            .await?;
        }
        EventKind::Kick { .. }
        | EventKind::Ban { .. }
        | EventKind::Unban { .. }
        | EventKind::Role { .. } => rules::effects(tx, rid, uid, ts, what).await?,
        EventKind::Message { .. } => {}
    }
    Ok(())
}

/// The columns [`folded`] reads, from `messages m JOIN users u`.
pub(super) const MSG_COLUMNS: &str =
    "m.seq, m.client_id, u.name, m.body, m.ts, m.reply_to, m.edited_ts, m.deleted";

pub(super) fn folded(r: &Row) -> HistoryMessage {
    HistoryMessage {
        seq: r.get::<_, i64>(0) as u64,
        id: r.get(1),
        from: r.get(2),
        body: r.get(3),
        ts: r.get(4),
        reply_to: r.get::<_, Option<i64>>(5).map(|s| s as u64),
        edited: r.get(6),
        deleted: r.get(7),
        reactions: Vec::new(),
    }
}

/// The columns [`log_row`] reads, from `messages m JOIN users u`.
pub(super) const ROW_COLUMNS: &str =
    "m.seq, m.ts, u.name, m.kind, m.client_id, m.body, m.target, m.reply_to, m.subject";

pub(super) fn log_row(r: &Row) -> LogRow {
    LogRow {
        seq: r.get(0),
        ts: r.get(1),
        from: r.get(2),
        kind: r.get(3),
        client_id: r.get(4),
        body: r.get(5),
        target: r.get(6),
        reply_to: r.get(7),
        subject: r.get(8),
    }
}

/// Fills in the reaction counts of `page` (ascending seqs) as `viewer` sees them.
pub(super) async fn add_reactions(
    c: &impl GenericClient,
    rid: i64,
    page: &mut [HistoryMessage],
    viewer: &str,
) -> Result<(), StoreError> {
    let (Some(lo), Some(hi)) = (page.first().map(|m| m.seq), page.last().map(|m| m.seq)) else {
        return Ok(());
    };
    let stmt = c
        .prepare_cached(
            "SELECT x.seq, x.emoji, COUNT(*), BOOL_OR(u.name = $4) FROM reactions x
             JOIN users u ON u.id = x.user_id
             WHERE x.room_id = $1 AND x.seq >= $2 AND x.seq <= $3 GROUP BY x.seq, x.emoji",
        )
        .await
        .map_err(super::db_err)?;
    let rows = c
        .query(&stmt, &[&rid, &seq_arg(lo), &seq_arg(hi), &viewer])
        .await
        .map_err(super::db_err)?;
    for r in rows {
        let seq = r.get::<_, i64>(0) as u64;
        if let Ok(i) = page.binary_search_by_key(&seq, |m| m.seq) {
            page[i].reactions.push(Reaction {
                emoji: r.get(1),
                count: r.get::<_, i64>(2) as u64,
                me: r.get(3),
            });
        }
    }
    for m in page.iter_mut() {
        chat_proto::events::sort_reactions(&mut m.reactions);
    }
    Ok(())
}

pub(super) async fn history_before(
    c: &impl GenericClient,
    rid: i64,
    before: Option<u64>,
    limit: u32,
    viewer: Viewer<'_>,
) -> Result<(Vec<HistoryMessage>, bool), StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {MSG_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.seq < $2 AND m.kind = 0 AND (NOT m.deleted OR $4)
             ORDER BY m.seq DESC LIMIT $3"
        ))
        .await
        .map_err(super::db_err)?;
    // One extra row tells whether older messages remain.
    let rows = c
        .query(
            &stmt,
            &[
                &rid,
                &before.map_or(i64::MAX, seq_arg),
                &(i64::from(limit) + 1),
                &viewer.tombstones,
            ],
        )
        .await
        .map_err(super::db_err)?;
    let mut page: Vec<HistoryMessage> = rows.iter().map(folded).collect();
    let has_more = page.len() > limit as usize;
    page.truncate(limit as usize);
    page.reverse();
    add_reactions(c, rid, &mut page, viewer.user).await?;
    Ok((page, has_more))
}

pub(super) async fn messages_at(
    c: &impl GenericClient,
    rid: i64,
    seqs: &[u64],
    viewer: Viewer<'_>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let seqs: Vec<i64> = seqs
        .iter()
        .take(chat_proto::limits::HISTORY_PAGE_MAX as usize)
        .map(|s| seq_arg(*s))
        .collect();
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {MSG_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.seq = ANY($2) AND m.kind = 0 AND (NOT m.deleted OR $3)
             ORDER BY m.seq"
        ))
        .await
        .map_err(super::db_err)?;
    let rows = c
        .query(&stmt, &[&rid, &seqs, &viewer.tombstones])
        .await
        .map_err(super::db_err)?;
    let mut page: Vec<HistoryMessage> = rows.iter().map(folded).collect();
    // The page is sparse: reactions are read per message so the range stays tight.
    for m in page.iter_mut() {
        add_reactions(c, rid, std::slice::from_mut(m), viewer.user).await?;
    }
    Ok(page)
}

pub(super) async fn events_between(
    c: &impl GenericClient,
    rid: i64,
    after: u64,
    upto: u64,
    limit: u32,
) -> Result<Vec<RoomEvent>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.seq > $2 AND m.seq <= $3 ORDER BY m.seq LIMIT $4"
        ))
        .await
        .map_err(super::db_err)?;
    let rows = c
        .query(
            &stmt,
            &[&rid, &seq_arg(after), &seq_arg(upto), &i64::from(limit)],
        )
        .await
        .map_err(super::db_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| log_row(r).into_event())
        .collect())
}

pub(super) async fn message_info(
    c: &impl GenericClient,
    rid: i64,
    seq: u64,
) -> Result<Option<MessageInfo>, StoreError> {
    let row = c
        .query_opt(
            "SELECT u.name, m.deleted FROM messages m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.seq = $2 AND m.kind = 0",
            &[&rid, &seq_arg(seq)],
        )
        .await
        .map_err(super::db_err)?;
    Ok(row.map(|r| MessageInfo {
        from: r.get(0),
        deleted: r.get(1),
    }))
}

/// The read-state columns for `rooms r` and user `$1`, as [`read_from`] reads them from
/// `first`: read_seq, unread, mentions. Counting stops at [`UNREAD_COUNT_MAX`] rows.
pub(super) fn read_columns(user_param: &str) -> String {
    let cap = UNREAD_COUNT_MAX;
    format!(
        "COALESCE((SELECT rs.read_seq FROM read_state rs WHERE rs.room_id = r.id AND rs.user_id = {user_param}), 0),
         (SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.room_id = r.id
            AND x.seq > COALESCE((SELECT rs.read_seq FROM read_state rs WHERE rs.room_id = r.id AND rs.user_id = {user_param}), 0)
            AND x.kind = 0 AND NOT x.deleted AND x.user_id <> {user_param} LIMIT {cap}) c),
         (SELECT COUNT(*) FROM (SELECT 1 FROM mentions x JOIN messages y ON y.room_id = x.room_id AND y.seq = x.seq
            WHERE x.room_id = r.id AND x.user_id = {user_param}
            AND x.seq > COALESCE((SELECT rs.read_seq FROM read_state rs WHERE rs.room_id = r.id AND rs.user_id = {user_param}), 0)
            AND NOT y.deleted AND y.user_id <> {user_param} LIMIT {cap}) c)"
    )
}

pub(super) fn read_from(r: &Row, first: usize) -> ReadState {
    ReadState {
        read_seq: r.get::<_, i64>(first) as u64,
        unread: r.get::<_, i64>(first + 1) as u64,
        mentions: r.get::<_, i64>(first + 2) as u64,
    }
}

pub(super) async fn read_state(
    c: &impl GenericClient,
    uid: i64,
    room: &str,
) -> Result<ReadState, StoreError> {
    let sql = format!(
        "SELECT {} FROM rooms r WHERE r.name = $2",
        read_columns("$1")
    );
    let row = c
        .query_opt(&sql, &[&uid, &room])
        .await
        .map_err(super::db_err)?
        .ok_or(StoreError::NotFound)?;
    Ok(read_from(&row, 0))
}

/// Moves the read position up (never back), clamped to the room's latest seq.
pub(super) async fn mark_read(
    c: &impl GenericClient,
    uid: i64,
    room: &str,
    seq: u64,
) -> Result<ReadState, StoreError> {
    let n = c
        .execute(
            "INSERT INTO read_state (user_id, room_id, read_seq)
             SELECT $1, r.id, LEAST($3, r.last_seq) FROM rooms r WHERE r.name = $2
             ON CONFLICT (user_id, room_id)
             DO UPDATE SET read_seq = GREATEST(read_state.read_seq, EXCLUDED.read_seq)",
            &[&uid, &room, &seq_arg(seq)],
        )
        .await
        .map_err(super::db_err)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    read_state(c, uid, room).await
}
