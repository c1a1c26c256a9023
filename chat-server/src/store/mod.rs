//! Durable state behind one trait. Handlers talk to [`Store`], never to a database; the embedded
//! default is [`sqlite::SqliteStore`]; [`postgres::PgStore`] lets several nodes share one database.
//! [`suite`] is the behaviour any implementation must pass.
//!
//! Rules every implementation keeps:
//! - per room, `append` assigns seqs strictly increasing and gap-free, in commit order;
//! - an `append`'s completion runs only after the message is durably committed, and completions
//!   run in commit order (the fan-out relies on this to publish in seq order);
//! - `(user, client id)` is unique: a repeated append returns the original seq, flagged duplicate.

pub mod accounts;
pub mod log;
pub mod postgres;
pub mod search;
pub mod sqlite;
pub mod suite;
pub mod suite_log;
pub mod suite_moderation;
pub mod suite_search;

pub use accounts::AccountStore;

use async_trait::async_trait;
use chat_proto::{
    BanInfo, HistoryMessage, ReadState, Role, RoomEvent, RoomInfo, RoomKind, RoomSettings,
    SearchResult, Visibility,
};

use crate::moderation::Refusal;

pub use search::{Cursor, SearchRequest};

/// Why a storage call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A name that must be unique is taken (user, room).
    #[error("already exists")]
    Conflict,
    /// A referenced user or room does not exist.
    #[error("not found")]
    NotFound,
    /// The database failed; the operation did not happen.
    #[error("database: {0}")]
    Db(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// The database is locked by someone else for longer than the server waits; nothing was
    /// written. Worth retrying.
    #[error("database busy (locked by another process)")]
    Busy,
    /// The database could not be reached, or did not answer in time. Nothing new was written,
    /// except that an append whose COMMIT was under way may have been stored: a resend with the
    /// same client id finds it. Worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The event names a message that is not in the room (or, for an edit or a reaction, one
    /// that is deleted). Nothing was written.
    #[error("no such message")]
    NoSuchMessage,
    /// The event is not the user's to make (an edit of someone else's message). Nothing was
    /// written.
    #[error("not allowed")]
    NotAllowed,
    /// A change the actor's role (or the target's) does not allow, judged in the change's
    /// transaction (see `crate::moderation`). Nothing was written.
    #[error("refused: {0}")]
    Refused(Refusal),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == DatabaseBusy || f.code == DatabaseLocked =>
            {
                StoreError::Busy
            }
            _ => StoreError::Db(e.to_string()),
        }
    }
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub name: String,
    pub kind: RoomKind,
    pub visibility: Visibility,
    pub topic: String,
    /// Changes whenever the room's history is recreated; a `since_seq` is only valid within one.
    pub epoch: String,
    /// Who created it (or was handed it) and may delete it (`None` for direct-message rooms and
    /// for rooms made before rooms had owners).
    pub owner: Option<String>,
    /// What the room leaves to its members.
    pub settings: RoomSettings,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: String,
    pub from: String,
    pub client_id: String,
    pub body: String,
    /// A message of the same room this one answers (checked by the caller: it exists).
    pub reply_to: Option<u64>,
}

impl NewMessage {
    pub fn new(room: &str, from: &str, client_id: &str, body: &str) -> Self {
        Self {
            room: room.to_owned(),
            from: from.to_owned(),
            client_id: client_id.to_owned(),
            body: body.to_owned(),
            reply_to: None,
        }
    }
}

/// A change to a room other than a message, applied atomically with the event that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace the body of `target`, a message by the same user that is not deleted.
    Edit { target: u64, body: String },
    /// Tombstone `target` and remove its body (and its edits' bodies): the author's, or
    /// anyone's by a moderator of the room (not in a direct-message room).
    Delete { target: u64 },
    /// Set the user's one reaction to `target` (not deleted).
    React { target: u64, emoji: String },
    /// Remove the user's reaction `emoji` to `target`.
    Unreact { target: u64, emoji: String },
    /// Set the topic: a member may, unless the room's settings leave it to moderators.
    Topic { topic: String },
    /// Become a member (using up an invite); refused while banned. Nothing is recorded if
    /// already one.
    Join,
    /// Stop being a member (and lose an invite). Nothing is recorded if not one.
    Leave,
    /// Remove member `user` (and their invite), by a moderator who outranks them
    /// (`crate::moderation::may`).
    Kick {
        user: String,
        reason: Option<String>,
    },
    /// Ban `user` (removing them if a member) by a moderator who outranks them. Nothing is
    /// recorded if they are banned already.
    Ban {
        user: String,
        reason: Option<String>,
    },
    /// Lift `user`'s ban. Nothing is recorded if there is none.
    Unban { user: String },
    /// The owner gives member `user` a role; `Owner` hands the room over (the owner before
    /// becomes a moderator). Nothing is recorded if they have it already.
    SetRole { user: String, role: Role },
}

