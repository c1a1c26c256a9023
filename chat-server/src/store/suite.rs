//! The behaviour every [`Store`] must have. Each implementation's tests call [`run_all`] on a
//! fresh, empty store; a new implementation (PostgreSQL) passes this before it is wired in.

use std::sync::Arc;

use chat_proto::{RoomKind, Visibility};

use super::{AppendDone, NewMessage, Store, StoreError, Viewer, append_and_wait};

mod accounts;

fn msg(room: &str, from: &str, id: &str, body: &str) -> NewMessage {
    NewMessage::new(room, from, id, body)
}

/// How a protocol-1 reader (no tombstones) named `alice` reads history.
const V1: Viewer<'static> = Viewer {
    user: "alice",
    tombstones: false,
};

/// Runs every check below in order on one empty store; panics on the first failure.
pub async fn run_all(store: Arc<dyn Store>) {
    users_and_tokens(&*store).await;
    accounts::sessions_bound_and_last_use(&*store).await;
    accounts::password_changes_and_disabled_accounts(&*store).await;
    accounts::the_revocation_log_and_the_user_list(&*store).await;
    rooms_members_invites(&*store).await;
    direct_messages(&*store).await;
    seqs_are_gap_free_and_ids_dedup(&*store).await;
    concurrent_appends_complete_in_seq_order(store.clone()).await;
    history_pages(&*store).await;
    pages_owners_and_deletion(&*store).await;
    commits_are_measured(&*store).await;
    super::suite_log::run_all(&*store).await;
    super::suite_search::run_all(&*store).await;
    super::suite_moderation::run_all(&*store).await;
    fold_property_fixed(&*store).await;
}

/// The fold property on one fixed, busy sequence (random ones run on SQLite's tests).
async fn fold_property_fixed(s: &dyn Store) {
    use super::suite_log::Op;
    for u in ["pa", "pb", "pc"] {
        s.create_user(u, "h").await.expect("user");
    }
    s.create_room("fold", Visibility::Public, "", "pa")
        .await
        .expect("room");
    let ops: Vec<Op> = (0..40)
        .map(|i| match i % 7 {
            0 | 3 => Op::Send {
                user: i % 3,
                reply: (i % 2 == 0).then_some(i),
            },
            1 => Op::React {
                user: i % 3,
                msg: i,
                emoji: i % 3,
            },
            2 => Op::Edit {
                user: i % 3,
                msg: i / 2,
            },
            4 => Op::Unreact {
                user: (i + 1) % 3,
                msg: i,
                emoji: (i / 7) % 3,
            },
            5 => Op::React {
                user: (i + 2) % 3,
                msg: i + 1,
                emoji: (i + 1) % 3,
            },
            _ => Op::Delete {
                user: i % 3,
                msg: i / 3,
            },
        })
        .collect();
    super::suite_log::fold_matches_history(s, "fold", &ops).await;
}

/// After the appends above, the group commit's histograms have seen them (a store that keeps
/// none says so with `None`, which no store here does).
async fn commits_are_measured(s: &dyn Store) {
    let m = s.commit_metrics().expect("commit metrics");
    let (batches, seconds) = count_and_sum(&m.commit_seconds);
    let (sizes, writes) = count_and_sum(&m.batch_size);
    assert!(batches >= 1, "no batch measured");
    assert_eq!(sizes, batches, "one observation of each per batch");
    assert!(writes >= batches as f64, "a batch holds at least one write");
    append_and_wait(s, msg("general", "alice", "measured", "m"))
        .await
        .expect("append");
    let (after, more_seconds) = count_and_sum(&m.commit_seconds);
    assert!(after > batches, "the new batch is counted");
    assert!(more_seconds > seconds);
    assert!(count_and_sum(&m.batch_size).1 > writes);
}

/// A histogram's observation count and sum, read as `/metrics` shows them.
fn count_and_sum(h: &prometheus_client::metrics::histogram::Histogram) -> (u64, f64) {
    let mut r = prometheus_client::registry::Registry::default();
    r.register("h", "", h.clone());
    let text = crate::metrics::render(&r);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (value("h_count") as u64, value("h_sum"))
}

