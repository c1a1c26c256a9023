//! wss://: the server with a certificate from a test CA (made here with rcgen), clients that
//! trust that CA and clients that don't, reloading the certificate (in-process and by SIGHUP
//! to the binary), and the start-up checks and warning.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chat_server::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use support::{Client, TestServer};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Error as WsError;

const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

/// Generous: CI is two shared cores under load, and every wait here ends on a state.
const DEADLINE: Duration = Duration::from_secs(30);

/// A test CA: its certificate (PEM) and what signs server certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1: (certificate PEM, key PEM).
    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "chat-server test");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a fresh server certificate and key to `files` (over what is there).
    fn issue_to(&self, files: &TlsFiles) {
        let (cert, key) = self.server_cert();
        // Written whole to a temp file and renamed, as a deploy tool would: a reload never
        // reads half a file.
        for (path, text) in [(&files.cert, cert), (&files.key, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    }

    /// A client TLS config that trusts this CA only.
    fn connector(&self) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("add CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connector::Rustls(Arc::new(config))
    }
}

fn tls_files(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// A wss:// connection trusting `ca`; the error when the handshake fails.
async fn connect(url: &str, ca: &Ca) -> Result<Client, WsError> {
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(ca.connector()))
            .await?;
    Ok(Client { ws })
}

/// hello + register over a wss:// connection trusting `ca`.
async fn register(url: &str, ca: &Ca, user: &str) -> Client {
    let mut c = connect(url, ca).await.expect("wss connect");
    c.register_here(user).await;
    c
}

/// A message through the room from `a` to `b`; both are members of `room`.
async fn exchange(a: &mut Client, b: &mut Client, room: &str, id: &str) {
    a.send(json!({"type":"send","room":room,"id":id,"body":format!("hello {id}")}))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["id"], id, "{ack}");
    // Earlier messages (its own included) may come first.
    while b.recv_type("message").await["id"] != id {}
}

/// Whether a connection failed because the client does not trust the server's certificate.
fn untrusted(r: Result<Client, WsError>) -> bool {
    match r {
        Ok(_) => false,
        Err(e) => e
            .to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
    }
}

/// A server in-process with TLS, and the files its certificate is read from.
struct TlsServer {
    server: TestServer,
    files: TlsFiles,
    _certs: tempfile::TempDir,
}

/// Starts a server with TLS on a certificate from `ca`.
async fn tls_server(ca: &Ca, tune: impl FnOnce(&mut chat_server::config::Config)) -> TlsServer {
    let certs = tempfile::tempdir().expect("tempdir");
    let files = tls_files(certs.path());
    ca.issue_to(&files);
    let server = TestServer::start(|c| {
        c.tls = Some(files.clone());
        tune(c);
    })
    .await;
    TlsServer {
        server,
        files,
        _certs: certs,
    }
}

