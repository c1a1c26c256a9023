//! A connection's outbound side as the rest of the server sees it: a queue of encoded frames,
//! bounded in frames and in bytes, a share of the server-wide [`Budget`] of unsent bytes, and a
//! way to close the connection with a code. Everything that writes to a client goes through
//! here, so the slow-consumer policy lives in one place.
//!
//! Two kinds of pushes, two policies at the bounds:
//! - events and broadcasts ([`Outbox::push`], [`Outbox::push_many`]) never wait: a connection
//!   that already has unsent bytes and would pass its own bound, or the server's total, is
//!   closed with 4008 (it catches up with `since_seq`). A connection with nothing unsent always
//!   takes one more frame, so a client that keeps up is never closed for someone else's backlog.
//! - replies that grow with the data (`history`, `joined`, `replay`, `room_list`) first take a
//!   [`Reservation`] of their largest size ([`Outbox::reserve`]), waiting while this connection
//!   is behind or the server's total is at its bound: back-pressure on the request instead of
//!   memory. They are built only once it is granted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// What goes to a client: one frame, or a run of messages whose bytes every recipient shares.
#[derive(Debug, Clone)]
pub enum Out {
    One(Utf8Bytes),
    Many(Arc<[Utf8Bytes]>),
}

impl Out {
    pub fn frames(&self) -> &[Utf8Bytes] {
        match self {
            Out::One(f) => std::slice::from_ref(f),
            Out::Many(fs) => fs,
        }
    }

    /// The bytes this item puts on the wire (its frames' text).
    pub fn bytes(&self) -> usize {
        self.frames().iter().map(|f| f.len()).sum()
    }
}

/// The server-wide bound on unsent bytes, shared by every connection's outbox. Each connection's
/// queued and in-flight bytes count here, a frame shared by several recipients once per
/// recipient: the sum is an upper bound of the memory they hold, never an underestimate.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// Connections closed with 4008 so far: what an operator (and a test) watches.
    slow_consumers: AtomicU64,
    /// Frames that never reached a client, by why (see [`Drops`]).
    refused_full: AtomicU64,
    refused_closed: AtomicU64,
    discarded: AtomicU64,
}

/// Frames pushed to outboxes that will never be sent, since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Not queued: the connection was behind and at its bound or the server's (it is closed
    /// with 4008 at that push).
    pub full: u64,
    /// Not queued: the connection's writer had already gone.
    pub closed: u64,
    /// Queued, then thrown away unsent: the queue of a connection closed as a slow consumer,
    /// or what was left when its writer ended.
    pub discarded: u64,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit: limit.max(1),
            slow_consumers: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_closed: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        })
    }

    /// Frames dropped across the server since it started.
    pub fn drops(&self) -> Drops {
        Drops {
            full: self.refused_full.load(Ordering::Relaxed),
            closed: self.refused_closed.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    /// Unsent bytes across the server, reservations included.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections closed as slow consumers (4008) since the server started.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    fn over(&self, more: usize) -> bool {
        self.used().saturating_add(more) > self.limit
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        // Saturating: a release never wraps the counter, whatever the order of events.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Takes `n` bytes if they fit under the limit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u.saturating_add(n) <= self.limit).then_some(u + n)
            })
            .is_ok()
    }
}

/// Bytes held for a reply not built yet; given back when dropped (the pushed reply then counts
/// its actual size).
#[must_use]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Why a reservation was not granted within its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This connection's unsent bytes did not drain: the client is not reading.
    Connection,
    /// The server's total stayed at its bound.
    Server,
    /// The connection is closing.
    Closed,
}

/// How often a waiting reservation looks again. Waits happen only under congestion, and a
/// reply is one per connection at a time, so polling costs less than a wakeup on every write.
const RESERVE_POLL: Duration = Duration::from_millis(10);

/// A queue that drained back to empty keeps at most this many slots: a burst may grow it, an
/// idle connection does not keep the burst's memory. (A tokio mpsc channel keeps a 32-slot
/// block per connection, about 1 KiB, which was a sixth of an idle connection's cost.)
const IDLE_SLOTS: usize = 4;

