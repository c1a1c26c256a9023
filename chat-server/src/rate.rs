//! Token buckets: the per-user rate limit, and the "abuse" bucket that decides when a client
//! that keeps sending after `rate_limited` is disconnected. Monotonic time only, so a wall clock
//! jump neither floods nor starves anyone.

use std::time::{Duration, Instant};

/// A wait as the `retry_after_ms` a client is told: rounded up, so that a client that waits
/// exactly that long is never early (truncating made such a client a rate-limit abuser).
pub fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// At most `per_hour` actions per key in any clock hour window (a fixed window: simple, and
/// at worst twice the rate across a window boundary). Keys are forgotten when their window
/// has passed, so the map holds only those active in the last hour.
#[derive(Debug)]
pub struct HourlyQuota {
    per_hour: u32,
    used: std::sync::Mutex<std::collections::HashMap<String, (Instant, u32)>>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl HourlyQuota {
    /// `per_hour == 0` means unlimited.
    pub fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            used: Default::default(),
        }
    }

    /// Takes one action for `key`; false when its quota for the window is used up.
    pub fn take(&self, key: &str, now: Instant) -> bool {
        if self.per_hour == 0 {
            return true;
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= 10_000 && !used.contains_key(key) {
            used.retain(|_, (start, _)| now.saturating_duration_since(*start) < HOUR);
        }
        let entry = used.entry(key.to_owned()).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= HOUR {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_hour {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_sec == 0` means unlimited.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.per_sec == 0.0 {
            return Ok(());
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_sec;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        assert!(
            wait <= Duration::from_millis(100) && wait >= Duration::from_millis(99),
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(retry_after_ms(Duration::from_micros(49_001)), 50);
        assert_eq!(retry_after_ms(Duration::from_millis(50)), 50);
        assert_eq!(retry_after_ms(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_ms(Duration::ZERO), 1);
        // The bucket's own wait, told to a client that then waits exactly that: never early.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 1, t0);
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        let told = Duration::from_millis(retry_after_ms(wait));
        assert!(b.take(t0 + told).is_ok(), "{wait:?} told as {told:?}");
    }

    #[test]
    fn an_hourly_quota_refuses_past_its_count_until_the_hour_is_over() {
        let q = HourlyQuota::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(q.take("alice", t0));
        }
        assert!(!q.take("alice", t0 + Duration::from_secs(3599)));
        assert!(q.take("bob", t0), "per key");
        assert!(q.take("alice", t0 + HOUR));
        assert!(HourlyQuota::new(0).take("x", t0), "0 is unlimited");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        for _ in 0..1000 {
            assert!(b.take(t0).is_ok());
        }
    }
}
