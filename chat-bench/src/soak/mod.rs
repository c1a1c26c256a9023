//! Chaos soak (`chat-bench soak`): a real chat-server process, killed with `kill -9` and
//! started again every few seconds, under 1,000 well-behaved clients in 20 rooms that send at
//! random, drop their connections at random and come back with exact catch-up, beside clients
//! that stop reading (closed 4008) and clients that flood (closed 4009). Then every client
//! finishes what it has in flight, the server is stopped, and the stored history is read back
//! and checked against what the clients were acknowledged and shown (see `check.rs`).
//! docs/soak.md has the figures of a long run.
//!
//! "Acknowledged" across a kill: an `ack` a client received is a promise, whatever happens
//! next. A message sent but not acknowledged when the server died may or may not be stored; the
//! client sends it again with the same id once it has re-joined, and the server answers
//! `duplicate: true` with the original's seq if it was. Messages of the rogues count only if
//! they were acknowledged.

mod check;
mod client;
mod conn;
mod rng;
mod rogue;
mod server;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use rng::{Rng, parse_duration};
use server::Server;
use view::Kind;

/// `chat-bench soak`: see the module documentation; `scripts/soak` builds and runs it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long the chaos lasts (then the clients finish, and the checks take some seconds more).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    duration: Duration,
    /// Well-behaved clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Rooms; client k joins `--rooms-per-client` of them, from room k % rooms on.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    #[arg(long, default_value_t = 2)]
    rooms_per_client: usize,
    /// Users the well-behaved clients log in as (round robin); 0: one per 10 clients.
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Clients that flood until closed with 4009, each its own user.
    #[arg(long, default_value_t = 10)]
    floods: usize,
    /// Clients that stop reading until closed with 4008, each its own user.
    #[arg(long, default_value_t = 10)]
    stalls: usize,
    /// A staller stops reading for a random time between these two.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    stall_min: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    stall_max: Duration,
    /// Mean time between two `kill -9` of the server (uniform in 0.5x..1.5x); 0: never.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    kill_every: Duration,
    /// Mean time between two messages of one client (exponential).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    send_every: Duration,
    /// Mean time a client's connection lasts before it drops it (exponential); 0: never.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    disconnect_every: Duration,
    /// Fail if the server's peak resident set (VmHWM of any incarnation) exceeds this.
    #[arg(long, default_value_t = 512)]
    max_rss_mb: u64,
    /// How long the clients have, after the chaos, to get every message acknowledged.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    drain_timeout: Duration,
    /// The chat-server binary (default: next to chat-bench).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// One more argument for chat-server (repeat it: `--server-arg=--outbound-queue=256`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Keep the database and the server's log here (default: a temporary directory, removed
    /// when the run passes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of every random choice (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// 127.0.0.x source addresses to spread connections over.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Send, drop connections, misbehave.
    Run,
    /// No new messages and no drops: get everything acknowledged.
    Drain,
    /// Catch up to these latest seqs (by room), then close.
    Finish(Arc<Vec<u64>>),
    /// Out of time: stop where you are.
    Abort,
}

#[derive(Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub dup_acks: AtomicU64,
    pub pending: AtomicI64,
    pub reconnects: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Room snapshots completed (a client's first joins count here too).
    pub joins: AtomicU64,
    pub rogue_sent: AtomicU64,
    pub rogue_acked: AtomicU64,
}

/// What every client task shares.
pub struct Shared {
    pub addr: std::net::SocketAddr,
    pub sources: usize,
    pub seed: u64,
    pub rooms: Vec<String>,
    pub epochs: Vec<String>,
    /// Each room's latest seq before any message (the members' joins).
    pub bases: Vec<u64>,
    pub room_index: HashMap<String, usize>,
    /// The server incarnation, bumped just before it is ended: a connection that ends in
    /// another generation than it began in was ended by a kill.
    pub generation: AtomicUsize,
    pub phase: watch::Sender<Phase>,
    /// Handshakes in flight at once: 1,000 reconnects after a kill come in waves.
    pub handshakes: Semaphore,
    pub stats: Stats,
    pub send_every: Duration,
    pub disconnect_every: Duration,
    pub stall_for: (Duration, Duration),
}

