//! `update()` tests: the model's decisions, without a terminal or a network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_proto::{
    CatchUp, ClientFrame, Envelope, HistoryMessage, Member, Ref, ServerFrame, Status, Visibility,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;

fn app() -> App {
    let mut a = App::new(
        Settings {
            bell: true,
            server: "ws://test/ws".into(),
        },
        "t1".into(),
        BTreeMap::new(),
    );
    a.update(Event::Net(Net::Ready {
        user: "alice".into(),
    }));
    a
}

fn frame(f: ServerFrame) -> Event {
    Event::Net(Net::Frame(Box::new(Envelope {
        reference: None,
        frame: f,
    })))
}

fn frame_ref(f: ServerFrame, r: &str) -> Event {
    Event::Net(Net::Frame(Box::new(Envelope {
        reference: Some(Ref::Str(r.into())),
        frame: f,
    })))
}

fn h(seq: u64, from: &str, body: &str) -> HistoryMessage {
    HistoryMessage {
        seq,
        id: format!("id{seq}"),
        from: from.into(),
        body: body.into(),
        ts: 1_700_000_000_000,
        reply_to: None,
        edited: None,
        deleted: false,
        reactions: Vec::new(),
    }
}

fn joined(room: &str, catch_up: CatchUp, messages: Vec<HistoryMessage>, latest: u64) -> Event {
    frame(ServerFrame::Joined {
        role: None,
        settings: None,
        room: room.into(),
        epoch: "ep".into(),
        latest_seq: latest,
        topic: "t".into(),
        visibility: Visibility::Public,
        members: vec![
            Member {
                role: None,
                user: "alice".into(),
                status: Status::Online,
            },
            Member {
                role: None,
                user: "bob".into(),
                status: Status::Online,
            },
        ],
        member_count: 2,
        members_complete: true,
        catch_up,
        messages,
        complete: true,
        events: Vec::new(),
        read: None,
    })
}

fn live(room: &str, seq: u64, from: &str, body: &str) -> Event {
    frame(ServerFrame::Message {
        room: room.into(),
        seq,
        id: format!("id{seq}"),
        from: from.into(),
        body: body.into(),
        ts: 1_700_000_000_000,
        reply_to: None,
    })
}

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn type_line(a: &mut App, s: &str) -> Vec<Command> {
    for c in s.chars() {
        a.update(key(KeyCode::Char(c)));
    }
    a.update(key(KeyCode::Enter))
}

