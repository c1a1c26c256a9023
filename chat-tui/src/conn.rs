//! The network task: one WebSocket at a time, reconnecting with backoff, talking to the UI only
//! through bounded channels. It never interprets chat state: frames go up as they come, frames
//! from the UI go out as they are; rejoining and resending are the model's decisions.
//!
//! With several server URLs, a connection that fails (refused, timed out, handshake, dropped)
//! moves to the next one, wrapping around; the delay before each attempt is the same backoff
//! as with one server. Catch-up is unchanged by the move: the model rejoins every room from its
//! last seq and resends what was not acknowledged, with the same client ids, which the cluster
//! stores once.

use std::time::{Duration, Instant};

use chat_proto::{ClientFrame, Ref, ServerFrame, close, decode_server, encode};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::app::{Conn, Event, Net};
use crate::backoff::{Backoff, BackoffConfig};
use crate::servers::ServerList;

/// What the UI asks of the network task.
#[derive(Debug)]
pub enum ToNet {
    Send(ClientFrame, Option<Ref>),
    Reconnect,
}

/// How often the status bar's round-trip time is measured.
const RTT_EVERY: Duration = Duration::from_secs(10);
const RTT_REF: &str = "chat-tui-rtt";

/// Why a connection ended.
enum Ended {
    /// Try again after a backoff delay.
    Retry(String),
    /// The user asked for a new connection now.
    Now,
    /// The server ended the session on purpose (logout elsewhere, bad token): stop.
    Stop(String),
    /// The UI is gone.
    Quit,
}

pub struct NetConfig {
    /// Where to connect, each URL with its TLS settings; the task moves through them.
    pub servers: ServerList,
    pub token: String,
    pub backoff: BackoffConfig,
}

/// Runs until the UI drops its sender.
pub async fn run(
    mut cfg: NetConfig,
    mut from_ui: mpsc::Receiver<ToNet>,
    to_ui: mpsc::Sender<Event>,
) {
    let mut backoff = Backoff::new(cfg.backoff);
    loop {
        let attempt = backoff.attempt;
        let announce = [
            Net::Server(cfg.servers.label()),
            Net::Conn(Conn::Connecting { attempt }),
        ];
        for net in announce {
            if to_ui.send(Event::Net(net)).await.is_err() {
                return;
            }
        }
        let ended = session(&cfg, &mut backoff, &mut from_ui, &to_ui).await;
        backoff.disconnected(Instant::now());
        let reason = match ended {
            Ended::Quit => return,
            Ended::Stop(reason) => {
                let _ = to_ui
                    .send(Event::Net(Net::Conn(Conn::Offline { reason })))
                    .await;
                // Wait for /reconnect (or the end).
                loop {
                    match from_ui.recv().await {
                        None => return,
                        Some(ToNet::Reconnect) => break,
                        Some(ToNet::Send(..)) => {}
                    }
                }
                continue;
            }
            // The user asked to reconnect: to the same server, which they can see.
            Ended::Now => continue,
            Ended::Retry(reason) => {
                // Whatever failed here, another node may be up: the next attempt goes there.
                cfg.servers.advance();
                reason
            }
        };
        let delay = backoff.next_delay(rand::random::<f64>());
        let at = Instant::now() + delay;
        let attempt = backoff.attempt;
        let why = crate::sanitize::one_line(&reason, 60);
        if to_ui
            .send(Event::Net(Net::Conn(Conn::Reconnecting {
                at,
                attempt,
                why,
            })))
            .await
            .is_err()
        {
            return;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = from_ui.recv() => match cmd {
                    None => return,
                    Some(ToNet::Reconnect) => break,
                    // Offline: the model keeps what it wants resent and resends it itself.
                    Some(ToNet::Send(..)) => {}
                },
            }
        }
    }
}

