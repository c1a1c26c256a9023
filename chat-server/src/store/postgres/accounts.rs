//! [`AccountStore`] on PostgreSQL. Several nodes and the `chat-server user` commands write at
//! once, so the transactions below take their locks in one order: the user's row first (a
//! login `FOR SHARE`, so logins do not wait for each other; a disable or password change by
//! updating it), then token rows, and last the revocation log's table lock, after which nothing
//! else is waited for. A disable and a login of the same user are thereby serialised: either
//! the login sees the account disabled, or the disable sees (and revokes) the login's token.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::queries::user_id;
use super::{PgStore, db_err, deadline};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::accounts::{
    Account, AccountStore, Issued, REVOCATION_RETENTION_MS, Revocation, Revoke, SessionRecord,
    TokenUse, UserRow,
};

/// Deletes these tokens and appends the ones that were there to the revocation log (pruning
/// what is past its retention), inside the caller's transaction. The table lock makes the log's
/// writers take ids and commit one at a time, so ids grow in commit order.
async fn revoke(c: &impl GenericClient, hashes: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let gone: Vec<Vec<u8>> = c
        .query(
            "DELETE FROM tokens WHERE hash = ANY($1) RETURNING hash",
            &[&hashes],
        )
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if gone.is_empty() {
        return Ok(gone);
    }
    let now = now_ms();
    c.batch_execute("LOCK TABLE token_revocations IN EXCLUSIVE MODE")
        .await
        .map_err(db_err)?;
    c.execute(
        "INSERT INTO token_revocations (hash, revoked_at) SELECT unnest($1::bytea[]), $2",
        &[&gone, &now],
    )
    .await
    .map_err(db_err)?;
    c.execute(
        "DELETE FROM token_revocations WHERE revoked_at < $1",
        &[&(now - REVOCATION_RETENTION_MS)],
    )
    .await
    .map_err(db_err)?;
    Ok(gone)
}

/// The hashes of `uid`'s tokens, oldest first.
async fn tokens_of(c: &impl GenericClient, uid: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(c.query(
        "SELECT hash FROM tokens WHERE user_id = $1 ORDER BY created_at, hash",
        &[&uid],
    )
    .await
    .map_err(db_err)?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

#[async_trait]
impl AccountStore for PgStore {
    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let row = self
            .row(
                "SELECT password_hash, disabled_at IS NOT NULL FROM users WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.map(|r| Account {
            password_hash: r.get(0),
            disabled: r.get(1),
        }))
    }

    async fn issue_token(
        &self,
        user: &str,
        token_hash: &[u8],
        max_sessions: u32,
    ) -> Result<Issued, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            // FOR SHARE: a disable (an UPDATE of this row) waits for this transaction, or this
            // waits for it and then reads the account as disabled.
            let row = tx
                .query_opt(
                    "SELECT id, disabled_at IS NOT NULL FROM users WHERE name = $1 FOR SHARE",
                    &[&user],
                )
                .await
                .map_err(db_err)?
                .ok_or(StoreError::NotFound)?;
            let (uid, disabled): (i64, bool) = (row.get(0), row.get(1));
            if disabled {
                return Ok(Issued::Disabled);
            }
            tx.execute(
                "INSERT INTO tokens (hash, user_id, created_at, last_used_at) VALUES ($1, $2, $3, $3)",
                &[&token_hash, &uid, &now_ms()],
            )
            .await
            .map_err(db_err)?;
            let mut others = tokens_of(&tx, uid).await?;
            others.retain(|h| h.as_slice() != token_hash);
            let keep = (max_sessions as usize).saturating_sub(1);
            others.truncate(others.len().saturating_sub(keep));
            let evicted = revoke(&tx, &others).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(Issued::Stored { evicted })
        })
        .await
    }

    async fn token_use(&self, token_hash: &[u8]) -> Result<Option<TokenUse>, StoreError> {
        let row = self
            .row(
                "SELECT u.name, t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.hash = $1 AND u.disabled_at IS NULL",
                &[&token_hash],
            )
            .await?;
        Ok(row.map(|r| TokenUse {
            user: r.get(0),
            last_used_ms: r.get(1),
        }))
    }

    async fn touch_token(&self, token_hash: &[u8], at_ms: i64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE tokens SET last_used_at = $2 WHERE hash = $1",
            &[&token_hash, &at_ms],
        )
        .await?;
        Ok(())
    }

    async fn revoke_token(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let gone = revoke(&tx, &[token_hash.to_vec()]).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(!gone.is_empty())
        })
        .await
    }

    async fn sessions(&self, user: &str, limit: u32) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT t.hash, t.created_at, t.last_used_at FROM tokens t
                 JOIN users u ON u.id = t.user_id WHERE u.name = $1
                 ORDER BY t.created_at DESC, t.hash DESC LIMIT $2",
                &[&user, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SessionRecord {
                hash: r.get(0),
                created_ms: r.get(1),
                last_used_ms: r.get(2),
            })
            .collect())
    }

    async fn set_password(
        &self,
        user: &str,
        password_hash: &str,
        revoke_which: Revoke<'_>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let uid = user_id(&tx, user).await?;
            tx.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                &[&uid, &password_hash],
            )
            .await
            .map_err(db_err)?;
            let mut hashes = match revoke_which {
                Revoke::None => Vec::new(),
                Revoke::AllBut(_) | Revoke::All => tokens_of(&tx, uid).await?,
            };
            if let Revoke::AllBut(keep) = revoke_which {
                hashes.retain(|h| h.as_slice() != keep);
            }
            let gone = revoke(&tx, &hashes).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(gone)
        })
        .await
    }

    async fn set_disabled(&self, user: &str, disabled: bool) -> Result<Vec<Vec<u8>>, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let now = now_ms();
            let row = match disabled {
                true => {
                    tx.query_opt(
                        "UPDATE users SET disabled_at = COALESCE(disabled_at, $2) WHERE name = $1 RETURNING id",
                        &[&user, &now],
                    )
                    .await
                }
                false => {
                    tx.query_opt(
                        "UPDATE users SET disabled_at = NULL WHERE name = $1 RETURNING id",
                        &[&user],
                    )
                    .await
                }
            }
            .map_err(db_err)?
            .ok_or(StoreError::NotFound)?;
            let gone = match disabled {
                // A new statement, so it sees a token whose login committed while this
                // transaction waited for the row.
                true => revoke(&tx, &tokens_of(&tx, row.get(0)).await?).await?,
                false => Vec::new(),
            };
            tx.commit().await.map_err(db_err)?;
            Ok(gone)
        })
        .await
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT u.name, u.created_at, u.disabled_at,
                    (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id)
                 FROM users u WHERE u.name > $1 ORDER BY u.name LIMIT $2",
                &[&after.unwrap_or(""), &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| UserRow {
                name: r.get(0),
                created_ms: r.get(1),
                disabled_ms: r.get(2),
                sessions: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn revocation_cursor(&self) -> Result<i64, StoreError> {
        let row = self
            .row("SELECT COALESCE(MAX(id), 0) FROM token_revocations", &[])
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = self
            .rows(
                "SELECT id, hash FROM token_revocations WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                id: r.get(0),
                hash: r.get(1),
            })
            .collect())
    }
}
