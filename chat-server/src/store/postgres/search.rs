//! `search` on PostgreSQL: the generated `messages.search` tsvector and its GIN index (see the
//! migration). Every phrase is a bound parameter given to `phraseto_tsquery('simple', …)`:
//! user text is never part of the SQL, nor of tsquery syntax.

use chat_proto::SearchResult;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::db_err;
use crate::store::{SearchRequest, StoreError};

/// The statement for `phrases` phrases: parameters $1 user, $2 from, $3 room, $4..$6 the
/// cursor, $7 the limit, $8 a seq bound, then one per phrase. Its text depends only on the count (at most
/// chat_proto::search::QUERY_MAX_TERMS shapes, each prepared once per connection).
pub(super) fn sql(phrases: usize) -> String {
    let text = if phrases == 0 {
        String::new()
    } else {
        let q: Vec<String> = (0..phrases)
            .map(|i| format!("phraseto_tsquery('simple', ${})", i + 9))
            .collect();
        // The index's predicate (kind = 0 AND NOT deleted) is in the WHERE below.
        format!("AND m.search @@ ({})", q.join(" && "))
    };
    format!(
        "SELECT r.name, m.seq, m.client_id, u.name, m.body, m.ts, m.reply_to, m.edited_ts
         FROM messages m
         JOIN rooms r ON r.id = m.room_id
         JOIN members p ON p.room_id = m.room_id
             AND p.user_id = (SELECT id FROM users WHERE name = $1)
         JOIN users u ON u.id = m.user_id
         WHERE m.kind = 0 AND NOT m.deleted {text}
             AND ($2::text IS NULL OR u.name = $2) AND ($3::text IS NULL OR r.name = $3)
             AND ($4::bigint IS NULL OR (m.ts, r.name, m.seq) < ($4, $5::text, $6::bigint))
             AND ($8::bigint IS NULL OR m.seq < $8)
         ORDER BY m.ts DESC, r.name DESC, m.seq DESC LIMIT $7"
    )
}

pub(super) async fn search(
    c: &impl GenericClient,
    req: &SearchRequest,
) -> Result<Vec<SearchResult>, StoreError> {
    let stmt = c
        .prepare_cached(&sql(req.phrases.len()))
        .await
        .map_err(db_err)?;
    let cursor = req.before.as_ref();
    let (ts, room, seq) = (
        cursor.map(|k| k.ts),
        cursor.map(|k| k.room.clone()),
        cursor.map(|k| k.seq_i64()),
    );
    let limit = i64::from(req.limit);
    let before_seq = req.before_seq.map(|b| b.min(i64::MAX as u64) as i64);
    let phrases: Vec<String> = req.phrases.iter().map(|p| p.join(" ")).collect();
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![
        &req.user,
        &req.from,
        &req.room,
        &ts,
        &room,
        &seq,
        &limit,
        &before_seq,
    ];
    args.extend(phrases.iter().map(|p| p as &(dyn ToSql + Sync)));
    let rows = c.query(&stmt, &args).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| SearchResult {
            room: r.get(0),
            seq: r.get::<_, i64>(1) as u64,
            id: r.get(2),
            from: r.get(3),
            body: r.get(4),
            ts: r.get(5),
            reply_to: r.get::<_, Option<i64>>(6).map(|s| s as u64),
            edited: r.get(7),
        })
        .collect())
}
