//! This node's presence entries in Redis, and reading the other nodes' when it starts listening
//! to a room. Per room: a hash `ph:{room}` of `user\nnode` -> status and a sorted set
//! `pz:{room}` of the same members scored by expiry (ms since the epoch). Redis 7.0 has no
//! per-field hash expiry, so the sorted set says which fields are still alive, and whoever
//! reads or refreshes a room sweeps the lapsed ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::Status;

use super::wire::Wire;
use super::{Inner, Out, now_ms, parse_status, status_name};
use crate::broker::Event;
use crate::config::PRESENCE_TTL;

/// Removes up to 1,000 lapsed members of a room at once, atomically (a member renewed between
/// a read and a delete must not be deleted).
const SWEEP: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return #gone
";

fn ttl_ms() -> i64 {
    i64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(i64::MAX)
}

/// Queues the write of one entry of this node (a change announced by the hub).
pub(super) fn write(i: &Inner, room: &str, user: &str, status: Status) {
    let (hash, zset, member) = (
        i.keys.presence_hash(room),
        i.keys.presence_expiry(room),
        i.keys.member(user),
    );
    if status == Status::Offline {
        let mut c = redis::cmd("HDEL");
        c.arg(&hash).arg(&member);
        i.send(Out::Cmd(c));
        let mut c = redis::cmd("ZREM");
        c.arg(&zset).arg(&member);
        i.send(Out::Cmd(c));
        return;
    }
    let mut c = redis::cmd("HSET");
    c.arg(&hash).arg(&member).arg(status_name(status));
    i.send(Out::Cmd(c));
    let mut c = redis::cmd("ZADD");
    c.arg(&zset).arg(now_ms() + ttl_ms()).arg(&member);
    i.send(Out::Cmd(c));
    for key in [hash, zset] {
        let mut c = redis::cmd("PEXPIRE");
        c.arg(key).arg(ttl_ms() * 2);
        i.send(Out::Cmd(c));
    }
}

/// Reads the other nodes' live entries for `room` and gives them to the hub, so a joiner's
/// `joined` shows who is present elsewhere right away.
pub(super) async fn bootstrap(i: &Inner, room: &Arc<str>) {
    let Some(mut conn) = i.connection() else {
        return;
    };
    let members: Vec<String> = match redis::cmd("ZRANGEBYSCORE")
        .arg(i.keys.presence_expiry(room))
        .arg(now_ms())
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(chat_proto::limits::MEMBER_PAGE_MAX * 10)
        .query_async(&mut conn)
        .await
    {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(room = %room, error = %e, "reading presence from redis failed");
            return;
        }
    };
    if members.is_empty() {
        return;
    }
    let statuses: Vec<Option<String>> = match redis::cmd("HMGET")
        .arg(i.keys.presence_hash(room))
        .arg(&members)
        .query_async(&mut conn)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(room = %room, error = %e, "reading presence from redis failed");
            return;
        }
    };
    let mut by_node: HashMap<Arc<str>, Vec<(Arc<str>, Status)>> = HashMap::new();
    for (member, status) in members.iter().zip(statuses) {
        let Some((user, node)) = member.split_once('\n') else {
            continue;
        };
        let Some(status) = status.as_deref().and_then(parse_status) else {
            continue;
        };
        if node == &*i.node {
            continue;
        }
        by_node
            .entry(Arc::from(node))
            .or_default()
            .push((Arc::from(user), status));
    }
    for (node, changes) in by_node {
        i.hub.prime(
            room,
            Event::Presence {
                room: room.clone(),
                node,
                changes,
                replace: true,
            },
        );
    }
}