fn sends(cmds: &[Command]) -> Vec<&ClientFrame> {
    cmds.iter()
        .filter_map(|c| {
            if let Command::Send(f, _) = c {
                Some(f)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn reconnect_rejoins_from_where_it_was_and_resends_pending_with_the_same_ids() {
    let mut a = app();
    a.update(joined(
        "r",
        CatchUp::Recent,
        vec![h(1, "bob", "one"), h(2, "bob", "two")],
        2,
    ));
    a.update(Event::Net(Net::Conn(Conn::Reconnecting {
        at: Instant::now(),
        attempt: 1,
        why: "connection closed".into(),
    })));
    // Typed while offline: queued, not sent.
    let cmds = type_line(&mut a, "sent while offline");
    assert!(sends(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(a.rooms["r"].pending.len(), 1);
    let id = a.rooms["r"].pending[0].id.clone();
    // Back online: rejoin with since_seq/epoch.
    let cmds = a.update(Event::Net(Net::Ready {
        user: "alice".into(),
    }));
    assert!(
        sends(&cmds).contains(&&ClientFrame::Join {
            room: "r".into(),
            since_seq: Some(2),
            epoch: Some("ep".into())
        }),
        "{cmds:?}"
    );
    // The replay ends: the pending message goes out with its original id.
    let cmds = a.update(frame(ServerFrame::Joined {
        role: None,
        settings: None,
        room: "r".into(),
        epoch: "ep".into(),
        latest_seq: 3,
        topic: "t".into(),
        visibility: Visibility::Public,
        members: vec![],
        member_count: 0,
        members_complete: true,
        catch_up: CatchUp::Replay,
        messages: vec![h(3, "bob", "missed")],
        complete: true,
        events: Vec::new(),
        read: None,
    }));
    assert_eq!(
        sends(&cmds),
        vec![&ClientFrame::Send {
            room: "r".into(),
            id: id.clone(),
            body: "sent while offline".into(),
            reply_to: None,
        }]
    );
    // Ack, then the broadcast: shown once.
    a.update(frame(ServerFrame::Ack {
        id: id.clone(),
        room: "r".into(),
        seq: 4,
        ts: 0,
        duplicate: false,
    }));
    a.update(frame(ServerFrame::Message {
        room: "r".into(),
        seq: 4,
        id: id.clone(),
        from: "alice".into(),
        body: "sent while offline".into(),
        ts: 0,
        reply_to: None,
    }));
    a.update(frame(ServerFrame::Message {
        room: "r".into(),
        seq: 4,
        id,
        from: "alice".into(),
        body: "sent while offline".into(),
        ts: 0,
        reply_to: None,
    }));
    let r = &a.rooms["r"];
    assert!(r.pending.is_empty());
    assert_eq!(
        r.messages.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn a_seq_jump_fetches_the_missing_range() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![h(1, "bob", "one")], 1));
    let cmds = a.update(live("r", 5, "bob", "five"));
    assert_eq!(
        sends(&cmds),
        vec![&ClientFrame::History {
            room: "r".into(),
            before_seq: Some(5),
            limit: Some(3)
        }]
    );
    // Another message while the fetch is out: no second request.
    assert!(sends(&a.update(live("r", 6, "bob", "six"))).is_empty());
    let cmds = a.update(frame(ServerFrame::History {
        room: "r".into(),
        messages: vec![h(2, "bob", "2"), h(3, "bob", "3"), h(4, "bob", "4")],
        has_more: true,
        context: Vec::new(),
    }));
    assert!(sends(&cmds).is_empty());
    assert_eq!(a.rooms["r"].contiguous, 6);
}

#[test]
fn a_reload_replaces_what_was_held() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![h(1, "bob", "old")], 1));
    a.update(joined("r", CatchUp::Reload, vec![h(90, "bob", "new")], 90));
    assert_eq!(
        a.rooms["r"].messages.keys().copied().collect::<Vec<_>>(),
        vec![90]
    );
}

#[test]
fn a_refused_send_is_shown_failed_and_not_resent() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![], 0));
    let cmds = type_line(&mut a, "hello");
    let Some(Command::Send(ClientFrame::Send { id, .. }, Some(Ref::Str(r)))) = cmds
        .iter()
        .find(|c| matches!(c, Command::Send(ClientFrame::Send { .. }, _)))
    else {
        panic!("no send in {cmds:?}");
    };
    assert_eq!(id, r, "the ref is the message id");
    let id = id.clone();
    a.update(frame_ref(
        ServerFrame::room_error(chat_proto::ErrorCode::InvalidBody, "r", "bad"),
        &id,
    ));
    assert!(matches!(
        a.rooms["r"].pending[0].state,
        crate::room::PendingState::Failed(_)
    ));
    // A transient refusal keeps it queued.
    type_line(&mut a, "again");
    let id2 = a.rooms["r"].pending[1].id.clone();
    a.update(frame_ref(
        ServerFrame::room_error(chat_proto::ErrorCode::RateLimited, "r", "slow"),
        &id2,
    ));
    assert_eq!(a.rooms["r"].to_resend().count(), 1);
}

#[test]
fn unread_mentions_and_the_bell() {
    let mut a = app();
    a.update(joined("here", CatchUp::Recent, vec![], 0));
    a.update(joined("there", CatchUp::Recent, vec![], 0));
    assert_eq!(a.focus.as_deref(), Some("here"));
    assert!(
        a.update(live("there", 1, "bob", "hello"))
            .iter()
            .all(|c| *c != Command::Bell)
    );
    let cmds = a.update(live("there", 2, "bob", "alice: look"));
    assert!(cmds.contains(&Command::Bell));
    assert!(
        a.update(live("there", 3, "bob", "@alice again"))
            .iter()
            .all(|c| *c != Command::Bell),
        "one bell per unread mention"
    );
    assert_eq!(
        (a.rooms["there"].unread, a.rooms["there"].mention),
        (3, true)
    );
    a.update(live("here", 1, "bob", "alice: in view"));
    assert_eq!(
        a.rooms["here"].unread, 0,
        "the focused room is read as it arrives"
    );
    a.update(Event::Key(KeyEvent::new(
        KeyCode::Char('n'),
        KeyModifiers::CONTROL,
    )));
    assert_eq!(a.focus.as_deref(), Some("there"));
    assert_eq!(
        (
            a.rooms["there"].unread,
            a.rooms["there"].mention,
            a.rooms["there"].last_read
        ),
        (0, false, 3)
    );
    assert_eq!(
        a.rooms["there"].marker,
        Some(0),
        "the new-messages line sits before seq 1"
    );
    assert_eq!(a.read_marks()["there"], 3);
}

