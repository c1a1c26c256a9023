//! The clients that misbehave on purpose, each as its own user (the rate limit is per user):
//! a flooder sends flat out and ignores `rate_limited` until the server closes it with 4009;
//! a staller joins every room, sends two messages and stops reading until the server closes it
//! as a slow consumer (4008). Both then come back after a pause and do it again. What they had
//! acknowledged must be stored; what they were never acked for may or may not be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::conn::{self, Ws};
use super::rng::Rng;
use super::view::{Kind, Sent, body, msg_id, parse_id};
use super::{Phase, Shared};

/// Frames a flooder sends per episode at most (the server closes it long before, by default
/// after its burst of 50 and 20 strikes).
const FLOOD_FRAMES: usize = 2000;
/// A staller's receive buffer: it holds little, so the server's queue is what fills.
const STALL_RCVBUF: u32 = 4096;
/// `history` pages of 200 a staller asks for before it stops reading (within the rate limit's
/// burst of 50).
const STALL_HISTORY: usize = 12;

pub struct Spec {
    pub kind: Kind,
    pub k: usize,
    pub user: String,
    pub token: String,
    /// A flooder's one room, or every room for a staller.
    pub rooms: Vec<usize>,
}

/// How one connection of a rogue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A close frame with this code.
    Closed(u16),
    /// The connection ended without a close frame (the server's log may still say why).
    Dropped,
    /// The server was killed meanwhile.
    Killed,
    /// Still open after the misbehaviour and a while of normal reading.
    Survived,
    /// Could not connect or join (the server was down or restarting).
    Failed,
    /// Survived, but the chaos (and the rooms' traffic) ended during its stall or flood.
    Late,
}

#[derive(Debug, Clone)]
pub struct Episode {
    /// The server incarnation it began in (an index into the server's incarnations).
    pub generation: usize,
    pub peer: Option<SocketAddr>,
    pub outcome: Outcome,
    pub ended: std::time::Instant,
}

pub struct Report {
    pub kind: Kind,
    pub k: usize,
    pub user: String,
    pub sent: Vec<Sent>,
    pub episodes: Vec<Episode>,
}

pub async fn run(spec: Spec, shared: Arc<Shared>) -> Report {
    let mut rng = Rng::new(
        shared.seed,
        1 << 40 | (spec.k as u64) << 2 | spec.kind as u64,
    );
    let mut report = Report {
        kind: spec.kind,
        k: spec.k,
        user: spec.user.clone(),
        sent: Vec::new(),
        episodes: Vec::new(),
    };
    let phase = shared.phase.subscribe();
    // Spread the first episodes over a few seconds.
    sleep(rng.between(Duration::ZERO, Duration::from_secs(3))).await;
    let mut told = false;
    while *phase.borrow() == Phase::Run {
        let before = shared.generation.load(Ordering::SeqCst);
        let mut peer = None;
        let outcome = match spec.kind {
            Kind::Flood => flood(&spec, &shared, &mut report.sent, &mut peer).await,
            _ => stall(&spec, &shared, &mut rng, &mut report.sent, &mut peer).await,
        };
        // The incarnation it was served by: the one up when it connected.
        let generation = peer.map_or(before, |(_, g)| g);
        let outcome = match outcome {
            _ if shared.generation.load(Ordering::SeqCst) != generation => Outcome::Killed,
            Ok(Outcome::Survived) if *phase.borrow() != Phase::Run => Outcome::Late,
            Ok(o) => o,
            Err(e) => {
                if !told {
                    told = true;
                    eprintln!(
                        "soak: {} {} could not connect: {e:#}",
                        spec.kind.name(),
                        spec.k
                    );
                }
                Outcome::Failed
            }
        };
        report.episodes.push(Episode {
            generation,
            peer: peer.map(|(p, _)| p),
            outcome,
            ended: std::time::Instant::now(),
        });
        sleep(rng.between(Duration::from_millis(500), Duration::from_secs(2))).await;
    }
    report
}

