//! chat-tui: flags, config, the terminal guard, and the one loop that feeds events to the model,
//! carries out its commands and redraws only when something changed.

use chat_tui::{app, config, conn, script, tls, view};

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use ratatui::crossterm::event::{self as ct, Event as CtEvent, EventStream};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;

use app::{App, Command, Event, Settings};
use chat_tui::servers::ServerList;
use config::{StateFile, account_key};
use conn::{NetConfig, ToNet};
use tls::Credentials;

/// chat-tui: a terminal client for chat-server.
#[derive(Debug, Parser)]
#[command(name = "chat-tui", version, about)]
struct Cli {
    /// Server URL; several (repeat the flag, or comma-separated) are nodes of one cluster, tried
    /// in order: a failed or dropped connection moves to the next, wrapping around
    /// [default: from the config file, else ws://127.0.0.1:7878/ws]
    #[arg(
        long,
        env = "CHAT_SERVER",
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// Username [default: from the config file, else asked]
    #[arg(long, env = "CHAT_USER")]
    user: Option<String>,
    /// Create the account instead of logging in (asks for a password).
    #[arg(long)]
    register: bool,
    /// Log in again with a password even if a token is saved.
    #[arg(long)]
    login: bool,
    /// Config file [default: config.toml in the platform config directory]
    #[arg(long, env = "CHAT_TUI_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Never ring the terminal bell.
    #[arg(long)]
    no_bell: bool,
    /// CA certificate(s) (PEM) to trust for a wss:// server, besides the platform's roots: for
    /// a server with a certificate from a private CA [default: ca_file in the config file]
    #[arg(long, env = "CHAT_CA_FILE", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Send the password or token over plain ws:// to a host other than this one (anyone on the
    /// network path can read them) without asking; `send` and `tail` refuse to otherwise.
    #[arg(long)]
    allow_plain_ws: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

/// Without a command, chat-tui is interactive. These are for scripts and bots: they use the token
/// saved by an interactive login (or CHAT_TOKEN) and never prompt.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Send one message; exit status 0 once the server has stored it, 1 otherwise.
    Send { room: String, text: String },
    /// Print a room's messages, one per line, then follow new ones until interrupted.
    /// Without --since it resumes after the last message the previous tail printed.
    Tail {
        room: String,
        /// One JSON object per line: room, seq, id, from, body, ts.
        #[arg(long)]
        json: bool,
        /// Print the messages after this seq.
        #[arg(long)]
        since: Option<u64>,
    },
}

const DEFAULT_SERVER: &str = "ws://127.0.0.1:7878/ws";

fn prompt(question: &str, default: Option<&str>) -> anyhow::Result<String> {
    let mut out = std::io::stderr();
    match default {
        Some(d) => write!(out, "{question} [{d}]: ")?,
        None => write!(out, "{question}: ")?,
    }
    out.flush()?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    let line = line.trim().to_owned();
    match (line.is_empty(), default) {
        (true, Some(d)) => Ok(d.to_owned()),
        (true, None) => bail!("{question} is required"),
        _ => Ok(line),
    }
}