/// One client's outbound queue and kill switch.
pub struct Outbox {
    /// Bounded by `max_frames` frames (a run of messages counts each of them) and `max_bytes`
    /// unsent bytes: a client that stops reading fills it, and is then disconnected rather than
    /// allowed to grow the server's memory or the time its frames wait. The lock is held only
    /// to push or pop.
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// The server-wide total this connection's unsent bytes count in.
    budget: Arc<Budget>,
    ready: Notify,
    /// Set when the receiving side is gone: pushing is pointless.
    closed: AtomicBool,
    /// Cancelled when the connection must close now, without draining the queue.
    kick: CancellationToken,
    /// The close code and reason of the first kick; later kicks don't override it.
    close: OnceLock<(u16, &'static str)>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Out>,
    /// Frames in `items`.
    frames: usize,
    /// Bytes of `items` plus those of the item the writer has taken and not finished writing:
    /// what this connection holds that the client has not been sent.
    bytes: usize,
}

/// What the writer task needs: the receiving end and the kick signal.
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
    pub kick: CancellationToken,
}

impl OutboxReceiver {
    /// The next queued item, without waiting. Its bytes count as unsent until
    /// [`OutboxReceiver::written`].
    pub fn try_recv(&mut self) -> Option<Out> {
        let mut q = lock(&self.outbox.queue);
        let out = q.items.pop_front();
        if let Some(o) = &out {
            q.frames -= o.frames().len();
        }
        if q.items.is_empty() && q.items.capacity() > IDLE_SLOTS {
            q.items.shrink_to(IDLE_SLOTS);
        }
        out
    }

    /// The next queued item, waiting for one.
    pub async fn recv(&mut self) -> Out {
        loop {
            if let Some(out) = self.try_recv() {
                return out;
            }
            // A push between the check and here leaves a permit: no wakeup is lost.
            self.outbox.ready.notified().await;
        }
    }

    /// An item taken with `try_recv`/`recv` has been handed to the socket.
    pub fn written(&mut self, out: &Out) {
        self.outbox.release(out.bytes());
    }

