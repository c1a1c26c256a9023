//! One scripted client: a WebSocket speaking JSON frames, with the reads a transcript needs
//! ("the next frame within this long", "the close code").

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    ws: Ws,
}

/// Why a connection was not opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status: a transcript may expect that.
    #[error("HTTP {0} refused the upgrade")]
    Http(u16),
    #[error("cannot connect to {url}: {why}")]
    Other { url: String, why: String },
}

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    /// A frame that is not JSON: a server bug a transcript reports.
    NotJson(String),
    Closed(Option<u16>),
    Timeout,
}

impl std::fmt::Display for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Next::Frame(v) => write!(f, "{v}"),
            Next::NotJson(t) => write!(f, "a frame that is not JSON: {t:?}"),
            Next::Closed(Some(code)) => write!(f, "close {code}"),
            Next::Closed(None) => write!(f, "the connection closed without a code"),
            Next::Timeout => write!(f, "nothing in time"),
        }
    }
}

impl Client {
    /// Connects, optionally with a bearer token.
    pub async fn connect(
        url: &str,
        bearer: Option<&str>,
        wait: Duration,
    ) -> Result<Self, ConnectError> {
        let other = |why: String| ConnectError::Other {
            url: url.to_owned(),
            why,
        };
        let mut req = url
            .into_client_request()
            .map_err(|e| other(e.to_string()))?;
        if let Some(t) = bearer {
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| other("a token that is no header value".into()))?;
            req.headers_mut().insert("authorization", value);
        }
        match tokio::time::timeout(wait, tokio_tungstenite::connect_async(req)).await {
            Err(_) => Err(other("timed out".into())),
            Ok(Ok((ws, _))) => Ok(Self { ws }),
            Ok(Err(WsError::Http(resp))) => Err(ConnectError::Http(resp.status().as_u16())),
            Ok(Err(e)) => Err(other(e.to_string())),
        }
    }

    /// Sends a message; a failure is not reported, because the server may close before a
    /// frame it refuses is fully written, and what it answers is what the transcript checks.
    pub async fn send(&mut self, m: Message) {
        let _ = self.ws.send(m).await;
    }

    /// The next text frame or close, waiting at most `wait` in all (pings skipped meanwhile
    /// do not restart it).
    pub async fn next_within(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => return Next::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return match serde_json::from_str(&t) {
                        Ok(v) => Next::Frame(v),
                        Err(_) => Next::NotJson(t.to_string()),
                    };
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) => return Next::Closed(None),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
