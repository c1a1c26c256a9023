//! The server as a process on a host: paused and resumed, started twice on one file, its files'
//! permissions, what its logs may hold.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;
use support::{BIN, Client, Next, spawn_server, spawn_server_logged, url};

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The process state letter from /proc (`T` when stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // pid (comm) STATE ...: the state follows the last ')'.
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim_start().chars().next())
        .expect("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_for_longer_than_the_heartbeat_closes_no_one_at_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = spawn_server(
        &dir.path().join("chat.db"),
        &["--ping-interval", "1s", "--ping-timeout", "2s"],
    );
    let url = url(&addr);
    // Clients that keep reading, so they answer every ping; each reports how it ended.
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<(usize, Option<u16>)>();
    let mut pingers = Vec::new();
    for i in 0..8 {
        let (mut c, _) = Client::register(&url, &format!("paused{i}")).await;
        let tx = tx.clone();
        pingers.push(tokio::spawn(async move {
            loop {
                match c.next_within(Duration::from_secs(3600)).await {
                    Next::Closed(code) => {
                        let _ = tx.send((i, code));
                        return;
                    }
                    _ => continue,
                }
            }
        }));
    }
    // Stopped for 6 s: three times what a silent client is allowed (1 s + 2 s).
    let pid = server.id();
    signal(pid, "-STOP");
    while state(pid) != 'T' {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(pid, "-CONT");
    // Let several ping rounds pass after the resume: nobody is closed.
    let mut probe = Client::connect(&url).await;
    probe.send(json!({"type":"hello","versions":[1]})).await;
    assert_eq!(
        probe.recv().await["type"],
        "welcome",
        "the server runs again"
    );
    match tokio::time::timeout(Duration::from_secs(5), ended.recv()).await {
        Err(_) => {}
        Ok(closed) => panic!("a client was closed after the pause: {closed:?}"),
    }
    for p in pingers {
        p.abort();
    }
    server.kill().expect("kill");
    server.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let (mut first, addr) = spawn_server(&db, &[]);
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .output()
        .expect("second");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another chat-server is already serving"),
        "{err}"
    );
    // The first goes on as if nothing happened.
    let (mut c, _) = Client::register(&url(&addr), "alice").await;
    c.send(json!({"type":"create_room","room":"r"})).await;
    c.recv_type("room_created").await;
    c.join("r").await;
    c.send(json!({"type":"send","room":"r","id":"m1","body":"still fine"}))
        .await;
    assert_eq!(c.recv_type("ack").await["seq"], 1);
    // `user add` beside a running server is allowed.
    let mut add = std::process::Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .args(["user", "add", "bob"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("user add");
    use std::io::Write;
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"a long password\n")
        .expect("password");
    assert!(add.wait().expect("wait").success());
    first.kill().expect("kill");
    first.wait().expect("reap");
    // Once the first is gone (even killed with -9), the file can be served again.
    let (mut again, _) = spawn_server(&db, &[]);
    again.kill().expect("kill");
    again.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_its_directory_are_private_to_the_server_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("chat.db");
    let (mut server, addr) = spawn_server(&db, &[]);
    drop(Client::register(&url(&addr), "alice").await);
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&db), 0o600, "the database");
    let wal = data.join("chat.db-wal");
    assert!(wal.exists(), "a registration was written to the WAL");
    assert_eq!(mode(&wal), 0o600, "the WAL");
    server.kill().expect("kill");
    server.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_password_and_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr, log) = spawn_server_logged(&dir.path().join("chat.db"), &[], "trace");
    let mut c = Client::connect(&url(&addr)).await;
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    let password = "zebra-staple-93117";
    c.send(json!({"type":"register","username":"alice","password":password}))
        .await;
    let token = c.recv_type("auth_ok").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut again = Client::connect(&url(&addr)).await;
    again
        .send(json!({"type":"hello","versions":[1],"token":token}))
        .await;
    again.recv_type("welcome").await;
    signal(server.id(), "-TERM");
    server.wait().expect("reap");
    let log = log.lock().expect("log").join("\n");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(!log.contains(password), "the password is in the log");
    assert!(!log.contains(&token), "the token is in the log");
}
