//! A connection's outbound side as the rest of the server sees it: a bounded queue of encoded
//! frames and a way to close the connection with a code. Everything that writes to a client
//! goes through here, so the slow-consumer policy lives in one place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
}

/// A queue that drained back to empty keeps at most this many slots: a burst may grow it, an
/// idle connection does not keep the burst's memory. (A tokio mpsc channel keeps a 32-slot
/// block per connection, about 1 KiB, which was a sixth of an idle connection's cost.)
const IDLE_SLOTS: usize = 4;

/// One client's outbound queue and kill switch.
pub struct Outbox {
    /// Bounded by `capacity` frames (a run of messages counts each of them): a client that stops
    /// reading fills it, and is then disconnected rather than allowed to grow the server's
    /// memory or the time its frames wait. The lock is held only to push or pop.
    queue: Mutex<Queue>,
    capacity: usize,
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
}

/// What the writer task needs: the receiving end and the kick signal.
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
    pub kick: CancellationToken,
}

impl OutboxReceiver {
    /// The next queued item, without waiting.
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
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.outbox.closed.store(true, Ordering::Relaxed);
        *lock(&self.outbox.queue) = Queue::default();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    pub fn new(capacity: usize) -> (Arc<Self>, OutboxReceiver) {
        let kick = CancellationToken::new();
        let outbox = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            kick: kick.clone(),
            close: OnceLock::new(),
        });
        (outbox.clone(), OutboxReceiver { outbox, kick })
    }

    /// Queues a frame without waiting. A full queue means the client stopped reading: it is
    /// disconnected with 4008 and the frame is dropped (it will catch up with `since_seq`).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_out(Out::One(frame))
    }

    /// Queues a run of messages as one item: one wakeup and one write for the whole run.
    pub fn push_many(&self, frames: Arc<[Utf8Bytes]>) -> bool {
        self.push_out(Out::Many(frames))
    }

    fn push_out(&self, out: Out) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut q = lock(&self.queue);
            let n = out.frames().len();
            if q.frames + n > self.capacity && q.frames > 0 {
                drop(q);
                self.kick(chat_proto::close::SLOW_CONSUMER, "outbound queue full");
                return false;
            }
            q.frames += n;
            q.items.push_back(out);
        }
        self.ready.notify_one();
        true
    }

    /// Closes the connection with `code`: the writer sends the close frame and stops.
    pub fn kick(&self, code: u16, reason: &'static str) {
        let _ = self.close.set((code, reason));
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

    #[test]
    fn full_queue_kicks_with_slow_consumer() {
        let (out, mut rx) = Outbox::new(2);
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
        assert_eq!(
            rx.try_recv().map(|o| o.frames()[0].to_string()).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn the_bound_counts_frames_not_runs() {
        let (out, mut rx) = Outbox::new(4);
        let run = |n: usize| -> Arc<[Utf8Bytes]> { (0..n).map(|i| i.to_string().into()).collect() };
        assert!(out.push_many(run(3)));
        assert!(!out.push_many(run(2)), "3 + 2 frames is over 4");
        assert!(out.is_kicked());
        // A run larger than the whole bound still goes to a client that has nothing queued.
        let (out, _rx2) = Outbox::new(4);
        assert!(out.push_many(run(10)));
        assert!(rx.try_recv().is_some());
    }

    #[tokio::test]
    async fn recv_waits_for_a_push_and_a_drained_burst_gives_its_memory_back() {
        let (out, mut rx) = Outbox::new(1000);
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
