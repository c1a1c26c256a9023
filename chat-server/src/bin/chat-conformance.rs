//! chat-conformance: runs the protocol suite (every transcript of chat-server's
//! `tests/transcripts/`, compiled in) against chat servers that are already running.
//!
//! A binary of its own rather than a `chat-server` subcommand: it opens no database and starts
//! no server, so it shares nothing with `chat-server`'s flags, and it can be copied to a machine
//! that only reaches the servers.

use std::process::ExitCode;
use std::time::Duration;

use chat_server::conformance::{self, Outcome, Running, Settings};
use clap::Parser;

/// Runs every protocol transcript against running chat servers and prints one line each,
/// then `N passed, M failed`. Exit status 1 if any failed.
#[derive(Debug, Parser)]
#[command(name = "chat-conformance", version, about)]
struct Cli {
    /// A server's WebSocket URL, e.g. ws://127.0.0.1:7878/ws. Several (repeat the flag, or
    /// comma-separated) are nodes of one cluster: each client of a transcript connects to the
    /// next one in turn.
    #[arg(
        long,
        required = true,
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// The servers were started with this setting, e.g. `presence-interval=0`; transcripts
    /// that need a setting not given here are skipped.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_assume)]
    assume: Vec<(String, String)>,
    /// Only the transcripts whose name contains this.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Longest wait for a frame that should come, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    wait: f64,
    /// Silence that counts as "nothing", in milliseconds (raise it across slow links).
    #[arg(long, default_value_t = 300, value_name = "MS")]
    quiet_ms: u64,
}

fn parse_assume(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    Ok((
        conformance::options::normalize(name.trim()),
        value.trim().to_owned(),
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let urls: Vec<String> = cli
        .url
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if let Some(bad) = urls
        .iter()
        .find(|u| !(u.starts_with("ws://") || u.starts_with("wss://")))
    {
        eprintln!("error: `{bad}` is not a WebSocket URL (ws://HOST:PORT/ws)");
        return ExitCode::from(2);
    }
    if urls.iter().any(|u| u.starts_with("wss://")) {
        eprintln!("error: wss:// is not supported by chat-conformance yet; use ws:// URLs");
        return ExitCode::from(2);
    }
    let settings = Settings {
        wait: Duration::from_secs_f64(cli.wait.max(0.1)),
        quiet: Duration::from_millis(cli.quiet_ms),
        ..Settings::new()
    };
    let mut target = Running {
        urls,
        assume: cli.assume,
    };
    let mut need_flags = false;
    let summary = conformance::run_suite(
        &mut target,
        &settings,
        cli.only.as_deref(),
        |t, o| match o {
            Outcome::Passed => println!("{}: ok", t.name),
            Outcome::Skipped(why) => {
                need_flags |= why.starts_with("needs --");
                println!("{}: skipped: {why}", t.name);
            }
            Outcome::Failed(why) => {
                let mut lines = why.lines();
                println!("{}: FAILED at line {}", t.name, lines.next().unwrap_or(""));
                for l in lines {
                    println!("    {}", l.trim_start());
                }
            }
        },
    )
    .await;
    if need_flags {
        eprintln!(
            "(a transcript that needs a flag runs against a server started with it: say so with \
             --assume NAME=VALUE, e.g. --assume presence-interval=0)"
        );
    }
    println!("{summary}");
    if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
