//! The server settings a transcript may ask for with `option NAME VALUE`: how they change a
//! [`Config`] (for a server the runner starts itself) and which flag sets them (to say what a
//! running server would need, and to compare with what the user says it has).

use std::time::Duration;

use crate::config::{Config, Registration};
use crate::transcript::parse_duration;

/// Applies one `option` to a config.
pub fn apply(c: &mut Config, name: &str, value: &str) -> Result<(), String> {
    let num = || value.parse::<u64>().map_err(|e| format!("{name}: {e}"));
    match name {
        "rate_per_sec" => c.rate_per_sec = num()? as u32,
        "rate_burst" => c.rate_burst = num()? as u32,
        "rate_strikes" => c.rate_strikes = num()? as u32,
        "max_replay" => c.max_replay = num()?,
        "history_on_join" => c.history_on_join = num()? as u32,
        "outbound_queue" => c.outbound_queue = num()? as usize,
        "outbound_queue_bytes" => c.outbound_queue_bytes = num()? as usize,
        "max_rooms_per_user" => c.max_rooms_per_user = num()? as u32,
        "max_invites_per_hour" => c.max_invites_per_hour = num()? as u32,
        "max_sessions_per_user" => c.max_sessions_per_user = num()?.clamp(1, 1000) as u32,
        "auth_timeout" => c.auth_timeout = duration(value)?,
        "typing_timeout" => c.typing_timeout = duration(value)?,
        "ping_interval" => c.ping_interval = duration(value)?,
        "ping_timeout" => c.ping_timeout = duration(value)?,
        "presence_interval" => c.presence_interval = duration(value)?,
        "registration" => {
            c.registration = match value {
                "open" => Registration::Open,
                "closed" => Registration::Closed,
                v => return Err(format!("registration is open or closed, not {v}")),
            }
        }
        other => return Err(format!("unknown option `{other}`")),
    }
    Ok(())
}

/// `0` is a duration too (the server's flags take it for "off").
fn duration(value: &str) -> Result<Duration, String> {
    match value {
        "0" => Ok(Duration::ZERO),
        v => parse_duration(v),
    }
}

/// The chat-server flag an option name stands for: `rate_per_sec` is `--rate-per-sec`.
pub fn flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

/// An option name from either spelling: `presence_interval` or `--presence-interval`.
pub fn normalize(name: &str) -> String {
    name.trim_start_matches("--").replace('-', "_")
}

/// Whether two values of `name` say the same (`0` and `0ms`, `1s` and `1000ms`).
pub fn same_value(a: &str, b: &str) -> bool {
    a == b || matches!((duration(a), duration(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_and_values() {
        assert_eq!(flag("presence_interval"), "--presence-interval");
        assert_eq!(normalize("--presence-interval"), "presence_interval");
        assert_eq!(normalize("rate_burst"), "rate_burst");
        assert!(same_value("0", "0ms") && same_value("1s", "1000ms"));
        assert!(!same_value("300ms", "3s") && !same_value("open", "closed"));
        let mut c = Config::new("127.0.0.1:0".parse().expect("addr"), "x.db".into());
        apply(&mut c, "presence_interval", "0").expect("known");
        assert_eq!(c.presence_interval, Duration::ZERO);
        assert!(apply(&mut c, "no_such", "1").is_err());
    }
}