/// Renews this node's entries and publishes its snapshot of each room (which also repairs any
/// change another node missed); sweeps lapsed entries of the rooms it listens to; and
/// unsubscribes rooms nobody here listens to any more.
pub(super) async fn refresh(i: &Inner) {
    let snapshot = i.hub.local_presence();
    let mut entries = 0i64;
    let expiry = now_ms() + ttl_ms();
    for (room, users) in &snapshot {
        entries += users.len() as i64;
        let (hash, zset) = (i.keys.presence_hash(room), i.keys.presence_expiry(room));
        let mut h = redis::cmd("HSET");
        h.arg(&hash);
        let mut z = redis::cmd("ZADD");
        z.arg(&zset);
        for (user, status) in users {
            let member = i.keys.member(user);
            h.arg(&member).arg(status_name(*status));
            z.arg(expiry).arg(member);
        }
        i.send(Out::Cmd(h));
        i.send(Out::Cmd(z));
        for key in [hash, zset] {
            let mut c = redis::cmd("PEXPIRE");
            c.arg(key).arg(ttl_ms() * 2);
            i.send(Out::Cmd(c));
        }
        i.publish_wire(
            i.keys.room(room),
            Wire::Presence {
                room: room.to_string(),
                changes: users.iter().map(|(u, s)| (u.to_string(), *s)).collect(),
                replace: true,
            },
        );
    }
    i.counters.presence_entries.set(entries);
    // Rooms idle past the grace: stop listening and forget their cursor.
    let idle: Vec<Arc<str>> = {
        let mut want = super::lock(&i.want);
        let idle: Vec<Arc<str>> = want
            .rooms
            .iter()
            .filter(|(r, at)| at.elapsed() > super::IDLE_GRACE && !i.hub.has_room(r))
            .map(|(r, _)| r.clone())
            .collect();
        for r in &idle {
            want.rooms.remove(r);
        }
        idle
    };
    if !idle.is_empty() {
        let mut rooms = super::lock(&i.rooms);
        for r in &idle {
            rooms.remove(r);
        }
        drop(rooms);
        let mut epochs = super::lock(&i.epochs);
        for r in &idle {
            epochs.remove(r);
        }
        drop(epochs);
        i.want_changed.notify_one();
    }
    let watched: Vec<Arc<str>> = super::lock(&i.want).rooms.keys().cloned().collect();
    for room in watched {
        let mut c = redis::cmd("EVAL");
        c.arg(SWEEP)
            .arg(2)
            .arg(i.keys.presence_expiry(&room))
            .arg(i.keys.presence_hash(&room))
            .arg(now_ms());
        i.send(Out::Cmd(c));
    }
}

/// Renews every third of the TTL.
pub(super) async fn refresher(i: Arc<Inner>) {
    let mut tick = tokio::time::interval(PRESENCE_TTL / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = i.stop.cancelled() => return,
            _ = tick.tick() => refresh(&i).await,
        }
    }
}

/// A graceful stop: delete this node's entries and tell the other nodes at once.
pub(super) async fn withdraw(i: &Inner) {
    let Some(mut conn) = i.connection() else {
        return;
    };
    let mut pipe = redis::pipe();
    for (room, users) in i.hub.local_presence() {
        let members: Vec<String> = users.iter().map(|(u, _)| i.keys.member(u)).collect();
        pipe.cmd("HDEL")
            .arg(i.keys.presence_hash(&room))
            .arg(&members)
            .ignore();
        pipe.cmd("ZREM")
            .arg(i.keys.presence_expiry(&room))
            .arg(&members)
            .ignore();
    }
    let gone = super::wire::Envelope {
        origin: i.node.to_string(),
        sent_ms: now_ms(),
        what: Wire::Gone,
    }
    .encode();
    pipe.cmd("PUBLISH").arg(i.keys.all()).arg(gone).ignore();
    match tokio::time::timeout(Duration::from_secs(2), pipe.exec_async(&mut conn)).await {
        Ok(Ok(())) => tracing::info!("presence withdrawn from redis"),
        Ok(Err(e)) => tracing::warn!(error = %e, "withdrawing presence from redis failed"),
        Err(_) => tracing::warn!("withdrawing presence from redis timed out"),
    }
}
