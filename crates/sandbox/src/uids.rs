//! Per-run uids: each concurrent run gets its own uid (and gid of the same
//! number) from the configured range, like systemd's DynamicUser. With distinct
//! uids, `RLIMIT_NPROC` is per run and one plugin cannot signal, trace or read
//! the files of another.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The range and the uids in use. One owner: the runner; leases return their
/// uid when dropped.
#[derive(Debug, Clone)]
pub struct UidPool {
    inner: Arc<Mutex<PoolState>>,
}

#[derive(Debug)]
struct PoolState {
    min: u32,
    count: u32,
    next: u32,
    in_use: BTreeSet<u32>,
}

/// A uid held by one run until dropped (after its processes are gone).
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    pool: Arc<Mutex<PoolState>>,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_use
            .remove(&self.uid);
    }
}

impl UidPool {
    pub fn new(min: u32, count: u32) -> UidPool {
        UidPool {
            inner: Arc::new(Mutex::new(PoolState {
                min,
                count,
                next: 0,
                in_use: BTreeSet::new(),
            })),
        }
    }

    /// A free uid, or `None` when every uid of the range is in use. Uids are
    /// handed out round-robin so a just-freed uid is not reused at once.
    pub fn lease(&self) -> Option<UidLease> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..state.count {
            let uid = state.min + state.next;
            state.next = (state.next + 1) % state.count;
            if state.in_use.insert(uid) {
                return Some(UidLease {
                    uid,
                    pool: self.inner.clone(),
                });
            }
        }
        None
    }

    pub fn in_use(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_use
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_runs_get_distinct_uids_and_a_dropped_lease_frees_its_uid() {
        let pool = UidPool::new(1000, 2);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!(pool.lease().is_none(), "the range is exhausted");
        let freed = a.uid();
        drop(a);
        assert_eq!(pool.lease().unwrap().uid(), freed);
        assert_eq!(pool.in_use(), 1, "the lease above was dropped at once");
    }
}
