//! A well-behaved client, as docs/protocol.md §4.5 and §5.4 ask: it reads everything, joins
//! each of its rooms with `since_seq` and `epoch` on every (re)connect, resends every message
//! that has no ack with the same id once the room's snapshot is complete, waits
//! `retry_after_ms` after `rate_limited`, and sends nothing in between. It keeps a ledger of
//! what it sent and a digest of what it was shown (see [`super::view`]), and counts every
//! departure from the protocol's promises it can see on its own.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proto::{CatchUp, ClientFrame, ErrorCode, Ref, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::conn::{self, Ws};
use super::rng::Rng;
use super::view::{Kind, Sent, Shown, View, body, msg_id, parse_id};
use super::{Phase, Shared};

/// Unacknowledged sends one connection keeps in flight before it waits.
const WINDOW: usize = 16;

pub struct Spec {
    pub k: usize,
    pub user: String,
    pub token: String,
    /// Indexes into [`Shared::rooms`].
    pub rooms: Vec<usize>,
}

/// Departures from the protocol one client saw by itself.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// A seq shown a second time (replay and live overlapping, or a live frame twice).
    pub shown_twice: u64,
    /// Seqs skipped in a view, or a replay that ended short of its `latest_seq`.
    pub view_gaps: u64,
    pub reloads: u64,
    /// A `reload` where the server should have replayed (same epoch, gap within max_replay).
    pub bad_reloads: u64,
    /// A `message` for a room before its snapshot was complete.
    pub early_events: u64,
    /// Two acks for one id that disagree on room or seq.
    pub ack_conflicts: u64,
    /// A second ack with `duplicate: false`: the id was stored twice.
    pub acked_twice: u64,
    pub epoch_changed: u64,
    /// Frames the protocol crate could not decode.
    pub undecodable: u64,
    /// Closed with 4009 although it waited as told.
    pub rate_abuse: u64,
    /// `internal` or `unavailable` answers to a send (resent; allowed, counted).
    pub server_errors: u64,
    /// Anything else unexpected, described (the first few).
    pub unexpected: Vec<String>,
}

pub struct Report {
    pub k: usize,
    pub user: String,
    pub rooms: Vec<usize>,
    pub sent: Vec<Sent>,
    /// Parallel to `rooms`.
    pub views: Vec<View>,
    pub faults: Faults,
    /// How its connections ended: a close code, `eof`, `killed` (the server was), `by-client`.
    pub ends: BTreeMap<String, u64>,
    /// Whether it reached the final state (everything acked, every room caught up).
    pub finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomConn {
    Joining,
    Replaying { latest: u64 },
    Ready,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Join(usize),
    Send(usize),
}

fn op_ref(op: Op) -> Ref {
    match op {
        Op::Send(n) => Ref::Num(n as i64),
        Op::Join(slot) => Ref::Num(-(slot as i64) - 1),
    }
}

fn ref_op(r: &Ref) -> Option<Op> {
    match *r {
        Ref::Num(n) if n >= 0 => Some(Op::Send(n as usize)),
        Ref::Num(n) => Some(Op::Join((-n - 1) as usize)),
        Ref::Str(_) => None,
    }
}

enum End {
    Closed(u16),
    Eof,
    ByUs,
    Done,
    Aborted,
    Silent,
}

struct Client {
    spec: Spec,
    shared: Arc<Shared>,
    rng: Rng,
    sent: Vec<Sent>,
    pending: usize,
    views: Vec<View>,
    faults: Faults,
    ends: BTreeMap<String, u64>,
}

/// Runs one client until the final state (or [`Phase::Abort`]).
pub async fn run(spec: Spec, shared: Arc<Shared>) -> Report {
    let rng = Rng::new(shared.seed, spec.k as u64);
    let views: Vec<View> = spec
        .rooms
        .iter()
        .map(|r| View::starting_at(shared.bases[*r] + 1))
        .collect();
    let mut c = Client {
        spec,
        shared,
        rng,
        sent: Vec::new(),
        pending: 0,
        views,
        faults: Faults::default(),
        ends: BTreeMap::new(),
    };
    let finished = c.run().await;
    Report {
        k: c.spec.k,
        user: c.spec.user,
        rooms: c.spec.rooms,
        sent: c.sent,
        views: c.views,
        faults: c.faults,
        ends: c.ends,
        finished,
    }
}

impl Client {
    fn unexpected(&mut self, what: String) {
        if self.faults.unexpected.len() < 5 {
            self.faults.unexpected.push(what);
        } else {
            self.faults.unexpected[4] = format!("(and more) {what}");
        }
    }

