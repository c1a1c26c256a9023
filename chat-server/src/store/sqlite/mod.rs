//! The embedded default store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread (SQLite has one writer anyway, and this way nothing
//! ever waits on `SQLITE_BUSY`). The thread drains whatever is queued, runs it in one
//! transaction, commits once (one fsync with `synchronous=FULL`), then runs the completions in
//! order: that is the group commit. Reads run on a small pool of read-only connections in
//! `spawn_blocking`; WAL lets them proceed while the writer writes, and they only ever see
//! committed data.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_proto::limits::dm_room_name;
use chat_proto::{HistoryMessage, RoomInfo, RoomKind, Visibility};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;

use std::collections::HashMap;

use super::{
    AppendDone, Appended, ApplyDone, MessageInfo, NewEvent, NewMessage, RoomRecord, Store,
    StoreError, Viewer,
};
use chat_proto::{ReadState, RoomEvent};

mod log;
mod moderation;
mod search;

mod accounts;

/// A unit of work for the writer thread: runs inside the batch's transaction and returns what to
/// do once the commit's outcome is known.
/// Runs inside a batch's transaction; told why instead when the batch could not start.
type Job = Box<dyn FnOnce(Result<&mut Writer, &StoreError>) -> Completion + Send>;

/// The writer thread's connection and what it remembers between messages. Only this thread
/// writes, so its copy of each room's last seq is exact. A room's latest seq is stored nowhere
/// but in its messages (`MAX(seq)`, one B-tree seek): a per-room counter row would be one more
/// page written per room per batch, a third of the WAL in the many-rooms benchmark.
struct Writer {
    conn: Connection,
    /// Room name -> (id, last seq), for rooms this thread appended to.
    rooms: HashMap<String, (i64, i64)>,
    users: HashMap<String, i64>,
    /// A savepoint could not be released or rolled back: the batch must not commit.
    broken: bool,
}

impl Writer {
    fn user_id(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.users.get(name) {
            return Ok(*id);
        }
        let id = user_id(&self.conn, name)?;
        if self.users.len() >= 100_000 {
            self.users.clear();
        }
        self.users.insert(name.to_owned(), id);
        Ok(id)
    }

    fn room_seq(&mut self, name: &str) -> Result<(i64, i64), StoreError> {
        if let Some(r) = self.rooms.get(name) {
            return Ok(*r);
        }
        let r: (i64, i64) = self
            .conn
            .prepare_cached(LATEST_SEQ_SQL)?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or(StoreError::NotFound)?;
        if self.rooms.len() >= 100_000 {
            self.rooms.clear();
        }
        self.rooms.insert(name.to_owned(), r);
        Ok(r)
    }

    /// After a failed batch: what was remembered may not be what is stored.
    fn forget(&mut self) {
        self.rooms.clear();
        self.broken = false;
    }
}
type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A room's id and latest seq (0 when empty), by name.
const LATEST_SEQ_SQL: &str =
    "SELECT r.id, COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.room_id = r.id), 0)
     FROM rooms r WHERE r.name = ?1";

/// Most jobs in one transaction: bounds the latency a large batch adds to its first message.
const MAX_BATCH: usize = 4096;
/// Read connections kept open for reuse.
const READ_POOL: usize = 4;

/// The error a job reports when its batch did not commit.
fn batch_failed(e: &StoreError) -> StoreError {
    match e {
        StoreError::Busy => StoreError::Busy,
        other => StoreError::Db(format!("commit failed: {other}")),
    }
}

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    visibility TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE members (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE TABLE invites (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE TABLE messages (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    seq INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id),
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_by_client_id ON messages(user_id, client_id);
"#,
    // A room's latest seq is MAX(seq) of its messages (see `Writer`).
    r#"
ALTER TABLE rooms DROP COLUMN last_seq;
"#,
    // Rooms have an owner (its creator; NULL for rooms made before owners, and for DMs), who may
    // delete it, and whose rooms count against their quota.
    r#"
ALTER TABLE rooms ADD COLUMN owner_id INTEGER REFERENCES users(id);
CREATE INDEX rooms_by_owner ON rooms(owner_id);
"#,
    // Protocol 2: `messages` is the room's log, every kind of event a row (store/log.rs);
    // reactions, read positions and mentions beside it. A row from before has kind 0, a message.
    r#"
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN target INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited_ts INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN subject TEXT;
-- A delete finds the edits of its message (partial: message rows have no target).
CREATE INDEX messages_by_target ON messages(room_id, target) WHERE target IS NOT NULL;
CREATE TABLE reactions (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    seq INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id),
    emoji TEXT NOT NULL,
    PRIMARY KEY (room_id, seq, user_id)
) WITHOUT ROWID;
CREATE TABLE read_state (
    user_id INTEGER NOT NULL REFERENCES users(id),
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    read_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;
CREATE TABLE mentions (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    seq INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, seq)
) WITHOUT ROWID;
-- Members from before have read what was there: unread counts start now, not at seq 1.
INSERT INTO read_state (user_id, room_id, read_seq)
    SELECT p.user_id, p.room_id,
        COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.room_id = p.room_id), 0)
    FROM members p;