/// Blocking work on the server process (spawn, wait, kill) off the async workers' backs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Runs the soak; `Ok(false)` when a check failed.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let rogues = args.floods + args.stalls;
    let fd_limit = crate::sys::raise_fd_limit();
    anyhow::ensure!(
        (args.clients + rogues) as u64 + 200 <= fd_limit,
        "{} connections need more file descriptors than this process may open ({fd_limit})",
        args.clients + rogues
    );
    anyhow::ensure!(
        args.rooms >= 1 && args.rooms <= 60_000,
        "--rooms: 1 to 60000"
    );
    let per_client = args.rooms_per_client.clamp(1, args.rooms);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let temp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("chat-soak-{}-{seed:x}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the directory of chat-bench")?
            .join("chat-server"),
    };
    anyhow::ensure!(
        bin.exists(),
        "no chat-server at {} (give --server-bin)",
        bin.display()
    );
    let mut server = Server::new(
        &bin,
        &dir,
        server::pick_port(seed)?,
        args.server_arg.clone(),
    )?;
    blocking(|| server.start(&[]))?;
    eprintln!(
        "soak: seed {seed}, server {} (pid {:?}), data in {}",
        server.url(),
        server.pid(),
        dir.display()
    );
    let outcome = soak(&args, seed, per_client, &mut server).await;
    let passed = match outcome {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("soak: server log tail:\n  {}", server.tail().join("\n  "));
            return Err(e.context(format!("soak failed (data kept in {})", dir.display())));
        }
    };
    drop(server);
    if passed && temp {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !passed {
        eprintln!(
            "soak: the database and server.log are kept in {}",
            dir.display()
        );
    }
    Ok(passed)
}

