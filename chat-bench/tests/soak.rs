//! The chaos soak, short: `chat-bench soak` for 25 s with 1,000 clients over 20 rooms and the
//! real chat-server killed with -9 at least twice, must end with nothing lost, nothing stored
//! twice, no gap and every view equal to the history (the run checks it and exits non-zero on
//! any violation; this test also reads its figures).
//!
//! chat-server is another package's binary: it is built here (a no-op when fresh) in this
//! test's profile and found next to the test's target directory, as chat-tui's tests do. The
//! generator and the server are the debug builds, on a machine that may be busy: every wait in
//! the soak is for a state (everyone joined, everything acknowledged) with a generous deadline,
//! not a fixed time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "chat-server", "--bin", "chat-server"])
        .status()
        .expect("cargo build chat-server");
    assert!(status.success(), "building chat-server failed");
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("chat-server")
}

#[test]
fn a_short_chaos_soak_loses_nothing() {
    let bin = server_binary();
    let dir = std::env::temp_dir().join(format!("chat-soak-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("soak")
        .arg("--server-bin")
        .arg(&bin)
        .arg("--dir")
        .arg(&dir)
        .args([
            "--duration",
            "25s",
            "--clients",
            "1000",
            "--rooms",
            "20",
            // Every 4 to 12 s: 2 kills at least in 25 s, and time between them for stallers.
            "--kill-every",
            "8s",
            "--stall-min",
            "1s",
            "--stall-max",
            "3s",
            "--seed",
            "9",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run chat-bench soak");
    // The soak bounds itself (drain and finish deadlines); this only keeps a hung run from
    // hanging CI.
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the soak did not end within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read stdout");
    print!("{out}");
    let json = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("the JSON result line");
    let r: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let f = &r["check"]["figures"];
    let n = |k: &str| f[k].as_u64().unwrap_or(0);
    assert!(
        status.success(),
        "the soak failed: {:?}",
        r["check"]["violations"]
    );
    assert!(
        n("kills") >= 2,
        "expected at least 2 kills, got {}",
        n("kills")
    );
    assert!(n("acked") > 0, "nothing was acknowledged");
    for key in [
        "lost",
        "corrupted",
        "duplicated",
        "gaps",
        "view_mismatches",
        "unacked_steady",
    ] {
        assert_eq!(n(key), 0, "{key}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
