//! Target choice: which of a route's targets gets the next attempt. Pure, no I/O, the clock
//! passed in.
//!
//! - **Least outstanding requests** (the default, like ALB's option of that name): the target
//!   with the fewest requests in flight from this ingress; ties go to the first in rotation
//!   order from the route's cursor, so equal targets share sequential traffic too.
//! - **Round robin**: the next target in rotation order from the route's cursor.
//!
//! Passive health: a target whose connection was refused or reset is *down* until its backoff
//! ends (see [`backoff`]) and is skipped while another target is up. When every untried
//! target is down, the one whose backoff ends first is tried anyway (fail open, like ALB when
//! no target is healthy): a passive mark is a guess, and a 502 from trying is no worse than a
//! 503 from not trying.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How targets are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balancing {
    #[default]
    LeastOutstanding,
    RoundRobin,
}

/// What the choice knows about one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// Requests in flight from this ingress.
    pub outstanding: u64,
    /// Passively marked down until then.
    pub down_until: Option<Instant>,
}

/// The index of the candidate for the next attempt, skipping those in `tried`; `None` when
/// every candidate was tried. `cursor` rotates the starting point (a per-route counter).
pub fn choose(candidates: &[Candidate], balancing: Balancing, cursor: usize, now: Instant, tried: &[SocketAddr]) -> Option<usize> {
    choose_with(candidates.len(), |i| candidates[i], balancing, cursor, now, tried)
}

/// [`choose`] over `n` candidates read by `candidate(i)`, so a caller can read them from
/// where they live without collecting them first.
pub fn choose_with(
    n: usize,
    candidate: impl Fn(usize) -> Candidate,
    balancing: Balancing,
    cursor: usize,
    now: Instant,
    tried: &[SocketAddr],
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let mut best_up: Option<(usize, u64)> = None;
    let mut first_back: Option<(usize, Instant)> = None;
    for k in 0..n {
        let i = cursor.wrapping_add(k) % n;
        let c = candidate(i);
        if tried.contains(&c.addr) {
            continue;
        }
        match c.down_until {
            Some(until) if until > now => {
                if first_back.is_none_or(|(_, back)| back > until) {
                    first_back = Some((i, until));
                }
            }
            _ => match (balancing, best_up) {
                (Balancing::RoundRobin, None) => return Some(i),
                (_, None) => best_up = Some((i, c.outstanding)),
                (_, Some((_, least))) if c.outstanding < least => best_up = Some((i, c.outstanding)),
                _ => {}
            },
        }
    }
    best_up.map(|(i, _)| i).or(first_back.map(|(i, _)| i))
}

/// How long a target stays down after `failures` consecutive refused or reset connections:
/// `base` doubled for each failure after the first, at most `max`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn up(port: u16, outstanding: u64) -> Candidate {
        Candidate { addr: addr(port), outstanding, down_until: None }
    }

    #[test]
    fn least_outstanding_picks_the_idlest_and_rotates_ties() {
        let now = Instant::now();
        let lor = Balancing::LeastOutstanding;
        let cases: [(&[Candidate], usize, Option<usize>); 5] = [
            (&[], 0, None),
            (&[up(1, 3), up(2, 1), up(3, 2)], 0, Some(1)),
            (&[up(1, 0), up(2, 0), up(3, 0)], 0, Some(0)),
            (&[up(1, 0), up(2, 0), up(3, 0)], 1, Some(1)),
            (&[up(1, 0), up(2, 0), up(3, 0)], 5, Some(2)),
        ];
        for (candidates, cursor, want) in cases {
            assert_eq!(choose(candidates, lor, cursor, now, &[]), want, "{candidates:?} {cursor}");
        }
    }

    #[test]
    fn round_robin_follows_the_cursor_whatever_the_load() {
        let now = Instant::now();
        let targets = [up(1, 9), up(2, 0), up(3, 5)];
        let picks: Vec<_> = (0..6).map(|cursor| choose(&targets, Balancing::RoundRobin, cursor, now, &[])).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn tried_and_down_targets_are_skipped() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut down = up(1, 0);
        down.down_until = Some(later);
        let mut expired = up(3, 7);
        expired.down_until = Some(now);
        let targets = [down, up(2, 5), expired];
        for balancing in [Balancing::LeastOutstanding, Balancing::RoundRobin] {
            assert_eq!(choose(&targets, balancing, 0, now, &[]), Some(1), "{balancing:?}");
            assert_eq!(choose(&targets, balancing, 0, now, &[addr(2)]), Some(2));
            // Only the down one is left: fail open.
            assert_eq!(choose(&targets, balancing, 0, now, &[addr(2), addr(3)]), Some(0));
            assert_eq!(choose(&targets, balancing, 0, now, &[addr(1), addr(2), addr(3)]), None);
        }
    }

    #[test]
    fn when_all_are_down_the_first_to_come_back_is_tried() {
        let now = Instant::now();
        let mut a = up(1, 0);
        a.down_until = Some(now + Duration::from_secs(5));
        let mut b = up(2, 0);
        b.down_until = Some(now + Duration::from_secs(2));
        assert_eq!(choose(&[a, b], Balancing::LeastOutstanding, 0, now, &[]), Some(1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        let got: Vec<u64> = [1, 2, 3, 5, 6, 100].iter().map(|&f| backoff(f, base, max).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 16, 30, 30]);
    }
}
