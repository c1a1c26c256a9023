//! Password guessing: backoff after failed logins, per account and per source address, and a
//! fair share of the password-hashing threads per source. Pure state behind one short std
//! lock, with monotonic time passed in, so it is tested without waiting.
//!
//! Per account, the backoff starts later and stops lower than per source: it is what stops a
//! guesser with many addresses, but anyone can provoke it, so it must not lock the owner out
//! for long (their logged-in devices are unaffected: tokens are not throttled).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backoff rule: `free` failures are allowed, then each further one waits twice as long as
/// the one before, from 1 s up to `cap`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    free: u32,
    cap: Duration,
}

const PER_SOURCE: Rule = Rule {
    free: 5,
    cap: Duration::from_secs(300),
};
const PER_ACCOUNT: Rule = Rule {
    free: 10,
    cap: Duration::from_secs(60),
};

/// Failures are forgotten this long after the last one.
const FORGET: Duration = Duration::from_secs(15 * 60);

/// Most addresses (and accounts) remembered; past it the entry idle longest is forgotten.
/// About 100 bytes each.
const MAX_ENTRIES: usize = 50_000;

/// Password hashes one source address may have queued or running at once; its other logins
/// wait in a line of their own, so a flood from one address delays only that address.
pub const HASH_JOBS_PER_SOURCE: usize = 2;

/// Logins one source address may have waiting in its line; more are refused (`rate_limited`).
pub const HASH_WAITING_PER_SOURCE: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// When the next attempt may be made.
    fn next_allowed(&self, rule: Rule) -> Instant {
        if self.count < rule.free {
            return self.last;
        }
        let doublings = (self.count - rule.free).min(20);
        let wait = Duration::from_secs(1u64 << doublings).min(rule.cap);
        self.last + wait
    }
}

#[derive(Debug)]
struct Book<K> {
    entries: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Book<K> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn wait(&self, key: &K, rule: Rule, now: Instant) -> Option<Duration> {
        let f = self.entries.get(key)?;
        if now.saturating_duration_since(f.last) > FORGET {
            return None;
        }
        let at = f.next_allowed(rule);
        (at > now).then(|| at - now)
    }

    fn fail(&mut self, key: &K, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_ENTRIES {
            self.entries
                .retain(|_, f| now.saturating_duration_since(f.last) <= FORGET);
            if self.entries.len() >= MAX_ENTRIES
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let f = self.entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) > FORGET {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

/// One source's line for the hashing threads.
#[derive(Debug)]
struct Line {
    turns: Arc<tokio::sync::Semaphore>,
    /// Logins holding or waiting for a turn: the line is dropped when none are left.
    users: usize,
}

#[derive(Debug)]
struct State {
    sources: Book<IpAddr>,
    accounts: Book<String>,
    hashing: HashMap<IpAddr, Line>,
}

/// The server's login throttle.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
}

/// A source's turn at the hashing threads; given back when dropped.
#[derive(Debug)]
pub struct HashTurn {
    throttle: Arc<Throttle>,
    ip: IpAddr,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Throttle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                sources: Book::new(),
                accounts: Book::new(),
                hashing: HashMap::new(),
            }),
        })
    }

    /// How long `ip` must wait before trying a password (for `account`, if it exists).
    pub fn wait(&self, ip: IpAddr, account: Option<&str>, now: Instant) -> Option<Duration> {
        let s = lock(&self.state);
        let by_source = s.sources.wait(&ip, PER_SOURCE, now);
        let by_account = account.and_then(|a| s.accounts.wait(&a.to_owned(), PER_ACCOUNT, now));
        by_source.max(by_account)
    }

    /// A wrong password (or an unknown user) from `ip`.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>, now: Instant) {
        let mut s = lock(&self.state);
        s.sources.fail(&ip, now);
        if let Some(a) = account {
            s.accounts.fail(&a.to_owned(), now);
        }
    }

    /// A right password: the account's and the address's failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        let mut s = lock(&self.state);
        s.sources.clear(&ip);
        s.accounts.clear(&account.to_owned());
    }

    /// Waits for `ip`'s turn at the hashing threads: it has at most [`HASH_JOBS_PER_SOURCE`]
    /// hashes in their queue at once. `None` when its line is full.
    pub async fn hash_turn(self: &Arc<Self>, ip: IpAddr) -> Option<HashTurn> {
        let turns = {
            let mut s = lock(&self.state);
            let line = s.hashing.entry(ip).or_insert_with(|| Line {
                turns: Arc::new(tokio::sync::Semaphore::new(HASH_JOBS_PER_SOURCE)),
                users: 0,
            });
            if line.users >= HASH_JOBS_PER_SOURCE + HASH_WAITING_PER_SOURCE {
                return None;
            }
            line.users += 1;
            line.turns.clone()
        };
        // Made before waiting: a login dropped while it waits leaves the line too.
        let mut turn = HashTurn {
            throttle: self.clone(),
            ip,
            _permit: None,
        };
        turn._permit = Some(turns.acquire_owned().await.ok()?);
        Some(turn)
    }
}

