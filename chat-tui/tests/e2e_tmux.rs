//! Two real chat-tui processes in tmux against a real chat-server, used as people use them: keys
//! in with send-keys, the screen read back with capture-pane. The server is killed (-9) and
//! restarted; both clients must reconnect on their own and show what was typed during the
//! outage exactly once. Needs tmux (`scripts/test` installs it).

mod support;

use support::tmux::Tmux;
use support::{TUI, server_binary, start_on_free_port, start_server, wait_listening};

#[test]
fn two_people_talk_lose_the_server_and_carry_on() {
    let server_bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = start_on_free_port(&server_bin, dir.path());
    // Restarted later on the same database and address.
    let db = dir.path().join("chat.db");

    let tmux = Tmux {
        socket: format!("chat-e2e-{}", std::process::id()),
    };
    for (name, who) in [("a", "alice"), ("b", "bob")] {
        let home = dir.path().join(who);
        std::fs::create_dir_all(&home).expect("home");
        // A fast reconnect schedule, from the config file like a user would set it.
        let config = home.join("config.toml");
        std::fs::write(&config, "[reconnect]\nbase_ms = 200\ncap_ms = 1000\n").expect("config");
        let cmd = format!(
            "HOME={home} XDG_CONFIG_HOME={home}/.config XDG_DATA_HOME={home}/.local/share {TUI} --server ws://{addr}/ws --user {who} --register --config {config}",
            home = home.display(),
            config = config.display(),
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ]);
        tmux.wait_for(name, "the password prompt", |s| s.contains("password"));
        tmux.type_text(name, &format!("{who} password"));
        tmux.keys(name, &["Enter"]);
        tmux.wait_for(name, "the connected status bar", |s| {
            s.contains("connected") && s.contains(who)
        });
    }

    tmux.type_text("a", "/create lobby");
    tmux.keys("a", &["Enter"]);
    tmux.wait_for("a", "the room", |s| s.contains("#lobby"));
    tmux.type_text("b", "/join lobby");
    tmux.keys("b", &["Enter"]);
    tmux.wait_for("b", "the room", |s| s.contains("#lobby"));
    tmux.wait_for("a", "bob in the members", |s| s.contains("online (2)"));

    // Alice types: Bob sees the typing indicator, then the message.
    tmux.type_text("a", "hello bob, 日本語 👍");
    tmux.wait_for("b", "the typing indicator", |s| {
        s.contains("alice is typing…")
    });
    tmux.keys("a", &["Enter"]);
    tmux.wait_for("b", "alice's message", |s| {
        s.contains("alice: hello bob, 日本語 👍")
    });
    tmux.wait_for("b", "the typing line cleared", |s| !s.contains("is typing"));

    // The server dies; both type while it is down.
    server.kill().expect("kill -9");
    server.wait().expect("reap");
    tmux.wait_for("a", "the reconnecting status", |s| {
        s.contains("reconnecting in") || s.contains("connecting…")
    });
    tmux.type_text("a", "alice during the outage");
    tmux.keys("a", &["Enter"]);
    tmux.type_text("b", "bob during the outage");
    tmux.keys("b", &["Enter"]);
    tmux.wait_for("a", "the pending line", |s| {
        s.contains("sending… alice during the outage")
    });

    let mut server = start_server(&server_bin, &db, &addr);
    wait_listening(&addr);
    for name in ["a", "b"] {
        let screen = tmux.wait_for(name, "both outage messages", |s| {
            s.contains("alice: alice during the outage")
                && s.contains("bob: bob during the outage")
                && s.contains("│ connected")
        });
        for line in [
            "alice: alice during the outage",
            "bob: bob during the outage",
            "alice: hello bob",
        ] {
            assert_eq!(
                screen.matches(line).count(),
                1,
                "{name} shows {line:?} other than once:\n{screen}"
            );
        }
        assert!(
            !screen.contains("sending…"),
            "{name} still has a pending line:\n{screen}"
        );
    }
    tmux.type_text("a", "/quit");
    tmux.keys("a", &["Enter"]);
    let _ = server.kill();
    let _ = server.wait();
}
