//! The room log's behaviour, for every [`Store`]: folded history, replays, read state, and the
//! fold property (what a client builds from the live stream and a replay is what `history`
//! says). Called from [`super::suite::run_all`]; [`fold_matches_history`] is also run on random
//! sequences of changes (sqlite tests).

use chat_proto::{EventKind, Fold, RoomEvent};

use super::{
    Applied, Change, NewEvent, NewMessage, Store, StoreError, Viewer, append_and_wait,
    apply_and_wait,
};

fn ev(room: &str, from: &str, change: Change) -> NewEvent {
    NewEvent {
        room: room.into(),
        from: from.into(),
        change,
    }
}

const TOMBSTONES: fn(&str) -> Viewer<'_> = |user| Viewer {
    user,
    tombstones: true,
};

async fn apply(s: &dyn Store, room: &str, from: &str, change: Change) -> Applied {
    apply_and_wait(s, ev(room, from, change))
        .await
        .expect("applied")
}

pub async fn run_all(s: &dyn Store) {
    for u in ["lx", "ly", "lz"] {
        s.create_user(u, "h").await.expect("user");
    }
    s.create_room("logroom", chat_proto::Visibility::Public, "", "lx")
        .await
        .expect("room");
    changes_and_refusals(s).await;
    read_state(s).await;
}

