//! One client connection: the HTTP upgrade, then two halves. The reader (this task) decodes
//! frames and hands them to the [`Session`]; the writer (its own task) drains the [`Outbox`],
//! batching whatever is queued into one flush, and sends pings. Neither holds a lock across
//! `.await`; they share only the outbox and a last-seen clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_proto::{close, limits};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::admission::{Refusal, Ticket};
use crate::auth::token_hash;
use crate::handshake;
use crate::outbox::{Out, Outbox, OutboxReceiver};
use crate::server::Ctx;
use crate::session::Session;

/// Frames written before one flush: bounds how long a busy writer goes without flushing.
const MAX_BATCH: usize = 256;
/// How long a closing connection may take to flush what is queued and say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The same for a slow consumer (4008), whose queue was dropped at the kick: its close frame
/// waits behind what the socket buffers already hold, which a slow reader takes a while to
/// read, and the connection holds no queue meanwhile, only its socket.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// tungstenite's defaults reserve about 128 KiB of buffers per connection. Chat frames are small:
/// the read buffer is 512 bytes (it is zero-filled, so every byte of it is resident for the life of
/// the connection; a larger frame grows it as needed), and writes buffer up to 4 KiB before a
/// syscall, flushed per batch.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(4 * limits::MAX_FRAME_BYTES)
        .max_message_size(Some(limits::MAX_FRAME_BYTES))
        .max_frame_size(Some(limits::MAX_FRAME_BYTES))
}

/// Time since the connection started, in ms: what the reader stamps and the writer checks.
struct LastSeen {
    start: Instant,
    ms: AtomicU64,
}

impl LastSeen {
    fn touch(&self) {
        self.ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.ms.load(Ordering::Relaxed)))
    }

    /// Counts `lost` (time the server itself did not run) as if the client had been heard from
    /// that much later: the client may well have answered, unread, meanwhile.
    fn forgive(&self, lost: Duration) {
        self.ms
            .fetch_add(lost.as_millis() as u64, Ordering::Relaxed);
    }
}

/// How late a ping tick must be before the lateness counts as the server not running.
const STALL: Duration = Duration::from_millis(500);

/// Plain TCP or TLS: the stream is chosen per connection, the rest of this file is the same.
type Ws = WebSocketStream<crate::tls::Stream>;

