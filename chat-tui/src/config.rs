//! The TOML config file and the per-user state kept in the data directory (tokens, read
//! positions). Flags override the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;

/// `config.toml` in the config directory. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Server URL, e.g. "ws://127.0.0.1:7878/ws"; several nodes of one cluster comma-separated,
    /// tried in order.
    pub server: Option<String>,
    /// Username to log in as.
    pub user: Option<String>,
    /// PEM file of the CA that signed the server's certificate (a private CA), trusted for
    /// wss:// besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Ring the terminal bell on a mention or direct message in a room not on screen.
    pub bell: Option<bool>,
    /// Reconnection backoff.
    pub reconnect: Option<ReconnectConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay ceiling, in ms (default 500).
    pub base_ms: Option<u64>,
    /// Largest delay, in ms (default 30000).
    pub cap_ms: Option<u64>,
    /// A connection up this long (ms) resets the backoff (default 30000).
    pub stable_ms: Option<u64>,
}

impl ReconnectConfig {
    pub fn backoff(&self) -> BackoffConfig {
        let d = BackoffConfig::default();
        let ms = std::time::Duration::from_millis;
        BackoffConfig {
            base: self.base_ms.map_or(d.base, ms),
            cap: self.cap_ms.map_or(d.cap, ms),
            stable_after: self.stable_ms.map_or(d.stable_after, ms),
        }
    }
}

pub fn dirs() -> anyhow::Result<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "chat").context("no home directory: set $HOME")
}

pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a file only its owner can read (tokens are passwords in all but name).
fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A name of this process's own: two clients saving at once must not rename each other's
    // half-written file away.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// What the client keeps between runs, in the data directory.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// "user@server" -> token.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// "user@server" -> room -> last read seq.
    #[serde(default)]
    pub read: BTreeMap<String, BTreeMap<String, u64>>,
    /// "user@server#room" -> (epoch, last seq printed by `tail`).
    #[serde(default)]
    pub tail: BTreeMap<String, (String, u64)>,
    /// "host:port" of plain ws:// servers beyond loopback the user agreed to send a password
    /// and token to, unencrypted (asked once per server).
    #[serde(default)]
    pub plain_ws_ok: BTreeSet<String>,
}

pub struct StateFile {
    pub path: PathBuf,
}

impl StateFile {
    pub fn load(&self) -> State {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        write_private(&self.path, &serde_json::to_string_pretty(state)?)
    }
}

pub fn account_key(user: &str, server: &str) -> String {
    format!("{user}@{server}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_unknown_keys_are_refused() {
        let c: FileConfig = toml::from_str(
            "server = \"ws://h:1/ws\"\nuser = \"alice\"\nca_file = \"/etc/chat/ca.pem\"\nbell = false\n[reconnect]\nbase_ms = 100\ncap_ms = 2000\nstable_ms = 5000\n",
        )
        .expect("parse");
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/chat/ca.pem")));
        let b = c.reconnect.expect("reconnect").backoff();
        assert_eq!(b.base.as_millis(), 100);
        assert_eq!(b.cap.as_millis(), 2000);
        assert!(toml::from_str::<FileConfig>("sever = \"x\"").is_err());
    }

    #[test]
    fn state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let f = StateFile {
            path: dir.path().join("sub/state.json"),
        };
        let mut s = State::default();
        s.tokens.insert("a@b".into(), "secret".into());
        f.save(&s).expect("save");
        let mode = std::fs::metadata(&f.path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(f.load().tokens["a@b"], "secret");
    }
}
