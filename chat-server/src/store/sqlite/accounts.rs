//! [`AccountStore`] on SQLite. Writes go through the writer thread like every other (one
//! transaction per batch, each job in a savepoint), reads through the read pool. A
//! `chat-server user` command on the same file writes from its own process; SQLite's one write
//! lock serialises it with the server's batches, so the revocation log's ids grow in commit
//! order here too.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, user_id};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::accounts::{
    Account, AccountStore, Issued, REVOCATION_RETENTION_MS, Revocation, Revoke, SessionRecord,
    TokenUse, UserRow,
};

/// Deletes these tokens and appends them to the revocation log, pruning what is past its
/// retention. Returns the hashes that were there.
fn revoke(c: &Connection, hashes: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, StoreError> {
    let now = now_ms();
    let mut gone = Vec::with_capacity(hashes.len());
    for hash in hashes {
        let n = c
            .prepare_cached("DELETE FROM tokens WHERE hash = ?1")?
            .execute([&hash])?;
        if n > 0 {
            c.prepare_cached("INSERT INTO token_revocations (hash, revoked_at) VALUES (?1, ?2)")?
                .execute(params![hash, now])?;
            gone.push(hash);
        }
    }
    if !gone.is_empty() {
        c.prepare_cached("DELETE FROM token_revocations WHERE revoked_at < ?1")?
            .execute([now - REVOCATION_RETENTION_MS])?;
    }
    Ok(gone)
}

/// The hashes of `uid`'s tokens, oldest first.
fn tokens_of(c: &Connection, uid: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT hash FROM tokens WHERE user_id = ?1 ORDER BY created_at, hash")?;
    let rows = stmt.query_map([uid], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT password_hash, disabled_at IS NOT NULL FROM users WHERE name = ?1",
            )?
            .query_row([name], |r| {
                Ok(Account {
                    password_hash: r.get(0)?,
                    disabled: r.get(1)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn issue_token(
        &self,
        user: &str,
        token_hash: &[u8],
        max_sessions: u32,
    ) -> Result<Issued, StoreError> {
        let (user, hash) = (user.to_owned(), token_hash.to_vec());
        self.write(move |c| {
            let (uid, disabled): (i64, bool) = c
                .prepare_cached("SELECT id, disabled_at IS NOT NULL FROM users WHERE name = ?1")?
                .query_row([&user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if disabled {
                return Ok(Issued::Disabled);
            }
            let now = now_ms();
            c.prepare_cached(
                "INSERT INTO tokens (hash, user_id, created_at, last_used_at) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![hash, uid, now])?;
            let mut others = tokens_of(c, uid)?;
            others.retain(|h| *h != hash);
            let keep = (max_sessions as usize).saturating_sub(1);
            let excess = others.len().saturating_sub(keep);
            others.truncate(excess);
            Ok(Issued::Stored {
                evicted: revoke(c, others)?,
            })
        })
        .await
    }

    async fn token_use(&self, token_hash: &[u8]) -> Result<Option<TokenUse>, StoreError> {
        let hash = token_hash.to_vec();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT u.name, t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.hash = ?1 AND u.disabled_at IS NULL",
            )?
            .query_row([hash], |r| {
                Ok(TokenUse {
                    user: r.get(0)?,
                    last_used_ms: r.get(1)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn touch_token(&self, token_hash: &[u8], at_ms: i64) -> Result<(), StoreError> {
        let hash = token_hash.to_vec();
        self.write(move |c| {
            c.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE hash = ?1")?
                .execute(params![hash, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        let hash = token_hash.to_vec();
        self.write(move |c| Ok(!revoke(c, vec![hash])?.is_empty()))
            .await
    }

    async fn sessions(&self, user: &str, limit: u32) -> Result<Vec<SessionRecord>, StoreError> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.hash, t.created_at, t.last_used_at FROM tokens t
                 JOIN users u ON u.id = t.user_id WHERE u.name = ?1
                 ORDER BY t.created_at DESC, t.hash DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![user, limit], |r| {
                Ok(SessionRecord {
                    hash: r.get(0)?,
                    created_ms: r.get(1)?,
                    last_used_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_password(
        &self,
        user: &str,
        password_hash: &str,
        revoke_which: Revoke<'_>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let (user, password_hash) = (user.to_owned(), password_hash.to_owned());
        let keep: Option<Option<Vec<u8>>> = match revoke_which {
            Revoke::None => None,
            Revoke::AllBut(h) => Some(Some(h.to_vec())),
            Revoke::All => Some(None),
        };
        self.write(move |c| {
            let uid = user_id(c, &user)?;
            c.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![uid, password_hash])?;
            let Some(keep) = keep else {
                return Ok(Vec::new());
            };
            let mut hashes = tokens_of(c, uid)?;
            hashes.retain(|h| Some(h) != keep.as_ref());
            revoke(c, hashes)
        })
        .await
    }

    async fn set_disabled(&self, user: &str, disabled: bool) -> Result<Vec<Vec<u8>>, StoreError> {
        let user = user.to_owned();
        self.write(move |c| {
            let uid = user_id(c, &user)?;
            if !disabled {
                c.prepare_cached("UPDATE users SET disabled_at = NULL WHERE id = ?1")?
                    .execute([uid])?;
                return Ok(Vec::new());
            }
            c.prepare_cached(
                "UPDATE users SET disabled_at = COALESCE(disabled_at, ?2) WHERE id = ?1",
            )?
            .execute(params![uid, now_ms()])?;
            let hashes = tokens_of(c, uid)?;
            revoke(c, hashes)
        })
        .await
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRow>, StoreError> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.name, u.created_at, u.disabled_at,
                    (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id)
                 FROM users u WHERE u.name > ?1 ORDER BY u.name LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                Ok(UserRow {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                    disabled_ms: r.get(2)?,
                    sessions: r.get::<_, i64>(3)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn revocation_cursor(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(MAX(id), 0) FROM token_revocations",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, hash FROM token_revocations WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                Ok(Revocation {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
