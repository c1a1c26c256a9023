//! The chat-server binary on PostgreSQL, through a TCP proxy the test cuts and restores: sends
//! while the database is unreachable get the documented `unavailable` error and never an ack,
//! and afterwards history holds exactly the acked messages, each once. A stalled database (it
//! accepts but never answers) fails sends within the deadlines instead of hanging them.

mod support;

use std::path::Path;
use std::time::Duration;

use chat_server::store::postgres::testing::{TempDb, pg_or_skip};
use serde_json::{Value, json};
use support::proxy::Proxy;
use support::{Client, Next, setup_room, spawn_server, url};

/// Sends one message (its id as its `ref`) and returns the answer to it: an ack or an error.
async fn send(c: &mut Client, id: &str) -> Value {
    c.send(json!({"type":"send","room":"r","id":id,"body":format!("body {id}"),"ref":id}))
        .await;
    loop {
        match c.next_within(Duration::from_secs(30)).await {
            Next::Frame(v) if v["type"] == "ack" && v["id"] == id => return v,
            Next::Frame(v) if v["type"] == "error" && v["ref"] == id => return v,
            Next::Frame(_) => continue,
            other => panic!("no answer to send {id}: {other:?}"),
        }
    }
}

/// A proxy in front of `db`'s server, and `db`'s URL through it.
async fn proxy_for(db: &TempDb) -> (Proxy, String) {
    let config: tokio_postgres::Config = db.url().parse().expect("url");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let user = config.get_user().unwrap_or("postgres");
    let url = format!("postgres://{user}@{}/{}", proxy.addr, db.name());
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_fails_sends_in_time_instead_of_hanging_them() {
    let Some(db) = pg_or_skip().await else { return };
    let (proxy, via_proxy) = proxy_for(&db).await;
    let (mut server, addr) = spawn_server(Path::new(&via_proxy), &["--rate-per-sec", "0"]);
    let (mut c, _) = setup_room(&url(&addr), "alice", "r").await;
    assert_eq!(send(&mut c, "m0").await["type"], "ack");
    proxy.stall();
    let started = std::time::Instant::now();
    let v = send(&mut c, "m1").await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "answered within the deadlines: {:?}",
        started.elapsed()
    );
    proxy.restore();
    let mut v = send(&mut c, "m1").await;
    for _ in 0..5 {
        if v["type"] == "ack" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        v = send(&mut c, "m1").await;
    }
    assert_eq!(
        (v["type"].as_str(), v["seq"].as_u64()),
        (Some("ack"), Some(2)),
        "{v}"
    );
    server.kill().expect("kill");
    let _ = server.wait();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_sends_unavailable_and_never_a_false_ack() {
    let Some(db) = pg_or_skip().await else { return };
    let (proxy, via_proxy) = proxy_for(&db).await;
    let (mut server, addr) = spawn_server(Path::new(&via_proxy), &["--rate-per-sec", "0"]);
    let (mut c, _) = setup_room(&url(&addr), "alice", "r").await;

    let mut acked = Vec::new();
    for i in 0..3 {
        let id = format!("before{i}");
        let v = send(&mut c, &id).await;
        assert_eq!(v["type"], "ack", "{v}");
        acked.push(id);
    }

    proxy.cut();
    for i in 0..3 {
        let id = format!("during{i}");
        let v = send(&mut c, &id).await;
        assert_eq!(
            v["type"], "error",
            "no ack while the database is cut off: {v}"
        );
        assert_eq!(v["code"], "unavailable", "{v}");
    }
    c.send(json!({"type":"history","room":"r","ref":"h"})).await;
    let v = c.recv_type("error").await;
    assert_eq!(
        (v["code"].as_str(), v["ref"].as_str()),
        (Some("unavailable"), Some("h")),
        "{v}"
    );

    proxy.restore();
    // The same ids again (as a client does after `unavailable`), then new ones. The first
    // batch after the restore may still meet the pool's last dead connection: resend then.
    for id in (0..3)
        .map(|i| format!("during{i}"))
        .chain((0..3).map(|i| format!("after{i}")))
    {
        let mut v = send(&mut c, &id).await;
        for _ in 0..5 {
            if v["type"] == "ack" {
                break;
            }
            assert_eq!(v["code"], "unavailable", "{v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            v = send(&mut c, &id).await;
        }
        assert_eq!(v["type"], "ack", "{v}");
        assert_eq!(
            v["duplicate"], false,
            "nothing was stored during the cut: {v}"
        );
        acked.push(id);
    }

    c.send(json!({"type":"history","room":"r","limit":100}))
        .await;
    let h = c.recv_type("history").await;
    let stored: Vec<(u64, String)> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().expect("seq"),
                m["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = acked.into_iter().zip(1..).map(|(id, s)| (s, id)).collect();
    assert_eq!(
        stored, want,
        "exactly the acked messages, each once, gap-free"
    );

    server.kill().expect("kill");
    let _ = server.wait();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_works_on_postgres() {
    use std::io::Write;
    let Some(db) = pg_or_skip().await else { return };
    let add = || {
        let mut child = std::process::Command::new(support::BIN)
            .args(["--db", db.url(), "user", "add", "alice"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"a long password\n")
            .expect("password");
        child.wait_with_output().expect("wait")
    };
    let out = add();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "created user alice\n");
    let again = add();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    db.cleanup().await;
}
