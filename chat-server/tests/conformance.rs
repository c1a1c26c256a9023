//! The `chat-conformance` binary against a real `chat-server` process: every transcript the
//! server's flags allow passes, twice in a row on the same server (the names of each run are
//! its own), and the skipped ones say which flag they need.

mod support;

use std::process::Command;

const CONFORMANCE: &str = env!("CARGO_BIN_EXE_chat-conformance");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(CONFORMANCE)
        .args(args)
        .output()
        .expect("run chat-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout)
}

/// The `N passed, M failed` line's two numbers.
fn counts(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let mut nums = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().expect("a count"));
    let passed = nums
        .next()
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    (passed, nums.next().expect("failed count"))
}

#[test]
fn the_command_passes_against_a_running_server_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) =
        support::spawn_server(&dir.path().join("chat.db"), &["--presence-interval", "0"]);
    let url = support::url(&addr);
    // The same URL twice: the clients of each transcript take turns, as over two nodes.
    let spread = format!("{url},{url}");
    let (ok, first) = run(&[
        "--url",
        &spread,
        "--assume",
        "presence-interval=0",
        "--wait",
        "15",
    ]);
    assert!(ok, "{first}");
    let (passed, failed) = counts(&first);
    assert_eq!(failed, 0, "{first}");
    assert!(passed >= 16, "{first}");
    assert!(
        first
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("{passed} passed, 0 failed")))
    );
    assert!(
        first.contains("06_auth_timeout: skipped: needs --auth-timeout 300ms"),
        "{first}"
    );
    assert!(
        first.contains("26_pages: skipped: needs a server of its own"),
        "{first}"
    );

    // A second run on the same, now well-used server, without --assume: fewer run, all pass.
    let (ok, second) = run(&["--url", &url, "--wait", "15"]);
    assert!(ok, "{second}");
    let (passed_again, failed) = counts(&second);
    assert_eq!(failed, 0, "{second}");
    assert!(passed_again >= 10 && passed_again < passed, "{second}");
    assert!(
        second.contains("15_presence: skipped: needs --presence-interval 0"),
        "{second}"
    );

    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_failure_is_reported_and_sets_the_exit_status() {
    // Nothing listens here: every transcript that connects fails, and says why.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (ok, out) = run(&[
        "--url",
        &format!("ws://127.0.0.1:{port}/ws"),
        "--only",
        "01_",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("01_handshake: FAILED at line"), "{out}");
    assert_eq!(counts(&out), (0, 1), "{out}");
}
