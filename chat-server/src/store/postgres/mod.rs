//! The shared store: PostgreSQL, for several chat-server nodes on one database.
//!
//! Appends go through one writer task per node ([`writer`]): it takes everything queued, stores
//! it in one transaction (one counter update and one multi-row insert per room), commits, then
//! runs the completions in order: the same group commit as SQLite's. Seqs come from each room's
//! counter row, updated inside that transaction, so writers on several nodes queue on the row
//! lock and seqs stay gap-free; a PostgreSQL sequence would leave gaps on rollback. Everything
//! else runs on the pool in its own short transaction ([`queries`]).
//!
//! Nothing waits forever on an unreachable or stalled database: connecting, waiting for a pooled
//! connection, each statement (`statement_timeout`) and each batch have a deadline, and running
//! out of one is [`StoreError::Unavailable`].

mod accounts;
pub mod copy;
mod log;
mod moderation;
mod queries;
mod schema;
mod search;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod writer;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::StoreError;

pub use schema::SCHEMA_VERSION;

/// Connecting (TCP and startup) gives up after this, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server cancels a statement running longer than this (set per session, unless the URL's
/// `options` set it).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection, and for a new one to be made.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// A whole read or write (pool wait included) gives up after this on the client side too: a
/// database that accepts TCP but never answers does not run into `statement_timeout`.
const OP_DEADLINE: Duration = Duration::from_secs(15);
/// Connections per node: the writer uses one at a time, reads and other writes the rest.
const POOL_SIZE: usize = 8;

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` without its password, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{host}"),
        None => url.to_owned(),
    }
}

/// The PostgreSQL store. Cloning is cheap and shares the writer and the pool.
#[derive(Clone)]
pub struct PgStore {
    /// Reads and non-append writes; the writer's connections come from it too.
    pool: Pool,
    /// Bounded like SQLite's queue: when the writer falls behind, `append` waits here, which
    /// pushes back on the sender's connection.
    jobs: mpsc::Sender<writer::Job>,
    /// What the writer records of each batch, for `/metrics`.
    metrics: crate::metrics::StoreMetrics,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The connection settings of `url`, with this server's timeouts where the URL sets none.
fn pg_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Db(format!("{} is not a PostgreSQL URL: {e}", redact(url))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let options = config.get_options().unwrap_or("").to_owned();
    if !options.contains("statement_timeout") {
        config.options(format!(
            "{options} -c statement_timeout={}",
            STATEMENT_TIMEOUT.as_millis()
        ));
    }
    // A peer that vanishes without a FIN (a cut cable, a failed-over host) is noticed by the
    // kernel instead of after the TCP retransmission timeout (~15 min).
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("chat-server");
    Ok(config)
}

impl PgStore {
    /// Connects to `url`, applies migrations (once, under an advisory lock, however many nodes
    /// start at once) and starts the writer task. Must be called inside a tokio runtime.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config = pg_config(url)?;
        schema::migrate(&config, &redact(url)).await?;
        let manager = Manager::from_config(
            config,
            NoTls,
            // Verified: a connection handed out has just answered a round trip, so a batch that
            // follows a database restart gets a fresh connection instead of a dead one.
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Db(format!("building the connection pool: {e}")))?;
        let metrics = crate::metrics::StoreMetrics::default();
        let jobs = writer::start(pool.clone(), metrics.clone());
        Ok(Self {
            pool,
            jobs,
            metrics,
        })
    }

    /// A pooled connection, or `Unavailable` once the pool's deadlines pass.
    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// Whether a failed statement may succeed if the whole transaction runs again: a
/// serialization failure, a deadlock, or a unique key another node took meanwhile.
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    })
}

/// Maps a driver error: the connection failing (or the server cancelling, shutting down,
/// refusing) is `Unavailable`; a constraint or SQL failure is `Db`.
fn db_err(e: tokio_postgres::Error) -> StoreError {
    let unavailable = match e.code() {
        None => true,
        Some(c) => {
            *c == SqlState::QUERY_CANCELED
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || c.code().starts_with("08")
        }
    };
    if unavailable || e.is_closed() {
        StoreError::Unavailable(with_causes(&e))
    } else {
        StoreError::Db(
            e.as_db_error()
                .map_or_else(|| e.to_string(), ToString::to_string),
        )
    }
}

/// An error and its sources: "error connecting to server: Connection refused (os error 111)",
/// not only the first half.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_err(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(t) => StoreError::Unavailable(format!(
            "no database connection within {}s ({t:?})",
            POOL_WAIT.as_secs()
        )),
        other => StoreError::Unavailable(with_causes(&other)),
    }
}

/// Runs `f` with a client-side deadline: a database that stops answering mid-query fails the
/// call instead of hanging it.
async fn deadline<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_DEADLINE, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the database did not answer within {}s",
                OP_DEADLINE.as_secs()
            )))
        })
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_passwords_hidden() {
        assert!(is_url("postgres://u@h:5432/db"));
        assert!(is_url("postgresql://u@h/db"));
        assert!(!is_url("/var/lib/chat/chat.db"));
        assert!(!is_url("postgres.db"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn timeouts_are_set_unless_the_url_sets_them() {
        let c = pg_config("postgres://u@h/db").expect("url");
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert!(
            c.get_options()
                .is_some_and(|o| o.contains("statement_timeout=10000"))
        );
        let c = pg_config("postgres://u@h/db?connect_timeout=2").expect("url");
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert!(pg_config("postgres://u@h/db?nonsense=1").is_err());
    }
}
