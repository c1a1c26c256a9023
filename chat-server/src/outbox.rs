//! A connection's outbound side as the rest of the server sees it: a bounded queue of encoded
//! frames and a way to close the connection with a code. Everything that writes to a client
//! goes through here, so the slow-consumer policy lives in one place.

use std::sync::OnceLock;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// What goes to a client: one frame, or a run of messages whose bytes every recipient shares.
#[derive(Debug, Clone)]
pub enum Out {
    One(Utf8Bytes),
    Many(std::sync::Arc<[Utf8Bytes]>),
}

impl Out {
    pub fn frames(&self) -> &[Utf8Bytes] {
        match self {
            Out::One(f) => std::slice::from_ref(f),
            Out::Many(fs) => fs,
        }
    }
}

/// One client's outbound queue and kill switch.
pub struct Outbox {
    /// Bounded: a client that stops reading fills it, and is then disconnected rather than
    /// allowed to grow the server's memory.
    tx: mpsc::Sender<Out>,
    /// Cancelled when the connection must close now, without draining the queue.
    kick: CancellationToken,
    /// The close code and reason of the first kick; later kicks don't override it.
    close: OnceLock<(u16, &'static str)>,
}

/// What the writer task needs: the receiving end and the kick signal.
pub struct OutboxReceiver {
    pub rx: mpsc::Receiver<Out>,
    pub kick: CancellationToken,
}

impl Outbox {
    pub fn new(capacity: usize) -> (std::sync::Arc<Self>, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kick = CancellationToken::new();
        (
            std::sync::Arc::new(Self {
                tx,
                kick: kick.clone(),
                close: OnceLock::new(),
            }),
            OutboxReceiver { rx, kick },
        )
    }

    /// Queues a frame without waiting. A full queue means the client stopped reading: it is
    /// disconnected with 4008 and the frame is dropped (it will catch up with `since_seq`).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_out(Out::One(frame))
    }

    /// Queues a run of messages as one item: one wakeup and one write for the whole run.
    pub fn push_many(&self, frames: std::sync::Arc<[Utf8Bytes]>) -> bool {
        self.push_out(Out::Many(frames))
    }

    fn push_out(&self, out: Out) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kick(chat_proto::close::SLOW_CONSUMER, "outbound queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
            rx.rx
                .try_recv()
                .ok()
                .map(|o| o.frames()[0].to_string())
                .as_deref(),
            Some("a")
        );
    }
}
