//! Replies that grow with the data (`history`, `joined`, `replay`, `room_list`): how large one
//! may be, and the wait for room to queue it. A client that asks and does not read is slowed
//! down by its own back-pressure instead of growing the server's memory (docs/protocol.md §7.4).

use chat_proto::{ErrorCode, EventKind, HistoryMessage, RoomEvent, SearchResult, close};

use crate::outbox::{Full, Reservation};
use crate::session::{Fail, Session};

/// Message bytes one `history`, `joined` or `replay` frame carries at most: a page stops
/// before the message that would pass it (at least one message always goes).
pub const MESSAGE_BYTES: usize = 512 * 1024;

/// What a reply reserves before it is built: its messages plus the rest of the frame (a
/// `joined`'s members page, a room list page).
pub const RESERVE_BYTES: usize = MESSAGE_BYTES + 128 * 1024;

/// What `rate_limited` tells a client to wait when the server's outbound memory is full.
const RETRY_MS: u64 = 1000;

/// Bytes `s` takes as a JSON string, to within a few: escapes counted, as the encoder writes them.
fn json(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\t' | b'\r' | 0x08 | 0x0c => 1,
                0..0x20 => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// Something a page carries, and the bytes it takes in a frame.
pub trait PageItem {
    fn wire_bytes(&self) -> usize;
}

impl PageItem for HistoryMessage {
    fn wire_bytes(&self) -> usize {
        // {"seq":,"id":"","from":"","body":"","ts":} and the numbers, the folded fields, and
        // per reaction {"emoji":"","count":,"me":false}.
        json(&self.body)
            + json(&self.id)
            + json(&self.from)
            + 200
            + self
                .reactions
                .iter()
                .map(|r| json(&r.emoji) + 48)
                .sum::<usize>()
    }
}

impl PageItem for SearchResult {
    fn wire_bytes(&self) -> usize {
        // {"room":"","seq":,"id":"","from":"","body":"","ts":,"reply_to":,"edited":} and the
        // numbers.
        json(&self.room) + json(&self.id) + json(&self.from) + json(&self.body) + 200
    }
}

impl PageItem for RoomEvent {
    fn wire_bytes(&self) -> usize {
        let carried = match &self.what {
            EventKind::Message { id, body, .. } => json(id) + json(body),
            EventKind::Edit { body, .. } => json(body),
            EventKind::React {
                emoji, replaces, ..
            } => json(emoji) + replaces.as_deref().map_or(0, json),
            EventKind::Unreact { emoji, .. } => json(emoji),
            EventKind::Topic { topic } => json(topic),
            EventKind::Kick { user, reason } | EventKind::Ban { user, reason } => {
                json(user) + reason.as_deref().map_or(0, json)
            }
            EventKind::Unban { user } | EventKind::Role { user, .. } => json(user),
            EventKind::Delete { .. } | EventKind::Join | EventKind::Leave => 0,
        };
        // {"seq":,"ts":,"from":"","kind":"", ...} and the numbers.
        carried + json(&self.from) + 180
    }
}

/// Bytes `m` takes in a frame.
pub fn message_bytes(m: &HistoryMessage) -> usize {
    m.wire_bytes()
}

/// Which end of a page to keep when it is cut to [`MESSAGE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest messages (`history`, a `recent` join): older ones stay for `history`.
    Newest,
    /// The oldest (a replay page): the next page continues after the last one kept.
    Oldest,
}

/// Cuts `messages` (ascending seqs) to at most [`MESSAGE_BYTES`]; true if any were cut.
pub fn cap<T: PageItem>(messages: &mut Vec<T>, keep: Keep) -> bool {
    cap_to(messages, keep, MESSAGE_BYTES, 1)
}

/// Cuts `items` to at most `bytes`, keeping at least `least` (if there are that many).
pub fn cap_to<T: PageItem>(items: &mut Vec<T>, keep: Keep, bytes: usize, least: usize) -> bool {
    let messages = items;
    let mut total = 0;
    let mut fits = 0;
    let order: Box<dyn Iterator<Item = &T>> = match keep {
        Keep::Oldest => Box::new(messages.iter()),
        Keep::Newest => Box::new(messages.iter().rev()),
    };
    for m in order {
        total += m.wire_bytes();
        if total > bytes && fits >= least {
            break;
        }
        fits += 1;
    }
    let cut = messages.len() - fits;
    match keep {
        Keep::Oldest => messages.truncate(fits),
        Keep::Newest => {
            messages.drain(..cut);
        }
    }
    cut > 0
}

