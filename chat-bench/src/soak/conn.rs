//! The soak's own connections: plain `ws://` on loopback, from 127.0.0.x sources, knowing their
//! local address (the server's log names a closed connection by it) and, for a client that
//! will stop reading, with a small receive buffer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use chat_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `server` from 127.0.0.`1 + n % sources` with `token` in the header.
pub async fn connect(
    server: SocketAddr,
    n: usize,
    sources: usize,
    token: &str,
    rcvbuf: Option<u32>,
) -> anyhow::Result<(Ws, SocketAddr)> {
    let mut req = format!("ws://{server}/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let socket = TcpSocket::new_v4()?;
    let src = Ipv4Addr::new(127, 0, 0, 1 + (n % sources.max(1)) as u8);
    socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let tcp = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting from {src}"))?;
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await?;
    Ok((ws, local))
}

/// Says hello and waits for `welcome` naming `user`: the server's `max_replay`.
pub async fn hello(ws: &mut Ws, user: &str) -> anyhow::Result<u64> {
    let hello = ClientFrame::Hello {
        versions: vec![1],
        token: None,
    };
    ws.send(Message::text(chat_proto::encode(&hello, None)))
        .await?;
    let fut = async {
        loop {
            let Some(msg) = ws.next().await else {
                anyhow::bail!("closed before welcome")
            };
            let Message::Text(t) = msg? else { continue };
            match chat_proto::decode_server(&t)?.frame {
                ServerFrame::Welcome {
                    user: Some(u),
                    limits,
                    ..
                } if u == user => return Ok(limits.max_replay),
                other => anyhow::bail!("hello answered with {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut).await?
}