async fn changes_and_refusals(s: &dyn Store) {
    let r = "logroom";
    // A join is an event; a second join by a member is nothing.
    let join = apply(s, r, "ly", Change::Join).await;
    assert_eq!(
        join.event.as_ref().map(|e| (&e.what, e.seq)),
        Some((&EventKind::Join, 1))
    );
    assert!(s.is_member(r, "ly").await.expect("member"));
    assert_eq!(apply(s, r, "ly", Change::Join).await.event, None);
    let m = append_and_wait(s, NewMessage::new(r, "lx", "lm1", "first"))
        .await
        .expect("append");
    assert_eq!(m.seq, 2, "messages and events share the seqs");
    let mut reply = NewMessage::new(r, "ly", "lm2", "answer @lx and @nobody");
    reply.reply_to = Some(2);
    let m2 = append_and_wait(s, reply).await.expect("append");
    assert_eq!((m2.seq, m2.reply_to), (3, Some(2)));

    // Edits: the author only, messages only, not once deleted.
    let edit = |target, body: &str| Change::Edit {
        target,
        body: body.into(),
    };
    let refused = |r: Result<Applied, StoreError>| r.err().map(|e| e.to_string());
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "ly", edit(2, "mine"))).await),
        Some(StoreError::NotAllowed.to_string())
    );
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "lx", edit(1, "a join"))).await),
        Some(StoreError::NoSuchMessage.to_string())
    );
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "lx", edit(99, "nothing"))).await),
        Some(StoreError::NoSuchMessage.to_string())
    );
    let e = apply(s, r, "lx", edit(2, "first!"))
        .await
        .event
        .expect("event");
    assert_eq!(e.seq, 4, "a refused change takes no seq");
    let (page, _) = s
        .history_before(r, None, 10, TOMBSTONES("lx"))
        .await
        .expect("history");
    assert_eq!(page[0].body, "first!");
    assert_eq!(page[0].edited, Some(e.ts));
    assert_eq!(page[1].reply_to, Some(2));

    // Reactions: one per user; the same again is nothing; another replaces it.
    let react = |emoji: &str| Change::React {
        target: 2,
        emoji: emoji.into(),
    };
    let first = apply(s, r, "ly", react("👍")).await.event.expect("event");
    assert_eq!(
        first.what,
        EventKind::React {
            target: 2,
            emoji: "👍".into(),
            replaces: None
        }
    );
    assert_eq!(apply(s, r, "ly", react("👍")).await.event, None);
    let second = apply(s, r, "ly", react("🎉")).await.event.expect("event");
    assert!(matches!(second.what, EventKind::React { replaces: Some(ref p), .. } if p == "👍"));
    apply(s, r, "lz", react("🎉")).await;
    let (page, _) = s
        .history_before(r, None, 10, TOMBSTONES("ly"))
        .await
        .expect("history");
    assert_eq!(page[0].reactions.len(), 1);
    assert_eq!(
        (page[0].reactions[0].count, page[0].reactions[0].me),
        (2, true)
    );
    let unreact = |emoji: &str| Change::Unreact {
        target: 2,
        emoji: emoji.into(),
    };
    assert_eq!(apply(s, r, "ly", unreact("👍")).await.event, None);
    assert!(apply(s, r, "ly", unreact("🎉")).await.event.is_some());

    // A delete: the author or a moderator (suite_moderation); the body goes, with the edit's
    // copy of it.
    let delete = Change::Delete { target: 2 };
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "ly", delete.clone())).await),
        Some(StoreError::NotAllowed.to_string())
    );
    let d = apply(s, r, "lx", delete.clone())
        .await
        .event
        .expect("event");
    assert_eq!(apply(s, r, "lx", delete).await.event, None, "already");
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "lx", edit(2, "back"))).await),
        Some(StoreError::NoSuchMessage.to_string())
    );
    assert_eq!(
        refused(apply_and_wait(s, ev(r, "lz", react("👍"))).await),
        Some(StoreError::NoSuchMessage.to_string())
    );
    let (v2, _) = s
        .history_before(r, None, 10, TOMBSTONES("lx"))
        .await
        .expect("history");
    assert!(v2[0].deleted && v2[0].body.is_empty() && v2[0].reactions.is_empty());
    let (v1, _) = s
        .history_before(
            r,
            None,
            10,
            Viewer {
                user: "lx",
                tombstones: false,
            },
        )
        .await
        .expect("history");
    assert_eq!(v1.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3]);
    let log = s.events_between(r, 0, d.seq, 100).await.expect("events");
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=d.seq).collect::<Vec<_>>(),
        "every seq is an event"
    );
    for e in &log {
        match &e.what {
            EventKind::Edit { target: 2, body } | EventKind::Message { body, .. }
                if e.seq == 2 || e.seq == 4 =>
            {
                assert_eq!(
                    body, "",
                    "seq {}: the deleted body is gone from storage",
                    e.seq
                )
            }
            _ => {}
        }
    }
    assert_eq!(
        s.messages_between(r, 0, d.seq, 100)
            .await
            .expect("messages")
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        vec![3],
        "protocol 1's replay: the messages left"
    );
    let at = s
        .messages_at(r, &[3, 2, 1, 3], TOMBSTONES("lx"))
        .await
        .expect("at");
    assert_eq!(at.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(
        s.message_info(r, 3).await.expect("info").map(|i| i.from),
        Some("ly".into())
    );
    assert_eq!(s.message_info(r, 1).await.expect("info"), None, "a join");

    // Topic and leave.
    apply(
        s,
        r,
        "lx",
        Change::Topic {
            topic: "new".into(),
        },
    )
    .await;
    assert_eq!(s.room(r).await.expect("room").expect("there").topic, "new");
    assert!(apply(s, r, "lz", Change::Join).await.event.is_some());
    assert!(apply(s, r, "lz", Change::Leave).await.event.is_some());
    assert_eq!(apply(s, r, "lz", Change::Leave).await.event, None);
    assert!(!s.is_member(r, "lz").await.expect("member"));

    // And the whole log folds to what history says, for each reader.
    let latest = s.latest_seq(r).await.expect("seq");
    let all = s.events_between(r, 0, latest, 1000).await.expect("events");
    for me in ["lx", "ly", "lz"] {
        let mut fold = Fold::new(me);
        all.iter().for_each(|e| fold.apply(e));
        let (page, _) = s
            .history_before(r, None, 200, TOMBSTONES(me))
            .await
            .expect("history");
        assert_eq!(fold.history(), page, "as {me}");
    }
}

async fn read_state(s: &dyn Store) {
    let r = "logroom";
    let start = s.read_state("ly", r).await.expect("read");
    assert_eq!(
        start.read_seq, 1,
        "a member has read what was before the join"
    );
    let base = s.latest_seq(r).await.expect("seq");
    for (id, body) in [("rs1", "plain"), ("rs2", "hey @ly"), ("rs3", "@ly again")] {
        append_and_wait(s, NewMessage::new(r, "lx", id, body))
            .await
            .expect("append");
    }
    append_and_wait(s, NewMessage::new(r, "ly", "rs4", "mine, not unread"))
        .await
        .expect("append");
    let now = s.read_state("ly", r).await.expect("read");
    // seq 3 (ly's own) and the three above, after read_seq 1; seq 2 is deleted.
    assert_eq!((now.unread, now.mentions), (3, 2));
    let after = s.mark_read("ly", r, base + 2).await.expect("mark");
    assert_eq!(
        (after.read_seq, after.unread, after.mentions),
        (base + 2, 1, 1)
    );
    let back = s.mark_read("ly", r, 1).await.expect("mark");
    assert_eq!(back.read_seq, base + 2, "never back");
    let end = s.mark_read("ly", r, u64::MAX).await.expect("mark");
    assert_eq!(
        (end.read_seq, end.unread),
        (s.latest_seq(r).await.expect("seq"), 0)
    );
    let rooms = s.rooms_for("ly", None, 100).await.expect("rooms");
    let listed = rooms.iter().find(|i| i.room == r).expect("listed");
    assert_eq!(listed.read, Some(end));
    let not_member = s.rooms_for("lz", None, 100).await.expect("rooms");
    assert_eq!(
        not_member
            .iter()
            .find(|i| i.room == r)
            .expect("listed")
            .read,
        None
    );
    assert!(matches!(
        s.mark_read("ly", "no-such-room", 1).await,
        Err(StoreError::NotFound)
    ));
}