async fn soak(
    args: &Args,
    seed: u64,
    per_client: usize,
    server: &mut Server,
) -> anyhow::Result<bool> {
    let url = server.url();
    let users = if args.users == 0 {
        args.clients.div_ceil(10)
    } else {
        args.users
    }
    .max(1);
    // Users: the steady ones, then one per rogue, then the one that creates and checks.
    let total_users = users + args.floods + args.stalls + 1;
    let t = Instant::now();
    let tokens = crate::tokens::get(std::slice::from_ref(&url), total_users, None).await?;
    eprintln!(
        "soak: {total_users} users registered in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let admin = tokens[total_users - 1].clone();
    let rooms: Vec<String> = (0..args.rooms).map(|r| format!("soak-{r}")).collect();
    crate::net::create_rooms(std::slice::from_ref(&url), &admin, &rooms).await?;
    // Every user becomes a member of its rooms before any traffic: a first join is an event of
    // the room's log and takes a seq, so joins during the chaos would put gaps between the
    // messages' seqs, which the check (and every client's view) holds gap-free. Rejoins after
    // a reconnect are no events.
    let mut rooms_of: Vec<std::collections::BTreeSet<usize>> =
        vec![Default::default(); total_users];
    for k in 0..args.clients {
        rooms_of[k % users].extend((0..per_client).map(|i| (k + i) % args.rooms));
    }
    for k in 0..args.floods + args.stalls {
        let r = &mut rooms_of[users + k];
        if k < args.floods {
            r.insert(k % args.rooms);
        } else {
            r.extend(0..args.rooms);
        }
    }
    for (u, rs) in rooms_of.iter().enumerate() {
        let names: Vec<String> = rs.iter().map(|r| rooms[*r].clone()).collect();
        if !names.is_empty() {
            epochs_and_latest(&url, &tokens[u], &names).await?;
        }
    }
    let (epochs, bases) = epochs_and_latest(&url, &admin, &rooms).await?;
    let (phase, _) = watch::channel(Phase::Run);
    let shared = Arc::new(Shared {
        addr: server.addr,
        sources: args.sources,
        seed,
        room_index: rooms.iter().cloned().zip(0..).collect(),
        rooms: rooms.clone(),
        epochs,
        bases: bases.clone(),
        generation: AtomicUsize::new(0),
        phase,
        handshakes: Semaphore::new(200),
        stats: Stats::default(),
        send_every: args.send_every,
        disconnect_every: args.disconnect_every,
        stall_for: (args.stall_min, args.stall_max.max(args.stall_min)),
    });
    let mut steady = Vec::with_capacity(args.clients);
    for k in 0..args.clients {
        let spec = client::Spec {
            k,
            user: crate::tokens::user(k % users),
            token: tokens[k % users].clone(),
            rooms: (0..per_client).map(|i| (k + i) % args.rooms).collect(),
        };
        steady.push(tokio::spawn(client::run(spec, shared.clone())));
    }
    // Everyone in before the chaos starts: a state, not a time.
    let want = (args.clients * per_client) as u64;
    let deadline =
        Instant::now() + Duration::from_secs(120) + Duration::from_millis(50) * args.clients as u32;
    while shared.stats.joins.load(Ordering::Relaxed) < want {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {want} first joins completed",
            shared.stats.joins.load(Ordering::Relaxed)
        );
        if let Some(status) = blocking(|| server.check_alive()) {
            anyhow::bail!("the server exited while clients connected: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "soak: {} clients in {} rooms after {:.1} s; chaos for {:?}",
        args.clients,
        args.rooms,
        t.elapsed().as_secs_f64(),
        args.duration
    );
    let mut rogue_tasks = Vec::new();
    for k in 0..args.floods + args.stalls {
        let kind = if k < args.floods {
            Kind::Flood
        } else {
            Kind::Stall
        };
        let u = users + k;
        let spec = rogue::Spec {
            kind,
            k,
            user: crate::tokens::user(u),
            token: tokens[u].clone(),
            rooms: match kind {
                Kind::Flood => vec![k % args.rooms],
                _ => (0..args.rooms).collect(),
            },
        };
        rogue_tasks.push(tokio::spawn(rogue::run(spec, shared.clone())));
    }

    // The chaos.
    let mut rng = Rng::new(seed, u64::MAX);
    let start = Instant::now();
    let next_kill =
        |rng: &mut Rng| Instant::now() + rng.between(args.kill_every / 2, args.kill_every * 3 / 2);
    let mut kill_at = next_kill(&mut rng);
    let mut report_at = Instant::now() + Duration::from_secs(5);
    while start.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keep_up(server, &shared)?;
        if !args.kill_every.is_zero() && Instant::now() >= kill_at {
            shared.generation.fetch_add(1, Ordering::SeqCst);
            blocking(|| server.kill9())?;
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(500))).await;
            blocking(|| server.start(&[]))?;
            kill_at = next_kill(&mut rng);
        }
        if Instant::now() >= report_at {
            progress(start, server, &shared);
            report_at += Duration::from_secs(5);
        }
    }

    // Everything in flight acknowledged, everyone caught up.
    shared.phase.send_replace(Phase::Drain);
    let drain_end = Instant::now() + args.drain_timeout;
    let mut rogue_reports = Vec::new();
    for t in rogue_tasks {
        rogue_reports.push(t.await?);
    }
    while shared.stats.pending.load(Ordering::Relaxed) > 0 && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keep_up(server, &shared)?;
    }
    progress(start, server, &shared);
    let targets = Arc::new(epochs_and_latest(&url, &admin, &rooms).await?.1);
    shared.phase.send_replace(Phase::Finish(targets.clone()));
    let finish_end = Instant::now() + Duration::from_secs(60) + args.drain_timeout / 2;
    let mut steady_reports = Vec::with_capacity(steady.len());
    for t in steady {
        while !t.is_finished() && Instant::now() < finish_end {
            tokio::time::sleep(Duration::from_millis(50)).await;
            keep_up(server, &shared)?;
        }
        if !t.is_finished() {
            shared.phase.send_replace(Phase::Abort);
        }
        steady_reports.push(t.await?);
    }

    // Stop, start on the same database with no rate limit, read everything back, stop.
    shared.generation.fetch_add(1, Ordering::SeqCst);
    blocking(|| server.stop(Duration::from_secs(30)))?;
    blocking(|| server.start(&["--rate-per-sec", "0"]))?;
    let stored = check::read_history(&server.url(), &admin, &rooms).await?;
    blocking(|| server.stop(Duration::from_secs(30)))?;

    let logs = server.logs.lock().unwrap_or_else(|p| p.into_inner());
    let verdict = check::verify(&check::Inputs {
        seed,
        stored: &stored,
        bases: &bases,
        targets: &targets,
        steady: &steady_reports,
        rogues: &rogue_reports,
        logs: &logs,
        incarnations: &server.incarnations,
        max_rss_kib: args.max_rss_mb * 1024,
        stall_must_close: stall_must_close(args, &shared.stats),
    });
    let st = &shared.stats;
    let f = |k: &str| verdict.figures.get(k).copied().unwrap_or(0);
    let result = json!({
        "seed": seed,
        "duration_secs": args.duration.as_secs_f64(),
        "clients": args.clients,
        "rooms": args.rooms,
        "floods": args.floods,
        "stalls": args.stalls,
        "sent": st.sent.load(Ordering::Relaxed),
        "acked": st.acked.load(Ordering::Relaxed),
        "duplicate_acks": st.dup_acks.load(Ordering::Relaxed),
        "rogue_sent": st.rogue_sent.load(Ordering::Relaxed),
        "rogue_acked": st.rogue_acked.load(Ordering::Relaxed),
        "reconnects": st.reconnects.load(Ordering::Relaxed),
        "rate_limited": st.rate_limited.load(Ordering::Relaxed),
        "incarnations": server.incarnations.len(),
        "peak_rss_mib": mib(f("peak_rss_kib")),
        "check": verdict.to_json(),
    });
    print_report(&result, &verdict);
    if args.json {
        println!("{result}");
    }
    Ok(verdict.violations.is_empty())
}

