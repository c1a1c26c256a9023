//! The group commit: one task per node takes everything queued and stores it in one transaction.
//!
//! Per batch: the senders' ids in one query, the originals of resent client ids in one query,
//! then per room (in name order, so writers on two nodes lock counter rows in the same order and
//! never deadlock) one `UPDATE rooms SET last_seq = last_seq + k ... RETURNING`, all pipelined
//! (one round trip), then one `INSERT ... SELECT FROM UNNEST(...)` for every room's messages,
//! then COMMIT. Completions run after the COMMIT's outcome
//! is known, in queue order, which is seq order within each room.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};

use super::log::{ApplyError, apply_one, mention_rows, store_mentions};
use super::{OP_DEADLINE, db_err, pool_err, retryable};
use crate::clock::now_ms;
use crate::metrics::StoreMetrics;
use crate::store::{AppendDone, Appended, Applied, ApplyDone, NewEvent, NewMessage, StoreError};

/// Most jobs in one transaction, and the queue's bound: SQLite's numbers, so back-pressure
/// starts at the same depth whichever engine runs.
pub(super) const MAX_BATCH: usize = 4096;
/// Attempts of one batch when it fails on a serialization failure, a deadlock, or a client id
/// another node stored meanwhile (the next attempt finds that original).
const ATTEMPTS: u32 = 5;

pub(super) enum Job {
    Append(NewMessage, AppendDone),
    /// A change other than a message: its own transaction, in queue order with the batches.
    Apply(NewEvent, ApplyDone),
    /// Answered once everything queued before it has its outcome.
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

pub(super) fn start(pool: Pool, metrics: StoreMetrics) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    tokio::spawn(writer_loop(pool, rx, metrics));
    tx
}

/// Ends when every sender (every clone of the store) is gone and the queue is drained.
async fn writer_loop(pool: Pool, mut rx: mpsc::Receiver<Job>, metrics: StoreMetrics) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut msgs = Vec::with_capacity(batch.len());
        let mut dones = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Append(m, d) => {
                    msgs.push(m);
                    dones.push(d);
                }
                Job::Apply(e, d) => {
                    // The messages queued before the change commit (and complete) first: the
                    // change's checks and seq come after theirs.
                    commit_messages(&pool, &metrics, &mut msgs, &mut dones, &mut flushes).await;
                    let r = apply_with_retries(&pool, &e).await;
                    d.call(r);
                }
                Job::Flush(f) => flushes.push(f),
            }
        }
        commit_messages(&pool, &metrics, &mut msgs, &mut dones, &mut flushes).await;
    }
}

/// Stores the queued messages in one transaction and runs their completions, then answers the
/// flushes queued with them.
async fn commit_messages(
    pool: &Pool,
    metrics: &StoreMetrics,
    msgs: &mut Vec<NewMessage>,
    dones: &mut Vec<AppendDone>,
    flushes: &mut Vec<oneshot::Sender<Result<(), StoreError>>>,
) {
    let outcome = if msgs.is_empty() {
        Ok(Vec::new())
    } else {
        let started = std::time::Instant::now();
        let outcome = store_with_retries(pool, msgs).await;
        metrics.batch(msgs.len(), started.elapsed());
        outcome
    };
    match outcome {
        Ok(results) => {
            for (done, r) in dones.drain(..).zip(results) {
                done.call(r);
            }
            for f in flushes.drain(..) {
                let _ = f.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, messages = msgs.len(), "postgres batch failed; not acked");
            for done in dones.drain(..) {
                done.call(Err(e.clone()));
            }
            for f in flushes.drain(..) {
                let _ = f.send(Err(e.clone()));
            }
        }
    }
    msgs.clear();
}

