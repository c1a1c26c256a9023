//! The non-interactive mode, for scripts and bots: `send` (the exit code says whether the server
//! acknowledged the message) and `tail` (one line per message, JSON with `--json`, resuming where
//! the last `tail` of that room stopped).
//!
//! With several server URLs both move to the next one when a connection fails or drops: `send`
//! resends the message with the same id (the cluster stores it once and acks the stored seq),
//! `tail` rejoins from the last seq it printed and skips any seq it already printed. `send` gives
//! up once every URL has failed in a row (the exit status says so); `tail` keeps going round
//! the list with the interactive client's backoff, so that a follower outlives a restart.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{CatchUp, ClientFrame, HistoryMessage, Ref, ServerFrame, decode_server, encode};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::backoff::{Backoff, BackoffConfig};
use crate::config::{State, StateFile};
use crate::sanitize;
use crate::servers::{Server, ServerList};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

/// An answer from the server itself (an `error` frame, a refused token): final, where a
/// connection failure is a reason to try the next server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refused>().is_some()
}

async fn connect(server: &Server, token: &str) -> anyhow::Result<Ws> {
    let url = server.url.as_str();
    let mut req = url
        .into_client_request()
        .with_context(|| format!("bad server address {url}"))?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, server.connector.clone());
    let (mut ws, _) = match tokio::time::timeout(WAIT, connect).await {
        Err(_) => bail!("connecting to {url}: timed out"),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status().as_u16() == 401 => {
            return Err(Refused(
                "the server refused the saved token: log in again with chat-tui --login".into(),
            )
            .into());
        }
        Ok(other) => other
            .map_err(crate::tls::explain)
            .with_context(|| format!("connecting to {url}"))?,
    };
    send(
        &mut ws,
        &ClientFrame::Hello {
            // Version 1 until the client renders edits, reactions and read state (issue 12).
            versions: vec![1],
            token: None,
        },
        None,
    )
    .await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, frame: &ClientFrame, reference: Option<&Ref>) -> anyhow::Result<()> {
    ws.send(Message::text(encode(frame, reference)))
        .await
        .context("sending to the server")
}