async fn session(
    cfg: &NetConfig,
    backoff: &mut Backoff,
    from_ui: &mut mpsc::Receiver<ToNet>,
    to_ui: &mpsc::Sender<Event>,
) -> Ended {
    let server = cfg.servers.current();
    let mut req = match server.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Stop(format!("bad server address {}: {e}", server.url)),
    };
    if let Ok(v) = format!("Bearer {}", cfg.token).parse() {
        req.headers_mut().insert("authorization", v);
    }
    // Replies can carry long histories: allow the server's largest, keep buffers small.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(ws_cfg),
        true,
        server.connector.clone(),
    );
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Err(_) => return Ended::Retry("connection timed out".into()),
        Ok(Err(WsError::Http(resp))) if resp.status().as_u16() == 401 => {
            return Ended::Stop("the server refused the saved token: run chat-tui --login".into());
        }
        // Trying again will not change the certificate; /reconnect does, once it is fixed.
        Ok(Err(e)) if crate::tls::certificate_error(&e).is_some() => {
            let why = crate::tls::certificate_error(&e).map(crate::tls::untrusted);
            return Ended::Stop(why.unwrap_or_default());
        }
        Ok(Err(e)) => return Ended::Retry(e.to_string()),
        Ok(Ok((ws, _))) => ws,
    };
    let hello = encode(
        &ClientFrame::Hello {
            // Version 1 until the client renders edits, reactions and read state (issue 12).
            versions: vec![1],
            token: None,
        },
        None,
    );
    if ws.send(Message::text(hello)).await.is_err() {
        return Ended::Retry("connection lost during the handshake".into());
    }
    let mut ready = false;
    let mut rtt = tokio::time::interval(RTT_EVERY);
    let mut ping_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(close::NORMAL);
                        let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        let why = crate::sanitize::one_line(&why, 120);
                        return if close::should_reconnect(code) {
                            Ended::Retry(format!("server closed the connection ({code} {why})"))
                        } else {
                            Ended::Stop(format!("server ended the session ({code} {why})"))
                        };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::Retry(e.to_string()),
                    None => return Ended::Retry("connection closed".into()),
                };
                let Ok(env) = decode_server(&text) else { continue };
                match &env.frame {
                    ServerFrame::Welcome { user: Some(user), .. } if !ready => {
                        ready = true;
                        backoff.connected(Instant::now());
                        if to_ui.send(Event::Net(Net::Ready { user: user.clone() })).await.is_err() {
                            return Ended::Quit;
                        }
                        continue;
                    }
                    ServerFrame::Welcome { .. } => return Ended::Stop("the server did not accept the token: run chat-tui --login".into()),
                    ServerFrame::Pong { .. } if env.reference == Some(Ref::Str(RTT_REF.into())) => {
                        if let Some(at) = ping_sent.take() {
                            let _ = to_ui.send(Event::Net(Net::Rtt(at.elapsed()))).await;
                        }
                        continue;
                    }
                    _ => {}
                }
                if to_ui.send(Event::Net(Net::Frame(Box::new(env)))).await.is_err() {
                    return Ended::Quit;
                }
            }
            cmd = from_ui.recv() => match cmd {
                None => {
                    let _ = ws.close(None).await;
                    return Ended::Quit;
                }
                Some(ToNet::Reconnect) => {
                    let _ = ws.close(None).await;
                    return Ended::Now;
                }
                Some(ToNet::Send(frame, reference)) => {
                    if ready && ws.send(Message::text(encode(&frame, reference.as_ref()))).await.is_err() {
                        return Ended::Retry("connection lost".into());
                    }
                }
            },
            _ = rtt.tick(), if ready => {
                ping_sent = Some(Instant::now());
                let ping = encode(&ClientFrame::Ping, Some(&Ref::Str(RTT_REF.into())));
                if ws.send(Message::text(ping)).await.is_err() {
                    return Ended::Retry("connection lost".into());
                }
            }
        }
    }
}

/// Logs in (or registers) with a password and returns the new token: the first-run path, and
/// `--login`. Each server of the list is tried in turn until one accepts the connection; what
/// that server answers (a wrong password, a name taken) is the answer.
pub async fn login(
    servers: &ServerList,
    user: &str,
    password: &str,
    register: bool,
) -> anyhow::Result<String> {
    use anyhow::{Context, bail};
    let mut servers = servers.clone();
    let mut failed = None;
    let mut ws = None;
    for _ in 0..servers.len() {
        let s = servers.current();
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            &s.url,
            None,
            true,
            s.connector.clone(),
        );
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((w, _))) => {
                ws = Some(w);
                break;
            }
            Ok(Err(e)) => {
                failed = Some(crate::tls::explain(e).context(format!("connecting to {}", s.url)))
            }
            Err(_) => failed = Some(anyhow::anyhow!("connecting to {}: timed out", s.url)),
        }
        servers.advance();
    }
    let Some(mut ws) = ws else {
        return Err(failed.unwrap_or_else(|| anyhow::anyhow!("no server to connect to")));
    };
    let hello = encode(
        &ClientFrame::Hello {
            // Version 1 until the client renders edits, reactions and read state (issue 12).
            versions: vec![1],
            token: None,
        },
        None,
    );
    ws.send(Message::text(hello)).await?;
    let frame = if register {
        ClientFrame::Register {
            username: user.into(),
            password: password.into(),
        }
    } else {
        ClientFrame::Login {
            username: user.into(),
            password: password.into(),
        }
    };
    ws.send(Message::text(encode(&frame, None))).await?;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .context("no answer from the server")?
    {
        let Message::Text(text) = msg? else { continue };
        match decode_server(&text).map(|e| e.frame) {
            Ok(ServerFrame::AuthOk {
                token: Some(token), ..
            }) => {
                let _ = ws.close(None).await;
                return Ok(token);
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                bail!("{}: {}", code, crate::sanitize::one_line(&message, 300))
            }
            _ => {}
        }
    }
    bail!("the server closed the connection before answering")
}
