//! The frame each room event goes out as: a message as `message` (what every version knows),
//! anything else as protocol 2's `event`. Encoded once, for every recipient (see `audience`).

use chat_proto::{EventKind, RoomEvent, ServerFrame, encode};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub fn frame(room: &str, e: RoomEvent) -> Utf8Bytes {
    let f = match e.what {
        EventKind::Message { id, body, reply_to } => ServerFrame::Message {
            room: room.to_owned(),
            seq: e.seq,
            id,
            from: e.from,
            body,
            ts: e.ts,
            reply_to,
        },
        _ => ServerFrame::Event {
            room: room.to_owned(),
            event: e,
        },
    };
    Utf8Bytes::from(encode(&f, None))
}