#[test]
fn a_direct_message_rings_and_joins_itself() {
    let mut a = app();
    a.update(joined("here", CatchUp::Recent, vec![], 0));
    let cmds = a.update(frame(ServerFrame::Invited {
        room: "dm:alice:bob".into(),
        by: "bob".into(),
    }));
    assert_eq!(
        sends(&cmds),
        vec![&ClientFrame::Join {
            room: "dm:alice:bob".into(),
            since_seq: None,
            epoch: None
        }]
    );
    a.update(joined("dm:alice:bob", CatchUp::Recent, vec![], 0));
    assert!(
        a.update(live("dm:alice:bob", 1, "bob", "psst"))
            .contains(&Command::Bell)
    );
}

#[test]
fn typing_is_sent_throttled_and_shown_until_it_expires() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![], 0));
    let first = a.update(key(KeyCode::Char('h')));
    assert_eq!(
        sends(&first),
        vec![&ClientFrame::Typing {
            room: "r".into(),
            active: true
        }]
    );
    assert!(
        sends(&a.update(key(KeyCode::Char('i')))).is_empty(),
        "not again within 3 s"
    );
    a.update(frame(ServerFrame::Typing {
        room: "r".into(),
        user: "bob".into(),
        active: true,
    }));
    assert_eq!(
        a.rooms["r"].typing_line().as_deref(),
        Some("bob is typing…")
    );
    a.update(Event::Tick(Instant::now() + Duration::from_secs(9)));
    assert_eq!(a.rooms["r"].typing_line(), None);
    a.update(frame(ServerFrame::Typing {
        room: "r".into(),
        user: "bob".into(),
        active: true,
    }));
    a.update(live("r", 1, "bob", "done"));
    assert_eq!(
        a.rooms["r"].typing_line(),
        None,
        "a message from the typist clears it"
    );
}

#[test]
fn tab_completes_commands_rooms_and_nicks() {
    let mut a = app();
    a.update(joined("rust", CatchUp::Recent, vec![], 0));
    for c in "/jo".chars() {
        a.update(key(KeyCode::Char(c)));
    }
    a.update(key(KeyCode::Tab));
    assert_eq!(a.editor.text(), "/join ");
    for c in "ru".chars() {
        a.update(key(KeyCode::Char(c)));
    }
    a.update(key(KeyCode::Tab));
    assert_eq!(a.editor.text(), "/join rust ");
    a.editor.clear();
    a.update(key(KeyCode::Char('b')));
    a.update(key(KeyCode::Tab));
    assert_eq!(a.editor.text(), "bob: ");
    a.editor.clear();
    for c in "hi @".chars() {
        a.update(key(KeyCode::Char(c)));
    }
    a.update(key(KeyCode::Tab));
    assert_eq!(a.editor.text(), "hi @alice ");
    a.update(key(KeyCode::Tab));
    assert_eq!(a.editor.text(), "hi @bob ", "Tab again: the next match");
}

#[test]
fn hostile_names_and_bodies_are_sanitized_on_the_way_in() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![], 0));
    a.update(live(
        "r",
        1,
        "ev\u{1b}]0;pwned\u{7}il",
        "x\u{1b}[2Jy\u{202e}z",
    ));
    let m = &a.rooms["r"].messages[&1];
    assert!(crate::sanitize::is_terminal_safe(&m.from), "{:?}", m.from);
    assert!(
        m.lines.iter().all(|l| crate::sanitize::is_terminal_safe(l)),
        "{:?}",
        m.lines
    );
    a.update(frame(ServerFrame::Error {
        code: chat_proto::ErrorCode::Internal,
        message: "\u{1b}[31mred".into(),
        room: None,
        retry_after_ms: None,
    }));
    assert!(crate::sanitize::is_terminal_safe(
        a.notice.as_deref().unwrap_or_default()
    ));
}

