//! Connections: spread over several 127.0.0.x source addresses (one address has ~28k ephemeral
//! ports), with small tungstenite buffers so the generator stays cheap beside the server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The TLS config for a wss:// URL, set once by `main` (from --ca-file) before the first
/// connection. Process-wide, like the fd limit: every plan and task passes the URL as a string,
/// and this is the one thing a wss:// URL needs besides it.
static TLS: OnceLock<Connector> = OnceLock::new();

/// Sets the TLS config every wss:// connection uses.
pub fn set_tls(connector: Connector) {
    let _ = TLS.set(connector);
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20)
}

/// Opens a WebSocket to `url` from source address 127.0.0.`1 + n % sources`.
pub async fn connect(
    url: &str,
    n: usize,
    sources: usize,
    bearer: Option<&str>,
) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    let host = req.uri().host().context("url host")?.to_owned();
    let wss = req.uri().scheme_str() == Some("wss");
    let port = req.uri().port_u16().unwrap_or(if wss { 443 } else { 80 });
    let server: SocketAddr = format!("{host}:{port}")
        .parse()
        .context("the server must be an IP address")?;
    let socket = TcpSocket::new_v4()?;
    let src = Ipv4Addr::new(127, 0, 0, 1 + (n % sources.max(1)) as u8);
    socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let tcp = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting from {src}"))?;
    tcp.set_nodelay(true)?;
    let connector = match wss {
        true => TLS
            .get()
            .context("wss:// before the TLS config was set")?
            .clone(),
        false => Connector::Plain,
    };
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
        req,
        tcp,
        Some(ws_config()),
        Some(connector),
    )
    .await?;
    Ok(ws)
}

/// Opens `clients` connections with `open(n)`, in waves so the server's accept queue is not
/// flooded; fails (saying why) unless all came up.
pub async fn connect_all<F, Fut>(clients: usize, open: F) -> anyhow::Result<Vec<(usize, Ws)>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Ws>> + Send + 'static,
{
    let mut conns = Vec::with_capacity(clients);
    let mut failed = 0;
    let wave = 200;
    for chunk_start in (0..clients).step_by(wave) {
        let mut set = tokio::task::JoinSet::new();
        for n in chunk_start..(chunk_start + wave).min(clients) {
            let fut = open(n);
            set.spawn(async move { (n, fut.await) });
        }
        while let Some(r) = set.join_next().await {
            match r? {
                (n, Ok(ws)) => conns.push((n, ws)),
                (n, Err(e)) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("chat-bench: connection {n} failed: {e:#}");
                    }
                }
            }
        }
    }
    if conns.len() < clients {
        anyhow::bail!(
            "only {} of {clients} connections came up (the fd limit is {}: one process holds about 19,000 sockets here)",
            conns.len(),
            crate::sys::raise_fd_limit()
        );
    }
    conns.sort_by_key(|(n, _)| *n);
    Ok(conns)
}

/// Connects with `token`, says hello, and waits for `welcome`.
pub async fn hello(url: &str, n: usize, sources: usize, token: &str) -> anyhow::Result<Ws> {
    let mut ws = connect(url, n, sources, Some(token)).await?;
    send_json(&mut ws, serde_json::json!({"type":"hello","versions":[1]})).await?;
    expect(&mut ws, "welcome").await?;
    Ok(ws)
}

/// [`hello`], then joins `room` and waits for `joined`.
pub async fn join(
    url: &str,
    n: usize,
    sources: usize,
    token: &str,
    room: &str,
) -> anyhow::Result<Ws> {
    let mut ws = hello(url, n, sources, token).await?;
    send_json(&mut ws, serde_json::json!({"type":"join","room":room})).await?;
    expect(&mut ws, "joined").await?;
    Ok(ws)
}

/// Creates the rooms (they may be there from an earlier run) before anyone joins them.
pub async fn create_rooms(url: &str, token: &str, names: &[String]) -> anyhow::Result<()> {
    let mut ws = hello(url, 0, 1, token).await?;
    for name in names {
        send_json(
            &mut ws,
            serde_json::json!({"type":"create_room","room":name}),
        )
        .await?;
    }
    let mut answered = 0;
    while answered < names.len() {
        let v = recv_json(&mut ws).await?;
        if v["type"] == "room_created" || v["code"] == "room_exists" {
            answered += 1;
        } else if v["type"] == "error" {
            anyhow::bail!("create_room: {}", v["message"]);
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

pub async fn send_json(ws: &mut Ws, v: serde_json::Value) -> anyhow::Result<()> {
    ws.send(Message::Text(Utf8Bytes::from(v.to_string())))
        .await?;
    Ok(())
}

/// The next text frame as JSON (skipping pings), or an error on close.
pub async fn recv_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), ws.next()).await {
            Err(_) => anyhow::bail!("no frame within 30 s"),
            Ok(None) => anyhow::bail!("connection closed"),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t)?),
            Ok(Some(Ok(Message::Close(f)))) => anyhow::bail!("closed by the server: {f:?}"),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Waits for a frame of type `t`; an `error` frame is an error.
pub async fn expect(ws: &mut Ws, t: &str) -> anyhow::Result<serde_json::Value> {
    loop {
        let v = recv_json(ws).await?;
        if v["type"] == t {
            return Ok(v);
        }
        if v["type"] == "error" {
            anyhow::bail!("{}: {}", v["code"], v["message"]);
        }
    }
}

/// A token for `user`: registered if new, else logged in.
pub async fn token(url: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let mut ws = connect(url, 0, 1, None).await?;
    send_json(&mut ws, serde_json::json!({"type":"hello","versions":[1]})).await?;
    expect(&mut ws, "welcome").await?;
    send_json(
        &mut ws,
        serde_json::json!({"type":"register","username":user,"password":password}),
    )
    .await?;
    let v = loop {
        let v = recv_json(&mut ws).await?;
        if v["type"] == "auth_ok" || v["type"] == "error" {
            break v;
        }
    };
    let v = if v["code"] == "username_taken" {
        send_json(
            &mut ws,
            serde_json::json!({"type":"login","username":user,"password":password}),
        )
        .await?;
        expect(&mut ws, "auth_ok").await?
    } else if v["type"] == "error" {
        anyhow::bail!("register {user}: {}", v["message"]);
    } else {
        v
    };
    let _ = ws.close(None).await;
    v["token"].as_str().map(str::to_owned).context("no token")
}
