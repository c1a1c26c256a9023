//! chat-tui against a wss:// chat-server whose certificate comes from a private CA (made here
//! with rcgen), and its refusal to send credentials over plain ws:// beyond loopback.
//!
//! The "beyond loopback" server is `ws://0.0.0.0:PORT`: not a loopback address by what the URL
//! says (which is all chat-tui looks at), while Linux delivers a connection to 0.0.0.0 to this
//! machine, so the test sends nothing anywhere else.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::tmux::Tmux;
use support::{TUI, server_binary, start_on_free_port, start_on_free_port_with};
use tokio_tungstenite::Connector;

/// Writes `ca.pem`, `cert.pem` and `key.pem` (for localhost and 127.0.0.1) into `dir`.
fn make_certs(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "chat-tui test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
}

/// Registers `user` and creates `room` over wss:// (trusting `ca`); returns the token.
async fn register_over_wss(url: &str, ca: &Path, user: &str, room: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("CA"))
        .expect("add");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = Connector::Rustls(Arc::new(config));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector))
            .await
            .expect("wss connect");
    support::register_and_create_on(ws, user, room).await
}

/// chat-tui with its own home (config and state), as a script runs it.
fn tui(home: &Path, server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(TUI)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CHAT_TOKEN", token)
        .env_remove("CHAT_CA_FILE")
        .args(["--server", server, "--user", "bot"])
        .args(args)
        .output()
        .expect("chat-tui")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_tail_over_wss_trusting_a_private_ca() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let (mut server, addr) = start_on_free_port_with(
        &bin,
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let port = addr.rsplit(':').next().expect("port");
    let url = format!("wss://localhost:{port}/ws");
    let token = register_over_wss(&url, &ca, "bot", "lobby").await;
    let home = dir.path().join("home");
    let ca_arg = ca.to_str().expect("utf-8");

    let out = tui(
        &home,
        &url,
        &token,
        &["--ca-file", ca_arg, "send", "lobby", "over tls"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stored as #1"), "{}", stderr(&out));

    // Without the CA the certificate does not verify, and chat-tui says what to do.
    let out = tui(&home, &url, &token, &["send", "lobby", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not trusted") && stderr(&out).contains("--ca-file"),
        "{}",
        stderr(&out)
    );

    // The CA from the config file instead of the flag; tail reads over wss:// too.
    let config = home.join("config/chat/config.toml");
    std::fs::create_dir_all(config.parent().expect("dir")).expect("mkdir");
    std::fs::write(&config, format!("ca_file = {ca_arg:?}\n")).expect("config");
    let out = tui(&home, &url, &token, &["send", "lobby", "from config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut tail = Command::new(TUI);
    tail.env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CHAT_TOKEN", &token)
        .args([
            "--server", &url, "--user", "bot", "tail", "lobby", "--json", "--since", "0",
        ])
        .stdout(std::process::Stdio::piped());
    let mut child = tail.spawn().expect("tail");
    let lines: Vec<serde_json::Value> = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ))
    .take(2)
    .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
    .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines[0]["body"], "over tls");
    assert_eq!(lines[1]["body"], "from config");

    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_send_no_token_over_plain_ws_beyond_loopback_without_the_flag() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = start_on_free_port(&bin, dir.path());
    let token = support::register_and_create(&addr, "bot", "lobby").await;
    let port = addr.rsplit(':').next().expect("port");
    let remote = format!("ws://0.0.0.0:{port}/ws");
    let home = dir.path().join("home");

    let out = tui(&home, &remote, &token, &["send", "lobby", "leaked?"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing") && stderr(&out).contains("--allow-plain-ws"),
        "{}",
        stderr(&out)
    );
    // tail too.
    let out = tui(&home, &remote, &token, &["tail", "lobby"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--allow-plain-ws"),
        "{}",
        stderr(&out)
    );
    // The flag sends it; it is the first message stored, so the refused ones never arrived.
    let out = tui(
        &home,
        &remote,
        &token,
        &["--allow-plain-ws", "send", "lobby", "ok"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stored as #1"), "{}", stderr(&out));
    // Loopback needs no flag.
    let out = tui(
        &home,
        &format!("ws://{addr}/ws"),
        &token,
        &["send", "lobby", "local"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn interactive_asks_once_per_server_before_the_password_goes_over_plain_ws() {
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, addr) = start_on_free_port(&bin, dir.path());
    let port = addr.rsplit(':').next().expect("port");
    let home = dir.path().join("alice");
    std::fs::create_dir_all(&home).expect("home");
    let state = home.join(".local/share/chat/state.json");
    let tmux = Tmux {
        socket: format!("chat-tls-{}", std::process::id()),
    };
    let start = |session: &str, extra: &str| {
        let cmd = format!(
            "HOME={home} XDG_CONFIG_HOME={home}/.config XDG_DATA_HOME={home}/.local/share {TUI} --server ws://0.0.0.0:{port}/ws --user alice {extra}; echo chat-tui exited $?; sleep 600",
            home = home.display(),
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
        ]);
    };

    // Saying no: nothing is sent, nothing remembered.
    start("no", "--register");
    tmux.wait_for("no", "the question", |s| s.contains("unencrypted anyway?"));
    tmux.type_text("no", "no");
    tmux.keys("no", &["Enter"]);
    let screen = tmux.wait_for("no", "the exit", |s| s.contains("chat-tui exited 1"));
    assert!(screen.contains("not connecting"), "{screen}");
    assert!(
        !std::fs::read_to_string(&state)
            .unwrap_or_default()
            .contains("0.0.0.0"),
        "a no is not remembered"
    );

    // Saying yes: asked before the password, and remembered with the token.
    start("yes", "--register");
    tmux.wait_for("yes", "the question", |s| s.contains("unencrypted anyway?"));
    tmux.type_text("yes", "yes");
    tmux.keys("yes", &["Enter"]);
    tmux.wait_for("yes", "the password prompt", |s| {
        s.contains("Choose a password")
    });
    tmux.type_text("yes", "long enough pw");
    tmux.keys("yes", &["Enter"]);
    tmux.wait_for("yes", "the client", |s| {
        s.contains("alice") && s.contains("connected")
    });
    tmux.keys("yes", &["C-c"]);
    tmux.wait_for("yes", "the exit", |s| s.contains("chat-tui exited 0"));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(
        saved["plain_ws_ok"],
        serde_json::json!([format!("0.0.0.0:{port}")])
    );

    // The next run goes straight in: no question (a password login, so it sends one again).
    start("again", "--login");
    let screen = tmux.wait_for("again", "the password prompt", |s| s.contains("Password"));
    assert!(!screen.contains("unencrypted anyway?"), "{screen}");

    let _ = server.kill();
    let _ = server.wait();
}
