//! The Python client printed in docs/protocol.md, run as a newcomer would run it, against a real
//! server: the document's own example must work. Needs python3 with `websockets` (`.ci/run`
//! installs it); a missing one fails the test rather than skipping it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, TestServer};

fn python_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md");
    let start = doc.find("```python\n").expect("a python example") + "```python\n".len();
    let len = doc[start..]
        .find("\n```")
        .expect("end of the python example");
    doc[start..start + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_python_client_works() {
    let server = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, python_example()).expect("write script");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["pyuser", "python password", "pyroom"])
        .env("CHAT_URL", server.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (.ci/run installs it with websockets)");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("stored as seq");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let started = Instant::now();
    while !lines.is_finished() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The script's message reaches a second client, proving it was stored and broadcast.
    let (mut watcher, _) = Client::register(&server.url(), "watcher").await;
    watcher.send(json!({"type":"join","room":"pyroom"})).await;
    let joined = watcher.recv_type("joined").await;
    let _ = child.kill();
    let _ = child.wait();
    let seen = lines.join().expect("reader");
    assert!(
        seen.iter().any(|l| l == "authenticated as pyuser"),
        "the script did not authenticate (is python3's websockets installed?): {seen:?}"
    );
    assert!(seen.iter().any(|l| l == "stored as seq 1"), "{seen:?}");
    assert_eq!(
        joined["messages"][0]["body"], "hello from Python",
        "{joined}"
    );
    assert_eq!(joined["messages"][0]["from"], "pyuser");
}
