//! What chat-tui's integration tests share: the chat-server binary and a way to start it.

#![allow(dead_code)] // each test binary uses part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod tmux;

pub const TUI: &str = env!("CARGO_BIN_EXE_chat-tui");

/// chat-server is another package's binary: build it (a no-op when it is fresh) and find it
/// next to this test's target directory.
pub fn server_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "chat-server", "--bin", "chat-server"])
        .status()
        .expect("cargo build chat-server");
    assert!(status.success());
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("chat-server")
}

pub fn start_server(bin: &Path, db: &Path, addr: &str) -> Child {
    start_server_with(bin, db, addr, &[])
}

/// [`start_server`] with more flags (`--tls-cert`, …).
pub fn start_server_with(bin: &Path, db: &Path, addr: &str, extra: &[&str]) -> Child {
    Command::new(bin)
        .args(["--listen", addr, "--db"])
        .arg(db)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chat-server")
}

pub fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "chat-server did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts chat-server on a free loopback port with its database in `dir`; returns it and its
/// address once it accepts connections.
pub fn start_on_free_port(bin: &Path, dir: &Path) -> (Child, String) {
    start_on_free_port_with(bin, dir, &[])
}

/// [`start_on_free_port`] with more flags.
pub fn start_on_free_port_with(bin: &Path, dir: &Path, extra: &[&str]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = start_server_with(bin, &dir.join("chat.db"), &addr, extra);
    wait_listening(&addr);
    (server, addr)
}

/// Registers a user and creates a room over a raw WebSocket; returns the token.
pub async fn register_and_create(addr: &str, user: &str, room: &str) -> String {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    register_and_create_on(ws, user, room).await
}

/// The same on a WebSocket already open (plain or TLS).
pub async fn register_and_create_on<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    user: &str,
    room: &str,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for f in [
        serde_json::json!({"type":"hello","versions":[1]}),
        serde_json::json!({"type":"register","username":user,"password":"long enough pw"}),
        serde_json::json!({"type":"create_room","room":room}),
    ] {
        futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::text(f.to_string()),
        )
        .await
        .expect("send");
    }
    let mut token = None;
    while let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) =
        futures_util::StreamExt::next(&mut ws).await
    {
        let v: serde_json::Value = serde_json::from_str(&t).expect("json");
        if v["type"] == "auth_ok" {
            token = v["token"].as_str().map(str::to_owned);
        }
        if v["type"] == "room_created" {
            break;
        }
    }
    token.expect("token")
}
