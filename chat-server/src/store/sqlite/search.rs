//! `search` on SQLite: the FTS5 index `messages_fts` (kept by triggers, see the migration) finds
//! the rows, `messages` and `members` decide what is shown to whom.

use chat_proto::SearchResult;
use rusqlite::{Connection, params};

use crate::store::{SearchRequest, StoreError};

/// The filters and the order, after a `FROM` that yields `messages m`. Parameters: ?1 user,
/// ?2 the FTS5 query (unused without text), ?3 from, ?4 room, ?5..?7 the cursor, ?8 the limit, ?9 a seq
/// bound.
const REST: &str = "JOIN rooms r ON r.id = m.room_id
    JOIN members p ON p.room_id = m.room_id
        AND p.user_id = (SELECT id FROM users WHERE name = ?1)
    JOIN users u ON u.id = m.user_id
    WHERE m.kind = 0 AND NOT m.deleted
        AND (?3 IS NULL OR u.name = ?3) AND (?4 IS NULL OR r.name = ?4)
        AND (?5 IS NULL OR (m.ts, r.name, m.seq) < (?5, ?6, ?7))
        AND (?9 IS NULL OR m.seq < ?9)";

const COLUMNS: &str = "r.name, m.seq, m.client_id, u.name, m.body, m.ts, m.reply_to, m.edited_ts";

const ORDER: &str = "ORDER BY m.ts DESC, r.name DESC, m.seq DESC LIMIT ?8";

/// The FTS5 query for `phrases`: each a quoted phrase, all required (FTS5's implicit AND).
/// The tokens are letters and digits only (chat_proto::search), so quoting cannot be escaped;
/// any `"` is doubled anyway, as FTS5 reads it.
pub(super) fn fts_query(phrases: &[Vec<String>]) -> String {
    phrases
        .iter()
        .map(|p| format!("\"{}\"", p.join(" ").replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn search(c: &Connection, req: &SearchRequest) -> Result<Vec<SearchResult>, StoreError> {
    let sql = if req.phrases.is_empty() {
        format!("SELECT {COLUMNS} FROM messages m {REST} {ORDER}")
    } else {
        // The index is the outer loop; its rowid names the message (room_id * 2^32 + seq).
        format!(
            "SELECT {COLUMNS} FROM messages_fts f
             JOIN messages m ON m.room_id = (f.rowid >> 32) AND m.seq = (f.rowid & 4294967295)
             {REST} AND messages_fts MATCH ?2 {ORDER}"
        )
    };
    let cursor = req.before.as_ref();
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            req.user,
            fts_query(&req.phrases),
            req.from,
            req.room,
            cursor.map(|k| k.ts),
            cursor.map(|k| k.room.as_str()),
            cursor.map(|k| k.seq_i64()),
            i64::from(req.limit),
            req.before_seq.map(|b| b.min(i64::MAX as u64) as i64),
        ],
        |r| {
            Ok(SearchResult {
                room: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                id: r.get(2)?,
                from: r.get(3)?,
                body: r.get(4)?,
                ts: r.get(5)?,
                reply_to: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
                edited: r.get(7)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_become_one_fts5_query_of_quoted_phrases() {
        let p = |v: &[&[&str]]| -> Vec<Vec<String>> {
            v.iter()
                .map(|w| w.iter().map(|s| (*s).to_owned()).collect())
                .collect()
        };
        assert_eq!(
            fts_query(&p(&[&["big", "cat"], &["x"]])),
            "\"big cat\" \"x\""
        );
        assert_eq!(fts_query(&p(&[&["a\"b"]])), "\"a\"\"b\"");
    }
}