"#,
    // Accounts (see `store::accounts`): disabled accounts, each token's last use (its issue, for
    // the tokens already there), a user's tokens by age, and the revocation log every node polls.
    // AUTOINCREMENT: ids are never reused once pruned rows are gone, so a reader's cursor holds.
    r#"
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET last_used_at = created_at;
CREATE INDEX tokens_by_user ON tokens(user_id, created_at);
CREATE TABLE token_revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL,
    revoked_at INTEGER NOT NULL
);
CREATE INDEX token_revocations_by_time ON token_revocations(revoked_at);
"#,
    // Search (protocol 2): a full-text index of the messages' current bodies. Contentless
    // (`content=''`): the bodies are in `messages` already, and an external-content table
    // needs an integer key, which `messages` (WITHOUT ROWID, keyed by room and seq) lacks.
    // `contentless_delete=1` lets the triggers take a row out when its message is edited,
    // deleted or its room dropped, in the transaction that changes it. The rowid is
    // room_id * 2^32 + seq (a seq past 2^32 in one room is not indexed). unicode61 without
    // diacritic removal cuts tokens as the PostgreSQL store does (chat_proto::search).
    r#"
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN NEW.kind = 0 AND NOT NEW.deleted AND NEW.seq < 4294967296
BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES ((NEW.room_id << 32) + NEW.seq, NEW.body);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, deleted ON messages
WHEN OLD.kind = 0 AND OLD.seq < 4294967296
BEGIN
    DELETE FROM messages_fts WHERE rowid = (OLD.room_id << 32) + OLD.seq;
    INSERT INTO messages_fts (rowid, body)
        SELECT (NEW.room_id << 32) + NEW.seq, NEW.body WHERE NOT NEW.deleted;
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN OLD.kind = 0 AND OLD.seq < 4294967296
BEGIN
    DELETE FROM messages_fts WHERE rowid = (OLD.room_id << 32) + OLD.seq;
END;
INSERT INTO messages_fts (rowid, body)
    SELECT (room_id << 32) + seq, body FROM messages
    WHERE kind = 0 AND NOT deleted AND seq < 4294967296;
"#,
    // Moderation (protocol 2, store/sqlite/moderation.rs): a member's role (`member` or
    // `moderator`; the owner is `rooms.owner_id`), what a room leaves to its members, and bans.
    r#"
ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE rooms ADD COLUMN members_set_topic INTEGER NOT NULL DEFAULT 1;
ALTER TABLE rooms ADD COLUMN members_invite INTEGER NOT NULL DEFAULT 1;
CREATE TABLE bans (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    by_id INTEGER NOT NULL REFERENCES users(id),
    ts INTEGER NOT NULL,
    reason TEXT,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
"#,
];

/// A serving server's claim on its database file: one `chat-server` per file. Two would each
/// keep their own copy of every room's latest seq, and every send of the one that wrote second
/// would fail. Held until dropped; the kernel drops it with the process, `kill -9` included.
#[derive(Debug)]
pub struct Claim {
    _file: std::fs::File,
}

/// Claims `path` (an advisory lock on `path.lock`, beside it) for this process, or says who
/// holds it.
pub fn claim(path: &Path) -> Result<Claim, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    make_parent(path)?;
    let lock = path.with_extension(match path.extension() {
        Some(e) => format!("{}.lock", e.to_string_lossy()),
        None => "lock".into(),
    });
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(|e| StoreError::Db(format!("opening {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Claim { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Db(format!(
            "another chat-server is already serving {} (it holds {}): stop it first, or give this one another --db",
            path.display(),
            lock.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Db(format!("locking {}: {e}", lock.display())))
        }
    }
}

/// Creates the database's directory if missing, readable by the server's user only.
fn make_parent(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

/// The SQLite store. Cloning is cheap and shares the writer and the read pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Bounded: when the writer falls behind, `append` waits here, which stops the sender's
    /// connection from reading more, which pushes back on the client through TCP.
    jobs: mpsc::Sender<Job>,
    /// Idle read connections. A std Mutex: held only to push or pop, never across `.await`.
    readers: Mutex<Vec<Connection>>,
    /// At most `READ_POOL` reads at once: a burst waits for a connection instead of opening one
    /// per request (each with its own page cache, on its own thread: measured, 100 concurrent
    /// logins left hundreds of MB behind).
    read_slots: tokio::sync::Semaphore,
    /// What the writer records of each batch, for `/metrics`.
    metrics: crate::metrics::StoreMetrics,
}

fn kind_str(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Room => "room",
        RoomKind::Dm => "dm",
    }
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn room_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRecord> {
    let kind: String = row.get(1)?;
    let vis: String = row.get(2)?;
    Ok(RoomRecord {
        name: row.get(0)?,
        kind: if kind == "dm" {
            RoomKind::Dm
        } else {
            RoomKind::Room
        },
        visibility: if vis == "private" {
            Visibility::Private
        } else {
            Visibility::Public
        },
        topic: row.get(3)?,
        epoch: row.get(4)?,
        owner: row.get(5)?,
        settings: chat_proto::RoomSettings {
            members_set_topic: row.get(6)?,
            members_invite: row.get(7)?,
        },
    })
}

