//! Command-line flags (each with an environment fallback) and the [`Config`] they produce.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// chat-server: a WebSocket chat server with accounts, rooms, durable history and presence.
///
/// Clients connect to ws://LISTEN/ws (wss:// with --tls-cert and --tls-key) and speak the
/// protocol in docs/protocol.md. SIGHUP reloads the TLS certificate.
#[derive(Debug, Parser)]
#[command(name = "chat-server", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage accounts: no running server needed, and safe beside running ones on the same --db.
    #[command(subcommand)]
    User(UserCommand),
    /// Database tools.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy a SQLite database into an empty PostgreSQL one (users, token hashes, rooms,
    /// members, invites, messages with their seqs). Stop the server on the SQLite file first.
    Copy {
        /// The SQLite database file to read.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL database to fill: postgres://user@host:port/dbname; it must be empty.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input (one line).
    Add {
        /// Username: 1-32 of a-z 0-9 _ - starting with a letter or digit.
        name: String,
    },
    /// List every account by name: when it was created, whether it is disabled, its sessions.
    List,
    /// Disable an account: it cannot log in, its tokens are revoked, and its connections on
    /// running servers are closed (4003) within about 2 s.
    Disable {
        /// The account's username.
        name: String,
    },
    /// Enable a disabled account again (its revoked tokens stay revoked).
    Enable {
        /// The account's username.
        name: String,
    },
    /// Set an account's password, read from standard input (one line), and revoke every token
    /// of it: its connections on running servers are closed (4003) within about 2 s.
    ResetPassword {
        /// The account's username.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    /// Anyone may create an account with the `register` frame.
    Open,
    /// `register` is refused; accounts are made with `chat-server user add`.
    Closed,
}

/// Parses a size: `4MiB`, `512KiB`, `1GiB` or a bare number of bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write e.g. 65536, 512KiB, 4MiB or 1GiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{s}` has unknown unit `{other}`: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses `250ms`, `20s`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 500ms, 20s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}` has unknown unit `{unit}`: use ms, s or m")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; the WebSocket endpoint is /ws.
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,

    /// Serve wss:// with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. Read again on SIGHUP.
    #[arg(long, env = "CHAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP.
    #[arg(long, env = "CHAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve GET /livez, /readyz and /metrics (Prometheus) on this address [default: off].
    /// Plain HTTP: keep it on loopback or a private network.
    #[arg(long, env = "CHAT_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Cross-node fan-out: `redis://host:port[/db]`. Absent: the in-process broker (one node).
    #[arg(long, env = "CHAT_BROKER")]
    pub broker: Option<String>,

    /// This node's name in Redis keys, logs and metrics [default: hostname:port].
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Prefix of every Redis key and channel: several clusters (or test runs) can share one Redis.
    #[arg(long, env = "CHAT_BROKER_PREFIX", default_value = "chat:")]
    pub broker_prefix: String,

    /// SQLite database file, or a PostgreSQL URL (postgres://user@host:port/dbname) that
    /// several nodes may share [default: chat.db in the platform data directory]
    #[arg(long, env = "CHAT_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,

    /// Whether clients may create accounts themselves.
    #[arg(long, env = "CHAT_REGISTRATION", value_enum, default_value = "open")]
    pub registration: Registration,

    /// How often the server pings each connection.
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A connection silent for this long after a ping is closed (4010).
    #[arg(long, env = "CHAT_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// A connection not authenticated within this time is closed (4001).
    #[arg(long, env = "CHAT_AUTH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// A typing indicator not refreshed within this time is cleared.
    #[arg(long, env = "CHAT_TYPING_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub typing_timeout: Duration,

    /// Presence changes in a room within this time of its last presence frame are sent together
    /// in the next one; 0 sends each change at once.
    #[arg(long, env = "CHAT_PRESENCE_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub presence_interval: Duration,

    /// Sustained frames per second per user (token bucket refill); 0 turns the limit off.
    #[arg(long, env = "CHAT_RATE_PER_SEC", default_value_t = 20)]
    pub rate_per_sec: u32,

    /// Frames a user may send in a burst (token bucket size).
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 50)]
    pub rate_burst: u32,

    /// Refused frames a connection may send (refilled one per second) before it is closed (4009).
    #[arg(long, env = "CHAT_RATE_STRIKES", default_value_t = 20)]
    pub rate_strikes: u32,

    /// Frames queued for one client before it counts as not reading and is closed (4008).
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Unsent bytes one client may have before it counts as not reading (see docs/protocol.md
    /// §7.4): events past it close the connection (4008), replies wait for it to drain.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE_BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub outbound_queue_bytes: usize,

    /// Unsent bytes across all connections: at the bound, connections that are behind are
    /// closed (4008) and replies wait (then `rate_limited`).
    #[arg(long, env = "CHAT_OUTBOUND_TOTAL_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub outbound_total_bytes: usize,

    /// Messages sent with `joined` when the client gives no since_seq.
    #[arg(long, env = "CHAT_HISTORY_ON_JOIN", default_value_t = 50)]
    pub history_on_join: u32,

    /// Largest gap a join with since_seq replays; a larger one is answered with a reload.
    #[arg(long, env = "CHAT_MAX_REPLAY", default_value_t = 5000)]
    pub max_replay: u64,

    /// Most simultaneous connections; more are answered with HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 18_000)]
    pub max_connections: usize,

    /// Of --max-connections, the slots kept for users who already have a connection (a new
    /// device of a logged-in user, with its token in the upgrade request).
    #[arg(long, env = "CHAT_RESERVED_CONNECTIONS", default_value_t = 500)]
    pub reserved_connections: usize,

    /// Connections not yet authenticated, across the server; more get HTTP 503.
    #[arg(long, env = "CHAT_MAX_UNAUTHENTICATED", default_value_t = 2_000)]
    pub max_unauthenticated: usize,

    /// Connections from one source IP address; 0 = no limit. More get HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Not-yet-authenticated connections from one source IP address; 0 = no limit.
    #[arg(long, env = "CHAT_MAX_UNAUTHENTICATED_PER_IP", default_value_t = 32)]
    pub max_unauthenticated_per_ip: usize,

    /// Authenticated connections of one user; more are refused (`too_many_connections`).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Sessions (tokens not revoked) one user may have, 1-1000: a login past it revokes the
    /// user's oldest token and closes its connections (4003).
    #[arg(long, env = "CHAT_MAX_SESSIONS_PER_USER", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_sessions_per_user: u32,

    /// Rooms one user may create (direct-message rooms not counted); 0 = no limit.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_USER", default_value_t = 50)]
    pub max_rooms_per_user: u32,

    /// Invites one user may send per hour; 0 = no limit.
    #[arg(long, env = "CHAT_MAX_INVITES_PER_HOUR", default_value_t = 200)]
    pub max_invites_per_hour: u32,
}