impl Session {
    /// Waits for room to queue a reply of up to [`RESERVE_BYTES`]. A client whose unsent bytes
    /// do not drain within the wait is not reading: it is closed with 4008. When the server's
    /// total stays full, the request is refused with `rate_limited`.
    pub(crate) async fn reserve_reply(&self) -> Result<Reservation, Fail> {
        match self
            .outbox
            .reserve(RESERVE_BYTES, self.ctx.config.reply_wait)
            .await
        {
            Ok(r) => Ok(r),
            Err(Full::Server) => Err(Fail {
                code: ErrorCode::RateLimited,
                message: "the server is short of memory for replies; try again shortly".into(),
                room: None,
                retry_after_ms: Some(RETRY_MS),
            }),
            Err(Full::Connection) => {
                self.outbox
                    .kick(close::SLOW_CONSUMER, "replies are not being read");
                Err(Fail::new(
                    ErrorCode::Unavailable,
                    "this connection is closing: it does not read its replies",
                ))
            }
            Err(Full::Closed) => Err(Fail::new(
                ErrorCode::Unavailable,
                "this connection is closing",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, body: &str) -> HistoryMessage {
        HistoryMessage {
            seq,
            id: format!("m{seq}"),
            from: "alice".into(),
            body: body.into(),
            ts: 0,
            reply_to: Some(u64::MAX),
            edited: Some(i64::MIN),
            deleted: true,
            reactions: vec![chat_proto::Reaction {
                emoji: "❤️".into(),
                count: u64::MAX,
                me: false,
            }],
        }
    }

    #[test]
    fn the_event_estimate_is_never_below_the_encoding() {
        let kinds = [
            EventKind::Message {
                id: "quo\"te".into(),
                body: "tab\tline\n\u{1}".into(),
                reply_to: Some(u64::MAX),
            },
            EventKind::Edit {
                target: u64::MAX,
                body: "é日本語🙂".into(),
            },
            EventKind::React {
                target: u64::MAX,
                emoji: "❤️".into(),
                replaces: Some("👍".into()),
            },
            EventKind::Role {
                user: "someone".into(),
                role: chat_proto::Role::Moderator,
            },
            EventKind::Delete { target: u64::MAX },
        ];
        for what in kinds {
            let e = RoomEvent {
                seq: u64::MAX,
                ts: i64::MIN,
                from: "alice".into(),
                what,
            };
            let real = serde_json::to_string(&e).expect("json").len();
            assert!(e.wire_bytes() >= real, "{e:?}: {} < {real}", e.wire_bytes());
        }
    }

    #[test]
    fn the_search_result_estimate_is_never_below_the_encoding() {
        for body in [
            "plain",
            "quo\"te\\s",
            "tab\tline\nend",
            "é日本語🙂",
            "\u{1}\u{7f}",
        ] {
            let r = SearchResult {
                room: "dm:someone:someone-else".into(),
                seq: u64::MAX,
                id: "x".repeat(64),
                from: "u".repeat(32),
                body: body.into(),
                ts: i64::MIN,
                reply_to: Some(u64::MAX),
                edited: Some(i64::MIN),
            };
            let real = serde_json::to_string(&r).expect("json").len();
            assert!(
                r.wire_bytes() >= real,
                "{body:?}: {} < {real}",
                r.wire_bytes()
            );
        }
    }

    #[test]
    fn the_estimate_is_never_below_the_encoding() {
        for body in [
            "plain",
            "quo\"te\\s",
            "tab\tline\nend",
            "é日本語🙂",
            "\u{1}\u{7f}",
        ] {
            let m = msg(123_456_789, body);
            let real = serde_json::to_string(&m).expect("json").len();
            assert!(
                message_bytes(&m) >= real,
                "{body:?}: {} < {real}",
                message_bytes(&m)
            );
        }
    }

    #[test]
    fn pages_are_cut_at_the_byte_bound_from_the_right_end() {
        let body = "x".repeat(16 * 1024 - 100);
        let all: Vec<_> = (1..=200).map(|s| msg(s, &body)).collect();
        let mut newest = all.clone();
        assert!(cap(&mut newest, Keep::Newest));
        let bytes: usize = newest.iter().map(message_bytes).sum();
        assert!(bytes <= MESSAGE_BYTES && bytes + message_bytes(&all[0]) > MESSAGE_BYTES);
        assert_eq!(newest.last().map(|m| m.seq), Some(200), "the newest kept");
        let mut oldest = all.clone();
        assert!(cap(&mut oldest, Keep::Oldest));
        assert_eq!(oldest.first().map(|m| m.seq), Some(1), "the oldest kept");
        assert_eq!(oldest.len(), newest.len());
        // Small pages are untouched; one message always goes, however large.
        let mut small: Vec<_> = (1..=50).map(|s| msg(s, "hi")).collect();
        assert!(!cap(&mut small, Keep::Newest));
        assert_eq!(small.len(), 50);
        let mut one = vec![msg(1, &"y".repeat(MESSAGE_BYTES * 2))];
        assert!(!cap(&mut one, Keep::Oldest));
        assert_eq!(one.len(), 1);
    }
}
