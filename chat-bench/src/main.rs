//! chat-bench: load for chat-server, measured from the client side. See docs/benchmarks.md.

mod idle;
mod load;
mod net;
mod soak;
mod storm;
mod sys;
mod tls;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Senders at --rate (or flat out) to rooms of receivers: fan-out, many rooms, durable
    /// writes, overload.
    Load,
    /// --clients authenticated connections, each joined to a room, held --warmup seconds, then
    /// closed; the server's RSS is sampled for --duration seconds after (needs --server-pid).
    Idle,
    /// --clients users join one room, spread evenly over --duration seconds; each tracks its
    /// member list from `joined` and `presence` until it shows all of them online.
    JoinStorm,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Chaos soak: a real chat-server killed with -9 and restarted under 1,000 clients that
    /// drop and resend, plus flooders and stalled readers; then every acknowledged message is
    /// checked stored exactly once and every client's view against the history. Exits 1 on
    /// any violation.
    Soak(soak::Args),
}

/// Load generator for chat-server; with --raw, for bare WebSocket relays.
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "load")]
    scenario: Scenario,
    /// Keep tokens in this file and reuse them (for the same --url) instead of logging in again.
    #[arg(long)]
    token_cache: Option<std::path::PathBuf>,
    /// WebSocket URL, ws:// or wss:// (an IP address: connections are spread over 127.0.0.x
    /// sources; for wss:// the server's certificate must name that address). Several (repeat
    /// the flag, or comma-separated) are nodes of one cluster: connection n starts at URL
    /// n % count and moves to the next if its connect or handshake fails.
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:7878/ws"
    )]
    url: Vec<String>,
    /// CA certificate(s) (PEM) to trust for a wss:// --url, besides the platform's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Speak no protocol: send marked text frames and count them (for the bare relays).
    #[arg(long)]
    raw: bool,
    /// Connections, all in one room.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender; 0 sends flat out within --window.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Unacknowledged messages a flat-out sender keeps in flight (protocol mode).
    #[arg(long, default_value_t = 64)]
    window: i64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Distinct users the connections log in as (round robin); registered once.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// 127.0.0.x source addresses to spread connections over.
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Room to use (with --rooms, the prefix of the room names).
    #[arg(long, default_value = "bench")]
    room: String,
    /// Spread the connections over this many rooms (connection n joins room n % ROOMS);
    /// senders send to their own room. Keep clients a multiple of rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// The server's pid, to report its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for this run in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Soak(args)) = cli.command.take() {
        return match soak::run(args).await {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let urls = net::split_urls(&cli.url)?;
    if urls.iter().any(|u| u.starts_with("wss://")) {
        net::set_tls(tls::connector(cli.ca_file.as_deref())?);
    }
    let fd_limit = sys::raise_fd_limit();
    if cli.clients as u64 + 100 > fd_limit {
        anyhow::bail!(
            "{} connections need more file descriptors than this process may open ({fd_limit})",
            cli.clients
        );
    }
    if cli.raw && cli.scenario != Scenario::Load {
        anyhow::bail!("--raw speaks no protocol: it runs only with --scenario load");
    }
    if cli.scenario == Scenario::Idle && cli.server_pid.is_none() {
        anyhow::bail!("--scenario idle measures the server's memory: give --server-pid PID");
    }
    let tokens = if cli.raw {
        Vec::new()
    } else {
        let users = match cli.scenario {
            // Presence is per user: every joiner is somebody else.
            Scenario::JoinStorm => cli.clients,
            _ => cli.users.clamp(1, cli.clients.max(1)),
        };
        tokens::get(&urls, users, cli.token_cache.as_deref()).await?
    };
    let server_pid = cli.server_pid;
    match cli.scenario {
        Scenario::Load => {}
        Scenario::Idle => {
            let pid =
                server_pid.context("--scenario idle measures the server: give --server-pid")?;
            let plan = idle::Plan {
                urls: urls.clone(),
                clients: cli.clients,
                sources: cli.sources,
                room: cli.room.clone(),
                rooms: cli.rooms.max(1),
                tokens,
                settle: Duration::from_secs(cli.warmup),
                after_close: Duration::from_secs(cli.duration),
            };
            let result = idle::run(&plan, pid, &cli.label).await?;
            return report(&result, cli.json, idle::table);
        }
        Scenario::JoinStorm => {
            let plan = storm::Plan {
                urls: urls.clone(),
                clients: cli.clients,
                sources: cli.sources,
                room: cli.room.clone(),
                tokens,
                span: Duration::from_secs(cli.duration),
            };
            let result = storm::run(plan, server_pid, &cli.label).await?;
            return report(&result, cli.json, storm::table);
        }
    }
    // The server keeps each (user, id) once: every run needs ids of its own.
    let run_id = format!(
        "b{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let plan = Arc::new(load::Plan {
        run_id,
        urls: urls.clone(),
        raw: cli.raw,
        clients: cli.clients,
        senders: cli.senders.min(cli.clients),
        rate: cli.rate,
        window: cli.window.max(1),
        body: cli.body,
        warmup: Duration::from_secs(cli.warmup),
        duration: Duration::from_secs(cli.duration.max(1)),
        sources: cli.sources,
        room: cli.room.clone(),
        rooms: cli.rooms.max(1),
        tokens,
    });
    let stats = Arc::new(load::Stats::default());
    let self_pid = std::process::id();
    let cpu0 = (
        sys::cpu_secs(self_pid),
        cli.server_pid.and_then(sys::cpu_secs),
    );
    let outcome = load::run(plan.clone(), stats.clone()).await?;
    let cpu1 = (
        sys::cpu_secs(self_pid),
        cli.server_pid.and_then(sys::cpu_secs),
    );
    let secs = outcome.measured_secs;
    let sent = stats.sent.load(Ordering::Relaxed);
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let expected = sent * outcome.receivers_per_message;
    let hist = stats
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let q = |p: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    let elapsed = secs + outcome.connect_secs + 2.0 + cli.warmup as f64;
    let cpu = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) / elapsed * 100.0);
    let result = serde_json::json!({
        "label": cli.label,
        "mode": if cli.raw { "raw" } else { "protocol" },
        "clients": cli.clients,
        "senders": plan.senders,
        "rate_per_sender": cli.rate,
        "body_bytes": cli.body,
        "connect_per_sec": (cli.clients as f64 / outcome.connect_secs).round(),
        "sent_per_sec": (sent as f64 / secs).round(),
        "acked_per_sec": (stats.acked.load(Ordering::Relaxed) as f64 / (secs + cli.warmup as f64 + 2.0)).round(),
        "delivered_per_sec": (delivered as f64 / secs).round(),
        "completion_pct": if expected > 0 { (delivered as f64 / expected as f64 * 1000.0).round() / 10.0 } else { 0.0 },
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": hist.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0)},
        "errors": stats.errors.load(Ordering::Relaxed),
        "disconnects": stats.disconnects.load(Ordering::Relaxed),
        "bench_cpu_pct": cpu(cpu0.0, cpu1.0),
        "server_cpu_pct": cpu(cpu0.1, cpu1.1),
        "server_rss_kib": cli.server_pid.and_then(sys::rss_kib),
        "bench_rss_kib": sys::rss_kib(self_pid),
    });
    report(&result, cli.json, load_table)
}

fn report(
    result: &serde_json::Value,
    json: bool,
    table: fn(&serde_json::Value),
) -> anyhow::Result<()> {
    if json {
        println!("{result}");
    } else {
        table(result);
    }
    Ok(())
}

fn load_table(result: &serde_json::Value) {
    {
        let l = &result["latency_ms"];
        println!(
            "{:<12} {:>6} clients {:>3} senders | sent {:>8}/s delivered {:>9}/s ({}%) | p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ms | errors {} disconnects {} | cpu bench {:.0}% server {:.0}% | rss server {} KiB",
            match result["label"].as_str() {
                Some(l) if !l.is_empty() => l,
                _ => result["mode"].as_str().unwrap_or_default(),
            },
            result["clients"],
            result["senders"],
            result["sent_per_sec"],
            result["delivered_per_sec"],
            result["completion_pct"],
            l["p50"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["p999"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0),
            result["errors"],
            result["disconnects"],
            result["bench_cpu_pct"].as_f64().unwrap_or(0.0),
            result["server_cpu_pct"].as_f64().unwrap_or(0.0),
            result["server_rss_kib"],
        );
    }
}
