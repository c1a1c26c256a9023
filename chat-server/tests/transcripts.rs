//! Runs every transcript (`tests/transcripts/*.chat`, embedded by `chat_server::conformance`,
//! whose docs describe the format) against a fresh server per transcript, started here with
//! the options the transcript sets. The `chat-conformance` binary runs the same code against
//! servers that are already running. One transcript: `TRANSCRIPT=14_catch_up cargo test -p
//! chat-server --test transcripts`.

mod support;

use std::time::Duration;

use chat_server::conformance::{self, Needs, Settings, Target, Unavailable};
use support::TestServer;

/// A new server for each transcript, with its options applied to the defaults.
struct Fresh {
    server: Option<TestServer>,
}

#[async_trait::async_trait]
impl Target for Fresh {
    async fn open(&mut self, needs: &Needs) -> Result<Vec<String>, Unavailable> {
        let mut err = None;
        let server = TestServer::start(|c| {
            for (k, v) in &needs.options {
                if let Err(e) = conformance::options::apply(c, k, v) {
                    err = Some(e);
                }
            }
        })
        .await;
        let url = server.url();
        self.server = Some(server);
        match err {
            Some(e) => Err(Unavailable::Broken(e)),
            None => Ok(vec![url]),
        }
    }

    async fn close(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transcript_passes() {
    assert!(
        conformance::TRANSCRIPTS.len() >= 15,
        "transcripts went missing"
    );
    let only = std::env::var("TRANSCRIPT").ok();
    let settings = Settings {
        // Generous: other tests share the machine's two cores.
        wait: Duration::from_secs(10),
        ..Settings::new()
    };
    let mut failures = Vec::new();
    let summary = conformance::run_suite(
        &mut Fresh { server: None },
        &settings,
        only.as_deref(),
        |t, outcome| match outcome {
            conformance::Outcome::Passed => eprintln!("transcript {}: ok", t.name),
            other => {
                eprintln!("transcript {}: {other:?}", t.name);
                failures.push(format!("{}: {other:?}", t.name));
            }
        },
    )
    .await;
    assert!(failures.is_empty(), "{summary}:\n{}", failures.join("\n"));
}