/// One change, retried like a batch on a serialization failure or a deadlock.
async fn apply_with_retries(pool: &Pool, ev: &NewEvent) -> Result<Applied, StoreError> {
    let mut attempt = 1;
    loop {
        let mut client = pool.get().await.map_err(pool_err)?;
        match tokio::time::timeout(OP_DEADLINE, apply_one(&mut client, ev)).await {
            Ok(Ok(applied)) => return Ok(applied),
            Ok(Err(ApplyError::Refused(e))) => return Err(e),
            Ok(Err(ApplyError::Db(e))) if retryable(&e) && attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt))).await;
            }
            Ok(Err(ApplyError::Db(e))) => {
                let e = db_err(e);
                if matches!(e, StoreError::Unavailable(_)) {
                    drop(Object::take(client));
                }
                return Err(e);
            }
            Err(_) => {
                drop(Object::take(client));
                return Err(StoreError::Unavailable(format!(
                    "a change did not commit within {}s",
                    OP_DEADLINE.as_secs()
                )));
            }
        }
    }
}

async fn store_with_retries(
    pool: &Pool,
    msgs: &[NewMessage],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut attempt = 1;
    loop {
        // A new pooled connection per batch: after a restart or a cut, the pool's check finds
        // the old one dead and makes another.
        let mut client = pool.get().await.map_err(pool_err)?;
        let result = tokio::time::timeout(OP_DEADLINE, store_batch(&mut client, msgs)).await;
        match result {
            Ok(Ok(results)) => return Ok(results),
            Ok(Err(e)) if retryable(&e) && attempt < ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "postgres batch conflicted; retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt))).await;
            }
            Ok(Err(e)) => {
                let e = db_err(e);
                if matches!(e, StoreError::Unavailable(_)) {
                    // The connection may be half-dead: never hand it to anyone again.
                    drop(Object::take(client));
                }
                // A failed COMMIT whose outcome is unknown lands here too: every sender gets
                // the error, and a resend with the same id finds the original if it did commit.
                return Err(e);
            }
            Err(_) => {
                drop(Object::take(client));
                return Err(StoreError::Unavailable(format!(
                    "a batch did not commit within {}s",
                    OP_DEADLINE.as_secs()
                )));
            }
        }
    }
}