    /// Items of `bytes` in all, taken with `try_recv`/`recv`, have been handed to the socket.
    pub fn written_bytes(&mut self, bytes: usize) {
        self.outbox.release(bytes);
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.outbox.closed.store(true, Ordering::Relaxed);
        self.outbox.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    /// An outbox bounded by `max_frames` queued frames and `max_bytes` unsent bytes, counting
    /// in `budget`.
    pub fn new(
        max_frames: usize,
        max_bytes: usize,
        budget: Arc<Budget>,
    ) -> (Arc<Self>, OutboxReceiver) {
        let kick = CancellationToken::new();
        let outbox = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            budget,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            kick: kick.clone(),
            close: OnceLock::new(),
        });
        (outbox.clone(), OutboxReceiver { outbox, kick })
    }

    /// Queues a frame without waiting. A connection that is behind and at a bound is
    /// disconnected with 4008 and the frame is dropped (it will catch up with `since_seq`).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_out(Out::One(frame), false)
    }

    /// Queues a run of messages as one item: one wakeup and one write for the whole run.
    pub fn push_many(&self, frames: Arc<[Utf8Bytes]>) -> bool {
        self.push_out(Out::Many(frames), false)
    }

    /// Queues a reply whose bytes were reserved with [`Outbox::reserve`]: it is queued whatever
    /// the bounds say, since the reservation already made room for it.
    pub fn push_reserved(&self, frame: Utf8Bytes, reservation: Reservation) -> bool {
        let pushed = self.push_out(Out::One(frame), true);
        drop(reservation);
        pushed
    }

    fn push_out(&self, out: Out, reserved: bool) -> bool {
        let n = out.frames().len();
        if self.closed.load(Ordering::Relaxed) {
            self.budget
                .refused_closed
                .fetch_add(n as u64, Ordering::Relaxed);
            return false;
        }
        let bytes = out.bytes();
        {
            let mut q = lock(&self.queue);
            let behind = q.bytes > 0;
            let over_here = q.frames + n > self.max_frames || q.bytes + bytes > self.max_bytes;
            let over_server = self.budget.over(bytes);
            if behind && !reserved && (over_here || over_server) {
                drop(q);
                let reason = if over_here {
                    "outbound queue full"
                } else {
                    "server outbound memory full"
                };
                self.budget
                    .refused_full
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.kick(chat_proto::close::SLOW_CONSUMER, reason);
                return false;
            }
            q.frames += n;
            q.bytes += bytes;
            self.budget.add(bytes);
            q.items.push_back(out);
        }
        self.ready.notify_one();
        true
    }

    /// Waits, up to `wait`, until a reply of up to `bytes` fits: this connection has room under
    /// its own byte bound (or nothing unsent) and the server's total has room. The bytes are
    /// then held for the reply until the [`Reservation`] is pushed or dropped.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Result<Reservation, Full> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.closed.load(Ordering::Relaxed) || self.kick.is_cancelled() {
                return Err(Full::Closed);
            }
            let unsent = self.unsent_bytes();
            let here = unsent == 0 || unsent + bytes <= self.max_bytes;
            if here && self.budget.try_take(bytes) {
                return Ok(Reservation {
                    budget: self.budget.clone(),
                    bytes,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(if here { Full::Server } else { Full::Connection });
            }
            tokio::select! {
                _ = self.kick.cancelled() => return Err(Full::Closed),
                _ = tokio::time::sleep(RESERVE_POLL) => {}
            }
        }
    }

    /// Bytes queued or being written and not yet handed to the socket.
    pub fn unsent_bytes(&self) -> usize {
        lock(&self.queue).bytes
    }

    fn release(&self, bytes: usize) {
        let mut q = lock(&self.queue);
        let n = bytes.min(q.bytes);
        q.bytes -= n;
        drop(q);
        self.budget.release(n);
    }

    /// Drops everything unsent and gives its bytes back.
    fn clear(&self) {
        let held = std::mem::take(&mut *lock(&self.queue));
        self.budget.release(held.bytes);
        if held.frames > 0 {
            self.budget
                .discarded
                .fetch_add(held.frames as u64, Ordering::Relaxed);
        }
    }

    /// Closes the connection with `code`: the writer sends the close frame and stops.
    pub fn kick(&self, code: u16, reason: &'static str) {
        if self.close.set((code, reason)).is_ok() && code == chat_proto::close::SLOW_CONSUMER {
            self.budget.slow_consumers.fetch_add(1, Ordering::Relaxed);
            // What it holds is never sent now: give the memory back at once rather than at
            // the end of the close grace.
            self.clear();
        }
        self.kick.cancel();
    }

    /// Cancelled when the connection is kicked.
    pub fn kick_token(&self) -> CancellationToken {
        self.kick.clone()
    }

    pub fn is_kicked(&self) -> bool {
        self.kick.is_cancelled()
    }

    /// The code and reason the connection is being closed with, if it was kicked.
    pub fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.close.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 30;

    fn outbox(frames: usize, bytes: usize) -> (Arc<Outbox>, OutboxReceiver) {
        Outbox::new(frames, bytes, Budget::new(BIG))
    }

    #[test]
    fn full_queue_kicks_with_slow_consumer() {
        let (out, mut rx) = outbox(2, BIG);
        assert!(out.push("a".into()));
        assert!(out.push("b".into()));
        assert!(!out.is_kicked());
        assert!(!out.push("c".into()));
        assert!(out.is_kicked());
        assert_eq!(
            out.close_reason().map(|c| c.0),
            Some(chat_proto::close::SLOW_CONSUMER)
        );
        // The first reason sticks.
        out.kick(1000, "later");
        assert_eq!(
            out.close_reason().map(|c| c.0),
            Some(chat_proto::close::SLOW_CONSUMER)
        );
        // What was queued is dropped with the kick: nothing of it will be sent.
        assert!(rx.try_recv().is_none());
        assert_eq!(out.unsent_bytes(), 0);
        assert_eq!(
            out.budget.drops(),
            Drops {
                full: 1,
                closed: 0,
                discarded: 2
            }
        );
    }

    #[test]
    fn the_bound_counts_frames_not_runs() {
        let (out, mut rx) = outbox(4, BIG);
        let run = |n: usize| -> Arc<[Utf8Bytes]> { (0..n).map(|i| i.to_string().into()).collect() };
        assert!(out.push_many(run(3)));
        assert!(!out.push_many(run(2)), "3 + 2 frames is over 4");
        assert!(out.is_kicked());
        // A run larger than the whole bound still goes to a client that has nothing queued.
        let (out, _rx2) = outbox(4, BIG);
        assert!(out.push_many(run(10)));
        assert!(rx.try_recv().is_none(), "the kicked queue was emptied");
    }

    #[test]
    fn the_byte_bound_counts_what_is_unsent_until_written() {
        let (out, mut rx) = outbox(1000, 100);
        assert!(out.push("x".repeat(60).into()));
        // Taken by the writer but not yet written: still unsent, still counted.
        let first = rx.try_recv().expect("queued");
        assert_eq!(out.unsent_bytes(), 60);
        assert!(out.push("y".repeat(30).into()));
        assert_eq!(out.unsent_bytes(), 90);
        rx.written(&first);
        assert_eq!(out.unsent_bytes(), 30);
        assert!(out.push("z".repeat(70).into()), "30 + 70 fits in 100");
        assert!(!out.push("w".into()), "101 does not");
        assert_eq!(
            out.close_reason(),
            Some((chat_proto::close::SLOW_CONSUMER, "outbound queue full"))
        );
        // A frame larger than the bound goes to a connection with nothing unsent.
        let (out, _rx) = outbox(1000, 100);
        assert!(out.push("big".repeat(100).into()));
        assert!(!out.is_kicked());
    }

    #[test]
    fn the_server_total_closes_connections_that_are_behind_not_those_keeping_up() {
        let budget = Budget::new(100);
        let (hog, _hog_rx) = Outbox::new(1000, BIG, budget.clone());
        let (reader, mut reader_rx) = Outbox::new(1000, BIG, budget.clone());
        assert!(hog.push("h".repeat(90).into()));
        // Over the total: a connection with nothing unsent still gets its frame...
        assert!(reader.push("r".repeat(20).into()));
        assert_eq!(budget.used(), 110);
        // ...and one that is behind is closed, its bytes given back.
        assert!(!hog.push("h".into()));
        assert_eq!(
            hog.close_reason(),
            Some((
                chat_proto::close::SLOW_CONSUMER,
                "server outbound memory full"
            ))
        );
        assert_eq!(budget.used(), 20);
        let f = reader_rx.try_recv().expect("queued");
        reader_rx.written(&f);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.slow_consumers(), 1);
    }

    #[test]
    fn a_dropped_receiver_gives_its_bytes_back() {
        let budget = Budget::new(BIG);
        let (out, rx) = Outbox::new(1000, BIG, budget.clone());
        assert!(out.push("abc".into()));
        assert_eq!(budget.used(), 3);
        drop(rx);
        assert_eq!(budget.used(), 0);
        assert!(!out.push("after".into()), "nobody reads any more");
        assert_eq!(budget.used(), 0);
        assert_eq!(
            budget.drops(),
            Drops {
                full: 0,
                closed: 1,
                discarded: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_for_the_client_to_drain_and_for_server_room() {
        let budget = Budget::new(1000);
        let (out, mut rx) = Outbox::new(1000, 100, budget.clone());
        assert!(out.push("q".repeat(80).into()));
        // 80 unsent + 50 is over this connection's 100: not granted while nothing drains.
        assert_eq!(
            out.reserve(50, Duration::from_secs(1)).await.err(),
            Some(Full::Connection)
        );
        // Drained while waiting: granted.
        let drain = {
            let out = out.clone();
            let first = rx.try_recv().expect("queued");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                rx.written(&first);
                drop(out);
                rx
            })
        };
        let r = out
            .reserve(50, Duration::from_secs(5))
            .await
            .expect("granted");
        assert_eq!(budget.used(), 50, "held for the reply");
        let _rx = drain.await.expect("drain");
        assert!(out.push_reserved("reply".into(), r));
        assert_eq!(budget.used(), 5, "the reservation became the reply's size");
        // The server's total is the other bound.
        let other = budget.try_take(990);
        assert!(other);
        assert_eq!(
            out.reserve(50, Duration::from_secs(1)).await.err(),
            Some(Full::Server)
        );
        out.kick(1000, "bye");
        assert_eq!(
            out.reserve(1, Duration::from_secs(1)).await.err(),
            Some(Full::Closed)
        );
    }

    #[tokio::test]
    async fn recv_waits_for_a_push_and_a_drained_burst_gives_its_memory_back() {
        let (out, mut rx) = outbox(1000, BIG);
        let pusher = {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                for i in 0..500 {
                    out.push(i.to_string().into());
                }
            })
        };
        assert_eq!(&*rx.recv().await.frames()[0], "0");
        pusher.await.expect("pusher");
        assert!(lock(&out.queue).items.capacity() >= 499);
        let mut n = 1;
        while rx.try_recv().is_some() {
            n += 1;
        }
        assert_eq!(n, 500);
        assert!(lock(&out.queue).items.capacity() <= IDLE_SLOTS);
        drop(rx);
        assert!(!out.push("after".into()), "nobody reads any more");
    }
}
