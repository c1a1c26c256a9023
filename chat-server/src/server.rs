//! The accept loop, the shared context every connection gets, and graceful shutdown:
//! stop accepting -> stop reading -> let the store commit what is queued (its acks go out) ->
//! close every connection with 1001 -> wait for the tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, LocalBroker};
use crate::config::Config;
use crate::hub::{Hub, HubConfig};
use crate::store::Store;

/// What every connection shares.
pub struct Ctx {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// `Some` when serving wss://: each connection's task does its own handshake.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Invites each user may still send this hour.
    pub invites: crate::rate::HourlyQuota,
    /// Backoff after failed logins, and each source's share of the hashing threads.
    pub throttle: Arc<crate::throttle::Throttle>,
    /// Connection slots: the caps per server, per address and for unauthenticated connections.
    pub admission: Arc<crate::admission::Admission>,
    /// The server-wide bound on unsent bytes that every connection's outbox counts in.
    pub budget: Arc<crate::outbox::Budget>,
    /// Event counters for `/metrics`.
    pub counters: crate::metrics::Counters,
    /// Password hashing: two threads and a bounded queue (argon2 is slow and large on purpose).
    pub hasher: crate::hasher::Hasher,
    /// Shutdown step 1: readers stop taking frames.
    pub stop_reading: CancellationToken,
    /// Shutdown step 2: writers flush what is queued and close with 1001.
    pub close_all: CancellationToken,
}

/// A server running in the background.
pub struct RunningServer {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// The admin endpoint's address, when on (port 0 resolved).
    pub admin_addr: Option<SocketAddr>,
    ctx: Arc<Ctx>,
    stop_accepting: CancellationToken,
    tasks: TaskTracker,
}