impl Drop for HashTurn {
    fn drop(&mut self) {
        let mut s = lock(&self.throttle.state);
        if let Some(line) = s.hashing.get_mut(&self.ip) {
            line.users -= 1;
            if line.users == 0 {
                s.hashing.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_source_backs_off_after_five_failures_doubling_to_five_minutes() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.wait(A, None, t0), None);
            t.failed(A, None, t0);
        }
        assert_eq!(t.wait(A, None, t0), Some(Duration::from_secs(1)));
        assert_eq!(t.wait(B, None, t0), None, "another address is not affected");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let w = t.wait(A, None, now).expect("waiting");
            waits.push(w.as_secs());
            now += w;
            assert_eq!(t.wait(A, None, now), None, "allowed once the wait is over");
            t.failed(A, None, now);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // Forgotten after 15 quiet minutes.
        assert_eq!(t.wait(A, None, now + FORGET + Duration::from_secs(1)), None);
    }

    #[test]
    fn an_account_backs_off_whatever_the_source_and_a_success_clears_it() {
        let t = Throttle::new();
        let now = Instant::now();
        for i in 0..10u8 {
            let ip = IpAddr::from([10, 1, 0, i]);
            assert_eq!(t.wait(ip, Some("alice"), now), None);
            t.failed(ip, Some("alice"), now);
        }
        let fresh = IpAddr::from([10, 9, 9, 9]);
        assert_eq!(
            t.wait(fresh, Some("alice"), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(t.wait(fresh, Some("bob"), now), None);
        t.succeeded(fresh, "alice");
        assert_eq!(t.wait(fresh, Some("alice"), now), None);
    }

    #[test]
    fn the_books_are_bounded() {
        let t = Throttle::new();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), None, now);
        }
        assert_eq!(lock(&t.state).sources.entries.len(), MAX_ENTRIES);
    }

    #[tokio::test]
    async fn each_source_gets_its_share_of_the_hashing_queue() {
        let t = Throttle::new();
        let a1 = t.hash_turn(A).await.expect("first");
        let _a2 = t.hash_turn(A).await.expect("second");
        // A third from A waits its turn; B is served meanwhile.
        let third = {
            let t = t.clone();
            tokio::spawn(async move { t.hash_turn(A).await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        assert!(t.hash_turn(B).await.is_some(), "another source is served");
        drop(a1);
        assert!(
            third.await.expect("join"),
            "A's turn comes when one of its own ends"
        );
        // The line itself is bounded.
        let mut waiting = Vec::new();
        for _ in 0..HASH_WAITING_PER_SOURCE + 1 {
            let t = t.clone();
            // Each holds its turn once it has it, so the line stays full.
            waiting.push(tokio::spawn(async move {
                let _turn = t.hash_turn(A).await;
                std::future::pending::<()>().await;
            }));
        }
        while lock(&t.state).hashing.get(&A).map_or(0, |l| l.users)
            < HASH_JOBS_PER_SOURCE + HASH_WAITING_PER_SOURCE
        {
            tokio::task::yield_now().await;
        }
        assert!(t.hash_turn(A).await.is_none(), "a full line refuses");
        for w in waiting {
            w.abort();
        }
    }
}
