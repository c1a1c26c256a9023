//! The behaviour every [`Store`] must have. Each implementation's tests call [`run_all`] on a
//! fresh, empty store; a new implementation (PostgreSQL) passes this before it is wired in.

use std::sync::Arc;

use chat_proto::{RoomKind, Visibility};

use super::{AppendDone, NewMessage, Store, StoreError, append_and_wait};

fn msg(room: &str, from: &str, id: &str, body: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        from: from.into(),
        client_id: id.into(),
        body: body.into(),
    }
}

/// Runs every check below in order on one empty store; panics on the first failure.
pub async fn run_all(store: Arc<dyn Store>) {
    users_and_tokens(&*store).await;
    rooms_members_invites(&*store).await;
    direct_messages(&*store).await;
    seqs_are_gap_free_and_ids_dedup(&*store).await;
    concurrent_appends_complete_in_seq_order(store.clone()).await;
    history_pages(&*store).await;
}

async fn users_and_tokens(s: &dyn Store) {
    s.create_user("alice", "hash-a")
        .await
        .expect("create alice");
    assert!(matches!(
        s.create_user("alice", "x").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.password_hash("alice").await.expect("read").as_deref(),
        Some("hash-a")
    );
    assert_eq!(s.password_hash("nobody").await.expect("read"), None);
    assert!(s.user_exists("alice").await.expect("exists"));
    s.insert_token("alice", b"token-hash-1")
        .await
        .expect("token");
    assert_eq!(
        s.token_user(b"token-hash-1").await.expect("t").as_deref(),
        Some("alice")
    );
    assert_eq!(s.token_user(b"other").await.expect("t"), None);
    assert!(s.revoke_token(b"token-hash-1").await.expect("revoke"));
    assert!(!s.revoke_token(b"token-hash-1").await.expect("revoke again"));
    assert_eq!(s.token_user(b"token-hash-1").await.expect("t"), None);
    s.create_user("bob", "hash-b").await.expect("bob");
    s.create_user("carol", "hash-c").await.expect("carol");
}

async fn rooms_members_invites(s: &dyn Store) {
    let r = s
        .create_room("general", Visibility::Public, "hi", "alice")
        .await
        .expect("room");
    assert_eq!(
        (r.kind, r.visibility, r.topic.as_str()),
        (RoomKind::Room, Visibility::Public, "hi")
    );
    assert!(!r.epoch.is_empty());
    assert!(matches!(
        s.create_room("general", Visibility::Public, "", "bob")
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.room("general").await.expect("get"), Some(r.clone()));
    assert!(s.is_member("general", "alice").await.expect("m"));
    assert!(!s.is_member("general", "bob").await.expect("m"));
    assert!(s.add_member("general", "bob").await.expect("add"));
    assert!(!s.add_member("general", "bob").await.expect("add twice"));
    assert_eq!(
        s.members("general").await.expect("members"),
        vec!["alice", "bob"]
    );
    assert!(s.remove_member("general", "bob").await.expect("rm"));
    assert!(!s.remove_member("general", "bob").await.expect("rm twice"));
    s.set_topic("general", "new topic").await.expect("topic");
    assert_eq!(
        s.room("general").await.expect("get").expect("some").topic,
        "new topic"
    );

    let p = s
        .create_room("secret", Visibility::Private, "", "alice")
        .await
        .expect("private");
    assert_eq!(p.visibility, Visibility::Private);
    assert_ne!(p.epoch, r.epoch, "each room has its own epoch");
    let names = |v: Vec<chat_proto::RoomInfo>| v.into_iter().map(|r| r.room).collect::<Vec<_>>();
    assert_eq!(
        names(s.rooms_for("bob").await.expect("list")),
        vec!["general"]
    );
    assert!(!s.is_invited("secret", "bob").await.expect("inv"));
    s.invite("secret", "bob").await.expect("invite");
    assert!(s.is_invited("secret", "bob").await.expect("inv"));
    assert_eq!(
        names(s.rooms_for("bob").await.expect("list")),
        vec!["general", "secret"]
    );
    let alice_view = s.rooms_for("alice").await.expect("list");
    assert!(
        alice_view.iter().all(|r| r.joined),
        "alice is in both: {alice_view:?}"
    );
    assert!(matches!(
        s.invite("nope", "bob").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.add_member("general", "nobody").await,
        Err(StoreError::NotFound)
    ));
}

async fn direct_messages(s: &dyn Store) {
    let d1 = s.open_dm("bob", "alice").await.expect("dm");
    let d2 = s.open_dm("alice", "bob").await.expect("dm again");
    assert_eq!(d1, d2);
    assert_eq!(d1.name, "dm:alice:bob");
    assert_eq!(
        (d1.kind, d1.visibility),
        (RoomKind::Dm, Visibility::Private)
    );
    assert_eq!(
        s.members("dm:alice:bob").await.expect("m"),
        vec!["alice", "bob"]
    );
    assert!(
        !s.rooms_for("carol")
            .await
            .expect("l")
            .iter()
            .any(|r| r.room == d1.name)
    );
}

async fn seqs_are_gap_free_and_ids_dedup(s: &dyn Store) {
    assert_eq!(s.latest_seq("general").await.expect("seq"), 0);
    for i in 1..=5u64 {
        let a = append_and_wait(s, msg("general", "alice", &format!("g{i}"), "hi"))
            .await
            .expect("append");
        assert_eq!((a.seq, a.duplicate), (i, false));
    }
    let again = append_and_wait(s, msg("general", "alice", "g3", "changed"))
        .await
        .expect("dup");
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, again.body.as_str()),
        (3, "hi"),
        "the original is returned"
    );
    // The same id from another user is another message.
    let other = append_and_wait(s, msg("general", "bob", "g3", "bob's"))
        .await
        .expect("bob");
    assert_eq!((other.seq, other.duplicate), (6, false));
    // Seqs are per room.
    let a = append_and_wait(s, msg("secret", "alice", "s1", "x"))
        .await
        .expect("secret");
    assert_eq!(a.seq, 1);
    assert_eq!(s.latest_seq("general").await.expect("seq"), 6);
    assert!(matches!(
        append_and_wait(s, msg("no-room", "alice", "n1", "x")).await,
        Err(StoreError::NotFound)
    ));
    // A failed append leaves no gap.
    let a = append_and_wait(s, msg("general", "alice", "g7", "x"))
        .await
        .expect("after failure");
    assert_eq!(a.seq, 7);
}

