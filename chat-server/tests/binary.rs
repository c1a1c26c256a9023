//! Tests of the `chat-server` binary itself: crash durability, signals, the CLI.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{BIN, Client, Next, spawn_server, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let (mut server, addr) = spawn_server(&db, &["--rate-per-sec", "0"]);
    let (mut c, token) = Client::register(&url(&addr), "alice").await;
    c.send(json!({"type":"create_room","room":"r"})).await;
    c.recv_type("room_created").await;
    let epoch = c.join("r").await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();

    // Pipeline 400 sends and kill -9 while they are still being stored: after 150 acks.
    let total = 400;
    for i in 0..total {
        c.send(json!({"type":"send","room":"r","id":format!("k{i}"),"body":format!("body {i}")}))
            .await;
    }
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    while acked.len() < 150 {
        let v = c.recv().await;
        if v["type"] == "ack" {
            acked.insert(
                v["id"].as_str().expect("id").to_owned(),
                v["seq"].as_u64().expect("seq"),
            );
        }
    }
    server.kill().expect("kill -9");
    server.wait().expect("reap");
    // Acks already on the wire when the process died count too.
    while let Next::Frame(v) = c.next_within(Duration::from_millis(500)).await {
        if v["type"] == "ack" {
            acked.insert(
                v["id"].as_str().expect("id").to_owned(),
                v["seq"].as_u64().expect("seq"),
            );
        }
    }

    let (mut server, addr) = spawn_server(&db, &["--rate-per-sec", "0"]);
    let mut c = Client::connect_with(&url(&addr), Some(&token))
        .await
        .expect("token survives");
    c.send(json!({"type":"hello","versions":[1]})).await;
    assert_eq!(c.recv().await["user"], "alice");
    c.send(json!({"type":"join","room":"r","since_seq":0,"epoch":epoch}))
        .await;
    let mut stored: Vec<(u64, String)> = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "joined" || v["type"] == "replay" {
            for m in v["messages"].as_array().expect("messages") {
                stored.push((
                    m["seq"].as_u64().expect("seq"),
                    m["id"].as_str().expect("id").to_owned(),
                ));
            }
            if v["complete"] == true {
                break;
            }
        }
    }
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "seqs are gap-free"
    );
    let by_id: BTreeMap<&str, u64> = stored.iter().map(|(s, id)| (id.as_str(), *s)).collect();
    assert_eq!(by_id.len(), stored.len(), "no id stored twice");
    for (id, seq) in &acked {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "acknowledged {id} (seq {seq}) lost"
        );
    }
    eprintln!(
        "acked {} of {total} before the kill; {} stored",
        acked.len(),
        stored.len()
    );

    // Resending everything with the same ids stores each message exactly once.
    for i in 0..total {
        c.send(json!({"type":"send","room":"r","id":format!("k{i}"),"body":format!("body {i}")}))
            .await;
    }
    let mut dupes = 0;
    let mut acks = 0;
    while acks < total {
        let v = c.recv().await;
        if v["type"] == "ack" {
            acks += 1;
            if v["duplicate"] == true {
                dupes += 1;
            }
        }
    }
    assert_eq!(
        dupes,
        stored.len(),
        "every stored message is recognised as a resend"
    );
    c.send(json!({"type":"history","room":"r","limit":1})).await;
    let h = c.recv_type("history").await;
    assert_eq!(
        h["messages"][0]["seq"], total as u64,
        "{total} messages, each once"
    );
    server.kill().expect("kill");
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, addr) = spawn_server(&dir.path().join("chat.db"), &[]);
    let (mut c, _) = Client::register(&url(&addr), "alice").await;
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    assert_eq!(c.closed_code().await, Some(chat_proto::close::GOING_AWAY));
    let out = server.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "exit status after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_and_user_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let add = |name: &str, password: &str| {
        let mut child = Command::new(BIN)
            .args(["--db"])
            .arg(&db)
            .args(["user", "add", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        child.wait_with_output().expect("wait")
    };
    let out = add("carol", "carols password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user carol"));
    let again = add("carol", "carols password");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let short = add("dave", "short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("8-1024"));
    let bad = add("Dave", "long enough password");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usernames are"));

    let (mut server, addr) = spawn_server(&db, &["--registration", "closed"]);
    let mut c = Client::connect(&url(&addr)).await;
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    c.send(json!({"type":"register","username":"mallory","password":"let me in please"}))
        .await;
    assert_eq!(c.recv().await["code"], "registration_closed");
    c.send(json!({"type":"login","username":"carol","password":"carols password"}))
        .await;
    assert_eq!(c.recv().await["type"], "auth_ok");
    server.kill().expect("kill");
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_stops_it_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, addr) = spawn_server(&dir.path().join("chat.db"), &[]);
    let (mut c, _) = Client::register(&url(&addr), "alice").await;
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .expect("kill -INT");
    assert_eq!(c.closed_code().await, Some(chat_proto::close::GOING_AWAY));
    assert_eq!(
        server.wait_with_output().expect("wait").status.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_fallbacks_and_the_default_database_location() {
    // No --db and no CHAT_DB: the database goes to the platform data directory.
    let home = tempfile::tempdir().expect("home");
    let data = home.path().join("data");
    let mut child = Command::new(BIN)
        .env("CHAT_LISTEN", "127.0.0.1:0")
        .env_remove("CHAT_DB")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", &data)
        .env("CHAT_REGISTRATION", "closed")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = loop {
        let l = lines.next().expect("a log line").expect("read");
        if l.contains("ws://") {
            break l;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let expected = data.join("chat").join("chat.db");
    assert!(line.contains(&expected.display().to_string()), "{line}");
    assert!(expected.exists(), "{} was not created", expected.display());
    let addr = {
        let i = line.find("ws://").expect("ws://") + 5;
        line[i..i + line[i..].find("/ws").expect("/ws")].to_owned()
    };
    assert_ne!(addr, "127.0.0.1:7878", "CHAT_LISTEN was ignored");
    // CHAT_REGISTRATION=closed took effect.
    let mut c = Client::connect(&url(&addr)).await;
    c.send(json!({"type":"hello","versions":[1]})).await;
    c.recv_type("welcome").await;
    c.send(json!({"type":"register","username":"eve","password":"long enough pw"}))
        .await;
    assert_eq!(c.recv().await["code"], "registration_closed");
    child.kill().expect("kill");
    let _ = child.wait();
}

#[test]
fn help_lists_every_flag_and_bad_flags_say_what_to_do() {
    let out = Command::new(BIN).arg("--help").output().expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "CHAT_LISTEN",
        "127.0.0.1:7878",
        "--db",
        "CHAT_DB",
        "--registration",
        "--ping-interval",
        "--ping-timeout",
        "--auth-timeout",
        "--typing-timeout",
        "--rate-per-sec",
        "--rate-burst",
        "--rate-strikes",
        "--outbound-queue",
        "--history-on-join",
        "--max-replay",
        "--max-connections",
        "user",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    let out = Command::new(BIN).arg("--lisen").output().expect("bad flag");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lisen") && err.contains("--listen"), "{err}");
    let out = Command::new(BIN)
        .args(["--ping-interval", "soon"])
        .output()
        .expect("bad value");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("500ms"));
}

#[test]
fn an_unusable_listen_address_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr, "--db"])
        .arg(dir.path().join("chat.db"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("on {addr}")) && err.contains("in use"),
        "{err}"
    );
}
