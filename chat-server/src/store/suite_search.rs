//! `search`, for every [`Store`]: words, phrases, filters, paging, edits and deletes, whose
//! rooms are searched, and tokens cut the same on every engine. Both engines must give exactly
//! these results, so they give the same ones. Called from [`super::suite::run_all`].

use chat_proto::search::parse_query;
use chat_proto::{SearchResult, Visibility};

use super::{
    Change, Cursor, NewEvent, NewMessage, SearchRequest, Store, append_and_wait, apply_and_wait,
};

/// `query` as `user` sees it: parsed as the server parses it.
fn request(user: &str, query: &str, limit: u32) -> SearchRequest {
    let q = parse_query(query).expect("a valid query");
    SearchRequest {
        user: user.into(),
        phrases: q.phrases,
        from: q.from,
        room: q.room,
        before: None,
        before_seq: None,
        limit,
    }
}

async fn found(s: &dyn Store, req: &SearchRequest) -> Vec<SearchResult> {
    s.search(req).await.expect("search")
}

/// (room, seq) of what `user` finds for `query`.
async fn hits(s: &dyn Store, user: &str, query: &str) -> Vec<(String, u64)> {
    found(s, &request(user, query, 50))
        .await
        .into_iter()
        .map(|r| (r.room, r.seq))
        .collect()
}

fn at(room: &str, seq: u64) -> (String, u64) {
    (room.to_owned(), seq)
}

/// Appends and waits a little, so every message has its own ts and the order is the seq order
/// of the appends.
async fn say(s: &dyn Store, room: &str, from: &str, id: &str, body: &str) -> u64 {
    let a = append_and_wait(s, NewMessage::new(room, from, id, body))
        .await
        .expect("append");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    a.seq
}

pub async fn run_all(s: &dyn Store) {
    for u in ["sa", "sb", "sc"] {
        s.create_user(u, "h").await.expect("user");
    }
    for (room, owner) in [("sr1", "sa"), ("sr2", "sa"), ("sr3", "sc")] {
        s.create_room(room, Visibility::Public, "", owner)
            .await
            .expect("room");
    }
    s.add_member("sr1", "sb").await.expect("member");
    let m1 = say(s, "sr1", "sa", "s1", "Deploy on Friday").await;
    let m2 = say(s, "sr1", "sb", "s2", "no deploy on friday, please").await;
    let m3 = say(s, "sr2", "sa", "s3", "friday: deploy went fine").await;
    let m4 = say(s, "sr3", "sc", "s4", "secret deploy friday").await;
    let m5 = say(s, "sr1", "sb", "s5", "typo teh thing").await;
    let m6 = say(s, "sr1", "sa", "s6", "delete me, deploy").await;
    let m7 = say(
        s,
        "sr1",
        "sb",
        "s7",
        "mail bob@example.com well-known Été v1.2",
    )
    .await;
    let m8 = say(s, "sr2", "sa", "s8", "deployed deploys").await;
    let edit = Change::Edit {
        target: m5,
        body: "fixed the thing".into(),
    };
    let del = Change::Delete { target: m6 };
    for (from, change) in [("sb", edit), ("sa", del)] {
        apply_and_wait(
            s,
            NewEvent {
                room: "sr1".into(),
                from: from.into(),
                change,
            },
        )
        .await
        .expect("applied");
    }

    // Whole words, any case, all required; newest first; other rooms' and deleted never.
    let deploys = vec![at("sr2", m3), at("sr1", m2), at("sr1", m1)];
    assert_eq!(hits(s, "sa", "deploy").await, deploys);
    assert_eq!(hits(s, "sa", "FRIDAY Deploy").await, deploys);
    assert_eq!(hits(s, "sa", "deploys").await, [at("sr2", m8)]);
    assert_eq!(hits(s, "sc", "deploy").await, [at("sr3", m4)]);
    // Phrases: adjacent, in order.
    assert_eq!(
        hits(s, "sa", "\"on friday\"").await,
        [at("sr1", m2), at("sr1", m1)]
    );
    assert_eq!(hits(s, "sa", "\"friday deploy\"").await, [at("sr2", m3)]);
    assert!(hits(s, "sa", "\"friday on\"").await.is_empty());
    // Filters, with words and alone.
    assert_eq!(hits(s, "sa", "deploy from:sb").await, [at("sr1", m2)]);
    assert_eq!(hits(s, "sa", "deploy in:sr2").await, [at("sr2", m3)]);
    assert_eq!(
        hits(s, "sa", "from:sb").await,
        [at("sr1", m7), at("sr1", m5), at("sr1", m2)]
    );
    assert!(hits(s, "sa", "deploy from:nobody").await.is_empty());
    assert!(hits(s, "sa", "in:sr3").await.is_empty(), "not a member");
    // An edited message by its new text only; a deleted one never.
    let fixed = found(s, &request("sa", "fixed", 50)).await;
    assert_eq!(
        fixed
            .iter()
            .map(|r| (r.seq, r.body.as_str(), r.edited.is_some()))
            .collect::<Vec<_>>(),
        [(m5, "fixed the thing", true)]
    );
    assert!(hits(s, "sa", "teh").await.is_empty());
    assert!(hits(s, "sa", "delete").await.is_empty());
    // Tokens are cut the same on every engine: letters and digits, case folded, accents kept.
    for q in [
        "example",
        "bob",
        "\"bob example com\"",
        "bob@example.com",
        "well",
        "known",
        "well-known",
        "été",
        "ÉTÉ",
        "v1",
        "v1.2",
        "2",
    ] {
        assert_eq!(hits(s, "sa", q).await, [at("sr1", m7)], "{q}");
    }
    for q in ["ete", "v", "wellknown", "exam", "1"] {
        assert!(hits(s, "sa", q).await.is_empty(), "{q}");
    }

    // Pages: each continues after the last result of the one before.
    let mut req = request("sa", "deploy", 1);
    let mut pages = Vec::new();
    loop {
        let page = found(s, &req).await;
        let Some(last) = page.last() else { break };
        req.before = Some(Cursor {
            ts: last.ts,
            room: last.room.clone(),
            seq: last.seq,
        });
        pages.extend(page.iter().map(|r| (r.room.clone(), r.seq)));
        assert!(pages.len() <= deploys.len(), "pages end");
    }
    assert_eq!(pages, deploys);
    // Below a seq, in one room (`before_seq`).
    let mut req = request("sa", "deploy in:sr1", 50);
    req.before_seq = Some(m2);
    assert_eq!(
        found(s, &req)
            .await
            .into_iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        [m1]
    );

    // Leaving a room takes its messages out of the user's searches.
    s.remove_member("sr1", "sb").await.expect("leave");
    assert!(hits(s, "sb", "deploy").await.is_empty());
    // A deleted room's messages are gone from the index; one made again under its name starts
    // empty.
    assert!(s.delete_room("sr2").await.expect("delete"));
    assert!(hits(s, "sa", "went").await.is_empty());
    s.create_room("sr2", Visibility::Public, "", "sa")
        .await
        .expect("again");
    let again = say(s, "sr2", "sa", "s9", "went again").await;
    assert_eq!(hits(s, "sa", "went").await, [at("sr2", again)]);
}
