//! The bounds a hostile client meets: outbound memory, connection slots, password guessing,
//! rooms. Each test is a probe that once took the server down or locked others out.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Client, Next, TestServer, send_many, setup_room};

/// Fills `room` with `n` messages of `body_len` bytes.
async fn fill(c: &mut Client, room: &str, n: u64, body_len: usize) {
    let body = "b".repeat(body_len);
    for step in 0..n / 20 {
        send_many(c, room, &format!("fill{step}-"), 20, &body).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_asked_for_and_never_read_is_bounded_and_the_asker_closed() {
    let server = TestServer::start(|c| {
        c.rate_per_sec = 0;
        c.outbound_queue_bytes = 1 << 20;
        c.reply_wait = Duration::from_millis(500);
    })
    .await;
    let url = server.url();
    let (mut owner, _) = setup_room(&url, "owner", "big").await;
    fill(&mut owner, "big", 200, 16 * 1024 - 200).await;
    let (mut hog, _) = Client::register(&url, "hog").await;
    hog.send(json!({"type":"join","room":"big"})).await;
    // 60 pages of 200 messages of 16 KB (3.2 MB each before the byte cap): asked for, never read.
    for i in 0..60 {
        hog.send(json!({"type":"history","room":"big","limit":200,"ref":i}))
            .await;
    }
    let outbound = server.server.as_ref().expect("running").outbound();
    let bound = (1 << 20) + chat_server_reserve();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while outbound.slow_consumers() == 0 {
        peak = peak.max(outbound.used());
        assert!(tokio::time::Instant::now() < deadline, "hog never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(peak <= bound, "unsent bytes reached {peak}, bound {bound}");
    assert_eq!(
        hog.closed_code().await,
        Some(chat_proto::close::SLOW_CONSUMER)
    );
    // Its memory is given back, and the owner is served as before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbound.used() > 64 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still held",
            outbound.used()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    owner
        .send(json!({"type":"history","room":"big","limit":200}))
        .await;
    let h = owner.recv_type("history").await;
    let n = h["messages"].as_array().map_or(0, |m| m.len());
    assert!(
        (20..200).contains(&n),
        "a page cut at 512 KiB: {n} messages"
    );
    assert_eq!(h["has_more"], true);
    assert_eq!(h["messages"][n - 1]["seq"], 200, "the newest page");
}

/// What one reply reserves (see chat-server's reply.rs): 512 KiB of messages plus 128 KiB.
fn chat_server_reserve() -> usize {
    640 * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_server_wide_bound_replies_are_refused_with_retry_after() {
    let server = TestServer::start(|c| {
        c.rate_per_sec = 0;
        c.outbound_queue_bytes = 2 << 20;
        c.outbound_total_bytes = 1536 << 10;
        c.reply_wait = Duration::from_millis(300);
    })
    .await;
    let url = server.url();
    let (mut owner, _) = setup_room(&url, "owner", "big").await;
    fill(&mut owner, "big", 100, 16 * 1024 - 200).await;
    let (mut other, _) = Client::register(&url, "other").await;
    other.join("big").await;
    // One client holds most of the server's 1.5 MiB: two pages of ~512 KiB it does not read,
    // behind a small socket buffer (its own bound, 2 MiB, lets it have both)...
    let mut hog = Client::connect_small_buffer(&url, server.addr).await;
    hog.register_here("hog").await;
    hog.join("big").await;
    for _ in 0..2 {
        hog.send(json!({"type":"history","room":"big","limit":200}))
            .await;
    }
    let outbound = server.server.as_ref().expect("running").outbound();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbound.used() < 1000 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hog's reply never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The hog's socket may have taken part of that off the queue; a third page (its own bound
    // still allows it) takes what room is left, whether or not it fits. Then wait until the
    // queue stops moving: the hog reads nothing, so it does.
    hog.send(json!({"type":"history","room":"big","limit":200}))
        .await;
    let mut last = outbound.used();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = outbound.used();
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never settled"
        );
        last = now;
    }
    // ...so another client's request cannot get room for its reply: it is told to retry.
    other
        .send(json!({"type":"history","room":"big","limit":200,"ref":"h"}))
        .await;
    let e = loop {
        let v = other.recv().await;
        if v["ref"] == "h" {
            break v;
        }
    };
    assert_eq!(
        e["type"], "error",
        "a {} came instead of the refusal",
        e["type"]
    );
    assert_eq!(e["code"], "rate_limited", "{e}");
    assert_eq!(e["retry_after_ms"], 1000, "{e}");
    assert_eq!(
        outbound.slow_consumers(),
        0,
        "the hog is within its own bound"
    );
    drop(hog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_joiner_gets_its_replay_page_by_page() {
    // A gap of 400 large messages replays in pages cut at 512 KiB; a joiner that reads slowly
    // is never closed, because each page waits for the one before to drain.
    let server = TestServer::start(|c| {
        c.rate_per_sec = 0;
        c.outbound_queue_bytes = 1 << 20;
        c.max_replay = 10_000;
    })
    .await;
    let url = server.url();
    let (mut owner, epoch) = setup_room(&url, "owner", "big").await;
    fill(&mut owner, "big", 400, 8 * 1024).await;
    let (mut slow, _) = Client::register(&url, "slow").await;
    slow.send(json!({"type":"join","room":"big","since_seq":0,"epoch":epoch}))
        .await;
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        match slow.next_within(Duration::from_secs(30)).await {
            Next::Frame(v) if v["type"] == "joined" || v["type"] == "replay" => {
                pages += 1;
                for m in v["messages"].as_array().expect("messages") {
                    seqs.push(m["seq"].as_u64().expect("seq"));
                }
                if v["complete"] == true {
                    break;
                }
                // Read slowly: the server waits rather than queueing every page.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Next::Frame(_) => {}
            other => panic!("the slow joiner was cut off: {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    assert!(pages >= 7, "8 KiB messages, 512 KiB pages: {pages} pages");
}

/// Waits until the server holds `n` connection slots (a closed connection's task has ended).
async fn slots_become(server: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (all, _) = server.server.as_ref().expect("running").connection_slots();
        if all == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{all} slots, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP connection from `source` that never sends its upgrade request.
async fn idle_socket(source: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("bind source");
    sock.connect(to).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_hold_more_than_its_connections() {
    let server = TestServer::start(|c| c.max_connections_per_user = 2).await;
    let url = server.url();
    let (first, token) = Client::register(&url, "many").await;
    let _second = Client::connect_with(&url, Some(&token))
        .await
        .expect("a second device");
    assert_eq!(
        Client::connect_with(&url, Some(&token)).await.err(),
        Some(503),
        "a third, with its token in the upgrade"
    );
    // With the token in hello, or logging in with the password: the same refusal, as an error.
    let mut c = Client::connect(&url).await;
    c.send(json!({"type":"hello","versions":[1],"token":token}))
        .await;
    assert_eq!(c.recv().await["code"], "too_many_connections");
    let mut c = Client::connect(&url).await;
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    c.send(json!({"type":"login","username":"many","password":"correct horse"}))
        .await;
    assert_eq!(c.recv().await["code"], "too_many_connections");
    // One closes: a new device gets in again.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server
        .server
        .as_ref()
        .expect("running")
        .hub()
        .user_connections("many")
        > 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first never went"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(Client::connect_with(&url, Some(&token)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_sockets_from_one_address_cannot_lock_others_out() {
    let server = TestServer::start(|c| {
        c.max_unauthenticated_per_ip = 3;
        c.max_connections_per_ip = 5;
    })
    .await;
    let url = server.url();
    // 127.0.0.1 holds three sockets that never even send the upgrade request.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_socket([127, 0, 0, 1], server.addr).await);
    }
    slots_become(&server, 3).await;
    assert_eq!(
        Client::connect_with(&url, None).await.err(),
        Some(503),
        "a fourth from the same address"
    );
    // Another address is served: it registers, and its logged-in connection does not count
    // against the unauthenticated budget.
    let mut other = Client::connect_small_buffer_from(&url, server.addr, [127, 0, 0, 2]).await;
    other.register_here("elsewhere").await;
    let (all, unauthenticated) = server.server.as_ref().expect("running").connection_slots();
    assert_eq!((all, unauthenticated), (4, 3));
    // Authenticated connections count only against the address's total (5).
    drop(held);
    slots_become(&server, 1).await;
    let mut mine = Vec::new();
    for i in 0..5 {
        let (c, _) = Client::register(&url, &format!("local{i}")).await;
        mine.push(c);
    }
    assert_eq!(Client::connect_with(&url, None).await.err(), Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_slots_are_kept_for_users_who_are_already_connected() {
    let server = TestServer::start(|c| {
        c.max_connections = 4;
        c.reserved_connections = 1;
        c.max_connections_per_ip = 0;
        c.max_unauthenticated_per_ip = 0;
    })
    .await;
    let url = server.url();
    let (_alice, alice_token) = Client::register(&url, "alice").await;
    let (bob, bob_token) = Client::register(&url, "bob").await;
    drop(bob);
    slots_become(&server, 1).await;
    // Two more slots taken by sockets that never log in: the general slots are gone.
    let _a = idle_socket([127, 0, 0, 3], server.addr).await;
    let _b = idle_socket([127, 0, 0, 4], server.addr).await;
    slots_become(&server, 3).await;
    assert_eq!(Client::connect_with(&url, None).await.err(), Some(503));
    assert_eq!(
        Client::connect_with(&url, Some(&bob_token)).await.err(),
        Some(503),
        "bob has no connection: the reserve is not for him"
    );
    slots_become(&server, 3).await;
    let mut phone = Client::connect_with(&url, Some(&alice_token))
        .await
        .expect("alice's new device gets the reserve slot");
    phone.send(json!({"type":"hello","versions":[1]})).await;
    assert_eq!(phone.recv().await["user"], "alice");
    assert_eq!(
        Client::connect_with(&url, Some(&alice_token)).await.err(),
        Some(503)
    );
}

/// hello, then `login`; returns the reply.
async fn try_login(c: &mut Client, user: &str, password: &str) -> serde_json::Value {
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    c.send(json!({"type":"login","username":user,"password":password}))
        .await;
    c.recv().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_backs_off_per_source_and_the_right_password_waits_too() {
    let server = TestServer::start(|_| {}).await;
    let url = server.url();
    drop(Client::register(&url, "victim").await);
    let mut c = Client::connect_from(&url, server.addr, [127, 0, 0, 5]).await;
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    for i in 0..5 {
        c.send(json!({"type":"login","username":"victim","password":format!("guess-{i}")}))
            .await;
        assert_eq!(c.recv().await["code"], "invalid_credentials");
    }
    // The sixth try is refused before the password is looked at, even the right one.
    c.send(json!({"type":"login","username":"victim","password":"correct horse"}))
        .await;
    let e = c.recv().await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    let wait = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((900..=1000).contains(&wait), "{wait}");
    // Another address is not held back by this one's failures.
    let mut other = Client::connect_from(&url, server.addr, [127, 0, 0, 6]).await;
    assert_eq!(
        try_login(&mut other, "victim", "correct horse").await["type"],
        "auth_ok"
    );
    // Once the wait is over, the right password works.
    tokio::time::sleep(Duration::from_millis(wait)).await;
    c.send(json!({"type":"login","username":"victim","password":"correct horse"}))
        .await;
    assert_eq!(c.recv().await["type"], "auth_ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_guessed_from_many_addresses_backs_off() {
    let server = TestServer::start(|_| {}).await;
    let url = server.url();
    drop(Client::register(&url, "victim").await);
    for n in 0..10u8 {
        let mut c = Client::connect_from(&url, server.addr, [127, 0, 1, 10 + n]).await;
        assert_eq!(
            try_login(&mut c, "victim", "wrong-guess").await["code"],
            "invalid_credentials"
        );
    }
    let mut c = Client::connect_from(&url, server.addr, [127, 0, 1, 100]).await;
    let e = try_login(&mut c, "victim", "wrong-guess").await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    // Other accounts are not affected.
    let mut c = Client::connect_from(&url, server.addr, [127, 0, 1, 101]).await;
    assert_eq!(
        try_login(&mut c, "nobody-here", "x-password").await["code"],
        "invalid_credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_pipelining_logins_waits_in_its_own_line() {
    let server = TestServer::start(|c| c.max_unauthenticated_per_ip = 0).await;
    let url = server.url();
    drop(Client::register(&url, "someone").await);
    // 24 registrations at once from one address (each a password hash)...
    let mut flood = Vec::new();
    for _ in 0..24 {
        let mut c = Client::connect_from(&url, server.addr, [127, 0, 2, 1]).await;
        c.send(json!({"type":"hello","versions":[1]})).await;
        c.recv_type("welcome").await;
        flood.push(c);
    }
    for (i, c) in flood.iter_mut().enumerate() {
        c.send(
            json!({"type":"register","username":format!("flood{i}"),"password":"correct horse"}),
        )
        .await;
    }
    // ...and a login from elsewhere waits behind at most two of them, not all 24.
    let mut real = Client::connect_from(&url, server.addr, [127, 0, 2, 2]).await;
    assert_eq!(
        try_login(&mut real, "someone", "correct horse").await["type"],
        "auth_ok"
    );
    let mut waiting = Vec::new();
    for mut c in flood {
        match c.next_within(Duration::ZERO).await {
            Next::Timeout => waiting.push(c),
            Next::Frame(v) => assert_eq!(v["type"], "auth_ok", "{v}"),
            Next::Closed(code) => panic!("a flood connection closed: {code:?}"),
        }
    }
    let pending = waiting.len();
    assert!(
        pending >= 12,
        "only {pending} of 24 were still waiting when the other login was done"
    );
    // Every one of the flood is served in the end: a line, not a refusal.
    for mut c in waiting {
        let v = c.recv_type("auth_ok").await;
        assert!(v["user"].as_str().is_some_and(|u| u.starts_with("flood")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_rooms_member_list_comes_in_pages() {
    use chat_server::store::{AccountStore, Store};
    // 601 members, made straight in the database (601 password hashes would take a minute).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "a".repeat(64);
    {
        let store = chat_server::store::sqlite::SqliteStore::open(&dir.path().join("chat.db"))
            .expect("open");
        store.create_user("alice", "x").await.expect("alice");
        store
            .issue_token("alice", &chat_server::auth::token_hash(&token), 100)
            .await
            .expect("token");
        store
            .create_room("big", chat_proto::Visibility::Public, "", "alice")
            .await
            .expect("room");
        for i in 0..600 {
            let u = format!("user{i:03}");
            store.create_user(&u, "x").await.expect("user");
            store.add_member("big", &u).await.expect("member");
        }
    }
    let server = TestServer::start_in(dir, |_| {}).await;
    let url = server.url();
    let mut a = Client::resume(&url, &token).await;
    let joined = a.join("big").await;
    let members = joined["members"].as_array().expect("members");
    assert_eq!(members.len(), 500, "one page of members, not all 601");
    assert_eq!(joined["member_count"], 601);
    assert_eq!(joined["members_complete"], false);
    assert_eq!(
        members[0],
        json!({"user":"alice","status":"online"}),
        "those present come first"
    );
    // The rest, page by page.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        a.send(json!({"type":"members","room":"big","after":after,"limit":250}))
            .await;
        let page = a.recv_type("member_list").await;
        for m in page["members"].as_array().expect("members") {
            all.push(m["user"].as_str().expect("user").to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(all.len(), 601);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, all, "sorted by name, each once");
}
