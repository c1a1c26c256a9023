//! What the integration tests share: a server on an ephemeral port and a small JSON client.

#![allow(dead_code)] // each test binary uses part of this module

pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_server::config::Config;
use chat_server::server::{RunningServer, start};
use chat_server::store::sqlite::SqliteStore;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server on 127.0.0.1:0 with its own database in a temp dir.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), tune).await
    }

    /// A server on the database `dir/chat.db`, which a test may have filled beforehand.
    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> Self {
        let db = dir.path().join("chat.db");
        let mut config = Config::new("127.0.0.1:0".parse().expect("addr"), db.clone());
        tune(&mut config);
        let store = SqliteStore::open(&db).expect("open store");
        let server = start(config, Arc::new(store)).await.expect("start");
        let addr = server.addr;
        Self {
            server: Some(server),
            addr,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test client speaking JSON frames.
pub struct Client {
    pub ws: Ws,
}

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    Closed(Option<u16>),
    Timeout,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, None).await.expect("connect")
    }

    /// Connects, optionally with a bearer token; an HTTP refusal comes back as its status.
    pub async fn connect_with(url: &str, bearer: Option<&str>) -> Result<Self, u16> {
        let mut req = url.into_client_request().expect("request");
        if let Some(t) = bearer {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Connects with a 4 KiB socket receive buffer: a client that stops reading then leaves its
    /// bytes in the server's queue instead of in the kernel's buffers.
    pub async fn connect_small_buffer(url: &str, addr: SocketAddr) -> Self {
        Self::connect_small_buffer_from(url, addr, [127, 0, 0, 1]).await
    }

    /// The same, from a chosen 127.0.0.x source address.
    pub async fn connect_small_buffer_from(url: &str, addr: SocketAddr, source: [u8; 4]) -> Self {
        Self::connect_from_with(url, addr, source, Some(4096)).await
    }

    /// Connects from a chosen 127.0.0.x source address.
    pub async fn connect_from(url: &str, addr: SocketAddr, source: [u8; 4]) -> Self {
        Self::connect_from_with(url, addr, source, None).await
    }

    async fn connect_from_with(
        url: &str,
        addr: SocketAddr,
        source: [u8; 4],
        rcvbuf: Option<u32>,
    ) -> Self {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind((std::net::Ipv4Addr::from(source), 0).into())
            .expect("bind source");
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).expect("rcvbuf");
        }
        let tcp = sock.connect(addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("upgrade");
        Self { ws }
    }

    /// hello + register on this connection.
    pub async fn register_here(&mut self, user: &str) {
        self.send(json!({"type":"hello","versions":[1]})).await;
        assert_eq!(self.recv().await["type"], "welcome");
        self.send(json!({"type":"register","username":user,"password":"correct horse"}))
            .await;
        assert_eq!(self.recv().await["type"], "auth_ok");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t)).await.expect("send");
    }

    pub async fn send_message(&mut self, m: Message) {
        // The server may close before a large frame is fully written; that is the test's point.
        let _ = self.ws.send(m).await;
    }

    /// The next text frame or close, waiting at most `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Next {
        // One deadline for the whole wait: pings skipped below must not restart it.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => return Next::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Next::Frame(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Next::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) => return Next::Closed(None),
            }
        }
    }

    /// The next frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(WAIT).await {
            Next::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Skips frames until one of type `t`.
    pub async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == t {
                return v;
            }
        }
    }

    /// Reads until the close frame, returning its code (frames before it are dropped).
    pub async fn closed_code(&mut self) -> Option<u16> {
        loop {
            match self.next_within(WAIT).await {
                Next::Frame(_) => continue,
                Next::Closed(code) => return code,
                Next::Timeout => panic!("expected the connection to close"),
            }
        }
    }

    /// hello + register; returns the token.
    pub async fn register(url: &str, user: &str) -> (Self, String) {
        let mut c = Self::connect(url).await;
        c.send(json!({"type":"hello","versions":[1]})).await;
        assert_eq!(c.recv().await["type"], "welcome");
        c.send(json!({"type":"register","username":user,"password":"correct horse"}))
            .await;
        let ok = c.recv().await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        let token = ok["token"].as_str().expect("token").to_owned();
        (c, token)
    }

    /// Connects with a token in hello.
    pub async fn resume(url: &str, token: &str) -> Self {
        let mut c = Self::connect(url).await;
        c.send(json!({"type":"hello","versions":[1],"token":token}))
            .await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        assert!(w["user"].is_string(), "{w}");
        c
    }

    /// Joins and returns the `joined` frame (frames before it are dropped).
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","room":room})).await;
        self.recv_type("joined").await
    }
}

/// Registers `owner`, creates `room` and joins it; returns the client and the room's epoch.
pub async fn setup_room(url: &str, owner: &str, room: &str) -> (Client, String) {
    let (mut c, _) = Client::register(url, owner).await;
    c.send(json!({"type":"create_room","room":room})).await;
    c.recv_type("room_created").await;
    let joined = c.join(room).await;
    (c, joined["epoch"].as_str().expect("epoch").to_owned())
}

/// Sends `n` messages with ids `{prefix}{i}` without waiting for acks; returns when all are acked.
pub async fn send_many(c: &mut Client, room: &str, prefix: &str, n: u64, body: &str) -> Vec<u64> {
    for i in 0..n {
        c.send(json!({"type":"send","room":room,"id":format!("{prefix}{i}"),"body":body}))
            .await;
    }
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        let v = c.recv().await;
        if v["type"] == "ack" {
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
        assert_ne!(v["type"], "error", "{v}");
    }
    seqs
}

/// The chat-server binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

/// Starts the binary on an ephemeral port and returns it with the address it logged.
pub fn spawn_server(db: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let (child, addr, _) = spawn_server_logged(db, extra, "info");
    (child, addr)
}

/// The same with `RUST_LOG` set to `log`; also returns every line it writes to stderr.
pub fn spawn_server_logged(
    db: &std::path::Path,
    extra: &[&str],
    log: &str,
) -> (
    std::process::Child,
    String,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(extra)
        .env("RUST_LOG", log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chat-server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("read stderr");
        seen.lock().expect("log").push(line.clone());
        if let Some(i) = line.find("ws://") {
            let rest = &line[i + 5..];
            break rest[..rest.find("/ws").expect("/ws")].to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let keep = seen.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().expect("log").push(line);
        }
    });
    (child, addr, seen)
}

pub fn url(addr: &str) -> String {
    format!("ws://{addr}/ws")
}
