//! The real chat-server process under test: started on a fixed port with its own database,
//! killed with SIGKILL and started again, stopped with SIGTERM at the end. Its memory is
//! sampled from /proc while it runs; its log says which connections it closed with which code
//! (`connection closed by server peer=... code=...`), which is how a close whose frame never
//! reached a client that had stopped reading is still told apart from any other drop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How one incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Running,
    /// By us, with SIGKILL.
    Killed,
    /// By us, with SIGTERM: its exit status.
    Stopped(Option<i32>),
    /// Not by us: a crash.
    Died(String),
}

#[derive(Debug, Clone)]
pub struct Incarnation {
    pub pid: u32,
    pub ended: Option<Instant>,
    pub ending: Ending,
    /// The largest VmHWM seen (the kernel's own peak of the resident set), in KiB.
    pub peak_kib: u64,
}

/// What the log threads collect, per incarnation (by index).
#[derive(Default)]
pub struct Logs {
    /// Peer address -> close codes the server logged for it.
    pub closes: Vec<HashMap<SocketAddr, Vec<u16>>>,
    pub by_code: BTreeMap<u16, u64>,
    /// The last lines, for the report when something went wrong.
    pub tail: VecDeque<String>,
    pub panics: Vec<String>,
}

pub struct Server {
    bin: PathBuf,
    db: PathBuf,
    pub addr: SocketAddr,
    extra: Vec<String>,
    child: Option<Child>,
    pub incarnations: Vec<Incarnation>,
    pub logs: Arc<Mutex<Logs>>,
    log_file: Arc<Mutex<std::fs::File>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loopback port below the kernel's ephemeral range (clients' source ports come from there,
/// and one of them holding the port would stop a restart from binding it) that is free now.
pub fn pick_port(seed: u64) -> anyhow::Result<u16> {
    let mut rng = super::rng::Rng::new(seed, 0x5e_57);
    for _ in 0..200 {
        let port = 20_000 + rng.below(12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port found in 20000..32000")
}

/// The value after `key=` in a tracing line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

impl Server {
    pub fn new(bin: &Path, dir: &Path, port: u16, extra: Vec<String>) -> anyhow::Result<Self> {
        let log_path = dir.join("server.log");
        let log_file = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        Ok(Self {
            bin: bin.to_owned(),
            db: dir.join("chat.db"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            extra,
            child: None,
            incarnations: Vec::new(),
            logs: Arc::default(),
            log_file: Arc::new(Mutex::new(log_file)),
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a new incarnation and returns once it listens. A restart right after a kill can
    /// find the port still held for a moment: it is tried again.
    pub fn start(&mut self, more: &[&str]) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the server is already running");
        let mut last = String::new();
        for _attempt in 0..20 {
            match self.try_start(more) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = format!("{e:#}");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        anyhow::bail!("chat-server did not start: {last}")
    }

    fn try_start(&mut self, more: &[&str]) -> anyhow::Result<()> {
        let index = self.incarnations.len();
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--db")
            .arg(&self.db)
            .args(&self.extra)
            .args(more)
            // The close lines are at info; whatever the caller's RUST_LOG says.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (logs, file) = (self.logs.clone(), self.log_file.clone());
        lock(&logs).closes.push(HashMap::new());
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = writeln!(lock(&file), "=== incarnation {index} (pid {pid}) ===");
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(lock(&file), "{line}");
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
                let mut l = lock(&logs);
                if line.contains("closed by server")
                    && let (Some(peer), Some(code)) = (field(&line, "peer="), field(&line, "code="))
                    && let (Ok(peer), Ok(code)) = (peer.parse(), code.parse())
                {
                    l.closes[index].entry(peer).or_default().push(code);
                    *l.by_code.entry(code).or_default() += 1;
                }
                if line.contains("panicked") {
                    l.panics.push(line.clone());
                }
                l.tail.push_back(line);
                if l.tail.len() > 40 {
                    l.tail.pop_front();
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("it exited at start ({status}): {}", self.tail().join(" | "));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("not listening 60 s after starting");
            }
        }
        self.incarnations.push(Incarnation {
            pid,
            ended: None,
            ending: Ending::Running,
            peak_kib: 0,
        });
        self.child = Some(child);
        Ok(())
    }

    pub fn tail(&self) -> Vec<String> {
        lock(&self.logs)
            .tail
            .iter()
            .rev()
            .take(8)
            .rev()
            .cloned()
            .collect()
    }

    /// Reads the running incarnation's peak resident set. Returns it, in KiB.
    pub fn sample(&mut self) -> Option<u64> {
        let pid = self.pid()?;
        let hwm =
            crate::sys::status_kib(pid, "VmHWM:").max(crate::sys::status_kib(pid, "VmRSS:"))?;
        let inc = self.incarnations.last_mut()?;
        inc.peak_kib = inc.peak_kib.max(hwm);
        Some(hwm)
    }

    fn ended(&mut self, ending: Ending) {
        if let Some(inc) = self.incarnations.last_mut() {
            inc.ended = Some(Instant::now());
            inc.ending = ending;
        }
    }

    /// `kill -9`, and reaped.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.sample();
        let mut child = self.child.take().context("no server to kill")?;
        child.kill().context("kill -9")?;
        child.wait().context("reaping the server")?;
        self.ended(Ending::Killed);
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`). Returns the exit code.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<Option<i32>> {
        self.sample();
        let mut child = self.child.take().context("no server to stop")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + grace;
        let code = loop {
            if let Some(s) = child.try_wait()? {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.ended(Ending::Stopped(code));
        Ok(code)
    }

    /// If the server exited without being asked: how. It is then no longer running.
    pub fn check_alive(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.ended(Ending::Died(status.to_string()));
        Some(status)
    }

    pub fn peak_kib(&self) -> u64 {
        self.incarnations
            .iter()
            .map(|i| i.peak_kib)
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_lines_are_read_for_peer_and_code() {
        let line = "2026-01-01T00:00:00Z  INFO chat_server::connection: connection closed by server peer=127.0.0.3:41234 code=4008 reason=\"outbound queue full\"";
        assert_eq!(field(line, "peer="), Some("127.0.0.3:41234"));
        assert_eq!(field(line, "code="), Some("4008"));
        assert_eq!(field(line, "nothing="), None);
    }
}
