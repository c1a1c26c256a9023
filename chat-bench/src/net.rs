//! Connections: spread over several 127.0.0.x source addresses (one address has ~28k ephemeral
//! ports), with small tungstenite buffers so the generator stays cheap beside the server.
//!
//! With several `--url`s (nodes of one cluster) connection `n` starts at URL `n % len`, so the
//! load is spread evenly, and a connection refused or a handshake that fails moves it to the
//! next URL, each tried once. A connection that drops during a measurement is counted as a
//! disconnect and not reopened: reconnecting would hide the drop in the figures.

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

/// Splits `--url` values into URLs: repeat the flag, or separate them with commas.
pub fn split_urls(values: &[String]) -> anyhow::Result<Vec<String>> {
    let mut urls: Vec<String> = Vec::new();
    for url in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if url.is_empty() || urls.iter().any(|u| u == url) {
            continue;
        }
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            anyhow::bail!("`{url}` is not a WebSocket URL (ws:// or wss://)");
        }
        urls.push(url.to_owned());
    }
    anyhow::ensure!(!urls.is_empty(), "no --url given");
    Ok(urls)
}

/// The URLs connection `n` tries, in order: its own first, then the rest, wrapping around.
pub fn rotation(urls: &[String], n: usize) -> impl Iterator<Item = &str> {
    let start = n % urls.len().max(1);
    urls[start..]
        .iter()
        .chain(&urls[..start])
        .map(String::as_str)
}

/// Tries `attempt` on each URL of connection `n`'s [`rotation`] until one succeeds; the error
/// names every URL that failed.
async fn first_ok<'a, F, Fut>(urls: &'a [String], n: usize, attempt: F) -> anyhow::Result<Ws>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Ws>>,
{
    let mut failures = Vec::new();
    for url in rotation(urls, n) {
        match attempt(url).await {
            Ok(ws) => return Ok(ws),
            Err(e) => failures.push(format!("{url}: {e:#}")),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

/// Opens a WebSocket to one of `urls` (see [`rotation`]) from source address
/// 127.0.0.`1 + n % sources`.
pub async fn connect(
    urls: &[String],
    n: usize,
    sources: usize,
    bearer: Option<&str>,
) -> anyhow::Result<Ws> {
    first_ok(urls, n, |url| connect_one(url, n, sources, bearer)).await
}

async fn connect_one(
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

/// Connects with `token`, says hello, and waits for `welcome`; a URL where that fails moves
/// the connection to the next.
pub async fn hello(urls: &[String], n: usize, sources: usize, token: &str) -> anyhow::Result<Ws> {
    first_ok(urls, n, |url| async move {
        let mut ws = connect_one(url, n, sources, Some(token)).await?;
        send_json(&mut ws, serde_json::json!({"type":"hello","versions":[1]})).await?;
        expect(&mut ws, "welcome").await?;
        Ok(ws)
    })
    .await
}

/// [`hello`], then joins `room` and waits for `joined`.
pub async fn join(
    urls: &[String],
    n: usize,
    sources: usize,
    token: &str,
    room: &str,
) -> anyhow::Result<Ws> {
    let mut ws = hello(urls, n, sources, token).await?;
    send_json(&mut ws, serde_json::json!({"type":"join","room":room})).await?;
    expect(&mut ws, "joined").await?;
    Ok(ws)
}

/// Creates the rooms (they may be there from an earlier run) before anyone joins them.
pub async fn create_rooms(urls: &[String], token: &str, names: &[String]) -> anyhow::Result<()> {
    let mut ws = hello(urls, 0, 1, token).await?;
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

/// A token for `user`: registered if new, else logged in (on the first of `urls` that answers).
pub async fn token(urls: &[String], user: &str, password: &str) -> anyhow::Result<String> {
    let mut ws = connect(urls, 0, 1, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_on_commas_and_rotate_per_connection() {
        let urls = split_urls(&["ws://a/ws,ws://b/ws".into(), " ws://c/ws ,ws://a/ws".into()])
            .expect("valid");
        assert_eq!(urls, ["ws://a/ws", "ws://b/ws", "ws://c/ws"]);
        assert!(split_urls(&["http://a/".into()]).is_err());
        assert!(split_urls(&[",".into()]).is_err());
        let order = |n| rotation(&urls, n).collect::<Vec<_>>();
        assert_eq!(order(0), ["ws://a/ws", "ws://b/ws", "ws://c/ws"]);
        assert_eq!(order(1), ["ws://b/ws", "ws://c/ws", "ws://a/ws"]);
        assert_eq!(order(5), ["ws://c/ws", "ws://a/ws", "ws://b/ws"]);
    }
}
