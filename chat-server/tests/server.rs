//! Behaviours a transcript cannot express: concurrency, timing, volume.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::{Client, Next, TestServer, send_many, setup_room};
use tokio_tungstenite::tungstenite::Message;

/// Collects the seqs a joiner receives for `room` (snapshot, replay pages and live messages)
/// until it has seen `last`. Panics on a duplicate, naming the frames that carried it.
async fn collect_until(c: &mut Client, last: u64) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    let push = |seq: u64, via: &str, seen: &mut Vec<u64>, log: &mut Vec<String>| {
        log.push(format!("{via}:{seq}"));
        assert!(
            !seen.contains(&seq),
            "seq {seq} delivered twice; frames so far: {log:?}"
        );
        seen.push(seq);
    };
    loop {
        if seen.last().copied() == Some(last) {
            return seen;
        }
        let v = c.recv().await;
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "joined" | "replay" => {
                let via = format!("{kind}(latest {})", v["latest_seq"]);
                for m in v["messages"].as_array().expect("messages") {
                    push(m["seq"].as_u64().expect("seq"), &via, &mut seen, &mut log);
                }
            }
            "message" => push(v["seq"].as_u64().expect("seq"), "live", &mut seen, &mut log),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_with_sends_get_every_message_exactly_once() {
    let server = TestServer::start(|c| {
        c.rate_per_sec = 0;
        c.max_replay = 100_000;
    })
    .await;
    let url = server.url();
    let (mut sender, epoch) = setup_room(&url, "sender", "race").await;
    // The joiners become members first: a first join is an event of the room's log and takes
    // a seq, which would put gaps between the messages' seqs below. Rejoins do not.
    let mut tokens = Vec::new();
    for j in 0..10u64 {
        let (mut c, token) = Client::register(&url, &format!("joiner{j}")).await;
        c.join("race").await;
        tokens.push(token);
    }
    let base = 10u64;
    let total = 600u64;
    let send = tokio::spawn(async move {
        let mut acked = Vec::new();
        for batch in 0..(total / 5) {
            acked.extend(send_many(&mut sender, "race", &format!("b{batch}-"), 5, "x").await);
        }
        acked
    });
    // Joiners arrive while messages stream in: full replays from 0 and plain joins.
    let mut joiners = Vec::new();
    for j in 0..10u64 {
        let url = url.clone();
        let epoch = epoch.clone();
        let token = tokens[j as usize].clone();
        joiners.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30 * j)).await;
            let mut c = Client::resume(&url, &token).await;
            if j % 2 == 0 {
                c.send(json!({"type":"join","room":"race","since_seq":0,"epoch":epoch}))
                    .await;
            } else {
                c.send(json!({"type":"join","room":"race"})).await;
            }
            (j, collect_until(&mut c, base + total).await)
        }));
    }
    let acked = send.await.expect("sender");
    assert_eq!(
        acked,
        (base + 1..=base + total).collect::<Vec<_>>(),
        "acks are in seq order, gap-free"
    );
    for joiner in joiners {
        let (j, seen) = joiner.await.expect("joiner");
        let first = if j % 2 == 0 { base + 1 } else { seen[0] };
        assert_eq!(
            seen,
            (first..=base + total).collect::<Vec<_>>(),
            "joiner {j} saw a gap or disorder"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_is_paged_and_exact() {
    let server = TestServer::start(|c| c.rate_per_sec = 0).await;
    let url = server.url();
    let (mut owner, epoch) = setup_room(&url, "owner", "long").await;
    send_many(&mut owner, "long", "m", 450, "hello").await;
    let (mut late, _) = Client::register(&url, "late").await;
    late.send(json!({"type":"join","room":"long","since_seq":10,"epoch":epoch}))
        .await;
    let joined = late.recv_type("joined").await;
    assert_eq!(joined["catch_up"], "replay");
    // Seq 451 is late's own join, an event of the log that protocol 1 does not see.
    assert_eq!(joined["latest_seq"], 451);
    assert_eq!(joined["complete"], false);
    let mut seqs: Vec<u64> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), 200);
    let mut pages = 0;
    loop {
        let page = late.recv_type("replay").await;
        pages += 1;
        seqs.extend(
            page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq")),
        );
        if page["complete"] == true {
            break;
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seqs, (11..=450).collect::<Vec<_>>());
    // After the replay, live messages follow.
    owner
        .send(json!({"type":"send","room":"long","id":"after","body":"live"}))
        .await;
    assert_eq!(late.recv_type("message").await["seq"], 452);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_with_4008() {
    let server = TestServer::start(|c| {
        c.rate_per_sec = 0;
        c.outbound_queue = 16;
    })
    .await;
    let url = server.url();
    let (mut sender, _) = setup_room(&url, "sender", "flood").await;
    let (mut sleepy, _) = Client::register(&url, "sleepy").await;
    sleepy.join("flood").await;
    sender.recv_type("presence").await;
    // Up to ~10 MB to a client that reads nothing: socket buffers fill, then its 16-frame
    // queue. The sender reads its own acks and echoes as it goes (in steps of 4), or it too
    // would be a slow consumer. It stops once the server has closed sleepy: sleepy then reads
    // what its socket holds and must find the close frame behind it (the flood going on while
    // nobody reads made the close frame miss its grace period on a busy machine).
    let body = "z".repeat(16 * 1024 - 64);
    let outbound = || server.server.as_ref().expect("running").outbound();
    for step in 0..640 {
        send_many(&mut sender, "flood", &format!("f{step}-"), 4, &body).await;
        if outbound().slow_consumers() > 0 {
            break;
        }
    }
    assert_eq!(outbound().slow_consumers(), 1, "sleepy was never closed");
    // The frame that found its queue full, and the queue thrown away with it.
    let drops = outbound().drops();
    assert!(drops.full >= 1 && drops.discarded >= 1, "{drops:?}");
    assert_eq!(
        sleepy.closed_code().await,
        Some(chat_proto::close::SLOW_CONSUMER)
    );
    // The sender is unaffected and sees sleepy go offline.
    let p = sender.recv_type("presence").await;
    assert_eq!(p["changes"][0], json!({"user":"sleepy","status":"offline"}));
    sender.send(json!({"type":"ping"})).await;
    assert_eq!(sender.recv_type("pong").await["type"], "pong");
    // The server's memory for it is gone: only the sender is registered.
    assert_eq!(
        server
            .server
            .as_ref()
            .expect("running")
            .hub()
            .connection_count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_goes_offline_and_the_others_stay() {
    // The watcher is not polled while the test sets up the second user (argon2, fsyncs), so the
    // timeout leaves room for that.
    let server = TestServer::start(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.ping_timeout = Duration::from_millis(1500);
    })
    .await;
    let url = server.url();
    let (mut watcher, _) = setup_room(&url, "watcher", "room").await;
    let (mut silent, _) = Client::register(&url, "silent").await;
    silent.join("room").await;
    assert_eq!(
        watcher.recv_type("presence").await["changes"][0]["status"],
        "online"
    );
    // `watcher` keeps reading (so it answers pings); `silent` is not polled, so it answers none.
    let started = std::time::Instant::now();
    let p = watcher.recv_type("presence").await;
    assert_eq!(p["changes"][0], json!({"user":"silent","status":"offline"}));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "closed too early: {waited:?}"
    );
    watcher.send(json!({"type":"ping"})).await;
    assert_eq!(watcher.recv_type("pong").await["type"], "pong");
    drop(silent);
}

/// A TCP connection that has asked for the WebSocket upgrade and speaks raw frames from here.
async fn raw_upgrade(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    tcp
}

/// Reads raw WebSocket frames (server frames are unmasked) until EOF: (opcode, payload).
async fn raw_frames(tcp: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut bytes)).await;
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    assert!(
        bytes.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let mut frames = Vec::new();
    let mut rest = &bytes[head_end..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let len = (rest[1] & 0x7f) as usize;
        assert!(len < 126, "test frames are small");
        frames.push((opcode, rest[2..2 + len].to_vec()));
        rest = &rest[2 + len..];
    }
    frames
}

#[tokio::test]
async fn a_connection_that_answers_no_pings_is_closed_with_4010() {
    let server = TestServer::start(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.ping_timeout = Duration::from_millis(200);
    })
    .await;
    let mut tcp = raw_upgrade(server.addr).await;
    // Never write again: no pong ever goes back.
    let started = std::time::Instant::now();
    let frames = raw_frames(&mut tcp).await;
    let pings = frames.iter().filter(|(op, _)| *op == 0x9).count();
    assert!(pings >= 1, "{frames:?}");
    let (op, payload) = frames.last().expect("a close frame");
    assert_eq!(*op, 0x8, "{frames:?}");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        chat_proto::close::HEARTBEAT_TIMEOUT
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn only_slash_ws_upgrades() {
    let server = TestServer::start(|_| {}).await;
    let other = format!("ws://{}/chat", server.addr);
    assert_eq!(Client::connect_with(&other, None).await.err(), Some(404));
    // A plain HTTP GET to /ws is not an upgrade: 400.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp");
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    tcp.read_to_string(&mut buf).await.expect("read");
    assert!(buf.starts_with("HTTP/1.1 400"), "{buf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_acks_what_it_read_and_closes_with_1001() {
    let mut server = TestServer::start(|c| c.rate_per_sec = 0).await;
    let url = server.url();
    let (mut c, epoch) = setup_room(&url, "alice", "r").await;
    for i in 0..50 {
        c.send(json!({"type":"send","room":"r","id":format!("s{i}"),"body":"x"}))
            .await;
    }
    // Wait for the first ack so the server is mid-stream, then shut down.
    c.recv_type("ack").await;
    let mut acked = 1u64;
    let stopper = tokio::spawn(async move {
        server.shutdown().await;
        server
    });
    let code = loop {
        match c.next_within(support::WAIT).await {
            Next::Frame(v) if v["type"] == "ack" => acked += 1,
            Next::Frame(_) => {}
            Next::Closed(code) => break code,
            Next::Timeout => panic!("no close after shutdown"),
        }
    };
    assert_eq!(code, Some(chat_proto::close::GOING_AWAY));
    let server = stopper.await.expect("shutdown");
    // Every acked message is in the database.
    let store = chat_server::store::sqlite::SqliteStore::open(&server.dir.path().join("chat.db"))
        .expect("reopen");
    use chat_server::store::Store;
    let latest = store.latest_seq("r").await.expect("latest");
    assert!(latest >= acked, "acked {acked} but only {latest} stored");
    let _ = epoch;
}

/// docs/protocol.md §7.5: frames the server has not read when it stops get no reply at all
/// before the 1001; the client sends them again after reconnecting, with the same ids, and each
/// message is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_unread_at_shutdown_get_no_reply_and_are_sent_again_with_the_same_ids() {
    let mut server = TestServer::start(|_| {}).await;
    let url = server.url();
    let (mut c, token) = Client::register(&url, "alice").await;
    c.send(json!({"type":"create_room","room":"r"})).await;
    c.recv_type("room_created").await;
    c.join("r").await;
    c.send(json!({"type":"send","room":"r","id":"early","body":"x","ref":"early"}))
        .await;
    assert_eq!(c.recv_type("ack").await["seq"], 1);

    // The first poll of shutdown stops every connection's reading; the rest runs on its own.
    let mut stopping = Box::pin(server.server.take().expect("running").shutdown());
    let _ = tokio::time::timeout(Duration::ZERO, stopping.as_mut()).await;
    let stopper = tokio::spawn(stopping);
    let late = ["late-1", "late-2", "late-3"];
    for id in late {
        // The server may already have closed: a failed send is an unread frame too.
        let frame = json!({"type":"send","room":"r","id":id,"body":"x","ref":id});
        let _ = c.ws.send(Message::text(frame.to_string())).await;
    }
    let _ =
        c.ws.send(Message::text(r#"{"type":"ping","ref":"p"}"#))
            .await;
    let code = loop {
        match c.next_within(support::WAIT).await {
            Next::Frame(v) => assert!(v.get("ref").is_none(), "a reply to an unread frame: {v}"),
            Next::Closed(code) => break code,
            Next::Timeout => panic!("no close after shutdown"),
        }
    };
    assert_eq!(code, Some(chat_proto::close::GOING_AWAY));
    stopper.await.expect("shutdown");

    // The client reconnects and sends them again, the one already acked too.
    let server = TestServer::start_in(server.dir, |_| {}).await;
    let mut c = Client::resume(&server.url(), &token).await;
    c.join("r").await;
    for id in ["early"].iter().chain(&late) {
        c.send(json!({"type":"send","room":"r","id":id,"body":"x","ref":id}))
            .await;
    }
    let mut acks = BTreeSet::new();
    while acks.len() < 1 + late.len() {
        let v = c.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" {
            let fresh = v["duplicate"] == false;
            acks.insert((v["seq"].as_u64().expect("seq"), v["ref"].to_string(), fresh));
        }
    }
    let expected: BTreeSet<(u64, String, bool)> = [
        (1, "\"early\"".into(), false),
        (2, "\"late-1\"".into(), true),
        (3, "\"late-2\"".into(), true),
        (4, "\"late-3\"".into(), true),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        acks, expected,
        "each message stored once, the unread ones only now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_of_one_user_share_the_rate_limit() {
    let server = TestServer::start(|c| {
        c.rate_per_sec = 1;
        c.rate_burst = 4;
    })
    .await;
    let url = server.url();
    let (mut a, token) = Client::register(&url, "alice").await;
    let mut b = Client::resume(&url, &token).await;
    let mut refused = 0;
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        c.send(json!({"type":"ping"})).await;
        let v: Value = c.recv().await;
        if v["code"] == "rate_limited" {
            assert!(v["retry_after_ms"].as_u64().expect("retry") > 0);
            refused += 1;
        }
    }
    // register + resume's auth used no bucket tokens? auth happens before the user bucket
    // exists, so all 4 burst tokens are for pings: 2 of 6 refused.
    assert_eq!(refused, 2, "the burst is per user, not per connection");
}

#[tokio::test]
async fn history_of_a_room_is_the_same_for_every_member() {
    let server = TestServer::start(|c| c.rate_per_sec = 0).await;
    let url = server.url();
    let (mut a, _) = setup_room(&url, "alice", "h").await;
    send_many(&mut a, "h", "x", 5, "same").await;
    let (mut b, _) = Client::register(&url, "bob").await;
    b.join("h").await;
    b.send(json!({"type":"history","room":"h","limit":200}))
        .await;
    let hb = b.recv_type("history").await;
    a.send(json!({"type":"history","room":"h","limit":200}))
        .await;
    let ha = a.recv_type("history").await;
    assert_eq!(ha["messages"], hb["messages"]);
    let seqs: BTreeSet<u64> = ha["messages"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["seq"].as_u64().expect("s"))
        .collect();
    assert_eq!(seqs, (1..=5).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_only_as_hashes() {
    let server = TestServer::start(|_| {}).await;
    let (_c, token) = Client::register(&server.url(), "alice").await;
    assert_eq!(token.len(), 64, "256 random bits, hex");
    let db = rusqlite::Connection::open(server.dir.path().join("chat.db")).expect("open");
    let stored: Vec<Vec<u8>> = db
        .prepare("SELECT hash FROM tokens")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored, vec![chat_server::auth::token_hash(&token).to_vec()]);
    let dump: String = db
        .query_row(
            "SELECT group_concat(quote(hash)) || group_concat(hex(hash)) FROM tokens",
            [],
            |r| r.get(0),
        )
        .expect("dump");
    assert!(
        !dump.to_lowercase().contains(&token),
        "the raw token is in the database"
    );
    let hash: String = db
        .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
        .expect("user");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_and_at_the_limit_accepted() {
    let server = TestServer::start(|_| {}).await;
    let (mut a, _) = setup_room(&server.url(), "alice", "r").await;
    let max = chat_proto::limits::MAX_BODY_BYTES;
    a.send(json!({"type":"send","room":"r","id":"big","body":"é".repeat(max / 2 + 1)}))
        .await;
    let v = a.recv().await;
    assert_eq!(v["code"], "invalid_body", "{v}");
    a.send(json!({"type":"send","room":"r","id":"fits","body":"é".repeat(max / 2)}))
        .await;
    assert_eq!(a.recv_type("ack").await["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_just_goes_offline() {
    let server = TestServer::start(|_| {}).await;
    let (mut a, _) = setup_room(&server.url(), "alice", "r").await;
    let (mut b, _) = Client::register(&server.url(), "bob").await;
    b.join("r").await;
    a.recv_type("presence").await;
    // Drop the TCP connection without a WebSocket close handshake.
    drop(b);
    let p = a.recv_type("presence").await;
    assert_eq!(p["changes"][0], json!({"user":"bob","status":"offline"}));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(|_| {}).await;
    let mut tcp = raw_upgrade(server.addr).await;
    // A masked text frame (FIN, opcode 1) of two bytes that are not UTF-8; mask key all zero.
    tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .expect("frame");
    let frames = raw_frames(&mut tcp).await;
    let (op, payload) = frames.last().expect("a close frame");
    assert_eq!(*op, 0x8, "{frames:?}");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        chat_proto::close::INVALID_PAYLOAD
    );
}
