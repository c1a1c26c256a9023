//! For tests (this crate's and its integration tests): a throwaway database per test, and the
//! one policy for a PostgreSQL that is not there.
//!
//! The admin URL is `postgres://postgres@127.0.0.1:5432/test`, or `CHAT_TEST_PG`. When it cannot
//! be reached, [`pg_or_skip`] fails the test if `CHAT_REQUIRE_SERVICES=1` (CI), and otherwise
//! prints `SKIPPED: PostgreSQL unreachable at ...` to stderr and gives `None`.

use tokio_postgres::NoTls;

use super::redact;

/// Where the tests find a PostgreSQL they may create databases on.
pub fn admin_url() -> String {
    std::env::var("CHAT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether missing services fail tests instead of skipping them.
pub fn services_required() -> bool {
    std::env::var("CHAT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The skip-or-fail policy for any service a test needs (PostgreSQL here; Redis reuses it):
/// panics when services are required, otherwise prints the loud SKIPPED line.
pub fn service_unreachable(service: &str, at: &str, why: &dyn std::fmt::Display) {
    if services_required() {
        panic!("{service} unreachable at {at} and CHAT_REQUIRE_SERVICES=1: {why}");
    }
    eprintln!(
        "SKIPPED: {service} unreachable at {at} ({why}); set CHAT_REQUIRE_SERVICES=1 to fail instead"
    );
}

/// A fresh database for one test, or `None` (after the SKIPPED line) without PostgreSQL.
pub async fn pg_or_skip() -> Option<TempDb> {
    match TempDb::create().await {
        Ok(db) => Some(db),
        Err(e) => {
            service_unreachable("PostgreSQL", &redact(&admin_url()), &e);
            None
        }
    }
}

async fn admin_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(std::time::Duration::from_secs(3));
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A uniquely named database (`chat_t_<pid>_<random>`), dropped with `WITH (FORCE)` by
/// [`TempDb::cleanup`] or, failing that, on drop. Tests using one run in parallel.
#[derive(Debug)]
pub struct TempDb {
    admin: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TempDb {
    pub async fn create() -> Result<Self, tokio_postgres::Error> {
        let admin = admin_url();
        let name = format!(
            "chat_t_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let client = admin_connect(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = with_dbname(&admin, &name);
        Ok(Self {
            admin,
            name,
            url,
            dropped: false,
        })
    }

    /// The database's URL, for `PgStore::open` or `--db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin URL it was made on (to reach PostgreSQL beside the store, e.g. to end its
    /// sessions).
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// Drops the database now (sessions still on it are ended).
    pub async fn cleanup(mut self) {
        self.dropped = true;
        drop_db(&self.admin, &self.name).await;
    }
}

/// `url` naming database `name` instead of its own (query parameters kept).
fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[start..].find('/') {
        Some(j) => &base[..start + j],
        None => base,
    };
    format!("{server}/{name}{query}")
}

async fn drop_db(admin: &str, name: &str) {
    match admin_connect(admin).await {
        Ok(c) => {
            if let Err(e) = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("warning: could not drop test database {name}: {e}");
            }
        }
        Err(e) => eprintln!("warning: could not drop test database {name}: {e}"),
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime, where blocking on another is not allowed: a thread of
        // its own with a runtime of its own does it.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(drop_db(&admin, &name)),
                Err(e) => eprintln!("warning: could not drop test database {name}: {e}"),
            }
        });
        let _ = done.join();
    }
}