/// One attempt: everything in one transaction. A per-message failure (unknown room or sender)
/// is that message's result; an `Err` fails the whole attempt, and nothing of it is stored.
async fn store_batch(
    client: &mut Object,
    msgs: &[NewMessage],
) -> Result<Vec<Result<Appended, StoreError>>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let ts = now_ms();

    let mut names: Vec<&str> = msgs.iter().map(|m| m.from.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let stmt = tx
        .prepare_cached("SELECT name, id FROM users WHERE name = ANY($1)")
        .await?;
    let uids: HashMap<String, i64> = tx
        .query(&stmt, &[&names])
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // Originals already stored under these (sender, client id) pairs, by this node or another.
    let (us, cs): (Vec<i64>, Vec<&str>) = msgs
        .iter()
        .filter_map(|m| Some((*uids.get(&m.from)?, m.client_id.as_str())))
        .unzip();
    let stmt = tx
        .prepare_cached(
            "SELECT m.user_id, m.client_id, r.name, m.seq, m.ts, m.body, m.reply_to
             FROM UNNEST($1::bigint[], $2::text[]) AS k(u, c)
             JOIN messages m ON m.user_id = k.u AND m.client_id = k.c
             JOIN rooms r ON r.id = m.room_id",
        )
        .await?;
    let mut stored: HashMap<(i64, String), Appended> = HashMap::new();
    for r in tx.query(&stmt, &[&us, &cs]).await? {
        let (uid, client_id): (i64, String) = (r.get(0), r.get(1));
        stored.insert(
            (uid, client_id.clone()),
            Appended {
                room: r.get(2),
                seq: r.get::<_, i64>(3) as u64,
                ts: r.get(4),
                from: String::new(),
                client_id,
                body: r.get(5),
                reply_to: r.get::<_, Option<i64>>(6).map(|s| s as u64),
                duplicate: true,
            },
        );
    }

    // What each message becomes: stored before, new in a room, or a failure.
    enum Plan {
        Failed(StoreError),
        Dup(Appended),
        /// A second copy of a message new in this batch: the duplicate of message `i`.
        DupOf(usize),
        New,
    }
    let mut plans = Vec::with_capacity(msgs.len());
    let mut new_in_batch: HashMap<(i64, &str), usize> = HashMap::new();
    let mut by_room: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        let Some(&uid) = uids.get(&m.from) else {
            plans.push(Plan::Failed(StoreError::NotFound));
            continue;
        };
        if let Some(a) = stored.get(&(uid, m.client_id.clone())) {
            plans.push(Plan::Dup(Appended {
                from: m.from.clone(),
                ..a.clone()
            }));
        } else if let Some(&first) = new_in_batch.get(&(uid, m.client_id.as_str())) {
            plans.push(Plan::DupOf(first));
        } else {
            new_in_batch.insert((uid, m.client_id.as_str()), i);
            by_room.entry(m.room.as_str()).or_default().push(i);
            plans.push(Plan::New);
        }
    }

    let bump = tx
        .prepare_cached(
            "UPDATE rooms SET last_seq = last_seq + $2 WHERE name = $1 RETURNING id, last_seq",
        )
        .await?;
    // One statement for every room's new messages: per row its room and seq.
    let insert = tx
        .prepare_cached(
            "INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, reply_to)
             SELECT t.r, t.s, t.u, t.c, t.b, $1, t.p
             FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[])
                  AS t(r, s, u, c, b, p)",
        )
        .await?;
    // The counters, all sent at once: tokio-postgres pipelines requests issued together on one
    // connection, so this is one round trip however many rooms the batch has (measured: one
    // round trip per room made PostgreSQL's durable rate a quarter of SQLite's). They are sent
    // and run in room-name order, the order every node locks rooms in, so two nodes cannot
    // deadlock on them.
    let rooms: Vec<(&str, &Vec<usize>)> = by_room.iter().map(|(r, i)| (*r, i)).collect();
    let counts: Vec<i64> = rooms.iter().map(|(_, idx)| idx.len() as i64).collect();
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let params: Vec<[Param<'_>; 2]> = rooms
        .iter()
        .zip(&counts)
        .map(|((room, _), k)| [room as Param<'_>, k as Param<'_>])
        .collect();
    let bumped =
        futures_util::future::try_join_all(params.iter().map(|p| tx.query_opt(&bump, p))).await?;
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    let (mut rs, mut ss, mut us, mut cs, mut bs, mut ps) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::<Option<i64>>::new(),
    );
    let mut mentioned = (Vec::new(), Vec::new(), Vec::new());
    for (((_, idx), k), row) in rooms.iter().zip(&counts).zip(bumped) {
        let Some(row) = row else {
            for &i in idx.iter() {
                plans[i] = Plan::Failed(StoreError::NotFound);
            }
            continue;
        };
        let (rid, last): (i64, i64) = (row.get(0), row.get(1));
        let first = last - k + 1;
        for (n, &i) in idx.iter().enumerate() {
            let seq = first + n as i64;
            seqs.insert(i, seq as u64);
            rs.push(rid);
            ss.push(seq);
            us.push(uids[&msgs[i].from]);
            cs.push(msgs[i].client_id.as_str());
            bs.push(msgs[i].body.as_str());
            ps.push(msgs[i].reply_to.map(|r| r.min(i64::MAX as u64) as i64));
            mention_rows(rid, seq, &msgs[i].body, &mut mentioned);
        }
    }
    if !rs.is_empty() {
        tx.execute(&insert, &[&ts, &rs, &ss, &us, &cs, &bs, &ps])
            .await?;
        store_mentions(&tx, &mentioned.0, &mentioned.1, &mentioned.2).await?;
    }
    tx.commit().await?;

    let mut out: Vec<Result<Appended, StoreError>> = Vec::with_capacity(msgs.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let m = &msgs[i];
        out.push(match plan {
            Plan::Failed(e) => Err(e),
            Plan::Dup(a) => Ok(a),
            Plan::New => Ok(Appended {
                room: m.room.clone(),
                seq: seqs[&i],
                ts,
                from: m.from.clone(),
                client_id: m.client_id.clone(),
                body: m.body.clone(),
                reply_to: m.reply_to,
                duplicate: false,
            }),
            Plan::DupOf(first) => match &out[first] {
                Ok(a) => Ok(Appended {
                    duplicate: true,
                    ..a.clone()
                }),
                Err(e) => Err(e.clone()),
            },
        });
    }
    Ok(out)
}
