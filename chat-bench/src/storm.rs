//! Join storm: N users join one room, spread evenly over a span. Every member keeps its member
//! list as a client does (from `joined`, then `presence` diffs) and notes when it first shows all
//! N online; the frames each member received say whether presence was batched (about
//! span/interval frames) or one per joiner (N, N² in all).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::{net, sys};

pub struct Plan {
    pub urls: Vec<String>,
    pub clients: usize,
    pub sources: usize,
    pub room: String,
    pub tokens: Vec<String>,
    /// Client n joins at n × span / clients.
    pub span: Duration,
}

#[derive(Deserialize)]
struct Member<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    members: Vec<Member<'a>>,
    #[serde(default, borrow)]
    changes: Vec<Member<'a>>,
}

/// What one member saw.
#[derive(Default, Clone)]
struct Seen {
    /// From sending `join` to `joined`.
    join_ms: f64,
    /// When its list first showed everyone online, from the start of the storm.
    complete_at: Option<Duration>,
    presence_frames: u64,
    presence_entries: u64,
    frames: u64,
    bytes: u64,
    disconnected: bool,
}

/// The member list of one client: who of the storm's users it shows online.
struct Roster {
    online: Vec<bool>,
    count: usize,
}

impl Roster {
    fn apply(&mut self, m: &Member<'_>) {
        let Some(i) = m
            .user
            .strip_prefix("bench")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < self.online.len())
        else {
            return;
        };
        let on = m.status != "offline";
        if on != self.online[i] {
            self.online[i] = on;
            if on {
                self.count += 1;
            } else {
                self.count -= 1;
            }
        }
    }
}

