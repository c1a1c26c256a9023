//! The soft file-descriptor limit. Each connection is a socket, and many systems start processes
//! with a soft limit of 1,024 under a much higher hard one: raised at start to the hard limit, as
//! servers commonly do, so `--max-connections` is what bounds connections, with its quick 503,
//! rather than accept() failing with EMFILE while clients wait in the backlog.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit to the hard one; returns the soft limit in force afterwards (`None`:
/// unlimited).
pub fn raise() -> Option<u64> {
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        )
        .is_ok()
    {
        return lim.maximum;
    }
    lim.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let soft = raise();
        let lim = getrlimit(Resource::Nofile);
        assert_eq!(soft, lim.current);
        assert_eq!(lim.current, lim.maximum);
    }
}
