//! Who is typing in one room, and until when. Pure state: the hub owns one per room, under the
//! room's lock. Both this node's users and other nodes' (through the Redis broker) are tracked
//! the same way: an indicator not refreshed within the timeout is cleared, so a node that dies
//! mid-sentence leaves no one typing for good.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct Typing {
    until: HashMap<Arc<str>, Instant>,
}

impl Typing {
    /// Starts or refreshes `user`'s indicator.
    pub fn start(&mut self, user: Arc<str>, until: Instant) {
        self.until.insert(user, until);
    }

    /// Whether `user`'s indicator is on.
    pub fn is_on(&self, user: &str) -> bool {
        self.until.contains_key(user)
    }

    /// Stops it; true if it was on (then the room hears `active: false`).
    pub fn stop(&mut self, user: &str) -> bool {
        self.until.remove(user).is_some()
    }

    /// Removes and returns the indicators that ran out by `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<Arc<str>> {
        let out: Vec<Arc<str>> = self
            .until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &out {
            self.until.remove(u);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_indicator_runs_out_unless_refreshed() {
        let mut t = Typing::default();
        let now = Instant::now();
        t.start("a".into(), now + Duration::from_secs(1));
        t.start("b".into(), now + Duration::from_secs(1));
        t.start("b".into(), now + Duration::from_secs(3));
        assert_eq!(
            t.expired(now + Duration::from_secs(2)),
            vec![Arc::from("a")]
        );
        assert!(t.stop("b"));
        assert!(!t.stop("b"));
    }
}
