//! Versioned migrations, applied at start under an advisory lock.
//!
//! Several nodes may start at once against one database: each takes the same session-level
//! `pg_advisory_lock` before looking at the version, so one migrates and the others then find
//! the work done. `schema_version` holds one row, the number of migrations applied.

use tokio_postgres::NoTls;

use super::db_err;
use crate::store::StoreError;

/// The advisory lock key every chat-server takes to migrate (ASCII "chatmigr").
const MIGRATE_LOCK: i64 = 0x6368_6174_6d69_6772;

/// Migrations in order; `schema_version.version` says how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
-- Names compare bytewise ("C"), as SQLite compares them: pages by name agree on both engines.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_by_user ON tokens(user_id);
-- last_seq is the room's counter: the append that takes seqs updates it in its transaction,
-- and the row lock orders writers on every node.
CREATE TABLE rooms (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    visibility TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    epoch TEXT NOT NULL,
    owner_id BIGINT REFERENCES users(id),
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX rooms_by_owner ON rooms(owner_id);
CREATE TABLE members (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE invites (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE messages (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
-- One message per (sender, client id) on every node: a resend after a failover finds it.
CREATE UNIQUE INDEX messages_by_client_id ON messages(user_id, client_id);
"#,
    // Protocol 2: `messages` is the room's log, every kind of event a row (store/log.rs);
    // reactions, read positions and mentions beside it. A row from before has kind 0, a message.
    r#"
ALTER TABLE messages
    ADD COLUMN kind SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN target BIGINT,
    ADD COLUMN reply_to BIGINT,
    ADD COLUMN edited_ts BIGINT,
    ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN subject TEXT;
-- A delete finds the edits of its message (partial: message rows have no target).
CREATE INDEX messages_by_target ON messages(room_id, target) WHERE target IS NOT NULL;
CREATE TABLE reactions (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    emoji TEXT NOT NULL,
    PRIMARY KEY (room_id, seq, user_id)
);
CREATE TABLE read_state (
    user_id BIGINT NOT NULL REFERENCES users(id),
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    read_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
CREATE TABLE mentions (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    seq BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, seq)
);
-- Members from before have read what was there: unread counts start now, not at seq 1.
INSERT INTO read_state (user_id, room_id, read_seq)
    SELECT p.user_id, p.room_id, r.last_seq FROM members p JOIN rooms r ON r.id = p.room_id;
"#,
    // Accounts (see `store::accounts`): disabled accounts, each token's last use (its issue, for
    // the tokens already there), and the revocation log every node polls. Its writers take
    // the table's EXCLUSIVE lock before inserting, so ids are assigned and committed in one
    // order and a reader that saw id n has seen every row below it.
    r#"
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
UPDATE tokens SET last_used_at = created_at;
ALTER TABLE tokens ALTER COLUMN last_used_at SET NOT NULL;
CREATE TABLE token_revocations (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash BYTEA NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX token_revocations_by_time ON token_revocations(revoked_at);
"#,
    // Search (protocol 2): each message's current body as a tsvector, computed by PostgreSQL
    // whenever the row is written (an edit or a delete rewrites it in its own transaction), and
    // for every existing row as the column is added. Every run of characters other than letters
    // and digits becomes a space first, so the parser's emails, hosts, paths and hyphenated
    // words are cut into their parts as SQLite's unicode61 cuts them (chat_proto::search); the
    // 'simple' configuration then only folds case. NULL for other rows, which are never
    // searched; the GIN index covers exactly the rows a search may find.
    r#"
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN kind = 0 AND NOT deleted
        THEN to_tsvector('simple'::regconfig, regexp_replace(body, '[^[:alnum:]]+', ' ', 'g'))
    END
) STORED;
CREATE INDEX messages_search ON messages USING GIN (search) WHERE kind = 0 AND NOT deleted;
"#,
    // Moderation (protocol 2, store/postgres/moderation.rs): a member's role (`member` or
    // `moderator`; the owner is `rooms.owner_id`), what a room leaves to its members, and bans.
    r#"
ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE rooms ADD COLUMN members_set_topic BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE rooms ADD COLUMN members_invite BOOLEAN NOT NULL DEFAULT TRUE;
CREATE TABLE bans (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    by_id BIGINT NOT NULL REFERENCES users(id),
    ts BIGINT NOT NULL,
    reason TEXT,
    PRIMARY KEY (room_id, user_id)
);
"#,
];

/// The schema version this build knows (and migrates to).
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Connects once (outside the pool), takes the migration lock, refuses a newer schema, applies
/// what is missing. The lock goes with the connection, on every exit path.
pub(super) async fn migrate(
    config: &tokio_postgres::Config,
    shown: &str,
) -> Result<(), StoreError> {
    let (mut client, conn) = config.connect(NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!("connecting to {shown}: {}", super::with_causes(&e)))
    })?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = super::deadline(async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(db_err)?;
        // Looked up rather than CREATE ... IF NOT EXISTS, which logs a NOTICE at every start.
        let fresh = client
            .query_one("SELECT to_regclass('schema_version') IS NULL", &[])
            .await
            .map_err(db_err)?
            .get::<_, bool>(0);
        if fresh {
            client
                .batch_execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                .await
                .map_err(db_err)?;
        }
        let version: i32 = match client
            .query_opt("SELECT version FROM schema_version", &[])
            .await
            .map_err(db_err)?
        {
            Some(row) => row.get(0),
            None => {
                client
                    .execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                    .await
                    .map_err(db_err)?;
                0
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Db(format!(
                "database schema version {version} is newer than this server knows ({SCHEMA_VERSION}); upgrade chat-server"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = client.transaction().await.map_err(db_err)?;
            tx.batch_execute(sql).await.map_err(db_err)?;
            tx.execute("UPDATE schema_version SET version = $1", &[&(i as i32 + 1)])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            tracing::info!(version = i + 1, "postgres schema migrated");
        }
        Ok(())
    })
    .await;
    drop(client);
    let _ = driver.await;
    result
}
