//! Runs every `tests/transcripts/*.chat` file against a fresh server on an ephemeral port.
//!
//! The format, one command per line (`#` starts a comment):
//!
//! ```text
//! option rate_per_sec 2          server setting, before the first connect (see `apply_option`)
//! connect alice                  open a WebSocket to /ws as client `alice`
//! connect eve bearer=$tok expect=401   with an Authorization header; expect an HTTP refusal
//! alice> {"type":"ping"}         send a JSON frame ("$var" strings are replaced by captured values)
//! alice> raw {not json           send a text frame as-is
//! alice> binary                  send a binary frame
//! alice> oversize                send a text frame one byte over the frame limit
//! alice< {"type":"pong","ts":"*"}  expect the next frame to match
//! alice< closed 4000             expect the server to close with this code next
//! alice< nothing                 expect no frame for 300 ms
//! close alice                    the client closes
//! sleep 500ms
//! ```
//!
//! Matching: an expected object's keys must all match (other keys are allowed, unless the
//! expected value is `"<absent>"`, which requires the key to be missing); arrays match element
//! by element and in length; `"*"` matches any value; `"$name"` captures the value the first time
//! and must equal it afterwards.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_proto::limits::MAX_FRAME_BYTES;
use chat_server::config::{Config, Registration};
use chat_server::transcript::{self, Expected, Outgoing, Step, parse_duration};
use serde_json::Value;
use support::{Client, Next, TestServer};
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(300);

fn apply_option(c: &mut Config, name: &str, value: &str) -> Result<(), String> {
    let num = || value.parse::<u64>().map_err(|e| format!("{name}: {e}"));
    match name {
        "rate_per_sec" => c.rate_per_sec = num()? as u32,
        "rate_burst" => c.rate_burst = num()? as u32,
        "rate_strikes" => c.rate_strikes = num()? as u32,
        "max_replay" => c.max_replay = num()?,
        "history_on_join" => c.history_on_join = num()? as u32,
        "outbound_queue" => c.outbound_queue = num()? as usize,
        "max_rooms_per_user" => c.max_rooms_per_user = num()? as u32,
        "max_invites_per_hour" => c.max_invites_per_hour = num()? as u32,
        "auth_timeout" => c.auth_timeout = parse_duration(value)?,
        "typing_timeout" => c.typing_timeout = parse_duration(value)?,
        "ping_interval" => c.ping_interval = parse_duration(value)?,
        "ping_timeout" => c.ping_timeout = parse_duration(value)?,
        "presence_interval" => c.presence_interval = parse_duration(value)?,
        "registration" => {
            c.registration = match value {
                "open" => Registration::Open,
                "closed" => Registration::Closed,
                v => return Err(format!("registration is open or closed, not {v}")),
            }
        }
        other => return Err(format!("unknown option `{other}`")),
    }
    Ok(())
}

/// Replaces `"$name"` strings with captured values.
fn substitute(v: &mut Value, vars: &HashMap<String, Value>) -> Result<(), String> {
    match v {
        Value::String(s) if s.starts_with('$') => {
            *v = vars
                .get(&s[1..])
                .cloned()
                .ok_or_else(|| format!("`{s}` was never captured"))?;
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| substitute(x, vars))?,
        Value::Object(o) => o.values_mut().try_for_each(|x| substitute(x, vars))?,
        _ => {}
    }
    Ok(())
}

/// Whether `actual` matches `expected`; the error names the first path that differs.
fn matches(
    expected: &Value,
    actual: Option<&Value>,
    path: &str,
    vars: &mut HashMap<String, Value>,
) -> Result<(), String> {
    if expected == "<absent>" {
        return match actual {
            None => Ok(()),
            Some(a) => Err(format!("{path}: expected absent, got {a}")),
        };
    }
    let Some(actual) = actual else {
        return Err(format!("{path}: missing"));
    };
    match expected {
        Value::String(s) if s == "*" => Ok(()),
        Value::String(s) if s.starts_with('$') => {
            let name = &s[1..];
            match vars.get(name) {
                Some(v) if v == actual => Ok(()),
                Some(v) => Err(format!("{path}: expected ${name} = {v}, got {actual}")),
                None => {
                    vars.insert(name.to_owned(), actual.clone());
                    Ok(())
                }
            }
        }
        Value::Object(exp) => {
            let Value::Object(act) = actual else {
                return Err(format!("{path}: expected an object, got {actual}"));
            };
            for (k, e) in exp {
                matches(e, act.get(k), &format!("{path}.{k}"), vars)?;
            }
            Ok(())
        }
        Value::Array(exp) => {
            let Value::Array(act) = actual else {
                return Err(format!("{path}: expected an array, got {actual}"));
            };
            if exp.len() != act.len() {
                return Err(format!(
                    "{path}: expected {} elements, got {}: {actual}",
                    exp.len(),
                    act.len()
                ));
            }
            for (i, (e, a)) in exp.iter().zip(act).enumerate() {
                matches(e, Some(a), &format!("{path}[{i}]"), vars)?;
            }
            Ok(())
        }
        other if other == actual => Ok(()),
        other => Err(format!("{path}: expected {other}, got {actual}")),
    }
}

struct Run {
    server: Option<TestServer>,
    options: Vec<(String, String)>,
    clients: HashMap<String, Client>,
    vars: HashMap<String, Value>,
}

impl Run {
    async fn server(&mut self) -> Result<&TestServer, String> {
        if self.server.is_none() {
            let mut err = None;
            let options = self.options.clone();
            let server = TestServer::start(|c| {
                // Transcripts show each presence change as it happens, unless one sets the
                // interval (24_presence_batching.chat).
                c.presence_interval = Duration::ZERO;
                for (k, v) in &options {
                    if let Err(e) = apply_option(c, k, v) {
                        err = Some(e);
                    }
                }
            })
            .await;
            if let Some(e) = err {
                return Err(e);
            }
            self.server = Some(server);
        }
        self.server.as_ref().ok_or_else(|| "no server".to_string())
    }

