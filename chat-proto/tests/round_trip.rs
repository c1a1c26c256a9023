//! Property: every frame either side can build survives `encode` then `decode_*` unchanged, with
//! any `ref`, any text in its strings (controls, quotes, astral chars) and any number in range.
//! The fixed examples in `codec.rs` and `docs/protocol.md` show one value per field; these show
//! that no value of a field breaks the JSON shape (a flattened `ref`, an untagged number, a
//! u64 above i64::MAX).

use chat_proto::{
    BanInfo, CatchUp, ClientFrame, Envelope, ErrorCode, HistoryMessage, Limits, Member, Ref,
    Removal, Role, RoomInfo, RoomKind, RoomSettings, SearchResult, ServerFrame, SessionInfo,
    Status, Visibility, decode_client, decode_server, encode, limits::MAX_REF_BYTES,
};
use proptest::prelude::*;
use proptest::sample::select;

/// Modest: the suite runs on two shared cores.
const CASES: u32 = 256;

/// Validators of `$defs.ClientFrame` and `$defs.ServerFrame` of the generated schema.
static SCHEMAS: std::sync::LazyLock<(jsonschema::Validator, jsonschema::Validator)> =
    std::sync::LazyLock::new(|| {
        let root = chat_proto::contract::schema();
        let of = |name: &str| {
            let mut schema = root.clone();
            schema["$ref"] = format!("#/$defs/{name}").into();
            if let Some(o) = schema.as_object_mut() {
                o.remove("anyOf");
            }
            jsonschema::validator_for(&schema).expect("the schema compiles")
        };
        (of("ClientFrame"), of("ServerFrame"))
    });

/// Any chars, controls and surrogate-free astral ones included; short, so cases stay cheap.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// A `ref` the decoder accepts: any integer, or a string within `MAX_REF_BYTES` (a longer one is
/// refused on purpose and not echoed).
fn reference() -> impl Strategy<Value = Option<Ref>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(Ref::Num),
        text()
            .prop_filter("within the ref limit", |s| s.len() <= MAX_REF_BYTES)
            .prop_map(Ref::Str),
    ])
}

fn visibility() -> impl Strategy<Value = Visibility> {
    select(vec![Visibility::Public, Visibility::Private])
}

fn status() -> impl Strategy<Value = Status> {
    select(vec![Status::Online, Status::Away, Status::Offline])
}

fn members() -> impl Strategy<Value = Vec<Member>> {
    proptest::collection::vec(
        (text(), status(), proptest::option::of(role())).prop_map(|(user, status, role)| Member {
            user,
            status,
            role,
        }),
        0..4,
    )
}

fn role() -> impl Strategy<Value = Role> {
    select(vec![Role::Member, Role::Moderator, Role::Owner])
}

fn messages() -> impl Strategy<Value = Vec<HistoryMessage>> {
    let one = (any::<u64>(), text(), text(), text(), any::<i64>()).prop_map(
        |(seq, id, from, body, ts)| HistoryMessage {
            seq,
            id,
            from,
            body,
            ts,
            reply_to: None,
            edited: None,
            deleted: false,
            reactions: Vec::new(),
        },
    );
    proptest::collection::vec(one, 0..4)
}