async fn member(
    n: usize,
    mut ws: net::Ws,
    plan: Arc<Plan>,
    start: tokio::time::Instant,
    done: Arc<AtomicUsize>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Seen> {
    let at = start + plan.span.mul_f64(n as f64 / plan.clients as f64);
    tokio::time::sleep_until(at).await;
    let mut seen = Seen::default();
    let mut roster = Roster {
        online: vec![false; plan.clients],
        count: 0,
    };
    let sent = Instant::now();
    ws.send(Message::Text(Utf8Bytes::from(
        json!({"type":"join","room":plan.room}).to_string(),
    )))
    .await?;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                // Counted, not fatal: a server that cannot keep up closes slow members.
                seen.disconnected = true;
                return Ok(seen);
            }
            Some(Ok(_)) => continue,
        };
        seen.frames += 1;
        seen.bytes += text.len() as u64;
        let f: Frame<'_> = serde_json::from_str(&text)?;
        match &*f.kind {
            "joined" => {
                seen.join_ms = sent.elapsed().as_secs_f64() * 1000.0;
                f.members.iter().for_each(|m| roster.apply(m));
            }
            "presence" => {
                seen.presence_frames += 1;
                seen.presence_entries += f.changes.len() as u64;
                f.changes.iter().for_each(|m| roster.apply(m));
            }
            "error" => anyhow::bail!("member {n}: {text}"),
            _ => {}
        }
        if seen.complete_at.is_none() && roster.count == plan.clients {
            seen.complete_at = Some(start.elapsed());
            done.fetch_add(1, Ordering::Relaxed);
        }
        // Everyone complete: the storm is over (nobody may leave before, or lists would change).
        if done.load(Ordering::Relaxed) == plan.clients {
            break;
        }
    }
    // Stay connected until everyone is done: leaving would be presence of its own.
    while done.load(Ordering::Relaxed) < plan.clients && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(seen)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub async fn run(
    plan: Plan,
    server_pid: Option<u32>,
    label: &str,
) -> anyhow::Result<serde_json::Value> {
    net::create_rooms(
        &plan.urls,
        &plan.tokens[0],
        std::slice::from_ref(&plan.room),
    )
    .await?;
    let (url, toks, sources) = (
        plan.urls.clone(),
        Arc::new(plan.tokens.clone()),
        plan.sources,
    );
    let conns = net::connect_all(plan.clients, move |n| {
        let (url, token) = (url.clone(), toks[n].clone());
        async move { net::hello(&url, n, sources, &token).await }
    })
    .await?;
    let plan = Arc::new(plan);
    let cpu0 = server_pid.and_then(sys::cpu_secs);
    let me = std::process::id();
    let bench_cpu0 = sys::cpu_secs(me);
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    // Members whose list is not complete 10 s after the last join count as incomplete.
    let deadline = start + plan.span + Duration::from_secs(10);
    let done = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (n, ws) in conns {
        set.spawn(member(n, ws, plan.clone(), start, done.clone(), deadline));
    }
    let mut all = Vec::with_capacity(plan.clients);
    while let Some(r) = set.join_next().await {
        all.push(r??);
    }
    let wall = start.elapsed();
    let cpu = server_pid
        .and_then(sys::cpu_secs)
        .zip(cpu0)
        .map(|(b, a)| ((b - a) / wall.as_secs_f64() * 1000.0).round() / 10.0);
    let bench_cpu = sys::cpu_secs(me)
        .zip(bench_cpu0)
        .map(|(b, a)| ((b - a) / wall.as_secs_f64() * 1000.0).round() / 10.0);
    let last_join = plan
        .span
        .mul_f64((plan.clients - 1) as f64 / plan.clients as f64);
    let complete = all.iter().filter(|s| s.complete_at.is_some()).count();
    let mut after_last: Vec<f64> = all
        .iter()
        .filter_map(|s| s.complete_at)
        .map(|t| t.saturating_sub(last_join).as_secs_f64() * 1000.0)
        .collect();
    after_last.sort_by(f64::total_cmp);
    let sorted = |f: fn(&Seen) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let join_ms = sorted(|s| s.join_ms);
    let pframes = sorted(|s| s.presence_frames as f64);
    let pentries = sorted(|s| s.presence_entries as f64);
    let frames = sorted(|s| s.frames as f64);
    let bytes = sorted(|s| s.bytes as f64);
    Ok(json!({
        "label": label,
        "scenario": "join_storm",
        "clients": plan.clients,
        "span_secs": plan.span.as_secs_f64(),
        "complete_members": complete,
        "disconnected": all.iter().filter(|s| s.disconnected).count(),
        "complete_after_last_join_ms": {
            "p50": quantile(&after_last, 0.5).round(),
            "p99": quantile(&after_last, 0.99).round(),
            "max": after_last.last().copied().unwrap_or(0.0).round(),
        },
        "join_to_joined_ms": {"p50": quantile(&join_ms, 0.5).round(), "p99": quantile(&join_ms, 0.99).round(), "max": join_ms.last().copied().unwrap_or(0.0).round()},
        "presence_frames_per_member": {"p50": quantile(&pframes, 0.5), "max": pframes.last().copied().unwrap_or(0.0)},
        "presence_entries_per_member": {"p50": quantile(&pentries, 0.5), "max": pentries.last().copied().unwrap_or(0.0)},
        "frames_per_member": {"p50": quantile(&frames, 0.5), "max": frames.last().copied().unwrap_or(0.0)},
        "bytes_per_member_p50": quantile(&bytes, 0.5),
        "server_cpu_pct": cpu,
        "bench_cpu_pct": bench_cpu,
        "server_rss_kib": server_pid.and_then(sys::rss_kib),
    }))
}

pub fn table(r: &serde_json::Value) {
    let c = &r["complete_after_last_join_ms"];
    let j = &r["join_to_joined_ms"];
    println!(
        "{:<12} {} joins in {} s | complete lists {}/{}: after the last join p50 {} p99 {} max {} ms | disconnected {} | join->joined p50 {} p99 {} ms | presence frames/member p50 {} max {} (entries p50 {}) | frames/member p50 {} | cpu server {}% bench {}%",
        r["label"].as_str().unwrap_or("storm"),
        r["clients"],
        r["span_secs"],
        r["complete_members"],
        r["clients"],
        c["p50"],
        c["p99"],
        c["max"],
        r["disconnected"],
        j["p50"],
        j["p99"],
        r["presence_frames_per_member"]["p50"],
        r["presence_frames_per_member"]["max"],
        r["presence_entries_per_member"]["p50"],
        r["frames_per_member"]["p50"],
        r["server_cpu_pct"],
        r["bench_cpu_pct"],
    );
}