    async fn run(&mut self) -> bool {
        let mut phase_rx = self.shared.phase.subscribe();
        let mut backoff = Duration::from_millis(50);
        let mut sessions = 0u64;
        loop {
            if matches!(*phase_rx.borrow(), Phase::Abort) {
                return false;
            }
            let generation = self.shared.generation.load(Ordering::SeqCst);
            let (ws, max_replay) = match self.open().await {
                Ok(x) => x,
                Err(_) => {
                    let wait = self.rng.between(backoff / 2, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    tokio::select! {
                        _ = sleep(wait) => {}
                        _ = phase_rx.changed() => {}
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            if sessions > 0 {
                self.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            sessions += 1;
            let end = self.session(ws, max_replay, &mut phase_rx).await;
            let killed = self.shared.generation.load(Ordering::SeqCst) != generation;
            let what = match end {
                End::Done => return true,
                End::Aborted => return false,
                _ if killed => "killed".to_owned(),
                End::Closed(code) => {
                    if code == chat_proto::close::RATE_LIMIT_ABUSE {
                        self.faults.rate_abuse += 1;
                    }
                    code.to_string()
                }
                End::Eof => "eof".to_owned(),
                End::ByUs => "by-client".to_owned(),
                End::Silent => "silent-60s".to_owned(),
            };
            *self.ends.entry(what).or_default() += 1;
            sleep(self.rng.between(Duration::ZERO, Duration::from_millis(300))).await;
        }
    }

    /// Connects with the token, says hello, waits for `welcome`: the server's `max_replay`.
    async fn open(&mut self) -> anyhow::Result<(Ws, u64)> {
        let _permit = self.shared.handshakes.acquire().await?;
        let sh = &self.shared;
        let fut = async {
            let (mut ws, _) =
                conn::connect(sh.addr, self.spec.k, sh.sources, &self.spec.token, None).await?;
            let max_replay = conn::hello(&mut ws, &self.spec.user).await?;
            Ok((ws, max_replay))
        };
        tokio::time::timeout(Duration::from_secs(30), fut).await?
    }

    fn slot_of(&self, room: &str) -> Option<usize> {
        let r = *self.shared.room_index.get(room)?;
        self.spec.rooms.iter().position(|x| *x == r)
    }

    fn caught_up(&self, conn: &[RoomConn], targets: &[u64]) -> bool {
        self.pending == 0
            && conn.iter().all(|c| *c == RoomConn::Ready)
            && self
                .spec
                .rooms
                .iter()
                .zip(&self.views)
                .all(|(r, v)| v.high() >= targets[*r])
    }

    async fn session(
        &mut self,
        mut ws: Ws,
        max_replay: u64,
        phase_rx: &mut watch::Receiver<Phase>,
    ) -> End {
        let slots = self.spec.rooms.len();
        let mut conn = vec![RoomConn::Joining; slots];
        let mut queue: VecDeque<Op> = (0..slots).map(Op::Join).collect();
        let mut inflight: HashSet<usize> = HashSet::new();
        let mut gate = Instant::now();
        let send_every = self.shared.send_every;
        let mut next_send = Instant::now() + self.rng.exp(send_every);
        let disconnect_every = self.shared.disconnect_every;
        let drop_at = Instant::now() + self.rng.exp(disconnect_every);
        let mut last_frame = Instant::now();
        loop {
            let phase = phase_rx.borrow_and_update().clone();
            match &phase {
                Phase::Abort => return End::Aborted,
                Phase::Finish(targets) if self.caught_up(&conn, targets) => {
                    let _ = ws.close(None).await;
                    return End::Done;
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= gate && !queue.is_empty() {
                let mut wrote = false;
                while let Some(op) = queue.pop_front() {
                    let frame = match op {
                        Op::Join(slot) => {
                            let r = self.spec.rooms[slot];
                            ClientFrame::Join {
                                room: self.shared.rooms[r].clone(),
                                since_seq: Some(self.views[slot].high()),
                                epoch: Some(self.shared.epochs[r].clone()),
                            }
                        }
                        Op::Send(n) => {
                            let Some(Sent::Pending { room }) = self.sent.get(n).copied() else {
                                continue;
                            };
                            let ready = self.slot_of(&self.shared.rooms[room as usize]);
                            if ready.is_none_or(|s| conn[s] != RoomConn::Ready)
                                || !inflight.insert(n)
                            {
                                continue;
                            }
                            ClientFrame::Send {
                                room: self.shared.rooms[room as usize].clone(),
                                id: msg_id(Kind::Steady, self.spec.k, n),
                                body: body(self.shared.seed, Kind::Steady, self.spec.k, n),
                                reply_to: None,
                            }
                        }
                    };
                    let text = chat_proto::encode(&frame, Some(&op_ref(op)));
                    if ws.feed(Message::text(text)).await.is_err() {
                        return End::Eof;
                    }
                    wrote = true;
                }
                if wrote && ws.flush().await.is_err() {
                    return End::Eof;
                }
            }
            let running = phase == Phase::Run;
            let sending = running
                && conn.contains(&RoomConn::Ready)
                && inflight.len() < WINDOW
                && !send_every.is_zero();
            let dropping = running && !disconnect_every.is_zero();
            tokio::select! {
                m = ws.next() => {
                    last_frame = Instant::now();
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            self.on_frame(&t, max_replay, &mut conn, &mut queue, &mut inflight, &mut gate);
                        }
                        Some(Ok(Message::Close(f))) => {
                            return End::Closed(f.map_or(1005, |f| u16::from(f.code)));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return End::Eof,
                    }
                }
                _ = sleep_until(gate), if gate > now && !queue.is_empty() => {}
                _ = sleep_until(next_send), if sending => {
                    self.new_message(&conn, &mut queue);
                    next_send = Instant::now() + self.rng.exp(send_every);
                }
                _ = sleep_until(drop_at), if dropping => {
                    if self.rng.below(2) == 0 {
                        let _ = ws.close(None).await;
                    }
                    return End::ByUs;
                }
                r = phase_rx.changed() => if r.is_err() { return End::Aborted },
                _ = sleep(Duration::from_secs(1)) => {
                    // The server pings every 20 s: a minute of nothing is a dead connection.
                    if last_frame.elapsed() > Duration::from_secs(60) {
                        return End::Silent;
                    }
                }
            }
        }
    }

    fn new_message(&mut self, conn: &[RoomConn], queue: &mut VecDeque<Op>) {
        let ready: Vec<usize> = (0..conn.len())
            .filter(|s| conn[*s] == RoomConn::Ready)
            .collect();
        let slot = ready[self.rng.below(ready.len() as u64) as usize];
        let n = self.sent.len();
        self.sent.push(Sent::Pending {
            room: self.spec.rooms[slot] as u16,
        });
        self.pending += 1;
        self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.pending.fetch_add(1, Ordering::Relaxed);
        queue.push_back(Op::Send(n));
    }

    fn show(&mut self, slot: usize, seq: u64, from: &str, id: &str, body: &str) {
        match self.views[slot].show(seq, from, id, body) {
            Shown::Next => {}
            Shown::Twice => self.faults.shown_twice += 1,
            Shown::Gap => self.faults.view_gaps += 1,
        }
    }

    /// The room's snapshot is complete: it is live now, and what was never acked goes again.
    fn snapshot_done(
        &mut self,
        slot: usize,
        latest: u64,
        conn: &mut [RoomConn],
        queue: &mut VecDeque<Op>,
        inflight: &HashSet<usize>,
    ) {
        if self.views[slot].high() < latest {
            self.faults.view_gaps += 1;
        }
        if conn[slot] != RoomConn::Ready {
            conn[slot] = RoomConn::Ready;
            self.shared.stats.joins.fetch_add(1, Ordering::Relaxed);
        }
        let room = self.spec.rooms[slot] as u16;
        for (n, s) in self.sent.iter().enumerate() {
            if *s == (Sent::Pending { room }) && !inflight.contains(&n) {
                queue.push_back(Op::Send(n));
            }
        }
    }

    fn on_frame(
        &mut self,
        text: &str,
        max_replay: u64,
        conn: &mut [RoomConn],
        queue: &mut VecDeque<Op>,
        inflight: &mut HashSet<usize>,
        gate: &mut Instant,
    ) {
        let env = match chat_proto::decode_server(text) {
            Ok(e) => e,
            Err(e) => {
                self.faults.undecodable += 1;
                self.unexpected(format!("undecodable frame: {e}"));
                return;
            }
        };
        match env.frame {
            ServerFrame::Joined {
                room,
                epoch,
                latest_seq,
                catch_up,
                messages,
                complete,
                ..
            } => {
                let Some(slot) = self.slot_of(&room) else {
                    return self.unexpected(format!("joined for a room not asked: {room}"));
                };
                if epoch != self.shared.epochs[self.spec.rooms[slot]] {
                    self.faults.epoch_changed += 1;
                }
                // What this connection sent as since_seq: nothing else touches the view
                // before the snapshot.
                let since = self.views[slot].high();
                if catch_up != CatchUp::Replay {
                    self.faults.reloads += 1;
                    if since <= latest_seq && latest_seq - since <= max_replay {
                        self.faults.bad_reloads += 1;
                    }
                    let start = messages.first().map_or(latest_seq + 1, |m| m.seq);
                    self.views[slot].restart_at(start);
                }
                for m in &messages {
                    self.show(slot, m.seq, &m.from, &m.id, &m.body);
                }
                if complete {
                    self.snapshot_done(slot, latest_seq, conn, queue, inflight);
                } else {
                    conn[slot] = RoomConn::Replaying { latest: latest_seq };
                }
            }
            ServerFrame::Replay {
                room,
                messages,
                complete,
                ..
            } => {
                let Some(slot) = self.slot_of(&room) else {
                    return;
                };
                let RoomConn::Replaying { latest } = conn[slot] else {
                    return self.unexpected(format!("replay page outside a replay: {room}"));
                };
                for m in &messages {
                    self.show(slot, m.seq, &m.from, &m.id, &m.body);
                }
                if complete {
                    self.snapshot_done(slot, latest, conn, queue, inflight);
                }
            }
            ServerFrame::Message {
                room,
                seq,
                id,
                from,
                body,
                ..
            } => {
                let Some(slot) = self.slot_of(&room) else {
                    return;
                };
                if conn[slot] != RoomConn::Ready {
                    self.faults.early_events += 1;
                }
                self.show(slot, seq, &from, &id, &body);
            }
            ServerFrame::Ack {
                id,
                room,
                seq,
                duplicate,
                ..
            } => self.on_ack(&id, &room, seq, duplicate, inflight),
            ServerFrame::Error {
                code,
                retry_after_ms,
                message,
                ..
            } => {
                let op = env.reference.as_ref().and_then(ref_op);
                if let Some(Op::Send(n)) = op {
                    inflight.remove(&n);
                }
                match (code, op) {
                    (ErrorCode::RateLimited, Some(op)) => {
                        self.shared
                            .stats
                            .rate_limited
                            .fetch_add(1, Ordering::Relaxed);
                        let wait = Duration::from_millis(retry_after_ms.unwrap_or(100).max(1));
                        *gate = (*gate).max(Instant::now() + wait);
                        queue.push_front(op);
                    }
                    (ErrorCode::Internal | ErrorCode::Unavailable, Some(op @ Op::Send(_))) => {
                        self.faults.server_errors += 1;
                        queue.push_back(op);
                    }
                    (_, Some(Op::Join(slot))) => {
                        self.unexpected(format!("join refused: {code}: {message}"));
                        *gate = (*gate).max(Instant::now() + Duration::from_millis(500));
                        queue.push_back(Op::Join(slot));
                    }
                    _ => self.unexpected(format!("error {code}: {message}")),
                }
            }
            _ => {}
        }
    }

    fn on_ack(
        &mut self,
        id: &str,
        room: &str,
        seq: u64,
        duplicate: bool,
        inflight: &mut HashSet<usize>,
    ) {
        let (Some((Kind::Steady, k, n)), Some(&r)) =
            (parse_id(id), self.shared.room_index.get(room))
        else {
            return self.unexpected(format!("ack for {id} in {room}"));
        };
        let Some(entry) = self.sent.get_mut(n).filter(|_| k == self.spec.k) else {
            return self.unexpected(format!("ack for {id}, never sent"));
        };
        inflight.remove(&n);
        let stats = &self.shared.stats;
        if duplicate {
            stats.dup_acks.fetch_add(1, Ordering::Relaxed);
        }
        match *entry {
            Sent::Pending { room } => {
                if room as usize != r {
                    self.faults.ack_conflicts += 1;
                }
                *entry = Sent::Acked { room, seq };
                self.pending -= 1;
                stats.pending.fetch_sub(1, Ordering::Relaxed);
                stats.acked.fetch_add(1, Ordering::Relaxed);
            }
            Sent::Acked { room, seq: first } => {
                if room as usize != r || first != seq {
                    self.faults.ack_conflicts += 1;
                }
                if !duplicate {
                    self.faults.acked_twice += 1;
                }
            }
        }
    }
}