/// Reads a password without echoing it.
fn prompt_password(question: &str) -> anyhow::Result<String> {
    use ratatui::crossterm::event::{KeyCode, KeyEventKind, read};
    eprint!("{question}: ");
    std::io::stderr().flush()?;
    ratatui::crossterm::terminal::enable_raw_mode()?;
    let mut pw = String::new();
    let result = loop {
        match read() {
            Ok(CtEvent::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Backspace => {
                    pw.pop();
                }
                KeyCode::Char('c') if k.modifiers.contains(ct::KeyModifiers::CONTROL) => {
                    break Err(anyhow::anyhow!("cancelled"));
                }
                KeyCode::Char(c) => pw.push(c),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
    };
    ratatui::crossterm::terminal::disable_raw_mode()?;
    eprintln!();
    result.map(|()| pw)
}

/// One thread: the client's work is a keystroke, a frame, a redraw at a time, and an idle
/// client should not wake several threads to hand a timer from one to another.
/// Whether something on screen changes with time alone.
fn needs_tick(app: &App) -> bool {
    app.rooms.values().any(|r| !r.typing.is_empty())
        || matches!(app.conn, app::Conn::Reconnecting { .. })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dirs = config::dirs()?;
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| dirs.config_dir().join("config.toml"));
    let file = config::load(&config_path)?;
    let state_file = StateFile {
        path: dirs.data_dir().join("state.json"),
    };
    let mut state = state_file.load();

    let given = match (cli.server.is_empty(), &file.server) {
        (false, _) => cli.server.clone(),
        (true, Some(s)) => vec![s.clone()],
        (true, None) if cli.command.is_some() => vec![DEFAULT_SERVER.to_owned()],
        (true, None) => vec![prompt("Server", Some(DEFAULT_SERVER))?],
    };
    let servers = ServerList::parse(&given)?;
    let user = match cli.user.clone().or(file.user.clone()) {
        Some(u) => u,
        None if cli.command.is_some() => bail!(
            "which user? pass --user NAME (or set it in {})",
            config_path.display()
        ),
        None => prompt("Username", None)?,
    };
    // The first URL names the account's saved token and read positions: a list that starts
    // with the server used so far keeps them.
    let server = servers.first().to_owned();
    let key = account_key(&user, &server);
    let ca_file = cli.ca_file.clone().or(file.ca_file.clone());
    let servers = servers.with_tls(ca_file.as_deref())?;
    // Before any credential leaves: the password below, or the saved token; to every server of
    // the list, since any of them may get them.
    let interactive = cli.command.is_none();
    for url in servers.urls() {
        match tls::before_credentials(url, &state.plain_ws_ok, cli.allow_plain_ws, interactive)? {
            Credentials::Send => {}
            Credentials::Refuse(why) => bail!(why),
            Credentials::Ask(host) => {
                eprintln!(
                    "{url} is plain ws://: your password, your token and every message would \
                     cross the network unencrypted, readable by anyone on the way. Use wss:// if \
                     the server has TLS."
                );
                let answer = prompt(
                    &format!("Send them to {host} unencrypted anyway? (yes/no)"),
                    Some("no"),
                )?;
                if !matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes") {
                    bail!("not connecting to {host} over plain ws://");
                }
                // Asked once per server: remembered next to the token.
                state.plain_ws_ok.insert(host);
                state_file.save(&state)?;
            }
        }
    }
    if let Some(sub) = &cli.command {
        let token = std::env::var("CHAT_TOKEN").ok().or_else(|| state.tokens.get(&key).cloned()).with_context(|| {
            format!("no saved token for {key}: run `chat-tui --server {server} --user {user}` once to log in, or set CHAT_TOKEN")
        })?;
        return match sub {
            Sub::Send { room, text } => {
                let seq = script::send_message(&servers, &token, room, text).await?;
                eprintln!("stored as #{seq} in {room}");
                Ok(())
            }
            Sub::Tail { room, json, since } => {
                script::tail(script::Tail {
                    servers: &servers,
                    token: &token,
                    room,
                    json: *json,
                    since: *since,
                    state_file: &state_file,
                    account: &key,
                })
                .await
            }
        };
    }
    let token = match state
        .tokens
        .get(&key)
        .filter(|_| !cli.login && !cli.register)
    {
        Some(t) => t.clone(),
        None => {
            let password = prompt_password(if cli.register {
                "Choose a password"
            } else {
                "Password"
            })?;
            let token = conn::login(&servers, &user, &password, cli.register)
                .await
                .map_err(|e| {
                    if !cli.register && e.to_string().starts_with("invalid_credentials") {
                        e.context("wrong username or password (new here? add --register)")
                    } else {
                        e
                    }
                })?;
            state.tokens.insert(key.clone(), token.clone());
            state_file.save(&state)?;
            token
        }
    };

    let settings = Settings {
        bell: file.bell.unwrap_or(true) && !cli.no_bell,
        server: servers.label(),
    };
    let backoff = file.reconnect.clone().unwrap_or_default().backoff();
    let id_prefix = format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let mut app = App::new(
        settings,
        id_prefix,
        state.read.get(&key).cloned().unwrap_or_default(),
    );

    let (to_net, from_ui) = mpsc::channel::<ToNet>(256);
    let (to_ui, mut from_net) = mpsc::channel::<Event>(1024);
    let net = tokio::spawn(conn::run(
        NetConfig {
            servers,
            token,
            backoff,
        },
        from_ui,
        to_ui,
    ));

    // ratatui::init also installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::init();
    let _ = execute!(
        std::io::stdout(),
        ct::EnableBracketedPaste,
        ct::EnableMouseCapture
    );
    // Terminals that speak the kitty keyboard protocol report Shift+Enter; elsewhere Alt+Enter.
    let enhanced = ratatui::crossterm::terminal::supports_keyboard_enhancement().unwrap_or(false);
    if enhanced {
        let _ = execute!(
            std::io::stdout(),
            ct::PushKeyboardEnhancementFlags(
                ct::KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES
            )
        );
    }
    let result = ui_loop(
        &mut terminal,
        &mut app,
        &to_net,
        &mut from_net,
        &state_file,
        &mut state,
        &key,
    )
    .await;
    if enhanced {
        let _ = execute!(std::io::stdout(), ct::PopKeyboardEnhancementFlags);
    }
    let _ = execute!(
        std::io::stdout(),
        ct::DisableBracketedPaste,
        ct::DisableMouseCapture
    );
    ratatui::restore();
    drop(to_net);
    let _ = tokio::time::timeout(Duration::from_secs(1), net).await;
    result
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    to_net: &mpsc::Sender<ToNet>,
    from_net: &mut mpsc::Receiver<Event>,
    state_file: &StateFile,
    state: &mut config::State,
    key: &str,
) -> anyhow::Result<()> {
    let mut keys = EventStream::new();
    // Typing indicators expire and the reconnect countdown moves: a slow tick, only while one of
    // them is on screen, and a redraw only when it changed something. Idle, nothing ticks.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    loop {
        if dirty {
            let area = terminal.get_frame().area();
            let m = view::messages_area(area, app);
            app.viewport = (m.width as usize, m.height as usize);
            terminal.draw(|f| view::draw(f, app))?;
            dirty = false;
        }
        let event = tokio::select! {
            ev = keys.next() => match ev {
                Some(Ok(CtEvent::Key(k))) => Event::Key(k),
                Some(Ok(CtEvent::Paste(p))) => Event::Paste(p),
                Some(Ok(CtEvent::Mouse(m))) => Event::Mouse(m),
                Some(Ok(CtEvent::Resize(..))) => Event::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => return Ok(()),
            },
            ev = from_net.recv() => match ev {
                Some(ev) => ev,
                None => return Ok(()),
            },
            _ = tick.tick(), if needs_tick(app) => {
                let now = Instant::now();
                let before: Vec<usize> = app.rooms.values().map(|r| r.typing.len()).collect();
                app.update(Event::Tick(now));
                let after: Vec<usize> = app.rooms.values().map(|r| r.typing.len()).collect();
                dirty = before != after || matches!(app.conn, app::Conn::Reconnecting { .. });
                continue;
            }
        };
        dirty = true;
        for cmd in app.update(event) {
            match cmd {
                Command::Send(frame, reference) => {
                    // Bounded: if the network task is behind, the UI waits a moment rather than
                    // dropping what the user sent.
                    let _ = to_net.send(ToNet::Send(frame, reference)).await;
                }
                Command::Reconnect => {
                    let _ = to_net.send(ToNet::Reconnect).await;
                }
                Command::Bell => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(b"\x07").and_then(|()| out.flush());
                }
                Command::SaveReadMarks => {
                    state.read.insert(key.to_owned(), app.read_marks());
                    if let Err(e) = state_file.save(state) {
                        app.notice = Some(format!("could not save read positions: {e:#}"));
                    }
                }
                Command::Quit => return Ok(()),
            }
        }
    }
}
