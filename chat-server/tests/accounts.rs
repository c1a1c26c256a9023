//! Accounts from the operator's side: the `chat-server user` commands run as processes beside
//! running servers (SQLite, and two nodes on one PostgreSQL), and what each does to live
//! connections and later logins. Also the last-use bookkeeping of tokens.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chat_server::store::postgres::testing::pg_or_skip;
use serde_json::{Value, json};
use support::{BIN, Client, Next, TestServer, spawn_server, url};

/// Long enough for a loaded machine: the revocation poll is every 2 s, and a wait ends as soon
/// as the close arrives.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

/// `chat-server --db DB user ARGS`, with `stdin` written to it: (exit code, stdout, stderr).
fn user(db: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(["--db", db, "user"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chat-server user");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Succeeds, and returns what it printed.
fn user_ok(db: &str, args: &[&str], stdin: &str) -> String {
    let (code, out, err) = user(db, args, stdin);
    assert_eq!(code, 0, "user {args:?}: {out}{err}");
    out
}

/// A protocol-2 connection: hello, then `frame` (register or login); returns it and the answer.
async fn v2(url: &str, frame: Value) -> (Client, Value) {
    let mut c = Client::connect(url).await;
    c.send(json!({"type":"hello","versions":[1,2]})).await;
    assert_eq!(c.recv().await["protocol"], 2);
    c.send(frame).await;
    let answer = c.recv().await;
    (c, answer)
}

fn login(user: &str, password: &str) -> Value {
    json!({"type":"login","username":user,"password":password})
}

/// Waits for the server to close `c`; returns the code.
async fn closed(c: &mut Client) -> Option<u16> {
    loop {
        match c.next_within(CLOSE_WAIT).await {
            Next::Frame(_) => continue,
            Next::Closed(code) => return code,
            Next::Timeout => panic!("not closed within {CLOSE_WAIT:?}"),
        }
    }
}

/// The `user list` line of `name`, split on whitespace.
fn listed(db: &str, name: &str) -> Vec<String> {
    let out = user_ok(db, &["list"], "");
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("NAME")), "{out}");
    lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols[0] == name)
        .unwrap_or_else(|| panic!("{name} not in\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_commands_beside_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chat.db");
    let db = path.to_str().expect("utf-8 path").to_owned();
    let (mut server, addr) = spawn_server(&path, &[]);
    let url = url(&addr);
    let (mut alice, ok) = v2(
        &url,
        json!({"type":"register","username":"alice","password":"correct horse"}),
    )
    .await;
    let token = ok["token"].as_str().expect("token").to_owned();
    let (mut alice2, ok) = v2(&url, login("alice", "correct horse")).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    user_ok(&db, &["add", "bob"], "a long password\n");

    // The list: by name, both accounts enabled, alice with her two sessions.
    let out = user_ok(&db, &["list"], "");
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{out}");
    let row = listed(&db, "alice");
    assert_eq!((row[2].as_str(), row[3].as_str()), ("-", "2"), "{row:?}");
    assert!(row[1].ends_with('Z') && row[1].len() == 20, "{row:?}");

    // Disable: both connections close with 4003, the CLI having written only the database.
    let said = user_ok(&db, &["disable", "alice"], "");
    assert!(said.contains("2 sessions revoked"), "{said}");
    assert_eq!(closed(&mut alice).await, Some(4003));
    assert_eq!(closed(&mut alice2).await, Some(4003));
    let (_, refused) = v2(&url, login("alice", "correct horse")).await;
    assert_eq!(refused["code"], "account_disabled", "{refused}");
    let (_, refused) = v2(&url, login("alice", "wrong password")).await;
    assert_eq!(refused["code"], "invalid_credentials", "{refused}");
    let (_, refused) = v2(
        &url,
        json!({"type":"register","username":"alice","password":"correct horse"}),
    )
    .await;
    assert_eq!(refused["code"], "account_disabled", "{refused}");
    assert_eq!(
        Client::connect_with(&url, Some(&token)).await.err(),
        Some(401),
        "its tokens are revoked"
    );
    let row = listed(&db, "alice");
    assert!(row[2].ends_with('Z'), "a disabled date: {row:?}");
    assert_eq!(row[3], "0", "{row:?}");
    assert!(user_ok(&db, &["disable", "alice"], "").contains("already disabled"));

    // Enable: the password works again; the revoked token does not come back.
    assert!(user_ok(&db, &["enable", "alice"], "").contains("enabled user alice"));
    assert!(user_ok(&db, &["enable", "alice"], "").contains("was not disabled"));
    assert_eq!(listed(&db, "alice")[2], "-");
    let (mut alice, ok) = v2(&url, login("alice", "correct horse")).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(
        Client::connect_with(&url, Some(&token)).await.err(),
        Some(401)
    );

    // Reset the password: the live connection closes, the old password is refused.
    let said = user_ok(&db, &["reset-password", "alice"], "battery staple\n");
    assert!(said.contains("1 session revoked"), "{said}");
    assert_eq!(closed(&mut alice).await, Some(4003));
    let (_, refused) = v2(&url, login("alice", "correct horse")).await;
    assert_eq!(refused["code"], "invalid_credentials", "{refused}");
    let (_, ok) = v2(&url, login("alice", "battery staple")).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");

    // Refusals: exit status 1 and a reason, nothing changed.
    for (args, stdin, why) in [
        (&["disable", "nobody"][..], "", "no user named nobody"),
        (&["enable", "nobody"][..], "", "no user named nobody"),
        (
            &["reset-password", "nobody"][..],
            "a long password\n",
            "no user named nobody",
        ),
        (
            &["reset-password", "alice"][..],
            "short\n",
            "passwords are 8-1024 bytes",
        ),
        (
            &["add", "bob"][..],
            "a long password\n",
            "user bob already exists",
        ),
        (&["add", "Bob"][..], "a long password\n", "usernames are"),
    ] {
        let (code, out, err) = user(&db, args, stdin);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let (_, ok) = v2(&url, login("alice", "battery staple")).await;
    assert_eq!(
        ok["type"], "auth_ok",
        "the short password was not set: {ok}"
    );

    server.kill().expect("kill");
    server.wait().expect("reap");
}

/// Two nodes on one PostgreSQL database, without a broker: the `user` command reaches serving
/// nodes only through the database, so this is what a cluster relies on for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_closes_the_accounts_connections_on_every_node() {
    let Some(pg) = pg_or_skip().await else { return };
    let db = pg.url().to_owned();
    let (mut one, addr_one) = spawn_server(Path::new(&db), &[]);
    let (mut two, addr_two) = spawn_server(Path::new(&db), &[]);
    let (url_one, url_two) = (url(&addr_one), url(&addr_two));
    let (mut on_one, ok) = v2(
        &url_one,
        json!({"type":"register","username":"carol","password":"correct horse"}),
    )
    .await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let (mut on_two, ok) = v2(&url_two, login("carol", "correct horse")).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    let (mut bystander, _) = v2(
        &url_two,
        json!({"type":"register","username":"dave","password":"correct horse"}),
    )
    .await;

    assert!(user_ok(&db, &["list"], "").contains("carol"));
    let said = user_ok(&db, &["disable", "carol"], "");
    assert!(said.contains("2 sessions revoked"), "{said}");
    assert_eq!(closed(&mut on_one).await, Some(4003));
    assert_eq!(closed(&mut on_two).await, Some(4003));
    for u in [&url_one, &url_two] {
        let (_, refused) = v2(u, login("carol", "correct horse")).await;
        assert_eq!(refused["code"], "account_disabled", "{refused}");
    }
    bystander.send(json!({"type":"ping"})).await;
    assert_eq!(bystander.recv().await["type"], "pong", "others stay");

    for s in [&mut one, &mut two] {
        s.kill().expect("kill");
        s.wait().expect("reap");
    }
    pg.cleanup().await;
}

/// With the write-once-a-minute rule lifted, authenticating with a token moves its
/// `last_used_ts` (the default rule is in the `42_sessions` transcript: it does not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticating_with_a_token_records_its_use() {
    let server = TestServer::start(|c| c.last_used_resolution = Duration::ZERO).await;
    let url = server.url();
    let (mut c, ok) = v2(
        &url,
        json!({"type":"register","username":"erin","password":"correct horse"}),
    )
    .await;
    let token = ok["token"].as_str().expect("token").to_owned();
    let session = |list: &Value| list["sessions"][0].clone();
    c.send(json!({"type":"sessions"})).await;
    let before = session(&c.recv_type("session_list").await);
    assert_eq!(before["last_used_ts"], before["created_ts"]);
    // A clock tick later, so the new use is a later millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut again = Client::connect(&url).await;
    again
        .send(json!({"type":"hello","versions":[1,2],"token":token}))
        .await;
    assert_eq!(again.recv().await["user"], "erin");
    c.send(json!({"type":"sessions"})).await;
    let after = session(&c.recv_type("session_list").await);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["created_ts"], before["created_ts"]);
    assert!(
        after["last_used_ts"].as_i64() > before["last_used_ts"].as_i64(),
        "{before} {after}"
    );
}
