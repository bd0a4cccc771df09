//! The reclaimer thread: frees the findings a batch stored, off the writer.
//!
//! Every run's findings go through the one writer thread; freeing their
//! texts there (five allocations a finding, allocated by the sessions'
//! threads) was about a tenth of its time while a plugin streams. The
//! reclaimer frees them instead and only then gives their share of the
//! findings budget back, so the findings held in memory stay within the
//! budget however far behind it falls. At most one batch waits for it: the
//! writer blocks on the next one until it is taken.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use secflow_store::FindingsBudget;

use crate::findings::Detected;

/// The name of the reclaimer thread (visible in `ps -T`, `top -H`, panics).
pub const RECLAIM_THREAD_NAME: &str = "secflow-store-free";

/// The writer's side. Dropping it frees what is pending and ends the thread.
pub(crate) struct Reclaimer {
    budget: FindingsBudget,
    queue: Option<SyncSender<(Vec<Detected>, usize)>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts the thread; without one (it could not be started) the writer
    /// frees inline.
    pub(crate) fn start(budget: FindingsBudget) -> Reclaimer {
        let (queue, pending) = sync_channel::<(Vec<Detected>, usize)>(1);
        let returned = budget.clone();
        let thread = std::thread::Builder::new()
            .name(RECLAIM_THREAD_NAME.to_string())
            .spawn(move || {
                for (stored, cost) in pending {
                    drop(stored);
                    returned.give_back(cost);
                }
            });
        match thread {
            Ok(thread) => Reclaimer {
                budget,
                queue: Some(queue),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the {RECLAIM_THREAD_NAME} thread; the writer frees what it stores");
                Reclaimer {
                    budget,
                    queue: None,
                    thread: None,
                }
            }
        }
    }

    /// Frees `stored` and gives `cost` back to the budget: on the thread
    /// (waiting while it still frees the batch before), or here without one.
    pub(crate) fn free(&self, stored: Vec<Detected>, cost: usize) {
        let stored = match &self.queue {
            Some(queue) => match queue.send((stored, cost)) {
                Ok(()) => return,
                // The thread is gone (it panicked): free here.
                Err(std::sync::mpsc::SendError((stored, _))) => stored,
            },
            None => stored,
        };
        drop(stored);
        self.budget.give_back(cost);
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