fn room_info() -> impl Strategy<Value = RoomInfo> {
    (
        text(),
        select(vec![RoomKind::Room, RoomKind::Dm]),
        visibility(),
        text(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(role()),
    )
        .prop_map(
            |(room, kind, visibility, topic, members, joined, role)| RoomInfo {
                room,
                kind,
                visibility,
                topic,
                members,
                joined,
                read: None,
                role,
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i)| Limits {
            max_frame_bytes: a,
            max_body_bytes: b,
            history_page_max: c,
            max_replay: d,
            rate_per_sec: e,
            rate_burst: f,
            outbound_queue_frames: g,
            outbound_queue_bytes: h,
            history_on_join: i,
        })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    use ClientFrame as C;
    let accounts =
        prop_oneof![
            (proptest::collection::vec(any::<u32>(), 0..4), opt_text())
                .prop_map(|(versions, token)| C::Hello { versions, token }),
            (text(), text()).prop_map(|(username, password)| C::Register { username, password }),
            (text(), text()).prop_map(|(username, password)| C::Login { username, password }),
            text().prop_map(|token| C::Auth { token }),
            Just(C::Logout),
            (opt_text(), any::<Option<u64>>())
                .prop_map(|(after, limit)| C::ListRooms { after, limit }),
            text().prop_map(|room| C::DeleteRoom { room }),
            text().prop_map(|room| C::Decline { room }),
            (text(), opt_text(), any::<Option<u64>>())
                .prop_map(|(room, after, limit)| C::Members { room, after, limit }),
            Just(C::Ping),
            status().prop_map(|status| C::SetStatus { status }),
        ];
    let rooms = prop_oneof![
        (text(), visibility(), opt_text()).prop_map(|(room, visibility, topic)| C::CreateRoom {
            room,
            visibility,
            topic
        }),
        (text(), any::<Option<u64>>(), opt_text()).prop_map(|(room, since_seq, epoch)| C::Join {
            room,
            since_seq,
            epoch
        }),
        text().prop_map(|room| C::Leave { room }),
        (text(), text()).prop_map(|(room, topic)| C::SetTopic { room, topic }),
        (text(), text()).prop_map(|(room, user)| C::Invite { room, user }),
        text().prop_map(|user| C::OpenDm { user }),
        (text(), text(), text()).prop_map(|(room, id, body)| C::Send {
            room,
            id,
            body,
            reply_to: None,
        }),
        (text(), any::<Option<u64>>(), any::<Option<u64>>()).prop_map(
            |(room, before_seq, limit)| C::History {
                room,
                before_seq,
                limit
            }
        ),
        (text(), any::<bool>()).prop_map(|(room, active)| C::Typing { room, active }),
        (
            text(),
            opt_text(),
            opt_text(),
            any::<Option<u64>>(),
            any::<Option<u64>>()
        )
            .prop_map(|(query, room, before, before_seq, limit)| C::Search {
                query,
                room,
                before,
                before_seq,
                limit
            }),
    ];
    let sessions = prop_oneof![
        (text(), text(), any::<bool>()).prop_map(|(old_password, new_password, revoke_others)| {
            C::ChangePassword {
                old_password,
                new_password,
                revoke_others,
            }
        }),
        Just(C::Sessions),
        text().prop_map(|id| C::RevokeSession { id }),
    ];
    let moderation = prop_oneof![
        (text(), text(), opt_text(), any::<bool>()).prop_map(|(room, user, reason, ban)| {
            if ban {
                C::Ban { room, user, reason }
            } else {
                C::Kick { room, user, reason }
            }
        }),
        (text(), text()).prop_map(|(room, user)| C::Unban { room, user }),
        (text(), text(), role()).prop_map(|(room, user, role)| C::SetRole { room, user, role }),
        (
            text(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>())
        )
            .prop_map(
                |(room, members_set_topic, members_invite)| C::ConfigureRoom {
                    room,
                    members_set_topic,
                    members_invite
                }
            ),
        (text(), opt_text(), proptest::option::of(any::<u64>()))
            .prop_map(|(room, after, limit)| C::Bans { room, after, limit }),
    ];
    prop_oneof![accounts, rooms, sessions, moderation]
}

fn sessions() -> impl Strategy<Value = Vec<SessionInfo>> {
    let one = (text(), any::<i64>(), any::<i64>(), any::<bool>()).prop_map(
        |(id, created_ts, last_used_ts, current)| SessionInfo {
            id,
            created_ts,
            last_used_ts,
            current,
        },
    );
    proptest::collection::vec(one, 0..4)
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    use ServerFrame as S;
    let replies = prop_oneof![
        (
            any::<u32>(),
            text(),
            opt_text(),
            any::<(u64, u64, u64)>(),
            limits()
        )
            .prop_map(
                |(
                    protocol,
                    server,
                    user,
                    (heartbeat_ms, heartbeat_timeout_ms, typing_timeout_ms),
                    limits,
                )| {
                    S::Welcome {
                        protocol,
                        server,
                        user,
                        heartbeat_ms,
                        heartbeat_timeout_ms,
                        typing_timeout_ms,
                        capabilities: if protocol % 2 == 0 {
                            vec![format!("cap{protocol}")]
                        } else {
                            Vec::new()
                        },
                        limits,
                    }
                }
            ),
        (text(), opt_text()).prop_map(|(user, token)| S::AuthOk { user, token }),
        Just(S::Ok),
        (proptest::collection::vec(room_info(), 0..3), opt_text())
            .prop_map(|(rooms, next)| S::RoomList { rooms, next }),
        text().prop_map(|room| S::RoomDeleted { room }),
        (text(), members(), opt_text()).prop_map(|(room, members, next)| S::MemberList {
            room,
            members,
            next
        }),
        room_info().prop_map(|room| S::RoomCreated { room }),
        (text(), text()).prop_map(|(room, user)| S::DmOpened { room, user }),
        (
            text(),
            proptest::option::of((text(), any::<bool>(), opt_text()))
        )
            .prop_map(|(room, removed)| S::Left {
                room,
                removed: removed.map(|(by, banned, reason)| Removal { by, banned, reason }),
            }),
        (
            text(),
            proptest::collection::vec((text(), text(), any::<i64>(), opt_text()), 0..3),
            opt_text()
        )
            .prop_map(|(room, bans, next)| S::BanList {
                room,
                bans: bans
                    .into_iter()
                    .map(|(user, by, ts, reason)| BanInfo {
                        user,
                        by,
                        ts,
                        reason
                    })
                    .collect(),
                next,
            }),
        any::<i64>().prop_map(|ts| S::Pong { ts }),
        sessions().prop_map(|sessions| S::SessionList { sessions }),
        (
            select(ErrorCode::ALL.to_vec()),
            text(),
            opt_text(),
            any::<Option<u64>>()
        )
            .prop_map(|(code, message, room, retry_after_ms)| S::Error {
                code,
                message,
                room,
                retry_after_ms
            }),
    ];
    let joined = (
        (text(), text(), any::<u64>(), text(), visibility()),
        (
            members(),
            select(vec![CatchUp::Recent, CatchUp::Replay, CatchUp::Reload]),
            messages(),
            any::<bool>(),
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (room, epoch, latest_seq, topic, visibility),
                (members, catch_up, messages, complete, member_count, members_complete),
            )| {
                S::Joined {
                    room,
                    epoch,
                    latest_seq,
                    topic,
                    visibility,
                    members,
                    member_count,
                    members_complete,
                    catch_up,
                    messages,
                    complete,
                    events: Vec::new(),
                    read: None,
                    role: (latest_seq % 3 == 0).then_some(Role::Moderator),
                    settings: (latest_seq % 2 == 0).then_some(RoomSettings {
                        members_set_topic: complete,
                        members_invite: members_complete,
                    }),
                }
            },
        );
    let events = prop_oneof![
        joined,
        (text(), messages(), any::<bool>()).prop_map(|(room, messages, complete)| S::Replay {
            room,
            messages,
            complete,
            events: Vec::new(),
        }),
        (text(), messages(), any::<bool>()).prop_map(|(room, messages, has_more)| S::History {
            room,
            messages,
            has_more,
            context: Vec::new(),
        }),
        (text(), text(), any::<u64>(), any::<i64>(), any::<bool>()).prop_map(
            |(id, room, seq, ts, duplicate)| S::Ack {
                id,
                room,
                seq,
                ts,
                duplicate
            }
        ),
        (text(), any::<u64>(), text(), text(), text(), any::<i64>()).prop_map(
            |(room, seq, id, from, body, ts)| S::Message {
                room,
                seq,
                id,
                from,
                body,
                ts,
                reply_to: None,
            }
        ),
        (text(), members()).prop_map(|(room, changes)| S::Presence { room, changes }),
        (text(), text()).prop_map(|(room, user)| S::MemberLeft { room, user }),
        (text(), text(), any::<bool>()).prop_map(|(room, user, active)| S::Typing {
            room,
            user,
            active
        }),
        (text(), text(), text()).prop_map(|(room, topic, by)| S::Topic { room, topic, by }),
        (text(), text()).prop_map(|(room, by)| S::Invited { room, by }),
        (
            proptest::collection::vec(
                (
                    (text(), any::<u64>(), text(), text(), text()),
                    (any::<i64>(), any::<Option<u64>>(), any::<Option<i64>>())
                )
                    .prop_map(
                        |((room, seq, id, from, body), (ts, reply_to, edited))| {
                            SearchResult {
                                room,
                                seq,
                                id,
                                from,
                                body,
                                ts,
                                reply_to,
                                edited,
                            }
                        }
                    ),
                0..3
            ),
            opt_text()
        )
            .prop_map(|(results, next)| S::SearchResults { results, next }),
    ];
    prop_oneof![replies, events]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// ...and the JSON Schema accepts every frame the types can make: a schema that says less
    /// than the types (a range too narrow, a field required that may be left out) fails here.
    #[test]
    fn client_frames_round_trip(frame in client_frame(), reference in reference()) {
        let text = encode(&frame, reference.as_ref());
        let back = decode_client(&text);
        prop_assert_eq!(back, Ok(Envelope { reference, frame }), "{}", text);
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        prop_assert!(SCHEMAS.0.is_valid(&value), "{}", text);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame(), reference in reference()) {
        let text = encode(&frame, reference.as_ref());
        let back = decode_server(&text);
        prop_assert_eq!(back, Ok(Envelope { reference, frame }), "{}", text);
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        prop_assert!(SCHEMAS.1.is_valid(&value), "{}", text);
    }

    /// Whatever arrives, decoding answers (a frame or a typed error) and never panics; an error's
    /// detail stays short enough to send back.
    #[test]
    fn decoding_any_text_never_panics(s in "\\PC{0,40}|\\{\"type\":\"[a-z_]{0,12}\".{0,40}") {
        for detail in [decode_client(&s).err(), decode_server(&s).err()].into_iter().flatten() {
            prop_assert!(detail.detail.len() <= 300, "{}", detail.detail);
        }
    }
}