/// A room's columns as [`room_from_row`] reads them, from `rooms` (aliased or not).
const ROOM_COLUMNS: &str = "name, kind, visibility, topic, epoch,
    (SELECT u.name FROM users u WHERE u.id = owner_id), members_set_topic, members_invite";

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk, not only in the OS, before any ack goes out.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let version: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Db(format!(
            "database schema version {version} is newer than this server knows ({}); upgrade chat-server",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        make_parent(path)?;
        // The file holds password and token hashes: readable by the server's user only. SQLite
        // gives its -wal and -shm files the database file's permissions.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Db(format!("creating {}: {e}", path.display())))?;
        }
        let mut writer = Connection::open(path)?;
        // A new database gets 1 KiB pages: a message touches a few scattered pages (its room's
        // messages, its sender's dedupe index), and each commit writes each whole page to the
        // WAL, so smaller pages write several times fewer bytes per message. Must precede WAL.
        let fresh: i64 =
            writer.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if fresh == 0 {
            writer.pragma_update(None, "page_size", 1024)?;
        }
        configure(&writer)?;
        migrate(&mut writer)?;
        // Checkpoints run on their own thread (below): run by the writer, every ~1,000 pages a
        // commit waited for the WAL to be copied and synced, which put ~90 ms stalls into p99
        // at 1,000 msg/s (measured with chat-bench --rooms).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Once a checkpoint lets the WAL restart, its file is cut back to this size.
        writer.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        let (jobs, rx) = mpsc::channel::<Job>(MAX_BATCH);
        let metrics = crate::metrics::StoreMetrics::default();
        let recorder = metrics.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, recorder))
            .map_err(|e| StoreError::Db(format!("starting writer thread: {e}")))?;
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            jobs,
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READ_POOL),
            metrics,
        });
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer)?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, weak))
            .map_err(|e| StoreError::Db(format!("starting checkpoint thread: {e}")))?;
        Ok(Self { inner })
    }

    /// Runs `f` inside the next batch's transaction (in a savepoint, so its failure undoes only
    /// its own writes) and returns its result once the batch is committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(move |w| f(&w.conn)).await
    }

    /// [`SqliteStore::write`] with the writer's state (its remembered seqs) at hand.
    async fn write_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w| {
            let result = w
                .map_err(StoreError::clone)
                .and_then(|w| in_savepoint(w, f));
            Box::new(move |commit| {
                let r = match commit {
                    Ok(()) => result,
                    Err(e) => Err(batch_failed(e)),
                };
                let _ = tx.send(r);
            })
        });
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().map(|mut p| p.pop()).unwrap_or(None);
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&c)?;
                    c
                }
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < READ_POOL
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?
    }
}

/// Runs one job in a savepoint, so its failure undoes only its own writes. Cached statements:
/// this runs once per message on the writer thread.
fn in_savepoint<T>(
    w: &mut Writer,
    f: impl FnOnce(&mut Writer) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    w.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(w);
    let closed = match &result {
        Ok(_) => w
            .conn
            .prepare_cached("RELEASE job")
            .and_then(|mut s| s.execute([])),
        Err(_) => w
            .conn
            .execute_batch("ROLLBACK TO job; RELEASE job")
            .map(|()| 0),
    };
    if let Err(e) = closed {
        // The writer's memory may now be ahead of the database: the whole batch rolls back.
        w.broken = true;
        return Err(e.into());
    }
    result
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    metrics: crate::metrics::StoreMetrics,
) {
    let mut w = Writer {
        conn,
        rooms: HashMap::new(),
        users: HashMap::new(),
        broken: false,
    };
    // Completions (encoding acks and broadcasts, queueing them) run on their own thread, in
    // batch order: the writer starts the next transaction meanwhile. Bounded, so a writer far
    // ahead of its completions waits instead of queueing without limit.
    let (done_tx, done_rx) =
        std::sync::mpsc::sync_channel::<(Vec<Completion>, Result<(), StoreError>)>(2);
    let completer = std::thread::Builder::new()
        .name("sqlite-done".into())
        .spawn(move || {
            for (done, outcome) in done_rx {
                run_completions(done, outcome);
            }
        });
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut stats = BatchStats::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let jobs = batch.len();
        let mut done: Vec<Completion> = Vec::with_capacity(batch.len());
        let outcome = match w.conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                for job in batch.drain(..) {
                    done.push(job(Ok(&mut w)));
                }
                if w.broken {
                    Err(StoreError::Db("a savepoint could not be closed".into()))
                } else {
                    w.conn.execute_batch("COMMIT").map_err(StoreError::from)
                }
            }
            Err(e) => {
                // The batch could not start (the file is locked by another process): every job
                // is told why, rather than dropped as if the server were shutting down.
                let e = StoreError::from(e);
                for job in batch.drain(..) {
                    done.push(job(Err(&e)));
                }
                Err(e)
            }
        };
        let took = started.elapsed();
        stats.record(jobs, took);
        metrics.batch(jobs, took);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "sqlite batch failed; its writes are rolled back");
            let _ = w.conn.execute_batch("ROLLBACK");
            w.forget();
            // Jobs that never ran answer `Closed` as they drop (oneshot and AppendDone).
            batch.clear();
        }
        match &completer {
            Ok(_) => {
                if let Err(std::sync::mpsc::SendError((done, outcome))) =
                    done_tx.send((done, outcome))
                {
                    run_completions(done, outcome);
                }
            }
            Err(_) => run_completions(done, outcome),
        }
    }
    drop(done_tx);
    // The writer thread ends only once every completion has run.
    if let Ok(c) = completer {
        let _ = c.join();
    }
}

