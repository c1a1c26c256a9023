//! Several chat-server processes sharing one PostgreSQL database and one Redis, each test with
//! its own database and key prefix (removed at the end), so tests run in parallel on shared
//! services. Without PostgreSQL or Redis these say SKIPPED, and fail under
//! `CHAT_REQUIRE_SERVICES=1` (CI).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_server::store::postgres::testing::{TempDb, pg_or_skip, service_unreachable};
use serde_json::{Value, json};
use support::proxy::Proxy;
use support::{BIN, Client, Next, url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REDIS: &str = "redis://127.0.0.1:6379";
/// Long enough for a loaded CI machine; every wait below ends as soon as its state is reached.
const LONG: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS").unwrap_or_else(|_| REDIS.into())
}

async fn redis_or_skip() -> Option<redis::aio::MultiplexedConnection> {
    let url = redis_url();
    let conn = async {
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
    };
    match tokio::time::timeout(Duration::from_secs(3), conn).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            service_unreachable("Redis", &url, &e);
            None
        }
        Err(_) => {
            service_unreachable("Redis", &url, &"no answer within 3 s");
            None
        }
    }
}

struct Node {
    child: Child,
    ws: String,
    admin: String,
}

/// Nodes on one fresh database and one key prefix.
struct Cluster {
    db: Option<TempDb>,
    prefix: String,
    redis: redis::aio::MultiplexedConnection,
    nodes: Vec<Option<Node>>,
}

fn spawn_node(db: &str, broker: Option<&str>, prefix: &str, id: &str, extra: &[&str]) -> Node {
    use std::io::BufRead;
    let mut cmd = Command::new(BIN);
    if let Some(broker) = broker {
        cmd.args(["--broker", broker, "--broker-prefix", prefix]);
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--db", db])
        .args(extra)
        .args(["--node-id", id, "--presence-interval", "0"])
        .env(
            "RUST_LOG",
            std::env::var("CHAT_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-server");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut ws, mut admin) = (None, None);
    while ws.is_none() || admin.is_none() {
        let line = lines
            .next()
            .expect("node exited before listening")
            .expect("stderr");
        if let Some(i) = line.find("ws://") {
            let rest = &line[i + 5..];
            ws = Some(rest[..rest.find("/ws").expect("/ws")].to_owned());
        }
        if let Some(i) = line.find("http://") {
            let rest = &line[i + 7..];
            admin = Some(rest[..rest.find(' ').unwrap_or(rest.len())].to_owned());
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if std::env::var("CHAT_TEST_NODE_LOGS").is_ok() {
                eprintln!("{line}");
            }
        }
    });
    Node {
        child,
        ws: url(&ws.expect("ws")),
        admin: admin.expect("admin"),
    }
}

impl Cluster {
    /// `n` nodes, or `None` (SKIPPED) without the services. `broker` overrides the Redis URL
    /// (a proxy in front of it).
    async fn start(n: usize, broker: Option<String>) -> Option<Self> {
        // No rate limit: the load tests send flat out.
        Self::start_with(n, broker, &["--rate-per-sec", "0"]).await
    }

    /// The same with these flags on every node.
    async fn start_with(n: usize, broker: Option<String>, extra: &[&str]) -> Option<Self> {
        let redis = redis_or_skip().await?;
        let db = pg_or_skip().await?;
        let prefix = format!("chat_t_{}_{}:", std::process::id(), rand::random::<u32>());
        let broker = broker.unwrap_or_else(redis_url);
        // No broker at all for a single node: PostgreSQL with the in-process broker.
        let broker = (n > 1).then_some(broker);
        let nodes = (0..n)
            .map(|i| {
                Some(spawn_node(
                    db.url(),
                    broker.as_deref(),
                    &prefix,
                    &format!("n{i}"),
                    extra,
                ))
            })
            .collect();
        Some(Self {
            db: Some(db),
            prefix,
            redis,
            nodes,
        })
    }

    fn ws(&self, i: usize) -> &str {
        &self.nodes[i].as_ref().expect("node running").ws
    }

    fn admin(&self, i: usize) -> &str {
        &self.nodes[i].as_ref().expect("node running").admin
    }

    fn kill9(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("node running");
        node.child.kill().expect("kill -9");
        let _ = node.child.wait();
    }

    fn stop(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("node running");
        // SIGTERM: the graceful stop.
        let _ = Command::new("kill")
            .arg(node.child.id().to_string())
            .status();
        let _ = node.child.wait();
    }