/// Binds `config.listen` and serves on it until [`RunningServer::shutdown`].
pub async fn start(config: Config, store: Arc<dyn Store>) -> std::io::Result<RunningServer> {
    // Before binding: a certificate that does not load is an error at start, naming the file.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(
            crate::tls::Tls::load(files).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // Bound before anything is spawned: a taken admin port fails the start cleanly.
    let admin = match config.admin_listen {
        Some(at) => Some(TcpListener::bind(at).await?),
        None => None,
    };
    let hub = Arc::new(Hub::new(HubConfig {
        typing_timeout: config.typing_timeout,
        max_held: config.outbound_queue,
        max_held_bytes: config.outbound_queue_bytes,
        max_connections_per_user: config.max_connections_per_user,
        rate_per_sec: config.rate_per_sec,
        rate_burst: config.rate_burst,
        presence_interval: config.presence_interval,
        presence_ttl: crate::config::PRESENCE_TTL,
    }));
    let counters = crate::metrics::Counters::default();
    let broker: Arc<dyn Broker> = match &config.broker {
        None => Arc::new(LocalBroker::new(hub.clone())),
        Some(url) => {
            let node = config
                .node_id
                .clone()
                .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
            let cluster = crate::cluster::RedisBroker::start(
                crate::cluster::ClusterConfig {
                    url: url.clone(),
                    node,
                    prefix: config.broker_prefix.clone(),
                },
                hub.clone(),
                store.clone(),
                counters.broker.clone(),
            )
            .map_err(std::io::Error::other)?;
            tracing::info!(node = cluster.node(), broker = %url, "cluster broker on Redis");
            hub.set_announcer(Arc::new(cluster.clone()));
            Arc::new(cluster)
        }
    };
    let ctx = Arc::new(Ctx {
        hasher: crate::hasher::Hasher::new(2, 256)?,
        budget: crate::outbox::Budget::new(config.outbound_total_bytes),
        counters,
        throttle: crate::throttle::Throttle::new(),
        invites: crate::rate::HourlyQuota::new(config.max_invites_per_hour),
        admission: crate::admission::Admission::new(crate::admission::Caps {
            max_connections: config.max_connections,
            reserved: config.reserved_connections,
            max_unauthenticated: config.max_unauthenticated,
            per_ip: config.max_connections_per_ip,
            unauthenticated_per_ip: config.max_unauthenticated_per_ip,
        }),
        config,
        store,
        hub,
        broker,
        tls,
        stop_reading: CancellationToken::new(),
        close_all: CancellationToken::new(),
    });
    // Read before the first connection is accepted: every revocation after it is one this node
    // must apply.
    let revocations_seen = match ctx.store.revocation_cursor().await {
        Ok(at) => Some(at),
        Err(e) => {
            tracing::warn!(error = %e, "reading the revocation log failed; retrying");
            None
        }
    };
    let stop_accepting = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(crate::revocations::poll(ctx.clone(), revocations_seen));
    tasks.spawn(accept_loop(
        listener,
        ctx.clone(),
        stop_accepting.clone(),
        tasks.clone(),
    ));
    tasks.spawn(sweeper(ctx.clone()));
    let admin_addr = match admin {
        Some(admin) => {
            let bound = admin.local_addr()?;
            tasks.spawn(crate::admin::serve(
                admin,
                ctx.clone(),
                stop_accepting.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    Ok(RunningServer {
        addr,
        admin_addr,
        ctx,
        stop_accepting,
        tasks,
    })
}

/// This machine's name, for the default node id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Bytes asked of the kernel for each connection's send buffer (Linux doubles it): about a
/// thousand chat frames, enough to keep a reading client's socket busy.
const SEND_BUFFER: usize = 128 * 1024;

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut failed_accepts = 0u64;
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (mut tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, mostly: back off instead of spinning, and say so once
                // per 10 s with a count rather than ten lines a second.
                failed_accepts += 1;
                if last_accept_warning
                    .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10))
                {
                    tracing::warn!(error = %e, failures = failed_accepts, "accept failed");
                    last_accept_warning = Some(Instant::now());
                    failed_accepts = 0;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // A fixed send buffer instead of the kernel's autotuning (up to 4 MiB per socket): a
        // client that reads slowly then fills the outbound queue and is closed (4008) within
        // seconds, instead of the kernel holding tens of seconds of its frames.
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
        let ticket = match ctx.admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                tasks.spawn(async move {
                    crate::handshake::reply(
                        &mut tcp,
                        503,
                        "Service Unavailable",
                        refusal.message(),
                    )
                    .await;
                });
                continue;
            }
        };
        let ctx = ctx.clone();
        tasks.spawn(crate::connection::serve(tcp, peer, ctx, ticket));
    }
}

/// Expires typing indicators and sends batched presence changes.
async fn sweeper(ctx: Arc<Ctx>) {
    let mut period =
        (ctx.config.typing_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    if !ctx.config.presence_interval.is_zero() {
        period = period.min(ctx.config.presence_interval);
    }
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ctx.stop_reading.cancelled() => return,
            _ = tick.tick() => ctx.hub.tick(Instant::now()),
        }
    }
}

impl RunningServer {
    /// Whether the server speaks wss://.
    pub fn tls(&self) -> bool {
        self.ctx.tls.is_some()
    }

    /// Reads the TLS certificate and key again (on SIGHUP): new handshakes get the new
    /// certificate, connections already up keep going. On an error the old one stays.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match &self.ctx.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// The hub, for tests that look at live state.
    pub fn hub(&self) -> &Hub {
        &self.ctx.hub
    }

    /// Connection slots in use: (all, of which not authenticated).
    pub fn connection_slots(&self) -> (usize, usize) {
        self.ctx.admission.counts()
    }

    /// The server-wide outbound bound and its counters.
    pub fn outbound(&self) -> &crate::outbox::Budget {
        &self.ctx.budget
    }

    /// Shuts down gracefully; returns once every connection task has ended.
    pub async fn shutdown(self) {
        self.stop_accepting.cancel();
        self.ctx.stop_reading.cancel();
        // Everything already queued for the store commits and its acks are queued to clients.
        if let Err(e) = self.ctx.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        // The other nodes hear at once that this node's users are gone.
        self.ctx.broker.shutdown().await;
        self.ctx.close_all.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 5 s");
        }
    }
}
