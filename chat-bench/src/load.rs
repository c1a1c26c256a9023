//! One load run: C connections in one room, S of them sending at a rate (or flat out with a
//! window of unacknowledged messages), every connection counting the marked messages it
//! receives and their latency from the moment the sender sent them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::net::{self, Ws};

/// Marked bodies are `B|<micros since start>|<padding>`; the receiver finds the marker without
/// parsing the frame.
const MARK: &str = "B|";

pub struct Plan {
    /// Prefix of this run's message ids: the server stores an id once per user, so a run that
    /// reused an earlier run's ids would get duplicate acks and no broadcasts.
    pub run_id: String,
    pub urls: Vec<String>,
    pub raw: bool,
    pub clients: usize,
    pub senders: usize,
    /// Messages per second per sender; 0 = flat out within `window`.
    pub rate: u32,
    pub window: i64,
    pub body: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub sources: usize,
    pub room: String,
    /// Connections are spread over this many rooms (connection n joins room n % rooms).
    pub rooms: usize,
    pub tokens: Vec<String>,
}

impl Plan {
    fn room_of(&self, n: usize) -> String {
        if self.rooms <= 1 {
            self.room.clone()
        } else {
            format!("{}-{}", self.room, n % self.rooms)
        }
    }
}

#[derive(Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub disconnects: AtomicU64,
    pub latency: Mutex<Option<Histogram<u64>>>,
}

struct Clock {
    start: Instant,
    /// Messages sent in [from, to) (µs since start) are the measured ones.
    from: u64,
    to: u64,
    stop: AtomicBool,
}