/// Everything the server needs to run, resolved from flags (or built directly by tests).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Serve wss:// with these files; `None`: plain ws://.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The admin endpoint's address; `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// The Redis URL of the cluster broker; `None`: in-process.
    pub broker: Option<String>,
    /// This node's name; `None`: hostname:port, resolved once the port is bound.
    pub node_id: Option<String>,
    pub broker_prefix: String,
    /// A SQLite file, or a PostgreSQL URL when it starts with `postgres://` or `postgresql://`.
    pub db: PathBuf,
    pub registration: Registration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub auth_timeout: Duration,
    pub typing_timeout: Duration,
    pub presence_interval: Duration,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub rate_strikes: u32,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub outbound_total_bytes: usize,
    pub history_on_join: u32,
    pub max_replay: u64,
    pub max_connections: usize,
    pub reserved_connections: usize,
    pub max_unauthenticated: usize,
    pub max_connections_per_ip: usize,
    pub max_unauthenticated_per_ip: usize,
    pub max_connections_per_user: usize,
    /// Tokens one user may have; a login past it revokes the oldest.
    pub max_sessions_per_user: u32,
    pub max_rooms_per_user: u32,
    pub max_invites_per_hour: u32,
    /// A token's `last_used_ts` is written when it authenticates and is older than this, so a
    /// reconnect storm is not a write storm (not a flag: tests shorten it).
    pub last_used_resolution: Duration,
    /// How long a reply that grows with the data waits for room in the outbound bounds before
    /// the request is refused (not a flag: tests shorten it).
    pub reply_wait: Duration,
}

