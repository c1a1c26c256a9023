//! What nodes say to each other on Redis: one JSON envelope per PUBLISH, naming the node that
//! published it and when. Pure encode/decode; a payload that does not decode is dropped by the
//! receiver (and logged), never trusted.

use serde::{Deserialize, Serialize};

use chat_proto::Status;

/// One published event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The publishing node: a node skips what it published itself (delivered locally already).
    #[serde(rename = "o")]
    pub origin: String,
    /// Publish time, ms since the Unix epoch: for the receive-latency histogram only.
    #[serde(rename = "t")]
    pub sent_ms: i64,
    #[serde(flatten)]
    pub what: Wire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Wire {
    /// A stored message: `frame` is its encoded `message` frame.
    Msg {
        room: String,
        seq: u64,
        frame: String,
    },
    /// Any other frame for a room's subscribers (topic, member_joined, ...).
    Room { room: String, frame: String },
    /// A frame for every connection of a user (an invite).
    User { user: String, frame: String },
    /// `user` left `room` (or a moderator removed them: `removed`): unsubscribe their
    /// connections.
    Left {
        room: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removed: Option<chat_proto::Removal>,
    },
    /// A token was revoked: close its connections. Hex of the token's hash.
    Revoked { hash: String },
    /// The room was deleted.
    Deleted { room: String },
    /// The origin node's users in `room`: changes, or (`replace`) its whole view.
    Presence {
        room: String,
        changes: Vec<(String, Status)>,
        replace: bool,
    },
    Typing {
        room: String,
        user: String,
        active: bool,
    },
    /// `user` went away or came back (on the user's channel).
    Away { user: String, away: bool },
    /// The origin node is stopping: its presence entries are gone.
    Gone,
    /// A node's check that its own subscription works (`/readyz`, the watchdog).
    Ping { nonce: u64 },
}

impl Envelope {
    pub fn encode(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let all = [
            Wire::Msg {
                room: "r".into(),
                seq: 7,
                frame: r#"{"type":"message"}"#.into(),
            },
            Wire::Room {
                room: "r".into(),
                frame: "{}".into(),
            },
            Wire::User {
                user: "u".into(),
                frame: "{}".into(),
            },
            Wire::Left {
                room: "r".into(),
                user: "u".into(),
                removed: Some(chat_proto::Removal {
                    by: "m".into(),
                    banned: true,
                    reason: Some("spam".into()),
                }),
            },
            Wire::Revoked { hash: "ab".into() },
            Wire::Deleted { room: "r".into() },
            Wire::Presence {
                room: "r".into(),
                changes: vec![("u".into(), Status::Away)],
                replace: true,
            },
            Wire::Typing {
                room: "r".into(),
                user: "u".into(),
                active: true,
            },
            Wire::Away {
                user: "u".into(),
                away: true,
            },
            Wire::Gone,
            Wire::Ping { nonce: 3 },
        ];
        for what in all {
            let e = Envelope {
                origin: "n1".into(),
                sent_ms: 5,
                what,
            };
            assert_eq!(Envelope::decode(e.encode().as_bytes()).expect("decodes"), e);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"o\":1}",
            b"\xff\xfe",
            b"{\"o\":\"n\",\"t\":1,\"k\":\"nope\"}",
        ] {
            assert!(Envelope::decode(bad).is_err());
        }
    }
}