    /// Stops every node and removes the database and every key of the prefix.
    async fn cleanup(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.kill9(i);
            }
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.redis)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut self.redis)
                .await;
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// GET on the admin endpoint: (status, body).
async fn admin_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut out)).await;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Polls `/readyz` until it answers `want`; panics past the deadline.
async fn wait_ready(addr: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let (status, body) = admin_get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} ({body}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads frames until one matches, within the long deadline.
async fn until(c: &mut Client, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_within(left).await {
            Next::Frame(v) if f(&v) => return v,
            Next::Frame(v) => skipped.push(v),
            other => panic!("waiting for {what}: {other:?}; skipped {skipped:?}"),
        }
    }
}

fn is_presence(v: &Value, user: &str, status: &str) -> bool {
    v["type"] == "presence"
        && v["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|m| m["user"] == user && m["status"] == status))
}

/// Messages seen by one reader: seq -> id, and how often each seq came.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<u64, String>,
    twice: Vec<u64>,
}

impl Seen {
    fn take(&mut self, v: &Value) {
        let mut one = |m: &Value| {
            let seq = m["seq"].as_u64().expect("seq");
            if self
                .ids
                .insert(seq, m["id"].as_str().unwrap_or("").to_owned())
                .is_some()
            {
                self.twice.push(seq);
            }
        };
        match v["type"].as_str() {
            Some("message") => one(v),
            Some("joined") | Some("replay") | Some("history") => {
                for m in v["messages"].as_array().into_iter().flatten() {
                    one(m);
                }
            }
            _ => {}
        }
    }

