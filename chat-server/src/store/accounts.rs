//! Accounts beyond creating one: sessions (tokens) with their last use and a bound per user,
//! password changes, disabled accounts, and the revocation log.
//!
//! The revocation log is how a revocation made outside a serving node (the `chat-server user`
//! commands write the database and nothing else) reaches every node: each revocation appends a
//! row in the same transaction, ids grow in commit order, and every node reads the rows past the
//! last id it saw every few seconds (`crate::revocations`). Revocations made by a node are also
//! published through the broker at once; the log makes them durable and covers what a broker
//! outage would lose. Rows are kept for [`REVOCATION_RETENTION_MS`], then pruned by the next
//! revocation.

use async_trait::async_trait;

use super::StoreError;

/// How long a revocation stays in the log: a node that cannot read the database for longer
/// than this may miss one (its connections with that token stay open until they reconnect).
pub const REVOCATION_RETENTION_MS: i64 = 60 * 60 * 1000;

/// What login and registration need to know of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub password_hash: String,
    /// Disabled by the operator: no login, no new token, the name not free.
    pub disabled: bool,
}

/// A valid token: whose it is, and when it last authenticated a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub user: String,
    pub last_used_ms: i64,
}

/// One of a user's tokens, as `session_list` is made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The token's stored hash (never the token).
    pub hash: Vec<u8>,
    pub created_ms: i64,
    pub last_used_ms: i64,
}

/// What [`AccountStore::issue_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// The token is stored; these older ones were revoked to keep the user within the bound.
    Stored { evicted: Vec<Vec<u8>> },
    /// The account is disabled: nothing was stored.
    Disabled,
}

/// Which of a user's tokens a password change revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke<'a> {
    None,
    /// Every token but this one (the connection that asked keeps its own).
    AllBut(&'a [u8]),
    All,
}

/// One line of `chat-server user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub created_ms: i64,
    /// When the account was disabled; `None` while it is enabled.
    pub disabled_ms: Option<i64>,
    /// Tokens not revoked.
    pub sessions: u64,
}

/// A row of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Grows in commit order: a reader that saw id `n` has seen every revocation before it.
    pub id: i64,
    pub hash: Vec<u8>,
}

/// The accounts part of [`super::Store`] (a supertrait of it, so `dyn Store` has all of this).
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// The account called `name`, if there is one.
    async fn account(&self, name: &str) -> Result<Option<Account>, StoreError>;

    /// Stores a token hash for `user` (the token itself is never stored), its last use set to
    /// now, unless the account is disabled (checked in the same transaction as the insert, so a
    /// concurrent disable either sees the new token and revokes it or makes this refuse). Past
    /// `max_sessions` tokens, the oldest others are revoked (logged like any revocation).
    /// `NotFound` without such a user.
    async fn issue_token(
        &self,
        user: &str,
        token_hash: &[u8],
        max_sessions: u32,
    ) -> Result<Issued, StoreError>;

    /// The token's user and last use, unless the token is unknown or revoked, or its account
    /// disabled.
    async fn token_use(&self, token_hash: &[u8]) -> Result<Option<TokenUse>, StoreError>;

    /// Records that the token authenticated a connection at `at_ms`. Nothing if it is gone.
    async fn touch_token(&self, token_hash: &[u8], at_ms: i64) -> Result<(), StoreError>;

    /// Revokes a token (logged); false if it was not there.
    async fn revoke_token(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// `user`'s tokens, newest first (by issue, then by hash), at most `limit`.
    async fn sessions(&self, user: &str, limit: u32) -> Result<Vec<SessionRecord>, StoreError>;

    /// Replaces `user`'s password hash and revokes what `revoke` says, in one transaction;
    /// returns the revoked token hashes. `NotFound` without such a user.
    async fn set_password(
        &self,
        user: &str,
        password_hash: &str,
        revoke: Revoke<'_>,
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Disables (revoking every token, returned) or enables `user`. Disabling a disabled
    /// account keeps its first `disabled_at`. `NotFound` without such a user.
    async fn set_disabled(&self, user: &str, disabled: bool) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Users by name, named after `after`, at most `limit`.
    async fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRow>, StoreError>;

    /// The id of the newest row of the revocation log (0 when empty): a node starting reads
    /// from there (its connections are all newer than what came before).
    async fn revocation_cursor(&self) -> Result<i64, StoreError>;

    /// Rows of the revocation log with an id above `after`, ascending, at most `limit`.
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError>;
}