async fn concurrent_appends_complete_in_seq_order(s: Arc<dyn Store>) {
    let start = s.latest_seq("general").await.expect("seq");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let n = 500u64;
    // Queue many appends without waiting: they share group commits, and completions must still
    // come back in seq order with no gap.
    for i in 0..n {
        let tx = tx.clone();
        s.append(
            msg(
                "general",
                if i % 2 == 0 { "alice" } else { "bob" },
                &format!("c{i}"),
                "x",
            ),
            AppendDone::new(move |r| {
                let _ = tx.send(r.map(|a| a.seq));
            }),
        )
        .await
        .expect("queue");
    }
    drop(tx);
    let mut expect = start + 1;
    while let Some(r) = rx.recv().await {
        assert_eq!(r.expect("committed"), expect);
        expect += 1;
    }
    assert_eq!(expect, start + n + 1);
    s.flush().await.expect("flush");
    assert_eq!(s.latest_seq("general").await.expect("seq"), start + n);
}

async fn history_pages(s: &dyn Store) {
    let latest = s.latest_seq("general").await.expect("seq");
    let (page, more) = s.history_before("general", None, 10).await.expect("h");
    assert_eq!(page.len(), 10);
    assert!(more);
    assert_eq!(page.last().expect("last").seq, latest);
    assert!(
        page.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "ascending, contiguous"
    );
    let first = page[0].seq;
    let (older, _) = s
        .history_before("general", Some(first), 3)
        .await
        .expect("h");
    assert_eq!(
        older.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![first - 3, first - 2, first - 1]
    );
    let (oldest, more) = s.history_before("general", Some(3), 10).await.expect("h");
    assert_eq!(oldest.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(!more);
    assert_eq!(oldest[0].from, "alice");
    assert_eq!(oldest[0].id, "g1");
    let between = s.messages_between("general", 2, 5, 100).await.expect("b");
    assert_eq!(
        between.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let capped = s
        .messages_between("general", 0, latest, 4)
        .await
        .expect("b");
    assert_eq!(capped.len(), 4);
    let (empty, more) = s.history_before("dm:alice:bob", None, 10).await.expect("h");
    assert!(empty.is_empty() && !more);
}
