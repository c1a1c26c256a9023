//! Several server URLs: the client skips one that refuses connections, and when the server it is
//! on dies it moves to the next URL with an exact catch-up. Until the cluster's shared store is
//! merged, "another node" is a second chat-server started on another port on the same SQLite
//! file once the first was killed with -9 (one server per file at a time).

mod support;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use chat_tui::app::{App, Command, Conn, Event, Settings};
use chat_tui::backoff::BackoffConfig;
use chat_tui::conn::{self, NetConfig, ToNet};
use chat_tui::servers::ServerList;
use futures_util::{SinkExt, StreamExt};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{Value, json};
use support::{TUI, register_and_create, server_binary, start_server, wait_listening};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Generous: the tests run beside others on two cores.
const DEADLINE: Duration = Duration::from_secs(60);

/// A loopback address nothing listens on (bound, then let go).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

fn url(addr: &str) -> String {
    format!("ws://{addr}/ws")
}

fn kill(mut server: Child) {
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_tail_skip_a_closed_port() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (closed, live) = (free_addr(), free_addr());
    let server = start_server(&bin, &dir.path().join("chat.db"), &live);
    wait_listening(&live);
    let token = register_and_create(&live, "bot", "lobby").await;
    let home = dir.path().join("home");
    let tui = || {
        let mut c = std::process::Command::new(TUI);
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("CHAT_TOKEN", &token)
            // Both spellings at once: a comma-separated pair, then one more flag.
            .args(["--server", &format!("{},{}", url(&closed), url(&live))])
            .args(["--server", &url(&closed), "--user", "bot"]);
        c
    };
    let out = tui()
        .args(["send", "lobby", "hello"])
        .output()
        .expect("send");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stored as #1"), "{stderr}");
    assert!(stderr.contains("trying the next server"), "{stderr}");

    let mut child = tui()
        .args(["tail", "lobby", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tail");
    let out = child.stdout.take().expect("stdout");
    let line = std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).map(|_| line)
    })
    .join()
    .expect("reader")
    .expect("a line");
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(
        (v["seq"].as_u64(), v["body"].as_str()),
        (Some(1), Some("hello"))
    );
    kill(server);
}

/// The interactive client's model and network task, driven as main.rs drives them.
struct Client {
    app: App,
    to_net: mpsc::Sender<ToNet>,
    from_net: mpsc::Receiver<Event>,
}

impl Client {
    fn start(servers: ServerList, token: String) -> Self {
        let (to_net, from_ui) = mpsc::channel(256);
        let (to_ui, from_net) = mpsc::channel(1024);
        let settings = Settings {
            bell: false,
            server: servers.label(),
        };
        let cfg = NetConfig {
            servers,
            token,
            backoff: BackoffConfig {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
                stable_after: Duration::from_secs(30),
            },
        };
        tokio::spawn(conn::run(cfg, from_ui, to_ui));
        Self {
            app: App::new(settings, "tfail".into(), BTreeMap::new()),
            to_net,
            from_net,
        }
    }

    async fn apply(&mut self, event: Event) {
        for cmd in self.app.update(event) {
            match cmd {
                Command::Send(frame, reference) => {
                    let _ = self.to_net.send(ToNet::Send(frame, reference)).await;
                }
                Command::Reconnect => {
                    let _ = self.to_net.send(ToNet::Reconnect).await;
                }
                _ => {}
            }
        }
    }

    /// Feeds network events to the model until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.app) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.from_net.recv()).await {
                Ok(Some(ev)) => self.apply(ev).await,
                _ => panic!(
                    "waiting for {what}: server {}, {:?}, notice {:?}",
                    self.app.server, self.app.conn, self.app.notice
                ),
            }
        }
    }

    async fn type_line(&mut self, text: &str) {
        self.apply(Event::Paste(text.into())).await;
        let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
        self.apply(Event::Key(enter)).await;
    }
}

fn bodies(app: &App, room: &str) -> Vec<(u64, String)> {
    app.rooms[room]
        .messages
        .values()
        .map(|m| (m.seq, m.lines.join("\n")))
        .collect()
}

fn settled(app: &App, room: &str, n: usize) -> bool {
    app.conn == Conn::Connected
        && app
            .rooms
            .get(room)
            .is_some_and(|r| r.live && r.pending.is_empty() && r.messages.len() >= n)
}

/// Sends `bodies` as alice over a connection of her own, waiting for each ack.
async fn send_direct(addr: &str, token: &str, bodies: &[&str]) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(addr))
        .await
        .expect("connect");
    let hello = json!({"type":"hello","versions":[1],"token":token});
    ws.send(WsMessage::text(hello.to_string()))
        .await
        .expect("send");
    let join = json!({"type":"join","room":"lobby"});
    ws.send(WsMessage::text(join.to_string()))
        .await
        .expect("send");
    // The body is the id: the server keeps one message per (user, id).
    for body in bodies {
        let f = json!({"type":"send","room":"lobby","id":body,"body":body});
        ws.send(WsMessage::text(f.to_string())).await.expect("send");
    }
    let mut acked = 0;
    while acked < bodies.len() {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an answer")
            .expect("open")
            .expect("a frame");
        if let WsMessage::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            assert_ne!(v["type"], "error", "{v}");
            acked += usize::from(v["type"] == "ack");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_moves_on_when_its_server_dies_and_catches_up_exactly() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let (closed, a, b) = (free_addr(), free_addr(), free_addr());
    let first = start_server(&bin, &db, &a);
    wait_listening(&a);
    let token = register_and_create(&a, "alice", "lobby").await;

    // The first URL refuses connections: the client lands on the second.
    let servers = ServerList::parse(&[url(&closed), url(&a), url(&b)]).expect("urls");
    let mut c = Client::start(servers, token.clone());
    c.until("connected to the second URL", |app| {
        app.conn == Conn::Connected && app.server.ends_with("(2/3)")
    })
    .await;
    c.type_line("/join lobby").await;
    for i in 1..=4 {
        c.type_line(&format!("m{i}")).await;
    }
    c.until("m1..m4 acked", |app| settled(app, "lobby", 4))
        .await;

    // One more, then the server dies before anyone knows whether it was stored.
    c.type_line("m5").await;
    kill(first);
    c.until("the connection to be lost", |app| {
        app.conn != Conn::Connected
    })
    .await;
    // Typed while offline: shown as sending, sent on the next server.
    c.type_line("m6").await;
    c.type_line("m7").await;

    // "Another node": the same database behind the third URL.
    let second = start_server(&bin, &db, &b);
    wait_listening(&b);
    // Someone else writes meanwhile: it reaches the client by replay or live, once either way.
    send_direct(&b, &token, &["x1", "x2"]).await;
    c.until("m1..m7 and x1, x2 on the third URL", |app| {
        app.server.ends_with("(3/3)") && settled(app, "lobby", 9)
    })
    .await;
    // Nothing else trickles in after.
    send_direct(&b, &token, &["x3"]).await;
    c.until("x3", |app| settled(app, "lobby", 10)).await;

    let seen = bodies(&c.app, "lobby");
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{seen:?}");
    let mut texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        &texts[..4],
        ["m1", "m2", "m3", "m4"],
        "acked before the kill, in order: {seen:?}"
    );
    texts.sort_unstable();
    assert_eq!(
        texts,
        ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "x1", "x2", "x3"],
        "every message once: {seen:?}"
    );
    // What the client typed is in its typed order (its resends keep their order).
    let mine: Vec<&str> = seen
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.starts_with('m'))
        .collect();
    assert_eq!(mine, ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    kill(second);
}
