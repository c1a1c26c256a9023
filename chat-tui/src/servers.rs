//! The servers a client may use: several URLs (nodes of one cluster, sharing accounts and
//! history), tried in order and moved through on failure, wrapping around. Each URL keeps its own
//! TLS settings, so a list may mix `ws://` and `wss://`.
//!
//! Pure apart from reading `--ca-file` once per `wss://` URL: the network task asks which server
//! is current and says when it failed.

use std::path::Path;

use tokio_tungstenite::Connector;

/// Why a server list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerListError {
    #[error("no server URL given")]
    Empty,
    #[error("`{0}` is not a server URL: it must start with ws:// or wss://")]
    Scheme(String),
}

/// One server of the list.
#[derive(Clone)]
pub struct Server {
    pub url: String,
    /// TLS for a `wss://` URL ([`crate::tls::connector`]); `None` for `ws://`.
    pub connector: Option<Connector>,
}

/// The URLs, in the order given, and which one is in use.
#[derive(Clone)]
pub struct ServerList {
    servers: Vec<Server>,
    /// Index of the server in use; [`ServerList::advance`] moves it on, wrapping.
    current: usize,
}

impl std::fmt::Debug for ServerList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerList")
            .field("urls", &self.urls().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

/// Splits flag values into URLs: each value may hold several, comma-separated (`--server a,b
/// --server c` is a, b, c). Blanks are skipped and a URL given twice is kept once, at its first
/// place, so that a mistake cannot make one server count double in the rotation.
pub fn split_urls<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, ServerListError> {
    let mut urls: Vec<String> = Vec::new();
    for part in values.iter().flat_map(|v| v.as_ref().split(',')) {
        let url = part.trim();
        if url.is_empty() || urls.iter().any(|u| u == url) {
            continue;
        }
        let scheme_ok = ["ws://", "wss://"].iter().any(|s| {
            url.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if !scheme_ok {
            return Err(ServerListError::Scheme(url.to_owned()));
        }
        urls.push(url.to_owned());
    }
    if urls.is_empty() {
        return Err(ServerListError::Empty);
    }
    Ok(urls)
}

impl ServerList {
    /// The list from flag or config values (see [`split_urls`]), without TLS settings.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, ServerListError> {
        let servers = split_urls(values)?
            .into_iter()
            .map(|url| Server {
                url,
                connector: None,
            })
            .collect();
        Ok(Self {
            servers,
            current: 0,
        })
    }

    /// Builds the TLS settings of every `wss://` URL, trusting `ca_file` besides the platform.
    pub fn with_tls(mut self, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        for s in &mut self.servers {
            s.connector = crate::tls::connector(&s.url, ca_file)?;
        }
        Ok(self)
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.url.as_str())
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The first URL: the account's home, which names its saved token and read positions. The
    /// nodes of one cluster accept the same token, so it does not matter which one issued it.
    pub fn first(&self) -> &str {
        &self.servers[0].url
    }

    pub fn current(&self) -> &Server {
        &self.servers[self.current]
    }

    /// The current server failed: move to the next one, wrapping around after the last.
    pub fn advance(&mut self) -> &Server {
        self.current = (self.current + 1) % self.servers.len();
        self.current()
    }

    /// What the status bar shows: the URL, and with several, which of them it is.
    pub fn label(&self) -> String {
        match self.servers.len() {
            1 => self.current().url.clone(),
            n => format!("{} ({}/{n})", self.current().url, self.current + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_flags_and_commas_make_one_ordered_list() {
        let l = ServerList::parse(&["ws://a/ws, ws://b/ws", "wss://c/ws", "ws://a/ws,,"])
            .expect("valid");
        assert_eq!(
            l.urls().collect::<Vec<_>>(),
            ["ws://a/ws", "ws://b/ws", "wss://c/ws"]
        );
        assert_eq!(l.first(), "ws://a/ws");
        assert_eq!(
            ServerList::parse(&[" , "]).map(|_| ()),
            Err(ServerListError::Empty)
        );
        assert_eq!(
            ServerList::parse::<&str>(&[]).map(|_| ()),
            Err(ServerListError::Empty)
        );
        assert_eq!(
            split_urls(&["ws://a/ws,http://b/"]),
            Err(ServerListError::Scheme("http://b/".into()))
        );
        assert!(split_urls(&["WSS://A/ws"]).is_ok(), "schemes ignore case");
    }

    #[test]
    fn failures_move_through_the_list_and_wrap_around() {
        let mut l = ServerList::parse(&["ws://a/ws,ws://b/ws,ws://c/ws"]).expect("valid");
        assert_eq!(l.current().url, "ws://a/ws");
        assert_eq!(l.label(), "ws://a/ws (1/3)");
        let seen: Vec<String> = (0..4).map(|_| l.advance().url.clone()).collect();
        assert_eq!(seen, ["ws://b/ws", "ws://c/ws", "ws://a/ws", "ws://b/ws"]);
        assert_eq!(l.label(), "ws://b/ws (2/3)");
        // The home does not move with the rotation.
        assert_eq!(l.first(), "ws://a/ws");

        let mut one = ServerList::parse(&["ws://only/ws"]).expect("valid");
        assert_eq!(one.advance().url, "ws://only/ws");
        assert_eq!(one.label(), "ws://only/ws");
    }
}
