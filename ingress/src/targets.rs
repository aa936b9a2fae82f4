//! Target state shared by every request (and every worker) of one ingress: requests in flight
//! per target and passive health marks. The choice itself is [`crate::balance::choose_with`];
//! this module only keeps the numbers it needs, and survives route table changes (keyed by
//! address).
//!
//! Each compiled route table holds its targets' [`Target`]s, looked up once when the table
//! arrives, so a request reads and counts with atomics and takes no lock. The map from
//! address to [`Target`] is locked only when a table arrives and when draining asks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::balance::{Balancing, Candidate, backoff, choose_with};

/// The state of every target this ingress routes to or still has requests in flight to.
#[derive(Debug)]
pub struct TargetPool {
    targets: Mutex<HashMap<SocketAddr, Arc<Target>>>,
    /// `down_until` is kept as nanoseconds after this instant.
    epoch: Instant,
    backoff_base: Duration,
    backoff_max: Duration,
}

/// One target's numbers.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    outstanding: AtomicU64,
    /// Consecutive refused connections; 0 after any answer.
    failures: AtomicU32,
    /// Passively down until `epoch` + this many nanoseconds; 0 when up.
    down_until: AtomicU64,
    epoch: Instant,
}

/// One request in flight to a target: counted as outstanding until dropped.
#[derive(Debug)]
pub struct Lease {
    target: Arc<Target>,
}

impl Target {
    fn candidate(&self) -> Candidate {
        let down = self.down_until.load(Ordering::Relaxed);
        let down_until = (down != 0).then(|| self.epoch + Duration::from_nanos(down));
        Candidate { addr: self.addr, outstanding: self.outstanding.load(Ordering::Relaxed), down_until }
    }
}

impl TargetPool {
    pub fn new(backoff_base: Duration, backoff_max: Duration) -> Self {
        TargetPool { targets: Mutex::new(HashMap::new()), epoch: Instant::now(), backoff_base, backoff_max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Target>>> {
        // The map holds shared handles only: a panic elsewhere cannot leave it half-updated.
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of each of `addrs`, created for those not known yet (once per route table).
    pub fn resolve(&self, addrs: &[SocketAddr]) -> Vec<Arc<Target>> {
        let mut map = self.lock();
        addrs
            .iter()
            .map(|&addr| {
                let target = map.entry(addr).or_insert_with(|| {
                    Arc::new(Target {
                        addr,
                        outstanding: AtomicU64::new(0),
                        failures: AtomicU32::new(0),
                        down_until: AtomicU64::new(0),
                        epoch: self.epoch,
                    })
                });
                Arc::clone(target)
            })
            .collect()
    }

    /// Chooses among `targets` (skipping `tried`) and counts the request as outstanding.
    pub fn acquire(&self, targets: &[Arc<Target>], balancing: Balancing, cursor: usize, tried: &[SocketAddr]) -> Option<Lease> {
        let index = choose_with(targets.len(), |i| targets[i].candidate(), balancing, cursor, Instant::now(), tried)?;
        let target = Arc::clone(&targets[index]);
        target.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Lease { target })
    }

    /// The target answered: it is up again.
    pub fn succeeded(&self, target: &Target) {
        // Read first: the usual case (already up) writes nothing shared.
        if target.failures.load(Ordering::Relaxed) != 0 || target.down_until.load(Ordering::Relaxed) != 0 {
            target.failures.store(0, Ordering::Relaxed);
            target.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// The target refused the connection: down for a backoff.
    pub fn failed(&self, target: &Target) {
        let failures = target.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let down_for = backoff(failures, self.backoff_base, self.backoff_max);
        let until = u64::try_from((Instant::now() + down_for).duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX).max(1);
        target.down_until.store(until, Ordering::Relaxed);
        tracing::info!(target = %target.addr, failures, ?down_for, "target marked down");
    }

    /// Requests in flight from this ingress to `addr` (for draining).
    pub fn outstanding(&self, addr: SocketAddr) -> u64 {
        self.lock().get(&addr).map_or(0, |t| t.outstanding.load(Ordering::Relaxed))
    }

    /// Every target with requests in flight, and how many (for draining reports).
    pub fn busy(&self) -> Vec<(SocketAddr, u64)> {
        self.lock().values().map(|t| (t.addr, t.outstanding.load(Ordering::Relaxed))).filter(|&(_, outstanding)| outstanding > 0).collect()
    }

    /// Forgets targets that are in no route and that nothing refers to any more (no route
    /// table still in use by a request, no request in flight): their counts stay visible to
    /// [`TargetPool::outstanding`] for as long as a request may still count on them.
    pub fn retain(&self, keep: &[SocketAddr]) {
        self.lock().retain(|addr, t| Arc::strong_count(t) > 1 || keep.contains(addr));
    }
}

impl Lease {
    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn addr(&self) -> SocketAddr {
        self.target.addr
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.target.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_outstanding_and_steer_the_next_choice() {
        let pool = TargetPool::new(Duration::from_secs(1), Duration::from_secs(2));
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        let targets = pool.resolve(&[a, b]);
        let first = pool.acquire(&targets, Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(first.addr(), a);
        let second = pool.acquire(&targets, Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(second.addr(), b);
        assert_eq!((pool.outstanding(a), pool.outstanding(b)), (1, 1));
        let mut busy = pool.busy();
        busy.sort();
        assert_eq!(busy, [(a, 1), (b, 1)]);
        drop(first);
        assert_eq!(pool.outstanding(a), 0);
        pool.failed(&targets[0]);
        let third = pool.acquire(&targets, Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(third.addr(), b, "a is down");
        pool.succeeded(&targets[0]);
        let fourth = pool.acquire(&targets, Balancing::LeastOutstanding, 0, &[]).unwrap();
        assert_eq!(fourth.addr(), a, "a is back");
    }

    #[test]
    fn targets_in_use_outlive_their_route() {
        let pool = TargetPool::new(Duration::from_secs(1), Duration::from_secs(2));
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let targets = pool.resolve(&[a]);
        let lease = pool.acquire(&targets, Balancing::RoundRobin, 0, &[]).unwrap();
        drop(targets);
        pool.retain(&[]);
        assert_eq!(pool.outstanding(a), 1, "a request in flight keeps its count visible");
        assert_eq!(pool.resolve(&[a])[0].outstanding.load(Ordering::Relaxed), 1, "the same state comes back");
        drop(lease);
        pool.retain(&[]);
        assert_eq!(pool.outstanding(a), 0);
        assert!(pool.lock().is_empty(), "forgotten once nothing refers to it");
    }
}
