//! A TCP proxy a test can cut, stall and restore, in front of PostgreSQL or Redis: what a
//! server sees when its database or broker goes away, stops answering, or comes back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy. While open, each connection is piped to the target. A
/// cut ends every piped connection and closes new ones as soon as they are accepted; a stall
/// keeps every connection open but forwards nothing (a database that stopped answering).
pub struct Proxy {
    pub addr: SocketAddr,
    /// A std Mutex: held only to read or swap the mode.
    mode: Arc<Mutex<Mode>>,
    /// Connections held open, unanswered, while stalled.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

#[derive(Clone)]
enum Mode {
    /// The token ends the connections of this open period.
    Open(CancellationToken),
    Cut,
    Stalled,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::Open(CancellationToken::new())));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (state, hold) = (mode.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let token = match state.lock().expect("proxy").clone() {
                    Mode::Open(token) => token,
                    Mode::Cut => continue,
                    Mode::Stalled => {
                        hold.lock().expect("held").push(down);
                        continue;
                    }
                };
                let target = target.clone();
                let (state, hold) = (state.clone(), hold.clone());
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => return,
                    }
                    if matches!(*state.lock().expect("proxy"), Mode::Stalled) {
                        hold.lock().expect("held").push(down);
                    }
                });
            }
        });
        Self { addr, mode, held }
    }

    fn set(&self, next: Mode) {
        let previous = std::mem::replace(&mut *self.mode.lock().expect("proxy"), next);
        if let Mode::Open(t) = previous {
            t.cancel();
        }
    }

    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    pub fn stall(&self) {
        self.set(Mode::Stalled);
    }

    pub fn restore(&self) {
        self.held.lock().expect("held").clear();
        self.set(Mode::Open(CancellationToken::new()));
    }
}
