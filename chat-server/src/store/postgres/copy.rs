//! `chat-server db copy`: moves a SQLite deployment into an empty PostgreSQL database.
//!
//! Copies the tables as they are (ids, password and token hashes, disabled accounts, tokens' last
//! use, epochs, owners, topics, seqs, timestamps, client ids), so nothing a client holds goes
//! stale: its tokens still log in, its `since_seq` still points at the same message in the same
//! epoch, and a resend of an old client id is still found. The revocation log is not copied: it
//! matters only to nodes serving while it is written, and none serve during a copy. One PostgreSQL transaction: a failed copy leaves the target empty.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{PgStore, db_err, redact};
use crate::store::StoreError;
use crate::store::sqlite::SqliteStore;

/// Messages per read and per multi-row insert: a large history never sits in memory whole.
const CHUNK: i64 = 10_000;

/// How many rows of each table were copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub users: u64,
    pub tokens: u64,
    pub rooms: u64,
    pub members: u64,
    pub invites: u64,
    pub messages: u64,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} tokens, {} rooms, {} members, {} invites, {} messages",
            self.users, self.tokens, self.rooms, self.members, self.invites, self.messages
        )
    }
}

fn sq(e: rusqlite::Error) -> StoreError {
    StoreError::Db(format!("reading the SQLite database: {e}"))
}