    fn max(&self) -> u64 {
        self.ids.keys().next_back().copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_see_messages_presence_and_typing() {
    let Some(cluster) = Cluster::start(3, None).await else {
        return;
    };
    let (a, b, c) = (cluster.ws(0), cluster.ws(1), cluster.ws(2));
    let (mut ann, _) = Client::register(a, "ann").await;
    ann.send(json!({"type":"create_room","room":"lobby"})).await;
    ann.recv_type("room_created").await;
    ann.join("lobby").await;
    let (mut bob, _) = Client::register(b, "bob").await;
    let joined = bob.join("lobby").await;
    // Bob's `joined` (node 1) shows ann (node 0) present.
    assert!(
        joined["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["user"] == "ann" && m["status"] == "online"),
        "{joined}"
    );
    until(&mut ann, "bob online", |v| is_presence(v, "bob", "online")).await;
    let (mut cat, _) = Client::register(c, "cat").await;
    cat.join("lobby").await;
    until(&mut ann, "cat online", |v| is_presence(v, "cat", "online")).await;
    until(&mut bob, "cat online", |v| is_presence(v, "cat", "online")).await;

    // One message from each node, sent at once: everyone gets all three, in seq order, once.
    for (cl, id) in [(&mut ann, "a1"), (&mut bob, "b1"), (&mut cat, "c1")] {
        cl.send(json!({"type":"send","room":"lobby","id":id,"body":id}))
            .await;
    }
    for cl in [&mut ann, &mut bob, &mut cat] {
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            let v = until(cl, "messages", |v| v["type"] == "message").await;
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
        // Joins take seqs too: the three messages are the three after the log's start here.
        let s0 = seqs[0];
        assert_eq!(seqs, [s0, s0 + 1, s0 + 2], "in seq order, each once");
        match cl.next_within(Duration::from_millis(500)).await {
            Next::Frame(v) => assert_ne!(v["type"], "message", "a message came twice: {v}"),
            Next::Timeout => {}
            Next::Closed(code) => panic!("closed {code:?}"),
        }
    }

    // Typing on node 0 reaches node 1.
    ann.send(json!({"type":"typing","room":"lobby","active":true}))
        .await;
    until(&mut bob, "ann typing", |v| {
        v["type"] == "typing" && v["user"] == "ann" && v["active"] == true
    })
    .await;

    // Dan on two nodes: online while either connection is; offline when both are gone.
    let (mut dan0, token) = Client::register(a, "dan").await;
    dan0.join("lobby").await;
    until(&mut cat, "dan online", |v| is_presence(v, "dan", "online")).await;
    let mut dan1 = Client::resume(b, &token).await;
    dan1.join("lobby").await;
    drop(dan0);
    // Cat must not see dan offline while his node-1 connection is in the room: a marker
    // message from ann bounds the wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ann.send(json!({"type":"send","room":"lobby","id":"mark","body":"mark"}))
        .await;
    let v = until(&mut cat, "the marker", |v| {
        v["type"] == "message" || is_presence(v, "dan", "offline")
    })
    .await;
    assert_eq!(
        v["type"], "message",
        "dan showed offline while on node 1: {v}"
    );
    drop(dan1);
    until(&mut cat, "dan offline", |v| {
        is_presence(v, "dan", "offline")
    })
    .await;

    // The metrics say this node has connections and a broker that is up.
    let (status, metrics) = admin_get(cluster.admin(0), "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("chat_broker_connected 1"), "{metrics}");
    assert!(
        metrics.contains("chat_broker_publish_latency_seconds_count"),
        "{metrics}"
    );
    cluster.cleanup().await;
}

/// Connects with a bearer token; `None` when the node is not there (killed).
async fn try_connect(url: &str, token: &str) -> Option<Client> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().ok()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().ok()?);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .ok()?
    .ok()?;
    Some(Client { ws })
}

/// Sends a frame; false when the node is gone.
async fn try_send(c: &mut Client, v: Value) -> bool {
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .is_ok()
}

/// Connects to the node `at` points at with a bearer token and says hello; on failure moves
/// `at` on to the next node (after a short pause when the node is not there) and gives `None`.
async fn hello_next(urls: &[String], at: &mut usize, token: &str) -> Option<Client> {
    let Some(mut c) = try_connect(&urls[*at % urls.len()], token).await else {
        *at += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        return None;
    };
    if !try_send(&mut c, json!({"type":"hello","versions":[1]})).await {
        *at += 1;
        return None;
    }
    Some(c)
}

/// One sender's work: ids `{name}-{i}`, sent on the first node that answers, moved on to the
/// next when its node dies, resending what was not acked with the same ids.
async fn sender(
    urls: Vec<String>,
    token: String,
    name: String,
    n: usize,
    acked: Arc<Mutex<HashMap<String, u64>>>,
    sent_some: Arc<tokio::sync::Notify>,
) {
    let mut at = 0;
    let deadline = tokio::time::Instant::now() + LONG * 2;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never finished"
        );
        let Some(mut c) = hello_next(&urls, &mut at, &token).await else {
            continue;
        };
        let mut ok = false;
        let mut mine = 0usize;
        if let Next::Frame(w) = c.next_within(Duration::from_secs(10)).await {
            ok = w["type"] == "welcome";
        }
        if ok {
            if !try_send(&mut c, json!({"type":"join","room":"load"})).await {
                at += 1;
                continue;
            }
            for i in 0..n {
                let id = format!("{name}-{i}");
                if acked.lock().expect("acked").contains_key(&id) {
                    continue;
                }
                if !try_send(
                    &mut c,
                    json!({"type":"send","room":"load","id":id,"body":format!("body {id}")}),
                )
                .await
                {
                    break;
                }
                mine += 1;
                if mine.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            loop {
                let done = (0..n).all(|i| {
                    acked
                        .lock()
                        .expect("acked")
                        .contains_key(&format!("{name}-{i}"))
                });
                if done {
                    return;
                }
                match c.next_within(Duration::from_secs(20)).await {
                    Next::Frame(v) if v["type"] == "ack" => {
                        let (id, seq) = (
                            v["id"].as_str().expect("id"),
                            v["seq"].as_u64().expect("seq"),
                        );
                        let mut a = acked.lock().expect("acked");
                        if let Some(prev) = a.insert(id.to_owned(), seq) {
                            assert_eq!(prev, seq, "{id} acked with two seqs");
                        }
                        if a.len() >= 30 {
                            sent_some.notify_waiters();
                        }
                    }
                    Next::Frame(v) if v["type"] == "error" && v["code"] != "unavailable" => {
                        panic!("{name}: {v}")
                    }
                    Next::Frame(_) => {}
                    Next::Closed(_) | Next::Timeout => break,
                }
            }
        }
        at += 1;
    }
}

/// One reader: joined on a node, catching up with since_seq on the next when its node dies;
/// returns what it saw once it has seen `until_seq`.
async fn reader(
    urls: Vec<String>,
    token: String,
    total: Arc<tokio::sync::watch::Receiver<u64>>,
    joined: tokio::sync::mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    let mut epoch: Option<String> = None;
    let mut at = 0;
    let deadline = tokio::time::Instant::now() + LONG * 2;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader never caught up"
        );
        let Some(mut c) = hello_next(&urls, &mut at, &token).await else {
            continue;
        };
        let mut join = json!({"type":"join","room":"load"});
        if let Some(e) = &epoch {
            join["since_seq"] = json!(seen.max());
            join["epoch"] = json!(e);
        }
        if !try_send(&mut c, join).await {
            at += 1;
            continue;
        }
        loop {
            let want = *total.borrow();
            if want > 0 && seen.max() >= want {
                return seen;
            }
            match c.next_within(Duration::from_millis(500)).await {
                Next::Frame(v) => {
                    if v["type"] == "joined" {
                        epoch = v["epoch"].as_str().map(str::to_owned);
                        let _ = joined.try_send(());
                    }
                    seen.take(&v);
                }
                Next::Timeout => {}
                Next::Closed(_) => break,
            }
        }
        at += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_and_doubles_nothing() {
    let Some(mut cluster) = Cluster::start(3, None).await else {
        return;
    };
    let urls: Vec<String> = (0..3).map(|i| cluster.ws(i).to_owned()).collect();
    let (mut owner, _) = Client::register(&urls[0], "owner").await;
    owner
        .send(json!({"type":"create_room","room":"load"}))
        .await;
    owner.recv_type("room_created").await;
    let n = 150;
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let sent_some = Arc::new(tokio::sync::Notify::new());
    let (total_tx, total_rx) = tokio::sync::watch::channel(0u64);
    let total_rx = Arc::new(total_rx);
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    // Node k first, then the others: the sender and reader of node 2 move when it dies.
    let order = |k: usize| -> Vec<String> { (0..3).map(|j| urls[(k + j) % 3].clone()).collect() };
    // Readers are in the room before anything is sent: each must see every message.
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel(16);
    for (k, at) in urls.iter().enumerate() {
        let (_, rt) = Client::register(at, &format!("r{k}")).await;
        readers.push(tokio::spawn(reader(
            order(k),
            rt,
            total_rx.clone(),
            joined_tx.clone(),
        )));
    }
    for _ in 0..3 {
        joined_rx.recv().await.expect("a reader joined");
    }
    for k in 0..3 {
        let order = order(k);
        let (_, st) = Client::register(&order[0], &format!("s{k}")).await;
        senders.push(tokio::spawn(sender(
            order,
            st,
            format!("s{k}"),
            n,
            acked.clone(),
            sent_some.clone(),
        )));
    }
    // Kill node 2 once acks are flowing.
    let wait = sent_some.notified();
    let _ = tokio::time::timeout(LONG, wait).await;
    cluster.kill9(2);
    let at_kill = acked.lock().expect("acked").len();
    assert!(
        at_kill < 3 * n,
        "the node died under load, not after it ({at_kill} acked)"
    );
    for s in senders {
        s.await.expect("sender");
    }
    let acked = acked.lock().expect("acked").clone();
    assert_eq!(acked.len(), 3 * n, "every message acked");
    let total = 3 * n as u64;
    let mut seqs: Vec<u64> = acked.values().copied().collect();
    seqs.sort_unstable();
    // One seq per message. Not gap-free among messages: a reader or sender that joins the room
    // for the first time during the load takes a seq for its join (the log's own gap-freeness
    // is the store suite's).
    assert_eq!(seqs.len() as u64, total, "every message acked once");
    let mut distinct = seqs.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), seqs.len(), "one seq per message");
    let last = *seqs.last().expect("acked");
    // The readers stop once they have seen the last seq.
    total_tx.send(last).expect("readers");
    for (k, r) in readers.into_iter().enumerate() {
        let seen = r.await.expect("reader");
        assert!(
            seen.twice.is_empty(),
            "reader {k} saw twice: {:?}",
            seen.twice
        );
        let missing: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| !seen.ids.contains_key(s))
            .collect();
        assert!(missing.is_empty(), "reader {k} missed {missing:?}");
        for (id, seq) in &acked {
            assert_eq!(seen.ids.get(seq), Some(id), "seq {seq}");
        }
    }
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_a_gap_filled_from_the_database() {
    if redis_or_skip().await.is_none() {
        return;
    }
    let target = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = Proxy::start(target).await;
    let Some(cluster) = Cluster::start(2, Some(format!("redis://{}", proxy.addr))).await else {
        return;
    };
    wait_ready(cluster.admin(0), 200).await;
    let (mut ann, _) = Client::register(cluster.ws(0), "ann").await;
    ann.send(json!({"type":"create_room","room":"r"})).await;
    ann.recv_type("room_created").await;
    ann.join("r").await;
    let (mut bob, _) = Client::register(cluster.ws(1), "bob").await;
    bob.join("r").await;
    // A second room, deleted while Redis is away: bob's node must learn it from the database.
    ann.send(json!({"type":"create_room","room":"gone"})).await;
    ann.recv_type("room_created").await;
    bob.join("gone").await;
    ann.send(json!({"type":"send","room":"r","id":"before","body":"x"}))
        .await;
    let first = until(&mut bob, "the first message", |v| v["type"] == "message").await;
    // Seqs number every event of the room (bob's join took one), so count from this one.
    let first = first["seq"].as_u64().expect("seq");

    proxy.cut();
    let body = wait_ready(cluster.admin(0), 503).await;
    assert!(body.contains("broker"), "{body}");
    // Ann's node keeps serving her: sends are acked while Redis is away.
    for i in 0..5 {
        ann.send(json!({"type":"send","room":"r","id":format!("m{i}"),"body":"x"}))
            .await;
        until(&mut ann, "ack", |v| v["type"] == "ack").await;
    }
    ann.send(json!({"type":"delete_room","room":"gone","ref":"del"}))
        .await;
    let v = until(&mut ann, "the deletion's answer", |v| v["ref"] == "del").await;
    assert_eq!(v["type"], "ok", "{v}");
    proxy.restore();
    wait_ready(cluster.admin(0), 200).await;
    wait_ready(cluster.admin(1), 200).await;
    // Bob's node catches the room up from the database: the five seqs after the first, each once.
    // And learns that "gone" went.
    let mut seqs = Vec::new();
    let mut deleted = false;
    while seqs.len() < 5 || !deleted {
        let v = until(&mut bob, "caught-up messages and the deletion", |v| {
            v["type"] == "message" || v["type"] == "room_deleted"
        })
        .await;
        if v["type"] == "room_deleted" {
            assert_eq!(v["room"], "gone", "{v}");
            deleted = true;
        } else {
            assert_eq!(v["room"], "r", "{v}");
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(seqs, ((first + 1)..=(first + 5)).collect::<Vec<_>>());
    // And live delivery works again.
    ann.send(json!({"type":"send","room":"r","id":"after","body":"x"}))
        .await;
    let v = until(&mut bob, "the live message", |v| v["type"] == "message").await;
    assert_eq!(v["seq"], first + 6, "{v}");
    let (_, metrics) = admin_get(cluster.admin(1), "/metrics").await;
    let reconnects = metrics
        .lines()
        .find(|l| l.starts_with("chat_broker_reconnects_total "))
        .and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(reconnects >= 1, "{metrics}");
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_go_offline_within_the_bound_and_a_stopped_nodes_at_once() {
    let Some(mut cluster) = Cluster::start(3, None).await else {
        return;
    };
    let (mut ann, _) = Client::register(cluster.ws(0), "ann").await;
    ann.send(json!({"type":"create_room","room":"p"})).await;
    ann.recv_type("room_created").await;
    ann.join("p").await;
    let (mut bob, _) = Client::register(cluster.ws(1), "bob").await;
    bob.join("p").await;
    until(&mut ann, "bob online", |v| is_presence(v, "bob", "online")).await;
    let (mut cat, _) = Client::register(cluster.ws(2), "cat").await;
    cat.join("p").await;
    until(&mut ann, "cat online", |v| is_presence(v, "cat", "online")).await;

    // A graceful stop: at once (well within the TTL).
    let t = tokio::time::Instant::now();
    cluster.stop(2);
    until(&mut ann, "cat offline", |v| {
        is_presence(v, "cat", "offline")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );

    // kill -9: within the TTL (30 s) plus a renewal period, never for good.
    let t = tokio::time::Instant::now();
    cluster.kill9(1);
    until(&mut ann, "bob offline", |v| {
        is_presence(v, "bob", "offline")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(45),
        "took {:?}",
        t.elapsed()
    );
    drop(bob);
    drop(cat);
    cluster.cleanup().await;
}

/// `chat-conformance` against `urls` (its clients spread over them): asserts `N passed, 0 failed`.
fn conformance(urls: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-conformance"))
        .args(["--url", &urls.join(","), "--assume", "presence-interval=0"])
        .args(["--wait", "30"])
        .output()
        .expect("run chat-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(last.contains(" passed, 0 failed"), "{stdout}");
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 16, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_suite_passes_on_one_postgresql_node() {
    let Some(cluster) = Cluster::start_with(1, None, &[]).await else {
        return;
    };
    let url = cluster.ws(0).to_owned();
    tokio::task::spawn_blocking(move || conformance(&[&url]))
        .await
        .expect("conformance");
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_suite_passes_spread_over_three_nodes() {
    let Some(cluster) = Cluster::start_with(3, None, &[]).await else {
        return;
    };
    let urls: Vec<String> = (0..3).map(|i| cluster.ws(i).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        conformance(&urls.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("conformance");
    cluster.cleanup().await;
}