/// What the writer did, logged every 10 s at debug level (`RUST_LOG=chat_server::store=debug`):
/// how many batches, how big, and how long from BEGIN to the end of COMMIT (its fsync).
struct BatchStats {
    since: std::time::Instant,
    batches: u64,
    jobs: u64,
    busy: std::time::Duration,
    longest: std::time::Duration,
}

impl BatchStats {
    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            batches: 0,
            jobs: 0,
            busy: std::time::Duration::ZERO,
            longest: std::time::Duration::ZERO,
        }
    }

    fn record(&mut self, jobs: usize, took: std::time::Duration) {
        self.batches += 1;
        self.jobs += jobs as u64;
        self.busy += took;
        self.longest = self.longest.max(took);
        let window = self.since.elapsed();
        if window >= std::time::Duration::from_secs(10) {
            tracing::debug!(
                batches = self.batches,
                jobs = self.jobs,
                per_batch = self.jobs / self.batches.max(1),
                busy_pct = (self.busy.as_secs_f64() / window.as_secs_f64() * 100.0).round(),
                mean_ms = self.busy.as_secs_f64() * 1000.0 / self.batches.max(1) as f64,
                longest_ms = self.longest.as_secs_f64() * 1000.0,
                "sqlite writer, last 10 s"
            );
            *self = Self::new();
        }
    }
}

fn run_completions(done: Vec<Completion>, outcome: Result<(), StoreError>) {
    for completion in done {
        completion(outcome.as_ref().map(|_| ()));
    }
}

/// How often the WAL is folded back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A WAL past this size gets a TRUNCATE checkpoint: under load without pauses, PASSIVE ones
/// may never let the WAL restart, and it would grow without bound. That checkpoint makes
/// commits wait (measured: p99 48 ms at a sustained 2,000 msg/s with a 64 MiB threshold), so
/// the threshold is high: the stall comes once per few minutes of such load, not every 10 s.
const WAL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// PASSIVE checkpoints never block the writer or readers; they copy what they can. Ends when
/// the store is dropped.
fn checkpoint_loop(conn: Connection, store: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let wal = match store.upgrade() {
            Some(inner) => {
                let mut p = inner.path.clone().into_os_string();
                p.push("-wal");
                std::path::PathBuf::from(p)
            }
            None => return,
        };
        let big = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_MAX_BYTES);
        let mode = if big { "TRUNCATE" } else { "PASSIVE" };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, mode, "wal checkpoint failed");
        }
    }
}

/// The two tables that pair a room with a user.
#[derive(Clone, Copy)]
enum PairTable {
    Members,
    Invites,
}

/// Whether `user` is paired with `room` in `table` (a member, or invited).
fn pair_exists(
    conn: &Connection,
    table: PairTable,
    room: &str,
    user: &str,
) -> Result<bool, StoreError> {
    // Each query is a constant, so the statement cache keeps both.
    let sql = match table {
        PairTable::Members => {
            "SELECT EXISTS(SELECT 1 FROM members p JOIN rooms r ON r.id = p.room_id
             JOIN users u ON u.id = p.user_id WHERE r.name = ?1 AND u.name = ?2)"
        }
        PairTable::Invites => {
            "SELECT EXISTS(SELECT 1 FROM invites p JOIN rooms r ON r.id = p.room_id
             JOIN users u ON u.id = p.user_id WHERE r.name = ?1 AND u.name = ?2)"
        }
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([room, user], |r| r.get(0))?)
}

fn user_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT id FROM users WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)
}

fn room_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT id FROM rooms WHERE name = ?1", [name], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)
}

fn insert_room(
    conn: &Connection,
    name: &str,
    kind: RoomKind,
    visibility: Visibility,
    topic: &str,
    owner: Option<(i64, &str)>,
) -> Result<(i64, RoomRecord), StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM rooms WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(StoreError::Conflict);
    }
    let epoch = new_epoch();
    conn.execute(
        "INSERT INTO rooms (name, kind, visibility, topic, epoch, created_at, owner_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![name, kind_str(kind), visibility_str(visibility), topic, epoch, now_ms(), owner.map(|o| o.0)],
    )?;
    let id = conn.last_insert_rowid();
    Ok((
        id,
        RoomRecord {
            name: name.to_owned(),
            kind,
            visibility,
            topic: topic.to_owned(),
            epoch,
            owner: owner.map(|o| o.1.to_owned()),
            settings: chat_proto::RoomSettings::default(),
        },
    ))
}

fn add_member_ids(conn: &Connection, room: i64, user: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO members (room_id, user_id) VALUES (?1, ?2)",
        params![room, user],
    )?;
    Ok(n > 0)
}