impl TlsServer {
    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/ws", self.server.addr.port())
    }

    fn running(&self) -> &chat_server::server::RunningServer {
        self.server.server.as_ref().expect("running")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_ca_registers_and_exchanges_a_message() {
    let ca = Ca::new("test CA");
    let mut s = tls_server(&ca, |_| {}).await;
    let mut alice = register(&s.url("localhost"), &ca, "alice").await;
    // The IP address is in the certificate too.
    let mut bob = register(&s.url("127.0.0.1"), &ca, "bob").await;
    alice
        .send(json!({"type":"create_room","room":"lobby"}))
        .await;
    alice.recv_type("room_created").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    exchange(&mut alice, &mut bob, "lobby", "m1").await;
    exchange(&mut bob, &mut alice, "lobby", "m2").await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let ca = Ca::new("test CA");
    let mut s = tls_server(&ca, |_| {}).await;
    let url = s.url("localhost");
    let stranger = Ca::new("some other CA");
    assert!(untrusted(connect(&url, &stranger).await));
    // Plain ws:// to a TLS port is no WebSocket either.
    let plain = tokio_tungstenite::connect_async(s.server.url());
    assert!(plain.await.is_err(), "plain ws:// on the TLS port");
    // And the server still serves those who trust it.
    register(&url, &ca, "carol").await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_new_certificate_and_keeps_connections_up() {
    let first = Ca::new("first CA");
    let mut s = tls_server(&first, |_| {}).await;
    let url = s.url("localhost");
    let files = s.files.clone();
    let mut alice = register(&url, &first, "alice").await;
    let mut bob = register(&url, &first, "bob").await;
    alice
        .send(json!({"type":"create_room","room":"lobby"}))
        .await;
    alice.recv_type("room_created").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    // A file that does not parse: refused, naming the file, and the old certificate stays.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").expect("write");
    let e = s
        .running()
        .reload_tls()
        .expect_err("garbage refused")
        .to_string();
    assert!(e.contains("cert.pem"), "{e}");
    register(&url, &first, "carol").await;

    let second = Ca::new("second CA");
    second.issue_to(&files);
    s.running().reload_tls().expect("reload");
    // Connections made before the reload carry on.
    exchange(&mut alice, &mut bob, "lobby", "after-reload").await;
    // New handshakes get the new certificate: the first CA no longer verifies it.
    assert!(untrusted(connect(&url, &first).await));
    register(&url, &second, "dave").await;
    exchange(&mut bob, &mut alice, "lobby", "still-up").await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_ends_at_the_auth_timeout_and_blocks_no_one() {
    let ca = Ca::new("test CA");
    let mut s = tls_server(&ca, |c| c.auth_timeout = Duration::from_secs(1)).await;
    let url = s.url("localhost");
    // Connects and never says ClientHello.
    let mut stalled = tokio::net::TcpStream::connect(s.server.addr)
        .await
        .expect("tcp");
    // Meanwhile others connect and log in: the handshake is not done in the accept loop.
    register(&url, &ca, "alice").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, stalled.read(&mut buf))
        .await
        .expect("the server closed the stalled connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    s.server.shutdown().await;
}

/// The binary's standard error, line by line, read on a thread.
struct Log {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn new(child: &mut Child) -> Self {
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with what was logged if none comes.
    fn wait_for(&mut self, needle: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?}; logged: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("exited before {needle:?}; logged: {:#?}", self.seen)
                }
            }
        }
    }

    /// Everything until the process closes standard error.
    fn rest(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

fn spawn(db: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Child, Log) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("CHAT_TLS_CERT")
        .env_remove("CHAT_TLS_KEY")
        .env_remove("CHAT_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn chat-server");
    let log = Log::new(&mut child);
    (child, log)
}

/// The port in a `listening on SCHEME://ADDR/ws` line.
fn port_of(line: &str) -> u16 {
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split("/ws").next())
        .expect("an address");
    addr.rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("a port")
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = tls_files(dir.path());
    let first = Ca::new("first CA");
    first.issue_to(&files);
    let (mut child, mut log) = spawn(
        &dir.path().join("chat.db"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            path_str(&files.cert),
        ],
        // The key from the environment: flags and variables mix.
        &[("CHAT_TLS_KEY", &files.key)],
    );
    let port = port_of(&log.wait_for("listening on wss://"));
    let url = format!("wss://localhost:{port}/ws");
    let mut alice = register(&url, &first, "alice").await;
    let mut bob = register(&url, &first, "bob").await;
    alice
        .send(json!({"type":"create_room","room":"lobby"}))
        .await;
    alice.recv_type("room_created").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    let second = Ca::new("second CA");
    second.issue_to(&files);
    signal(&child, "-HUP");
    log.wait_for("TLS certificate reloaded");
    exchange(&mut alice, &mut bob, "lobby", "m1").await;
    assert!(untrusted(connect(&url, &first).await));
    let mut carol = register(&url, &second, "carol").await;
    carol.join("lobby").await;
    exchange(&mut alice, &mut carol, "lobby", "m2").await;

    // A bad key on the next SIGHUP: logged with the file's name; the second CA's certificate
    // stays, and the process too.
    std::fs::write(&files.key, "not a key\n").expect("write");
    signal(&child, "-HUP");
    let line = log.wait_for("not reloaded");
    assert!(line.contains("key.pem"), "{line}");
    register(&url, &second, "dave").await;
    exchange(&mut bob, &mut alice, "lobby", "m3").await;

    signal(&child, "-TERM");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn tls_flags_come_in_pairs_and_unreadable_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let files = tls_files(dir.path());
    let missing: PathBuf = dir.path().join("nowhere.pem");
    let run = |args: &[&str], env: &[(&str, &Path)]| {
        let (mut child, mut log) = spawn(&db, args, env);
        let status = child.wait().expect("wait");
        (status.success(), log.rest().join("\n"))
    };

    let (ok, err) = run(&["--tls-cert", path_str(&files.cert)], &[]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
    let (ok, err) = run(&[], &[("CHAT_TLS_KEY", &files.key)]);
    assert!(!ok && err.contains("--tls-cert"), "{err}");

    Ca::new("test CA").issue_to(&files);
    let (ok, err) = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            path_str(&missing),
            "--tls-key",
            path_str(&files.key),
        ],
        &[],
    );
    assert!(!ok && err.contains("nowhere.pem"), "{err}");
    // A key that is not the certificate's.
    let (_, other_key) = Ca::new("x").server_cert();
    std::fs::write(&missing, other_key).expect("write");
    let (ok, err) = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            path_str(&files.cert),
            "--tls-key",
            path_str(&missing),
        ],
        &[],
    );
    assert!(!ok && err.contains("does not belong"), "{err}");
}

#[test]
fn listening_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let start_and_stop = |listen: &str| {
        let (mut child, mut log) = spawn(&db, &["--listen", listen], &[]);
        log.wait_for("listening on ws://");
        signal(&child, "-TERM");
        let lines = log.rest();
        assert!(child.wait().expect("wait").success());
        lines
    };
    // Listening on every interface (nothing is sent to any of them).
    let lines = start_and_stop("0.0.0.0:0");
    let warned: Vec<_> = lines.iter().filter(|l| l.contains("without TLS")).collect();
    assert_eq!(warned.len(), 1, "one warning line: {lines:#?}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("--tls-cert"),
        "{warned:?}"
    );
    let lines = start_and_stop("127.0.0.1:0");
    assert!(
        !lines.iter().any(|l| l.contains("without TLS")),
        "no warning on loopback: {lines:#?}"
    );
}
