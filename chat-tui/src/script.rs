//! The non-interactive mode, for scripts and bots: `send` (the exit code says whether the server
//! acknowledged the message) and `tail` (one line per message, JSON with `--json`, resuming where
//! the last `tail` of that room stopped).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use chat_proto::{CatchUp, ClientFrame, HistoryMessage, Ref, ServerFrame, decode_server, encode};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::config::{State, StateFile};
use crate::sanitize;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

async fn connect(server: &str, connector: Option<Connector>, token: &str) -> anyhow::Result<Ws> {
    let mut req = server
        .into_client_request()
        .with_context(|| format!("bad server address {server}"))?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
    let (mut ws, _) = match connect.await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().as_u16() == 401 => {
            bail!("the server refused the saved token: log in again with chat-tui --login")
        }
        other => other
            .map_err(crate::tls::explain)
            .with_context(|| format!("connecting to {server}"))?,
    };
    send(
        &mut ws,
        &ClientFrame::Hello {
            versions: chat_proto::SUPPORTED_VERSIONS.to_vec(),
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
                bail!("the server closed the connection ({code})")
            }
            Some(Ok(Message::Text(t))) => {
                let Ok(env) = decode_server(&t) else { continue };
                if let ServerFrame::Error { code, message, .. } = &env.frame {
                    bail!("{code}: {}", sanitize::one_line(message, 300));
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

/// Sends one message and waits for its ack.
pub async fn send_message(
    server: &str,
    connector: Option<Connector>,
    token: &str,
    room: &str,
    text: &str,
) -> anyhow::Result<u64> {
    chat_proto::limits::check_body(text).map_err(anyhow::Error::msg)?;
    let mut ws = connect(server, connector, token).await?;
    join(&mut ws, room, None).await?;
    let id = format!("s{:016x}", rand::random::<u64>());
    let reference = Ref::Str(id.clone());
    send(
        &mut ws,
        &ClientFrame::Send {
            room: room.into(),
            id: id.clone(),
            body: text.into(),
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
    pub server: &'a str,
    pub connector: Option<Connector>,
    pub token: &'a str,
    pub room: &'a str,
    pub json: bool,
    pub since: Option<u64>,
    pub state_file: &'a StateFile,
    pub account: &'a str,
}

/// Prints the room's messages after `since` (or after where the last tail stopped, or its recent
/// ones), then every new one, until the connection ends.
pub async fn tail(t: Tail<'_>) -> anyhow::Result<()> {
    let mut state: State = t.state_file.load();
    let key = format!("{}#{}", t.account, t.room);
    let saved = state.tail.get(&key).cloned();
    let mut ws = connect(t.server, t.connector.clone(), t.token).await?;
    let first = join(&mut ws, t.room, None).await?;
    let ServerFrame::Joined {
        epoch, messages, ..
    } = first
    else {
        bail!("unexpected answer to join")
    };
    let since = t
        .since
        .or_else(|| saved.as_ref().filter(|(e, _)| *e == epoch).map(|(_, s)| *s));
    let mut batch = messages;
    if let Some(s) = since {
        let ServerFrame::Joined {
            messages,
            catch_up,
            complete: _,
            ..
        } = join(&mut ws, t.room, Some((s, epoch.clone()))).await?
        else {
            bail!("unexpected answer to join")
        };
        if catch_up == CatchUp::Reload {
            eprintln!(
                "chat-tui: more than the server replays was missed since #{s}; showing the latest"
            );
        }
        batch = messages;
    }
    let mut last = since.unwrap_or(0);
    let mut out = std::io::stdout().lock();
    loop {
        for m in batch.drain(..) {
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
            // Saved after printing: a tail killed at this instant prints this line again next
            // time (at least once; the seq tells a duplicate), never skips it.
            state.tail.insert(key.clone(), (epoch.clone(), last));
            t.state_file.save(&state)?;
        }
        match next(&mut ws, None).await? {
            (ServerFrame::Replay { room, messages, .. }, _) if room == t.room => batch = messages,
            (
                ServerFrame::Message {
                    room,
                    seq,
                    id,
                    from,
                    body,
                    ts,
                },
                _,
            ) if room == t.room => {
                batch = vec![HistoryMessage {
                    seq,
                    id,
                    from,
                    body,
                    ts,
                }];
            }
            _ => {}
        }
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
        };
        let line = text_line(&m);
        assert!(crate::sanitize::is_terminal_safe(&line), "{line:?}");
        assert!(line.contains("#1 * "), "{line}");
    }
}
