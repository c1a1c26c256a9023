//! Which connections a room's or a user's frame is for, by the protocol version each speaks.
//! Frames are encoded once for everyone; the type tag at their front says who takes them.

/// Whether a connection speaking `version` receives `frame`, a frame [`chat_proto::encode`]
/// wrote. Protocol 2 records every change to a room as an `event` (and answers `mark_read` with
/// `read`), which version 1 does not define; version 1 is told of topic changes and departures
/// with its own `topic` and `member_left`, which protocol 2 replaces by those events.
pub fn sees(version: u32, frame: &str) -> bool {
    match chat_proto::encoded_type(frame) {
        Some("event" | "read") => version >= 2,
        Some("topic" | "member_left") => version < 2,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::{EventKind, ReadState, RoomEvent, ServerFrame, encode};

    #[test]
    fn each_version_gets_its_own_frames_and_both_get_the_rest() {
        let event = encode(
            &ServerFrame::Event {
                room: "r".into(),
                event: RoomEvent {
                    seq: 2,
                    ts: 1,
                    from: "a".into(),
                    what: EventKind::Delete { target: 1 },
                },
            },
            None,
        );
        let read = encode(
            &ServerFrame::Read {
                room: "r".into(),
                read: ReadState::default(),
            },
            None,
        );
        let topic = encode(
            &ServerFrame::Topic {
                room: "r".into(),
                topic: "t".into(),
                by: "a".into(),
            },
            None,
        );
        let left = encode(
            &ServerFrame::MemberLeft {
                room: "r".into(),
                user: "a".into(),
            },
            None,
        );
        let message = encode(
            &ServerFrame::Message {
                room: "r".into(),
                seq: 1,
                id: "i".into(),
                from: "a".into(),
                body: "event".into(),
                ts: 1,
                reply_to: None,
            },
            None,
        );
        for v2_only in [&event, &read] {
            assert!(sees(2, v2_only) && !sees(1, v2_only), "{v2_only}");
        }
        for v1_only in [&topic, &left] {
            assert!(sees(1, v1_only) && !sees(2, v1_only), "{v1_only}");
        }
        assert!(sees(1, &message) && sees(2, &message));
    }
}
