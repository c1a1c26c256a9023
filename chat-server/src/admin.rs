//! The operator's endpoint (`--admin-listen`, off by default): `GET /livez` (the process
//! runs; touches nothing else), `GET /readyz` (200 only when the database answers and, with the
//! Redis broker, a message published on this node's own channel came back; 503 with a
//! one-line reason otherwise) and `GET /metrics` (Prometheus text format). Plain HTTP/1.1, one
//! request per connection: it is for a load balancer's health check and a scraper on a private
//! network, not for the public.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handshake::respond;
use crate::server::Ctx;

/// How long a client may take to send its request head, and `/readyz` to hear the database.
const DEADLINE: Duration = Duration::from_secs(5);
/// Longest request head read; an admin request is one short line and a few headers.
const MAX_HEAD: usize = 4096;
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_OPEN: usize = 64;

/// Serves the admin endpoint until `stop`.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let registry = Arc::new(crate::metrics::registry(&ctx));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
    let tasks = TaskTracker::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (ctx, registry) = (ctx.clone(), registry.clone());
        tasks.spawn(async move {
            let _ = tokio::time::timeout(DEADLINE * 2, answer(tcp, &ctx, &registry)).await;
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// The method and path of a request head, if it is one.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

async fn answer(mut tcp: TcpStream, ctx: &Ctx, registry: &prometheus_client::registry::Registry) {
    let mut head = Vec::with_capacity(256);
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    const TEXT: &str = "text/plain; charset=utf-8";
    match request_line(&head) {
        None => respond(&mut tcp, 400, "Bad Request", TEXT, "malformed request\n").await,
        Some(("GET", "/livez")) => respond(&mut tcp, 200, "OK", TEXT, "ok\n").await,
        Some(("GET", "/readyz")) => {
            let (status, reason, body) = readiness(ctx).await;
            respond(&mut tcp, status, reason, TEXT, &body).await;
        }
        Some(("GET", "/metrics")) => {
            let body = crate::metrics::render(registry);
            respond(
                &mut tcp,
                200,
                "OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await;
        }
        Some(("GET", _)) => {
            respond(
                &mut tcp,
                404,
                "Not Found",
                TEXT,
                "try /livez, /readyz or /metrics\n",
            )
            .await
        }
        Some(_) => respond(&mut tcp, 405, "Method Not Allowed", TEXT, "only GET\n").await,
    }
}

/// 200 when the database answers a read within the deadline; 503 and why otherwise.
async fn readiness(ctx: &Ctx) -> (u16, &'static str, String) {
    match tokio::time::timeout(DEADLINE, ctx.store.user_exists("")).await {
        Ok(Ok(_)) => match ctx.broker.ready().await {
            Ok(()) => (200, "OK", "ready\n".into()),
            Err(reason) => (503, "Service Unavailable", format!("{reason}\n")),
        },
        Ok(Err(e)) => (503, "Service Unavailable", format!("database: {e}\n")),
        Err(_) => (
            503,
            "Service Unavailable",
            format!("database: no answer within {} s\n", DEADLINE.as_secs()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"GET /readyz?verbose=1 HTTP/1.0\r\n\r\n"),
            Some(("GET", "/readyz"))
        );
        assert_eq!(request_line(b"GET /\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"GET / HTTP/2 extra\r\n\r\n"), None);
    }
}
