//! The protocol suite as a conformance tool: every `.chat` transcript of `tests/transcripts/`,
//! run against a server the caller provides, a fresh one per transcript (`tests/transcripts.rs`)
//! or a running one or several nodes of one cluster (the `chat-conformance` binary).
//!
//! The format, one command per line (`#` starts a comment):
//!
//! ```text
//! option rate_per_sec 2          server setting, before the first connect (see `options`)
//! require own_server             the target must run nothing else, not even other transcripts
//! connect alice                  open a WebSocket to /ws as client `alice`
//! connect eve bearer=$tok expect=401   with an Authorization header; expect an HTTP refusal
//! alice> {"type":"ping"}         send a JSON frame ("$var" strings are replaced by captured values)
//! alice> raw {not json           send a text frame as-is
//! alice> binary                  send a binary frame
//! alice> oversize                send a text frame one byte over the frame limit
//! alice< {"type":"pong","ts":"*"}  expect the next frame to match
//! alice< closed 4000             expect the server to close with this code next
//! alice< nothing                 expect no frame for a quiet period (300 ms by default)
//! close alice                    the client closes
//! sleep 500ms
//! ```
//!
//! Matching: an expected object's keys must all match (other keys are allowed, unless the
//! expected value is `"<absent>"`, which requires the key to be missing); arrays match element
//! by element and in length; `"*"` matches any value; `"$name"` captures the value the first time
//! and must equal it afterwards.
//!
//! What the runner adds so a transcript can run on a shared, long-lived server: every username
//! and room name gets a per-run, per-transcript suffix (see [`names`]), and a `room_list` is
//! matched with the rooms of other transcripts and other runs left out. With several URLs,
//! each client of a transcript connects to the next URL in turn (the first client to the first).

mod client;
mod matcher;
pub mod names;
pub mod options;
mod suite;

use std::collections::HashMap;
use std::time::Duration;

use chat_proto::limits::MAX_FRAME_BYTES;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::transcript::{self, Expected, Line, Outgoing, Step};
use client::{Client, ConnectError, Next};
pub use matcher::{Vars, matches, substitute};
use names::Names;
pub use suite::{TRANSCRIPTS, Transcript};

/// What a transcript asks of its target before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// `option NAME VALUE` lines: server settings, by their option names.
    pub options: Vec<(String, String)>,
    /// `require own_server`: nothing else runs on the server.
    pub own_server: bool,
}

/// Why a target cannot run a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// It lacks what the transcript needs: the transcript is skipped, saying why.
    Skip(String),
    /// It could not be set up: the transcript fails.
    Broken(String),
}

/// Where transcripts run.
#[async_trait::async_trait]
pub trait Target: Send {
    /// The URLs of the server (or cluster nodes) to run a transcript with these needs on.
    async fn open(&mut self, needs: &Needs) -> Result<Vec<String>, Unavailable>;
    /// The transcript is over (its clients are gone): a fresh server may be stopped.
    async fn close(&mut self) {}
}

/// Servers that are already running: options are met only if the user said the servers were
/// started with them.
pub struct Running {
    pub urls: Vec<String>,
    /// (option name, value) the servers were started with, e.g. `("presence_interval", "0")`.
    pub assume: Vec<(String, String)>,
}

#[async_trait::async_trait]
impl Target for Running {
    async fn open(&mut self, needs: &Needs) -> Result<Vec<String>, Unavailable> {
        if needs.own_server {
            return Err(Unavailable::Skip(
                "needs a server of its own (it lists every public room)".into(),
            ));
        }
        let missing: Vec<String> = needs
            .options
            .iter()
            .filter(|(name, value)| {
                !self
                    .assume
                    .iter()
                    .any(|(n, v)| n == name && options::same_value(v, value))
            })
            .map(|(name, value)| format!("{} {value}", options::flag(name)))
            .collect();
        if !missing.is_empty() {
            return Err(Unavailable::Skip(format!("needs {}", missing.join(", "))));
        }
        Ok(self.urls.clone())
    }
}

/// How long to wait, and the run's name suffix.
#[derive(Debug, Clone)]
pub struct Settings {
    /// For a frame that should come.
    pub wait: Duration,
    /// Of silence, for `nothing`.
    pub quiet: Duration,
    /// Starts every name suffix (`-{run}{transcript}`); empty: names as written.
    pub run: String,
}