/// Stores one message, or finds the one already stored under the sender's client id. Runs in
/// a savepoint: the seq is taken in memory only once the row is in.
fn append_one(w: &mut Writer, msg: &NewMessage) -> Result<Appended, StoreError> {
    let uid = w.user_id(&msg.from)?;
    let (rid, last) = w.room_seq(&msg.room)?;
    let seq = last + 1;
    let ts = now_ms();
    // The unique (user, client id) index finds a resend: nothing is inserted, and the original
    // is read back (rare: only after a lost ack).
    let inserted = w
        .conn
        .prepare_cached(
            "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, reply_to) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (user_id, client_id) DO NOTHING",
        )?
        .execute(params![rid, seq, uid, msg.client_id, msg.body, ts, msg.reply_to.map(|r| r.min(i64::MAX as u64) as i64)])?;
    if inserted == 0 {
        let (room, seq, ts, body, reply_to) = w
            .conn
            .prepare_cached(
                "SELECT r.name, m.seq, m.ts, m.body, m.reply_to FROM messages m JOIN rooms r ON r.id = m.room_id
                 WHERE m.user_id = ?1 AND m.client_id = ?2",
            )?
            .query_row(params![uid, msg.client_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?;
        return Ok(Appended {
            room,
            seq: seq as u64,
            ts,
            from: msg.from.clone(),
            client_id: msg.client_id.clone(),
            body,
            reply_to: reply_to.map(|r| r as u64),
            duplicate: true,
        });
    }
    log::store_mentions(w, rid, seq, &msg.body)?;
    w.rooms.insert(msg.room.clone(), (rid, seq));
    Ok(Appended {
        room: msg.room.clone(),
        seq: seq as u64,
        ts,
        from: msg.from.clone(),
        client_id: msg.client_id.clone(),
        body: msg.body.clone(),
        reply_to: msg.reply_to,
        duplicate: false,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, now_ms()],
            )?;
            if n == 0 {
                Err(StoreError::Conflict)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT password_hash FROM users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn create_room(
        &self,
        name: &str,
        visibility: Visibility,
        topic: &str,
        owner: &str,
    ) -> Result<RoomRecord, StoreError> {
        let (name, topic, owner) = (name.to_owned(), topic.to_owned(), owner.to_owned());
        self.write(move |c| {
            let uid = user_id(c, &owner)?;
            let (rid, rec) = insert_room(
                c,
                &name,
                RoomKind::Room,
                visibility,
                &topic,
                Some((uid, &owner)),
            )?;
            add_member_ids(c, rid, uid)?;
            Ok(rec)
        })
        .await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = ?1"),
                [name],
                room_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn rooms_for(
        &self,
        user: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let user = user.to_owned();
        let after = after.unwrap_or("").to_owned();
        self.read(move |c| {
            let uid = user_id(c, &user)?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ROOM_COLUMNS},
                    (SELECT COUNT(*) FROM members m WHERE m.room_id = r.id),
                    EXISTS(SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = ?1),
                    r.id,
                    (SELECT CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
                     FROM members m WHERE m.room_id = r.id AND m.user_id = ?1)
                 FROM rooms r
                 WHERE r.name > ?2 AND (r.visibility = 'public'
                    OR EXISTS(SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = ?1)
                    OR EXISTS(SELECT 1 FROM invites i WHERE i.room_id = r.id AND i.user_id = ?1))
                 ORDER BY r.name LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![uid, after, limit], |r| {
                let rec = room_from_row(r)?;
                let role: Option<String> = r.get(11)?;
                Ok((
                    r.get::<_, i64>(10)?,
                    RoomInfo {
                        room: rec.name,
                        kind: rec.kind,
                        visibility: rec.visibility,
                        topic: rec.topic,
                        members: r.get::<_, i64>(8)? as u64,
                        joined: r.get(9)?,
                        read: None,
                        role: role.as_deref().and_then(crate::store::log::parse_role),
                    },
                ))
            })?;
            let mut out: Vec<RoomInfo> = Vec::new();
            for row in rows {
                let (rid, mut info) = row?;
                if info.joined {
                    info.read = Some(log::read_state_ids(c, uid, rid)?);
                }
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn set_topic(&self, room: &str, topic: &str) -> Result<(), StoreError> {
        let (room, topic) = (room.to_owned(), topic.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE rooms SET topic = ?2 WHERE name = ?1",
                params![room, topic],
            )?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn open_dm(&self, a: &str, b: &str) -> Result<RoomRecord, StoreError> {
        let (a, b) = (a.to_owned(), b.to_owned());
        self.write(move |c| {
            let (ua, ub) = (user_id(c, &a)?, user_id(c, &b)?);
            let name = dm_room_name(&a, &b);
            let existing = c
                .query_row(
                    &format!("SELECT {ROOM_COLUMNS}, id FROM rooms WHERE name = ?1"),
                    [&name],
                    |r| Ok((r.get::<_, i64>(8)?, room_from_row(r)?)),
                )
                .optional()?;
            let (rid, rec) = match existing {
                Some(found) => found,
                None => insert_room(c, &name, RoomKind::Dm, Visibility::Private, "", None)?,
            };
            add_member_ids(c, rid, ua)?;
            add_member_ids(c, rid, ub)?;
            Ok(rec)
        })
        .await
    }

    async fn add_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(move |c| {
            let (rid, uid) = (room_id(c, &room)?, user_id(c, &user)?);
            // The invite is used up by the join it allowed.
            c.execute(
                "DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2",
                params![rid, uid],
            )?;
            add_member_ids(c, rid, uid)
        })
        .await
    }

    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(move |c| {
            let (rid, uid) = (room_id(c, &room)?, user_id(c, &user)?);
            // An invite does not outlive the membership it led to: a member who leaves a
            // private room needs a new one to come back.
            c.execute(
                "DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2",
                params![rid, uid],
            )?;
            Ok(c.execute(
                "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2",
                params![rid, uid],
            )? > 0)
        })
        .await
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| pair_exists(c, PairTable::Members, &room, &user))
            .await
    }

    async fn role(&self, room: &str, user: &str) -> Result<Option<chat_proto::Role>, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| moderation::role(c, &room, &user)).await
    }

    async fn roles_of(
        &self,
        room: &str,
        users: &[String],
    ) -> Result<HashMap<String, chat_proto::Role>, StoreError> {
        let (room, users) = (room.to_owned(), users.to_vec());
        self.read(move |c| moderation::roles_of(c, &room, &users))
            .await
    }

    async fn is_banned(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| moderation::is_banned(c, &room, &user))
            .await
    }

    async fn bans(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<chat_proto::BanInfo>, StoreError> {
        let (room, after) = (room.to_owned(), after.unwrap_or("").to_owned());
        self.read(move |c| moderation::bans(c, &room, &after, limit))
            .await
    }

    async fn configure_room(
        &self,
        room: &str,
        user: &str,
        members_set_topic: Option<bool>,
        members_invite: Option<bool>,
    ) -> Result<chat_proto::RoomSettings, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(move |c| {
            moderation::configure_room(c, &room, &user, members_set_topic, members_invite)
        })
        .await
    }

    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let room = room.to_owned();
        let after = after.unwrap_or("").to_owned();
        self.read(move |c| {
            let rid = room_id(c, &room)?;
            let mut stmt = c.prepare_cached(
                "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 AND u.name > ?2 ORDER BY u.name LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![rid, after, limit], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn member_count(&self, room: &str) -> Result<u64, StoreError> {
        let room = room.to_owned();
        self.read(move |c| {
            let rid = room_id(c, &room)?;
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM members WHERE room_id = ?1")?
                .query_row([rid], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn rooms_owned(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.read(move |c| {
            let uid = user_id(c, &user)?;
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM rooms WHERE owner_id = ?1")?
                .query_row([uid], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_room(&self, room: &str) -> Result<bool, StoreError> {
        let room = room.to_owned();
        self.write_with(move |w| {
            let Some(rid) = w
                .conn
                .query_row("SELECT id FROM rooms WHERE name = ?1", [&room], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
            else {
                return Ok(false);
            };
            for table in [
                "messages",
                "members",
                "invites",
                "reactions",
                "read_state",
                "mentions",
                "bans",
            ] {
                w.conn
                    .execute(&format!("DELETE FROM {table} WHERE room_id = ?1"), [rid])?;
            }
            w.conn.execute("DELETE FROM rooms WHERE id = ?1", [rid])?;
            // A room made again under this name is a new room: its seqs start over.
            w.rooms.remove(&room);
            Ok(true)
        })
        .await
    }

    async fn decline_invite(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(move |c| {
            let (rid, uid) = (room_id(c, &room)?, user_id(c, &user)?);
            Ok(c.execute(
                "DELETE FROM invites WHERE room_id = ?1 AND user_id = ?2",
                params![rid, uid],
            )? > 0)
        })
        .await
    }

    async fn invite(&self, room: &str, user: &str) -> Result<(), StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(move |c| {
            let (rid, uid) = (room_id(c, &room)?, user_id(c, &user)?);
            c.execute(
                "INSERT OR IGNORE INTO invites (room_id, user_id) VALUES (?1, ?2)",
                params![rid, uid],
            )?;
            Ok(())
        })
        .await
    }

    async fn is_invited(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.read(move |c| pair_exists(c, PairTable::Invites, &room, &user))
            .await
    }

    async fn append(&self, msg: NewMessage, done: AppendDone) -> Result<(), StoreError> {
        let job: Job = Box::new(move |w| {
            let result = w.map_err(StoreError::clone).and_then(|w| {
                // In a savepoint: a failure undoes the row, and the seq in memory moves only
                // after. A failed insert may mean the remembered seq is stale (another process
                // wrote to the file): it is read from the database again next time, instead of
                // every later append to the room failing on the same seq.
                let r = in_savepoint(w, |w| append_one(w, &msg));
                if r.is_err() {
                    w.rooms.remove(&msg.room);
                }
                r
            });
            Box::new(move |commit| {
                done.call(match commit {
                    Ok(()) => result,
                    Err(e) => Err(batch_failed(e)),
                })
            })
        });
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn latest_seq(&self, room: &str) -> Result<u64, StoreError> {
        let room = room.to_owned();
        self.read(move |c| {
            let seq: Option<i64> = c
                .prepare_cached(LATEST_SEQ_SQL)?
                .query_row([room], |r| r.get(1))
                .optional()?;
            seq.map(|s| s as u64).ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn apply(&self, event: NewEvent, done: ApplyDone) -> Result<(), StoreError> {
        let job: Job = Box::new(move |w| {
            let result = w.map_err(StoreError::clone).and_then(|w| {
                let r = in_savepoint(w, |w| log::apply_one(w, &event));
                if r.is_err() {
                    w.rooms.remove(&event.room);
                }
                r
            });
            Box::new(move |commit| {
                done.call(match commit {
                    Ok(()) => result,
                    Err(e) => Err(batch_failed(e)),
                })
            })
        });
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: u32,
        viewer: Viewer<'_>,
    ) -> Result<(Vec<HistoryMessage>, bool), StoreError> {
        let (room, user, tombstones) = (room.to_owned(), viewer.user.to_owned(), viewer.tombstones);
        self.read(move |c| {
            log::history_before(
                c,
                &room,
                before,
                limit,
                Viewer {
                    user: &user,
                    tombstones,
                },
            )
        })
        .await
    }

    async fn messages_at(
        &self,
        room: &str,
        seqs: &[u64],
        viewer: Viewer<'_>,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        let (room, seqs) = (room.to_owned(), seqs.to_vec());
        let (user, tombstones) = (viewer.user.to_owned(), viewer.tombstones);
        self.read(move |c| {
            log::messages_at(
                c,
                &room,
                &seqs,
                Viewer {
                    user: &user,
                    tombstones,
                },
            )
        })
        .await
    }

    async fn messages_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        let room = room.to_owned();
        self.read(move |c| log::messages_between(c, &room, after, upto, limit))
            .await
    }

    async fn events_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<RoomEvent>, StoreError> {
        let room = room.to_owned();
        self.read(move |c| log::events_between(c, &room, after, upto, limit))
            .await
    }

    async fn message_info(&self, room: &str, seq: u64) -> Result<Option<MessageInfo>, StoreError> {
        let room = room.to_owned();
        self.read(move |c| log::message_info(c, &room, seq)).await
    }

    async fn mark_read(&self, user: &str, room: &str, seq: u64) -> Result<ReadState, StoreError> {
        let (user, room) = (user.to_owned(), room.to_owned());
        self.write_with(move |w| log::mark_read(w, &user, &room, seq))
            .await
    }

    async fn read_state(&self, user: &str, room: &str) -> Result<ReadState, StoreError> {
        let (user, room) = (user.to_owned(), room.to_owned());
        self.read(move |c| log::read_state(c, &user, &room)).await
    }

    async fn search(
        &self,
        req: &super::SearchRequest,
    ) -> Result<Vec<chat_proto::SearchResult>, StoreError> {
        let req = req.clone();
        self.read(move |c| search::search(c, &req)).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    fn commit_metrics(&self) -> Option<crate::metrics::StoreMetrics> {
        Some(self.inner.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> impl proptest::strategy::Strategy<Value = crate::store::suite_log::Op> {
        use crate::store::suite_log::Op;
        use proptest::prelude::*;
        let u = 0..3usize;
        prop_oneof![
            3 => (u.clone(), proptest::option::of(0..8usize))
                .prop_map(|(user, reply)| Op::Send { user, reply }),
            2 => (u.clone(), 0..8usize).prop_map(|(user, msg)| Op::Edit { user, msg }),
            1 => (u.clone(), 0..8usize).prop_map(|(user, msg)| Op::Delete { user, msg }),
            3 => (u.clone(), 0..8usize, 0..3usize)
                .prop_map(|(user, msg, emoji)| Op::React { user, msg, emoji }),
            2 => (u, 0..8usize, 0..3usize)
                .prop_map(|(user, msg, emoji)| Op::Unreact { user, msg, emoji }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]
        /// Any interleaving of messages, edits, deletes and reactions, caught up from any seq,
        /// folds to what `history` says.
        #[test]
        fn any_history_replayed_from_any_seq_folds_to_history(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(&dir.path().join("fold.db")).expect("open");
                for u in ["pa", "pb", "pc"] {
                    store.create_user(u, "h").await.expect("user");
                }
                store
                    .create_room("fold", Visibility::Public, "", "pa")
                    .await
                    .expect("room");
                crate::store::suite_log::fold_matches_history(&store, "fold", &ops).await;
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("chat.db")).expect("open");
        crate::store::suite::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/chat.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            s.create_user("alice", "h").await.expect("user");
        }
        let s = SqliteStore::open(&path).expect("reopen");
        assert!(s.user_exists("alice").await.expect("exists"));
        let c = Connection::open(&path).expect("raw");
        let page: i64 = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .expect("page_size");
        assert_eq!(page, 1024, "a new database gets small pages");
        c.pragma_update(None, "user_version", 99).expect("bump");
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    async fn append(s: &SqliteStore, room: &str, id: &str) -> Appended {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let msg = NewMessage::new(room, "alice", id, "hi");
        s.append(msg, AppendDone::new(move |r| drop(tx.send(r))))
            .await
            .expect("queued");
        rx.await.expect("answered").expect("stored")
    }

    async fn try_append(s: &SqliteStore, room: &str, id: &str) -> Result<Appended, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let msg = NewMessage::new(room, "alice", id, "hi");
        s.append(msg, AppendDone::new(move |r| drop(tx.send(r))))
            .await
            .expect("queued");
        rx.await.expect("answered")
    }

    async fn one_room(path: &Path) -> SqliteStore {
        let s = SqliteStore::open(path).expect("open");
        s.create_user("alice", "h").await.expect("user");
        s.create_room("r", chat_proto::Visibility::Public, "", "alice")
            .await
            .expect("room");
        s
    }

    #[tokio::test]
    async fn a_seq_taken_behind_the_writers_back_fails_one_send_not_every_later_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.db");
        let s = one_room(&path).await;
        assert_eq!(append(&s, "r", "m1").await.seq, 1);
        // Another process writes seq 2 into the same file (what a second server did).
        let other = Connection::open(&path).expect("other");
        other
            .execute(
                "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts)
                 SELECT r.id, 2, u.id, 'theirs', 'x', 0 FROM rooms r, users u
                 WHERE r.name = 'r' AND u.name = 'alice'",
                [],
            )
            .expect("insert behind the writer's back");
        assert!(try_append(&s, "r", "m2").await.is_err(), "seq 2 is taken");
        // The writer read the room's seq again: the next send is stored, after the other's.
        assert_eq!(append(&s, "r", "m3").await.seq, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_is_busy_not_shutting_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.db");
        let s = one_room(&path).await;
        let locker = Connection::open(&path).expect("other");
        locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        // The writer waits its busy timeout (5 s), then reports the truth.
        let e = try_append(&s, "r", "m1").await.expect_err("locked");
        assert!(matches!(e, StoreError::Busy), "{e:?}");
        locker.execute_batch("ROLLBACK").expect("unlock");
        assert_eq!(append(&s, "r", "m1").await.seq, 1, "then it works again");
    }

    #[test]
    fn one_server_per_database_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("chat.db");
        let first = claim(&path).expect("first");
        let e = claim(&path).expect_err("second");
        assert!(e.to_string().contains("another chat-server"), "{e}");
        drop(first);
        claim(&path).expect("free again");
    }

    #[tokio::test]
    async fn the_writer_remembers_seqs_and_they_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            s.create_user("alice", "h").await.expect("user");
            for room in ["a", "b"] {
                s.create_room(room, chat_proto::Visibility::Public, "", "alice")
                    .await
                    .expect("room");
            }
            for i in 0..5 {
                assert_eq!(append(&s, "a", &format!("a{i}")).await.seq, i + 1);
            }
            assert_eq!(append(&s, "b", "b0").await.seq, 1);
            // A resend is found by its id, and takes no seq.
            let again = append(&s, "a", "a2").await;
            assert!(again.duplicate && again.seq == 3);
            // Readers see the seq the writer wrote once per batch.
            assert_eq!(s.latest_seq("a").await.expect("seq"), 5);
        }
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            append(&s, "a", "a5").await.seq,
            6,
            "no seq reused after a restart"
        );
        assert_eq!(append(&s, "b", "b1").await.seq, 2);
    }

    #[tokio::test]
    async fn the_search_migration_indexes_the_messages_already_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.db");
        {
            let c = Connection::open(&path).expect("raw");
            for sql in &MIGRATIONS[..4] {
                c.execute_batch(sql).expect("older schema");
            }
            c.execute_batch(
                "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'alice', 'h', 0);
                 INSERT INTO rooms (id, name, kind, visibility, topic, epoch, created_at)
                     VALUES (1, 'r', 'room', 'public', '', 'e', 0);
                 INSERT INTO members VALUES (1, 1);
                 INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, kind, deleted)
                     VALUES (1, 1, 1, 'a', 'old needle', 1, 0, 0),
                            (1, 2, 1, 'b', '', 2, 0, 1),
                            (1, 3, 1, '~1.3', 'needle in an edit row', 3, 1, 0);
                 PRAGMA user_version = 4;",
            )
            .expect("older data");
        }
        let s = SqliteStore::open(&path).expect("migrates");
        let req = crate::store::SearchRequest {
            user: "alice".into(),
            phrases: vec![vec!["needle".into()]],
            from: None,
            room: None,
            before: None,
            before_seq: None,
            limit: 10,
        };
        let found = s.search(&req).await.expect("search");
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
    }

    #[tokio::test]
    async fn a_version_1_database_keeps_its_seqs_without_the_counter_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.db");
        {
            let c = Connection::open(&path).expect("raw");
            c.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            c.execute_batch(
                "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'alice', 'h', 0);
                 INSERT INTO rooms (id, name, kind, visibility, topic, epoch, last_seq, created_at)
                     VALUES (1, 'r', 'room', 'public', '', 'e', 2, 0);
                 INSERT INTO messages VALUES (1, 1, 1, 'a', 'x', 0), (1, 2, 1, 'b', 'y', 0);
                 PRAGMA user_version = 1;",
            )
            .expect("v1 data");
        }
        let s = SqliteStore::open(&path).expect("migrates");
        assert_eq!(s.latest_seq("r").await.expect("seq"), 2);
        assert_eq!(append(&s, "r", "c").await.seq, 3);
    }
}
