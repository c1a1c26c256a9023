//! What the machine says: the file-descriptor limit, a process's RSS, our own CPU time.

/// Raises this process's open-file limit to the hard limit; returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    if let Ok((_, hard)) = Resource::NOFILE.get() {
        let _ = Resource::NOFILE.set(hard, hard);
    }
    Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0)
}

/// Resident set size of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// CPU seconds (user + system) used by `pid` so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:` for the peak).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