/// A change to apply to `room`, made by `from`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub room: String,
    pub from: String,
    pub change: Change,
}

/// What applying a change stored: the event, or `None` when there was nothing to change (a
/// reaction already there, a message already deleted, a join by a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub room: String,
    pub event: Option<RoomEvent>,
}

/// Who reads history: `user` decides each reaction's `me`; `tombstones` says whether deleted
/// messages show (protocol 2) or are left out (protocol 1).
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user: &'a str,
    pub tombstones: bool,
}

/// A message's author and whether it is deleted: what permission checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub from: String,
    pub deleted: bool,
}

/// The outcome of an append: where the message is, and whether it had been stored before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The room the message is in (for a duplicate: the room of the original).
    pub room: String,
    pub seq: u64,
    pub ts: i64,
    pub from: String,
    pub client_id: String,
    pub body: String,
    pub reply_to: Option<u64>,
    pub duplicate: bool,
}

/// Called once per append (or applied change), after the commit (or its failure), in commit
/// order, on the store's writer thread: it must not block. If the store drops it uncalled
/// (shutdown, a batch that could not start), it reports `Closed`, so no sender waits forever.
pub struct Done<T: 'static>(Option<DoneFn<T>>);

type DoneFn<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// The completion of an [`Store::append`].
pub type AppendDone = Done<Appended>;
/// The completion of an [`Store::apply`].
pub type ApplyDone = Done<Applied>;

impl<T: 'static> Done<T> {
    pub fn new(f: impl FnOnce(Result<T, StoreError>) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    pub fn call(mut self, result: Result<T, StoreError>) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl<T: 'static> Drop for Done<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(StoreError::Closed));
        }
    }
}

