//! Reconnection delays: exponential backoff with full jitter (AWS's "full jitter": a uniform
//! draw in `[0, min(cap, base * 2^attempt)]`), reset once a connection has stayed up long
//! enough to count as stable. Pure: the caller supplies the random draw and the clock.

use std::time::{Duration, Instant};

/// Backoff settings (the `[reconnect]` section of the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub cap: Duration,
    /// A connection that lasted this long resets the attempt count.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// The attempt count and when the current connection came up.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub config: BackoffConfig,
    /// Failed attempts since the last stable connection.
    pub attempt: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            attempt: 0,
            connected_at: None,
        }
    }

    /// The ceiling of the next delay: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.config
            .base
            .checked_mul(factor)
            .unwrap_or(self.config.cap)
            .min(self.config.cap)
    }

    /// The delay before the next attempt, from a uniform draw `unit` in `[0, 1)`; counts the
    /// attempt.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let d = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection dropped: if it had been up long enough, start over from the base delay.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take()
            && now.saturating_duration_since(at) >= self.config.stable_after
        {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(cfg());
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        for _ in 0..100 {
            b.next_delay(0.9);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(2),
            "no overflow past the cap"
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let mut b = Backoff::new(cfg());
        b.attempt = 3;
        assert_eq!(b.clone().next_delay(0.0), Duration::ZERO);
        assert_eq!(b.clone().next_delay(0.5), Duration::from_millis(400));
        assert_eq!(b.next_delay(0.999_999).as_millis(), 799);
    }

    #[test]
    fn a_stable_connection_resets_a_short_one_does_not() {
        let t0 = Instant::now();
        let mut b = Backoff::new(cfg());
        for _ in 0..4 {
            b.next_delay(0.5);
        }
        b.connected(t0);
        b.disconnected(t0 + Duration::from_secs(3));
        assert_eq!(b.attempt, 4, "flapping keeps backing off");
        b.connected(t0 + Duration::from_secs(4));
        b.disconnected(t0 + Duration::from_secs(20));
        assert_eq!(b.attempt, 0);
    }
}