/// Serves one TCP connection to the end. Errors stay here: they are logged, never returned to
/// the accept loop.
/// `ticket` is its connection slot, held until the end.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, ticket: Ticket) {
    // This future lives as long as the connection, so what is used once (the HTTP upgrade) or
    // briefly (a request) is boxed and gone when done, not kept in its state: an idle
    // connection's cost is mostly this future, the writer's, and the socket buffers (see
    // docs/benchmarks.md, "Idle connections").
    let Some((ws, mut session, outbox, orx)) = Box::pin(open(tcp, peer, &ctx, ticket)).await else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let seen = Arc::new(LastSeen {
        start: Instant::now(),
        ms: AtomicU64::new(0),
    });
    let writer = tokio::spawn(write_loop(
        sink,
        orx,
        outbox.clone(),
        ctx.clone(),
        seen.clone(),
    ));

    // Dropped once the connection is authenticated.
    let mut auth_deadline =
        (!session.is_authed()).then(|| Box::pin(tokio::time::sleep(ctx.config.auth_timeout)));
    let kick = outbox.kick_token();
    // Whether the client ended the connection (close frame, EOF, error) rather than the server.
    let mut peer_gone = false;
    loop {
        tokio::select! {
            biased;
            _ = kick.cancelled() => break,
            _ = ctx.stop_reading.cancelled() => break,
            _ = async { if let Some(d) = &mut auth_deadline { d.await } }, if auth_deadline.is_some() => {
                outbox.kick(close::AUTH_TIMEOUT, "not authenticated in time");
                break;
            }
            msg = stream.next() => {
                let Some(msg) = msg else { peer_gone = true; break };
                match msg {
                    Ok(Message::Text(text)) => {
                        seen.touch();
                        Box::pin(session.on_text(text.as_str())).await;
                        // A slow request (argon2 queued in a login flood) is not silence.
                        seen.touch();
                        if session.is_authed() {
                            auth_deadline = None;
                        }
                    }
                    Ok(Message::Binary(_)) => {
                        ctx.counters.frames_received.count(None);
                        outbox.kick(close::UNSUPPORTED_DATA, "binary frames are not supported: send JSON in text frames");
                        break;
                    }
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => seen.touch(),
                    Ok(Message::Close(_)) => { peer_gone = true; break }
                    Err(WsError::Capacity(e)) => {
                        tracing::debug!(%peer, error = %e, "frame too large");
                        outbox.kick(close::MESSAGE_TOO_BIG, "frame larger than 65536 bytes");
                        break;
                    }
                    Err(WsError::Utf8(_)) => {
                        outbox.kick(close::INVALID_PAYLOAD, "text frame is not valid UTF-8");
                        break;
                    }
                    // The client vanished without a close handshake (killed, network gone).
                    Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                        peer_gone = true;
                        break;
                    }
                    Err(WsError::Protocol(e)) => {
                        tracing::debug!(%peer, error = %e, "WebSocket protocol violation");
                        outbox.kick(close::WS_PROTOCOL_ERROR, "WebSocket protocol violation");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "read failed");
                        peer_gone = true;
                        break;
                    }
                }
            }
        }
    }
    // At shutdown the writer drains and closes with 1001; otherwise this connection is done.
    if !ctx.stop_reading.is_cancelled() {
        outbox.kick(close::NORMAL, "");
    }
    // When the server is the one closing, keep reading (and discarding) until the client's
    // close reply or the grace period: a socket dropped with unread input is reset by the
    // kernel, and the reset can destroy the close frame before the client reads its code.
    // The writer bounds its own goodbye (longer for a slow consumer, whose close frame waits
    // behind the socket's buffers); once it is done, the client has a short grace to reply.
    let mut writer = writer;
    if peer_gone {
        let _ = (&mut writer).await;
    } else {
        let read_to_close = async { while let Some(Ok(_)) = stream.next().await {} };
        tokio::pin!(read_to_close);
        tokio::select! {
            _ = &mut read_to_close => {
                let _ = (&mut writer).await;
            }
            _ = &mut writer => {
                let _ = tokio::time::timeout(CLOSE_GRACE, read_to_close).await;
            }
        }
    }
    session.finish();
    ctx.counters
        .disconnected((!peer_gone).then(|| outbox.close_reason().map_or(close::NORMAL, |c| c.0)));
    if let Some((code, reason)) = outbox.close_reason()
        && code != close::NORMAL
    {
        tracing::info!(%peer, code, reason, "connection closed by server");
    }
}

/// The HTTP upgrade: the request, the bearer token if any, the 101. `None` when the client was
/// refused (the refusal is written here) or went away.
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    ticket: Ticket,
) -> Option<(Ws, Session, Arc<Outbox>, OutboxReceiver)> {
    // The TLS handshake (when on) and the request head share one deadline, here in the
    // connection's task: a stalled handshake holds neither the accept loop nor a slot for long.
    let deadline = tokio::time::Instant::now() + ctx.config.auth_timeout;
    let mut tcp = crate::tls::wrap(ctx.tls.as_deref(), tcp, peer, deadline).await?;
    let head_time = deadline.saturating_duration_since(tokio::time::Instant::now());
    let upgrade = match handshake::read_request(&mut tcp, head_time).await {
        Ok(u) => u,
        Err(why) => {
            tracing::debug!(%peer, %why, "handshake refused");
            handshake::refuse(&mut tcp, &why).await;
            return None;
        }
    };
    let (outbox, orx) = Outbox::new(
        ctx.config.outbound_queue,
        ctx.config.outbound_queue_bytes,
        ctx.budget.clone(),
    );
    let in_reserve = ticket.in_reserve();
    let mut session = Session::new(ctx.clone(), outbox.clone(), ticket);
    let refused = match &upgrade.bearer {
        Some(token) => match session.check_token(token).await {
            // A reserve slot is for a user who is already connected: a new device, not a
            // new account filling the server.
            Ok(user) if in_reserve && ctx.hub.user_connections(&user) == 0 => Some((
                503,
                "Service Unavailable",
                Refusal::ReserveOnly.message().to_owned(),
            )),
            Ok(user) => match session.become_authed(&user, token_hash(token)) {
                Ok(()) => None,
                Err(fail) => Some((503, "Service Unavailable", format!("{}\n", fail.message))),
            },
            Err(fail) => {
                tracing::debug!(%peer, "bearer token refused");
                Some(match fail.code {
                    chat_proto::ErrorCode::InvalidToken => {
                        (401, "Unauthorized", format!("{}\n", fail.message))
                    }
                    _ => (503, "Service Unavailable", format!("{}\n", fail.message)),
                })
            }
        },
        None if in_reserve => Some((
            503,
            "Service Unavailable",
            Refusal::ReserveOnly.message().to_owned(),
        )),
        None => None,
    };
    if let Some((status, reason, body)) = refused {
        handshake::reply(&mut tcp, status, reason, &body).await;
        session.finish();
        return None;
    }
    if handshake::accept(&mut tcp, &upgrade.request).await.is_err() {
        session.finish();
        return None;
    }
    let ws =
        WebSocketStream::from_partially_read(tcp, upgrade.rest, Role::Server, Some(ws_config()))
            .await;
    Some((ws, session, outbox, orx))
}