/// Copies everything in the SQLite file `from` into the PostgreSQL database `to`, which must be
/// empty (no users, no rooms). No server may be writing to `from` meanwhile (the caller holds
/// its claim). The SQLite reads block the calling thread: this is a one-off command.
pub async fn from_sqlite(from: &Path, to: &str) -> Result<Copied, StoreError> {
    if !from.is_file() {
        return Err(StoreError::Db(format!(
            "{} does not exist (or is not a file)",
            from.display()
        )));
    }
    // Brings an older file to the current schema, so the columns below exist.
    drop(SqliteStore::open(from)?);
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sq)?;
    let store = PgStore::open(to).await?;
    let mut client = store.conn().await?;
    let tx = client.transaction().await.map_err(db_err)?;
    let row = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM users) OR EXISTS(SELECT 1 FROM rooms)",
            &[],
        )
        .await
        .map_err(db_err)?;
    if row.get::<_, bool>(0) {
        return Err(StoreError::Db(format!(
            "{} is not empty (it has users or rooms): db copy only fills a new database",
            redact(to)
        )));
    }
    let mut n = Copied::default();

    let (mut ids, mut names, mut hashes, mut created) = (vec![], vec![], vec![], vec![]);
    let mut disabled: Vec<Option<i64>> = vec![];
    read(
        &src,
        "SELECT id, name, password_hash, created_at, disabled_at FROM users",
        |r| {
            ids.push(r.get::<_, i64>(0)?);
            names.push(r.get::<_, String>(1)?);
            hashes.push(r.get::<_, String>(2)?);
            created.push(r.get::<_, i64>(3)?);
            disabled.push(r.get::<_, Option<i64>>(4)?);
            Ok(())
        },
    )?;
    n.users = insert(
        &tx,
        "INSERT INTO users (id, name, password_hash, created_at, disabled_at)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])",
        &[&ids, &names, &hashes, &created, &disabled],
    )
    .await?;

    let (mut hashes, mut uids, mut created, mut used) = (vec![], vec![], vec![], vec![]);
    read(
        &src,
        "SELECT hash, user_id, created_at, last_used_at FROM tokens",
        |r| {
            hashes.push(r.get::<_, Vec<u8>>(0)?);
            uids.push(r.get::<_, i64>(1)?);
            created.push(r.get::<_, i64>(2)?);
            used.push(r.get::<_, i64>(3)?);
            Ok(())
        },
    )?;
    n.tokens = insert(
        &tx,
        "INSERT INTO tokens (hash, user_id, created_at, last_used_at)
         SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[])",
        &[&hashes, &uids, &created, &used],
    )
    .await?;

    // Column vectors, the shape UNNEST takes; in threes to keep the types readable.
    let mut ids_names: (Vec<i64>, Vec<String>, Vec<String>) = Default::default();
    let mut texts: (Vec<String>, Vec<String>, Vec<String>) = Default::default();
    let mut numbers: (Vec<Option<i64>>, Vec<i64>, Vec<i64>) = Default::default();
    // A room's counter is its highest seq: SQLite keeps no counter (see its `Writer`).
    read(
        &src,
        "SELECT id, name, kind, visibility, topic, epoch, owner_id,
            COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.room_id = r.id), 0), created_at
         FROM rooms r",
        |r| {
            ids_names.0.push(r.get(0)?);
            ids_names.1.push(r.get(1)?);
            ids_names.2.push(r.get(2)?);
            texts.0.push(r.get(3)?);
            texts.1.push(r.get(4)?);
            texts.2.push(r.get(5)?);
            numbers.0.push(r.get(6)?);
            numbers.1.push(r.get(7)?);
            numbers.2.push(r.get(8)?);
            Ok(())
        },
    )?;
    n.rooms = insert(
        &tx,
        "INSERT INTO rooms (id, name, kind, visibility, topic, epoch, owner_id, last_seq, created_at)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])",
        &[
            &ids_names.0,
            &ids_names.1,
            &ids_names.2,
            &texts.0,
            &texts.1,
            &texts.2,
            &numbers.0,
            &numbers.1,
            &numbers.2,
        ],
    )
    .await?;

    for (table, count) in [("members", &mut n.members), ("invites", &mut n.invites)] {
        let (mut rids, mut uids) = (vec![], vec![]);
        read(
            &src,
            &format!("SELECT room_id, user_id FROM {table}"),
            |r| {
                rids.push(r.get::<_, i64>(0)?);
                uids.push(r.get::<_, i64>(1)?);
                Ok(())
            },
        )?;
        *count = insert(
            &tx,
            &format!(
                "INSERT INTO {table} (room_id, user_id) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])"
            ),
            &[&rids, &uids],
        )
        .await?;
    }

    // Messages in chunks, in key order, so a large history never sits in memory whole.
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let mut keys: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
        let mut rest: (Vec<String>, Vec<String>, Vec<i64>) = Default::default();
        let mut stmt = src
            .prepare(
                "SELECT room_id, seq, user_id, client_id, body, ts FROM messages
                 WHERE (room_id, seq) > (?1, ?2) ORDER BY room_id, seq LIMIT ?3",
            )
            .map_err(sq)?;
        let mut rows = stmt.query((after.0, after.1, CHUNK)).map_err(sq)?;
        while let Some(r) = rows.next().map_err(sq)? {
            keys.0.push(r.get(0).map_err(sq)?);
            keys.1.push(r.get(1).map_err(sq)?);
            keys.2.push(r.get(2).map_err(sq)?);
            rest.0.push(r.get(3).map_err(sq)?);
            rest.1.push(r.get(4).map_err(sq)?);
            rest.2.push(r.get(5).map_err(sq)?);
        }
        let Some((&room, &seq)) = keys.0.last().zip(keys.1.last()) else {
            break;
        };
        after = (room, seq);
        n.messages += insert(
            &tx,
            "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[])",
            &[&keys.0, &keys.1, &keys.2, &rest.0, &rest.1, &rest.2],
        )
        .await?;
    }

    // The copied ids were given explicitly: new rows must be numbered after them.
    for table in ["users", "rooms"] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(n)
}

/// Runs `sql` on the SQLite file and hands each row to `f`.
fn read(
    src: &Connection,
    sql: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<(), StoreError> {
    let mut stmt = src.prepare(sql).map_err(sq)?;
    let mut rows = stmt.query([]).map_err(sq)?;
    while let Some(r) = rows.next().map_err(sq)? {
        f(r).map_err(sq)?;
    }
    Ok(())
}

async fn insert(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    tx.execute(sql, args).await.map_err(db_err)
}
