//! The operator's endpoint: /livez, /readyz, /metrics.

mod support;

use std::net::SocketAddr;

use support::{Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw HTTP/1.1 request; returns (status, content type, body).
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (status, ctype, body.to_owned())
}

/// The value of an unlabelled sample in a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_readiness_and_metrics() {
    let server =
        TestServer::start(|c| c.admin_listen = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let admin = server
        .server
        .as_ref()
        .and_then(|s| s.admin_addr)
        .expect("admin endpoint on");
    assert_eq!(get(admin, "GET", "/livez").await.0, 200);
    let (status, _, body) = get(admin, "GET", "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, ctype, page) = get(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert_eq!(sample(&page, "chat_connections"), Some(0.0), "{page}");
    assert!(
        page.contains("# TYPE chat_slow_consumer_disconnects counter"),
        "{page}"
    );
    // A client logs in: the gauges follow.
    let (_alice, _) = Client::register(&server.url(), "alice").await;
    let (_, _, page) = get(admin, "GET", "/metrics").await;
    assert_eq!(sample(&page, "chat_connections"), Some(1.0), "{page}");
    assert_eq!(
        sample(&page, "chat_connections_authenticated"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "chat_connections_unauthenticated"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "chat_outbound_limit_bytes"),
        Some((1u64 << 30) as f64)
    );
    // A message stored, bytes sent, and a connection the client ended.
    let (mut bob, _) = Client::register(&server.url(), "bob").await;
    bob.send(serde_json::json!({"type":"create_room","room":"r"}))
        .await;
    bob.recv_type("room_created").await;
    bob.join("r").await;
    bob.send(serde_json::json!({"type":"send","room":"r","id":"m1","body":"hi"}))
        .await;
    bob.recv_type("ack").await;
    // Its broadcast, queued after the ack, reaches its sender too.
    bob.recv_type("message").await;
    bob.send_text("not json").await;
    bob.recv_type("error").await;
    let (_, _, page) = get(admin, "GET", "/metrics").await;
    for (name, at_least) in [
        (r#"chat_frames_received_total{type="hello"}"#, 2.0),
        (r#"chat_frames_received_total{type="send"}"#, 1.0),
        (r#"chat_frames_received_total{type="join"}"#, 1.0),
        (r#"chat_frames_received_total{type="invalid"}"#, 1.0),
        (r#"chat_frames_sent_total{type="welcome"}"#, 2.0),
        (r#"chat_frames_sent_total{type="ack"}"#, 1.0),
        (r#"chat_frames_sent_total{type="message"}"#, 1.0),
        (r#"chat_frames_sent_total{type="joined"}"#, 1.0),
        (r#"chat_frames_sent_total{type="error"}"#, 1.0),
    ] {
        assert!(
            sample(&page, name).is_some_and(|v| v >= at_least),
            "{name} >= {at_least}: {page}"
        );
    }
    // Known types are listed from the start, at zero until seen.
    assert_eq!(
        sample(&page, r#"chat_frames_received_total{type="decline"}"#),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"chat_frames_sent_total{type="other"}"#),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "chat_users_authenticated"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(sample(&page, "chat_rooms_active"), Some(1.0), "{page}");
    drop(bob);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        let (_, _, page) = get(admin, "GET", "/metrics").await;
        if page.contains("chat_disconnects_total{code=\"client\"} 1") {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(&page, "chat_messages_stored_total"),
        Some(1.0),
        "{page}"
    );
    assert!(
        sample(&page, "chat_sent_bytes_total").is_some_and(|b| b > 100.0),
        "{page}"
    );
    // The store's group commits: registering users and storing the message were batches.
    for name in [
        "chat_store_commit_duration_seconds_count",
        "chat_store_batch_size_count",
    ] {
        assert!(
            sample(&page, name).is_some_and(|n| n >= 1.0),
            "{name}: {page}"
        );
    }
    assert!(
        sample(&page, "chat_store_commit_duration_seconds_sum").is_some_and(|s| s > 0.0),
        "{page}"
    );
    // Nobody was too slow to take their frames.
    assert_eq!(
        sample(
            &page,
            r#"chat_outbound_dropped_frames_total{reason="full"}"#
        ),
        Some(0.0),
        "{page}"
    );
    for reason in ["closed", "discarded"] {
        let name = format!(r#"chat_outbound_dropped_frames_total{{reason="{reason}"}}"#);
        assert!(sample(&page, &name).is_some(), "{name}: {page}");
    }
    every_metric_is_documented(&page);
    assert_eq!(get(admin, "GET", "/nope").await.0, 404);
    assert_eq!(get(admin, "POST", "/metrics").await.0, 405);
}

/// docs/operations.md's `## Metrics` tables list exactly the families `page` has, each with
/// its type, so the list cannot drift from the code.
fn every_metric_is_documented(page: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let doc = std::fs::read_to_string(path).expect("docs/operations.md");
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a ## Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    // (name as documented, type) of each table row.
    let rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix("| `")?.split(" | ");
            let name = cells.next()?.split(['`', '{']).next()?.to_owned();
            Some((name, cells.next()?.to_owned()))
        })
        .collect();
    let families: Vec<(String, String)> = page
        .lines()
        .filter_map(|l| {
            let (name, kind) = l.strip_prefix("# TYPE ")?.split_once(' ')?;
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            Some((name, kind.to_owned()))
        })
        .collect();
    for f in &families {
        assert!(rows.contains(f), "{f:?} is not in the docs' table");
    }
    for r in &rows {
        assert!(families.contains(r), "documented {r:?} is not served");
    }
}

#[tokio::test]
async fn off_unless_asked_for() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(server.server.as_ref().and_then(|s| s.admin_addr), None);
}