impl Clock {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

fn marker_ts(text: &str) -> Option<u64> {
    let i = text.find(MARK)? + MARK.len();
    let rest = &text.as_bytes()[i..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn setup(plan: &Plan, n: usize) -> anyhow::Result<Ws> {
    if plan.raw {
        return net::connect(&plan.urls, n, plan.sources, None).await;
    }
    let token = &plan.tokens[n % plan.tokens.len()];
    net::join(&plan.urls, n, plan.sources, token, &plan.room_of(n)).await
}

pub struct Outcome {
    pub connect_secs: f64,
    pub measured_secs: f64,
    pub receivers_per_message: u64,
}

/// Connects everyone, runs the load, drains, and fills `stats`.
pub async fn run(plan: Arc<Plan>, stats: Arc<Stats>) -> anyhow::Result<Outcome> {
    if !plan.raw {
        let names: Vec<String> = (0..plan.rooms.max(1)).map(|r| plan.room_of(r)).collect();
        net::create_rooms(&plan.urls, &plan.tokens[0], &names).await?;
    }
    let t0 = Instant::now();
    let p = plan.clone();
    let conns = net::connect_all(plan.clients, move |n| {
        let p = p.clone();
        async move { setup(&p, n).await }
    })
    .await?;
    stats.connected.store(conns.len() as u64, Ordering::Relaxed);
    let connect_secs = t0.elapsed().as_secs_f64();
    let start = Instant::now();
    let from = plan.warmup.as_micros() as u64;
    let clock = Arc::new(Clock {
        start,
        from,
        to: from + plan.duration.as_micros() as u64,
        stop: AtomicBool::new(false),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (n, ws) in conns {
        let (sink, stream) = ws.split();
        let outstanding = Arc::new(AtomicI64::new(0));
        let acked = Arc::new(Notify::new());
        tasks.spawn(receive(
            stream,
            plan.clone(),
            stats.clone(),
            clock.clone(),
            outstanding.clone(),
            acked.clone(),
        ));
        if n < plan.senders {
            tasks.spawn(send(
                sink,
                n,
                plan.clone(),
                stats.clone(),
                clock.clone(),
                outstanding,
                acked,
            ));
        } else {
            // Keep the write half alive (and answering pings through the read half).
            tasks.spawn(async move {
                let _sink = sink;
                std::future::pending::<()>().await;
            });
        }
    }
    tokio::time::sleep(plan.warmup + plan.duration).await;
    clock.stop.store(true, Ordering::Relaxed);
    // Let what was sent in the window arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tasks.abort_all();
    // Every member of the sender's room receives it, the sender included (the relay skips it).
    let receivers_per_message = if plan.raw {
        plan.clients as u64 - 1
    } else {
        (plan.clients / plan.rooms.max(1)) as u64
    };
    Ok(Outcome {
        connect_secs,
        measured_secs: plan.duration.as_secs_f64(),
        receivers_per_message,
    })
}

async fn send(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    n: usize,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    clock: Arc<Clock>,
    outstanding: Arc<AtomicI64>,
    acked: Arc<Notify>,
) {
    let pad = "x".repeat(plan.body.saturating_sub(24));
    let mut ticker = (plan.rate > 0).then(|| {
        let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
        // Senders start at spread phases, as people do, not all on the same tick.
        let phase = period.mul_f64((n as f64 * 0.618_033_988_75).fract());
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut i = 0u64;
    while !clock.stop.load(Ordering::Relaxed) {
        match &mut ticker {
            Some(t) => {
                t.tick().await;
            }
            None => {
                while outstanding.load(Ordering::Relaxed) >= plan.window {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), acked.notified()).await;
                    if clock.stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }
        i += 1;
        let ts = clock.now_us();
        let body = format!("{MARK}{ts}|{pad}");
        let text = if plan.raw {
            body
        } else {
            format!(
                r#"{{"type":"send","room":"{}","id":"{}-{n}-{i}","body":"{body}"}}"#,
                plan.room_of(n),
                plan.run_id
            )
        };
        if !plan.raw {
            outstanding.fetch_add(1, Ordering::Relaxed);
        }
        if sink
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .is_err()
        {
            stats.disconnects.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if ts >= clock.from && ts < clock.to {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn receive(
    mut stream: futures_util::stream::SplitStream<Ws>,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    clock: Arc<Clock>,
    outstanding: Arc<AtomicI64>,
    acked: Arc<Notify>,
) {
    // Latency samples wait here and go to the shared histogram in batches: a histogram per
    // connection (~140 KB at 3 significant digits) was most of the generator's memory.
    let mut samples: Vec<u32> = Vec::new();
    let mut delivered = 0u64;
    let flush = |samples: &mut Vec<u32>, delivered: &mut u64| {
        stats.delivered.fetch_add(*delivered, Ordering::Relaxed);
        *delivered = 0;
        if samples.is_empty() {
            return;
        }
        let mut all = stats.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
        });
        for s in samples.drain(..) {
            let _ = h.record(u64::from(s));
        }
    };
    let mut last_flush = Instant::now();
    // Done once what was sent in the window has had time to arrive.
    let end = tokio::time::Instant::from_std(
        clock.start + Duration::from_micros(clock.to) + Duration::from_millis(1900),
    );
    loop {
        let msg = tokio::select! {
            m = stream.next() => match m { Some(m) => m, None => break },
            _ = tokio::time::sleep_until(end) => break,
        };
        let Ok(Message::Text(text)) = msg else {
            if msg.is_err() {
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
            continue;
        };
        if let Some(ts) = marker_ts(&text) {
            if ts >= clock.from && ts < clock.to {
                delivered += 1;
                samples.push(clock.now_us().saturating_sub(ts).clamp(1, 60_000_000) as u32);
            }
        } else if !plan.raw && text.contains(r#""type":"ack""#) {
            outstanding.fetch_sub(1, Ordering::Relaxed);
            acked.notify_one();
            stats.acked.fetch_add(1, Ordering::Relaxed);
        } else if !plan.raw && text.contains(r#""type":"error""#) {
            // A refused send frees its window slot too.
            outstanding.fetch_sub(1, Ordering::Relaxed);
            acked.notify_one();
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        // Counters go to the shared totals now and then, not per frame.
        if samples.len() >= 512 || last_flush.elapsed() > Duration::from_millis(500) {
            flush(&mut samples, &mut delivered);
            last_flush = Instant::now();
        }
    }
    flush(&mut samples, &mut delivered);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_in_raw_and_protocol_frames() {
        assert_eq!(marker_ts("B|12345|xxxx"), Some(12345));
        assert_eq!(
            marker_ts(
                r#"{"type":"message","room":"r","seq":9,"id":"b1-2","from":"u","body":"B|777|pad","ts":1}"#
            ),
            Some(777)
        );
        assert_eq!(marker_ts(r#"{"type":"presence"}"#), None);
        assert_eq!(marker_ts("B|notanumber"), None);
    }
}