/// Whether the rooms carried enough during the shortest stall to overflow the server's
/// outbound queue (`--outbound-queue`, 1,024 frames by default) half again, counting the
/// messages actually sent: a loaded machine sends fewer than asked, and a staller that was never
/// sent enough to overflow is not the server's fault.
fn stall_must_close(args: &Args, stats: &Stats) -> bool {
    let mut queue = 1024.0;
    let mut it = args.server_arg.iter();
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--outbound-queue") {
            Some("") => it.next().map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            queue = n;
        }
    }
    let per_sec = stats.sent.load(Ordering::Relaxed) as f64 / args.duration.as_secs_f64();
    per_sec * args.stall_min.as_secs_f64() >= 1.5 * queue
}

/// Restarts a server that died by itself (the check reports it).
fn keep_up(server: &mut Server, shared: &Shared) -> anyhow::Result<()> {
    blocking(|| {
        server.sample();
        if let Some(status) = server.check_alive() {
            eprintln!("soak: the server exited by itself ({status}); restarting it");
            shared.generation.fetch_add(1, Ordering::SeqCst);
            server.start(&[])?;
        }
        Ok(())
    })
}

fn progress(start: Instant, server: &Server, shared: &Shared) {
    let st = &shared.stats;
    eprintln!(
        "soak: {:>4.0} s  sent {}  acked {}  unacked {}  kills {}  reconnects {}  peak RSS {} MiB",
        start.elapsed().as_secs_f64(),
        st.sent.load(Ordering::Relaxed),
        st.acked.load(Ordering::Relaxed),
        st.pending.load(Ordering::Relaxed),
        server
            .incarnations
            .iter()
            .filter(|i| i.ending == server::Ending::Killed)
            .count(),
        st.reconnects.load(Ordering::Relaxed),
        mib(server.peak_kib()),
    );
}

/// Each room's epoch and latest seq, from a `join` by the checking user.
async fn epochs_and_latest(
    url: &str,
    token: &str,
    rooms: &[String],
) -> anyhow::Result<(Vec<String>, Vec<u64>)> {
    let mut ws = crate::net::hello(&[url.to_owned()], 0, 1, token).await?;
    let (mut epochs, mut latest) = (Vec::new(), Vec::new());
    for room in rooms {
        crate::net::send_json(&mut ws, json!({"type":"join","room":room})).await?;
        let v = crate::net::expect(&mut ws, "joined").await?;
        epochs.push(v["epoch"].as_str().context("epoch")?.to_owned());
        latest.push(v["latest_seq"].as_u64().context("latest_seq")?);
    }
    let _ = futures_util::SinkExt::close(&mut ws).await;
    Ok((epochs, latest))
}

fn print_report(r: &serde_json::Value, v: &check::Verdict) {
    let f = |k: &str| v.figures.get(k).copied().unwrap_or(0);
    println!(
        "soak: {} s, {} clients in {} rooms, {} flooders, {} stallers (seed {})",
        r["duration_secs"], r["clients"], r["rooms"], r["floods"], r["stalls"], r["seed"]
    );
    println!(
        "  messages sent {}, acked {} ({} duplicate acks after resends); rogues sent {}, acked {}",
        r["sent"], r["acked"], r["duplicate_acks"], r["rogue_sent"], r["rogue_acked"]
    );
    println!(
        "  kills {}, reconnects {}, rate_limited {}, stored {}",
        f("kills"),
        r["reconnects"],
        r["rate_limited"],
        f("stored")
    );
    println!(
        "  lost = {}, duplicated = {}, gaps = {}, view mismatches = {} (shown twice {}, view gaps {}, incomplete {}), unacked = {}",
        f("lost"),
        f("duplicated"),
        f("gaps"),
        f("view_mismatches"),
        f("shown_twice"),
        f("view_gaps"),
        f("views_incomplete"),
        f("unacked_steady"),
    );
    println!(
        "  stallers closed 4008: {} (survived a stall: {}), flooders closed 4009: {}; server logged 4008 {}, 4009 {}, 4010 {}",
        f("stalls_closed_4008"),
        f("stalls_survived"),
        f("floods_closed_4009"),
        f("server_logged_4008"),
        f("server_logged_4009"),
        f("server_logged_4010"),
    );
    println!(
        "  steady clients closed by the server: 4008 {}, 4010 {}, other {}",
        f("steady_closed_4008"),
        f("steady_closed_4010"),
        f("steady_dropped_other"),
    );
    println!("  rogue connections: {}", v.rogue_ends.join(", "));
    println!(
        "  rogue messages stored without an ack reaching them: {} (allowed: closed before the ack)",
        f("stored_unacked_rogue")
    );
    println!("  peak RSS {} MiB", r["peak_rss_mib"]);
    if v.violations.is_empty() {
        println!("  PASS");
    } else {
        for why in &v.violations {
            println!("  FAIL: {why}");
        }
    }
}