impl Settings {
    /// Five seconds to wait, 300 ms of quiet, and a random run id.
    pub fn new() -> Self {
        Self {
            wait: Duration::from_secs(5),
            quiet: Duration::from_millis(300),
            run: run_id(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

/// Four base-36 characters: with the transcript's two, names stay short (a username has 32).
fn run_id() -> String {
    let mut n = rand::random::<u32>() % 36u32.pow(4);
    let mut s = String::new();
    for _ in 0..4 {
        s.push(char::from_digit(n % 36, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

/// What became of one transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Where and why: the line number, the line, what differed.
    Failed(String),
    Skipped(String),
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Runs every transcript whose name contains `only` (all without it), one after the other,
/// calling `report` after each.
pub async fn run_suite(
    target: &mut dyn Target,
    settings: &Settings,
    only: Option<&str>,
    mut report: impl FnMut(&Transcript, &Outcome),
) -> Summary {
    let mut summary = Summary::default();
    for (i, t) in TRANSCRIPTS.iter().enumerate() {
        if only.is_some_and(|o| !t.name.contains(o)) {
            continue;
        }
        let suffix = match settings.run.is_empty() {
            true => String::new(),
            false => format!("-{}{i:02}", settings.run),
        };
        let outcome = run_one(t, &suffix, target, settings).await;
        match &outcome {
            Outcome::Passed => summary.passed += 1,
            Outcome::Failed(_) => summary.failed += 1,
            Outcome::Skipped(_) => summary.skipped += 1,
        }
        report(t, &outcome);
    }
    summary
}

/// The needs of a parsed transcript; they must come before its first connect.
pub fn needs(lines: &[Line]) -> Result<Needs, String> {
    let mut needs = Needs::default();
    let mut connected = false;
    for line in lines {
        let early = || match connected {
            true => Err(format!(
                "{}: {}: options go before the first connect",
                line.number, line.text
            )),
            false => Ok(()),
        };
        match &line.step {
            Step::Option { name, value } => {
                early()?;
                needs.options.push((name.clone(), value.clone()));
            }
            Step::Require(what) if what == "own_server" => {
                early()?;
                needs.own_server = true;
            }
            Step::Require(other) => {
                return Err(format!("{}: unknown requirement `{other}`", line.number));
            }
            Step::Connect { .. } => connected = true,
            _ => {}
        }
    }
    Ok(needs)
}

/// Runs one transcript on `target`, its names given `suffix`.
pub async fn run_one(
    t: &Transcript,
    suffix: &str,
    target: &mut dyn Target,
    settings: &Settings,
) -> Outcome {
    // The whole file is read first: a typo on the last line fails before anything connects.
    let lines = match transcript::parse(t.text) {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let needs = match needs(&lines) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(e),
    };
    let urls = match target.open(&needs).await {
        Ok(urls) if urls.is_empty() => return Outcome::Failed("no URL to connect to".into()),
        Ok(urls) => urls,
        Err(Unavailable::Skip(why)) => return Outcome::Skipped(why),
        Err(Unavailable::Broken(why)) => return Outcome::Failed(why),
    };
    let mut run = Run {
        urls,
        names: Names::new(suffix, &lines),
        settings,
        clients: HashMap::new(),
        nodes: HashMap::new(),
        vars: Vars::new(),
    };
    let mut outcome = Outcome::Passed;
    for line in &lines {
        if let Err(e) = run.step(&line.step).await {
            outcome = Outcome::Failed(format!("{}: {}\n    {e}", line.number, line.text));
            break;
        }
    }
    // Hang up first: a client that neither reads nor answers the server's close would hold
    // each connection for the server's whole closing grace period.
    for (_, c) in run.clients.drain() {
        c.close().await;
    }
    target.close().await;
    outcome
}

/// One transcript in progress.
struct Run<'a> {
    urls: Vec<String>,
    names: Names,
    settings: &'a Settings,
    clients: HashMap<String, Client>,
    /// Which URL each client name uses: the next in turn at its first connect, the same one
    /// when it connects again.
    nodes: HashMap<String, usize>,
    vars: Vars,
}

impl Run<'_> {
    fn client(&mut self, name: &str) -> Result<&mut Client, String> {
        self.clients
            .get_mut(name)
            .ok_or_else(|| format!("no client `{name}`: connect it first"))
    }

    fn url_for(&mut self, client: &str) -> String {
        let next = self.nodes.len();
        let node = *self.nodes.entry(client.to_owned()).or_insert(next);
        self.urls[node % self.urls.len()].clone()
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Option { .. } | Step::Require(_) => Ok(()),
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
                let url = self.url_for(client);
                let wait = self.settings.wait;
                match (
                    Client::connect(&url, bearer.as_deref(), wait).await,
                    *expect,
                ) {
                    (Ok(c), None) => {
                        self.clients.insert(client.clone(), c);
                        Ok(())
                    }
                    (Err(ConnectError::Http(status)), Some(e)) if status == e => Ok(()),
                    (Ok(_), Some(e)) => {
                        Err(format!("expected HTTP {e}, but the upgrade succeeded"))
                    }
                    (Err(e), _) => Err(e.to_string()),
                }
            }
            Step::Close { client } => {
                let c = self.clients.remove(client).ok_or("no such client")?;
                c.close().await;
                Ok(())
            }
            Step::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Step::Send { client, what } => {
                let message = match what {
                    Outgoing::Binary => Message::binary(vec![1u8, 2, 3]),
                    Outgoing::Oversize => Message::text(format!(
                        r#"{{"type":"ping","pad":"{}"}}"#,
                        "x".repeat(MAX_FRAME_BYTES)
                    )),
                    Outgoing::Raw(raw) => Message::text(raw.clone()),
                    Outgoing::Json(v) => {
                        let mut v = v.clone();
                        // Names first: a "$var" is the server's value, already as it named it.
                        self.names.apply(&mut v);
                        substitute(&mut v, &self.vars)?;
                        Message::text(v.to_string())
                    }
                };
                self.client(client)?.send(message).await;
                Ok(())
            }
            Step::Expect { client, what } => {
                let (wait, quiet) = (self.settings.wait, self.settings.quiet);
                let c = self.client(client)?;
                match what {
                    Expected::Nothing => match c.next_within(quiet).await {
                        Next::Timeout => Ok(()),
                        other => Err(format!("expected nothing, got {other}")),
                    },
                    Expected::Closed(code) => match c.next_within(wait).await {
                        Next::Closed(Some(c)) if c == *code => Ok(()),
                        other => Err(format!("expected close {code}, got {other}")),
                    },
                    Expected::Frame(expected) => match c.next_within(wait).await {
                        Next::Frame(mut actual) => {
                            let mut expected = expected.clone();
                            self.names.apply(&mut expected);
                            self.only_ours(&mut actual);
                            matches(&expected, Some(&actual), "frame", &mut self.vars)
                                .map_err(|e| format!("{e}\n    whole frame: {actual}"))
                        }
                        other => Err(format!("expected {expected}, got {other}")),
                    },
                }
            }
        }
    }

    /// Leaves other transcripts' and other runs' rooms out of a `room_list`: on a shared server
    /// they are there, and they are not this transcript's business.
    fn only_ours(&self, frame: &mut Value) {
        if frame["type"] != "room_list" {
            return;
        }
        if let Some(rooms) = frame.get_mut("rooms").and_then(Value::as_array_mut) {
            rooms.retain(|r| r["room"].as_str().is_some_and(|n| self.names.owns(n)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_are_read_and_must_come_first() {
        let lines =
            transcript::parse("option presence_interval 0\nrequire own_server\nconnect a\n")
                .expect("parses");
        assert_eq!(
            needs(&lines),
            Ok(Needs {
                options: vec![("presence_interval".into(), "0".into())],
                own_server: true
            })
        );
        let late = transcript::parse("connect a\noption rate_burst 1\n").expect("parses");
        assert!(needs(&late).is_err());
        let odd = transcript::parse("require a_unicorn\n").expect("parses");
        assert!(needs(&odd).is_err());
    }

    #[tokio::test]
    async fn a_running_target_skips_what_it_was_not_said_to_have() {
        let mut t = Running {
            urls: vec!["ws://x/ws".into()],
            assume: vec![("presence_interval".into(), "0ms".into())],
        };
        let needs = |o: &[(&str, &str)]| Needs {
            options: o
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            own_server: false,
        };
        assert!(t.open(&needs(&[("presence_interval", "0")])).await.is_ok());
        let Err(Unavailable::Skip(why)) = t.open(&needs(&[("auth_timeout", "300ms")])).await else {
            panic!("skipped")
        };
        assert!(why.contains("--auth-timeout 300ms"), "{why}");
        let own = Needs {
            own_server: true,
            ..Needs::default()
        };
        assert!(matches!(t.open(&own).await, Err(Unavailable::Skip(_))));
    }
}