type Sink = SplitSink<Ws, Message>;

async fn write_loop(
    mut sink: Sink,
    mut orx: OutboxReceiver,
    outbox: Arc<Outbox>,
    ctx: Arc<Ctx>,
    seen: Arc<LastSeen>,
) {
    let interval = ctx.config.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let kick = orx.kick.clone();
    let kicked = || outbox.close_reason().unwrap_or((close::NORMAL, ""));
    let mut unfinished = false;
    let mut last_tick = tokio::time::Instant::now();
    let (code, reason) = loop {
        tokio::select! {
            biased;
            _ = kick.cancelled() => break kicked(),
            _ = ctx.close_all.cancelled() => break (close::GOING_AWAY, "server shutting down"),
            frame = orx.recv() => {
                // A client that stops reading blocks this write; the kick must still win.
                tokio::select! {
                    biased;
                    _ = kick.cancelled() => break kicked(),
                    written = write_batch(&mut sink, &mut orx, frame, &mut unfinished, &ctx.counters) => {
                        if written.is_err() {
                            outbox.kick(close::NORMAL, "");
                            return;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                // A tick much later than due means this process was not running (SIGSTOP, a
                // paused VM, a starved runtime): the client cannot be blamed for that time.
                // Without this, a 30 s stop closed half the connections with 4010 at resume.
                let now = tokio::time::Instant::now();
                let late = now.duration_since(last_tick).saturating_sub(interval);
                last_tick = now;
                if late > STALL {
                    seen.forgive(late);
                }
                if seen.silent_for() > interval + ctx.config.ping_timeout {
                    outbox.kick(close::HEARTBEAT_TIMEOUT, "no answer to pings");
                    continue;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    outbox.kick(close::NORMAL, "");
                    return;
                }
            }
        }
    };
    // Say goodbye: flush what is already queued (acks, the error that explains the close), then
    // the close frame, all within a grace period so a client that reads nothing cannot hold us.
    let goodbye = async {
        // A kick that cut a fragmented message short leaves it open: no other message may
        // start before it ends, but a close frame may (control frames interleave), so the
        // queue is dropped and the close goes alone.
        let mut tally = ctx.counters.frames_sent.tally();
        while let Some(out) = orx.try_recv().filter(|_| !unfinished) {
            for frame in out.frames() {
                feed(&mut sink, frame, &mut unfinished).await?;
                tally.add(frame);
            }
            orx.written(&out);
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
        .await?;
        // Wait for the client's close reply (the stream half sees it) briefly; then drop.
        sink.close().await
    };
    let _ = tokio::time::timeout(close_grace(code), goodbye).await;
}

fn close_grace(code: u16) -> Duration {
    if code == close::SLOW_CONSUMER {
        SLOW_CLOSE_GRACE
    } else {
        CLOSE_GRACE
    }
}

/// Text messages longer than this go out as WebSocket fragments of this size.
const FRAGMENT: usize = 4096;

/// `frame` as WebSocket messages: itself, or, when long, fragments of [`FRAGMENT`] bytes that
/// every client library reassembles into the same message. tungstenite serializes a whole frame
/// into the connection's write buffer and never shrinks it, so one 200 KB `joined` (a room of
/// 5,000 members) left 200 KB behind on that connection for good: measured, a join storm of
/// 5,000 ended with the server at 613 MB.
fn fragments(frame: &Utf8Bytes) -> impl Iterator<Item = Message> + use<> {
    let bytes = Bytes::from(frame.clone());
    let n = bytes.len().div_ceil(FRAGMENT).max(1);
    let whole = (n == 1).then(|| Message::Text(frame.clone()));
    let parts = (n > 1).then_some(0..n).into_iter().flatten().map(move |i| {
        let end = ((i + 1) * FRAGMENT).min(bytes.len());
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        Message::Frame(Frame::message(
            bytes.slice(i * FRAGMENT..end),
            OpCode::Data(opcode),
            i + 1 == n,
        ))
    });
    whole.into_iter().chain(parts)
}

/// Feeds one frame, as fragments when long; `unfinished` is true while a fragmented message
/// has been started and not ended.
async fn feed(sink: &mut Sink, frame: &Utf8Bytes, unfinished: &mut bool) -> Result<(), WsError> {
    for m in fragments(frame) {
        let last = match &m {
            Message::Frame(f) => f.header().is_final,
            _ => true,
        };
        // Open from before a fragment is fed until after the final one is.
        if !last {
            *unfinished = true;
        }
        sink.feed(m).await?;
        if last {
            *unfinished = false;
        }
    }
    Ok(())
}

/// Writes `first` and whatever else is queued, then flushes once.
async fn write_batch(
    sink: &mut Sink,
    rx: &mut OutboxReceiver,
    first: Out,
    unfinished: &mut bool,
    counters: &crate::metrics::Counters,
) -> Result<(), WsError> {
    let mut next = Some(first);
    let mut items = 0;
    // Given back to the budget once per batch: one atomic update, not one per item.
    let mut written = 0;
    let mut tally = counters.frames_sent.tally();
    while let Some(out) = next {
        for frame in out.frames() {
            feed(sink, frame, unfinished).await?;
            tally.add(frame);
        }
        // Handed to tungstenite, which holds at most a fragment of it past its write buffer.
        written += out.bytes();
        items += 1;
        next = if items < MAX_BATCH {
            rx.try_recv()
        } else {
            None
        };
    }
    rx.written_bytes(written);
    counters.sent_bytes.inc_by(written as u64);
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(frame: &str) -> Vec<(Vec<u8>, bool, bool)> {
        fragments(&Utf8Bytes::from(frame.to_owned()))
            .map(|m| match m {
                Message::Text(t) => (t.as_bytes().to_vec(), true, true),
                Message::Frame(f) => (
                    f.payload().to_vec(),
                    matches!(f.header().opcode, OpCode::Data(Data::Text)),
                    f.header().is_final,
                ),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn short_frames_go_whole_and_long_ones_in_fragments_that_add_up() {
        assert_eq!(payloads("hi"), [(b"hi".to_vec(), true, true)]);
        // Multi-byte characters across fragment boundaries: the receiver validates the whole.
        let long = "é日".repeat(3000);
        let parts = payloads(&long);
        assert_eq!(parts.len(), long.len().div_ceil(FRAGMENT));
        assert!(parts[0].1 && !parts[0].2, "first: a text opcode, not final");
        assert!(parts[1..].iter().all(|p| !p.1), "then continuations");
        assert!(parts.last().is_some_and(|p| p.2), "the last is final");
        assert!(parts.iter().all(|p| p.0.len() <= FRAGMENT));
        let joined: Vec<u8> = parts.into_iter().flat_map(|p| p.0).collect();
        assert_eq!(joined, long.as_bytes());
    }
}
