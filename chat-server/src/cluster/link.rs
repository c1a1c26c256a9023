//! The connection to Redis: connect, subscribe to what this node wants, hand what arrives to
//! the ordering core, and on any failure reconnect with backoff and jitter. Every connect is
//! followed by a resync (each room caught up from the database), so a reconnect is a gap, never
//! a loss. A watchdog publishes on this node's own channel every few seconds and reconnects if
//! those stop coming back: a subscription that wedged silently is a failure, not a green light.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;

use super::wire::{Envelope, Wire};
use super::{Inner, Input, lock, now_ms};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WATCHDOG_EVERY: Duration = Duration::from_secs(3);
/// Own pings unanswered this long: the subscription is wedged; reconnect.
const WATCHDOG_LIMIT: Duration = Duration::from_secs(10);
/// Inputs waiting for the ordering core past which other nodes' messages are dropped (and read
/// from the database as a gap instead): at most a few MiB of typical frames, 16,384 x 64 KiB at
/// worst.
const MAX_INBOX: usize = 16_384;
/// Channels per SUBSCRIBE command (a reconnect with 19,000 users is 38 commands, not 19,000).
const SUBSCRIBE_CHUNK: usize = 500;

/// Marks the link down (from the publisher, which saw a command fail) and wakes the link task.
pub(super) fn failed(i: &Inner, reason: String) {
    {
        let mut link = lock(&i.link);
        if link.up {
            tracing::warn!(reason = %reason, "redis link failed");
        }
        link.up = false;
        link.last_error = reason;
        link.subscribed.clear();
    }
    *lock(&i.conn) = None;
    i.counters.connected.set(0);
    i.link_changed.notify_waiters();
    i.want_changed.notify_one();
}

pub(super) async fn run(i: Arc<Inner>) {
    let mut attempt: u32 = 0;
    let mut connected_before = false;
    loop {
        if i.stop.is_cancelled() {
            return;
        }
        let reason = match connect(&i).await {
            Ok((conn, pubsub)) => {
                attempt = 0;
                let reason = serve(&i, conn, pubsub, connected_before).await;
                connected_before = true;
                reason
            }
            Err(e) => e,
        };
        if i.stop.is_cancelled() {
            return;
        }
        failed(&i, reason.clone());
        tracing::warn!(url = %i.url, reason = %reason, attempt, "redis unreachable; reconnecting");
        // min(cap, base * 2^n), times a jitter in [0.5, 1.5): nodes that lost Redis together
        // do not all come back in the same millisecond.
        let base = BACKOFF_MIN
            .saturating_mul(1u32 << attempt.min(10))
            .min(BACKOFF_MAX);
        let jitter = rand::rng().random_range(0.5..1.5);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = i.stop.cancelled() => return,
            _ = tokio::time::sleep(base.mul_f64(jitter)) => {}
        }
    }
}

async fn connect(
    i: &Inner,
) -> Result<(redis::aio::MultiplexedConnection, redis::aio::PubSub), String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let conn = i
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, i.client.get_async_pubsub())
        .await
        .map_err(|_| "connect: timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    Ok((conn, pubsub))
}

/// What this node wants to hear: its base channels, its rooms and its users.
fn wanted(i: &Inner) -> HashSet<String> {
    let want = lock(&i.want);
    let mut all = HashSet::with_capacity(want.rooms.len() + want.users.len() + 2);
    all.insert(i.keys.all());
    all.insert(i.keys.own());
    all.extend(want.rooms.keys().map(|r| i.keys.room(r)));
    all.extend(want.users.iter().map(|u| i.keys.user(u)));
    all
}

/// Runs one connection until it fails; returns why.
async fn serve(
    i: &Arc<Inner>,
    conn: redis::aio::MultiplexedConnection,
    pubsub: redis::aio::PubSub,
    reconnect: bool,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<String> = HashSet::new();
    if let Err(e) = sync_subscriptions(i, &mut sink, &mut subscribed).await {
        return e;
    }
    *lock(&i.conn) = Some(conn);
    {
        let mut link = lock(&i.link);
        link.up = true;
        link.last_error.clear();
        link.subscribed = subscribed.clone();
    }
    i.counters.connected.set(1);
    if reconnect {
        i.counters.reconnects.inc();
    }
    tracing::info!(url = %i.url, channels = subscribed.len(), reconnect, "redis connected");
    i.link_changed.notify_waiters();
    i.out_wake.notify_one();
    i.resync.notify_one();
    let mut watchdog = tokio::time::interval(WATCHDOG_EVERY);
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            _ = i.stop.cancelled() => return "stopping".into(),
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return "the subscription connection closed".into();
                };
                on_message(i, msg.get_payload_bytes(), &mut last_pong);
            }
            _ = i.want_changed.notified() => {
                if !lock(&i.link).up {
                    return lock(&i.link).last_error.clone();
                }
                if let Err(e) = sync_subscriptions(i, &mut sink, &mut subscribed).await {
                    return e;
                }
                lock(&i.link).subscribed = subscribed.clone();
                i.link_changed.notify_waiters();
            }
            _ = watchdog.tick() => {
                if last_pong.elapsed() > WATCHDOG_LIMIT {
                    return format!(
                        "own pings did not come back for {} s (wedged subscription)",
                        WATCHDOG_LIMIT.as_secs()
                    );
                }
                i.publish_wire(i.keys.own(), Wire::Ping { nonce: 0 });
            }
        }
    }
}

/// Subscribes to what is wanted and not subscribed, and unsubscribes the rest.
async fn sync_subscriptions(
    i: &Inner,
    sink: &mut redis::aio::PubSubSink,
    subscribed: &mut HashSet<String>,
) -> Result<(), String> {
    let want = wanted(i);
    let add: Vec<String> = want.difference(subscribed).cloned().collect();
    let remove: Vec<String> = subscribed.difference(&want).cloned().collect();
    for chunk in add.chunks(SUBSCRIBE_CHUNK) {
        tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(chunk))
            .await
            .map_err(|_| "SUBSCRIBE timed out".to_owned())?
            .map_err(|e| format!("SUBSCRIBE: {e}"))?;
        subscribed.extend(chunk.iter().cloned());
    }
    for chunk in remove.chunks(SUBSCRIBE_CHUNK) {
        tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(chunk))
            .await
            .map_err(|_| "UNSUBSCRIBE timed out".to_owned())?
            .map_err(|e| format!("UNSUBSCRIBE: {e}"))?;
        for c in chunk {
            subscribed.remove(c);
        }
    }
    Ok(())
}

fn on_message(i: &Inner, payload: &[u8], last_pong: &mut Instant) {
    let env = match Envelope::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, bytes = payload.len(), "undecodable message on redis; dropped");
            return;
        }
    };
    if env.origin == *i.node {
        // What this node published was delivered here already; only its pings come back.
        if let Wire::Ping { nonce } = env.what {
            *last_pong = Instant::now();
            if let Some(tx) = lock(&i.pings).remove(&nonce) {
                let _ = tx.send(());
            }
        }
        return;
    }
    let age_ms = now_ms().saturating_sub(env.sent_ms).max(0);
    i.counters.receive_seconds.observe(age_ms as f64 / 1000.0);
    {
        let mut inbox = lock(&i.inbox);
        if inbox.len() >= MAX_INBOX && matches!(env.what, Wire::Msg { .. }) {
            // The core is this far behind: drop the message rather than grow without bound.
            // Its seq is a gap the sequencer reads from the database.
            drop(inbox);
            i.counters.dropped.inc();
            return;
        }
        inbox.push(Input::Remote(env));
    }
    i.wake.notify_one();
}