#[test]
fn commands_become_frames() {
    let mut a = app();
    a.update(joined("r", CatchUp::Recent, vec![], 0));
    assert_eq!(
        sends(&type_line(&mut a, "/topic tea")),
        vec![&ClientFrame::SetTopic {
            room: "r".into(),
            topic: "tea".into()
        }]
    );
    assert_eq!(
        sends(&type_line(&mut a, "/away")),
        vec![&ClientFrame::SetStatus {
            status: Status::Away
        }]
    );
    let me = type_line(&mut a, "/me waves");
    assert!(matches!(sends(&me)[..], [ClientFrame::Send { body, .. }] if body == "/me waves"));
    let create = type_line(&mut a, "/create ops --private");
    assert!(matches!(
        sends(&create)[0],
        ClientFrame::CreateRoom {
            visibility: Visibility::Private,
            ..
        }
    ));
    assert_eq!(a.focus.as_deref(), Some("ops"));
    let dm = type_line(&mut a, "/msg bob hi");
    assert_eq!(sends(&dm)[0], &ClientFrame::OpenDm { user: "bob".into() });
    assert_eq!(a.focus.as_deref(), Some("dm:alice:bob"));
    assert!(type_line(&mut a, "/quit").contains(&Command::Quit));
    type_line(&mut a, "/nonsense");
    assert!(a.notice.as_deref().unwrap_or_default().contains("/help"));
}

#[test]
fn read_positions_survive_a_restart() {
    // A previous run had read "there" up to seq 2.
    let saved = BTreeMap::from([("there".to_owned(), 2u64)]);
    let mut a = App::new(
        Settings {
            bell: false,
            server: "s".into(),
        },
        "t2".into(),
        saved,
    );
    a.update(Event::Net(Net::Ready {
        user: "alice".into(),
    }));
    a.update(joined("here", CatchUp::Recent, vec![], 0));
    a.update(joined(
        "there",
        CatchUp::Recent,
        vec![
            h(1, "bob", "a"),
            h(2, "bob", "b"),
            h(3, "bob", "c"),
            h(4, "bob", "d"),
        ],
        4,
    ));
    assert_eq!(
        a.rooms["there"].unread, 2,
        "only what came after the saved position is unread"
    );
    assert_eq!(a.rooms["there"].first_unread(), Some(3));
    assert_eq!(a.read_marks()["there"], 2);
}

#[test]
fn the_room_list_is_read_page_by_page() {
    let mut a = app();
    let info = |room: &str| chat_proto::RoomInfo {
        role: None,
        room: room.into(),
        kind: chat_proto::RoomKind::Room,
        visibility: Visibility::Public,
        topic: String::new(),
        members: 1,
        joined: true,
        read: None,
    };
    let out = a.update(frame(ServerFrame::RoomList {
        rooms: vec![info("a1"), info("a2")],
        next: Some("a2".into()),
    }));
    let sent = sends(&out);
    assert!(
        sent.contains(&&ClientFrame::ListRooms {
            after: Some("a2".into()),
            limit: None
        }),
        "{sent:?}"
    );
    assert_eq!(
        sent.iter()
            .filter(|f| matches!(f, ClientFrame::Join { .. }))
            .count(),
        2
    );
    // The last page asks for nothing more.
    let out = a.update(frame(ServerFrame::RoomList {
        rooms: vec![info("b1")],
        next: None,
    }));
    assert!(
        !sends(&out)
            .iter()
            .any(|f| matches!(f, ClientFrame::ListRooms { .. }))
    );
}

#[test]
fn a_deleted_room_goes_away_with_a_notice() {
    let mut a = app();
    a.update(joined("gone", CatchUp::Recent, vec![h(1, "bob", "hi")], 1));
    a.update(joined("kept", CatchUp::Recent, vec![], 0));
    assert!(a.rooms.contains_key("gone"));
    a.update(frame(ServerFrame::RoomDeleted {
        room: "gone".into(),
    }));
    assert!(!a.rooms.contains_key("gone"));
    assert!(a.rooms.contains_key("kept"));
}