/// Room and member lists in pages; owners' quotas; an invite used up by joining, ended by
/// leaving, or declined; a room deleted with everything in it, its name free again.
async fn pages_owners_and_deletion(s: &dyn Store) {
    for u in ["owner", "m1", "m2", "m3", "guest"] {
        s.create_user(u, "h").await.expect("user");
    }
    let before = s.rooms_owned("owner").await.expect("owned");
    for r in ["pa", "pb", "pc", "pd"] {
        s.create_room(r, Visibility::Public, "", "owner")
            .await
            .expect("room");
    }
    assert_eq!(s.rooms_owned("owner").await.expect("owned"), before + 4);
    s.open_dm("owner", "m1").await.expect("dm");
    assert_eq!(
        s.rooms_owned("owner").await.expect("owned"),
        before + 4,
        "a direct-message room has no owner"
    );
    // Pages: names strictly after the cursor, sorted, at most `limit`.
    let names = |v: Vec<chat_proto::RoomInfo>| v.into_iter().map(|r| r.room).collect::<Vec<_>>();
    let page = names(s.rooms_for("guest", Some("p"), 2).await.expect("page"));
    assert_eq!(page, ["pa", "pb"]);
    let page = names(s.rooms_for("guest", Some("pb"), 2).await.expect("page"));
    assert_eq!(page, ["pc", "pd"]);
    for u in ["m1", "m2", "m3"] {
        s.add_member("pa", u).await.expect("member");
    }
    assert_eq!(s.member_count("pa").await.expect("count"), 4);
    assert_eq!(s.members("pa", None, 2).await.expect("page"), ["m1", "m2"]);
    assert_eq!(
        s.members("pa", Some("m2"), 10).await.expect("page"),
        ["m3", "owner"]
    );
    // Invites: used up by the join, ended by leaving, or declined.
    let p = s
        .create_room("pz", Visibility::Private, "", "owner")
        .await
        .expect("private");
    s.invite(&p.name, "guest").await.expect("invite");
    assert!(s.add_member("pz", "guest").await.expect("join"));
    assert!(!s.is_invited("pz", "guest").await.expect("inv"), "used up");
    assert!(s.remove_member("pz", "guest").await.expect("leave"));
    assert!(!s.is_invited("pz", "guest").await.expect("inv"));
    s.invite("pz", "m1").await.expect("invite");
    assert!(s.decline_invite("pz", "m1").await.expect("decline"));
    assert!(!s.is_invited("pz", "m1").await.expect("inv"));
    assert!(!s.decline_invite("pz", "m1").await.expect("decline twice"));
    // Deletion takes the messages, members and invites with it; the name can be used again,
    // and the new room's seqs start over under a new epoch.
    for i in 0..3 {
        append_and_wait(s, msg("pa", "m1", &format!("del-{i}"), "x"))
            .await
            .expect("append");
    }
    s.invite("pa", "guest").await.expect("invite");
    let old = s.room("pa").await.expect("get").expect("some");
    assert!(s.delete_room("pa").await.expect("delete"));
    assert!(!s.delete_room("pa").await.expect("delete twice"));
    assert_eq!(s.room("pa").await.expect("get"), None);
    assert!(matches!(
        s.is_member("pa", "m1").await,
        Err(StoreError::NotFound) | Ok(false)
    ));
    let again = s
        .create_room("pa", Visibility::Public, "", "m2")
        .await
        .expect("name free again");
    assert_ne!(again.epoch, old.epoch);
    assert_eq!(s.latest_seq("pa").await.expect("latest"), 0);
    let a = append_and_wait(s, msg("pa", "m1", "del-new", "x"))
        .await
        .expect("append");
    assert_eq!(a.seq, 1, "a new room's seqs start at 1");
    assert_eq!(s.members("pa", None, 10).await.expect("members"), ["m2"]);
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
    s.issue_token("alice", b"token-hash-1", 100)
        .await
        .expect("token");
    let user = |u: Option<super::accounts::TokenUse>| u.map(|u| u.user);
    assert_eq!(
        user(s.token_use(b"token-hash-1").await.expect("t")).as_deref(),
        Some("alice")
    );
    assert_eq!(s.token_use(b"other").await.expect("t"), None);
    assert!(s.revoke_token(b"token-hash-1").await.expect("revoke"));
    assert!(!s.revoke_token(b"token-hash-1").await.expect("revoke again"));
    assert_eq!(s.token_use(b"token-hash-1").await.expect("t"), None);
    assert!(matches!(
        s.issue_token("nobody", b"token-hash-2", 100).await,
        Err(StoreError::NotFound)
    ));
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
    assert_eq!(r.owner.as_deref(), Some("alice"));
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
        s.members("general", None, 100).await.expect("members"),
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
        names(s.rooms_for("bob", None, 100).await.expect("list")),
        vec!["general"]
    );
    assert!(!s.is_invited("secret", "bob").await.expect("inv"));
    s.invite("secret", "bob").await.expect("invite");
    assert!(s.is_invited("secret", "bob").await.expect("inv"));
    assert_eq!(
        names(s.rooms_for("bob", None, 100).await.expect("list")),
        vec!["general", "secret"]
    );
    let alice_view = s.rooms_for("alice", None, 100).await.expect("list");
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
        s.members("dm:alice:bob", None, 100).await.expect("m"),
        vec!["alice", "bob"]
    );
    assert!(
        !s.rooms_for("carol", None, 100)
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
    let (page, more) = s.history_before("general", None, 10, V1).await.expect("h");
    assert_eq!(page.len(), 10);
    assert!(more);
    assert_eq!(page.last().expect("last").seq, latest);
    assert!(
        page.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "ascending, contiguous"
    );
    let first = page[0].seq;
    let (older, _) = s
        .history_before("general", Some(first), 3, V1)
        .await
        .expect("h");
    assert_eq!(
        older.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![first - 3, first - 2, first - 1]
    );
    let (oldest, more) = s
        .history_before("general", Some(3), 10, V1)
        .await
        .expect("h");
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
    let (empty, more) = s
        .history_before("dm:alice:bob", None, 10, V1)
        .await
        .expect("h");
    assert!(empty.is_empty() && !more);
}
