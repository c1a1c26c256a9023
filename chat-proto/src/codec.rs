//! Text <-> frames, as pure functions. Decoding tells apart "not JSON", "not a frame" and
//! "a frame of a type I don't know", because each gets its own error code.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::frames::CLIENT_FRAME_TYPES;
use crate::limits::MAX_REF_BYTES;
use crate::types::Ref;
use crate::{ClientFrame, ErrorCode, ServerFrame};

/// A decoded frame and the `ref` that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<F> {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Ref>,
    #[serde(flatten)]
    pub frame: F,
}

/// Why a text frame could not be decoded. `reference` is the frame's `ref` when it could be read,
/// so the error reply can still be matched to the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub detail: String,
    pub reference: Option<Ref>,
}

/// Only the fields every frame shares, read first so a bad frame can still be classified. `type`
/// is read as any value, so that a `type` of the wrong kind does not cost the frame its `ref`.
struct Head {
    kind: serde_json::Value,
    reference: Option<Ref>,
}

/// By hand rather than derived: a derived struct also reads a JSON array as its fields in order,
/// and `[5, 2]` is no frame with `ref` 2.
impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier)]
        enum Key {
            #[serde(rename = "type")]
            Type,
            #[serde(rename = "ref")]
            Ref,
            #[serde(other)]
            Other,
        }
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Head;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                use serde::de::Error;
                let (mut kind, mut reference) = (None, None);
                while let Some(key) = map.next_key()? {
                    match key {
                        Key::Type if kind.is_some() => {
                            return Err(A::Error::duplicate_field("type"));
                        }
                        Key::Ref if reference.is_some() => {
                            return Err(A::Error::duplicate_field("ref"));
                        }
                        Key::Type => kind = Some(map.next_value()?),
                        Key::Ref => reference = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Head {
                    kind: kind.unwrap_or_default(),
                    reference: reference.flatten(),
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// serde's messages can quote the input; an error reply stays short whatever was sent.
fn short(err: &serde_json::Error) -> String {
    let mut s = err.to_string();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn classify(err: &serde_json::Error) -> ErrorCode {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ErrorCode::BadJson,
        Category::Data => ErrorCode::BadFrame,
    }
}

fn decode<F: DeserializeOwned>(
    text: &str,
    known: Option<&[&str]>,
) -> Result<Envelope<F>, DecodeError> {
    let head: Head = serde_json::from_str(text).map_err(|e| DecodeError {
        code: classify(&e),
        detail: short(&e),
        reference: None,
    })?;
    let reference = head.reference;
    let fail = |code, detail: String| DecodeError {
        code,
        detail,
        reference: reference.clone(),
    };
    if let Some(Ref::Str(s)) = &reference
        && s.len() > MAX_REF_BYTES
    {
        // Not echoed: an over-long ref is exactly what must not be sent back.
        return Err(DecodeError {
            code: ErrorCode::BadFrame,
            detail: format!("ref is longer than {MAX_REF_BYTES} bytes"),
            reference: None,
        });
    }
    let kind = match head.kind {
        serde_json::Value::String(kind) => kind,
        serde_json::Value::Null => {
            return Err(fail(ErrorCode::BadFrame, "missing field `type`".into()));
        }
        _ => return Err(fail(ErrorCode::BadFrame, "`type` is not a string".into())),
    };
    if let Some(known) = known
        && !known.contains(&kind.as_str())
    {
        let mut shown: String = kind.chars().take(40).collect();
        shown.retain(|c| !c.is_control());
        return Err(fail(
            ErrorCode::UnknownType,
            format!("unknown frame type `{shown}`"),
        ));
    }
    let frame: F = serde_json::from_str(text).map_err(|e| fail(classify(&e), short(&e)))?;
    Ok(Envelope { reference, frame })
}

/// Decodes a client frame from a WebSocket text frame.
pub fn decode_client(text: &str) -> Result<Envelope<ClientFrame>, DecodeError> {
    decode(text, Some(CLIENT_FRAME_TYPES))
}

/// Decodes a server frame (for clients). Unknown types are `bad_frame` here: a client should
/// skip frames it does not know rather than fail.
pub fn decode_server(text: &str) -> Result<Envelope<ServerFrame>, DecodeError> {
    decode(text, None)
}

/// Encodes a frame with an optional `ref`. Serializing these types cannot fail (no maps with
/// non-string keys, no non-finite floats), so this returns the text directly.
pub fn encode<F: Serialize>(frame: &F, reference: Option<&Ref>) -> String {
    #[derive(Serialize)]
    struct Out<'a, F> {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Ref>,
        #[serde(flatten)]
        frame: &'a F,
    }
    match serde_json::to_string(&Out { reference, frame }) {
        Ok(s) => s,
        // Unreachable for this crate's frames; keep the connection alive with a valid frame.
        Err(e) => format!(
            r#"{{"type":"error","code":"internal","message":"encode failed: {}"}}"#,
            e.to_string().replace(['"', '\\'], "'")
        ),
    }
}

/// The `type` of a frame [`encode`] wrote, read from the front of its text instead of parsing
/// it: `encode` writes `ref` (when there is one) and then the tag before any other field. A `ref`
/// cannot fake it: inside a JSON string every `"` is escaped. `None` for text not made so.
pub fn encoded_type(text: &str) -> Option<&str> {
    const TAG: &str = r#""type":""#;
    let rest = &text[text.find(TAG)? + TAG.len()..];
    rest.find('"').map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_and_without_ref() {
        let e = decode_client(r#"{"type":"ping"}"#).expect("ping");
        assert_eq!(e.frame, ClientFrame::Ping);
        assert_eq!(e.reference, None);
        let e = decode_client(r#"{"type":"ping","ref":7}"#).expect("ping");
        assert_eq!(e.reference, Some(Ref::Num(7)));
        let e = decode_client(r#"{"ref":"a","type":"join","room":"x","extra":1}"#).expect("join");
        assert_eq!(e.reference, Some(Ref::Str("a".into())));
        assert!(matches!(e.frame, ClientFrame::Join { .. }));
    }

    #[test]
    fn classifies_bad_input() {
        let err = decode_client("{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        let err = decode_client("").unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        // An array is no frame, even one whose items would read as `type` and `ref`.
        for text in ["[1,2]", "[1,2,3]", r#"["ping",2]"#, r#""just a string""#] {
            let err = decode_client(text).unwrap_err();
            assert_eq!(
                (err.code, err.reference),
                (ErrorCode::BadFrame, None),
                "{text}"
            );
        }
        let err = decode_client(r#"{"ref":3}"#).unwrap_err();
        assert_eq!(
            (err.code, err.reference),
            (ErrorCode::BadFrame, Some(Ref::Num(3)))
        );
        let err = decode_client(r#"{"type":"fly","ref":"r"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.reference, Some(Ref::Str("r".into())));
        let err = decode_client(r#"{"type":"send","room":"x","id":5,"body":"b"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        let err = decode_client(r#"{"type":"send","room":"x"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert!(err.detail.contains("id"), "{}", err.detail);
        let long = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65));
        let err = decode_client(&long).unwrap_err();
        assert_eq!(
            (err.code, err.reference),
            (ErrorCode::BadFrame, None),
            "not echoed"
        );
    }

    #[test]
    fn a_readable_ref_comes_back_whatever_else_is_wrong() {
        for text in [
            r#"{"type":5,"ref":2}"#,
            r#"{"ref":2,"type":["ping"]}"#,
            r#"{"type":{"a":1},"ref":2}"#,
            r#"{"type":null,"ref":2}"#,
            r#"{"ref":2}"#,
            r#"{"type":"send","room":"x","id":5,"body":"b","ref":2}"#,
            r#"{"type":"history","room":"x","limit":-1,"ref":2}"#,
        ] {
            let err = decode_client(text).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadFrame, "{text}");
            assert_eq!(err.reference, Some(Ref::Num(2)), "{text}");
        }
        let err = decode_client(r#"{"type":5,"ref":"r"}"#).unwrap_err();
        assert_eq!(err.reference, Some(Ref::Str("r".into())));
        assert!(err.detail.contains("not a string"), "{}", err.detail);
        // A ref that is itself unreadable is not guessed at.
        for text in [r#"{"type":5,"ref":true}"#, r#"{"type":"ping","ref":1.5}"#] {
            let err = decode_client(text).unwrap_err();
            assert_eq!(
                (err.code, err.reference),
                (ErrorCode::BadFrame, None),
                "{text}"
            );
        }
    }

    #[test]
    fn limits_take_any_u64_and_nothing_else() {
        let limit = |text: &str| match decode_client(text).map(|e| e.frame) {
            Ok(ClientFrame::History { limit, .. })
            | Ok(ClientFrame::ListRooms { limit, .. })
            | Ok(ClientFrame::Members { limit, .. }) => Ok(limit),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.code),
        };
        for (frame, head) in [
            ("history", r#""room":"r","#),
            ("list_rooms", ""),
            ("members", r#""room":"r","#),
        ] {
            let with = |value: &str| format!(r#"{{"type":"{frame}",{head}"limit":{value}}}"#);
            assert_eq!(limit(&with("4294967296")), Ok(Some(1 << 32)), "{frame}");
            assert_eq!(limit(&with("18446744073709551615")), Ok(Some(u64::MAX)));
            assert_eq!(limit(&with("0")), Ok(Some(0)));
            assert_eq!(limit(&with("null")), Ok(None));
            // Past u64 a JSON number is read as a float; negatives and fractions are no count.
            for bad in ["18446744073709551616", "-1", "2.5", "5.0", "1e3", "\"5\""] {
                assert_eq!(limit(&with(bad)), Err(ErrorCode::BadFrame), "{frame} {bad}");
            }
        }
    }

    #[test]
    fn null_in_an_optional_field_is_the_same_as_leaving_it_out() {
        let same = |with_null: &str, without: &str| {
            let a = decode_client(with_null).expect(with_null);
            let b = decode_client(without).expect(without);
            assert_eq!(a, b, "{with_null}");
        };
        same(
            r#"{"type":"hello","versions":[1],"token":null,"ref":null}"#,
            r#"{"type":"hello","versions":[1]}"#,
        );
        same(
            r#"{"type":"create_room","room":"r","topic":null,"visibility":null}"#,
            r#"{"type":"create_room","room":"r"}"#,
        );
        same(
            r#"{"type":"join","room":"r","since_seq":null,"epoch":null}"#,
            r#"{"type":"join","room":"r"}"#,
        );
        same(
            r#"{"type":"list_rooms","after":null,"limit":null}"#,
            r#"{"type":"list_rooms"}"#,
        );
        same(
            r#"{"type":"members","room":"r","after":null,"limit":null}"#,
            r#"{"type":"members","room":"r"}"#,
        );
        same(
            r#"{"type":"history","room":"r","before_seq":null,"limit":null}"#,
            r#"{"type":"history","room":"r"}"#,
        );
        // A required field is required: null is no value for it.
        for text in [
            r#"{"type":"join","room":null}"#,
            r#"{"type":"set_topic","room":"r","topic":null}"#,
            r#"{"type":"hello","versions":null}"#,
        ] {
            assert_eq!(decode_client(text).unwrap_err().code, ErrorCode::BadFrame);
        }
    }

    #[test]
    fn every_client_type_is_listed_and_round_trips() {
        let samples = [
            ClientFrame::Hello {
                versions: vec![1],
                token: None,
            },
            ClientFrame::Register {
                username: "a".into(),
                password: "p".into(),
            },
            ClientFrame::Login {
                username: "a".into(),
                password: "p".into(),
            },
            ClientFrame::Auth { token: "t".into() },
            ClientFrame::Logout,
            ClientFrame::ListRooms {
                after: None,
                limit: None,
            },
            ClientFrame::CreateRoom {
                room: "r".into(),
                visibility: Default::default(),
                topic: None,
            },
            ClientFrame::Join {
                room: "r".into(),
                since_seq: Some(1),
                epoch: Some("e".into()),
            },
            ClientFrame::Leave { room: "r".into() },
            ClientFrame::DeleteRoom { room: "r".into() },
            ClientFrame::Decline { room: "r".into() },
            ClientFrame::Members {
                room: "r".into(),
                after: Some("bob".into()),
                limit: Some(10),
            },
            ClientFrame::SetTopic {
                room: "r".into(),
                topic: "t".into(),
            },
            ClientFrame::Invite {
                room: "r".into(),
                user: "u".into(),
            },
            ClientFrame::OpenDm { user: "u".into() },
            ClientFrame::Send {
                room: "r".into(),
                id: "i".into(),
                body: "b".into(),
                reply_to: None,
            },
            ClientFrame::History {
                room: "r".into(),
                before_seq: None,
                limit: Some(5),
            },
            ClientFrame::Edit {
                room: "r".into(),
                seq: 3,
                body: "b".into(),
            },
            ClientFrame::Delete {
                room: "r".into(),
                seq: 3,
            },
            ClientFrame::React {
                room: "r".into(),
                seq: 3,
                emoji: "👍".into(),
            },
            ClientFrame::Unreact {
                room: "r".into(),
                seq: 3,
                emoji: "👍".into(),
            },
            ClientFrame::MarkRead {
                room: "r".into(),
                seq: 3,
            },
            ClientFrame::Search {
                query: "\"big cat\" from:a".into(),
                room: Some("r".into()),
                before: Some("1.2.r".into()),
                before_seq: None,
                limit: Some(5),
            },
            ClientFrame::Typing {
                room: "r".into(),
                active: true,
            },
            ClientFrame::SetStatus {
                status: crate::Status::Away,
            },
            ClientFrame::Ping,
            ClientFrame::ChangePassword {
                old_password: "o".into(),
                new_password: "n".into(),
                revoke_others: true,
            },
            ClientFrame::Sessions,
            ClientFrame::RevokeSession { id: "s".into() },
            ClientFrame::Kick {
                room: "r".into(),
                user: "u".into(),
                reason: Some("spam".into()),
            },
            ClientFrame::Ban {
                room: "r".into(),
                user: "u".into(),
                reason: None,
            },
            ClientFrame::Unban {
                room: "r".into(),
                user: "u".into(),
            },
            ClientFrame::SetRole {
                room: "r".into(),
                user: "u".into(),
                role: crate::Role::Moderator,
            },
            ClientFrame::ConfigureRoom {
                room: "r".into(),
                members_set_topic: Some(false),
                members_invite: None,
            },
            ClientFrame::Bans {
                room: "r".into(),
                after: None,
                limit: Some(10),
            },
        ];
        assert_eq!(samples.len(), CLIENT_FRAME_TYPES.len());
        for frame in samples {
            let text = encode(&frame, Some(&Ref::Num(1)));
            let back = decode_client(&text).expect(&text);
            assert_eq!(back.frame, frame);
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert!(CLIENT_FRAME_TYPES.contains(&v["type"].as_str().expect("type")));
            assert_eq!(v["type"].as_str(), Some(frame.kind()), "{text}");
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let f = ServerFrame::error(ErrorCode::RateLimited, "slow down");
        let text = encode(&f, Some(&Ref::Str("x".into())));
        assert_eq!(
            text,
            r#"{"ref":"x","type":"error","code":"rate_limited","message":"slow down"}"#
        );
        assert_eq!(decode_server(&text).expect("decode").frame, f);
        assert_eq!(encode(&ServerFrame::Ok, None), r#"{"type":"ok"}"#);
    }

    #[test]
    fn revoke_others_is_false_unless_asked_for() {
        let f =
            decode_client(r#"{"type":"change_password","old_password":"a","new_password":"b"}"#)
                .expect("decode")
                .frame;
        assert!(matches!(
            f,
            ClientFrame::ChangePassword {
                revoke_others: false,
                ..
            }
        ));
        assert_eq!(f.since_version(), 2);
    }

    #[test]
    fn the_type_of_an_encoded_frame_is_read_from_its_front() {
        let message = ServerFrame::Message {
            room: r#"r"type":"x"#.into(),
            seq: 1,
            id: "i".into(),
            from: "a".into(),
            body: r#"{"type":"fake"}"#.into(),
            ts: 0,
            reply_to: None,
        };
        for (frame, reference) in [
            (ServerFrame::Ok, None),
            (ServerFrame::Pong { ts: 5 }, Some(Ref::Num(3))),
            (message.clone(), None),
            // A ref made to look like a tag is escaped, so it is not taken for one.
            (message, Some(Ref::Str(r#"","type":"evil"#.into()))),
            (
                ServerFrame::error(ErrorCode::BadJson, "x"),
                Some(Ref::Str("type".into())),
            ),
        ] {
            let text = encode(&frame, reference.as_ref());
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(encoded_type(&text), v["type"].as_str(), "{text}");
        }
        assert_eq!(encoded_type("[]"), None);
    }
}