/// Connects, says hello, joins the rooms: the connection, or how it ended meanwhile.
async fn hello_join(
    spec: &Spec,
    shared: &Shared,
    rcvbuf: Option<u32>,
    peer: &mut Option<(SocketAddr, usize)>,
) -> anyhow::Result<Result<Ws, Outcome>> {
    // Not behind the steady clients' handshake permits: after a kill a thousand of them queue
    // there, and a rogue's episode would mostly be waiting.
    let n = spec.k + 7;
    let fut = async {
        let (mut ws, local) =
            conn::connect(shared.addr, n, shared.sources, &spec.token, rcvbuf).await?;
        *peer = Some((local, shared.generation.load(Ordering::SeqCst)));
        conn::hello(&mut ws, &spec.user).await?;
        for r in &spec.rooms {
            let join = ClientFrame::Join {
                room: shared.rooms[*r].clone(),
                since_seq: None,
                epoch: None,
            };
            ws.feed(Message::text(chat_proto::encode(&join, None)))
                .await?;
        }
        ws.flush().await?;
        let mut joined = 0;
        while joined < spec.rooms.len() {
            // Ended while joining (a staller's small buffer can be too slow already): that
            // is how this connection ended, as at any other time.
            let t = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    return Ok(Err(Outcome::Closed(f.map_or(1005, |f| u16::from(f.code)))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(Err(Outcome::Dropped)),
            };
            match chat_proto::decode_server(&t)?.frame {
                ServerFrame::Joined { .. } => joined += 1,
                ServerFrame::Error { code, message, .. } => anyhow::bail!("{code}: {message}"),
                _ => {}
            }
        }
        Ok(Ok(ws))
    };
    timeout(Duration::from_secs(30), fut).await?
}

fn send_frame(shared: &Shared, spec: &Spec, room: usize, n: usize) -> Message {
    let frame = ClientFrame::Send {
        room: shared.rooms[room].clone(),
        id: msg_id(spec.kind, spec.k, n),
        body: body(shared.seed, spec.kind, spec.k, n),
        reply_to: None,
    };
    Message::text(chat_proto::encode(&frame, None))
}

/// Applies an ack to the ledger if it is one of ours.
fn acked(spec: &Spec, shared: &Shared, sent: &mut [Sent], text: &str) {
    let Ok(env) = chat_proto::decode_server(text) else {
        return;
    };
    if let ServerFrame::Ack { id, room, seq, .. } = env.frame
        && let Some((kind, k, n)) = parse_id(&id)
        && kind == spec.kind
        && k == spec.k
        && let Some(entry) = sent.get_mut(n)
        && shared.room_index.get(&room) == Some(&entry.room())
    {
        *entry = Sent::Acked {
            room: entry.room() as u16,
            seq,
        };
        shared.stats.rogue_acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads until the connection ends, or `quiet` passes while it is still open.
async fn read_to_end(
    ws: &mut Ws,
    quiet: Duration,
    mut on_text: impl FnMut(&str),
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + quiet;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(deadline) => return Ok(Outcome::Survived),
        };
        match msg {
            Some(Ok(Message::Text(t))) => on_text(&t),
            Some(Ok(Message::Close(f))) => {
                return Ok(Outcome::Closed(f.map_or(1005, |f| u16::from(f.code))));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Ok(Outcome::Dropped),
        }
    }
}

async fn flood(
    spec: &Spec,
    shared: &Shared,
    sent: &mut Vec<Sent>,
    peer: &mut Option<(SocketAddr, usize)>,
) -> anyhow::Result<Outcome> {
    let ws = match hello_join(spec, shared, None, peer).await? {
        Ok(ws) => ws,
        Err(ended) => return Ok(ended),
    };
    let (mut sink, mut stream) = ws.split();
    let room = spec.rooms[0];
    let first = sent.len();
    let written = AtomicUsize::new(0);
    let writer = async {
        for i in 0..FLOOD_FRAMES {
            if sink
                .send(send_frame(shared, spec, room, first + i))
                .await
                .is_err()
            {
                break;
            }
            written.fetch_add(1, Ordering::Relaxed);
        }
        // Sent everything: now only wait for what the server does about it.
        std::future::pending::<()>().await;
    };
    let mut texts = Vec::new();
    let reader = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = tokio::time::sleep_until(deadline) => return Outcome::Survived,
            };
            match msg {
                Some(Ok(Message::Text(t))) => texts.push(t),
                Some(Ok(Message::Close(f))) => {
                    return Outcome::Closed(f.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Outcome::Dropped,
            }
        }
    };
    let outcome = tokio::select! {
        o = reader => o,
        () = writer => unreachable!("the writer never ends"),
    };
    let n = written.load(Ordering::Relaxed);
    sent.extend((0..n).map(|_| Sent::Pending { room: room as u16 }));
    shared
        .stats
        .rogue_sent
        .fetch_add(n as u64, Ordering::Relaxed);
    for t in &texts {
        acked(spec, shared, sent, t);
    }
    Ok(outcome)
}

async fn stall(
    spec: &Spec,
    shared: &Shared,
    rng: &mut Rng,
    sent: &mut Vec<Sent>,
    peer: &mut Option<(SocketAddr, usize)>,
) -> anyhow::Result<Outcome> {
    let mut ws = match hello_join(spec, shared, Some(STALL_RCVBUF), peer).await? {
        Ok(ws) => ws,
        Err(ended) => return Ok(ended),
    };
    for _ in 0..2 {
        let n = sent.len();
        let room = spec.rooms[rng.below(spec.rooms.len() as u64) as usize];
        sent.push(Sent::Pending { room: room as u16 });
        shared.stats.rogue_sent.fetch_add(1, Ordering::Relaxed);
        ws.feed(send_frame(shared, spec, room, n)).await?;
    }
    for _ in 0..STALL_HISTORY {
        let room = spec.rooms[rng.below(spec.rooms.len() as u64) as usize];
        let ask = ClientFrame::History {
            room: shared.rooms[room].clone(),
            before_seq: None,
            limit: Some(200),
        };
        ws.feed(Message::text(chat_proto::encode(&ask, None)))
            .await?;
    }
    ws.flush().await?;
    // Large answers first (the socket buffers fill at once), then not reading: the rooms'
    // traffic piles up in the kernel buffers, then in the server's
    // outbound queue for this connection, until the server gives up on it.
    let (lo, hi) = shared.stall_for;
    sleep(rng.between(lo, hi)).await;
    read_to_end(&mut ws, Duration::from_secs(5), |t| {
        acked(spec, shared, sent, t)
    })
    .await
}
