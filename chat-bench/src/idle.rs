//! Idle connections: what an authenticated connection in a room costs the server while it does
//! nothing, and whether the server gives that memory back once they have all gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::{net, sys};

pub struct Plan {
    pub urls: Vec<String>,
    pub clients: usize,
    pub sources: usize,
    pub room: String,
    pub rooms: usize,
    pub tokens: Vec<String>,
    /// How long the connections are held before measuring (the server settles).
    pub settle: Duration,
    /// How long after closing them the server's RSS is watched.
    pub after_close: Duration,
}

fn room_name(plan: &Plan, r: usize) -> String {
    format!("{}-{r}", plan.room)
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    sys::rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read the RSS of pid {pid}"))
}

pub async fn run(plan: &Plan, pid: u32, label: &str) -> anyhow::Result<serde_json::Value> {
    let names: Vec<String> = (0..plan.rooms).map(|r| room_name(plan, r)).collect();
    net::create_rooms(&plan.urls, &plan.tokens[0], &names).await?;
    // Let the logins' memory settle before calling this the empty server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let empty = rss(pid)?;
    let t0 = Instant::now();
    let (tokens, sources, rooms) = (&plan.tokens, plan.sources, &names);
    // Each connection reads from the moment it is up, so it answers the server's pings like a
    // live client: 19,000 take about a minute to open, longer than the server waits for a pong.
    let ended = Arc::new(AtomicUsize::new(0));
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(plan.clients);
    let opening = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.clients {
        let (url, token, room) = (
            plan.urls.clone(),
            tokens[n % tokens.len()].clone(),
            rooms[n % rooms.len()].clone(),
        );
        let (ended, up_tx, opening) = (ended.clone(), up_tx.clone(), opening.clone());
        tasks.spawn(async move {
            let permit = opening.acquire_owned().await;
            let ws = net::join(&url, n, sources, &token, &room).await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => {
                    let _ = up_tx.send(Ok(())).await;
                    ws
                }
                Err(e) => {
                    let _ = up_tx.send(Err(e.context(format!("connection {n}")))).await;
                    return;
                }
            };
            while let Some(Ok(_)) = ws.next().await {}
            ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(up_tx);
    // Each connection reports once (the tasks live on, reading, so the channel never closes).
    let mut up = 0;
    while up < plan.clients {
        let Some(r) = up_rx.recv().await else { break };
        match r {
            Ok(()) => up += 1,
            Err(e) => anyhow::bail!(
                "only {up} of {} connections came up (the fd limit is {}: one process holds about 19,000 sockets here): {e:#}",
                plan.clients,
                crate::sys::raise_fd_limit()
            ),
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(plan.settle).await;
    let full = rss(pid)?;
    let dropped = ended.load(Ordering::Relaxed);
    // Closing: every socket at once, as when a network partition heals or a proxy restarts.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let closed_at = Instant::now();
    let mut samples = Vec::new();
    while closed_at.elapsed() < plan.after_close {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push((closed_at.elapsed().as_secs(), rss(pid)?));
    }
    let after = samples.last().map_or(full, |s| s.1);
    let per_conn = (full.saturating_sub(empty)) as f64 * 1024.0 / plan.clients as f64;
    Ok(json!({
        "label": label,
        "scenario": "idle",
        "clients": plan.clients,
        "rooms": plan.rooms,
        "connect_per_sec": (plan.clients as f64 / connect_secs).round(),
        "dropped_while_idle": dropped,
        "server_rss_kib": {"empty": empty, "connected": full, "after_close": after},
        "bytes_per_conn": per_conn.round(),
        "after_close_vs_empty_pct": ((after as f64 / empty as f64 - 1.0) * 1000.0).round() / 10.0,
        "after_close_secs": plan.after_close.as_secs(),
        "rss_after_close_kib": samples,
        "bench_rss_kib": sys::rss_kib(std::process::id()),
    }))
}

pub fn table(r: &serde_json::Value) {
    let rss = &r["server_rss_kib"];
    println!(
        "{:<12} {:>6} idle connections in {} rooms | server RSS empty {} KiB, connected {} KiB: {} B/conn | {} s after close {} KiB ({:+}% of empty) | dropped {}",
        r["label"].as_str().unwrap_or("idle"),
        r["clients"],
        r["rooms"],
        rss["empty"],
        rss["connected"],
        r["bytes_per_conn"],
        r["after_close_secs"],
        rss["after_close"],
        r["after_close_vs_empty_pct"].as_f64().unwrap_or(0.0),
        r["dropped_while_idle"],
    );
}