    fn client(&mut self, name: &str) -> Result<&mut Client, String> {
        self.clients
            .get_mut(name)
            .ok_or_else(|| format!("no client `{name}`: connect it first"))
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Option { name, value } => {
                if self.server.is_some() {
                    return Err("options go before the first connect".into());
                }
                self.options.push((name.clone(), value.clone()));
                Ok(())
            }
            Step::Connect {
                client,
                bearer,
                expect,
            } => {
                let bearer = match bearer {
                    Some(b) => {
                        let mut v = Value::String(b.clone());
                        substitute(&mut v, &self.vars)?;
                        v.as_str().map(str::to_owned)
                    }
                    None => None,
                };
                let url = self.server().await?.url();
                match (Client::connect_with(&url, bearer.as_deref()).await, *expect) {
                    (Ok(c), None) => {
                        self.clients.insert(client.clone(), c);
                        Ok(())
                    }
                    (Err(status), Some(e)) if status == e => Ok(()),
                    (Ok(_), Some(e)) => {
                        Err(format!("expected HTTP {e}, but the upgrade succeeded"))
                    }
                    (Err(status), _) => Err(format!("HTTP {status} refused the upgrade")),
                }
            }
            Step::Close { client } => {
                let mut c = self.clients.remove(client).ok_or("no such client")?;
                let _ = c.ws.close(None).await;
                Ok(())
            }
            Step::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Step::Send { client, what } => {
                let mut what = what.clone();
                if let Outgoing::Json(v) = &mut what {
                    substitute(v, &self.vars)?;
                }
                let client = self.client(client)?;
                match what {
                    Outgoing::Binary => client.send_message(Message::binary(vec![1u8, 2, 3])).await,
                    Outgoing::Oversize => {
                        let text = format!(
                            r#"{{"type":"ping","pad":"{}"}}"#,
                            "x".repeat(MAX_FRAME_BYTES)
                        );
                        client.send_message(Message::text(text)).await;
                    }
                    Outgoing::Raw(raw) => client.send_text(&raw).await,
                    Outgoing::Json(v) => client.send(v).await,
                }
                Ok(())
            }
            Step::Expect { client, what } => {
                let c = self.client(client)?;
                match what {
                    Expected::Nothing => match c.next_within(QUIET).await {
                        Next::Timeout => Ok(()),
                        other => Err(format!("expected nothing, got {other:?}")),
                    },
                    Expected::Closed(code) => match c.next_within(support::WAIT).await {
                        Next::Closed(Some(c)) if c == *code => Ok(()),
                        other => Err(format!("expected close {code}, got {other:?}")),
                    },
                    Expected::Frame(expected) => match c.next_within(support::WAIT).await {
                        Next::Frame(actual) => {
                            matches(expected, Some(&actual), "frame", &mut self.vars)
                                .map_err(|e| format!("{e}\n    whole frame: {actual}"))
                        }
                        other => Err(format!("expected {expected}, got {other:?}")),
                    },
                }
            }
        }
    }
}

async fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut run = Run {
        server: None,
        options: Vec::new(),
        clients: HashMap::new(),
        vars: HashMap::new(),
    };
    // The whole file is read first: a typo on the last line fails before any server starts.
    let lines = transcript::parse(&text).map_err(|e| format!("{}:{e}", path.display()))?;
    for line in &lines {
        if let Err(e) = run.step(&line.step).await {
            return Err(format!(
                "{}:{}: {}\n    {e}",
                path.display(),
                line.number,
                line.text
            ));
        }
    }
    // Hang up first: a client that neither reads nor answers the server's close would hold
    // each connection for the server's whole closing grace period.
    run.clients.clear();
    if let Some(mut s) = run.server.take() {
        s.shutdown().await;
    }
    Ok(())
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/transcripts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "chat"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transcript_passes() {
    let files = transcripts();
    assert!(files.len() >= 15, "transcripts went missing: {files:?}");
    let only = std::env::var("TRANSCRIPT").ok();
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        match run_file(file).await {
            Ok(()) => eprintln!("transcript {name}: ok"),
            Err(e) => {
                eprintln!("transcript {name}: FAILED\n  {e}");
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} transcript(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_matcher_can_fail() {
    let mut vars = HashMap::new();
    let pat: Value = serde_json::json!({"type":"ack","seq":1,"ts":"*","id":"$id","ref":"<absent>"});
    let ok = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m1","extra":true});
    assert!(matches(&pat, Some(&ok), "f", &mut vars).is_ok());
    assert_eq!(vars["id"], "m1");
    let wrong_seq = serde_json::json!({"type":"ack","seq":2,"ts":5,"id":"m1"});
    assert!(matches(&pat, Some(&wrong_seq), "f", &mut vars).is_err());
    let other_id = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m2"});
    assert!(matches(&pat, Some(&other_id), "f", &mut vars).is_err());
    let with_ref = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m1","ref":1});
    assert!(matches(&pat, Some(&with_ref), "f", &mut vars).is_err());
    let missing_ts = serde_json::json!({"type":"ack","seq":1,"id":"m1"});
    assert!(matches(&pat, Some(&missing_ts), "f", &mut vars).is_err());
    let arr: Value = serde_json::json!({"m":[1,2]});
    assert!(
        matches(
            &arr,
            Some(&serde_json::json!({"m":[1,2,3]})),
            "f",
            &mut vars
        )
        .is_err()
    );
}
