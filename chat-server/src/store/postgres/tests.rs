//! PgStore against a real PostgreSQL: each test on a database of its own (see [`testing`]),
//! skipped with a loud line when there is none (failed with `CHAT_REQUIRE_SERVICES=1`).

use std::sync::Arc;

use chat_proto::Visibility;

use super::testing::{TempDb, pg_or_skip};
use super::*;
use crate::store::{AccountStore, AppendDone, Appended, NewMessage, Store, append_and_wait};

fn msg(room: &str, from: &str, id: &str) -> NewMessage {
    NewMessage::new(room, from, id, &format!("body of {id}"))
}

async fn admin(db: &TempDb) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(db.url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// A store with users alice and bob and the public room `r`.
async fn one_room(db: &TempDb) -> PgStore {
    let s = PgStore::open(db.url()).await.expect("open");
    for u in ["alice", "bob"] {
        s.create_user(u, "h").await.expect("user");
    }
    s.create_room("r", Visibility::Public, "", "alice")
        .await
        .expect("room");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_suite() {
    let Some(db) = pg_or_skip().await else { return };
    let store = PgStore::open(db.url()).await.expect("open");
    crate::store::suite::run_all(Arc::new(store)).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(db) = pg_or_skip().await else { return };
    let url = db.url().to_owned();
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.expect("task").expect("open"));
    }
    let c = admin(&db).await;
    let rows = c
        .query("SELECT version FROM schema_version", &[])
        .await
        .expect("version");
    assert_eq!(rows.len(), 1, "one version row");
    assert_eq!(rows[0].get::<_, i32>(0), SCHEMA_VERSION);
    // The three work on one schema.
    stores[0].create_user("alice", "h").await.expect("user");
    assert!(stores[2].user_exists("alice").await.expect("exists"));
    drop(stores);

    c.execute("UPDATE schema_version SET version = version + 1", &[])
        .await
        .expect("bump");
    let err = PgStore::open(&url).await.expect_err("refused");
    let want = format!(
        "database schema version {} is newer than this server knows ({SCHEMA_VERSION}); upgrade chat-server",
        SCHEMA_VERSION + 1
    );
    assert_eq!(err.to_string(), format!("database: {want}"));
    drop(c);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_to_another_node_returns_the_original() {
    let Some(db) = pg_or_skip().await else { return };
    let a = one_room(&db).await;
    let b = PgStore::open(db.url()).await.expect("second node");
    let first = append_and_wait(&a, msg("r", "alice", "m1"))
        .await
        .expect("stored");
    assert_eq!((first.seq, first.duplicate), (1, false));
    // After a failover the client resends to node b, even naming another room.
    let mut again = msg("r", "alice", "m1");
    again.body = "changed".into();
    let dup = append_and_wait(&b, again).await.expect("dup");
    assert!(dup.duplicate);
    assert_eq!(
        (dup.room.as_str(), dup.seq, dup.body.as_str(), dup.ts),
        ("r", 1, "body of m1", first.ts)
    );
    // Within one batch too: the second copy is a duplicate of the first.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let tx = tx.clone();
        b.append(
            msg("r", "bob", "twice"),
            AppendDone::new(move |r| drop(tx.send(r))),
        )
        .await
        .expect("queued");
    }
    let one = rx.recv().await.expect("first").expect("stored");
    let two = rx.recv().await.expect("second").expect("stored");
    assert_eq!((one.seq, one.duplicate), (2, false));
    assert_eq!((two.seq, two.duplicate), (2, true));
    assert_eq!(a.latest_seq("r").await.expect("latest"), 2);
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_writing_one_room_get_gap_free_seqs_and_race_on_ids_safely() {
    let Some(db) = pg_or_skip().await else { return };
    let nodes = [
        one_room(&db).await,
        PgStore::open(db.url()).await.expect("b"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let n = 300;
    // Every id is sent to both nodes at once (as if the client resent during a failover), and
    // the nodes' batches interleave on the room's counter row.
    for i in 0..n {
        for node in &nodes {
            let tx = tx.clone();
            node.append(
                msg(
                    "r",
                    if i % 2 == 0 { "alice" } else { "bob" },
                    &format!("x{i}"),
                ),
                AppendDone::new(move |r| drop(tx.send((i, r)))),
            )
            .await
            .expect("queued");
        }
    }
    drop(tx);
    let mut by_id: std::collections::HashMap<i32, Vec<Appended>> = Default::default();
    while let Some((i, r)) = rx.recv().await {
        by_id.entry(i).or_default().push(r.expect("stored"));
    }
    let mut seqs = Vec::new();
    for (i, both) in &by_id {
        assert_eq!(both.len(), 2, "x{i} answered on both nodes");
        assert_eq!(both[0].seq, both[1].seq, "x{i}: one message, one seq");
        assert_eq!(
            both.iter().filter(|a| !a.duplicate).count(),
            1,
            "x{i}: exactly one original"
        );
        seqs.push(both[0].seq);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "gap-free, no repeats"
    );
    assert_eq!(nodes[1].latest_seq("r").await.expect("latest"), n as u64);
    drop(nodes);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_gets_a_new_connection_after_its_sessions_are_killed() {
    let Some(db) = pg_or_skip().await else { return };
    let s = one_room(&db).await;
    assert_eq!(
        append_and_wait(&s, msg("r", "alice", "before"))
            .await
            .expect("stored")
            .seq,
        1
    );
    // What a PostgreSQL restart does to the pool: every session ends under it.
    let (c, conn) = tokio_postgres::connect(db.admin(), NoTls)
        .await
        .expect("admin");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db.name()],
    )
    .await
    .expect("terminate");
    let after = append_and_wait(&s, msg("r", "alice", "after"))
        .await
        .expect("the next batch reconnects");
    assert_eq!((after.seq, after.duplicate), (2, false));
    assert_eq!(s.latest_seq("r").await.expect("reads reconnect too"), 2);
    drop(s);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    // Nothing listens on port 1: connecting is refused at once.
    let e = PgStore::open("postgres://nobody@127.0.0.1:1/none")
        .await
        .expect_err("unreachable");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("127.0.0.1:1"), "names the URL: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_moves_a_sqlite_deployment() {
    use crate::store::sqlite::SqliteStore;
    let Some(db) = pg_or_skip().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chat.db");
    let (room, secret, dm) = {
        let s = SqliteStore::open(&path).expect("sqlite");
        for u in ["alice", "bob", "carol"] {
            s.create_user(u, &format!("argon-{u}")).await.expect("user");
        }
        s.issue_token("alice", b"tok-a", 100).await.expect("token");
        s.touch_token(b"tok-a", 1_732_400_000_000)
            .await
            .expect("last use");
        s.set_disabled("carol", true).await.expect("disable");
        let room = s
            .create_room("general", Visibility::Public, "the topic", "alice")
            .await
            .expect("room");
        let secret = s
            .create_room("secret", Visibility::Private, "", "bob")
            .await
            .expect("room");
        s.add_member("general", "bob").await.expect("member");
        s.invite("secret", "carol").await.expect("invite");
        let dm = s.open_dm("alice", "carol").await.expect("dm");
        for i in 0..25 {
            append_and_wait(&s, msg("general", "alice", &format!("g{i}")))
                .await
                .expect("append");
        }
        append_and_wait(&s, msg("secret", "bob", "s0"))
            .await
            .expect("append");
        s.flush().await.expect("flush");
        (room, secret, dm)
    };
    let copied = copy::from_sqlite(&path, db.url()).await.expect("copy");
    assert_eq!(
        copied,
        copy::Copied {
            users: 3,
            tokens: 1,
            rooms: 3,
            members: 5,
            invites: 1,
            messages: 26
        }
    );
    let pg = PgStore::open(db.url()).await.expect("open");
    assert_eq!(pg.room("general").await.expect("room"), Some(room));
    assert_eq!(pg.room("secret").await.expect("room"), Some(secret));
    assert_eq!(pg.room(&dm.name).await.expect("room"), Some(dm));
    assert_eq!(pg.rooms_owned("alice").await.expect("owned"), 1);
    assert_eq!(
        pg.password_hash("bob").await.expect("hash").as_deref(),
        Some("argon-bob")
    );
    assert_eq!(
        pg.token_use(b"tok-a").await.expect("token"),
        Some(crate::store::accounts::TokenUse {
            user: "alice".into(),
            last_used_ms: 1_732_400_000_000
        })
    );
    assert!(
        pg.account("carol")
            .await
            .expect("carol")
            .expect("copied")
            .disabled,
        "a disabled account stays disabled"
    );
    assert!(
        !pg.account("bob")
            .await
            .expect("bob")
            .expect("copied")
            .disabled
    );
    assert_eq!(
        pg.members("general", None, 10).await.expect("members"),
        ["alice", "bob"]
    );
    assert!(pg.is_invited("secret", "carol").await.expect("invited"));
    let (page, more) = pg
        .history_before(
            "general",
            None,
            100,
            crate::store::Viewer {
                user: "alice",
                tombstones: false,
            },
        )
        .await
        .expect("h");
    assert!(!more);
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
    assert_eq!(
        (page[3].id.as_str(), page[3].from.as_str()),
        ("g3", "alice")
    );
    // A resend of a copied id is found; the counters carry on; new rows get new ids.
    let dup = append_and_wait(&pg, msg("general", "alice", "g7"))
        .await
        .expect("dup");
    assert_eq!((dup.seq, dup.duplicate), (8, true));
    let next = append_and_wait(&pg, msg("general", "bob", "new"))
        .await
        .expect("new");
    assert_eq!((next.seq, next.duplicate), (26, false));
    assert_eq!(pg.latest_seq("secret").await.expect("latest"), 1);
    pg.create_user("dave", "h")
        .await
        .expect("a new user after the copy");
    pg.create_room("fresh", Visibility::Public, "", "dave")
        .await
        .expect("a new room after the copy");
    // A second copy into the now non-empty database is refused.
    let e = copy::from_sqlite(&path, db.url())
        .await
        .expect_err("not empty");
    assert!(e.to_string().contains("is not empty"), "{e}");
    drop(pg);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_migration_indexes_the_messages_already_there() {
    let Some(db) = pg_or_skip().await else { return };
    {
        let c = admin(&db).await;
        c.batch_execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .await
            .expect("version table");
        for sql in &super::schema::MIGRATIONS[..2] {
            c.batch_execute(sql).await.expect("older schema");
        }
        c.batch_execute(
            "INSERT INTO schema_version VALUES (2);
             INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'alice', 'h', 0);
             INSERT INTO rooms (id, name, kind, visibility, topic, epoch, last_seq, created_at)
                 VALUES (1, 'r', 'room', 'public', '', 'e', 3, 0);
             INSERT INTO members VALUES (1, 1);
             INSERT INTO messages (room_id, seq, user_id, client_id, body, ts, kind, deleted)
                 VALUES (1, 1, 1, 'a', 'old needle', 1, 0, FALSE),
                        (1, 2, 1, 'b', '', 2, 0, TRUE),
                        (1, 3, 1, '~1.3', 'needle in an edit row', 3, 1, FALSE);",
        )
        .await
        .expect("older data");
    }
    let s = PgStore::open(db.url()).await.expect("migrates");
    let req = crate::store::SearchRequest {
        user: "alice".into(),
        phrases: vec![vec!["needle".into()]],
        from: None,
        room: None,
        before: None,
        before_seq: None,
        limit: 10,
    };
    let found = s.search(&req).await.expect("search");
    assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
    drop(s);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_uses_the_gin_index_and_binds_the_query() {
    let Some(db) = pg_or_skip().await else { return };
    let _s = PgStore::open(db.url()).await.expect("open");
    let c = admin(&db).await;
    // A planner facing an empty table may pick anything: with seqscans off, a plan that can
    // use the index does, and this one can only if the query matches the index's predicate.
    c.batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let plan = c
        .query(
            &format!("EXPLAIN {}", super::search::sql(2)),
            &[
                &"alice",
                &None::<String>,
                &None::<String>,
                &None::<i64>,
                &None::<String>,
                &None::<i64>,
                &20i64,
                &None::<i64>,
                &"a'b\"; DROP TABLE users; --",
                &"x",
            ],
        )
        .await
        .expect("explain");
    let text: Vec<String> = plan.iter().map(|r| r.get(0)).collect();
    assert!(
        text.iter().any(|l| l.contains("messages_search")),
        "{text:#?}"
    );
    db.cleanup().await;
}