/// How long another node's presence entries hold without renewal: a node killed with -9 takes
/// its users' presence with it within this bound. Nodes renew every third of it.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Where the database lives when `--db` is not given.
pub fn default_db_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "chat").map(|d| d.data_dir().join("chat.db"))
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, String> {
        let db = match self.db {
            Some(p) => p,
            None => default_db_path().ok_or(
                "no platform data directory could be found (is $HOME set?): pass --db PATH or set CHAT_DB",
            )?,
        };
        if self.ping_interval.is_zero() || self.auth_timeout.is_zero() {
            return Err("--ping-interval and --auth-timeout must be above zero".into());
        }
        if self.outbound_queue == 0 || self.max_connections == 0 {
            return Err("--outbound-queue and --max-connections must be at least 1".into());
        }
        if self.reserved_connections >= self.max_connections {
            return Err("--reserved-connections must be below --max-connections".into());
        }
        if self.max_unauthenticated == 0 || self.max_connections_per_user == 0 {
            return Err(
                "--max-unauthenticated and --max-connections-per-user must be at least 1".into(),
            );
        }
        if self.outbound_queue_bytes < chat_proto::limits::MAX_FRAME_BYTES {
            return Err("--outbound-queue-bytes must be at least 64KiB".into());
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(
                    "--tls-cert and --tls-key (CHAT_TLS_CERT, CHAT_TLS_KEY) go together: \
                     give both to serve wss://, or neither for plain ws://"
                        .into(),
                );
            }
        };
        Ok(Config {
            listen: self.listen,
            tls,
            admin_listen: self.admin_listen,
            broker: self.broker,
            node_id: self.node_id,
            broker_prefix: self.broker_prefix,
            db,
            registration: self.registration,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            auth_timeout: self.auth_timeout,
            typing_timeout: self.typing_timeout,
            presence_interval: self.presence_interval,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst.max(1),
            rate_strikes: self.rate_strikes.max(1),
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.outbound_queue_bytes,
            outbound_total_bytes: self.outbound_total_bytes.max(self.outbound_queue_bytes),
            history_on_join: self
                .history_on_join
                .min(chat_proto::limits::HISTORY_PAGE_MAX),
            max_replay: self.max_replay,
            max_connections: self.max_connections,
            reserved_connections: self.reserved_connections,
            max_unauthenticated: self.max_unauthenticated,
            max_connections_per_ip: self.max_connections_per_ip,
            max_unauthenticated_per_ip: self.max_unauthenticated_per_ip,
            max_connections_per_user: self.max_connections_per_user,
            max_sessions_per_user: self.max_sessions_per_user,
            max_rooms_per_user: self.max_rooms_per_user,
            max_invites_per_hour: self.max_invites_per_hour,
            last_used_resolution: Duration::from_secs(60),
            reply_wait: Duration::from_secs(10),
        })
    }
}

impl Config {
    /// The defaults of every flag, on `listen` and `db` (for tests and embedding).
    pub fn new(listen: SocketAddr, db: PathBuf) -> Self {
        let args = Cli::parse_from(["chat-server"]).serve;
        let mut c = ServeArgs {
            db: Some(db),
            ..args
        }
        .into_config()
        .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        c.listen = listen;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_and_refuse_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").unwrap_err().contains("ms, s or m"));
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("4MB").unwrap_err().contains("KiB, MiB or GiB"));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "chat-server",
            "--listen",
            "127.0.0.1:9999",
            "--db",
            "/tmp/x.db",
            "--registration",
            "closed",
            "--ping-interval",
            "500ms",
        ])
        .expect("parse");
        let c = cli.serve.into_config().expect("config");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.registration, Registration::Closed);
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["chat-server", "--listen", "nowhere"]).is_err());
    }
}