/// One step of a random history of a room.
#[derive(Debug, Clone)]
pub enum Op {
    Send {
        user: usize,
        reply: Option<usize>,
    },
    Edit {
        user: usize,
        msg: usize,
    },
    Delete {
        user: usize,
        msg: usize,
    },
    React {
        user: usize,
        msg: usize,
        emoji: usize,
    },
    Unreact {
        user: usize,
        msg: usize,
        emoji: usize,
    },
}

const USERS: [&str; 3] = ["pa", "pb", "pc"];
const EMOJI: [&str; 3] = ["👍", "🎉", "❤️"];

/// Applies `ops` to `room` (empty; the users `pa`, `pb`, `pc` exist and are members), keeping
/// what the live stream carried: each commit's event, in commit order. Then, for every `since`,
/// the fold of the live events up to it plus the replay after it is what `history` says, for
/// each user; and a fold started from the history page itself stays that page.
pub async fn fold_matches_history(s: &dyn Store, room: &str, ops: &[Op]) {
    let mut live: Vec<RoomEvent> = Vec::new();
    let mut msgs: Vec<u64> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let pick = |i: usize| (!msgs.is_empty()).then(|| msgs[i % msgs.len()]);
        let (user, change) = match op {
            Op::Send { user, reply } => {
                let mut m = NewMessage::new(room, USERS[*user], &format!("p{n}"), &format!("b{n}"));
                m.reply_to = reply.and_then(pick);
                let a = append_and_wait(s, m).await.expect("append");
                msgs.push(a.seq);
                live.push(RoomEvent {
                    seq: a.seq,
                    ts: a.ts,
                    from: a.from,
                    what: EventKind::Message {
                        id: a.client_id,
                        body: a.body,
                        reply_to: a.reply_to,
                    },
                });
                continue;
            }
            Op::Edit { user, msg } => (
                *user,
                pick(*msg).map(|target| Change::Edit {
                    target,
                    body: format!("e{n}"),
                }),
            ),
            Op::Delete { user, msg } => (*user, pick(*msg).map(|target| Change::Delete { target })),
            Op::React { user, msg, emoji } => (
                *user,
                pick(*msg).map(|target| Change::React {
                    target,
                    emoji: EMOJI[*emoji].into(),
                }),
            ),
            Op::Unreact { user, msg, emoji } => (
                *user,
                pick(*msg).map(|target| Change::Unreact {
                    target,
                    emoji: EMOJI[*emoji].into(),
                }),
            ),
        };
        let Some(change) = change else { continue };
        match apply_and_wait(s, ev(room, USERS[user], change)).await {
            Ok(a) => live.extend(a.event),
            Err(StoreError::NotAllowed | StoreError::NoSuchMessage) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let latest = s.latest_seq(room).await.expect("seq");
    assert_eq!(
        live.last().map_or(0, |e| e.seq),
        latest,
        "every commit was seen"
    );
    for me in USERS {
        let (history, _) = s
            .history_before(room, None, 200, TOMBSTONES(me))
            .await
            .expect("history");
        for since in 0..=latest {
            let mut fold = Fold::new(me);
            live.iter()
                .filter(|e| e.seq <= since)
                .for_each(|e| fold.apply(e));
            for e in s
                .events_between(room, since, latest, 1000)
                .await
                .expect("replay")
            {
                fold.apply(&e);
            }
            assert_eq!(fold.history(), history, "as {me}, caught up from {since}");
        }
        // A client that starts from the page and applies nothing more agrees too.
        assert_eq!(Fold::from_history(&history, me).history(), history);
    }
}
