//! Who may hold a connection slot: the server-wide cap, a reserve for users who already have a
//! connection (a new device of someone logged in), a smaller budget for connections that have
//! not authenticated yet, and caps per source address. Decided when the TCP connection is
//! accepted, before any byte is read; the per-user cap is the hub's, at authentication.
//!
//! Pure counting behind one short std lock; a [`Ticket`] gives its slot back when dropped, so
//! every way a connection ends releases it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps, from the server's flags.
#[derive(Debug, Clone)]
pub struct Caps {
    pub max_connections: usize,
    /// Of `max_connections`, kept for returning users.
    pub reserved: usize,
    pub max_unauthenticated: usize,
    /// 0: no cap.
    pub per_ip: usize,
    /// 0: no cap.
    pub unauthenticated_per_ip: usize,
}

/// Why a connection was turned away (the HTTP 503 body says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    AddressFull,
    TooManyUnauthenticated,
    /// Only the reserve was left, and this connection did not show a token of a user who is
    /// already connected.
    ReserveOnly,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ServerFull => "too many connections\n",
            Refusal::AddressFull => "too many connections from your address\n",
            Refusal::TooManyUnauthenticated => {
                "too many connections waiting to log in; try again shortly\n"
            }
            Refusal::ReserveOnly => {
                "the server is nearly full: only users already connected elsewhere may connect, with their token in the Authorization header\n"
            }
        }
    }
}

#[derive(Debug, Default)]
struct PerIp {
    total: usize,
    unauthenticated: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unauthenticated: usize,
    per_ip: HashMap<IpAddr, PerIp>,
}

/// The slot counters of one server.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    counts: Mutex<Counts>,
}

/// One connection's slot. Starts unauthenticated; [`Ticket::authenticated`] moves it out of
/// the unauthenticated budget.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    authenticated: bool,
    in_reserve: bool,
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a new connection from `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let c = &self.caps;
        let mut counts = lock(&self.counts);
        if counts.total >= c.max_connections {
            return Err(Refusal::ServerFull);
        }
        let here = counts.per_ip.get(&ip);
        let (ip_total, ip_unauth) = here.map_or((0, 0), |p| (p.total, p.unauthenticated));
        if c.per_ip > 0 && ip_total >= c.per_ip {
            return Err(Refusal::AddressFull);
        }
        if c.unauthenticated_per_ip > 0 && ip_unauth >= c.unauthenticated_per_ip {
            return Err(Refusal::AddressFull);
        }
        if counts.unauthenticated >= c.max_unauthenticated {
            return Err(Refusal::TooManyUnauthenticated);
        }
        let in_reserve = counts.total >= c.max_connections.saturating_sub(c.reserved);
        counts.total += 1;
        counts.unauthenticated += 1;
        let p = counts.per_ip.entry(ip).or_default();
        p.total += 1;
        p.unauthenticated += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            authenticated: false,
            in_reserve,
        })
    }

    /// (connections, of which not authenticated), for metrics and tests.
    pub fn counts(&self) -> (usize, usize) {
        let c = lock(&self.counts);
        (c.total, c.unauthenticated)
    }
}

impl Ticket {
    /// Whether this slot came out of the reserve: the connection must then authenticate in
    /// its upgrade request as a user who already has a connection.
    pub fn in_reserve(&self) -> bool {
        self.in_reserve
    }

    /// The source address the slot is counted for.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The connection has authenticated: it no longer counts against the budgets for
    /// unauthenticated connections.
    pub fn authenticated(&mut self) {
        if self.authenticated {
            return;
        }
        self.authenticated = true;
        let mut counts = lock(&self.admission.counts);
        counts.unauthenticated -= 1;
        if let Some(p) = counts.per_ip.get_mut(&self.ip) {
            p.unauthenticated -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        counts.total -= 1;
        if !self.authenticated {
            counts.unauthenticated -= 1;
        }
        if let Some(p) = counts.per_ip.get_mut(&self.ip) {
            p.total -= 1;
            if !self.authenticated {
                p.unauthenticated -= 1;
            }
            if p.total == 0 {
                counts.per_ip.remove(&self.ip);
                if counts.per_ip.capacity() > 64
                    && counts.per_ip.len() < counts.per_ip.capacity() / 4
                {
                    counts.per_ip.shrink_to_fit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Caps {
        Caps {
            max_connections: 10,
            reserved: 2,
            max_unauthenticated: 5,
            per_ip: 6,
            unauthenticated_per_ip: 3,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_address_cannot_take_every_unauthenticated_slot() {
        let a = Admission::new(caps());
        let held: Vec<_> = (0..3).map(|_| a.admit(ip(1)).expect("slot")).collect();
        assert_eq!(a.admit(ip(1)).err(), Some(Refusal::AddressFull));
        // Others still get in, up to the server-wide unauthenticated budget.
        let more: Vec<_> = (2..4).map(|n| a.admit(ip(n)).expect("slot")).collect();
        assert_eq!(a.admit(ip(9)).err(), Some(Refusal::TooManyUnauthenticated));
        drop(held);
        assert_eq!(a.counts(), (2, 2));
        drop(more);
        assert_eq!(a.counts(), (0, 0));
        assert!(
            lock(&a.counts).per_ip.is_empty(),
            "no entry left per address"
        );
    }

    #[test]
    fn authenticated_connections_leave_the_unauthenticated_budget() {
        let a = Admission::new(caps());
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut t = a.admit(ip(1)).expect("slot");
            t.authenticated();
            held.push(t);
        }
        assert_eq!(a.counts(), (6, 0));
        // The address's total cap holds authenticated connections too.
        assert_eq!(a.admit(ip(1)).err(), Some(Refusal::AddressFull));
    }

    #[test]
    fn the_last_slots_are_the_reserve_then_the_server_is_full() {
        let a = Admission::new(caps());
        let mut held = Vec::new();
        for n in 0..8 {
            let mut t = a.admit(ip(n)).expect("slot");
            assert!(!t.in_reserve(), "slot {n} is a general one");
            t.authenticated();
            held.push(t);
        }
        let r1 = a.admit(ip(20)).expect("a reserve slot");
        assert!(r1.in_reserve());
        let r2 = a.admit(ip(21)).expect("a reserve slot");
        assert!(r2.in_reserve());
        assert_eq!(a.admit(ip(22)).err(), Some(Refusal::ServerFull));
        // A slot freed while the reserve is in use is a reserve slot again...
        drop(r1);
        assert!(a.admit(ip(23)).expect("freed").in_reserve());
        // ...and a general one once fewer than the general slots are held.
        drop(r2);
        drop(held.pop());
        let t = a.admit(ip(24)).expect("freed");
        assert!(!t.in_reserve(), "a general slot was freed");
    }
}