/// Everything the server keeps durably; tokens and the rest of accounts are in
/// [`AccountStore`].
#[async_trait]
pub trait Store: AccountStore + Send + Sync + 'static {
    /// Creates a user; `Conflict` if the name is taken.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError>;
    /// The stored password hash of `name`, if the user exists.
    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn user_exists(&self, name: &str) -> Result<bool, StoreError>;

    /// Creates a room with `owner` as its first member; `Conflict` if the name is taken.
    async fn create_room(
        &self,
        name: &str,
        visibility: Visibility,
        topic: &str,
        owner: &str,
    ) -> Result<RoomRecord, StoreError>;
    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError>;
    /// Public rooms, and private rooms `user` is a member of or invited to, by name: at most
    /// `limit` of them, named after `after`.
    async fn rooms_for(
        &self,
        user: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError>;
    /// Rooms `user` owns (created).
    async fn rooms_owned(&self, user: &str) -> Result<u64, StoreError>;
    /// Deletes a room with its messages, members and invites; false if there was none.
    async fn delete_room(&self, room: &str) -> Result<bool, StoreError>;
    async fn set_topic(&self, room: &str, topic: &str) -> Result<(), StoreError>;
    /// The direct-message room of `a` and `b` (named by [`chat_proto::limits::dm_room_name`]),
    /// created with both as members if it does not exist.
    async fn open_dm(&self, a: &str, b: &str) -> Result<RoomRecord, StoreError>;

    /// Makes `user` a member; true if they were not one before.
    async fn add_member(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// Ends `user`'s membership; true if they were one.
    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    async fn is_member(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// `user`'s role in `room`: `None` if not a member.
    async fn role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError>;
    /// The roles of those of `users` (at most a page of them) who are members of `room`.
    async fn roles_of(
        &self,
        room: &str,
        users: &[String],
    ) -> Result<std::collections::HashMap<String, Role>, StoreError>;
    async fn is_banned(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// The room's bans by user name: at most `limit`, named after `after`.
    async fn bans(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BanInfo>, StoreError>;
    /// Changes the settings given (`None` keeps one) if `user` owns the room; returns them
    /// after. `Refused(NotOwner)` otherwise, `NotFound` without such a room.
    async fn configure_room(
        &self,
        room: &str,
        user: &str,
        members_set_topic: Option<bool>,
        members_invite: Option<bool>,
    ) -> Result<RoomSettings, StoreError>;
    /// Member usernames, sorted: at most `limit`, named after `after`.
    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    async fn member_count(&self, room: &str) -> Result<u64, StoreError>;
    async fn invite(&self, room: &str, user: &str) -> Result<(), StoreError>;
    async fn is_invited(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// Removes `user`'s invite to `room`; false if there was none.
    async fn decline_invite(&self, room: &str, user: &str) -> Result<bool, StoreError>;

    /// Queues a message for the next group commit. Returns once queued (waiting while the queue
    /// is full: that is the back-pressure); `done` runs after the commit.
    async fn append(&self, msg: NewMessage, done: AppendDone) -> Result<(), StoreError>;
    /// Queues a change for the next group commit, like `append`: its event takes the room's
    /// next seq, and `done` runs after the commit, in commit order with the appends.
    async fn apply(&self, event: NewEvent, done: ApplyDone) -> Result<(), StoreError>;
    /// The room's highest committed seq, over events of every kind (0 when empty).
    async fn latest_seq(&self, room: &str) -> Result<u64, StoreError>;
    /// Up to `limit` messages with seq below `before` (or the latest), ascending, folded (current
    /// body, edit time, reply target, reaction counts as `viewer` sees them), and whether older
    /// ones remain. Deleted ones count and show only with `viewer.tombstones`.
    async fn history_before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: u32,
        viewer: Viewer<'_>,
    ) -> Result<(Vec<HistoryMessage>, bool), StoreError>;
    /// The messages of `room` with these seqs (at most a page), folded as `history_before`.
    async fn messages_at(
        &self,
        room: &str,
        seqs: &[u64],
        viewer: Viewer<'_>,
    ) -> Result<Vec<HistoryMessage>, StoreError>;
    /// Up to `limit` messages (not deleted) with `after < seq <= upto`, ascending: protocol 1's
    /// replay, current bodies, no reactions.
    async fn messages_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<HistoryMessage>, StoreError>;
    /// Up to `limit` events of every kind with `after < seq <= upto`, ascending: protocol 2's
    /// replay. A message event carries the message's current body.
    async fn events_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<RoomEvent>, StoreError>;
    /// The author of message `seq` and whether it is deleted; `None` if `seq` is no message.
    async fn message_info(&self, room: &str, seq: u64) -> Result<Option<MessageInfo>, StoreError>;

    /// Moves `user`'s read position in `room` up to `seq` (clamped to the room's latest seq;
    /// never back) and returns the read state after.
    async fn mark_read(&self, user: &str, room: &str, seq: u64) -> Result<ReadState, StoreError>;
    /// `user`'s read state in `room`.
    async fn read_state(&self, user: &str, room: &str) -> Result<ReadState, StoreError>;

    /// Messages (not deleted, by their current body) of the rooms `req.user` is a member of
    /// that match `req`: newest first by `(ts, room, seq)`, after `req.before`, at most
    /// `req.limit`. A `req.room` the user is not a member of gives none (the caller checks
    /// membership first, for its errors).
    async fn search(&self, req: &SearchRequest) -> Result<Vec<SearchResult>, StoreError>;

    /// Waits until everything queued so far is committed (used at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// The group commit's histograms for `/metrics` (handles shared with the writer), if this
    /// store keeps them.
    fn commit_metrics(&self) -> Option<crate::metrics::StoreMetrics> {
        None
    }
}

/// Applies and waits for the commit: for tests and tools.
pub async fn apply_and_wait(store: &dyn Store, event: NewEvent) -> Result<Applied, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .apply(
            event,
            ApplyDone::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await?;
    rx.await.map_err(|_| StoreError::Closed)?
}

/// Appends and waits for the commit: for tests and tools, not the hot path.
pub async fn append_and_wait(store: &dyn Store, msg: NewMessage) -> Result<Appended, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .append(
            msg,
            AppendDone::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await?;
    rx.await.map_err(|_| StoreError::Closed)?
}
