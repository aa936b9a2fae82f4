//! Target state shared by every request of one ingress: requests in flight per target and
//! passive health marks. The choice itself is [`crate::balance::choose`]; this module only
//! keeps the numbers it needs, and survives route table changes (keyed by address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::balance::{Balancing, Candidate, backoff, choose};

/// The state of every target this ingress has sent to.
#[derive(Debug)]
pub struct TargetPool {
    state: Mutex<HashMap<SocketAddr, TargetState>>,
    backoff_base: Duration,
    backoff_max: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct TargetState {
    outstanding: u64,
    /// Consecutive refused or reset connections; 0 after any answer.
    failures: u32,
    down_until: Option<Instant>,
}

/// One request in flight to `addr`: counted as outstanding until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<TargetPool>,
    pub addr: SocketAddr,
}

impl TargetPool {
    pub fn new(backoff_base: Duration, backoff_max: Duration) -> Self {
        TargetPool { state: Mutex::new(HashMap::new()), backoff_base, backoff_max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, TargetState>> {
        // The map holds plain counters: a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses among `targets` (skipping `tried`) and counts the request as outstanding.
    pub fn acquire(self: &Arc<Self>, targets: &[SocketAddr], balancing: Balancing, cursor: usize, tried: &[SocketAddr]) -> Option<Lease> {
        let now = Instant::now();
        let mut state = self.lock();
        let candidates: Vec<Candidate> = targets
            .iter()
            .map(|&addr| {
                let s = state.get(&addr).copied().unwrap_or_default();
                Candidate { addr, outstanding: s.outstanding, down_until: s.down_until }
            })
            .collect();
        let index = choose(&candidates, balancing, cursor, now, tried)?;
        let addr = targets[index];
        state.entry(addr).or_default().outstanding += 1;
        Some(Lease { pool: Arc::clone(self), addr })
    }

    /// The target answered: it is up again.
    pub fn succeeded(&self, addr: SocketAddr) {
        if let Some(s) = self.lock().get_mut(&addr) {
            s.failures = 0;
            s.down_until = None;
        }
    }

    /// The target refused or reset the connection: down for a backoff.
    pub fn failed(&self, addr: SocketAddr) {
        let mut state = self.lock();
        let s = state.entry(addr).or_default();
        s.failures = s.failures.saturating_add(1);
        let down_for = backoff(s.failures, self.backoff_base, self.backoff_max);
        s.down_until = Some(Instant::now() + down_for);
        tracing::info!(target = %addr, failures = s.failures, ?down_for, "target marked down");
    }

    /// Requests in flight from this ingress to `addr` (for draining).
    pub fn outstanding(&self, addr: SocketAddr) -> u64 {
        self.lock().get(&addr).map_or(0, |s| s.outstanding)
    }

    /// Every target with requests in flight, and how many (for draining reports).
    pub fn busy(&self) -> Vec<(SocketAddr, u64)> {
        self.lock().iter().filter(|(_, s)| s.outstanding > 0).map(|(addr, s)| (*addr, s.outstanding)).collect()
    }

    /// Forgets targets that are in no route and have nothing in flight.
    pub fn retain(&self, keep: &[SocketAddr]) {
        self.lock().retain(|addr, s| s.outstanding > 0 || keep.contains(addr));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.pool.lock().get_mut(&self.addr) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_outstanding_and_steer_the_next_choice() {
        let pool = Arc::new(TargetPool::new(Duration::from_secs(1), Duration::from_secs(2)));
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        let first = pool.acquire(&[a, b], Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(first.addr, a);
        let second = pool.acquire(&[a, b], Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(second.addr, b);
        assert_eq!((pool.outstanding(a), pool.outstanding(b)), (1, 1));
        let mut busy = pool.busy();
        busy.sort();
        assert_eq!(busy, [(a, 1), (b, 1)]);
        drop(first);
        assert_eq!(pool.outstanding(a), 0);
        pool.failed(a);
        let third = pool.acquire(&[a, b], Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(third.addr, b, "a is down");
        pool.succeeded(a);
        let fourth = pool.acquire(&[a, b], Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(fourth.addr, a, "a is back");
    }
}
