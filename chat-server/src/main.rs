//! The `chat-server` binary: flags, logging, the database, and the signal that stops it.

use std::sync::Arc;

use anyhow::{Context, bail};
use std::path::Path;

use chat_server::config::{Cli, Command, DbCommand, UserCommand};
use chat_server::store::sqlite::{self, SqliteStore};
use chat_server::store::{Store, postgres};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc with its background purging threads, instead of glibc's malloc or mimalloc: glibc
/// keeps what a thread freed in that thread's arena (10 registrations, argon2's 19 MiB each, left
/// 58 MB per hashing thread), and mimalloc gives freed memory back only when the thread that
/// owns it allocates again, so an idle server kept the memory of 19,000 closed connections.
/// jemalloc's background threads return freed pages on a clock (about 10 s of decay), busy or
/// idle. See docs/benchmarks.md, "Idle connections".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(quiet_frames(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Blocking work is a few store reads at a time (the store bounds them); a small pool keeps
    // a burst from leaving hundreds of idle threads behind.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let user_command = match cli.command {
        Some(Command::Db(DbCommand::Copy { from, to })) => return copy_db(&from, &to).await,
        Some(Command::User(command)) => Some(command),
        None => None,
    };
    let config = cli.serve.into_config().map_err(anyhow::Error::msg)?;
    let (store, _claim) = open_store(&config.db, user_command.is_none()).await?;
    match user_command {
        Some(command) => user(&*store, command).await,
        None => serve(config, store).await,
    }
}

/// `--db` for logs and errors: a PostgreSQL URL loses its password.
fn shown(db: &Path) -> String {
    match db.to_str() {
        Some(url) if postgres::is_url(url) => postgres::redact(url),
        _ => db.display().to_string(),
    }
}

/// Opens the store `--db` names. A serving server claims a SQLite file first (one server per
/// file); the `user` commands beside a running server are fine (SQLite serialises the writes,
/// and they touch no room's seqs). PostgreSQL has no claim: several nodes share it on purpose.
async fn open_store(
    db: &Path,
    serving: bool,
) -> anyhow::Result<(Arc<dyn Store>, Option<sqlite::Claim>)> {
    if let Some(url) = db.to_str().filter(|s| postgres::is_url(s)) {
        let store = postgres::PgStore::open(url)
            .await
            .with_context(|| format!("opening the database {}", postgres::redact(url)))?;
        return Ok((Arc::new(store), None));
    }
    let claim = match serving {
        true => Some(sqlite::claim(db).map_err(anyhow::Error::msg)?),
        false => None,
    };
    let store =
        SqliteStore::open(db).with_context(|| format!("opening the database {}", db.display()))?;
    Ok((Arc::new(store), claim))
}

/// `chat-server db copy`: holds the SQLite file's claim, so no server writes to it meanwhile.
async fn copy_db(from: &Path, to: &str) -> anyhow::Result<()> {
    if !postgres::is_url(to) {
        bail!("--to must be a PostgreSQL URL (postgres://user@host:port/dbname), not {to}");
    }
    if !from.is_file() {
        bail!("{} does not exist (or is not a file)", from.display());
    }
    let _claim = sqlite::claim(from).map_err(anyhow::Error::msg)?;
    let copied = postgres::copy::from_sqlite(from, to)
        .await
        .with_context(|| format!("copying {} into {}", from.display(), postgres::redact(to)))?;
    println!(
        "copied {copied} from {} into {}",
        from.display(),
        postgres::redact(to)
    );
    Ok(())
}

/// `chat-server user ...`: one line on standard output saying what was done (or the table).
async fn user(store: &dyn Store, command: UserCommand) -> anyhow::Result<()> {
    use chat_server::users;
    let password = || users::read_password(&mut std::io::stdin().lock());
    let done = match command {
        UserCommand::Add { name } => users::add(store, &name, password).await?,
        UserCommand::List => return Ok(users::list(store, &mut std::io::stdout().lock()).await?),
        UserCommand::Disable { name } => users::disable(store, &name).await?,
        UserCommand::Enable { name } => users::enable(store, &name).await?,
        UserCommand::ResetPassword { name } => {
            users::reset_password(store, &name, password).await?
        }
    };
    println!("{done}");
    Ok(())
}

async fn serve(config: chat_server::config::Config, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let db = shown(&config.db);
    match chat_server::fdlimit::raise() {
        // Sockets beyond connections: listeners, the database, Redis, admin requests.
        Some(limit) if (config.max_connections as u64).saturating_add(100) > limit => {
            tracing::warn!(
                limit,
                max_connections = config.max_connections,
                "the file-descriptor limit is below --max-connections + 100: past it accept fails \
                 and clients wait instead of getting a 503; raise the limit (LimitNOFILE) or lower \
                 --max-connections"
            );
        }
        Some(limit) => tracing::debug!(limit, "file-descriptor limit"),
        None => {}
    }
    let signals = Signals::install(config.tls.is_some())?;
    let server = chat_server::server::start(config.clone(), store)
        .await
        .with_context(|| format!("starting the server on {}", config.listen))?;
    let scheme = if server.tls() { "wss" } else { "ws" };
    tracing::info!(addr = %server.addr, db = %db, "listening on {scheme}://{}/ws", server.addr);
    if let Some(admin) = server.admin_addr {
        tracing::info!("admin endpoint on http://{admin} (/livez, /readyz, /metrics)");
    }
    if let Some(warning) = chat_server::tls::plaintext_warning(server.addr, server.tls()) {
        tracing::warn!("{warning}");
    }
    signals.wait(&server).await;
    tracing::info!("shutting down: closing connections, committing pending writes");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM stop the server; with TLS, SIGHUP reloads the certificate (without TLS
/// it keeps its default: the process ends). Installed before the server says it is listening,
/// so a signal sent as soon as that line appears is not lost to the default action.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install(tls: bool) -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: match tls {
                true => {
                    Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?)
                }
                false => None,
            },
        })
    }

    /// Returns at SIGINT or SIGTERM; reloads the certificate at each SIGHUP meanwhile.
    async fn wait(mut self, server: &chat_server::server::RunningServer) {
        loop {
            tokio::select! {
                _ = self.int.recv() => return,
                _ = self.term.recv() => return,
                Some(()) = async { self.hup.as_mut()?.recv().await } => match server.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it"),
                    Err(e) => tracing::error!("SIGHUP: TLS certificate not reloaded, keeping the previous one: {e}"),
                },
            }
        }
    }
}

/// tungstenite traces every frame it reads and writes, passwords and tokens included, and
/// rustls its handshake: whatever RUST_LOG says, those crates log at info at most.
fn quiet_frames(filter: EnvFilter) -> EnvFilter {
    ["tungstenite=info", "tokio_tungstenite=info", "rustls=info"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, EnvFilter::add_directive)
}
