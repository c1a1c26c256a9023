//! The HTTP side of a connection: read the upgrade request, route it, check a bearer token, and
//! answer 101, 401, 404 or 400 before any WebSocket frame. Done by hand (with tungstenite's own
//! parser and response builder) because the token check needs the store, which is async, and
//! tungstenite's handshake callback is not. Generic over the stream: plain TCP or TLS.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A request that may be upgraded.
pub struct Upgrade {
    pub request: Request,
    /// Bytes read past the request head (a client may send its first frame right away).
    pub rest: Vec<u8>,
    /// The token from `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
}

/// Why a request is not upgraded; each is answered with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("400 Bad Request: {0}")]
    BadRequest(String),
    #[error("404 Not Found")]
    NotFound,
    #[error("request head not complete in time")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
}

/// Reads the request head.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Upgrade, Refused> {
    let mut buf = Vec::with_capacity(1024);
    tokio::time::timeout(timeout, async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.map_err(|_| Refused::Closed)?;
            if n == 0 {
                return Err(Refused::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(upgrade) = parse_request(&buf)? {
                return Ok(upgrade);
            }
        }
    })
    .await
    .map_err(|_| Refused::Timeout)?
}

/// Parses the bytes read so far: `Ok(None)` while the head is incomplete and under
/// [`MAX_HEAD_BYTES`] ("read more"), the upgrade once it is complete, or why it is refused. No
/// I/O, so it is unit-tested and fuzzed (`fuzz/`) without a socket.
pub fn parse_request(buf: &[u8]) -> Result<Option<Upgrade>, Refused> {
    let (len, request) = match Request::try_parse(buf) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        Ok(None) => return Err(Refused::BadRequest("request head too large".into())),
        Err(e) => return Err(Refused::BadRequest(e.to_string())),
    };
    if request.uri().path() != "/ws" {
        return Err(Refused::NotFound);
    }
    let bearer = match request.headers().get("authorization") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Refused::BadRequest("Authorization is not ASCII".into()))?;
            match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim().to_owned())
                }
                _ => {
                    return Err(Refused::BadRequest(
                        "Authorization must be `Bearer TOKEN`".into(),
                    ));
                }
            }
        }
    };
    Ok(Some(Upgrade {
        request,
        rest: buf[len..].to_vec(),
        bearer,
    }))
}

/// Writes `101 Switching Protocols` for a valid upgrade request, or 400 if it is not one.
pub async fn accept<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
) -> Result<(), Refused> {
    let response = match create_response(request) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("not a WebSocket upgrade: {e}");
            reply(stream, 400, "Bad Request", &msg).await;
            return Err(Refused::BadRequest(msg));
        }
    };
    let mut head = Vec::with_capacity(256);
    write_response(&mut head, &response).map_err(|e| Refused::BadRequest(e.to_string()))?;
    stream.write_all(&head).await.map_err(|_| Refused::Closed)
}

/// Answers a refused request with a plain-text body and closes.
pub async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, reason: &str, body: &str) {
    respond(stream, status, reason, "text/plain; charset=utf-8", body).await;
}

/// Writes a whole HTTP response of `content_type` and closes the write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
) {
    let extra = if status == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Answers a [`Refused`] with its status (nothing for a closed or timed-out connection).
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, why: &Refused) {
    match why {
        Refused::BadRequest(m) => reply(stream, 400, "Bad Request", &format!("{m}\n")).await,
        Refused::NotFound => {
            reply(stream, 404, "Not Found", "the WebSocket endpoint is /ws\n").await
        }
        Refused::Timeout | Refused::Closed => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn parse(s: &str) -> Result<Option<Upgrade>, Refused> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn a_head_is_read_whole_and_what_follows_it_is_kept() {
        assert!(matches!(parse(""), Ok(None)));
        assert!(matches!(parse(HEAD), Ok(None)), "no blank line yet");
        let up = parse(&format!("{HEAD}Authorization: bearer  t0k \r\n\r\nearly"))
            .expect("valid")
            .expect("complete");
        assert_eq!(up.request.uri().path(), "/ws");
        assert_eq!(up.bearer.as_deref(), Some("t0k"));
        assert_eq!(up.rest, b"early", "a first frame sent at once");
    }

    #[test]
    fn refusals() {
        let refused = |s: &str| parse(s).err().map(|e| e.to_string());
        assert_eq!(
            refused("GET /other HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("404 Not Found")
        );
        assert!(refused(&format!("{HEAD}Authorization: Basic abc\r\n\r\n")).is_some());
        assert!(refused("NOT HTTP AT ALL\r\n\r\n").is_some());
        let huge = format!("{HEAD}X-Pad: {}\r\n", "p".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            refused(&huge).as_deref(),
            Some("400 Bad Request: request head too large")
        );
    }
}
