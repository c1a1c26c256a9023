//! `chat-tui send` and `chat-tui tail` against a real server, as a script would run them.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{TUI, register_and_create, server_binary, start_on_free_port};

fn tui(home: &std::path::Path, addr: &str, token: &str) -> Command {
    let mut c = Command::new(TUI);
    c.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CHAT_TOKEN", token)
        .args(["--server", &format!("ws://{addr}/ws"), "--user", "bot"]);
    c
}

fn tail_lines(mut cmd: Command, n: usize) -> Vec<serde_json::Value> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tail");
    let out = child.stdout.take().expect("stdout");
    let lines: Vec<serde_json::Value> = BufReader::new(out)
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(&l.expect("line")).expect("a JSON line"))
        .collect();
    // A consumer that stops a tail leaves it a moment to record its position.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_tail_for_scripts() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = start_on_free_port(&bin, dir.path());
    let token = register_and_create(&addr, "bot", "lobby").await;
    let home = dir.path().join("home");

    let out = tui(&home, &addr, &token)
        .args(["send", "lobby", "first"])
        .output()
        .expect("send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stored as #1"));
    let out = tui(&home, &addr, &token)
        .args(["send", "nowhere", "x"])
        .output()
        .expect("send");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_such_room"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tui(&home, &addr, "0".repeat(64).as_str())
        .args(["send", "lobby", "x"])
        .output()
        .expect("send");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--login"));

    // tail prints what is there, then follows.
    let mut cmd = tui(&home, &addr, &token);
    cmd.args(["tail", "lobby", "--json"]);
    let follower = std::thread::spawn(move || tail_lines(cmd, 2));
    std::thread::sleep(std::time::Duration::from_millis(700));
    let out = tui(&home, &addr, &token)
        .args(["send", "lobby", "second \u{1b}[31mred"])
        .output()
        .expect("send");
    assert!(
        !out.status.success(),
        "the server refuses control characters in bodies"
    );
    let out = tui(&home, &addr, &token)
        .args(["send", "lobby", "second"])
        .output()
        .expect("send");
    assert!(out.status.success());
    let seen = follower.join().expect("tail");
    assert_eq!(
        seen.iter().map(|v| v["seq"].as_u64()).collect::<Vec<_>>(),
        vec![Some(1), Some(2)]
    );
    assert_eq!(seen[1]["body"], "second");
    assert_eq!(seen[1]["from"], "bot");

    // A new tail resumes after what the last one printed; --since overrides.
    tui(&home, &addr, &token)
        .args(["send", "lobby", "third"])
        .output()
        .expect("send");
    let mut cmd = tui(&home, &addr, &token);
    cmd.args(["tail", "lobby", "--json"]);
    assert_eq!(tail_lines(cmd, 1)[0]["seq"], 3);
    let mut cmd = tui(&home, &addr, &token);
    cmd.args(["tail", "lobby", "--json", "--since", "1"]);
    let again = tail_lines(cmd, 2);
    assert_eq!(
        again.iter().map(|v| v["seq"].as_u64()).collect::<Vec<_>>(),
        vec![Some(2), Some(3)]
    );

    let _ = server.kill();
    let _ = server.wait();
}