/// The next frame; an `error` frame becomes an error.
async fn next(ws: &mut Ws, wait: Option<Duration>) -> anyhow::Result<(ServerFrame, Option<Ref>)> {
    loop {
        let msg = match wait {
            Some(w) => tokio::time::timeout(w, ws.next())
                .await
                .context("no answer from the server")?,
            None => ws.next().await,
        };
        match msg {
            None => bail!("the server closed the connection"),
            Some(Err(e)) => bail!("connection lost: {e}"),
            Some(Ok(Message::Close(f))) => {
                let code = f.as_ref().map(|f| u16::from(f.code)).unwrap_or(1000);
                let why = format!("the server closed the connection ({code})");
                // Closed on purpose (logged out, not allowed): another node would say the same.
                if !chat_proto::close::should_reconnect(code) {
                    return Err(Refused(why).into());
                }
                bail!(why)
            }
            Some(Ok(Message::Text(t))) => {
                let Ok(env) = decode_server(&t) else { continue };
                if let ServerFrame::Error { code, message, .. } = &env.frame {
                    let why = format!("{code}: {}", sanitize::one_line(message, 300));
                    return Err(Refused(why).into());
                }
                return Ok((env.frame, env.reference));
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn join(
    ws: &mut Ws,
    room: &str,
    since: Option<(u64, String)>,
) -> anyhow::Result<ServerFrame> {
    let (since_seq, epoch) = since.map_or((None, None), |(s, e)| (Some(s), Some(e)));
    send(
        ws,
        &ClientFrame::Join {
            room: room.into(),
            since_seq,
            epoch,
        },
        None,
    )
    .await?;
    loop {
        let (frame, _) = next(ws, Some(WAIT)).await?;
        if matches!(&frame, ServerFrame::Joined { room: r, .. } if r == room) {
            return Ok(frame);
        }
    }
}

/// Sends one message and waits for its ack, moving through `servers` until one acks it.
pub async fn send_message(
    servers: &ServerList,
    token: &str,
    room: &str,
    text: &str,
) -> anyhow::Result<u64> {
    chat_proto::limits::check_body(text).map_err(anyhow::Error::msg)?;
    // One id for every attempt: a message that reached a node which then died is stored once,
    // and the resend is acked with its seq.
    let id = format!("s{:016x}", rand::random::<u64>());
    let mut servers = servers.clone();
    let mut failed = None;
    for _ in 0..servers.len() {
        match send_once(servers.current(), token, room, text, &id).await {
            Ok(seq) => return Ok(seq),
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                let url = &servers.current().url;
                if servers.len() > 1 {
                    eprintln!("chat-tui: {url}: {e:#}; trying the next server");
                }
                failed = Some(e);
            }
        }
        servers.advance();
    }
    Err(failed.unwrap_or_else(|| anyhow::anyhow!("no server to send to")))
}

async fn send_once(
    server: &Server,
    token: &str,
    room: &str,
    text: &str,
    id: &str,
) -> anyhow::Result<u64> {
    let mut ws = connect(server, token).await?;
    join(&mut ws, room, None).await?;
    let reference = Ref::Str(id.to_owned());
    send(
        &mut ws,
        &ClientFrame::Send {
            room: room.into(),
            id: id.to_owned(),
            body: text.into(),
            reply_to: None,
        },
        Some(&reference),
    )
    .await?;
    loop {
        if let (ServerFrame::Ack { id: acked, seq, .. }, _) = next(&mut ws, Some(WAIT)).await?
            && acked == id
        {
            let _ = ws.close(None).await;
            return Ok(seq);
        }
    }
}

/// Characters that must not reach a terminal even inside JSON strings: escaped as \uXXXX
/// (serde_json escapes C0 but leaves C1, bidi controls and line separators as they are).
fn json_line(m: &HistoryMessage, room: &str) -> String {
    let v = serde_json::json!({"room": room, "seq": m.seq, "id": m.id, "from": m.from, "body": m.body, "ts": m.ts});
    let mut out = String::new();
    for c in v.to_string().chars() {
        let risky = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}' | '\u{feff}');
        if risky {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn text_line(m: &HistoryMessage) -> String {
    let time = chrono::TimeZone::timestamp_millis_opt(&chrono::Local, m.ts)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let from = sanitize::name(&m.from, sanitize::MAX_NAME_GRAPHEMES);
    match m.body.strip_prefix("/me ") {
        Some(action) => format!(
            "{time} #{} * {from} {}",
            m.seq,
            sanitize::one_line(action, sanitize::MAX_LINE_GRAPHEMES)
        ),
        None => format!(
            "{time} #{} {from}: {}",
            m.seq,
            sanitize::one_line(&m.body, sanitize::MAX_LINE_GRAPHEMES)
        ),
    }
}

pub struct Tail<'a> {
    pub servers: &'a ServerList,
    pub token: &'a str,
    pub room: &'a str,
    pub json: bool,
    pub since: Option<u64>,
    pub state_file: &'a StateFile,
    pub account: &'a str,
}

/// A joined room on a fresh connection: its epoch and the first messages to print.
struct Opened {
    ws: Ws,
    epoch: String,
    batch: Vec<HistoryMessage>,
}

/// Connects to the first server of `servers` that answers and joins the room: after `since` in
/// the room's epoch when there is one, else its recent messages. Servers that do not answer
/// move the list on; after a whole round of them, it waits the backoff's delay and goes round
/// again. Only the server's own refusal (a bad token, an error frame) ends it.
async fn open(
    t: &Tail<'_>,
    servers: &mut ServerList,
    since: impl Fn(&str) -> Option<u64>,
) -> anyhow::Result<Opened> {
    let mut backoff = Backoff::new(BackoffConfig::default());
    loop {
        for _ in 0..servers.len() {
            match open_once(t, servers.current(), &since).await {
                Ok(o) => return Ok(o),
                Err(e) if is_refusal(&e) => return Err(e),
                Err(e) => eprintln!("chat-tui: {}: {e:#}", servers.current().url),
            }
            servers.advance();
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        eprintln!(
            "chat-tui: no server answered; trying again in {:.1} s",
            delay.as_secs_f32()
        );
        tokio::time::sleep(delay).await;
    }
}

async fn open_once(
    t: &Tail<'_>,
    server: &Server,
    since: &impl Fn(&str) -> Option<u64>,
) -> anyhow::Result<Opened> {
    let mut ws = connect(server, t.token).await?;
    let ServerFrame::Joined {
        epoch, messages, ..
    } = join(&mut ws, t.room, None).await?
    else {
        bail!("unexpected answer to join")
    };
    let Some(s) = since(&epoch) else {
        return Ok(Opened {
            ws,
            epoch,
            batch: messages,
        });
    };
    let ServerFrame::Joined {
        messages, catch_up, ..
    } = join(&mut ws, t.room, Some((s, epoch.clone()))).await?
    else {
        bail!("unexpected answer to join")
    };
    if catch_up == CatchUp::Reload {
        eprintln!(
            "chat-tui: more than the server replays was missed since #{s}; showing the latest"
        );
    }
    Ok(Opened {
        ws,
        epoch,
        batch: messages,
    })
}

/// Prints the room's messages after `since` (or after where the last tail stopped, or its recent
/// ones), then every new one. A dropped connection moves to the next server and rejoins after
/// the last seq printed; the tail ends when no server can be reached.
pub async fn tail(t: Tail<'_>) -> anyhow::Result<()> {
    let mut state: State = t.state_file.load();
    let key = format!("{}#{}", t.account, t.room);
    let saved = state.tail.get(&key).cloned();
    let mut servers = t.servers.clone();
    // Where this tail stands: the epoch it printed in and the last seq printed.
    let mut printed: Option<(String, u64)> = None;
    let mut out = std::io::stdout().lock();
    loop {
        let since = |epoch: &str| match &printed {
            Some((e, s)) if e == epoch => Some(*s),
            // The room was recreated meanwhile (another epoch): its seqs start over.
            Some(_) => None,
            None => t
                .since
                .or_else(|| saved.as_ref().filter(|(e, _)| e == epoch).map(|(_, s)| *s)),
        };
        let Opened {
            mut ws,
            epoch,
            mut batch,
        } = open(&t, &mut servers, &since).await?;
        let mut last = match &printed {
            Some((e, s)) if *e == epoch => *s,
            Some(_) => 0,
            None => since(&epoch).unwrap_or(0),
        };
        let lost = loop {
            for m in batch.drain(..) {
                // A seq printed already (the replay overlaps what came live, or a resumed tail
                // gets its last line again) is skipped: each message once, in seq order.
                if m.seq <= last {
                    continue;
                }
                let line = if t.json {
                    json_line(&m, t.room)
                } else {
                    text_line(&m)
                };
                writeln!(out, "{line}")?;
                out.flush()?;
                last = m.seq;
                printed = Some((epoch.clone(), last));
                // Saved after printing: a tail killed at this instant prints this line again
                // next time (at least once; the seq tells a duplicate), never skips it.
                state.tail.insert(key.clone(), (epoch.clone(), last));
                t.state_file.save(&state)?;
            }
            match next(&mut ws, None).await {
                Err(e) if is_refusal(&e) => return Err(e),
                Err(e) => break e,
                Ok((ServerFrame::Replay { room, messages, .. }, _)) if room == t.room => {
                    batch = messages
                }
                Ok((
                    ServerFrame::Message {
                        room,
                        seq,
                        id,
                        from,
                        body,
                        ts,
                        ..
                    },
                    _,
                )) if room == t.room => {
                    batch = vec![HistoryMessage {
                        seq,
                        id,
                        from,
                        body,
                        ts,
                        reply_to: None,
                        edited: None,
                        deleted: false,
                        reactions: Vec::new(),
                    }];
                }
                Ok(_) => {}
            }
        };
        printed.get_or_insert((epoch.clone(), last));
        eprintln!(
            "chat-tui: {}: {lost:#}; reconnecting",
            servers.current().url
        );
        // The server this tail was on failed: the next attempt starts at the next one.
        servers.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_a_terminal_would_act_on() {
        let m = HistoryMessage {
            seq: 3,
            id: "i".into(),
            from: "bob".into(),
            body: "a\u{1b}[2Jb\u{9b}c\u{202e}d\u{2028}e".into(),
            ts: 5,
            reply_to: None,
            edited: None,
            deleted: false,
            reactions: Vec::new(),
        };
        let line = json_line(&m, "r");
        assert!(crate::sanitize::is_terminal_safe(&line), "{line:?}");
        let back: serde_json::Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(back["body"], m.body, "the text itself is unchanged");
        assert_eq!(back["seq"], 3);
    }

    #[test]
    fn text_lines_are_sanitized() {
        let m = HistoryMessage {
            seq: 1,
            id: "i".into(),
            from: "e\u{1b}]0;x\u{7}ve".into(),
            body: "/me \u{1b}[31mwaves".into(),
            ts: 0,
            reply_to: None,
            edited: None,
            deleted: false,
            reactions: Vec::new(),
        };
        let line = text_line(&m);
        assert!(crate::sanitize::is_terminal_safe(&line), "{line:?}");
        assert!(line.contains("#1 * "), "{line}");
    }
}
